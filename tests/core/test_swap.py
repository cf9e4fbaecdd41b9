"""Swap and reclaim (DESIGN.md §1 swap entries, §2 "Fault"/"rmap"/"Zap", §3 invariant 7,
§4; docs/API.md ``Machine.reclaim``).

- reclaim(n) swaps out at most n private anonymous frames; never the ZERO_PAGE, frames
  of shared mappings, page tables or page directories;
- a swapped-out PTE is a 2.4 i386 swap entry: bits 0 and 7 clear, type in bits 1-6,
  offset in bits 8-31;
- a read fault swaps in read-only; a write fault on an exclusive entry maps RW;
- swap entries copied by fork name one slot; the swap cache gives both the same frame
  until one writes;
- zap frees slots; methods "rmap" (try_to_unmap through the chains) and "scan" (the 2.4
  page-table walk); second chance on the A bit; errors.
"""

import pytest

from lazyvm import Machine, OutOfMemory

PAGE = 4096
P, RW, A, D, PROTNONE = 0x001, 0x002, 0x020, 0x040, 0x080

# (rmap, method): method None is the machine's default
METHODS = [(True, None), (True, "rmap"), (True, "scan"), (False, None), (False, "scan")]
METHOD_IDS = ["rmap-default", "rmap-rmap", "rmap-scan", "norm-default", "norm-scan"]


@pytest.fixture(params=METHODS, ids=METHOD_IDS)
def cfg(request):
    return request.param


# ----------------------------------------------------------------------------- helpers

def mk(rmap, memory=16 << 20, swap=4 << 20, **kw):
    kw.setdefault("fork_mode", "copy")
    return Machine(memory=memory, rmap=rmap, swap=swap, **kw)


def present(e):
    return bool(e & (P | PROTNONE))


def is_swap(e):
    """DESIGN §1: a non-present PTE that is not zero; bits 0 and 7 clear."""
    return e != 0 and not e & P and not e & PROTNONE


def swp_type(e):
    return (e >> 1) & 0x3F


def swp_offset(e):
    return e >> 8


def used(st):
    return st["frames_total"] - st["frames_free"]


def reclaim(m, n, method):
    got = m.reclaim(n) if method is None else m.reclaim(n, method=method)
    assert 0 <= got <= n
    return got


def reclaim_until(m, cond, method=None, n=64, rounds=8):
    """Call reclaim until cond() holds (the clock may need a second pass)."""
    total = 0
    for _ in range(rounds):
        if cond():
            break
        total += reclaim(m, n, method)
    assert cond(), "reclaim never reached the wanted state"
    return total


def pattern(i):
    return bytes((i * 7 + j) & 0xFF for j in range(256)) * 16


def all_freed(m):
    st = m.stats()
    assert used(st) == m.boot_frames
    assert st["swap_used"] == 0
    assert st["page_tables"] == 0 and st["pte_chain_nodes"] == 0
    m.check()


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("rmap", [False, True], ids=["no-rmap", "rmap"])
def test_reclaim_without_swap_raises_value_error(rmap):
    m = Machine(memory=16 << 20, rmap=rmap)
    p = m.spawn()
    a = p.mmap(4 * PAGE, prot="rw")
    p.write(a, b"x")
    with pytest.raises(ValueError):
        m.reclaim(1)
    m2 = Machine(memory=16 << 20, rmap=rmap, swap=0)
    with pytest.raises(ValueError):
        m2.reclaim(1)
    m.check()


def test_rmap_method_needs_rmap():
    m = mk(rmap=False)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, b"x")
    with pytest.raises(ValueError):
        m.reclaim(1, method="rmap")
    with pytest.raises(ValueError):
        m.reclaim(1, method="no-such-method")
    assert present(p.pte(a))
    m.check()


def test_full_swap_area_raises_out_of_memory_and_changes_nothing(cfg):
    rmap, method = cfg
    m = mk(rmap, swap=4 * PAGE)
    total = m.stats()["swap_total"]
    assert 1 <= total <= 4
    p = m.spawn()
    n = total + 3
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, pattern(i))
    for _ in range(8):
        if m.stats()["swap_used"] == total:
            break
        reclaim(m, n, method)
    st0 = m.stats()
    assert st0["swap_used"] == total
    assert st0["swap_outs"] == total
    ptes0 = [p.pte(a + i * PAGE) for i in range(n)]
    assert sum(is_swap(e) for e in ptes0) == total
    m.check()
    with pytest.raises(OutOfMemory):
        reclaim(m, 1, method)
    assert m.stats() == st0
    assert [p.pte(a + i * PAGE) for i in range(n)] == ptes0
    m.check()
    for i in range(n):
        assert p.read(a + i * PAGE, PAGE) == pattern(i)
    m.check()
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- what is taken

