"""Reverse mapping (DESIGN.md §2 "rmap", KERNEL-NOTES "rmap (2.5 -> 2.6.0)").

Every pte_chain transition of 2.6.0, observed through the public API only:
``m.rmap(pfn)`` (the (table_pfn, index) slots that map a frame) and the stats keys
``pte_chain_nodes``, ``pte_chain_slots`` (slots held in chain nodes), ``rmap_direct``
(frames whose single mapping is stored in the frame, PageDirect) and
``chain_nodes_allocated``.

The shape we check, with NRPTE = 15 slots per node:
- one mapping: direct, no node;
- a second mapping: one node holding both slots;
- 15 mappings fill one node, the 16th opens a new head;
- removal moves the head's first used slot into the hole and frees the head when it
  empties; a chain never collapses back to direct by removal alone;
- ``page_referenced`` (the reclaim clock) collapses a one-slot chain back to direct.

A slot is (table_pfn, index) with table_pfn = p.pde(a) >> 12 and index = (a >> 12) & 1023.
"""

import math

import pytest

from lazyvm import Machine, OutOfMemory

PAGE = 4096
SPAN = 4 << 20
NRPTE = 15
P, RW, A, PROTNONE = 0x001, 0x002, 0x020, 0x080
BASE = 0x40000000


# ----------------------------------------------------------------------------- helpers

def mk(rmap=True, memory=16 << 20, **kw):
    """A small machine forking in copy mode unless told otherwise."""
    kw.setdefault("fork_mode", "copy")
    return Machine(memory=memory, rmap=rmap, **kw)


def present(e):
    """pte_present: P or PROTNONE."""
    return bool(e & (P | PROTNONE))


def slot_of(p, a):
    """The (table_pfn, index) slot of the PTE that maps a in p."""
    pde = p.pde(a)
    assert pde & P, "no page table at %#x" % a
    return (pde >> 12, (a >> 12) & 1023)


def pfn_of(p, a):
    e = p.pte(a)
    assert present(e), "page %#x not mapped (pte %#x)" % (a, e)
    return e >> 12


def slots(m, pfn):
    """m.rmap(pfn) as a set, after checking it holds no duplicate."""
    lst = [tuple(s) for s in m.rmap(pfn)]
    assert len(lst) == len(set(lst)), "duplicate slots in rmap(%d): %r" % (pfn, lst)
    return set(lst)


def zero_pfn(m):
    """The ZERO_PAGE frame, found through a read fault in a scratch process."""
    q = m.spawn()
    a = q.mmap(PAGE, prot="r")
    q.read(a, 1)
    z = q.pte(a) >> 12
    q.exit()
    return z


def expected_rmap(m, zp):
    """{pfn: set of slots}, collected by walking every live process's PTEs."""
    exp = {}
    for p in m.processes:
        for start, end, _prot, _shared in p.vmas:
            for a in range(start, end, PAGE):
                e = p.pte(a)
                if not present(e) or e >> 12 == zp:
                    continue
                exp.setdefault(e >> 12, set()).add(slot_of(p, a))
    return exp


def assert_rmap_exact(m, zp):
    """m.rmap(pfn) lists exactly the slots that map each frame; ZERO_PAGE has none;
    the chain counters add up."""
    exp = expected_rmap(m, zp)
    for pfn, s in exp.items():
        assert slots(m, pfn) == s, "rmap(%d)" % pfn
    assert m.rmap(zp) == []
    st = m.stats()
    total = sum(len(s) for s in exp.values())
    assert st["pte_chain_slots"] + st["rmap_direct"] == total
    # a frame with k >= 2 slots needs ceil(k / NRPTE) nodes; a 1-slot frame 0 or 1
    lo = sum(math.ceil(len(s) / NRPTE) for s in exp.values() if len(s) >= 2)
    hi = lo + sum(1 for s in exp.values() if len(s) == 1)
    assert lo <= st["pte_chain_nodes"] <= hi
    m.check()


def fan_out(m, nmaps, shared=False):
    """A parent with one written page, copy-forked so that nmaps PTEs map the frame.

    Returns (parent, children, address, pfn)."""
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw", shared=shared)
    p.write(a, b"fan")
    f = pfn_of(p, a)
    kids = [p.fork(mode="copy") for _ in range(nmaps - 1)]
    return p, kids, a, f


