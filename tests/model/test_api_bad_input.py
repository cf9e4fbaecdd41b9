"""Bad arguments to every Machine and Process method: a ValueError or TypeError (never an
OverflowError or a numpy error), one line of message, the machine unchanged and
Machine.check() passing (DESIGN.md section 4)."""
import hashlib

import numpy as np
import pytest

from lazyvm import Machine, OutOfMemory

PAGE = 4096
HUGE = (2 ** 64, 2 ** 64 + PAGE, 2 ** 63, -2 ** 63, -PAGE, -1, 10 ** 30)


def state(m):
    """Everything an error must leave as it was."""
    s = m.stats()
    s.pop("faults", None)
    procs = [(q.pid, q.alive, q.pgd, list(q.vmas)) for q in m.processes]
    phys = hashlib.sha1(m.physical.tobytes()).hexdigest()
    return s, procs, phys, m._shm_live, list(m._shm_holes)


def machine(layout="i386"):
    m = Machine(memory=16 << 20, layout=layout, swap=1 << 20)
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"abc")
    s = p.mmap(2 * PAGE, shared=True)
    p.write(s, b"shared")
    p.fork()
    return m, p, a


def assert_one_error(call, types=(ValueError, TypeError)):
    with pytest.raises(Exception) as exc:
        call()
    assert type(exc.value) is not OverflowError and isinstance(exc.value, types), \
        f"{type(exc.value).__name__}: {exc.value}"
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return exc.value


CALLS = {
    "read addr": lambda p, a, v: p.read(v, 4),
    "read length": lambda p, a, v: p.read(a, v),
    "write addr": lambda p, a, v: p.write(v, b"x"),
    "touch addr": lambda p, a, v: p.touch(v, PAGE),
    "touch length": lambda p, a, v: p.touch(a, v),
    "touch_pages": lambda p, a, v: p.touch_pages([v]),
    "touch_pages object": lambda p, a, v: p.touch_pages(np.array([v], dtype=object)),
    "mmap length": lambda p, a, v: p.mmap(v),
    "mmap addr": lambda p, a, v: p.mmap(PAGE, addr=v),
    "mmap shared addr": lambda p, a, v: p.mmap(PAGE, shared=True, addr=v),
    "munmap addr": lambda p, a, v: p.munmap(v, PAGE),
    "munmap length": lambda p, a, v: p.munmap(a, v),
    "mprotect addr": lambda p, a, v: p.mprotect(v, PAGE, "r"),
    "mprotect length": lambda p, a, v: p.mprotect(a, v, "r"),
    "pde": lambda p, a, v: p.pde(v),
    "pte": lambda p, a, v: p.pte(v),
    "translate": lambda p, a, v: p.translate(v),
    "walk": lambda p, a, v: p.walk(v),
    "frame_count": lambda p, a, v: p.machine.frame_count(v),
    "frame_kind": lambda p, a, v: p.machine.frame_kind(v),
    "table": lambda p, a, v: p.machine.table(v),
    "rmap": lambda p, a, v: p.machine.rmap(v),
    "replay addr": lambda p, a, v: p.machine.replay(np.array([(p.pid, 0, v, 0)],
                                                             dtype=object).astype(
        np.uint64 if v >= 0 else np.int64) if -2**63 <= v < 2**64 else [(p.pid, 0, v, 0)]),
    "replay pid": lambda p, a, v: p.machine.replay(
        np.array([(v, 0, a, 0)], dtype=np.uint64 if v >= 0 else np.int64)
        if -2**63 <= v < 2**64 else [(v, 0, a, 0)]),
    "replay fork arg": lambda p, a, v: p.machine.replay(
        np.array([(p.pid, 2, 0, v)], dtype=np.uint64 if v >= 0 else np.int64)
        if -2**63 <= v < 2**64 else [(p.pid, 2, 0, v)]),
    "replay munmap length": lambda p, a, v: p.machine.replay(
        np.array([(p.pid, 4, a, v)], dtype=np.uint64 if v >= 0 else np.int64)
        if -2**63 <= v < 2**64 else [(p.pid, 4, a, v)]),
}


# n counts that are clamped when huge ("as many as there are") and refused when negative
COUNTS = {
    "reclaim": lambda m, v: m.reclaim(v),
    "fail_after": lambda m, v: m.fail_after(v),
}


@pytest.mark.parametrize("call", sorted(COUNTS))
def test_negative_counts_are_value_errors_and_huge_ones_clamped(call):
    m, p, a = machine()
    before = state(m)
    for v in HUGE:
        if v < 0:
            assert_one_error(lambda: COUNTS[call](m, v))
            m.check()
            assert state(m) == before, (call, v)
    COUNTS[call](m, 2 ** 64)
    m.fail_after(None)
    m.check()


@pytest.mark.parametrize("layout", ["i386", "x86_64"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_huge_and_negative_ints_are_value_errors(call, layout):
    m, p, a = machine(layout)
    before = state(m)
    for v in HUGE:
        if call == "replay fork arg" and v == -1:
            continue                      # -1: the machine's fork mode
        assert_one_error(lambda: CALLS[call](p, a, v))
        m.check()
        assert state(m) == before, (call, v)


def test_replay_reports_the_values_it_was_given():
    m, p, a = machine()
    ev = np.array([(2 ** 64 - 1, 0, a, 0)], dtype=np.uint64)
    err = assert_one_error(lambda: m.replay(ev))
    assert "-1" not in str(err)
    ev = np.array([(p.pid, 0, 2 ** 64 - PAGE, 0)], dtype=np.uint64)
    err = assert_one_error(lambda: m.replay(ev))
    assert "-0x1000" not in str(err)


@pytest.mark.parametrize("arg", [2, 7, -2])
def test_replay_fork_arg_must_be_minus_one_zero_or_one(arg):
    m, p, a = machine()
    before = state(m)
    err = assert_one_error(lambda: m.replay(np.array([(p.pid, 2, 0, arg)])))
    assert "fork" in str(err)
    m.check()
    assert state(m) == before


@pytest.mark.parametrize("layout", ["i386", "x86_64"])
def test_shared_mmap_over_a_mapping_that_cannot_be_backed_changes_nothing(layout):
    m, p, a = machine(layout)
    m.check()
    before = state(m)
    big = (1 << 46) if layout == "x86_64" else 0xBFFFF000
    base = 0 if layout == "x86_64" else 0x1000
    length = big - base if layout != "x86_64" else big

    def no_room(npages):
        raise MemoryError("host has no room")
    m._core = _Wrap(m._core, shm_alloc=no_room)
    try:
        with pytest.raises(OutOfMemory) as exc:
            p.mmap(length, shared=True, addr=base)
    finally:
        m._core = m._core._inner
    assert "\n" not in str(exc.value)
    m.check()
    assert state(m) == before


def test_shared_mmap_of_2_46_bytes_over_a_mapping_x86_64():
    m, p, a = machine("x86_64")
    before = state(m)
    try:
        got = p.mmap(1 << 46, shared=True, addr=a)
    except OutOfMemory as exc:
        assert "\n" not in str(exc)
        m.check()
        assert state(m) == before
    else:
        assert got == a
        m.check()


class _Wrap:
    """A stand-in for the compiled core that replaces some of its methods."""

    def __init__(self, inner, **methods):
        self._inner = inner
        self.__dict__.update(methods)

    def __getattr__(self, name):
        return getattr(self._inner, name)
