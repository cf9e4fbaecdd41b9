"""A machine no one refers to is freed at once, without the cyclic garbage collector:
Machine and Process make no reference cycle."""
import gc
import weakref

import numpy as np
import pytest

from lazyvm import Machine, SegmentationFault


def _build():
    m = Machine(memory=64 << 20, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(1 << 20)
    p.write(a, b"x" * 4096)
    s = p.mmap(1 << 16, shared=True)
    p.write(s, b"shared")
    c = p.fork()
    c.write(a, b"y")
    g = c.fork(mode="copy")
    g.exit()
    m.replay(np.array([(p.pid, 1, a, 0), (p.pid, 2, 0, 1)]))
    with pytest.raises(SegmentationFault):
        p.read(0x1000, 1)
    m.check()
    return m, p, c


@pytest.fixture
def no_gc():
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    yield
    if was:
        gc.enable()


def test_dropped_machine_is_freed_without_the_cyclic_collector(no_gc):
    m, p, c = _build()
    freed = []
    weakref.finalize(m, freed.append, True)
    del m, p, c
    assert freed == [True]


def test_a_process_keeps_its_machine_alive(no_gc):
    m, p, c = _build()
    freed = []
    weakref.finalize(m, freed.append, True)
    del m
    assert freed == []
    assert p.read(p.vmas[0].start, 1) in (b"x", b"y")
    p.machine.check()
    del p
    assert freed == []                 # c still holds it
    c.machine.check()
    del c
    assert freed == [True]


def test_processes_are_the_same_objects_while_held():
    m = Machine(memory=16 << 20)
    p = m.spawn()
    c = p.fork()
    assert m.processes[0] is p and m.processes[1] is c
    pid = c.pid
    del c
    again = m.processes[1]
    assert again.pid == pid and again.alive
    again.exit()
    assert not again.alive and [q.pid for q in m.processes] == [p.pid]


def test_many_dropped_machines_do_not_pile_up(no_gc):
    freed = []
    for _ in range(8):
        m = Machine(memory=64 << 20)
        p = m.spawn()
        p.touch(p.mmap(32 << 20), 32 << 20, write=True)
        weakref.finalize(m, freed.append, 1)
        del m, p
    assert len(freed) == 8
