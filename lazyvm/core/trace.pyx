# cython: language_level=3
"""lazyvm.core.trace: the engine of Machine.replay, touch and read/write: runs of
accesses, each found in its VMA, checked against its protection, and faulted in
(handle_mm_fault) where the MMU refuses; and the byte copies of read and write."""

from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t


cdef inline int vma_allows(State c, const mm_t* mm, int64_t addr, bint write,
                           Py_ssize_t* vi) noexcept nogil:
    """-1 and the VMA's index in vi if an access at addr is allowed; 0 if no VMA
    holds addr, 1 if its protection forbids the access."""
    cdef Py_ssize_t a = 0, b = mm.nv, m
    if addr < 0:
        return 0
    while a < b:
        m = (a + b) >> 1
        if mm.vmas[m].end <= <uint64_t>addr:
            a = m + 1
        else:
            b = m
    if a >= mm.nv or mm.vmas[a].start > <uint64_t>addr:
        return 0
    if not (mm.vmas[a].flags & (VM_WRITE if write else (VM_READ | VM_WRITE))):
        return 1
    vi[0] = a
    return -1


cpdef fault_range(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                uint64_t start, uint64_t end, bint write):
    """Access every page of [start, end) inside VMA vi (bulk faulting: touch)."""
    cdef mm_t mm = make_mm(pgd, vmas)
    cdef uint64_t a
    cdef int rc = OK
    with nogil:
        a = start
        while a < end:
            if mmu(c, pgd, a, write) == NULL:
                rc = handle_mm_fault(c, &mm, vi, a, write)
                if rc != OK:
                    break
            a += PAGE_SIZE
    raise_rc(rc, "no free frame (or pte_chain node) for a page fault")


cpdef fault_pages(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, const int64_t[::1] addrs,
                writes, bint check_first):
    """Access the page of each address of addrs in order (touch_pages, and the trace
    engine): writes is a bool for all, or a uint8 array with a flag each.  Each
    address's VMA is found by binary search over vmas and its protection checked.

    Returns -1 when all were done, else the index of the first address outside every
    VMA or against its protection, as (index, why) with why 0 unmapped, 1 forbidden:
    with check_first nothing was accessed, else every access before it was."""
    cdef mm_t mm = make_mm(pgd, vmas)
    cdef Py_ssize_t i, n = addrs.shape[0], vi, bad = -1
    cdef const uint8_t[::1] wv
    cdef bint w = False, per = not isinstance(writes, bool)
    cdef int rc = OK, why = 0
    cdef uint64_t addr
    if per:
        wv = writes
    else:
        w = writes
    with nogil:
        if check_first:
            for i in range(n):
                if per:
                    w = wv[i]
                why = vma_allows(c, &mm, addrs[i], w, &vi)
                if why >= 0:
                    bad = i
                    break
        if bad < 0:
            for i in range(n):
                if per:
                    w = wv[i]
                addr = <uint64_t>addrs[i] & ~(<uint64_t>(PAGE_SIZE - 1))
                if mmu(c, pgd, addr, w) != NULL:
                    continue
                why = vma_allows(c, &mm, addrs[i], w, &vi)
                if why >= 0:
                    bad = i
                    break
                rc = handle_mm_fault(c, &mm, vi, addr, w)
                if rc != OK:
                    break
    raise_rc(rc, "no free frame (or pte_chain node) for a page fault")
    if bad < 0:
        return -1
    return (bad, why)


cpdef access(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t addr,
           Py_ssize_t n, bint write, data=None):
    """The single-call fast path of read and write for an access of n > 0 bytes
    that stays inside one page: find the VMA (binary search over the core's array),
    check its protection, fault as needed, copy.  Returns None if the access is
    outside every VMA, crosses a VMA's end, or is against its protection (the caller
    then takes the full path, which raises with the whole story); else the bytes
    read, or True for a write."""
    cdef mm_t mm = make_mm(pgd, vmas)
    cdef Py_ssize_t vi
    cdef uint8_t* p
    cdef const uint8_t[::1] src
    cdef int rc
    if vma_allows(c, &mm, <int64_t>addr, write, &vi) >= 0 or addr + n > mm.vmas[vi].end:
        return None
    p = mmu(c, pgd, addr, write)
    if p == NULL:
        rc = handle_mm_fault(c, &mm, vi, addr, write)
        if rc != OK:
            raise_rc(rc, "no free frame (or pte_chain node) for a page fault")
        p = mmu(c, pgd, addr, write)
        if p == NULL:                # handled, yet refused: a corrupted entry
            raise_rc(ERR_BUG, "")
    if write:
        src = data
        memcpy(p, &src[0], n)
        return True
    return (<char*>p)[:n]


cpdef read_into(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
              uint64_t addr, uint8_t[::1] out, Py_ssize_t off, Py_ssize_t n):
    """Read n bytes at addr (inside VMA vi) into out[off:off+n], faulting as needed."""
    copy_bytes(c, pgd, vmas, vi, addr, &out[0] + off if out.shape[0] else NULL, n, False)


cpdef write_from(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
               uint64_t addr, const uint8_t[::1] src, Py_ssize_t off, Py_ssize_t n):
    """Write src[off:off+n] at addr (inside VMA vi); the caller faulted the pages in
    for write first, so a failure leaves every byte as it was."""
    copy_bytes(c, pgd, vmas, vi, addr, <uint8_t*>&src[0] + off if src.shape[0] else NULL,
               n, True)


cdef copy_bytes(State c, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                uint64_t addr, uint8_t* buf, Py_ssize_t n, bint write):
    """Copy n bytes between buf and addr (inside VMA vi), faulting each page in: a
    page the MMU still refuses after its fault is handled is a corrupted entry."""
    cdef mm_t mm = make_mm(pgd, vmas)
    cdef Py_ssize_t done = 0, chunk
    cdef uint64_t a = addr
    cdef uint8_t* p
    cdef int rc = OK
    with nogil:
        while done < n:
            p = mmu(c, pgd, a, write)
            if p == NULL:
                rc = handle_mm_fault(c, &mm, vi, a, write)
                if rc != OK:
                    break
                p = mmu(c, pgd, a, write)
                if p == NULL:        # handled, yet refused: a corrupted entry
                    rc = ERR_BUG
                    break
            chunk = PAGE_SIZE - (a & (PAGE_SIZE - 1))
            if chunk > n - done:
                chunk = n - done
            if write:
                memcpy(p, buf + done, chunk)
            else:
                memcpy(buf + done, p, chunk)
            done += chunk
            a += chunk
    raise_rc(rc, "no free frame (or pte_chain node) for a page fault")
