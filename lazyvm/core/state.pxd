# cython: language_level=3
#
# lazyvm.core.state: the machine's state, declared once.  The State class holds every
# field of the core (the fields, no operations: those are module functions of frames,
# rmap, swap, fork, fault, zap, reclaim and trace, each taking the State as `c`); the
# per-entry accessors below are inline so every module compiles them into its loops.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t
cimport numpy as cnp

from lazyvm.core.defs cimport *


cdef class State:
    # ---- layout ----------------------------------------------------------------------
    cdef readonly int layout             # LAYOUT_*
    cdef readonly int levels             # 2, 3 or 4
    cdef readonly bint wide              # 64-bit entries
    cdef uint32_t shift[MAX_LEVELS + 2]  # shift[k]: address bit where level k indexes
    cdef uint32_t nent[MAX_LEVELS + 2]   # entries in a table of level k
    cdef readonly uint32_t user_entries  # user entries of the pgd (i386 768, pae 3, x86_64 256)
    cdef bint top_rw                     # the top level's entries have an RW bit (not pae)
    cdef uint32_t slot_shift             # rmap slot = table_pfn << slot_shift | index
    cdef readonly uint32_t nrpte         # slots in a chain node (15 or 7)
    cdef readonly bint contents          # page data is kept
    cdef readonly bint eager             # eager accounting: a page under a shared leaf
                                         # table holds one reference per use of the table
    cdef readonly int thp                # THP_NEVER, THP_ALWAYS, THP_MADVISE
    cdef readonly bint thp_copy          # a write to a shared huge page copies it whole

    # ---- physical memory -------------------------------------------------------------
    cdef readonly object physical        # np.uint8[nframes * 4096]
    cdef readonly object physical_ro     # physical, read-only (its base is too)
    cdef uint8_t* mem8                   # physical's data
    cdef readonly uint32_t nframes       # frames of physical memory

    # ---- struct page -----------------------------------------------------------------
    cdef readonly object count_arr       # np.int32[nframes]
    cdef readonly object link_arr        # np.uint32[nframes]
    cdef readonly object index_arr       # np.uint32[nframes], or [1] without swap
    cdef readonly object flags_arr       # np.uint16[nframes]
    cdef readonly object lidx_arr        # np.uint16[nframes], or [1] unless rmap and wide
    cdef count_t* count                  # reference count (data frame) or use count (table)
    cdef uint32_t* link                  # rmap head (direct slot's table or chain node) | next free
    cdef uint32_t* index                 # the swap slot while in the swap cache (with swap)
    cdef pflags_t* flags                 # F_*, and a table's level in bits 12..14
    cdef uint16_t* lidx                  # 64-bit rmap: the direct slot's entry index

    # ---- frame allocator: a LIFO free list, then never-used frames above hwm ------------
    cdef readonly uint32_t hwm           # frames >= hwm were never allocated (still zero)
    cdef readonly uint32_t free_head     # first free frame, 0 = none (frame 0 is reserved)
    cdef readonly uint32_t nfree         # free frames, listed and above hwm
    cdef readonly uint32_t boot_frames   # frames taken at boot, never freed
    cdef readonly uint32_t zero_pfn      # the ZERO_PAGE
    cdef readonly uint32_t swapper_pgd   # the boot page directory (kernel entries)
    cdef int64_t fail_countdown          # fault injection: allocations left, -1 = off
    cdef object resv_arr                 # np.uint32: frames had ahead for a fork's tables
    cdef uint32_t* resv                  # (pfn << 1 | never-used), taken by alloc_table
    cdef uint32_t nresv                  # frames in resv
    cdef uint32_t resv_cap               # resv's size
    cdef readonly object hfree_arr       # np.uint32: free 512-frame blocks kept whole (heads)
    cdef uint32_t* hfree                 # hfree_arr's data
    cdef readonly uint32_t nhfree        # blocks on hfree (their frames count in nfree)

    # ---- rmap: pte_chain pool ---------------------------------------------------------
    cdef readonly bint rmap_enabled
    cdef readonly object nodes_arr       # np.uint32[node_limit, 16]; node 0 is the null node
    cdef uint32_t* nodes                 # nodes_arr's data
    cdef uint32_t node_limit             # nodes reserved (virtual memory, backed when used)
    cdef readonly uint32_t node_cap      # nodes in the pool: doubles up to node_limit
    cdef readonly uint32_t node_hwm      # nodes >= node_hwm never used
    cdef readonly uint32_t node_free     # free list through next_and_idx, 0 = none
    cdef readonly uint32_t node_nfree    # free nodes, listed and above node_hwm

    # ---- swap -------------------------------------------------------------------------
    cdef object swap_arr                 # np.uint8[nswap * 4096]: the swap area
    cdef readonly object swap_count_arr  # np.int32[nswap]: swap entries naming a slot; -1 free
    cdef readonly object swap_cache_arr  # np.uint32[nswap]: frame in the swap cache | next free
    cdef uint8_t* swap_data              # swap_arr's data
    cdef int32_t* swap_count             # swap_count_arr's data
    cdef uint32_t* swap_cache            # swap_cache_arr's data
    cdef readonly uint32_t nswap         # slots, slot 0 is the header (never allocated)
    cdef readonly uint32_t swap_hwm      # slots >= swap_hwm never used
    cdef readonly uint32_t swap_free     # free list through swap_cache, 0 = none
    cdef readonly uint32_t swap_nfree    # free slots, listed and above swap_hwm
    cdef uint32_t clock_hand             # second-chance clock over frames
    cdef object undo_arr                 # np.uint64[2 * undo_cap]: the scan's undo log
    cdef uint64_t* undo                  # (slot, old pte) of each PTE unmapped, unfreed
    cdef uint64_t nundo                  # pairs logged in this reclaim_scan call
    cdef uint64_t undo_cap               # pairs undo_arr holds

    # ---- shared-memory objects: one global array of frames, a range per object ------
    cdef readonly object shm_arr         # np.uint32[shm_cap]: frame at an object offset, 0 none
    cdef uint32_t* shm                   # shm_arr's data
    cdef uint64_t shm_cap                # shm_arr's size
    cdef uint64_t shm_hwm                # indexes >= shm_hwm never given to an object

    # ---- counters ------------------------------------------------------------------
    cdef int64_t st[ST_N]                # counters: the named ones (Counter), then per level



