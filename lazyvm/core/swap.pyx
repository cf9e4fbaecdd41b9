# cython: language_level=3
"""lazyvm.core.swap (mm/swapfile.c): get_swap_page (see swap.pxd for the slots)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef uint32_t swap_alloc(State c) noexcept nogil:
    """A swap slot with no entries yet, or 0 when the area is full."""
    cdef uint32_t s
    if injected_failure(c):
        return 0
    if c.swap_free != 0:
        s = c.swap_free
        c.swap_free = c.swap_cache[s]
    elif c.swap_hwm < c.nswap:
        s = c.swap_hwm
        c.swap_hwm += 1
    else:
        return 0
    c.swap_nfree -= 1
    c.swap_cache[s] = 0
    c.swap_count[s] = 0
    return s
