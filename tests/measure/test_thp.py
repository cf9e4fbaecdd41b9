"""Transparent huge pages on this machine's kernel: the measuring jobs, the costs taken
from them, and the kernel as an oracle for what lazyvm's THP model counts (page tables
after fork, which pages share a frame, which page a write copies)."""
import ctypes
import mmap
import os
import struct
import sys

import pytest

from lazyvm import Machine
from lazyvm.costs import EVENTS, Profile, load_profile
from lazyvm.measure import thp, thp_model
from lazyvm.workloads import snapshot

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="measures a Linux kernel")
MODE = thp.thp_mode() if sys.platform.startswith("linux") else None
needs_thp = pytest.mark.skipif(
    MODE not in ("always", "madvise"),
    reason=f"the kernel's transparent huge pages are {MODE!r} "
           f"({thp.THP_ENABLED}): MADV_HUGEPAGE maps no huge page here")
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="frame numbers in pagemap and "
                                "/proc/kpageflags need root")
HUGE, PAGE = 2 << 20, 4096
KPF_THP = 1 << 22                      # Documentation/admin-guide/mm/pagemap.rst


def _machine_thp(**kw):
    """A Machine with THP, or skip naming what the core lacks."""
    try:
        return Machine(layout="x86_64", thp="madvise", contents=False, **kw)
    except TypeError:
        pytest.skip("Machine(thp=...) is not accepted yet: the compiled core has no "
                    "transparent huge pages (DESIGN.md section 10)")


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert thp.thp_mode(str(f)) == "madvise"
    f.write_text("[never]\n")
    assert thp.thp_mode(str(f)) == "never"
    assert thp.thp_mode(str(tmp_path / "absent")) is None


def _measured(split_thp=(15000, 16000, 17000), split_4k=(2500, 2700, 3600),
              huge=(100000, 300000, 600000), huge_kb=65536):
    return {"thp_mode": "madvise", "kernel": "test", "results": [
        {"kind": "bare", "fork_cpu_ns": [100, 120]},
        {"kind": "fork", "size": 1 << 30, "thp": True, "huge_kb": 1 << 20,
         "parent_vm_pte_kb": 2116, "child_vm_pte_kb": [2116], "fork_cpu_ns": [600, 620],
         "fork_wall_ns": [700, 720]},
        {"kind": "split", "size": 64 << 20, "thp": True, "write_ns": list(split_thp),
         "huge_kb_before_after": [[huge_kb, 0]]},
        {"kind": "split", "size": 64 << 20, "thp": False, "write_ns": list(split_4k),
         "huge_kb_before_after": [[0, 0]]},
        {"kind": "fault", "size": 64 << 20, "huge_fault_ns": list(huge),
         "small_fault_ns": [1500], "huge_kb": [huge_kb]}]}


def test_thp_costs_are_the_measured_differences():
    costs = {"faults": 300.0, "tables_allocated": 700.0}
    out = thp.thp_costs(_measured(), costs)
    assert out["thp_splits"][0] == 15000 - 2500
    assert out["thp_faults"][0] == 100000 - 300 - 700
    assert all(src.startswith("measured on test") for _, _, src in out.values())
    with pytest.raises(ValueError, match="no huge page"):
        thp.thp_costs(_measured(huge_kb=0), costs)


def test_fork_prediction_counts_and_prices_exactly():
    """The predicted THP fork of 1 GiB prices lazyvm's own counts: 512 deposited tables,
    a PMD and a PUD table (allocated and copied) and one VMA with its anon_vma; 4 KiB:
    262,144 PTEs and
    512 leaf tables more."""
    _machine_thp(memory=64 << 20)
    prof = Profile(name="t", costs={e: float(i + 1) for i, e in enumerate(EVENTS)},
                   uncertainty={e: 0.0 for e in EVENTS}, source={e: "t" for e in EVENTS})
    ns, counts = thp_model.predicted_fork_ns(prof, 1 << 30)
    priced = {e: n for e, n in counts.items() if e in EVENTS}
    assert priced == {"fork_vmas": 1, "fork_anon_vmas": 1, "tables_allocated": 512 + 2,
                      "tables_copied": 2}
    assert ns == sum(prof.costs[e] * n for e, n in priced.items())
    ns4, c4 = thp_model.predicted_fork_ns(prof, 1 << 30, thp=False)
    assert c4["ptes_copied"] == 262144 and c4["tables_allocated"] == 512 + 2
    row = thp_model.validate_fork(_measured(), prof)[0]
    assert row["measured_ns"]["median"] == 610 - 110 and row["predicted_ns"] == ns


@linux_only
def test_calibrate_thp_needs_a_profile_first(tmp_path, capsys):
    from lazyvm.commands import main
    assert main(["calibrate", "--thp", "--out", str(tmp_path / "none.json")]) == 2
    assert "calibrate" in capsys.readouterr().err


@linux_only
@needs_thp
def test_calibrate_thp_adds_measured_costs_to_a_profile(tmp_path):
    path = tmp_path / "p.json"
    load_profile("linux-2.5.41").save(str(path))
    prof, rows = thp_model.calibrate_thp(str(path), quick=True)
    again = load_profile(str(path))
    assert again.source["thp_splits"].startswith("measured on")
    assert again.costs["thp_splits"] > 0
    assert again.source["thp_copies"].startswith("derived")
    assert {(r["size"], r["thp"]) for r in rows} == {(64 << 20, True), (64 << 20, False)}


