# cython: language_level=3
"""lazyvm.core.state: the State class (every field of the core, see state.pxd) and its
allocation; the boot itself (frame 0, the kernel's tables) is frames.boot."""

import mmap

import numpy as np
cimport numpy as cnp
from libc.string cimport memset
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.errors import OutOfMemory, InvariantError
from lazyvm.core.defs import counter_names

cnp.import_array()


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


def read_only(a):
    """A view of array a that cannot be made writable: its base is a read-only buffer
    (a plain view's writeable flag can be set back to True)."""
    return np.asarray(memoryview(a).toreadonly())


cdef int raise_rc(int rc, str what) except -1:
    """Raise the exception of a nogil path's result code (nothing for OK)."""
    if rc == ERR_NOMEM:
        raise OutOfMemory(what)
    if rc != OK:
        raise InvariantError("the core found a broken invariant or a corrupted entry "
                             "(an entry naming a frame outside physical memory, a "
                             "PROTNONE entry under an accessible VMA, or a chain "
                             "missing a slot): run Machine.check()")
    return 0


cdef class State:
    """Physical memory, struct page, the frame allocator's, rmap pool's and swap's
    state of one machine (the fields are documented in state.pxd).

    State(nframes, rmap, nswap, layout, contents, eager, thp, thp_copy): nframes frames
    of 4 KiB, rmap on or off, nswap swap slots (0 = no swap; slot 0 is the header and
    never used), layout one of LAYOUT_*, contents False for a machine that keeps no page
    data, eager True for eager accounting of shared leaf tables (leaf sharing only),
    thp THP_NEVER / THP_ALWAYS / THP_MADVISE (pae and x86_64), thp_copy True to copy a
    huge page whole on a write to a shared one (else split it)."""

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
        self.physical_ro = read_only(self.physical)
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

        self.undo_cap = 256
        self.undo_arr = np.zeros(2 * self.undo_cap, dtype=np.uint64)
        self.undo = <uint64_t*>array_data(self.undo_arr)
        self.nundo = 0

        self.shm_cap = 1024
        self.shm_arr = np.zeros(self.shm_cap, dtype=np.uint32)
        self.shm = <uint32_t*>array_data(self.shm_arr)
        self.shm_hwm = 0


    def views(self):
        """Read-only numpy views of every array of the core and its scalars, for the
        checker (lazyvm.core.check) and for inspection: none can be made writable."""
        def ro(a):
            return read_only(a)
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
            counters={name: int(self.st[i]) for i, name in enumerate(counter_names())},
            tables_by_level=[int(self.st[ST_TABLES_L + k]) for k in range(4)])
