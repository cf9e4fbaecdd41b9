"""Helpers of the lazyvm micro-benchmarks.

Big machines are built once per module (module-scoped, parametrized fixtures: pytest
finishes one parameter before building the next, so at most one 3 GiB machine is alive).
Operations that change the state they measure (fork, exit, privatize, reclaim) use
``benchmark.pedantic`` with a setup (and teardown) that restores the state around each
round, so every round measures the same thing; one warm-up round reaches the steady
state (e.g. with rmap, the first fork turns every PageDirect frame into a chain).

LAZYVM_BENCH_ROUNDS scales the number of rounds of the pedantic benchmarks (default 1.0).
"""

import gc
import os

from lazyvm import Machine

PAGE = 4096
USER_TOP = 0xC0000000
FULL = 786432                        # the whole of user space, 3 GiB
BIG = 262144                         # 1 GiB

_SCALE = float(os.environ.get("LAZYVM_BENCH_ROUNDS", "1"))


def rounds(n):
    """Rounds for a pedantic benchmark: `n` scaled by LAZYVM_BENCH_ROUNDS, at least 2."""
    return max(2, int(round(n * _SCALE)))


def memory_for(pages):
    """Simulated memory for a process of `pages` touched pages, its forks' page tables
    and some room: whole MiB, at most 4 GiB."""
    frames = pages + 4 * (pages // 1024 + 8) + 8192
    return min(-(-frames // 256) << 20, 4 << 30)


def build(pages, rmap, fork_mode="copy", swap=0, memory=None):
    """A machine and one process with `pages` touched (written) pages in one private
    mapping: at address 0 when it is the whole user space, else where mmap puts it.
    Returns (machine, process, address)."""
    m = Machine(memory=memory or memory_for(pages), fork_mode=fork_mode, rmap=rmap,
                swap=swap)
    p = m.spawn()
    if pages == FULL:
        a = p.mmap(pages * PAGE, prot="rw", addr=0)
    else:
        a = p.mmap(pages * PAGE, prot="rw")
    p.touch(a, pages * PAGE, write=True)
    return m, p, a


def release(*objs):
    """Exit every live process of the machines given and collect, so that the host
    memory of a big machine is returned before the next one is built."""
    for m in objs:
        for p in list(m.processes):
            p.exit()
    gc.collect()


class Forker:
    """A fork benchmark target whose setup exits the previous round's child, so every
    round forks the same parent in the same state and only fork() is timed."""

    def __init__(self, parent, mode):
        self.parent = parent
        self.mode = mode
        self.child = None

    def setup(self):
        self.reap()

    def fork(self):
        self.child = self.parent.fork(mode=self.mode)

    def reap(self):
        if self.child is not None and self.child.alive:
            self.child.exit()
        self.child = None


def per_item(benchmark, n, what="page"):
    """Record the per-item cost (ns per page / slot / ...) of a finished benchmark in
    its extra_info, from the minimum and the mean of its rounds."""
    benchmark.extra_info["items"] = n
    try:
        st = benchmark.stats.stats
        benchmark.extra_info["ns_per_%s_min" % what] = round(st.min * 1e9 / n, 2)
        benchmark.extra_info["ns_per_%s_mean" % what] = round(st.mean * 1e9 / n, 2)
    except AttributeError:       # --benchmark-disable: nothing was measured
        pass
