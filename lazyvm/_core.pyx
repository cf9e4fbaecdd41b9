# cython: language_level=3
"""lazyvm._core: the compiled core of the simulated i386 virtual-memory system.

Data flow of the two paths that matter (names are the kernel's):

  fork, copy mode:  Core.fork_copy
      allocate the child pgd and one table for every parent table a VMA reaches,
      reserve chain nodes (rmap), then with the GIL released, per VMA per table:
      copy_pte_range  (write-protect COW PTEs in parent and child, get_page, rmap_add)
  fork, share mode: Core.fork_share
      allocate the child pgd; per present user PDE: use count + 1, clear RW in the
      parent's PDE and copy it to the child.  No PTE, frame count or chain is touched.

  fault:  Core.fault_range / fault_pages / write / read -> handle_mm_fault
      missing table -> alloc_table; read-only PDE on a table with use count > 1 ->
      privatize (the seed's "privatize the page table"); read-only PDE, use count 1 ->
      make the PDE writable; then do_no_page / do_swap_page / do_wp_page on the PTE.

  zap:  Core.zap (munmap), Core.exit_mm (exit, exec)
      shared table no longer reached by any VMA of this mm -> drop one use (fast path);
      shared table still reached -> privatize, then zap_pte_range.

The Python layer (lazyvm/machine.py) validates every argument and owns the VMAs; this
module trusts its inputs.  A VMA list crosses the boundary as a C-contiguous uint32 array
of rows (start, end, vm_flags, shm_base): shm_base indexes the global shared-memory frame
array at the VMA's first page.  Bulk loops run without the GIL and return an error code;
the exception is raised after the GIL is retaken.  Every path that can run out of memory
allocates what it needs before it changes anything, so OutOfMemory leaves no half-done
fork and no leaked frame.
"""

import mmap

import numpy as np
cimport numpy as cnp
from libc.string cimport memset, memcpy, memcmp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.errors import OutOfMemory, InvariantError

cnp.import_array()

# Counters: the st[] array of Core.
cdef enum:
    ST_FORKS = 0
    ST_FORKS_COPY
    ST_FORKS_SHARE
    ST_FAULTS
    ST_DEMAND_ZERO
    ST_ZERO_PAGE_MAPS
    ST_COW_COPIES
    ST_COW_REUSES
    ST_SHMEM_FAULTS
    ST_SWAP_INS
    ST_SWAP_OUTS
    ST_UNSHARES
    ST_UNSHARE_REUSES
    ST_TABLES_DROPPED
    ST_PTES_COPIED
    ST_CHAIN_ALLOCS
    ST_CLOCK_SCANNED
    ST_RMAP_SLOTS
    ST_SCAN_PTES
    ST_PAGE_TABLES
    ST_PGDS
    ST_NODES
    ST_SLOTS
    ST_DIRECT
    ST_FRAMES_PEAK
    ST_TABLES_PEAK
    ST_NODES_PEAK
    ST_N

_COUNTER_NAMES = (
    ("forks", ST_FORKS), ("forks_copy", ST_FORKS_COPY), ("forks_share", ST_FORKS_SHARE),
    ("faults", ST_FAULTS), ("demand_zero", ST_DEMAND_ZERO),
    ("zero_page_maps", ST_ZERO_PAGE_MAPS), ("cow_copies", ST_COW_COPIES),
    ("cow_reuses", ST_COW_REUSES), ("shmem_faults", ST_SHMEM_FAULTS),
    ("swap_ins", ST_SWAP_INS), ("swap_outs", ST_SWAP_OUTS), ("unshares", ST_UNSHARES),
    ("unshare_reuses", ST_UNSHARE_REUSES), ("tables_dropped", ST_TABLES_DROPPED),
    ("ptes_copied", ST_PTES_COPIED), ("chain_nodes_allocated", ST_CHAIN_ALLOCS),
    ("reclaim_clock_scanned", ST_CLOCK_SCANNED), ("reclaim_rmap_slots", ST_RMAP_SLOTS),
    ("reclaim_scan_ptes", ST_SCAN_PTES), ("page_tables", ST_PAGE_TABLES),
    ("pgds", ST_PGDS), ("pte_chain_nodes", ST_NODES), ("pte_chain_slots", ST_SLOTS),
    ("rmap_direct", ST_DIRECT), ("frames_peak", ST_FRAMES_PEAK),
    ("page_tables_peak", ST_TABLES_PEAK), ("pte_chain_nodes_peak", ST_NODES_PEAK),
)

# Chain nodes kept free before a fault: a privatize adds at most 1024 slots, the fault
# itself one more.
cdef enum:
    MAX_NODES = 1 << 26          # the pool's largest virtual reservation (4 GiB)


