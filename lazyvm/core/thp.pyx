# cython: language_level=3
"""lazyvm.core.thp (mm/huge_memory.c): transparent huge pages (see thp.pxd)."""

from libc.string cimport memset, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef void deposit(State c, pfn_t pmd, pfn_t pt) noexcept nogil:
    """pgtable_trans_huge_deposit: leaf table pt waits on pmd table's list."""
    c.flags[pt] = F_PTABLE | F_DEPOSIT | (1 << F_LEVEL_SHIFT)
    c.link[pt] = c.link[pmd]
    c.link[pmd] = pt
    c.st[ST_TABLES_DEPOSITED] += 1


cdef pfn_t withdraw(State c, pfn_t pmd) noexcept nogil:
    """pgtable_trans_huge_withdraw: a deposited table of pmd table's list (0: none)."""
    cdef pfn_t pt = c.link[pmd]
    if pt != 0:
        c.link[pmd] = c.link[pt]
        c.link[pt] = 0
        c.flags[pt] = F_PTABLE | (1 << F_LEVEL_SHIFT)
        c.st[ST_TABLES_DEPOSITED] -= 1
    return pt


cdef uint8_t* huge_access(State c, pfn_t t, uint32_t i, entry_t e, uint64_t addr,
                          bint write) noexcept nogil:
    """The MMU at huge entry e (entry i of pmd table t), which allows the access:
    set A (and D), return the byte's address."""
    cdef pfn_t h = entry_pfn(e)
    if write:
        if (e & (_A | _D)) != (_A | _D):
            eset(c, t, i, e | _A | _D)
    elif not (e & _A):
        eset(c, t, i, e | _A)
    if not c.contents or bad_pfn(c, h + HPAGE_NR - 1):
        return c.mem8
    return c.mem8 + (<size_t>h << PAGE_SHIFT) + (addr & ((<uint64_t>1 << HPAGE_SHIFT) - 1))


cdef int huge_fault(State c, pfn_t t, uint32_t i, uint64_t vmf) noexcept nogil:
    """do_huge_pmd_anonymous_page for a write: entry i of private pmd table t is
    empty.  OK with the huge page mapped writable; 1 when no run of 512 frames is
    free (the caller maps 4 KiB pages: thp_fallbacks); ERR_NOMEM without a frame for
    the deposited table."""
    cdef uint32_t h = alloc_huge(c), pt
    if h == 0:
        c.st[ST_THP_FALLBACKS] += 1
        return 1
    pt = alloc_table(c, 1, True)
    if pt == 0:
        free_huge(c, h)
        return ERR_NOMEM
    deposit(c, t, pt)
    c.count[h] = 1
    eset(c, t, i, mk_entry(h, vm_page_prot(<uint32_t>vmf) | _RW | _D | _PS))
    if c.rmap_enabled:
        rmap_add(c, h, mk_slot(c, t, i))
    c.st[ST_THP_FAULTS] += 1
    return OK


cdef int copy_huge_pmd(State c, pfn_t src_t, pfn_t dst_t, uint32_t i) noexcept nogil:
    """copy_huge_pmd: the child's entry i maps the same huge page, old; RW cleared in
    both; one reference on the head, a slot in its chain; a table deposited for the
    child (from reserve_tables: the fork counted it).  Chain nodes are reserved."""
    cdef entry_t e = eget(c, src_t, i) & ~(<entry_t>_RW)
    cdef pfn_t h = entry_pfn(e), pt
    if bad_pfn(c, h) or not (c.flags[h] & F_HUGE):
        return ERR_BUG
    pt = alloc_table(c, 1, True)
    if pt == 0:
        return ERR_NOMEM
    deposit(c, dst_t, pt)
    eset(c, src_t, i, e)
    eset(c, dst_t, i, e & ~(<entry_t>_A))
    c.count[h] += 1
    if c.rmap_enabled:
        rmap_add(c, h, mk_slot(c, dst_t, i))
    return OK


