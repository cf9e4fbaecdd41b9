# cython: language_level=3
#
# lazyvm.core.thp (mm/huge_memory.c): transparent huge pages, pae and x86_64.
#
# A huge page is 512 frames, the first 512-aligned (frames.alloc_huge): the head is
# F_ANON | F_HUGE and its count is the huge page's; the others are F_TAIL, count 0.  A
# pmd entry with PS maps it whole: one rmap slot (the pmd table, index) in the head's
# chain, and one zeroed leaf table deposited on the pmd table's list (link[pmd] ->
# link[deposit] -> ...), withdrawn to split the mapping into 512 PTEs.  A PTE that maps
# a frame of a huge page puts its reference on the head (state.page_head) and its rmap
# slot in the frame's own chain; a leaf table that may hold such PTEs is marked
# F_THPMAP, so the leaf loops choose their compound-aware variant once per table.  A
# huge mapping lies inside one VMA: every VMA change splits the huge mappings it cuts
# (split_range).  Free 512-frame blocks are kept whole (frames.free_huge).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *


cdef void deposit(State c, pfn_t pmd, pfn_t pt) noexcept nogil
cdef pfn_t withdraw(State c, pfn_t pmd) noexcept nogil
cdef uint8_t* huge_access(State c, pfn_t t, uint32_t i, entry_t e, uint64_t addr,
                          bint write) noexcept nogil
cdef int huge_fault(State c, pfn_t t, uint32_t i, uint64_t vmf) noexcept nogil
cdef int copy_huge_pmd(State c, pfn_t src_t, pfn_t dst_t, uint32_t i) noexcept nogil
cdef int huge_entries_shared(State c, pfn_t src_t, pfn_t dst_t, uint32_t i, uint32_t n,
                             bint old) noexcept nogil
cdef uint32_t huge_in(State c, pfn_t t) noexcept nogil
cdef int zap_huge_pmd(State c, pfn_t t, uint32_t i) noexcept nogil
cdef int split_huge_pmd(State c, pfn_t t, uint32_t i) noexcept nogil
cdef int split_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                     bint every) noexcept nogil
cdef int huge_wp(State c, pfn_t t, uint32_t i) noexcept nogil
cdef int split_huge_page(State c, uint32_t h) noexcept nogil


cdef inline bint thp_eligible(State c, const vma_t* v, uint64_t addr) noexcept nogil:
    """The 2 MiB around addr lies inside VMA v, private anonymous writable, that THP
    applies to (always: unless nohugepage; madvise: if hugepage)."""
    cdef uint64_t lo = addr & ~(((<uint64_t>1) << HPAGE_SHIFT) - 1)
    if (v.flags & (VM_SHARED | VM_WRITE)) != VM_WRITE:
        return False
    if c.thp == THP_ALWAYS:
        if v.flags & VM_NOHUGEPAGE:
            return False
    elif not (v.flags & VM_HUGEPAGE):
        return False
    return v.start <= lo and lo + ((<uint64_t>1) << HPAGE_SHIFT) <= v.end
