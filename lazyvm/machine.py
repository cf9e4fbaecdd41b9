"""Machine and Process: the public API of lazyvm (DESIGN.md section 5).

This layer validates every argument, owns the VMAs and states the semantics; the compiled
core (lazyvm._core) does the page-table work and trusts what it is given.  Every check
happens before the core is called, so a ValueError or SegmentationFault changes nothing;
the core itself allocates before it changes anything, so OutOfMemory leaves the machine
consistent (Machine.check() passes after every error).
"""
import functools
import threading
from collections import Counter
from numbers import Integral

import numpy as np

from . import vma as vmalib
from ._core import Core
from .errors import InvariantError, OutOfMemory, ProcessExited, SegmentationFault
from .layout import (MAX_MEMORY, MAX_SWAP_SLOTS, MMAP_BASE, P, PAGE_SHIFT, PAGE_SIZE,
                     PGDIR_SHIFT, TASK_SIZE, parse_prot, vm_flags)
from .vma import ShmObject, Vma

FORK_MODES = ("copy", "share")
BIG = 1 << 62                  # "as many as there are": larger counts are clamped to this


def _serialized(method):
    """Run a method of Machine or Process under its machine's lock.  The core drops the
    GIL in its bulk loops, so threads may drive different machines in parallel; one
    machine's structures are changed by one thread at a time."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with (self if isinstance(self, Machine) else self.machine)._lock:
            return method(self, *args, **kwargs)
    return locked

_NO_VMAS = vmalib.vma_array([])
RECLAIM_METHODS = ("rmap", "scan")


def _int(value, what):
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what} must be an integer, not {value!r}")
    return int(value)


def _range(addr, length, what="range"):
    """Validate a page-aligned, non-empty range inside user space."""
    addr, length = _int(addr, "address"), _int(length, "length")
    if addr % PAGE_SIZE:
        raise ValueError(f"address {addr:#x} is not page-aligned")
    if length <= 0:
        raise ValueError(f"{what} length must be positive, not {length}")
    if length % PAGE_SIZE:
        raise ValueError(f"length {length:#x} is not a whole number of pages")
    if addr < 0 or addr + length > TASK_SIZE:
        raise ValueError(f"{what} [{addr:#x}, {addr + length:#x}) is outside user space "
                         f"[0, {TASK_SIZE:#x})")
    return addr, length


def _span(addr, length):
    """Validate a byte range (any alignment, non-empty) inside user space."""
    addr, length = _int(addr, "address"), _int(length, "length")
    if length <= 0:
        raise ValueError(f"length must be positive, not {length}")
    if addr < 0 or addr + length > TASK_SIZE:
        raise ValueError(f"[{addr:#x}, {addr + length:#x}) is outside user space "
                         f"[0, {TASK_SIZE:#x})")
    return addr, length


class Machine:
    """A simulated i386 machine: physical memory, swap and the processes on it.

    >>> m = Machine(memory=16 << 20, fork_mode="share", rmap=True)
    >>> p = m.spawn()
    >>> a = p.mmap(1 << 20)
    >>> p.write(a, b"hello"); c = p.fork(); c.read(a, 5)
    b'hello'
    >>> m.check()
    """

    def __init__(self, memory=64 << 20, fork_mode="share", rmap=True, swap=0):
        memory = _int(memory, "memory")
        swap = _int(swap, "swap")
        if memory <= 0 or memory % PAGE_SIZE:
            raise ValueError(f"memory must be a positive whole number of pages, not {memory}")
        if memory > MAX_MEMORY:
            raise ValueError(f"memory {memory} exceeds 4 GiB, the non-PAE limit")
        if memory < (1 << 20) + 64 * PAGE_SIZE:
            raise ValueError("memory must leave room beyond the 1 MiB of kernel page "
                             "tables made at boot: at least 1 MiB + 64 pages")
        if swap < 0 or swap % PAGE_SIZE:
            raise ValueError(f"swap must be a whole number of pages, not {swap}")
        if swap // PAGE_SIZE >= MAX_SWAP_SLOTS:
            raise ValueError("swap exceeds the 2**24 slots a swap entry can name")
        if fork_mode not in FORK_MODES:
            raise ValueError(f"fork_mode must be one of {FORK_MODES}, not {fork_mode!r}")
        if not isinstance(rmap, bool):
            raise ValueError(f"rmap must be True or False, not {rmap!r}")
        self.memory = memory
        self.swap = swap
        self.fork_mode = fork_mode
        self.rmap_enabled = rmap
        self._core = Core(memory // PAGE_SIZE, rmap, swap // PAGE_SIZE + 1 if swap else 0)
        self._procs = {}
        self._next_pid = 1
        self._scan_cursor = 0
        self._shm_live = 0           # shared objects ever made and not yet released
        self._shm_holes = []         # [(base, npages)]: index ranges of released objects
        self._lock = threading.RLock()

    def __repr__(self):
        return (f"Machine(memory={self.memory}, fork_mode={self.fork_mode!r}, "
                f"rmap={self.rmap_enabled}, swap={self.swap})")

    # -- processes -------------------------------------------------------------------
    @property
    def processes(self):
        """The live processes, in order of pid."""
        return list(self._procs.values())

    @property
    def boot_frames(self):
        """Frames taken at boot (ZERO_PAGE, boot pgd, kernel page tables): never freed."""
        return self._core.boot_frames

    @property
    def physical(self):
        """Physical memory: a numpy uint8 array of frames * 4096 bytes (read only)."""
        return self._core.physical

    @_serialized
    def spawn(self):
        """A new process with an empty user space.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.vmas, p.alive
        ([], True)
        """
        pgd = self._core.new_pgd()
        return self._add(pgd, [])

    def _add(self, pgd, vmas, arr=None):
        p = Process(self, self._next_pid, pgd, vmas, arr)
        self._next_pid += 1
        self._procs[p.pid] = p
        return p

    # -- inspection ------------------------------------------------------------------
    @_serialized
    def stats(self):
        """A dict of int counters (docs/API.md lists them).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> p.write(a, b"x"); s = m.stats(); s["demand_zero"], s["page_tables"]
        (1, 1)
        """
        return self._core.stats()

    @_serialized
    def reset_peaks(self):
        """Set frames_peak, page_tables_peak and pte_chain_nodes_peak to current values."""
        self._core.reset_peaks()

    @_serialized
    def frame_count(self, pfn):
        """The reference count of a data frame, or the use count of a page table."""
        return self._core.frame_count(self._pfn(pfn))

    @_serialized
    def rmap(self, pfn):
        """[(table_pfn, index), ...]: the PTE slots that map frame pfn (rmap only).

        >>> m = Machine(memory=8 << 20, fork_mode="copy"); p = m.spawn()
        >>> a = p.mmap(4096); p.write(a, b"x"); c = p.fork()
        >>> pfn = p.translate(a) >> 12
        >>> sorted(m.rmap(pfn)) == sorted([(p.pde(a) >> 12, 0), (c.pde(a) >> 12, 0)])
        True
        """
        return self._core.rmap_slots(self._pfn(pfn))

    def _pfn(self, pfn):
        pfn = _int(pfn, "frame number")
        if not 0 <= pfn < self.memory // PAGE_SIZE:
            raise ValueError(f"frame {pfn} is outside physical memory")
        return pfn

    @_serialized
    def check(self):
        """Verify every invariant of DESIGN.md section 3; raise InvariantError if broken.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096)
        >>> p.write(a, b"x"); m.check()
        >>> m.physical.view("uint32")[(p.pde(a) >> 12) * 1024] = 0   # lose a PTE
        >>> m.check()
        Traceback (most recent call last):
        ...
        lazyvm.errors.InvariantError: invariant 1: frame ... count 1 != 0 (slots 0 + caches)
        """
        users = Counter()
        objects = {}
        for p in self._procs.values():
            prev_end = 0
            for v in p._vmas:
                if v.start < prev_end or v.start >= v.end or v.end > TASK_SIZE \
                        or v.start % PAGE_SIZE or v.end % PAGE_SIZE:
                    raise InvariantError(f"process {p.pid}: bad VMA list {p._vmas}")
                prev_end = v.end
                if v.shm is not None:
                    users[id(v.shm)] += 1
                    objects[id(v.shm)] = v.shm
        for key, obj in objects.items():
            if obj.users != users[key]:
                raise InvariantError(f"shared object at {obj.base}: {obj.users} users "
                                     f"recorded, {users[key]} VMAs name it")
        self._core.check([p.pgd for p in self._procs.values()],
                         [(o.base, o.npages) for o in objects.values()])

    # -- memory pressure ---------------------------------------------------------------
    @_serialized
    def reclaim(self, n, method=None):
        """Swap out up to n private anonymous frames; return how many were freed.

        method "rmap" (the default with rmap): a second-chance clock over frames, testing
        and unmapping through each frame's pte_chain (2.6.0).  method "scan" (the default
        without rmap): Linux 2.4's swap_out, walking each process's page tables.  A full
        swap area raises OutOfMemory before anything changes.

        >>> m = Machine(memory=8 << 20, swap=1 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> p.write(a, b"ab" * 4096)          # both PTEs young (A set)
        >>> m.reclaim(2)                      # first lap clears A, the second takes them
        2
        >>> p.translate(a) is None, p.read(a, 2), m.stats()["swap_ins"]
        (True, b'ab', 1)
        """
        n = _int(n, "n")
        if n < 0:
            raise ValueError(f"n must not be negative, not {n}")
        n = min(n, self.memory // PAGE_SIZE)     # never more than there are frames
        if not self.swap:
            raise ValueError("reclaim needs a swap area: Machine(swap=bytes)")
        if method is None:
            method = "rmap" if self.rmap_enabled else "scan"
        if method not in RECLAIM_METHODS:
            raise ValueError(f"method must be one of {RECLAIM_METHODS}, not {method!r}")
        if method == "rmap" and not self.rmap_enabled:
            raise ValueError("method 'rmap' needs Machine(rmap=True)")
        if n == 0:
            return 0
        if method == "rmap":
            return self._core.reclaim_rmap(n)
        mms = [(p.pgd, p._varr) for p in self._procs.values()]
        freed, self._scan_cursor = self._core.reclaim_scan(n, mms, self._scan_cursor)
        return freed

    @_serialized
    def fail_after(self, n):
        """Fault injection for tests: the next n allocations (frames, pte_chain pool
        growth, swap slots) succeed and every one after them fails, as if memory were
        exhausted, until fail_after(None).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096)
        >>> m.fail_after(0); p.write(a, b"x")
        Traceback (most recent call last):
        ...
        lazyvm.errors.OutOfMemory: no free frame (or pte_chain node) for a page fault
        >>> m.fail_after(None); p.write(a, b"x"); m.check()
        """
        if n is not None:
            n = min(_int(n, "n"), BIG)
            if n < 0:
                raise ValueError("n must not be negative")
        self._core.set_fail_after(n)

    # -- shared-memory objects -------------------------------------------------------
    def _new_shm(self, npages):
        """A shared-memory object of npages, its index range first fit in the ranges
        released objects left, else new."""
        self._shm_live += 1
        for k, (base, n) in enumerate(self._shm_holes):
            if n >= npages:
                if n == npages:
                    del self._shm_holes[k]
                else:
                    self._shm_holes[k] = (base + npages, n - npages)
                return ShmObject(base, npages)
        return ShmObject(self._core.shm_alloc(npages), npages)

    def _free_shm_range(self, base, npages):
        """Give an object's (zeroed) index range back, merging it with its neighbours."""
        holes = sorted(self._shm_holes + [(base, npages)])
        merged = [holes[0]]
        for b, n in holes[1:]:
            pb, pn = merged[-1]
            if pb + pn == b:
                merged[-1] = (pb, pn + n)
            else:
                merged.append((b, n))
        self._shm_holes = merged

    def _retarget(self, old, new):
        """Account shared-object users for a VMA list going from old to new; release an
        object no VMA names any more (after the core has zapped its PTEs)."""
        if not self._shm_live:
            return
        delta = Counter()
        objs = {}
        for v in old:
            if v.shm is not None:
                delta[id(v.shm)] -= 1
                objs[id(v.shm)] = v.shm
        for v in new:
            if v.shm is not None:
                delta[id(v.shm)] += 1
                objs[id(v.shm)] = v.shm
        for key, d in delta.items():
            obj = objs[key]
            obj.users += d
            if obj.users == 0:
                self._core.shm_release(obj.base, obj.npages)
                self._free_shm_range(obj.base, obj.npages)
                self._shm_live -= 1


