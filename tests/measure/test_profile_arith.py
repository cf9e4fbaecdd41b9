"""Profile arithmetic: averaged counts priced exactly, and the prediction's standard
error with the fitted costs' covariance."""
import math

import numpy as np
import pytest

from lazyvm.costs import EVENTS, Profile, ProfileError, event_covariance


def _profile(costs, unc=None, covariance=None):
    unc = unc or {}
    return Profile(name="t", costs={e: costs.get(e, 0.0) for e in EVENTS},
                   uncertainty={e: unc.get(e, 0.0) for e in EVENTS},
                   source={e: "test" for e in EVENTS}, covariance=covariance)


def test_averaged_counts_are_not_truncated():
    p = _profile({"ptes_copied": 100.0, "forks_copy": 1000.0})
    # a mean over iterations: 2.5 PTEs per iteration cost 250 ns, not int(2.5) * 100
    assert p.kernel_ns({"ptes_copied": 2.5}) == 250
    assert p.kernel_ns({"ptes_copied": 0.5, "forks_copy": 1}) == 1050
    assert p.kernel_ns_parts({"ptes_copied": 2.5}) == {"ptes_copied": 250.0}
    p = _profile({"ptes_copied": 100.0}, unc={"ptes_copied": 10.0})
    assert p.uncertainty_ns({"ptes_copied": 2.5}) == pytest.approx(25.0)


def _fit_cov(rho, s0, s1):
    return [[s0 * s0, rho * s0 * s1], [rho * s0 * s1, s1 * s1]]


def test_uncertainty_uses_the_covariance_of_fitted_costs():
    s0, s1, rho = 40000.0, 9.0, -0.55        # intercept and per-PTE, as a fork fit gives
    cov = event_covariance({"forks_copy": {0: 1.0}, "ptes_copied": {1: 1.0}},
                           _fit_cov(rho, s0, s1))
    p = _profile({"forks_copy": 30000.0, "ptes_copied": 55.0},
                 unc={"forks_copy": s0, "ptes_copied": s1}, covariance=cov)
    n = {"forks_copy": 1, "ptes_copied": 4096}
    expect = math.sqrt(s0 ** 2 + (4096 * s1) ** 2 + 2 * rho * s0 * 4096 * s1)
    independent = math.hypot(s0, 4096 * s1)
    assert p.uncertainty_ns(n) == pytest.approx(expect)
    assert p.uncertainty_ns(n) < 0.8 * independent
    # events outside the block stay independent
    p2 = _profile({"forks_copy": 30000.0, "ptes_copied": 55.0, "exits": 1.0},
                  unc={"forks_copy": s0, "ptes_copied": s1, "exits": 300.0},
                  covariance=cov)
    assert p2.uncertainty_ns(dict(n, exits=2)) == pytest.approx(
        math.sqrt(expect ** 2 + 600.0 ** 2))


def test_covariance_of_tied_and_summed_costs():
    # fork_vmas = b1 + b2, forks_share = forks_copy = b0: the loading matrix carries it
    cov = np.array([[4.0, 1.0, 0.0], [1.0, 9.0, -2.0], [0.0, -2.0, 16.0]])
    block = event_covariance({"forks_copy": {0: 1.0}, "forks_share": {0: 1.0},
                              "fork_vmas": {1: 1.0, 2: 1.0}}, cov)
    m = np.array(block["ns2"])
    assert m[0, 1] == m[0, 0] == 4.0
    assert m[2, 2] == pytest.approx(9 + 16 - 4)
    assert m[0, 2] == pytest.approx(1.0)
    p = _profile({}, unc={"forks_copy": 2.0, "forks_share": 2.0,
                          "fork_vmas": math.sqrt(21.0)}, covariance=block)
    # one copy fork and one share fork: the same parameter twice, fully correlated
    assert p.uncertainty_ns({"forks_copy": 1, "forks_share": 1}) == pytest.approx(4.0)


def test_covariance_round_trips_and_is_checked(tmp_path):
    cov = event_covariance({"forks_copy": {0: 1.0}, "ptes_copied": {1: 1.0}},
                           _fit_cov(-0.5, 10.0, 2.0))
    p = _profile({"forks_copy": 1.0}, unc={"forks_copy": 10.0, "ptes_copied": 2.0},
                 covariance=cov)
    path = str(tmp_path / "p.json")
    p.save(path)
    q = Profile.load(path)
    n = {"forks_copy": 1, "ptes_copied": 7}
    assert q.uncertainty_ns(n) == pytest.approx(p.uncertainty_ns(n))
    bad = {"events": ["forks_copy", "ptes_copied"], "ns2": [[100.0, 1.0], [2.0, 4.0]]}
    with pytest.raises(ProfileError, match="symmetric"):
        _profile({}, unc={"forks_copy": 10.0, "ptes_copied": 2.0}, covariance=bad)
    with pytest.raises(ProfileError, match="uncertainty"):
        _profile({}, unc={"forks_copy": 11.0, "ptes_copied": 2.0}, covariance=cov)
    with pytest.raises(ProfileError, match="unknown"):
        _profile({}, covariance={"events": ["nope"], "ns2": [[1.0]]})


def test_a_profile_file_from_before_the_anon_vma_events_still_loads(tmp_path):
    import json
    full = _profile({"fork_vmas": 1500.0, "exit_vmas": 900.0, "forks_copy": 1.0})
    d = full.to_dict()
    for e in ("fork_anon_vmas", "exit_anon_vmas"):
        del d["events"][e]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(d))
    old = Profile.load(str(path))
    assert old.costs["fork_anon_vmas"] == 0.0 and "absent" in old.source["fork_anon_vmas"]
    # priced as it was made: every VMA at fork_vmas, the anon_vma ones no more
    assert old.kernel_ns({"fork_vmas": 10, "fork_anon_vmas": 6}) == 15000
    del d["events"]["ptes_copied"]             # any other missing event is still an error
    path.write_text(json.dumps(d))
    with pytest.raises(ProfileError, match="ptes_copied"):
        Profile.load(str(path))