cdef int huge_entries_shared(State c, pfn_t src_t, pfn_t dst_t, uint32_t i, uint32_t n,
                             bint old) noexcept nogil:
    """After share_entries copied entries [i, n) of pmd table src_t into dst_t (a
    share fork's copied pmd level, or a privatized pmd table): a huge entry among
    them took the head's reference and lost RW as a table would; give the copy its
    rmap slot and deposited table (and make it old if old: a fork's child)."""
    cdef entry_t e
    cdef pfn_t pt
    while True:
        i = next_present(c, dst_t, i, n)
        if i >= n:
            return OK
        e = eget(c, dst_t, i)
        if e & _PS:
            pt = alloc_table(c, 1, True)
            if pt == 0:
                return ERR_NOMEM
            deposit(c, dst_t, pt)
            if old:
                eset(c, dst_t, i, e & ~(<entry_t>_A))
            if c.rmap_enabled:
                rmap_add(c, entry_pfn(e), mk_slot(c, dst_t, i))
            c.st[ST_SHARE_WRPROTECTS] -= 1     # a mapping copied, not a table shared
        i += 1


cdef uint32_t huge_in(State c, pfn_t t) noexcept nogil:
    """Huge entries of pmd table t."""
    cdef uint32_t i = 0, n = 0
    while True:
        i = next_present(c, t, i, c.nent[2])
        if i >= c.nent[2]:
            return n
        if eget(c, t, i) & _PS:
            n += 1
        i += 1


cdef int zap_huge_pmd(State c, pfn_t t, uint32_t i) noexcept nogil:
    """zap_huge_pmd: clear entry i of pmd table t, free its deposited table, drop the
    huge page's reference and slot."""
    cdef entry_t e = eget(c, t, i)
    cdef pfn_t h = entry_pfn(e), pt
    if bad_pfn(c, h) or not (c.flags[h] & F_HUGE):
        return ERR_BUG
    pt = withdraw(c, t)
    if pt == 0:
        return ERR_BUG
    free_table(c, pt)
    eset(c, t, i, 0)
    if e & _D:
        c.flags[h] |= F_DIRTY
    if c.rmap_enabled and rmap_remove(c, h, mk_slot(c, t, i)) != OK:
        return ERR_BUG
    c.st[ST_PTES_ZAPPED] += 1
    put_page(c, h)
    return OK


cdef int split_huge_pmd(State c, pfn_t t, uint32_t i) noexcept nogil:
    """__split_huge_pmd: entry i of pmd table t maps a huge page; map it instead by
    the 512 PTEs of the withdrawn deposit (its bits without PS, read-only: the huge
    page now has 512 references), each a reference on the head and a slot in its
    frame's chain.  Needs no frame: only chain nodes, had
    first (ERR_NOMEM, nothing changed)."""
    cdef entry_t e = eget(c, t, i), bits
    cdef pfn_t h = entry_pfn(e), pt
    cdef uint32_t k
    if bad_pfn(c, h) or not (c.flags[h] & F_HUGE):
        return ERR_BUG
    if c.rmap_enabled and reserve_nodes(c, HPAGE_NR + 1) != OK:
        return ERR_NOMEM
    pt = withdraw(c, t)
    if pt == 0:
        return ERR_BUG
    c.flags[pt] |= F_THPMAP
    bits = e & (_P | _US | _A | _D)
    if c.rmap_enabled and rmap_remove(c, h, mk_slot(c, t, i)) != OK:
        return ERR_BUG
    for k in range(HPAGE_NR):
        eset(c, pt, k, mk_entry(h + k, bits))
        if c.rmap_enabled:
            rmap_add(c, h + k, mk_slot(c, pt, k))
    c.count[h] += HPAGE_NR - 1
    eset(c, t, i, mk_entry(pt, ENTRY_USER))
    c.st[ST_THP_SPLITS] += 1
    return OK


cdef int split_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                     bint every) noexcept nogil:
    """Split the huge mappings under table t that [start, end) covers in part (every:
    all it reaches).  The tables on the way are private (unshare_range ran)."""
    cdef walk_t w
    cdef entry_t x
    cdef int rc
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if not (x & _P) or bad_pfn(c, entry_pfn(x)):
            continue
        if level == 2:
            if (x & _PS) and (every or w.lo != w.base or w.hi != w.base + w.span):
                rc = split_huge_pmd(c, t, w.idx)
                if rc != OK:
                    return rc
        else:
            rc = split_range(c, level - 1, entry_pfn(x), w.lo, w.hi, every)
            if rc != OK:
                return rc
    return OK


