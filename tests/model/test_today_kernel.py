"""Today's kernel (DESIGN.md section 10): eager accounting, On-demand-fork, and
transparent huge pages, through the public API, with exact counts.

The state machine of tests/model/test_model_layouts.py runs every fork mode with both
accountings (and THP, madvise) beside the reference model; these are the named figures.
"""
import pytest

from lazyvm import Machine, OutOfMemory

PAGE = 4096
MiB, GiB = 1 << 20, 1 << 30
RW = 0x002
X86_BASE = 0x7F0000000000          # 512 GiB-aligned: one pud and one pmd table below it


def big(accounting="lazy", rmap=False, memory=640 * MiB, **kw):
    """x86_64, no contents, 512 MiB written at a 2 MiB-aligned address."""
    m = Machine(memory=memory, layout="x86_64", rmap=rmap, contents=False,
                accounting=accounting, **kw)
    p = m.spawn()
    a = p.mmap(512 * MiB, addr=X86_BASE)
    p.touch(a, 512 * MiB, write=True)
    return m, p, a


def delta(m, before, *keys):
    s = m.stats()
    return {k: s[k] - before[k] for k in keys}


KEYS = ("tables_allocated", "ptes_copied", "eager_refs", "eager_refs_dropped",
        "share_wrprotects", "odf_tables_shared", "odf_tables_copied")


# ---- the 512 MiB figures -------------------------------------------------------------

def test_copy_fork_512mib_allocates_256_leaf_tables_and_two_upper():
    m, p, a = big()
    s0 = m.stats()
    c = p.fork("copy")
    d = delta(m, s0, *KEYS)
    assert d == {"tables_allocated": 258, "ptes_copied": 131072, "eager_refs": 0,
                 "eager_refs_dropped": 0, "share_wrprotects": 0, "odf_tables_shared": 0,
                 "odf_tables_copied": 0}, d
    assert c.stats()["page_tables_l1"] == 256
    m.check()


@pytest.mark.parametrize("accounting,refs", [("lazy", 0), ("eager", 131072)])
def test_share_fork_512mib_takes_page_references_only_when_eager(accounting, refs):
    m, p, a = big(accounting)
    s0 = m.stats()
    c = p.fork("share")
    d = delta(m, s0, *KEYS)
    assert d == {"tables_allocated": 2, "ptes_copied": 0, "eager_refs": refs,
                 "eager_refs_dropped": 0, "share_wrprotects": 256, "odf_tables_shared": 0,
                 "odf_tables_copied": 0}, d
    pfn = p.translate(a + 12345 * PAGE) >> 12
    assert m.frame_count(pfn) == (2 if accounting == "eager" else 1)
    assert c.stats()["rss"] == p.stats()["rss"] == 131072
    m.check()
    # exit of the child: the eager references go with its uses of the tables
    s1 = m.stats()
    c.exit()
    d = delta(m, s1, "eager_refs_dropped", "tables_dropped", "frames_free")
    assert d == {"eager_refs_dropped": refs, "tables_dropped": 256, "frames_free": 3}, d
    assert m.frame_count(pfn) == 1
    m.check()


def test_eager_privatize_takes_no_reference():
    m, p, a = big("eager", rmap=True)
    c = p.fork("share")
    other = p.translate(a + PAGE) >> 12
    assert m.frame_count(other) == 2
    s0 = m.stats()
    c.touch(a, PAGE, write=True)
    d = delta(m, s0, "unshares", "cow_copies", "ptes_copied", "eager_refs", "rmap_adds")
    # the 512 entries are copied (and each gets a slot in the new table: rmap_adds 512,
    # and the written page's copy replaces its slot: one more), no reference is taken
    assert d == {"unshares": 1, "cow_copies": 1, "ptes_copied": 512, "eager_refs": 0,
                 "rmap_adds": 513}, d
    assert m.frame_count(other) == 2
    assert sorted(m.rmap(other)) == sorted([(p.pde(a) >> 12, 1), (c.pde(a) >> 12, 1)])
    m.check()


# ---- On-demand-fork --------------------------------------------------------------------

