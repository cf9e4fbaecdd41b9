"""Every error of DESIGN.md §4: ValueError for bad input, SegmentationFault (changes
nothing), ProcessExited, the exception hierarchy, and OutOfMemory — both injected with
``m.fail_after(n)`` at every allocation of a fork, a write fault and a multi-page write,
and genuine, on a machine too small for its workload. rmap off and on.

Memory contents are read without faulting: through the page tables in ``m.physical``.
"""

import numpy as np
import pytest

from lazyvm import (InvariantError, LazyVMError, Machine, OutOfMemory, Process,
                    ProcessExited, SegmentationFault)

from vmhelpers import u32

PAGE = 4096
USER_TOP = 0xC0000000
SPAN = 4 << 20
BASE = 0x40000000
P, RW, PROTNONE = 0x001, 0x002, 0x080


# ----------------------------------------------------------------------------- helpers



def pfn(entry):
    return entry >> 12


def addrs(*a):
    return np.array(a, dtype=np.uint64)


def contents(m, swap=False):
    """{(pid, page address): bytes} of every mapped page with nonzero contents, of every
    live process, read through its page tables in physical memory (no faults). Swap
    entries (unreadable from here) are skipped when swap is true, else not expected."""
    out = {}
    phys = m.physical
    for q in m.processes:
        pgd = phys[q.pgd * PAGE:(q.pgd + 1) * PAGE].view("<u4")
        for start, end, _prot, _shared in q.vmas:
            a = start
            while a < end:
                pde = int(pgd[a >> 22])
                span_end = min(end, ((a >> 22) + 1) << 22)
                if pde & P:
                    t = pde >> 12
                    table = phys[t * PAGE:(t + 1) * PAGE].view("<u4")
                    i0, i1 = (a >> 12) & 1023, (((span_end - 1) >> 12) & 1023) + 1
                    sub = table[i0:i1]
                    assert swap or not (sub[(sub & (P | PROTNONE)) == 0]).any(), "swap entry"
                    for j in np.nonzero(sub & (P | PROTNONE))[0]:
                        f = int(sub[j]) >> 12
                        data = phys[f * PAGE:(f + 1) * PAGE]
                        if data.any():
                            page = (a & ~(SPAN - 1)) | ((i0 + int(j)) << 12)
                            out[(q.pid, page)] = data.tobytes()
                a = span_end
    return out


def entries(m):
    """{(pid, page address): pte} of every nonzero user PTE reached from a live pgd."""
    out = {}
    phys = m.physical
    for q in m.processes:
        pgd = phys[q.pgd * PAGE:(q.pgd + 1) * PAGE].view("<u4")
        for pdx in range(768):
            pde = int(pgd[pdx])
            if pde & P:
                t = pde >> 12
                table = phys[t * PAGE:(t + 1) * PAGE].view("<u4")
                for i in np.nonzero(table)[0]:
                    out[(q.pid, (pdx << 22) | (int(i) << 12))] = int(table[i])
    return out


def state(m):
    """Everything a SegmentationFault or ProcessExited must leave unchanged."""
    s = m.stats()
    s.pop("faults", None)      # the trap itself may be counted
    procs = [(q.pid, q.alive, q.pgd, list(q.vmas)) for q in m.processes]
    return s, procs, contents(m), entries(m)


def assert_unchanged(m, before):
    m.check()
    after = state(m)
    assert after[0] == before[0], {k: (before[0][k], after[0][k])
                                   for k in before[0] if before[0][k] != after[0].get(k)}
    assert after[1] == before[1]
    assert after[2] == before[2]
    assert after[3] == before[3]


def exit_all_and_check_free(m):
    for q in list(m.processes):
        q.exit()
    m.check()
    s = m.stats()
    assert m.processes == []
    assert s["frames_free"] == s["frames_total"] - m.boot_frames, "frames leaked"


def pattern(seed, n):
    """n nonzero bytes, different for every seed."""
    return ((np.arange(n, dtype=np.int64) * 13 + seed * 7) % 251 + 1).astype(np.uint8).tobytes()


# ----------------------------------------------------------------------------- hierarchy

def test_exception_hierarchy():
    for cls in (SegmentationFault, OutOfMemory, ProcessExited, InvariantError):
        assert issubclass(cls, LazyVMError), cls
        assert issubclass(cls, Exception)
    assert issubclass(LazyVMError, Exception)
    assert len({SegmentationFault, OutOfMemory, ProcessExited, InvariantError}) == 4
    for a in (SegmentationFault, OutOfMemory, ProcessExited, InvariantError):
        for b in (SegmentationFault, OutOfMemory, ProcessExited, InvariantError):
            if a is not b:
                assert not issubclass(a, b), (a, b)


