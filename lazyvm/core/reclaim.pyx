# cython: language_level=3
"""lazyvm.core.reclaim (mm/vmscan.c): page reclaim, two ways.

  rmap (2.6.0): a second-chance clock over frames; page_referenced tests and clears A
  in every slot of the frame's chain; try_to_unmap turns each slot into a swap entry.
  scan (2.4 swap_out): walk the page tables of each process in turn; a young PTE loses
  A, an old one becomes a swap entry (try_to_swap_out); a frame is freed when only the
  swap cache holds it."""

from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

import numpy as np

from lazyvm.errors import OutOfMemory


cdef bint page_referenced(State c, uint32_t f) noexcept nogil:
    """Test and clear A in every slot that maps f (through its chain); a chain left
    with one slot collapses back to direct, as 2.6.0's page_referenced does."""
    cdef bint ref = False
    cdef uint32_t n, k, nslots = 0
    cdef slot_t slot, last = 0
    cdef entry_t e
    if c.flags[f] & F_DIRECT:
        slot = direct_get(c, f)
        e = slot_read(c, slot)
        c.st[ST_RECLAIM_RMAP_SLOTS] += 1
        if e & _A:
            slot_write(c, slot, e & ~(<entry_t>_A))
            return True
        return False
    n = c.link[f]
    while n != 0:
        for k in range(node_idx(node_ptr(c, n)), c.nrpte):
            slot = slot_get(c, node_ptr(c, n), k)
            e = slot_read(c, slot)
            if e & _A:
                slot_write(c, slot, e & ~(<entry_t>_A))
                ref = True
            nslots += 1
            last = slot
        n = node_next(node_ptr(c, n))
    c.st[ST_RECLAIM_RMAP_SLOTS] += nslots
    if nslots == 1:
        rmap_clear(c, f)
        c.st[ST_RMAP_REMOVES] -= 1        # the slot moves, it is not removed
        direct_set(c, f, last)
        c.flags[f] |= F_DIRECT
        c.st[ST_RMAP_DIRECT] += 1
    return ref


cdef uint32_t add_to_swap(State c, uint32_t f) noexcept nogil:
    """f's swap slot: the one the swap cache has it under, else a new slot that f is
    written to and cached under (add_to_swap).  0 when the swap area is full."""
    cdef uint32_t s
    if c.flags[f] & F_SWAPCACHE:
        return c.index[f]
    s = swap_alloc(c)
    if s == 0:
        return 0
    if c.contents:
        memcpy(c.swap_data + (<size_t>s << PAGE_SHIFT),
               c.mem8 + (<size_t>f << PAGE_SHIFT), PAGE_SIZE)
    c.swap_cache[s] = f
    c.index[f] = s
    c.flags[f] |= F_SWAPCACHE
    c.count[f] += 1                       # the swap cache's reference
    c.st[ST_SWAP_OUTS] += 1
    return s


cdef int swap_out_frame(State c, uint32_t f) noexcept nogil:
    """Swap f out through its chain: write it to a slot (unless the swap cache has it
    already), turn every slot that maps it into a swap entry (try_to_unmap), free it."""
    cdef uint32_t s, n, k
    s = add_to_swap(c, f)
    if s == 0:
        return ERR_NOMEM
    if c.flags[f] & F_DIRECT:
        unmap_slot(c, f, direct_get(c, f), s)
    else:
        n = c.link[f]
        while n != 0:
            for k in range(node_idx(node_ptr(c, n)), c.nrpte):
                unmap_slot(c, f, slot_get(c, node_ptr(c, n), k), s)
            n = node_next(node_ptr(c, n))
    rmap_clear(c, f)
    swapcache_drop(c, s)                   # written: the frame goes
    return OK


cdef void unmap_slot(State c, uint32_t f, slot_t slot, uint32_t s) noexcept nogil:
    if slot_read(c, slot) & _D:
        c.flags[f] |= F_DIRTY
    slot_write(c, slot, swp_entry(s))
    c.swap_count[s] += 1
    c.count[f] -= slot_refs(c, <pfn_t>(slot >> c.slot_shift))
    c.st[ST_RECLAIM_RMAP_SLOTS] += 1


cdef int scan_range(State c, int level, pfn_t t, uint64_t start, uint64_t end,
                    uint32_t n, uint32_t* freed) noexcept nogil:
    """swap_out_pgd/pmd: the upper-level walker of 2.4's scan; try_to_swap_out is
    the leaf.  Each PTE unmapped without freeing its frame (others map it: a copy
    fork's COW pages) is logged, so a call that runs out of slots before it frees
    anything can give them back (undo_scan)."""
    cdef walk_t w
    cdef uint32_t i, lo, hi, f, s
    cdef entry_t x, pte
    cdef int64_t scanned = 0
    cdef int rc
    if level == 1:
        leaf_bounds(c, start, end, &lo, &hi)
        rc = OK
        for i in range(lo, hi):
            scanned += 1
            pte = eget(c, t, i)
            if not pte_present(pte):     # PROTNONE frames are mapped too
                continue
            f = entry_pfn(pte)
            if f == c.zero_pfn or bad_pfn(c, f) or (c.flags[f] & (F_ANON | F_HUGE)) != F_ANON:
                # (a frame of a huge page stays: without rmap it cannot be split)
                continue
            if pte & _A:
                eset(c, t, i, pte & ~(<entry_t>_A))
                continue
            s = add_to_swap(c, f)
            if s == 0:
                rc = ERR_NOMEM
                break
            if pte & _D:
                c.flags[f] |= F_DIRTY
            eset(c, t, i, swp_entry(s))
            c.swap_count[s] += 1
            if c.rmap_enabled and rmap_remove(c, f, mk_slot(c, t, i)) != OK:
                rc = ERR_BUG
                break
            c.count[f] -= slot_refs(c, t)
            if c.count[f] == 1:
                swapcache_drop(c, s)
                freed[0] += 1
                if freed[0] >= n:
                    break
            elif log_unmap(c, mk_slot(c, t, i), pte) != OK:
                rc = ERR_NOMEM
                break
        c.st[ST_RECLAIM_SCAN_PTES] += scanned
        return rc
    walk_begin(c, &w, level, start, end)
    while walk_next(c, &w):
        x = eget(c, t, w.idx)
        if level == 2 and (x & _PS):
            rc = split_huge_pmd(c, t, w.idx)     # reclaim splits a huge mapping first
            if rc != OK:
                return rc
            x = eget(c, t, w.idx)
        if (x & _P) and not bad_pfn(c, entry_pfn(x)):
            rc = scan_range(c, level - 1, entry_pfn(x), w.lo, w.hi, n, freed)
            if rc != OK or freed[0] >= n:
                return rc
    return OK


