"""The host's own fork(): a private anonymous mapping (MAP_PRIVATE | MAP_ANONYMOUS; not
mmap.mmap(-1, n), which is MAP_SHARED and would not be copy-on-write), transparent huge
pages off (MADV_NOHUGEPAGE, so the kernel copies 4 KiB PTEs as the simulator does),
every page touched; then os.fork() with the child calling os._exit(0) at once.

In the same groups as the simulator's fork ("fork <N> pages", "fork+exit <N> pages").
The "fork 0 pages" group is the Python process alone: what every host fork also copies
(its RSS is in extra_info), to subtract when reading per-page costs.
"""

import os

import pytest

from lazyvm.measure.host import LinuxMapping

from benchlib import BIG, FULL, per_item, rounds

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _rss_kib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


@pytest.fixture(scope="module", params=[0, 1024, BIG, FULL], ids=lambda n: "%dpages" % n)
def mapping(request):
    with LinuxMapping(request.param):    # the same mapping `lazyvm compare` forks
        yield request.param


def _fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    return pid


def _rounds(pages):
    return rounds(100 if pages <= 1024 else 20 if pages == BIG else 10)


def test_linux_fork(benchmark, mapping):
    pages = mapping
    benchmark.group = "fork %d pages" % pages
    benchmark.name = "linux fork (host)"
    pids = []

    def reap():
        while pids:
            os.waitpid(pids.pop(), 0)

    benchmark.pedantic(lambda: pids.append(_fork()), setup=reap, teardown=reap,
                       rounds=_rounds(pages), warmup_rounds=1)
    reap()
    benchmark.extra_info["process_rss_kib"] = _rss_kib()
    if pages:
        per_item(benchmark, pages)


def test_linux_fork_exit_wait(benchmark, mapping):
    pages = mapping
    if pages == FULL:
        pytest.skip("fork+exit is measured at 1,024 and 262,144 pages")
    benchmark.group = "fork+exit %d pages" % pages
    benchmark.name = "linux fork+exit+wait (host)"

    def fork_wait():
        os.waitpid(_fork(), 0)

    benchmark.pedantic(fork_wait, rounds=_rounds(pages), warmup_rounds=1)
    benchmark.extra_info["process_rss_kib"] = _rss_kib()
    if pages:
        per_item(benchmark, pages)
