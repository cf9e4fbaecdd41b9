"""Machine and Process: the public API of lazyvm (DESIGN.md section 5).

This layer validates every argument, owns the VMAs and states the semantics; the compiled
core (lazyvm._core) does the page-table work and trusts what it is given.  Every check
happens before the core is called, so a ValueError or SegmentationFault changes nothing;
the core itself allocates before it changes anything, so OutOfMemory leaves the machine
consistent (Machine.check() passes after every error).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from collections import Counter
from numbers import Integral
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple,
                    TypeVar, Union, cast)
from typing import Iterator, NoReturn, SupportsIndex

import numpy as np

from . import vma as vmalib
from .core import Core, check as _check_core
from .errors import InvariantError, OutOfMemory, ProcessExited, SegmentationFault
from .layout import LAYOUTS, MAX_SWAP_SLOTS, PAGE_SIZE, Layout, parse_prot, vm_flags
from .vma import ShmObject, Vma

FORK_MODES = ("copy", "share", "odf")
ACCOUNTINGS = ("lazy", "eager")
THP_MODES = ("never", "always", "madvise")
THP_COW = ("split", "copy")
ADVICES = ("hugepage", "nohugepage")
FRAME_KINDS = {0x001: "free", 0x002: "reserved", 0x004: "pgd", 0x008: "table",
               0x010: "anon", 0x020: "shmem", 0x400: "anon"}   # 0x400: a huge page's tail
_TOKEN = object()              # Process objects are made by Machine and Process only

# Trace events (Machine.replay): rows of (pid, kind, addr, arg).
EV_READ, EV_WRITE, EV_FORK, EV_EXIT, EV_MUNMAP = 0, 1, 2, 3, 4


class VmaInfo(NamedTuple):
    """One mapping of Process.vmas: [start, end) with its protection."""
    start: int
    end: int
    prot: str
    shared: bool


def _no_copy(self: Any) -> NoReturn:
    raise TypeError(f"a lazyvm {type(self).__name__} cannot be copied or pickled: it owns "
                    "a simulated machine's memory; build a new one (or fork a process)")


class _Uncopyable:
    """copy.copy, copy.deepcopy and pickle refuse, with a clear TypeError (a shallow copy
    would alias the compiled core and corrupt it)."""

    def __copy__(self) -> NoReturn:
        _no_copy(self)

    def __deepcopy__(self, memo: Any) -> NoReturn:
        _no_copy(self)

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        _no_copy(self)

    def __reduce__(self) -> NoReturn:
        _no_copy(self)
BIG = 1 << 62                  # "as many as there are": larger counts are clamped to this


_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(method: _F) -> _F:
    """Run a method of Machine or Process under its machine's lock.  The core drops the
    GIL in its bulk loops, so threads may drive different machines in parallel; one
    machine's structures are changed by one thread at a time."""
    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with (self if isinstance(self, Machine) else self.machine)._lock:
            return method(self, *args, **kwargs)
    return cast(_F, locked)


def _charged(method: _F) -> _F:
    """_serialized for a Process method whose work is done in that process's context:
    with costs, its predicted kernel time goes to the process's account."""
    @functools.wraps(method)
    def charged(self: Any, *args: Any, **kwargs: Any) -> Any:
        m = self.machine
        with m._lock:
            if m.costs is None:
                return method(self, *args, **kwargs)
            with m._charge(self):
                return method(self, *args, **kwargs)
    return cast(_F, charged)


_NO_VMAS = vmalib.vma_array([])
RECLAIM_METHODS = ("rmap", "scan")


def _int(value: Any, what: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__} {value!r}")
    return int(value)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{what} must be True or False, not {type(value).__name__} {value!r}")
    return bool(value)


def _range(addr: Any, length: Any, task_size: int, what: str = "range") -> Tuple[int, int]:
    """Validate a page-aligned, non-empty range inside user space."""
    addr, length = _int(addr, "address"), _int(length, "length")
    if addr % PAGE_SIZE:
        raise ValueError(f"address {addr:#x} is not page-aligned")
    if length <= 0:
        raise ValueError(f"{what} length must be positive, not {length}")
    if length % PAGE_SIZE:
        raise ValueError(f"length {length:#x} is not a whole number of pages")
    if addr < 0 or addr + length > task_size:
        raise ValueError(f"{what} [{addr:#x}, {addr + length:#x}) is outside user space "
                         f"[0, {task_size:#x})")
    return addr, length


