"""Figures compared across configurations are per iteration: a configuration that ran
more iterations (a wide spread buys a loop more) compares like with like, and the
predicted figures are the same from run to run."""

import pytest

from lazyvm import costs
from lazyvm.report.run import format_results
from lazyvm.workloads.builtin import predicted, run_workload

EVENTS = costs.EVENTS


def _profile():
    return costs.load_profile("linux-2.5.41")


def test_predict_configs_compares_per_iteration_not_totals():
    work = {"forks_copy": 1, "ptes_copied": 1000, "tables_copied": 1}
    copy = {k: 10 * v for k, v in work.items()}
    copy["iterations"] = 10
    copy_rmap = {k: 40 * v for k, v in work.items()}
    copy_rmap["iterations"] = 40
    out = costs.predict_configs({"copy": copy, "copy+rmap": copy_rmap}, _profile())
    assert out["copy+rmap"]["ratio_vs_copy"] == pytest.approx(1.0)
    assert out["copy+rmap"]["kernel_ns_per_iteration"] == pytest.approx(
        out["copy"]["kernel_ns_per_iteration"])
    # The totals still say what was run.
    assert out["copy+rmap"]["kernel_ns"] == pytest.approx(4 * out["copy"]["kernel_ns"], rel=1e-9)


def _merge(*results):
    out = dict(results[0])
    out["configs"] = {}
    for r in results:
        out["configs"].update(r["configs"])
    return out


def test_ratios_do_not_move_when_configurations_ran_different_iteration_counts():
    kw = dict(pages=256, settle=False)
    even = run_workload("fork_exit", configs=["copy", "copy+rmap", "share"],
                        iterations=4, **kw)
    uneven = _merge(run_workload("fork_exit", configs=["copy"], iterations=4, **kw),
                    run_workload("fork_exit", configs=["copy+rmap"], iterations=16, **kw),
                    run_workload("fork_exit", configs=["share"], iterations=9, **kw))
    assert uneven["configs"]["copy+rmap"]["iterations"] == 16
    prof = _profile()
    a = predicted(even, prof)["configs"]
    b = predicted(uneven, prof)["configs"]
    for c in ("copy+rmap", "share"):
        assert b[c]["ratio_vs_copy"] == pytest.approx(a[c]["ratio_vs_copy"], rel=1e-12)
        assert b[c]["kernel_ns_per_iteration"] == pytest.approx(
            a[c]["kernel_ns_per_iteration"], rel=1e-12)
        for k in ("ptes_copied", "rmap_adds", "forks", "tables_copied", "unshares"):
            assert (uneven["configs"][c]["per_iteration"][k]
                    == even["configs"][c]["per_iteration"][k])
    # The table prints the per-iteration counts, the same for both runs.
    uneven["predicted"] = predicted(uneven, prof)
    even["predicted"] = predicted(even, prof)

    def cells(r, label):
        return [ln.split() for ln in format_results(r).splitlines()
                if ln.split()[:1] == [label]]
    for label in ("ptes_copied", "rmap_adds", "forks"):
        assert cells(even, label) == cells(uneven, label) != []


def _fake_clock(durations, readings):
    """A clock for a body that reads it `readings` times per iteration, the k-th
    iteration lasting durations(k) ns."""
    def gen():
        k = 0
        while True:
            base = k * 10**6
            for i in range(readings - 1):
                yield base + i
            yield base + durations(k)
            k += 1
    g = gen()
    return lambda: next(g)


def test_a_loop_that_ran_more_iterations_weighs_as_often_as_it_was_asked(monkeypatch):
    from lazyvm.measure import host as measure
    from lazyvm.workloads import builtin as workloads

    monkeypatch.setattr(workloads, "_clock", _fake_clock(lambda k: 10 if k % 2 else 1000, 3))
    r = run_workload("fork_exit", configs=["copy"], pages=64, iterations=4, settle=True)
    c = r["configs"]["copy"]
    assert c["iterations"] == measure.MAX_FACTOR * 4 and c["iterations_asked"] == 4
    assert c["forks"] == c["iterations"]                   # totals: what ran
    assert c["per_iteration"]["forks"] == 1.0              # per iteration: one fork
    assert c["per_iteration"]["forks_copy"] == 1.0


def test_the_predicted_figures_are_the_same_from_run_to_run(monkeypatch):
    """`lazyvm run published --quick` settles wide loops with more iterations; the
    predicted figures must not move with them."""
    from lazyvm.workloads import builtin as workloads

    prof = _profile()
    runs = []
    for wide in (False, True):     # steady times, then times that settle never narrows
        monkeypatch.setattr(workloads, "_clock", _fake_clock(
            (lambda k: 10 if (k // 4) % 2 else 1000) if wide else (lambda k: 100), 5))
        runs.append(run_workload("published", quick=True, settle=True, costs=prof,
                                 big_iterations=3, small_iterations=6))
    assert runs[0]["configs"]["copy"]["iterations"] != runs[1]["configs"]["copy"]["iterations"]
    a, b = (r["predicted"]["configs"] for r in runs)
    for c in a:
        assert a[c]["kernel_ns_per_iteration"] == b[c]["kernel_ns_per_iteration"]
        assert a[c]["ratio_vs_copy"] == b[c]["ratio_vs_copy"]
    assert (runs[0]["predicted"]["share_rmap_over_copy_rmap"]
            == runs[1]["predicted"]["share_rmap_over_copy_rmap"])
