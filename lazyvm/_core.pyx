# cython: language_level=3
"""lazyvm._core: the compiled core of the simulated virtual-memory system.

One fork and one fault, through this module (names are the kernel's):

  fork, copy mode:  Core.fork_copy -> per VMA copy_range(top level)
      copy_range at an upper level: for each present entry in the range, allocate the
      child's table of the level below and recurse; at the leaf, copy_pte_range
      (write-protect COW PTEs in parent and child, get_page, page_add_rmap).
  fork, share mode: Core.fork_share -> share_range(top level)
      copy the levels above share_level; at the entries that point at tables of
      share_level: one more use, RW cleared in the parent's and the child's entry.
      No PTE, frame count or chain is touched.

  fault:  Core.fault_range / fault_pages / replay / read / write -> handle_mm_fault
      walk from the pgd: a missing table is allocated; an entry with RW clear over a
      table with use count > 1 -> privatize (the seed's "privatize the page table", one
      level at a time, top down); use count 1 -> make the entry writable; then at the
      leaf do_no_page / do_swap_page / do_wp_page.

  zap:  Core.zap (munmap), Core.exit_mm (exit, exec)
      a shared table whose span this mm no longer maps -> drop one use (fast path, at
      every level); a shared table still mapped -> privatize first, then zap_pte_range.

Every operation is a chain of per-level functions with one loop shape: the upper-level
walker of an operation loops over the entries of one table that a range reaches and calls
itself one level down; the leaf function does the per-page work.  Leaf loops are compiled
once per entry width (the fused type leaf_t), so i386 keeps its 32-bit loops.

The Python layer (lazyvm/machine.py) validates every argument and owns the VMAs; this
module trusts its inputs, except entries it reads from memory: a frame number outside
physical memory is ERR_BUG (InvariantError), never a wild access.  A VMA list crosses the
boundary as a C-contiguous uint64 array of rows (start, end, vm_flags, shm_base).  Bulk
loops run without the GIL and return an error code; the exception is raised after the GIL
is retaken.  A path that can run out of memory either had everything it needs before it
changed anything, or stops at a consistent point (privatized tables are invisible to the
semantics; a half-copied child is torn down), so OutOfMemory leaves no process's memory
contents changed and no frame leaked.
"""

import mmap

cimport cython
import numpy as np
cimport numpy as cnp
from libc.string cimport memset, memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.errors import OutOfMemory, InvariantError

cnp.import_array()

cdef extern from *:
    """
    #ifdef NDEBUG
    #define LAZYVM_DEBUG_BUILD 0
    #else
    #define LAZYVM_DEBUG_BUILD 1
    #endif
    """
    const int LAZYVM_DEBUG_BUILD

DEBUG_BUILD = bool(LAZYVM_DEBUG_BUILD)   # built with LAZYVM_DEBUG=1 (bounds checks on)

# Layouts (lazyvm/layout.py has the same numbers for the Python layer).
cdef enum:
    L_I386 = 0
    L_PAE = 1
    L_X86_64 = 2
LAYOUT_I386, LAYOUT_PAE, LAYOUT_X86_64 = L_I386, L_PAE, L_X86_64

# Counters: the st[] array of Core.  Per-level counters are base + level - 1.
cdef enum:
    ST_FORKS = 0
    ST_FORKS_COPY
    ST_FORKS_SHARE
    ST_EXITS
    ST_EXECS
    ST_FORK_VMAS
    ST_EXIT_VMAS
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
    ST_PTES_ZAPPED
    ST_RMAP_ADDS
    ST_RMAP_REMOVES
    ST_SHARE_WRPROTECTS
    ST_TABLES_ALLOCATED
    ST_TABLES_FREED
    ST_TABLES_COPIED
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
    ST_TABLES_L = 40                 # current user tables of level 1..4
    ST_UNSHARES_L = 44               # tables privatized, level 1..4
    ST_DROPPED_L = 48                # fast-path drops, level 1..4
    ST_FORKS_ODF = 52
    ST_ODF_SHARED                    # On-demand-fork: leaf tables shared
    ST_ODF_COPIED                    # On-demand-fork: leaf tables copied
    ST_EAGER_REFS                    # eager accounting: page references taken by a share
    ST_EAGER_DROPS                   # eager accounting: references dropped with a table
    ST_THP_FAULTS                    # huge pages allocated by a fault
    ST_THP_FALLBACKS                 # eligible faults with no 512-frame run: 4 KiB pages
    ST_THP_SPLITS                    # huge pmd mappings split into 512 PTEs
    ST_THP_COPIES                    # huge pages copied whole on a write (thp_cow="copy")
    ST_DEPOSITED                     # leaf tables deposited now (one per huge pmd mapping)
    ST_N = 64

_COUNTER_NAMES = (
    ("forks", ST_FORKS), ("forks_copy", ST_FORKS_COPY), ("forks_share", ST_FORKS_SHARE),
    ("exits", ST_EXITS), ("execs", ST_EXECS), ("fork_vmas", ST_FORK_VMAS),
    ("exit_vmas", ST_EXIT_VMAS),
    ("faults", ST_FAULTS), ("demand_zero", ST_DEMAND_ZERO),
    ("zero_page_maps", ST_ZERO_PAGE_MAPS), ("cow_copies", ST_COW_COPIES),
    ("cow_reuses", ST_COW_REUSES), ("shmem_faults", ST_SHMEM_FAULTS),
    ("swap_ins", ST_SWAP_INS), ("swap_outs", ST_SWAP_OUTS), ("unshares", ST_UNSHARES),
    ("unshare_reuses", ST_UNSHARE_REUSES), ("tables_dropped", ST_TABLES_DROPPED),
    ("ptes_copied", ST_PTES_COPIED), ("ptes_zapped", ST_PTES_ZAPPED),
    ("rmap_adds", ST_RMAP_ADDS), ("rmap_removes", ST_RMAP_REMOVES),
    ("share_wrprotects", ST_SHARE_WRPROTECTS), ("tables_allocated", ST_TABLES_ALLOCATED),
    ("tables_freed", ST_TABLES_FREED), ("tables_copied", ST_TABLES_COPIED),
    ("chain_nodes_allocated", ST_CHAIN_ALLOCS),
    ("reclaim_clock_scanned", ST_CLOCK_SCANNED), ("reclaim_rmap_slots", ST_RMAP_SLOTS),
    ("reclaim_scan_ptes", ST_SCAN_PTES), ("page_tables", ST_PAGE_TABLES),
    ("pgds", ST_PGDS), ("pte_chain_nodes", ST_NODES), ("pte_chain_slots", ST_SLOTS),
    ("rmap_direct", ST_DIRECT), ("frames_peak", ST_FRAMES_PEAK),
    ("page_tables_peak", ST_TABLES_PEAK), ("pte_chain_nodes_peak", ST_NODES_PEAK),
    ("forks_odf", ST_FORKS_ODF), ("odf_tables_shared", ST_ODF_SHARED),
    ("odf_tables_copied", ST_ODF_COPIED), ("eager_refs", ST_EAGER_REFS),
    ("eager_refs_dropped", ST_EAGER_DROPS), ("thp_faults", ST_THP_FAULTS),
    ("thp_fallbacks", ST_THP_FALLBACKS), ("thp_splits", ST_THP_SPLITS),
    ("thp_copies", ST_THP_COPIES), ("tables_deposited", ST_DEPOSITED),
)

cdef enum:
    MAX_NODES = 1 << 26          # the chain pool's largest virtual reservation (4 GiB)

cdef extern from *:
    """
    #define LAZYVM_MAP_NORESERVE 0x4000
    """
    const int MAP_NORESERVE "LAZYVM_MAP_NORESERVE"


def host_zeros(size_t nbytes):
    """A zeroed numpy uint8 array over private anonymous memory that the host backs a
    4 KiB page at a time, as it is touched, and does not reserve up front
    (MAP_NORESERVE): a 50 GiB machine without contents or a 32 GiB swap area costs only
    what is used.  (numpy asks for transparent huge pages on large arrays: then writing
    one page table would zero-fill 2 MiB, hence MADV_NOHUGEPAGE.)"""
    buf = mmap.mmap(-1, max(nbytes, PAGE_SIZE),
                    flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_NOHUGEPAGE)
        except OSError:
            pass
    return np.frombuffer(buf, dtype=np.uint8)[:nbytes]


cdef inline void* array_data(object a):
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


