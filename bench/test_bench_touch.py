"""Bulk faulting: demand-zero writes (allocate a frame, map it RW; with rmap, a direct
slot), through p.touch over a range and p.touch_pages over an address array, and read
faults of missing pages (the ZERO_PAGE mapped read-only). Per page in extra_info.
Each round faults a fresh mapping (the previous one is unmapped untimed); frames come
back from the free list, so a write fault includes clearing the 4 KiB frame, as
clear_page does. Two warm-up rounds: the first takes never-used frames (not cleared,
never touched by the host), the second is the host's first touch of them."""

import numpy as np
import pytest

from benchlib import PAGE, build, per_item, release, rounds

PAGES = 65536


@pytest.fixture(scope="module", params=[False, True], ids=["normap", "rmap"])
def proc(request):
    m, p, a = build(1, request.param, memory=(PAGES + 16384) * PAGE)
    st = {"m": m, "p": p, "rmap": request.param, "a": None}
    yield st
    release(m)
    st.clear()


def _fresh(st):
    """Unmap the previous round's mapping and map a fresh one: returns its address."""
    if st["a"] is not None:
        st["p"].munmap(st["a"], PAGES * PAGE)
    st["a"] = st["p"].mmap(PAGES * PAGE, prot="rw")
    return st["a"]


@pytest.mark.parametrize("how", ["touch write", "touch_pages write", "touch read"])
def test_touch(benchmark, proc, how):
    p = proc["p"]
    benchmark.group = "fault %d pages" % PAGES
    benchmark.name = "sim %s%s" % (how, " (rmap)" if proc["rmap"] else "")
    idx = np.arange(PAGES, dtype=np.uint64) * np.uint64(PAGE)
    args = {}

    def setup():
        args["a"] = _fresh(proc)
        args["addrs"] = idx + np.uint64(args["a"])

    if how == "touch write":
        def target():
            p.touch(args["a"], PAGES * PAGE, write=True)
    elif how == "touch_pages write":
        def target():
            p.touch_pages(args["addrs"], write=True)
    else:
        def target():
            p.touch(args["a"], PAGES * PAGE, write=False)

    benchmark.pedantic(target, setup=setup, rounds=rounds(10), warmup_rounds=2)
    per_item(benchmark, PAGES)
