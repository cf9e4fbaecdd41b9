# cython: language_level=3
#
# lazyvm.core.fork: the copy fork's and the share fork's walkers (see fork.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *
from lazyvm.core.swap cimport *
from lazyvm.core.accounting cimport *
from lazyvm.core.thp cimport *


cdef uint64_t copy_tables_needed(State c, const mm_t* mm, bint odf) noexcept
cdef int copy_mm(State c, const mm_t* mm, pfn_t g, bint odf) noexcept nogil
cdef int share_mm(State c, const mm_t* mm, pfn_t g, int share_level) noexcept nogil
cdef int share_table(State c, pfn_t src_t, pfn_t dst_t, uint32_t lo,
                     uint32_t hi) noexcept nogil
cdef int copy_range(State c, int level, pfn_t src_t, pfn_t dst_t, uint64_t start,
                    uint64_t end, bint cow, bint odf) noexcept nogil
cdef uint64_t mm_mapped(State c, mm_t mm) noexcept
cdef uint64_t count_range(State c, int level, pfn_t t, uint64_t start, uint64_t end) noexcept
cdef uint64_t tables_in(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                        pfn_t* last, bint odf_share) noexcept
cdef uint64_t tables_above(State c, int level, pfn_t t, int share_level,
                           uint32_t nents) noexcept
cdef int share_range(State c, int level, pfn_t src_t, pfn_t dst_t, int share_level,
                     uint32_t lo, uint32_t hi) noexcept nogil
