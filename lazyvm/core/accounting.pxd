# cython: language_level=3
#
# lazyvm.core.accounting: eager accounting of shared leaf tables (COW page tables
# v3-v5, DESIGN.md section 10).  A page under a shared leaf table holds one reference
# per use of the table, taken when the table is shared (a share or odf fork) and
# dropped when a sharer lets go of it (the zap fast path, exit), so a frame's count is
# the sum over the slots that map it of their table's use count, plus caches
# (state.slot_refs).  Privatize takes none.  Leaf sharing only: Machine refuses eager
# accounting with share_level > 1.  The per-table work is one loop (table_refs), run
# per table, never inside another per-PTE loop.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *


cdef void eager_refs(State c, pfn_t t, int sign) noexcept nogil
cdef void eager_share(State c, pfn_t t, uint32_t i, uint32_t n) noexcept nogil
cdef void drop_table_use(State c, pfn_t t, int level) noexcept nogil
