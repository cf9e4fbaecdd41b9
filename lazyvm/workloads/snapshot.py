"""Snapshots of real processes: capture a live address space (and what it copies on write
across its next fork) from /proc, and replay it in every fork configuration.

    lazyvm capture PID --out FILE [--cow] [--timeout S]
    lazyvm replay FILE [--layout x86_64|i386|pae] [--costs PROFILE] [--json F] [--plot F]

Capture reads ``/proc/PID/maps`` (ranges, protections, private or shared, names),
``/proc/PID/pagemap`` (one pread per VMA straight into a numpy array) and ``VmPTE`` and
the RSS fields of ``/proc/PID/status``.  With ``cow`` it then waits for the process's next
fork (watching ``/proc/PID/task/*/children``), and polls the pagemaps of parent and child
until the child exits: a page present at the fork is in the copy-on-write set once the
child's entry is exclusively mapped or either side's frame number differs from the one
it had at the fork.  The file format is described in docs/SNAPSHOT.md (numpy ``.npz``,
field ``format`` = "lazyvm-snapshot", ``version`` = 1).

Replay builds the address space in a Machine (x86_64 at the real addresses; i386 or pae
relocated into 3 GiB, each VMA keeping its offset within its leaf table's span), forks it
in each configuration, writes the recorded set and reports the counters beside the
kernel's own figures.
"""

from __future__ import annotations

import glob
import inspect
import json
import mmap
import os
import re
import sys
import time
import zipfile

import numpy as np


__all__ = ["Snapshot", "SnapshotError", "capture", "replay", "format_replay", "relocate",
           "FORMAT", "VERSION", "CONFIGS"]

FORMAT = "lazyvm-snapshot"
VERSION = 1
PAGE = 4096

# /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61                      # file page or shared anonymous
PM_EXCLUSIVE = 1 << 56                 # mapped by this process only (mapcount 1)
PM_SOFT_DIRTY = 1 << 55
PM_PFN_MASK = (1 << 55) - 1

# page_flags of a snapshot (uint8).
F_PRESENT, F_SWAP, F_FILE, F_EXCLUSIVE, F_SOFT_DIRTY, F_ZERO = 1, 2, 4, 8, 16, 32
# cow_side: who wrote the page after the fork.
SIDE_PARENT, SIDE_CHILD, SIDE_UNKNOWN = 0, 1, 2

USER_TOP_X86_64 = 0x7FFFFFFFF000        # user space [0, this) on x86_64
LEAF_SPAN = {"i386": 1 << 22, "pae": 1 << 21, "x86_64": 1 << 21}
LAYOUTS = ("x86_64", "i386", "pae")
RELOC_TOP = 0xC0000000                 # i386 / pae user space

CONFIGS = {                            # name -> (fork_mode, rmap)
    "copy": ("copy", False),
    "copy+rmap": ("copy", True),
    "share": ("share", False),
    "share+rmap": ("share", True),
}


class SnapshotError(ValueError):
    """A snapshot could not be captured, read or replayed (one clear sentence)."""


# ===================================================================== /proc readers

def _proc(pid, name):
    return f"/proc/{pid}/{name}"


def _check_pid(pid):
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        raise SnapshotError(f"not a process id: {pid!r}")
    if not os.path.exists(_proc(pid, "stat")):
        raise SnapshotError(f"no process {pid} (nothing at /proc/{pid})")
    state = _state(pid)
    if state in ("Z", "X"):
        raise SnapshotError(f"process {pid} has exited (state {state}): nothing to capture")


def _state(pid):
    """The one-letter state of /proc/PID/stat, or None once the process is gone."""
    try:
        with open(_proc(pid, "stat")) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()[0]


def read_maps(pid):
    """[(start, end, perms, offset, inode, name)] of /proc/PID/maps, in address order."""
    try:
        with open(_proc(pid, "maps")) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SnapshotError(f"no process {pid} (it exited?)") from None
    except PermissionError:
        raise SnapshotError(f"may not read /proc/{pid}/maps: it needs the same user as "
                            f"process {pid} or root (and ptrace access)") from None
    rows = []
    for line in lines:
        fields = line.split(None, 5)
        lo, hi = fields[0].split("-")
        rows.append((int(lo, 16), int(hi, 16), fields[1], int(fields[2], 16),
                     int(fields[4]), fields[5].strip() if len(fields) > 5 else ""))
    return rows