@pytest.mark.parametrize("accounting", ["lazy", "eager"])
def test_odf_1gib_unaligned_shares_511_tables_and_copies_the_two_partial_ones(accounting):
    m = Machine(memory=1280 * MiB, layout="x86_64", rmap=False, contents=False,
                accounting=accounting)
    p = m.spawn()
    a = p.mmap(GiB, addr=X86_BASE + PAGE)           # not 2 MiB-aligned: 513 leaf tables
    p.touch(a, GiB, write=True)
    assert p.stats()["page_tables_l1"] == 513
    s0 = m.stats()
    c = p.fork("odf")
    d = delta(m, s0, *KEYS)
    # the first leaf table holds 511 pages of the mapping, the last one page; the
    # mapping crosses a 1 GiB line: one pud table and two pmd tables are copied
    assert d == {"tables_allocated": 1 + 2 + 2, "ptes_copied": 512,
                 "eager_refs": 511 * 512 if accounting == "eager" else 0,
                 "eager_refs_dropped": 0, "share_wrprotects": 511,
                 "odf_tables_shared": 511, "odf_tables_copied": 2}, d
    assert m.stats()["forks_odf"] == 1 and m.stats()["forks_copy"] == 0
    mid = a + 256 * MiB
    assert p.pde(a) & RW and c.pde(a) & RW and p.pde(a) >> 12 != c.pde(a) >> 12
    assert not p.pde(mid) & RW and not c.pde(mid) & RW and p.pde(mid) >> 12 == c.pde(mid) >> 12
    m.check()


def test_odf_copies_tables_of_shared_mappings_and_tables_covering_several_vmas():
    m = Machine(memory=64 * MiB, layout="pae", fork_mode="odf")
    p = m.spawn()
    base = 0x40000000
    shm = p.mmap(4 * MiB, shared=True, addr=base)             # tables 0, 1: shared mapping
    priv = p.mmap(2 * MiB, addr=base + 4 * MiB)               # table 2: one private VMA
    p.mmap(MiB, addr=base + 6 * MiB)                          # table 3: two VMAs
    p.mmap(MiB, prot="r", addr=base + 7 * MiB)
    for addr in range(base, base + 7 * MiB, 512 * 1024):
        p.write(addr, b"v")
    p.read(base + 7 * MiB, 1)                                 # the ZERO_PAGE
    s0 = m.stats()
    c = p.fork()
    d = delta(m, s0, "odf_tables_shared", "odf_tables_copied", "ptes_copied")
    # copied: 8 pages of the shared mapping, 2 + the ZERO_PAGE in table 3
    assert d == {"odf_tables_shared": 1, "odf_tables_copied": 3, "ptes_copied": 11}, d
    assert p.pde(priv) >> 12 == c.pde(priv) >> 12 and not c.pde(priv) & RW
    assert p.pde(shm) >> 12 != c.pde(shm) >> 12 and c.pde(shm) & RW
    c.write(shm, b"S")                                         # seen by both
    c.write(priv, b"P")                                        # private to the child
    assert p.read(shm, 1) == b"S" and p.read(priv, 1) == b"v" and c.read(priv, 1) == b"P"
    m.check()
    c.exit()
    p.exit()
    assert m.stats()["frames_used"] == m.boot_frames
    m.check()


@pytest.mark.parametrize("layout", ["i386", "pae", "x86_64"])
@pytest.mark.parametrize("accounting", ["lazy", "eager"])
@pytest.mark.parametrize("mode", ["share", "odf"])
def test_fork_out_of_memory_leaves_nothing(layout, accounting, mode):
    m = Machine(memory=32 * MiB, layout=layout, accounting=accounting, rmap=True)
    p = m.spawn()
    span = {"i386": 4 * MiB}.get(layout, 2 * MiB)
    a = p.mmap(3 * span, addr=0x40000000 + span - 3 * PAGE)
    for pg in range(a, a + 3 * span, 16 * PAGE):
        p.write(pg, pg.to_bytes(8, "little"))
    p.mmap(span, shared=True, addr=0x40000000 + 8 * span)
    n = 0
    while True:
        free = m.stats()["frames_free"]
        m.fail_after(n)
        try:
            c = p.fork(mode)
        except OutOfMemory:
            m.fail_after(None)
            assert m.stats()["frames_free"] == free and len(m.processes) == 1
            m.check()
            n += 1
            continue
        m.fail_after(None)
        break
    assert n >= 1
    m.check()
    for pg in range(a, a + 3 * span, 16 * PAGE):
        c.write(pg, b"c")
        assert p.read(pg, 8) == pg.to_bytes(8, "little")
    m.check()


