"""Fork mode "share": lazy page-table instantiation (DESIGN.md §2 "Fork, mode share",
"Privatize", "Zap"; the seed, Phillips 2002).

One named test per case of the design:
  (a) fork copies only the pgd;
  (b) a write through a read-only PDE privatizes a table with use count > 1, and only
      re-enables the PDE when the use count is 1;
  (c) any other change to a shared table privatizes first;
  (d) munmap / exit / exec covering a table's whole span drop one use and nothing else;
  (e) trees of share and copy forks;
  (f) reclaim through a shared table;
  (g) check(), shared_tables and pt_use_refs throughout;
and the headline: a share fork of 64 Ki touched pages costs one frame.

Layout built by ``build``: one table T0 at BASE holds R (16 private pages: 0..13 written,
14 untouched, 15 read -> ZERO_PAGE) and S (4 shared pages, written); a second table T1 at
BASE + 4 MiB holds Q (8 private pages, written).
"""

import random
from collections import Counter

import pytest

from lazyvm import Machine, OutOfMemory, SegmentationFault

PAGE = 4096
SPAN = 4 << 20
P, RW, US, A, D, PROTNONE = 0x001, 0x002, 0x004, 0x020, 0x040, 0x080
PDE_USER = 0x067
BASE = 0x40000000
R = BASE
S = BASE + 0x100000
Q = BASE + SPAN
W = BASE + 2 * SPAN                  # a whole-span mapping (test d)
R_PAGES = [R + i * PAGE for i in range(16)]
S_PAGES = [S + i * PAGE for i in range(4)]
Q_PAGES = [Q + i * PAGE for i in range(8)]
ALL = R_PAGES + S_PAGES + Q_PAGES


@pytest.fixture(params=[False, True], ids=["no-rmap", "rmap"])
def rmap(request):
    return request.param


# ----------------------------------------------------------------------------- helpers

def mk(rmap, memory=32 << 20, **kw):
    kw.setdefault("fork_mode", "share")
    return Machine(memory=memory, rmap=rmap, **kw)


def present(e):
    return bool(e & (P | PROTNONE))


def is_swap(e):
    return e != 0 and not e & P and not e & PROTNONE


def tag(label, a):
    return (b"%s@%08x" % (label, a))[:16].ljust(16, b".")


def used(st):
    return st["frames_total"] - st["frames_free"]


def delta(st0, st1, key):
    return st1[key] - st0[key]


def user_pdes(p):
    """{pdx: pde} for the present user PDEs (0..767) of p."""
    out = {}
    for i in range(768):
        e = p.pde(i << 22)
        if e & P:
            out[i] = e
    return out


def tables_consistent(m):
    """page_tables, shared_tables, pt_use_refs and every table's use count agree with
    the PDEs of the live processes (invariants 3 and 4, seen from outside); then
    m.check()."""
    users = Counter()
    writable = Counter()
    for p in m.processes:
        for e in user_pdes(p).values():
            users[e >> 12] += 1
            writable[e >> 12] += bool(e & RW)
    st = m.stats()
    assert st["pt_use_refs"] == sum(users.values())
    assert st["page_tables"] == len(users)
    assert st["shared_tables"] == sum(1 for c in users.values() if c > 1)
    assert st["pgds"] == len(m.processes)
    for t, c in users.items():
        assert m.frame_count(t) == c, "use count of table %d" % t
        if c > 1:
            assert writable[t] == 0, "shared table %d reached through a writable PDE" % t
    m.check()


def build(m):
    """The parent described in the module docstring; returns (p, zero_pfn)."""
    p = m.spawn()
    assert p.mmap(16 * PAGE, prot="rw", addr=R) == R
    assert p.mmap(4 * PAGE, prot="rw", shared=True, addr=S) == S
    assert p.mmap(8 * PAGE, prot="rw", addr=Q) == Q
    for a in R_PAGES[:14] + S_PAGES + Q_PAGES:
        p.write(a, tag(b"P", a))
    assert p.read(R_PAGES[15], 16) == bytes(16)
    zp = p.pte(R_PAGES[15]) >> 12
    return p, zp


def expected_content(a):
    if a in (R_PAGES[14], R_PAGES[15]):
        return bytes(16)
    return tag(b"P", a)


def snapshot(m, p):
    ptes = {a: p.pte(a) for a in ALL}
    counts = {a: m.frame_count(e >> 12) for a, e in ptes.items() if present(e)}
    return ptes, counts


def assert_contents(p, expect):
    for a, data in expect.items():
        assert p.read(a, len(data)) == data, "pid %d at %#x" % (p.pid, a)


def all_freed(m):
    st = m.stats()
    assert used(st) == m.boot_frames
    assert st["page_tables"] == 0 and st["pt_use_refs"] == 0
    assert st["pte_chain_nodes"] == 0 and st["swap_used"] == 0
    m.check()


# ----------------------------------------------------------------------------- (a)

def test_share_fork_writes_only_the_childs_page_directory(rmap):
    m = mk(rmap)
    p, zp = build(m)
    pdes0 = user_pdes(p)
    assert set(pdes0) == {R >> 22, Q >> 22}
    for e in pdes0.values():
        assert e & 0xFFF == PDE_USER
    ptes0, counts0 = snapshot(m, p)
    st0 = m.stats()
    c = p.fork(mode="share")
    st1 = m.stats()
    assert delta(st0, st1, "page_tables") == 0
    assert delta(st0, st1, "pte_chain_nodes") == 0
    assert delta(st0, st1, "pte_chain_slots") == 0
    assert delta(st0, st1, "rmap_direct") == 0
    assert delta(st0, st1, "chain_nodes_allocated") == 0
    assert delta(st0, st1, "frames_used") == 1                # the child's pgd
    assert used(st1) - used(st0) == 1
    assert delta(st0, st1, "pgds") == 1
    assert delta(st0, st1, "forks") == 1 and delta(st0, st1, "forks_share") == 1
    assert delta(st0, st1, "forks_copy") == 0
    assert delta(st0, st1, "ptes_copied") == 0
    assert delta(st0, st1, "unshares") == 0
    assert st1["shared_tables"] == 2
    assert delta(st0, st1, "pt_use_refs") == 2
    pp, cc = user_pdes(p), user_pdes(c)
    assert set(pp) == set(cc) == set(pdes0)
    for i, e in pdes0.items():
        assert pp[i] == cc[i], "pdx %d" % i
        assert not pp[i] & RW
        assert pp[i] >> 12 == e >> 12                          # the same table
        assert pp[i] == e & ~RW                               # only RW changed
        assert m.frame_count(e >> 12) == 2
    for a in ALL:
        assert p.pte(a) == ptes0[a] and c.pte(a) == ptes0[a], hex(a)
    for a, n in counts0.items():
        assert m.frame_count(ptes0[a] >> 12) == n
    assert_contents(c, {a: expected_content(a) for a in ALL})
    assert c.vmas == p.vmas
    tables_consistent(m)


