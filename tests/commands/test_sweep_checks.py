"""lazyvm sweep checks the whole SPEC and every option before any point runs: sizes
against the layout and this machine's memory, plot columns, output paths, the
scheduler; each mistake is one line on stderr naming the subcommand, exit status 2.
Each point's times carry their spread over `repeats` warm rounds."""

import time

import pytest

pytest.importorskip("pandas", reason="lazyvm sweep needs pandas (lazyvm[sweep])")

from lazyvm import commands as cli  # noqa: E402
from lazyvm.measure import host as measure  # noqa: E402
from lazyvm.workloads import sweep as sw  # noqa: E402


def _spec(tmp_path, text):
    f = tmp_path / "s.toml"
    f.write_text(text)
    return f


def _one_line(capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("lazyvm sweep: "), err
    return err


def _run(argv, capsys):
    assert cli.main(argv) == 2
    return _one_line(capsys)


def test_a_point_larger_than_the_layout_stops_before_any_point_runs(tmp_path, capsys):
    f = _spec(tmp_path, "[grid]\npages = [1024, 100000000]\n")
    out = tmp_path / "r.csv"
    err = _run(["sweep", str(f), "--out", str(out), "--no-progress"], capsys)
    assert "100,000,000" in err and "user space" in err
    assert not out.exists()                  # no point ran


def test_a_point_larger_than_this_machine_stops_before_any_point_runs(tmp_path, capsys):
    have = measure.host_memory_bytes()
    pages = (have // 4096) * 2 // 3          # twice that in simulated memory: too much
    f = _spec(tmp_path, f"[grid]\npages = [1024, {pages}]\n[fixed]\nlayout = 'x86_64'\n")
    out = tmp_path / "r.csv"
    err = _run(["sweep", str(f), "--out", str(out), "--no-progress"], capsys)
    assert "this machine's" in err and "GiB" in err
    assert not out.exists()


def test_a_plot_column_that_does_not_exist_stops_before_any_point_runs(tmp_path, capsys):
    f = _spec(tmp_path, "[grid]\npages = [1024]\n")
    out = tmp_path / "r.csv"
    err = _run(["sweep", str(f), "--out", str(out), "--plot", str(tmp_path / "p.png"),
                "--y", "nosuch", "--no-progress"], capsys)
    assert "--y 'nosuch' is not a column" in err and not out.exists()
    err = _run(["sweep", str(f), "--out", str(out), "--plot", str(tmp_path / "p.png"),
                "--x", "nosuch", "--no-progress"], capsys)
    assert "--x 'nosuch' is not a parameter" in err and not out.exists()


@pytest.mark.parametrize("flag", ["--out", "--plot"])
def test_an_output_in_a_missing_directory_stops_first(tmp_path, capsys, flag):
    f = _spec(tmp_path, "[grid]\npages = [1024]\n")
    paths = {"--out": str(tmp_path / "r.csv"), "--plot": str(tmp_path / "p.png")}
    paths[flag] = str(tmp_path / "nodir" / ("r.csv" if flag == "--out" else "p.png"))
    err = _run(["sweep", str(f), "--out", paths["--out"], "--plot", paths["--plot"],
                "--no-progress"], capsys)
    assert "no such directory" in err


@pytest.mark.parametrize("addr,why", [("notanaddress", "not a Dask scheduler address"),
                                      ("tcp://127.0.0.1:1", "no scheduler answers")])
def test_a_bad_scheduler_is_one_line_at_once(tmp_path, capsys, addr, why):
    f = _spec(tmp_path, "[grid]\npages = [1024]\n")
    t = time.monotonic()
    err = _run(["sweep", str(f), "--executor", "dask", "--scheduler", addr, "--out",
                str(tmp_path / "r.csv"), "--no-progress"], capsys)
    assert why in err and time.monotonic() - t < 10


def test_each_point_times_warm_repeats_with_their_spread_and_the_first_fork():
    p = sw.parse_spec({"grid": {"pages": [512]}, "fixed": {"repeats": 4,
                                                          "write_fraction": 0.1}})[0]
    row = sw.run_point(p)
    for ph in sw.PHASES:
        assert (row[f"{ph}_ns_min"] <= row[f"{ph}_ns_q1"] <= row[f"{ph}_ns_median"]
                <= row[f"{ph}_ns_q3"] <= row[f"{ph}_ns_max"])
    assert row["first_fork_ns"] > 0 and "fork_ns" not in row and "sim_ns" not in row
    # The counters are of the first round alone: the same whatever the repeats.
    again = sw.run_point(dict(p, repeats=1))
    assert again["cow_copies"] == row["cow_copies"] == row["pages_written"] == 51
    assert again["forks"] == row["forks"] == 1
