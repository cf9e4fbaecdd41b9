"""The host fit's arithmetic: the uncertainty of a minimum, floors, the VMAs priced
with and without an anon_vma, the wall/CPU stretch."""
import math
import statistics

import numpy as np
import pytest

from lazyvm import Machine
from lazyvm.costs import EVENTS, Profile
from lazyvm.measure import calibrate as cal


def test_uncertainty_of_a_minimum_is_that_of_the_low_tail():
    # ten forks at the floor and a long tail of preempted ones: the minimum is known
    # well, though the samples spread widely (a median's formula says otherwise)
    v = [100.0] * 10 + [200.0, 500.0, 1000.0, 3000.0, 8000.0, 20000.0]
    median_formula = 1.2533 * statistics.stdev(v) / math.sqrt(len(v))
    assert cal._se_min(v) < 1.0 < median_formula
    # a spread low tail gives a real uncertainty, and it is deterministic
    w = [100.0, 130.0, 160.0, 190.0, 220.0, 5000.0, 9000.0]
    assert 5.0 < cal._se_min(w) < 60.0
    assert cal._se_min(w) == cal._se_min(list(w))
    assert math.isnan(cal._se_min([5.0]))


def _fits(b4=1500.0, tbl=(2000.0, 1000.0)):
    k = 6
    ff = {"coef": np.array([7000.0, 300.0, 900.0, 60.0, b4, 5000.0]),
          "se": np.array([4000.0, 30.0, 150.0, 7.0, 150.0, 3000.0]), "pinned": []}
    ff["cov"] = np.diag(ff["se"] ** 2)
    ff["cov"][0, 3] = ff["cov"][3, 0] = -0.55 * 4000.0 * 7.0
    fe = {"coef": np.array([60000.0, 390.0, 650.0, 94.0, 590.0]),
          "se": np.array([30000.0, 30.0, 130.0, 7.0, 60.0]), "pinned": []}
    fe["cov"] = np.diag(fe["se"] ** 2)
    faults = {k2: (1000.0, 10.0) for k2 in ("zero_page", "cow", "cow_reuse", "shmem",
                                           "munmap_dense", "munmap_sparse")}
    faults["sparse"], faults["demand_zero"] = (tbl[0], 20.0), (tbl[1], 10.0)
    prim = (150.0, 5.0, 2.0, 0.05, {"chase_bytes": 1 << 28})
    return cal.host_costs(ff, fe, faults, (500000.0, 9000.0), prim, helper="cc",
                          regr_shapes=14)


def _profile(c, u, s, cov):
    return Profile(name="host", costs=c, uncertainty=u, source=s, covariance=cov)


def test_tables_copied_is_never_negative():
    c, u, s, cov, _ = _fits(b4=600.0, tbl=(2000.0, 1000.0))   # 600 - 1000 < 0
    assert c["tables_copied"] == 0.0
    assert "held at 0" in s["tables_copied"]
    assert c["tables_allocated"] == 1000.0
    _profile(c, u, s, cov)                  # loads: the covariance matches the errors
    c, u, s, cov, _ = _fits(b4=1500.0)
    assert c["tables_copied"] == 500.0 and "held at 0" not in s["tables_copied"]


def test_guard_vmas_are_priced_without_an_anon_vma():
    c, u, s, cov, _ = _fits()
    prof = _profile(c, u, s, cov)
    m = Machine(memory=16 << 20, fork_mode="copy", layout="x86_64", contents=False)
    p = m.spawn()
    for _ in range(100):                    # touched rw areas between PROT_NONE guards
        a = p.mmap(8 * 4096)
        p.touch(a, 8 * 4096, write=True)
        p.mmap(4096, prot="")
    p.mmap(4096, shared=True)               # shmem: no anon_vma either
    before = m.stats()
    p.fork()
    d = {e: m.stats()[e] - before[e] for e in EVENTS}
    assert d["fork_vmas"] == 201 and d["fork_anon_vmas"] == 100
    vma_ns = prof.kernel_ns({"fork_vmas": d["fork_vmas"],
                             "fork_anon_vmas": d["fork_anon_vmas"]})
    assert vma_ns == pytest.approx(201 * 300.0 + 100 * 900.0)
    # as an exit tears them down
    before = m.stats()
    p.exit()
    assert m.stats()["exit_anon_vmas"] - before["exit_anon_vmas"] == 100
    # predict_fork_ns prices the worker's own counts the same way
    assert cal.predict_fork_ns(prof, 201, 100, 0, 0) == pytest.approx(
        7000.0 + 201 * 300.0 + 100 * 900.0)


def test_host_profile_carries_the_fit_covariance():
    c, u, s, cov, _ = _fits()
    prof = _profile(c, u, s, cov)
    n = {"forks_copy": 1, "ptes_copied": 262144}
    indep = math.hypot(u["forks_copy"], 262144 * u["ptes_copied"])
    expect = math.sqrt(4000.0 ** 2 + (262144 * 7.0) ** 2
                       - 2 * 0.55 * 4000.0 * 262144 * 7.0)
    assert prof.uncertainty_ns(n) == pytest.approx(expect, rel=1e-6)
    assert prof.uncertainty_ns(n) < indep
    # forks_share is the same parameter as forks_copy: fully correlated
    assert prof.uncertainty_ns({"forks_copy": 1, "forks_share": 1}) == pytest.approx(
        2 * 4000.0)


def test_stretch_is_wall_over_the_fork_cost_of_large_forks():
    rows = [{"fork_ns": [2_000_000, 2_100_000], "fork_wall_ns": [3_000_000, 5_000_000]},
            {"fork_ns": [50_000], "fork_wall_ns": [900_000]}]       # too small: left out
    st = cal.stretch_of(rows)
    assert st["n"] == 2 and st["min"] == 1.5 and st["max"] == 2.5
    assert st["median"] == 2.0
