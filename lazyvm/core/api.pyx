# cython: language_level=3
"""lazyvm.core.api: the Core class, the compiled core's face to the Python layer
(lazyvm/machine.py): thin entry points that take the arguments, reserve what an
operation needs, run it without the GIL in the module of its concern, and raise.

Each raises OutOfMemory with nothing changed, or with only a consistent prefix of
faults done (the pages faulted in before the failure stay mapped).  The Python layer
validates every argument and owns the VMAs; a VMA list crosses the boundary as a
C-contiguous uint64 array of rows (start, end, vm_flags, shm_base).

One fork and one fault, through the modules (names are the kernel's):

  fork, copy mode:  Core.fork_copy -> fork.copy_mm -> per VMA fork.copy_range(top
      level): for each present entry in the range, allocate the child's table of the
      level below (frames) and recurse; at the leaf, copy_pte_range (write-protect COW
      PTEs in parent and child, get_page, rmap.page_add_rmap).
  fork, share mode: Core.fork_share -> fork.share_mm -> share_range(top level).
  fork, odf mode: Core.fork_copy(odf=True): the copy walk, sharing the leaf tables
      that lie inside one private VMA.
  fault:  Core.fault_range / fault_pages / access / read / write (trace) ->
      fault.handle_mm_fault (privatize, do_no_page, do_swap_page, do_wp_page).
  zap:  Core.zap (munmap), Core.exit_mm (exit, exec) -> zap.
"""

cimport cython
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.errors import OutOfMemory

from lazyvm.core.defs cimport *
from lazyvm.core.state cimport *
from lazyvm.core.frames cimport *
from lazyvm.core.rmap cimport *
from lazyvm.core cimport rmap
from lazyvm.core.fork cimport *
from lazyvm.core.thp cimport split_range
from lazyvm.core.zap cimport *
from lazyvm.core cimport trace, reclaim, inspection