def test_share_fork_is_the_default_of_a_share_machine(rmap):
    m = mk(rmap)
    p, _ = build(m)
    st0 = m.stats()
    c = p.fork()
    st1 = m.stats()
    assert delta(st0, st1, "forks_share") == 1
    assert delta(st0, st1, "page_tables") == 0
    assert c.pde(R) == p.pde(R)
    tables_consistent(m)


def test_share_fork_of_an_empty_process(rmap):
    m = mk(rmap)
    p = m.spawn()
    st0 = m.stats()
    c = p.fork(mode="share")
    st1 = m.stats()
    assert delta(st0, st1, "frames_used") == 1
    assert st1["pt_use_refs"] == 0 and user_pdes(c) == {}
    c.exit()
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- (b)

def test_write_through_readonly_pde_privatizes_the_table(rmap):
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    t = p.pde(R) >> 12
    ptes0, counts0 = snapshot(m, p)
    st0 = m.stats()
    w = R_PAGES[5]
    c.write(w, b"child wrote this")
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert delta(st0, st1, "unshare_reuses") == 0
    assert delta(st0, st1, "page_tables") == 1
    assert delta(st0, st1, "cow_copies") == 1                 # w is now in two tables
    assert delta(st0, st1, "frames_used") == 2                # T' and the COW copy
    assert delta(st0, st1, "pt_use_refs") == 0
    assert st1["shared_tables"] == 1                          # T1 is still shared
    # non-none entries of T0: 14 written + 1 ZERO_PAGE + 4 shared
    assert delta(st0, st1, "ptes_copied") == 19
    tn = c.pde(R) >> 12
    assert tn != t
    assert c.pde(R) == (tn << 12) | PDE_USER                  # writable again
    assert p.pde(R) == (t << 12) | (PDE_USER & ~RW)           # parent untouched
    assert m.frame_count(t) == 1 and m.frame_count(tn) == 1
    assert c.pde(Q) == p.pde(Q) and not p.pde(Q) & RW         # T1 not privatized
    for a in R_PAGES + S_PAGES:
        o, pe, ce = ptes0[a], p.pte(a), c.pte(a)
        if a == w:
            assert pe == o & ~RW
            assert present(ce) and ce & RW and ce >> 12 != o >> 12
        elif o == 0:
            assert pe == 0 and ce == 0
        elif o >> 12 == zp:
            assert pe == o and ce == o and not o & RW
        elif a in S_PAGES:                                     # shared stays writable
            assert o & RW and pe == o and ce == o
        else:                                                  # private: RW clear in both
            assert o & RW and pe == o & ~RW and ce == pe, hex(a)
    for a in Q_PAGES:
        assert p.pte(a) == ptes0[a] == c.pte(a)
    for a, n in counts0.items():
        f = ptes0[a] >> 12
        if f == zp or a in Q_PAGES or a == w:
            assert m.frame_count(f) == n, hex(a)
        else:
            assert m.frame_count(f) == n + 1, hex(a)
    assert m.frame_count(c.pte(w) >> 12) == 1
    if rmap:
        for a in R_PAGES + S_PAGES:
            o = ptes0[a]
            if not present(o) or o >> 12 == zp:
                continue
            idx = (a >> 12) & 1023
            got = {tuple(s) for s in m.rmap(o >> 12)}
            if a == w:
                assert got == {(t, idx)}
                assert [tuple(s) for s in m.rmap(c.pte(w) >> 12)] == [(tn, idx)]
            else:
                assert got == {(t, idx), (tn, idx)}, hex(a)
        # 18 frames went direct -> node; w's node kept one slot, its copy is direct
        assert delta(st0, st1, "pte_chain_nodes") == 18
        assert delta(st0, st1, "rmap_direct") == -18 + 1
    else:
        assert st1["pte_chain_nodes"] == 0
    expect = {a: expected_content(a) for a in ALL}
    assert_contents(p, expect)
    expect[w] = b"child wrote this"
    assert_contents(c, expect)
    tables_consistent(m)


def test_write_to_a_shared_mapping_privatizes_without_cow(rmap):
    m = mk(rmap)
    p, _ = build(m)
    c = p.fork(mode="share")
    a = S_PAGES[1]
    n0 = m.frame_count(p.pte(a) >> 12)
    st0 = m.stats()
    c.write(a, b"via the child...")
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert delta(st0, st1, "cow_copies") == 0
    assert c.pte(a) == p.pte(a) and c.pte(a) & RW            # one frame, writable
    assert m.frame_count(c.pte(a) >> 12) == n0 + 1
    assert p.read(a, 16) == b"via the child..."
    p.write(a, b"via the parent..")                           # last sharer of T0
    assert c.read(a, 16) == b"via the parent.."
    assert delta(st1, m.stats(), "unshare_reuses") == 1
    tables_consistent(m)


def test_last_sharer_write_after_the_other_exited_makes_the_pde_writable(rmap):
    m = mk(rmap)
    p, _ = build(m)
    c = p.fork(mode="share")
    st0 = m.stats()
    c.exit()
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 2
    assert delta(st0, st1, "page_tables") == 0
    assert st1["shared_tables"] == 0
    assert not p.pde(R) & RW                                  # nothing else was done
    ptes0, counts0 = snapshot(m, p)
    t = p.pde(R) >> 12
    p.write(R_PAGES[3], b"mine")
    st2 = m.stats()
    assert delta(st1, st2, "unshare_reuses") == 1
    assert delta(st1, st2, "unshares") == 0
    assert delta(st1, st2, "page_tables") == 0
    assert delta(st1, st2, "cow_copies") == 0                 # its PTEs were never touched
    assert delta(st1, st2, "frames_used") == 0
    assert p.pde(R) == (t << 12) | PDE_USER
    assert p.pte(R_PAGES[3]) >> 12 == ptes0[R_PAGES[3]] >> 12
    for a, n in counts0.items():
        assert m.frame_count(ptes0[a] >> 12) == n
    assert not p.pde(Q) & RW                                  # the other table waits
    tables_consistent(m)


