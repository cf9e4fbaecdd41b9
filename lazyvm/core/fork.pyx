# cython: language_level=3
"""lazyvm.core.fork (mm/memory.c copy_page_range; the seed's shared page tables): the
two forks' page-table walkers and their leaf loops.

  copy: copy_range(level, src, dst, start, end), the upper-level walker of
  copy_page_range (copy_pud_range and copy_pmd_range in 2.6.11+); copy_pte_range is
  the leaf: write-protect COW PTEs in parent and child, get_page, page_add_rmap.
  share: share_range copies the levels above share_level; at the entries that point at
  tables of share_level, share_entries gives each table one more use and clears RW in
  the parent's and the child's entry.  No PTE, frame count or chain is touched (with
  eager accounting, each present page under a shared leaf table takes a reference).
  odf (On-demand-fork, EuroSys 2021): the copy walk, except that a leaf table whose
  whole span lies inside the private VMA being copied is shared (odf_share_table);
  copy_range decides per table.
  A huge pmd entry (thp.pxd) is copied wherever its pmd table is copied:
  copy_huge_pmd, or share_entries then huge_entries_shared.

Leaf loops are compiled once per entry width (the fused type leaf_t), so i386 keeps its
32-bit loops.  The Python entry points (Core.fork_copy, Core.fork_share in api.pyx)
reserve what these need and tear a half-made child down on failure."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef uint64_t copy_tables_needed(State c, const mm_t* mm, bint odf) noexcept:
    """The tables a copy (odf: On-demand-fork) fork of mm allocates for the child."""
    cdef pfn_t last[MAX_LEVELS + 1]
    cdef Py_ssize_t v
    cdef uint64_t ntab = 0
    for v in range(MAX_LEVELS + 1):
        last[v] = 0
    for v in range(mm.nv):
        ntab += tables_in(c, c.levels, mm.pgd, mm.vmas[v].start, mm.vmas[v].end, last,
                          odf and not (mm.vmas[v].flags & VM_SHARED))
    return ntab


cdef int copy_mm(State c, const mm_t* mm, pfn_t g, bint odf) noexcept nogil:
    """copy_page_range over every VMA of mm into the child pgd g (odf: On-demand-fork);
    stops at the first failure (the caller tears the child down)."""
    cdef Py_ssize_t v
    cdef int rc
    for v in range(mm.nv):
        rc = copy_range(c, c.levels, mm.pgd, g, mm.vmas[v].start, mm.vmas[v].end,
                        not (mm.vmas[v].flags & VM_SHARED), odf)
        if rc != OK:
            return rc
    return OK


cdef int share_mm(State c, const mm_t* mm, pfn_t g, int share_level) noexcept nogil:
    """The share fork over the pgd entries the mm's VMAs reach, into the child pgd g."""
    cdef top_t w
    cdef int rc
    top_begin(&w)
    while top_next(c, mm, &w):
        rc = share_range(c, c.levels, mm.pgd, g, share_level, w.lo, w.hi)
        if rc != OK:
            return rc
    return OK


cdef int share_table(State c, pfn_t src_t, pfn_t dst_t, uint32_t lo,
                     uint32_t hi) noexcept nogil:
    """share_entries over entries [lo, hi) of table src_t into table dst_t."""
    if c.wide:
        return share_entries(c, <pte64_t*>table_ptr(c, src_t), <pte64_t*>table_ptr(c, dst_t),
                             lo, hi)
    return share_entries(c, <pte32_t*>table_ptr(c, src_t), <pte32_t*>table_ptr(c, dst_t),
                         lo, hi)


cdef void odf_share_table(State c, pfn_t src_t, pfn_t dst_t, uint32_t i) noexcept nogil:
    """On-demand-fork: share the leaf table that entry i of src_t (level 2) points at
    with the child's dst_t: one more use, RW cleared in both entries."""
    cdef entry_t e = eget(c, src_t, i) & ~(<entry_t>_RW)
    c.count[entry_pfn(e)] += 1
    eset(c, src_t, i, e)
    eset(c, dst_t, i, e)
    c.st[ST_SHARE_WRPROTECTS] += 1
    c.st[ST_ODF_TABLES_SHARED] += 1
    if c.eager:
        eager_refs(c, entry_pfn(e), 1)


