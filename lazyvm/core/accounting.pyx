# cython: language_level=3
"""lazyvm.core.accounting: eager accounting of shared leaf tables (see accounting.pxd)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef void eager_refs(State c, pfn_t t, int sign) noexcept nogil:
    """One reference more (sign 1) or less (-1) on every present page of leaf table t."""
    cdef int64_t n
    if c.wide:
        n = table_refs(c, <pte64_t*>table_ptr(c, t), sign)
    else:
        n = table_refs(c, <pte32_t*>table_ptr(c, t), sign)
    c.st[ST_EAGER_REFS if sign > 0 else ST_EAGER_REFS_DROPPED] += n


cdef void eager_share(State c, pfn_t t, uint32_t i, uint32_t n) noexcept nogil:
    """Entries [i, n) of table t point at leaf tables that just gained a use (a huge
    pmd entry among them is no table): each present page under them takes one more
    reference."""
    cdef entry_t x
    while True:
        i = next_present(c, t, i, n)
        if i >= n:
            return
        x = eget(c, t, i)
        if not bad_pfn(c, entry_pfn(x)) and not (x & _PS):
            eager_refs(c, entry_pfn(x), 1)
        i += 1


cdef void drop_table_use(State c, pfn_t t, int level) noexcept nogil:
    """The zap fast path: this mm lets go of shared table t of `level`: one use less,
    and with eager accounting a leaf table's pages lose the reference it held."""
    c.count[t] -= 1
    c.st[ST_TABLES_DROPPED] += 1
    c.st[ST_DROPPED_L + level - 1] += 1
    if c.eager and level == 1:
        eager_refs(c, t, -1)


cdef int64_t table_refs(State c, leaf_t* tbl, int sign) noexcept nogil:
    """One reference more (sign 1) or less (-1) on each present page of leaf table tbl
    (the ZERO_PAGE aside; a frame of a huge page: on its head); returns how many."""
    cdef uint32_t zero = c.zero_pfn, nframes = c.nframes, i, f, n = c.nent[1]
    cdef leaf_t pte
    cdef int64_t k = 0
    for i in range(n):
        pte = tbl[i]
        if not pte_present(pte):
            continue
        f = entry_pfn(pte)
        if f == zero or f >= nframes:
            continue
        f = page_head(c, f)
        if sign > 0:
            c.count[f] += 1
        else:
            put_page(c, f)
        k += 1
    return k