def host_zeros(size_t nbytes):
    """A zeroed numpy uint8 array over private anonymous memory that the host backs a
    4 KiB page at a time, as frames are touched.  (numpy asks for transparent huge pages
    on large arrays: then writing one page table would zero-fill 2 MiB.)"""
    buf = mmap.mmap(-1, max(nbytes, PAGE_SIZE), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:
            pass
    return np.frombuffer(buf, dtype=np.uint8)[:nbytes]


cdef inline void* array_data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline const uint32_t* vma_ptr(const uint32_t[:, ::1] vmas) noexcept:
    if vmas.shape[0] == 0:
        return NULL
    return &vmas[0, 0]


cdef inline bint span_covered(const uint32_t* vmas, Py_ssize_t nv, uint32_t pdx) noexcept nogil:
    """True if some VMA reaches into the 4 MiB span of page-directory entry pdx."""
    cdef uint64_t lo = (<uint64_t>pdx) << PGDIR_SHIFT
    cdef uint64_t hi = lo + (1 << PGDIR_SHIFT)
    cdef Py_ssize_t v
    for v in range(nv):
        if vmas[4 * v] < hi and vmas[4 * v + 1] > lo:
            return True
    return False


cdef inline void span_clip(uint32_t vs, uint32_t ve, uint32_t pdx,
                           uint32_t* lo, uint32_t* hi) noexcept nogil:
    """The PTE index range [lo, hi) of [vs, ve) inside table pdx (empty if lo >= hi)."""
    cdef uint64_t base = (<uint64_t>pdx) << PGDIR_SHIFT
    cdef uint64_t s = vs if vs > base else base
    cdef uint64_t e = ve if ve < base + (1 << PGDIR_SHIFT) else base + (1 << PGDIR_SHIFT)
    if e <= s:
        lo[0] = 0
        hi[0] = 0
    else:
        lo[0] = <uint32_t>((s - base) >> PAGE_SHIFT)
        hi[0] = <uint32_t>((e - base) >> PAGE_SHIFT)


cdef class Core:
    """Physical memory, struct page, the frame allocator, the rmap pool and swap.

    Core(nframes, rmap, nswap): nframes frames of 4 KiB (<= 2**20), rmap on or off,
    nswap swap slots (0 = no swap; slot 0 is the header and never used).
    """

    def __cinit__(self, uint32_t nframes, bint rmap, uint32_t nswap):
        cdef uint32_t k, i, t, pfn
        cdef pte_t* tbl
        self.nframes = nframes
        self.physical = host_zeros(<size_t>nframes * PAGE_SIZE)
        self.mem8 = <uint8_t*>array_data(self.physical)
        self.mem32 = <pte_t*>self.mem8
        self.count_arr = np.zeros(nframes, dtype=np.int32)
        self.link_arr = np.zeros(nframes, dtype=np.uint32)
        self.index_arr = np.zeros(nframes, dtype=np.uint32)
        self.flags_arr = np.zeros(nframes, dtype=np.uint16)
        self.count = <count_t*>array_data(self.count_arr)
        self.link = <uint32_t*>array_data(self.link_arr)
        self.index = <uint32_t*>array_data(self.index_arr)
        self.flags = <pflags_t*>array_data(self.flags_arr)
        self.nfree = nframes
        self.free_head = 0
        self.fail_countdown = -1
        memset(self.st, 0, sizeof(self.st))

        # Boot.  Frame 0 is the ZERO_PAGE (so 0 can mean "no frame" everywhere), then the
        # boot page directory and the kernel's 256 page tables, which direct-map physical
        # memory at PAGE_OFFSET as far as it reaches.
        self.zero_pfn = 0
        self.flags[0] = F_RESERVED
        self.hwm = 1
        self.nfree -= 1
        self.swapper_pgd = self.alloc_frame(F_RESERVED, 0)
        for k in range(PTRS_PER_PGD - USER_PTRS_PER_PGD):
            t = self.alloc_frame(F_RESERVED, 0)
            tbl = self.mem32 + (<size_t>t << 10)
            for i in range(PTRS_PER_PTE):
                pfn = k * PTRS_PER_PTE + i
                if pfn < nframes:
                    tbl[i] = (pfn << PAGE_SHIFT) | PTE_KERNEL
            self.mem32[(<size_t>self.swapper_pgd << 10) + USER_PTRS_PER_PGD + k] = \
                (t << PAGE_SHIFT) | PDE_KERNEL
        self.boot_frames = self.hwm
        self.st[ST_FRAMES_PEAK] = self.hwm

        # rmap pool: node 0 is the null node.
        self.rmap_enabled = rmap
        self.node_limit = <uint32_t>min(MAX_NODES, max(1 << 16, 16 * <uint64_t>nframes))
        while True:
            try:
                pool = host_zeros(<size_t>self.node_limit * NODE_WORDS * 4)
                break
            except (OSError, MemoryError):
                if self.node_limit <= 4096:
                    raise
                self.node_limit //= 2
        self.nodes_arr = pool.view(np.uint32).reshape(self.node_limit, NODE_WORDS)
        self.nodes = <uint32_t*>array_data(self.nodes_arr)
        self.node_cap = 1024
        self.node_hwm = 1
        self.node_free = 0
        self.node_nfree = self.node_cap - 1

        # swap
        self.nswap = nswap
        self.swap_arr = host_zeros(<size_t>max(nswap, 1) * PAGE_SIZE)
        self.swap_count_arr = np.full(max(nswap, 1), -1, dtype=np.int32)
        self.swap_cache_arr = np.zeros(max(nswap, 1), dtype=np.uint32)
        self.swap_data = <uint8_t*>array_data(self.swap_arr)
        self.swap_count = <int32_t*>array_data(self.swap_count_arr)
        self.swap_cache = <uint32_t*>array_data(self.swap_cache_arr)
        self.swap_hwm = 1
        self.swap_free = 0
        self.swap_nfree = nswap - 1 if nswap > 0 else 0
        self.clock_hand = self.boot_frames

        self.shm_cap = 1024
        self.shm_arr = np.zeros(self.shm_cap, dtype=np.uint32)
        self.shm = <uint32_t*>array_data(self.shm_arr)
        self.shm_hwm = 0

    # ================================================================ frame allocator

    cdef bint injected_failure(self) noexcept nogil:
        """Fault injection (Machine.fail_after): True once the allocations allowed are
        used up.  Every allocation point (frame, pool growth, swap slot) asks first."""
        if self.fail_countdown < 0:
            return False
        if self.fail_countdown == 0:
            return True
        self.fail_countdown -= 1
        return False

    cdef uint32_t alloc_frame(self, pflags_t fl, bint zero) noexcept nogil:
        """Take a free frame with flags fl (zeroed if zero and it was used before).
        Returns 0 when memory is exhausted (or fault injection says so)."""
        cdef uint32_t f, used
        if self.injected_failure():
            return 0
        if self.free_head != 0:
            f = self.free_head
            self.free_head = self.link[f]
            if zero:
                memset(self.mem8 + (<size_t>f << PAGE_SHIFT), 0, PAGE_SIZE)
        elif self.hwm < self.nframes:
            f = self.hwm           # never used: still the zeros numpy gave us
            self.hwm += 1
        else:
            return 0
        self.nfree -= 1
        self.flags[f] = fl
        self.count[f] = 0
        self.link[f] = 0
        self.index[f] = 0
        used = self.nframes - self.nfree
        if used > self.st[ST_FRAMES_PEAK]:
            self.st[ST_FRAMES_PEAK] = used
        return f

    cdef void free_frame(self, uint32_t f) noexcept nogil:
        self.flags[f] = F_FREE
        self.count[f] = 0
        self.link[f] = self.free_head
        self.free_head = f
        self.nfree += 1

    cdef void put_page(self, uint32_t f) noexcept nogil:
        """Drop one reference to data frame f; free it with its last reference."""
        self.count[f] -= 1
        if self.count[f] == 0:
            self.free_frame(f)

    cdef uint32_t alloc_table(self, bint zero=True) noexcept nogil:
        """A user page table with use count 1 (zeroed unless the caller will write every
        entry), or 0 when out of memory."""
        cdef uint32_t t = self.alloc_frame(F_PTABLE, zero)
        if t != 0:
            self.count[t] = 1
            self.st[ST_PAGE_TABLES] += 1
            if self.st[ST_PAGE_TABLES] > self.st[ST_TABLES_PEAK]:
                self.st[ST_TABLES_PEAK] = self.st[ST_PAGE_TABLES]
        return t

    cdef void free_table(self, uint32_t t) noexcept nogil:
        self.st[ST_PAGE_TABLES] -= 1
        self.free_frame(t)

    # ================================================================ rmap: pte_chains
    #
    # As in 2.6.0 mm/rmap.c:
    #  - one mapping is kept in struct page itself (F_DIRECT, link = the slot);
    #  - more live in a list of nodes whose head is link; only the head has free slots;
    #    the used slots of the head are [idx, NRPTE), every other node is full;
    #  - page_add_rmap: direct -> a node with the old slot at NRPTE-1 and the new one at
    #    NRPTE-2; head full -> a new head with the slot at NRPTE-1; else the slot before idx;
    #  - page_remove_rmap: the head's first used slot moves into the hole, the head is
    #    freed when it empties; removal never collapses a chain back to direct
    #    (page_referenced does, when one slot is left).
    # Nodes come from a pool that grows by doubling; every path reserves the nodes it may
    # need before it changes anything, so node_alloc itself cannot fail.

    cdef int reserve_nodes(self, uint32_t n) noexcept nogil:
        if self.node_nfree >= n:
            return OK
        with gil:
            return self.grow_nodes(n)

    cdef int grow_nodes(self, uint32_t n) noexcept:
        """Double the pool until n nodes are free: an allocation point (fault injection).

        The pool is one numpy array over a virtual reservation of node_limit nodes that
        the host backs only where nodes are used, so growing copies nothing: a fork
        may reserve its worst case, which in steady state it never touches."""
        cdef uint64_t cap = self.node_cap
        if <uint64_t>self.node_limit - self.node_cap + self.node_nfree < n:
            return ERR_NOMEM                     # more than the reservation holds
        if self.injected_failure():
            return ERR_NOMEM
        while cap - self.node_cap + self.node_nfree < n:
            cap = min(cap * 2, <uint64_t>self.node_limit)
        self.node_nfree += <uint32_t>(cap - self.node_cap)
        self.node_cap = <uint32_t>cap
        return OK

    cdef uint32_t mapped_entries(self, uint32_t t, uint32_t lo, uint32_t hi) noexcept nogil:
        """Entries of table t in [lo, hi) that map a frame other than the ZERO_PAGE: the
        most chain nodes copying them can take (each page_add_rmap makes at most one)."""
        cdef pte_t* tbl = self.mem32 + (<size_t>t << 10)
        cdef uint32_t i, n = 0
        for i in range(lo, hi):
            if pte_present(tbl[i]) and (tbl[i] >> PAGE_SHIFT) != self.zero_pfn:
                n += 1
        return n

    cdef int reserve_table_nodes(self, uint32_t t, uint32_t extra) noexcept nogil:
        """Reserve the nodes privatizing table t may take, plus extra: a whole table's
        worth when that is free already, else exactly its mapped entries."""
        if self.node_nfree >= PTRS_PER_PTE + extra:
            return OK
        return self.reserve_nodes(self.mapped_entries(t, 0, PTRS_PER_PTE) + extra)

    cdef uint32_t node_alloc(self) noexcept nogil:
        cdef uint32_t n
        if self.node_free != 0:
            n = self.node_free
            self.node_free = self.nodes[<size_t>n * NODE_WORDS] >> 4
        else:
            n = self.node_hwm
            self.node_hwm += 1
        self.node_nfree -= 1
        memset(self.nodes + <size_t>n * NODE_WORDS, 0, NODE_WORDS * 4)
        self.st[ST_NODES] += 1
        self.st[ST_CHAIN_ALLOCS] += 1
        if self.st[ST_NODES] > self.st[ST_NODES_PEAK]:
            self.st[ST_NODES_PEAK] = self.st[ST_NODES]
        return n

    cdef void node_release(self, uint32_t n) noexcept nogil:
        self.nodes[<size_t>n * NODE_WORDS] = self.node_free << 4
        self.node_free = n
        self.node_nfree += 1
        self.st[ST_NODES] -= 1

    cdef void rmap_add(self, uint32_t f, uint32_t slot) noexcept nogil:
        """page_add_rmap: add PTE slot (table_pfn << 10 | index) to frame f's chain."""
        cdef uint32_t h, n, idx
        cdef uint32_t* nd
        if self.flags[f] & F_DIRECT:
            n = self.node_alloc()
            nd = self.nodes + <size_t>n * NODE_WORDS
            nd[1 + NRPTE - 1] = self.link[f]
            nd[1 + NRPTE - 2] = slot
            nd[0] = NRPTE - 2
            self.link[f] = n
            self.flags[f] &= ~F_DIRECT
            self.st[ST_DIRECT] -= 1
            self.st[ST_SLOTS] += 2
        elif self.link[f] == 0:
            self.link[f] = slot
            self.flags[f] |= F_DIRECT
            self.st[ST_DIRECT] += 1
        else:
            h = self.link[f]
            nd = self.nodes + <size_t>h * NODE_WORDS
            idx = nd[0] & 15
            if idx == 0:
                n = self.node_alloc()
                nd = self.nodes + <size_t>n * NODE_WORDS
                nd[1 + NRPTE - 1] = slot
                nd[0] = (h << 4) | (NRPTE - 1)
                self.link[f] = n
            else:
                idx -= 1
                nd[1 + idx] = slot
                nd[0] = (nd[0] & ~(<uint32_t>15)) | idx
            self.st[ST_SLOTS] += 1

    cdef void rmap_remove(self, uint32_t f, uint32_t slot) noexcept nogil:
        """page_remove_rmap: take slot out of frame f's chain."""
        cdef uint32_t h, n, idx, k, start
        cdef uint32_t* hd
        cdef uint32_t* nd
        if self.flags[f] & F_DIRECT:
            if self.link[f] == slot:
                self.link[f] = 0
                self.flags[f] &= ~F_DIRECT
                self.st[ST_DIRECT] -= 1
            return
        h = self.link[f]
        if h == 0:
            return
        hd = self.nodes + <size_t>h * NODE_WORDS
        idx = hd[0] & 15
        n = h
        start = idx
        while n != 0:
            nd = self.nodes + <size_t>n * NODE_WORDS
            for k in range(start, NRPTE):
                if nd[1 + k] == slot:
                    nd[1 + k] = hd[1 + idx]
                    hd[1 + idx] = 0
                    idx += 1
                    self.st[ST_SLOTS] -= 1
                    if idx == NRPTE:
                        self.link[f] = hd[0] >> 4
                        self.node_release(h)
                    else:
                        hd[0] = (hd[0] & ~(<uint32_t>15)) | idx
                    return
            n = nd[0] >> 4
            start = 0

    cdef void rmap_clear(self, uint32_t f) noexcept nogil:
        """Forget every slot of frame f (after try_to_unmap has cleared them)."""
        cdef uint32_t n, nxt
        if self.flags[f] & F_DIRECT:
            self.flags[f] &= ~F_DIRECT
            self.st[ST_DIRECT] -= 1
        else:
            n = self.link[f]
            while n != 0:
                nxt = self.nodes[<size_t>n * NODE_WORDS] >> 4
                self.st[ST_SLOTS] -= NRPTE - (self.nodes[<size_t>n * NODE_WORDS] & 15)
                self.node_release(n)
                n = nxt
        self.link[f] = 0

    def rmap_slots(self, uint32_t f):
        """The (table_pfn, index) slots in frame f's chain, head first."""
        cdef uint32_t n, k, idx
        out = []
        if f >= self.nframes or not self.rmap_enabled:
            return out
        if self.flags[f] & (F_FREE | F_RESERVED | F_PTABLE | F_PGD):
            return out
        if self.flags[f] & F_DIRECT:
            return [(self.link[f] >> 10, self.link[f] & 1023)]
        n = self.link[f]
        while n != 0:
            idx = self.nodes[<size_t>n * NODE_WORDS] & 15
            for k in range(idx, NRPTE):
                s = self.nodes[<size_t>n * NODE_WORDS + 1 + k]
                out.append((s >> 10, s & 1023))
            n = self.nodes[<size_t>n * NODE_WORDS] >> 4
        return out

    # ================================================================ swap slots

    cdef uint32_t swap_alloc(self) noexcept nogil:
        """A swap slot with no entries yet, or 0 when the area is full."""
        cdef uint32_t s
        if self.injected_failure():
            return 0
        if self.swap_free != 0:
            s = self.swap_free
            self.swap_free = self.swap_cache[s]
        elif self.swap_hwm < self.nswap:
            s = self.swap_hwm
            self.swap_hwm += 1
        else:
            return 0
        self.swap_nfree -= 1
        self.swap_cache[s] = 0
        self.swap_count[s] = 0
        return s

    cdef void swapcache_drop(self, uint32_t s) noexcept nogil:
        """delete_from_swap_cache: the cache lets go of slot s's frame."""
        cdef uint32_t f = self.swap_cache[s]
        if f != 0:
            self.swap_cache[s] = 0
            self.flags[f] &= ~F_SWAPCACHE
            self.index[f] = 0
            self.put_page(f)

    cdef void swap_put(self, uint32_t s) noexcept nogil:
        """swap_free: one swap entry naming s is gone; the last frees the slot (and
        the swap cache's frame, as free_swap_and_cache)."""
        self.swap_count[s] -= 1
        if self.swap_count[s] == 0:
            self.swapcache_drop(s)
            self.swap_count[s] = -1
            self.swap_cache[s] = self.swap_free
            self.swap_free = s
            self.swap_nfree += 1

    # ================================================================ page-table levels

    cdef void copy_pte_range(self, uint32_t src_t, uint32_t dst_t, uint32_t lo, uint32_t hi,
                             bint cow, bint shared) noexcept nogil:
        """2.4 copy_pte_range over entries [lo, hi) of table src_t into table dst_t;
        every entry of the range is written, empty ones too.

        cow: a private mapping, write-protect in parent and child.  shared: clear D in
        the child.  The child's copy is old (A clear).  Reserved frames are copied
        verbatim; swap entries take a swap reference.  Nodes must be reserved."""
        cdef pte_t* src = self.mem32 + (<size_t>src_t << 10)
        cdef pte_t* dst = self.mem32 + (<size_t>dst_t << 10)
        cdef uint32_t slotbase = dst_t << 10
        cdef uint32_t zero = self.zero_pfn
        cdef bint rm = self.rmap_enabled
        cdef count_t* count = self.count
        cdef pte_t pte, wp = _RW if cow else 0, nod = (_A | _D) if shared else _A
        cdef uint32_t i, f
        cdef int64_t copied = 0
        for i in range(lo, hi):
            pte = src[i]
            if pte == 0:
                dst[i] = 0          # the child's table may be a recycled, unzeroed frame
                continue
            copied += 1
            if not pte_present(pte):
                self.swap_count[swp_offset(pte)] += 1
                dst[i] = pte
                continue
            f = pte >> PAGE_SHIFT
            if f == zero:
                dst[i] = pte
                continue
            if pte & wp:
                pte &= ~_RW
                src[i] = pte
            dst[i] = pte & ~nod
            count[f] += 1
            if rm:
                self.rmap_add(f, slotbase | i)
        self.st[ST_PTES_COPIED] += copied

    cdef void zap_pte_range(self, uint32_t t, uint32_t lo, uint32_t hi) noexcept nogil:
        """zap_pte_range: clear entries [lo, hi) of table t, dropping what they hold."""
        cdef pte_t* tbl = self.mem32 + (<size_t>t << 10)
        cdef uint32_t slotbase = t << 10
        cdef uint32_t zero = self.zero_pfn
        cdef bint rm = self.rmap_enabled
        cdef pte_t pte
        cdef uint32_t i, f
        for i in range(lo, hi):
            pte = tbl[i]
            if pte == 0:
                continue
            tbl[i] = 0
            if not pte_present(pte):
                self.swap_put(swp_offset(pte))
                continue
            f = pte >> PAGE_SHIFT
            if f == zero:
                continue
            if pte & _D:
                self.flags[f] |= F_DIRTY
            if rm:
                self.rmap_remove(f, slotbase | i)
            self.put_page(f)

    cdef void privatize(self, pte_t* pgd, uint32_t pdx, uint32_t nt,
                        const uint32_t* vmas, Py_ssize_t nv) noexcept nogil:
        """Give this mm its own copy nt (fresh from alloc_table) of the shared table at
        pgd[pdx]: the seed's "privatize the page table".

        Only the ranges this mm's VMAs cover are copied (no entry lies outside them: every
        change that removes one privatizes first).  Each present entry takes a frame
        reference and a chain slot in nt ("extend the pte_chains"); private entries lose
        RW in both tables, since two tables now reach the frame; swap entries take a swap
        reference.  The old table loses one use; this mm's PDE points at nt, writable."""
        cdef uint32_t t = pgd[pdx] >> PAGE_SHIFT
        cdef pte_t* src = self.mem32 + (<size_t>t << 10)
        cdef pte_t* dst = self.mem32 + (<size_t>nt << 10)
        cdef uint32_t slotbase = nt << 10
        cdef uint32_t zero = self.zero_pfn
        cdef bint rm = self.rmap_enabled
        cdef uint32_t lo, hi, i, f
        cdef Py_ssize_t v
        cdef pte_t pte
        cdef int64_t copied = 0
        for v in range(nv):
            span_clip(vmas[4 * v], vmas[4 * v + 1], pdx, &lo, &hi)
            for i in range(lo, hi):
                pte = src[i]
                if pte == 0:
                    continue
                copied += 1
                if not pte_present(pte):
                    self.swap_count[swp_offset(pte)] += 1
                    dst[i] = pte
                    continue
                f = pte >> PAGE_SHIFT
                if f != zero:
                    if (pte & _RW) and not (self.flags[f] & F_SHMEM):
                        pte &= ~_RW
                        src[i] = pte
                    self.count[f] += 1
                    if rm:
                        self.rmap_add(f, slotbase | i)
                dst[i] = pte
        self.count[t] -= 1
        pgd[pdx] = (nt << PAGE_SHIFT) | PDE_USER
        self.st[ST_UNSHARES] += 1
        self.st[ST_PTES_COPIED] += copied

    # ================================================================ faults

    cdef uint8_t* mmu(self, pte_t* pgd, uint32_t addr, bint write) noexcept nogil:
        """The MMU: translate a user access or return NULL for a page fault.
        Checks P and US in PDE and PTE, RW in both for a write; sets A (and D)."""
        cdef pte_t pde = pgd[pdx_of(addr)]
        cdef pte_t* tbl
        cdef pte_t pte
        if (pde & (_P | _US)) != (_P | _US):
            return NULL
        tbl = self.mem32 + (<size_t>(pde >> PAGE_SHIFT) << 10) + ptx_of(addr)
        pte = tbl[0]
        if (pte & (_P | _US)) != (_P | _US):
            return NULL
        if write:
            if not (pde & pte & _RW):
                return NULL
            if (pte & (_A | _D)) != (_A | _D):
                tbl[0] = pte | _A | _D
        elif not (pte & _A):
            tbl[0] = pte | _A
        return self.mem8 + (<size_t>(pte >> PAGE_SHIFT) << PAGE_SHIFT) + (addr & (PAGE_SIZE - 1))

    cdef int handle_mm_fault(self, pte_t* pgd, const uint32_t* vmas, Py_ssize_t nv,
                             Py_ssize_t vi, uint32_t addr, bint write) noexcept nogil:
        """handle_mm_fault for an access the VMA vmas[vi] allows (the caller checked).
        Loops, as the MMU retries the access, until the access would succeed."""
        cdef uint32_t pdx = pdx_of(addr), ptx = ptx_of(addr)
        cdef uint32_t vmf = vmas[4 * vi + 2]
        cdef uint32_t t, nt, f, idx
        cdef pte_t pde, pte, npte
        cdef pte_t* tbl
        cdef int rc
        self.st[ST_FAULTS] += 1
        if self.rmap_enabled and self.reserve_nodes(1) != OK:   # the PTE this fault maps
            return ERR_NOMEM
        while True:
            pde = pgd[pdx]
            if not (pde & _P):
                t = self.alloc_table()
                if t == 0:
                    return ERR_NOMEM
                pgd[pdx] = (t << PAGE_SHIFT) | PDE_USER
                continue
            t = pde >> PAGE_SHIFT
            tbl = self.mem32 + (<size_t>t << 10)
            pte = tbl[ptx]
            if (pte & (_P | _US)) == (_P | _US):
                if not write:
                    tbl[ptx] = pte | _A
                    return OK
                if pde & pte & _RW:
                    tbl[ptx] = pte | _A | _D
                    return OK
            # From here the fault changes the table, or needs a writable PDE.
            if not (pde & _RW):
                if self.count[t] > 1:
                    if self.rmap_enabled and self.reserve_table_nodes(t, 1) != OK:
                        return ERR_NOMEM
                    nt = self.alloc_table()
                    if nt == 0:
                        return ERR_NOMEM
                    self.privatize(pgd, pdx, nt, vmas, nv)
                else:
                    pgd[pdx] = pde | _RW         # the last sharer: no copy
                    self.st[ST_UNSHARE_REUSES] += 1
                continue
            if pte == 0:
                # do_no_page
                if vmf & VM_SHARED:
                    idx = vmas[4 * vi + 3] + ((addr - vmas[4 * vi]) >> PAGE_SHIFT)
                    f = self.shm[idx]
                    if f == 0:
                        f = self.alloc_frame(F_SHMEM, 1)
                        if f == 0:
                            return ERR_NOMEM
                        self.count[f] = 1        # the object's reference
                        self.shm[idx] = f
                    self.count[f] += 1
                    npte = (f << PAGE_SHIFT) | vm_page_prot(vmf)
                    if write:
                        npte |= _D
                    self.st[ST_SHMEM_FAULTS] += 1
                elif not write:
                    tbl[ptx] = (self.zero_pfn << PAGE_SHIFT) | vm_page_prot(vmf)
                    self.st[ST_ZERO_PAGE_MAPS] += 1
                    continue
                else:
                    f = self.alloc_frame(F_ANON, 1)
                    if f == 0:
                        return ERR_NOMEM
                    self.count[f] = 1
                    npte = (f << PAGE_SHIFT) | vm_page_prot(vmf) | _RW | _D
                    self.st[ST_DEMAND_ZERO] += 1
                tbl[ptx] = npte
                if self.rmap_enabled:
                    self.rmap_add(f, (t << 10) | ptx)
                continue
            if not pte_present(pte):
                rc = self.do_swap_page(tbl, t, ptx, pte, vmf, write)
            elif pte & _P:
                rc = self.do_wp_page(tbl, t, ptx, pte)
            else:
                return -2                        # PROTNONE under an accessible VMA: a bug
            if rc != OK:
                return rc

    cdef int do_swap_page(self, pte_t* tbl, uint32_t t, uint32_t i, pte_t pte,
                          uint32_t vmf, bint write) noexcept nogil:
        """Swap in through the swap cache; writable only for a write that finds the
        page exclusive."""
        cdef uint32_t s = swp_offset(pte)
        cdef uint32_t f = self.swap_cache[s]
        cdef pte_t npte
        if f == 0:
            f = self.alloc_frame(F_ANON | F_SWAPCACHE, 0)
            if f == 0:
                return ERR_NOMEM
            memcpy(self.mem8 + (<size_t>f << PAGE_SHIFT),
                   self.swap_data + (<size_t>s << PAGE_SHIFT), PAGE_SIZE)
            self.count[f] = 1                    # the swap cache's reference
            self.index[f] = s
            self.swap_cache[s] = f
        self.count[f] += 1
        if self.rmap_enabled:
            self.rmap_add(f, (t << 10) | i)
        npte = (f << PAGE_SHIFT) | vm_page_prot(vmf)
        tbl[i] = npte
        self.swap_put(s)
        if write and self.count[f] == 1:
            tbl[i] = npte | _RW | _D
        self.st[ST_SWAP_INS] += 1
        return OK

    cdef int do_wp_page(self, pte_t* tbl, uint32_t t, uint32_t i, pte_t pte) noexcept nogil:
        """Copy-on-write: reuse the frame in place if this slot is its only reference,
        else copy it (clear, for the ZERO_PAGE) into a new frame."""
        cdef uint32_t f = pte >> PAGE_SHIFT
        cdef uint32_t nf
        cdef bint zero = f == self.zero_pfn
        if not zero and ((self.flags[f] & F_SHMEM) or self.count[f] == 1):
            tbl[i] = pte | _RW | _A | _D
            if not (self.flags[f] & F_SHMEM):
                self.st[ST_COW_REUSES] += 1
            return OK
        nf = self.alloc_frame(F_ANON, zero)
        if nf == 0:
            return ERR_NOMEM
        self.count[nf] = 1
        if not zero:
            memcpy(self.mem8 + (<size_t>nf << PAGE_SHIFT),
                   self.mem8 + (<size_t>f << PAGE_SHIFT), PAGE_SIZE)
            if self.rmap_enabled:
                self.rmap_remove(f, (t << 10) | i)
            self.put_page(f)
        if self.rmap_enabled:
            self.rmap_add(nf, (t << 10) | i)
        tbl[i] = (nf << PAGE_SHIFT) | (pte & (PAGE_SIZE - 1)) | _RW | _A | _D
        self.st[ST_COW_COPIES] += 1
        return OK

    # ================================================================ Python entry points
    #
    # Each raises OutOfMemory with nothing changed, or with only a consistent prefix of
    # faults done (the pages faulted in before the failure stay mapped).

    def set_fail_after(self, n):
        self.fail_countdown = -1 if n is None else n

    def new_pgd(self):
        """pgd_alloc: a page directory with an empty user part and the kernel's PDEs."""
        cdef uint32_t g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for a page directory")
        self._init_pgd(g)
        return g

    cdef void _init_pgd(self, uint32_t g) noexcept:
        memset(self.mem32 + (<size_t>g << 10), 0, USER_PTRS_PER_PGD * 4)
        memcpy(self.mem32 + (<size_t>g << 10) + USER_PTRS_PER_PGD,
               self.mem32 + (<size_t>self.swapper_pgd << 10) + USER_PTRS_PER_PGD,
               (PTRS_PER_PGD - USER_PTRS_PER_PGD) * 4)
        self.st[ST_PGDS] += 1

    def free_pgd(self, uint32_t g):
        self.st[ST_PGDS] -= 1
        self.free_frame(g)

    def fork_copy(self, uint32_t ppgd, const uint32_t[:, ::1] vmas):
        """dup_mmap with 2.4's copy_page_range: returns the child's pgd frame.

        Everything is had before anything changes: the pgd, one table per parent table a
        VMA reaches, and chain nodes for the worst case (1024 new nodes a table; growing
        the pool to that costs nothing, see grow_nodes).  So OutOfMemory leaves no trace
        of the child, and the copy itself cannot fail."""
        cdef pte_t* pp = self.mem32 + (<size_t>ppgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], v
        cdef uint32_t pdx, first, last, lo, hi, g, t, ntab = 0
        cdef uint32_t tabs[768]
        cdef pte_t* cp
        cdef bint cow, shared
        memset(tabs, 0, sizeof(tabs))
        g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        for v in range(nv):
            first = pdx_of(vp[4 * v])
            last = pdx_of(vp[4 * v + 1] - 1)
            for pdx in range(first, last + 1):
                if (pp[pdx] & _P) and tabs[pdx] == 0:
                    # a table this one VMA covers whole is written entry by entry by
                    # copy_pte_range: no need to clear it first
                    t = self.alloc_table(not (vp[4 * v] <= (pdx << PGDIR_SHIFT) and
                                              vp[4 * v + 1] >= ((pdx + 1) << PGDIR_SHIFT)))
                    if t == 0:
                        self._undo_tables(tabs, g)
                        raise OutOfMemory("no free frame for a page table of the child")
                    tabs[pdx] = t
                    ntab += 1
        if self.rmap_enabled and self.reserve_nodes(ntab * PTRS_PER_PTE) != OK \
                and self.reserve_nodes(self._fork_node_bound(pp, vp, nv)) != OK:
            self._undo_tables(tabs, g)
            raise OutOfMemory("no pte_chain node to be had for the child")
        self._init_pgd(g)
        cp = self.mem32 + (<size_t>g << 10)
        with nogil:
            for pdx in range(USER_PTRS_PER_PGD):
                if tabs[pdx] != 0:
                    cp[pdx] = (tabs[pdx] << PAGE_SHIFT) | PDE_USER
            for v in range(nv):
                cow = not (vp[4 * v + 2] & VM_SHARED)
                shared = not cow
                first = pdx_of(vp[4 * v])
                last = pdx_of(vp[4 * v + 1] - 1)
                for pdx in range(first, last + 1):
                    if tabs[pdx] == 0:
                        continue
                    span_clip(vp[4 * v], vp[4 * v + 1], pdx, &lo, &hi)
                    self.copy_pte_range(pp[pdx] >> PAGE_SHIFT, tabs[pdx], lo, hi, cow, shared)
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_COPY] += 1
        return g

    cdef uint32_t _fork_node_bound(self, pte_t* pp, const uint32_t* vp, Py_ssize_t nv) noexcept:
        """The most chain nodes a copy fork can take: the parent's entries in its VMAs
        that map a frame (the ZERO_PAGE aside)."""
        cdef Py_ssize_t v
        cdef uint32_t pdx, lo, hi
        cdef uint64_t n = 0
        for v in range(nv):
            for pdx in range(pdx_of(vp[4 * v]), pdx_of(vp[4 * v + 1] - 1) + 1):
                if pp[pdx] & _P:
                    span_clip(vp[4 * v], vp[4 * v + 1], pdx, &lo, &hi)
                    n += self.mapped_entries(pp[pdx] >> PAGE_SHIFT, lo, hi)
        return <uint32_t>min(n, <uint64_t>0xFFFFFFFF)

    cdef void _undo_tables(self, uint32_t* tabs, uint32_t g) noexcept:
        cdef uint32_t pdx
        for pdx in range(USER_PTRS_PER_PGD):
            if tabs[pdx] != 0:
                self.free_table(tabs[pdx])
        self.free_frame(g)

    def fork_share(self, uint32_t ppgd):
        """The seed's fork: copy only the page directory.  Each present user PDE's table
        gains a use, and RW is cleared in the parent's and the child's PDE."""
        cdef pte_t* pp = self.mem32 + (<size_t>ppgd << 10)
        cdef pte_t* cp
        cdef pte_t pde
        cdef uint32_t pdx
        cdef uint32_t g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        self._init_pgd(g)
        cp = self.mem32 + (<size_t>g << 10)
        with nogil:
            for pdx in range(USER_PTRS_PER_PGD):
                pde = pp[pdx]
                if pde & _P:
                    self.count[pde >> PAGE_SHIFT] += 1
                    pde &= ~_RW
                    pp[pdx] = pde
                    cp[pdx] = pde
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_SHARE] += 1
        return g

    def fault_range(self, uint32_t pgd, const uint32_t[:, ::1] vmas, Py_ssize_t vi,
                    uint32_t start, uint32_t end, bint write):
        """Access every page of [start, end) inside VMA vi (bulk faulting: touch)."""
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0]
        cdef uint64_t a
        cdef int rc = OK
        with nogil:
            a = start
            while a < end:
                if self.mmu(gp, <uint32_t>a, write) == NULL:
                    rc = self.handle_mm_fault(gp, vp, nv, vi, <uint32_t>a, write)
                    if rc != OK:
                        break
                a += PAGE_SIZE
        self._raise(rc)

    def fault_pages(self, uint32_t pgd, const uint32_t[:, ::1] vmas,
                    const uint32_t[::1] addrs, const int64_t[::1] vidx, bint write):
        """Access each address of addrs, which lies in VMA vidx[i] (touch_pages)."""
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], i, n = addrs.shape[0]
        cdef int rc = OK
        with nogil:
            for i in range(n):
                if self.mmu(gp, addrs[i], write) == NULL:
                    rc = self.handle_mm_fault(gp, vp, nv, vidx[i], addrs[i], write)
                    if rc != OK:
                        break
        self._raise(rc)

    def read_into(self, uint32_t pgd, const uint32_t[:, ::1] vmas, Py_ssize_t vi,
                  uint32_t addr, uint8_t[::1] out, Py_ssize_t off, Py_ssize_t n):
        """Read n bytes at addr (inside VMA vi) into out[off:off+n], faulting as needed."""
        self._copy(pgd, vmas, vi, addr, &out[0] + off if out.shape[0] else NULL, n, False)

    def write_from(self, uint32_t pgd, const uint32_t[:, ::1] vmas, Py_ssize_t vi,
                   uint32_t addr, const uint8_t[::1] src, Py_ssize_t off, Py_ssize_t n):
        """Write src[off:off+n] at addr (inside VMA vi); the caller faulted the pages in
        for write first, so a failure leaves every byte as it was."""
        self._copy(pgd, vmas, vi, addr, <uint8_t*>&src[0] + off if src.shape[0] else NULL,
                   n, True)

    cdef _copy(self, uint32_t pgd, const uint32_t[:, ::1] vmas, Py_ssize_t vi,
               uint32_t addr, uint8_t* buf, Py_ssize_t n, bint write):
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], done = 0, chunk
        cdef uint64_t a = addr
        cdef uint8_t* p
        cdef int rc = OK
        with nogil:
            while done < n:
                p = self.mmu(gp, <uint32_t>a, write)
                if p == NULL:
                    rc = self.handle_mm_fault(gp, vp, nv, vi, <uint32_t>a, write)
                    if rc != OK:
                        break
                    continue
                chunk = PAGE_SIZE - (a & (PAGE_SIZE - 1))
                if chunk > n - done:
                    chunk = n - done
                if write:
                    memcpy(p, buf + done, chunk)
                else:
                    memcpy(buf + done, p, chunk)
                done += chunk
                a += chunk
        self._raise(rc)

    cdef _raise(self, int rc):
        if rc == ERR_NOMEM:
            raise OutOfMemory("no free frame (or pte_chain node) for a page fault")
        if rc != OK:
            raise InvariantError(f"handle_mm_fault: PROTNONE entry under an accessible VMA")

    def zap(self, uint32_t pgd, const uint32_t[:, ::1] old_vmas,
            const uint32_t[:, ::1] new_vmas, uint32_t start, uint32_t end):
        """munmap [start, end): zap the range and free (or drop one use of) every table
        whose span no VMA of new_vmas reaches any more.  A shared table that stays
        reached is privatized first; those frames are allocated before anything changes."""
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* op = vma_ptr(old_vmas)
        cdef const uint32_t* np_ = vma_ptr(new_vmas)
        cdef Py_ssize_t nov = old_vmas.shape[0], nnv = new_vmas.shape[0]
        cdef uint32_t first = pdx_of(start), last = pdx_of(end - 1), pdx, t, lo, hi
        cdef uint32_t spare[768]
        cdef uint32_t need = 0
        cdef int nspare = 0, k
        for pdx in range(first, last + 1):
            if (gp[pdx] & _P) and self.count[gp[pdx] >> PAGE_SHIFT] > 1 \
                    and span_covered(np_, nnv, pdx):
                need += self.mapped_entries(gp[pdx] >> PAGE_SHIFT, 0, PTRS_PER_PTE)
                t = self.alloc_table()
                if t == 0 or (self.rmap_enabled and self.reserve_nodes(need) != OK):
                    if t != 0:
                        self.free_table(t)
                    for k in range(nspare):
                        self.free_table(spare[k])
                    raise OutOfMemory("no free frame or pte_chain node to privatize a "
                                      "shared page table")
                spare[nspare] = t
                nspare += 1
        with nogil:
            for pdx in range(first, last + 1):
                if not (gp[pdx] & _P):
                    continue
                t = gp[pdx] >> PAGE_SHIFT
                if self.count[t] > 1:
                    if not span_covered(np_, nnv, pdx):
                        gp[pdx] = 0
                        self.count[t] -= 1
                        self.st[ST_TABLES_DROPPED] += 1
                        continue
                    nspare -= 1
                    self.privatize(gp, pdx, spare[nspare], op, nov)
                    t = spare[nspare]
                span_clip(start, end, pdx, &lo, &hi)
                self.zap_pte_range(t, lo, hi)
                if not span_covered(np_, nnv, pdx):
                    self.zap_pte_range(t, 0, PTRS_PER_PTE)
                    gp[pdx] = 0
                    self.free_table(t)

    def exit_mm(self, uint32_t pgd, const uint32_t[:, ::1] vmas, bint free_pgd):
        """exit_mmap / exec: zap every VMA's range (2.4 exit_mmap), then clear_page_tables:
        a shared table loses one use and nothing else; a private one is freed.  Frees
        the pgd too if free_pgd."""
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], v
        cdef uint32_t pdx, t, lo, hi
        with nogil:
            for v in range(nv):
                for pdx in range(pdx_of(vp[4 * v]), pdx_of(vp[4 * v + 1] - 1) + 1):
                    if not (gp[pdx] & _P):
                        continue
                    t = gp[pdx] >> PAGE_SHIFT
                    if self.count[t] > 1:
                        continue
                    span_clip(vp[4 * v], vp[4 * v + 1], pdx, &lo, &hi)
                    self.zap_pte_range(t, lo, hi)
            for pdx in range(USER_PTRS_PER_PGD):
                if not (gp[pdx] & _P):
                    continue
                t = gp[pdx] >> PAGE_SHIFT
                gp[pdx] = 0
                if self.count[t] > 1:
                    self.count[t] -= 1
                    self.st[ST_TABLES_DROPPED] += 1
                else:
                    self.free_table(t)
        if free_pgd:
            self.free_pgd(pgd)

    def mprotect(self, uint32_t pgd, const uint32_t[:, ::1] vmas,
                 const uint32_t[:, ::1] pieces):
        """change_protection for each row (start, end, new vm_flags) of pieces, all
        inside the current VMAs: present PTEs get the new protection, keeping frame, A
        and D.  A shared table with an entry in the range is privatized first; all those
        tables are allocated before anything changes."""
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], k, npc = pieces.shape[0]
        cdef uint32_t pdx, t, lo, hi, i, nneed = 0, j, nodes = 0
        cdef uint32_t need[768]
        cdef pte_t* tbl
        cdef pte_t pte, prot
        memset(need, 0, sizeof(need))
        for k in range(npc):
            for pdx in range(pdx_of(pieces[k, 0]), pdx_of(pieces[k, 1] - 1) + 1):
                if not (gp[pdx] & _P) or need[pdx]:
                    continue
                t = gp[pdx] >> PAGE_SHIFT
                if self.count[t] <= 1:
                    continue
                span_clip(pieces[k, 0], pieces[k, 1], pdx, &lo, &hi)
                tbl = self.mem32 + (<size_t>t << 10)
                for i in range(lo, hi):
                    if tbl[i] != 0:
                        break
                else:
                    continue
                nodes += self.mapped_entries(t, 0, PTRS_PER_PTE)
                t = self.alloc_table()
                if t == 0 or (self.rmap_enabled and self.reserve_nodes(nodes) != OK):
                    if t != 0:
                        self.free_table(t)
                    for j in range(USER_PTRS_PER_PGD):
                        if need[j]:
                            self.free_table(need[j])
                    raise OutOfMemory("no free frame or pte_chain node to privatize a "
                                      "shared page table")
                need[pdx] = t
                nneed += 1
        with nogil:
            for pdx in range(USER_PTRS_PER_PGD):
                if need[pdx]:
                    self.privatize(gp, pdx, need[pdx], vp, nv)
            for k in range(npc):
                prot = vm_page_prot(pieces[k, 2])
                for pdx in range(pdx_of(pieces[k, 0]), pdx_of(pieces[k, 1] - 1) + 1):
                    if not (gp[pdx] & _P):
                        continue
                    tbl = self.mem32 + (<size_t>(gp[pdx] >> PAGE_SHIFT) << 10)
                    span_clip(pieces[k, 0], pieces[k, 1], pdx, &lo, &hi)
                    for i in range(lo, hi):
                        pte = tbl[i]
                        if pte_present(pte):
                            tbl[i] = (pte & (~(<pte_t>(PAGE_SIZE - 1)) | _A | _D)) | prot

    # ================================================================ shared memory

    def shm_alloc(self, uint32_t npages):
        """Room for a shared-memory object of npages pages: returns its base index."""
        cdef uint32_t base = self.shm_hwm
        cdef uint64_t cap = self.shm_cap
        while cap < <uint64_t>base + npages:
            cap *= 2
        if cap != self.shm_cap:
            arr = np.zeros(cap, dtype=np.uint32)
            arr[:self.shm_hwm] = self.shm_arr[:self.shm_hwm]
            self.shm_arr = arr
            self.shm = <uint32_t*>array_data(arr)
            self.shm_cap = <uint32_t>cap
        self.shm_hwm = base + npages
        return base

    def shm_release(self, uint32_t base, uint32_t npages):
        """The object is gone: drop its reference on each of its frames."""
        cdef uint32_t i, f
        for i in range(base, base + npages):
            f = self.shm[i]
            if f != 0:
                self.shm[i] = 0
                self.put_page(f)

    # ================================================================ reclaim

    cdef bint page_referenced(self, uint32_t f) noexcept nogil:
        """Test and clear A in every slot that maps f (through its chain); a chain left
        with one slot collapses back to direct, as 2.6.0's page_referenced does."""
        cdef bint ref = False
        cdef uint32_t n, k, idx, slot, nslots = 0, last = 0
        cdef pte_t* p
        if self.flags[f] & F_DIRECT:
            slot = self.link[f]
            p = self.mem32 + (<size_t>(slot >> 10) << 10) + (slot & 1023)
            self.st[ST_RMAP_SLOTS] += 1
            if p[0] & _A:
                p[0] &= ~_A
                return True
            return False
        n = self.link[f]
        while n != 0:
            idx = self.nodes[<size_t>n * NODE_WORDS] & 15
            for k in range(idx, NRPTE):
                slot = self.nodes[<size_t>n * NODE_WORDS + 1 + k]
                p = self.mem32 + (<size_t>(slot >> 10) << 10) + (slot & 1023)
                if p[0] & _A:
                    p[0] &= ~_A
                    ref = True
                nslots += 1
                last = slot
            n = self.nodes[<size_t>n * NODE_WORDS] >> 4
        self.st[ST_RMAP_SLOTS] += nslots
        if nslots == 1:
            self.rmap_clear(f)
            self.link[f] = last
            self.flags[f] |= F_DIRECT
            self.st[ST_DIRECT] += 1
        return ref

    cdef uint32_t add_to_swap(self, uint32_t f) noexcept nogil:
        """f's swap slot: the one the swap cache has it under, else a new slot that f is
        written to and cached under (add_to_swap).  0 when the swap area is full."""
        cdef uint32_t s
        if self.flags[f] & F_SWAPCACHE:
            return self.index[f]
        s = self.swap_alloc()
        if s == 0:
            return 0
        memcpy(self.swap_data + (<size_t>s << PAGE_SHIFT),
               self.mem8 + (<size_t>f << PAGE_SHIFT), PAGE_SIZE)
        self.swap_cache[s] = f
        self.index[f] = s
        self.flags[f] |= F_SWAPCACHE
        self.count[f] += 1                       # the swap cache's reference
        self.st[ST_SWAP_OUTS] += 1
        return s

    cdef int swap_out_frame(self, uint32_t f) noexcept nogil:
        """Swap f out through its chain: write it to a slot (unless the swap cache has it
        already), turn every slot that maps it into a swap entry (try_to_unmap), free it."""
        cdef uint32_t s, n, k, idx, slot
        cdef pte_t* p
        s = self.add_to_swap(f)
        if s == 0:
            return ERR_NOMEM
        if self.flags[f] & F_DIRECT:
            self._unmap_slot(f, self.link[f], s)
        else:
            n = self.link[f]
            while n != 0:
                idx = self.nodes[<size_t>n * NODE_WORDS] & 15
                for k in range(idx, NRPTE):
                    self._unmap_slot(f, self.nodes[<size_t>n * NODE_WORDS + 1 + k], s)
                n = self.nodes[<size_t>n * NODE_WORDS] >> 4
        self.rmap_clear(f)
        self.swapcache_drop(s)                   # written: the frame goes
        return OK

    cdef void _unmap_slot(self, uint32_t f, uint32_t slot, uint32_t s) noexcept nogil:
        cdef pte_t* p = self.mem32 + (<size_t>(slot >> 10) << 10) + (slot & 1023)
        if p[0] & _D:
            self.flags[f] |= F_DIRTY
        p[0] = swp_entry(s)
        self.swap_count[s] += 1
        self.count[f] -= 1
        self.st[ST_RMAP_SLOTS] += 1

    def reclaim_rmap(self, uint32_t n):
        """Swap out up to n private anonymous frames chosen by a second-chance clock,
        testing references and unmapping through the rmap.  Returns frames freed."""
        cdef uint32_t freed = 0, f
        cdef uint64_t scanned = 0, limit = 2 * <uint64_t>self.hwm
        cdef pflags_t fl
        if self.swap_nfree == 0:
            raise OutOfMemory("the swap area is full")
        with nogil:
            while freed < n and scanned < limit:
                f = self.clock_hand
                self.clock_hand += 1
                if self.clock_hand >= self.hwm:
                    self.clock_hand = self.boot_frames
                scanned += 1
                fl = self.flags[f]
                if (fl & (F_ANON | F_FREE | F_RESERVED)) != F_ANON:
                    continue
                if not (fl & F_DIRECT) and self.link[f] == 0:
                    continue                     # mapped by no PTE (swap cache only)
                if self.page_referenced(f):
                    continue
                if self.swap_out_frame(f) != OK:
                    break
                freed += 1
        self.st[ST_CLOCK_SCANNED] += scanned
        return freed

    def reclaim_scan(self, uint32_t n, list mms, uint32_t start):
        """Linux 2.4 swap_out: walk the page tables of each mm (pgd, vmas) in turn from
        mms[start]; a young PTE loses A and is skipped, an old one is unmapped to a swap
        entry (try_to_swap_out); a frame is freed when only the swap cache holds it.
        Returns (frames freed, index of the mm to start from next time)."""
        cdef uint32_t freed = 0
        cdef Py_ssize_t nm = len(mms), turn, m
        cdef int rc = OK
        if self.swap_nfree == 0:
            raise OutOfMemory("the swap area is full")
        if nm == 0:
            return 0, 0
        m = start % nm
        for turn in range(2 * nm):
            pgd, vmas = mms[m]
            rc = self._scan_mm(pgd, vmas, n, &freed)
            m = (m + 1) % nm
            if freed >= n or rc != OK:
                break
        return freed, m

    cdef int _scan_mm(self, uint32_t pgd, const uint32_t[:, ::1] vmas, uint32_t n,
                      uint32_t* freed) noexcept:
        cdef pte_t* gp = self.mem32 + (<size_t>pgd << 10)
        cdef const uint32_t* vp = vma_ptr(vmas)
        cdef Py_ssize_t nv = vmas.shape[0], v
        cdef uint32_t pdx, lo, hi, i, t, f, s
        cdef pte_t pte
        cdef pte_t* tbl
        cdef int64_t scanned = 0
        cdef int rc = OK
        with nogil:
            for v in range(nv):
                if freed[0] >= n or rc != OK:
                    break
                if vp[4 * v + 2] & VM_SHARED:
                    continue
                for pdx in range(pdx_of(vp[4 * v]), pdx_of(vp[4 * v + 1] - 1) + 1):
                    if not (gp[pdx] & _P):
                        continue
                    t = gp[pdx] >> PAGE_SHIFT
                    tbl = self.mem32 + (<size_t>t << 10)
                    span_clip(vp[4 * v], vp[4 * v + 1], pdx, &lo, &hi)
                    for i in range(lo, hi):
                        scanned += 1
                        pte = tbl[i]
                        if not pte_present(pte):     # PROTNONE frames are mapped too
                            continue
                        f = pte >> PAGE_SHIFT
                        if f == self.zero_pfn or not (self.flags[f] & F_ANON):
                            continue
                        if pte & _A:
                            tbl[i] = pte & ~_A
                            continue
                        s = self.add_to_swap(f)
                        if s == 0:
                            rc = ERR_NOMEM
                            break
                        if pte & _D:
                            self.flags[f] |= F_DIRTY
                        tbl[i] = swp_entry(s)
                        self.swap_count[s] += 1
                        if self.rmap_enabled:
                            self.rmap_remove(f, (t << 10) | i)
                        self.count[f] -= 1
                        if self.count[f] == 1:
                            self.swapcache_drop(s)
                            freed[0] += 1
                            if freed[0] >= n:
                                break
                    if freed[0] >= n or rc != OK:
                        break
        self.st[ST_SCAN_PTES] += scanned
        return rc

    # ================================================================ counters

    def reset_peaks(self):
        self.st[ST_FRAMES_PEAK] = self.nframes - self.nfree
        self.st[ST_TABLES_PEAK] = self.st[ST_PAGE_TABLES]
        self.st[ST_NODES_PEAK] = self.st[ST_NODES]

    def stats(self):
        out = {name: int(self.st[i]) for name, i in _COUNTER_NAMES}
        out["frames_total"] = int(self.nframes)
        out["frames_free"] = int(self.nfree)
        out["frames_used"] = int(self.nframes - self.nfree)
        used = self.flags_arr[:self.hwm]
        tables = self.count_arr[:self.hwm][(used & F_PTABLE) != 0]
        out["shared_tables"] = int(np.count_nonzero(tables > 1))
        out["pt_use_refs"] = int(tables.sum())
        out["swap_total"] = int(self.nswap - 1 if self.nswap else 0)
        out["swap_used"] = int(out["swap_total"] - self.swap_nfree)
        return out

    def frame_count(self, uint32_t f):
        return int(self.count[f])

    # ================================================================ invariants

    def check(self, list pgds, list shm_ranges):
        """Verify the invariants of DESIGN.md section 3; raise InvariantError naming the
        first one broken.  pgds: the live page directories; shm_ranges: (base, npages)
        of each live shared-memory object."""
        cdef uint32_t nf = self.nframes, hwm = self.hwm
        cdef int64_t[::1] exp = np.zeros(nf, dtype=np.int64)
        cdef int32_t[::1] users = np.zeros(nf, dtype=np.int32)
        cdef int32_t[::1] nslots = np.zeros(nf, dtype=np.int32)
        cdef int32_t[::1] rwslots = np.zeros(nf, dtype=np.int32)
        cdef int32_t[::1] tord = np.full(nf, -1, dtype=np.int32)
        cdef int64_t[::1] swapexp = np.zeros(max(self.nswap, 1), dtype=np.int64)
        cdef uint8_t[::1] live_pgd = np.zeros(nf, dtype=np.uint8)
        cdef uint32_t g, pdx, t, i, f, s, n, k, idx, slot, ntab, steps
        cdef pte_t pde, pte
        cdef pte_t* tbl
        cdef pflags_t fl
        cdef int64_t chain_len, listed, seen_nodes
        cdef pte_t* kernel

        def fail(num, msg):
            raise InvariantError(f"invariant {num}: {msg}")

        kernel = self.mem32 + (<size_t>self.swapper_pgd << 10) + USER_PTRS_PER_PGD
        for g in pgds:
            if g >= nf or (self.flags[g] & (F_PGD | F_FREE)) != F_PGD:
                fail(6, f"pgd {g} is not an allocated page directory")
            live_pgd[g] = 1
            tbl = self.mem32 + (<size_t>g << 10)
            if memcmp(tbl + USER_PTRS_PER_PGD, kernel, 256 * 4) != 0:
                fail(1, f"pgd {g}: kernel PDEs 768..1023 differ from the boot pgd")
            for pdx in range(USER_PTRS_PER_PGD):
                pde = tbl[pdx]
                if pde == 0:
                    continue
                t = pde >> PAGE_SHIFT
                if not (pde & _P) or (pde & 0xFFF & ~(<pte_t>_RW)) != (PDE_USER & ~_RW):
                    fail(3, f"pgd {g} PDE {pdx} = {pde:#x} is not a user PDE")
                if t >= nf or (self.flags[t] & (F_PTABLE | F_FREE)) != F_PTABLE:
                    fail(3, f"pgd {g} PDE {pdx} points at frame {t}, not a page table")
                users[t] += 1
        for g in pgds:
            tbl = self.mem32 + (<size_t>g << 10)
            for pdx in range(USER_PTRS_PER_PGD):
                pde = tbl[pdx]
                if pde != 0 and users[pde >> PAGE_SHIFT] > 1 and (pde & _RW):
                    fail(4, f"table {pde >> PAGE_SHIFT} has {users[pde >> PAGE_SHIFT]} users "
                            f"but pgd {g} PDE {pdx} has RW set")
        ntab = 0
        for t in range(hwm):
            if users[t] == 0:
                continue
            if self.count[t] != users[t]:
                fail(3, f"table {t} use count {self.count[t]} != {users[t]} pgds pointing at it")
            tord[t] = ntab
            ntab += 1
            tbl = self.mem32 + (<size_t>t << 10)
            for i in range(PTRS_PER_PTE):
                pte = tbl[i]
                if pte == 0:
                    continue
                if pte_present(pte):
                    f = pte >> PAGE_SHIFT
                    if f == self.zero_pfn:
                        if pte & _RW:
                            fail(5, f"ZERO_PAGE mapped writable at table {t} index {i}")
                        continue
                    if f >= nf or not (self.flags[f] & (F_ANON | F_SHMEM)) \
                            or (self.flags[f] & F_FREE):
                        fail(6, f"table {t} index {i} maps frame {f}, which is not a "
                                f"data frame in use (flags {self.flags[f] if f < nf else 0:#x})")
                    exp[f] += 1
                    nslots[f] += 1
                    if pte & _RW:
                        rwslots[f] += 1
                else:
                    s = swp_offset(pte)
                    if (pte & 0x81) or s == 0 or s >= self.nswap or self.swap_count[s] < 0:
                        fail(7, f"table {t} index {i}: {pte:#x} is not a live swap entry")
                    swapexp[s] += 1
        for base, npages in shm_ranges:
            for i in range(base, base + npages):
                f = self.shm[i]
                if f != 0:
                    if not (self.flags[f] & F_SHMEM) or (self.flags[f] & F_FREE):
                        fail(6, f"shared-memory object holds frame {f}, not a shmem frame")
                    exp[f] += 1
        for s in range(1, self.swap_hwm):
            if self.swap_count[s] < 0:
                if swapexp[s]:
                    fail(7, f"free swap slot {s} is named by {swapexp[s]} entries")
                continue
            if self.swap_count[s] != swapexp[s]:
                fail(7, f"swap slot {s} count {self.swap_count[s]} != {swapexp[s]} entries")
            if self.swap_count[s] == 0:
                fail(7, f"swap slot {s} is allocated but named by no entry")
            f = self.swap_cache[s]
            if f != 0:
                if not (self.flags[f] & F_SWAPCACHE) or self.index[f] != s:
                    fail(1, f"swap cache of slot {s} holds frame {f} that does not know it")
                exp[f] += 1
        listed = 0
        for f in range(hwm):
            fl = self.flags[f]
            if fl & F_FREE:
                if fl != F_FREE:
                    fail(6, f"frame {f} is free and in use (flags {fl:#x})")
                listed += 1
                continue
            if fl & F_RESERVED:
                continue
            if fl & F_PGD:
                if not live_pgd[f]:
                    fail(6, f"page directory {f} belongs to no live process (leaked)")
            elif fl & F_PTABLE:
                if users[f] == 0:
                    fail(6, f"page table {f} is reached by no pgd (leaked)")
            elif fl & (F_ANON | F_SHMEM):
                if self.count[f] != exp[f]:
                    fail(1, f"frame {f} count {self.count[f]} != {exp[f]} "
                            f"(slots {nslots[f]} + caches)")
                if self.count[f] <= 0:
                    fail(6, f"frame {f} is in use with nothing holding it (leaked)")
                if (fl & F_ANON) and self.count[f] > 1 and rwslots[f]:
                    fail(5, f"private frame {f} has {self.count[f]} references and "
                            f"{rwslots[f]} writable slots")
                if (fl & F_SWAPCACHE) and self.swap_cache[self.index[f]] != f:
                    fail(1, f"frame {f} thinks it is in the swap cache of slot {self.index[f]}")
            else:
                fail(6, f"frame {f} is neither free nor in use (flags {fl:#x})")
        for i in range(PTRS_PER_PTE):
            if self.mem32[(<size_t>self.zero_pfn << 10) + i] != 0:
                fail(6, "the ZERO_PAGE is not all zeros")
        ntab = 0
        for f in range(hwm):
            if self.flags[f] & F_PTABLE:
                ntab += 1
        if ntab != self.st[ST_PAGE_TABLES] or len(pgds) != self.st[ST_PGDS]:
            fail(3, f"counters: {self.st[ST_PAGE_TABLES]} page tables, {self.st[ST_PGDS]} "
                    f"pgds; the frames say {ntab} and {len(pgds)}")
        steps = 0
        s = self.swap_free
        while s != 0:
            if s >= self.swap_hwm or self.swap_count[s] != -1 or steps > self.nswap:
                fail(7, f"free swap list reaches slot {s}, which is in use")
            steps += 1
            s = self.swap_cache[s]
        if self.nswap and steps + (self.nswap - self.swap_hwm) != self.swap_nfree:
            fail(7, f"{steps} listed + {self.nswap - self.swap_hwm} never used free swap "
                    f"slots, swap_nfree says {self.swap_nfree}")
        steps = 0
        f = self.free_head
        while f != 0:
            if f >= hwm or self.flags[f] != F_FREE or steps > nf:
                fail(6, f"free list reaches frame {f}, which is not free")
            steps += 1
            f = self.link[f]
        if steps != listed or listed + (nf - hwm) != self.nfree:
            fail(6, f"free list has {steps} frames, {listed} are marked free, "
                    f"{nf - hwm} never used; nfree says {self.nfree}")

        if not self.rmap_enabled:
            if self.st[ST_NODES] != 0:
                fail(2, "pte_chain nodes in use without rmap")
            return
        cdef uint8_t[::1] mark = np.zeros(max(ntab, 1) * PTRS_PER_PTE, dtype=np.uint8)
        cdef uint8_t[::1] node_seen = np.zeros(self.node_cap, dtype=np.uint8)
        cdef int64_t all_slots = 0, direct = 0
        seen_nodes = 0
        for f in range(hwm):
            fl = self.flags[f]
            if not (fl & (F_ANON | F_SHMEM)) or (fl & F_FREE):
                continue
            chain_len = 0
            if fl & F_DIRECT:
                self._check_slot(f, self.link[f], tord, mark)
                chain_len = 1
                direct += 1
            else:
                n = self.link[f]
                while n != 0:
                    if n >= self.node_hwm or node_seen[n]:
                        fail(2, f"frame {f}: chain node {n} is out of the pool or shared")
                    node_seen[n] = 1
                    seen_nodes += 1
                    idx = self.nodes[<size_t>n * NODE_WORDS] & 15
                    if idx >= NRPTE or (n != self.link[f] and idx != 0):
                        fail(2, f"frame {f}: node {n} idx {idx} (only the head has free slots)")
                    for k in range(idx, NRPTE):
                        self._check_slot(f, self.nodes[<size_t>n * NODE_WORDS + 1 + k],
                                         tord, mark)
                        chain_len += 1
                    n = self.nodes[<size_t>n * NODE_WORDS] >> 4
            if chain_len != nslots[f]:
                fail(2, f"frame {f}: chain holds {chain_len} slots, {nslots[f]} PTEs map it")
            if not (fl & F_DIRECT):
                all_slots += chain_len
        if all_slots != self.st[ST_SLOTS] or direct != self.st[ST_DIRECT]:
            fail(2, f"counters: {self.st[ST_SLOTS]} chain slots, {self.st[ST_DIRECT]} direct; "
                    f"the chains hold {all_slots} and {direct}")
        if seen_nodes != self.st[ST_NODES]:
            fail(2, f"{seen_nodes} nodes reachable from chains, {self.st[ST_NODES]} in use")
        n = self.node_free
        steps = 0
        while n != 0:
            if n >= self.node_hwm or node_seen[n] or steps > self.node_cap:
                fail(2, f"free chain node {n} is in use or out of the pool")
            steps += 1
            n = self.nodes[<size_t>n * NODE_WORDS] >> 4
        if steps + (self.node_cap - self.node_hwm) != self.node_nfree \
                or seen_nodes + steps + 1 != self.node_hwm:
            fail(2, f"chain pool: {seen_nodes} used + {steps} listed free != "
                    f"{self.node_hwm - 1} ever used")

    cdef _check_slot(self, uint32_t f, uint32_t slot, int32_t[::1] tord, uint8_t[::1] mark):
        cdef uint32_t t = slot >> 10, i = slot & 1023
        cdef pte_t pte
        if t >= self.nframes or tord[t] < 0:
            raise InvariantError(f"invariant 2: frame {f}: slot ({t}, {i}) is not in a live table")
        pte = self.mem32[(<size_t>t << 10) + i]
        if not pte_present(pte) or (pte >> PAGE_SHIFT) != f:
            raise InvariantError(f"invariant 2: frame {f}: slot ({t}, {i}) holds {pte:#x}")
        if mark[<size_t>tord[t] * PTRS_PER_PTE + i]:
            raise InvariantError(f"invariant 2: slot ({t}, {i}) is in a chain twice")
        mark[<size_t>tord[t] * PTRS_PER_PTE + i] = 1