cdef int copy_range(State c, int level, pfn_t src_t, pfn_t dst_t, uint64_t start,
                    uint64_t end, bint cow, bint odf) noexcept nogil:
    """Copy the entries of [start, end) (one VMA's range, or a part of it) under table
    src_t of `level` into dst_t.  odf: a leaf table whose whole span lies inside this
    private VMA is shared instead (odf_share_table)."""
    cdef walk_t w
    cdef uint32_t lo, hi
    cdef entry_t se, de
    cdef pfn_t st, dt
    cdef int rc
    if level == 1:
        leaf_bounds(c, start, end, &lo, &hi)
        if c.flags[src_t] & F_THPMAP:    # may map frames of huge pages: its own loop
            c.flags[dst_t] |= F_THPMAP
            return copy_thp_table(c, src_t, dst_t, lo, hi, cow)
        return copy_leaf[c.wide](c, src_t, dst_t, lo, hi, cow)
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        se = eget(c, src_t, w.idx)
        if not (se & _P):
            continue
        st = entry_pfn(se)
        if bad_pfn(c, st):
            return ERR_BUG
        if level == 2 and (se & _PS):
            rc = copy_huge_pmd(c, src_t, dst_t, w.idx)
            if rc != OK:
                return rc
            continue
        if odf and level == 2 and cow and w.lo == w.base and w.hi == w.base + w.span:
            odf_share_table(c, src_t, dst_t, w.idx)
            continue
        de = eget(c, dst_t, w.idx)
        if de & _P:
            dt = entry_pfn(de)
        else:
            # a leaf table that this range covers whole is written entry by entry
            # by copy_pte_range: no need to clear it first
            dt = alloc_table(c, level - 1, level - 1 != 1 or w.hi - w.lo != w.span)
            if dt == 0:
                return ERR_NOMEM
            c.st[ST_TABLES_COPIED] += 1
            if odf and level == 2:
                c.st[ST_ODF_TABLES_COPIED] += 1
            eset(c, dst_t, w.idx, mk_entry(dt, table_entry(c, level)))
        rc = copy_range(c, level - 1, st, dt, w.lo, w.hi, cow, odf)
        if rc != OK:
            return rc
    return OK


cdef uint64_t mm_mapped(State c, mm_t mm) noexcept:
    """The most chain nodes a copy fork can take: the parent's leaf entries in its
    VMAs that map a frame (the ZERO_PAGE aside)."""
    cdef Py_ssize_t v
    cdef uint64_t n = 0
    for v in range(mm.nv):
        n += count_range(c, c.levels, mm.pgd, mm.vmas[v].start, mm.vmas[v].end)
    return n


cdef uint64_t count_range(State c, int level, pfn_t t, uint64_t start, uint64_t end) noexcept:
    """Leaf entries mapping a data frame under table t in [start, end)."""
    cdef walk_t w
    cdef uint32_t lo, hi
    cdef uint64_t n = 0
    cdef entry_t x
    if level == 1:
        leaf_bounds(c, start, end, &lo, &hi)
        return mapped_entries(c, t, lo, hi)
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if level == 2 and (x & _PS):
            n += 1                       # a huge mapping: one slot
        elif (x & _P) and not bad_pfn(c, entry_pfn(x)):
            n += count_range(c, level - 1, entry_pfn(x), w.lo, w.hi)
    return n


cdef uint64_t tables_in(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                        pfn_t* last, bint odf_share) noexcept:
    """The tables below table t of `level` that [start, end) reaches, each once
    (last[k]: the table of level k counted last, as ranges come in address order);
    what a copy fork of these ranges allocates for the child (a deposited table for
    each huge mapping).  odf_share: the range is a private VMA under On-demand-fork,
    whose leaf tables that it covers whole are shared, not allocated."""
    cdef walk_t w
    cdef uint64_t n = 0
    cdef entry_t x
    cdef pfn_t ch
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if not (x & _P) or bad_pfn(c, entry_pfn(x)):
            continue
        ch = entry_pfn(x)
        if level == 2 and (x & _PS):
            n += 1
            continue
        if odf_share and level == 2 and w.lo == w.base and w.hi == w.base + w.span:
            continue
        if last[level - 1] != ch:
            last[level - 1] = ch
            n += 1
        if level - 1 > 1:
            n += tables_in(c, level - 1, ch, w.lo, w.hi, last, odf_share)
    return n


