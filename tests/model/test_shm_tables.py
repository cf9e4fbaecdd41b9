"""Tables of shared mappings stay shared (DESIGN.md section 2): at a share fork a table
whose whole span lies inside one shared mapping keeps RW in its entries, a fault there
installs the object's frame in place for every sharer, and only a change that is not the
same for every sharer privatizes first.  Every layout and share level, with counts."""
import pytest

from lazyvm import Machine

MiB = 1 << 20
CASES = [("i386", 1), ("pae", 1), ("x86_64", 1), ("x86_64", 2), ("x86_64", 3)]
SPAN = {"i386": 4 * MiB, "pae": 2 * MiB, "x86_64": 2 * MiB}     # a leaf table's span


def _machine(layout, level, contents=True):
    return Machine(memory=160 * MiB, fork_mode="share", layout=layout, share_level=level,
                   contents=contents, rmap=True)


@pytest.mark.parametrize("layout,level", CASES)
def test_one_write_to_a_40mib_segment_after_a_share_fork_copies_no_pte(layout, level):
    m = _machine(layout, level, contents=False)
    p = m.spawn()
    a = p.mmap(40 * MiB, shared=True)
    p.touch(a, 40 * MiB, write=True)
    c = p.fork()
    m.check()
    before = m.stats()
    c.touch(a + 20 * MiB, 4096, write=True)          # already present: no fault
    p.touch(a + 8 * MiB + 4096, 4096, write=True)
    after = m.stats()
    assert after["ptes_copied"] == before["ptes_copied"]
    assert after["rmap_adds"] == before["rmap_adds"]
    # a leaf table wholly inside the segment is never privatized (an upper-level table
    # that also spans what lies outside the segment may be, entries only)
    assert after.get("unshares_l1", 0) == before.get("unshares_l1", 0)
    m.check()


@pytest.mark.parametrize("layout,level", CASES)
def test_a_fault_installs_the_frame_for_every_sharer(layout, level):
    m = _machine(layout, level)
    span = SPAN[layout]
    p = m.spawn()
    a = p.mmap(4 * span, shared=True, addr=8 * span)     # whole leaf tables
    p.write(a, b"parent")
    for k in range(4):                         # a page under each table: they exist
        p.touch(a + k * span, 4096)
    c1 = p.fork()
    c2 = p.fork()
    m.check()
    before = m.stats()
    page = a + span + 5 * 4096                 # never touched: the fault maps it
    c1.write(page, b"from c1")
    after = m.stats()
    assert after["shmem_faults"] - before["shmem_faults"] == 1
    assert after["ptes_copied"] == before["ptes_copied"]
    assert after.get("unshares_l1", 0) == before.get("unshares_l1", 0)
    # the PTE is in the table all three share: the others see it without a fault
    assert p.pte(page) == c1.pte(page) == c2.pte(page) != 0
    assert p.read(page, 7) == c2.read(page, 7) == b"from c1"
    assert m.stats()["faults"] == after["faults"]
    m.check()


@pytest.mark.parametrize("layout,level", CASES)
def test_changes_not_the_same_for_every_sharer_privatize_first(layout, level):
    m = _machine(layout, level)
    span = SPAN[layout]
    p = m.spawn()
    a = p.mmap(4 * span, shared=True, addr=8 * span)
    for k in range(4):
        p.touch(a + k * span, 4096, write=True)
    c = p.fork()
    # mprotect of a whole shared table in one sharer: privatized, so the other sharer's
    # later fault does not reach it
    t = a + 2 * span
    u0 = m.stats()["unshares_l1"]
    c.mprotect(t, span, "r")
    assert m.stats()["unshares_l1"] == u0 + 1
    m.check()
    p.write(t + 4096, b"w")
    assert c.pte(t + 4096) == 0 or not c.pte(t + 4096) & 0x2
    assert c.read(t + 4096, 1) == b"w"          # the same object, read-only in c
    m.check()
    # munmap of part: privatized first, the other sharer keeps its mapping
    u0 = m.stats()["unshares_l1"]
    c.munmap(a + span, 4096)
    assert m.stats()["unshares_l1"] == u0 + 1
    p.write(a + span, b"still")
    assert p.read(a + span, 5) == b"still"
    m.check()
    # MAP_FIXED over part of it in one sharer: the same
    c.mmap(4096, shared=False, addr=a + 3 * span + 4096)
    c.write(a + 3 * span + 4096, b"private")
    p.write(a + 3 * span + 4096, b"shared!")
    assert c.read(a + 3 * span + 4096, 7) == b"private"
    m.check()
    for q in (c, p):
        q.exit()
    m.check()
    assert m.stats()["page_tables"] == 0


@pytest.mark.parametrize("layout", ["pae", "x86_64"])
def test_madvise_of_part_of_a_shared_mapping_keeps_its_table_shm_covered(layout):
    """madvise marks private memory only (THP is private anonymous memory's here): over
    part of a shared mapping whose table is shared it splits no VMA, so the table stays
    inside one shared mapping of every sharer and keeps RW (found by the layout state
    machine: the split left a writable entry over a table no longer shm-covered)."""
    m = Machine(memory=32 << 20, layout=layout, accounting="eager", thp="madvise")
    p = m.spawn()
    a = p.mmap(2 << 20, addr=0x200000, shared=True)
    p.write(a, b"x")
    c = p.fork()
    p.madvise(a, 4096, "hugepage")
    assert len(p.vmas) == 1
    m.check()
    c.write(a + 4096, b"y")
    assert p.read(a + 4096, 1) == b"y"
    m.check()