def chain_state(m):
    st = m.stats()
    return st["pte_chain_nodes"], st["pte_chain_slots"], st["rmap_direct"]


# ----------------------------------------------------------------------------- direct

def test_single_mapping_is_direct():
    m = mk()
    st0 = m.stats()
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, b"x")
    f = pfn_of(p, a)
    st = m.stats()
    assert [tuple(s) for s in m.rmap(f)] == [slot_of(p, a)]
    assert slot_of(p, a) == (p.pde(a) >> 12, (a >> 12) & 1023)
    assert st["rmap_direct"] == st0["rmap_direct"] + 1
    assert st["pte_chain_nodes"] == st0["pte_chain_nodes"]
    assert st["pte_chain_slots"] == st0["pte_chain_slots"]
    assert st["chain_nodes_allocated"] == st0["chain_nodes_allocated"]
    m.check()


def test_second_mapping_makes_a_node():
    m = mk()
    st0 = m.stats()
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, b"x")
    f = pfn_of(p, a)
    c = p.fork(mode="copy")
    st = m.stats()
    assert pfn_of(c, a) == f
    assert slot_of(c, a) != slot_of(p, a)
    assert slots(m, f) == {slot_of(p, a), slot_of(c, a)}
    assert st["pte_chain_nodes"] == st0["pte_chain_nodes"] + 1
    assert st["pte_chain_slots"] == st0["pte_chain_slots"] + 2
    assert st["rmap_direct"] == st0["rmap_direct"]          # the direct slot moved out
    assert st["chain_nodes_allocated"] == st0["chain_nodes_allocated"] + 1
    m.check()


# ----------------------------------------------------------------------------- filling

@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared-mapping"])
def test_fifteen_slots_fill_one_node_the_sixteenth_opens_a_new_head(shared):
    m = mk()
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw", shared=shared)
    p.write(a, b"fill")
    f = pfn_of(p, a)
    n0 = chain_state(m)
    assert n0 == (0, 0, 1)
    procs = [p]
    for k in range(2, 2 * NRPTE + 2):                        # 2 .. 31 mappings
        procs.append(p.fork(mode="copy"))
        nodes, nslots, direct = chain_state(m)
        assert nslots == k and direct == 0
        assert nodes == math.ceil(k / NRPTE), "%d mappings" % k
        if k == NRPTE:
            assert nodes == 1
        if k == NRPTE + 1:
            assert nodes == 2
    assert slots(m, f) == {slot_of(q, a) for q in procs}
    assert m.stats()["chain_nodes_allocated"] == 3
    m.check()


# ----------------------------------------------------------------------------- removal

def test_removal_from_the_middle_frees_the_emptied_head():
    m = mk()
    p, kids, a, f = fan_out(m, NRPTE + 1)                    # 16 mappings: 2 nodes
    assert chain_state(m) == (2, 16, 0)
    live = [p] + kids
    victim = kids[7]
    gone = slot_of(victim, a)
    victim.exit()
    live.remove(victim)
    # the head held one slot; it moved into the hole and the head was freed
    assert chain_state(m) == (1, 15, 0)
    assert slots(m, f) == {slot_of(q, a) for q in live}
    assert gone not in slots(m, f)
    m.check()
    # another removal from the middle of the now single, full node
    victim = kids[3]
    victim.exit()
    live.remove(victim)
    assert chain_state(m) == (1, 14, 0)
    assert slots(m, f) == {slot_of(q, a) for q in live}
    m.check()


def test_removal_down_to_one_slot_never_collapses_to_direct():
    """2.6.0 page_remove_rmap never goes back to PageDirect: after every child exits the
    parent's single slot still lives in a chain node."""
    m = mk()
    p, kids, a, f = fan_out(m, 2 * NRPTE + 1)                # 31 mappings: 3 nodes
    assert chain_state(m) == (3, 31, 0)
    live = [p] + kids
    for i, q in enumerate(list(kids)):
        q.exit()
        live.remove(q)
        k = len(live)
        nodes, nslots, direct = chain_state(m)
        assert nslots == k and direct == 0
        assert nodes == math.ceil(k / NRPTE), "%d mappings left" % k
        assert slots(m, f) == {slot_of(q2, a) for q2 in live}
        if i % 7 == 0:
            m.check()
    assert chain_state(m) == (1, 1, 0)                       # not back to (0, 0, 1)
    assert slots(m, f) == {slot_of(p, a)}
    # a write by the last user reuses the frame in place; the chain is untouched
    st0 = m.stats()
    p.write(a, b"mine")
    assert pfn_of(p, a) == f
    assert m.stats()["cow_reuses"] == st0["cow_reuses"] + 1
    assert chain_state(m) == (1, 1, 0)
    m.check()
    p.exit()
    assert chain_state(m) == (0, 0, 0)
    assert m.rmap(f) == []
    st = m.stats()
    assert st["frames_total"] - st["frames_free"] == m.boot_frames
    m.check()


