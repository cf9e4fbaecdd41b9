# cython: language_level=3
#
# lazyvm.core.defs: the definitions every module of the compiled core (and the checker)
# cimports.  This header is the map of the machine.
#
# Three paging layouts (DESIGN.md section 6), 4 KiB pages everywhere:
#
#   i386      31      22 21      12 11     0            2 levels, 32-bit entries
#            | pgd (10) | pte (10) | offset |
#
#   pae       31 30 29     21 20     12 11     0        3 levels, 64-bit entries
#            |pgd | pmd (9)  | pte (9) | offset |       (pgd = the 4-entry PDPT)
#
#   x86_64    47     39 38     30 29     21 20     12 11     0     4 levels, 64-bit
#            | pgd (9) | pud (9) | pmd (9) | pte (9) | offset |
#
# Levels are numbered from the leaf: level 1 is the page table (pte), level 2 the pmd (the
# i386 pgd), level 3 the pud (the pae PDPT), level 4 the x86_64 pgd.  A table of level k
# indexes address bits [shift[k], shift[k] + log2(nent[k])).
#
# Physical memory is one numpy uint8 array of nframes * 4096 bytes over an anonymous
# mapping the host backs page by page; pgds and page tables are frames of it, read and
# written through a uint32 (i386) or uint64 (pae, x86_64) view, as in the kernel.  The
# kernel's `struct page` is a set of numpy arrays indexed by frame number:
#   count  int32   reference count (data frame) or use count (table)      4 bytes
#   link   uint32  rmap head (direct slot's table, or chain node) | next free   4
#   flags  uint16  F_* below, and a table's level in bits 12..14            2
#   lidx   uint16  64-bit layouts with rmap: the direct slot's entry index  2
#   index  uint32  with swap only: the swap slot while in the swap cache    4
# so at most 16 bytes a frame.
#
# The typedefs are named after the numpy dtypes of the arrays that hold them.

cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

ctypedef uint32_t pte32_t    # np.uint32: an i386 entry
ctypedef uint64_t pte64_t    # np.uint64: a pae / x86_64 entry
ctypedef uint64_t entry_t    # any entry, widened (upper-level walkers use this)
ctypedef uint32_t pfn_t      # np.uint32: a frame number
ctypedef int32_t count_t     # np.int32:  reference count (data frame) or use count (table)
ctypedef uint16_t pflags_t   # np.uint16: frame flags (F_* below)
ctypedef uint64_t slot_t     # an rmap slot: table_pfn << slot_shift | entry index

ctypedef fused leaf_t:       # the leaf loops are compiled once per entry width
    pte32_t
    pte64_t

# Layouts (lazyvm/layout.py has the same numbers for the Python layer).
cdef enum:
    L_I386 = 0
    L_PAE = 1
    L_X86_64 = 2

cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    MAX_LEVELS = 4

# Entry bits, every layout, every level (DESIGN.md sections 1 and 6).
cdef enum:
    _P = 0x001
    _RW = 0x002
    _US = 0x004
    _PWT = 0x008
    _PCD = 0x010
    _A = 0x020
    _D = 0x040
    _PROTNONE = 0x080                # PS in an upper entry; PROTNONE in a non-present PTE
    _PS = 0x080                      # a pmd entry mapping a 2 MiB huge page
    _G = 0x100
    ENTRY_USER = 0x067               # pmd_populate: P | RW | US | A | D
    ENTRY_PDPT = 0x001               # a pae PDPT entry: P only, the hardware allows no more
    ENTRY_KERNEL = 0x063             # _KERNPG_TABLE: P | RW | A | D
    PTE_KERNEL = 0x163               # P | RW | A | D | G
    HUGE_KERNEL = 0x1E3              # P | RW | A | D | PS | G: a kernel large page
    PAGE_NONE = 0x0A0                # PROTNONE | A
    PAGE_SHARED = 0x027              # P | RW | US | A
    PAGE_READONLY = 0x025            # P | US | A (also PAGE_COPY)

cdef enum:
    FLAGS_MASK = 0xFFF

cdef extern from *:
    """
    #define LAZYVM_PFN_MASK 0xFFFFFFFFFFULL   /* entry bits 12..51 */
    """
    const uint64_t PFN_MASK "LAZYVM_PFN_MASK"

