"""Process: one simulated process of a Machine (DESIGN.md section 5), and what Machine
and Process share: argument checks, the lock that serializes a machine's calls, and the
refusal to be copied or pickled.

Every argument is checked here before the compiled core is called, so a ValueError or
SegmentationFault changes nothing (DESIGN.md section 4).
"""
from __future__ import annotations

import functools
from numbers import Integral
from typing import (Any, Callable, Dict, List, NamedTuple, NoReturn,
                    Optional, Sequence, SupportsIndex, Tuple, TypeVar, Union, cast)

import numpy as np

from .core import Core
from .errors import OutOfMemory, ProcessExited, SegmentationFault
from .layout import PAGE_SIZE, parse_prot, vm_flags
from .vma import Vma, VmaList

FORK_MODES = ("copy", "share", "odf")
ADVICES = ("hugepage", "nohugepage")
_TOKEN = object()              # Process objects are made by Machine and Process only


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
        with (self.machine if isinstance(self, Process) else self)._lock:
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
            with m._charge(self._mm):
                return method(self, *args, **kwargs)
    return cast(_F, charged)


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



class _Mm:
    """What a machine keeps of a live process: pid, page directory and VMAs.  It refers
    neither to the machine nor to the Process object, so a machine (which holds these)
    and its Process objects (which hold the machine) make no reference cycle: a machine
    no one refers to any more is freed at once, not when the cyclic collector runs."""

    __slots__ = ("pid", "pgd", "alive", "vl", "kernel_ns")

    def __init__(self, pid: int, pgd: int, vl: VmaList) -> None:
        self.pid, self.pgd, self.alive, self.vl = pid, pgd, True, vl
        self.kernel_ns = 0       # predicted kernel time of the work in its context