def test_check_raises_invariant_error_on_corruption(rmap):
    """check() is not vacuous: a PTE cleared behind the core's back breaks invariant 1."""
    m = Machine(memory=4 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"x")
    m.check()
    # m.physical is read-only (issue 8); the test reaches behind it, to the core's array
    phys = m._core.physical
    t = pfn(p.pde(a))
    off = t * PAGE + 4 * ((a >> 12) & 1023)
    saved = phys[off:off + 4].copy()
    phys[off:off + 4] = 0
    with pytest.raises(InvariantError) as ei:
        m.check()
    assert isinstance(ei.value, LazyVMError)
    phys[off:off + 4] = saved
    m.check()


# ----------------------------------------------------------------------------- ValueError

@pytest.mark.parametrize("memory", [(4 << 20) + 1, (4 << 20) - 1, (4 << 20) + 2048,
                                    (4 << 30) + PAGE, 8 << 30])
def test_machine_memory_not_whole_pages_or_too_big(memory):
    with pytest.raises(ValueError):
        Machine(memory=memory, fork_mode="copy", rmap=False)


def test_machine_memory_exactly_4gib_is_allowed():
    m = Machine(memory=4 << 30, fork_mode="copy", rmap=False)
    assert m.stats()["frames_total"] == 1 << 20


BAD_MMAP = [
    dict(length=0),
    dict(length=1),
    dict(length=PAGE - 1),
    dict(length=PAGE + 1),
    dict(length=PAGE, addr=1),
    dict(length=PAGE, addr=BASE + 2048),
    dict(length=PAGE, addr=USER_TOP),
    dict(length=PAGE, addr=0xFFFFF000),
    dict(length=2 * PAGE, addr=USER_TOP - PAGE),           # ends above user space
    dict(length=0x2000, addr=0xFFFFF000),                  # wraps around 2**32
    dict(length=PAGE, addr=1 << 32),
    dict(length=PAGE, prot="z"),
    dict(length=PAGE, prot="rwz"),
    dict(length=PAGE, prot="read"),
    dict(length=PAGE, prot="rw "),
]


@pytest.mark.parametrize("kw", BAD_MMAP, ids=[str(k) for k in BAD_MMAP])
def test_mmap_value_errors(m, kw):
    p = m.spawn()
    p.mmap(PAGE, addr=BASE + SPAN)
    p.write(BASE + SPAN, b"keep")
    before = state(m)
    kw = dict(kw)
    length = kw.pop("length")
    with pytest.raises(ValueError):
        p.mmap(length, **kw)
    assert_unchanged(m, before)


BAD_RANGE = [
    (BASE, 0),
    (BASE, 1),
    (BASE, PAGE + 1),
    (BASE + 1, PAGE),
    (BASE + 2048, PAGE),
    (USER_TOP, PAGE),
    (USER_TOP - PAGE, 2 * PAGE),
    (0xFFFFF000, 0x2000),
    (1 << 32, PAGE),
]


@pytest.mark.parametrize("addr,length", BAD_RANGE, ids=[f"{a:#x}+{n:#x}" for a, n in BAD_RANGE])
def test_munmap_value_errors(m, addr, length):
    p = m.spawn()
    p.mmap(4 * PAGE, addr=BASE)
    p.write(BASE, b"keep")
    before = state(m)
    with pytest.raises(ValueError):
        p.munmap(addr, length)
    assert_unchanged(m, before)


@pytest.mark.parametrize("addr,length", BAD_RANGE, ids=[f"{a:#x}+{n:#x}" for a, n in BAD_RANGE])
def test_mprotect_value_errors(m, addr, length):
    p = m.spawn()
    p.mmap(4 * PAGE, addr=BASE)
    p.write(BASE, b"keep")
    before = state(m)
    with pytest.raises(ValueError):
        p.mprotect(addr, length, "r")
    assert_unchanged(m, before)


@pytest.mark.parametrize("prot", ["z", "rwz", "read", "RW ", "wr?", "rr-"])
def test_mprotect_unknown_protection(m, prot):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"keep")
    before = state(m)
    with pytest.raises(ValueError):
        p.mprotect(a, PAGE, prot)
    assert_unchanged(m, before)


def test_access_above_user_space_is_rejected(m):
    p = m.spawn()
    a = p.mmap(PAGE, addr=USER_TOP - PAGE)
    p.write(a, b"edge")
    before = state(m)
    with pytest.raises((ValueError, SegmentationFault)):
        p.read(USER_TOP, 4)
    with pytest.raises((ValueError, SegmentationFault)):
        p.write(USER_TOP, b"k")
    with pytest.raises((ValueError, SegmentationFault)):
        p.write(USER_TOP - 2, b"edge")                  # runs past the top
    with pytest.raises((ValueError, SegmentationFault)):
        p.touch(USER_TOP, PAGE, write=True)
    assert_unchanged(m, before)
    assert p.read(a, 4) == b"edge"