# vm_flags of a VMA, as Linux numbers them.
cdef enum:
    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_EXEC = 0x4
    VM_SHARED = 0x8
    VM_HUGEPAGE = 0x20000000         # madvise(MADV_HUGEPAGE)
    VM_NOHUGEPAGE = 0x40000000       # madvise(MADV_NOHUGEPAGE)

# Frame flags (struct page flags).  A table's level is kept in bits 12..14.
cdef enum:
    F_FREE = 0x001                   # on the free list (link = next free frame)
    F_RESERVED = 0x002               # ZERO_PAGE, kernel tables, swapper pgd: never counted
    F_PGD = 0x004                    # a process's page directory (top-level table)
    F_PTABLE = 0x008                 # a user table of a level below the top (count = uses)
    F_ANON = 0x010                   # a private anonymous page
    F_SHMEM = 0x020                  # a page of a shared-memory object
    F_DIRECT = 0x040                 # rmap: the one slot is kept in struct page (PageDirect)
    F_SWAPCACHE = 0x080              # in the swap cache: index = swap slot; holds a count
    F_DIRTY = 0x100                  # a D bit was carried to the page (zap, unmap)
    F_HUGE = 0x200                   # the head of a huge page (with F_ANON): its count is
                                     # the huge page's
    F_TAIL = 0x400                   # frames 1..511 of a huge page: count 0, rmap of its own
    F_THPMAP = 0x800                 # a leaf table that may map frames of a huge page
    F_DEPOSIT = 0x8000               # a leaf table deposited for a huge pmd mapping
    F_LEVEL_SHIFT = 12

# Transparent huge pages (pae, x86_64): a pmd entry with PS maps 512 frames, the first
# 512-aligned.  A leaf table deposited for it waits on the pmd table's list (link).
cdef enum:
    HPAGE_NR = 512
    HPAGE_SHIFT = 21
    THP_NEVER = 0
    THP_ALWAYS = 1
    THP_MADVISE = 2

# rmap: a pte_chain node is one 64-byte cache line of 16 uint32 words.  Word 0 is
# next_and_idx = next_node << 4 | idx.  The slots are pte_addr_t, as in 2.6.0:
#   i386: 15 slots of 4 bytes in words 1..15 (slot = table_pfn << 10 | index);
#   pae, x86_64: 7 slots of 8 bytes in words 2..15 (slot = table_pfn << 9 | index).
# A slot is never 0: frame 0 is the ZERO_PAGE, never a table.
cdef enum:
    NODE_WORDS = 16
    NRPTE32 = 15
    NRPTE64 = 7

# Counters: the st[] array of the core.  The Python name of each is its enum name
# without ST_, lower case (defs.counter_names() derives the names from this enum, so a
# counter is added here and nowhere else).  Members are numbered by Cython, in order.
cpdef enum:
    ST_FORKS
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
    ST_CHAIN_NODES_ALLOCATED
    ST_RECLAIM_CLOCK_SCANNED
    ST_RECLAIM_RMAP_SLOTS
    ST_RECLAIM_SCAN_PTES
    ST_PAGE_TABLES
    ST_PGDS
    ST_PTE_CHAIN_NODES
    ST_PTE_CHAIN_SLOTS
    ST_RMAP_DIRECT
    ST_FRAMES_PEAK
    ST_PAGE_TABLES_PEAK
    ST_PTE_CHAIN_NODES_PEAK
    ST_FORKS_ODF                     # On-demand-fork forks
    ST_ODF_TABLES_SHARED             # On-demand-fork: leaf tables shared
    ST_ODF_TABLES_COPIED             # On-demand-fork: leaf tables copied
    ST_EAGER_REFS                    # eager accounting: page references taken by a share
    ST_EAGER_REFS_DROPPED            # eager accounting: references dropped with a table
    ST_THP_FAULTS                    # huge pages allocated by a fault
    ST_THP_FALLBACKS                 # no 512-frame run for a huge page: 4 KiB pages
    ST_THP_SPLITS                    # huge pmd mappings split into 512 PTEs
    ST_THP_COPIES                    # huge pages copied whole on a write (thp_cow="copy")
    ST_TABLES_DEPOSITED              # leaf tables deposited now (one per huge pmd mapping)
    ST_NAMED                         # not a counter: the number of named ones above

