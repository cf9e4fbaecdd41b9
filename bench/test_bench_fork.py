"""fork and exit of big address spaces: copy (2.4), copy+rmap (2.6.0), share (the seed),
share+rmap, beside a numpy baseline that streams the bytes a copy fork must touch.

Groups (one per size) read as ratios:
    fork <N> pages       the parent's fork() alone (the child is exited untimed)
    exit <N> pages       the exit of a just-forked child (zap), by how it was forked
    fork+exit <N> pages  both, back to back: what a fork-heavy load pays per child
The host's own fork of the same number of pages is in test_bench_linux.py under the
same group names.
"""

import numpy as np
import pytest

from benchlib import BIG, FULL, Forker, build, per_item, release, rounds

_RW, _A = 0x002, 0x020


@pytest.fixture(scope="module",
                params=[(1024, False), (1024, True), (BIG, False), (BIG, True),
                        (FULL, False), (FULL, True)],
                ids=lambda p: "%dpages-%s" % (p[0], "rmap" if p[1] else "normap"))
def parent(request):
    """A process with N touched pages (N = 786,432: all of user space, mapped at 0, on
    a 4 GiB machine). Built once per parameter; at most one is alive at a time."""
    pages, rmap = request.param
    m, p, a = build(pages, rmap, memory=(4 << 30) if pages == FULL else None)
    st = {"pages": pages, "rmap": rmap, "m": m, "p": p}
    yield st
    release(m)
    st.clear()


def _label(mode, rmap):
    return mode + ("+rmap" if rmap else "")


def _rounds_for(pages, mode):
    if mode == "share":
        return rounds(200)
    return rounds({1024: 200, BIG: 10, FULL: 5}[pages])


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_fork(benchmark, parent, mode):
    pages = parent["pages"]
    benchmark.group = "fork %d pages" % pages
    benchmark.name = "sim %s" % _label(mode, parent["rmap"])
    f = Forker(parent["p"], mode)
    benchmark.pedantic(f.fork, setup=f.setup, teardown=lambda: f.reap(),
                       rounds=_rounds_for(pages, mode), warmup_rounds=1)
    f.reap()
    per_item(benchmark, pages)


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_exit_of_forked_child(benchmark, parent, mode):
    """Zap: exit of a child just forked with `mode` (copy: every PTE dropped, and its
    chain slot with rmap; share: one use dropped per table)."""
    pages = parent["pages"]
    if pages == 1024:
        pytest.skip("exit is measured on the big shapes")
    benchmark.group = "exit %d pages" % pages
    benchmark.name = "sim exit of %s child" % _label(mode, parent["rmap"])
    p = parent["p"]
    holder = {}

    def setup():
        holder["c"] = p.fork(mode=mode)

    benchmark.pedantic(lambda: holder["c"].exit(), setup=setup,
                       rounds=_rounds_for(pages, mode), warmup_rounds=1)
    per_item(benchmark, pages)


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_fork_exit(benchmark, parent, mode):
    pages = parent["pages"]
    if pages == FULL:
        pytest.skip("fork+exit is measured at 1,024 and 262,144 pages")
    benchmark.group = "fork+exit %d pages" % pages
    benchmark.name = "sim %s" % _label(mode, parent["rmap"])
    p = parent["p"]

    def fork_exit():
        p.fork(mode=mode).exit()

    benchmark.pedantic(fork_exit, rounds=_rounds_for(pages, mode), warmup_rounds=1)
    per_item(benchmark, pages)


# --------------------------------------------------------------------------------------
# numpy baseline: the memory traffic of copy_page_range, with nothing else.


class _Stream:
    """What a copy fork of `pages` PTEs must touch at the least: read every parent PTE
    word and write it back with RW clear, write the child's word (A clear), and
    increment a uint32 count per frame (a gather and a scatter; the frames are
    distinct, so a fancy-index increment is exact, and much faster than np.add.at)."""

    def __init__(self, pages):
        pfn = np.arange(1, pages + 1, dtype=np.uint32)
        self.parent = (pfn << np.uint32(12)) | np.uint32(0x067)
        self.child = np.empty_like(self.parent)
        self.pfn = np.empty_like(self.parent)
        self.counts = np.ones(pages + 1, dtype=np.uint32)

    def ptes(self):
        np.bitwise_and(self.parent, np.uint32(~_RW & 0xFFFFFFFF), out=self.parent)
        np.bitwise_and(self.parent, np.uint32(~_A & 0xFFFFFFFF), out=self.child)

    def ptes_and_counts(self):
        self.ptes()
        np.right_shift(self.parent, np.uint32(12), out=self.pfn)
        self.counts[self.pfn] += np.uint32(1)


@pytest.mark.parametrize("pages", [1024, BIG, FULL])
@pytest.mark.parametrize("what", ["ptes", "ptes_and_counts"])
def test_numpy_stream(benchmark, pages, what):
    benchmark.group = "fork %d pages" % pages
    benchmark.name = "numpy stream: %s" % what.replace("_", " ")
    s = _Stream(pages)
    benchmark.pedantic(getattr(s, what), rounds=rounds(50 if pages > 1024 else 500),
                       warmup_rounds=1)
    per_item(benchmark, pages)
