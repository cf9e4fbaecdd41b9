"""How the view reads a machine: the one place that knows which Machine API exists.

lazyvm 0.1.0 has one layout (i386) and exposes tables only as raw memory
(``m.physical``), ``p.pde``/``p.pte``, ``m.frame_count`` and ``m.rmap``.  0.2.0 adds
``m.layout``, ``m.table(pfn)`` and ``m.frame_kind(pfn)``.  Everything else in
lazyvm.view calls :func:`layout_of`, :func:`table_entries` and :func:`frame_kind`
below and never the machine's tables directly, so moving to the new API is a change
here alone: each function uses the new method when the machine has it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAGE_SHIFT = 12
# Entry bits, the same low 12 bits in every layout (DESIGN.md sections 1 and 6).
P, RW, US, A, D, PROTNONE = 0x001, 0x002, 0x004, 0x020, 0x040, 0x080


@dataclass(frozen=True)
class LayoutInfo:
    name: str                  # "i386" | "pae" | "x86_64"
    levels: int                # 2 | 3 | 4
    entries: tuple             # entries per table, top level first
    level_names: tuple         # e.g. ("pgd", "pte"), top first
    entry_bits: int            # 32 | 64
    user_top: int              # top-level entries [0, user_top) are user entries
    shifts: tuple              # address shift of each level's index, top first

    def span(self, depth):
        """Bytes mapped by one entry at depth (0 = top level)."""
        return 1 << self.shifts[depth]


def _info(name, entries, level_names, entry_bits, task_size):
    shifts = []
    s = PAGE_SHIFT
    for n in reversed(entries):
        shifts.append(s)
        s += int(n).bit_length() - 1
    shifts = tuple(reversed(shifts))
    top_span = 1 << shifts[0]
    return LayoutInfo(name, len(entries), tuple(entries), tuple(level_names), entry_bits,
                      -(-task_size // top_span), shifts)


I386 = _info("i386", (1024, 1024), ("pgd", "pte"), 32, 0xC0000000)


def layout_of(machine) -> LayoutInfo:
    """The paging layout of machine: ``machine.layout`` (0.2.0) or i386 (0.1.0)."""
    lay = getattr(machine, "layout", None)
    if lay is None:
        return I386
    names = tuple(getattr(lay, "level_names", None) or
                  (("pgd", "pte"), ("pgd", "pmd", "pte"),
                   ("pgd", "pud", "pmd", "pte"))[lay.levels - 2])
    info = _info(lay.name, tuple(lay.entries), names, 8 * lay.entry_bytes, lay.task_size)
    user = getattr(lay, "user_entries", None)
    if user is not None and user != info.user_top:
        info = LayoutInfo(info.name, info.levels, info.entries, info.level_names,
                          info.entry_bits, int(user), info.shifts)
    return info


def table_entries(machine, pfn) -> np.ndarray:
    """The entries of page-table frame pfn (any level, the pgd included), read-only:
    ``machine.table(pfn)`` when it exists, else a uint32 view of ``machine.physical``."""
    table = getattr(machine, "table", None)
    if table is not None:
        return table(pfn)
    return machine.physical.view(np.uint32)[pfn << 10:(pfn + 1) << 10]


def frames_of(entries: np.ndarray, info: LayoutInfo) -> np.ndarray:
    """The frame numbers in entries, as int64 (bits 12-31, or 12-51 of 64-bit ones)."""
    e = entries.astype(np.uint64)
    return ((e >> np.uint64(PAGE_SHIFT)) & np.uint64((1 << 40) - 1)).astype(np.int64)


def frame_kind(machine, pfn, shared_vma=False) -> str:
    """"reserved" | "anon" | "shmem" (data frames) for a frame a PTE maps:
    ``machine.frame_kind(pfn)`` when it exists; else a frame taken at boot is reserved
    (the ZERO_PAGE is one), and otherwise the mapping's VMA says."""
    kind = getattr(machine, "frame_kind", None)
    if kind is not None:
        return kind(pfn)
    if pfn < machine.boot_frames:
        return "reserved"
    return "shmem" if shared_vma else "anon"


def use_count(machine, pfn) -> int:
    """A table's use count or a data frame's reference count."""
    return int(machine.frame_count(pfn))


def use_counts(machine, pfns) -> np.ndarray:
    """use_count of each frame in an int array, as int64.  A view of 3 GiB asks for
    ~800,000 counts per state, so this reads the core's count array directly when it
    has one (the same numbers frame_count returns; tests/view/test_show.py checks), else
    calls frame_count per frame."""
    pfns = np.asarray(pfns, dtype=np.int64)
    counts = getattr(machine, "frame_counts", None)            # a vectorized public API
    if counts is not None:
        return np.asarray(counts(pfns), dtype=np.int64)
    arr = getattr(getattr(machine, "_core", None), "count_arr", None)
    if arr is not None:
        return np.asarray(arr)[pfns].astype(np.int64)
    return np.array([machine.frame_count(int(f)) for f in pfns], dtype=np.int64)


def chain(machine, pfn) -> list:
    """The rmap slots [(table_pfn, index), ...] of a frame ([] without rmap)."""
    if not getattr(machine, "rmap_enabled", True):
        return []
    return [(int(t), int(i)) for t, i in machine.rmap(pfn)]


def process_stats(machine, proc) -> dict:
    """p.stats() when it exists (0.2.0), else {} (the view then counts for itself)."""
    st = getattr(proc, "stats", None)
    return dict(st()) if st is not None else {}
