"""Regression tests for bugs found in review, one test each, named for the bug."""
import threading

import numpy as np
import pytest

from lazyvm import Machine

SPAN = 4 << 20


def sparse_process(m, tables):
    """A process with one written page under each of `tables` page tables."""
    p = m.spawn()
    a = p.mmap(tables * SPAN)
    p.touch_pages(a + np.arange(tables) * SPAN, write=True)
    return p, a


def test_copy_fork_of_many_sparse_tables_reserves_only_the_nodes_it_can_use():
    # The worst-case reservation (1024 nodes a table) exceeded the pool's reservation on
    # a small machine, so the fork raised OutOfMemory with thousands of frames free.
    m = Machine(memory=16 << 20, rmap=True)
    p, a = sparse_process(m, 64)
    c = p.fork(mode="copy")
    m.check()
    assert m.stats()["pte_chain_nodes"] == 64
    c.exit()
    m.check()


def test_mprotect_privatizing_many_shared_tables_reserves_only_what_it_needs():
    m = Machine(memory=64 << 20, rmap=True)
    p, a = sparse_process(m, 300)
    c = p.fork(mode="share")
    c.mprotect(a, 300 * SPAN, "r")
    assert m.stats()["unshares"] == 300
    m.check()


def test_zero_page_read_fault_needs_no_chain_node():
    m = Machine(memory=16 << 20, rmap=True)
    p = m.spawn()
    a = p.mmap(SPAN)
    p.touch(a, SPAN)                      # 1024 ZERO_PAGE maps, no node
    assert m.stats()["pte_chain_nodes"] == 0
    m.check()


def test_privatize_counts_swap_entries_in_ptes_copied():
    m = Machine(memory=16 << 20, fork_mode="share", rmap=True, swap=4 << 20)
    p = m.spawn()
    a = p.mmap(4 * 4096)
    p.touch(a, 4 * 4096, write=True)
    c = p.fork()
    assert m.reclaim(4) == 4
    before = m.stats()["ptes_copied"]
    c.write(a + 3 * 4096, b"x")           # privatizes the table: 4 swap entries copied
    assert m.stats()["ptes_copied"] - before == 4
    m.check()


def test_huge_counts_are_clamped_not_overflow_errors():
    m = Machine(memory=8 << 20, swap=1 << 20)
    p = m.spawn()
    p.write(p.mmap(4096), b"x")
    m.reclaim(2 ** 40)
    m.fail_after(2 ** 70)
    p.write(p.mmap(4096), b"y")
    m.fail_after(None)
    m.check()


@pytest.mark.parametrize("data", [3, "text", 2.5, None])
def test_write_rejects_what_is_not_bytes_like(data):
    # DESIGN section 4 as amended: an argument of the wrong type is a TypeError
    m = Machine(memory=8 << 20)
    p = m.spawn()
    a = p.mmap(4096)
    with pytest.raises(TypeError):
        p.write(a, data)
    assert p.read(a, 4) == bytes(4)
    m.check()


def test_write_accepts_bytes_like_objects():
    m = Machine(memory=8 << 20)
    p = m.spawn()
    a = p.mmap(4096)
    p.write(a, bytearray(b"ab"))
    p.write(a + 2, memoryview(b"cd"))
    p.write(a + 4, np.array([1, 2], dtype=np.uint16))
    assert p.read(a, 8) == b"abcd\x01\x00\x02\x00"


def test_released_shared_objects_give_their_index_range_back():
    m = Machine(memory=16 << 20)
    p = m.spawn()
    for _ in range(8):
        a = p.mmap(1 << 30, shared=True)
        p.touch(a, 4096, write=True)
        p.munmap(a, 1 << 30)
    assert m._shm_holes == [(0, (1 << 30) // 4096)]      # one range, reused each time
    m.check()


def test_wx_means_rw():
    p = Machine(memory=8 << 20).spawn()
    a = p.mmap(4096, prot="wx")
    assert p.vmas[0][2] == "rw"
    p.write(a, b"x")


def test_two_threads_on_one_machine_are_serialized():
    # The core releases the GIL in its bulk loops; without the machine lock two threads
    # corrupted the frame allocator (a crash, or a broken invariant 6).
    m = Machine(memory=256 << 20, rmap=True)
    errors = []

    def work():
        try:
            p = m.spawn()
            for _ in range(15):
                a = p.mmap(32 << 20)
                p.touch(a, 32 << 20, write=True)
                c = p.fork()
                c.exit()
                p.munmap(a, 32 << 20)
        except Exception as e:          # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    m.check()
