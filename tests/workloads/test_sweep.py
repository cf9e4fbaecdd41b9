"""lazyvm sweep: SPEC parsing and its errors, the point runner's counts, failures per
point, resuming, both executors giving the same counts, the plot."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from subproc import LAZYVM_ENV, NEUTRAL_CWD

pd = pytest.importorskip("pandas", reason="lazyvm sweep needs pandas (lazyvm[sweep])")

from lazyvm import Machine  # noqa: E402
from lazyvm.workloads import sweep as sw  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMES = sw.TIME_COLUMNS

SMALL = {"grid": {"fork_mode": ["copy", "share"], "rmap": [False, True],
                  "write_fraction": [0.0, 0.5]},
         "fixed": {"pages": 2048, "seed": 7}}


def counts(df):
    cols = [c for c in df.columns if c not in TIMES and c != "error"]
    return df[cols].sort_values(["fork_mode", "rmap", "write_fraction"]).reset_index(drop=True)


def test_grid_crosses_and_points_add():
    pts = sw.parse_spec({"grid": {"pages": [1, 2, 3], "rmap": [False, True]},
                         "fixed": {"seed": 4},
                         "points": [{"pages": 9}, {"pages": 1, "rmap": False, "seed": 4}]})
    assert len(pts) == 7                        # 6 crossed + 1 new (the last repeats one)
    assert all(p["seed"] == 4 for p in pts)
    assert pts[-1]["pages"] == 9 and pts[-1]["fork_mode"] == "share"
    assert set(pts[0]) == set(sw.PARAM_ORDER)


@pytest.mark.parametrize("spec, msg", [
    ({"grid": {"pagez": [1]}}, "unknown parameter 'pagez'"),
    ({"grid": {}}, "[grid] is empty"),
    ({"grid": {"pages": []}}, "empty list"),
    ({}, "no points"),
    ({"grid": {"pages": ["many"]}}, "pages = 'many' is not a positive integer"),
    ({"grid": {"pages": 5}}, "must be a list"),
    ({"grid": {"rmap": [1]}}, "rmap = 1 is not true or false"),
    ({"grid": {"write_fraction": [1.5]}}, "is not a number in [0, 1]"),
    ({"grid": {"workload": ["nap"]}}, "workload = 'nap'"),
    ({"points": [{"fork_mode": "lazy"}]}, "fork_mode = 'lazy'"),
    ({"grid": {"pages": [1]}, "extra": {}}, "unknown section 'extra'"),
    ({"points": {"pages": 1}}, "array of tables"),
])
def test_bad_specs_one_line(spec, msg):
    with pytest.raises(sw.SpecError) as e:
        sw.parse_spec(spec)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_machine_keywords_reach_the_point():
    spec = {"points": [{"layout": "pae", "pages": 16},
                       {"layout": "x86_64", "share_level": 2, "pages": 16}]}
    pts = sw.parse_spec(spec)
    assert [p["layout"] for p in pts] == ["pae", "x86_64"]
    with pytest.raises(sw.SpecError, match="costs = 'no-such-profile'"):
        sw.parse_spec({"points": [{"costs": "no-such-profile"}]})
    row = sw.run_point(sw.parse_spec({"points": [{"costs": "linux-2.5.41",
                                                  "pages": 64}]})[0])
    assert row["kernel_ns"] > row["kernel_ns_run"] > 0
    copy = sw.run_point(sw.parse_spec({"points": [{"costs": "linux-2.5.41",
                                                   "pages": 64, "fork_mode": "copy"}]})[0])
    assert copy["kernel_ns_run"] != row["kernel_ns_run"]
    assert sw.parse_spec({"points": [{"layout": "i386", "share_level": 1}]})


def test_sweep_workloads_are_the_registrys():
    """The sweep's workloads are lazyvm run's, by the same names, from one registry
    (breakeven is one of run's external workloads: a sweep runs one cell per point)."""
    from lazyvm.workloads.builtin import EXTERNAL, WORKLOADS
    assert set(sw.WORKLOADS) == {"fork_exit", "snapshot", "fork_exec", "breakeven"}
    assert {"fork_exit", "snapshot", "fork_exec"} <= set(WORKLOADS)
    assert "breakeven" in EXTERNAL
    assert sw.normalise({})["workload"] == "fork_exit"


@pytest.mark.parametrize("old, new", [("fork-write-exit", "fork_exit"),
                                      ("parent-writes", "snapshot"),
                                      ("fork-exec", "fork_exec")])
def test_an_old_workload_name_is_read_with_a_warning_naming_the_new(old, new):
    with pytest.warns(DeprecationWarning, match=f"{old!r} is now called {new!r}"):
        pts = sw.parse_spec({"points": [{"workload": old, "pages": 64}]})
    assert pts[0]["workload"] == new
    assert sw.run_point(pts[0])["workload"] == new


def test_a_results_file_with_old_names_resumes(tmp_path):
    out = tmp_path / "r.csv"
    with pytest.warns(DeprecationWarning):
        pts = sw.parse_spec({"points": [{"workload": "parent-writes", "pages": 64}]})
    df = sw.sweep(pts, out, progress=False)
    df["workload"] = ["parent-writes"]               # as an older lazyvm wrote it
    sw.write_results(df, out)
    again = sw.sweep(pts, out, progress=False)
    assert list(again["workload"]) == ["snapshot"] and len(again) == 1
    assert again["sim_ns_median"].iloc[0] == df["sim_ns_median"].iloc[0]       # not run again


def test_point_runner_counts():
    base = sw.normalise({"pages": 4096, "write_fraction": 0.25, "seed": 1})
    copy = sw.run_point({**base, "fork_mode": "copy", "rmap": False})
    share = sw.run_point({**base, "fork_mode": "share", "rmap": False})
    assert copy["pages_written"] == share["pages_written"] == 1024
    assert copy["ptes_copied"] == 4096 and copy["cow_copies"] == 1024
    assert copy["unshares"] == 0 and share["unshares"] == 4      # 4 tables, all written
    assert share["cow_copies"] == 1024 and share["forks_share"] == 1
    again = sw.run_point({**base, "fork_mode": "share", "rmap": False})
    assert {k: v for k, v in again.items() if k not in TIMES} == \
        {k: v for k, v in share.items() if k not in TIMES}
    other = sw.run_point({**base, "fork_mode": "share", "rmap": False, "pages": 65536,
                          "seed": 2, "write_fraction": 0.0005})
    idx = np.random.default_rng(2).choice(65536, size=33, replace=False)
    tables = len(set((idx // 1024).tolist()))
    assert other["pages_written"] == 33 and 20 < tables < 33
    assert other["unshares"] == tables and other["cow_copies"] == 33
    execed = sw.run_point({**base, "workload": "fork_exec", "rmap": False})
    assert execed["unshares"] == 0 and execed["cow_copies"] == 0
    assert "kernel_ns" not in share            # no cost profile given, no prediction


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "r.csv"
    pts = sw.parse_spec({"points": [{"pages": 64}, {"pages": 4096, "memory": 2 << 20},
                                    {"pages": 128}]})
    df = sw.sweep(pts, out, workers=2, progress=False)
    assert list(df["pages"]) == [64, 4096, 128]
    errs = list(df["error"])
    assert errs[0] == errs[2] == "" and errs[1].startswith("OutOfMemory")
    assert "\n" not in errs[1]


def test_resume_skips_done_points_and_retries_failed(tmp_path):
    out = tmp_path / "r.parquet"
    first = sw.parse_spec({"grid": {"pages": [64, 128]},
                           "points": [{"pages": 4096, "memory": 2 << 20}]})
    df1 = sw.sweep(first, out, progress=False)
    assert (df1["error"] != "").sum() == 1
    full = sw.parse_spec({"grid": {"pages": [64, 128, 256]},
                          "points": [{"pages": 4096, "memory": 2 << 20}]})
    df2 = sw.sweep(full, out, progress=False)
    assert list(df2["pages"]) == [64, 128, 256, 4096]
    # the two done points were not run again: their measured times are unchanged
    for pages in (64, 128):
        assert df2.loc[df2.pages == pages, "sim_ns_median"].item() == \
            df1.loc[df1.pages == pages, "sim_ns_median"].item()
    assert sw.read_results(out).shape[0] == 4
    # CSV round trip keeps the keys
    csv = tmp_path / "r.csv"
    sw.write_results(df2, csv)
    back = sw.read_results(csv)
    assert {sw.point_key(r) for r in back.to_dict("records")} == \
        {sw.point_key(p) for p in full}


def test_same_counts_on_both_executors(tmp_path):
    pytest.importorskip("dask.distributed", reason="dask.distributed is not installed: "
                        "the Dask executor test needs lazyvm[sweep]")
    pts = sw.parse_spec(SMALL)
    local = sw.sweep(pts, tmp_path / "l.parquet", executor="local", progress=False)
    dask = sw.sweep(pts, tmp_path / "d.parquet", executor="dask", workers=2, progress=False)
    assert (local["error"] == "").all() and (dask["error"] == "").all()
    pd.testing.assert_frame_equal(counts(local), counts(dask))
    assert counts(local)["ptes_copied"].sum() > 0


def test_cli_writes_results_plot_and_one_line_errors(tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("[grid]\nfork_mode = ['copy', 'share']\npages = [256, 1024]\n")
    out, png = tmp_path / "r.csv", tmp_path / "p.png"
    cmd = [sys.executable, "-m", "lazyvm", "sweep", str(spec), "--out", str(out),
           "--plot", str(png), "--x", "pages", "--y", "ptes_copied"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 points" in r.stdout and png.stat().st_size > 5000
    assert "point/s" not in r.stderr and "it/s" not in r.stderr     # no bar off a terminal
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\npages = [1]\nwarp = [2]\n")
    for entry in (["lazyvm", "sweep"],):
        r = subprocess.run([sys.executable, "-m", *entry, str(bad), "--out",
                            str(out)], capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "unknown parameter 'warp'" in r.stderr and "Traceback" not in r.stderr
        assert r.stderr.startswith("lazyvm sweep: ") and r.stderr.count("lazyvm sweep") == 1
    r = subprocess.run([sys.executable, "-m", "lazyvm", "sweep", str(spec), "--out",
                        str(tmp_path / "r.xlsx")], capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert r.returncode == 2 and ".parquet or .csv" in r.stderr


def test_sweep_command_parser_and_handler(tmp_path):
    import argparse
    parser = argparse.ArgumentParser(prog="lazyvm")
    from lazyvm.commands import sweep as sweep_command
    sweep_command.add_parser(parser.add_subparsers(dest="command"))
    spec = tmp_path / "s.toml"
    spec.write_text("[grid]\npages = [64, 128]\n")
    out = tmp_path / "r.csv"
    args = parser.parse_args(["sweep", str(spec), "--out", str(out), "--no-progress"])
    assert args.handler(args) == 0 and len(sw.read_results(out)) == 2
    args = parser.parse_args(["sweep", str(spec), "--out", str(out), "--scheduler", "x"])
    from lazyvm.commands import UsageError
    with pytest.raises(UsageError, match="--scheduler needs --executor dask"):
        args.handler(args)
