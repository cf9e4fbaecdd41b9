"""Who pays: each process's predicted kernel time (p.stats()["kernel_ns"]) and the
machine's accounts add up exactly, in integers, to m.stats()["kernel_ns"]."""
import numpy as np
import pytest

from lazyvm import Machine, OutOfMemory
from lazyvm.costs import EVENTS, Profile, event_counts


def _profile(costs):
    return Profile(name="t", costs=dict(costs), uncertainty={e: 1.0 for e in EVENTS},
                   source={e: "test" for e in EVENTS})


INTEGER = _profile({e: float(i * 37 + 11) for i, e in enumerate(EVENTS)})
# Fractional costs: each share is a difference of rounded running totals.
FRACTIONAL = _profile({e: i * 37.3 + 0.35 for i, e in enumerate(EVENTS)})


def _balance(m):
    s = m.stats()
    live = sum(p.stats()["kernel_ns"] for p in m.processes)
    assert live + s["kernel_ns_exited"] + s["kernel_ns_machine"] == s["kernel_ns"]
    return s


def _priced(delta):
    return sum(int(INTEGER.costs[e]) * delta.get(e, 0) for e in EVENTS)


def _delta(m, op):
    before = event_counts(m.stats())
    op()
    after = event_counts(m.stats())
    return {e: after.get(e, 0) - before.get(e, 0) for e in EVENTS}


@pytest.mark.parametrize("profile", [INTEGER, FRACTIONAL, "linux-2.5.41"])
@pytest.mark.parametrize("mode, accounting", [("copy", "lazy"), ("share", "lazy"),
                                              ("share", "eager"), ("odf", "lazy"),
                                              ("odf", "eager")])
def test_accounts_add_up_to_the_machine_after_every_operation(profile, mode, accounting):
    m = Machine(memory=32 << 20, fork_mode=mode, swap=4 << 20, costs=profile,
                accounting=accounting)
    p = m.spawn()
    a = p.mmap(64 << 12)
    shm = p.mmap(8 << 12, shared=True)
    ops = [
        lambda: p.touch(a, 64 << 12, write=True),
        lambda: p.write(shm, b"s"),
        lambda: p.read(a, 3),
        lambda: p.fork(),
        lambda: m.processes[1].write(a, b"c"),
        lambda: m.processes[1].touch_pages(a + 4096 * np.arange(8), write=True),
        lambda: p.mprotect(a, 4 << 12, "r"),
        lambda: p.munmap(a + (60 << 12), 4 << 12),
        lambda: m.reclaim(16),
        lambda: p.read(a + (20 << 12), 1),
        lambda: m.processes[1].fork().exec(),
        lambda: m.processes[1].exit(),
        lambda: p.mmap(4096, addr=a),
        lambda: m.replay(np.array([(p.pid, 1, a + (10 << 12), 0), (p.pid, 2, 0, -1),
                                   (m._next_pid, 1, a + (10 << 12), 0)])),
    ]
    for op in ops:
        op()
        _balance(m)
    for q in m.processes:
        q.exit()
    s = _balance(m)
    assert s["kernel_ns_exited"] + s["kernel_ns_machine"] == s["kernel_ns"] > 0
    assert s["kernel_ns_machine"] > 0               # the reclaim


def test_eager_share_fork_pays_the_references_in_the_parent():
    """Eager accounting: the share fork's references are the parent's work; the child's
    later write takes none (its table privatize copies entries only)."""
    m = Machine(memory=32 << 20, fork_mode="share", accounting="eager", costs=INTEGER)
    p = m.spawn()
    a = p.mmap(1024 << 12)
    p.touch(a, 1024 << 12, write=True)
    before = p.stats()["kernel_ns"]
    box = {}
    d = _delta(m, lambda: box.setdefault("c", p.fork()))
    assert d["eager_refs"] == 1024
    assert p.stats()["kernel_ns"] - before == _priced(d)
    c = box["c"]
    d = _delta(m, lambda: c.write(a, b"x"))
    assert d["eager_refs"] == 0 and d["unshares"] == 1
    assert c.stats()["kernel_ns"] == _priced(d)


def test_fork_is_paid_by_the_parent_and_a_fault_by_the_faulting_process():
    """Exact integers: the parent's account grows by the fork's counted events times
    the costs, the child starts at 0, and the child's first write (a privatize and a
    copy-on-write under share) goes to the child alone."""
    m = Machine(memory=32 << 20, fork_mode="share", costs=INTEGER)
    p = m.spawn()
    a = p.mmap(256 << 12)
    p.touch(a, 256 << 12, write=True)
    before = p.stats()["kernel_ns"]
    box = {}
    d = _delta(m, lambda: box.setdefault("c", p.fork()))
    c = box["c"]
    assert d["forks_share"] == 1 and d["tables_copied"] == 0
    assert p.stats()["kernel_ns"] - before == _priced(d) > 0
    assert c.stats()["kernel_ns"] == 0
    p_before = p.stats()["kernel_ns"]
    d = _delta(m, lambda: c.write(a, b"x"))
    assert d["unshares"] == 1 and d["cow_copies"] == 1
    assert c.stats()["kernel_ns"] == _priced(d)
    assert p.stats()["kernel_ns"] == p_before
    # the parent's later write: a privatize that finds the table no longer shared
    d = _delta(m, lambda: p.write(a, b"y"))
    assert p.stats()["kernel_ns"] == p_before + _priced(d)


def test_exit_is_paid_by_the_exiting_process_and_kept_by_the_machine():
    m = Machine(memory=32 << 20, fork_mode="copy", costs=INTEGER)
    p = m.spawn()
    a = p.mmap(64 << 12)
    p.touch(a, 64 << 12, write=True)
    c = p.fork()
    mine = c.stats()["kernel_ns"]
    d = _delta(m, c.exit)
    assert d["exits"] == 1 and d["ptes_zapped"] == 64
    assert m.stats()["kernel_ns_exited"] == mine + _priced(d)
    _balance(m)


def test_reclaim_is_the_machines():
    m = Machine(memory=16 << 20, swap=1 << 20, costs=INTEGER)
    p = m.spawn()
    a = p.mmap(16 << 12)
    p.touch(a, 16 << 12, write=True)
    mine = p.stats()["kernel_ns"]
    d = _delta(m, lambda: m.reclaim(8))
    assert d["swap_outs"] == 8
    assert m.stats()["kernel_ns_machine"] == _priced(d)
    assert p.stats()["kernel_ns"] == mine


def test_work_done_before_an_error_is_still_paid():
    m = Machine(memory=8 << 20, costs=INTEGER)
    p = m.spawn()
    a = p.mmap(1024 << 12)
    m.fail_after(40)
    with pytest.raises(OutOfMemory):
        p.touch(a, 1024 << 12, write=True)
    m.fail_after(None)
    assert p.stats()["kernel_ns"] > 0
    _balance(m)
    m.check()


def test_no_costs_no_accounts():
    m = Machine(memory=8 << 20)
    p = m.spawn()
    p.write(p.mmap(4096), b"x")
    assert "kernel_ns" not in p.stats()
    assert not {"kernel_ns", "kernel_ns_exited", "kernel_ns_machine"} & set(m.stats())