@pytest.mark.parametrize("mode", ["share", "odf"])
def test_eager_reclaim_and_munmap_under_shared_tables(mode):
    m = Machine(memory=16 * MiB, swap=16 * MiB, accounting="eager", fork_mode=mode)
    p = m.spawn()
    a = p.mmap(8 * MiB, addr=0x40000000)
    for pg in range(a, a + 8 * MiB, PAGE):
        p.write(pg, pg.to_bytes(4, "little"))
    c = p.fork()
    d = c.fork()
    m.check()
    assert m.reclaim(600) > 0
    m.check()
    d.munmap(a + 3 * MiB, 2 * MiB)
    m.check()
    c.write(a + 5 * MiB, b"c")
    m.check()
    for q in (p, c, d):
        for pg in (a, a + 2 * MiB, a + 7 * MiB):
            assert q.read(pg, 4) == pg.to_bytes(4, "little")
    assert p.read(a + 5 * MiB, 4) == (a + 5 * MiB).to_bytes(4, "little")
    for q in (c, d, p):
        q.exit()
        m.check()
    s = m.stats()
    assert s["frames_used"] == m.boot_frames and s["swap_used"] == 0
    assert s["eager_refs"] == 4096


def test_accounting_argument():
    assert Machine(memory=8 * MiB).accounting == "lazy"
    with pytest.raises(ValueError, match="accounting"):
        Machine(memory=8 * MiB, accounting="early")
    with pytest.raises(TypeError):
        Machine(memory=8 * MiB, accounting=1)
    with pytest.raises(ValueError, match="share_level=1"):
        Machine(memory=8 * MiB, layout="x86_64", share_level=2, accounting="eager")
    with pytest.raises(ValueError, match="fork mode"):
        Machine(memory=8 * MiB).spawn().fork("odd")


# ---- transparent huge pages ----------------------------------------------------------

HUGE = 2 * MiB
PS = 0x080


def test_thp_arguments():
    assert Machine(memory=8 * MiB).thp == "never"
    for thp in ("always", "madvise"):
        with pytest.raises(ValueError, match="i386"):
            Machine(memory=8 * MiB, thp=thp)
        Machine(memory=8 * MiB, layout="pae", thp=thp)
    with pytest.raises(ValueError, match="thp"):
        Machine(memory=8 * MiB, layout="pae", thp="sometimes")
    with pytest.raises(ValueError, match="thp_cow"):
        Machine(memory=8 * MiB, layout="pae", thp="always", thp_cow="share")
    with pytest.raises(TypeError):
        Machine(memory=8 * MiB, layout="pae", thp=True)
    p = Machine(memory=8 * MiB, layout="pae").spawn()
    a = p.mmap(HUGE)
    with pytest.raises(ValueError, match="advice"):
        p.madvise(a, HUGE, "huge")
    with pytest.raises(ValueError, match="not all mapped"):
        p.madvise(a, 2 * HUGE, "hugepage")


def thp_1gib(**kw):
    m = Machine(memory=1280 * MiB, layout="x86_64", contents=False, thp="always", **kw)
    p = m.spawn()
    a = p.mmap(GiB, addr=X86_BASE)
    p.touch(a, GiB, write=True)
    return m, p, a


def test_thp_1gib_fault_maps_512_huge_pages_with_512_deposits():
    m, p, a = thp_1gib(rmap=True)
    s = m.stats()
    assert (s["thp_faults"], s["tables_deposited"], s["demand_zero"]) == (512, 512, 0)
    assert s["page_tables"] == s["tables_allocated"] == 512 + 2
    assert p.stats() == {"rss": 262144, "page_tables": 514, "page_tables_l1": 512,
                         "page_tables_l2": 1, "page_tables_l3": 1, "vmas": 1}
    e = p.pte(a + 5 * HUGE + 123)
    assert e & PS and e == p.pde(a + 5 * HUGE) and p.walk(a)[-1][0] == 2
    assert p.translate(a + 5 * HUGE + 4096 + 7) == ((e >> 12) << 12) + 4096 + 7
    head = e >> 12
    assert head % 512 == 0 and m.frame_count(head) == 1 and m.frame_count(head + 1) == 0
    assert m.rmap(head) == [(p.walk(a)[-1][1], 5)]          # one slot: (pmd table, index)
    m.check()


@pytest.mark.parametrize("mode,share_level,allocated", [
    ("copy", 1, 2 + 512), ("share", 1, 2 + 512), ("odf", 1, 2 + 512), ("share", 2, 1)])