def test_reclaim_takes_only_private_anonymous_frames(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    priv = p.mmap(10 * PAGE, prot="rw")
    shared = p.mmap(4 * PAGE, prot="rw", shared=True)
    zero = p.mmap(4 * PAGE, prot="r")
    for i in range(10):
        p.write(priv + i * PAGE, pattern(i))
    for i in range(4):
        p.write(shared + i * PAGE, pattern(100 + i))
        assert p.read(zero + i * PAGE, 4) == bytes(4)
    zp = p.pte(zero) >> 12
    keep = [shared + i * PAGE for i in range(4)] + [zero + i * PAGE for i in range(4)]
    kept = {x: p.pte(x) for x in keep}
    pdes = {x: p.pde(x) for x in (priv, shared, zero)}
    st0 = m.stats()
    freed = 0
    for _ in range(8):
        freed += reclaim(m, 1000, method)
    st1 = m.stats()
    assert freed == 10
    assert reclaim(m, 1000, method) == 0                       # nothing left to take
    for i in range(10):
        e = p.pte(priv + i * PAGE)
        assert is_swap(e), hex(e)
    for x, e in kept.items():
        assert p.pte(x) == e                                   # shared and ZERO_PAGE kept
    assert p.pte(zero) >> 12 == zp
    assert {x: p.pde(x) for x in pdes} == pdes                 # page tables kept
    assert st1["page_tables"] == st0["page_tables"]
    assert st1["pgds"] == st0["pgds"]
    assert st1["swap_outs"] - st0["swap_outs"] == 10
    assert st1["swap_used"] == 10
    assert used(st0) - used(st1) == 10
    assert st1["frames_free"] - st0["frames_free"] == 10
    m.check()
    for i in range(10):
        assert p.read(priv + i * PAGE, PAGE) == pattern(i)
    for i in range(4):
        assert p.read(shared + i * PAGE, PAGE) == pattern(100 + i)
    m.check()
    p.exit()
    all_freed(m)


def test_reclaim_returns_at_most_n(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(20 * PAGE, prot="rw")
    for i in range(20):
        p.write(a + i * PAGE, b"%d" % i)
    total = 0
    for _ in range(12):
        st0 = m.stats()
        got = reclaim(m, 3, method)
        st1 = m.stats()
        assert st1["swap_outs"] - st0["swap_outs"] == got
        assert st1["frames_free"] - st0["frames_free"] == got
        total += got
        m.check()
    assert total == 20
    assert sum(is_swap(p.pte(a + i * PAGE)) for i in range(20)) == 20


def test_swapped_out_pte_is_a_swap_entry(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    n = 8
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, pattern(i))
    frames = [p.pte(a + i * PAGE) >> 12 for i in range(n)]
    pde = p.pde(a)
    reclaim_until(m, lambda: all(is_swap(p.pte(a + i * PAGE)) for i in range(n)), method)
    entries = [p.pte(a + i * PAGE) for i in range(n)]
    for e in entries:
        assert e & 0x1 == 0 and e & 0x80 == 0
        assert e == (swp_type(e) << 1) | (swp_offset(e) << 8)  # nothing else set
        assert swp_offset(e) < (1 << 24)
    assert len({swp_type(e) for e in entries}) == 1
    assert len({swp_offset(e) for e in entries}) == n          # one slot each
    for i in range(n):
        assert p.translate(a + i * PAGE) is None
        assert p.translate(a + i * PAGE + 123) is None
    assert p.pde(a) == pde
    st = m.stats()
    assert st["swap_outs"] == n and st["swap_used"] == n
    if rmap:
        for f in frames:
            assert m.rmap(f) == []
    m.check()


# ----------------------------------------------------------------------------- swap in

def test_read_fault_swaps_in_read_only(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, pattern(1))
    p.write(a + PAGE, pattern(2))
    reclaim_until(m, lambda: is_swap(p.pte(a)) and is_swap(p.pte(a + PAGE)), method)
    st0 = m.stats()
    assert p.read(a + 10, 100) == pattern(1)[10:110]
    st1 = m.stats()
    assert st1["swap_ins"] - st0["swap_ins"] == 1
    e = p.pte(a)
    assert e & P and not e & RW
    assert p.translate(a + 5) == ((e >> 12) << 12) + 5
    assert is_swap(p.pte(a + PAGE))                            # only the faulting page
    if rmap:
        assert [tuple(s) for s in m.rmap(e >> 12)] == [(p.pde(a) >> 12, (a >> 12) & 1023)]
    m.check()
    p.write(a, b"later")                                       # then write: RW
    assert p.pte(a) & RW
    assert p.read(a, PAGE) == b"later" + pattern(1)[5:]
    m.check()
    p.exit()
    all_freed(m)


def test_write_fault_on_an_exclusive_swap_entry_maps_rw(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(3))
    reclaim_until(m, lambda: is_swap(p.pte(a)), method)
    st0 = m.stats()
    p.write(a + 10, b"Z")
    st1 = m.stats()
    assert st1["swap_ins"] - st0["swap_ins"] == 1
    assert st1["cow_copies"] == st0["cow_copies"]
    e = p.pte(a)
    assert e & P and e & RW and e & D
    data = bytearray(pattern(3))
    data[10] = ord("Z")
    assert p.read(a, PAGE) == bytes(data)
    m.check()
    p.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- fork

def test_copy_fork_of_a_swap_entry_shares_the_slot_and_the_swap_cache(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(4))
    reclaim_until(m, lambda: is_swap(p.pte(a)), method)
    e = p.pte(a)
    st0 = m.stats()
    c = p.fork(mode="copy")
    st1 = m.stats()
    assert c.pte(a) == e                                       # one slot, count 2
    assert st1["swap_used"] == st0["swap_used"] == 1
    m.check()                                                  # invariant 7
    assert p.read(a, PAGE) == pattern(4)
    assert is_swap(c.pte(a)) and c.pte(a) == e
    m.check()
    assert c.read(a, PAGE) == pattern(4)
    assert p.translate(a) == c.translate(a)                    # the swap cache's frame
    f = p.pte(a) >> 12
    assert not p.pte(a) & RW and not c.pte(a) & RW
    m.check()
    st2 = m.stats()
    p.write(a, b"parent")                                      # now COW
    assert m.stats()["cow_copies"] - st2["cow_copies"] == 1
    assert p.pte(a) >> 12 != f and c.pte(a) >> 12 == f
    assert p.read(a, PAGE) == b"parent" + pattern(4)[6:]
    assert c.read(a, PAGE) == pattern(4)
    m.check()
    c.write(a, b"child")
    assert c.read(a, PAGE) == b"child" + pattern(4)[5:]
    assert p.read(a, PAGE) == b"parent" + pattern(4)[6:]
    m.check()
    p.exit()
    c.exit()
    all_freed(m)


def test_reclaim_after_a_copy_fork_turns_every_mapping_into_one_entry(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(5))
    f = p.pte(a) >> 12
    c = p.fork(mode="copy")
    d = p.fork(mode="copy")
    procs = (p, c, d)
    reclaim_until(m, lambda: all(is_swap(q.pte(a)) for q in procs), method)
    e = p.pte(a)
    assert c.pte(a) == e and d.pte(a) == e
    st = m.stats()
    assert st["swap_used"] == 1
    assert m.rmap(f) == []
    assert m.frame_count(f) in (0, 1)       # freed, or (scan) only in the swap cache
    if method == "rmap" or (method is None and rmap):
        assert m.frame_count(f) == 0
        assert st["pte_chain_nodes"] == 0
    m.check()
    for q in procs:
        assert q.read(a, PAGE) == pattern(5)
        m.check()
    assert p.translate(a) == c.translate(a) == d.translate(a)
    d.write(a, b"d")
    assert p.read(a, 1) == pattern(5)[:1] and d.read(a, 1) == b"d"
    m.check()
    for q in procs:
        q.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- zap

def test_zap_of_swap_entries_frees_their_slots(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(6 * PAGE, prot="rw")
    for i in range(6):
        p.write(a + i * PAGE, pattern(i))
    reclaim_until(m, lambda: all(is_swap(p.pte(a + i * PAGE)) for i in range(6)), method)
    assert m.stats()["swap_used"] == 6
    p.munmap(a, PAGE)
    assert m.stats()["swap_used"] == 5
    m.check()
    c = p.fork(mode="copy")
    assert m.stats()["swap_used"] == 5
    p.exit()
    assert m.stats()["swap_used"] == 5                         # c still names them
    m.check()
    c.munmap(a + PAGE, PAGE)
    assert m.stats()["swap_used"] == 4
    g = c.fork(mode="share")
    c.exec()
    assert m.stats()["swap_used"] == 4                         # g still names them
    m.check()
    for i in range(2, 6):
        assert g.read(a + i * PAGE, PAGE) == pattern(i)
    g.exit()
    c.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- methods

def test_reclaim_methods_count_their_work(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(8 * PAGE, prot="rw")
    for i in range(8):
        p.write(a + i * PAGE, pattern(i))
    c = p.fork(mode="copy")
    st0 = m.stats()
    reclaim_until(m, lambda: all(is_swap(q.pte(a + i * PAGE))
                                 for q in (p, c) for i in range(8)), method)
    st1 = m.stats()
    use_rmap = method == "rmap" or (method is None and rmap)
    if use_rmap:
        assert st1["reclaim_rmap_slots"] - st0["reclaim_rmap_slots"] >= 16
        assert st1["reclaim_scan_ptes"] == st0["reclaim_scan_ptes"]
        assert st1["reclaim_clock_scanned"] > st0["reclaim_clock_scanned"]
    else:
        assert st1["reclaim_scan_ptes"] - st0["reclaim_scan_ptes"] >= 16
        assert st1["reclaim_rmap_slots"] == st0["reclaim_rmap_slots"]
    assert st1["swap_outs"] - st0["swap_outs"] >= 8
    assert st1["swap_used"] == 8
    m.check()
    for q in (p, c):
        for i in range(8):
            assert q.read(a + i * PAGE, PAGE) == pattern(i)
    m.check()


def test_scan_and_rmap_methods_mix_on_one_machine():
    m = mk(rmap=True)
    p = m.spawn()
    a = p.mmap(32 * PAGE, prot="rw")
    for i in range(32):
        p.write(a + i * PAGE, pattern(i))
    c = p.fork(mode="copy")
    for i in range(0, 32, 3):
        c.write(a + i * PAGE, b"c%d" % i)
    for k in range(12):
        reclaim(m, 5, "scan" if k % 2 else "rmap")
        m.check()
    for i in range(32):
        assert p.read(a + i * PAGE, PAGE) == pattern(i)
        exp = (b"c%d" % i + pattern(i)[len(b"c%d" % i):]) if i % 3 == 0 else pattern(i)
        assert c.read(a + i * PAGE, PAGE) == exp
    m.check()
    p.exit()
    c.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- second chance

def _hot_and_cold(m, n):
    """A process whose n pages are mapped with A clear (copy fork, then the parent
    exits): returns (child, addresses)."""
    p = m.spawn()
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, pattern(i))
    c = p.fork(mode="copy")
    p.exit()
    pages = [a + i * PAGE for i in range(n)]
    for x in pages:
        assert present(c.pte(x)) and not c.pte(x) & A
    return c, pages


def test_second_chance_skips_a_referenced_frame_once(cfg):
    rmap, method = cfg
    m = mk(rmap)
    c, pages = _hot_and_cold(m, 16)
    hot, cold = pages[0::2], pages[1::2]
    for x in hot:
        c.write(x, b"H")                                       # exclusive: reuse, A set
        assert c.pte(x) & A
    for _ in range(8):
        left = [x for x in cold if not is_swap(c.pte(x))]
        if not left:
            break
        reclaim(m, len(left), method)
        for x in hot:
            assert present(c.pte(x)), "a referenced page went before the cold ones"
    assert all(is_swap(c.pte(x)) for x in cold)
    assert any(not c.pte(x) & A for x in hot), "no referenced page lost its A bit"
    m.check()
    # once skipped (A cleared), a page can go on the next pass
    reclaim_until(m, lambda: all(is_swap(c.pte(x)) for x in hot), method)
    for i, x in enumerate(pages):
        exp = pattern(i) if i % 2 else b"H" + pattern(i)[1:]
        assert c.read(x, PAGE) == exp
    m.check()


def test_second_chance_clears_every_a_bit_before_taking_one(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    n = 12
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, pattern(i))
        assert p.pte(a + i * PAGE) & A
    assert reclaim(m, 1, method) == 1
    swapped = [i for i in range(n) if is_swap(p.pte(a + i * PAGE))]
    assert len(swapped) == 1
    for i in range(n):
        if i not in swapped:
            e = p.pte(a + i * PAGE)
            assert present(e) and not e & A, "page %d kept A" % i
    m.check()
    for i in range(n):
        assert p.read(a + i * PAGE, PAGE) == pattern(i)
    m.check()


# ----------------------------------------------------------------------------- round trip

def test_many_pages_round_trip_through_swap(cfg):
    rmap, method = cfg
    m = mk(rmap, memory=16 << 20, swap=2 << 20)
    p = m.spawn()
    n = 96
    a = p.mmap(n * PAGE, prot="rw")
    for i in range(n):
        p.write(a + i * PAGE, pattern(i))
    c = p.fork(mode="copy")
    for i in range(0, n, 5):
        c.write(a + i * PAGE + 7, b"child")
    g = p.fork(mode="share")
    for i in range(0, n, 7):
        g.write(a + i * PAGE + 9, b"grand")
    procs = {"p": p, "c": c, "g": g}

    def expect(who, i):
        d = bytearray(pattern(i))
        if who == "c" and i % 5 == 0:
            d[7:12] = b"child"
        if who == "g" and i % 7 == 0:
            d[9:14] = b"grand"
        return bytes(d)

    for _ in range(10):
        reclaim(m, 64, method)
        m.check()
    assert m.stats()["swap_used"] > 0
    for who, q in procs.items():
        for i in range(n):
            assert q.read(a + i * PAGE, PAGE) == expect(who, i), (who, i)
    m.check()
    for _ in range(4):
        reclaim(m, 64, method)
    for who, q in procs.items():
        for i in range(n - 1, -1, -3):
            q.write(a + i * PAGE + 100, b"again")
    for who, q in procs.items():
        for i in range(n):
            exp = expect(who, i)
            if i % 3 == (n - 1) % 3:
                exp = exp[:100] + b"again" + exp[105:]
            assert q.read(a + i * PAGE, PAGE) == exp, (who, i)
    m.check()
    for q in procs.values():
        q.exit()
    all_freed(m)


# ----------------------------------------------------------------------------- OOM

def test_swap_in_out_of_memory_keeps_the_entry(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(9))
    reclaim_until(m, lambda: is_swap(p.pte(a)), method)
    e = p.pte(a)
    st0 = m.stats()
    m.fail_after(0)
    with pytest.raises(OutOfMemory):
        p.read(a, 1)
    m.fail_after(None)
    assert p.pte(a) == e
    st1 = m.stats()
    assert st1["swap_used"] == st0["swap_used"]
    assert used(st1) == used(st0)
    m.check()
    assert p.read(a, PAGE) == pattern(9)
    m.check()
    p.exit()
    all_freed(m)


def test_reclaim_under_fault_injection_is_clean(cfg):
    """Whatever allocation reclaim makes (swap slots) may fail: it then raises
    OutOfMemory or stops early; no content changes and check() passes."""
    rmap, method = cfg
    for k in range(0, 6):
        m = mk(rmap)
        p = m.spawn()
        n = 8
        a = p.mmap(n * PAGE, prot="rw")
        for i in range(n):
            p.write(a + i * PAGE, pattern(i))
        c = p.fork(mode="copy")
        m.fail_after(k)
        try:
            for _ in range(4):
                reclaim(m, n, method)
        except OutOfMemory:
            pass
        m.fail_after(None)
        m.check()
        for q in (p, c):
            for i in range(n):
                assert q.read(a + i * PAGE, PAGE) == pattern(i)
        m.check()
        p.exit()
        c.exit()
        all_freed(m)


# ----------------------------------------------------------------------------- swap cache

def test_a_page_dirtied_after_swap_in_is_written_again(cfg):
    """Swap out, swap in, modify, swap out again: the second swap-out must carry the
    new bytes (the swap-cache copy is stale once the page is written)."""
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, pattern(1))
    p.write(a + PAGE, pattern(2))
    both = lambda: is_swap(p.pte(a)) and is_swap(p.pte(a + PAGE))   # noqa: E731
    reclaim_until(m, both, method)
    assert p.read(a, 4) == pattern(1)[:4]                     # read: swap cache, RO
    p.write(a, b"NEW1")                                       # then dirty it
    p.write(a + PAGE, b"NEW2")                                # write fault on the entry
    m.check()
    reclaim_until(m, both, method)
    m.check()
    assert p.read(a, PAGE) == b"NEW1" + pattern(1)[4:]
    assert p.read(a + PAGE, PAGE) == b"NEW2" + pattern(2)[4:]
    p.write(a, b"NEW3")
    reclaim_until(m, both, method)
    assert p.read(a, PAGE) == b"NEW3" + pattern(1)[4:]
    m.check()
    p.exit()
    all_freed(m)


@pytest.mark.parametrize("fork_mode", ["copy", "share"])
def test_write_after_swap_in_does_not_leak_into_the_other_swap_entry(cfg, fork_mode):
    """P and C name one swap slot. P swaps in and writes before C swaps in: C must
    still read the old bytes (P's frame is not exclusive while C's entry names the
    slot, so P's write copies)."""
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, pattern(6))
    p.write(a + PAGE, pattern(7))
    reclaim_until(m, lambda: is_swap(p.pte(a)) and is_swap(p.pte(a + PAGE)), method)
    c = p.fork(mode=fork_mode)
    m.check()
    # page 0: read then write; page 1: write fault directly on the swap entry
    assert p.read(a, 4) == pattern(6)[:4]
    p.write(a, b"P-was-here")
    p.write(a + PAGE, b"P-too")
    m.check()
    assert c.read(a, PAGE) == pattern(6)
    assert c.read(a + PAGE, PAGE) == pattern(7)
    assert p.read(a, PAGE) == b"P-was-here" + pattern(6)[10:]
    assert p.read(a + PAGE, PAGE) == b"P-too" + pattern(7)[5:]
    m.check()
    c.write(a, b"C")
    assert p.read(a, 10) == b"P-was-here"
    m.check()
    p.exit()
    c.exit()
    all_freed(m)


def test_write_fault_on_a_swap_entry_whose_frame_another_process_maps(cfg):
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(8))
    reclaim_until(m, lambda: is_swap(p.pte(a)), method)
    c = p.fork(mode="copy")
    assert c.read(a, PAGE) == pattern(8)                      # c maps the cached frame
    f = c.pte(a) >> 12
    p.write(a, b"only p")                                     # must not write into f
    assert p.pte(a) >> 12 != f
    assert c.read(a, PAGE) == pattern(8)
    assert p.read(a, PAGE) == b"only p" + pattern(8)[6:]
    m.check()
    p.exit()
    c.exit()
    all_freed(m)


