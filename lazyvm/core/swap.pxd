# cython: language_level=3
#
# lazyvm.core.swap (mm/swapfile.c, mm/swap_state.c): swap slots and the swap cache.
# A slot's swap_count counts the swap entries naming it (-1: free); swap_cache[s] is the
# frame the swap cache holds for it, or the next free slot.  The per-entry operations
# are inline here.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *


cdef uint32_t swap_alloc(State c) noexcept nogil


cdef inline void swapcache_drop(State c, uint32_t s) noexcept nogil:
    """delete_from_swap_cache: the cache lets go of slot s's frame."""
    cdef uint32_t f = c.swap_cache[s]
    if f != 0:
        c.swap_cache[s] = 0
        c.flags[f] &= ~F_SWAPCACHE
        c.index[f] = 0
        put_page(c, f)


cdef inline void swap_put(State c, uint32_t s) noexcept nogil:
    """swap_free: one swap entry naming s is gone; the last frees the slot (and
    the swap cache's frame, as free_swap_and_cache)."""
    c.swap_count[s] -= 1
    if c.swap_count[s] == 0:
        swapcache_drop(c, s)
        c.swap_count[s] = -1
        c.swap_cache[s] = c.swap_free
        c.swap_free = s
        c.swap_nfree += 1