# ----------------------------------------------------------------------------- SegmentationFault

def _segv_setup(m):
    """A process with rw, r, '' and shared-r mappings, holes between them, some pages
    present, some absent."""
    p = m.spawn()
    rw = p.mmap(4 * PAGE, prot="rw", addr=BASE)             # all four pages present
    rw2 = p.mmap(2 * PAGE, prot="rw", addr=BASE + 8 * PAGE)  # absent, then ro follows
    ro = p.mmap(4 * PAGE, prot="r", addr=BASE + 10 * PAGE)
    none = p.mmap(4 * PAGE, prot="rw", addr=BASE + 16 * PAGE)
    shr = p.mmap(4 * PAGE, prot="rw", shared=True, addr=BASE + 24 * PAGE)
    rw3 = p.mmap(2 * PAGE, prot="rw", addr=BASE + 32 * PAGE)  # absent, then a hole
    far = p.mmap(PAGE, prot="rw", addr=BASE + SPAN)          # another table
    p.write(rw, pattern(1, 4 * PAGE))
    p.read(ro, 1)                                           # ro page 0: ZERO_PAGE
    p.write(none, pattern(2, PAGE))
    p.mprotect(none, 4 * PAGE, "")                          # page 0 PROTNONE
    p.write(shr, pattern(3, PAGE))
    p.mprotect(shr, 4 * PAGE, "r")
    p.write(far, b"far")
    return p, dict(rw=rw, rw2=rw2, ro=ro, none=none, shr=shr, rw3=rw3, far=far)


SEGV_CASES = {
    "read-hole": lambda p, v: p.read(v["rw"] + 4 * PAGE, 1),
    "write-hole": lambda p, v: p.write(v["rw"] + 5 * PAGE, b"x"),
    "read-nothing-mapped": lambda p, v: p.read(0x1000, 8),
    "write-below": lambda p, v: p.write(0, b"x"),
    "write-ro-zero-page": lambda p, v: p.write(v["ro"], b"x"),
    "write-ro-absent": lambda p, v: p.write(v["ro"] + 2 * PAGE, b"x"),
    "write-ro-shared-present": lambda p, v: p.write(v["shr"], b"x"),
    "write-ro-shared-absent": lambda p, v: p.write(v["shr"] + PAGE, b"x"),
    "read-none-protnone": lambda p, v: p.read(v["none"], 1),
    "read-none-absent": lambda p, v: p.read(v["none"] + PAGE, 1),
    "write-none-protnone": lambda p, v: p.write(v["none"], b"x"),
    "write-none-absent": lambda p, v: p.write(v["none"] + 3 * PAGE, b"x"),
    "write-present-into-hole": lambda p, v: p.write(v["rw"] + 3 * PAGE + 100, b"z" * PAGE),
    "write-absent-into-hole": lambda p, v: p.write(v["rw3"], b"12345678" * 1200),
    "write-absent-into-ro": lambda p, v: p.write(v["ro"] - 8, b"y" * 16),
    "write-present-into-ro": lambda p, v: p.write(v["rw2"], b"y" * (3 * PAGE)),
    "read-present-into-hole": lambda p, v: p.read(v["rw"] + 3 * PAGE, 2 * PAGE),
    "read-absent-into-hole": lambda p, v: p.read(v["rw3"] + PAGE, 2 * PAGE),
    "read-shared-into-hole": lambda p, v: p.read(v["shr"] + 3 * PAGE, PAGE + 1),
    "read-ro-into-hole": lambda p, v: p.read(v["ro"] + 4 * PAGE - 1, 2),
    "touch-write-ro": lambda p, v: p.touch(v["ro"], 4 * PAGE, write=True),
    "touch-read-none": lambda p, v: p.touch(v["none"], 4 * PAGE, write=False),
    "touch-past-end": lambda p, v: p.touch(v["rw"], 8 * PAGE, write=True),
    "touch-into-ro": lambda p, v: p.touch(v["rw2"], 4 * PAGE, write=True),
    "touch-hole": lambda p, v: p.touch(v["rw"] + 4 * PAGE, PAGE, write=False),
    "touch-pages-hole": lambda p, v: p.touch_pages(addrs(v["rw"], v["rw"] + 5 * PAGE),
                                                   write=True),
    "touch-pages-ro": lambda p, v: p.touch_pages(addrs(v["ro"] + PAGE), write=True),
    "touch-pages-none": lambda p, v: p.touch_pages(addrs(v["none"]), write=False),
}