def test_reclaim_takes_read_only_and_protnone_private_frames(cfg):
    """A private anonymous frame stays one after mprotect: under "r" it is mapped
    read-only, under "" it is PROTNONE, "mapped for the kernel (counted, in its chain,
    copied at fork)" (DESIGN §2) and pte_present (KERNEL-NOTES). Both reclaim methods
    may take it; its content comes back once the protection allows access."""
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(2 * PAGE, prot="rw")
    p.write(a, pattern(1))
    p.write(a + PAGE, pattern(2))
    p.mprotect(a, PAGE, "r")
    p.mprotect(a + PAGE, PAGE, "")
    assert p.pte(a + PAGE) & PROTNONE
    reclaim_until(m, lambda: is_swap(p.pte(a)) and is_swap(p.pte(a + PAGE)), method)
    assert m.stats()["swap_used"] == 2
    m.check()
    assert p.read(a, PAGE) == pattern(1)
    p.mprotect(a + PAGE, PAGE, "r")
    assert p.read(a + PAGE, PAGE) == pattern(2)
    m.check()
    p.exit()
    all_freed(m)


def test_reclaim_of_a_frame_with_a_two_node_chain(cfg):
    """20 PTEs (two chain nodes with rmap) map one frame: reclaim turns all of them
    into the same entry (swap count 20), frees the nodes, and each process gets the
    content back."""
    rmap, method = cfg
    m = mk(rmap)
    p = m.spawn()
    a = p.mmap(PAGE, prot="rw")
    p.write(a, pattern(11))
    f = p.pte(a) >> 12
    procs = [p] + [p.fork(mode="copy") for _ in range(19)]
    if rmap:
        assert m.stats()["pte_chain_nodes"] == 2
    reclaim_until(m, lambda: all(is_swap(q.pte(a)) for q in procs), method)
    assert len({q.pte(a) for q in procs}) == 1
    st = m.stats()
    assert st["swap_used"] == 1
    assert st["pte_chain_nodes"] == 0 and m.rmap(f) == []
    m.check()
    for i, q in enumerate(procs):
        if i % 2:
            q.write(a + i, b"!")
        m.check()
    for i, q in enumerate(procs):
        exp = bytearray(pattern(11))
        if i % 2:
            exp[i] = ord("!")
        assert q.read(a, PAGE) == bytes(exp)
    for q in procs:
        q.exit()
    all_freed(m)
