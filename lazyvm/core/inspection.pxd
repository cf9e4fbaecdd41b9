# cython: language_level=3
#
# lazyvm.core.inspection: reading the machine (see inspection.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *


cdef int64_t mm_walk(State c, int level, pfn_t t, set seen, list per)
cpdef walk(State c, pfn_t pgd, uint64_t addr)
cpdef entry_at(State c, pfn_t pgd, uint64_t addr, int level)
cpdef translate(State c, pfn_t pgd, uint64_t addr)
cpdef mm_stats(State c, pfn_t pgd)
cpdef stats(State c)
cpdef counters(State c)