def _span(addr: Any, length: Any, task_size: int) -> Tuple[int, int]:
    """Validate a byte range (any alignment, non-empty) inside user space."""
    addr, length = _int(addr, "address"), _int(length, "length")
    if length <= 0:
        raise ValueError(f"length must be positive, not {length}")
    if addr < 0 or addr + length > task_size:
        raise ValueError(f"[{addr:#x}, {addr + length:#x}) is outside user space "
                         f"[0, {task_size:#x})")
    return addr, length


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
        if not isinstance(accounting, str):
            raise TypeError(f"accounting must be a str, not {type(accounting).__name__}")
        if accounting not in ACCOUNTINGS:
            raise ValueError(f"accounting must be one of {ACCOUNTINGS}, not {accounting!r}")
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
        for value, what, allowed in ((thp, "thp", THP_MODES), (thp_cow, "thp_cow", THP_COW)):
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
        self.costs = None
        if costs is not None:
            from . import costs as costlib
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
        self._core = Core(memory // PAGE_SIZE, rmap, swap // PAGE_SIZE + 1 if swap else 0,
                          lay.code, contents, accounting == "eager", THP_MODES.index(thp),
                          thp_cow == "copy")
        self._procs: Dict[int, Process] = {}
        self._next_pid = 1
        self._scan_cursor = 0
        self._shm_live = 0           # shared objects ever made and not yet released
        self._shm_holes: List[Tuple[int, int]] = []   # index ranges of released objects
        self._lock = threading.RLock()
        # Who pays (DESIGN.md section 10): the running prediction already handed out
        # to accounts, the machine's own account (boot, spawn, reclaim) and that of the
        # processes that have exited.
        self._charged_ns = 0
        self._machine_ns = 0
        self._exited_ns = 0
        if self.costs is not None:
            self._machine_ns = self._charged_ns = self.costs.kernel_ns(self._core.counters())

    def __repr__(self) -> str:
        return (f"Machine(memory={self.memory}, fork_mode={self.fork_mode!r}, "
                f"rmap={self.rmap_enabled}, swap={self.swap}, layout={self.layout.name!r}, "
                f"share_level={self.share_level}, contents={self.contents}, "
                f"accounting={self.accounting!r}, thp={self.thp!r}, "
                f"thp_cow={self.thp_cow!r})")

    def _repr_html_(self) -> str:
        from .view import machine_html
        return str(machine_html(self))

    # -- processes -------------------------------------------------------------------
    @property
    def processes(self) -> List["Process"]:
        """The live processes, in order of pid."""
        return list(self._procs.values())

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
        return self._add(pgd, [])

    def _add(self, pgd: int, vmas: List[Vma], arr: Optional[np.ndarray] = None) -> "Process":
        p = Process(self, self._next_pid, pgd, vmas, arr, _token=_TOKEN)
        self._next_pid += 1
        self._procs[p.pid] = p
        return p

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
        if self.costs is not None:
            out["kernel_ns"] = int(self.costs.kernel_ns(out))
            out["kernel_ns_exited"] = self._exited_ns
            out["kernel_ns_machine"] = self._machine_ns
        return out

    @contextlib.contextmanager
    def _charge(self, who: Optional["Process"]) -> Iterator[None]:
        """Hand the predicted kernel time of the work done inside the block to `who`
        (a Process, or None for the machine's own account), also when the block raises.

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
            now = self.costs.kernel_ns(self._core.counters())
            share, self._charged_ns = now - self._charged_ns, now
            if who is None:
                self._machine_ns += share
            else:
                who._kernel_ns += share

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
            for v in p._vmas:
                if v.start < prev_end or v.start >= v.end or v.end > self._task_size \
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
        _check_core(self._core.views(), [p.pgd for p in self._procs.values()],
                    [(o.base, o.npages) for o in objects.values()])

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
            mms = [(p.pgd, p._varr) for p in self._procs.values()]
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
        ev = ev.astype(np.int64, copy=False)
        n = ev.shape[0]
        if n == 0:
            return []
        pid, kind = ev[:, 0], ev[:, 1]
        if kind.min() < 0 or kind.max() > EV_MUNMAP:
            raise ValueError("an event kind is not 0 read, 1 write, 2 fork, 3 exit or 4 munmap")
        brk = np.flatnonzero((kind[1:] > EV_WRITE) | (kind[:-1] > EV_WRITE)
                             | (pid[1:] != pid[:-1])) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [n]))
        writes = (kind == EV_WRITE).view(np.uint8)
        addrs = np.ascontiguousarray(ev[:, 2])
        children: List[Process] = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            who = int(pid[s])
            p = self._procs.get(who)
            if p is None:
                raise ValueError(f"event {s}: no live process has pid {who}")
            k = int(kind[s])
            if k <= EV_WRITE:
                with self._charge(p):
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
        self._shm_live += 1
        for k, (base, n) in enumerate(self._shm_holes):
            if n >= npages:
                if n == npages:
                    del self._shm_holes[k]
                else:
                    self._shm_holes[k] = (base + npages, n - npages)
                return ShmObject(base, npages)
        return ShmObject(self._core.shm_alloc(npages), npages)

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


class Process(_Uncopyable):
    """A process: a page directory and a list of VMAs.  Made by ``Machine.spawn()`` and
    ``Process.fork()``, never directly."""

    def __init__(self, machine: Machine, pid: int, pgd: int, vmas: Sequence[Vma] = (),
                 arr: Optional[np.ndarray] = None, *, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("Process objects are made by Machine.spawn() and "
                            "Process.fork(), not directly")
        self.machine = machine
        self.pid = pid
        self.pgd = pgd
        self.alive = True
        self._kernel_ns = 0          # predicted kernel time of work in its context
        self._vmas: List[Vma] = []
        self._varr = _NO_VMAS
        self._set_vmas(list(vmas), arr)

    def __repr__(self) -> str:
        state = "alive" if self.alive else "exited"
        return f"<Process {self.pid} {state}, {len(self._vmas)} VMAs>"

    # -- helpers ----------------------------------------------------------------------
    def _live(self) -> Core:
        if not self.alive:
            raise ProcessExited(f"process {self.pid} has exited")
        return self.machine._core

    def _set_vmas(self, vmas: List[Vma], arr: Optional[np.ndarray] = None) -> None:
        """Install a new VMA list (normalised here unless arr, its core array, is given:
        Vma objects are never changed once in a list, so a fork shares both)."""
        new = vmalib.normalise(vmas) if arr is None else vmas
        self.machine._retarget(self._vmas, new)
        self._vmas = new
        self._varr = vmalib.vma_array(new) if arr is None else arr

    def _access(self, addr: int, length: int, write: bool) -> List[Tuple[int, int, int]]:
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

    def _no_contents(self) -> None:
        if not self.machine.contents:
            raise ValueError("this machine keeps no page contents (Machine(contents=False)): "
                             "use touch or touch_pages")

    @property
    def vmas(self) -> List[VmaInfo]:
        """[VmaInfo(start, end, prot, shared), ...], sorted (each unpacks as a tuple).

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(3 * 4096)
        >>> p.mprotect(a + 4096, 4096, "r"); [(hex(s), hex(e), pr) for s, e, pr, _ in p.vmas]
        [('0x40000000', '0x40001000', 'rw'), ('0x40001000', '0x40002000', 'r'), ('0x40002000', '0x40003000', 'rw')]
        """
        return [VmaInfo(v.start, v.end, v.prot, v.shared) for v in self._vmas]

    @_serialized
    def stats(self) -> Dict[str, int]:
        """Per-process figures: ``rss`` (data pages mapped, the ZERO_PAGE excluded),
        ``page_tables`` (the tables below this pgd that it reaches, each once, the pgd
        excluded; on x86_64 the kernel's VmPTE is page_tables * 4 KiB: it counts the
        PTE, PMD and PUD tables and not the pgd, as measured on this machine),
        ``page_tables_l1`` .. per level (1 = leaf), and ``vmas``.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192); p.write(a, b"x")
        >>> p.stats()
        {'rss': 1, 'page_tables': 1, 'page_tables_l1': 1, 'vmas': 1}
        """
        core = self._live()
        rss, per = core.mm_stats(self.pgd)
        out = {"rss": rss, "page_tables": sum(per)}
        for k, n in enumerate(per, 1):
            out[f"page_tables_l{k}"] = n
        out["vmas"] = len(self._vmas)
        if self.machine.costs is not None:
            out["kernel_ns"] = self._kernel_ns
        return out

    # -- mappings ---------------------------------------------------------------------
    @_charged
    def mmap(self, length: int, prot: str = "rw", shared: bool = False,
             addr: Optional[int] = None) -> int:
        """Map length bytes of anonymous memory, private or shared; return the address.

        Parameters
        ----------
        length : int
            Bytes, a whole number of pages.
        prot : str
            "", "r" or "rw" ("x" means "r").
        shared : bool
            Back the mapping with a shared-memory object (seen by forked children).
        addr : int, optional
            Map exactly there, replacing what was mapped (MAP_FIXED).  Without it: first
            fit at or above the layout's mmap base (i386 0x40000000), then below.

        Raises
        ------
        TypeError, ValueError
            A bad argument.  OutOfMemory: no room in the address space.

        >>> p = Machine(memory=8 << 20).spawn()
        >>> hex(p.mmap(8192)), hex(p.mmap(4096, prot="r", shared=True, addr=0x1000))
        ('0x40000000', '0x1000')
        """
        self._live()
        prot = parse_prot(prot)
        shared = _bool(shared, "shared")
        ts = self.machine._task_size
        if addr is None:
            length = _range(0, length, ts, "mmap")[1]
            addr = self._unmapped_area(length)
        else:
            addr, length = _range(addr, length, ts, "mmap")
            if vmalib.pieces(self._vmas, addr, addr + length)[0]:
                self.munmap(addr, length)
        shm = None
        if shared:
            shm = self.machine._new_shm(length // PAGE_SIZE)
        self._set_vmas(self._vmas + [Vma(addr, addr + length, prot, shm)])
        return addr

    def _unmapped_area(self, length: int) -> int:
        """get_unmapped_area: the lowest gap of length bytes at or above the mmap base,
        else the lowest anywhere."""
        ts = self.machine._task_size
        for lo in (self.machine.layout.mmap_base, 0):
            pos = lo
            for v in self._vmas:
                if v.end <= pos:
                    continue
                if v.start >= pos + length:
                    break
                pos = v.end
            if pos + length <= ts:
                return pos
        raise OutOfMemory(f"no room for {length:#x} bytes in the user address space")

    @_charged
    def munmap(self, addr: int, length: int) -> None:
        """Unmap [addr, addr+length): frames lose their references, tables whose span no
        VMA reaches any more are freed (one use dropped, if shared).

        Raises
        ------
        OutOfMemory
            A shared table that stays mapped could not be privatized; nothing is unmapped.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(8192)
        >>> p.write(a, b"x"); p.munmap(a, 8192); p.vmas, m.stats()["page_tables"]
        ([], 0)
        """
        core = self._live()
        addr, length = _range(addr, length, self.machine._task_size, "munmap")
        end = addr + length
        if not vmalib.pieces(self._vmas, addr, end)[0]:
            return
        kept, _ = vmalib.remove_range(self._vmas, addr, end)
        kept = vmalib.normalise(kept)
        new_arr = vmalib.vma_array(kept)
        core.zap(self.pgd, self._varr, new_arr, addr, end)
        self._set_vmas(kept, new_arr)

    @_charged
    def mprotect(self, addr: int, length: int, prot: str) -> None:
        """Change the protection of [addr, addr+length), which must be fully mapped.
        A private mapping never gets RW back from mprotect: the next write faults.

        Raises
        ------
        ValueError
            The range is not all mapped, or a bad argument.
        OutOfMemory
            A shared table could not be privatized; no protection changed.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096); p.write(a, b"x")
        >>> p.mprotect(a, 4096, "r"); hex(p.pte(a) & 0xfff)
        '0x65'
        """
        core = self._live()
        addr, length = _range(addr, length, self.machine._task_size, "mprotect")
        prot = parse_prot(prot)
        end = addr + length
        parts, covered = vmalib.pieces(self._vmas, addr, end)
        if not covered:
            raise ValueError(f"mprotect: [{addr:#x}, {end:#x}) is not all mapped")
        rows = np.array([(lo, hi, vm_flags(prot, self._vmas[i].shared)) for i, lo, hi in parts],
                        dtype=np.uint64).reshape(-1, 3)
        core.mprotect(self.pgd, self._varr, rows)
        kept, removed = vmalib.remove_range(self._vmas, addr, end)
        for v in removed:
            v.prot = prot
        self._set_vmas(kept + removed)

    @_serialized
    def madvise(self, addr: int, length: int, advice: str) -> None:
        """Mark [addr, addr+length), which must be fully mapped, for transparent huge
        pages: "hugepage" (MADV_HUGEPAGE: THP applies under ``thp="madvise"``) or
        "nohugepage" (MADV_NOHUGEPAGE: never).  VMAs are split at the range's ends as
        mprotect splits them (and a huge mapping cut by an end is split into PTEs);
        neighbours that differ only in the mark do not merge.  Huge pages already
        mapped stay.

        Raises
        ------
        ValueError
            The range is not all mapped, an unknown advice, or a bad argument.
        OutOfMemory
            A shared table could not be privatized; nothing changed.

        >>> m = Machine(memory=16 << 20, layout="x86_64", thp="madvise"); p = m.spawn()
        >>> a = p.mmap(8 << 20, addr=0x40000000); p.madvise(a, 4 << 20, "hugepage")
        >>> p.write(a, b"x"); p.write(a + (4 << 20), b"y"); m.stats()["thp_faults"]
        1
        """
        core = self._live()
        addr, length = _range(addr, length, self.machine._task_size, "madvise")
        if not isinstance(advice, str):
            raise TypeError(f"advice must be a str, not {type(advice).__name__}")
        if advice not in ADVICES:
            raise ValueError(f"advice must be one of {ADVICES}, not {advice!r}")
        end = addr + length
        if not vmalib.pieces(self._vmas, addr, end)[1]:
            raise ValueError(f"madvise: [{addr:#x}, {end:#x}) is not all mapped")
        core.thp_split(self.pgd, self._varr, addr, end)
        kept, removed = vmalib.remove_range(self._vmas, addr, end)
        for v in removed:
            v.advice = advice
        self._set_vmas(kept + removed)

    # -- access ----------------------------------------------------------------------
    def read(self, addr: int, length: int) -> bytes:
        """Read length bytes at addr (any alignment, may cross pages and VMAs),
        faulting pages in as needed.

        Raises
        ------
        SegmentationFault
            A byte outside every VMA, or a VMA that forbids reading.
        ValueError
            A range outside user space, zero length, or a machine without contents.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(8192)
        >>> p.write(a + 4094, b"abcd"); p.read(a + 4093, 6)
        b'\\x00abcd\\x00'
        """
        m = self.machine
        with m._lock:
            if m.costs is None and type(addr) is int and type(length) is int and self.alive \
                    and m.contents \
                    and 0 < length <= PAGE_SIZE - (addr & (PAGE_SIZE - 1)) and addr >= 0:
                r = m._core.access(self.pgd, self._varr, addr, length, False)
                if isinstance(r, bytes):
                    return r
            return self._read(addr, length)

    @_charged
    def _read(self, addr: Any, length: Any) -> bytes:
        core = self._live()
        addr, length = _span(addr, length, self.machine._task_size)
        self._no_contents()
        parts = self._access(addr, length, False)
        out = np.empty(length, dtype=np.uint8)
        for i, lo, hi in parts:
            core.read_into(self.pgd, self._varr, i, lo, out, lo - addr, hi - lo)
        return out.tobytes()

    def write(self, addr: int, data: Union[bytes, bytearray, memoryview]) -> None:
        """Write bytes at addr.  Every page is faulted in for write before the first byte
        is copied, so a write that runs out of memory changes no byte.

        Raises
        ------
        TypeError
            data is not a contiguous bytes-like object (a str, an int, an object array).
        SegmentationFault, ValueError, OutOfMemory
            As for read; OutOfMemory leaves every byte as it was.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096, prot="r")
        >>> p.write(a, b"x")
        Traceback (most recent call last):
        ...
        lazyvm.errors.SegmentationFault: process 1: write at 0x40000000 against protection 'r'
        """
        m = self.machine
        with m._lock:
            if m.costs is None and type(data) is bytes and type(addr) is int and self.alive \
                    and m.contents \
                    and 0 < len(data) <= PAGE_SIZE - (addr & (PAGE_SIZE - 1)) and addr >= 0:
                if m._core.access(self.pgd, self._varr, addr, len(data), True, data):
                    return
            self._write(addr, data)

    @_charged
    def _write(self, addr: Any, data: Any) -> None:
        core = self._live()
        if isinstance(data, np.ndarray) and data.dtype.hasobject:
            raise TypeError("data must be a contiguous bytes-like object, not an object array")
        try:
            src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        except TypeError:
            raise TypeError(f"data must be a contiguous bytes-like object, not "
                            f"{type(data).__name__}") from None
        except ValueError as exc:
            raise TypeError(f"data must be a contiguous bytes-like object ({exc})") from None
        addr, length = _span(addr, len(src), self.machine._task_size)
        self._no_contents()
        parts = self._access(addr, length, True)
        for i, lo, hi in parts:
            core.fault_range(self.pgd, self._varr, i, lo & ~(PAGE_SIZE - 1), hi, True)
        for i, lo, hi in parts:
            core.write_from(self.pgd, self._varr, i, lo, src, lo - addr, hi - lo)

    @_charged
    def touch(self, addr: int, length: int, write: bool = False) -> None:
        """Access every page of [addr, addr+length) (bulk faulting in the core).

        Raises
        ------
        SegmentationFault, ValueError, OutOfMemory
            As for read; pages faulted in before an OutOfMemory stay mapped.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(1 << 20)
        >>> p.touch(a, 1 << 20); m.stats()["zero_page_maps"]    # reads map the ZERO_PAGE
        256
        """
        core = self._live()
        addr, length = _range(addr, length, self.machine._task_size, "touch")
        write = _bool(write, "write")
        parts = self._access(addr, length, write)
        for i, lo, hi in parts:
            core.fault_range(self.pgd, self._varr, i, lo, hi, write)

    @_charged
    def touch_pages(self, addrs: Union[Sequence[int], np.ndarray], write: bool = False) -> None:
        """Access the page of each address in addrs (a sequence or numpy array), in order.

        Raises
        ------
        TypeError
            addrs is not integers.
        SegmentationFault, ValueError, OutOfMemory
            As for touch; nothing is accessed if any address is bad.

        >>> import numpy as np
        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(1 << 20)
        >>> p.touch_pages(a + 4096 * np.arange(0, 256, 2), write=True); m.stats()["demand_zero"]
        128
        """
        self._live()
        write = _bool(write, "write")
        a = np.asarray(addrs)
        if a.ndim != 1:
            raise ValueError("addrs must be a one-dimensional array of integer addresses")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"addrs must be integer addresses, not {a.dtype}")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 0 or a.max() >= self.machine._task_size):
            raise ValueError("an address of addrs is outside user space")
        self._access_pages(a, write)

    def _access_pages(self, a: np.ndarray, write: Any, check_first: bool = True) -> None:
        """touch_pages and the trace engine: write is a bool or a uint8 flag per address.
        With check_first nothing is accessed if any address is bad; else (replay) the
        accesses before the bad one are done."""
        core = self._live()
        if a.dtype != np.int64 or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a, dtype=np.int64)
        if a.size == 0:
            return
        r = core.fault_pages(self.pgd, self._varr, a, write, check_first)
        if isinstance(r, tuple):
            j, why = r
            bad = int(a[j])
            if bad < 0 or bad >= self.machine._task_size:
                raise ValueError(f"address {bad:#x} is outside user space")
            if why == 0:
                raise SegmentationFault(f"process {self.pid}: {bad:#x} is not mapped")
            w = write if isinstance(write, bool) else bool(write[j])
            raise SegmentationFault(f"process {self.pid}: {'write' if w else 'read'} "
                                    f"at {bad:#x} against protection")

    # -- fork, exec, exit ------------------------------------------------------------
    def fork(self, mode: Optional[str] = None) -> "Process":
        """A child with a copy of this address space.

        Parameters
        ----------
        mode : {"copy", "share", "odf"}, optional
            "copy" (Linux 2.4 copy_page_range), "share" (share the page tables, the
            seed, at the machine's share_level) or "odf" (On-demand-fork: share a leaf
            table whose whole span lies inside one private VMA, copy every other);
            None means Machine.fork_mode.

        Raises
        ------
        OutOfMemory
            Nothing of the child is left and every frame it took is free again.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); a = p.mmap(4096); p.write(a, b"1")
        >>> c = p.fork(); c.write(a, b"2"); p.read(a, 1), c.read(a, 1), m.stats()["unshares"]
        (b'1', b'2', 1)
        """
        m = self.machine
        with m._lock, m._charge(self):
            core = self._live()
            if mode is None:
                mode = m.fork_mode
            if mode == "copy":
                pgd = core.fork_copy(self.pgd, self._varr)
            elif mode == "share":
                pgd = core.fork_share(self.pgd, self._varr, m.share_level)
            elif mode == "odf":
                pgd = core.fork_copy(self.pgd, self._varr, True)
            else:
                if not isinstance(mode, str):
                    raise TypeError(f"fork mode must be a str, not {type(mode).__name__}")
                raise ValueError(f"fork mode must be one of {FORK_MODES}, not {mode!r}")
            return m._add(pgd, self._vmas, self._varr)

    @_charged
    def exec(self) -> None:
        """Drop the whole user space, keep the process (and its page directory).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exec(); p.vmas, p.alive, m.stats()["frames_used"] - m.boot_frames
        ([], True, 1)
        """
        core = self._live()
        core.exit_mm(self.pgd, self._varr, False)
        self._set_vmas([], _NO_VMAS)

    def exit(self) -> None:
        """Drop the user space and the page directory; the process is gone.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exit(); m.processes, m.stats()["frames_used"] == m.boot_frames
        ([], True)
        """
        m = self.machine
        with m._lock:
            with m._charge(self):
                core = self._live()
                core.exit_mm(self.pgd, self._varr, True)
                self._set_vmas([], _NO_VMAS)
            self.alive = False
            del m._procs[self.pid]
            m._exited_ns += self._kernel_ns
            self._kernel_ns = 0

    # -- raw entries -----------------------------------------------------------------
    def _entry_addr(self, value: Any) -> int:
        addr = _int(value, "address")
        bits = 32 if self.machine.layout.name != "x86_64" else 48
        if not 0 <= addr < 1 << bits:
            raise ValueError(f"address {addr:#x} is not a {bits}-bit address")
        return addr

    @_serialized
    def walk(self, addr: int) -> List[Tuple[int, int, int, int]]:
        """The table walk of addr: [(level, table_pfn, index, entry), ...] from the pgd
        (level = layout.levels) down to the leaf (level 1), ending after the first entry
        that is not present, or at a huge mapping's pmd entry (level 2, PS set).

        >>> m = Machine(memory=8 << 20, layout="x86_64"); p = m.spawn(); a = p.mmap(4096)
        >>> p.write(a, b"x"); [lvl for lvl, t, i, e in p.walk(a)]
        [4, 3, 2, 1]
        """
        self._live()
        return list(self.machine._core.walk(self.pgd, self._entry_addr(addr)))

    def pde(self, addr: int) -> int:
        """The raw entry that points at addr's leaf page table (the i386 PDE; the pmd
        entry on pae and x86_64), or 0 if the walk stops above it.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096); p.write(a, b"x")
        >>> hex(p.pde(a) & 0xfff), hex(p.pde(0xC0000000) & 0xfff)   # user, kernel
        ('0x67', '0x63')
        """
        return self._entry(addr, 2)

    def pte(self, addr: int) -> int:
        """The raw page-table entry for addr (0 if the walk stops above the leaf); for
        an address in a huge mapping, which has no PTE, its pmd entry (PS set).

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(8192); p.write(a, b"x")
        >>> p.touch(a + 4096, 4096); hex(p.pte(a) & 0xfff), hex(p.pte(a + 4096))
        ('0x67', '0x25')
        """
        return self._entry(addr, 1)

    def _entry(self, addr: Any, level: int) -> int:
        m = self.machine
        with m._lock:
            if not (type(addr) is int and 0 <= addr < 1 << 32):
                addr = self._entry_addr(addr)
            self._live()
            return int(m._core.entry_at(self.pgd, addr, level))

    def translate(self, addr: int) -> Optional[int]:
        """The physical address addr maps to, or None if it is not present.

        >>> p = Machine(memory=8 << 20).spawn(); a = p.mmap(4096)
        >>> p.translate(a + 5) is None; p.write(a, b"x"); p.translate(a + 5) & 0xfff
        True
        5
        """
        m = self.machine
        with m._lock:
            if not (type(addr) is int and 0 <= addr < 1 << 32):
                addr = self._entry_addr(addr)
            self._live()
            r = m._core.translate(self.pgd, addr)
            return None if r < 0 else int(r)
