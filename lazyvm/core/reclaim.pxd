# cython: language_level=3
#
# lazyvm.core.reclaim: page reclaim through the rmap or by a page-table scan (see
# reclaim.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *
from lazyvm.core.swap cimport *
from lazyvm.core.thp cimport *


cdef bint page_referenced(State c, uint32_t f) noexcept nogil
cdef uint32_t add_to_swap(State c, uint32_t f) noexcept nogil
cdef int swap_out_frame(State c, uint32_t f) noexcept nogil
cdef void unmap_slot(State c, uint32_t f, slot_t slot, uint32_t s) noexcept nogil
cdef int scan_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                    uint32_t n, uint32_t* freed) noexcept nogil
cdef int log_unmap(State c, slot_t slot, entry_t pte) noexcept nogil
cdef void undo_scan(State c) except *
cpdef reclaim_rmap(State c, uint32_t n)
cpdef reclaim_scan(State c, uint32_t n, list mms, uint32_t start)