def test_last_sharer_write_after_the_other_privatized_reuses_the_table(rmap):
    m = mk(rmap)
    p, _ = build(m)
    c = p.fork(mode="share")
    t = p.pde(R) >> 12
    c.write(R_PAGES[0], b"child")                             # c takes a copy T'
    assert m.frame_count(t) == 1
    st0 = m.stats()
    p.write(R_PAGES[1], b"parent")
    st1 = m.stats()
    assert delta(st0, st1, "unshare_reuses") == 1
    assert delta(st0, st1, "unshares") == 0
    assert delta(st0, st1, "page_tables") == 0
    # privatize cleared RW in T for R1, whose frame T' also maps: copy on write
    assert delta(st0, st1, "cow_copies") == 1
    assert p.pde(R) == (t << 12) | PDE_USER
    assert c.read(R_PAGES[1], 16) == tag(b"P", R_PAGES[1])
    assert p.read(R_PAGES[1], 6) == b"parent"
    assert p.read(R_PAGES[0], 16) == tag(b"P", R_PAGES[0])
    tables_consistent(m)


# ----------------------------------------------------------------------------- (c)

def _other_sharer_unchanged(m, p, ptes0, zp):
    """After c privatized T0, p's entries are as before except that RW is cleared on
    private present entries (now reached from two tables)."""
    for a in R_PAGES + S_PAGES:
        o = ptes0[a]
        if present(o) and a in R_PAGES and o >> 12 != zp:
            assert p.pte(a) == o & ~RW, hex(a)
        else:
            assert p.pte(a) == o, hex(a)
    for a in Q_PAGES:
        assert p.pte(a) == ptes0[a]
    assert_contents(p, {a: expected_content(a) for a in ALL})


def test_read_fault_that_installs_a_pte_privatizes_first(rmap):
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    t = p.pde(R) >> 12
    ptes0, _ = snapshot(m, p)
    st0 = m.stats()
    assert c.read(R_PAGES[14], 16) == bytes(16)               # untouched page
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert delta(st0, st1, "zero_page_maps") == 1
    assert c.pte(R_PAGES[14]) >> 12 == zp
    assert p.pte(R_PAGES[14]) == 0                            # not installed for p
    assert c.pde(R) >> 12 != t and c.pde(R) & RW
    assert p.pde(R) >> 12 == t and not p.pde(R) & RW
    _other_sharer_unchanged(m, p, ptes0, zp)
    tables_consistent(m)


def test_mprotect_in_a_shared_table_privatizes_first(rmap):
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    t = p.pde(R) >> 12
    ptes0, _ = snapshot(m, p)
    vmas0 = p.vmas
    st0 = m.stats()
    c.mprotect(R, 2 * PAGE, "r")
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert c.pde(R) >> 12 != t
    assert p.pde(R) >> 12 == t
    assert p.vmas == vmas0
    assert not c.pte(R) & RW and present(c.pte(R))
    _other_sharer_unchanged(m, p, ptes0, zp)
    with pytest.raises(SegmentationFault):
        c.write(R, b"no")
    p.write(R, b"parent may")
    assert c.read(R, 16) == tag(b"P", R)
    assert p.read(R, 10) == b"parent may"
    tables_consistent(m)


def test_partial_munmap_in_a_shared_table_privatizes_first(rmap):
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    t = p.pde(R) >> 12
    x = R_PAGES[2]
    ptes0, counts0 = snapshot(m, p)
    st0 = m.stats()
    c.munmap(x, PAGE)
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert delta(st0, st1, "tables_dropped") == 0
    assert c.pte(x) == 0
    assert c.pde(R) >> 12 != t
    assert m.frame_count(ptes0[x] >> 12) == counts0[x]        # +1 privatize, -1 zap
    with pytest.raises(SegmentationFault):
        c.read(x, 1)
    _other_sharer_unchanged(m, p, ptes0, zp)
    tables_consistent(m)


# ----------------------------------------------------------------------------- (d)

def _with_whole_span(m):
    p, zp = build(m)
    assert p.mmap(SPAN, prot="rw", addr=W) == W
    for i in range(10):
        p.write(W + i * 7 * PAGE, tag(b"W", W + i * 7 * PAGE))
    return p, zp


def test_munmap_of_a_whole_span_drops_one_use_and_nothing_else(rmap):
    m = mk(rmap)
    p, _ = _with_whole_span(m)
    c = p.fork(mode="share")
    tw = p.pde(W) >> 12
    pdes0 = user_pdes(p)
    wpages = [W + i * 7 * PAGE for i in range(10)]
    ptes0 = {a: p.pte(a) for a in ALL + wpages}
    counts0 = {a: m.frame_count(e >> 12) for a, e in ptes0.items() if present(e)}
    st0 = m.stats()
    c.munmap(W, SPAN)
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 1
    for k in ("unshares", "unshare_reuses", "page_tables", "frames_used",
              "pte_chain_nodes", "pte_chain_slots", "ptes_copied", "cow_copies"):
        assert delta(st0, st1, k) == 0, k
    assert c.pde(W) == 0
    assert m.frame_count(tw) == 1
    assert user_pdes(p) == pdes0                              # p's PDE stays read-only
    for a in ptes0:
        assert p.pte(a) == ptes0[a]
    for a, n in counts0.items():
        assert m.frame_count(ptes0[a] >> 12) == n
    with pytest.raises(SegmentationFault):
        c.read(W, 1)
    assert_contents(p, {a: tag(b"W", a) for a in wpages})
    tables_consistent(m)
    # the table is freed with its last user
    p.munmap(W, SPAN)
    st2 = m.stats()
    assert delta(st1, st2, "page_tables") == -1
    assert delta(st1, st2, "frames_used") == -11
    assert delta(st1, st2, "tables_dropped") == 0
    tables_consistent(m)


