# cython: language_level=3
"""lazyvm.core.inspection: reading the machine without changing it: counters, walks,
translations, per-mm statistics and a frame's chain."""

import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs import counter_names


cpdef walk(State c, pfn_t pgd, uint64_t addr):
    """[(level, table, index, entry), ...] from the pgd down, ending after the
    first entry that is not present (or at the leaf, or at a huge pmd entry)."""
    cdef int level = c.levels
    cdef pfn_t t = pgd
    cdef uint32_t i
    cdef entry_t e
    out = []
    while level >= 1:
        i = index_of(c, addr, level)
        e = eget(c, t, i)
        out.append((level, int(t), int(i), int(e)))
        if level == 1 or not (e & _P) or bad_pfn(c, entry_pfn(e)) or (e & _PS):
            break
        t = entry_pfn(e)
        level -= 1
    return out


cpdef entry_at(State c, pfn_t pgd, uint64_t addr, int level):
    """The entry of `level` (1 = the PTE) on addr's walk, or 0 if the walk stops
    above it; a huge mapping's pmd entry for any level below it."""
    cdef int k = c.levels
    cdef pfn_t t = pgd
    cdef entry_t e
    while True:
        e = eget(c, t, index_of(c, addr, k))
        if k == level or (k == 2 and (e & _PS)):
            return e
        if not (e & _P) or bad_pfn(c, entry_pfn(e)):
            return 0
        t = entry_pfn(e)
        k -= 1


cpdef translate(State c, pfn_t pgd, uint64_t addr):
    """The physical address addr maps to (P set at every level), or -1."""
    cdef int level = c.levels
    cdef pfn_t t = pgd
    cdef entry_t e
    while True:
        e = eget(c, t, index_of(c, addr, level))
        if not (e & _P) or bad_pfn(c, entry_pfn(e)):
            return -1
        if level == 2 and (e & _PS):
            return (<int64_t>entry_pfn(e) << PAGE_SHIFT) | \
                <int64_t>(addr & ((<uint64_t>1 << HPAGE_SHIFT) - 1))
        if level == 1:
            return (<int64_t>entry_pfn(e) << PAGE_SHIFT) | <int64_t>(addr & (PAGE_SIZE - 1))
        t = entry_pfn(e)
        level -= 1


cpdef mm_stats(State c, pfn_t pgd):
    """(rss, [tables reached at level 1, 2, ...]) of the mm with this pgd: data
    pages mapped (ZERO_PAGE excluded), and the distinct tables below the pgd (a huge
    mapping: 512 pages, and its deposited table at level 1, as VmPTE counts it)."""
    cdef int64_t rss = 0
    seen = set()
    per = [0] * (c.levels - 1)
    rss = mm_walk(c, c.levels, pgd, seen, per)
    return int(rss), per


cdef int64_t mm_walk(State c, int level, pfn_t t, set seen, list per):
    cdef uint32_t i, n = c.user_entries if level == c.levels else c.nent[level]
    cdef entry_t e
    cdef pfn_t ch
    cdef int64_t rss = 0
    for i in range(n):
        e = eget(c, t, i)
        if level == 1:
            if pte_present(e) and entry_pfn(e) != c.zero_pfn:
                rss += 1
            continue
        if not (e & _P):
            continue
        if level == 2 and (e & _PS):
            rss += HPAGE_NR
            per[0] += 1
            continue
        ch = entry_pfn(e)
        if bad_pfn(c, ch):
            continue
        if ch not in seen:
            seen.add(ch)
            per[level - 2] += 1
        rss += mm_walk(c, level - 1, ch, seen, per)
    return rss


cpdef counters(State c):
    """The event counters of stats() alone (no scan of the frame arrays): cheap enough
    to read around every operation (Machine's accounts of who pays)."""
    return {name: int(c.st[i]) for i, name in enumerate(counter_names())}


cpdef stats(State c):
    cdef int k
    out = {name: int(c.st[i]) for i, name in enumerate(counter_names())}
    for k in range(1, c.levels):
        out[f"page_tables_l{k}"] = int(c.st[ST_TABLES_L + k - 1])
        out[f"unshares_l{k}"] = int(c.st[ST_UNSHARES_L + k - 1])
        out[f"tables_dropped_l{k}"] = int(c.st[ST_DROPPED_L + k - 1])
    out["frames_total"] = int(c.nframes)
    out["frames_free"] = int(c.nfree)
    out["frames_used"] = int(c.nframes - c.nfree)
    used = c.flags_arr[:c.hwm]
    tables = c.count_arr[:c.hwm][(used & F_PTABLE) != 0]
    out["shared_tables"] = int(np.count_nonzero(tables > 1))
    out["pt_use_refs"] = int(tables.sum())
    out["swap_total"] = int(c.nswap - 1 if c.nswap else 0)
    out["swap_used"] = int(out["swap_total"] - c.swap_nfree)
    return out
