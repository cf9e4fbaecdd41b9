# cython: language_level=3
#
# lazyvm._core: the compiled half of lazyvm.  This header is the map of the machine.
#
#   31            22 21            12 11            0
#  +----------------+----------------+---------------+
#  |  PDX (10 bits) |  PTX (10 bits) | offset (12)   |     i386, non-PAE, 4 KiB pages
#  +----------------+----------------+---------------+
#
# Physical memory is one numpy uint8 array of nframes * 4096 bytes; page directories and
# page tables are frames of it, read and written through a uint32 view (pte_t below), as
# in the kernel.  The kernel's `struct page` is four numpy arrays indexed by frame number
# (count, link, index, flags: 14 bytes a frame).
#
# The typedefs are named after the numpy dtypes of the arrays that hold them, so the C
# type and the array dtype are visibly the same thing.

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t

ctypedef uint32_t pte_t      # np.uint32: a PTE or PDE word
ctypedef uint32_t pfn_t      # np.uint32: a frame number
ctypedef int32_t count_t     # np.int32:  reference count (data frame) or use count (table)
ctypedef uint16_t pflags_t   # np.uint16: frame flags (F_* below)

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    PGDIR_SHIFT = 22
    PTRS_PER_PTE = 1024
    PTRS_PER_PGD = 1024
    USER_PTRS_PER_PGD = 768          # PDEs 0..767 are user space, below 0xC0000000

# Entry bits, PTE and PDE (DESIGN.md section 1).
cdef enum:
    _P = 0x001
    _RW = 0x002
    _US = 0x004
    _PWT = 0x008
    _PCD = 0x010
    _A = 0x020
    _D = 0x040
    _PROTNONE = 0x080                # PS in a PDE; PROTNONE in a non-present PTE
    _G = 0x100
    PDE_USER = 0x067                 # pmd_populate: P | RW | US | A | D
    PDE_KERNEL = 0x063               # _KERNPG_TABLE: P | RW | A | D
    PTE_KERNEL = 0x163               # P | RW | A | D | G
    PAGE_NONE = 0x0A0                # PROTNONE | A
    PAGE_SHARED = 0x027              # P | RW | US | A
    PAGE_READONLY = 0x025            # P | US | A (also PAGE_COPY)

# vm_flags of a VMA, as Linux numbers them.
cdef enum:
    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_EXEC = 0x4
    VM_SHARED = 0x8

# Frame flags (struct page flags).
cdef enum:
    F_FREE = 0x001                   # on the free list (link = next free frame)
    F_RESERVED = 0x002               # ZERO_PAGE, kernel tables, swapper pgd: never counted
    F_PGD = 0x004                    # a process's page directory
    F_PTABLE = 0x008                 # a user page table (count = use count)
    F_ANON = 0x010                   # a private anonymous page
    F_SHMEM = 0x020                  # a page of a shared-memory object
    F_DIRECT = 0x040                 # rmap: link holds the one slot (PageDirect)
    F_SWAPCACHE = 0x080              # in the swap cache: index = swap slot; holds a count
    F_DIRTY = 0x100                  # a D bit was carried to the page (zap, unmap)

# rmap: a pte_chain node is one 64-byte cache line of 16 uint32 words:
# word 0 next_and_idx = next_node << 4 | idx; words 1..15 the NRPTE slots.
# A slot is table_pfn << 10 | pte_index (never 0: frame 0 is the ZERO_PAGE).
cdef enum:
    NRPTE = 15
    NODE_WORDS = 16

# Result codes of the nogil paths; the exception is raised after the GIL is retaken.
cdef enum:
    OK = 0
    ERR_NOMEM = -1

cdef inline uint32_t pdx_of(uint32_t addr) noexcept nogil:
    return addr >> PGDIR_SHIFT

cdef inline uint32_t ptx_of(uint32_t addr) noexcept nogil:
    return (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1)

