"""The compiled core meets corrupted memory: an entry flipped behind its back (the tests
reach the core's own array, m._core.physical, as test_errors.py does) gives
InvariantError, never a wild access, a hang or a silent wrong answer; and the limits
and views it promises.  Cases that crashed run in a child process (a segfault fails the
test instead of killing pytest)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import lazyvm
from lazyvm import InvariantError, LazyVMError, Machine, OutOfMemory

from subproc import LAZYVM_ENV, NEUTRAL_CWD

PAGE = 4096
LAYOUTS = ("i386", "pae", "x86_64")

# The child's helpers: the leaf entry of an address, and writing any entry.
HELPERS = """
import numpy as np
import lazyvm
from lazyvm import InvariantError, LazyVMError, Machine, OutOfMemory

def slot(m, p, addr, level=1):
    for lvl, t, i, e in m._core.walk(p.pgd, addr):
        if lvl == level:
            return t, i, e
    raise AssertionError("no entry at that level")

def poke(m, t, i, value):
    wide = m._core.wide
    view = m._core.physical.view("<u8" if wide else "<u4")
    view[t * (512 if wide else 1024) + i] = value

def expect_invariant(f, *a):
    try:
        f(*a)
    except InvariantError:
        return
    raise AssertionError(f"{f.__name__} did not raise InvariantError")
