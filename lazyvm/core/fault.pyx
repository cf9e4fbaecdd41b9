# cython: language_level=3
"""lazyvm.core.fault (mm/memory.c handle_mm_fault; the seed's privatize): the MMU, the
fault handler and the unsharing of a shared page table.

  fault: handle_mm_fault walks from the pgd: a missing table is allocated; an entry
  with RW clear over a table with use count > 1 -> privatize (the seed's "privatize the
  page table", one level at a time, top down); use count 1 -> make the entry writable;
  then at the leaf do_no_page / do_swap_page / do_wp_page.  At the pmd level (thp.pxd)
  a write to an empty entry in an eligible range maps a huge page (thp.huge_fault), and
  a write to a read-only huge mapping goes to thp.huge_wp."""

from libc.string cimport memset, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef int handle_mm_fault(State c, const mm_t* mm, Py_ssize_t vi, uint64_t addr,
                         bint write) noexcept nogil:
    """handle_mm_fault for an access the VMA mm.vmas[vi] allows (the caller checked).
    Walks down from the pgd making every level present and private to this mm, then
    handles the PTE; loops, as the MMU retries the access, until it would succeed.
    An entry the MMU would refuse for ever (US clear, a frame outside memory) is
    ERR_BUG: every pass of the loop makes progress or returns."""
    cdef uint64_t vmf = mm.vmas[vi].flags, idx, span
    cdef int level
    cdef pfn_t t, nt, f
    cdef uint32_t i, ptx = index_of(c, addr, 1)
    cdef entry_t e, pte, npte
    cdef int rc
    c.st[ST_FAULTS] += 1
    if c.rmap_enabled and reserve_nodes(c, 1) != OK:   # the PTE this fault maps
        return ERR_NOMEM
    # pgd -> ... -> leaf table: present and private to this mm at every level
    t = mm.pgd
    level = c.levels
    if not c.wide:
        # i386: a present, writable PDE (the common case) needs no more walking
        e = (<pte32_t*>table_ptr(c, mm.pgd))[addr >> 22]
        if (e & (_P | _RW | _US)) == (_P | _RW | _US) and not bad_pfn(c, entry_pfn(e)):
            t = entry_pfn(e)
            level = 1
    while level > 1:
        i = index_of(c, addr, level)
        e = eget(c, t, i)
        if not (e & _P):
            if level == 2 and write and c.thp != THP_NEVER:
                rc = huge_fault_if_eligible(c, mm, vi, t, i, addr)
                if rc != 1:                  # mapped (OK), or out of memory
                    return rc
            nt = alloc_table(c, level - 1, True)
            if nt == 0:
                return ERR_NOMEM
            eset(c, t, i, mk_entry(nt, table_entry(c, level)))
            continue
        if bad_pfn(c, entry_pfn(e)) or not (e & _US or (level == c.levels and not c.top_rw)):
            return ERR_BUG
        # the common case (RW set, no PS) in one test; a pae PDPT entry has no RW bit
        if (e & (_RW | _PS)) != _RW and not (level == c.levels and not c.top_rw):
            if e & _PS:                      # a huge mapping (level 2)
                rc = huge_pmd_fault(c, t, i, e, write)
                if rc != 1:                  # done (OK), or an error; 1: retry
                    return rc
                continue
            span = (<uint64_t>1) << c.shift[level]
            rc = unshare_entry(c, t, i, level - 1, addr & ~(span - 1), mm)
            if rc != OK:
                return rc
            continue
        t = entry_pfn(e)
        level -= 1
    while True:                  # the leaf: retried, as the MMU retries the access
        pte = eget(c, t, ptx)
        if (pte & _P) and (not (pte & _US) or bad_pfn(c, entry_pfn(pte))):
            return ERR_BUG
        if (pte & (_P | _US)) == (_P | _US):
            if not write:
                eset(c, t, ptx, pte | _A)
                return OK
            if pte & _RW:
                eset(c, t, ptx, pte | _A | _D)
                return OK
        if pte == 0:
            # do_no_page
            if vmf & VM_SHARED:
                idx = mm.vmas[vi].shm_base + ((addr - mm.vmas[vi].start) >> PAGE_SHIFT)
                f = c.shm[idx]
                if f == 0:
                    f = alloc_data(c, F_SHMEM, 1)
                    if f == 0:
                        return ERR_NOMEM
                    c.count[f] = 1        # the object's reference
                    c.shm[idx] = f
                c.count[f] += 1
                npte = mk_entry(f, vm_page_prot(<uint32_t>vmf))
                if write:
                    npte |= _D
                c.st[ST_SHMEM_FAULTS] += 1
            elif not write:
                eset(c, t, ptx, mk_entry(c.zero_pfn, vm_page_prot(<uint32_t>vmf)))
                c.st[ST_ZERO_PAGE_MAPS] += 1
                return OK                    # young (A) already: the access succeeds
            else:
                f = alloc_data(c, F_ANON, 1)
                if f == 0:
                    return ERR_NOMEM
                c.count[f] = 1
                npte = mk_entry(f, vm_page_prot(<uint32_t>vmf) | _RW | _D)
                c.st[ST_DEMAND_ZERO] += 1
            eset(c, t, ptx, npte)
            if c.rmap_enabled:
                rmap_add(c, f, mk_slot(c, t, ptx))
            return OK                        # A, and RW|D for a write: it succeeds
        if not pte_present(pte):
            if bad_swap(c, pte):
                return ERR_BUG
            rc = do_swap_page(c, t, ptx, pte, <uint32_t>vmf, write)
        elif (pte & _P) and not bad_pfn(c, entry_pfn(pte)):
            rc = do_wp_page(c, t, ptx, pte)
        else:
            return ERR_BUG                   # PROTNONE under an accessible VMA
        if rc != OK:
            return rc


