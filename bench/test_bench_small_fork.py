"""The case where sharing was reported slower (McCracken's 400 KB fork+exec+exit,
Andrew Morton's fork-heavy script load): a small process with data, heap and stack each
under its own page table forks; the child writes once under each table (so with
sharing it privatizes all three: 3 x 1,024 entries copied, against 12 PTEs copied by a
copy fork) and exits. One group, four policies."""

import pytest

from benchlib import release
from lazyvm import Machine
from lazyvm.workloads.builtin import CONFIGS, _image


@pytest.fixture(scope="module", params=list(CONFIGS))
def small(request):
    fork_mode, rmap = CONFIGS[request.param]
    m = Machine(memory=16 << 20, fork_mode=fork_mode, rmap=rmap)
    p = m.spawn()
    img = _image(p, 0, 4, 4, 4, heap_own_table=True)
    st = {"name": request.param, "m": m, "p": p,
          "targets": [img[r][0] for r in ("data", "heap", "stack")]}
    yield st
    release(m)
    st.clear()


def test_small_fork(benchmark, small):
    p, targets = small["p"], small["targets"]
    benchmark.group = "small_fork (3 tables, 12 pages)"
    benchmark.name = "sim %s" % small["name"]

    def once():
        c = p.fork()
        for t in targets:
            c.write(t, b"\x01")
        c.exit()

    benchmark(once)