def test_children_exit_leaves_one_node_per_frame_until_the_parent_exits():
    m = mk()
    p = m.spawn()
    n = 20
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, b"page%03d" % i)
    assert chain_state(m) == (0, 0, n)
    kids = [p.fork(mode="copy") for _ in range(3)]
    assert chain_state(m) == (n, 4 * n, 0)
    kids[0].write(a, b"cow")                                 # a direct private copy
    assert chain_state(m) == (n, 4 * n - 1, 1)
    for c in kids:
        c.exit()
        m.check()
    # every frame keeps its parent's one slot in a node: removal never collapses
    assert chain_state(m) == (n, n, 0)
    for i in range(n):
        assert slots(m, pfn_of(p, a + i * PAGE)) == {slot_of(p, a + i * PAGE)}
    p.exit()
    assert chain_state(m) == (0, 0, 0)
    m.check()


def test_emptied_head_is_freed_while_a_shared_object_keeps_the_frame():
    m = mk()
    p = m.spawn()
    s = p.mmap(2 * PAGE, prot="rw", shared=True)
    p.write(s, b"obj")
    f = pfn_of(p, s)
    c = p.fork(mode="copy")
    assert chain_state(m) == (1, 2, 0)
    assert m.frame_count(f) == 3                             # two PTEs + the object
    c.munmap(s, PAGE)
    assert chain_state(m) == (1, 1, 0)
    assert slots(m, f) == {slot_of(p, s)}
    p.munmap(s, PAGE)                                        # last slot: head empties
    assert chain_state(m) == (0, 0, 0)
    assert m.rmap(f) == []
    assert m.frame_count(f) == 1                             # the object still holds it
    m.check()
    p.exit()
    c.exit()
    st = m.stats()
    assert st["frames_total"] - st["frames_free"] == m.boot_frames
    m.check()


# ----------------------------------------------------------------------------- ZERO_PAGE

def test_zero_page_never_has_slots():
    m = mk()
    st0 = m.stats()
    p = m.spawn()
    a = p.mmap(4 * PAGE, prot="rw")
    for i in range(4):
        assert p.read(a + i * PAGE, 8) == bytes(8)
    zp = pfn_of(p, a)
    assert all(pfn_of(p, a + i * PAGE) == zp for i in range(4))
    assert not p.pte(a) & RW
    assert m.rmap(zp) == []
    kids = [p.fork(mode="copy") for _ in range(3)]
    assert all(pfn_of(c, a) == zp for c in kids)
    assert m.rmap(zp) == []
    st = m.stats()
    assert st["zero_page_maps"] == st0["zero_page_maps"] + 4
    assert chain_state(m) == (0, 0, 0)
    # a write copies away from the ZERO_PAGE into a direct frame
    kids[0].write(a, b"w")
    g = pfn_of(kids[0], a)
    assert g != zp
    assert slots(m, g) == {slot_of(kids[0], a)}
    assert m.rmap(zp) == []
    assert chain_state(m) == (0, 0, 1)
    # mprotect("") of a ZERO_PAGE mapping still leaves it out of every chain
    p.mprotect(a, PAGE, "")
    assert m.rmap(zp) == []
    m.check()
    assert_rmap_exact(m, zp)


# ----------------------------------------------------------------------------- COW, zap