cdef int do_swap_page(State c, pfn_t t, uint32_t i, entry_t pte, uint32_t vmf,
                      bint write) noexcept nogil:
    """Swap in through the swap cache; writable only for a write that finds the
    page exclusive."""
    cdef uint32_t s = swp_offset(pte)
    cdef uint32_t f = c.swap_cache[s]
    cdef entry_t npte
    if f == 0:
        f = alloc_data(c, F_ANON | F_SWAPCACHE, 0)
        if f == 0:
            return ERR_NOMEM
        if c.contents:
            memcpy(c.mem8 + (<size_t>f << PAGE_SHIFT),
                   c.swap_data + (<size_t>s << PAGE_SHIFT), PAGE_SIZE)
        c.count[f] = 1                    # the swap cache's reference
        c.index[f] = s
        c.swap_cache[s] = f
    c.count[f] += 1
    if c.rmap_enabled:
        rmap_add(c, f, mk_slot(c, t, i))
    npte = mk_entry(f, vm_page_prot(vmf))
    eset(c, t, i, npte)
    swap_put(c, s)
    if write and c.count[f] == 1:
        eset(c, t, i, npte | _RW | _D)
    c.st[ST_SWAP_INS] += 1
    return OK


cdef int do_wp_page(State c, pfn_t t, uint32_t i, entry_t pte) noexcept nogil:
    """Copy-on-write: reuse the frame in place if this slot is its only reference,
    else copy it (clear, for the ZERO_PAGE) into a new frame.  A frame of a huge page
    counts on its head."""
    cdef uint32_t f = entry_pfn(pte)
    cdef uint32_t nf, h = page_head(c, f)
    cdef bint zero = f == c.zero_pfn
    if not zero and ((c.flags[f] & F_SHMEM) or c.count[h] == 1):
        eset(c, t, i, pte | _RW | _A | _D)
        if not (c.flags[f] & F_SHMEM):
            c.st[ST_COW_REUSES] += 1
        return OK
    nf = alloc_data(c, F_ANON, zero)
    if nf == 0:
        return ERR_NOMEM
    c.count[nf] = 1
    if not zero:
        if c.contents:
            memcpy(c.mem8 + (<size_t>nf << PAGE_SHIFT),
                   c.mem8 + (<size_t>f << PAGE_SHIFT), PAGE_SIZE)
        if c.rmap_enabled and rmap_remove(c, f, mk_slot(c, t, i)) != OK:
            return ERR_BUG
        put_page(c, h)
    if c.rmap_enabled:
        rmap_add(c, nf, mk_slot(c, t, i))
    eset(c, t, i, mk_entry(nf, (pte & FLAGS_MASK) | _RW | _A | _D))
    c.st[ST_COW_COPIES] += 1
    return OK


cdef int privatize(State c, pfn_t ptab, uint32_t pi, int level, uint64_t base,
                   const mm_t* mm) noexcept nogil:
    """Give this mm its own copy of the shared table of `level` that entry pi of its
    (private) table ptab points at, before it changes anything under it.

    Leaf: the seed's privatize (privatize_pte).  Upper level: copy the entries; each
    table they point at takes one use, and the entries lose RW in both copies, so
    the level below becomes shared (a huge mapping in a pmd table is copied: one more
    reference, a deposited table and a slot for the copy).  The old table loses one
    use; the entry points at the copy, writable.  base: the address the table's span
    starts at."""
    cdef entry_t pe = eget(c, ptab, pi)
    cdef pfn_t t = entry_pfn(pe), nt
    cdef int rc
    cdef uint32_t nh = 0
    if bad_pfn(c, t):
        return ERR_BUG
    if level == 1 and c.rmap_enabled \
            and reserve_nodes(c, mapped_entries(c, t, 0, c.nent[1]) + 1) != OK:
        return ERR_NOMEM
    if level == 2 and thp_on(c):
        nh = huge_in(c, t)
        if nh and c.rmap_enabled and reserve_nodes(c, nh) != OK:
            return ERR_NOMEM
        if nh:
            with gil:
                rc = reserve_tables(c, nh + 1)
            if rc != OK:
                return ERR_NOMEM
    nt = alloc_table(c, level, True)
    if nt == 0:
        return ERR_NOMEM
    if level == 1:
        if c.flags[t] & F_THPMAP:
            c.flags[nt] |= F_THPMAP
        if c.wide:
            rc = privatize_pte(c, <pte64_t*>table_ptr(c, t), <pte64_t*>table_ptr(c, nt),
                               nt, base, mm, not c.eager)
        else:
            rc = privatize_pte(c, <pte32_t*>table_ptr(c, t), <pte32_t*>table_ptr(c, nt),
                               nt, base, mm, not c.eager)
    else:                       # above the leaf (pae, x86_64): the tables below
        rc = share_table(c, t, nt, 0, c.nent[level])      # become shared
        if rc == OK and nh:
            rc = huge_entries_shared(c, t, nt, 0, c.nent[level], False)
        if nh:
            release_tables(c)
    if rc != OK:
        free_table(c, nt)
        return rc
    c.count[t] -= 1
    eset(c, ptab, pi, mk_entry(nt, table_entry(c, level + 1)))
    c.st[ST_UNSHARES] += 1
    c.st[ST_UNSHARES_L + level - 1] += 1
    return OK