cpdef reclaim_rmap(State c, uint32_t n):
    """Swap out up to n private anonymous frames chosen by a second-chance clock,
    testing references and unmapping through the rmap.  Returns frames freed."""
    cdef uint32_t freed = 0, f
    cdef uint64_t scanned = 0, limit = 2 * <uint64_t>c.hwm
    cdef pflags_t fl
    cdef int rc = OK
    if c.swap_nfree == 0:
        raise OutOfMemory("the swap area is full")
    with nogil:
        while freed < n and scanned < limit:
            f = c.clock_hand
            c.clock_hand += 1
            if c.clock_hand >= c.hwm:
                c.clock_hand = c.boot_frames
            scanned += 1
            fl = c.flags[f]
            if fl & F_HUGE:                  # split it first: its frames become pages
                rc = split_huge_page(c, f)
                if rc != OK:
                    break
                fl = c.flags[f]
            if (fl & (F_ANON | F_FREE | F_RESERVED)) != F_ANON:
                continue
            if not (fl & F_DIRECT) and c.link[f] == 0:
                continue                     # mapped by no PTE (swap cache only)
            if page_referenced(c, f):
                continue
            rc = swap_out_frame(c, f)
            if rc != OK:
                break
            freed += 1
    c.st[ST_RECLAIM_CLOCK_SCANNED] += scanned
    if rc != OK and freed == 0:
        raise OutOfMemory("no swap slot to be had")
    return freed


cpdef reclaim_scan(State c, uint32_t n, list mms, uint32_t start):
    """Linux 2.4 swap_out: walk the page tables of each mm (pgd, vmas) in turn from
    mms[start]; a young PTE loses A and is skipped, an old one is unmapped to a swap
    entry (try_to_swap_out); a frame is freed when only the swap cache holds it.
    Returns (frames freed, index of the mm to start from next time)."""
    cdef uint32_t freed = 0
    cdef Py_ssize_t nm = len(mms), turn, m, v
    cdef mm_t mm
    cdef int rc = OK
    if c.swap_nfree == 0:
        raise OutOfMemory("the swap area is full")
    if nm == 0:
        return 0, 0
    c.nundo = 0
    m = start % nm
    for turn in range(2 * nm):
        pgd, vmas = mms[m]
        mm = make_mm(pgd, vmas)
        with nogil:
            for v in range(mm.nv):
                if freed >= n or rc != OK:
                    break
                if mm.vmas[v].flags & VM_SHARED:
                    continue
                rc = scan_range(c, c.levels, mm.pgd, mm.vmas[v].start,
                                     mm.vmas[v].end, n, &freed)
        m = (m + 1) % nm
        if freed >= n or rc != OK:
            break
    if rc == ERR_NOMEM and freed == 0:
        undo_scan(c)                 # every slot taken goes back: nothing was done
        raise OutOfMemory("no swap slot to be had")
    if rc == ERR_BUG:
        raise_rc(rc, "")
    return freed, m


cdef int log_unmap(State c, slot_t slot, entry_t pte) noexcept nogil:
    """Log a PTE the scan unmapped without freeing its frame (for undo_scan)."""
    if c.nundo == c.undo_cap:
        with gil:
            arr = np.zeros(4 * c.undo_cap, dtype=np.uint64)
            arr[:2 * c.undo_cap] = c.undo_arr
            c.undo_arr = arr
            c.undo = <uint64_t*>array_data(arr)
            c.undo_cap *= 2
    c.undo[2 * c.nundo] = slot
    c.undo[2 * c.nundo + 1] = pte
    c.nundo += 1
    return OK


cdef void undo_scan(State c) except *:
    """Give back what a reclaim_scan call that freed nothing did: each logged PTE maps
    its frame again (the swap cache still holds it: nothing was freed), and the swap
    entries it held go, with the slots they were the last to name."""
    cdef uint64_t k = c.nundo
    cdef slot_t slot
    cdef entry_t pte
    cdef pfn_t t, f
    cdef uint32_t i, s
    if c.rmap_enabled and reserve_nodes(c, k) != OK:
        return                       # cannot map them again: they stay in swap
    while k > 0:
        k -= 1
        slot = c.undo[2 * k]
        pte = c.undo[2 * k + 1]
        t = <pfn_t>(slot >> c.slot_shift)
        i = <uint32_t>(slot & ((1 << c.slot_shift) - 1))
        s = swp_offset(eget(c, t, i))
        f = entry_pfn(pte)
        eset(c, t, i, pte)
        c.count[f] += 1
        if c.rmap_enabled:
            rmap_add(c, f, slot)
        swap_put(c, s)
    c.nundo = 0
