"""Reclaim of 65,536 frames (all of a process's private pages) to swap: through the
rmap (2.6.0: a clock over frames, unmapping each through its chain) and through the
page-table scan (2.4 swap_out, on a machine without rmap), with the frames mapped by
1 process, by 8 processes (a parent and 7 copy-forked children: 8 PTE slots per frame)
and by 8 processes that share page tables (share fork: one slot stands for all 8).

The state is rebuilt before every round, untimed: the children exit, the parent
touches every page (swapping it back in: the swap slots are freed and the frames are
its own again) and forks its children anew. One warm-up round first, so the timed
rounds write to swap slots and frames the host has already backed (on a fresh numpy
array the host's own first-touch page faults would dominate)."""

import pytest

from benchlib import PAGE, build, per_item, release, rounds

PAGES = 65536

CASES = [("rmap", 1, None), ("rmap", 8, "copy"), ("rmap", 8, "share"),
         ("scan", 1, None), ("scan", 8, "copy"), ("scan", 8, "share")]


@pytest.mark.parametrize("method,procs,fork_mode", CASES,
                         ids=["%s-%dproc%s" % (m, n, "-" + f if f else "")
                              for m, n, f in CASES])
def test_reclaim(benchmark, method, procs, fork_mode):
    benchmark.group = "reclaim %d pages" % PAGES
    benchmark.name = "sim %s, %d process%s%s" % (
        method, procs, "es" if procs > 1 else "",
        " (%s fork)" % fork_mode if fork_mode else "")
    m, p, a = build(PAGES, rmap=(method == "rmap"), fork_mode=fork_mode or "copy",
                    swap=(PAGES + 1024) * PAGE)
    kids = []
    freed = []

    def setup():
        while kids:
            kids.pop().exit()
        p.touch(a, PAGES * PAGE, write=True)
        kids.extend(p.fork() for _ in range(procs - 1))

    def target():
        freed.append(m.reclaim(PAGES, method=method))

    try:
        benchmark.pedantic(target, setup=setup, rounds=rounds(5), warmup_rounds=1)
        st = m.stats()
        benchmark.extra_info["freed_last_round"] = freed[-1]
        benchmark.extra_info["swap_outs_total"] = st["swap_outs"]
        benchmark.extra_info["rmap_slots_visited_total"] = st["reclaim_rmap_slots"]
        benchmark.extra_info["scan_ptes_visited_total"] = st["reclaim_scan_ptes"]
        benchmark.extra_info["clock_frames_total"] = st["reclaim_clock_scanned"]
        m.check()
        per_item(benchmark, PAGES)
    finally:
        release(m)