cdef uint64_t tables_above(State c, int level, pfn_t t, int share_level,
                           uint32_t nents) noexcept:
    """The tables below table t of `level` and above share_level: what a share fork
    copies."""
    cdef scan_t s
    cdef uint64_t n = 0
    cdef pfn_t ch
    if level - 1 <= share_level:
        return 0
    scan_begin(&s, t, 0, nents)
    while scan_next(c, &s):
        ch = entry_pfn(eget(c, t, s.idx))
        if not bad_pfn(c, ch):
            n += 1 + tables_above(c, level - 1, ch, share_level, c.nent[level - 1])
            if level - 1 == 2 and thp_on(c):     # a copied pmd table: deposits
                n += huge_in(c, ch)
    return n


cdef int share_range(State c, int level, pfn_t src_t, pfn_t dst_t, int share_level,
                     uint32_t lo, uint32_t hi) noexcept nogil:
    """The seed's fork at one level, over entries [lo, hi) of src_t: tables of
    share_level are shared (one more use, RW cleared in both entries:
    share_entries); tables above it are copied, and recursed into."""
    cdef scan_t s
    cdef pfn_t ch, nt
    cdef int rc
    if level - 1 == share_level:
        rc = share_table(c, src_t, dst_t, lo, hi)
        if rc == OK and level == 2 and thp_on(c):
            rc = huge_entries_shared(c, src_t, dst_t, lo, hi, True)
        if rc == OK and c.eager:
            eager_share(c, src_t, lo, hi)
        return rc
    scan_begin(&s, src_t, lo, hi)
    while scan_next(c, &s):
        ch = entry_pfn(eget(c, src_t, s.idx))
        if bad_pfn(c, ch):
            return ERR_BUG
        nt = alloc_table(c, level - 1, True)
        if nt == 0:
            return ERR_NOMEM
        eset(c, dst_t, s.idx, mk_entry(nt, table_entry(c, level)))
        rc = share_range(c, level - 1, ch, nt, share_level, 0, c.nent[level - 1])
        if rc != OK:
            return rc
    return OK


# The leaf of copy_range, per entry width, called through this table: a call the C
# compiler cannot inline, so the leaf loops are compiled on their own, with every
# register theirs (inlined into the recursive walker they lost some to its state).
ctypedef int (*copy_leaf_t)(State, pfn_t, pfn_t, uint32_t, uint32_t, bint) noexcept nogil
cdef copy_leaf_t copy_leaf[2]


cdef int copy_table32(State c, pfn_t src_t, pfn_t dst_t, uint32_t lo, uint32_t hi,
                      bint cow) noexcept nogil:
    return copy_pte_range(c, <pte32_t*>table_ptr(c, src_t), <pte32_t*>table_ptr(c, dst_t),
                          dst_t, lo, hi, cow)


cdef int copy_table64(State c, pfn_t src_t, pfn_t dst_t, uint32_t lo, uint32_t hi,
                      bint cow) noexcept nogil:
    return copy_pte_range(c, <pte64_t*>table_ptr(c, src_t), <pte64_t*>table_ptr(c, dst_t),
                          dst_t, lo, hi, cow)


copy_leaf[0] = copy_table32
copy_leaf[1] = copy_table64


cdef int copy_thp_table(State c, pfn_t src_t, pfn_t dst_t, uint32_t lo, uint32_t hi,
                        bint cow) noexcept nogil:
    """copy_pte_range for a leaf table that may map frames of huge pages (F_THPMAP,
    pae and x86_64 only): their references go on the heads.  Kept out of the 4 KiB
    loops, which compile without the test."""
    cdef pte64_t wp = _RW if cow else 0, nod = _A if cow else (_A | _D)
    cdef pte64_t* src = <pte64_t*>table_ptr(c, src_t)
    cdef pte64_t* dst = <pte64_t*>table_ptr(c, dst_t)
    cdef uint64_t lim = c.nframes - 1
    cdef uint32_t i, empty = 0
    cdef int rc
    for i in range(lo, hi):          # its own loop: copy_ptes stays inline where it is
        rc = copy_one_pte(c, src, dst, i, wp, nod, c.rmap_enabled, False, dst_t, lim,
                          c.count, &empty, True, True)
        if rc != OK:
            c.st[ST_PTES_COPIED] += i - lo - empty
            while i < hi:
                dst[i] = 0
                i += 1
            return rc
    c.st[ST_PTES_COPIED] += hi - lo - empty
    return OK