def read_status(pid):
    """The kB fields of /proc/PID/status that a snapshot records, and its Name."""
    try:
        with open(_proc(pid, "status")) as f:
            text = f.read()
    except OSError:
        raise SnapshotError(f"no process {pid} (it exited?)") from None
    out = {}
    for key in ("VmPTE", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmSwap", "VmSize"):
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            out[key] = int(m.group(1))
    m = re.search(r"^Name:\s+(.*)$", text, re.M)
    out["Name"] = m.group(1) if m else ""
    return out


_ROLLUP = ("Rss", "Private_Dirty", "Anonymous", "AnonHugePages", "ShmemPmdMapped",
           "FilePmdMapped", "Shared_Hugetlb", "Private_Hugetlb", "Swap")


def read_rollup(pid):
    """The kB fields of /proc/PID/smaps_rollup a replay needs to be read right (huge pages
    are mapped without leaf tables); {} where the file cannot be read."""
    try:
        with open(_proc(pid, "smaps_rollup")) as f:
            text = f.read()
    except OSError:
        return {}
    out = {}
    for key in _ROLLUP:
        m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        if m:
            out[key] = int(m.group(1))
    return out


def _note_huge(meta, rollup):
    huge = sum(rollup.get(k, 0) for k in ("AnonHugePages", "ShmemPmdMapped",
                                           "FilePmdMapped", "Shared_Hugetlb",
                                           "Private_Hugetlb"))
    if huge:
        meta["notes"].append(
            f"{huge} kB are mapped by huge pages (smaps_rollup), which the kernel maps "
            "without leaf tables; the replay maps them as 4 KiB pages, with leaf tables")


def zero_pfn():
    """The frame number of the ZERO_PAGE as pagemap shows it: that of a private anonymous
    page of our own that was read but never written (0 when PFNs are not readable)."""
    buf = mmap.mmap(-1, PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf[0]                                       # a read fault maps the ZERO_PAGE
        import ctypes
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            entry = int.from_bytes(os.pread(fd, 8, (addr // PAGE) * 8), "little")
        finally:
            os.close(fd)
        del addr
    finally:
        try:
            buf.close()
        except BufferError:                          # ctypes still holds an export
            pass
    return entry & PM_PFN_MASK if entry & PM_PRESENT else 0


_CHUNK = 1 << 20                       # pagemap entries per pread (8 MiB)


def _read_entries(fd, start, end):
    """The raw pagemap entries of pages [start, end) (uint64), read in bulk; a short read
    (the process exited or unmapped the range) leaves zeros.  Returns (entries, ok)."""
    n = (end - start) // PAGE
    out = np.zeros(n, dtype=np.uint64)
    if start >= 1 << 47:                             # [vsyscall]: pagemap has no entries
        return out, True
    done = 0
    while done < n:
        k = min(_CHUNK, n - done)
        view = memoryview(out[done:done + k]).cast("B")
        try:
            got = os.preadv(fd, [view], (start // PAGE + done) * 8)
        except ProcessLookupError:
            return out, False
        except OSError as e:
            if e.errno in (3, 2):                    # ESRCH / ENOENT: gone
                return out, False
            raise
        if got <= 0:
            return out, done > 0 or n == 0
        done += got // 8
    return out, True


class _Pagemap:
    """An open /proc/PID/pagemap."""

    def __init__(self, pid):
        try:
            self.fd = os.open(_proc(pid, "pagemap"), os.O_RDONLY)
        except FileNotFoundError:
            raise SnapshotError(f"no process {pid} (it exited?)") from None
        except PermissionError:
            raise SnapshotError(f"may not read /proc/{pid}/pagemap: it needs the same "
                                f"user as process {pid} or root") from None

    def read(self, ranges):
        """Entries of each (start, end) range, concatenated, and whether all were read."""
        parts, ok = [], True
        for lo, hi in ranges:
            e, good = _read_entries(self.fd, lo, hi)
            parts.append(e)
            ok = ok and good
        return (np.concatenate(parts) if parts else np.zeros(0, np.uint64)), ok

    def close(self):
        os.close(self.fd)


def _flags(entries, zpfn):
    """Snapshot page_flags (uint8) of raw pagemap entries."""
    f = np.zeros(len(entries), dtype=np.uint8)
    for bit, flag in ((PM_PRESENT, F_PRESENT), (PM_SWAP, F_SWAP), (PM_FILE, F_FILE),
                      (PM_EXCLUSIVE, F_EXCLUSIVE), (PM_SOFT_DIRTY, F_SOFT_DIRTY)):
        f |= ((entries & np.uint64(bit)) != 0).astype(np.uint8) * np.uint8(flag)
    if zpfn:
        pfn = entries & np.uint64(PM_PFN_MASK)
        f |= ((pfn == np.uint64(zpfn)) & ((f & F_PRESENT) != 0)).astype(np.uint8) * \
            np.uint8(F_ZERO)
    return f


def _children(pid, tasks):
    """The pids listed in /proc/PID/task/TID/children of the given tasks."""
    out = set()
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _tasks(pid):
    return [os.path.basename(t) for t in glob.glob(f"/proc/{pid}/task/*")]


# ===================================================================== the snapshot

_VMA_FIELDS = ("vma_start", "vma_end", "vma_offset", "vma_inode", "vma_perms", "vma_name")
_PAGE_FIELDS = ("page_addr", "page_pfn", "page_flags")
_COW_FIELDS = ("cow_addr", "cow_side", "child_new_addr")


class Snapshot:
    """A captured address space: its VMAs, its present (or swapped) pages, and, when
    captured with cow, the pages copied on write while its next child lived.

    Attributes (numpy arrays, one row per VMA / page):
      vma_start, vma_end, vma_offset, vma_inode (uint64), vma_perms ("rwxp"), vma_name
      page_addr (uint64 virtual address), page_pfn (uint64, 0 when unreadable),
      page_flags (uint8: F_PRESENT, F_SWAP, F_FILE, F_EXCLUSIVE, F_SOFT_DIRTY, F_ZERO)
      cow_addr (uint64), cow_side (uint8: 0 parent wrote, 1 child wrote, 2 unknown),
      child_new_addr (uint64: pages the child faulted in that the parent did not have)
      meta (dict: pid, name, status figures in kB, what could not be read, timings)
    """

    def __init__(self, vmas, pages, cow=None, meta=None):
        (self.vma_start, self.vma_end, self.vma_offset, self.vma_inode,
         self.vma_perms, self.vma_name) = vmas
        self.page_addr, self.page_pfn, self.page_flags = pages
        if cow is None:
            cow = (np.zeros(0, np.uint64), np.zeros(0, np.uint8), np.zeros(0, np.uint64))
        self.cow_addr, self.cow_side, self.child_new_addr = cow
        self.meta = dict(meta or {})

    def __repr__(self):
        return (f"<Snapshot of {self.meta.get('name', '?')} (pid {self.meta.get('pid')}): "
                f"{len(self.vma_start)} VMAs, {len(self.page_addr)} pages, "
                f"{len(self.cow_addr)} copied on write>")

    # -- file format ---------------------------------------------------------------
    def save(self, path):
        """Write the snapshot as a numpy .npz file (docs/SNAPSHOT.md)."""
        arrays = {"format": np.array(FORMAT), "version": np.array(VERSION, np.int64),
                  "meta": np.array(json.dumps(self.meta, sort_keys=True))}
        for name in _VMA_FIELDS + _PAGE_FIELDS + _COW_FIELDS:
            arrays[name] = getattr(self, name)
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path):
        """Read a snapshot file; SnapshotError if it is missing, truncated or foreign."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise SnapshotError(f"{path}: no such file")
        try:
            z = np.load(path, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise SnapshotError(f"{path}: not a lazyvm snapshot (a numpy array, not "
                                    "an .npz archive)")
            with z:
                keys = set(z.files)
                if "format" not in keys or str(z["format"]) != FORMAT:
                    raise SnapshotError(f"{path}: not a lazyvm snapshot (a numpy .npz "
                                        f"without format={FORMAT!r})")
                version = int(z["version"]) if "version" in keys else -1
                if version != VERSION:
                    raise SnapshotError(f"{path}: snapshot format version {version}; this "
                                        f"lazyvm reads version {VERSION}")
                missing = [k for k in ("meta",) + _VMA_FIELDS + _PAGE_FIELDS + _COW_FIELDS
                           if k not in keys]
                if missing:
                    raise SnapshotError(f"{path}: damaged snapshot, no {', '.join(missing)}")
                d = {k: z[k] for k in ("meta",) + _VMA_FIELDS + _PAGE_FIELDS + _COW_FIELDS}
        except SnapshotError:
            raise
        except (zipfile.BadZipFile, EOFError) as e:
            raise SnapshotError(f"{path}: not a lazyvm snapshot, or truncated ({e})") from None
        except (ValueError, OSError, KeyError) as e:
            raise SnapshotError(f"{path}: not a lazyvm snapshot, or damaged ({e})") from None
        try:
            meta = json.loads(str(d["meta"]))
        except ValueError:
            raise SnapshotError(f"{path}: damaged snapshot (meta is not JSON)") from None
        snap = cls(tuple(d[k] for k in _VMA_FIELDS), tuple(d[k] for k in _PAGE_FIELDS),
                   tuple(d[k] for k in _COW_FIELDS), meta)
        snap._validate(path)
        return snap

    def _validate(self, what):
        n = len(self.vma_start)
        if not all(len(getattr(self, k)) == n for k in _VMA_FIELDS):
            raise SnapshotError(f"{what}: damaged snapshot (VMA fields differ in length)")
        m = len(self.page_addr)
        if len(self.page_pfn) != m or len(self.page_flags) != m:
            raise SnapshotError(f"{what}: damaged snapshot (page fields differ in length)")
        if len(self.cow_side) != len(self.cow_addr):
            raise SnapshotError(f"{what}: damaged snapshot (cow fields differ in length)")
        if n and (np.any(self.vma_end <= self.vma_start) or
                  np.any(self.vma_start[1:] < self.vma_end[:-1])):
            raise SnapshotError(f"{what}: damaged snapshot (VMAs overlap or are unsorted)")

    # -- derived -------------------------------------------------------------------
    def page_vma(self, addrs=None):
        """The index of the VMA holding each address (-1 if none)."""
        a = self.page_addr if addrs is None else np.asarray(addrs, np.uint64)
        i = np.searchsorted(self.vma_start, a, side="right").astype(np.int64) - 1
        ok = i >= 0
        ok[ok] &= a[ok] < self.vma_end[i[ok]]
        return np.where(ok, i, -1)

    def host(self):
        """The kernel's recorded figures."""
        st = self.meta.get("status", {})
        present = (self.page_flags & F_PRESENT) != 0
        return {"pid": self.meta.get("pid"), "name": self.meta.get("name", ""),
                "vm_pte_kb": st.get("VmPTE"), "rss_pages": (st.get("VmRSS", 0) * 1024) // PAGE,
                "rss_anon_kb": st.get("RssAnon"), "rss_file_kb": st.get("RssFile"),
                "present_pages": int(present.sum()),
                "zero_pages": int(((self.page_flags & F_ZERO) != 0).sum()),
                "swapped_pages": int(((self.page_flags & F_SWAP) != 0).sum()),
                "cow_pages": int(len(self.cow_addr)) if self.meta.get("cow") else None,
                "child_new_pages": (int(len(self.child_new_addr))
                                    if self.meta.get("cow") else None),
                "child_vm_pte_kb": self.meta.get("child_status", {}).get("VmPTE"),
                "pfn_readable": self.meta.get("pfn_readable")}

    # -- building it in a Machine ----------------------------------------------------
    def placement(self, layout):
        """Where each VMA goes on a layout: a uint64 array of new start addresses (None
        for a VMA that is left out, as [vsyscall] above user space)."""
        return relocate(self.vma_start, self.vma_end, layout)

    def spawn(self, machine, layout=None):
        """Build the address space as a new process of machine; return (process, addr_map)
        where addr_map(addrs) turns captured addresses into the process's addresses (and
        addr_map.left_out counts the present pages of VMAs left out, as [vsyscall]).

        Private anonymous pages are written (a frame each), the ZERO_PAGE and private file
        pages are read (the simulator maps its ZERO_PAGE: a present PTE, no frame), shared
        pages are read (the shared object's frame).  A VMA is mapped with the protection
        its touches need and then given its own (mprotect), as a RELRO page was written
        before it became read-only."""
        layout = layout or _machine_layout(machine)
        new_start = self.placement(layout)
        p = machine.spawn()
        vidx = self.page_vma()
        keep = vidx >= 0
        keep[keep] &= new_start[vidx[keep]] != _NONE
        fl = self.page_flags
        present = (fl & F_PRESENT) != 0
        shared = np.array([perm[3] == "s" for perm in self.vma_perms], dtype=bool)
        anon = present & ((fl & (F_FILE | F_ZERO)) == 0)
        sv = shared[np.maximum(vidx, 0)]
        write = keep & anon & ~sv
        read = keep & present & ~write
        need_w = np.zeros(len(self.vma_start), bool)
        need_r = np.zeros(len(self.vma_start), bool)
        need_w[vidx[write]] = True
        need_r[vidx[read]] = True
        deferred = []
        for i in range(len(self.vma_start)):
            if new_start[i] == _NONE:
                continue
            prot = _sim_prot(str(self.vma_perms[i]))
            use = prot
            if need_w[i] and "w" not in use:
                use = "rw"
            elif need_r[i] and not use:
                use = "r"
            length = int(self.vma_end[i] - self.vma_start[i])
            p.mmap(length, prot=use, shared=bool(shared[i]), addr=int(new_start[i]))
            if use != prot:
                deferred.append((int(new_start[i]), length, prot))
        shift = np.zeros(len(self.vma_start), np.int64)
        ok = new_start != _NONE
        shift[ok] = new_start[ok].astype(np.int64) - self.vma_start[ok].astype(np.int64)

        def addr_map(addrs):
            a = np.asarray(addrs, np.uint64)
            v = self.page_vma(a)
            if np.any(v < 0) or np.any(new_start[np.maximum(v, 0)] == _NONE):
                raise SnapshotError("an address of the set is outside every replayed VMA")
            return (a.astype(np.int64) + shift[v]).astype(np.int64)

        if write.any():
            p.touch_pages(addr_map(self.page_addr[write]), write=True)
        if read.any():
            p.touch_pages(addr_map(self.page_addr[read]), write=False)
        for addr, length, prot in deferred:
            p.mprotect(addr, length, prot)
        addr_map.left_out = int((~keep & present).sum())   # pages of no replayed VMA
        return p, addr_map


_NONE = np.uint64(2 ** 64 - 1)


def _sim_prot(perms):
    """The simulator's protection of a maps perms field: "", "r" or "rw" (x means r)."""
    if "w" in perms[:3]:
        return "rw"
    return "r" if set(perms[:3]) & set("rx") else ""


def relocate(starts, ends, layout):
    """New start addresses of the VMAs [starts[i], ends[i]) (sorted) on a layout.

    x86_64: the real addresses (a VMA above user space, as [vsyscall], is left out: _NONE).
    i386 and pae: packed into [0, 3 GiB) in order, each VMA keeping its offset within its
    leaf table's span (4 MiB on i386, 2 MiB on pae).  VMAs whose spans touch on the host
    keep their distance, so they share a leaf table exactly when they did; a run of VMAs
    that starts in a new span starts in the next free span.  So the number of leaf tables
    the VMAs reach is the same as at the real addresses.  Raises SnapshotError when the
    spans do not fit in 3 GiB."""
    if layout not in LEAF_SPAN:
        raise SnapshotError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    starts = np.asarray(starts, np.uint64)
    ends = np.asarray(ends, np.uint64)
    out = np.full(len(starts), _NONE, dtype=np.uint64)
    if layout == "x86_64":
        ok = ends <= np.uint64(USER_TOP_X86_64)
        out[ok] = starts[ok]
        return out
    span = LEAF_SPAN[layout]
    cursor = span                       # the first span stays empty, as address 0 does
    prev_end = None                     # host end of the previous VMA placed
    delta = 0                           # host address - new address of the current run
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
        if s >= USER_TOP_X86_64:
            continue
        if prev_end is not None and s // span <= (prev_end - 1) // span:
            new = s - delta             # same leaf span as the previous VMA: keep the gap
        else:
            new = -(-cursor // span) * span + s % span
            delta = s - new
        if new + (e - s) > RELOC_TOP:
            raise SnapshotError(
                f"the capture does not fit {layout}'s 3 GiB user space: its VMAs reach "
                f"more than {RELOC_TOP // span} leaf tables of {span >> 20} MiB "
                f"(VMA {i} of {len(starts)}, {(e - s) >> 20} MiB); replay it on x86_64")
        out[i] = new
        cursor = new + (e - s)
        prev_end = e
    return out


# ===================================================================== capture

def _read_space(pid, zpfn, pm=None):
    """VMAs and raw entries of every VMA of pid: (maps rows, ranges, entries, ok)."""
    maps = read_maps(pid)
    ranges = [(lo, hi) for lo, hi, *_ in maps]
    own = pm is None
    pm = pm or _Pagemap(pid)
    try:
        entries, ok = pm.read(ranges)
    finally:
        if own:
            pm.close()
    return maps, ranges, entries, ok


def _addresses(ranges):
    """The page address of every page of the ranges, concatenated (uint64)."""
    if not ranges:
        return np.zeros(0, np.uint64)
    return np.concatenate([np.arange(lo, hi, PAGE, dtype=np.uint64) for lo, hi in ranges])


def _build(pid, maps, ranges, entries, zpfn, meta):
    addrs = _addresses(ranges)
    keep = (entries & np.uint64(PM_PRESENT | PM_SWAP)) != 0
    e = entries[keep]
    vmas = (np.array([r[0] for r in maps], np.uint64), np.array([r[1] for r in maps], np.uint64),
            np.array([r[3] for r in maps], np.uint64), np.array([r[4] for r in maps], np.uint64),
            np.array([r[2] for r in maps], dtype="<U4"),
            np.array([r[5] for r in maps], dtype=str) if maps else np.zeros(0, "<U1"))
    swapped = (e & np.uint64(PM_SWAP)) != 0
    pfn = np.where(swapped, np.uint64(0), e & np.uint64(PM_PFN_MASK))
    pages = (addrs[keep], pfn, _flags(e, zpfn))
    return Snapshot(vmas, pages, None, meta)


def capture(pid, cow=False, timeout=60.0, poll=0.002, on_ready=None, progress=None):
    """Capture process pid; with cow, also the pages copied on write while its next child
    lives (waiting at most timeout seconds for the fork, and for the child's exit).
    on_ready() is called once the watch for the fork has begun.  Returns a Snapshot.
    Raises SnapshotError with one sentence when the process is missing or exits, or the
    fork does not come in time."""
    _check_pid(pid)
    t0 = time.perf_counter()
    zpfn = zero_pfn()
    root = os.geteuid() == 0
    notes = []
    if not zpfn:
        notes.append("frame numbers are not readable (not root / no CAP_SYS_ADMIN): "
                     "the ZERO_PAGE, pages shared with other processes and frame changes "
                     "cannot be seen; the copy-on-write set comes from the exclusive bit")
    maps, ranges, entries, ok = _read_space(pid, zpfn)
    if not ok:
        raise SnapshotError(f"process {pid} exited while it was being captured")
    status = read_status(pid)
    rollup = read_rollup(pid)
    elapsed = time.perf_counter() - t0
    meta = {"pid": pid, "name": status.get("Name", ""), "status": status,
            "captured_at": time.time(), "kernel": os.uname().release,
            "root": root, "zero_pfn": zpfn, "pfn_readable": bool(zpfn),
            "capture_s": round(elapsed, 4), "cow": False, "contents": False,
            "rollup": rollup, "notes": notes}
    _note_huge(meta, rollup)
    if not cow:
        snap = _build(pid, maps, ranges, entries, zpfn, meta)
        _note_unread(snap, maps)
        return snap
    addrs = _addresses(ranges)
    present = (entries & np.uint64(PM_PRESENT)) != 0
    pre = (addrs[present], entries[present] & np.uint64(PM_PFN_MASK))
    return _capture_cow(pid, zpfn, meta, timeout, poll, on_ready, progress, pre)


def _note_unread(snap, maps):
    above = [r for r in maps if r[1] > USER_TOP_X86_64]
    if above:
        snap.meta["notes"].append(
            "left out of replay (above x86_64 user space): " + ", ".join(r[5] or hex(r[0])
                                                                         for r in above))


def _capture_cow(pid, zpfn, meta, timeout, poll, on_ready, progress, pre):
    """Wait for pid's next fork, then poll both pagemaps until the child exits."""
    tasks = _tasks(pid)
    before = _children(pid, tasks)
    deadline = time.monotonic() + timeout
    if on_ready is not None:
        on_ready()
    child = None
    last_tasks = time.monotonic()
    while child is None:
        new = _children(pid, tasks) - before
        if new:
            child = min(new)
            break
        if _state(pid) in (None, "Z", "X"):
            raise SnapshotError(f"process {pid} exited before it forked")
        if time.monotonic() > deadline:
            raise SnapshotError(f"process {pid} did not fork within {timeout:g} s")
        if time.monotonic() - last_tasks > 0.1:
            tasks, last_tasks = _tasks(pid), time.monotonic()
        time.sleep(poll / 4)
    t_fork = time.perf_counter()
    try:
        cpm = _Pagemap(child)
    except SnapshotError:
        raise SnapshotError(f"the child {child} of process {pid} exited before it could "
                            "be read") from None
    try:
        ppm = _Pagemap(pid)
        try:
            # The child first: its entries are the fork's until it writes.
            pmaps = read_maps(pid)
            ranges = [(lo, hi) for lo, hi, *_ in pmaps]
            centries, cok = cpm.read(ranges)
            pentries, pok = ppm.read(ranges)
            t_read = time.perf_counter()
            try:
                cmaps = read_maps(child)
                cstatus = read_status(child)
            except SnapshotError:
                cmaps, cstatus = [], {}
            pstatus = read_status(pid)
            if not pok:
                raise SnapshotError(f"process {pid} exited while it was being captured")
            masks, polls, t_last = _watch(child, cpm, ppm, ranges, pentries, centries, cok,
                                          zpfn, deadline, poll, progress)
        finally:
            ppm.close()
    finally:
        cpm.close()
    addrs = _addresses(ranges)
    pmask = np.uint64(PM_PRESENT | PM_SWAP)
    pbase = (pentries & pmask) != 0
    cbase = (centries & pmask) != 0
    base = pbase | cbase
    entries = np.where(pbase, pentries, centries)
    # Who copied a page whose frames already differed at the first reads: the side that
    # no longer has the frame it had before the fork (the capture before the watch).
    pre_addr, pre_pfn = pre
    k = np.minimum(np.searchsorted(pre_addr, addrs), max(len(pre_addr) - 1, 0))
    pfn0 = np.zeros(len(addrs), np.uint64)
    if len(pre_addr):
        hit = pre_addr[k] == addrs
        pfn0[hit] = pre_pfn[k[hit]]
    pfnm = np.uint64(PM_PFN_MASK)
    p0, c0 = pentries & pfnm, centries & pfnm
    differ = masks["differ0"] & pbase & cbase
    cow_p = masks["parent_changed"] | (differ & (c0 == pfn0) & (pfn0 != 0))
    cow_c = masks["child_changed"] | (differ & (p0 == pfn0) & (pfn0 != 0))
    kept = masks["child_exclusive"] & ~cow_c & ~cow_p
    in_cow = base & (cow_p | cow_c | differ | kept)
    side = np.full(len(addrs), SIDE_UNKNOWN, np.uint8)
    if zpfn:
        side[kept] = SIDE_PARENT           # the child holds the fork's frame alone
        side[cow_p & ~cow_c] = SIDE_PARENT
        side[cow_c & ~cow_p] = SIDE_CHILD
    snap = _build(pid, pmaps, ranges, np.where(base, entries, np.uint64(0)), zpfn, meta)
    snap.cow_addr = addrs[in_cow]
    snap.cow_side = side[in_cow]
    snap.child_new_addr = addrs[~base & masks["child_new"]]
    snap.meta.update({
        "cow": True, "child_pid": child, "child_status": cstatus, "status": pstatus,
        "child_vmas": len(cmaps), "polls": polls,
        "fork_to_first_read_s": round(t_read - t_fork, 4),
        "child_seen_s": round(t_last - t_fork, 4),
        "cow_by_parent": int((side[in_cow] == SIDE_PARENT).sum()),
        "cow_by_child": int((side[in_cow] == SIDE_CHILD).sum()),
        "cow_side_unknown": int((side[in_cow] == SIDE_UNKNOWN).sum())})
    if not cok:
        snap.meta["notes"].append("the child exited before its pagemap could be read: "
                                  "the copy-on-write set is empty")
    if not zpfn:
        snap.meta["notes"].append("without frame numbers the side that copied is unknown: "
                                  "replay writes those pages in the parent")
    _note_unread(snap, pmaps)
    return snap


def _watch(child, cpm, ppm, ranges, pfirst, cfirst, cok, zpfn, deadline, poll, progress):
    """Poll child and parent pagemaps over the fork's ranges until the child exits.
    Returns (masks over the pages, polls, time of the last good read); the masks:
    parent_changed / child_changed (a frame differs from that side's first read),
    differ0 (the two first reads already differ), child_exclusive (the child's entry was
    exclusively mapped), child_new (the child had a page where the parent had none)."""
    n = len(pfirst)
    pfnm = np.uint64(PM_PFN_MASK)
    present = np.uint64(PM_PRESENT)
    excl = np.uint64(PM_EXCLUSIVE)
    p0, c0 = pfirst & pfnm, cfirst & pfnm
    ppres0, cpres0 = (pfirst & present) != 0, (cfirst & present) != 0
    masks = {k: np.zeros(n, bool) for k in ("parent_changed", "child_changed",
                                            "child_exclusive", "child_new")}
    masks["differ0"] = ppres0 & cpres0 & (p0 != c0) if zpfn else np.zeros(n, bool)
    polls = 0
    t_last = time.perf_counter()
    centries, ok = cfirst, cok
    while ok:
        cpres = (centries & present) != 0
        masks["child_exclusive"] |= cpres & ((centries & excl) != 0)
        masks["child_new"] |= cpres & ~ppres0 & ~cpres0
        if zpfn:
            masks["child_changed"] |= cpres & cpres0 & ((centries & pfnm) != c0)
        t_last = time.perf_counter()
        polls += 1
        if progress:
            progress(polls)
        if zpfn:
            pentries, pok = ppm.read(ranges)
            if pok:
                masks["parent_changed"] |= (((pentries & present) != 0) & ppres0 &
                                            ((pentries & pfnm) != p0))
        if _state(child) in (None, "Z", "X"):
            break
        if time.monotonic() > deadline:
            raise SnapshotError(f"the child {child} did not exit within the timeout")
        time.sleep(poll)
        centries, ok = cpm.read(ranges)
        if ok and n and not centries.any():
            ok = False                                # a zombie's pagemap reads empty
    return masks, polls, t_last


# ===================================================================== replay

def _machine_kwargs():
    return set(inspect.signature(__import__("lazyvm").Machine).parameters)


def _machine_layout(machine):
    lay = getattr(machine, "layout", None)
    return getattr(lay, "name", lay) or "i386"


def layouts_available():
    """The layouts this build's Machine accepts."""
    return LAYOUTS if "layout" in _machine_kwargs() else ("i386",)


def _tables_of(p):
    """Page tables below p's pgd (every level, each once, pgd excluded)."""
    if hasattr(p, "stats"):
        return dict(p.stats())
    mem = p.machine.physical.view(np.uint32)
    pdes = mem[(p.pgd << 10):(p.pgd << 10) + 768]
    n = int(np.count_nonzero(pdes & 1))
    return {"page_tables": n, "page_tables_l1": n}


def _memory_for(snap, layout, npages_written):
    """Machine memory for the replay: data frames (with the copies), three sets of tables
    (parent, child, privatized), the boot frames and slack."""
    present = int(((snap.page_flags & F_PRESENT) != 0).sum())
    span = LEAF_SPAN[layout]
    leaf = len(np.unique(snap.page_addr // np.uint64(span))) + len(snap.vma_start)
    frames = present + 2 * npages_written + 4 * leaf + 4096 + 512
    mem = frames * PAGE
    limit = {"i386": 1 << 32, "pae": 1 << 36, "x86_64": 1 << 46}[layout]
    if mem > limit:
        raise SnapshotError(f"the replay needs {mem >> 20} MiB of simulated memory, more "
                            f"than {layout} allows ({limit >> 20} MiB)")
    return -(-mem // (1 << 20)) << 20


def load_costs(costs):
    """The cost profile for a spec (name, path or Profile), or SnapshotError with the
    cost model's own sentence (no such profile, no host profile yet, bad JSON)."""
    try:
        from ..costs import load_profile
    except ImportError:
        raise SnapshotError("--costs needs lazyvm.costs (the 0.2.0 cost model), "
                            "which this build does not have") from None
    try:
        return load_profile(costs)
    except ValueError as e:                       # costs.ProfileError is a ValueError
        raise SnapshotError(str(e)) from None


def _kernel_ns_fn(costs, kw):
    """(Machine keyword args, fn(delta stats) -> predicted ns or None) for a profile:
    the Machine's own kernel_ns when it takes costs=, else the profile applied to the
    counters' differences."""
    if costs is None:
        return {}, None
    prof = load_costs(costs)
    if "costs" in kw:
        return {"costs": prof}, None
    return {}, prof.kernel_ns


def _delta(a, b):
    return {k: b[k] - a.get(k, 0) for k in b if isinstance(b[k], int)}


def replay(snap, layout=None, costs=None, configs=None, repeats=3, use_trace=True):
    """Build, fork and write snap in each configuration; return a record (a dict: host,
    configs, layout, params, notes)."""
    kw = _machine_kwargs()
    if layout is None:
        layout = "x86_64" if "layout" in kw else "i386"
    if layout not in LAYOUTS:
        raise SnapshotError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout != "i386" and "layout" not in kw:
        raise SnapshotError(f"layout {layout} needs Machine(layout=...), which this build "
                            "of lazyvm does not have yet (only i386): use --layout i386")
    configs = list(configs or CONFIGS)
    for c in configs:
        if c not in CONFIGS:
            raise SnapshotError(f"unknown configuration {c!r}: use {', '.join(CONFIGS)}")
    extra, kfn = _kernel_ns_fn(costs, kw)
    if "layout" in kw:
        extra["layout"] = layout
    if "contents" in kw:
        extra["contents"] = False
    wset = snap.cow_addr
    vid = snap.page_vma(wset)
    private_w = np.array([p[3] == "p" and "w" in p[:3] for p in snap.vma_perms], bool)
    writable = (vid >= 0) & private_w[np.maximum(vid, 0)]
    placed = snap.placement(layout)
    writable &= placed[np.maximum(vid, 0)] != _NONE
    memory = _memory_for(snap, layout, int(writable.sum()))
    notes = list(snap.meta.get("notes", []))
    if (~writable).any():
        where = sorted({f"{snap.vma_name[i] or 'anonymous'} {snap.vma_perms[i]}"
                        if i >= 0 else "no VMA" for i in vid[~writable].tolist()})
        notes.append(f"{int((~writable).sum())} pages of the copy-on-write set lie outside "
                     f"private writable VMAs ({'; '.join(where[:4])}): no write of the "
                     "process copied them, the kernel copied or dropped them itself, and "
                     "replay does not write them")
    if "contents" not in kw:
        notes.append("this core has no contents=False: the replay simulates page contents "
                     "too (slower, same counts)")
    record = {"snapshot": {"pid": snap.meta.get("pid"), "name": snap.meta.get("name")},
              "layout": layout, "memory": memory, "costs": _costs_name(costs),
              "host": snap.host(), "configs": {}, "notes": notes,
              "write_set": int(writable.sum())}
    wa, ws = wset[writable], snap.cow_side[writable]
    # What the write set reaches: leaf tables (the span one leaf table maps) written,
    # against the leaf tables the address space has.
    span = LEAF_SPAN[layout]
    pv = snap.page_vma()
    pok = (pv >= 0) & (placed[np.maximum(pv, 0)] != _NONE)
    shift = placed.astype(np.int64) - snap.vma_start.astype(np.int64)
    page_new = snap.page_addr[pok].astype(np.int64) + shift[pv[pok]]
    w_new = wa.astype(np.int64) + shift[vid[writable]]
    record["leaf_tables"] = int(len(np.unique(page_new // span)))
    record["write_set_leaf_tables"] = int(len(np.unique(w_new // span)))
    for name in configs:
        fork_mode, rmap = CONFIGS[name]
        m = __import__("lazyvm").Machine(memory=memory, fork_mode=fork_mode, rmap=rmap,
                                         **extra)
        t0 = time.perf_counter_ns()
        p, amap = snap.spawn(m, layout)
        build_ns = time.perf_counter_ns() - t0
        left_out = amap.left_out
        times = []
        for _ in range(max(0, repeats - 1)):        # untimed children, timed forks
            t = time.perf_counter_ns()
            c = p.fork()
            times.append(time.perf_counter_ns() - t)
            c.exit()
        m.reset_peaks()
        s0 = m.stats()
        t = time.perf_counter_ns()
        c = p.fork()
        times.append(time.perf_counter_ns() - t)
        s1 = m.stats()
        fork = _delta(s0, s1)
        tables_fork = (_tables_of(p), _tables_of(c))
        addrs = amap(wa)
        t = time.perf_counter_ns()
        traced = _write(m, p, c, addrs, ws, use_trace)
        write_ns = time.perf_counter_ns() - t
        s2 = m.stats()
        writes = _delta(s1, s2)
        total = _delta(s0, s2)
        pt, ct = _tables_of(p), _tables_of(c)
        kernel_ns = fork.get("kernel_ns") if kfn is None else kfn(fork)
        kernel_total = total.get("kernel_ns") if kfn is None else kfn(total)
        rec = {"fork_mode": fork_mode, "rmap": rmap,
               "fork_ns": int(sorted(times)[len(times) // 2]), "fork_ns_all": times,
               "kernel_ns": kernel_ns, "kernel_ns_fork_and_writes": kernel_total,
               "write_ns": write_ns, "build_ns": build_ns, "trace_engine": traced,
               "cow_copies": writes.get("cow_copies", 0),
               "cow_reuses": writes.get("cow_reuses", 0),
               "unshares": total.get("unshares", 0),
               "unshares_by_level": {k: v for k, v in total.items()
                                     if k.startswith("unshares_l")},
               "ptes_copied": total.get("ptes_copied", 0),
               "ptes_copied_fork": fork.get("ptes_copied", 0),
               "tables_copied": fork.get("tables_copied"),
               "page_tables": pt["page_tables"], "child_page_tables": ct["page_tables"],
               "page_tables_after_fork": tables_fork[0]["page_tables"],
               "child_page_tables_after_fork": tables_fork[1]["page_tables"],
               "parent_tables_by_level": {k: v for k, v in pt.items()
                                          if k.startswith("page_tables_l")},
               "machine_page_tables": s2["page_tables"],
               "frames_peak": s2["frames_peak"], "frames_before_fork": s0["frames_used"],
               "pte_chain_nodes_peak": s2["pte_chain_nodes_peak"],
               "rss": p.stats()["rss"] if hasattr(p, "stats") else None,
               "left_out_pages": left_out}
        record["configs"][name] = rec
        del m, p, c
    return record


def _costs_name(costs):
    if costs is None:
        return None
    return getattr(costs, "name", str(costs))


def _write(m, p, c, addrs, sides, use_trace):
    """Write the set: the parent's pages from the parent, the child's from the child, in
    address order (with m.replay when this core has the trace engine).  Returns whether
    the trace engine was used."""
    if not len(addrs):
        return False
    who = np.where(sides == SIDE_CHILD, c.pid, p.pid).astype(np.int64)
    if use_trace and hasattr(m, "replay"):
        ev = np.zeros((len(addrs), 4), np.int64)
        ev[:, 0] = who
        ev[:, 1] = 1
        ev[:, 2] = addrs
        m.replay(ev)
        return True
    for proc in (p, c):
        sel = who == proc.pid
        if sel.any():
            proc.touch_pages(addrs[sel], write=True)
    return False


# ===================================================================== report

def _ms(ns):
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def format_replay(rec):
    """The replay as text: one row per configuration, the kernel's figures below."""
    h = rec["host"]
    lines = [f"replay of {h.get('name') or '?'} (pid {h.get('pid')}) on {rec['layout']}"
             f"{', costs ' + rec['costs'] if rec.get('costs') else ''}: "
             f"{h['present_pages']} present pages, {rec['write_set']} pages written after "
             "the fork", ""]
    head = ("config", "fork ms", "kernel ms", "cow copies", "unshares", "ptes copied",
            "tables P", "tables C", "peak frames", "peak nodes")
    rows = [head]
    for name, c in rec["configs"].items():
        rows.append((name, _ms(c["fork_ns"]), _ms(c["kernel_ns"]), c["cow_copies"],
                     _fmt_unshares(c), c["ptes_copied"], c["page_tables"],
                     c["child_page_tables"], c["frames_peak"], c["pte_chain_nodes_peak"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    lines.append("")
    lines.append(f"the write set reaches {rec['write_set_leaf_tables']} of the "
                 f"{rec['leaf_tables']} leaf tables ({LEAF_SPAN[rec['layout']] >> 20} MiB "
                 "spans) that map a page")
    vmpte = h.get("vm_pte_kb")
    lines.append("kernel (recorded at capture): "
                 f"VmPTE {vmpte} kB = {vmpte // 4 if vmpte is not None else '?'} tables, "
                 f"RSS {h['rss_pages']} pages, present {h['present_pages']}, "
                 f"ZERO_PAGE {h['zero_pages']}, swapped {h['swapped_pages']}"
                 + (f", copied on write {h['cow_pages']}" if h.get("cow_pages") is not None
                    else "")
                 + (f", child's new pages {h['child_new_pages']}"
                    if h.get("child_new_pages") is not None else "")
                 + (f", child VmPTE {h['child_vm_pte_kb']} kB"
                    if h.get("child_vm_pte_kb") is not None else ""))
    if vmpte and "copy" in rec["configs"]:
        t = rec["configs"]["copy"]["page_tables"]
        lines.append(f"parent page tables (copy): {t} against VmPTE/4 kB = {vmpte // 4} "
                     f"({100.0 * (t - vmpte / 4) / (vmpte / 4):+.1f}%)"
                     + ("" if rec["layout"] == "x86_64" else
                        f"; on {rec['layout']} the levels differ, so only the leaf "
                        "tables are comparable"))
    for note in rec.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _fmt_unshares(c):
    lv = c.get("unshares_by_level") or {}
    if not lv:
        return str(c["unshares"])
    return f"{c['unshares']} (" + "/".join(str(lv[k]) for k in sorted(lv)) + ")"


def write_json(rec, path):
    with open(path, "w") as f:
        json.dump(rec, f, indent=2, sort_keys=True, default=int)
        f.write("\n")


def plot_replay(rec, path):
    """Bars of fork time, tables and copy-on-write work per configuration (matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SnapshotError("--plot needs matplotlib: pip install matplotlib") from None
    names = list(rec["configs"])
    cs = [rec["configs"][n] for n in names]
    panels = [("fork (simulated) ms", [c["fork_ns"] / 1e6 for c in cs]),
              ("ptes copied", [c["ptes_copied"] for c in cs]),
              ("unshares", [c["unshares"] for c in cs]),
              ("page tables parent/child", [c["page_tables"] + c["child_page_tables"]
                                             for c in cs])]
    if all(c["kernel_ns"] is not None for c in cs):
        panels.insert(1, ("predicted kernel ms", [c["kernel_ns"] / 1e6 for c in cs]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (title, vals) in zip(axes, panels):
        ax.bar(names, vals, color=["#777", "#444", "#3a7", "#185"][:len(names)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    h = rec["host"]
    fig.suptitle(f"replay of {h.get('name')} ({rec['layout']}): VmPTE {h.get('vm_pte_kb')} kB,"
                 f" copied on write {h.get('cow_pages')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
