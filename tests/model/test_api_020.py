"""The findings of issue 8 on the public API and its robustness, each a test that fails
on 0.1.0: wrong types are TypeError, machines and processes cannot be copied or pickled,
Process is not constructible, m.physical is read-only, p.vmas are named tuples, p.stats(),
read-only table views, a large swap area is not reserved up front, reclaim with every
allocation failing raises OutOfMemory, and a corrupted entry is an InvariantError from
check(), never a crash."""
import copy
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from lazyvm import InvariantError, Machine, OutOfMemory, Process


def _proc(**kw):
    m = Machine(memory=16 << 20, **kw)
    p = m.spawn()
    a = p.mmap(64 << 10)
    p.write(a, b"hello")
    return m, p, a


@pytest.mark.parametrize("call", [
    lambda p, a: p.read(1.0 * a, 4),
    lambda p, a: p.read(a, 4.0),
    lambda p, a: p.write(a, "text"),
    lambda p, a: p.write(a, np.array([b"x"], dtype=object)),
    lambda p, a: p.write(a, 7),
    lambda p, a: p.mmap(4096.0),
    lambda p, a: p.mmap(4096, prot=None),
    lambda p, a: p.mmap(4096, shared="yes"),
    lambda p, a: p.touch(a, 4096, write="no"),
    lambda p, a: p.touch_pages(np.array([a + 0.5])),
    lambda p, a: p.munmap(a, "4096"),
    lambda p, a: p.translate(str(a)),
    lambda p, a: p.machine.reclaim(1.5),
])
def test_wrong_types_are_type_errors_and_change_nothing(call):
    m, p, a = _proc(swap=1 << 20)
    before = m.stats()
    with pytest.raises(TypeError):
        call(p, a)
    m.check()
    assert p.read(a, 5) == b"hello"
    assert m.stats()["frames_free"] == before["frames_free"]


@pytest.mark.parametrize("kw", [dict(memory=16.0 * (1 << 20)), dict(rmap=1), dict(swap="0"),
                                dict(layout=3), dict(contents=None), dict(share_level=1.0)])
def test_machine_arguments_of_the_wrong_type(kw):
    args = dict(memory=16 << 20)
    args.update(kw)
    with pytest.raises(TypeError):
        Machine(**args)


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy, pickle.dumps])
def test_machines_and_processes_refuse_to_be_copied(how):
    m, p, a = _proc()
    for obj in (m, p):
        with pytest.raises(TypeError, match="cannot be copied or pickled"):
            how(obj)
    m.check()
    assert p.read(a, 5) == b"hello"


def test_process_is_not_constructible():
    m = Machine(memory=8 << 20)
    with pytest.raises(TypeError, match="Machine.spawn"):
        Process(m, 99, 1)
    m.check()


def test_physical_is_read_only():
    m, p, a = _proc()
    with pytest.raises(ValueError):
        m.physical[p.translate(a)] = 0
    assert p.read(a, 5) == b"hello"


def test_vmas_are_named_tuples_that_unpack():
    m, p, a = _proc()
    (v,) = p.vmas
    start, end, prot, shared = v
    assert (v.start, v.end, v.prot, v.shared) == (start, end, prot, shared) \
        == (a, a + (64 << 10), "rw", False)


@pytest.mark.parametrize("layout", ["i386", "pae", "x86_64"])
def test_process_stats(layout):
    m = Machine(memory=32 << 20, layout=layout)
    p = m.spawn()
    a = p.mmap(4 << 20)
    p.touch(a, 1 << 20, write=True)
    p.touch(a + (1 << 20), 1 << 20)                 # read faults map the ZERO_PAGE
    s = p.stats()
    assert s["rss"] == 256 and s["vmas"] == 1
    levels = m.layout.levels
    assert s["page_tables"] == sum(s[f"page_tables_l{k}"] for k in range(1, levels))
    assert s["page_tables"] == m.stats()["page_tables"]
    c = p.fork()                                     # shares: reaches the same tables
    assert c.stats() == s


def test_table_views_are_read_only_and_follow_the_walk():
    m = Machine(memory=32 << 20, layout="x86_64")
    p = m.spawn()
    a = p.mmap(8192)
    p.write(a, b"x")
    for level, t, i, e in p.walk(a):
        view = m.table(t)
        assert view.dtype == np.uint64 and view.size == 512
        assert int(view[i]) == e and not view.flags.writeable
    with pytest.raises(ValueError):
        m.table(p.translate(a) >> 12)                # a data frame, not a table


def test_a_large_swap_area_is_not_reserved_up_front():
    # 0.1.0 reserved it as host memory and raised OSError
    m = Machine(memory=16 << 20, swap=32 << 30)
    p = m.spawn()
    a = p.mmap(1 << 20)
    p.write(a, b"y" * (1 << 20))
    assert m.reclaim(256) + m.reclaim(256) == 256
    assert p.read(a, 3) == b"yyy"
    m.check()


@pytest.mark.parametrize("method", ["rmap", "scan"])
def test_reclaim_with_every_allocation_failing_raises(method):
    m, p, a = _proc(swap=1 << 20)
    p.touch(a, 64 << 10, write=True)
    assert m.reclaim(4, method=method) == 4          # 12 of the 16 pages are left
    m.fail_after(0)
    with pytest.raises(OutOfMemory):
        m.reclaim(4, method=method)
    m.fail_after(None)
    m.check()
    assert p.read(a, 5) == b"hello"


CORRUPT = textwrap.dedent('''
    import sys
    from lazyvm import Machine, InvariantError
    layout = sys.argv[1]
    m = Machine(memory=16 << 20, layout=layout, fork_mode="copy")
    p = m.spawn(); a = p.mmap(1 << 20); p.write(a, b"x"); p.touch(a, 1 << 20)
    lvl, t, i, e = p.walk(a)[-1]
    phys = m._core.physical.view("uint32" if layout == "i386" else "uint64")
    per = 1024 if layout == "i386" else 512
    phys[t * per + i] = (0xFFFFF << 12) | 0x67      # a frame far outside memory
    out = []
    for op in ("check", "fork", "exit"):
        try:
            if op == "check":
                m.check()
            elif op == "fork":
                p.fork()
            else:
                p.exit()
            out.append(op + ":ok")
        except InvariantError:
            out.append(op + ":invariant")
    print(" ".join(out))
''')


@pytest.mark.parametrize("layout", ["i386", "x86_64"])
def test_a_corrupted_entry_is_an_invariant_error_never_a_crash(layout, tmp_path):
    script = tmp_path / "corrupt.py"
    script.write_text(CORRUPT)
    import os
    import lazyvm
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(lazyvm.__file__)))
    r = subprocess.run([sys.executable, str(script), layout], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["check:invariant", "fork:invariant", "exit:invariant"]