def test_thp_fork_1gib_child_has_512_deposits_and_a_write_splits_one(mode, share_level,
                                                                     allocated):
    m, p, a = thp_1gib(share_level=share_level)
    s0 = m.stats()
    c = p.fork(mode)
    d = delta(m, s0, "tables_allocated", "tables_deposited", "ptes_copied")
    assert d == {"tables_allocated": allocated,
                 "tables_deposited": 512 if share_level == 1 else 0, "ptes_copied": 0}, d
    assert c.stats()["page_tables"] == 512 + 2 and c.stats()["rss"] == 262144
    if share_level == 1:          # the huge entries were copied, write-protected
        assert not c.pte(a) & RW and not p.pte(a) & RW
    else:                         # the pmd table is shared under write-protected puds
        assert c.pte(a) & RW and not c.walk(a)[-2][3] & RW and not p.walk(a)[-2][3] & RW
    m.check()
    s1 = m.stats()
    c.touch(a + 7 * HUGE + 4096, 4096, write=True)
    d = delta(m, s1, "thp_splits", "cow_copies", "thp_copies", "tables_deposited")
    # at share level 2 the child first privatizes the pmd table: 512 mappings copied
    assert d == {"thp_splits": 1, "cow_copies": 1, "thp_copies": 0,
                 "tables_deposited": -1 if share_level == 1 else 511}, d
    assert p.pte(a + 7 * HUGE) & PS and not c.pte(a + 7 * HUGE) & PS
    m.check()
    c.exit()
    p.exit()
    assert m.stats()["frames_used"] == m.boot_frames
    m.check()


@pytest.mark.parametrize("layout", ["pae", "x86_64"])
@pytest.mark.parametrize("thp_cow", ["split", "copy"])
@pytest.mark.parametrize("accounting", ["lazy", "eager"])
def test_thp_data_after_fork_and_cow(layout, thp_cow, accounting):
    m = Machine(memory=32 * MiB, layout=layout, thp="always", thp_cow=thp_cow,
                accounting=accounting)
    p = m.spawn()
    a = p.mmap(3 * HUGE, addr=0x40000000)
    for pg in range(a, a + 3 * HUGE, 64 * 1024):
        p.write(pg, pg.to_bytes(8, "little"))
    assert m.stats()["thp_faults"] == 3
    c = p.fork("share")
    c.write(a + HUGE + 8, b"child")
    s = m.stats()
    assert (s["thp_splits"], s["thp_copies"]) == ((1, 0) if thp_cow == "split" else (0, 1))
    for pg in range(a, a + 3 * HUGE, 64 * 1024):
        assert p.read(pg, 8) == pg.to_bytes(8, "little")
        assert c.read(pg, 8) == pg.to_bytes(8, "little")
    assert c.read(a + HUGE + 8, 5) == b"child" and p.read(a + HUGE + 8, 5) == bytes(5)
    m.check()
    p.write(a, b"parent")                 # the parent's own huge page: reuse after c exits
    c.exit()
    s0 = m.stats()
    p.write(a + 2 * HUGE, b"again")
    assert delta(m, s0, "cow_copies", "thp_copies", "thp_splits") == {
        "cow_copies": 0, "thp_copies": 0, "thp_splits": 0}
    m.check()


def test_thp_no_run_of_512_frames_falls_back_to_4k():
    m = Machine(memory=(1 << 20) + 512 * 4096, layout="x86_64", thp="always")
    p = m.spawn()
    a = p.mmap(HUGE, addr=0x40000000)
    p.write(a, b"x")
    s = m.stats()
    assert (s["thp_faults"], s["thp_fallbacks"], s["demand_zero"]) == (0, 1, 1)
    assert not p.pte(a) & PS
    m.check()


def test_thp_read_fault_maps_the_zero_page():
    m = Machine(memory=16 * MiB, layout="pae", thp="always")
    p = m.spawn()
    a = p.mmap(HUGE, addr=0x40000000)
    assert p.read(a, 4) == bytes(4)
    s = m.stats()
    assert (s["thp_faults"], s["zero_page_maps"]) == (0, 1)
    p.write(a + 4096, b"y")               # the pmd entry is no longer empty: 4 KiB
    assert m.stats()["thp_faults"] == 0 and m.stats()["demand_zero"] == 1
    m.check()