def test_cow_copy_moves_the_slot_to_the_new_frame():
    m = mk()
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, b"orig")
    f = pfn_of(p, a)
    c = p.fork(mode="copy")
    st0 = m.stats()
    c.write(a, b"kid!")
    st = m.stats()
    g = pfn_of(c, a)
    assert g != f
    assert st["cow_copies"] == st0["cow_copies"] + 1
    assert slots(m, f) == {slot_of(p, a)}
    assert slots(m, g) == {slot_of(c, a)}
    # the old frame's chain keeps its one remaining slot in the node; the new is direct
    assert chain_state(m) == (1, 1, 1)
    # the parent is now the only user: its write reuses the frame, chain untouched
    p.write(a, b"par!")
    assert pfn_of(p, a) == f
    assert m.stats()["cow_reuses"] == st["cow_reuses"] + 1
    assert slots(m, f) == {slot_of(p, a)}
    assert p.read(a, 4) == b"par!" and c.read(a, 4) == b"kid!"
    m.check()


def test_cow_copy_from_a_three_slot_chain():
    m = mk()
    p, kids, a, f = fan_out(m, 3)
    assert chain_state(m) == (1, 3, 0)
    kids[0].write(a, b"k0")
    g = pfn_of(kids[0], a)
    assert slots(m, f) == {slot_of(p, a), slot_of(kids[1], a)}
    assert slots(m, g) == {slot_of(kids[0], a)}
    assert chain_state(m) == (1, 2, 1)
    m.check()


def test_zap_removes_slots():
    m = mk()
    zp = zero_pfn(m)
    p = m.spawn()
    a = p.mmap(3 * PAGE, prot="rw")
    for i in range(3):
        p.write(a + i * PAGE, b"z%d" % i)
    f = [pfn_of(p, a + i * PAGE) for i in range(3)]
    c = p.fork(mode="copy")
    d = p.fork(mode="copy")
    assert_rmap_exact(m, zp)
    c.munmap(a + PAGE, PAGE)
    assert slots(m, f[1]) == {slot_of(p, a + PAGE), slot_of(d, a + PAGE)}
    assert slots(m, f[0]) == {slot_of(q, a) for q in (p, c, d)}
    assert_rmap_exact(m, zp)
    d_slots = [slot_of(d, a + i * PAGE) for i in range(3)]
    d.exec()
    assert d.pde(a) == 0
    for i in range(3):
        assert d_slots[i] not in slots(m, f[i])
    assert slots(m, f[0]) == {slot_of(p, a), slot_of(c, a)}
    assert slots(m, f[1]) == {slot_of(p, a + PAGE)}
    assert_rmap_exact(m, zp)
    c.exit()
    assert slots(m, f[0]) == {slot_of(p, a)}
    p.munmap(a, 3 * PAGE)
    for g in f:
        assert m.rmap(g) == []
    assert chain_state(m) == (0, 0, 0)
    m.check()


def test_protnone_keeps_the_frame_in_its_chain():
    m = mk()
    zp = zero_pfn(m)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, b"hidden")
    f = pfn_of(p, a)
    p.mprotect(a, 2 * PAGE, "")
    e = p.pte(a)
    assert not e & P and e & PROTNONE and e >> 12 == f
    assert slots(m, f) == {slot_of(p, a)}
    c = p.fork(mode="copy")                                  # copied at fork, chained
    assert c.pte(a) >> 12 == f
    assert slots(m, f) == {slot_of(p, a), slot_of(c, a)}
    assert_rmap_exact(m, zp)
    c.mprotect(a, PAGE, "r")
    assert c.read(a, 6) == b"hidden"
    assert_rmap_exact(m, zp)


# ----------------------------------------------------------------------------- exactness

