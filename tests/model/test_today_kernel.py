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