@cython.final            # direct (inlinable) calls instead of the vtable
cdef class Core:
    """Physical memory, struct page, the frame allocator, the page-table walkers, the
    rmap pool and swap of one machine.

    Core(nframes, rmap, nswap, layout, contents, eager, thp, thp_copy): nframes frames of
    4 KiB, rmap on or off, nswap swap slots (0 = no swap; slot 0 is the header and never
    used), layout one of LAYOUT_*, contents False for a machine that keeps no page data,
    eager True for eager accounting of shared leaf tables (DESIGN.md section 10; leaf
    sharing only), thp THP_NEVER / THP_ALWAYS / THP_MADVISE (pae and x86_64), thp_copy
    True to copy a huge page whole on a write to a shared one (else split it).
    """
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
    cdef uint8_t* mem8
    cdef readonly uint32_t nframes

    # ---- struct page -----------------------------------------------------------------
    cdef readonly object count_arr, link_arr, index_arr, flags_arr, lidx_arr
    cdef count_t* count
    cdef uint32_t* link
    cdef uint32_t* index
    cdef pflags_t* flags
    cdef uint16_t* lidx

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
    cdef uint32_t nresv, resv_cap
    cdef readonly object hfree_arr       # np.uint32: free 512-frame blocks kept whole (heads)
    cdef uint32_t* hfree
    cdef readonly uint32_t nhfree        # blocks on hfree (their frames count in nfree)

    # ---- rmap: pte_chain pool ---------------------------------------------------------
    cdef readonly bint rmap_enabled
    cdef readonly object nodes_arr       # np.uint32[node_limit, 16]; node 0 is the null node
    cdef uint32_t* nodes
    cdef uint32_t node_limit             # nodes reserved (virtual memory, backed when used)
    cdef readonly uint32_t node_cap      # nodes in the pool: doubles up to node_limit
    cdef readonly uint32_t node_hwm      # nodes >= node_hwm never used
    cdef readonly uint32_t node_free     # free list through next_and_idx, 0 = none
    cdef readonly uint32_t node_nfree    # free nodes, listed and above node_hwm

    # ---- swap -------------------------------------------------------------------------
    cdef object swap_arr                 # np.uint8[nswap * 4096]: the swap area
    cdef readonly object swap_count_arr  # np.int32[nswap]: swap entries naming a slot; -1 free
    cdef readonly object swap_cache_arr  # np.uint32[nswap]: frame in the swap cache | next free
    cdef uint8_t* swap_data
    cdef int32_t* swap_count
    cdef uint32_t* swap_cache
    cdef readonly uint32_t nswap         # slots, slot 0 is the header (never allocated)
    cdef readonly uint32_t swap_hwm
    cdef readonly uint32_t swap_free
    cdef readonly uint32_t swap_nfree
    cdef uint32_t clock_hand             # second-chance clock over frames

    # ---- shared-memory objects: one global array of frames, a range per object ------
    cdef readonly object shm_arr         # np.uint32[shm_cap]: frame at an object offset, 0 none
    cdef uint32_t* shm
    cdef uint64_t shm_cap
    cdef uint64_t shm_hwm

    # ---- counters ------------------------------------------------------------------
    cdef int64_t st[ST_N]

    def __cinit__(self, uint32_t nframes, bint rmap, uint32_t nswap, int layout=0,
                  bint contents=True, bint eager=False, int thp=THP_NEVER,
                  bint thp_copy=False):
        cdef uint32_t k
        self.layout = layout
        self.contents = contents
        self.eager = eager
        self.thp = thp if layout != L_I386 else THP_NEVER
        self.thp_copy = thp_copy
        self.hfree_arr = np.zeros((nframes >> 9) + 1 if self.thp else 1, dtype=np.uint32)
        self.hfree = <uint32_t*>array_data(self.hfree_arr)
        self.nhfree = 0
        if layout == L_I386:
            self.levels, self.wide, self.user_entries, self.top_rw = 2, False, 768, True
            self.shift[1], self.nent[1] = 12, 1024
            self.shift[2], self.nent[2] = 22, 1024
            self.slot_shift, self.nrpte = 10, NRPTE32
        elif layout == L_PAE:
            self.levels, self.wide, self.user_entries, self.top_rw = 3, True, 3, False
            for k in range(1, 3):
                self.shift[k], self.nent[k] = 12 + 9 * (k - 1), 512
            self.shift[3], self.nent[3] = 30, 4
            self.slot_shift, self.nrpte = 9, NRPTE64
        else:
            self.levels, self.wide, self.user_entries, self.top_rw = 4, True, 256, True
            for k in range(1, 5):
                self.shift[k], self.nent[k] = 12 + 9 * (k - 1), 512
            self.slot_shift, self.nrpte = 9, NRPTE64
        self.shift[self.levels + 1] = 64          # the whole address space

        self.nframes = nframes
        self.physical = host_zeros(<size_t>nframes * PAGE_SIZE)
        self.mem8 = <uint8_t*>array_data(self.physical)
        self.count_arr = np.zeros(nframes, dtype=np.int32)
        self.link_arr = np.zeros(nframes, dtype=np.uint32)
        self.flags_arr = np.zeros(nframes, dtype=np.uint16)
        # index (swap cache slot) exists only with swap; lidx only for 64-bit slots
        self.index_arr = np.zeros(nframes if nswap else 1, dtype=np.uint32)
        self.lidx_arr = np.zeros(nframes if (rmap and self.wide) else 1, dtype=np.uint16)
        self.count = <count_t*>array_data(self.count_arr)
        self.link = <uint32_t*>array_data(self.link_arr)
        self.index = <uint32_t*>array_data(self.index_arr)
        self.flags = <pflags_t*>array_data(self.flags_arr)
        self.lidx = <uint16_t*>array_data(self.lidx_arr)
        self.nfree = nframes
        self.free_head = 0
        self.fail_countdown = -1
        memset(self.st, 0, sizeof(self.st))
        self.resv_cap = 64
        self.resv_arr = np.zeros(self.resv_cap, dtype=np.uint32)
        self.resv = <uint32_t*>array_data(self.resv_arr)
        self.nresv = 0

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

        # swap: the area is a reservation the host backs only where slots are written
        self.nswap = nswap
        self.swap_arr = host_zeros(<size_t>max(nswap, 1) * PAGE_SIZE if contents else PAGE_SIZE)
        self.swap_count_arr = np.full(max(nswap, 1), -1, dtype=np.int32)
        self.swap_cache_arr = np.zeros(max(nswap, 1), dtype=np.uint32)
        self.swap_data = <uint8_t*>array_data(self.swap_arr)
        self.swap_count = <int32_t*>array_data(self.swap_count_arr)
        self.swap_cache = <uint32_t*>array_data(self.swap_cache_arr)
        self.swap_hwm = 1
        self.swap_free = 0
        self.swap_nfree = nswap - 1 if nswap > 0 else 0

        self.shm_cap = 1024
        self.shm_arr = np.zeros(self.shm_cap, dtype=np.uint32)
        self.shm = <uint32_t*>array_data(self.shm_arr)
        self.shm_hwm = 0

        self._boot()
        self.clock_hand = self.boot_frames

    cdef void _boot(self) noexcept:
        """Frame 0 is the ZERO_PAGE (so 0 can mean "no frame" everywhere), then the boot
        pgd and the kernel's tables, which direct-map physical memory:
          i386: 256 page tables at PDEs 768..1023 (4 KiB pages);
          pae: one pmd table at PDPT entry 3 (2 MiB pages, the first GiB);
          x86_64: 256 pud tables at pgd entries 256..511, the one of the direct map
          (0xffff888000000000, pgd entry 273) with 1 GiB pages."""
        cdef uint32_t k, i, t, top = self.levels, ntop = self.nent[self.levels]
        cdef uint64_t pfn
        self.zero_pfn = 0
        self.flags[0] = F_RESERVED
        self.hwm = 1
        self.nfree -= 1
        self.swapper_pgd = self.alloc_frame(F_RESERVED, 0)
        for k in range(self.user_entries, ntop):
            t = self.alloc_frame(F_RESERVED, 0)
            for i in range(self.nent[top - 1]):
                if self.layout == L_I386:
                    pfn = (<uint64_t>(k - self.user_entries) << 10) + i
                    if pfn >= self.nframes:
                        break
                    self.eset(t, i, mk_entry(<pfn_t>pfn, PTE_KERNEL))
                elif self.layout == L_PAE:
                    pfn = <uint64_t>i << 9          # 2 MiB pages
                    if pfn < self.nframes:
                        self.eset(t, i, mk_entry(<pfn_t>pfn, HUGE_KERNEL))
                elif k == 273:
                    pfn = <uint64_t>i << 18         # 1 GiB pages
                    if pfn < self.nframes:
                        self.eset(t, i, mk_entry(<pfn_t>pfn, HUGE_KERNEL))
            self.eset(self.swapper_pgd, k, mk_entry(t, ENTRY_KERNEL))
        self.boot_frames = self.hwm
        self.st[ST_FRAMES_PEAK] = self.hwm

    # ================================================================ entries

    cdef inline entry_t eget(self, pfn_t t, uint32_t i) noexcept nogil:
        """Entry i of table (or pgd) frame t."""
        if self.wide:
            return (<pte64_t*>(self.mem8 + (<size_t>t << PAGE_SHIFT)))[i]
        return (<pte32_t*>(self.mem8 + (<size_t>t << PAGE_SHIFT)))[i]

    cdef inline void eset(self, pfn_t t, uint32_t i, entry_t e) noexcept nogil:
        if self.wide:
            (<pte64_t*>(self.mem8 + (<size_t>t << PAGE_SHIFT)))[i] = e
        else:
            (<pte32_t*>(self.mem8 + (<size_t>t << PAGE_SHIFT)))[i] = <pte32_t>e

    cdef inline void* table_ptr(self, pfn_t t) noexcept nogil:
        return self.mem8 + (<size_t>t << PAGE_SHIFT)

    cdef inline uint32_t index_of(self, uint64_t addr, int level) noexcept nogil:
        return <uint32_t>((addr >> self.shift[level]) & (self.nent[level] - 1))

    cdef inline void walk_begin(self, walk_t* w, int level, uint64_t start,
                                uint64_t end) noexcept nogil:
        """Start walking the entries of a table of `level` that [start, end) reaches."""
        w.start = start
        w.end = end
        w.span = (<uint64_t>1) << self.shift[level]
        w.i = self.index_of(start, level)
        w.last = self.index_of(end - 1, level)
        w.base = (start & ~(w.span - 1)) - w.span      # walk_next steps onto the first

    cdef inline bint walk_next(self, walk_t* w) noexcept nogil:
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

    cdef inline void leaf_bounds(self, uint64_t start, uint64_t end, uint32_t* lo,
                                 uint32_t* hi) noexcept nogil:
        """The leaf-table index range [lo, hi) of [start, end), which lies in one table."""
        cdef uint64_t base = start & ~(((<uint64_t>1) << self.shift[2]) - 1)
        lo[0] = <uint32_t>((start - base) >> PAGE_SHIFT)
        hi[0] = <uint32_t>((end - base + PAGE_SIZE - 1) >> PAGE_SHIFT)

    cdef inline entry_t table_entry(self, int level) noexcept nogil:
        """The entry bits of a user entry pointing at a table of level below `level`."""
        if level == self.levels and not self.top_rw:
            return ENTRY_PDPT
        return ENTRY_USER

    cdef inline bint entry_rw(self, int level, entry_t e) noexcept nogil:
        """Does entry e of a table of this level allow writes below it?"""
        if level == self.levels and not self.top_rw:
            return True
        return (e & _RW) != 0

    cdef inline bint bad_pfn(self, pfn_t f) noexcept nogil:
        return f >= self.nframes

    cdef inline uint32_t next_present(self, pfn_t t, uint32_t i, uint32_t n) noexcept nogil:
        """The first index >= i below n of an entry of table t with P set, else n: the
        scan of a sparse upper table (a pgd's 768 user entries, most of them empty)."""
        cdef const pte32_t* p32
        cdef const pte64_t* p64
        if self.wide:
            p64 = <const pte64_t*>self.table_ptr(t)
            while i < n and not (p64[i] & _P):
                i += 1
        else:
            p32 = <const pte32_t*>self.table_ptr(t)
            while i < n and not (p32[i] & _P):
                i += 1
        return i

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
        elif self.nhfree:
            self.break_huge_block()
            f = self.free_head
            self.free_head = self.link[f]
            if zero:
                memset(self.mem8 + (<size_t>f << PAGE_SHIFT), 0, PAGE_SIZE)
        else:
            return 0
        self.nfree -= 1
        self.flags[f] = fl
        self.count[f] = 0
        self.link[f] = 0
        used = self.nframes - self.nfree
        if used > self.st[ST_FRAMES_PEAK]:
            self.st[ST_FRAMES_PEAK] = used
        return f

    cdef inline uint32_t alloc_data(self, pflags_t fl, bint zero) noexcept nogil:
        """A data frame: without contents no byte of it is ever touched."""
        return self.alloc_frame(fl, zero and self.contents)

    cdef void free_frame(self, uint32_t f) noexcept nogil:
        self.flags[f] = F_FREE
        self.count[f] = 0
        self.link[f] = self.free_head
        self.free_head = f
        self.nfree += 1

    cdef void put_page(self, uint32_t f) noexcept nogil:
        """Drop one reference to data frame f (a huge page's head: the huge page); free
        it with its last reference."""
        self.count[f] -= 1
        if self.count[f] == 0:
            if self.flags[f] & F_HUGE:
                self.free_huge(f)
            else:
                self.free_frame(f)

    cdef int reserve_tables(self, uint64_t n) noexcept:
        """Have n frames ahead for alloc_table (a fork's tables): all or none."""
        cdef uint32_t f, fresh
        if n > self.nfree:
            return ERR_NOMEM
        if n > self.resv_cap:
            self.resv_cap = <uint32_t>n
            self.resv_arr = np.zeros(self.resv_cap, dtype=np.uint32)
            self.resv = <uint32_t*>array_data(self.resv_arr)
        while self.nresv < n:
            fresh = self.free_head == 0 and self.hwm < self.nframes
            f = self.alloc_frame(F_PTABLE, False)
            if f == 0:
                self.release_tables()
                return ERR_NOMEM
            self.resv[self.nresv] = (f << 1) | fresh
            self.nresv += 1
        return OK

    cdef void release_tables(self) noexcept nogil:
        """Give back the frames reserve_tables had that were not used."""
        while self.nresv:
            self.nresv -= 1
            self.free_frame(self.resv[self.nresv] >> 1)

    cdef uint32_t alloc_table(self, int level, bint zero) noexcept nogil:
        """A user table of `level` with use count 1 (zeroed unless the caller writes
        every entry), or 0 when out of memory.  Frames reserve_tables had come first."""
        cdef uint32_t t
        if self.nresv:
            self.nresv -= 1
            t = self.resv[self.nresv] >> 1
            if zero and not (self.resv[self.nresv] & 1):
                memset(self.mem8 + (<size_t>t << PAGE_SHIFT), 0, PAGE_SIZE)
            self.flags[t] = F_PTABLE | (level << F_LEVEL_SHIFT)
        else:
            t = self.alloc_frame(F_PTABLE | (level << F_LEVEL_SHIFT), zero)
        if t != 0:
            self.count[t] = 1
            self.st[ST_PAGE_TABLES] += 1
            self.st[ST_TABLES_L + level - 1] += 1
            self.st[ST_TABLES_ALLOCATED] += 1
            if self.st[ST_PAGE_TABLES] > self.st[ST_TABLES_PEAK]:
                self.st[ST_TABLES_PEAK] = self.st[ST_PAGE_TABLES]
        return t

    cdef void free_table(self, uint32_t t) noexcept nogil:
        cdef int level = (self.flags[t] >> F_LEVEL_SHIFT) & 7
        self.st[ST_PAGE_TABLES] -= 1
        self.st[ST_TABLES_L + level - 1] -= 1
        self.st[ST_TABLES_FREED] += 1
        self.free_frame(t)

    # ================================================================ rmap: pte_chains
    #
    # As in 2.6.0 mm/rmap.c:
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

    cdef inline uint32_t* node_ptr(self, uint32_t n) noexcept nogil:
        return self.nodes + <size_t>n * NODE_WORDS

    cdef inline slot_t slot_get(self, const uint32_t* nd, uint32_t k) noexcept nogil:
        if self.wide:
            return (<const uint64_t*>nd)[1 + k]
        return nd[1 + k]

    cdef inline slot_t direct_get(self, uint32_t f) noexcept nogil:
        if self.wide:
            return direct_slot_t(self, f, <pte64_t*>NULL)
        return direct_slot_t(self, f, <pte32_t*>NULL)

    cdef inline void direct_set(self, uint32_t f, slot_t s) noexcept nogil:
        if self.wide:
            set_direct_t(self, f, s, <pte64_t*>NULL)
        else:
            set_direct_t(self, f, s, <pte32_t*>NULL)

    cdef inline slot_t mk_slot(self, pfn_t t, uint32_t i) noexcept nogil:
        return ((<slot_t>t) << self.slot_shift) | i

    cdef int reserve_nodes(self, uint64_t n) noexcept nogil:
        if self.node_nfree >= n:
            return OK
        with gil:
            return self.grow_nodes(n)

    cdef int grow_nodes(self, uint64_t n) noexcept:
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

    cdef uint64_t mapped_entries(self, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil:
        """Entries of leaf table t in [lo, hi) that map a frame other than the ZERO_PAGE:
        the most chain nodes copying them can take (each page_add_rmap makes at most one)."""
        cdef uint32_t i
        cdef uint64_t n = 0
        cdef entry_t e
        for i in range(lo, hi):
            e = self.eget(t, i)
            if pte_present(e) and entry_pfn(e) != self.zero_pfn:
                n += 1
        return n

    cdef uint32_t node_alloc(self) noexcept nogil:
        cdef uint32_t n
        if self.node_free != 0:
            n = self.node_free
            self.node_free = node_next(self.node_ptr(n))
        else:
            n = self.node_hwm
            self.node_hwm += 1
        self.node_nfree -= 1
        memset(self.node_ptr(n), 0, NODE_WORDS * 4)
        self.st[ST_NODES] += 1
        self.st[ST_CHAIN_ALLOCS] += 1
        if self.st[ST_NODES] > self.st[ST_NODES_PEAK]:
            self.st[ST_NODES_PEAK] = self.st[ST_NODES]
        return n

    cdef void node_release(self, uint32_t n) noexcept nogil:
        self.node_ptr(n)[0] = node_encode(self.node_free, 0)
        self.node_free = n
        self.node_nfree += 1
        self.st[ST_NODES] -= 1

    cdef void rmap_add(self, uint32_t f, slot_t slot) noexcept nogil:
        """page_add_rmap: add PTE slot to frame f's chain (page_add_rmap_t, compiled
        per slot width)."""
        if self.wide:
            page_add_rmap_t(self, f, slot, <pte64_t*>NULL)
        else:
            page_add_rmap_t(self, f, slot, <pte32_t*>NULL)

    cdef int rmap_remove(self, uint32_t f, slot_t slot) noexcept nogil:
        """page_remove_rmap: take slot out of frame f's chain; ERR_BUG if it is not there."""
        if self.wide:
            return page_remove_rmap_t(self, f, slot, <pte64_t*>NULL)
        return page_remove_rmap_t(self, f, slot, <pte32_t*>NULL)

    cdef void rmap_clear(self, uint32_t f) noexcept nogil:
        """Forget every slot of frame f (after try_to_unmap has cleared them)."""
        cdef uint32_t n, nxt
        if self.flags[f] & F_DIRECT:
            self.flags[f] &= ~F_DIRECT
            self.st[ST_DIRECT] -= 1
            self.st[ST_RMAP_REMOVES] += 1
        else:
            n = self.link[f]
            while n != 0:
                nxt = node_next(self.node_ptr(n))
                self.st[ST_SLOTS] -= self.nrpte - node_idx(self.node_ptr(n))
                self.st[ST_RMAP_REMOVES] += self.nrpte - node_idx(self.node_ptr(n))
                self.node_release(n)
                n = nxt
        self.link[f] = 0

    def rmap_slots(self, uint32_t f):
        """The (table_pfn, index) slots in frame f's chain, head first."""
        cdef uint32_t n, k, mask = (1 << self.slot_shift) - 1
        cdef slot_t s
        out = []
        if f >= self.nframes or not self.rmap_enabled:
            return out
        if self.flags[f] & (F_FREE | F_RESERVED | F_PTABLE | F_PGD):
            return out
        if self.flags[f] & F_DIRECT:
            s = self.direct_get(f)
            return [(int(s >> self.slot_shift), int(s & mask))]
        n = self.link[f]
        while n != 0:
            for k in range(node_idx(self.node_ptr(n)), self.nrpte):
                s = self.slot_get(self.node_ptr(n), k)
                out.append((int(s >> self.slot_shift), int(s & mask)))
            n = node_next(self.node_ptr(n))
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

    cdef inline bint bad_swap(self, entry_t pte) noexcept nogil:
        cdef uint32_t s = swp_offset(pte)
        return s == 0 or s >= self.nswap or self.swap_count[s] <= 0

    # ================================================================ copy fork
    #
    # copy_range(level, src, dst, start, end): the upper-level walker of copy_page_range
    # (copy_pud_range and copy_pmd_range in 2.6.11+); copy_pte_range is the leaf.

    cdef int copy_range(self, int level, pfn_t src_t, pfn_t dst_t, uint64_t start,
                        uint64_t end, bint cow, bint odf) noexcept nogil:
        """Copy the entries of [start, end) (one VMA's range, or a part of it) under
        table src_t of `level` into dst_t.  odf (On-demand-fork): a leaf table whose whole
        span lies inside this private VMA is shared instead (odf_share_table)."""
        cdef walk_t w
        cdef uint32_t i, lo, hi
        cdef uint64_t base, span, s, e
        cdef entry_t se, de
        cdef pfn_t st, dt
        cdef int rc
        if level == 1:
            self.leaf_bounds(start, end, &lo, &hi)
            if self.flags[src_t] & F_THPMAP:
                self.flags[dst_t] |= F_THPMAP
            if self.wide:
                return copy_pte_range(self, <pte64_t*>self.table_ptr(src_t),
                                      <pte64_t*>self.table_ptr(dst_t), dst_t, lo, hi, cow,
                                      self.flags[src_t] & F_THPMAP)
            return copy_pte_range(self, <pte32_t*>self.table_ptr(src_t),
                                  <pte32_t*>self.table_ptr(dst_t), dst_t, lo, hi, cow, False)
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            se = self.eget(src_t, i)
            if not (se & _P):
                continue
            st = entry_pfn(se)
            if self.bad_pfn(st):
                return ERR_BUG
            if level == 2 and (se & _PS):
                rc = self.copy_huge_pmd(src_t, dst_t, i)
                if rc != OK:
                    return rc
                continue
            if odf and level == 2 and cow and s == base and e == base + span:
                self.odf_share_table(src_t, dst_t, i)
                continue
            de = self.eget(dst_t, i)
            if de & _P:
                dt = entry_pfn(de)
            else:
                # a leaf table that this range covers whole is written entry by entry
                # by copy_pte_range: no need to clear it first
                dt = self.alloc_table(level - 1, level - 1 != 1 or e - s != span)
                if dt == 0:
                    return ERR_NOMEM
                self.st[ST_TABLES_COPIED] += 1
                if odf and level == 2:
                    self.st[ST_ODF_COPIED] += 1
                self.eset(dst_t, i, mk_entry(dt, self.table_entry(level)))
            rc = self.copy_range(level - 1, st, dt, s, e, cow, odf)
            if rc != OK:
                return rc
        return OK

    def fork_copy(self, pfn_t ppgd, const uint64_t[:, ::1] vmas, bint odf=False):
        """dup_mmap with copy_page_range: returns the child's pgd frame.  With odf,
        On-demand-fork: leaf tables inside one private VMA are shared, the rest copied.

        Chain nodes for the worst case are had first (growing the pool to that costs
        nothing, see grow_nodes); tables are allocated as the copy walks, and if one
        cannot be had the half-made child is torn down (its references dropped, its
        tables freed), so OutOfMemory leaves no trace of the child."""
        cdef mm_t mm = make_mm(ppgd, vmas)
        cdef Py_ssize_t v
        cdef pfn_t g
        cdef pfn_t last[MAX_LEVELS + 1]
        cdef uint64_t ntab = 0
        cdef int rc = OK
        memset(last, 0, sizeof(last))
        for v in range(mm.nv):
            ntab += self.tables_in(self.levels, ppgd, mm.vmas[v].start, mm.vmas[v].end, last,
                                   odf and not (mm.vmas[v].flags & VM_SHARED))
        g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        if self.reserve_tables(ntab) != OK:
            self.free_frame(g)
            raise OutOfMemory("no free frame for a page table of the child")
        if self.rmap_enabled and self.reserve_nodes(self.st[ST_SLOTS] + self.st[ST_DIRECT]) != OK \
                and self.reserve_nodes(self._mm_mapped(mm)) != OK:
            self.release_tables()
            self.free_frame(g)
            raise OutOfMemory("no pte_chain node to be had for the child")
        self._init_pgd(g)
        with nogil:
            for v in range(mm.nv):
                rc = self.copy_range(self.levels, ppgd, g, mm.vmas[v].start, mm.vmas[v].end,
                                     not (mm.vmas[v].flags & VM_SHARED), odf)
                if rc != OK:
                    break
        self.release_tables()
        if rc != OK:
            self._teardown(g, mm)
            self._raise(rc, "no free frame for a page table of the child")
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_ODF if odf else ST_FORKS_COPY] += 1
        self.st[ST_FORK_VMAS] += mm.nv
        return g

    cdef uint64_t _mm_mapped(self, mm_t mm) noexcept:
        """The most chain nodes a copy fork can take: the parent's leaf entries in its
        VMAs that map a frame (the ZERO_PAGE aside)."""
        cdef Py_ssize_t v
        cdef uint64_t n = 0
        for v in range(mm.nv):
            n += self.count_range(self.levels, mm.pgd, mm.vmas[v].start, mm.vmas[v].end)
        return n

    cdef uint64_t count_range(self, int level, pfn_t t, uint64_t start, uint64_t end) noexcept:
        """Leaf entries mapping a data frame under table t in [start, end)."""
        cdef walk_t w
        cdef uint32_t i, lo, hi
        cdef uint64_t base, span, s, e, n = 0
        cdef entry_t x
        if level == 1:
            self.leaf_bounds(start, end, &lo, &hi)
            return self.mapped_entries(t, lo, hi)
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if level == 2 and (x & _PS):
                n += 1                       # a huge mapping: one slot
            elif (x & _P) and not self.bad_pfn(entry_pfn(x)):
                n += self.count_range(level - 1, entry_pfn(x), s, e)
        return n

    cdef uint64_t tables_in(self, int level, pfn_t t, uint64_t start, uint64_t end,
                            pfn_t* last, bint odf_share) noexcept:
        """The tables below table t of `level` that [start, end) reaches, each once
        (last[k]: the table of level k counted last, as ranges come in address order);
        what a copy fork of these ranges allocates for the child.  odf_share: the range
        is a private VMA under On-demand-fork, whose leaf tables that it covers whole are
        shared, not allocated."""
        cdef walk_t w
        cdef uint32_t i
        cdef uint64_t base, span, s, e, n = 0
        cdef entry_t x
        cdef pfn_t c
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if not (x & _P) or self.bad_pfn(entry_pfn(x)):
                continue
            c = entry_pfn(x)
            if level == 2 and (x & _PS):
                n += 1                       # the child's deposited table
                continue
            if odf_share and level == 2 and s == base and e == base + span:
                continue
            if last[level - 1] != c:
                last[level - 1] = c
                n += 1
            if level - 1 > 1:
                n += self.tables_in(level - 1, c, s, e, last, odf_share)
        return n

    cdef uint64_t tables_above(self, int level, pfn_t t, int share_level,
                               uint32_t nents) noexcept:
        """The tables below table t of `level` and above share_level: what a share fork
        copies."""
        cdef uint32_t i
        cdef uint64_t n = 0
        cdef entry_t x
        if level - 1 <= share_level:
            return 0
        for i in range(nents):
            x = self.eget(t, i)
            if (x & _P) and not self.bad_pfn(entry_pfn(x)):
                n += 1 + self.tables_above(level - 1, entry_pfn(x), share_level,
                                           self.nent[level - 1])
                if level - 1 == 2 and self.thp_on():     # a copied pmd table: deposits
                    n += self.huge_in(entry_pfn(x))
        return n

    cdef void _teardown(self, pfn_t g, mm_t mm) noexcept:
        """Undo a half-made child: drop what its tables hold, free them and the pgd."""
        mm.pgd = g
        with nogil:
            self.exit_walk(mm)
        self.st[ST_PGDS] -= 1
        self.free_frame(g)

    # ================================================================ share fork

    cdef int share_range(self, int level, pfn_t src_t, pfn_t dst_t, int share_level,
                         uint32_t i, uint32_t nents) noexcept nogil:
        """The seed's fork at one level, over entries [i, nents) of src_t: tables of
        share_level are shared (one more use, RW cleared in both entries:
        share_entries); tables above it are copied, and recursed into."""
        cdef entry_t e
        cdef pfn_t c, nt
        cdef int rc
        if level - 1 == share_level:
            if self.wide:
                rc = share_entries(self, <pte64_t*>self.table_ptr(src_t),
                                   <pte64_t*>self.table_ptr(dst_t), i, nents)
            else:
                rc = share_entries(self, <pte32_t*>self.table_ptr(src_t),
                                   <pte32_t*>self.table_ptr(dst_t), i, nents)
            if rc == OK and level == 2 and self.thp_on():
                rc = self.huge_entries_shared(src_t, dst_t, i, nents, True)
            if rc == OK and self.eager:
                self.eager_share(src_t, i, nents)
            return rc
        while True:
            i = self.next_present(src_t, i, nents)
            if i >= nents:
                return OK
            e = self.eget(src_t, i)
            c = entry_pfn(e)
            if self.bad_pfn(c):
                return ERR_BUG
            nt = self.alloc_table(level - 1, True)
            if nt == 0:
                return ERR_NOMEM
            self.eset(dst_t, i, mk_entry(nt, self.table_entry(level)))
            rc = self.share_range(level - 1, c, nt, share_level, 0, self.nent[level - 1])
            if rc != OK:
                return rc
            i += 1

    def fork_share(self, pfn_t ppgd, const uint64_t[:, ::1] vmas, int share_level):
        """Share fork: copy the pgd (and the levels above share_level); each table of
        share_level gains a use, and the entries pointing at it lose RW in both mms."""
        cdef mm_t mm = make_mm(ppgd, vmas)
        cdef int rc
        cdef pfn_t g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        if self.reserve_tables(self.tables_above(self.levels, ppgd, share_level,
                                                 self.user_entries)) != OK:
            self.free_frame(g)
            raise OutOfMemory("no free frame for a page table of the child")
        if self.thp_on() and self.rmap_enabled and share_level == 1 \
                and self.reserve_nodes(self.st[ST_SLOTS] + self.st[ST_DIRECT]) != OK \
                and self.reserve_nodes(self._mm_mapped(mm)) != OK:
            self.release_tables()
            self.free_frame(g)
            raise OutOfMemory("no pte_chain node to be had for the child")
        self._init_pgd(g)
        with nogil:
            rc = self.top_ranges(&mm, g, share_level, False)
            self.release_tables()
        if rc != OK:
            self._teardown(g, mm)
            self._raise(rc, "no free frame for a page table of the child")
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_SHARE] += 1
        self.st[ST_FORK_VMAS] += mm.nv
        return g

    # ================================================================ privatize

    cdef int privatize(self, pfn_t ptab, uint32_t pi, int level, uint64_t base,
                       const mm_t* mm) noexcept nogil:
        """Give this mm its own copy of the shared table of `level` that entry pi of its
        (private) table ptab points at, before it changes anything under it.

        Leaf: the seed's privatize (privatize_pte).  Upper level: copy the entries; each
        table they point at takes one use, and the entries lose RW in both copies, so
        the level below becomes shared.  The old table loses one use; the entry points
        at the copy, writable.  base: the address the table's span starts at."""
        cdef entry_t pe = self.eget(ptab, pi)
        cdef pfn_t t = entry_pfn(pe), nt
        cdef int rc
        cdef uint32_t nh = 0
        if self.bad_pfn(t):
            return ERR_BUG
        if level == 1 and self.rmap_enabled \
                and self.reserve_nodes(self.mapped_entries(t, 0, self.nent[1]) + 1) != OK:
            return ERR_NOMEM
        if level == 2 and self.thp_on():
            nh = self.huge_in(t)             # each huge mapping copied needs a deposit
            if nh and self.rmap_enabled and self.reserve_nodes(nh) != OK:
                return ERR_NOMEM
            if nh:
                with gil:
                    rc = self.reserve_tables(nh + 1)
                if rc != OK:
                    return ERR_NOMEM
        nt = self.alloc_table(level, True)
        if nt == 0:
            return ERR_NOMEM
        if level == 1:
            if self.flags[t] & F_THPMAP:
                self.flags[nt] |= F_THPMAP
            if self.wide:
                privatize_pte(self, <pte64_t*>self.table_ptr(t), <pte64_t*>self.table_ptr(nt),
                              nt, base, mm, not self.eager)
            else:
                privatize_pte(self, <pte32_t*>self.table_ptr(t), <pte32_t*>self.table_ptr(nt),
                              nt, base, mm, not self.eager)
        else:                       # above the leaf (pae, x86_64): the tables below
            if self.wide:           # become shared
                rc = share_entries(self, <pte64_t*>self.table_ptr(t),
                                   <pte64_t*>self.table_ptr(nt), 0, self.nent[level])
            else:
                rc = share_entries(self, <pte32_t*>self.table_ptr(t),
                                   <pte32_t*>self.table_ptr(nt), 0, self.nent[level])
            if rc == OK and nh:
                rc = self.huge_entries_shared(t, nt, 0, self.nent[level], False)
            if nh:
                self.release_tables()
            if rc != OK:
                return rc
        self.count[t] -= 1
        self.eset(ptab, pi, mk_entry(nt, self.table_entry(level + 1)))
        self.st[ST_UNSHARES] += 1
        self.st[ST_UNSHARES_L + level - 1] += 1
        return OK

    cdef int unshare_entry(self, pfn_t tbl, uint32_t i, int level, uint64_t base,
                           const mm_t* mm) noexcept nogil:
        """Entry i of this mm's table tbl (of level+1) has RW clear over a table of
        `level`: privatize it if others share it, else (the last sharer) make the entry
        writable with no copy."""
        cdef entry_t e = self.eget(tbl, i)
        if self.count[entry_pfn(e)] > 1:
            return self.privatize(tbl, i, level, base, mm)
        self.eset(tbl, i, e | _RW)
        self.st[ST_UNSHARE_REUSES] += 1
        return OK

    # ================================================================ faults

    cdef uint8_t* mmu(self, pfn_t pgd, uint64_t addr, bint write) noexcept nogil:
        """The MMU: translate a user access or return NULL for a page fault.  Checks P
        and US at every level (P only at a pae PDPT entry), RW at every level that has
        it for a write; sets A (and D) in the PTE.  Without contents a hit returns the
        ZERO_PAGE's address (no byte is ever read or written through it)."""
        cdef int level = self.levels
        cdef pfn_t t = pgd
        cdef uint32_t i
        cdef entry_t e
        cdef pte32_t* p32
        cdef pte32_t pde, pte
        if not self.wide:
            # i386: the two levels written out, as the hardware walks them
            pde = (<pte32_t*>self.table_ptr(pgd))[addr >> 22]
            if (pde & (_P | _US)) != (_P | _US) or (write and not (pde & _RW)) \
                    or (pde >> PAGE_SHIFT) >= self.nframes:
                return NULL
            p32 = <pte32_t*>self.table_ptr(pde >> PAGE_SHIFT) + ((addr >> PAGE_SHIFT) & 1023)
            pte = p32[0]
            if (pte & (_P | _US)) != (_P | _US):
                return NULL
            if write:
                if not (pte & _RW):
                    return NULL
                if (pte & (_A | _D)) != (_A | _D):
                    p32[0] = pte | _A | _D
            elif not (pte & _A):
                p32[0] = pte | _A
            if not self.contents or (pte >> PAGE_SHIFT) >= self.nframes:
                return self.mem8
            return self.mem8 + (<size_t>(pte >> PAGE_SHIFT) << PAGE_SHIFT) + (addr & (PAGE_SIZE - 1))
        while level > 1:
            e = self.eget(t, self.index_of(addr, level))
            if level == self.levels and not self.top_rw:
                if not (e & _P):
                    return NULL
            else:
                if (e & (_P | _US)) != (_P | _US) or (write and not (e & _RW)):
                    return NULL
            if e & _PS:                      # a huge mapping: the pmd entry is the leaf
                return self.huge_access(t, self.index_of(addr, level), e, addr, write)
            t = entry_pfn(e)
            if self.bad_pfn(t):
                return NULL
            level -= 1
        i = self.index_of(addr, 1)
        e = self.eget(t, i)
        if (e & (_P | _US)) != (_P | _US):
            return NULL
        if write:
            if not (e & _RW):
                return NULL
            if (e & (_A | _D)) != (_A | _D):
                self.eset(t, i, e | _A | _D)
        elif not (e & _A):
            self.eset(t, i, e | _A)
        if not self.contents or self.bad_pfn(entry_pfn(e)):
            return self.mem8
        return self.mem8 + (<size_t>entry_pfn(e) << PAGE_SHIFT) + (addr & (PAGE_SIZE - 1))

    cdef int handle_mm_fault(self, const mm_t* mm, Py_ssize_t vi, uint64_t addr,
                             bint write) noexcept nogil:
        """handle_mm_fault for an access the VMA mm.vmas[vi] allows (the caller checked).
        Walks down from the pgd making every level present and private to this mm, then
        handles the PTE; loops, as the MMU retries the access, until it would succeed."""
        cdef uint64_t vmf = mm.vmas[vi].flags, idx, span
        cdef int level
        cdef pfn_t t, nt, f
        cdef uint32_t i, ptx = self.index_of(addr, 1)
        cdef entry_t e, pte, npte
        cdef int rc
        self.st[ST_FAULTS] += 1
        if self.rmap_enabled and self.reserve_nodes(1) != OK:   # the PTE this fault maps
            return ERR_NOMEM
        # pgd -> ... -> leaf table: present and private to this mm at every level
        t = mm.pgd
        level = self.levels
        if not self.wide:
            # i386: a present, writable PDE (the common case) needs no more walking
            e = (<pte32_t*>self.table_ptr(mm.pgd))[addr >> 22]
            if (e & (_P | _RW)) == (_P | _RW) and not self.bad_pfn(entry_pfn(e)):
                t = entry_pfn(e)
                level = 1
        while level > 1:
            i = self.index_of(addr, level)
            e = self.eget(t, i)
            if not (e & _P):
                if level == 2 and write and self.thp_on() \
                        and self.thp_eligible(&mm.vmas[vi], addr):
                    rc = self.huge_fault(t, i, vmf)
                    if rc != 1:              # mapped (OK), or out of memory
                        return rc
                nt = self.alloc_table(level - 1, True)
                if nt == 0:
                    return ERR_NOMEM
                self.eset(t, i, mk_entry(nt, self.table_entry(level)))
                continue
            if self.bad_pfn(entry_pfn(e)):
                return ERR_BUG
            if e & _PS:                      # a huge mapping (level 2)
                if not write or (e & _RW):
                    return OK
                rc = self.huge_wp(t, i, mm, vi, addr)
                if rc != OK:
                    return rc
                continue
            if not self.entry_rw(level, e):
                span = (<uint64_t>1) << self.shift[level]
                rc = self.unshare_entry(t, i, level - 1, addr & ~(span - 1), mm)
                if rc != OK:
                    return rc
                continue
            t = entry_pfn(e)
            level -= 1
        while True:                  # the leaf: retried, as the MMU retries the access
            pte = self.eget(t, ptx)
            if (pte & (_P | _US)) == (_P | _US):
                if not write:
                    self.eset(t, ptx, pte | _A)
                    return OK
                if pte & _RW:
                    self.eset(t, ptx, pte | _A | _D)
                    return OK
            if pte == 0:
                # do_no_page
                if vmf & VM_SHARED:
                    idx = mm.vmas[vi].shm_base + ((addr - mm.vmas[vi].start) >> PAGE_SHIFT)
                    f = self.shm[idx]
                    if f == 0:
                        f = self.alloc_data(F_SHMEM, 1)
                        if f == 0:
                            return ERR_NOMEM
                        self.count[f] = 1        # the object's reference
                        self.shm[idx] = f
                    self.count[f] += 1
                    npte = mk_entry(f, vm_page_prot(<uint32_t>vmf))
                    if write:
                        npte |= _D
                    self.st[ST_SHMEM_FAULTS] += 1
                elif not write:
                    self.eset(t, ptx, mk_entry(self.zero_pfn, vm_page_prot(<uint32_t>vmf)))
                    self.st[ST_ZERO_PAGE_MAPS] += 1
                    return OK                    # young (A) already: the access succeeds
                else:
                    f = self.alloc_data(F_ANON, 1)
                    if f == 0:
                        return ERR_NOMEM
                    self.count[f] = 1
                    npte = mk_entry(f, vm_page_prot(<uint32_t>vmf) | _RW | _D)
                    self.st[ST_DEMAND_ZERO] += 1
                self.eset(t, ptx, npte)
                if self.rmap_enabled:
                    self.rmap_add(f, self.mk_slot(t, ptx))
                return OK                        # A, and RW|D for a write: it succeeds
            if not pte_present(pte):
                if self.bad_swap(pte):
                    return ERR_BUG
                rc = self.do_swap_page(t, ptx, pte, <uint32_t>vmf, write)
            elif (pte & _P) and not self.bad_pfn(entry_pfn(pte)):
                rc = self.do_wp_page(t, ptx, pte)
            else:
                return ERR_BUG                   # PROTNONE under an accessible VMA
            if rc != OK:
                return rc

    cdef int do_swap_page(self, pfn_t t, uint32_t i, entry_t pte, uint32_t vmf,
                          bint write) noexcept nogil:
        """Swap in through the swap cache; writable only for a write that finds the
        page exclusive."""
        cdef uint32_t s = swp_offset(pte)
        cdef uint32_t f = self.swap_cache[s]
        cdef entry_t npte
        if f == 0:
            f = self.alloc_data(F_ANON | F_SWAPCACHE, 0)
            if f == 0:
                return ERR_NOMEM
            if self.contents:
                memcpy(self.mem8 + (<size_t>f << PAGE_SHIFT),
                       self.swap_data + (<size_t>s << PAGE_SHIFT), PAGE_SIZE)
            self.count[f] = 1                    # the swap cache's reference
            self.index[f] = s
            self.swap_cache[s] = f
        self.count[f] += 1
        if self.rmap_enabled:
            self.rmap_add(f, self.mk_slot(t, i))
        npte = mk_entry(f, vm_page_prot(vmf))
        self.eset(t, i, npte)
        self.swap_put(s)
        if write and self.count[f] == 1:
            self.eset(t, i, npte | _RW | _D)
        self.st[ST_SWAP_INS] += 1
        return OK

    cdef int do_wp_page(self, pfn_t t, uint32_t i, entry_t pte) noexcept nogil:
        """Copy-on-write: reuse the frame in place if this slot is its only reference,
        else copy it (clear, for the ZERO_PAGE) into a new frame."""
        cdef uint32_t f = entry_pfn(pte)
        cdef uint32_t nf, h = self.page_head(f)       # a frame of a huge page: its head
        cdef bint zero = f == self.zero_pfn
        if not zero and ((self.flags[f] & F_SHMEM) or self.count[h] == 1):
            self.eset(t, i, pte | _RW | _A | _D)
            if not (self.flags[f] & F_SHMEM):
                self.st[ST_COW_REUSES] += 1
            return OK
        nf = self.alloc_data(F_ANON, zero)
        if nf == 0:
            return ERR_NOMEM
        self.count[nf] = 1
        if not zero:
            if self.contents:
                memcpy(self.mem8 + (<size_t>nf << PAGE_SHIFT),
                       self.mem8 + (<size_t>f << PAGE_SHIFT), PAGE_SIZE)
            if self.rmap_enabled and self.rmap_remove(f, self.mk_slot(t, i)) != OK:
                return ERR_BUG
            self.put_page(h)
        if self.rmap_enabled:
            self.rmap_add(nf, self.mk_slot(t, i))
        self.eset(t, i, mk_entry(nf, (pte & FLAGS_MASK) | _RW | _A | _D))
        self.st[ST_COW_COPIES] += 1
        return OK

    # ================================================================ zap
    #
    # zap_range(level, t, start, end): the upper-level walker of zap_page_range; the
    # leaf is zap_pte_range.  unshare_range walks the same way first where a zap or an
    # mprotect must privatize (munmap, mprotect); free_range is free_pgtables.

    cdef int zap_range(self, int level, pfn_t t, uint64_t start, uint64_t end,
                       const mm_t* keep) noexcept nogil:
        """Clear the entries of [start, end) under table t of `level` (private to this
        mm).  A shared table below is skipped (exit drops it whole later; munmap has
        privatized every shared table it must change).  With keep (munmap: the VMAs left
        afterwards), a table whose span keep no longer reaches is freed, or loses one
        use if shared: the fast path."""
        cdef walk_t w
        cdef uint32_t i, lo, hi
        cdef uint64_t base, span, s, e
        cdef entry_t x
        cdef pfn_t c
        cdef int rc
        if level == 1:
            self.leaf_bounds(start, end, &lo, &hi)
            if self.wide:
                return zap_pte_range(self, <pte64_t*>self.table_ptr(t), t, lo, hi)
            return zap_pte_range(self, <pte32_t*>self.table_ptr(t), t, lo, hi)
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if level == 2 and (x & _PS):
                rc = self.zap_huge_pmd(t, i)     # whole: partial ones were split first
                if rc != OK:
                    return rc
                continue
            if x & _P:
                c = entry_pfn(x)
                if self.bad_pfn(c):
                    return ERR_BUG
                if self.count[c] > 1:
                    if keep != NULL and not span_covered(keep.vmas, keep.nv, base, base + span):
                        self.eset(t, i, 0)
                        self.drop_table_use(c, level - 1)
                else:
                    rc = self.zap_range(level - 1, c, s, e, keep)
                    if rc != OK:
                        return rc
                    if keep != NULL and not span_covered(keep.vmas, keep.nv, base, base + span):
                        rc = self.free_range(level - 1, c, True)
                        if rc != OK:
                            return rc
                        self.eset(t, i, 0)
        return OK

    cdef int free_range(self, int level, pfn_t t, bint scan) noexcept nogil:
        """free_pgtables under (and including) private table t of `level`: a shared
        table below loses one use and nothing else (the fast path); a private leaf table
        is freed, emptied first of anything left if scan (munmap; exit has zapped every
        VMA, and no entry lies outside the VMAs)."""
        cdef uint32_t i
        cdef entry_t x
        cdef pfn_t c
        cdef int rc
        if level == 1:
            if scan:
                if self.wide:
                    rc = zap_pte_range(self, <pte64_t*>self.table_ptr(t), t, 0, self.nent[1])
                else:
                    rc = zap_pte_range(self, <pte32_t*>self.table_ptr(t), t, 0, self.nent[1])
                if rc != OK:
                    return rc
            self.free_table(t)
            return OK
        for i in range(self.nent[level]):
            x = self.eget(t, i)
            if not (x & _P):
                continue
            if level == 2 and (x & _PS):
                rc = self.zap_huge_pmd(t, i)
                if rc != OK:
                    return rc
                continue
            c = entry_pfn(x)
            if self.bad_pfn(c):
                return ERR_BUG
            self.eset(t, i, 0)
            if self.count[c] > 1:
                self.drop_table_use(c, level - 1)
            else:
                rc = self.free_range(level - 1, c, scan)
                if rc != OK:
                    return rc
        self.free_table(t)
        return OK

    cdef int unshare_range(self, int level, pfn_t t, uint64_t start, uint64_t end,
                           const mm_t* mm, const mm_t* keep, bint need_entries) noexcept nogil:
        """Privatize, top down, every shared table under table t (private to this mm)
        that an operation on [start, end) will change: for munmap (keep = the VMAs left)
        the shared tables whose span keep still reaches; for mprotect (keep NULL) those
        with an entry in the range.  Stops at a consistent point on ERR_NOMEM (every
        table privatized so far is whole)."""
        cdef walk_t w
        cdef uint32_t i
        cdef uint64_t base, span, s, e
        cdef entry_t x
        cdef pfn_t c
        cdef int rc
        cdef bint shared
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if (x & _P) and not (level == 2 and (x & _PS)):
                c = entry_pfn(x)
                if self.bad_pfn(c):
                    return ERR_BUG
                shared = self.count[c] > 1
                if shared:
                    if keep != NULL:
                        shared = span_covered(keep.vmas, keep.nv, base, base + span)
                    else:
                        shared = self.has_entries(level - 1, c, s, e)
                    if shared:
                        rc = self.privatize(t, i, level - 1, base, mm)
                        if rc != OK:
                            return rc
                        c = entry_pfn(self.eget(t, i))
                if level - 1 > 1 and (shared or not (self.count[c] > 1)):
                    rc = self.unshare_range(level - 1, c, s, e, mm, keep, need_entries)
                    if rc != OK:
                        return rc
        return OK

    cdef bint has_entries(self, int level, pfn_t t, uint64_t start, uint64_t end) noexcept nogil:
        """Does any leaf entry under table t in [start, end) hold something?"""
        cdef walk_t w
        cdef uint32_t i
        cdef uint64_t base, span, s, e
        cdef entry_t x
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if level == 1 or (level == 2 and (x & _PS)):
                if x != 0:
                    return True
            elif (x & _P) and not self.bad_pfn(entry_pfn(x)) \
                    and self.has_entries(level - 1, entry_pfn(x), s, e):
                return True
        return False

    cdef int exit_walk(self, mm_t mm) noexcept nogil:
        """exit_mmap: zap every VMA's range (skipping shared tables), then
        clear_page_tables over the pgd's user entries: a shared table loses one use and
        nothing else; a private one is freed."""
        cdef Py_ssize_t v
        cdef int rc
        for v in range(mm.nv):
            rc = self.zap_range(self.levels, mm.pgd, mm.vmas[v].start, mm.vmas[v].end, NULL)
            if rc != OK:
                return rc
        return self.top_ranges(&mm, 0, 0, True)

    cdef int top_ranges(self, const mm_t* mm, pfn_t g, int share_level,
                        bint free) noexcept nogil:
        """Over the pgd entries the mm's VMAs reach (no entry lies outside them, and a
        small process has three or four of its 768, 3 or 256), in address order, each
        once: share them into the child pgd g (fork_share), or free (drop) what they
        point at (clear_page_tables)."""
        cdef Py_ssize_t v
        cdef uint32_t lo, hi, nxt = 0
        cdef int rc
        for v in range(mm.nv):
            lo = self.index_of(mm.vmas[v].start, self.levels)
            hi = self.index_of(mm.vmas[v].end - 1, self.levels) + 1
            if lo < nxt:
                lo = nxt
            if lo >= hi:
                continue
            nxt = hi
            if free:
                rc = self.free_top(mm.pgd, lo, hi)
            else:
                rc = self.share_range(self.levels, mm.pgd, g, share_level, lo, hi)
            if rc != OK:
                return rc
        return OK

    cdef int free_top(self, pfn_t pgd, uint32_t i, uint32_t n) noexcept nogil:
        """clear_page_tables over pgd entries [i, n)."""
        cdef entry_t x
        cdef pfn_t c
        cdef int rc
        while True:
            i = self.next_present(pgd, i, n)
            if i >= n:
                return OK
            x = self.eget(pgd, i)
            c = entry_pfn(x)
            if self.bad_pfn(c):
                return ERR_BUG
            self.eset(pgd, i, 0)
            i += 1
            if self.count[c] > 1:
                self.drop_table_use(c, self.levels - 1)
            else:
                rc = self.free_range(self.levels - 1, c, False)
                if rc != OK:
                    return rc

    # ================================================================ mprotect

    cdef int change_range(self, int level, pfn_t t, uint64_t start, uint64_t end,
                          entry_t prot) noexcept nogil:
        """change_protection: present PTEs of [start, end) get prot, keeping frame, A, D.
        Every table on the way is private (unshare_range ran first)."""
        cdef walk_t w
        cdef uint32_t i, lo, hi
        cdef uint64_t base, span, s, e
        cdef entry_t x
        if level == 1:
            self.leaf_bounds(start, end, &lo, &hi)
            for i in range(lo, hi):
                x = self.eget(t, i)
                if pte_present(x):
                    self.eset(t, i, (x & (~(<entry_t>FLAGS_MASK) | _A | _D)) | prot)
            return OK
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            s = w.lo
            e = w.hi
            base = w.base
            x = self.eget(t, i)
            if level == 2 and (x & _PS):             # whole (split_range ran first)
                self.eset(t, i, (x & (~(<entry_t>FLAGS_MASK) | _A | _D)) | prot | _PS)
            elif (x & _P) and not self.bad_pfn(entry_pfn(x)):
                self.change_range(level - 1, entry_pfn(x), s, e, prot)
        return OK

    # ================================================================ eager accounting, On-demand-fork
    #
    # Eager accounting (COW page tables v3-v5): a page under a shared leaf table holds one
    # reference per use of the table, taken when the table is shared and dropped when a
    # sharer lets go of it, so a frame's count is the sum over the slots that map it of
    # their table's use count (plus caches).  Leaf sharing only: Machine refuses eager with
    # share_level > 1.  On-demand-fork shares a leaf table whose whole span lies inside one
    # private VMA (copy_range decides per table) and copies the rest.

    cdef inline count_t slot_refs(self, pfn_t t) noexcept nogil:
        """The references one slot of leaf table t holds on its frame."""
        return self.count[t] if self.eager else 1

    cdef void eager_share(self, pfn_t t, uint32_t i, uint32_t n) noexcept nogil:
        """Entries [i, n) of table t point at leaf tables that just gained a use: each
        present page under them takes one more reference."""
        cdef entry_t x
        while True:
            i = self.next_present(t, i, n)
            if i >= n:
                return
            x = self.eget(t, i)
            if not self.bad_pfn(entry_pfn(x)) and not (x & _PS):
                self.eager_refs(entry_pfn(x), 1)
            i += 1

    cdef void eager_refs(self, pfn_t t, int sign) noexcept nogil:
        """One reference more (sign 1) or less (-1) on every present page of leaf table t."""
        cdef int64_t n
        if self.wide:
            n = table_refs(self, <pte64_t*>self.table_ptr(t), sign)
        else:
            n = table_refs(self, <pte32_t*>self.table_ptr(t), sign)
        self.st[ST_EAGER_REFS if sign > 0 else ST_EAGER_DROPS] += n

    cdef void drop_table_use(self, pfn_t c, int level) noexcept nogil:
        """The zap fast path: this mm lets go of shared table c of `level`: one use less,
        and with eager accounting a leaf table's pages lose the reference it held."""
        self.count[c] -= 1
        self.st[ST_TABLES_DROPPED] += 1
        self.st[ST_DROPPED_L + level - 1] += 1
        if self.eager and level == 1:
            self.eager_refs(c, -1)

    cdef void odf_share_table(self, pfn_t src_t, pfn_t dst_t, uint32_t i) noexcept nogil:
        """On-demand-fork: share the leaf table that entry i of src_t (level 2) points at
        with the child's dst_t: one more use, RW cleared in both entries."""
        cdef entry_t e = self.eget(src_t, i) & ~(<entry_t>_RW)
        self.count[entry_pfn(e)] += 1
        self.eset(src_t, i, e)
        self.eset(dst_t, i, e)
        self.st[ST_SHARE_WRPROTECTS] += 1
        self.st[ST_ODF_SHARED] += 1
        if self.eager:
            self.eager_refs(entry_pfn(e), 1)

    # ================================================================ transparent huge pages
    #
    # A huge page is 512 frames, the first 512-aligned (the head, F_ANON | F_HUGE: its count
    # is the huge page's; the others F_TAIL, count 0).  A pmd entry with PS maps it whole:
    # one rmap slot (the pmd table, index) in the head's chain, and one zeroed leaf table
    # deposited on the pmd table's list (link[pmd] -> link[deposit] -> ...), withdrawn to
    # split the mapping into 512 PTEs.  A PTE that maps a frame of a huge page puts its
    # reference on the head and its rmap slot in the frame's own chain; a leaf table that
    # may hold such PTEs is marked F_THPMAP, so the leaf loops choose their compound-aware
    # variant once per table.  A huge mapping lies inside one VMA (every VMA change splits
    # the huge mappings it cuts).  Free 512-frame blocks are kept whole on hfree; a single
    # frame is taken from one only when nothing else is free.

    cdef inline bint thp_on(self) noexcept nogil:
        return self.thp != THP_NEVER

    cdef uint32_t alloc_huge(self) noexcept nogil:
        """A huge page: a free 512-frame block, else 512 never-used frames above the
        high-water mark (the frames skipped to align it go on the free list); its head,
        count 0, or 0 when there is no such run (or fault injection says so)."""
        cdef uint32_t h, k, a, used
        if self.injected_failure():
            return 0
        if self.nhfree:
            self.nhfree -= 1
            h = self.hfree[self.nhfree]
            if self.contents:
                memset(self.mem8 + (<size_t>h << PAGE_SHIFT), 0, <size_t>HPAGE_NR * PAGE_SIZE)
        else:
            a = (self.hwm + HPAGE_NR - 1) & ~(<uint32_t>(HPAGE_NR - 1))
            if <uint64_t>a + HPAGE_NR > self.nframes:
                return 0
            while self.hwm < a:
                self.free_frame(self.hwm)
                self.nfree -= 1                  # it was counted free above hwm already
                self.hwm += 1
            h = a
            self.hwm = a + HPAGE_NR
        for k in range(HPAGE_NR):
            self.flags[h + k] = F_TAIL
            self.count[h + k] = 0
            self.link[h + k] = 0
        self.flags[h] = F_ANON | F_HUGE
        self.nfree -= HPAGE_NR
        used = self.nframes - self.nfree
        if used > self.st[ST_FRAMES_PEAK]:
            self.st[ST_FRAMES_PEAK] = used
        return h

    cdef void free_huge(self, uint32_t h) noexcept nogil:
        """The huge page's last reference is gone: its 512 frames become a free block."""
        cdef uint32_t k
        for k in range(HPAGE_NR):
            self.flags[h + k] = F_FREE
            self.count[h + k] = 0
            self.link[h + k] = 0
        self.hfree[self.nhfree] = h
        self.nhfree += 1
        self.nfree += HPAGE_NR

    cdef void break_huge_block(self) noexcept nogil:
        """Nothing but free blocks is left: put one block's frames on the free list."""
        cdef uint32_t h, k
        self.nhfree -= 1
        h = self.hfree[self.nhfree]
        for k in range(HPAGE_NR - 1, -1, -1):
            self.link[h + k] = self.free_head
            self.free_head = h + k

    cdef inline uint32_t page_head(self, uint32_t f) noexcept nogil:
        """The frame whose count a reference to frame f goes on."""
        if self.flags[f] & F_TAIL:
            return f & ~(<uint32_t>(HPAGE_NR - 1))
        return f

    cdef void deposit(self, pfn_t pmd, pfn_t pt) noexcept nogil:
        """pgtable_trans_huge_deposit: leaf table pt waits on pmd table's list."""
        self.flags[pt] = F_PTABLE | F_DEPOSIT | (1 << F_LEVEL_SHIFT)
        self.link[pt] = self.link[pmd]
        self.link[pmd] = pt
        self.st[ST_DEPOSITED] += 1

    cdef pfn_t withdraw(self, pfn_t pmd) noexcept nogil:
        """pgtable_trans_huge_withdraw: a deposited table of pmd table's list (0: none)."""
        cdef pfn_t pt = self.link[pmd]
        if pt != 0:
            self.link[pmd] = self.link[pt]
            self.link[pt] = 0
            self.flags[pt] = F_PTABLE | (1 << F_LEVEL_SHIFT)
            self.st[ST_DEPOSITED] -= 1
        return pt

    cdef inline bint thp_eligible(self, const vma_t* v, uint64_t addr) noexcept nogil:
        """The 2 MiB around addr lies inside VMA v, private anonymous writable, that THP
        applies to (always: unless nohugepage; madvise: if hugepage)."""
        cdef uint64_t lo = addr & ~(((<uint64_t>1) << HPAGE_SHIFT) - 1)
        if (v.flags & (VM_SHARED | VM_WRITE)) != VM_WRITE:
            return False
        if self.thp == THP_ALWAYS:
            if v.flags & VM_NOHUGEPAGE:
                return False
        elif not (v.flags & VM_HUGEPAGE):
            return False
        return v.start <= lo and lo + ((<uint64_t>1) << HPAGE_SHIFT) <= v.end

    cdef uint8_t* huge_access(self, pfn_t t, uint32_t i, entry_t e, uint64_t addr,
                              bint write) noexcept nogil:
        """The MMU at huge entry e (entry i of pmd table t), which allows the access:
        set A (and D), return the byte's address."""
        cdef pfn_t h = entry_pfn(e)
        if write:
            if (e & (_A | _D)) != (_A | _D):
                self.eset(t, i, e | _A | _D)
        elif not (e & _A):
            self.eset(t, i, e | _A)
        if not self.contents or self.bad_pfn(h + HPAGE_NR - 1):
            return self.mem8
        return self.mem8 + (<size_t>h << PAGE_SHIFT) + (addr & ((<uint64_t>1 << HPAGE_SHIFT) - 1))

    cdef int huge_fault(self, pfn_t t, uint32_t i, uint64_t vmf) noexcept nogil:
        """do_huge_pmd_anonymous_page for a write: entry i of private pmd table t is
        empty.  OK with the huge page mapped writable; 1 when no run of 512 frames is
        free (the caller maps 4 KiB pages: thp_fallbacks); ERR_NOMEM without a frame for
        the deposited table."""
        cdef uint32_t h = self.alloc_huge(), pt
        if h == 0:
            self.st[ST_THP_FALLBACKS] += 1
            return 1
        pt = self.alloc_table(1, True)
        if pt == 0:
            self.free_huge(h)
            return ERR_NOMEM
        self.deposit(t, pt)
        self.count[h] = 1
        self.eset(t, i, mk_entry(h, vm_page_prot(<uint32_t>vmf) | _RW | _D | _PS))
        if self.rmap_enabled:
            self.rmap_add(h, self.mk_slot(t, i))
        self.st[ST_THP_FAULTS] += 1
        return OK

    cdef int copy_huge_pmd(self, pfn_t src_t, pfn_t dst_t, uint32_t i) noexcept nogil:
        """copy_huge_pmd: the child's entry i maps the same huge page, old; RW cleared in
        both; one reference on the head, a slot in its chain; a table deposited for the
        child (from reserve_tables: the fork counted it).  Chain nodes are reserved."""
        cdef entry_t e = self.eget(src_t, i) & ~(<entry_t>_RW)
        cdef pfn_t h = entry_pfn(e), pt
        if self.bad_pfn(h) or not (self.flags[h] & F_HUGE):
            return ERR_BUG
        pt = self.alloc_table(1, True)
        if pt == 0:
            return ERR_NOMEM
        self.deposit(dst_t, pt)
        self.eset(src_t, i, e)
        self.eset(dst_t, i, e & ~(<entry_t>_A))
        self.count[h] += 1
        if self.rmap_enabled:
            self.rmap_add(h, self.mk_slot(dst_t, i))
        return OK

    cdef int huge_entries_shared(self, pfn_t src_t, pfn_t dst_t, uint32_t i, uint32_t n,
                                 bint old) noexcept nogil:
        """After share_entries copied entries [i, n) of pmd table src_t into dst_t (a
        share fork's copied pmd level, or a privatized pmd table): a huge entry among
        them took the head's reference and lost RW as a table would; give the copy its
        rmap slot and deposited table (and make it old if old: a fork's child)."""
        cdef entry_t e
        cdef pfn_t pt
        while True:
            i = self.next_present(dst_t, i, n)
            if i >= n:
                return OK
            e = self.eget(dst_t, i)
            if e & _PS:
                pt = self.alloc_table(1, True)
                if pt == 0:
                    return ERR_NOMEM
                self.deposit(dst_t, pt)
                if old:
                    self.eset(dst_t, i, e & ~(<entry_t>_A))
                if self.rmap_enabled:
                    self.rmap_add(entry_pfn(e), self.mk_slot(dst_t, i))
                self.st[ST_SHARE_WRPROTECTS] -= 1     # a mapping copied, not a table shared
            i += 1

    cdef uint32_t huge_in(self, pfn_t t) noexcept nogil:
        """Huge entries of pmd table t."""
        cdef uint32_t i = 0, n = 0
        while True:
            i = self.next_present(t, i, self.nent[2])
            if i >= self.nent[2]:
                return n
            if self.eget(t, i) & _PS:
                n += 1
            i += 1

    cdef int zap_huge_pmd(self, pfn_t t, uint32_t i) noexcept nogil:
        """zap_huge_pmd: clear entry i of pmd table t, free its deposited table, drop the
        huge page's reference and slot."""
        cdef entry_t e = self.eget(t, i)
        cdef pfn_t h = entry_pfn(e), pt
        if self.bad_pfn(h) or not (self.flags[h] & F_HUGE):
            return ERR_BUG
        pt = self.withdraw(t)
        if pt == 0:
            return ERR_BUG
        self.free_table(pt)
        self.eset(t, i, 0)
        if e & _D:
            self.flags[h] |= F_DIRTY
        if self.rmap_enabled and self.rmap_remove(h, self.mk_slot(t, i)) != OK:
            return ERR_BUG
        self.st[ST_PTES_ZAPPED] += 1
        self.put_page(h)
        return OK

    cdef int split_huge_pmd(self, pfn_t t, uint32_t i) noexcept nogil:
        """__split_huge_pmd: entry i of pmd table t maps a huge page; map it instead by
        the 512 PTEs of the withdrawn deposit (same bits, no PS), each a reference on the
        head and a slot in its frame's chain.  Needs no frame: only chain nodes, had
        first (ERR_NOMEM, nothing changed)."""
        cdef entry_t e = self.eget(t, i), bits
        cdef pfn_t h = entry_pfn(e), pt
        cdef uint32_t k
        if self.bad_pfn(h) or not (self.flags[h] & F_HUGE):
            return ERR_BUG
        if self.rmap_enabled and self.reserve_nodes(HPAGE_NR + 1) != OK:
            return ERR_NOMEM
        pt = self.withdraw(t)
        if pt == 0:
            return ERR_BUG
        self.flags[pt] |= F_THPMAP
        bits = e & (_P | _RW | _US | _A | _D)
        if self.rmap_enabled and self.rmap_remove(h, self.mk_slot(t, i)) != OK:
            return ERR_BUG
        for k in range(HPAGE_NR):
            self.eset(pt, k, mk_entry(h + k, bits))
            if self.rmap_enabled:
                self.rmap_add(h + k, self.mk_slot(pt, k))
        self.count[h] += HPAGE_NR - 1
        self.eset(t, i, mk_entry(pt, ENTRY_USER))
        self.st[ST_THP_SPLITS] += 1
        return OK

    cdef int split_range(self, int level, pfn_t t, uint64_t start, uint64_t end,
                         bint every) noexcept nogil:
        """Split the huge mappings under table t that [start, end) covers in part (every:
        all it reaches).  The tables on the way are private (unshare_range ran)."""
        cdef walk_t w
        cdef entry_t x
        cdef int rc
        self.walk_begin(&w, level, start, end)
        while self.walk_next(&w):
            x = self.eget(t, w.idx)
            if not (x & _P) or self.bad_pfn(entry_pfn(x)):
                continue
            if level == 2:
                if (x & _PS) and (every or w.lo != w.base or w.hi != w.base + w.span):
                    rc = self.split_huge_pmd(t, w.idx)
                    if rc != OK:
                        return rc
            else:
                rc = self.split_range(level - 1, entry_pfn(x), w.lo, w.hi, every)
                if rc != OK:
                    return rc
        return OK

    cdef int huge_wp(self, pfn_t t, uint32_t i, const mm_t* mm, Py_ssize_t vi,
                     uint64_t addr) noexcept nogil:
        """do_huge_pmd_wp_page: a write to the read-only huge mapping at entry i of
        private pmd table t.  One reference: make it writable.  Else split this mapping
        (the 4 KiB copy-on-write follows when the fault retries), or with thp_copy copy
        the huge page whole (no run free: split instead, thp_fallbacks)."""
        cdef entry_t e = self.eget(t, i)
        cdef pfn_t h = entry_pfn(e), nh
        if self.bad_pfn(h) or not (self.flags[h] & F_HUGE):
            return ERR_BUG
        if self.count[h] == 1:
            self.eset(t, i, e | _RW | _A | _D)
            self.st[ST_COW_REUSES] += 1
            return OK
        if self.thp_copy:
            nh = self.alloc_huge()
            if nh != 0:
                self.count[nh] = 1
                if self.contents:
                    memcpy(self.mem8 + (<size_t>nh << PAGE_SHIFT),
                           self.mem8 + (<size_t>h << PAGE_SHIFT), <size_t>HPAGE_NR * PAGE_SIZE)
                if self.rmap_enabled:
                    if self.rmap_remove(h, self.mk_slot(t, i)) != OK:
                        return ERR_BUG
                    self.rmap_add(nh, self.mk_slot(t, i))
                self.put_page(h)
                self.eset(t, i, mk_entry(nh, (e & FLAGS_MASK) | _RW | _A | _D))
                self.st[ST_THP_COPIES] += 1
                return OK
            self.st[ST_THP_FALLBACKS] += 1
        return self.split_huge_pmd(t, i)

    cdef int split_huge_page(self, uint32_t h) noexcept nogil:
        """split_huge_page (rmap reclaim): split every pmd mapping of huge page h, then
        make its 512 frames ordinary pages, each counting the slots that map it (a frame
        no PTE maps is freed).  ERR_NOMEM if chain nodes cannot be had."""
        cdef uint32_t k, n, j, f
        cdef int rc
        cdef bint found = True
        cdef int64_t total = 0, before
        cdef count_t refs
        cdef slot_t slot = 0
        while found:                     # the pmd slots, one at a time (splitting edits the chain)
            found = False
            if self.flags[h] & F_DIRECT:
                slot = self.direct_get(h)
                found = ((self.flags[<pfn_t>(slot >> self.slot_shift)] >> F_LEVEL_SHIFT) & 7) == 2
            else:
                n = self.link[h]
                while n != 0 and not found:
                    for j in range(node_idx(self.node_ptr(n)), self.nrpte):
                        slot = self.slot_get(self.node_ptr(n), j)
                        if ((self.flags[<pfn_t>(slot >> self.slot_shift)] >> F_LEVEL_SHIFT) & 7) == 2:
                            found = True
                            break
                    n = node_next(self.node_ptr(n))
            if found:
                rc = self.split_huge_pmd(<pfn_t>(slot >> self.slot_shift),
                                         <uint32_t>(slot & ((1 << self.slot_shift) - 1)))
                if rc != OK:
                    return rc
        before = self.count[h]
        for k in range(HPAGE_NR):
            f = h + k
            refs = 0
            if self.flags[f] & F_DIRECT:
                refs = self.slot_refs(<pfn_t>(self.direct_get(f) >> self.slot_shift))
            else:
                n = self.link[f]
                while n != 0:
                    for j in range(node_idx(self.node_ptr(n)), self.nrpte):
                        refs += self.slot_refs(<pfn_t>(self.slot_get(self.node_ptr(n), j)
                                                       >> self.slot_shift))
                    n = node_next(self.node_ptr(n))
            total += refs
            self.flags[f] = (self.flags[f] & (F_DIRECT | F_DIRTY)) | F_ANON
            self.count[f] = refs
        if total != before:
            return ERR_BUG
        for k in range(HPAGE_NR):
            if self.count[h + k] == 0:
                self.free_frame(h + k)
        return OK

    # ================================================================ Python entry points
    #
    # Each raises OutOfMemory with nothing changed, or with only a consistent prefix of
    # faults done (the pages faulted in before the failure stay mapped).

    def set_fail_after(self, n):
        self.fail_countdown = -1 if n is None else n

    def new_pgd(self):
        """pgd_alloc: a page directory with an empty user part and the kernel's entries."""
        cdef uint32_t g = self.alloc_frame(F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for a page directory")
        self._init_pgd(g)
        return g

    cdef void _init_pgd(self, uint32_t g) noexcept:
        """An empty user part, then the kernel's entries copied from the boot pgd."""
        cdef size_t w = 8 if self.wide else 4
        cdef size_t user = self.user_entries * w, total = self.nent[self.levels] * w
        memset(self.table_ptr(g), 0, user)
        memcpy(<uint8_t*>self.table_ptr(g) + user,
               <uint8_t*>self.table_ptr(self.swapper_pgd) + user, total - user)
        if total < PAGE_SIZE:                # pae: the 32-byte PDPT in a frame of its own
            memset(<uint8_t*>self.table_ptr(g) + total, 0, PAGE_SIZE - total)
        self.st[ST_PGDS] += 1

    def fault_range(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                    uint64_t start, uint64_t end, bint write):
        """Access every page of [start, end) inside VMA vi (bulk faulting: touch)."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef uint64_t a
        cdef int rc = OK
        with nogil:
            a = start
            while a < end:
                if self.mmu(pgd, a, write) == NULL:
                    rc = self.handle_mm_fault(&mm, vi, a, write)
                    if rc != OK:
                        break
                a += PAGE_SIZE
        self._raise(rc, "no free frame (or pte_chain node) for a page fault")

    def fault_pages(self, pfn_t pgd, const uint64_t[:, ::1] vmas, const int64_t[::1] addrs,
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
                    why = self.vma_allows(&mm, addrs[i], w, &vi)
                    if why >= 0:
                        bad = i
                        break
            if bad < 0:
                for i in range(n):
                    if per:
                        w = wv[i]
                    addr = <uint64_t>addrs[i] & ~(<uint64_t>(PAGE_SIZE - 1))
                    if self.mmu(pgd, addr, w) != NULL:
                        continue
                    why = self.vma_allows(&mm, addrs[i], w, &vi)
                    if why >= 0:
                        bad = i
                        break
                    rc = self.handle_mm_fault(&mm, vi, addr, w)
                    if rc != OK:
                        break
        self._raise(rc, "no free frame (or pte_chain node) for a page fault")
        if bad < 0:
            return -1
        return (bad, why)

    cdef inline int vma_allows(self, const mm_t* mm, int64_t addr, bint write,
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

    def access(self, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t addr,
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
        if self.vma_allows(&mm, <int64_t>addr, write, &vi) >= 0 or addr + n > mm.vmas[vi].end:
            return None
        p = self.mmu(pgd, addr, write)
        if p == NULL:
            rc = self.handle_mm_fault(&mm, vi, addr, write)
            if rc != OK:
                self._raise(rc, "no free frame (or pte_chain node) for a page fault")
            p = self.mmu(pgd, addr, write)
        if write:
            src = data
            memcpy(p, &src[0], n)
            return True
        return (<char*>p)[:n]

    def read_into(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                  uint64_t addr, uint8_t[::1] out, Py_ssize_t off, Py_ssize_t n):
        """Read n bytes at addr (inside VMA vi) into out[off:off+n], faulting as needed."""
        self._copy(pgd, vmas, vi, addr, &out[0] + off if out.shape[0] else NULL, n, False)

    def write_from(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                   uint64_t addr, const uint8_t[::1] src, Py_ssize_t off, Py_ssize_t n):
        """Write src[off:off+n] at addr (inside VMA vi); the caller faulted the pages in
        for write first, so a failure leaves every byte as it was."""
        self._copy(pgd, vmas, vi, addr, <uint8_t*>&src[0] + off if src.shape[0] else NULL,
                   n, True)

    cdef _copy(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
               uint64_t addr, uint8_t* buf, Py_ssize_t n, bint write):
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef Py_ssize_t done = 0, chunk
        cdef uint64_t a = addr
        cdef uint8_t* p
        cdef int rc = OK
        with nogil:
            while done < n:
                p = self.mmu(pgd, a, write)
                if p == NULL:
                    rc = self.handle_mm_fault(&mm, vi, a, write)
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
        self._raise(rc, "no free frame (or pte_chain node) for a page fault")

    cdef _raise(self, int rc, str what):
        if rc == ERR_NOMEM:
            raise OutOfMemory(what)
        if rc != OK:
            raise InvariantError("the core found a broken invariant or a corrupted entry "
                                 "(an entry naming a frame outside physical memory, a "
                                 "PROTNONE entry under an accessible VMA, or a chain "
                                 "missing a slot): run Machine.check()")

    def zap(self, pfn_t pgd, const uint64_t[:, ::1] old_vmas,
            const uint64_t[:, ::1] new_vmas, uint64_t start, uint64_t end):
        """munmap [start, end): first privatize every shared table the zap must change
        (those whose span new_vmas still reaches; an OutOfMemory there leaves the mm as
        it was, with some tables privatized), then zap the range and free (or drop one
        use of) every table whose span new_vmas no longer reaches."""
        cdef mm_t mm = make_mm(pgd, old_vmas)
        cdef mm_t keep = make_mm(pgd, new_vmas)
        cdef int rc
        with nogil:
            rc = self.unshare_range(self.levels, pgd, start, end, &mm, &keep, False)
            if rc == OK and self.thp_on():
                rc = self.split_range(self.levels, pgd, start, end, False)
        self._raise(rc, "no free frame or pte_chain node to privatize a shared page table")
        with nogil:
            rc = self.zap_range(self.levels, pgd, start, end, &keep)
        self._raise(rc, "")

    def exit_mm(self, pfn_t pgd, const uint64_t[:, ::1] vmas, bint free_pgd):
        """exit_mmap / exec: drop the whole user space; frees the pgd too if free_pgd."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef int rc
        with nogil:
            rc = self.exit_walk(mm)
        if free_pgd:
            self.st[ST_PGDS] -= 1
            self.free_frame(pgd)
            self.st[ST_EXITS] += 1
        else:
            self.st[ST_EXECS] += 1
        self.st[ST_EXIT_VMAS] += mm.nv
        self._raise(rc, "")

    def mprotect(self, pfn_t pgd, const uint64_t[:, ::1] vmas, const uint64_t[:, ::1] pieces):
        """change_protection for each row (start, end, new vm_flags) of pieces, all
        inside the current VMAs.  A shared table with an entry in the range is
        privatized first (an OutOfMemory there changes no protection)."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef Py_ssize_t k, npc = pieces.shape[0]
        cdef int rc = OK
        with nogil:
            for k in range(npc):
                rc = self.unshare_range(self.levels, pgd, pieces[k, 0], pieces[k, 1], &mm,
                                        NULL, True)
                if rc == OK and self.thp_on():   # PROT_NONE: no huge mapping keeps it
                    rc = self.split_range(self.levels, pgd, pieces[k, 0], pieces[k, 1],
                                          not (pieces[k, 2] & (VM_READ | VM_WRITE)))
                if rc != OK:
                    break
        self._raise(rc, "no free frame or pte_chain node to privatize a shared page table")
        with nogil:
            for k in range(npc):
                self.change_range(self.levels, pgd, pieces[k, 0], pieces[k, 1],
                                  vm_page_prot(<uint32_t>pieces[k, 2]))

    def thp_split(self, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t start,
                  uint64_t end):
        """A VMA boundary moves to start and end (madvise): split the huge mappings
        [start, end) covers in part, privatizing first the shared tables on the way."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef int rc = OK
        if not self.thp_on():
            return
        with nogil:
            rc = self.unshare_range(self.levels, pgd, start, end, &mm, NULL, True)
            if rc == OK:
                rc = self.split_range(self.levels, pgd, start, end, False)
        self._raise(rc, "no free frame or pte_chain node to privatize a shared page table")

    # ================================================================ shared memory

    def shm_alloc(self, uint64_t npages):
        """Room for a shared-memory object of npages pages: returns its base index."""
        cdef uint64_t base = self.shm_hwm
        cdef uint64_t cap = self.shm_cap
        while cap < base + npages:
            cap *= 2
        if cap != self.shm_cap:
            arr = np.zeros(cap, dtype=np.uint32)
            arr[:self.shm_hwm] = self.shm_arr[:self.shm_hwm]
            self.shm_arr = arr
            self.shm = <uint32_t*>array_data(arr)
            self.shm_cap = cap
        self.shm_hwm = base + npages
        return base

    def shm_release(self, uint64_t base, uint64_t npages):
        """The object is gone: drop its reference on each of its frames."""
        cdef uint64_t i
        cdef uint32_t f
        for i in range(base, base + npages):
            f = self.shm[i]
            if f != 0:
                self.shm[i] = 0
                self.put_page(f)

    # ================================================================ reclaim

    cdef inline entry_t slot_read(self, slot_t slot) noexcept nogil:
        return self.eget(<pfn_t>(slot >> self.slot_shift),
                         <uint32_t>(slot & ((1 << self.slot_shift) - 1)))

    cdef inline void slot_write(self, slot_t slot, entry_t e) noexcept nogil:
        self.eset(<pfn_t>(slot >> self.slot_shift),
                  <uint32_t>(slot & ((1 << self.slot_shift) - 1)), e)

    cdef bint page_referenced(self, uint32_t f) noexcept nogil:
        """Test and clear A in every slot that maps f (through its chain); a chain left
        with one slot collapses back to direct, as 2.6.0's page_referenced does."""
        cdef bint ref = False
        cdef uint32_t n, k, nslots = 0
        cdef slot_t slot, last = 0
        cdef entry_t e
        if self.flags[f] & F_DIRECT:
            slot = self.direct_get(f)
            e = self.slot_read(slot)
            self.st[ST_RMAP_SLOTS] += 1
            if e & _A:
                self.slot_write(slot, e & ~(<entry_t>_A))
                return True
            return False
        n = self.link[f]
        while n != 0:
            for k in range(node_idx(self.node_ptr(n)), self.nrpte):
                slot = self.slot_get(self.node_ptr(n), k)
                e = self.slot_read(slot)
                if e & _A:
                    self.slot_write(slot, e & ~(<entry_t>_A))
                    ref = True
                nslots += 1
                last = slot
            n = node_next(self.node_ptr(n))
        self.st[ST_RMAP_SLOTS] += nslots
        if nslots == 1:
            self.rmap_clear(f)
            self.st[ST_RMAP_REMOVES] -= 1        # the slot moves, it is not removed
            self.direct_set(f, last)
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
        if self.contents:
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
        cdef uint32_t s, n, k
        s = self.add_to_swap(f)
        if s == 0:
            return ERR_NOMEM
        if self.flags[f] & F_DIRECT:
            self._unmap_slot(f, self.direct_get(f), s)
        else:
            n = self.link[f]
            while n != 0:
                for k in range(node_idx(self.node_ptr(n)), self.nrpte):
                    self._unmap_slot(f, self.slot_get(self.node_ptr(n), k), s)
                n = node_next(self.node_ptr(n))
        self.rmap_clear(f)
        self.swapcache_drop(s)                   # written: the frame goes
        return OK

    cdef void _unmap_slot(self, uint32_t f, slot_t slot, uint32_t s) noexcept nogil:
        if self.slot_read(slot) & _D:
            self.flags[f] |= F_DIRTY
        self.slot_write(slot, swp_entry(s))
        self.swap_count[s] += 1
        self.count[f] -= self.slot_refs(<pfn_t>(slot >> self.slot_shift))
        self.st[ST_RMAP_SLOTS] += 1

    def reclaim_rmap(self, uint32_t n):
        """Swap out up to n private anonymous frames chosen by a second-chance clock,
        testing references and unmapping through the rmap.  Returns frames freed."""
        cdef uint32_t freed = 0, f
        cdef uint64_t scanned = 0, limit = 2 * <uint64_t>self.hwm
        cdef pflags_t fl
        cdef int rc = OK
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
                if fl & F_HUGE:                  # split it first, then its frames are pages
                    rc = self.split_huge_page(f)
                    if rc != OK:
                        break
                    fl = self.flags[f]
                if (fl & (F_ANON | F_FREE | F_RESERVED)) != F_ANON:
                    continue
                if not (fl & F_DIRECT) and self.link[f] == 0:
                    continue                     # mapped by no PTE (swap cache only)
                if self.page_referenced(f):
                    continue
                rc = self.swap_out_frame(f)
                if rc != OK:
                    break
                freed += 1
        self.st[ST_CLOCK_SCANNED] += scanned
        if rc != OK and freed == 0:
            raise OutOfMemory("no swap slot to be had")
        return freed

    def reclaim_scan(self, uint32_t n, list mms, uint32_t start):
        """Linux 2.4 swap_out: walk the page tables of each mm (pgd, vmas) in turn from
        mms[start]; a young PTE loses A and is skipped, an old one is unmapped to a swap
        entry (try_to_swap_out); a frame is freed when only the swap cache holds it.
        Returns (frames freed, index of the mm to start from next time)."""
        cdef uint32_t freed = 0
        cdef Py_ssize_t nm = len(mms), turn, m, v
        cdef mm_t mm
        cdef int rc = OK
        if self.swap_nfree == 0:
            raise OutOfMemory("the swap area is full")
        if nm == 0:
            return 0, 0
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
                    rc = self.scan_range(self.levels, mm.pgd, mm.vmas[v].start,
                                         mm.vmas[v].end, n, &freed)
            m = (m + 1) % nm
            if freed >= n or rc != OK:
                break
        if rc == ERR_NOMEM and freed == 0:
            raise OutOfMemory("no swap slot to be had")
        if rc == ERR_BUG:
            self._raise(rc, "")
        return freed, m

    cdef int scan_range(self, int level, pfn_t t, uint64_t start, uint64_t end,
                        uint32_t n, uint32_t* freed) noexcept nogil:
        """swap_out_pgd/pmd: the upper-level walker of 2.4's scan; try_to_swap_out is
        the leaf."""
        cdef walk_t w
        cdef uint32_t i, lo, hi, f, s
        cdef uint64_t base, span, sa, ea
        cdef entry_t x, pte
        cdef int64_t scanned = 0
        cdef int rc
        if level == 1:
            self.leaf_bounds(start, end, &lo, &hi)
            rc = OK
            for i in range(lo, hi):
                scanned += 1
                pte = self.eget(t, i)
                if not pte_present(pte):     # PROTNONE frames are mapped too
                    continue
                f = entry_pfn(pte)
                if f == self.zero_pfn or self.bad_pfn(f) \
                        or (self.flags[f] & (F_ANON | F_HUGE)) != F_ANON:
                    continue                 # a frame of a huge page stays (no rmap to split it)
                if pte & _A:
                    self.eset(t, i, pte & ~(<entry_t>_A))
                    continue
                s = self.add_to_swap(f)
                if s == 0:
                    rc = ERR_NOMEM
                    break
                if pte & _D:
                    self.flags[f] |= F_DIRTY
                self.eset(t, i, swp_entry(s))
                self.swap_count[s] += 1
                if self.rmap_enabled and self.rmap_remove(f, self.mk_slot(t, i)) != OK:
                    rc = ERR_BUG
                    break
                self.count[f] -= self.slot_refs(t)
                if self.count[f] == 1:
                    self.swapcache_drop(s)
                    freed[0] += 1
                    if freed[0] >= n:
                        break
            self.st[ST_SCAN_PTES] += scanned
            return rc
        self.walk_begin(&w, level, start, end)
        span = w.span
        while self.walk_next(&w):
            i = w.idx
            sa = w.lo
            ea = w.hi
            base = w.base
            x = self.eget(t, i)
            if level == 2 and (x & _PS):
                rc = self.split_huge_pmd(t, i)   # reclaim splits a huge mapping first
                if rc != OK:
                    return rc
                x = self.eget(t, i)
            if (x & _P) and not self.bad_pfn(entry_pfn(x)):
                rc = self.scan_range(level - 1, entry_pfn(x), sa, ea, n, freed)
                if rc != OK or freed[0] >= n:
                    return rc
        return OK

    # ================================================================ inspection

    def reset_peaks(self):
        self.st[ST_FRAMES_PEAK] = self.nframes - self.nfree
        self.st[ST_TABLES_PEAK] = self.st[ST_PAGE_TABLES]
        self.st[ST_NODES_PEAK] = self.st[ST_NODES]

    def stats(self):
        cdef int k
        out = {name: int(self.st[i]) for name, i in _COUNTER_NAMES}
        for k in range(1, self.levels):
            out[f"page_tables_l{k}"] = int(self.st[ST_TABLES_L + k - 1])
            out[f"unshares_l{k}"] = int(self.st[ST_UNSHARES_L + k - 1])
            out[f"tables_dropped_l{k}"] = int(self.st[ST_DROPPED_L + k - 1])
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

    def counters(self):
        """The event and level-free counters of stats() alone: no scan of the frame
        arrays, so cheap enough to read around every operation (Machine's accounts)."""
        return {name: int(self.st[i]) for name, i in _COUNTER_NAMES}

    def frame_count(self, uint32_t f):
        return int(self.count[f])

    def frame_flags(self, uint32_t f):
        return int(self.flags[f])

    def walk(self, pfn_t pgd, uint64_t addr):
        """[(level, table, index, entry), ...] from the pgd down, ending after the
        first entry that is not present (or at the leaf)."""
        cdef int level = self.levels
        cdef pfn_t t = pgd
        cdef uint32_t i
        cdef entry_t e
        out = []
        while level >= 1:
            i = self.index_of(addr, level)
            e = self.eget(t, i)
            out.append((level, int(t), int(i), int(e)))
            if level == 1 or not (e & _P) or self.bad_pfn(entry_pfn(e)) or (e & _PS):
                break
            t = entry_pfn(e)
            level -= 1
        return out

    def entry_at(self, pfn_t pgd, uint64_t addr, int level):
        """The entry of `level` (1 = the PTE) on addr's walk, or 0 if the walk stops
        above it."""
        cdef int k = self.levels
        cdef pfn_t t = pgd
        cdef entry_t e
        while True:
            e = self.eget(t, self.index_of(addr, k))
            if k == level or (e & _PS and k == 2):   # a huge mapping: its pmd entry
                return e
            if not (e & _P) or self.bad_pfn(entry_pfn(e)):
                return 0
            t = entry_pfn(e)
            k -= 1

    def translate(self, pfn_t pgd, uint64_t addr):
        """The physical address addr maps to (P set at every level), or -1."""
        cdef int level = self.levels
        cdef pfn_t t = pgd
        cdef entry_t e
        while True:
            e = self.eget(t, self.index_of(addr, level))
            if not (e & _P) or self.bad_pfn(entry_pfn(e)):
                return -1
            if level == 2 and (e & _PS):
                return (<int64_t>entry_pfn(e) << PAGE_SHIFT) | \
                    <int64_t>(addr & ((<uint64_t>1 << HPAGE_SHIFT) - 1))
            if level == 1:
                return (<int64_t>entry_pfn(e) << PAGE_SHIFT) | <int64_t>(addr & (PAGE_SIZE - 1))
            t = entry_pfn(e)
            level -= 1

    def mm_stats(self, pfn_t pgd):
        """(rss, [tables reached at level 1, 2, ...]) of the mm with this pgd: data
        pages mapped (ZERO_PAGE excluded), and the distinct tables below the pgd."""
        cdef int64_t rss = 0
        seen = set()
        per = [0] * (self.levels - 1)
        rss = self._mm_walk(self.levels, pgd, seen, per)
        return int(rss), per

    cdef int64_t _mm_walk(self, int level, pfn_t t, set seen, list per):
        cdef uint32_t i, n = self.user_entries if level == self.levels else self.nent[level]
        cdef entry_t e
        cdef pfn_t c
        cdef int64_t rss = 0
        for i in range(n):
            e = self.eget(t, i)
            if level == 1:
                if pte_present(e) and entry_pfn(e) != self.zero_pfn:
                    rss += 1
                continue
            if not (e & _P):
                continue
            if level == 2 and (e & _PS):     # a huge mapping and its deposited table
                rss += HPAGE_NR
                per[0] += 1
                continue
            c = entry_pfn(e)
            if self.bad_pfn(c):
                continue
            if c not in seen:
                seen.add(c)
                per[level - 2] += 1
            rss += self._mm_walk(level - 1, c, seen, per)
        return rss

    def views(self):
        """Read-only numpy views of every array of the core and its scalars, for the
        checker (lazyvm._check) and for inspection."""
        def ro(a):
            v = a.view()
            v.flags.writeable = False
            return v
        return dict(
            physical=ro(self.physical), count=ro(self.count_arr), link=ro(self.link_arr),
            index=ro(self.index_arr), flags=ro(self.flags_arr), lidx=ro(self.lidx_arr),
            nodes=ro(self.nodes_arr[:self.node_cap]), swap_count=ro(self.swap_count_arr),
            swap_cache=ro(self.swap_cache_arr), shm=ro(self.shm_arr),
            nframes=self.nframes, hwm=self.hwm, free_head=self.free_head, nfree=self.nfree,
            zero_pfn=self.zero_pfn, swapper_pgd=self.swapper_pgd, levels=self.levels,
            wide=self.wide, nent=[int(self.nent[k]) for k in range(self.levels + 1)],
            shift=[int(self.shift[k]) for k in range(self.levels + 1)],
            user_entries=self.user_entries, top_rw=self.top_rw, slot_shift=self.slot_shift,
            nrpte=self.nrpte, rmap=self.rmap_enabled, node_cap=self.node_cap,
            node_hwm=self.node_hwm, node_free=self.node_free, node_nfree=self.node_nfree,
            nswap=self.nswap, swap_hwm=self.swap_hwm, swap_free=self.swap_free,
            swap_nfree=self.swap_nfree, contents=self.contents, eager=self.eager,
            hfree=ro(self.hfree_arr[:self.nhfree]),
            counters={name: int(self.st[i]) for name, i in _COUNTER_NAMES},
            tables_by_level=[int(self.st[ST_TABLES_L + k]) for k in range(4)])



# ==================================================================== rmap, per slot width
#
# A slot is a pte_addr_t as wide as an entry (leaf_t): in a node's 16 words, slot k is
# (<leaf_t*>node)[1 + k] -- words 1..15 for 32-bit slots, 2..15 for 64-bit ones -- and a
# node holds 64 / sizeof(leaf_t) - 1 of them (NRPTE 15 or 7).  The `tag` argument only
# picks the width.

cdef inline slot_t direct_slot_t(Core c, uint32_t f, leaf_t* tag) noexcept nogil:
    if leaf_t is pte32_t:
        return c.link[f]
    return ((<slot_t>c.link[f]) << 9) | c.lidx[f]


cdef inline void set_direct_t(Core c, uint32_t f, slot_t s, leaf_t* tag) noexcept nogil:
    if leaf_t is pte32_t:
        c.link[f] = <uint32_t>s
    else:
        c.link[f] = <uint32_t>(s >> 9)
        c.lidx[f] = <uint16_t>(s & 511)


cdef inline void page_add_rmap_t(Core c, uint32_t f, slot_t slot, leaf_t* tag) noexcept nogil:
    """page_add_rmap: no mapping -> direct; direct -> a node with the old slot at NRPTE-1
    and the new at NRPTE-2; head full -> a new head with the slot at NRPTE-1; else the
    slot before idx."""
    cdef uint32_t h, n, idx, nr = 64 // sizeof(leaf_t) - 1
    cdef uint32_t* nd
    c.st[ST_RMAP_ADDS] += 1
    if c.flags[f] & F_DIRECT:
        n = c.node_alloc()
        nd = c.node_ptr(n)
        (<leaf_t*>nd)[nr] = <leaf_t>direct_slot_t(c, f, tag)
        (<leaf_t*>nd)[nr - 1] = <leaf_t>slot
        nd[0] = node_encode(0, nr - 2)
        c.link[f] = n
        c.flags[f] &= ~F_DIRECT
        c.st[ST_DIRECT] -= 1
        c.st[ST_SLOTS] += 2
    elif c.link[f] == 0:
        set_direct_t(c, f, slot, tag)
        c.flags[f] |= F_DIRECT
        c.st[ST_DIRECT] += 1
    else:
        h = c.link[f]
        nd = c.node_ptr(h)
        idx = node_idx(nd)
        if idx == 0:
            n = c.node_alloc()
            nd = c.node_ptr(n)
            (<leaf_t*>nd)[nr] = <leaf_t>slot
            nd[0] = node_encode(h, nr - 1)
            c.link[f] = n
        else:
            idx -= 1
            (<leaf_t*>nd)[1 + idx] = <leaf_t>slot
            nd[0] = node_encode(node_next(nd), idx)
        c.st[ST_SLOTS] += 1


cdef inline int page_remove_rmap_t(Core c, uint32_t f, slot_t slot, leaf_t* tag) noexcept nogil:
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
        c.st[ST_DIRECT] -= 1
        return OK
    h = c.link[f]
    if h == 0:
        return ERR_BUG
    hd = c.node_ptr(h)
    idx = node_idx(hd)
    n = h
    start = idx
    while n != 0:
        nd = c.node_ptr(n)
        for k in range(start, nr):
            if (<leaf_t*>nd)[1 + k] == s:
                (<leaf_t*>nd)[1 + k] = (<leaf_t*>hd)[1 + idx]
                (<leaf_t*>hd)[1 + idx] = 0
                idx += 1
                c.st[ST_SLOTS] -= 1
                if idx == nr:
                    c.link[f] = node_next(hd)
                    c.node_release(h)
                else:
                    hd[0] = node_encode(node_next(hd), idx)
                return OK
        n = node_next(nd)
        start = 0
    return ERR_BUG


# ==================================================================== leaf loops
#
# Compiled once per entry width (leaf_t: pte32_t on i386, pte64_t on pae / x86_64).

cdef int copy_pte_range(Core c, leaf_t* src, leaf_t* dst, pfn_t dst_t, uint32_t lo,
                        uint32_t hi, bint cow, bint thp) noexcept nogil:
    """copy_pte_range over entries [lo, hi) of src into dst; every entry of the range is
    written, empty ones too (dst may be a recycled, unzeroed frame).

    cow: a private mapping, write-protect in parent and child; else (shared) clear D in
    the child.  The child's copy is old (A clear).  Reserved frames are copied verbatim;
    swap entries take a swap reference.  Chain nodes must be reserved.  thp: src may map
    frames of huge pages (F_THPMAP), whose references go on their heads."""
    cdef leaf_t wp = _RW if cow else 0, nod = _A if cow else (_A | _D)
    # one loop, compiled with rmap and thp constants, keeps the branches out of the loop
    if thp:
        return copy_ptes(c, src, dst, dst_t, lo, hi, wp, nod, c.rmap_enabled, True)
    if c.rmap_enabled:
        return copy_ptes(c, src, dst, dst_t, lo, hi, wp, nod, True, False)
    return copy_ptes(c, src, dst, dst_t, lo, hi, wp, nod, False, False)


cdef inline int copy_ptes(Core c, leaf_t* src, leaf_t* dst, pfn_t dst_t, uint32_t lo,
                          uint32_t hi, leaf_t wp, leaf_t nod, bint rm, bint thp) noexcept nogil:
    cdef uint32_t zero = c.zero_pfn, nframes = c.nframes
    cdef count_t* count = c.count
    cdef leaf_t pte
    cdef uint32_t i, f
    cdef int64_t copied = 0
    cdef int rc = OK
    for i in range(lo, hi):
        pte = src[i]
        if pte == 0:
            dst[i] = 0
            continue
        copied += 1
        if not pte_present(pte):
            if c.bad_swap(pte):
                rc = ERR_BUG
                break
            c.swap_count[swp_offset(pte)] += 1
            dst[i] = pte
            continue
        f = <uint32_t>(pte >> PAGE_SHIFT) if leaf_t is pte32_t else entry_pfn(pte)
        if f == zero:
            dst[i] = pte
            continue
        if f >= nframes:
            rc = ERR_BUG
            break
        if pte & wp:
            pte &= ~wp
            src[i] = pte
        dst[i] = pte & ~nod
        if thp:
            count[c.page_head(f)] += 1
        else:
            count[f] += 1
        if rm:
            page_add_rmap_t(c, f, c.mk_slot(dst_t, i), src)
    c.st[ST_PTES_COPIED] += copied
    return rc


cdef int zap_pte_range(Core c, leaf_t* tbl, pfn_t t, uint32_t lo, uint32_t hi) noexcept nogil:
    """zap_pte_range: clear entries [lo, hi) of table t, dropping what they hold (a
    frame of a huge page: a reference on its head)."""
    if c.flags[t] & F_THPMAP:
        return zap_ptes(c, tbl, t, lo, hi, True)
    return zap_ptes(c, tbl, t, lo, hi, False)


cdef inline int zap_ptes(Core c, leaf_t* tbl, pfn_t t, uint32_t lo, uint32_t hi,
                         bint thp) noexcept nogil:
    cdef uint32_t zero = c.zero_pfn, nframes = c.nframes
    cdef bint rm = c.rmap_enabled
    cdef leaf_t pte
    cdef uint32_t i, f
    cdef int64_t zapped = 0
    cdef int rc = OK
    for i in range(lo, hi):
        pte = tbl[i]
        if pte == 0:
            continue
        if not pte_present(pte):
            if c.bad_swap(pte):
                rc = ERR_BUG
                break
            tbl[i] = 0
            zapped += 1
            c.swap_put(swp_offset(pte))
            continue
        f = entry_pfn(pte)
        if f >= nframes:
            rc = ERR_BUG
            break
        tbl[i] = 0
        zapped += 1
        if f == zero:
            continue
        if pte & _D:
            c.flags[f] |= F_DIRTY
        if rm and page_remove_rmap_t(c, f, c.mk_slot(t, i), tbl) != OK:
            rc = ERR_BUG
            break
        if thp:
            c.put_page(c.page_head(f))
        else:
            c.put_page(f)
    c.st[ST_PTES_ZAPPED] += zapped
    return rc


cdef int share_entries(Core c, leaf_t* src, leaf_t* dst, uint32_t lo,
                       uint32_t hi) noexcept nogil:
    """The entries [lo, hi) of src that point at tables of the share level: each table
    gains a use, and the entry loses RW in src and in its copy in dst (the seed's
    fork: "increment the use counts on all page tables mapped by the page directory")."""
    cdef count_t* count = c.count
    cdef uint32_t nframes = c.nframes, i, t
    cdef leaf_t e
    cdef int64_t n = 0
    for i in range(lo, hi):
        e = src[i]
        if not (e & _P):
            continue
        t = <uint32_t>(e >> PAGE_SHIFT) if leaf_t is pte32_t else entry_pfn(e)
        if t >= nframes:
            c.st[ST_SHARE_WRPROTECTS] += n
            return ERR_BUG
        count[t] += 1
        e &= ~(<leaf_t>_RW)
        src[i] = e
        dst[i] = e
        n += 1
    c.st[ST_SHARE_WRPROTECTS] += n
    return OK


cdef void privatize_pte(Core c, leaf_t* src, leaf_t* dst, pfn_t nt, uint64_t base,
                        const mm_t* mm, bint take) noexcept nogil:
    """The seed's privatize of a leaf table src into the fresh table dst (frame nt),
    whose span starts at base.  Only the ranges this mm's VMAs cover are copied (no entry
    lies outside them: every change that removes one privatizes first).  Each present
    entry takes a frame reference if take (lazy accounting; eager took it at the fork)
    and a chain slot in dst ("extend the pte_chains"); private entries lose RW in both
    tables, since two tables now reach the frame; swap entries take a swap reference."""
    cdef uint64_t span = (<uint64_t>1) << c.shift[2], s, e
    cdef uint32_t zero = c.zero_pfn, lo, hi, i, f
    cdef bint rm = c.rmap_enabled, thp = (c.flags[nt] & F_THPMAP) != 0
    cdef Py_ssize_t v
    cdef leaf_t pte
    cdef int64_t copied = 0
    for v in range(mm.nv):
        s = mm.vmas[v].start if mm.vmas[v].start > base else base
        e = mm.vmas[v].end if mm.vmas[v].end < base + span else base + span
        if e <= s:
            continue
        lo = <uint32_t>((s - base) >> PAGE_SHIFT)
        hi = <uint32_t>((e - base) >> PAGE_SHIFT)
        for i in range(lo, hi):
            pte = src[i]
            if pte == 0:
                continue
            copied += 1
            if not pte_present(pte):
                c.swap_count[swp_offset(pte)] += 1
                dst[i] = pte
                continue
            f = entry_pfn(pte)
            if f != zero and f < c.nframes:
                if (pte & _RW) and not (c.flags[f] & F_SHMEM):
                    pte &= ~(<leaf_t>_RW)
                    src[i] = pte
                if take:
                    c.count[c.page_head(f) if thp else f] += 1
                if rm:
                    page_add_rmap_t(c, f, c.mk_slot(nt, i), src)
            dst[i] = pte
    c.st[ST_PTES_COPIED] += copied

cdef int64_t table_refs(Core c, leaf_t* tbl, int sign) noexcept nogil:
    """Eager accounting: one reference more (sign 1) or less (-1) on each present page of
    leaf table tbl (the ZERO_PAGE aside); returns how many."""
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
        f = c.page_head(f)
        if sign > 0:
            c.count[f] += 1
        else:
            c.put_page(f)
        k += 1
    return k
