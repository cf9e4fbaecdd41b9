"""Machine: the public API of lazyvm (DESIGN.md section 5), with Process (process.py).

This layer validates every argument, owns the VMAs and states the semantics; the compiled
core (lazyvm.core) does the page-table work and trusts what it is given.  Every check
happens before the core is called, so a ValueError or SegmentationFault changes nothing;
the core itself allocates before it changes anything, so OutOfMemory leaves the machine
consistent (Machine.check() passes after every error).
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from collections import Counter
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import costs as costlib
from .core import Core, check as _check_core
from .errors import InvariantError, OutOfMemory
from .layout import LAYOUTS, MAX_SWAP_SLOTS, PAGE_SIZE, Layout
from .process import (BIG, FORK_MODES, _TOKEN, Process, _bool, _int, _Mm, _serialized,
                      _Uncopyable)
from .vma import ShmObject, Vma, VmaList, vma_array

# The four configurations every report compares: name -> (fork_mode, rmap), in the
# order the reports print them.
CONFIGS = {
    "copy": ("copy", False),          # Linux 2.4 copy_page_range
    "copy+rmap": ("copy", True),      # 2.5 / 2.6.0 with pte_chains
    "share": ("share", False),        # lazy page-table sharing (the seed)
    "share+rmap": ("share", True),
}
ACCOUNTINGS = ("lazy", "eager")
THP_MODES = ("never", "always", "madvise")
THP_COW = ("split", "copy")
FRAME_KINDS = {0x001: "free", 0x002: "reserved", 0x004: "pgd", 0x008: "table",
               0x010: "anon", 0x020: "shmem", 0x400: "anon"}   # 0x400: a huge page's tail

# Trace events (Machine.replay): rows of (pid, kind, addr, arg).
EV_READ, EV_WRITE, EV_FORK, EV_EXIT, EV_MUNMAP = 0, 1, 2, 3, 4
EVENT_FIELDS = ("pid", "kind", "addr", "arg")
INT64_MAX = (1 << 63) - 1


RECLAIM_METHODS = ("rmap", "scan")


def check_machine_args(memory: Any = 64 << 20, fork_mode: Any = "share", rmap: Any = True,
                       swap: Any = 0, layout: Any = "i386", share_level: Any = 1,
                       contents: Any = True, accounting: Any = "lazy", thp: Any = "never",
                       thp_cow: Any = "split") -> Tuple[int, int, int, bool, bool, Layout]:
    """Check Machine's arguments (TypeError or ValueError, as Machine raises them)
    without building anything; return (memory, swap, share_level, rmap, contents, the
    Layout)."""
    memory = _int(memory, "memory")
    swap = _int(swap, "swap")
    share_level = _int(share_level, "share_level")
    rmap = _bool(rmap, "rmap")
    contents = _bool(contents, "contents")
    if not isinstance(layout, str):
        raise TypeError(f"layout must be a str, not {type(layout).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, not {layout!r}")
    lay = LAYOUTS[layout]
    if not isinstance(fork_mode, str):
        raise TypeError(f"fork_mode must be a str, not {type(fork_mode).__name__}")
    if fork_mode not in FORK_MODES:
        raise ValueError(f"fork_mode must be one of {FORK_MODES}, not {fork_mode!r}")
    if memory <= 0 or memory % PAGE_SIZE:
        raise ValueError(f"memory must be a positive whole number of pages, not {memory}")
    if memory > lay.max_memory:
        raise ValueError(f"memory {memory} exceeds {lay.max_memory} bytes "
                         f"({lay.max_memory / (1 << 30):g} GiB), the {layout} limit"
                         + (" (frame numbers are 32-bit)" if layout == "x86_64" else ""))
    if memory < (1 << 20) + 64 * PAGE_SIZE:
        raise ValueError("memory must leave room beyond the 1 MiB of kernel page "
                         "tables made at boot: at least 1 MiB + 64 pages")
    if swap < 0 or swap % PAGE_SIZE:
        raise ValueError(f"swap must be a whole number of pages, not {swap}")
    if swap // PAGE_SIZE >= MAX_SWAP_SLOTS:
        raise ValueError("swap exceeds the 2**24 slots a swap entry can name")
    if not 1 <= share_level <= lay.max_share_level:
        why = (" (a pae PDPT entry has no RW bit to write-protect a shared pmd table)"
               if layout == "pae" else "")
        raise ValueError(f"share_level on {layout} must be 1..{lay.max_share_level}, "
                         f"not {share_level}{why}")
    for value, what, allowed in ((accounting, "accounting", ACCOUNTINGS),
                                 (thp, "thp", THP_MODES), (thp_cow, "thp_cow", THP_COW)):
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, not {type(value).__name__}")
        if value not in allowed:
            raise ValueError(f"{what} must be one of {allowed}, not {value!r}")
    if thp != "never" and layout == "i386":
        raise ValueError("i386 has no huge pages for user memory here: thp must be "
                         "'never' (use layout 'pae' or 'x86_64')")
    if accounting == "eager" and share_level != 1:
        raise ValueError("eager accounting counts pages under shared leaf tables: it "
                         f"needs share_level=1, not {share_level}")
    return memory, swap, share_level, rmap, contents, lay


class Machine(_Uncopyable):
    """A simulated machine: physical memory, swap and the processes on it.

    Parameters
    ----------
    memory : int
        Physical memory in bytes, a whole number of 4 KiB pages, at most the layout's
        limit (i386 4 GiB, pae 64 GiB, x86_64 16 TiB less one page: frame numbers
        are 32-bit; more is a ValueError naming the limit).
    fork_mode : {"share", "copy", "odf"}
        What ``Process.fork()`` does by default: share the page tables (the seed), copy
        them (Linux 2.4's ``copy_page_range``), or On-demand-fork (EuroSys 2021): share
        a leaf table only if its whole span lies inside one private VMA, copy the rest.
    rmap : bool
        Keep a reverse map (2.6.0 pte_chains) of every mapped frame.
    swap : int
        Swap area in bytes (0: none).  Reserved as virtual memory only.
    layout : {"i386", "pae", "x86_64"}
        The paging hardware (DESIGN.md section 6).
    share_level : int
        Share fork shares the tables of this level (1 = leaf tables) and copies those
        above: 1 on i386 and pae, 1 to 3 on x86_64.
    contents : bool
        Keep page data.  With False every table, count, chain and swap slot is
        simulated but no byte of data: ``read``/``write`` raise ValueError, and address
        spaces far larger than the host can be built and forked.
    costs : str, path or lazyvm.costs.Profile, optional
        A cost profile: ``stats()["kernel_ns"]`` is then the predicted kernel time.
    accounting : {"lazy", "eager"}
        How pages under a shared leaf table are counted.  "lazy" (the seed): a page
        takes a reference (and rmap slot) for another table only when a table is
        privatized.  "eager" (COW page tables v3-v5): a share or odf fork takes, for
        every present page under each leaf table it shares, the reference a copy fork
        would take (``eager_refs``), copying no PTE; privatize takes none; a sharer that
        lets go of a shared table drops one per page (``eager_refs_dropped``).  rmap
        slots stay one per table slot.  Eager needs ``share_level=1``.
    thp : {"never", "always", "madvise"}
        Transparent huge pages (pae and x86_64; i386 allows only "never").  A write
        fault in a 2 MiB-aligned range that lies inside one private writable VMA that
        THP applies to ("always": unless madvised "nohugepage"; "madvise": if madvised
        "hugepage") and whose pmd entry is empty maps a huge page: 512 contiguous
        frames, the first 512-aligned, in one pmd entry with PS (0x080), and deposits a
        zeroed leaf table for a later split (counted in ``page_tables``).  No such run
        of free frames: 4 KiB pages (``thp_fallbacks``).  A read fault maps the
        ZERO_PAGE as before.  Counters: ``thp_faults``, ``thp_fallbacks``,
        ``thp_splits``, ``thp_copies``, ``tables_deposited`` (deposited now).
    thp_cow : {"split", "copy"}
        A write to a huge page mapped read-only with more than one reference: "split"
        (Linux 5.8 on) splits this mapping into 512 PTEs and copies the one 4 KiB page;
        "copy" copies the huge page whole (``thp_copies``).

    Raises
    ------
    TypeError
        An argument of the wrong type.
    ValueError
        A size that is not whole pages or exceeds the layout's limit, an unknown layout,
        fork mode, share level, accounting or THP mode; eager accounting with
        ``share_level > 1``; THP on i386.

    Examples
    --------
    >>> m = Machine(memory=16 << 20, fork_mode="share", rmap=True)
    >>> p = m.spawn()
    >>> a = p.mmap(1 << 20)
    >>> p.write(a, b"hello"); c = p.fork(); c.read(a, 5)
    b'hello'
    >>> m.check()
    """

    def __init__(self, memory: int = 64 << 20, fork_mode: str = "share", rmap: bool = True,
                 swap: int = 0, layout: str = "i386", share_level: int = 1,
                 contents: bool = True, costs: Any = None, accounting: str = "lazy",
                 thp: str = "never", thp_cow: str = "split") -> None:
        memory, swap, share_level, rmap, contents, lay = check_machine_args(
            memory, fork_mode, rmap, swap, layout, share_level, contents, accounting, thp,
            thp_cow)
        self.costs = None
        if costs is not None:
            self.costs = costlib.load_profile(costs)
        self.memory = memory
        self.swap = swap
        self.fork_mode = fork_mode
        self.rmap_enabled = rmap
        self.layout: Layout = lay
        self.share_level = share_level
        self.contents = contents
        self.accounting = accounting
        self.thp = thp
        self.thp_cow = thp_cow
        self._task_size = lay.task_size
        try:
            self._core = Core(memory // PAGE_SIZE, rmap,
                              swap // PAGE_SIZE + 1 if swap else 0, lay.code, contents,
                              accounting == "eager", THP_MODES.index(thp), thp_cow == "copy")
        except MemoryError:
            raise OutOfMemory(f"the host cannot allocate a simulated machine of "
                              f"{memory >> 20} MiB") from None
        except OverflowError:
            raise ValueError(f"memory {memory} is more frames than the compiled core can "
                             "number") from None
        self._procs: Dict[int, _Mm] = {}      # the live processes' state, by pid
        self._handles: "weakref.WeakValueDictionary[int, Process]" = \
            weakref.WeakValueDictionary()    # their Process objects, while anyone holds one
        self._next_pid = 1
        self._scan_cursor = 0
        self._shm_live = 0           # shared objects ever made and not yet released
        self._shm_holes: List[Tuple[int, int]] = []   # index ranges of released objects
        # VMAs with an anon_vma duplicated by forks / torn down by exits and execs (the
        # compiled core counts every VMA: fork_vmas, exit_vmas)
        self._anon_vmas = {"fork_anon_vmas": 0, "exit_anon_vmas": 0}
        self._lock = threading.RLock()
        # Who pays (DESIGN.md section 10): the running prediction already handed out
        # to accounts, the machine's own account (boot, spawn, reclaim) and that of the
        # processes that have exited.
        self._charged_ns = 0
        self._machine_ns = 0
        self._exited_ns = 0
        if self.costs is not None:
            self._machine_ns = self._charged_ns = self.costs.kernel_ns(self._counters())

    def __repr__(self) -> str:
        return (f"Machine(memory={self.memory}, fork_mode={self.fork_mode!r}, "
                f"rmap={self.rmap_enabled}, swap={self.swap}, layout={self.layout.name!r}, "
                f"share_level={self.share_level}, contents={self.contents}, "
                f"accounting={self.accounting!r}, thp={self.thp!r}, "
                f"thp_cow={self.thp_cow!r})")

    def _repr_html_(self) -> str:
        # The one import that goes up the floors (tests/packaging/test_layers.py allows
        # it): a notebook asks a machine for its picture, and the picture is the view's.
        # Imported here, when asked, so that the model never loads the view otherwise.
        from .view import machine_html
        return str(machine_html(self))

    # -- processes -------------------------------------------------------------------
    @property
    def processes(self) -> List["Process"]:
        """The live processes, in order of pid."""
        return [self._process(mm) for mm in self._procs.values()]

    def _process(self, mm: "_Mm") -> "Process":
        """The Process object of a live process (made anew if no one held it)."""
        p = self._handles.get(mm.pid)
        if p is None:
            p = Process(self, mm, _token=_TOKEN)
            self._handles[mm.pid] = p
        return p

    @property
    def boot_frames(self) -> int:
        """Frames taken at boot (ZERO_PAGE, boot pgd, kernel tables): never freed."""
        return int(self._core.boot_frames)

    @property
    def physical(self) -> np.ndarray:
        """Physical memory: a read-only numpy uint8 array of frames * 4096 bytes.

        >>> m = Machine(memory=8 << 20); m.physical.flags.writeable
        False
        """
        return self._core.physical_ro.view()

    @_serialized
    def spawn(self) -> "Process":
        """A new process with an empty user space.

        Raises
        ------
        OutOfMemory
            No frame for its page directory.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.vmas, p.alive
        ([], True)
        """
        with self._charge(None):
            pgd = self._core.new_pgd()
        return self._add(pgd, VmaList())

    def _add(self, pgd: int, vl: VmaList) -> "Process":
        mm = _Mm(self._next_pid, pgd, vl)
        self._next_pid += 1
        self._retarget([], vl.vmas)
        self._procs[mm.pid] = mm
        return self._process(mm)

    # -- inspection ------------------------------------------------------------------
    @_serialized
    def stats(self) -> Dict[str, int]:
        """A dict of int counters (docs/API.md lists them), with ``kernel_ns``, the
        predicted kernel time of everything done so far, when the machine has costs.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> p.write(a, b"x"); s = m.stats(); s["demand_zero"], s["page_tables"]
        (1, 1)
        """
        out: Dict[str, int] = self._core.stats()
        out.update(self._anon_vmas)
        if self.costs is not None:
            out["kernel_ns"] = int(self.costs.kernel_ns(out))
            out["kernel_ns_exited"] = self._exited_ns
            out["kernel_ns_machine"] = self._machine_ns
        return out

    def _counters(self) -> Dict[str, int]:
        """The event counters priced by the cost profile: the core's, and the VMAs
        with an anon_vma that forks, exits and execs went through."""
        out: Dict[str, int] = self._core.counters()
        out.update(self._anon_vmas)
        return out

    @contextlib.contextmanager
    def _charge(self, who: Optional[_Mm]) -> Iterator[None]:
        """Hand the predicted kernel time of the work done inside the block to `who`
        (a process's state, or None for the machine's own account), also when the block
        raises.

        The share is the difference of the machine's rounded running prediction
        (Profile.kernel_ns of the core's counters) after and before, so the shares of
        all operations add up exactly, in integers, to ``stats()["kernel_ns"]``.  A
        nested charge hands out its part first; the outer one gets the rest."""
        if self.costs is None:
            yield
            return
        try:
            yield
        finally:
            now = self.costs.kernel_ns(self._counters())
            share, self._charged_ns = now - self._charged_ns, now
            if who is None:
                self._machine_ns += share
            else:
                who.kernel_ns += share

    @_serialized
    def reset_peaks(self) -> None:
        """Set frames_peak, page_tables_peak and pte_chain_nodes_peak to current values."""
        self._core.reset_peaks()

    @_serialized
    def frame_count(self, pfn: int) -> int:
        """The reference count of a data frame, or the use count of a page table."""
        return int(self._core.frame_count(self._pfn(pfn)))

    @_serialized
    def frame_kind(self, pfn: int) -> str:
        """What frame pfn is: "free", "reserved", "pgd", "table", "anon" or "shmem".

        >>> m = Machine(memory=8 << 20); p = m.spawn(); m.frame_kind(p.pgd)
        'pgd'
        """
        fl = self._core.frame_flags(self._pfn(pfn))
        for bit, name in FRAME_KINDS.items():
            if fl & bit:
                return name
        return "free"

    @_serialized
    def table(self, pfn: int) -> np.ndarray:
        """A read-only numpy view of the entries of table (or page directory) frame pfn:
        uint32 on i386, uint64 on pae and x86_64.

        Raises
        ------
        ValueError
            pfn is not a page directory or page table (user or kernel).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096); p.write(a, b"x")
        >>> t = m.table(p.pde(a) >> 12); t.dtype, t.size, t.flags.writeable
        (dtype('uint32'), 1024, False)
        """
        pfn = self._pfn(pfn)
        kind = self.frame_kind(pfn)
        if kind not in ("pgd", "table", "reserved") or pfn == 0:
            raise ValueError(f"frame {pfn} is a {kind} frame, not a page table")
        dt = np.uint32 if self.layout.entry_bytes == 4 else np.uint64
        return self._core.physical_ro[pfn * PAGE_SIZE:(pfn + 1) * PAGE_SIZE].view(dt)

    @_serialized
    def rmap(self, pfn: int) -> List[Tuple[int, int]]:
        """[(table_pfn, index), ...]: the PTE slots that map frame pfn (rmap only).

        >>> m = Machine(memory=8 << 20, fork_mode="copy"); p = m.spawn()
        >>> a = p.mmap(4096); p.write(a, b"x"); c = p.fork()
        >>> pfn = p.translate(a) >> 12
        >>> sorted(m.rmap(pfn)) == sorted([(p.pde(a) >> 12, 0), (c.pde(a) >> 12, 0)])
        True
        """
        return list(self._core.rmap_slots(self._pfn(pfn)))

    def _pfn(self, value: Any) -> int:
        pfn = _int(value, "frame number")
        if not 0 <= pfn < self.memory // PAGE_SIZE:
            raise ValueError(f"frame {pfn} is outside physical memory")
        return pfn

    @_serialized
    def check(self) -> None:
        """Verify every invariant of DESIGN.md section 3.

        Raises
        ------
        InvariantError
            Naming the first invariant broken.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096)
        >>> p.write(a, b"x"); c = p.fork(); c.write(a, b"y"); m.check()
        """
        users: Counter[int] = Counter()
        objects: Dict[int, ShmObject] = {}
        for p in self._procs.values():
            prev_end = 0
            vl = p.vl
            for v in vl.vmas:
                if v.start < prev_end or v.start >= v.end or v.end > self._task_size \
                        or v.start % PAGE_SIZE or v.end % PAGE_SIZE:
                    raise InvariantError(f"process {p.pid}: bad VMA list {vl.vmas}")
                prev_end = v.end
                if v.shm is not None:
                    users[id(v.shm)] += 1
                    objects[id(v.shm)] = v.shm
            if vl.ends != [v.end for v in vl.vmas] \
                    or not np.array_equal(vl.arr, vma_array(vl.vmas)):
                raise InvariantError(f"process {p.pid}: the VMA index or the core's VMA "
                                     "array disagrees with the VMA list")
        for key, obj in objects.items():
            if obj.users != users[key]:
                raise InvariantError(f"shared object at {obj.base}: {obj.users} users "
                                     f"recorded, {users[key]} VMAs name it")
        procs = list(self._procs.values())
        _check_core(self._core.views(), [p.pgd for p in procs],
                    [(o.base, o.npages) for o in objects.values()],
                    [p.vl.arr for p in procs])

    # -- memory pressure ---------------------------------------------------------------
    @_serialized
    def reclaim(self, n: int, method: Optional[str] = None) -> int:
        """Swap out up to n private anonymous frames; return how many were freed.

        Parameters
        ----------
        n : int
            Frames to free at most.
        method : {"rmap", "scan"}, optional
            "rmap" (the default with rmap): a second-chance clock over frames, testing
            and unmapping through each frame's pte_chain (2.6.0).  "scan" (the default
            without rmap): Linux 2.4's swap_out, walking each process's page tables.

        Raises
        ------
        OutOfMemory
            The swap area is full (or no slot can be had) before anything is freed.
        ValueError
            No swap area, a negative n, an unknown method.

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
        with self._charge(None):           # reclaim is the machine's work (kswapd's)
            if method == "rmap":
                return int(self._core.reclaim_rmap(n))
            mms = [(p.pgd, p.vl.arr) for p in self._procs.values()]
            freed, self._scan_cursor = self._core.reclaim_scan(n, mms, self._scan_cursor)
            return int(freed)

    @_serialized
    def fail_after(self, n: Optional[int]) -> None:
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

    # -- the trace engine --------------------------------------------------------------
    @_serialized
    def replay(self, events: np.ndarray) -> List["Process"]:
        """Run a trace: an (n, 4) integer array of rows (pid, kind, addr, arg).

        kind 0 read and 1 write the page of addr; 2 forks (arg 0 copy, 1 share, -1 the
        machine's fork_mode; the child takes the next pid); 3 exits; 4 munmaps
        [addr, addr + arg).  Runs of accesses by one process go to the compiled core in
        one call.  Events before a failing one stay done.

        Returns
        -------
        list of Process
            The children made by fork events, in order.

        Raises
        ------
        ValueError
            A malformed array, an unknown pid or kind.
        SegmentationFault, OutOfMemory, ProcessExited
            As the same calls through the Process API would.

        >>> import numpy as np
        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> ev = np.array([(p.pid, 1, a, 0), (p.pid, 2, 0, 1), (p.pid + 1, 1, a, 0)])
        >>> [c.pid for c in m.replay(ev)], m.stats()["cow_copies"]
        ([2], 1)
        """
        ev = np.asarray(events)
        if ev.ndim != 2 or ev.shape[1] != 4 or (ev.size and not np.issubdtype(ev.dtype, np.integer)):
            raise ValueError("events must be an (n, 4) integer array of (pid, kind, addr, arg)")
        n = ev.shape[0]
        if n == 0:
            return []
        if ev.dtype.kind == "u" and ev.dtype.itemsize >= 8 and int(ev.max()) > INT64_MAX:
            i, col = (int(x[0]) for x in np.nonzero(ev > INT64_MAX))
            raise ValueError(f"event {i}: {EVENT_FIELDS[col]} {int(ev[i, col])} is out of "
                             "range")
        ev = ev.astype(np.int64, copy=False)
        pid, kind = ev[:, 0], ev[:, 1]
        if kind.min() < 0 or kind.max() > EV_MUNMAP:
            raise ValueError("an event kind is not 0 read, 1 write, 2 fork, 3 exit or 4 munmap")
        bad_fork = (kind == EV_FORK) & ((ev[:, 3] < -1) | (ev[:, 3] > 1))
        if bad_fork.any():
            i = int(np.argmax(bad_fork))
            raise ValueError(f"event {i}: a fork's arg must be -1 (the machine's fork mode), "
                             f"0 (copy) or 1 (share), not {int(ev[i, 3])}")
        brk = np.flatnonzero((kind[1:] > EV_WRITE) | (kind[:-1] > EV_WRITE)
                             | (pid[1:] != pid[:-1])) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [n]))
        writes = (kind == EV_WRITE).view(np.uint8)
        addrs = np.ascontiguousarray(ev[:, 2])
        children: List[Process] = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            who = int(pid[s])
            mm = self._procs.get(who)
            if mm is None:
                raise ValueError(f"event {s}: no live process has pid {who}")
            p = self._process(mm)
            k = int(kind[s])
            if k <= EV_WRITE:
                with self._charge(mm):
                    p._access_pages(addrs[s:e], writes[s:e], check_first=False)
            elif k == EV_FORK:
                arg = int(ev[s, 3])
                children.append(p.fork(None if arg < 0 else FORK_MODES[arg != 0]))
            elif k == EV_EXIT:
                p.exit()
            else:
                p.munmap(int(ev[s, 2]), int(ev[s, 3]))
        return children

    # -- shared-memory objects -------------------------------------------------------
    def _new_shm(self, npages: int) -> ShmObject:
        """A shared-memory object of npages, its index range first fit in the ranges
        released objects left, else new."""
        for k, (base, n) in enumerate(self._shm_holes):
            if n >= npages:
                if n == npages:
                    del self._shm_holes[k]
                else:
                    self._shm_holes[k] = (base + npages, n - npages)
                self._shm_live += 1
                return ShmObject(base, npages)
        try:
            base = self._core.shm_alloc(npages)
        except MemoryError:
            raise OutOfMemory(f"the host has no memory for the index of a shared object "
                              f"of {npages} pages") from None
        self._shm_live += 1
        return ShmObject(base, npages)

    def _drop_shm(self, obj: ShmObject) -> None:
        """Release an object no VMA has named yet (a mapping that failed)."""
        self._core.shm_release(obj.base, obj.npages)
        self._free_shm_range(obj.base, obj.npages)
        self._shm_live -= 1

    def _free_shm_range(self, base: int, npages: int) -> None:
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

    def _retarget(self, old: Sequence[Vma], new: Sequence[Vma]) -> None:
        """Account shared-object users for a VMA list going from old to new; release an
        object no VMA names any more (after the core has zapped its PTEs)."""
        if not self._shm_live:
            return
        delta: Counter[int] = Counter()
        objs: Dict[int, ShmObject] = {}
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
