"""Small, named unit tests of the base machine: DESIGN.md §1 (the i386 machine), §2
(operations) and the success side of §4, for fork mode "copy", with rmap off and on.

Every test is deterministic and builds its own Machine. Page directories and page tables
are frames of ``m.physical``; several tests read them there directly and compare them with
``p.pde`` / ``p.pte``, so the raw-entry accessors are checked against memory itself.
Sharing of page tables and the rmap chains are tested elsewhere.
"""

import time

import numpy as np
import pytest

from lazyvm import (InvariantError, LazyVMError, Machine, OutOfMemory, Process,
                    ProcessExited, SegmentationFault)

from vmhelpers import u32

PAGE = 4096
USER_TOP = 0xC0000000
SPAN = 4 << 20                      # bytes mapped by one page table
BASE = 0x40000000                   # TASK_UNMAPPED_BASE: where mmap(addr=None) starts

P, RW, US, PWT, PCD, A, D = 0x001, 0x002, 0x004, 0x008, 0x010, 0x020, 0x040
PROTNONE = 0x080
PDE_USER = P | RW | US | A | D      # 0x067, pmd_populate
PTE_NEW_RW = P | RW | US | A | D    # 0x067, a fresh anonymous write fault
PTE_RO = P | US | A                 # 0x025, PAGE_READONLY / PAGE_COPY (ZERO_PAGE)

STAT_KEYS = """frames_total frames_free frames_used frames_peak page_tables page_tables_peak
pgds pte_chain_nodes pte_chain_nodes_peak pte_chain_slots rmap_direct forks forks_copy
forks_share faults demand_zero zero_page_maps cow_copies cow_reuses shmem_faults swap_ins
swap_outs swap_used swap_total unshares unshare_reuses tables_dropped shared_tables
pt_use_refs ptes_copied chain_nodes_allocated reclaim_clock_scanned reclaim_rmap_slots
reclaim_scan_ptes""".split()


# ----------------------------------------------------------------------------- helpers



def pgd_entries(m, p):
    """The 1024 entries of p's page directory, read from physical memory."""
    return m.physical[p.pgd * PAGE:(p.pgd + 1) * PAGE].view("<u4").copy()


def phys_pte(m, p, a):
    """Walk p's page tables in physical memory: the PTE for a, or None without a table."""
    pde = u32(m, p.pgd * PAGE + 4 * (a >> 22))
    if not pde & P:
        return None
    return u32(m, (pde >> 12) * PAGE + 4 * ((a >> 12) & 1023))


def pfn(entry):
    return entry >> 12


def ptx(a):
    return (a >> 12) & 1023


def frame_bytes(m, f):
    return m.physical[f * PAGE:(f + 1) * PAGE].tobytes()


def st(m):
    return m.stats()


def free(m):
    return m.stats()["frames_free"]


def addrs(*a):
    return np.array(a, dtype=np.uint64)


def all_exit(m):
    for q in list(m.processes):
        q.exit()
    assert m.processes == []
    s = m.stats()
    assert s["frames_free"] == s["frames_total"] - m.boot_frames


def zero_page_pfn(m):
    """Find ZERO_PAGE with a read fault in a throwaway process."""
    q = m.spawn()
    a = q.mmap(PAGE)
    q.read(a, 1)
    z = pfn(q.pte(a))
    q.exit()
    return z


# ----------------------------------------------------------------------------- boot

def test_machine_attributes_after_boot(m, rmap):
    s = m.stats()
    for k in STAT_KEYS:
        assert isinstance(s[k], int), k
    assert m.memory == 16 << 20
    assert m.fork_mode == "copy"
    assert m.rmap_enabled is rmap
    assert s["frames_total"] == (16 << 20) // PAGE
    assert s["frames_free"] == s["frames_total"] - m.boot_frames
    assert m.boot_frames >= 2           # at least ZERO_PAGE and one kernel page table
    assert s["forks"] == 0 and s["faults"] == 0
    assert m.processes == []
    assert isinstance(m.physical, np.ndarray) and m.physical.dtype == np.uint8
    assert m.physical.size == 16 << 20
    m.check()


def test_default_fork_mode_and_rmap_are_recorded():
    m = Machine(memory=4 << 20, fork_mode="share", rmap=False)
    assert m.fork_mode == "share" and m.rmap_enabled is False
    m2 = Machine(memory=4 << 20, fork_mode="copy", rmap=True)
    assert m2.fork_mode == "copy" and m2.rmap_enabled is True


def test_spawn_costs_one_frame_and_has_empty_user_space(m):
    s0 = m.stats()
    p = m.spawn()
    s1 = m.stats()
    assert isinstance(p, Process)
    assert p.alive and p.vmas == []
    assert [q.pid for q in m.processes] == [p.pid]
    assert s0["frames_free"] - s1["frames_free"] == 1          # the pgd
    assert s1["pgds"] == s0["pgds"] + 1
    assert s1["page_tables"] == s0["page_tables"]
    ents = pgd_entries(m, p)
    assert not ents[:768].any()
    assert p.pde(0) == 0 and p.pte(0) == 0 and p.translate(0) is None


def test_kernel_pdes_present_and_identical_in_every_pgd(m):
    p, q = m.spawn(), m.spawn()
    assert p.pgd != q.pgd and p.pid != q.pid
    ep, eq = pgd_entries(m, p), pgd_entries(m, q)
    assert (ep[768:] & P).all()
    assert (ep[768:] == eq[768:]).all()
    assert not ep[:768].any() and not eq[:768].any()
    total = m.stats()["frames_total"]
    ktables = sorted(set(int(e) >> 12 for e in ep[768:]))
    assert all(t < total for t in ktables)
    assert p.pgd not in ktables and q.pgd not in ktables


def test_kernel_tables_not_counted_copied_or_freed(m):
    p = m.spawn()
    kern = pgd_entries(m, p)[768:].copy()
    ktables = sorted(set(int(e) >> 12 for e in kern))
    counts = [m.frame_count(t) for t in ktables]
    pt0 = m.stats()["page_tables"]
    a = p.mmap(8 << 20)
    p.write(a, b"x")
    p.write(a + SPAN, b"y")
    c = p.fork(mode="copy")
    # the copy fork copies the two user tables and nothing of the kernel's
    assert m.stats()["page_tables"] == pt0 + 4
    assert (pgd_entries(m, c)[768:] == kern).all()
    c.exec()
    assert (pgd_entries(m, c)[768:] == kern).all()
    assert not pgd_entries(m, c)[:768].any()
    c.exit()
    assert (pgd_entries(m, p)[768:] == kern).all()
    assert [m.frame_count(t) for t in ktables] == counts
    p.exit()
    s = m.stats()
    assert s["frames_free"] == s["frames_total"] - m.boot_frames
    q = m.spawn()
    assert (pgd_entries(m, q)[768:] == kern).all()
    assert [m.frame_count(t) for t in ktables] == counts


def test_zero_page_is_reserved_zero_and_never_freed(m):
    z = zero_page_pfn(m)
    assert frame_bytes(m, z) == bytes(PAGE)
    zc = m.frame_count(z)
    procs = [m.spawn() for _ in range(3)]
    for q in procs:
        a = q.mmap(4 * PAGE)
        q.touch(a, 4 * PAGE, write=False)
        assert all(pfn(q.pte(a + i * PAGE)) == z for i in range(4))
    procs.append(procs[0].fork(mode="copy"))
    assert m.frame_count(z) == zc
    assert m.rmap(z) == []
    all_exit(m)
    assert frame_bytes(m, z) == bytes(PAGE)
    assert m.frame_count(z) == zc