cdef int raise_rc(int rc, str what) except -1


# ---- helpers ---------------------------------------------------------------------------

cdef inline void* array_data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline mm_t make_mm(pfn_t pgd, const uint64_t[:, ::1] vmas) noexcept:
    cdef mm_t mm
    mm.pgd = pgd
    mm.nv = vmas.shape[0]
    mm.vmas = <const vma_t*>&vmas[0, 0] if mm.nv else NULL
    return mm


cdef inline bint span_covered(const vma_t* vmas, Py_ssize_t nv, uint64_t lo,
                              uint64_t hi) noexcept nogil:
    """True if some VMA reaches into [lo, hi) (binary search: the list is sorted)."""
    cdef Py_ssize_t a = 0, b = nv, m
    while a < b:                     # first VMA whose end is above lo
        m = (a + b) >> 1
        if vmas[m].end <= lo:
            a = m + 1
        else:
            b = m
    return a < nv and vmas[a].start < hi


# ---- entries, walks, rmap slots ----------------------------------------------------------

cdef inline entry_t eget(State c, pfn_t t, uint32_t i) noexcept nogil:
    """Entry i of table (or pgd) frame t."""
    if c.wide:
        return (<pte64_t*>(c.mem8 + (<size_t>t << PAGE_SHIFT)))[i]
    return (<pte32_t*>(c.mem8 + (<size_t>t << PAGE_SHIFT)))[i]


cdef inline void eset(State c, pfn_t t, uint32_t i, entry_t e) noexcept nogil:
    if c.wide:
        (<pte64_t*>(c.mem8 + (<size_t>t << PAGE_SHIFT)))[i] = e
    else:
        (<pte32_t*>(c.mem8 + (<size_t>t << PAGE_SHIFT)))[i] = <pte32_t>e


cdef inline void* table_ptr(State c, pfn_t t) noexcept nogil:
    return c.mem8 + (<size_t>t << PAGE_SHIFT)


cdef inline uint32_t index_of(State c, uint64_t addr, int level) noexcept nogil:
    return <uint32_t>((addr >> c.shift[level]) & (c.nent[level] - 1))


cdef inline void walk_begin(State c, walk_t* w, int level, uint64_t start,
                            uint64_t end) noexcept nogil:
    """Start walking the entries of a table of `level` that [start, end) reaches."""
    w.start = start
    w.end = end
    w.span = (<uint64_t>1) << c.shift[level]
    w.i = index_of(c, start, level)
    w.last = index_of(c, end - 1, level)
    w.base = (start & ~(w.span - 1)) - w.span      # walk_next steps onto the first


cdef inline bint walk_next(State c, walk_t* w) noexcept nogil:
    """The next entry of the walk: w.idx, the part [w.lo, w.hi) of the range under
    it, and w.base, where its span starts (pgd_addr_end and friends)."""
    if w.i > w.last:
        return False
    w.idx = w.i
    w.i += 1
    w.base += w.span
    w.lo = w.start if w.start > w.base else w.base
    w.hi = w.end if w.end < w.base + w.span else w.base + w.span
    return True


cdef inline void leaf_bounds(State c, uint64_t start, uint64_t end, uint32_t* lo,
                             uint32_t* hi) noexcept nogil:
    """The leaf-table index range [lo, hi) of [start, end), which lies in one table."""
    cdef uint64_t base = start & ~(((<uint64_t>1) << c.shift[2]) - 1)
    lo[0] = <uint32_t>((start - base) >> PAGE_SHIFT)
    hi[0] = <uint32_t>((end - base + PAGE_SIZE - 1) >> PAGE_SHIFT)


cdef inline entry_t table_entry(State c, int level) noexcept nogil:
    """The entry bits of a user entry pointing at a table of level below `level`."""
    if level == c.levels and not c.top_rw:
        return ENTRY_PDPT
    return ENTRY_USER


