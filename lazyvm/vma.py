"""Virtual memory areas: a process's sorted list of non-overlapping mappings.

`VmaList` holds the list with an index for binary search (the end of each VMA) and the
array the compiled core receives, a uint64 row (start, end, vm_flags, shm_base) per VMA
(the core's vma_t struct).  A change touches only the VMAs of its range and their two
neighbours: finding them is O(log n), and the list, the index and the array move the rows
after them with one memmove each.
"""
import ctypes
from bisect import bisect_right
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from .layout import PAGE_SHIFT, vm_flags

VM_HUGEPAGE = 0x20000000               # madvise(MADV_HUGEPAGE), as Linux numbers it
VM_NOHUGEPAGE = 0x40000000             # madvise(MADV_NOHUGEPAGE)
ADVICE_FLAGS = {"": 0, "hugepage": VM_HUGEPAGE, "nohugepage": VM_NOHUGEPAGE}


class ShmObject:
    """A shared-memory object (the kernel's shmem file) backing shared mappings.

    Its frames live in the core's global shm array at [base, base + npages); it holds a
    reference on each, and lives while any VMA names it (users)."""

    __slots__ = ("base", "npages", "users")

    def __init__(self, base: int, npages: int) -> None:
        self.base = base
        self.npages = npages
        self.users = 0


class Vma:
    """[start, end) with a protection ("", "r", "rw"), private or backed by a shared
    object at page offset pgoff, and the huge-page advice of madvise ("", "hugepage",
    "nohugepage")."""

    __slots__ = ("start", "end", "prot", "shm", "pgoff", "advice")

    def __init__(self, start: int, end: int, prot: str, shm: Optional[ShmObject] = None,
                 pgoff: int = 0, advice: str = "") -> None:
        self.start, self.end, self.prot, self.shm, self.pgoff = start, end, prot, shm, pgoff
        self.advice = advice

    @property
    def shared(self) -> bool:
        return self.shm is not None

    @property
    def flags(self) -> int:
        return vm_flags(self.prot, self.shared) | ADVICE_FLAGS[self.advice]

    def piece(self, start: int, end: int) -> "Vma":
        """The part [start, end) of this VMA, as a new Vma naming the same object."""
        return Vma(start, end, self.prot, self.shm,
                   self.pgoff + ((start - self.start) >> PAGE_SHIFT), self.advice)

    def allows(self, write: bool) -> bool:
        return "w" in self.prot if write else "r" in self.prot

    def __repr__(self) -> str:
        kind = "shared" if self.shared else "private"
        return f"Vma({self.start:#x}, {self.end:#x}, {self.prot!r}, {kind})"


def mergeable(a: Vma, b: Vma) -> bool:
    """vma_merge: a and b touch and may become one VMA."""
    if a.end != b.start or a.prot != b.prot or a.shm is not b.shm or a.advice != b.advice:
        return False
    return a.shm is None or b.pgoff == a.pgoff + ((a.end - a.start) >> PAGE_SHIFT)


def normalise(vmas: Sequence[Vma]) -> List[Vma]:
    """Sort and merge neighbours that can be merged."""
    ordered = sorted(vmas, key=lambda v: v.start)
    out: List[Vma] = []
    for v in ordered:
        if out and mergeable(out[-1], v):
            out[-1] = Vma(out[-1].start, v.end, v.prot, v.shm, out[-1].pgoff, v.advice)
        else:
            out.append(v)
    return out


def vma_array(vmas: Sequence[Vma]) -> npt.NDArray[np.uint64]:
    """The core's view: a C-contiguous uint64 array of (start, end, vm_flags, shm_base)."""
    arr = np.zeros((len(vmas), 4), dtype=np.uint64)
    for i, v in enumerate(vmas):
        arr[i] = (v.start, v.end, v.flags, v.shm.base + v.pgoff if v.shm is not None else 0)
    return arr


def _row(v: Vma) -> Tuple[int, int, int, int]:
    return (v.start, v.end, v.flags, v.shm.base + v.pgoff if v.shm is not None else 0)