# ----------------------------------------------------------------------------- entry bits

def test_user_pde_is_table_address_or_0x067(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    assert p.pde(a) == 0
    p.write(a, b"x")
    pde = p.pde(a)
    assert pde & 0xFFF == PDE_USER
    assert pgd_entries(m, p)[a >> 22] == pde
    table = pfn(pde)
    assert table != pfn(p.pte(a)) and table != p.pgd


def test_fresh_anonymous_write_pte(m, rmap):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    s0 = m.stats()
    p.write(a + 4, b"hello")
    s1 = m.stats()
    pte = p.pte(a)
    f = pfn(pte)
    assert pte & 0xFFF == PTE_NEW_RW
    assert s0["frames_free"] - s1["frames_free"] == 2          # page table + page
    assert s1["page_tables"] == s0["page_tables"] + 1
    assert s1["demand_zero"] == s0["demand_zero"] + 1
    assert s1["cow_copies"] == s0["cow_copies"]
    assert s1["zero_page_maps"] == s0["zero_page_maps"]
    assert m.frame_count(f) == 1
    assert frame_bytes(m, f) == bytes(4) + b"hello" + bytes(PAGE - 9)
    table = pfn(p.pde(a))
    assert u32(m, table * PAGE + 4 * ptx(a)) == pte == phys_pte(m, p, a)
    assert p.translate(a + 6) == f * PAGE + 6
    assert m.physical[f * PAGE + 6] == ord("l")
    if rmap:
        assert m.rmap(f) == [(table, ptx(a))]
    else:
        assert m.rmap(f) == []
    # a second page under the same table costs one frame
    p.write(a + PAGE, b"z")
    assert s1["frames_free"] - free(m) == 1
    assert pfn(p.pte(a + PAGE)) not in (f, table)


def test_read_fault_maps_zero_page_read_only(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    s0 = m.stats()
    assert p.read(a + 10, 5) == bytes(5)
    s1 = m.stats()
    pte = p.pte(a)
    z = pfn(pte)
    assert pte & 0xFFF == PTE_RO
    assert frame_bytes(m, z) == bytes(PAGE)
    assert s1["zero_page_maps"] == s0["zero_page_maps"] + 1
    assert s1["demand_zero"] == s0["demand_zero"]
    assert s0["frames_free"] - s1["frames_free"] == 1          # only the page table
    assert p.translate(a + 10) == z * PAGE + 10
    assert phys_pte(m, p, a) == pte
    zc = m.frame_count(z)
    assert p.read(a + PAGE, PAGE) == bytes(PAGE)
    assert p.pte(a + PAGE) == pte
    assert free(m) == s1["frames_free"]
    assert m.frame_count(z) == zc
    assert m.stats()["zero_page_maps"] == s0["zero_page_maps"] + 2


def test_write_after_read_on_zero_page_is_cow_from_zero_page(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.read(a, 1)
    z = pfn(p.pte(a))
    s0 = m.stats()
    p.write(a + 100, b"x")
    s1 = m.stats()
    pte = p.pte(a)
    assert pfn(pte) != z
    assert pte & 0xFFF == PTE_NEW_RW
    assert s1["cow_copies"] == s0["cow_copies"] + 1
    assert s1["cow_reuses"] == s0["cow_reuses"]
    assert s0["frames_free"] - s1["frames_free"] == 1
    assert p.read(a, PAGE) == bytes(100) + b"x" + bytes(PAGE - 101)
    assert frame_bytes(m, z) == bytes(PAGE)
    assert m.frame_count(pfn(pte)) == 1


def test_stats_count_faults(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    f0 = m.stats()["faults"]
    p.write(a, b"x")
    p.read(a + PAGE, 1)
    assert m.stats()["faults"] >= f0 + 2


# ----------------------------------------------------------------------------- copy fork

def test_copy_fork_write_protects_and_shares_private_frames(m, rmap):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    p.write(a, b"parent")
    f = pfn(p.pte(a))
    assert p.pte(a) == (f << 12) | PTE_NEW_RW
    s0 = m.stats()
    c = p.fork(mode="copy")
    s1 = m.stats()
    assert c.alive and c.pid != p.pid
    assert sorted(q.pid for q in m.processes) == sorted([p.pid, c.pid])
    assert c.vmas == p.vmas
    assert s0["frames_free"] - s1["frames_free"] == 2          # pgd + one page table
    assert s1["page_tables"] == s0["page_tables"] + 1
    assert s1["forks"] == s0["forks"] + 1
    assert s1["forks_copy"] == s0["forks_copy"] + 1
    assert s1["forks_share"] == s0["forks_share"]
    # both lose RW; the child's copy is old (A clear); D survives
    assert p.pte(a) == (f << 12) | (PTE_NEW_RW & ~RW)
    assert c.pte(a) == (f << 12) | (PTE_NEW_RW & ~RW & ~A)
    assert m.frame_count(f) == 2
    # the child has its own table, reached by a normal writable user PDE
    assert pfn(c.pde(a)) != pfn(p.pde(a))
    assert c.pde(a) & 0xFFF == PDE_USER and p.pde(a) & 0xFFF == PDE_USER
    assert phys_pte(m, c, a) == c.pte(a)
    if rmap:
        assert sorted(m.rmap(f)) == sorted([(pfn(p.pde(a)), ptx(a)), (pfn(c.pde(a)), ptx(a))])
    assert c.read(a, 6) == b"parent"


def test_cow_child_write_copies_parent_write_reuses(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"parent")
    f = pfn(p.pte(a))
    c = p.fork(mode="copy")
    parent_pte = p.pte(a)
    s0 = m.stats()
    c.write(a, b"child!")
    s1 = m.stats()
    cf = pfn(c.pte(a))
    assert cf != f
    assert c.pte(a) & 0xFFF == PTE_NEW_RW
    assert s1["cow_copies"] == s0["cow_copies"] + 1
    assert s1["cow_reuses"] == s0["cow_reuses"]
    assert s0["frames_free"] - s1["frames_free"] == 1
    assert m.frame_count(f) == 1 and m.frame_count(cf) == 1
    assert p.pte(a) == parent_pte
    assert p.read(a, 6) == b"parent"
    assert c.read(a, 6) == b"child!"
    # the parent's slot is now the only reference: reuse in place
    p.write(a, b"PARENT")
    s2 = m.stats()
    assert s2["cow_reuses"] == s1["cow_reuses"] + 1
    assert s2["cow_copies"] == s1["cow_copies"]
    assert s2["frames_free"] == s1["frames_free"]
    assert p.pte(a) == (f << 12) | PTE_NEW_RW
    assert m.frame_count(f) == 1
    assert p.read(a, 6) == b"PARENT" and c.read(a, 6) == b"child!"


def test_copy_fork_copies_zero_page_pte_verbatim(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.read(a, 1)
    z = pfn(p.pte(a))
    zc = m.frame_count(z)
    c = p.fork(mode="copy")
    assert c.pte(a) == p.pte(a) == (z << 12) | PTE_RO
    assert m.frame_count(z) == zc
    s0 = m.stats()
    c.write(a, b"c")
    assert m.stats()["cow_copies"] == s0["cow_copies"] + 1
    assert pfn(p.pte(a)) == z and p.read(a, 1) == b"\0"
    assert c.read(a, 1) == b"c"


def test_child_exit_returns_frames_and_parent_reuses(m):
    p = m.spawn()
    a = p.mmap(3 * PAGE)
    p.touch(a, 3 * PAGE, write=True)
    free0 = free(m)
    c = p.fork(mode="copy")
    c.exit()
    assert not c.alive
    assert [q.pid for q in m.processes] == [p.pid]
    assert free(m) == free0
    f = pfn(p.pte(a))
    assert m.frame_count(f) == 1
    s0 = m.stats()
    p.write(a, b"x")
    s1 = m.stats()
    assert s1["cow_copies"] == s0["cow_copies"]
    assert s1["cow_reuses"] == s0["cow_reuses"] + 1
    assert p.pte(a) == (f << 12) | PTE_NEW_RW


def test_fork_of_fork_counts_three(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"g")
    f = pfn(p.pte(a))
    c = p.fork(mode="copy")
    g = c.fork(mode="copy")
    assert m.frame_count(f) == 3
    assert g.read(a, 1) == b"g"
    g.write(a, b"G")
    assert m.frame_count(f) == 2
    assert p.read(a, 1) == c.read(a, 1) == b"g"


def test_fork_uses_machine_default_mode_copy(rmap):
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"x")
    s0 = m.stats()
    c = p.fork()
    assert m.stats()["forks_copy"] == s0["forks_copy"] + 1
    assert pfn(c.pde(a)) != pfn(p.pde(a))
    m.check()


# ----------------------------------------------------------------------------- shared mappings

def test_shared_read_fault_allocates_object_frame(m):
    p = m.spawn()
    s = p.mmap(2 * PAGE, prot="rw", shared=True)
    st0 = m.stats()
    assert p.read(s, 8) == bytes(8)
    st1 = m.stats()
    pte = p.pte(s)
    f = pfn(pte)
    assert pte & (P | RW | US | A) == P | RW | US | A
    assert st1["zero_page_maps"] == st0["zero_page_maps"]
    assert st1["shmem_faults"] == st0["shmem_faults"] + 1
    assert st0["frames_free"] - st1["frames_free"] == 2         # table + object frame
    assert m.frame_count(f) == 2                                # the object + one slot
    assert frame_bytes(m, f) == bytes(PAGE)


def test_shared_write_is_in_place_and_counted_once_per_slot(m):
    p = m.spawn()
    s = p.mmap(PAGE, shared=True)
    p.write(s, b"abc")
    pte = p.pte(s)
    f = pfn(pte)
    assert pte & (P | RW | US) == P | RW | US
    assert m.frame_count(f) == 2
    s0 = m.stats()
    p.write(s + 3, b"def")
    assert m.stats()["cow_copies"] == s0["cow_copies"]
    assert pfn(p.pte(s)) == f
    assert frame_bytes(m, f)[:6] == b"abcdef"


def test_shared_mapping_after_copy_fork_sees_both_ways(m):
    p = m.spawn()
    s = p.mmap(4 * PAGE, prot="rw", shared=True)
    p.write(s, b"before")
    f = pfn(p.pte(s))
    c = p.fork(mode="copy")
    assert p.pte(s) & RW and c.pte(s) & RW and c.pte(s) & P
    assert pfn(c.pte(s)) == f
    assert m.frame_count(f) == 3
    assert c.vmas == p.vmas == [(s, s + 4 * PAGE, "rw", True)]
    assert c.read(s, 6) == b"before"
    cow0 = m.stats()["cow_copies"]
    c.write(s, b"child1")
    assert p.read(s, 6) == b"child1"
    p.write(s + 2, b"PP")
    assert c.read(s, 6) == b"chPPd1"
    # a page first touched by the child after the fork
    c.write(s + 2 * PAGE + 7, b"late")
    assert p.read(s + 2 * PAGE + 7, 4) == b"late"
    assert pfn(p.pte(s + 2 * PAGE)) == pfn(c.pte(s + 2 * PAGE))
    # a page first read by the parent, then written by the child
    assert p.read(s + 3 * PAGE, 4) == bytes(4)
    c.write(s + 3 * PAGE, b"seen")
    assert p.read(s + 3 * PAGE, 4) == b"seen"
    assert m.stats()["cow_copies"] == cow0
    c.exit()
    assert p.read(s, 6) == b"chPPd1"
    assert m.frame_count(f) == 2


def test_shared_object_lives_while_a_vma_names_it(m):
    p = m.spawn()
    free0 = free(m)
    s = p.mmap(2 * PAGE, shared=True)
    p.write(s, b"one")
    p.write(s + PAGE, b"two")
    f1 = pfn(p.pte(s + PAGE))
    free1 = free(m)
    assert free0 - free1 == 3
    p.munmap(s + PAGE, PAGE)
    assert p.pte(s + PAGE) == 0
    assert p.vmas == [(s, s + PAGE, "rw", True)]
    assert free(m) == free1                      # the object still holds the frame
    assert m.frame_count(f1) == 1
    m.check()
    p.munmap(s, PAGE)
    assert p.vmas == []
    assert free(m) == free0                      # object, both frames and the table gone


def test_shared_object_survives_parent_munmap_in_child(m):
    p = m.spawn()
    s = p.mmap(PAGE, shared=True)
    p.write(s, b"keep")
    c = p.fork(mode="copy")
    p.munmap(s, PAGE)
    assert c.read(s, 4) == b"keep"
    c.write(s, b"KEEP")
    assert c.read(s, 4) == b"KEEP"
    c.exit()
    m.check()


# ----------------------------------------------------------------------------- mprotect

def test_mprotect_r_clears_rw_only(m):
    p = m.spawn()
    a = p.mmap(3 * PAGE)
    p.write(a, b"ro")
    p.write(a + PAGE, b"ro2")
    old = [p.pte(a), p.pte(a + PAGE)]
    free0 = free(m)
    p.mprotect(a, 2 * PAGE, "r")
    assert [p.pte(a), p.pte(a + PAGE)] == [e & ~RW for e in old]
    assert p.pte(a + 2 * PAGE) == 0
    assert p.vmas == [(a, a + 2 * PAGE, "r", False), (a + 2 * PAGE, a + 3 * PAGE, "rw", False)]
    assert free(m) == free0
    assert m.frame_count(pfn(old[0])) == 1
    assert p.read(a, 2) == b"ro"
    assert phys_pte(m, p, a) == p.pte(a)


def test_mprotect_none_sets_protnone_keeping_frame(m, rmap):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    p.write(a, b"hidden")
    f = pfn(p.pte(a))
    table = pfn(p.pde(a))
    free0 = free(m)
    p.mprotect(a, 2 * PAGE, "")
    pte = p.pte(a)
    assert not pte & P
    assert pte & PROTNONE
    assert pfn(pte) == f
    assert p.pte(a + PAGE) == 0
    assert p.vmas == [(a, a + 2 * PAGE, "", False)]
    assert free(m) == free0
    assert m.frame_count(f) == 1
    if rmap:
        assert m.rmap(f) == [(table, ptx(a))]
    m.check()
    # copied at fork like any mapped frame
    c = p.fork(mode="copy")
    assert m.frame_count(f) == 2
    assert c.pte(a) & PROTNONE and not c.pte(a) & P and pfn(c.pte(a)) == f
    m.check()
    # readable again, and the data is still there
    p.mprotect(a, 2 * PAGE, "r")
    assert p.pte(a) & P and not p.pte(a) & RW and pfn(p.pte(a)) == f
    assert p.read(a, 6) == b"hidden"
    c.mprotect(a, PAGE, "rw")
    s0 = m.stats()
    c.write(a, b"H")
    assert m.stats()["cow_copies"] == s0["cow_copies"] + 1
    assert c.read(a, 6) == b"Hidden" and p.read(a, 6) == b"hidden"


def test_mprotect_rw_on_private_does_not_set_rw(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"data")
    f = pfn(p.pte(a))
    p.mprotect(a, PAGE, "r")
    p.mprotect(a, PAGE, "rw")
    assert p.vmas == [(a, a + PAGE, "rw", False)]
    pte = p.pte(a)
    assert pte & P and not pte & RW and pfn(pte) == f
    s0 = m.stats()
    p.write(a, b"DA")
    s1 = m.stats()
    assert s1["cow_reuses"] == s0["cow_reuses"] + 1
    assert s1["cow_copies"] == s0["cow_copies"]
    assert s1["frames_free"] == s0["frames_free"]
    assert p.pte(a) & RW and pfn(p.pte(a)) == f
    assert p.read(a, 4) == b"DAta"


def test_mprotect_rw_after_fork_write_copies(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"data")
    p.mprotect(a, PAGE, "r")
    c = p.fork(mode="copy")
    f = pfn(p.pte(a))
    assert m.frame_count(f) == 2
    c.mprotect(a, PAGE, "rw")
    assert not c.pte(a) & RW
    s0 = m.stats()
    c.write(a, b"C")
    assert m.stats()["cow_copies"] == s0["cow_copies"] + 1
    assert p.read(a, 4) == b"data" and c.read(a, 4) == b"Cata"
    assert m.frame_count(f) == 1


def test_mprotect_on_shared_mapping_sets_and_clears_rw(m):
    p = m.spawn()
    s = p.mmap(2 * PAGE, shared=True)
    p.write(s, b"shared")
    f = pfn(p.pte(s))
    p.mprotect(s, 2 * PAGE, "r")
    assert not p.pte(s) & RW and p.pte(s) & P
    with pytest.raises(SegmentationFault):
        p.write(s, b"x")
    p.mprotect(s, 2 * PAGE, "rw")
    assert p.pte(s) & (P | RW) == P | RW and pfn(p.pte(s)) == f
    assert p.vmas == [(s, s + 2 * PAGE, "rw", True)]
    s0 = m.stats()
    p.write(s, b"S")
    assert m.stats()["cow_copies"] == s0["cow_copies"]
    assert pfn(p.pte(s)) == f
    p.mprotect(s, PAGE, "")
    assert p.pte(s) & PROTNONE and not p.pte(s) & P
    assert m.frame_count(f) == 2


@pytest.mark.parametrize("prot,expect", [("x", "r"), ("rx", "r"), ("rwx", "rw"),
                                         ("r", "r"), ("rw", "rw"), ("", "")])
def test_protection_strings(m, prot, expect):
    p = m.spawn()
    a = p.mmap(PAGE, prot=prot)
    assert p.vmas == [(a, a + PAGE, expect, False)]
    b = p.mmap(PAGE, prot="rw", addr=a + 4 * PAGE)
    p.mprotect(b, PAGE, prot)
    assert p.vmas[-1] == (b, b + PAGE, expect, False)


# ----------------------------------------------------------------------------- munmap

def test_munmap_partial_frees_frames_and_keeps_table(m):
    p = m.spawn()
    free_before = free(m)
    a = p.mmap(8 << 20, addr=BASE)
    for off in (0, PAGE, SPAN, SPAN + PAGE):
        p.write(a + off, b"x")
    pt0 = m.stats()["page_tables"]
    free0 = free(m)
    p.munmap(a + PAGE, PAGE)
    assert free(m) == free0 + 1
    assert p.pte(a + PAGE) == 0 and p.pte(a) != 0
    assert p.vmas == [(a, a + PAGE, "rw", False), (a + 2 * PAGE, a + 8 * (1 << 20), "rw", False)]
    assert m.stats()["page_tables"] == pt0
    p.munmap(a, PAGE)
    assert free(m) == free0 + 2
    assert p.pde(a) & P                      # [a+2P, a+4M) still covers the span
    assert m.stats()["page_tables"] == pt0
    p.munmap(a + 2 * PAGE, SPAN - 2 * PAGE)
    assert p.pde(a) == 0                     # no VMA in the first span: table freed
    assert m.stats()["page_tables"] == pt0 - 1
    assert free(m) == free0 + 3
    assert p.vmas == [(a + SPAN, a + 2 * SPAN, "rw", False)]
    p.munmap(a + SPAN, SPAN)
    assert p.vmas == [] and p.pde(a + SPAN) == 0
    assert free(m) == free_before
    assert not pgd_entries(m, p)[:768].any()


def test_table_kept_while_any_vma_covers_its_span(m):
    p = m.spawn()
    free0 = free(m)
    a = p.mmap(PAGE, addr=BASE)
    b = p.mmap(PAGE, addr=BASE + 0x100000)           # same 4 MiB span, never touched
    p.write(a, b"a")
    p.munmap(a, PAGE)
    assert p.pte(a) == 0
    assert p.pde(a) & P
    assert free(m) == free0 - 1                      # the table remains
    p.munmap(b, PAGE)
    assert p.pde(a) == 0
    assert free(m) == free0


def test_table_freed_when_remaining_vma_is_in_next_span(m):
    p = m.spawn()
    free0 = free(m)
    a = p.mmap(2 * PAGE, addr=BASE + SPAN - PAGE)    # crosses a table boundary
    p.write(a, b"lo")
    p.write(a + PAGE, b"hi")
    assert free0 - free(m) == 4
    p.munmap(a, PAGE)
    assert p.pde(a) == 0 and p.pde(a + PAGE) & P
    assert free0 - free(m) == 2
    assert p.read(a + PAGE, 2) == b"hi"


def test_munmap_whole_private_after_fork_keeps_other_copy(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.touch(a, 4 * PAGE, write=True)
    p.write(a, b"mine")
    c = p.fork(mode="copy")
    f = pfn(p.pte(a))
    p.munmap(a, 4 * PAGE)
    assert p.vmas == [] and p.pde(a) == 0
    assert m.frame_count(f) == 1
    assert c.read(a, 4) == b"mine"
    c.write(a, b"MINE")                        # sole owner now: reuse
    assert pfn(c.pte(a)) == f


# ----------------------------------------------------------------------------- exec / exit

def test_exec_drops_user_space_keeps_process(m):
    p = m.spawn()
    free_spawned = free(m)
    kern = pgd_entries(m, p)[768:].copy()
    a = p.mmap(8 << 20)
    s = p.mmap(2 * PAGE, shared=True)
    p.write(a, b"priv")
    p.write(a + SPAN, b"priv2")
    p.write(s, b"shm")
    c = p.fork(mode="copy")
    pid = p.pid
    p.exec()
    assert p.alive and p.pid == pid
    assert p.pid in [q.pid for q in m.processes]
    assert p.vmas == []
    ents = pgd_entries(m, p)
    assert not ents[:768].any() and (ents[768:] == kern).all()
    assert p.translate(a) is None and p.pte(a) == 0
    assert m.frame_count(pfn(c.pte(a))) == 1
    assert c.read(a, 4) == b"priv" and c.read(s, 3) == b"shm"
    c.exit()
    assert free(m) == free_spawned
    b = p.mmap(PAGE)
    p.write(b, b"new life")
    assert p.read(b, 8) == b"new life"


def test_exit_frees_everything(m):
    total = m.stats()["frames_total"]
    pt0 = m.stats()["page_tables"]
    p = m.spawn()
    a = p.mmap(8 << 20)
    s = p.mmap(4 * PAGE, shared=True)
    p.touch(a, 64 * PAGE, write=True)
    p.touch(a + SPAN, 16 * PAGE, write=False)
    p.write(s, b"x" * (3 * PAGE))
    c = p.fork(mode="copy")
    g = c.fork(mode="copy")
    c.write(a, b"c")
    g.mprotect(a, 4 * PAGE, "")
    c.munmap(a + PAGE, PAGE)
    p.exec()
    for q in (c, p, g):
        q.exit()
        assert not q.alive
        m.check()
    assert m.processes == []
    st_ = m.stats()
    assert st_["frames_free"] == total - m.boot_frames
    assert st_["page_tables"] == pt0
    assert st_["pgds"] == 0


# ----------------------------------------------------------------------------- mmap placement

def test_mmap_first_fit_at_base(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    assert a == BASE and isinstance(a, int)
    b = p.mmap(2 * PAGE)
    assert b == BASE + PAGE
    p.munmap(a, PAGE)
    assert p.mmap(PAGE) == BASE                    # the hole is reused
    d = p.mmap(2 * PAGE)
    assert d == BASE + 3 * PAGE
    p.munmap(b, 2 * PAGE)                          # hole [BASE+P, BASE+3P)
    assert p.mmap(3 * PAGE) == BASE + 5 * PAGE     # too big for the hole
    assert p.mmap(2 * PAGE) == BASE + PAGE         # fits exactly
    assert p.mmap(PAGE) == BASE + 8 * PAGE


def test_mmap_goes_below_base_when_above_is_full(m):
    p = m.spawn()
    top = p.mmap(USER_TOP - BASE)
    assert top == BASE
    b = p.mmap(PAGE)
    assert b == 0                                  # first fit below
    c = p.mmap(2 * PAGE)
    assert c == PAGE
    p.write(b, b"low")
    p.write(USER_TOP - 3, b"top")
    assert p.read(b, 3) == b"low" and p.read(USER_TOP - 3, 3) == b"top"


def test_mmap_fixed_above_hole_skipped(m):
    p = m.spawn()
    assert p.mmap(PAGE, addr=BASE + 2 * PAGE) == BASE + 2 * PAGE
    assert p.mmap(3 * PAGE) == BASE + 3 * PAGE
    assert p.mmap(2 * PAGE) == BASE


def test_mmap_fixed_replaces_existing_mapping(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE, addr=BASE)
    assert a == BASE
    for i in range(4):
        p.write(a + i * PAGE, bytes([i + 1]) * 8)
    free0 = free(m)
    b = p.mmap(2 * PAGE, prot="r", addr=a + PAGE)
    assert b == a + PAGE
    assert p.vmas == [(a, a + PAGE, "rw", False), (a + PAGE, a + 3 * PAGE, "r", False),
                      (a + 3 * PAGE, a + 4 * PAGE, "rw", False)]
    assert free(m) == free0 + 2
    assert p.pte(a + PAGE) == 0 and p.pte(a + 2 * PAGE) == 0
    assert p.read(a + PAGE, 8) == bytes(8)
    assert p.read(a, 8) == b"\x01" * 8 and p.read(a + 3 * PAGE, 8) == b"\x04" * 8
    with pytest.raises(SegmentationFault):
        p.write(a + PAGE, b"x")


def test_mmap_fixed_shared_over_private(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE, addr=BASE)
    p.write(a, b"old")
    s = p.mmap(PAGE, shared=True, addr=a)
    assert s == a
    assert p.vmas == [(a, a + PAGE, "rw", True), (a + PAGE, a + 2 * PAGE, "rw", False)]
    assert p.read(a, 3) == bytes(3)
    c = p.fork(mode="copy")
    c.write(a, b"new")
    assert p.read(a, 3) == b"new"


def test_mmap_fixed_at_address_zero(m):
    p = m.spawn()
    assert p.mmap(PAGE, addr=0) == 0
    p.write(0, b"null")
    assert p.read(0, 4) == b"null"


# ----------------------------------------------------------------------------- read / write

def test_read_write_cross_pages_and_vmas(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE, addr=BASE)
    s = p.mmap(2 * PAGE, shared=True, addr=BASE + 2 * PAGE)
    assert p.vmas == [(a, a + 2 * PAGE, "rw", False), (s, s + 2 * PAGE, "rw", True)]
    data = (bytes(range(256)) * 64)[:4 * PAGE - 200]
    p.write(a + 100, data)
    out = p.read(a + 100, len(data))
    assert isinstance(out, bytes) and out == data
    assert p.read(a, 100) == bytes(100)
    assert p.read(a + 4 * PAGE - 100, 100) == bytes(100)
    for off in (100, PAGE - 1, PAGE, 2 * PAGE + 5, 4 * PAGE - 101):
        phys = p.translate(a + off)
        assert m.physical[phys] == data[off - 100]
    c = p.fork(mode="copy")
    assert c.read(a + 100, len(data)) == data
    p.write(a + 2 * PAGE - 3, b"ABCDEF")           # 3 private bytes, 3 shared bytes
    assert c.read(a + 2 * PAGE - 3, 6) == data[2 * PAGE - 103:2 * PAGE - 100] + b"DEF"
    assert p.read(a + 2 * PAGE - 3, 6) == b"ABCDEF"


def test_read_write_single_bytes_and_page_edges(m):
    p = m.spawn()
    a = p.mmap(3 * PAGE)
    p.write(a + PAGE - 1, b"\xff\xee")
    assert p.read(a + PAGE - 1, 2) == b"\xff\xee"
    assert p.read(a + PAGE - 1, 1) == b"\xff"
    p.write(a + 3 * PAGE - 1, b"!")
    assert p.read(a + 3 * PAGE - 1, 1) == b"!"
    big = bytes(np.arange(3 * PAGE, dtype=np.uint32).astype(np.uint8))
    p.write(a, big)
    assert p.read(a, 3 * PAGE) == big


def test_read_spanning_untouched_pages_maps_zero_page(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    s0 = m.stats()
    assert p.read(a + 10, 3 * PAGE) == bytes(3 * PAGE)
    assert m.stats()["zero_page_maps"] == s0["zero_page_maps"] + 4
    z = pfn(p.pte(a))
    assert all(pfn(p.pte(a + i * PAGE)) == z for i in range(4))


# ----------------------------------------------------------------------------- touch

def test_touch_write_and_read(m):
    p = m.spawn()
    a = p.mmap(16 * PAGE)
    s0 = m.stats()
    p.touch(a, 16 * PAGE, write=True)
    s1 = m.stats()
    assert s0["frames_free"] - s1["frames_free"] == 17
    assert s1["demand_zero"] == s0["demand_zero"] + 16
    ptes = [p.pte(a + i * PAGE) for i in range(16)]
    assert all(e & 0xFFF == PTE_NEW_RW for e in ptes)
    assert len(set(pfn(e) for e in ptes)) == 16
    b = p.mmap(8 * PAGE)
    assert b == a + 16 * PAGE
    p.touch(b, 8 * PAGE, write=False)
    s2 = m.stats()
    assert s2["zero_page_maps"] == s1["zero_page_maps"] + 8
    assert s2["frames_free"] == s1["frames_free"]
    z = pfn(p.pte(b))
    assert all(p.pte(b + i * PAGE) == (z << 12) | PTE_RO for i in range(8))
    p.touch(b, 8 * PAGE, write=True)
    s3 = m.stats()
    assert s3["cow_copies"] == s2["cow_copies"] + 8
    assert s2["frames_free"] - s3["frames_free"] == 8
    # touching present pages again changes nothing
    p.touch(a, 24 * PAGE, write=True)
    assert m.stats()["frames_free"] == s3["frames_free"]
    assert m.stats()["cow_copies"] == s3["cow_copies"]
    assert p.read(a, 24 * PAGE) == bytes(24 * PAGE)


def test_touch_partial_range(m):
    p = m.spawn()
    a = p.mmap(8 * PAGE)
    p.touch(a + 2 * PAGE, 3 * PAGE, write=True)
    present = [bool(p.pte(a + i * PAGE) & P) for i in range(8)]
    assert present == [False, False, True, True, True, False, False, False]


def test_touch_pages(m):
    p = m.spawn()
    a = p.mmap(8 << 20, addr=BASE)
    s0 = m.stats()
    pages = addrs(a, a + 5 * PAGE, a + SPAN + 3 * PAGE, a + 2 * SPAN - PAGE)
    p.touch_pages(pages, write=True)
    s1 = m.stats()
    assert s0["frames_free"] - s1["frames_free"] == 6          # 2 tables + 4 pages
    for x in pages:
        assert p.pte(int(x)) & 0xFFF == PTE_NEW_RW
    assert p.pte(a + PAGE) == 0 and p.pte(a + SPAN) == 0
    p.touch_pages(addrs(a + PAGE, a + 2 * PAGE), write=False)
    assert m.stats()["zero_page_maps"] == s1["zero_page_maps"] + 2
    assert p.pte(a + PAGE) & 0xFFF == PTE_RO
    p.touch_pages(addrs(a, a + 5 * PAGE), write=True)          # already there: no change
    assert m.stats()["frames_free"] == s1["frames_free"]


# ----------------------------------------------------------------------------- translate

def test_translate(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    assert p.translate(a) is None
    assert p.translate(0x1000) is None                # outside any VMA
    p.write(a + 123, b"t")
    f = pfn(p.pte(a))
    assert p.translate(a + 123) == f * PAGE + 123
    assert p.translate(a) == f * PAGE
    assert p.translate(a + PAGE - 1) == f * PAGE + PAGE - 1
    assert p.translate(a + PAGE) is None
    assert m.physical[p.translate(a + 123)] == ord("t")
    p.munmap(a, PAGE)
    assert p.translate(a + 123) is None


# ----------------------------------------------------------------------------- VMAs

def test_vma_split_by_mprotect_and_munmap(m):
    p = m.spawn()
    a = p.mmap(8 * PAGE)
    assert p.vmas == [(a, a + 8 * PAGE, "rw", False)]
    p.mprotect(a + 2 * PAGE, 2 * PAGE, "r")
    assert p.vmas == [(a, a + 2 * PAGE, "rw", False), (a + 2 * PAGE, a + 4 * PAGE, "r", False),
                      (a + 4 * PAGE, a + 8 * PAGE, "rw", False)]
    p.munmap(a + 5 * PAGE, PAGE)
    assert p.vmas == [(a, a + 2 * PAGE, "rw", False), (a + 2 * PAGE, a + 4 * PAGE, "r", False),
                      (a + 4 * PAGE, a + 5 * PAGE, "rw", False),
                      (a + 6 * PAGE, a + 8 * PAGE, "rw", False)]
    p.mprotect(a + 6 * PAGE, 2 * PAGE, "")
    assert p.vmas[-1] == (a + 6 * PAGE, a + 8 * PAGE, "", False)


def test_vma_merge_after_mprotect_restores(m):
    p = m.spawn()
    a = p.mmap(8 * PAGE)
    p.mprotect(a + 2 * PAGE, 2 * PAGE, "r")
    p.mprotect(a + 2 * PAGE, 2 * PAGE, "rw")
    assert p.vmas == [(a, a + 8 * PAGE, "rw", False)]


def test_vma_merge_of_adjacent_private_mmaps(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    b = p.mmap(2 * PAGE)
    assert b == a + 2 * PAGE
    assert p.vmas == [(a, a + 4 * PAGE, "rw", False)]
    p.munmap(a + PAGE, PAGE)
    p.mmap(PAGE, addr=a + PAGE)
    assert p.vmas == [(a, a + 4 * PAGE, "rw", False)]


def test_adjacent_shared_mappings_do_not_merge(m):
    p = m.spawn()
    s1 = p.mmap(PAGE, shared=True)
    s2 = p.mmap(PAGE, shared=True)
    a = p.mmap(PAGE)
    assert s2 == s1 + PAGE and a == s2 + PAGE
    assert p.vmas == [(s1, s1 + PAGE, "rw", True), (s2, s2 + PAGE, "rw", True),
                      (a, a + PAGE, "rw", False)]
    p.write(s1, b"1")
    p.write(s2, b"2")
    assert pfn(p.pte(s1)) != pfn(p.pte(s2))


def test_vmas_of_child_are_a_copy(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    c = p.fork(mode="copy")
    c.munmap(a, PAGE)
    assert p.vmas == [(a, a + 4 * PAGE, "rw", False)]
    assert c.vmas == [(a + PAGE, a + 4 * PAGE, "rw", False)]


# ----------------------------------------------------------------------------- physical memory

def test_page_tables_are_frames_of_physical_memory(m):
    p = m.spawn()
    a = p.mmap(8 << 20, addr=BASE)
    s = p.mmap(PAGE, shared=True)
    pages = [a, a + 7 * PAGE, a + SPAN - PAGE, a + SPAN, a + 2 * SPAN - PAGE]
    for i, x in enumerate(pages):
        p.write(x, bytes([i + 1]))
    p.read(a + PAGE, 1)
    p.write(s, b"s")
    c = p.fork(mode="copy")
    p.mprotect(a + 7 * PAGE, PAGE, "")
    for q in (p, c):
        for x in pages + [a + PAGE, a + 2 * PAGE, s]:
            assert phys_pte(m, q, x) == q.pte(x)
            assert pgd_entries(m, q)[x >> 22] == q.pde(x)
        for i, x in enumerate(pages):
            if q.pte(x) & P:
                assert m.physical[q.translate(x)] == i + 1


def test_rmap_slots_follow_mappings(m, rmap):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"r")
    f = pfn(p.pte(a))
    c = p.fork(mode="copy")
    g = p.fork(mode="copy")
    expect = sorted((pfn(q.pde(a)), ptx(a)) for q in (p, c, g))
    assert sorted(m.rmap(f)) == (expect if rmap else [])
    c.exit()
    expect = sorted((pfn(q.pde(a)), ptx(a)) for q in (p, g))
    assert sorted(m.rmap(f)) == (expect if rmap else [])
    g.write(a, b"G")
    assert sorted(m.rmap(f)) == ([(pfn(p.pde(a)), ptx(a))] if rmap else [])


# ----------------------------------------------------------------------------- a full 3 GiB space

def _rss_bytes():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_full_3gib_address_space(rmap):
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    m = Machine(memory=4 << 30, fork_mode="copy", rmap=rmap)
    built = time.perf_counter() - t0
    assert built < 1.0, f"Machine(memory=4 GiB) took {built:.2f} s"
    assert _rss_bytes() - rss0 < 128 << 20, "construction touched host memory"
    s = m.stats()
    assert s["frames_total"] == 1 << 20
    assert s["frames_free"] == (1 << 20) - m.boot_frames
    p = m.spawn()
    assert p.mmap(USER_TOP, addr=0) == 0
    assert p.vmas == [(0, USER_TOP, "rw", False)]
    assert USER_TOP // PAGE == 786432
    n = 1024
    p.touch(0, n * PAGE, write=True)
    p.touch(USER_TOP - n * PAGE, n * PAGE, write=False)
    p.touch(USER_TOP - n * PAGE // 2, n * PAGE // 2, write=True)
    one_per_table = np.arange(0, USER_TOP, SPAN, dtype=np.uint64) + 5 * PAGE
    p.touch_pages(one_per_table, write=True)
    assert m.stats()["page_tables"] == 768
    p.write(0, b"first")
    p.write(USER_TOP - 5, b"last!")
    p.write(0x80000000 - 2, b"midpt")
    c = p.fork(mode="copy")
    m.check()
    assert m.stats()["page_tables"] == 2 * 768
    for q in (p, c):
        assert q.read(0, 5) == b"first"
        assert q.read(USER_TOP - 5, 5) == b"last!"
        assert q.read(0x80000000 - 2, 5) == b"midpt"
        for x in (0, PAGE * (n - 1), USER_TOP - PAGE, 0x80000000, 0xBFC00000 + 5 * PAGE):
            assert phys_pte(m, q, x) == q.pte(x)
    assert pfn(c.pte(0)) == pfn(p.pte(0))
    assert m.frame_count(pfn(p.pte(0))) == 2
    c.write(USER_TOP - 5, b"CHILD")
    assert p.read(USER_TOP - 5, 5) == b"last!"
    m.check()
    c.exit()
    p.exit()
    s = m.stats()
    assert s["frames_free"] == s["frames_total"] - m.boot_frames
    m.check()
    # the host backs only touched frames: a few thousand pages, not 4 GiB
    assert _rss_bytes() - rss0 < 512 << 20


# ----------------------------------------------------------------------------- fresh frames, offsets

def test_recycled_frames_are_zeroed(m):
    """Frames freed with data in them (pages and page tables) come back zeroed."""
    p = m.spawn()
    a = p.mmap(8 << 20, addr=BASE)
    junk = b"\xaa" * PAGE
    for i in range(200):
        p.write(a + i * PAGE, junk)
    for i in range(200):
        p.write(a + SPAN + i * PAGE, junk)
    c = p.fork(mode="copy")
    c.exit()
    p.munmap(a, 8 << 20)
    assert p.vmas == []
    b = p.mmap(16 << 20, addr=BASE + 16 * SPAN)
    s = p.mmap(64 * PAGE, shared=True)
    p.touch(b, 300 * PAGE, write=True)
    for i in range(0, 16 << 20, SPAN):          # fresh page tables everywhere
        p.write(b + i + SPAN - PAGE, b"\x01")
    p.touch(s, 64 * PAGE, write=False)
    assert p.read(b, 300 * PAGE) == bytes(300 * PAGE)
    assert p.read(s, 64 * PAGE) == bytes(64 * PAGE)
    for i in range(0, 16 << 20, SPAN):
        table = pfn(p.pde(b + i))
        ents = m.physical[table * PAGE:(table + 1) * PAGE].view("<u4")
        nonzero = int(np.count_nonzero(ents))
        assert nonzero == (301 if i == 0 else 1)


def test_cow_copy_copies_the_whole_page(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    data = bytes(np.arange(PAGE, dtype=np.uint32).astype(np.uint8) | 1)
    p.write(a, data)
    c = p.fork(mode="copy")
    c.write(a + PAGE - 1, b"\0")
    assert c.read(a, PAGE) == data[:-1] + b"\0"
    assert p.read(a, PAGE) == data
    assert frame_bytes(m, pfn(c.pte(a))) == data[:-1] + b"\0"


def test_shared_object_offsets_survive_vma_splits(m):
    p = m.spawn()
    s = p.mmap(6 * PAGE, shared=True, addr=BASE)
    for i in range(6):
        p.write(s + i * PAGE, bytes([0x10 + i]) * 4)
    c = p.fork(mode="copy")
    p.munmap(s + PAGE, PAGE)                       # two VMAs, one object
    p.mprotect(s + 4 * PAGE, PAGE, "r")            # three
    assert p.vmas == [(s, s + PAGE, "rw", True), (s + 2 * PAGE, s + 4 * PAGE, "rw", True),
                      (s + 4 * PAGE, s + 5 * PAGE, "r", True),
                      (s + 5 * PAGE, s + 6 * PAGE, "rw", True)]
    for i in (0, 2, 3, 4, 5):
        assert p.read(s + i * PAGE, 4) == bytes([0x10 + i]) * 4
    c.write(s + 5 * PAGE, b"five")
    c.write(s + 3 * PAGE, b"tree")
    assert p.read(s + 5 * PAGE, 4) == b"five"
    assert p.read(s + 3 * PAGE, 4) == b"tree"
    assert c.read(s + PAGE, 4) == b"\x11" * 4
    g = p.fork(mode="copy")                        # fork of the split mapping
    g.write(s + 2 * PAGE, b"grnd")
    assert c.read(s + 2 * PAGE, 4) == b"grnd"
    assert p.read(s + 2 * PAGE, 4) == b"grnd"


def test_shared_offsets_for_pages_first_touched_after_split(m):
    p = m.spawn()
    s = p.mmap(4 * PAGE, shared=True)
    c = p.fork(mode="copy")
    c.mprotect(s + PAGE, PAGE, "r")               # c: three VMAs over the same object
    p.write(s + 2 * PAGE, b"two")                 # untouched before: first fault here
    assert c.read(s + 2 * PAGE, 3) == b"two"
    c.write(s + 3 * PAGE, b"three")
    assert p.read(s + 3 * PAGE, 5) == b"three"
    assert p.read(s + PAGE, 1) == b"\0"
    assert c.read(s + PAGE, 1) == b"\0"
    assert pfn(p.pte(s + PAGE)) == pfn(c.pte(s + PAGE))


def test_mmap_fixed_over_several_vmas_drops_shared_object(m):
    p = m.spawn()
    free0 = free(m)
    a = p.mmap(2 * PAGE, addr=BASE)
    s = p.mmap(2 * PAGE, shared=True, addr=BASE + 2 * PAGE)
    p.touch(a, 4 * PAGE, write=True)
    assert p.vmas == [(a, a + 2 * PAGE, "rw", False), (s, s + 2 * PAGE, "rw", True)]
    n = p.mmap(4 * PAGE, prot="r", addr=a)
    assert n == a and p.vmas == [(a, a + 4 * PAGE, "r", False)]
    assert free(m) == free0                       # frames, object and table all gone
    assert p.read(a, 4 * PAGE) == bytes(4 * PAGE)


def test_munmap_across_vmas_and_holes(m):
    p = m.spawn()
    free0 = free(m)
    p.mmap(PAGE, addr=BASE)
    p.mmap(PAGE, addr=BASE + 2 * PAGE, shared=True)
    p.mmap(PAGE, prot="r", addr=BASE + 4 * PAGE)
    p.touch(BASE, PAGE, write=True)
    p.touch(BASE + 2 * PAGE, PAGE, write=True)
    p.touch(BASE + 4 * PAGE, PAGE, write=False)
    p.munmap(BASE, 8 * PAGE)
    assert p.vmas == [] and p.pde(BASE) == 0
    assert free(m) == free0


def test_mprotect_partial_then_fork_and_write(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.touch(a, 4 * PAGE, write=True)
    p.mprotect(a + PAGE, 2 * PAGE, "r")
    c = p.fork(mode="copy")
    for q in (p, c):
        assert [bool(q.pte(a + i * PAGE) & RW) for i in range(4)] == [False] * 4
    c.write(a, b"c0")
    p.write(a + 3 * PAGE, b"p3")
    with pytest.raises(SegmentationFault):
        c.write(a + PAGE, b"x")
    assert p.read(a, 2) == b"\0\0" and c.read(a + 3 * PAGE, 2) == b"\0\0"
    assert m.frame_count(pfn(p.pte(a + PAGE))) == 2


def test_protnone_sole_owner_reuses_after_mprotect_rw(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"prot")
    f = pfn(p.pte(a))
    p.mprotect(a, PAGE, "")
    p.mprotect(a, PAGE, "rw")
    s0 = m.stats()
    p.write(a, b"P")
    assert m.stats()["cow_reuses"] == s0["cow_reuses"] + 1
    assert pfn(p.pte(a)) == f and p.read(a, 4) == b"Prot"


def test_shared_read_only_mapping_maps_object_frame_read_only(m):
    p = m.spawn()
    s = p.mmap(2 * PAGE, prot="r", shared=True)
    s0 = m.stats()
    assert p.read(s, 4) == bytes(4)
    pte = p.pte(s)
    assert pte & P and not pte & RW
    assert m.stats()["zero_page_maps"] == s0["zero_page_maps"]
    assert m.frame_count(pfn(pte)) == 2
    c = p.fork(mode="copy")
    c.mprotect(s, 2 * PAGE, "rw")
    assert c.pte(s) & RW
    c.write(s, b"via c")
    assert p.read(s, 5) == b"via c"


def test_touch_and_touch_pages_on_shared_mapping(m):
    p = m.spawn()
    s = p.mmap(8 * PAGE, shared=True)
    s0 = m.stats()
    p.touch(s, 4 * PAGE, write=False)
    p.touch_pages(addrs(s + 5 * PAGE, s + 7 * PAGE), write=True)
    s1 = m.stats()
    assert s1["shmem_faults"] == s0["shmem_faults"] + 6
    assert s1["zero_page_maps"] == s0["zero_page_maps"]
    assert s0["frames_free"] - s1["frames_free"] == 7
    c = p.fork(mode="copy")
    for i in (0, 1, 2, 3, 5, 7):
        assert pfn(c.pte(s + i * PAGE)) == pfn(p.pte(s + i * PAGE))
        assert m.frame_count(pfn(p.pte(s + i * PAGE))) == 3
    assert c.pte(s + 4 * PAGE) == 0


def test_exec_in_child_then_parent_reuses(m):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.touch(a, 4 * PAGE, write=True)
    c = p.fork(mode="copy")
    c.exec()
    c2 = c.fork(mode="copy")
    assert c2.vmas == []
    s0 = m.stats()
    p.touch(a, 4 * PAGE, write=True)
    s1 = m.stats()
    assert s1["cow_reuses"] == s0["cow_reuses"] + 4
    assert s1["cow_copies"] == s0["cow_copies"]


# ----------------------------------------------------------------------------- swap (base cases)

@pytest.fixture
def ms(rmap):
    machine = Machine(memory=16 << 20, fork_mode="copy", rmap=rmap, swap=4 << 20)
    yield machine
    machine.check()


def test_swap_entry_encoding_and_swap_in(ms):
    m = ms
    assert m.stats()["swap_total"] == 1024
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    for i in range(4):
        p.write(a + i * PAGE, bytes([i + 1]) * PAGE)
    free0 = free(m)
    got = m.reclaim(4)
    assert got == 4
    assert free(m) == free0 + 4
    s = m.stats()
    assert s["swap_outs"] == 4 and s["swap_used"] == 4
    offsets = set()
    for i in range(4):
        e = p.pte(a + i * PAGE)
        assert e != 0 and not e & P and not e & PROTNONE
        offsets.add(e >> 8)
        assert phys_pte(m, p, a + i * PAGE) == e
        assert p.translate(a + i * PAGE) is None
    assert len(offsets) == 4
    m.check()
    assert p.read(a + 2 * PAGE, PAGE) == b"\x03" * PAGE
    assert m.stats()["swap_ins"] == 1
    assert p.pte(a + 2 * PAGE) & P
    p.write(a + 3 * PAGE, b"w")
    assert p.read(a + 3 * PAGE, 2) == b"w\x04"
    assert p.pte(a + 3 * PAGE) & (P | RW) == P | RW
    for i in range(4):
        assert p.read(a + i * PAGE + PAGE - 1, 1) == bytes([i + 1])


def test_copy_fork_of_swap_entries_and_exit_frees_swap(ms):
    m = ms
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    for i in range(4):
        p.write(a + i * PAGE, bytes([0x21 + i]) * 8)
    assert m.reclaim(4) == 4
    c = p.fork(mode="copy")
    for i in range(4):
        assert c.pte(a + i * PAGE) == p.pte(a + i * PAGE)
    m.check()
    assert c.read(a + PAGE, 8) == b"\x22" * 8
    c.write(a, b"C")
    assert p.read(a, 2) == b"\x21\x21" and c.read(a, 2) == b"C\x21"
    m.check()
    c.exit()
    m.check()
    p.munmap(a, PAGE)
    p.exit()
    s = m.stats()
    assert s["swap_used"] == 0
    assert s["frames_free"] == s["frames_total"] - m.boot_frames


# ----------------------------------------------------------------------------- machines, counters

def test_two_machines_are_independent(rmap):
    m1 = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    m2 = Machine(memory=16 << 20, fork_mode="copy", rmap=rmap)
    p1, p2 = m1.spawn(), m2.spawn()
    a1 = p1.mmap(4 * PAGE)
    a2 = p2.mmap(4 * PAGE)
    p1.write(a1, b"one")
    p2.write(a2, b"two")
    c1 = p1.fork(mode="copy")
    c2 = p2.fork(mode="copy")
    c1.write(a1, b"ONE")
    assert p1.read(a1, 3) == b"one" and c1.read(a1, 3) == b"ONE"
    assert p2.read(a2, 3) == b"two" and c2.read(a2, 3) == b"two"
    assert m1.stats()["cow_copies"] == 1 and m2.stats()["cow_copies"] == 0
    assert m1.stats()["frames_total"] == 2048 and m2.stats()["frames_total"] == 4096
    m1.check()
    m2.check()
    all_exit(m1)
    assert len(m2.processes) == 2
    m2.check()


def test_frame_counters_and_peaks(m):
    p = m.spawn()
    a = p.mmap(8 << 20)
    p.touch(a, 100 * PAGE, write=True)
    p.write(a + SPAN, b"x")
    s = m.stats()
    assert s["frames_used"] + s["frames_free"] == s["frames_total"]
    assert s["frames_peak"] >= s["frames_used"]
    assert s["page_tables_peak"] >= s["page_tables"] == 2
    used = s["frames_used"]
    p.munmap(a, 8 << 20)
    s = m.stats()
    assert s["frames_used"] == used - 103
    assert s["frames_peak"] >= used
    m.reset_peaks()
    s = m.stats()
    assert s["frames_peak"] == s["frames_used"]
    assert s["page_tables_peak"] == s["page_tables"] == 0