cdef inline bint entry_rw(State c, int level, entry_t e) noexcept nogil:
    """Does entry e of a table of this level allow writes below it?"""
    if level == c.levels and not c.top_rw:
        return True
    return (e & _RW) != 0


cdef inline bint bad_pfn(State c, pfn_t f) noexcept nogil:
    return f >= c.nframes


cdef inline uint32_t next_present(State c, pfn_t t, uint32_t i, uint32_t n) noexcept nogil:
    """The first index >= i below n of an entry of table t with P set, else n: the
    scan of a sparse upper table (a pgd's 768 user entries, most of them empty)."""
    cdef const pte32_t* p32
    cdef const pte64_t* p64
    if c.wide:
        p64 = <const pte64_t*>table_ptr(c, t)
        while i < n and not (p64[i] & _P):
            i += 1
    else:
        p32 = <const pte32_t*>table_ptr(c, t)
        while i < n and not (p32[i] & _P):
            i += 1
    return i


cdef inline slot_t mk_slot(State c, pfn_t t, uint32_t i) noexcept nogil:
    return ((<slot_t>t) << c.slot_shift) | i


cdef inline uint32_t* node_ptr(State c, uint32_t n) noexcept nogil:
    return c.nodes + <size_t>n * NODE_WORDS


cdef inline slot_t slot_get(State c, const uint32_t* nd, uint32_t k) noexcept nogil:
    if c.wide:
        return (<const uint64_t*>nd)[1 + k]
    return nd[1 + k]


cdef inline slot_t direct_slot_t(State c, uint32_t f, leaf_t* tag) noexcept nogil:
    if leaf_t is pte32_t:
        return c.link[f]
    return ((<slot_t>c.link[f]) << 9) | c.lidx[f]


cdef inline void set_direct_t(State c, uint32_t f, slot_t s, leaf_t* tag) noexcept nogil:
    if leaf_t is pte32_t:
        c.link[f] = <uint32_t>s
    else:
        c.link[f] = <uint32_t>(s >> 9)
        c.lidx[f] = <uint16_t>(s & 511)


cdef inline slot_t direct_get(State c, uint32_t f) noexcept nogil:
    if c.wide:
        return direct_slot_t(c, f, <pte64_t*>NULL)
    return direct_slot_t(c, f, <pte32_t*>NULL)


cdef inline void direct_set(State c, uint32_t f, slot_t s) noexcept nogil:
    if c.wide:
        set_direct_t(c, f, s, <pte64_t*>NULL)
    else:
        set_direct_t(c, f, s, <pte32_t*>NULL)


cdef inline entry_t slot_read(State c, slot_t slot) noexcept nogil:
    return eget(c, <pfn_t>(slot >> c.slot_shift),
                     <uint32_t>(slot & ((1 << c.slot_shift) - 1)))


cdef inline void slot_write(State c, slot_t slot, entry_t e) noexcept nogil:
    eset(c, <pfn_t>(slot >> c.slot_shift),
              <uint32_t>(slot & ((1 << c.slot_shift) - 1)), e)


cdef inline count_t slot_refs(State c, pfn_t t) noexcept nogil:
    """The references one slot of leaf table t holds on its frame: eager accounting
    counts one per use of the table."""
    return c.count[t] if c.eager else 1


cdef inline uint32_t page_head(State c, uint32_t f) noexcept nogil:
    """The frame whose count a reference to frame f goes on (a huge page's head)."""
    if c.flags[f] & F_TAIL:
        return f & ~(<uint32_t>(HPAGE_NR - 1))
    return f


cdef inline bint thp_on(State c) noexcept nogil:
    return c.thp != THP_NEVER


cdef inline bint bad_swap(State c, entry_t pte) noexcept nogil:
    cdef uint32_t s = swp_offset(pte)
    return s == 0 or s >= c.nswap or c.swap_count[s] <= 0


cdef inline void scan_begin(scan_t* s, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil:
    s.t = t
    s.i = lo
    s.n = hi


cdef inline bint scan_next(State c, scan_t* s) noexcept nogil:
    """The next entry of the scan with P set: s.idx (next_present does the looking)."""
    s.idx = next_present(c, s.t, s.i, s.n)
    s.i = s.idx + 1
    return s.idx < s.n


cdef inline void top_begin(top_t* w) noexcept nogil:
    w.v = 0
    w.nxt = 0


cdef inline bint top_next(State c, const mm_t* mm, top_t* w) noexcept nogil:
    """The next run [w.lo, w.hi) of the pgd entries the mm's VMAs reach (no entry lies
    outside them, and a small process has three or four of its 768, 3 or 256), in
    address order, each entry once."""
    cdef uint32_t lo, hi
    while w.v < mm.nv:
        lo = index_of(c, mm.vmas[w.v].start, c.levels)
        hi = index_of(c, mm.vmas[w.v].end - 1, c.levels) + 1
        w.v += 1
        if lo < w.nxt:
            lo = w.nxt
        if lo >= hi:
            continue
        w.nxt = hi
        w.lo = lo
        w.hi = hi
        return True
    return False
