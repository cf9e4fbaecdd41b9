"""The VMA index (lazyvm.vma.VmaList): the same VMAs as a page-by-page model after any
sequence of changes, and mmap, munmap and mprotect costs that do not grow with the number
of VMAs (DESIGN.md section 5: a real process has up to 65,530)."""
import time

import numpy as np
from hypothesis import given, settings, strategies as st

from lazyvm import Machine
from lazyvm.vma import ShmObject, Vma, VmaList, vma_array

PAGE = 4096
NPAGES = 48


def model_vmas(pages):
    """The normalised VMA list of a {page: (prot, shm, pgoff)} map."""
    out = []
    for pg in sorted(pages):
        prot, shm, off = pages[pg]
        if out and out[-1][1] == pg and out[-1][2] == prot and out[-1][3] is shm and (
                shm is None or out[-1][4] + (pg - out[-1][0]) == off):
            out[-1][1] = pg + 1
        else:
            out.append([pg, pg + 1, prot, shm, off])
    return [(a * PAGE, b * PAGE, prot, shm, off if shm is not None else 0)
            for a, b, prot, shm, off in out]


ops = st.lists(st.tuples(st.sampled_from(["map", "unmap", "protect"]),
                         st.integers(0, NPAGES - 1), st.integers(1, 8),
                         st.sampled_from(["", "r", "rw"]), st.booleans()),
               max_size=40)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_splice_matches_a_page_model(seq):
    vl = VmaList()
    pages = {}
    for op, first, n, prot, shared in seq:
        last = min(first + n, NPAGES)
        start, end = first * PAGE, last * PAGE
        if op == "map":
            shm = ShmObject(1000 * first, last - first) if shared else None
            vl.splice(start, end, [Vma(start, end, prot, shm)])
            for pg in range(first, last):
                pages[pg] = (prot, shm, pg - first)
        elif op == "unmap":
            removed, _, _ = vl.splice(start, end)
            assert sum(v.end - v.start for v in removed) == PAGE * sum(
                pg in pages for pg in range(first, last))
            for pg in range(first, last):
                pages.pop(pg, None)
        else:
            parts, covered = vl.pieces(start, end)
            assert covered == all(pg in pages for pg in range(first, last))
            if not covered:
                continue
            new = [vl[i].piece(lo, hi) for i, lo, hi in parts]
            for v in new:
                v.prot = prot
            vl.splice(start, end, new)
            for pg in range(first, last):
                pages[pg] = (prot,) + pages[pg][1:]
        got = [(v.start, v.end, v.prot, v.shm, v.pgoff if v.shm is not None else 0)
               for v in vl]
        assert got == model_vmas(pages)
        assert vl.ends == [v.end for v in vl]
        assert np.array_equal(vl.arr, vma_array(vl.vmas)) and vl.arr.flags.c_contiguous
        copy = vl.copy()
        assert copy.vmas == vl.vmas and copy.arr is not vl.arr


def _per_op(run, batches):
    """The median seconds per operation of each batch run(i) does (i = 0, 1, ...)."""
    out = []
    for b in range(batches):
        t = time.perf_counter()
        k = run(b)
        out.append((time.perf_counter() - t) / k)
    return out


def test_mmap_munmap_mprotect_do_not_slow_down_with_many_vmas():
    n, batch = 24_000, 1000
    m = Machine(memory=16 << 20, layout="x86_64", contents=False)
    p = m.spawn()
    base = 0x10000000

    def mmap_batch(b):
        for i in range(b * batch, (b + 1) * batch):
            p.mmap(PAGE, addr=base + 2 * PAGE * i)
        return batch

    def first_fit_batch(b):
        for i in range(batch):
            p.mmap(PAGE, prot="r" if i % 2 else "rw")
        return batch

    def mprotect_batch(b):
        for i in range(b * batch, (b + 1) * batch, 2):
            p.mprotect(base + 2 * PAGE * i, PAGE, "r")
        return batch // 2

    times = _per_op(mmap_batch, n // batch)
    assert len(p.vmas) == n
    # with a list rebuilt on every change the last batch is ~20 times the first
    early, late = min(times[:3]), min(times[-3:])
    assert late < 4 * early + 20e-6, (early, late)
    times = _per_op(first_fit_batch, 6)
    assert max(times) < 4 * early + 100e-6, (early, times)
    times = _per_op(mprotect_batch, 6)
    assert max(times) < 4 * early + 100e-6, (early, times)
    t = time.perf_counter()
    for i in range(0, 2000, 2):
        p.munmap(base + 2 * PAGE * i, PAGE)
    munmap_per_op = (time.perf_counter() - t) / 1000
    assert munmap_per_op < 4 * early + 200e-6, (early, munmap_per_op)
    m.check()