@cython.final
cdef class Core(State):
    """The core of one machine: State's fields (state.pxd) with the operations.

    Core(nframes, rmap, nswap, layout, contents, eager, thp, thp_copy): as State.
    """

    def __cinit__(self, uint32_t nframes, bint rmap, uint32_t nswap, int layout=0,
                  bint contents=True, bint eager=False, int thp=THP_NEVER,
                  bint thp_copy=False):
        boot(self)

    def set_fail_after(self, n):
        self.fail_countdown = -1 if n is None else n

    def new_pgd(self):
        """pgd_alloc: a page directory with an empty user part and the kernel's entries."""
        cdef uint32_t g = alloc_frame(self, F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for a page directory")
        init_pgd(self, g)
        return g

    def fork_copy(self, pfn_t ppgd, const uint64_t[:, ::1] vmas, bint odf=False):
        """dup_mmap with copy_page_range: returns the child's pgd frame.  With odf,
        On-demand-fork: leaf tables inside one private VMA are shared, the rest copied.

        Chain nodes for the worst case are had first (growing the pool to that costs
        nothing, see grow_nodes); tables are allocated as the copy walks, and if one
        cannot be had the half-made child is torn down (its references dropped, its
        tables freed), so OutOfMemory leaves no trace of the child."""
        cdef mm_t mm = make_mm(ppgd, vmas)
        cdef uint64_t ntab = copy_tables_needed(self, &mm, odf)
        cdef pfn_t g
        cdef int rc
        g = alloc_frame(self, F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        if reserve_tables(self, ntab) != OK:
            free_frame(self, g)
            raise OutOfMemory("no free frame for a page table of the child")
        if self.rmap_enabled and reserve_nodes(
                self, self.st[ST_PTE_CHAIN_SLOTS] + self.st[ST_RMAP_DIRECT]) != OK \
                and reserve_nodes(self, mm_mapped(self, mm)) != OK:
            release_tables(self)
            free_frame(self, g)
            raise OutOfMemory("no pte_chain node to be had for the child")
        init_pgd(self, g)
        with nogil:
            rc = copy_mm(self, &mm, g, odf)
        release_tables(self)
        if rc != OK:
            self.teardown(g, mm)
            raise_rc(rc, "no free frame for a page table of the child")
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_ODF if odf else ST_FORKS_COPY] += 1
        self.st[ST_FORK_VMAS] += mm.nv
        return g

    cdef void teardown(self, pfn_t g, mm_t mm) noexcept:
        """Undo a half-made child: drop what its tables hold, free them and the pgd."""
        mm.pgd = g
        with nogil:
            exit_walk(self, mm)
        self.st[ST_PGDS] -= 1
        free_frame(self, g)

    def fork_share(self, pfn_t ppgd, const uint64_t[:, ::1] vmas, int share_level):
        """Share fork: copy the pgd (and the levels above share_level); each table of
        share_level gains a use, and the entries pointing at it lose RW in both mms."""
        cdef mm_t mm = make_mm(ppgd, vmas)
        cdef int rc
        cdef pfn_t g = alloc_frame(self, F_PGD, 0)
        if g == 0:
            raise OutOfMemory("no free frame for the child's page directory")
        if reserve_tables(self, tables_above(self, self.levels, ppgd, share_level,
                                             self.user_entries)) != OK:
            free_frame(self, g)
            raise OutOfMemory("no free frame for a page table of the child")
        if thp_on(self) and self.rmap_enabled and share_level == 1 and reserve_nodes(
                self, self.st[ST_PTE_CHAIN_SLOTS] + self.st[ST_RMAP_DIRECT]) != OK \
                and reserve_nodes(self, mm_mapped(self, mm)) != OK:
            release_tables(self)         # a copied huge mapping takes a slot
            free_frame(self, g)
            raise OutOfMemory("no pte_chain node to be had for the child")
        init_pgd(self, g)
        with nogil:
            rc = share_mm(self, &mm, g, share_level)
            release_tables(self)
        if rc != OK:
            self.teardown(g, mm)
            raise_rc(rc, "no free frame for a page table of the child")
        self.st[ST_FORKS] += 1
        self.st[ST_FORKS_SHARE] += 1
        self.st[ST_FORK_VMAS] += mm.nv
        return g

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
            rc = unshare_range(self, self.levels, pgd, start, end, &mm, &keep, False)
            if rc == OK and thp_on(self):    # a huge mapping cut by an end is split
                rc = split_range(self, self.levels, pgd, start, end, False)
        raise_rc(rc, "no free frame or pte_chain node to privatize a shared page table")
        with nogil:
            rc = zap_range(self, self.levels, pgd, start, end, &keep)
        raise_rc(rc, "")

    def exit_mm(self, pfn_t pgd, const uint64_t[:, ::1] vmas, bint free_pgd):
        """exit_mmap / exec: drop the whole user space; frees the pgd too if free_pgd.

        A corrupted entry stops the walk with InvariantError: the pgd is kept (the
        process stays alive), the entries zapped before it are gone, the rest stay."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef int rc
        with nogil:
            rc = exit_walk(self, mm)
        raise_rc(rc, "")
        if free_pgd:
            self.st[ST_PGDS] -= 1
            free_frame(self, pgd)
            self.st[ST_EXITS] += 1
        else:
            self.st[ST_EXECS] += 1
        self.st[ST_EXIT_VMAS] += mm.nv

    def mprotect(self, pfn_t pgd, const uint64_t[:, ::1] vmas, const uint64_t[:, ::1] pieces):
        """change_protection for each row (start, end, new vm_flags) of pieces, all
        inside the current VMAs.  A shared table with an entry in the range is
        privatized first (an OutOfMemory there changes no protection)."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef Py_ssize_t k, npc = pieces.shape[0]
        cdef int rc = OK
        with nogil:
            for k in range(npc):
                rc = unshare_range(self, self.levels, pgd, pieces[k, 0], pieces[k, 1], &mm,
                                   NULL, True)
                if rc == OK and thp_on(self):    # cut by an end, or PROT_NONE: split
                    rc = split_range(self, self.levels, pgd, pieces[k, 0], pieces[k, 1],
                                     not (pieces[k, 2] & (VM_READ | VM_WRITE)))
                if rc != OK:
                    break
        raise_rc(rc, "no free frame or pte_chain node to privatize a shared page table")
        with nogil:
            for k in range(npc):
                change_range(self, self.levels, pgd, pieces[k, 0], pieces[k, 1],
                             vm_page_prot(<uint32_t>pieces[k, 2]))

    def thp_split(self, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t start,
                  uint64_t end):
        """A VMA boundary moves to start and end (madvise): split the huge mappings
        [start, end) covers in part, privatizing first the shared tables on the way."""
        cdef mm_t mm = make_mm(pgd, vmas)
        cdef int rc = OK
        if not thp_on(self):
            return
        with nogil:
            rc = unshare_range(self, self.levels, pgd, start, end, &mm, NULL, True)
            if rc == OK:
                rc = split_range(self, self.levels, pgd, start, end, False)
        raise_rc(rc, "no free frame or pte_chain node to privatize a shared page table")

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
                put_page(self, f)

    def reset_peaks(self):
        self.st[ST_FRAMES_PEAK] = self.nframes - self.nfree
        self.st[ST_PAGE_TABLES_PEAK] = self.st[ST_PAGE_TABLES]
        self.st[ST_PTE_CHAIN_NODES_PEAK] = self.st[ST_PTE_CHAIN_NODES]

    def frame_count(self, uint32_t f):
        return int(self.count[f])

    def frame_flags(self, uint32_t f):
        return int(self.flags[f])

    # ---- the trace engine (trace.pyx) --------------------------------------------------

    def fault_range(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                    uint64_t start, uint64_t end, bint write):
        """Access every page of [start, end) inside VMA vi (bulk faulting: touch)."""
        trace.fault_range(self, pgd, vmas, vi, start, end, write)

    def fault_pages(self, pfn_t pgd, const uint64_t[:, ::1] vmas, const int64_t[::1] addrs,
                    writes, bint check_first):
        """Access the page of each address of addrs in order (see trace.fault_pages)."""
        return trace.fault_pages(self, pgd, vmas, addrs, writes, check_first)

    def access(self, pfn_t pgd, const uint64_t[:, ::1] vmas, uint64_t addr,
               Py_ssize_t n, bint write, data=None):
        """read and write's single-call fast path (see trace.access)."""
        return trace.access(self, pgd, vmas, addr, n, write, data)

    def read_into(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                  uint64_t addr, uint8_t[::1] out, Py_ssize_t off, Py_ssize_t n):
        """Read n bytes at addr (inside VMA vi) into out[off:off+n], faulting as needed."""
        trace.read_into(self, pgd, vmas, vi, addr, out, off, n)

    def write_from(self, pfn_t pgd, const uint64_t[:, ::1] vmas, Py_ssize_t vi,
                   uint64_t addr, const uint8_t[::1] src, Py_ssize_t off, Py_ssize_t n):
        """Write src[off:off+n] at addr (inside VMA vi); the caller faulted the pages in."""
        trace.write_from(self, pgd, vmas, vi, addr, src, off, n)

    # ---- reclaim (reclaim.pyx) -----------------------------------------------------------

    def reclaim_rmap(self, uint32_t n):
        """Swap out up to n frames through the rmap (see reclaim.reclaim_rmap)."""
        return reclaim.reclaim_rmap(self, n)

    def reclaim_scan(self, uint32_t n, list mms, uint32_t start):
        """2.4's swap_out over the mms (see reclaim.reclaim_scan)."""
        return reclaim.reclaim_scan(self, n, mms, start)

    # ---- inspection (inspection.pyx, rmap.pyx) --------------------------------------------

    def stats(self):
        return inspection.stats(self)

    def counters(self):
        """The event counters of stats() alone (see inspection.counters)."""
        return inspection.counters(self)

    def walk(self, pfn_t pgd, uint64_t addr):
        """[(level, table, index, entry), ...] from the pgd down (see inspection.walk)."""
        return inspection.walk(self, pgd, addr)

    def entry_at(self, pfn_t pgd, uint64_t addr, int level):
        """The entry of `level` on addr's walk, or 0 (see inspection.entry_at)."""
        return inspection.entry_at(self, pgd, addr, level)

    def translate(self, pfn_t pgd, uint64_t addr):
        """The physical address addr maps to, or -1."""
        return inspection.translate(self, pgd, addr)

    def mm_stats(self, pfn_t pgd):
        """(rss, [tables reached at level 1, 2, ...]) of the mm with this pgd."""
        return inspection.mm_stats(self, pgd)

    def rmap_slots(self, uint32_t f):
        """The (table_pfn, index) slots in frame f's chain, head first."""
        return rmap.rmap_slots(self, f)