class VmaList:
    """A process's VMAs: sorted, non-overlapping, mergeable neighbours merged (vma_merge).

    ``ends[i]`` is ``vmas[i].end`` (the binary-search index: ends are sorted too), and
    ``arr`` is the core's array of the same VMAs, row i for vmas[i], a C-contiguous view
    of a buffer with room to grow.  ``hint`` is the free-area cache of get_unmapped_area:
    every address from the mmap base up to it is mapped."""

    __slots__ = ("vmas", "ends", "arr", "_buf", "hint")

    def __init__(self, vmas: Sequence[Vma] = ()) -> None:
        self.vmas: List[Vma] = normalise(vmas)
        self.ends: List[int] = [v.end for v in self.vmas]
        self._buf = np.zeros((max(8, len(self.vmas)), 4), dtype=np.uint64)
        if self.vmas:
            self._buf[:len(self.vmas)] = vma_array(self.vmas)
        self.arr = self._buf[:len(self.vmas)]
        self.hint = 0

    def copy(self) -> "VmaList":
        """An independent list of the same VMAs (Vma objects are never changed once in a
        list, so the two share them)."""
        new = VmaList.__new__(VmaList)
        new.vmas, new.ends = list(self.vmas), list(self.ends)
        new._buf = self._buf.copy()
        new.arr = new._buf[:len(self.vmas)]
        new.hint = self.hint
        return new

    def __len__(self) -> int:
        return len(self.vmas)

    def __iter__(self) -> Iterator[Vma]:
        return iter(self.vmas)

    def __getitem__(self, i: int) -> Vma:
        return self.vmas[i]

    def pieces(self, start: int, end: int) -> Tuple[List[Tuple[int, int, int]], bool]:
        """[(index, lo, hi)]: the parts of [start, end) inside each VMA, in order, and
        whether the VMAs cover the whole range without a hole."""
        out: List[Tuple[int, int, int]] = []
        pos = start
        covered = True
        vmas = self.vmas
        i = bisect_right(self.ends, start)
        while i < len(vmas) and vmas[i].start < end:
            v = vmas[i]
            lo, hi = max(v.start, start), min(v.end, end)
            if lo > pos:
                covered = False
            out.append((i, lo, hi))
            pos = hi
            i += 1
        if pos < end:
            covered = False
        return out, covered

    def splice(self, start: int, end: int, new: Sequence[Vma] = ()
               ) -> Tuple[List[Vma], List[Vma], List[Vma]]:
        """Replace what is mapped in [start, end) by new (VMAs inside the range, sorted),
        splitting the VMAs at its edges and merging at both ends.

        Returns (removed, old, replacement): the pieces of [start, end) that were
        mapped, and the VMAs that left the list and those that entered it (for the
        shared objects' user counts)."""
        vmas = self.vmas
        n = len(vmas)
        i = bisect_right(self.ends, start)
        j = i
        while j < n and vmas[j].start < end:
            j += 1
        removed = [v.piece(max(v.start, start), min(v.end, end)) for v in vmas[i:j]]
        middle: List[Vma] = []
        if i < j and vmas[i].start < start:
            middle.append(vmas[i].piece(vmas[i].start, start))
        middle.extend(new)
        if i < j and vmas[j - 1].end > end:
            middle.append(vmas[j - 1].piece(end, vmas[j - 1].end))
        lo, hi = max(i - 1, 0), min(j + 1, n)
        old = vmas[lo:hi]
        merged: List[Vma] = []
        for v in vmas[lo:i] + middle + vmas[j:hi]:
            if merged and mergeable(merged[-1], v):
                last = merged[-1]
                merged[-1] = Vma(last.start, v.end, v.prot, v.shm, last.pgoff)
            else:
                merged.append(v)
        self._replace(lo, hi, merged)
        if removed and start < self.hint \
                and sum(v.end - v.start for v in new) != end - start:
            self.hint = start               # a hole opened below the free-area cache
        return removed, old, merged

    def _replace(self, lo: int, hi: int, merged: List[Vma]) -> None:
        """vmas[lo:hi] = merged, in the list, the index and the array."""
        n, k = len(self.vmas), len(merged)
        self.vmas[lo:hi] = merged
        self.ends[lo:hi] = [v.end for v in merged]
        size = n - (hi - lo) + k
        buf = self._buf
        if size > buf.shape[0]:
            grown = np.zeros((max(size, 2 * buf.shape[0]), 4), dtype=np.uint64)
            grown[:lo] = buf[:lo]
            grown[lo + k:size] = buf[hi:n]
            self._buf = buf = grown
        elif k != hi - lo and hi < n:
            # one memmove: numpy would copy overlapping slices through a temporary
            row = buf.strides[0]
            ctypes.memmove(buf.ctypes.data + (lo + k) * row, buf.ctypes.data + hi * row,
                           (n - hi) * row)
        for r, v in enumerate(merged, lo):
            buf[r] = _row(v)
        self.arr = buf[:size]

    def window(self, start: int, end: int, span: int) -> "npt.NDArray[np.uint64]":
        """The rows of arr a change to [start, end) needs the core to see (a view): every
        VMA reaching into the leaf tables the range lies in ([start, end) widened to
        multiples of span, a leaf table's span), and the nearest VMA on each side.

        Whatever the core asks of a munmap's VMAs concerns the tables its walk meets:
        the leaf tables of the widened range, whose entries it copies or zaps, and the
        tables above them, of which it only asks whether any VMA reaches into their
        span.  Such a span holds part of the widened range, so a VMA outside the range
        reaches into it only if the nearest VMA on that side does: the window answers
        every question as the whole array would."""
        lo = start & ~(span - 1)
        hi = -(-end // span) * span
        i = bisect_right(self.ends, lo)             # first VMA ending above lo
        j = bisect_right(self.ends, hi - 1, i)      # first VMA ending at or above hi
        if j < len(self.vmas) and self.vmas[j].start < hi:
            j += 1                                  # it reaches into the range
        return self.arr[max(i - 1, 0):min(j + 1, len(self.vmas))]

    def unmapped_area(self, length: int, base: int, task_size: int) -> Optional[int]:
        """get_unmapped_area: the lowest gap of length bytes at or above base, else the
        lowest anywhere, or None.  The search above base starts at the free-area cache,
        which first moves past the VMAs that begin where it stands."""
        vmas, ends = self.vmas, self.ends
        pos = max(self.hint, base)
        i = bisect_right(ends, pos)
        while i < len(vmas) and vmas[i].start <= pos:
            pos = vmas[i].end
            i += 1
        self.hint = pos
        for lo in (pos, 0):
            pos = lo
            i = bisect_right(ends, pos)
            while i < len(vmas) and vmas[i].start < pos + length:
                pos = max(pos, vmas[i].end)
                i += 1
            if pos + length <= task_size:
                return pos
        return None