def test_munmap_of_every_vma_in_a_span_drops_one_use(rmap):
    """The test is "no VMA of M covers any part of the span after the zap", not
    "the munmap covered the span"."""
    m = mk(rmap)
    p, _ = build(m)
    c = p.fork(mode="share")
    st0 = m.stats()
    c.munmap(Q, 8 * PAGE)                                     # Q is alone in T1
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 1
    assert delta(st0, st1, "unshares") == 0
    assert delta(st0, st1, "page_tables") == 0
    assert c.pde(Q) == 0
    assert_contents(p, {a: tag(b"P", a) for a in Q_PAGES})
    tables_consistent(m)
    # a munmap that leaves a VMA in the span must privatize instead
    c.munmap(R, 16 * PAGE)                                    # S is still in T0
    st2 = m.stats()
    assert delta(st1, st2, "unshares") == 1
    assert delta(st1, st2, "tables_dropped") == 0
    assert c.read(S, 16) == tag(b"P", S)
    tables_consistent(m)


def test_exit_drops_one_use_per_table(rmap):
    m = mk(rmap)
    p, _ = _with_whole_span(m)
    c = p.fork(mode="share")
    ptes0, counts0 = snapshot(m, p)
    st0 = m.stats()
    c.exit()
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 3
    assert delta(st0, st1, "page_tables") == 0
    assert delta(st0, st1, "frames_used") == -1               # the pgd
    assert delta(st0, st1, "unshares") == 0
    assert delta(st0, st1, "pte_chain_nodes") == 0
    for a in ALL:
        assert p.pte(a) == ptes0[a]
    for a, n in counts0.items():
        assert m.frame_count(ptes0[a] >> 12) == n
    tables_consistent(m)
    p.exit()                                                  # last user frees them
    all_freed(m)


def test_exec_drops_one_use_per_table(rmap):
    m = mk(rmap)
    p, _ = _with_whole_span(m)
    c = p.fork(mode="share")
    ptes0, counts0 = snapshot(m, p)
    st0 = m.stats()
    c.exec()
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 3
    assert delta(st0, st1, "page_tables") == 0
    assert delta(st0, st1, "frames_used") == 0                # the pgd stays
    assert delta(st0, st1, "unshares") == 0
    assert c.vmas == [] and user_pdes(c) == {}
    for a in ALL:
        assert p.pte(a) == ptes0[a]
    for a, n in counts0.items():
        assert m.frame_count(ptes0[a] >> 12) == n
    tables_consistent(m)
    x = c.mmap(PAGE, prot="rw")
    c.write(x, b"new life")
    assert c.read(x, 8) == b"new life"
    p.exec()                                                  # the last user of each
    st2 = m.stats()
    assert st2["page_tables"] == 1 and st2["shared_tables"] == 0
    tables_consistent(m)
    c.exit()
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- (e)

def test_share_fork_tree_and_copy_fork_from_shared_tables(rmap):
    m = mk(rmap, memory=64 << 20)
    p, zp = build(m)
    c = p.fork(mode="share")
    g = c.fork(mode="share")
    t = p.pde(R) >> 12
    assert g.pde(R) == c.pde(R) == p.pde(R)
    assert m.frame_count(t) == 3
    assert m.stats()["pt_use_refs"] == 6
    tables_consistent(m)
    h = c.fork(mode="copy")                                   # from shared tables
    assert h.pde(R) >> 12 != t and h.pde(R) & RW
    assert h.pde(Q) >> 12 != p.pde(Q) >> 12
    tables_consistent(m)
    procs = {b"P": p, b"C": c, b"G": g, b"H": h}
    expect = {lbl: {a: expected_content(a) for a in ALL} for lbl in procs}
    for lbl, q in procs.items():
        assert_contents(q, expect[lbl])
    # each writes its own tag into some private pages
    for n, (lbl, q) in enumerate(procs.items()):
        for a in (R_PAGES[n], R_PAGES[14], Q_PAGES[n + 2]):
            q.write(a, tag(lbl, a))
            expect[lbl][a] = tag(lbl, a)
            tables_consistent(m)
    # shared pages are shared by all four
    for n, (lbl, q) in enumerate(procs.items()):
        q.write(S_PAGES[n], tag(lbl, S_PAGES[n]))
        for e in expect.values():
            e[S_PAGES[n]] = tag(lbl, S_PAGES[n])
    for lbl, q in procs.items():
        assert_contents(q, expect[lbl])
    tables_consistent(m)
    # a second generation of copy and share forks from a mixed state
    h2 = h.fork(mode="share")
    g2 = g.fork(mode="copy")
    expect[b"h2"] = dict(expect[b"H"])
    expect[b"g2"] = dict(expect[b"G"])
    procs[b"h2"], procs[b"g2"] = h2, g2
    h2.write(R_PAGES[15], b"h2 writes zero..")
    expect[b"h2"][R_PAGES[15]] = b"h2 writes zero.."
    g2.write(Q_PAGES[0], b"g2 private page.")
    expect[b"g2"][Q_PAGES[0]] = b"g2 private page."
    for lbl, q in procs.items():
        assert_contents(q, expect[lbl])
    tables_consistent(m)
    for q in (c, h, p, g2, g, h2):
        q.exit()
        tables_consistent(m)
    all_freed(m)


def test_shared_anonymous_mappings_under_shared_tables_see_each_others_writes(rmap):
    m = mk(rmap)
    p = m.spawn()
    s = p.mmap(6 * PAGE, prot="rw", shared=True)
    x = p.mmap(2 * PAGE, prot="rw")                           # a private neighbour
    p.write(s, b"first")
    p.write(x, b"private")
    c = p.fork(mode="share")
    assert c.pde(s) == p.pde(s) and not c.pde(s) & RW
    c.write(s, b"CHILD")
    assert p.read(s, 5) == b"CHILD"
    p.write(s + PAGE, b"PARENT")
    assert c.read(s + PAGE, 6) == b"PARENT"
    c.write(s + 2 * PAGE, b"born in child")                   # first touch after fork
    assert p.read(s + 2 * PAGE, 13) == b"born in child"
    assert p.read(s + 3 * PAGE, 4) == bytes(4)                # p maps the object's frame
    c.write(s + 3 * PAGE, b"late")
    assert p.read(s + 3 * PAGE, 4) == b"late"
    g = c.fork(mode="share")
    g.write(s + 4 * PAGE, b"grandchild")
    assert p.read(s + 4 * PAGE, 10) == b"grandchild"
    assert c.read(s + 4 * PAGE, 10) == b"grandchild"
    for q in (p, c, g):
        assert q.read(x, 7) == b"private"
        assert q.pte(s) >> 12 == p.pte(s) >> 12
    tables_consistent(m)


