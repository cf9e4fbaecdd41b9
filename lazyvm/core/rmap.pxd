# cython: language_level=3
#
# lazyvm.core.rmap (mm/rmap.c, 2.6.0): the pte_chain pool and page_add_rmap /
# page_remove_rmap, as in 2.6.0:
#  - one mapping is kept in struct page itself (F_DIRECT: link, and lidx on 64-bit
#    layouts, hold the slot);
#  - more live in a list of nodes whose head is link; only the head has free slots;
#    the used slots of the head are [idx, NRPTE), every other node is full;
#  - page_add_rmap: direct -> a node with the old slot at NRPTE-1 and the new one at
#    NRPTE-2; head full -> a new head with the slot at NRPTE-1; else the slot before idx;
#  - page_remove_rmap: the head's first used slot moves into the hole, the head is
#    freed when it empties; removal never collapses a chain back to direct
#    (page_referenced does, when one slot is left).
# Nodes come from a pool that grows by doubling; every path reserves the nodes it may
# need before it changes anything, so node_alloc itself cannot fail.
#
# A slot is a pte_addr_t as wide as an entry (leaf_t): in a node's 16 words, slot k is
# (<leaf_t*>node)[1 + k] -- words 1..15 for 32-bit slots, 2..15 for 64-bit ones -- and a
# node holds 64 / sizeof(leaf_t) - 1 of them (NRPTE 15 or 7).  The `tag` argument of the
# _t functions only picks the width.  The per-PTE operations are inline here.

from libc.string cimport memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *


cdef int grow_nodes(State c, uint64_t n) noexcept
cdef uint64_t mapped_entries(State c, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil
cdef void rmap_clear(State c, uint32_t f) noexcept nogil
cpdef rmap_slots(State c, uint32_t f)


cdef inline uint32_t node_alloc(State c) noexcept nogil:
    cdef uint32_t n
    if c.node_free != 0:
        n = c.node_free
        c.node_free = node_next(node_ptr(c, n))
    else:
        n = c.node_hwm
        c.node_hwm += 1
    c.node_nfree -= 1
    memset(node_ptr(c, n), 0, NODE_WORDS * 4)
    c.st[ST_PTE_CHAIN_NODES] += 1
    c.st[ST_CHAIN_NODES_ALLOCATED] += 1
    if c.st[ST_PTE_CHAIN_NODES] > c.st[ST_PTE_CHAIN_NODES_PEAK]:
        c.st[ST_PTE_CHAIN_NODES_PEAK] = c.st[ST_PTE_CHAIN_NODES]
    return n


cdef inline void node_release(State c, uint32_t n) noexcept nogil:
    node_ptr(c, n)[0] = node_encode(c.node_free, 0)
    c.node_free = n
    c.node_nfree += 1
    c.st[ST_PTE_CHAIN_NODES] -= 1


cdef inline void page_add_rmap_t(State c, uint32_t f, slot_t slot, leaf_t* tag) noexcept nogil:
    """page_add_rmap: no mapping -> direct; direct -> a node with the old slot at NRPTE-1
    and the new at NRPTE-2; head full -> a new head with the slot at NRPTE-1; else the
    slot before idx."""
    cdef uint32_t h, n, idx, nr = 64 // sizeof(leaf_t) - 1
    cdef uint32_t* nd
    c.st[ST_RMAP_ADDS] += 1
    if c.flags[f] & F_DIRECT:
        n = node_alloc(c)
        nd = node_ptr(c, n)
        (<leaf_t*>nd)[nr] = <leaf_t>direct_slot_t(c, f, tag)
        (<leaf_t*>nd)[nr - 1] = <leaf_t>slot
        nd[0] = node_encode(0, nr - 2)
        c.link[f] = n
        c.flags[f] &= ~F_DIRECT
        c.st[ST_RMAP_DIRECT] -= 1
        c.st[ST_PTE_CHAIN_SLOTS] += 2
    elif c.link[f] == 0:
        set_direct_t(c, f, slot, tag)
        c.flags[f] |= F_DIRECT
        c.st[ST_RMAP_DIRECT] += 1
    else:
        h = c.link[f]
        nd = node_ptr(c, h)
        idx = node_idx(nd)
        if idx == 0:
            n = node_alloc(c)
            nd = node_ptr(c, n)
            (<leaf_t*>nd)[nr] = <leaf_t>slot
            nd[0] = node_encode(h, nr - 1)
            c.link[f] = n
        else:
            idx -= 1
            (<leaf_t*>nd)[1 + idx] = <leaf_t>slot
            nd[0] = node_encode(node_next(nd), idx)
        c.st[ST_PTE_CHAIN_SLOTS] += 1


cdef inline int page_remove_rmap_t(State c, uint32_t f, slot_t slot, leaf_t* tag) noexcept nogil:
    """page_remove_rmap: the head's first used slot moves into the hole; the head is
    freed when it empties; never collapses to direct.  ERR_BUG if slot is not there."""
    cdef uint32_t h, n, idx, k, start, nr = 64 // sizeof(leaf_t) - 1
    cdef uint32_t* hd
    cdef uint32_t* nd
    cdef leaf_t s = <leaf_t>slot
    c.st[ST_RMAP_REMOVES] += 1
    if c.flags[f] & F_DIRECT:
        if direct_slot_t(c, f, tag) != slot:
            return ERR_BUG
        c.link[f] = 0
        c.flags[f] &= ~F_DIRECT
        c.st[ST_RMAP_DIRECT] -= 1
        return OK
    h = c.link[f]
    if h == 0:
        return ERR_BUG
    hd = node_ptr(c, h)
    idx = node_idx(hd)
    n = h
    start = idx
    while n != 0:
        nd = node_ptr(c, n)
        for k in range(start, nr):
            if (<leaf_t*>nd)[1 + k] == s:
                (<leaf_t*>nd)[1 + k] = (<leaf_t*>hd)[1 + idx]
                (<leaf_t*>hd)[1 + idx] = 0
                idx += 1
                c.st[ST_PTE_CHAIN_SLOTS] -= 1
                if idx == nr:
                    c.link[f] = node_next(hd)
                    node_release(c, h)
                else:
                    hd[0] = node_encode(node_next(hd), idx)
                return OK
        n = node_next(nd)
        start = 0
    return ERR_BUG


cdef inline void rmap_add(State c, uint32_t f, slot_t slot) noexcept nogil:
    """page_add_rmap: add PTE slot to frame f's chain (page_add_rmap_t, compiled
    per slot width)."""
    if c.wide:
        page_add_rmap_t(c, f, slot, <pte64_t*>NULL)
    else:
        page_add_rmap_t(c, f, slot, <pte32_t*>NULL)


cdef inline int rmap_remove(State c, uint32_t f, slot_t slot) noexcept nogil:
    """page_remove_rmap: take slot out of frame f's chain; ERR_BUG if it is not there."""
    if c.wide:
        return page_remove_rmap_t(c, f, slot, <pte64_t*>NULL)
    return page_remove_rmap_t(c, f, slot, <pte32_t*>NULL)


cdef inline int reserve_nodes(State c, uint64_t n) noexcept nogil:
    if c.node_nfree >= n:
        return OK
    with gil:
        return grow_nodes(c, n)