cdef int huge_wp(State c, pfn_t t, uint32_t i) noexcept nogil:
    """do_huge_pmd_wp_page: a write to the read-only huge mapping at entry i of
    private pmd table t.  One reference: make it writable.  Else split this mapping
    (the 4 KiB copy-on-write follows when the fault retries), or with thp_copy copy
    the huge page whole (no run free: split instead, thp_fallbacks)."""
    cdef entry_t e = eget(c, t, i)
    cdef pfn_t h = entry_pfn(e), nh
    if bad_pfn(c, h) or not (c.flags[h] & F_HUGE):
        return ERR_BUG
    if c.count[h] == 1:
        eset(c, t, i, e | _RW | _A | _D)
        c.st[ST_COW_REUSES] += 1
        return OK
    if c.thp_copy:
        nh = alloc_huge(c)
        if nh != 0:
            c.count[nh] = 1
            if c.contents:
                memcpy(c.mem8 + (<size_t>nh << PAGE_SHIFT),
                       c.mem8 + (<size_t>h << PAGE_SHIFT), <size_t>HPAGE_NR * PAGE_SIZE)
            if c.rmap_enabled:
                if rmap_remove(c, h, mk_slot(c, t, i)) != OK:
                    return ERR_BUG
                rmap_add(c, nh, mk_slot(c, t, i))
            put_page(c, h)
            eset(c, t, i, mk_entry(nh, (e & FLAGS_MASK) | _RW | _A | _D))
            c.st[ST_THP_COPIES] += 1
            return OK
        c.st[ST_THP_FALLBACKS] += 1
    return split_huge_pmd(c, t, i)


cdef int split_huge_page(State c, uint32_t h) noexcept nogil:
    """split_huge_page (rmap reclaim): split every pmd mapping of huge page h, then
    make its 512 frames ordinary pages, each counting the slots that map it (a frame
    no PTE maps is freed).  ERR_NOMEM if chain nodes cannot be had."""
    cdef uint32_t k, n, j, f
    cdef int rc
    cdef bint found = True
    cdef int64_t total = 0, before
    cdef count_t refs
    cdef slot_t slot = 0
    while found:                     # the pmd slots, one at a time (splitting edits the chain)
        found = False
        if c.flags[h] & F_DIRECT:
            slot = direct_get(c, h)
            found = ((c.flags[<pfn_t>(slot >> c.slot_shift)] >> F_LEVEL_SHIFT) & 7) == 2
        else:
            n = c.link[h]
            while n != 0 and not found:
                for j in range(node_idx(node_ptr(c, n)), c.nrpte):
                    slot = slot_get(c, node_ptr(c, n), j)
                    if ((c.flags[<pfn_t>(slot >> c.slot_shift)] >> F_LEVEL_SHIFT) & 7) == 2:
                        found = True
                        break
                n = node_next(node_ptr(c, n))
        if found:
            rc = split_huge_pmd(c, <pfn_t>(slot >> c.slot_shift),
                                     <uint32_t>(slot & ((1 << c.slot_shift) - 1)))
            if rc != OK:
                return rc
    before = c.count[h]
    for k in range(HPAGE_NR):
        f = h + k
        refs = 0
        if c.flags[f] & F_DIRECT:
            refs = slot_refs(c, <pfn_t>(direct_get(c, f) >> c.slot_shift))
        else:
            n = c.link[f]
            while n != 0:
                for j in range(node_idx(node_ptr(c, n)), c.nrpte):
                    refs += slot_refs(c, <pfn_t>(slot_get(c, node_ptr(c, n), j)
                                                   >> c.slot_shift))
                n = node_next(node_ptr(c, n))
        total += refs
        c.flags[f] = (c.flags[f] & (F_DIRECT | F_DIRTY)) | F_ANON
        c.count[f] = refs
    if total != before:
        return ERR_BUG
    for k in range(HPAGE_NR):
        if c.count[h + k] == 0:
            free_frame(c, h + k)
    return OK