cdef int copy_pte_range(State c, leaf_t* src, leaf_t* dst, pfn_t dst_t, uint32_t lo,
                        uint32_t hi, bint cow) noexcept nogil:
    """copy_pte_range over entries [lo, hi) of src into dst; every entry of the range is
    written, empty ones too (dst may be a recycled, unzeroed frame).

    cow: a private mapping, write-protect in parent and child; else (shared) clear D in
    the child.  The child's copy is old (A clear).  Reserved frames are copied verbatim;
    swap entries take a swap reference.  Chain nodes must be reserved."""
    # one loop, compiled four times with cow and rmap constants: no per-PTE branch on
    # either, and the bits to clear are immediates
    if c.rmap_enabled:
        if cow:
            return copy_ptes(c, src, dst, dst_t, lo, hi, _RW, _A, True)
        return copy_ptes(c, src, dst, dst_t, lo, hi, 0, _A | _D, True)
    if cow:
        return copy_ptes(c, src, dst, dst_t, lo, hi, _RW, _A, False)
    return copy_ptes(c, src, dst, dst_t, lo, hi, 0, _A | _D, False)


cdef inline int copy_ptes(State c, leaf_t* src, leaf_t* dst, pfn_t dst_t, uint32_t lo,
                          uint32_t hi, leaf_t wp, leaf_t nod, bint rm) noexcept nogil:
    cdef uint64_t lim = c.nframes - 1         # locals: the stores below cannot reload them
    cdef count_t* count = c.count
    cdef uint32_t i, empty = 0
    cdef int rc
    for i in range(lo, hi):
        rc = copy_one_pte(c, src, dst, i, wp, nod, rm, False, dst_t, lim, count, &empty,
                          False, True)
        if rc != OK:
            c.st[ST_PTES_COPIED] += i - lo - empty
            # teardown zaps the child's table whole: what was not written is cleared
            while i < hi:
                dst[i] = 0
                i += 1
            return rc
    c.st[ST_PTES_COPIED] += hi - lo - empty     # counted here, not per PTE
    return OK


cdef int share_entries(State c, leaf_t* src, leaf_t* dst, uint32_t lo,
                       uint32_t hi) noexcept nogil:
    """The entries [lo, hi) of src that point at tables of the share level: each table
    gains a use, and the entry loses RW in src and in its copy in dst (the seed's
    fork: "increment the use counts on all page tables mapped by the page directory").
    An entry naming a frame outside memory is ERR_BUG, with the uses taken given back
    and dst's entries cleared (src keeps RW cleared: a use count of 1 restores it at the
    next write fault)."""
    cdef count_t* count = c.count
    cdef uint64_t nframes = c.nframes, t
    cdef uint32_t nframes32 = c.nframes, t32, j
    cdef leaf_t* s = src + lo
    cdef leaf_t* d = dst + lo
    cdef leaf_t* end = src + hi
    cdef leaf_t e
    cdef int64_t n = 0
    while s < end:
        e = s[0]
        if e & _P:
            if leaf_t is pte32_t:
                t32 = e >> PAGE_SHIFT
                t = t32
                if t32 >= nframes32:
                    break
            else:
                t = (e >> PAGE_SHIFT) & PFN_MASK
                if t >= nframes:
                    break
            count[t] += 1
            e &= ~(<leaf_t>_RW)
            s[0] = e
            d[0] = e
            n += 1
        s += 1
        d += 1
    if s < end:                      # stopped at a frame outside memory
        for j in range(lo, <uint32_t>(s - src)):
            if dst[j] & _P:
                count[entry_pfn(dst[j])] -= 1
                dst[j] = 0
        return ERR_BUG
    c.st[ST_SHARE_WRPROTECTS] += n
    return OK