@pytest.mark.parametrize("case", sorted(SEGV_CASES))
def test_segmentation_fault_changes_nothing(m, case):
    p, v = _segv_setup(m)
    before = state(m)
    with pytest.raises(SegmentationFault) as ei:
        SEGV_CASES[case](p, v)
    assert isinstance(ei.value, LazyVMError)
    assert_unchanged(m, before)
    # the process goes on working
    p.write(v["rw"] + 3 * PAGE, b"after")
    assert p.read(v["rw"] + 3 * PAGE, 5) == b"after"


def test_segmentation_fault_in_child_after_copy_fork(m):
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    p.write(a, b"shared frame")
    c = p.fork(mode="copy")
    c.mprotect(a, 2 * PAGE, "r")
    f = pfn(p.pte(a))
    before = state(m)
    with pytest.raises(SegmentationFault):
        c.write(a, b"no")
    assert_unchanged(m, before)
    assert m.frame_count(f) == 2
    p.write(a, b"yes")                         # parent copies: the child still maps f
    assert c.read(a, 12) == b"shared frame"


# ----------------------------------------------------------------------------- ProcessExited

EXITED_CALLS = {
    "mmap": lambda p, a: p.mmap(PAGE),
    "mmap-fixed": lambda p, a: p.mmap(PAGE, prot="r", shared=True, addr=a),
    "munmap": lambda p, a: p.munmap(a, PAGE),
    "mprotect": lambda p, a: p.mprotect(a, PAGE, "r"),
    "read": lambda p, a: p.read(a, 4),
    "write": lambda p, a: p.write(a, b"x"),
    "touch": lambda p, a: p.touch(a, PAGE, write=True),
    "touch-read": lambda p, a: p.touch(a, PAGE, write=False),
    "touch_pages": lambda p, a: p.touch_pages(addrs(a), write=True),
    "fork": lambda p, a: p.fork(),
    "fork-copy": lambda p, a: p.fork(mode="copy"),
    "fork-share": lambda p, a: p.fork(mode="share"),
    "exec": lambda p, a: p.exec(),
    "exit": lambda p, a: p.exit(),
    "pde": lambda p, a: p.pde(a),
    "pte": lambda p, a: p.pte(a),
    "translate": lambda p, a: p.translate(a),
}


@pytest.mark.parametrize("call", sorted(EXITED_CALLS))
def test_process_exited(m, call):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"data")
    c = p.fork(mode="copy")
    c.exit()
    assert not c.alive and p.alive
    assert [q.pid for q in m.processes] == [p.pid]
    before = state(m)
    with pytest.raises(ProcessExited) as ei:
        EXITED_CALLS[call](c, a)
    assert isinstance(ei.value, LazyVMError)
    assert_unchanged(m, before)
    assert not c.alive
    assert p.read(a, 4) == b"data"