def test_madvise_marks_split_vmas_and_choose_huge_pages():
    m = Machine(memory=32 * MiB, layout="x86_64", thp="madvise")
    p = m.spawn()
    a = p.mmap(4 * HUGE, addr=0x40000000)
    p.madvise(a + HUGE, 2 * HUGE, "hugepage")
    assert [(v.start - a, v.end - a) for v in p.vmas] == [
        (0, HUGE), (HUGE, 3 * HUGE), (3 * HUGE, 4 * HUGE)]
    p.touch(a, 4 * HUGE, write=True)
    assert m.stats()["thp_faults"] == 2
    assert [bool(p.pte(a + k * HUGE) & PS) for k in range(4)] == [False, True, True, False]
    p.madvise(a + HUGE, 2 * HUGE, "nohugepage")   # huge pages already mapped stay
    assert p.pte(a + HUGE) & PS and len(p.vmas) == 3
    m.check()
    m2 = Machine(memory=32 * MiB, layout="x86_64", thp="always")
    q = m2.spawn()
    b = q.mmap(2 * HUGE, addr=0x40000000)
    q.madvise(b, HUGE, "nohugepage")
    q.touch(b, 2 * HUGE, write=True)
    assert m2.stats()["thp_faults"] == 1 and not q.pte(b) & PS and q.pte(b + HUGE) & PS
    m2.check()


def test_madvise_cutting_a_huge_mapping_splits_it():
    m = Machine(memory=32 * MiB, layout="pae", thp="always")
    p = m.spawn()
    a = p.mmap(HUGE, addr=0x40000000)
    p.write(a + 4096, b"z")
    p.madvise(a, 64 * 4096, "nohugepage")
    assert m.stats()["thp_splits"] == 1 and not p.pte(a) & PS
    assert p.read(a + 4096, 1) == b"z"
    m.check()


@pytest.mark.parametrize("op", ["munmap", "mprotect", "mprotect_none"])
def test_thp_munmap_and_mprotect_of_part_split(op):
    m = Machine(memory=32 * MiB, layout="x86_64", thp="always", rmap=True)
    p = m.spawn()
    a = p.mmap(2 * HUGE, addr=0x40000000)
    for pg in range(a, a + 2 * HUGE, 4096):
        p.write(pg, pg.to_bytes(8, "little"))
    s0 = m.stats()
    if op == "munmap":
        p.munmap(a + 4096, 4096)
    else:
        p.mprotect(a + 4096, 4096, "" if op == "mprotect_none" else "r")
    d = delta(m, s0, "thp_splits", "tables_deposited")
    assert d == {"thp_splits": 1, "tables_deposited": -1}, d
    assert p.pte(a + HUGE) & PS
    m.check()
    for pg in range(a, a + 2 * HUGE, 4096):
        if pg != a + 4096:
            assert p.read(pg, 8) == pg.to_bytes(8, "little")
    p.write(a + 8192, b"w")               # split PTEs are read-only: a 4 KiB copy
    m.check()
    p.mprotect(a + HUGE, HUGE, "r")       # a whole huge mapping: no split
    assert m.stats()["thp_splits"] == 1 and p.pte(a + HUGE) & PS and not p.pte(a + HUGE) & RW
    m.check()
    p.exit()
    assert m.stats()["frames_used"] == m.boot_frames
    m.check()


@pytest.mark.parametrize("rmap", [True, False])
def test_thp_reclaim_splits_huge_pages_first(rmap):
    m = Machine(memory=16 * MiB, layout="x86_64", thp="always", rmap=rmap, swap=16 * MiB)
    p = m.spawn()
    a = p.mmap(2 * HUGE, addr=0x40000000)
    for pg in range(a, a + 2 * HUGE, 4096):
        p.write(pg, pg.to_bytes(8, "little"))
    c = p.fork("copy")
    m.reclaim(300)
    m.reclaim(300)
    assert m.stats()["thp_splits"] >= 2
    m.check()
    for q in (p, c):
        for pg in range(a, a + 2 * HUGE, 64 * 1024):
            assert q.read(pg, 8) == pg.to_bytes(8, "little")
    m.check()
    c.exit()
    p.exit()
    s = m.stats()
    assert s["frames_used"] == m.boot_frames and s["swap_used"] == 0


def test_thp_without_contents():
    m = Machine(memory=64 * MiB, layout="pae", thp="always", contents=False)
    p = m.spawn()
    a = p.mmap(8 * HUGE, addr=0x40000000)
    p.touch(a, 8 * HUGE, write=True)
    c = p.fork("copy")
    c.touch(a, 8 * HUGE, write=True)
    s = m.stats()
    assert s["thp_faults"] == 8 and s["thp_splits"] == 8 and s["cow_copies"] == 8 * 512
    m.check()
