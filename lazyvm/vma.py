"""Virtual memory areas: a process's sorted list of non-overlapping mappings.

The list is plain Python; the compiled core receives it as a uint64 array of rows
(start, end, vm_flags, shm_base) built by `vma_array` (the core's vma_t struct).
"""
from typing import List, Optional, Sequence, Tuple

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


def pieces(vmas: Sequence[Vma], start: int, end: int) -> Tuple[List[Tuple[int, int, int]], bool]:
    """[(index, lo, hi)]: the parts of [start, end) inside each VMA, in order, and
    whether the VMAs cover the whole range without a hole."""
    out: List[Tuple[int, int, int]] = []
    pos = start
    covered = True
    for i, v in enumerate(vmas):
        if v.end <= start or v.start >= end:
            continue
        lo, hi = max(v.start, start), min(v.end, end)
        if lo > pos:
            covered = False
        out.append((i, lo, hi))
        pos = hi
    if pos < end:
        covered = False
    return out, covered


def remove_range(vmas: Sequence[Vma], start: int, end: int) -> Tuple[List[Vma], List[Vma]]:
    """The VMA list with [start, end) cut out (splitting VMAs at the edges), and the
    VMAs (or parts) that were removed."""
    kept: List[Vma] = []
    removed: List[Vma] = []
    for v in vmas:
        if v.end <= start or v.start >= end:
            kept.append(v)
            continue
        if v.start < start:
            kept.append(v.piece(v.start, start))
        removed.append(v.piece(max(v.start, start), min(v.end, end)))
        if v.end > end:
            kept.append(v.piece(end, v.end))
    return kept, removed


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