def test_rmap_lists_exactly_the_ptes_that_map_each_frame():
    """A mix of copy forks, share forks, COW, privatize, munmap, mprotect and exec; after
    every step m.rmap(pfn) equals the slots found by walking every process's PTEs."""
    m = mk(memory=32 << 20)
    zp = zero_pfn(m)
    p = m.spawn()
    r = p.mmap(20 * PAGE, prot="rw", addr=BASE + SPAN - 8 * PAGE)   # crosses a table
    s = p.mmap(6 * PAGE, prot="rw", shared=True, addr=BASE + 2 * SPAN)
    for i in range(0, 20, 2):
        p.write(r + i * PAGE, b"r%02d" % i)
    for i in range(1, 20, 4):
        p.read(r + i * PAGE, 1)
    for i in range(4):
        p.write(s + i * PAGE, b"s%02d" % i)
    assert_rmap_exact(m, zp)
    c = p.fork(mode="copy")
    assert_rmap_exact(m, zp)
    d = p.fork(mode="share")
    assert_rmap_exact(m, zp)
    c.write(r, b"c-cow")
    c.write(r + 1 * PAGE, b"c-zero")
    assert_rmap_exact(m, zp)
    d.write(r + 2 * PAGE, b"d-priv")                         # privatize + COW
    assert_rmap_exact(m, zp)
    e = d.fork(mode="copy")
    assert_rmap_exact(m, zp)
    g = d.fork(mode="share")
    assert_rmap_exact(m, zp)
    e.write(s + 4 * PAGE, b"e-shared")
    assert p.read(s + 4 * PAGE, 8) == b"e-shared"
    assert_rmap_exact(m, zp)
    c.mprotect(r + 4 * PAGE, 2 * PAGE, "")
    assert_rmap_exact(m, zp)
    g.munmap(r + 8 * PAGE, 3 * PAGE)
    assert_rmap_exact(m, zp)
    p.exec()
    assert_rmap_exact(m, zp)
    d.exit()
    assert_rmap_exact(m, zp)
    for q in list(m.processes):
        q.exit()
        assert_rmap_exact(m, zp)
    assert chain_state(m) == (0, 0, 0)


def test_a_slot_in_a_shared_table_stands_for_every_sharer():
    m = mk()
    p = m.spawn()
    n = 10
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, b"%d" % i)
    before = {i: slots(m, pfn_of(p, a + i * PAGE)) for i in range(n)}
    assert chain_state(m) == (0, 0, n)
    c = p.fork(mode="share")
    assert chain_state(m) == (0, 0, n)                       # nothing extended at fork
    assert {i: slots(m, pfn_of(c, a + i * PAGE)) for i in range(n)} == before
    t = p.pde(a) >> 12
    c.write(a, b"priv")                                      # privatize: extend chains
    tn = c.pde(a) >> 12
    assert tn != t
    for i in range(1, n):
        assert slots(m, pfn_of(p, a + i * PAGE)) == {(t, ((a >> 12) + i) & 1023),
                                                     (tn, ((a >> 12) + i) & 1023)}
    # nine frames went direct -> node; the tenth's node kept the parent's slot (COW)
    assert chain_state(m) == (n, 2 * n - 1, 1)
    m.check()


# ----------------------------------------------------------------------------- collapse

