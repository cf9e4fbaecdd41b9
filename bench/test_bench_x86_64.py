"""x86_64 (4 levels, 64-bit entries) beside i386, and a 50 GiB machine without contents.

Groups:
    layouts fork 262144 pages   copy fork of 1 GiB (at a 1 GiB boundary on x86_64) in
                                each layout; target: x86_64 <= 1.6x i386
    x86_64 1 GiB share/copy     share+rmap against copy+rmap (target >= 100x)
    x86_64 50 GiB               13,107,200 pages, contents=False, rmap off: copy fork
                                beside numpy streaming the same PTE bytes (target <= 2x),
                                share fork at level 1 (<= 1 ms) and level 2 (<= 0.1 ms)
    per-call                    single-page read, write, translate
"""
import resource

import numpy as np
import pytest

from benchlib import Forker, per_item, release, rounds
from lazyvm import Machine

PAGE = 4096
GIB_PAGES = 262144
BIG50 = 13107200


def _parent(layout, pages, rmap, fork_mode="copy", share_level=1, contents=True):
    frames = pages + 4 * (pages // 512 + 16) + 8192
    m = Machine(memory=frames * PAGE, layout=layout, rmap=rmap, fork_mode=fork_mode,
                share_level=share_level, contents=contents)
    p = m.spawn()
    addr = (1 << 30) if layout == "x86_64" else None
    a = p.mmap(pages * PAGE, addr=addr)
    p.touch(a, pages * PAGE, write=True)
    return m, p


@pytest.mark.parametrize("layout", ["i386", "pae", "x86_64"])
def test_layouts_copy_fork(benchmark, layout):
    m, p = _parent(layout, GIB_PAGES, False)
    benchmark.group = "layouts fork 262144 pages"
    benchmark.name = f"copy {layout}"
    f = Forker(p, "copy")
    benchmark.pedantic(f.fork, setup=f.setup, teardown=lambda: f.reap(), rounds=rounds(10),
                       warmup_rounds=1)
    f.reap()
    per_item(benchmark, GIB_PAGES)
    release(m)


@pytest.mark.parametrize("mode", ["copy", "share"])
def test_x86_64_gib_rmap(benchmark, mode):
    m, p = _parent("x86_64", GIB_PAGES, True)
    benchmark.group = "x86_64 1 GiB share/copy"
    benchmark.name = f"{mode}+rmap"
    f = Forker(p, mode)
    benchmark.pedantic(f.fork, setup=f.setup, teardown=lambda: f.reap(),
                       rounds=rounds(10 if mode == "copy" else 200), warmup_rounds=1)
    f.reap()
    release(m)


@pytest.fixture(scope="module")
def big50():
    m, p = _parent("x86_64", BIG50, False, contents=False)
    yield m, p
    release(m)


def test_50gib_copy_fork(benchmark, big50):
    m, p = big50
    benchmark.group = "x86_64 50 GiB"
    benchmark.name = "copy (rmap off)"
    f = Forker(p, "copy")
    benchmark.pedantic(f.fork, setup=f.setup, teardown=lambda: f.reap(), rounds=rounds(3),
                       warmup_rounds=1)
    f.reap()
    per_item(benchmark, BIG50)
    benchmark.extra_info["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def test_50gib_numpy_stream(benchmark):
    """What a copy fork must at least move: read and write every 8-byte PTE, and bump
    one 4-byte count per page."""
    src = np.ones(BIG50, dtype=np.uint64)
    dst = np.empty_like(src)
    counts = np.zeros(BIG50, dtype=np.int32)

    def stream():
        np.bitwise_and(src, ~np.uint64(2), out=dst)
        counts.__iadd__(1)

    benchmark.group = "x86_64 50 GiB"
    benchmark.name = "numpy streaming the PTE bytes"
    benchmark.pedantic(stream, rounds=rounds(3), warmup_rounds=1)
    per_item(benchmark, BIG50)


@pytest.mark.parametrize("level", [1, 2])
def test_50gib_share_fork(benchmark, level):
    m, p = _parent("x86_64", BIG50, False, fork_mode="share", share_level=level,
                   contents=False)
    benchmark.group = "x86_64 50 GiB"
    benchmark.name = f"share level {level}"
    f = Forker(p, "share")
    benchmark.pedantic(f.fork, setup=f.setup, teardown=lambda: f.reap(), rounds=rounds(50),
                       warmup_rounds=1)
    f.reap()
    release(m)


@pytest.fixture(scope="module")
def small():
    m = Machine(memory=16 << 20)
    p = m.spawn()
    a = p.mmap(1 << 20)
    p.write(a, b"x")
    return p, a


@pytest.mark.parametrize("op", ["read", "write", "translate", "pte"])
def test_per_call(benchmark, small, op):
    p, a = small
    benchmark.group = "per-call"
    benchmark.name = op
    fn = {"read": lambda: p.read(a, 1), "write": lambda: p.write(a, b"x"),
          "translate": lambda: p.translate(a), "pte": lambda: p.pte(a)}[op]
    benchmark(fn)
