# cython: language_level=3
"""lazyvm.core.zap (mm/memory.c zap_page_range, free_pgtables, clear_page_tables;
mm/mprotect.c change_protection): munmap, exit and mprotect's walkers.

zap_range(level, t, start, end) is the upper-level walker of zap_page_range; the leaf
is zap_pte_range.  A shared table whose span this mm no longer maps drops one use (the
fast path, at every level); a shared table still mapped is privatized first
(unshare_range, for munmap and mprotect).  free_range is free_pgtables.  A huge pmd
entry is zapped whole (thp.zap_huge_pmd: a mapping an operation cuts was split first)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef int zap_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                   const mm_t* keep) noexcept nogil:
    """Clear the entries of [start, end) under table t of `level` (private to this
    mm).  A shared table below is skipped (exit drops it whole later; munmap has
    privatized every shared table it must change).  With keep (munmap: the VMAs left
    afterwards), a table whose span keep no longer reaches is freed, or loses one
    use if shared: the fast path."""
    cdef walk_t w
    cdef uint32_t lo, hi
    cdef entry_t x
    cdef pfn_t ch
    cdef int rc
    if level == 1:
        leaf_bounds(c, start, end, &lo, &hi)
        if c.wide:
            return zap_pte_range(c, <pte64_t*>table_ptr(c, t), t, lo, hi)
        return zap_pte_range(c, <pte32_t*>table_ptr(c, t), t, lo, hi)
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if level == 2 and (x & _PS):
            rc = zap_huge_pmd(c, t, w.idx)
            if rc != OK:
                return rc
            continue
        if x & _P:
            ch = entry_pfn(x)
            if bad_pfn(c, ch):
                return ERR_BUG
            if c.count[ch] > 1:
                if keep != NULL and not span_covered(keep.vmas, keep.nv, w.base, w.base + w.span):
                    eset(c, t, w.idx, 0)
                    drop_table_use(c, ch, level - 1)
            else:
                rc = zap_range(c, level - 1, ch, w.lo, w.hi, keep)
                if rc != OK:
                    return rc
                if keep != NULL and not span_covered(keep.vmas, keep.nv, w.base, w.base + w.span):
                    rc = free_range(c, level - 1, ch, True)
                    if rc != OK:
                        return rc
                    eset(c, t, w.idx, 0)
    return OK


cdef int free_range(State c, int level, pfn_t t, bint scan) noexcept nogil:
    """free_pgtables under (and including) private table t of `level`: a shared
    table below loses one use and nothing else (the fast path); a private leaf table
    is freed, emptied first of anything left if scan (munmap; exit has zapped every
    VMA, and no entry lies outside the VMAs)."""
    cdef int rc
    if level == 1:
        if scan:
            if c.wide:
                rc = zap_pte_range(c, <pte64_t*>table_ptr(c, t), t, 0, c.nent[1])
            else:
                rc = zap_pte_range(c, <pte32_t*>table_ptr(c, t), t, 0, c.nent[1])
            if rc != OK:
                return rc
        free_table(c, t)
        return OK
    rc = free_entries(c, level, t, 0, c.nent[level], scan)
    if rc != OK:
        return rc
    free_table(c, t)
    return OK


cdef int free_entries(State c, int level, pfn_t t, uint32_t lo, uint32_t hi,
                      bint scan) noexcept nogil:
    """Clear the present entries [lo, hi) of table t of `level` (above the leaf): the
    table each points at loses one use if shared (the fast path), else is freed with
    everything under it (free_range)."""
    cdef scan_t s
    cdef pfn_t ch
    cdef int rc
    scan_begin(&s, t, lo, hi)
    while scan_next(c, &s):
        if level == 2 and (eget(c, t, s.idx) & _PS):
            rc = zap_huge_pmd(c, t, s.idx)
            if rc != OK:
                return rc
            continue
        ch = entry_pfn(eget(c, t, s.idx))
        if bad_pfn(c, ch):
            return ERR_BUG
        eset(c, t, s.idx, 0)
        if c.count[ch] > 1:
            drop_table_use(c, ch, level - 1)
        else:
            rc = free_range(c, level - 1, ch, scan)
            if rc != OK:
                return rc
    return OK


cdef int unshare_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                       const mm_t* mm, const mm_t* keep, bint need_entries) noexcept nogil:
    """Privatize, top down, every shared table under table t (private to this mm)
    that an operation on [start, end) will change: for munmap (keep = the VMAs left)
    the shared tables whose span keep still reaches; for mprotect (keep NULL) those
    with an entry in the range.  Stops at a consistent point on ERR_NOMEM (every
    table privatized so far is whole)."""
    cdef walk_t w
    cdef entry_t x
    cdef pfn_t ch
    cdef int rc
    cdef bint shared
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if (x & _P) and not (level == 2 and (x & _PS)):
            ch = entry_pfn(x)
            if bad_pfn(c, ch):
                return ERR_BUG
            shared = c.count[ch] > 1
            if shared:
                if keep != NULL:
                    shared = span_covered(keep.vmas, keep.nv, w.base, w.base + w.span)
                else:
                    shared = has_entries(c, level - 1, ch, w.lo, w.hi)
                if shared:
                    rc = privatize(c, t, w.idx, level - 1, w.base, mm)
                    if rc != OK:
                        return rc
                    ch = entry_pfn(eget(c, t, w.idx))
            if level - 1 > 1 and (shared or not (c.count[ch] > 1)):
                rc = unshare_range(c, level - 1, ch, w.lo, w.hi, mm, keep, need_entries)
                if rc != OK:
                    return rc
    return OK


cdef bint has_entries(State c, int level, pfn_t t, uint64_t start, uint64_t end) noexcept nogil:
    """Does any leaf entry under table t in [start, end) hold something?"""
    cdef walk_t w


    cdef entry_t x
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if level == 1 or (level == 2 and (x & _PS)):
            if x != 0:
                return True
        elif (x & _P) and not bad_pfn(c, entry_pfn(x)) \
                and has_entries(c, level - 1, entry_pfn(x), w.lo, w.hi):
            return True
    return False


cdef int exit_walk(State c, mm_t mm) noexcept nogil:
    """exit_mmap: zap every VMA's range (skipping shared tables), then
    clear_page_tables over the pgd's user entries: a shared table loses one use and
    nothing else; a private one is freed."""
    cdef Py_ssize_t v
    cdef int rc
    for v in range(mm.nv):
        rc = zap_range(c, c.levels, mm.pgd, mm.vmas[v].start, mm.vmas[v].end, NULL)
        if rc != OK:
            return rc
    return clear_top(c, &mm)


cdef int clear_top(State c, const mm_t* mm) noexcept nogil:
    """clear_page_tables over the pgd entries the mm's VMAs reach: a shared table loses
    one use and nothing else; a private one is freed."""
    cdef top_t w
    cdef int rc
    top_begin(&w)
    while top_next(c, mm, &w):
        rc = free_entries(c, c.levels, mm.pgd, w.lo, w.hi, False)
        if rc != OK:
            return rc
    return OK


cdef int change_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                      entry_t prot) noexcept nogil:
    """change_protection: present PTEs of [start, end) get prot, keeping frame, A, D.
    Every table on the way is private (unshare_range ran first)."""
    cdef walk_t w
    cdef uint32_t i, lo, hi
    cdef entry_t x
    if level == 1:
        leaf_bounds(c, start, end, &lo, &hi)
        for i in range(lo, hi):
            x = eget(c, t, i)
            if pte_present(x):
                eset(c, t, i, (x & (~(<entry_t>FLAGS_MASK) | _A | _D)) | prot)
        return OK
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if level == 2 and (x & _PS):             # whole (split_range ran first)
            eset(c, t, w.idx, (x & (~(<entry_t>FLAGS_MASK) | _A | _D)) | prot | _PS)
        elif (x & _P) and not bad_pfn(c, entry_pfn(x)):
            change_range(c, level - 1, entry_pfn(x), w.lo, w.hi, prot)
    return OK


cdef int zap_pte_range(State c, leaf_t* tbl, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil:
    """zap_pte_range: clear entries [lo, hi) of table t, dropping what they hold (a
    frame of a huge page: a reference on its head; F_THPMAP picks that loop)."""
    if c.flags[t] & F_THPMAP:
        return zap_ptes(c, tbl, t, lo, hi, True)
    return zap_ptes(c, tbl, t, lo, hi, False)


cdef inline int zap_ptes(State c, leaf_t* tbl, pfn_t t, uint32_t lo, uint32_t hi,
                         bint thp) noexcept nogil:
    cdef uint32_t zero = c.zero_pfn, nframes = c.nframes
    cdef bint rm = c.rmap_enabled
    cdef leaf_t pte
    cdef uint32_t i, f
    cdef int64_t zapped = 0
    cdef int rc = OK
    for i in range(lo, hi):
        pte = tbl[i]
        if pte == 0:
            continue
        if not pte_present(pte):
            if bad_swap(c, pte):
                rc = ERR_BUG
                break
            tbl[i] = 0
            zapped += 1
            swap_put(c, swp_offset(pte))
            continue
        f = entry_pfn(pte)
        if f >= nframes:
            rc = ERR_BUG
            break
        tbl[i] = 0
        zapped += 1
        if f == zero:
            continue
        if pte & _D:
            c.flags[f] |= F_DIRTY
        if rm and page_remove_rmap_t(c, f, mk_slot(c, t, i), tbl) != OK:
            rc = ERR_BUG
            break
        if thp:
            put_page(c, page_head(c, f))
        else:
            put_page(c, f)
    c.st[ST_PTES_ZAPPED] += zapped
    return rc
