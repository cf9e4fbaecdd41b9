# cython: language_level=3
#
# lazyvm.core.frames (mm/page_alloc.c): the frame allocator, a LIFO free list then the
# never-used frames above the high-water mark; page tables are frames with a use count.
# The per-page operations are inline here, so every caller's loop compiles them in.

from libc.string cimport memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *


cdef int reserve_tables(State c, uint64_t n) noexcept
cdef uint32_t alloc_huge(State c) noexcept nogil
cdef void free_huge(State c, uint32_t h) noexcept nogil
cdef void break_huge_block(State c) noexcept nogil
cdef uint32_t alloc_from_huge_block(State c, pflags_t fl, bint zero) noexcept nogil
cdef void boot(State c) noexcept
cdef void init_pgd(State c, uint32_t g) noexcept


cdef inline bint injected_failure(State c) noexcept nogil:
    """Fault injection (Machine.fail_after): True once the allocations allowed are
    used up.  Every allocation point (frame, pool growth, swap slot) asks first."""
    if c.fail_countdown < 0:
        return False
    if c.fail_countdown == 0:
        return True
    c.fail_countdown -= 1
    return False


cdef inline uint32_t alloc_frame(State c, pflags_t fl, bint zero) noexcept nogil:
    """Take a free frame with flags fl (zeroed if zero and it was used before).
    Returns 0 when memory is exhausted (or fault injection says so)."""
    cdef uint32_t f, used
    if injected_failure(c):
        return 0
    if c.free_head != 0:
        f = c.free_head
        c.free_head = c.link[f]
        if zero:
            memset(c.mem8 + (<size_t>f << PAGE_SHIFT), 0, PAGE_SIZE)
    elif c.hwm < c.nframes:
        f = c.hwm           # never used: still the zeros numpy gave us
        c.hwm += 1
    elif c.nhfree:          # nothing else is left: a free huge-page block (a tail call)
        return alloc_from_huge_block(c, fl, zero)
    else:
        return 0
    c.nfree -= 1
    c.flags[f] = fl
    c.count[f] = 0
    c.link[f] = 0
    used = c.nframes - c.nfree
    if used > c.st[ST_FRAMES_PEAK]:
        c.st[ST_FRAMES_PEAK] = used
    return f


cdef inline uint32_t alloc_data(State c, pflags_t fl, bint zero) noexcept nogil:
    """A data frame: without contents no byte of it is ever touched."""
    return alloc_frame(c, fl, zero and c.contents)


cdef inline void free_frame(State c, uint32_t f) noexcept nogil:
    c.flags[f] = F_FREE
    c.count[f] = 0
    c.link[f] = c.free_head
    c.free_head = f
    c.nfree += 1


cdef inline void put_page(State c, uint32_t f) noexcept nogil:
    """Drop one reference to data frame f (a huge page's head: the huge page); free it
    with its last reference."""
    c.count[f] -= 1
    if c.count[f] == 0:
        if c.flags[f] & F_HUGE:
            free_huge(c, f)
        else:
            free_frame(c, f)


cdef inline void release_tables(State c) noexcept nogil:
    """Give back the frames reserve_tables had that were not used."""
    while c.nresv:
        c.nresv -= 1
        free_frame(c, c.resv[c.nresv] >> 1)


cdef inline uint32_t alloc_table(State c, int level, bint zero) noexcept nogil:
    """A user table of `level` with use count 1 (zeroed unless the caller writes
    every entry), or 0 when out of memory.  Frames reserve_tables had come first."""
    cdef uint32_t t
    if c.nresv:
        c.nresv -= 1
        t = c.resv[c.nresv] >> 1
        if zero and not (c.resv[c.nresv] & 1):
            memset(c.mem8 + (<size_t>t << PAGE_SHIFT), 0, PAGE_SIZE)
        c.flags[t] = F_PTABLE | (level << F_LEVEL_SHIFT)
    else:
        t = alloc_frame(c, F_PTABLE | (level << F_LEVEL_SHIFT), zero)
    if t != 0:
        c.count[t] = 1
        c.st[ST_PAGE_TABLES] += 1
        c.st[ST_TABLES_L + level - 1] += 1
        c.st[ST_TABLES_ALLOCATED] += 1
        if c.st[ST_PAGE_TABLES] > c.st[ST_PAGE_TABLES_PEAK]:
            c.st[ST_PAGE_TABLES_PEAK] = c.st[ST_PAGE_TABLES]
    return t


cdef inline void free_table(State c, uint32_t t) noexcept nogil:
    cdef int level = (c.flags[t] >> F_LEVEL_SHIFT) & 7
    c.st[ST_PAGE_TABLES] -= 1
    c.st[ST_TABLES_L + level - 1] -= 1
    c.st[ST_TABLES_FREED] += 1
    free_frame(c, t)
