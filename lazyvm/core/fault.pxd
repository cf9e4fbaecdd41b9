# cython: language_level=3
#
# lazyvm.core.fault: the MMU, handle_mm_fault and privatize (see fault.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *
from lazyvm.core.swap cimport *
from lazyvm.core.fork cimport *
from lazyvm.core.thp cimport *


cdef int handle_mm_fault(State c, const mm_t* mm, Py_ssize_t vi, uint64_t addr,
                         bint write) noexcept nogil
cdef int do_swap_page(State c, pfn_t t, uint32_t i, entry_t pte, uint32_t vmf,
                      bint write) noexcept nogil
cdef int do_wp_page(State c, pfn_t t, uint32_t i, entry_t pte) noexcept nogil
cdef int privatize(State c, pfn_t ptab, uint32_t pi, int level, uint64_t base,
                   const mm_t* mm) noexcept nogil
cdef int unshare_entry(State c, pfn_t tbl, uint32_t i, int level, uint64_t base,
                       const mm_t* mm) noexcept nogil


cdef inline uint8_t* mmu(State c, pfn_t pgd, uint64_t addr, bint write) noexcept nogil:
    """The MMU: translate a user access or return NULL for a page fault.  Checks P
    and US at every level (P only at a pae PDPT entry), RW at every level that has
    it for a write; sets A (and D) in the PTE.  An entry naming a frame outside
    physical memory faults too (handle_mm_fault then finds it corrupted).  Without
    contents a hit returns the ZERO_PAGE's address (no byte is ever read or written
    through it).  A pmd entry with PS maps a huge page (thp.huge_access)."""
    cdef int level = c.levels
    cdef pfn_t t = pgd
    cdef uint32_t i
    cdef entry_t e
    cdef pte32_t* p32
    cdef pte32_t pde, pte
    if not c.wide:
        # i386: the two levels written out, as the hardware walks them
        pde = (<pte32_t*>table_ptr(c, pgd))[addr >> 22]
        if (pde & (_P | _US)) != (_P | _US) or (write and not (pde & _RW)) \
                or (pde >> PAGE_SHIFT) >= c.nframes:
            return NULL
        p32 = <pte32_t*>table_ptr(c, pde >> PAGE_SHIFT) + ((addr >> PAGE_SHIFT) & 1023)
        pte = p32[0]
        if (pte & (_P | _US)) != (_P | _US) or (pte >> PAGE_SHIFT) >= c.nframes:
            return NULL
        if write:
            if not (pte & _RW):
                return NULL
            if (pte & (_A | _D)) != (_A | _D):
                p32[0] = pte | _A | _D
        elif not (pte & _A):
            p32[0] = pte | _A
        if not c.contents:
            return c.mem8
        return c.mem8 + (<size_t>(pte >> PAGE_SHIFT) << PAGE_SHIFT) + (addr & (PAGE_SIZE - 1))
    while level > 1:
        e = eget(c, t, index_of(c, addr, level))
        if level == c.levels and not c.top_rw:
            if not (e & _P):
                return NULL
        else:
            # one test for the common case: present, user, no PS (a huge pmd mapping,
            # the rare case, is taken apart only when this fails)
            if (e & (_P | _US | _PS)) != (_P | _US) or (write and not (e & _RW)):
                if (e & (_P | _US | _PS)) == (_P | _US | _PS) and (e & _RW or not write):
                    return huge_access(c, t, index_of(c, addr, level), e, addr, write)
                return NULL
        t = entry_pfn(e)
        if bad_pfn(c, t):
            return NULL
        level -= 1
    i = index_of(c, addr, 1)
    e = eget(c, t, i)
    if (e & (_P | _US)) != (_P | _US) or bad_pfn(c, entry_pfn(e)):
        return NULL
    if write:
        if not (e & _RW):
            return NULL
        if (e & (_A | _D)) != (_A | _D):
            eset(c, t, i, e | _A | _D)
    elif not (e & _A):
        eset(c, t, i, e | _A)
    if not c.contents:
        return c.mem8
    return c.mem8 + (<size_t>entry_pfn(e) << PAGE_SHIFT) + (addr & (PAGE_SIZE - 1))
