# cython: language_level=3
"""lazyvm.core.rmap (mm/rmap.c, 2.6.0): growing the pte_chain pool, counting what a
copy may need, forgetting a frame's chain, and listing it (see rmap.pxd for the chain's
layout and the per-PTE operations)."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef int grow_nodes(State c, uint64_t n) noexcept:
    """Double the pool until n nodes are free: an allocation point (fault injection).

    The pool is one numpy array over a virtual reservation of node_limit nodes that
    the host backs only where nodes are used, so growing copies nothing: a fork
    may reserve its worst case, which in steady state it never touches."""
    cdef uint64_t cap = c.node_cap
    if <uint64_t>c.node_limit - c.node_cap + c.node_nfree < n:
        return ERR_NOMEM                     # more than the reservation holds
    if injected_failure(c):
        return ERR_NOMEM
    while cap - c.node_cap + c.node_nfree < n:
        cap = min(cap * 2, <uint64_t>c.node_limit)
    c.node_nfree += <uint32_t>(cap - c.node_cap)
    c.node_cap = <uint32_t>cap
    return OK


cdef uint64_t mapped_entries(State c, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil:
    """Entries of leaf table t in [lo, hi) that map a frame other than the ZERO_PAGE:
    the most chain nodes copying them can take (each page_add_rmap makes at most one)."""
    cdef uint32_t i
    cdef uint64_t n = 0
    cdef entry_t e
    for i in range(lo, hi):
        e = eget(c, t, i)
        if pte_present(e) and entry_pfn(e) != c.zero_pfn:
            n += 1
    return n


cdef void rmap_clear(State c, uint32_t f) noexcept nogil:
    """Forget every slot of frame f (after try_to_unmap has cleared them)."""
    cdef uint32_t n, nxt
    if c.flags[f] & F_DIRECT:
        c.flags[f] &= ~F_DIRECT
        c.st[ST_RMAP_DIRECT] -= 1
        c.st[ST_RMAP_REMOVES] += 1
    else:
        n = c.link[f]
        while n != 0:
            nxt = node_next(node_ptr(c, n))
            c.st[ST_PTE_CHAIN_SLOTS] -= c.nrpte - node_idx(node_ptr(c, n))
            c.st[ST_RMAP_REMOVES] += c.nrpte - node_idx(node_ptr(c, n))
            node_release(c, n)
            n = nxt
    c.link[f] = 0


cpdef rmap_slots(State c, uint32_t f):
    """The (table_pfn, index) slots in frame f's chain, head first."""
    cdef uint32_t n, k, mask = (1 << c.slot_shift) - 1
    cdef slot_t s
    out = []
    if f >= c.nframes or not c.rmap_enabled:
        return out
    if c.flags[f] & (F_FREE | F_RESERVED | F_PTABLE | F_PGD):
        return out
    if c.flags[f] & F_DIRECT:
        s = direct_get(c, f)
        return [(int(s >> c.slot_shift), int(s & mask))]
    n = c.link[f]
    while n != 0:
        for k in range(node_idx(node_ptr(c, n)), c.nrpte):
            s = slot_get(c, node_ptr(c, n), k)
            out.append((int(s >> c.slot_shift), int(s & mask)))
        n = node_next(node_ptr(c, n))
    return out