# -- the kernel as oracle ---------------------------------------------------------------

@linux_only
@needs_thp
def test_kernel_fork_jobs_map_huge_pages_and_deposit_a_table_per_pmd():
    """The worker's fork of 64 MiB: with MADV_HUGEPAGE it is PMD-mapped whole, and the
    child's VmPTE equals the 4 KiB run's: fork deposits one PTE table per huge PMD."""
    res = thp.measure([{"kind": "fork", "size": 64 << 20, "thp": True, "repeats": 2},
                       {"kind": "fork", "size": 64 << 20, "thp": False, "repeats": 2}])
    huge, small = res["results"]
    assert huge["huge_kb"] == 64 << 10 and small["huge_kb"] == 0
    # 32 PTE tables (or deposits: without them THP would add none), and a PMD and a PUD
    # table where the mapping opened a new 1 GiB or 512 GiB region (mmap's placement
    # and the tables an earlier munmap left decide), and now and then a table for the
    # worker's own heap growing meanwhile
    for r in (huge, small):
        assert 0 <= r["parent_vm_pte_kb"] - r["vm_pte_kb_before"] - 4 * 32 <= 16
    for r in (huge, small):
        assert r["child_vm_pte_kb"] == [r["parent_vm_pte_kb"]] * 2


def _pagemap(pid, addr, n):
    """Frame numbers (None where not present) and the exclusive flags of n pages at addr,
    read as `lazyvm capture` reads them (lazyvm.workloads.snapshot)."""
    pm = snapshot._Pagemap(pid)
    try:
        entries, ok = pm.read([(addr, addr + n * PAGE)])
    finally:
        pm.close()
    assert ok
    pfn = [int(e) & snapshot.PM_PFN_MASK if int(e) & snapshot.PM_PRESENT else None
           for e in entries]
    excl = [bool(int(e) & snapshot.PM_EXCLUSIVE) for e in entries]
    return pfn, excl


def _kpageflags(pfns):
    out = []
    with open("/proc/kpageflags", "rb") as f:
        for pfn in pfns:
            f.seek(pfn * 8)
            out.append(struct.unpack("Q", f.read(8))[0])
    return out


@linux_only
@needs_thp
@needs_root
def test_kernel_shares_huge_frames_after_fork_and_a_write_copies_one_page():
    """pagemap and kpageflags of a real parent and child: after fork every page of a
    THP mapping maps the same frame in both, all flagged THP; a parent's write to one
    page splits its PMD and copies that 4 KiB page alone (Linux >= 5.8): its frame
    differs, the other 511 pages of the 2 MiB still share, still THP."""
    size = 8 * HUGE
    m, off = thp.mapping(size, True)
    base = thp.address_of(m) + off
    for o in range(off, off + size, PAGE):
        m[o] = 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.read(r, 1)
        os._exit(0)
    try:
        n = size // PAGE
        (parent, pex), (child, cex) = _pagemap(os.getpid(), base, n), _pagemap(pid, base, n)
        assert None not in parent and parent == child
        assert not any(pex) and not any(cex)     # every page mapped by both
        assert all(f & KPF_THP for f in _kpageflags(parent[::97]))
        m[off + 3 * PAGE] = 2                    # a write to page 3 of the first 2 MiB
        (parent2, pex2), (child2, _) = _pagemap(os.getpid(), base, n), _pagemap(pid, base, n)
        differ = [i for i in range(n) if parent2[i] != child2[i]]
        assert differ == [3]
        assert [i for i in range(n) if pex2[i]] == [3]     # the copy is the parent's alone
        assert child2 == child
        assert all(f & KPF_THP for f in _kpageflags(child2[:512:37]))
    finally:
        os.write(w, b"x")
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
        m.close()


@linux_only
@needs_thp
def test_lazyvm_thp_agrees_with_the_kernel_on_tables_and_copies():
    """The same experiment in lazyvm: child page tables equal the parent's (a deposit per
    huge PMD), every page shares its frame after fork, and the write copies one page."""
    mach = _machine_thp(memory=256 << 20, fork_mode="copy")
    p = mach.spawn()
    a = p.mmap(8 * HUGE + HUGE)
    a += (-a) % HUGE
    p.madvise(a, 8 * HUGE, "hugepage")
    p.touch(a, 8 * HUGE, write=True)
    s = mach.stats()
    assert s["thp_faults"] == 8 and s["tables_deposited"] == 8     # deposited now
    c = p.fork()
    assert c.stats()["page_tables"] == p.stats()["page_tables"]
    pages = [a + i * PAGE for i in range(8 * 512)]
    assert [p.translate(x) for x in pages] == [c.translate(x) for x in pages]
    p.touch(a + 3 * PAGE, PAGE, write=True)
    assert [i for i, x in enumerate(pages) if p.translate(x) != c.translate(x)] == [3]
    assert mach.stats()["thp_splits"] == 1