# ----------------------------------------------------------------------------- (f)

def test_reclaim_through_a_shared_table_swaps_the_one_slot_for_every_sharer(rmap):
    m = mk(rmap, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    data = bytes(range(256)) * 16
    p.write(a, data)
    f = p.pte(a) >> 12
    c = p.fork(mode="share")
    t = p.pde(a) >> 12
    st0 = m.stats()
    for _ in range(6):
        if is_swap(p.pte(a)):
            break
        assert m.reclaim(1) <= 1
    e = p.pte(a)
    assert is_swap(e)
    assert c.pte(a) == e                                      # one slot, both sharers
    assert p.translate(a) is None and c.translate(a) is None
    st1 = m.stats()
    assert delta(st0, st1, "swap_outs") == 1
    assert st1["swap_used"] == 1
    assert delta(st0, st1, "unshares") == 0                   # done in place
    assert delta(st0, st1, "page_tables") == 0
    assert c.pde(a) == p.pde(a) == (t << 12) | (PDE_USER & ~RW)
    assert m.rmap(f) == []
    if rmap:
        assert delta(st0, st1, "reclaim_rmap_slots") >= 1
    tables_consistent(m)
    assert p.read(a, PAGE) == data
    tables_consistent(m)
    assert c.read(a, PAGE) == data
    assert p.translate(a) == c.translate(a)                   # the swap cache's frame
    tables_consistent(m)
    c.write(a, b"c")
    assert p.read(a, 2) == data[:2]
    assert c.read(a, 2) == b"c" + data[1:2]
    tables_consistent(m)
    c.exit()
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- (g)

def test_shared_tables_and_pt_use_refs_follow_every_step(rmap):
    m = mk(rmap)
    p, _ = build(m)
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (2, 0, 2)
    c = p.fork(mode="share")
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (2, 2, 4)
    g = c.fork(mode="share")
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (2, 2, 6)
    g.write(R, b"g")                                          # T0: 3 -> 2, T0' 1
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (3, 2, 6)
    c.write(Q, b"c")                                          # T1: 3 -> 2, T1' 1
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (4, 2, 6)
    c.exit()                                                  # T0 2 -> 1, T1' freed
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (3, 1, 4)
    tables_consistent(m)
    p.write(R, b"p")                                          # last user of T0: reuse
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (3, 1, 4)
    assert st["unshare_reuses"] == 1
    g.exit()
    st = m.stats()
    assert (st["page_tables"], st["shared_tables"], st["pt_use_refs"]) == (2, 0, 2)
    assert st["page_tables_peak"] >= 4
    tables_consistent(m)
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- OOM

def test_share_fork_out_of_memory_leaves_no_child(rmap):
    m = mk(rmap)
    p, _ = build(m)
    st0 = m.stats()
    m.fail_after(0)
    with pytest.raises(OutOfMemory):
        p.fork(mode="share")
    m.fail_after(None)
    st1 = m.stats()
    assert len(m.processes) == 1
    assert used(st1) == used(st0)
    assert st1["pt_use_refs"] == st0["pt_use_refs"]
    assert st1["page_tables"] == st0["page_tables"]
    assert_contents(p, {a: expected_content(a) for a in ALL})
    tables_consistent(m)


def test_privatize_out_of_memory_is_clean(rmap):
    """Fail each allocation of a privatizing write in turn: the write raises, no
    memory content changes, check() passes, and after everyone exits nothing leaked."""
    for k in range(0, 40):
        m = mk(rmap)
        p, _ = build(m)
        c = p.fork(mode="share")
        st0 = m.stats()
        m.fail_after(k)
        try:
            c.write(R_PAGES[3], b"after the failure")
        except OutOfMemory:
            m.fail_after(None)
            st1 = m.stats()
            assert st1["pte_chain_nodes"] >= st0["pte_chain_nodes"]
            expect = {a: expected_content(a) for a in ALL}
            assert_contents(p, expect)
            assert_contents(c, expect)
            tables_consistent(m)
            c.write(R_PAGES[3], b"after the failure")
            assert c.read(R_PAGES[3], 17) == b"after the failure"
            assert p.read(R_PAGES[3], 16) == tag(b"P", R_PAGES[3])
            tables_consistent(m)
            c.exit()
            p.exit()
            all_freed(m)
        else:
            m.fail_after(None)
            assert k >= 2                                     # T' and the COW copy
            tables_consistent(m)
            break
    else:
        pytest.fail("the write never succeeded")


# ----------------------------------------------------------------------------- headline

@pytest.mark.parametrize("rmap_on", [False, True], ids=["no-rmap", "rmap"])
def test_headline_share_fork_of_64ki_pages_costs_one_frame(rmap_on):
    npages = 64 << 10
    m = Machine(memory=512 << 20, fork_mode="share", rmap=rmap_on)
    p = m.spawn()
    a = p.mmap(npages * PAGE, prot="rw")
    p.touch(a, npages * PAGE, write=True)
    st0 = m.stats()
    assert st0["page_tables"] == 64
    assert st0["rmap_direct"] == (npages if rmap_on else 0)
    c = p.fork(mode="share")
    st1 = m.stats()
    assert delta(st0, st1, "page_tables") == 0
    assert delta(st0, st1, "pte_chain_nodes") == 0
    assert delta(st0, st1, "chain_nodes_allocated") == 0
    assert delta(st0, st1, "ptes_copied") == 0
    assert used(st1) - used(st0) == 1
    assert st1["shared_tables"] == 64 and st1["pt_use_refs"] == 128
    assert c.pte(a + 12345 * PAGE) == p.pte(a + 12345 * PAGE)
    m.check()
    c.write(a + 7 * PAGE, b"one table")                       # privatizes one of 64
    st2 = m.stats()
    assert delta(st1, st2, "page_tables") == 1
    assert delta(st1, st2, "ptes_copied") == 1024
    assert delta(st1, st2, "pte_chain_nodes") == (1024 if rmap_on else 0)
    m.check()
    c.exit()
    assert m.stats()["tables_dropped"] == 63
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- model

REGION = 0x10000000                  # fixed mmaps land in [REGION, REGION + 24 MiB)


@pytest.mark.parametrize("seed,inject", [(1, False), (2, False), (3, False),
                                         (4, True), (5, True), (6, True)])
def test_random_share_workload_matches_a_model(rmap, seed, inject):
    """A seeded mix of share/copy forks, writes, reads, munmap, mprotect, mmap (also
    MAP_FIXED over existing pages), exec, exit and reclaim (both methods), checked
    against a dict of pages per process; m.check() after every step. With inject, some
    writes, reads, forks, touches and reclaims run under m.fail_after(0..3): one that
    raises OutOfMemory must leave the model's view unchanged (DESIGN §4)."""
    rng = random.Random(seed)
    ooms = [0]

    def guarded(fn, *args, **kw):
        """Run fn, maybe under fault injection; (True, result) or (False, None)."""
        armed = inject and rng.random() < 0.2
        if armed:
            m.fail_after(rng.randint(0, 3))
        try:
            return True, fn(*args, **kw)
        except OutOfMemory:
            assert armed, "OutOfMemory without fault injection"
            ooms[0] += 1
            return False, None
        finally:
            m.fail_after(None)
    m = mk(rmap, memory=32 << 20, swap=4 << 20)
    objects = {}                                   # obj -> {off: bytes}
    model = {}                                     # pid -> {page: [prot, obj|None, off|data]}
    procs = {}
    nobj = [0]
    OFF = 100                                      # tags live at this page offset

    def new_mapping(q, npages, prot, shared, addr):
        got = q.mmap(npages * PAGE, prot=prot, shared=shared, addr=addr)
        if addr is not None:
            assert got == addr
        pages = model[q.pid]
        if addr is None:
            assert not any(got + i * PAGE in pages for i in range(npages))
        obj = None
        if shared:
            nobj[0] += 1
            obj = nobj[0]
            objects[obj] = {}
        for i in range(npages):
            pg = got + i * PAGE
            pages[pg] = [prot, obj, i] if shared else [prot, None, bytes(8)]

    def expected(pid, pg):
        prot, obj, x = model[pid][pg]
        return objects[obj].get(x, bytes(8)) if obj is not None else x

    def verify_all():
        for pid, q in procs.items():
            for pg, (prot, _o, _x) in model[pid].items():
                if prot in ("r", "rw"):
                    assert q.read(pg + OFF, 8) == expected(pid, pg), (pid, hex(pg))

    def ranges(pid):
        pages = sorted(model[pid])
        return pages

    p = m.spawn()
    procs[p.pid] = p
    model[p.pid] = {}
    new_mapping(p, 300, "rw", False, None)
    new_mapping(p, 40, "rw", True, None)
    new_mapping(p, 600, "rw", False, REGION + 2 * SPAN - 100 * PAGE)
    for step in range(300):
        pid = rng.choice(sorted(procs))
        q = procs[pid]
        pages = ranges(pid)
        op = rng.random()
        if op < 0.30 and pages:                                # write
            pg = rng.choice(pages)
            data = rng.randbytes(8)
            prot, obj, x = model[pid][pg]
            if prot == "rw":
                ok, _ = guarded(q.write, pg + OFF, data)
                if not ok:
                    pass
                elif obj is not None:
                    objects[obj][x] = data
                else:
                    model[pid][pg][2] = data
            else:
                with pytest.raises(SegmentationFault):
                    q.write(pg + OFF, data)
        elif op < 0.45 and pages:                              # read
            pg = rng.choice(pages)
            if model[pid][pg][0] in ("r", "rw"):
                ok, got = guarded(q.read, pg + OFF, 8)
                assert not ok or got == expected(pid, pg)
            else:
                with pytest.raises(SegmentationFault):
                    q.read(pg + OFF, 8)
        elif op < 0.55 and len(procs) < 7:                     # fork
            mode = "share" if rng.random() < 0.7 else "copy"
            nprocs = len(m.processes)
            ok, c = guarded(q.fork, mode=mode)
            if ok:
                procs[c.pid] = c
                model[c.pid] = {pg: list(v) for pg, v in model[pid].items()}
            else:
                assert len(m.processes) == nprocs
        elif op < 0.62 and pages:                              # munmap a mapped run
            i = rng.randrange(len(pages))
            n = 1
            while (n < 40 and i + n < len(pages)
                   and pages[i + n] == pages[i] + n * PAGE and rng.random() < 0.9):
                n += 1
            q.munmap(pages[i], n * PAGE)
            for k in range(n):
                del model[pid][pages[i] + k * PAGE]
        elif op < 0.70 and pages:                              # mprotect a mapped run
            i = rng.randrange(len(pages))
            n = 1
            while (n < 30 and i + n < len(pages)
                   and pages[i + n] == pages[i] + n * PAGE):
                n += 1
            prot = rng.choice(["", "r", "rw", "rw"])
            q.mprotect(pages[i], n * PAGE, prot)
            for k in range(n):
                model[pid][pages[i] + k * PAGE][0] = prot
        elif op < 0.76:                                        # mmap
            npages = rng.randint(1, 64)
            shared = rng.random() < 0.3
            prot = rng.choice(["r", "rw", "rw"])
            if rng.random() < 0.5:
                addr = REGION + rng.randrange(0, 6 * 1024 - npages) * PAGE
                for k in range(npages):
                    model[pid].pop(addr + k * PAGE, None)
            else:
                addr = None
            new_mapping(q, npages, prot, shared, addr)
        elif op < 0.80 and pages:                              # touch a run
            i = rng.randrange(len(pages))
            n = 1
            while (n < 64 and i + n < len(pages)
                   and pages[i + n] == pages[i] + n * PAGE
                   and model[pid][pages[i + n]][0] == model[pid][pages[i]][0]):
                n += 1
            prot = model[pid][pages[i]][0]
            if prot == "rw":
                guarded(q.touch, pages[i], n * PAGE, write=rng.random() < 0.5)
            elif prot == "r":
                guarded(q.touch, pages[i], n * PAGE, write=False)
        elif op < 0.86:                                        # reclaim
            st = m.stats()
            n = rng.randint(1, 32)
            method = rng.choice(["rmap", "scan"] if rmap else ["scan"])
            if st["swap_used"] + n <= st["swap_total"]:
                ok, got = guarded(m.reclaim, n, method=method)
                assert not ok or 0 <= got <= n
        elif op < 0.90 and len(procs) > 1:                     # exit
            q.exit()
            del procs[pid]
            del model[pid]
        elif op < 0.92:                                        # exec
            q.exec()
            model[pid] = {}
            assert q.vmas == []
        tables_consistent(m)
        if step % 50 == 49:
            verify_all()
    verify_all()
    if inject:
        assert ooms[0] > 0, "no injected failure happened"
    for q in list(procs.values()):
        q.exit()
        m.check()
    all_freed(m)


# ----------------------------------------------------------------------------- more cases

def test_munmap_of_a_whole_span_inside_a_larger_vma_drops_only_that_table(rmap):
    m = mk(rmap)
    p = m.spawn()
    big = W
    assert p.mmap(3 * SPAN, prot="rw", addr=big) == big
    for i in range(3):
        for j in (0, 511, 1023):
            x = big + i * SPAN + j * PAGE
            p.write(x, tag(b"B", x))
    c = p.fork(mode="share")
    st0 = m.stats()
    c.munmap(big + SPAN, SPAN)                                # the middle table
    st1 = m.stats()
    assert delta(st0, st1, "tables_dropped") == 1
    assert delta(st0, st1, "unshares") == 0
    assert delta(st0, st1, "page_tables") == 0
    assert c.pde(big + SPAN) == 0
    assert c.pde(big) == p.pde(big) and c.pde(big + 2 * SPAN) == p.pde(big + 2 * SPAN)
    assert len(c.vmas) == 2
    tables_consistent(m)
    # p is now the middle table's only user: a range covering it and parts of both
    # neighbours frees it and privatizes the two shared neighbours
    st1 = m.stats()
    p.munmap(big + SPAN - 4 * PAGE, SPAN + 8 * PAGE)
    st2 = m.stats()
    assert delta(st1, st2, "tables_dropped") == 0
    assert delta(st1, st2, "unshares") == 2
    assert delta(st1, st2, "page_tables") == 2 - 1
    assert p.pde(big + SPAN) == 0
    for i in (0, 2):
        for j in (0, 511, 1023):
            x = big + i * SPAN + j * PAGE
            if i == 0 and j == 1023 or i == 2 and j == 0:
                continue
            assert c.read(x, 16) == tag(b"B", x) and p.read(x, 16) == tag(b"B", x)
    assert c.read(big + SPAN - PAGE, 16) == tag(b"B", big + SPAN - PAGE)
    tables_consistent(m)


def test_privatize_copies_protnone_and_swap_entries(rmap):
    m = mk(rmap, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(8 * PAGE, prot="rw", addr=R)
    for i in range(8):
        p.write(a + i * PAGE, tag(b"X", a + i * PAGE))
    p.mprotect(a + PAGE, PAGE, "")                            # PROTNONE entry
    fn = p.pte(a + PAGE) >> 12
    # swap out page 2 only: make the others referenced, then reclaim until it goes
    c0 = p.fork(mode="copy")                                  # a helper, exits at once
    c0.exit()
    for _ in range(10):
        if is_swap(p.pte(a + 2 * PAGE)):
            break
        for i in (0, 3, 4, 5, 6, 7):
            p.read(a + i * PAGE, 1)
        m.reclaim(1)
    else:
        pytest.skip("could not swap out one chosen page")
    swapped = [i for i in range(8) if is_swap(p.pte(a + i * PAGE))]
    c = p.fork(mode="share")
    st0 = m.stats()
    n_none = m.frame_count(fn)
    c.write(a + 7 * PAGE, b"c")                               # privatize
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 1
    assert st1["swap_used"] == st0["swap_used"]               # same slots, count +1
    for i in swapped:
        assert c.pte(a + i * PAGE) == p.pte(a + i * PAGE)
    assert c.pte(a + PAGE) == p.pte(a + PAGE)
    assert m.frame_count(fn) == n_none + 1                    # PROTNONE is present
    tables_consistent(m)
    p.exit()                                                  # c keeps every page
    tables_consistent(m)
    for i in range(8):
        if i == 1:
            with pytest.raises(SegmentationFault):
                c.read(a + i * PAGE, 1)
            continue
        exp = b"c" + tag(b"X", a + i * PAGE)[1:] if i == 7 else tag(b"X", a + i * PAGE)
        assert c.read(a + i * PAGE, 16) == exp
    c.mprotect(a + PAGE, PAGE, "r")
    assert c.read(a + PAGE, 16) == tag(b"X", a + PAGE)
    c.exit()
    all_freed(m)


def test_a_read_only_exclusive_page_under_a_shared_table_is_copied_not_reused(rmap):
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, b"original")
    k = p.fork(mode="copy")                                   # p's PTE loses RW
    k.exit()                                                  # frame count back to 1
    assert not p.pte(a) & RW and m.frame_count(p.pte(a) >> 12) == 1
    c = p.fork(mode="share")
    c.write(a, b"child!!!")
    assert p.read(a, 8) == b"original"
    assert c.read(a, 8) == b"child!!!"
    tables_consistent(m)
    p.write(a, b"parent!!")
    assert c.read(a, 8) == b"child!!!"
    assert p.read(a, 8) == b"parent!!"
    tables_consistent(m)


def test_exit_of_the_parent_leaves_the_child_its_shared_tables(rmap):
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    p.exit()
    st0 = m.stats()
    assert st0["shared_tables"] == 0 and st0["page_tables"] == 2
    c.write(R_PAGES[0], b"c")
    st1 = m.stats()
    assert delta(st0, st1, "unshare_reuses") == 1
    assert delta(st0, st1, "unshares") == 0
    expect = {a: expected_content(a) for a in ALL}
    expect[R_PAGES[0]] = b"c" + expect[R_PAGES[0]][1:]
    assert_contents(c, expect)
    tables_consistent(m)
    c.exit()
    all_freed(m)


@pytest.mark.parametrize("bulk", ["touch", "touch_pages"])
def test_bulk_faults_privatize_shared_tables(rmap, bulk):
    import numpy as np
    m = mk(rmap)
    p, zp = build(m)
    c = p.fork(mode="share")
    st0 = m.stats()
    if bulk == "touch":
        c.touch(R, 16 * PAGE, write=True)
        c.touch(Q, 8 * PAGE, write=True)
    else:
        addrs = np.array(R_PAGES + Q_PAGES, dtype=np.uint64)
        c.touch_pages(addrs, write=True)
    st1 = m.stats()
    assert delta(st0, st1, "unshares") == 2
    assert st1["shared_tables"] == 0
    for a in R_PAGES + Q_PAGES:
        assert c.pte(a) & RW and present(c.pte(a))
        assert c.pte(a) >> 12 != p.pte(a) >> 12 or a in (R_PAGES[14],)
        assert p.pte(a) == 0 or not p.pte(a) & RW
    tables_consistent(m)
    # a read-only bulk touch of an untouched page under a shared table privatizes too
    assert p.pte(R_PAGES[14]) == 0
    g = p.fork(mode="share")
    st2 = m.stats()
    if bulk == "touch":
        g.touch(R_PAGES[14], PAGE, write=False)
    else:
        g.touch_pages(np.array([R_PAGES[14]], dtype=np.uint64), write=False)
    assert delta(st2, m.stats(), "unshares") == 1
    assert p.pte(R_PAGES[14]) == 0 and g.pte(R_PAGES[14]) >> 12 == zp
    tables_consistent(m)
    expect = {a: expected_content(a) for a in ALL}
    for q in (p, c, g):
        assert_contents(q, expect)
    tables_consistent(m)


def test_write_across_two_shared_tables_out_of_memory_changes_no_byte(rmap):
    """A write crossing from T0 into T1, both shared: fail each allocation in turn;
    a failed write changes no byte of either page."""
    for k in range(0, 40):
        m = mk(rmap)
        p = m.spawn()
        a = p.mmap(2 * PAGE, prot="rw", addr=Q - PAGE)        # last page of T0, first of T1
        p.write(a, b"L" * PAGE)
        p.write(a + PAGE, b"H" * PAGE)
        c = p.fork(mode="share")
        m.fail_after(k)
        try:
            c.write(a + PAGE - 8, b"0123456789abcdef")
        except OutOfMemory:
            m.fail_after(None)
            assert c.read(a, 2 * PAGE) == b"L" * PAGE + b"H" * PAGE
            assert p.read(a, 2 * PAGE) == b"L" * PAGE + b"H" * PAGE
            tables_consistent(m)
            c.exit()
            p.exit()
            all_freed(m)
        else:
            m.fail_after(None)
            assert c.read(a + PAGE - 8, 16) == b"0123456789abcdef"
            assert p.read(a + PAGE - 8, 16) == b"L" * 8 + b"H" * 8
            tables_consistent(m)
            break
    else:
        pytest.fail("the write never succeeded")


def test_copy_fork_from_shared_tables_out_of_memory_leaves_no_child(rmap):
    for k in range(0, 200):
        m = mk(rmap)
        p, _ = build(m)
        c = p.fork(mode="share")
        st0 = m.stats()
        m.fail_after(k)
        try:
            h = c.fork(mode="copy")
        except OutOfMemory:
            m.fail_after(None)
            st1 = m.stats()
            assert len(m.processes) == 2
            assert used(st1) == used(st0)
            assert st1["pte_chain_nodes"] == st0["pte_chain_nodes"]
            expect = {a: expected_content(a) for a in ALL}
            assert_contents(p, expect)
            assert_contents(c, expect)
            tables_consistent(m)
        else:
            m.fail_after(None)
            assert k >= 3                                     # pgd + two tables
            tables_consistent(m)
            assert_contents(h, {a: expected_content(a) for a in ALL})
            break
    else:
        pytest.fail("the fork never succeeded")


def test_map_fixed_over_a_shared_table_leaves_the_other_sharer_alone(rmap):
    m = mk(rmap)
    p, zp = _with_whole_span(m)
    c = p.fork(mode="share")
    # one page replaced inside T0 (shared with p): privatize, then zap that page
    st0 = m.stats()
    assert c.mmap(PAGE, prot="rw", addr=R_PAGES[3]) == R_PAGES[3]
    assert delta(st0, m.stats(), "unshares") == 1
    assert c.read(R_PAGES[3], 16) == bytes(16)
    assert p.read(R_PAGES[3], 16) == tag(b"P", R_PAGES[3])
    tables_consistent(m)
    # the whole span of TW replaced: p keeps every page of its own mapping
    assert c.mmap(SPAN, prot="rw", addr=W) == W
    assert c.read(W, 16) == bytes(16)
    c.write(W, b"fresh")
    assert p.read(W, 16) == tag(b"W", W)
    assert c.pde(W) >> 12 != p.pde(W) >> 12
    tables_consistent(m)
    expect = {a: expected_content(a) for a in ALL}
    assert_contents(p, expect)
    expect[R_PAGES[3]] = bytes(16)
    assert_contents(c, expect)
    c.exit()
    p.exit()
    all_freed(m)


def test_munmap_of_a_hole_in_a_shared_span_changes_nothing(rmap):
    m = mk(rmap)
    p, _ = build(m)
    c = p.fork(mode="share")
    pdes = user_pdes(c)
    ptes0, _ = snapshot(m, p)
    st0 = m.stats()
    c.munmap(R + 100 * PAGE, 4 * PAGE)                        # no VMA there
    st1 = m.stats()
    for k in ("unshares", "tables_dropped", "page_tables", "frames_used"):
        assert delta(st0, st1, k) == 0, k
    assert user_pdes(c) == pdes
    for a in ALL:
        assert p.pte(a) == c.pte(a) == ptes0[a]
    tables_consistent(m)
