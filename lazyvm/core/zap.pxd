# cython: language_level=3
#
# lazyvm.core.zap: munmap, exit and mprotect's walkers (see zap.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *
from lazyvm.core.swap cimport *
from lazyvm.core.fault cimport *
from lazyvm.core.accounting cimport *
from lazyvm.core.thp cimport *


cdef int zap_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                   const mm_t* keep) noexcept nogil
cdef int free_range(State c, int level, pfn_t t, bint scan) noexcept nogil
cdef int unshare_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                       const mm_t* mm, const mm_t* keep, bint need_entries) noexcept nogil
cdef bint has_entries(State c, int level, pfn_t t, uint64_t start, uint64_t end) noexcept nogil
cdef int exit_walk(State c, mm_t mm) noexcept nogil
cdef int clear_top(State c, const mm_t* mm) noexcept nogil
cdef int free_entries(State c, int level, pfn_t t, uint32_t lo, uint32_t hi,
                      bint scan) noexcept nogil
cdef int change_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                      entry_t prot) noexcept nogil