cdef inline bint pte_present(pte_t pte) noexcept nogil:
    # pte_present: P, or PROTNONE (mapped for the kernel, every access faults)
    return (pte & (_P | _PROTNONE)) != 0

cdef inline pte_t swp_entry(uint32_t offset) noexcept nogil:
    # 2.4 i386 encoding, swap type 0: offset in bits 8..31; bits 0 and 7 clear
    return offset << 8

cdef inline uint32_t swp_offset(pte_t pte) noexcept nogil:
    return pte >> 8

cdef inline pte_t vm_page_prot(uint32_t vm_flags) noexcept nogil:
    # protection_map: a private mapping never gets RW from its protection
    if not (vm_flags & (VM_READ | VM_WRITE)):
        return PAGE_NONE
    if (vm_flags & VM_SHARED) and (vm_flags & VM_WRITE):
        return PAGE_SHARED
    return PAGE_READONLY


@cython.final            # direct (inlinable) calls instead of the vtable
cdef class Core:
    # ---- physical memory -------------------------------------------------------------
    cdef readonly object physical        # np.uint8[nframes * 4096]
    cdef uint8_t* mem8                   # its data
    cdef pte_t* mem32                    # the same bytes as uint32 words
    cdef readonly uint32_t nframes

    # ---- struct page, one entry a frame (14 bytes) -------------------------------------
    cdef readonly object count_arr       # np.int32:  refcount or table use count
    cdef readonly object link_arr        # np.uint32: rmap head (direct slot or node) | next free
    cdef readonly object index_arr       # np.uint32: swap slot while in the swap cache
    cdef readonly object flags_arr       # np.uint16: F_* flags
    cdef count_t* count
    cdef uint32_t* link
    cdef uint32_t* index
    cdef pflags_t* flags

    # ---- frame allocator: a LIFO free list, then never-used frames above hwm ------------
    cdef uint32_t hwm                    # frames >= hwm were never allocated (still zero)
    cdef uint32_t free_head              # first free frame, 0 = none (frame 0 is reserved)
    cdef readonly uint32_t nfree         # free frames, listed and above hwm
    cdef readonly uint32_t boot_frames   # frames taken at boot, never freed
    cdef readonly uint32_t zero_pfn      # the ZERO_PAGE
    cdef readonly uint32_t swapper_pgd   # the boot page directory (kernel PDEs 768..1023)
    cdef int64_t fail_countdown          # fault injection: allocations left, -1 = off

    # ---- rmap: pte_chain pool ---------------------------------------------------------
    cdef readonly bint rmap_enabled
    cdef object nodes_arr                # np.uint32[node_limit, 16]; node 0 is the null node
    cdef uint32_t* nodes
    cdef uint32_t node_limit             # nodes reserved (virtual memory, backed when used)
    cdef uint32_t node_cap               # nodes in the pool: doubles up to node_limit
    cdef uint32_t node_hwm               # nodes >= node_hwm never used
    cdef uint32_t node_free              # free list through next_and_idx, 0 = none
    cdef uint32_t node_nfree             # free nodes, listed and above node_hwm

    # ---- swap -------------------------------------------------------------------------
    cdef object swap_arr                 # np.uint8[nswap * 4096]: the swap area
    cdef object swap_count_arr           # np.int32[nswap]: swap entries naming a slot; -1 free
    cdef object swap_cache_arr           # np.uint32[nswap]: frame in the swap cache | next free
    cdef uint8_t* swap_data
    cdef int32_t* swap_count
    cdef uint32_t* swap_cache
    cdef readonly uint32_t nswap         # slots, slot 0 is the header (never allocated)
    cdef uint32_t swap_hwm
    cdef uint32_t swap_free
    cdef readonly uint32_t swap_nfree
    cdef uint32_t clock_hand             # second-chance clock over frames

    # ---- shared-memory objects: one global array of frames, a range per object ------
    cdef object shm_arr                  # np.uint32[shm_cap]: frame at an object offset, 0 none
    cdef uint32_t* shm
    cdef uint32_t shm_cap
    cdef uint32_t shm_hwm

    # ---- counters ------------------------------------------------------------------
    cdef int64_t st[40]                  # indexed by the ST_* enum in _core.pyx

    # internal methods
    cdef bint injected_failure(self) noexcept nogil
    cdef uint32_t alloc_frame(self, pflags_t fl, bint zero) noexcept nogil
    cdef void free_frame(self, uint32_t f) noexcept nogil
    cdef void put_page(self, uint32_t f) noexcept nogil
    cdef uint32_t alloc_table(self, bint zero=*) noexcept nogil
    cdef void free_table(self, uint32_t t) noexcept nogil
    cdef int reserve_nodes(self, uint32_t n) noexcept nogil
    cdef int grow_nodes(self, uint32_t n) noexcept
    cdef uint32_t mapped_entries(self, uint32_t t, uint32_t lo, uint32_t hi) noexcept nogil
    cdef int reserve_table_nodes(self, uint32_t t, uint32_t extra) noexcept nogil
    cdef uint32_t node_alloc(self) noexcept nogil
    cdef void node_release(self, uint32_t n) noexcept nogil
    cdef void rmap_add(self, uint32_t f, uint32_t slot) noexcept nogil
    cdef void rmap_remove(self, uint32_t f, uint32_t slot) noexcept nogil
    cdef void rmap_clear(self, uint32_t f) noexcept nogil
    cdef uint32_t swap_alloc(self) noexcept nogil
    cdef void swap_put(self, uint32_t s) noexcept nogil
    cdef void swapcache_drop(self, uint32_t s) noexcept nogil
    cdef void copy_pte_range(self, uint32_t src_t, uint32_t dst_t, uint32_t lo, uint32_t hi,
                             bint cow, bint shared) noexcept nogil
    cdef void zap_pte_range(self, uint32_t t, uint32_t lo, uint32_t hi) noexcept nogil
    cdef void privatize(self, pte_t* pgd, uint32_t pdx, uint32_t nt,
                        const uint32_t* vmas, Py_ssize_t nv) noexcept nogil
    cdef int handle_mm_fault(self, pte_t* pgd, const uint32_t* vmas, Py_ssize_t nv,
                             Py_ssize_t vi, uint32_t addr, bint write) noexcept nogil
    cdef int do_swap_page(self, pte_t* tbl, uint32_t t, uint32_t i, pte_t pte,
                          uint32_t vmf, bint write) noexcept nogil
    cdef int do_wp_page(self, pte_t* tbl, uint32_t t, uint32_t i, pte_t pte) noexcept nogil
    cdef bint page_referenced(self, uint32_t f) noexcept nogil
    cdef uint32_t add_to_swap(self, uint32_t f) noexcept nogil
    cdef int swap_out_frame(self, uint32_t f) noexcept nogil
    cdef uint8_t* mmu(self, pte_t* pgd, uint32_t addr, bint write) noexcept nogil
    cdef void _init_pgd(self, uint32_t g) noexcept
    cdef uint32_t _fork_node_bound(self, pte_t* pp, const uint32_t* vp, Py_ssize_t nv) noexcept
    cdef void _undo_tables(self, uint32_t* tabs, uint32_t g) noexcept
    cdef _copy(self, uint32_t pgd, const uint32_t[:, ::1] vmas, Py_ssize_t vi,
               uint32_t addr, uint8_t* buf, Py_ssize_t n, bint write)
    cdef _raise(self, int rc)
    cdef int _scan_mm(self, uint32_t pgd, const uint32_t[:, ::1] vmas, uint32_t n,
                      uint32_t* freed) noexcept
    cdef void _unmap_slot(self, uint32_t f, uint32_t slot, uint32_t s) noexcept nogil
    cdef _check_slot(self, uint32_t f, uint32_t slot, int32_t[::1] tord, uint8_t[::1] mark)