def test_reclaim_collapses_a_one_slot_chain_back_to_direct():
    """page_referenced collapses a chain with one slot to PageDirect. The page under
    test is referenced (A set), so the clock skips it once; enough unreferenced
    candidates remain that each reclaim(1) takes one of them, never the tested page."""
    m = mk(memory=16 << 20, swap=4 << 20)
    p = m.spawn()
    k = 24
    a = p.mmap((k + 1) * PAGE, prot="rw")
    for i in range(k + 1):
        p.write(a + i * PAGE, bytes([i + 1]) * 8)
    c = p.fork(mode="copy")
    p.exit()
    # every frame: one slot (the child's, A clear) left in a chain node
    assert chain_state(m) == (k + 1, k + 1, 0)
    hot = a + (k // 2) * PAGE
    c.write(hot, b"\xaa")                                    # count 1: reuse, A set
    assert c.pte(hot) & A and c.pte(hot) & RW
    f = pfn_of(c, hot)
    assert slots(m, f) == {slot_of(c, hot)}
    assert chain_state(m) == (k + 1, k + 1, 0)
    cold = [a + i * PAGE for i in range(k + 1) if a + i * PAGE != hot]
    assert all(not c.pte(x) & A for x in cold)
    collapsed = False
    for _ in range(k - 1):
        assert m.reclaim(1) == 1
        assert present(c.pte(hot)), "the referenced page was swapped out first"
        assert pfn_of(c, hot) == f
        nodes, nslots, direct = chain_state(m)
        if direct == 1:
            collapsed = True
            assert slots(m, f) == {slot_of(c, hot)}
            assert not c.pte(hot) & A                        # the clock cleared A
            chained = sum(1 for x in cold if present(c.pte(x)))
            assert (nodes, nslots) == (chained, chained)
            break
    assert collapsed, "page_referenced never collapsed the one-slot chain"
    m.check()
    assert c.read(hot, 2) == b"\xaa" + bytes([k // 2 + 1])
    for i in range(k + 1):
        x = a + i * PAGE
        if x != hot:
            assert c.read(x, 8) == bytes([i + 1]) * 8
    m.check()


# ----------------------------------------------------------------------------- rmap off

def test_rmap_disabled_keeps_no_chains():
    m = mk(rmap=False)
    p = m.spawn()
    a = p.mmap(4 * PAGE, prot="rw")
    s = p.mmap(PAGE, prot="rw", shared=True)
    for i in range(4):
        p.write(a + i * PAGE, b"n")
    p.write(s, b"s")
    kids = [p.fork(mode="copy") for _ in range(NRPTE + 2)]
    kids.append(p.fork(mode="share"))
    kids[-1].write(a, b"priv")
    kids[0].write(a + PAGE, b"cow")
    for q in [p] + kids:
        for x in (a, a + PAGE, s):
            assert m.rmap(pfn_of(q, x)) == []
    st = m.stats()
    assert st["pte_chain_nodes"] == 0
    assert st["pte_chain_slots"] == 0
    assert st["rmap_direct"] == 0
    assert st["chain_nodes_allocated"] == 0
    assert st["pte_chain_nodes_peak"] == 0
    m.check()
    for q in kids:
        q.exit()
    assert m.stats()["pte_chain_nodes"] == 0
    m.check()


# ----------------------------------------------------------------------------- pool

def test_chain_pool_grows_and_reuses_freed_nodes():
    m = mk(memory=128 << 20)
    p = m.spawn()
    n = 20000
    a = p.mmap(n * PAGE, prot="rw")
    p.touch(a, n * PAGE, write=True)
    assert chain_state(m) == (0, 0, n)
    c = p.fork(mode="copy")
    st = m.stats()
    assert (st["pte_chain_nodes"], st["pte_chain_slots"], st["rmap_direct"]) == (n, 2 * n, 0)
    assert st["chain_nodes_allocated"] == n
    assert st["pte_chain_nodes_peak"] >= n
    m.check()
    c.exit()
    assert chain_state(m) == (n, n, 0)                       # one slot left per node
    d = p.fork(mode="copy")                                  # fills the same nodes
    st = m.stats()
    assert chain_state(m) == (n, 2 * n, 0)
    assert st["chain_nodes_allocated"] == n
    m.check()
    d.exit()
    p.exit()
    assert chain_state(m) == (0, 0, 0)
    m.check()
    q = m.spawn()                                            # again, from the free list
    b = q.mmap(n * PAGE, prot="rw")
    q.touch(b, n * PAGE, write=True)
    e = q.fork(mode="copy")
    st = m.stats()
    assert chain_state(m) == (n, 2 * n, 0)
    assert st["chain_nodes_allocated"] == 2 * n
    m.check()
    e.exit()
    q.exit()
    m.check()


def test_copy_fork_out_of_memory_frees_its_chain_nodes():
    """Fail each allocation of a copy fork in turn: no child, no frame and no chain
    node left behind, chains as before."""
    for k in range(0, 400, 7):
        m = mk(memory=16 << 20)
        zp = zero_pfn(m)
        p = m.spawn()
        n = 3000
        a = p.mmap(n * PAGE, prot="rw")
        p.touch(a, n * PAGE, write=True)
        c = p.fork(mode="copy")                              # chains of two slots
        st0 = m.stats()
        m.fail_after(k)
        try:
            d = p.fork(mode="copy")
        except OutOfMemory:
            m.fail_after(None)
            st1 = m.stats()
            assert len(m.processes) == 2
            assert st1["frames_free"] == st0["frames_free"]
            assert chain_state(m) == (st0["pte_chain_nodes"], st0["pte_chain_slots"],
                                      st0["rmap_direct"])
            for i in range(0, n, 97):
                x = a + i * PAGE
                assert slots(m, pfn_of(p, x)) == {slot_of(p, x), slot_of(c, x)}
            m.check()
        else:
            m.fail_after(None)
            assert_rmap_exact(m, zp)
            d.exit()
            break
    else:
        pytest.fail("the fork never succeeded")


def test_page_tables_and_page_directories_are_never_in_a_chain():
    m = mk()
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, b"x")
    c = p.fork(mode="share")
    t = p.pde(a) >> 12
    assert m.rmap(t) == [] and m.rmap(p.pgd) == [] and m.rmap(c.pgd) == []
    assert chain_state(m) == (0, 0, 1)
    m.check()