class Process:
    """A process: a page directory and a list of VMAs (create with Machine.spawn)."""

    def __init__(self, machine, pid, pgd, vmas=(), arr=None):
        self.machine = machine
        self.pid = pid
        self.pgd = pgd
        self.alive = True
        self._vmas = []
        self._varr = _NO_VMAS
        self._set_vmas(list(vmas), arr)

    def __repr__(self):
        state = "alive" if self.alive else "exited"
        return f"<Process {self.pid} {state}, {len(self._vmas)} VMAs>"

    # -- helpers ----------------------------------------------------------------------
    def _live(self):
        if not self.alive:
            raise ProcessExited(f"process {self.pid} has exited")
        return self.machine._core

    def _set_vmas(self, vmas, arr=None):
        """Install a new VMA list (normalised here unless arr, its core array, is given:
        Vma objects are never changed once in a list, so a fork shares both)."""
        new = vmalib.normalise(vmas) if arr is None else vmas
        self.machine._retarget(self._vmas, new)
        self._vmas = new
        self._varr = vmalib.vma_array(new) if arr is None else arr

    def _access(self, addr, length, write):
        """The VMA pieces of [addr, addr+length), or SegmentationFault if any byte is
        outside every VMA or the access is against a VMA's protection."""
        parts, covered = vmalib.pieces(self._vmas, addr, addr + length)
        if not covered:
            raise SegmentationFault(f"process {self.pid}: [{addr:#x}, {addr + length:#x}) "
                                    "is not all mapped")
        for i, lo, hi in parts:
            if not self._vmas[i].allows(write):
                raise SegmentationFault(
                    f"process {self.pid}: {'write' if write else 'read'} at {lo:#x} "
                    f"against protection {self._vmas[i].prot!r}")
        return parts

    @property
    def vmas(self):
        """[(start, end, prot, shared), ...], sorted.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(3 * 4096)
        >>> p.mprotect(a + 4096, 4096, "r"); [(hex(s), hex(e), pr) for s, e, pr, _ in p.vmas]
        [('0x40000000', '0x40001000', 'rw'), ('0x40001000', '0x40002000', 'r'), ('0x40002000', '0x40003000', 'rw')]
        """
        return [(v.start, v.end, v.prot, v.shared) for v in self._vmas]

    # -- mappings ---------------------------------------------------------------------
    @_serialized
    def mmap(self, length, prot="rw", shared=False, addr=None):
        """Map length bytes of anonymous memory, private or shared; return the address.
        Without addr: first fit at or above 0x40000000, then below.  With addr: exactly
        there, replacing what was mapped (MAP_FIXED).

        >>> p = Machine(memory=8 << 20).spawn()
        >>> hex(p.mmap(8192)), hex(p.mmap(4096, prot="r", shared=True, addr=0x1000))
        ('0x40000000', '0x1000')
        """
        self._live()
        prot = parse_prot(prot)
        if not isinstance(shared, bool):
            raise ValueError(f"shared must be True or False, not {shared!r}")
        if addr is None:
            length = _range(0, length, "mmap")[1]
            addr = self._unmapped_area(length)
        else:
            addr, length = _range(addr, length, "mmap")
            if vmalib.pieces(self._vmas, addr, addr + length)[0]:
                self.munmap(addr, length)
        shm = None
        if shared:
            shm = self.machine._new_shm(length // PAGE_SIZE)
        self._set_vmas(self._vmas + [Vma(addr, addr + length, prot, shm)])
        return addr

    def _unmapped_area(self, length):
        """get_unmapped_area: the lowest gap of length bytes at or above MMAP_BASE,
        else the lowest anywhere."""
        for lo in (MMAP_BASE, 0):
            pos = lo
            for v in self._vmas:
                if v.end <= pos:
                    continue
                if v.start >= pos + length:
                    break
                pos = v.end
            if pos + length <= TASK_SIZE:
                return pos
        raise OutOfMemory(f"no room for {length:#x} bytes in the user address space")

    @_serialized
    def munmap(self, addr, length):
        """Unmap [addr, addr+length): frames lose their references, page tables whose
        4 MiB span no VMA reaches any more are freed (one use dropped, if shared).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> p.write(a, b"x"); p.munmap(a, 8192); p.vmas, m.stats()["page_tables"]
        ([], 0)
        """
        core = self._live()
        addr, length = _range(addr, length, "munmap")
        end = addr + length
        if not vmalib.pieces(self._vmas, addr, end)[0]:
            return
        kept, _ = vmalib.remove_range(self._vmas, addr, end)
        new_arr = vmalib.vma_array(vmalib.normalise(kept))
        core.zap(self.pgd, self._varr, new_arr, addr, end)
        self._set_vmas(kept)

    @_serialized
    def mprotect(self, addr, length, prot):
        """Change the protection of [addr, addr+length), which must be fully mapped.
        A private mapping never gets RW back from mprotect: the next write faults.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096); p.write(a, b"x")
        >>> p.mprotect(a, 4096, "r"); hex(p.pte(a) & 0xfff)
        '0x65'
        """
        core = self._live()
        addr, length = _range(addr, length, "mprotect")
        prot = parse_prot(prot)
        end = addr + length
        parts, covered = vmalib.pieces(self._vmas, addr, end)
        if not covered:
            raise ValueError(f"mprotect: [{addr:#x}, {end:#x}) is not all mapped")
        rows = np.array([(lo, hi, vm_flags(prot, self._vmas[i].shared)) for i, lo, hi in parts],
                        dtype=np.uint32).reshape(-1, 3)
        core.mprotect(self.pgd, self._varr, rows)
        kept, removed = vmalib.remove_range(self._vmas, addr, end)
        for v in removed:
            v.prot = prot
        self._set_vmas(kept + removed)

    # -- access ----------------------------------------------------------------------
    @_serialized
    def read(self, addr, length):
        """Read length bytes at addr (any alignment, may cross pages and VMAs).

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(8192)
        >>> p.write(a + 4094, b"abcd"); p.read(a + 4093, 6)
        b'\\x00abcd\\x00'
        """
        core = self._live()
        addr, length = _span(addr, length)
        parts = self._access(addr, length, False)
        out = np.empty(length, dtype=np.uint8)
        for i, lo, hi in parts:
            core.read_into(self.pgd, self._varr, i, lo, out, lo - addr, hi - lo)
        return out.tobytes()

    @_serialized
    def write(self, addr, data):
        """Write bytes at addr.  Every page is faulted in for write before the first byte
        is copied, so a write that runs out of memory changes no byte.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096, prot="r")
        >>> p.write(a, b"x")
        Traceback (most recent call last):
        ...
        lazyvm.errors.SegmentationFault: process 1: write at 0x40000000 against protection 'r'
        """
        core = self._live()
        try:
            src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        except TypeError:
            raise ValueError(f"data must be a contiguous bytes-like object, not "
                             f"{type(data).__name__}") from None
        addr, length = _span(addr, len(src))
        parts = self._access(addr, length, True)
        for i, lo, hi in parts:
            core.fault_range(self.pgd, self._varr, i, lo & ~(PAGE_SIZE - 1), hi, True)
        for i, lo, hi in parts:
            core.write_from(self.pgd, self._varr, i, lo, src, lo - addr, hi - lo)

    @_serialized
    def touch(self, addr, length, write=False):
        """Access every page of [addr, addr+length) (bulk faulting in the core).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(1 << 20)
        >>> p.touch(a, 1 << 20); m.stats()["zero_page_maps"]    # reads map the ZERO_PAGE
        256
        """
        core = self._live()
        addr, length = _range(addr, length, "touch")
        parts = self._access(addr, length, bool(write))
        for i, lo, hi in parts:
            core.fault_range(self.pgd, self._varr, i, lo, hi, bool(write))

    @_serialized
    def touch_pages(self, addrs, write=False):
        """Access the page of each address in addrs (a sequence or numpy array), in order.

        >>> import numpy as np
        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(1 << 20)
        >>> p.touch_pages(a + 4096 * np.arange(0, 256, 2), write=True); m.stats()["demand_zero"]
        128
        """
        core = self._live()
        a = np.asarray(addrs)
        if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
            raise ValueError("addrs must be a one-dimensional array of integer addresses")
        a = a.astype(np.int64)
        if a.size == 0:
            return
        if a.min() < 0 or a.max() >= TASK_SIZE:
            raise ValueError("an address of addrs is outside user space")
        starts = np.array([v.start for v in self._vmas], dtype=np.int64)
        ends = np.array([v.end for v in self._vmas], dtype=np.int64)
        vidx = np.searchsorted(starts, a, side="right") - 1
        ok = vidx >= 0
        ok[ok] &= a[ok] < ends[vidx[ok]]
        if not ok.all():
            bad = int(a[np.argmin(ok)])
            raise SegmentationFault(f"process {self.pid}: {bad:#x} is not mapped")
        allowed = np.array([v.allows(bool(write)) for v in self._vmas], dtype=bool)
        if not allowed[vidx].all():
            bad = int(a[np.argmin(allowed[vidx])])
            raise SegmentationFault(f"process {self.pid}: {'write' if write else 'read'} "
                                    f"at {bad:#x} against protection")
        pages = (a & ~(PAGE_SIZE - 1)).astype(np.uint32)
        core.fault_pages(self.pgd, self._varr, pages, np.ascontiguousarray(vidx), bool(write))

    # -- fork, exec, exit ------------------------------------------------------------
    @_serialized
    def fork(self, mode=None):
        """A child with a copy of this address space: mode "copy" (2.4 copy_page_range)
        or "share" (share the page tables, the seed); None means Machine.fork_mode.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096); p.write(a, b"1")
        >>> c = p.fork(); c.write(a, b"2"); p.read(a, 1), c.read(a, 1), m.stats()["unshares"]
        (b'1', b'2', 1)
        """
        core = self._live()
        if mode is None:
            mode = self.machine.fork_mode
        if mode not in FORK_MODES:
            raise ValueError(f"fork mode must be one of {FORK_MODES}, not {mode!r}")
        if mode == "copy":
            pgd = core.fork_copy(self.pgd, self._varr)
        else:
            pgd = core.fork_share(self.pgd)
        return self.machine._add(pgd, self._vmas, self._varr)

    @_serialized
    def exec(self):
        """Drop the whole user space, keep the process (and its page directory).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exec(); p.vmas, p.alive, m.stats()["frames_used"] - m.boot_frames
        ([], True, 1)
        """
        core = self._live()
        core.exit_mm(self.pgd, self._varr, False)
        self._set_vmas([], _NO_VMAS)

    @_serialized
    def exit(self):
        """Drop the user space and the page directory; the process is gone.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exit(); m.processes, m.stats()["frames_used"] == m.boot_frames
        ([], True)
        """
        core = self._live()
        core.exit_mm(self.pgd, self._varr, True)
        self._set_vmas([], _NO_VMAS)
        self.alive = False
        del self.machine._procs[self.pid]

    # -- raw entries -----------------------------------------------------------------
    def _entry_addr(self, addr):
        addr = _int(addr, "address")
        if not 0 <= addr < 1 << 32:
            raise ValueError(f"address {addr:#x} is not a 32-bit address")
        return addr

    @_serialized
    def pde(self, addr):
        """The raw page-directory entry for addr.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096); p.write(a, b"x")
        >>> hex(p.pde(a) & 0xfff), hex(p.pde(0xC0000000) & 0xfff)   # user, kernel
        ('0x67', '0x63')
        """
        self._live()
        addr = self._entry_addr(addr)
        mem = self.machine._core.physical.view(np.uint32)
        return int(mem[(self.pgd << 10) + (addr >> PGDIR_SHIFT)])

    @_serialized
    def pte(self, addr):
        """The raw page-table entry for addr (0 if its PDE is not present).

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(8192); p.write(a, b"x")
        >>> p.touch(a + 4096, 4096); hex(p.pte(a) & 0xfff), hex(p.pte(a + 4096))
        ('0x67', '0x25')
        """
        pde = self.pde(addr)
        if not pde & P:
            return 0
        mem = self.machine._core.physical.view(np.uint32)
        return int(mem[((pde >> PAGE_SHIFT) << 10) + ((addr >> PAGE_SHIFT) & 1023)])

    @_serialized
    def translate(self, addr):
        """The physical address addr maps to, or None if it is not present.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096)
        >>> p.translate(a + 5) is None; p.write(a, b"x"); p.translate(a + 5) & 0xfff
        True
        5
        """
        pte = self.pte(addr)
        if not pte & P:
            return None
        return ((pte >> PAGE_SHIFT) << PAGE_SHIFT) | (addr & (PAGE_SIZE - 1))