"""


def run_child(body, timeout=120):
    """Run body (after HELPERS) in a fresh interpreter; it must exit 0 and print OK."""
    code = HELPERS + textwrap.dedent(body) + "\nprint('OK')\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=NEUTRAL_CWD, env=LAZYVM_ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), \
        f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def poke(m, t, i, value):
    wide = m._core.wide
    view = m._core.physical.view("<u8" if wide else "<u4")
    view[t * (512 if wide else 1024) + i] = value


def leaf(m, p, addr):
    lvl, t, i, e = m._core.walk(p.pgd, addr)[-1]
    assert lvl == 1
    return t, i, e


# ------------------------------------------------ 1. one leaf policy: copy and privatize

@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bad", ["swap", "frame"])
def test_privatize_refuses_what_copy_refuses(layout, bad):
    """A corrupted entry under a shared table: the write fault that privatizes it raises
    InvariantError, as a copy fork does (a bad swap offset wrote out of bounds)."""
    run_child(f"""
    for mode in ("share", "copy"):
        m = Machine(memory=32 << 20, layout={layout!r}, fork_mode=mode, swap=1 << 20)
        p = m.spawn()
        a = p.mmap(64 * 4096)
        p.write(a, b"x" * (64 * 4096))
        c = p.fork() if mode == "share" else None
        t, i, e = slot(m, p, a + 5 * 4096)
        value = (0xFFFFFF << 8) if {bad!r} == "swap" else (((m._core.nframes + 7) << 12) | 0x67)
        poke(m, t, i, value)
        if mode == "share":
            expect_invariant(c.write, a, b"y")      # privatize of the shared table
            expect_invariant(p.write, a, b"y")
        else:
            expect_invariant(p.fork)
        poke(m, t, i, e)
        m.check()
    """)


# ---------------------------------------- 2. a parent-level entry with US cleared

@pytest.mark.parametrize("layout", LAYOUTS)
def test_upper_entry_without_us_raises_instead_of_looping(layout):
    run_child(f"""
    m = Machine(memory=32 << 20, layout={layout!r})
    p = m.spawn()
    a = p.mmap(8192)
    p.write(a, b"hello")
    t, i, e = slot(m, p, a, level=2)
    poke(m, t, i, e & ~0x4)
    expect_invariant(p.read, a, 1)
    expect_invariant(p.read, a, 8000)
    expect_invariant(p.write, a, b"z")
    expect_invariant(p.touch, a, 8192)
    poke(m, t, i, e)
    assert p.read(a, 5) == b"hello"
    m.check()
    """, timeout=60)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_leaf_entry_without_us_raises(layout):
    run_child(f"""
    m = Machine(memory=32 << 20, layout={layout!r})
    p = m.spawn()
    a = p.mmap(8192)
    p.write(a, b"hello")
    t, i, e = slot(m, p, a)
    poke(m, t, i, e & ~0x4)
    expect_invariant(p.read, a, 1)
    expect_invariant(p.write, a, b"z")
    poke(m, t, i, e)
    assert p.read(a, 5) == b"hello"
    m.check()
    """, timeout=60)


# -------------------------------- 3. check() of an object of 2**32 pages returns

def test_check_of_a_shared_object_of_2_to_the_32_pages():
    run_child("""
    m = Machine(memory=64 << 20, layout="x86_64", contents=False)
    p = m.spawn()
    a = p.mmap(1 << 44, shared=True)
    p.touch(a, 3 * 4096, write=True)
    p.touch(a + (1 << 44) - 4096, 4096, write=True)
    m.check()
    p.exit()
    m.check()
    """, timeout=300)


# ------------------------------------------ 4. a leaf entry beyond physical memory

@pytest.mark.parametrize("layout", LAYOUTS)
def test_leaf_frame_beyond_memory_is_an_invariant_error(layout):
    m = Machine(memory=16 << 20, layout=layout)
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"x")
    t, i, e = leaf(m, p, a)
    poke(m, t, i, ((m._core.nframes + 3) << 12) | (e & 0xFFF))
    with pytest.raises(InvariantError):
        p.write(a, b"boom")
    with pytest.raises(InvariantError):
        p.read(a, 4)
    assert not m.physical[:PAGE].any()          # the ZERO_PAGE was not written
    assert p.translate(a) is None
    poke(m, t, i, e)
    assert p.read(a, 1) == b"x"
    m.check()


# ------------------------- 5. a copy fork stopped by a corrupted entry tears down cleanly

def test_stopped_copy_fork_tears_down_no_garbage():
    m = Machine(memory=64 << 20, fork_mode="copy", rmap=False)
    q = m.spawn()
    qa = q.mmap(PAGE)
    q.write(qa, b"q")
    qf = leaf(m, q, qa)[2] >> 12
    p2 = m.spawn()
    a2 = p2.mmap(8 << 20)
    p2.touch(a2, 8 << 20, write=True)
    # data pages that look like tables full of entries naming q's frame, then freed:
    # the child's tables come from these recycled frames
    p1 = m.spawn()
    a1 = p1.mmap(32 * PAGE)
    junk = np.full(1024, (qf << 12) | 0x67, dtype="<u4").tobytes()
    for k in range(32):
        p1.write(a1 + k * PAGE, junk)
    p1.munmap(a1, 32 * PAGE)
    full = (a2 + (4 << 20) - 1) & ~((4 << 20) - 1)      # a table span the VMA covers whole
    t, i, e = leaf(m, p2, full + 3 * PAGE)
    poke(m, t, i, ((m._core.nframes + 9) << 12) | 0x67)
    with pytest.raises(InvariantError):
        p2.fork()
    assert m.frame_count(qf) == 1
    poke(m, t, i, e)
    m.check()
    assert q.read(qa, 1) == b"q"


# ----------------------------------- 6. exit that meets a corrupted entry keeps the process

@pytest.mark.parametrize("layout", LAYOUTS)
def test_exit_that_meets_a_corrupted_entry_keeps_the_process(layout):
    run_child(f"""
    m = Machine(memory=32 << 20, layout={layout!r})
    p = m.spawn()
    a = p.mmap(16 * 4096)
    p.write(a, b"x" * (16 * 4096))
    t, i, e = slot(m, p, a + 9 * 4096)
    poke(m, t, i, ((m._core.nframes + 5) << 12) | 0x67)
    expect_invariant(p.exit)
    assert p.alive and p in m.processes
    assert m.frame_kind(p.pgd) == "pgd"          # its page directory was not freed
    poke(m, t, i, e)
    m.check()
    p.exit()
    m.check()
    """, timeout=60)


# ------------------------------------------------ 8. read-only views stay read-only

def test_physical_and_table_views_cannot_be_made_writable():
    m = Machine(memory=8 << 20)
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"x")
    for view in (m.physical, m.table(p.pgd), m.table(p.pde(a) >> 12)):
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view.flags.writeable = True
    for name, view in m._core.views().items():
        if isinstance(view, np.ndarray):
            with pytest.raises(ValueError):
                view.flags.writeable = True


# ------------------- 9. scan reclaim after a copy fork: OutOfMemory before anything done

def test_scan_reclaim_that_frees_nothing_gives_its_slots_back():
    """Every frame is mapped by parent and child and the swap area (256 slots) is
    smaller than the parent: the scan spends every slot unmapping the parent's PTEs and
    frees nothing.  OutOfMemory then comes with every slot given back and every PTE
    mapped again, as if nothing was done."""
    m = Machine(memory=16 << 20, fork_mode="copy", rmap=False, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(512 * PAGE)
    p.write(a, bytes(range(256)) * (512 * PAGE // 256))
    c = p.fork()
    before = {q.pid: q.read(a, 512 * PAGE) for q in (p, c)}
    with pytest.raises(OutOfMemory):
        m.reclaim(10)
    assert m.stats()["swap_used"] == 0
    for q in (p, c):
        assert all(q.pte(a + k * PAGE) & 1 for k in range(512))
    m.check()
    assert {q.pid: q.read(a, 512 * PAGE) for q in (p, c)} == before
    c.exit()                                  # now every frame has one mapping
    assert m.reclaim(10) == 10
    m.check()
    assert p.read(a, 512 * PAGE) == before[p.pid]


# ------------------------------------------- 10. the checked build says it is one

def test_debug_build_flag_matches_the_build():
    from lazyvm.core import defs
    assert lazyvm.core.DEBUG_BUILD == defs.wraparound_checked()


# ----------------------------------------------------- 11. x86_64 memory limit

def test_x86_64_memory_limit_is_a_clear_value_error():
    limit = lazyvm.layout.LAYOUTS["x86_64"].max_memory
    assert limit == ((1 << 32) - 1) * PAGE
    for memory in (1 << 44, 1 << 46, limit + PAGE):
        with pytest.raises(ValueError, match="x86_64"):
            Machine(memory=memory, layout="x86_64", contents=False)


# ------------------------------------------ 14. check() memory follows what is used

def test_check_of_the_largest_machine_stays_small():
    out = run_child("""
    import resource
    limit = lazyvm.layout.LAYOUTS["x86_64"].max_memory
    m = Machine(memory=limit, layout="x86_64", contents=False, rmap=True, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(1 << 30)
    p.touch(a, 1 << 24, write=True)
    c = p.fork()
    m.check()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """, timeout=300)
    maxrss_kib = int(out.split()[-2])
    assert maxrss_kib < 2 << 20, maxrss_kib