cdef int unshare_entry(State c, pfn_t tbl, uint32_t i, int level, uint64_t base,
                       const mm_t* mm) noexcept nogil:
    """Entry i of this mm's table tbl (of level+1) has RW clear over a table of
    `level`: privatize it if others share it, else (the last sharer) make the entry
    writable with no copy."""
    cdef entry_t e = eget(c, tbl, i)
    if c.count[entry_pfn(e)] > 1:
        return privatize(c, tbl, i, level, base, mm)
    eset(c, tbl, i, e | _RW)
    c.st[ST_UNSHARE_REUSES] += 1
    return OK


cdef int privatize_pte(State c, leaf_t* src, leaf_t* dst, pfn_t nt, uint64_t base,
                       const mm_t* mm, bint take) noexcept nogil:
    """The seed's privatize of a leaf table src into the fresh, zeroed table dst (frame
    nt), whose span starts at base.  Only the ranges this mm's VMAs cover are copied (no
    entry lies outside them: every change that removes one privatizes first), by
    copy_one_pte, the copy fork's per-entry code: each present entry takes a frame
    reference if take (lazy accounting; eager took it at the fork; a frame of a huge
    page: on its head) and a chain slot in dst ("extend the pte_chains"); private
    entries lose RW in both tables, since two tables now reach the frame; swap entries
    take a swap reference.  Every entry is checked first: ERR_BUG changes nothing."""
    cdef uint64_t span = (<uint64_t>1) << c.shift[2], s, e
    cdef uint64_t lim = c.nframes - 1
    cdef count_t* count = c.count
    cdef uint32_t lo, hi, i
    cdef bint rm = c.rmap_enabled, thp = (c.flags[nt] & F_THPMAP) != 0
    cdef Py_ssize_t v
    cdef int pass_
    cdef uint32_t empty = 0
    cdef int64_t copied = 0
    for pass_ in range(2):
        for v in range(mm.nv):
            s = mm.vmas[v].start if mm.vmas[v].start > base else base
            e = mm.vmas[v].end if mm.vmas[v].end < base + span else base + span
            if e <= s:
                continue
            lo = <uint32_t>((s - base) >> PAGE_SHIFT)
            hi = <uint32_t>((e - base) >> PAGE_SHIFT)
            for i in range(lo, hi):
                if pass_ == 0:
                    if bad_leaf(c, src[i], lim):
                        return ERR_BUG
                else:
                    copy_one_pte(c, src, dst, i, _RW, 0, rm, True, nt, lim, count, &empty,
                                 thp, take)
            copied += pass_ * (hi - lo)
    c.st[ST_PTES_COPIED] += copied - empty
    return OK


cdef int huge_fault_if_eligible(State c, const mm_t* mm, Py_ssize_t vi, pfn_t t,
                                uint32_t i, uint64_t addr) noexcept nogil:
    """A write at addr finds entry i of pmd table t empty: a huge page if the range is
    eligible (thp.huge_fault: OK, or ERR_NOMEM), else 1 (map 4 KiB pages).  Out of line:
    handle_mm_fault's 4 KiB path compiles as if THP were not there."""
    if not thp_eligible(c, &mm.vmas[vi], addr):
        return 1
    return huge_fault(c, t, i, mm.vmas[vi].flags)


cdef int huge_pmd_fault(State c, pfn_t t, uint32_t i, entry_t e, bint write) noexcept nogil:
    """A fault through huge entry e (entry i of pmd table t): OK if the access is
    allowed as it is; else a write to a read-only one (thp.huge_wp), then 1 to retry."""
    cdef int rc
    if not write or (e & _RW):
        return OK
    rc = huge_wp(c, t, i)
    return 1 if rc == OK else rc
