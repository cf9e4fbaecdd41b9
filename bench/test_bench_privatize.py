"""Privatize (unshare) one full page table, beside a copy fork of the same 1,024 PTEs;
and the cost of pte_chain maintenance: a copy fork + exit in steady state with and
without rmap (the difference is one chain add and one chain remove per page).

Groups:
    privatize 1024 PTEs        a share-forked child's first write under a full table
                               (copy 1,024 entries, a reference and, with rmap, a chain
                               slot each; RW cleared in both tables; then the COW copy of
                               the one page written), beside a copy fork of 1,024 pages
    chain add/remove 65536     copy fork + exit of a 65,536-page process, rmap vs not
"""

import pytest

from benchlib import PAGE, build, per_item, release, rounds

TABLE = 1024


@pytest.fixture(scope="module", params=[False, True], ids=["normap", "rmap"])
def one_table(request):
    """A process with one full page table (1,024 touched pages, table-aligned)."""
    m, p, a = build(TABLE, request.param)
    assert a % (TABLE * PAGE) == 0
    st = {"m": m, "p": p, "a": a, "rmap": request.param}
    yield st
    release(m)
    st.clear()


def test_privatize_one_table(benchmark, one_table):
    p, a = one_table["p"], one_table["a"]
    m = one_table["m"]
    tag = "+rmap" if one_table["rmap"] else ""
    benchmark.group = "privatize %d PTEs" % TABLE
    benchmark.name = "sim privatize (share%s): child's first write" % tag
    holder = {}

    def setup():
        holder["c"] = p.fork(mode="share")

    def teardown():
        holder.pop("c").exit()

    calls = [0]

    def write():
        calls[0] += 1
        holder["c"].write(a + 5 * PAGE, b"\x01")

    before = m.stats()["unshares"]
    benchmark.pedantic(write, setup=setup, teardown=teardown, rounds=rounds(300),
                       warmup_rounds=1)
    if "c" in holder:
        holder.pop("c").exit()
    # Every round privatized exactly one table.
    assert m.stats()["unshares"] - before == calls[0]
    per_item(benchmark, TABLE, "pte")


def test_copy_fork_one_table(benchmark, one_table):
    p = one_table["p"]
    tag = "+rmap" if one_table["rmap"] else ""
    benchmark.group = "privatize %d PTEs" % TABLE
    benchmark.name = "sim copy%s fork of %d pages" % (tag, TABLE)
    holder = {}

    def reap():
        if "c" in holder:
            holder.pop("c").exit()

    def fork():
        holder["c"] = p.fork(mode="copy")

    benchmark.pedantic(fork, setup=reap, teardown=reap, rounds=rounds(300),
                       warmup_rounds=1)
    reap()
    per_item(benchmark, TABLE, "pte")


CHAIN_PAGES = 65536


@pytest.fixture(scope="module", params=[False, True], ids=["normap", "rmap"])
def chain_parent(request):
    m, p, a = build(CHAIN_PAGES, request.param)
    st = {"m": m, "p": p, "rmap": request.param}
    yield st
    release(m)
    st.clear()


def test_chain_add_remove(benchmark, chain_parent):
    """Steady state: the parent's frames already hold a chain node (the first fork made
    it and, as in 2.6.0, removal never collapses it back to PageDirect), so each round
    adds one slot and removes it again per page."""
    p = chain_parent["p"]
    benchmark.group = "chain add/remove %d pages" % CHAIN_PAGES
    benchmark.name = "sim copy%s fork+exit" % ("+rmap" if chain_parent["rmap"] else "")
    benchmark.pedantic(lambda: p.fork(mode="copy").exit(), rounds=rounds(20),
                       warmup_rounds=1)
    per_item(benchmark, CHAIN_PAGES)