# Per-level counters follow the named ones: base + level - 1, levels 1..4.
cdef enum:
    ST_TABLES_L = ST_NAMED           # current user tables of level 1..4
    ST_UNSHARES_L = ST_TABLES_L + 4  # tables privatized, level 1..4
    ST_DROPPED_L = ST_UNSHARES_L + 4 # fast-path drops, level 1..4
    ST_N = ST_DROPPED_L + 4

cdef enum:
    MAX_NODES = 1 << 26              # the chain pool's largest virtual reservation (4 GiB)

cdef extern from *:
    """
    #define LAZYVM_MAP_NORESERVE 0x4000
    #ifdef LAZYVM_DEBUG
    #define LAZYVM_DEBUG_BUILD 1
    #else
    #define LAZYVM_DEBUG_BUILD 0
    #endif
    """
    const int MAP_NORESERVE "LAZYVM_MAP_NORESERVE"
    const int LAZYVM_DEBUG_BUILD     # setup.py defines LAZYVM_DEBUG for LAZYVM_DEBUG=1

# Result codes of the nogil paths; the exception is raised after the GIL is retaken.
cdef enum:
    OK = 0
    ERR_NOMEM = -1                   # OutOfMemory
    ERR_BUG = -2                     # a broken invariant or corrupted entry: InvariantError

# ---- tiny accessors -------------------------------------------------------------------

cdef inline bint pte_present(entry_t pte) noexcept nogil:
    # pte_present: P, or PROTNONE (mapped for the kernel, every access faults)
    return (pte & (_P | _PROTNONE)) != 0

cdef inline pfn_t entry_pfn(entry_t e) noexcept nogil:
    return <pfn_t>((e >> PAGE_SHIFT) & PFN_MASK)

cdef inline entry_t mk_entry(pfn_t pfn, entry_t bits) noexcept nogil:
    return ((<entry_t>pfn) << PAGE_SHIFT) | bits

cdef inline entry_t swp_entry(uint32_t offset) noexcept nogil:
    # 2.4 i386 encoding, swap type 0, in every layout: offset in bits 8..31; bits 0, 7 clear
    return (<entry_t>offset) << 8

cdef inline uint32_t swp_offset(entry_t pte) noexcept nogil:
    return <uint32_t>((pte >> 8) & 0xFFFFFF)

cdef inline uint32_t node_next(const uint32_t* nd) noexcept nogil:
    return nd[0] >> 4

cdef inline uint32_t node_idx(const uint32_t* nd) noexcept nogil:
    return nd[0] & 15

cdef inline uint32_t node_encode(uint32_t nxt, uint32_t idx) noexcept nogil:
    return (nxt << 4) | idx

cdef inline entry_t vm_page_prot(uint32_t vm_flags) noexcept nogil:
    # protection_map: a private mapping never gets RW from its protection
    if not (vm_flags & (VM_READ | VM_WRITE)):
        return PAGE_NONE
    if (vm_flags & VM_SHARED) and (vm_flags & VM_WRITE):
        return PAGE_SHARED
    return PAGE_READONLY

# A VMA as the core sees it: one row of the uint64 array the Python layer builds.
ctypedef struct vma_t:
    uint64_t start
    uint64_t end
    uint64_t flags                   # vm_flags
    uint64_t shm_base                # shared mappings: index of the first page's frame slot

# One step of an upper-level walk (Core.walk_begin / walk_next): entry idx of a table,
# the part [lo, hi) of the walked range [start, end) that lies under it, and base, where
# the entry's span starts.
ctypedef struct walk_t:
    uint64_t start, end, span, base, lo, hi
    uint32_t i, last, idx

# An mm as the walkers see it: its pgd and its sorted VMAs.
ctypedef struct mm_t:
    pfn_t pgd
    const vma_t* vmas
    Py_ssize_t nv

# A scan over the present entries [i, n) of table t, one at a time (scan_begin /
# scan_next in state.pxd): the loop head of every walker that visits a whole table.
ctypedef struct scan_t:
    pfn_t t
    uint32_t i, n, idx

# A walk over the pgd entries an mm's VMAs reach (top_begin / top_next in state.pxd):
# runs [lo, hi) in address order, each entry once.
ctypedef struct top_t:
    Py_ssize_t v
    uint32_t lo, hi, nxt
