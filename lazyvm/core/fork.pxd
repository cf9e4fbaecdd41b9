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


cdef inline bint bad_leaf(State c, leaf_t pte, uint64_t lim) noexcept nogil:
    """A leaf entry copy_one_pte refuses: present with a frame outside physical memory
    (lim = nframes - 1), or a swap entry naming no live slot."""
    cdef uint64_t f
    if pte & (_P | _PROTNONE):
        f = (pte >> PAGE_SHIFT) if leaf_t is pte32_t else ((pte >> PAGE_SHIFT) & PFN_MASK)
        return f - 1 >= lim and f != 0
    return pte != 0 and bad_swap(c, pte)


cdef inline int copy_one_pte(State c, leaf_t* src, leaf_t* dst, uint32_t i, leaf_t wp,
                             leaf_t nod, bint rm, bint shmem_keeps_rw, pfn_t dst_t,
                             uint64_t lim, count_t* count, uint32_t* empty, bint thp,
                             bint take) noexcept nogil:
    """copy_one_pte: copy entry i of leaf table src into dst (frame dst_t), for a copy
    fork (copy_pte_range) and for privatize (privatize_pte).  Returns OK (counting an
    empty entry in empty[0]) or ERR_BUG for an entry bad_leaf refuses (nothing changed).

    A present entry takes a frame reference and, with rm, a chain slot in dst; it loses
    wp (RW for a private mapping) in src and dst, unless shmem_keeps_rw and the frame is
    shared memory; nod (A, or A and D) is cleared in the copy.  The ZERO_PAGE (frame 0)
    is copied as it is; a swap entry takes a swap reference.  lim is nframes - 1 and
    count c.count, passed in so the caller's loop keeps them in registers.  take: take
    the reference (not for privatize under eager accounting, which took it at the
    fork); thp: the frame may belong to a huge page, whose head the reference goes on.
    Callers pass thp and take as constants."""
    cdef leaf_t pte = src[i]
    cdef uint64_t f
    cdef uint32_t f32
    cdef bint bad
    if not (pte & (_P | _PROTNONE)):
        if pte == 0:
            dst[i] = 0
            empty[0] += 1
            return OK
        if bad_swap(c, pte):
            return ERR_BUG
        c.swap_count[swp_offset(pte)] += 1
        dst[i] = pte
        return OK
    # one unsigned compare: frame 0 or outside memory (32-bit arithmetic on i386)
    if leaf_t is pte32_t:
        f32 = pte >> PAGE_SHIFT
        f = f32
        bad = f32 - 1 >= <uint32_t>lim
    else:
        f = (pte >> PAGE_SHIFT) & PFN_MASK
        bad = f - 1 >= lim
    if bad:
        if f != 0:
            return ERR_BUG
        dst[i] = pte                 # the ZERO_PAGE
        return OK
    if not (shmem_keeps_rw and (c.flags[f] & F_SHMEM)):
        pte &= ~wp
        src[i] = pte
    dst[i] = pte & ~nod
    if take:
        if thp:
            count[page_head(c, <uint32_t>f)] += 1
        else:
            count[f] += 1
    if rm:
        page_add_rmap_t(c, <uint32_t>f, mk_slot(c, dst_t, i), src)
    return OK
