# cython: language_level=3
"""lazyvm.core.frames (mm/page_alloc.c): the frame allocator's operations that are not
per page (those are inline in frames.pxd): fork's table reservation, the boot, and
pgd_alloc's initialisation."""

import numpy as np
from libc.string cimport memset, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef int reserve_tables(State c, uint64_t n) noexcept:
    """Have n frames ahead for alloc_table (a fork's tables): all or none."""
    cdef uint32_t f, fresh
    if n > c.nfree:
        return ERR_NOMEM
    if n > c.resv_cap:
        c.resv_cap = <uint32_t>n
        c.resv_arr = np.zeros(c.resv_cap, dtype=np.uint32)
        c.resv = <uint32_t*>array_data(c.resv_arr)
    while c.nresv < n:
        fresh = c.free_head == 0 and c.hwm < c.nframes
        f = alloc_frame(c, F_PTABLE, False)
        if f == 0:
            release_tables(c)
            return ERR_NOMEM
        c.resv[c.nresv] = (f << 1) | fresh
        c.nresv += 1
    return OK


cdef void boot(State c) noexcept:
    """Frame 0 is the ZERO_PAGE (so 0 can mean "no frame" everywhere), then the boot
    pgd and the kernel's tables, which direct-map physical memory:
      i386: 256 page tables at PDEs 768..1023 (4 KiB pages);
      pae: one pmd table at PDPT entry 3 (2 MiB pages, the first GiB);
      x86_64: 256 pud tables at pgd entries 256..511, the one of the direct map
      (0xffff888000000000, pgd entry 273) with 1 GiB pages."""
    cdef uint32_t k, i, t, top = c.levels, ntop = c.nent[c.levels]
    cdef uint64_t pfn
    c.zero_pfn = 0
    c.flags[0] = F_RESERVED
    c.hwm = 1
    c.nfree -= 1
    c.swapper_pgd = alloc_frame(c, F_RESERVED, 0)
    for k in range(c.user_entries, ntop):
        t = alloc_frame(c, F_RESERVED, 0)
        for i in range(c.nent[top - 1]):
            if c.layout == L_I386:
                pfn = (<uint64_t>(k - c.user_entries) << 10) + i
                if pfn >= c.nframes:
                    break
                eset(c, t, i, mk_entry(<pfn_t>pfn, PTE_KERNEL))
            elif c.layout == L_PAE:
                pfn = <uint64_t>i << 9          # 2 MiB pages
                if pfn < c.nframes:
                    eset(c, t, i, mk_entry(<pfn_t>pfn, HUGE_KERNEL))
            elif k == 273:
                pfn = <uint64_t>i << 18         # 1 GiB pages
                if pfn < c.nframes:
                    eset(c, t, i, mk_entry(<pfn_t>pfn, HUGE_KERNEL))
        eset(c, c.swapper_pgd, k, mk_entry(t, ENTRY_KERNEL))
    c.boot_frames = c.hwm
    c.st[ST_FRAMES_PEAK] = c.hwm
    c.clock_hand = c.boot_frames


cdef void init_pgd(State c, uint32_t g) noexcept:
    """An empty user part, then the kernel's entries copied from the boot pgd."""
    cdef size_t w = 8 if c.wide else 4
    cdef size_t user = c.user_entries * w, total = c.nent[c.levels] * w
    memset(table_ptr(c, g), 0, user)
    memcpy(<uint8_t*>table_ptr(c, g) + user,
           <uint8_t*>table_ptr(c, c.swapper_pgd) + user, total - user)
    if total < PAGE_SIZE:                # pae: the 32-byte PDPT in a frame of its own
        memset(<uint8_t*>table_ptr(c, g) + total, 0, PAGE_SIZE - total)
    c.st[ST_PGDS] += 1


# ---- huge pages: 512 frames, the first 512-aligned ------------------------------------
#
# Free 512-frame blocks are kept whole on hfree (their frames are F_FREE and count in
# nfree but are on no free list); a single frame is taken from one only when nothing
# else is free (alloc_frame).

cdef uint32_t alloc_huge(State c) noexcept nogil:
    """A huge page: a free block, else 512 never-used frames above the high-water mark
    (the frames skipped to align it go on the free list).  Returns its head (F_ANON |
    F_HUGE, count 0; the others F_TAIL), or 0 when there is no such run (or fault
    injection says so)."""
    cdef uint32_t h, k, a, used
    if injected_failure(c):
        return 0
    if c.nhfree:
        c.nhfree -= 1
        h = c.hfree[c.nhfree]
        if c.contents:
            memset(c.mem8 + (<size_t>h << PAGE_SHIFT), 0, <size_t>HPAGE_NR * PAGE_SIZE)
    else:
        a = (c.hwm + HPAGE_NR - 1) & ~(<uint32_t>(HPAGE_NR - 1))
        if <uint64_t>a + HPAGE_NR > c.nframes:
            return 0
        while c.hwm < a:
            free_frame(c, c.hwm)
            c.nfree -= 1                 # it was counted free above hwm already
            c.hwm += 1
        h = a
        c.hwm = a + HPAGE_NR
    for k in range(HPAGE_NR):
        c.flags[h + k] = F_TAIL
        c.count[h + k] = 0
        c.link[h + k] = 0
    c.flags[h] = F_ANON | F_HUGE
    c.nfree -= HPAGE_NR
    used = c.nframes - c.nfree
    if used > c.st[ST_FRAMES_PEAK]:
        c.st[ST_FRAMES_PEAK] = used
    return h


cdef void free_huge(State c, uint32_t h) noexcept nogil:
    """The huge page's last reference is gone: its 512 frames become a free block."""
    cdef uint32_t k
    for k in range(HPAGE_NR):
        c.flags[h + k] = F_FREE
        c.count[h + k] = 0
        c.link[h + k] = 0
    c.hfree[c.nhfree] = h
    c.nhfree += 1
    c.nfree += HPAGE_NR


cdef void break_huge_block(State c) noexcept nogil:
    """Put the last free block's frames on the free list."""
    cdef uint32_t h
    cdef int k
    c.nhfree -= 1
    h = c.hfree[c.nhfree]
    for k in range(HPAGE_NR - 1, -1, -1):
        c.link[h + k] = c.free_head
        c.free_head = h + k


cdef uint32_t alloc_from_huge_block(State c, pflags_t fl, bint zero) noexcept nogil:
    """alloc_frame when only free blocks are left: break one and take its first frame,
    as alloc_frame takes one from the free list.  Out of line (alloc_frame reaches it by
    a tail call), so the inline allocator stays as small as it was."""
    cdef uint32_t f, used
    break_huge_block(c)
    f = c.free_head
    c.free_head = c.link[f]
    if zero:
        memset(c.mem8 + (<size_t>f << PAGE_SHIFT), 0, PAGE_SIZE)
    c.nfree -= 1
    c.flags[f] = fl
    c.count[f] = 0
    c.link[f] = 0
    used = c.nframes - c.nfree
    if used > c.st[ST_FRAMES_PEAK]:
        c.st[ST_FRAMES_PEAK] = used
    return f