def test_process_exited_after_parent_and_self_exit(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.exit()
    with pytest.raises(ProcessExited):
        p.write(a, b"x")
    with pytest.raises(ProcessExited):
        p.exit()
    assert p.pid is not None and p.alive is False
    assert m.processes == []


# ----------------------------------------------------------------------------- OutOfMemory (injected)

PRIV = BASE                       # 8 MiB private rw: page tables 256 and 257
SHR = BASE + 2 * SPAN             # 1 MiB shared rw: page table 258
RO = SHR + (1 << 20)              # 16 KiB private r: page table 258
EXTRA = BASE + 3 * SPAN           # 4 MiB private rw, untouched: no table yet
MAX_N = 300


def _oom_setup(rmap):
    """Parent p and an earlier copy-fork child c0, with private, shared, read-only,
    PROTNONE and ZERO_PAGE mappings over three page tables."""
    m = Machine(memory=32 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    assert p.mmap(8 << 20, prot="rw", addr=PRIV) == PRIV
    assert p.mmap(1 << 20, prot="rw", shared=True, addr=SHR) == SHR
    assert p.mmap(4 * PAGE, prot="r", addr=RO) == RO
    assert p.mmap(4 << 20, prot="rw", addr=EXTRA) == EXTRA
    p.write(PRIV, pattern(1, 3 * PAGE))
    p.write(PRIV + SPAN - 2 * PAGE, pattern(2, PAGE))
    p.read(PRIV + SPAN - PAGE, 1)                      # ZERO_PAGE
    p.write(PRIV + SPAN + PAGE, pattern(3, 100))       # page table 257
    p.write(SHR, pattern(4, 2 * PAGE))
    p.read(RO, 1)
    c0 = p.fork(mode="copy")
    c0.write(PRIV + PAGE, b"c0 private")               # diverged copy
    c0.write(SHR + 3 * PAGE, b"c0 shared late")        # object page touched by the child
    p.mprotect(PRIV + 2 * PAGE, PAGE, "")              # PROTNONE in the parent
    m.check()
    return m, p, c0


def _by_addr(cont, pid):
    return {a: d for (q, a), d in cont.items() if q == pid}


def _run_oom_loop(rmap, op, verify):
    """For n = 0, 1, 2, ...: fresh machine, fail the n-th allocation of op. After every
    OutOfMemory the machine is consistent, nothing leaked, no byte changed; op then
    succeeds. Stops at the first n where op succeeds. Returns the number of failures."""
    failures = 0
    for n in range(MAX_N):
        m, p, c0 = _oom_setup(rmap)
        s0 = m.stats()
        pids0 = sorted(q.pid for q in m.processes)
        cont0 = contents(m)
        m.fail_after(n)
        try:
            result = op(m, p, c0)
        except OutOfMemory as e:
            m.fail_after(None)
            assert isinstance(e, LazyVMError)
            failures += 1
            m.check()
            assert sorted(q.pid for q in m.processes) == pids0, f"n={n}: process appeared"
            assert contents(m) == cont0, f"n={n}: memory contents changed"
            verify.on_failure(m, s0, n)
            result = op(m, p, c0)                      # works once memory is there
            verify.on_success(m, p, c0, result, cont0)
            m.check()
            exit_all_and_check_free(m)
            continue
        m.fail_after(None)
        verify.on_success(m, p, c0, result, cont0)
        m.check()
        exit_all_and_check_free(m)
        return failures, n
    pytest.fail(f"operation never succeeded within {MAX_N} allocations")


class _ForkVerify:
    @staticmethod
    def on_failure(m, s0, n):
        s = m.stats()
        for k in ("frames_free", "page_tables", "pgds", "pte_chain_nodes"):
            assert s[k] == s0[k], f"n={n}: {k} {s0[k]} -> {s[k]}"

    @staticmethod
    def on_success(m, p, c0, c, cont0):
        assert c.alive and c.pid in [q.pid for q in m.processes]
        cont = contents(m)
        assert _by_addr(cont, c.pid) == _by_addr(cont, p.pid) == _by_addr(cont0, p.pid)
        assert c.vmas == p.vmas
        assert c.read(SHR + 3 * PAGE, 14) == b"c0 shared late"
        c.write(SHR, b"from c")
        assert p.read(SHR, 6) == b"from c" == c0.read(SHR, 6)
        c.write(PRIV, b"only c")
        assert p.read(PRIV, 6) == pattern(1, 6)


def test_oom_injected_copy_fork(rmap):
    failures, n = _run_oom_loop(rmap, lambda m, p, c0: p.fork(mode="copy"), _ForkVerify)
    assert failures == n >= 4            # at least the pgd and three page tables


class _WriteVerify:
    def __init__(self, who, addr, data):
        self.who, self.addr, self.data = who, addr, data

    def on_failure(self, m, s0, n):
        pass                              # pages faulted in before the failure may stay

    def on_success(self, m, p, c0, result, cont0):
        q, other = (p, c0) if self.who == "p" else (c0, p)
        assert q.read(self.addr, len(self.data)) == self.data
        cont = contents(m)
        # the other process does not see a private write, only a shared one
        before = _by_addr(cont0, other.pid)
        after = _by_addr(cont, other.pid)
        for a in set(before) | set(after):
            if SHR <= a < SHR + (1 << 20):
                continue
            assert before.get(a) == after.get(a), hex(a)


WRITE_FAULTS = {
    # one byte in a page with no page table yet: table, then frame
    "new-table": ("p", EXTRA + 5 * PAGE + 1, b"n"),
    # a page shared with c0 after the copy fork: copy-on-write copy
    "cow-copy": ("c0", PRIV + 2 * PAGE + 9, b"c"),
    # the parent's side of a page still shared with c0 (count 2): copy
    "cow-parent": ("p", PRIV + 7, b"P"),
    # ZERO_PAGE mapped read-only: copy from the zero page
    "cow-zero": ("p", PRIV + SPAN - PAGE + 3, b"z"),
    # a page never touched in a table that exists
    "demand-zero": ("c0", PRIV + 5 * PAGE, b"d"),
    # a shared object page never touched: the object allocates
    "shmem-new": ("c0", SHR + 10 * PAGE + 2, b"s"),
}


@pytest.mark.parametrize("case", sorted(WRITE_FAULTS))
def test_oom_injected_write_fault(rmap, case):
    who, addr, data = WRITE_FAULTS[case]

    def op(m, p, c0):
        (p if who == "p" else c0).write(addr, data)

    failures, n = _run_oom_loop(rmap, op, _WriteVerify(who, addr, data))
    assert failures == n >= 1


MULTI_WRITES = {
    # COW page, ZERO_PAGE, across a page-table boundary into an absent page, COW page
    "cross-table": ("c0", PRIV + SPAN - 2 * PAGE + 100, pattern(9, 3 * PAGE)),
    # from the private mapping's last (absent) pages into the shared one
    "private-into-shared": ("p", SHR - 2 * PAGE - 50, pattern(10, 3 * PAGE)),
    # many absent pages in a table that does not exist yet
    "new-table-many": ("c0", EXTRA + PAGE - 1, pattern(11, 6 * PAGE)),
    # the parent: a page shared with c0, then its ZERO_PAGE
    "parent-cow-zero": ("p", PRIV + SPAN - 2 * PAGE, pattern(12, 2 * PAGE)),
    # the parent: an absent page, a page shared with c0, its ZERO_PAGE
    "parent-absent-cow-zero": ("p", PRIV + SPAN - 3 * PAGE, pattern(13, 3 * PAGE)),
    # the parent: a page shared with c0 (copy), then one c0 copied away (reuse in place)
    "parent-copy-then-reuse": ("p", PRIV + PAGE - 10, b"R" * 20),
    # a present shared page, then a shared page the object has not got yet
    "shared-present-then-new": ("p", SHR + 2 * PAGE - 10, b"S" * 20),
    # c0's own writable copy, then a page c0 still shares with p
    "writable-then-cow": ("c0", PRIV + 2 * PAGE - 10, b"W" * 20),
}


@pytest.mark.parametrize("case", sorted(MULTI_WRITES))
def test_oom_injected_multi_page_write(rmap, case):
    who, addr, data = MULTI_WRITES[case]

    def op(m, p, c0):
        (p if who == "p" else c0).write(addr, data)

    failures, n = _run_oom_loop(rmap, op, _WriteVerify(who, addr, data))
    assert failures == n >= 1


def test_oom_injected_touch(rmap):
    def op(m, p, c0):
        c0.touch(PRIV + SPAN - 4 * PAGE, 8 * PAGE, write=True)

    class V(_WriteVerify):
        def on_success(self, m, p, c0, result, cont0):
            for i in range(8):
                assert c0.pte(PRIV + SPAN - 4 * PAGE + i * PAGE) & (P | RW) == P | RW

    failures, n = _run_oom_loop(rmap, op, V("c0", 0, b""))
    assert failures == n >= 2


def test_fail_after_none_turns_injection_off(rmap):
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(8 * PAGE)
    m.fail_after(0)
    with pytest.raises(OutOfMemory):
        p.write(a, b"x")
    m.fail_after(None)
    p.touch(a, 8 * PAGE, write=True)
    m.check()
    m.fail_after(3)
    b = p.mmap(8 * PAGE, addr=BASE + SPAN)
    p.write(b, b"1")                      # table + frame
    p.write(b + PAGE, b"2")               # frame
    with pytest.raises(OutOfMemory):
        p.write(b + 2 * PAGE, b"3")
    m.fail_after(None)
    assert p.read(b, 1) == b"1" and p.read(b + PAGE, 1) == b"2"
    assert p.read(b + 2 * PAGE, 1) == b"\0"
    m.check()
    exit_all_and_check_free(m)


# ----------------------------------------------------------------------------- OutOfMemory (genuine)

def test_genuinely_out_of_frames(rmap):
    m = Machine(memory=4 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(8 << 20)
    written = 0
    with pytest.raises(OutOfMemory) as ei:
        for i in range(2048):
            p.write(a + i * PAGE, pattern(i, 16))
            written += 1
    assert isinstance(ei.value, LazyVMError)
    assert written > 0
    m.check()
    assert m.stats()["frames_free"] == 0
    for i in (0, written // 2, written - 1):
        assert p.read(a + i * PAGE, 16) == pattern(i, 16)
    # a read fault needs no frame (ZERO_PAGE, table present)
    assert p.read(a + (written + 1) * PAGE, 4) == bytes(4)
    # fork needs a pgd: none left, no child appears
    pids = [q.pid for q in m.processes]
    with pytest.raises(OutOfMemory):
        p.fork(mode="copy")
    assert [q.pid for q in m.processes] == pids
    m.check()
    assert m.stats()["frames_free"] == 0
    # bulk faults fail the same way
    with pytest.raises(OutOfMemory):
        p.touch(a + written * PAGE, 16 * PAGE, write=True)
    m.check()
    # a multi-page write that needs a frame changes no byte, even on present pages
    last = a + (written - 1) * PAGE
    with pytest.raises(OutOfMemory):
        p.write(last + PAGE - 8, b"Q" * (PAGE + 16))
    assert p.read(last, 16) == pattern(written - 1, 16)
    assert p.read(last + PAGE - 8, 8) == bytes(8)
    m.check()
    # free some memory and go on
    p.munmap(a, 8 * PAGE)
    p.write(a + written * PAGE, b"again")
    assert p.read(a + written * PAGE, 5) == b"again"
    c = p.fork(mode="copy")
    assert c.read(a + written * PAGE, 5) == b"again"
    m.check()
    exit_all_and_check_free(m)


def test_genuine_oom_during_copy_fork_leaves_no_child(rmap):
    m = Machine(memory=4 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(128 << 20)
    # one page in each of many page tables: a copy fork needs that many tables again
    ntables = 32
    for i in range(ntables):
        p.write(a + i * SPAN, b"t")
    # eat frames until fewer than ntables remain
    filler = p.mmap(8 << 20)
    i = 0
    while m.stats()["frames_free"] > ntables // 2:
        p.write(filler + i * PAGE, b"f")
        i += 1
    s0 = m.stats()
    cont0 = contents(m)
    with pytest.raises(OutOfMemory):
        p.fork(mode="copy")
    m.check()
    s1 = m.stats()
    assert [q.pid for q in m.processes] == [p.pid]
    for k in ("frames_free", "page_tables", "pgds", "pte_chain_nodes"):
        assert s1[k] == s0[k], k
    assert contents(m) == cont0
    p.munmap(filler, 8 << 20)
    c = p.fork(mode="copy")
    assert all(c.read(a + i * SPAN, 1) == b"t" for i in range(ntables))
    m.check()
    exit_all_and_check_free(m)


def test_oom_injected_read_fault_needing_a_table(rmap):
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(PAGE)
    before = contents(m)
    free0 = m.stats()["frames_free"]
    m.fail_after(0)
    with pytest.raises(OutOfMemory):
        p.read(a, 1)
    m.fail_after(None)
    m.check()
    assert m.stats()["frames_free"] == free0 and contents(m) == before
    assert p.read(a, 1) == b"\0"
    exit_all_and_check_free(m)


def test_oom_injected_touch_pages(rmap):
    pages = addrs(EXTRA, EXTRA + 9 * PAGE, PRIV + SPAN - PAGE, PRIV + 5 * PAGE, SHR + 20 * PAGE)

    def op(m, p, c0):
        c0.touch_pages(pages, write=True)

    class V(_WriteVerify):
        def on_success(self, m, p, c0, result, cont0):
            for x in pages:
                assert c0.pte(int(x)) & (P | RW) == P | RW

    failures, n = _run_oom_loop(rmap, op, V("c0", 0, b""))
    assert failures == n >= 5


# ----------------------------------------------------------------------------- swap errors

def test_reclaim_without_swap_is_value_error(m):
    p = m.spawn()
    a = p.mmap(PAGE)
    p.write(a, b"x")
    before = state(m)
    with pytest.raises(ValueError):
        m.reclaim(1)
    assert_unchanged(m, before)


def test_swap_area_full_is_out_of_memory(rmap):
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap, swap=2 * PAGE)
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    for i in range(4):
        p.write(a + i * PAGE, bytes([i + 1]) * 4)
    assert m.reclaim(4) == 2
    m.check()
    assert m.stats()["swap_used"] == 2
    with pytest.raises(OutOfMemory):
        m.reclaim(1)
    m.check()
    for i in range(4):
        assert p.read(a + i * PAGE, 4) == bytes([i + 1]) * 4
    exit_all_and_check_free(m)
    assert m.stats()["swap_used"] == 0


@pytest.mark.parametrize("access", ["read", "write"])
def test_oom_injected_swap_in(rmap, access):
    for n in range(20):
        m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap, swap=1 << 20)
        p = m.spawn()
        a = p.mmap(8 << 20, addr=BASE)
        p.write(a + SPAN - PAGE, b"lo" * (PAGE // 2))
        p.write(a + SPAN, b"hi" * (PAGE // 2))
        c = p.fork(mode="copy")
        assert m.reclaim(2) == 2
        cont0 = contents(m, swap=True)
        s0 = m.stats()
        m.fail_after(n)
        try:
            if access == "read":
                got = c.read(a + SPAN - 4, 8)
            else:
                c.write(a + SPAN - 4, b"CROSSING")
        except OutOfMemory:
            m.fail_after(None)
            m.check()
            after = contents(m, swap=True)
            assert all(after.get(k) == v for k, v in cont0.items())
            assert m.stats()["swap_used"] <= s0["swap_used"]
            for q in (p, c):                      # swapped-out data is intact
                assert q.read(a + SPAN - 4, 8) == b"lolohihi"
            m.check()
            continue
        m.fail_after(None)
        m.check()
        if access == "read":
            assert got == b"lolohihi"
        else:
            assert c.read(a + SPAN - 4, 8) == b"CROSSING"
            assert p.read(a + SPAN - 4, 8) == b"lolohihi"
        exit_all_and_check_free(m)
        assert m.stats()["swap_used"] == 0
        assert n >= 2
        return
    pytest.fail("never succeeded")


def test_oom_injected_first_copy_fork_of_many_pages(rmap):
    """A first fork of 3000 private pages: with rmap every frame turns from a direct
    mapping into a chain, so the chain pool has to grow during the fork."""
    failures = 0
    for n in range(MAX_N):
        m = Machine(memory=64 << 20, fork_mode="copy", rmap=rmap)
        p = m.spawn()
        a = p.mmap(12 << 20, addr=BASE)
        p.touch(a, 3000 * PAGE, write=True)
        p.write(a + 1234 * PAGE, b"marker")
        s0 = m.stats()
        m.fail_after(n)
        try:
            c = p.fork(mode="copy")
        except OutOfMemory:
            m.fail_after(None)
            failures += 1
            m.check()
            s1 = m.stats()
            for k in ("frames_free", "page_tables", "pgds", "pte_chain_nodes",
                      "pte_chain_slots"):
                assert s1[k] == s0[k], (n, k, s0[k], s1[k])
            assert [q.pid for q in m.processes] == [p.pid]
            assert p.read(a + 1234 * PAGE, 6) == b"marker"
            continue
        m.fail_after(None)
        m.check()
        assert c.read(a + 1234 * PAGE, 6) == b"marker"
        exit_all_and_check_free(m)
        assert failures == n >= 4
        return
    pytest.fail("fork never succeeded")


def test_operations_that_need_no_frame_work_with_injection_at_zero(rmap):
    """munmap, mprotect, mmap, exit need no frame in copy mode: they must work when no
    allocation can succeed (a full machine must be able to free memory)."""
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(8 << 20, addr=BASE)
    p.touch(a, 64 * PAGE, write=True)
    p.touch(a + SPAN, 8 * PAGE, write=False)
    c = p.fork(mode="copy")
    g = c.fork(mode="copy")
    m.fail_after(0)
    p.mprotect(a, 8 * PAGE, "r")
    p.mprotect(a, 8 * PAGE, "")
    p.mprotect(a, 8 * PAGE, "rw")
    c.munmap(a + 3 * PAGE, 5 * PAGE)
    p.mmap(4 * PAGE, prot="r", addr=a + 16 * PAGE)
    assert p.read(a + 20 * PAGE, 4) == p.read(a + 20 * PAGE, 4)   # present, no fault
    g.exit()
    c.munmap(a, 8 << 20)
    m.fail_after(None)
    m.check()
    exit_all_and_check_free(m)


def test_exec_under_injection_keeps_process_consistent(rmap):
    m = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"before exec")
    m.fail_after(0)
    try:
        p.exec()
        execed = True
    except OutOfMemory:
        execed = False
    m.fail_after(None)
    m.check()
    assert p.alive
    if execed:
        assert p.vmas == []
    else:
        assert p.read(a, 11) == b"before exec"
    exit_all_and_check_free(m)


def test_fail_after_is_per_machine(rmap):
    m1 = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    m2 = Machine(memory=8 << 20, fork_mode="copy", rmap=rmap)
    p1, p2 = m1.spawn(), m2.spawn()
    a1, a2 = p1.mmap(PAGE), p2.mmap(PAGE)
    m1.fail_after(0)
    p2.write(a2, b"two")
    with pytest.raises(OutOfMemory):
        p1.write(a1, b"one")
    m1.fail_after(None)
    p1.write(a1, b"one")
    assert p1.read(a1, 3) == b"one" and p2.read(a2, 3) == b"two"
    m1.check()
    m2.check()


ZERO_OR_UNALIGNED = {
    "read-zero": lambda p, a: p.read(a, 0),
    "write-empty": lambda p, a: p.write(a, b""),
    "touch-zero": lambda p, a: p.touch(a, 0, write=True),
    "touch-unaligned-address": lambda p, a: p.touch(a + 1, PAGE, write=True),
    "touch-unaligned-length": lambda p, a: p.touch(a, PAGE + 1, write=False),
    "fork-unknown-mode": lambda p, a: p.fork(mode="bogus"),
}


@pytest.mark.parametrize("call", sorted(ZERO_OR_UNALIGNED))
def test_zero_length_and_unaligned_accesses(m, call):
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"keep")
    before = state(m)
    with pytest.raises(ValueError):
        ZERO_OR_UNALIGNED[call](p, a)
    assert_unchanged(m, before)


def test_machine_unknown_fork_mode():
    with pytest.raises(ValueError):
        Machine(memory=4 << 20, fork_mode="bogus", rmap=False)