class Process(_Uncopyable):
    """A process: a page directory and a list of VMAs.  Made by ``Machine.spawn()`` and
    ``Process.fork()``, never directly."""

    # machine is the Machine (Any here: machine.py imports this module, not the reverse)
    def __init__(self, machine: Any, mm: _Mm, *args: Any, _token: object = None) -> None:
        if _token is not _TOKEN or args:
            raise TypeError("Process objects are made by Machine.spawn() and "
                            "Process.fork(), not directly")
        self.machine = machine
        self._mm = mm
        self.pid = mm.pid
        self.pgd = mm.pgd

    @property
    def alive(self) -> bool:
        """False once the process has exited."""
        return self._mm.alive

    def __repr__(self) -> str:
        state = "alive" if self._mm.alive else "exited"
        return f"<Process {self.pid} {state}, {len(self._mm.vl)} VMAs>"

    # -- helpers ----------------------------------------------------------------------
    def _live(self) -> Core:
        if not self._mm.alive:
            raise ProcessExited(f"process {self.pid} has exited")
        return self.machine._core

    def _splice(self, start: int, end: int, new: Sequence[Vma] = ()) -> List[Vma]:
        """Replace what is mapped in [start, end) by new (see VmaList.splice), account
        the shared objects' users, and return the pieces that were mapped there."""
        removed, old, merged = self._mm.vl.splice(start, end, new)
        self.machine._retarget(old, merged)
        return removed

    def _anon_vma_count(self) -> int:
        """The VMAs Linux gives an anon_vma: private ones that can be accessed (a
        PROT_NONE guard never faults, so it has none; a shared one is shmem's)."""
        return sum(1 for v in self._mm.vl.vmas if v.shm is None and v.prot)

    def _access(self, addr: int, length: int, write: bool) -> List[Tuple[int, int, int]]:
        """The VMA pieces of [addr, addr+length), or SegmentationFault if any byte is
        outside every VMA or the access is against a VMA's protection."""
        vl = self._mm.vl
        parts, covered = vl.pieces(addr, addr + length)
        if not covered:
            raise SegmentationFault(f"process {self.pid}: [{addr:#x}, {addr + length:#x}) "
                                    "is not all mapped")
        for i, lo, hi in parts:
            if not vl[i].allows(write):
                raise SegmentationFault(
                    f"process {self.pid}: {'write' if write else 'read'} at {lo:#x} "
                    f"against protection {vl[i].prot!r}")
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
        return [VmaInfo(v.start, v.end, v.prot, v.shared) for v in self._mm.vl]

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
        out["vmas"] = len(self._mm.vl)
        if self.machine.costs is not None:
            out["kernel_ns"] = self._mm.kernel_ns
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
        m = self.machine
        if addr is None:
            length = _range(0, length, m._task_size, "mmap")[1]
            addr = self._unmapped_area(length)
        else:
            addr, length = _range(addr, length, m._task_size, "mmap")
        # The shared object is made before anything is unmapped, so a host that cannot
        # hold its index leaves the old mapping in place.
        shm = m._new_shm(length // PAGE_SIZE) if shared else None
        try:
            if self._mm.vl.pieces(addr, addr + length)[0]:
                self.munmap(addr, length)
        except BaseException:
            if shm is not None:
                m._drop_shm(shm)
            raise
        self._splice(addr, addr + length, [Vma(addr, addr + length, prot, shm)])
        return addr

    def _unmapped_area(self, length: int) -> int:
        """get_unmapped_area: the lowest gap of length bytes at or above the mmap base,
        else the lowest anywhere."""
        m = self.machine
        pos = self._mm.vl.unmapped_area(length, m.layout.mmap_base, m._task_size)
        if pos is not None:
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
        vl = self._mm.vl
        if not vl.pieces(addr, end)[0]:
            return
        m = self.machine
        span = m.layout.table_span(1)
        # the core zaps with the VMAs before and after the change: the rows it needs
        old_rows = vl.window(addr, end, span).copy()
        removed, old, merged = vl.splice(addr, end)
        try:
            core.zap(self.pgd, old_rows, vl.window(addr, end, span), addr, end)
        except BaseException:
            vl.splice(addr, end, removed)            # nothing was unmapped
            raise
        m._retarget(old, merged)

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
        vl = self._mm.vl
        parts, covered = vl.pieces(addr, end)
        if not covered:
            raise ValueError(f"mprotect: [{addr:#x}, {end:#x}) is not all mapped")
        rows = np.array([(lo, hi, vm_flags(prot, vl[i].shared)) for i, lo, hi in parts],
                        dtype=np.uint64).reshape(-1, 3)
        core.mprotect(self.pgd, vl.arr, rows)
        changed = [vl[i].piece(lo, hi) for i, lo, hi in parts]
        for v in changed:
            v.prot = prot
        self._splice(addr, end, changed)

    @_charged
    def madvise(self, addr: int, length: int, advice: str) -> None:
        """Mark [addr, addr+length), which must be fully mapped, for transparent huge
        pages: "hugepage" (MADV_HUGEPAGE: THP applies under ``thp="madvise"``) or
        "nohugepage" (MADV_NOHUGEPAGE: never).  Private VMAs are split at the range's
        ends as mprotect splits them (and a huge mapping cut by an end is split into
        PTEs); neighbours that differ only in the mark do not merge.  Shared mappings
        are left whole and unmarked: transparent huge pages here are private anonymous
        memory's alone.  Huge pages already mapped stay.

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
        vl = self._mm.vl
        parts, covered = vl.pieces(addr, end)
        if not covered:
            raise ValueError(f"madvise: [{addr:#x}, {end:#x}) is not all mapped")
        core.thp_split(self.pgd, vl.arr, addr, end)
        changed = [vl[i].piece(lo, hi) for i, lo, hi in parts]
        for v in changed:
            if not v.shared:            # THP here is private anonymous memory's alone:
                v.advice = advice       # a shared mapping keeps its VMA whole (and the
        self._splice(addr, end, changed)  # tables it covers stay shm-covered)

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
            if m.costs is None and type(addr) is int and type(length) is int \
                    and self._mm.alive and m.contents \
                    and 0 < length <= PAGE_SIZE - (addr & (PAGE_SIZE - 1)) \
                    and 0 <= addr < m._task_size:
                r = m._core.access(self.pgd, self._mm.vl.arr, addr, length, False)
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
            core.read_into(self.pgd, self._mm.vl.arr, i, lo, out, lo - addr, hi - lo)
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
            if m.costs is None and type(data) is bytes and type(addr) is int \
                    and self._mm.alive and m.contents \
                    and 0 < len(data) <= PAGE_SIZE - (addr & (PAGE_SIZE - 1)) \
                    and 0 <= addr < m._task_size:
                if m._core.access(self.pgd, self._mm.vl.arr, addr, len(data), True, data):
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
            core.fault_range(self.pgd, self._mm.vl.arr, i, lo & ~(PAGE_SIZE - 1), hi, True)
        for i, lo, hi in parts:
            core.write_from(self.pgd, self._mm.vl.arr, i, lo, src, lo - addr, hi - lo)

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
            core.fault_range(self.pgd, self._mm.vl.arr, i, lo, hi, write)

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
        outside = (a < 0) | (a >= self.machine._task_size)
        if outside.any():
            j = int(np.argmax(outside))
            if not check_first:
                self._access_pages(a[:j], write if isinstance(write, bool) else write[:j])
            raise ValueError(f"address {int(a[j]):#x} is outside user space")
        r = core.fault_pages(self.pgd, self._mm.vl.arr, a, write, check_first)
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
        with m._lock, m._charge(self._mm):
            core = self._live()
            if mode is None:
                mode = m.fork_mode
            vl = self._mm.vl
            if mode == "copy":
                pgd = core.fork_copy(self.pgd, vl.arr)
            elif mode == "share":
                pgd = core.fork_share(self.pgd, vl.arr, m.share_level)
            elif mode == "odf":
                pgd = core.fork_copy(self.pgd, vl.arr, True)
            else:
                if not isinstance(mode, str):
                    raise TypeError(f"fork mode must be a str, not {type(mode).__name__}")
                raise ValueError(f"fork mode must be one of {FORK_MODES}, not {mode!r}")
            m._anon_vmas["fork_anon_vmas"] += self._anon_vma_count()
            return m._add(pgd, vl.copy())

    @_charged
    def exec(self) -> None:
        """Drop the whole user space, keep the process (and its page directory).

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exec(); p.vmas, p.alive, m.stats()["frames_used"] - m.boot_frames
        ([], True, 1)
        """
        core = self._live()
        mm = self._mm
        self.machine._anon_vmas["exit_anon_vmas"] += self._anon_vma_count()
        core.exit_mm(self.pgd, mm.vl.arr, False)
        self.machine._retarget(mm.vl.vmas, [])
        mm.vl = VmaList()

    def exit(self) -> None:
        """Drop the user space and the page directory; the process is gone.

        >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
        >>> p.exit(); m.processes, m.stats()["frames_used"] == m.boot_frames
        ([], True)
        """
        m = self.machine
        with m._lock:
            core = self._live()
            mm = self._mm
            with m._charge(mm):
                m._anon_vmas["exit_anon_vmas"] += self._anon_vma_count()
                core.exit_mm(self.pgd, mm.vl.arr, True)
            m._retarget(mm.vl.vmas, [])
            mm.vl = VmaList()
            mm.alive = False
            del m._procs[self.pid]
            m._exited_ns += mm.kernel_ns      # its account goes with it
            mm.kernel_ns = 0

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
