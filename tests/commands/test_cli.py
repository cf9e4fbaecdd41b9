"""The `lazyvm` command: `compare --quick` end to end, its JSON and text, and every kind of
mistake on the command line (one line on stderr, exit status 2, never a traceback).

`compare --quick` runs once (module fixture) in a subprocess, as a user runs it, so its
forks of a real process are forks of that child and not of the pytest process.  It runs
from an empty directory (so that `python -m` cannot pick up a source tree from the
current directory) with stderr a pipe, as in a log.
"""

import copy
import importlib.util
import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lazyvm
from lazyvm import Machine
from lazyvm import commands as cli
from lazyvm.commands import bench, common
from lazyvm.report import compare as compare_report

# The subprocess imports the same lazyvm as this test (a checkout or an installed copy).
PKG_PARENT = Path(lazyvm.__file__).resolve().parent.parent
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("copy", "copy+rmap", "share", "share+rmap")
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
MACHINE_KW = set(inspect.signature(Machine).parameters)
WIDTH = 100

# Figures that may be zero or negative: counters and their deltas across a fork (a share
# fork allocates no page table; frames_free falls), the address the mapping went to (0 for
# the whole user space), Linux's marginal cost per page (a difference of two medians) and
# its range, a spread's relative width and the forks added to settle it.
# The priced events of a fork (most are 0 in a given configuration) and a prediction's
# error against the measured fork (either sign) may be too.
NOT_POSITIVE = {"delta", "stats_after", "frames_leaked", "map_address",
                "ns_per_page_marginal", "ns_per_page_marginal_range", "vmpte_kb",
                "rel_iqr", "extra", "lo", "events", "error", "error_cpu", "error_wall",
                "measured_marginal_ns_per_page", "marginal_ns_per_page"}


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PKG_PARENT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def lazyvm_cmd(args, cwd, timeout=120):
    """Run `python -m lazyvm ARGS` in `cwd` as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "lazyvm", *args], capture_output=True,
                          text=True, timeout=timeout, env=_env(), cwd=str(cwd))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    js, png = d / "q.json", d / "q.png"
    args = ["compare", "--full", "--quick", "--json", str(js)]
    if HAVE_MPL:
        args += ["--plot", str(png)]
    proc = lazyvm_cmd(args, d)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(js.read_text()), png, proc.stderr


def _numbers(node, path=()):
    """(path, value) for every number under `node`, skipping NOT_POSITIVE subtrees."""
    if isinstance(node, bool) or node is None or isinstance(node, str):
        return
    if isinstance(node, (int, float)):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k not in NOT_POSITIVE:
                yield from _numbers(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _numbers(v, path + (i,))


def _spread_ok(s, samples=None):
    assert s["min"] <= s["q1"] <= s["median"] <= s["q3"] <= s["max"], s
    assert isinstance(s["wide"], bool)
    if samples is not None:
        assert s["n"] == len(samples)
        assert s["min"] == min(samples) and s["max"] == max(samples)


def test_json_structure(quick_run):
    _, rec, _, _ = quick_run
    for key in ("format", "format_version", "lazyvm_version", "time", "host", "build",
                "tool", "parameters", "machine", "results", "slopes", "findings",
                "why_different"):
        assert key in rec, key
    assert rec["format"] == "lazyvm-compare" and rec["lazyvm_version"] == lazyvm.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rec["time"])
    # Which build ran: the checked or the optimized one (None when the core cannot say).
    assert set(rec["build"]) >= {"debug", "core"}
    core_debug = getattr(lazyvm.core, "DEBUG_BUILD", None)
    assert rec["build"]["debug"] == (None if core_debug is None else bool(core_debug))
    mach = rec["host"]
    for key in ("platform", "kernel", "cpu_model", "cores", "python", "numpy"):
        assert mach.get(key), key
    params = rec["parameters"]
    assert params["layout"] == "i386" and params["share_level"] == 1
    assert params["workload"] == "fork_exit"      # the registry's, as run and sweep name it
    sizes = params["sizes"]
    assert sizes == sorted(sizes) and len(sizes) >= 2
    assert [c["name"] for c in params["configs"]] == list(CONFIGS)
    assert [e["pages"] for e in rec["results"]] == sizes

    for e in rec["results"]:
        n = e["pages"]
        lin = e["Linux"]
        assert len(lin["fork_ns"]) == lin["repeats"] >= e["repeats"]
        assert lin["ns_per_page"] == pytest.approx(lin["fork_ns_median"] / n)
        _spread_ok(lin["fork_ns_spread"], lin["fork_ns"])
        assert set(e["configs"]) == set(CONFIGS)
        for name in CONFIGS:
            c = e["configs"][name]
            assert (c["fork_mode"], c["rmap"]) == (name.split("+")[0], name.endswith("rmap"))
            assert len(c["fork_ns"]) == len(c["exit_ns"]) == c["repeats"] >= e["repeats"]
            # Every timed figure carries its spread; extra forks only for a wide one.
            for k in ("fork", "exit", "fork_exit", "fork_cold", "empty_fork"):
                _spread_ok(c[k + "_ns_spread"])
            s = c["fork_ns_spread"]
            _spread_ok(s, c["fork_ns"])
            assert s["median"] == c["fork_ns_median"]
            assert s["extra"] == c["repeats"] - e["repeats"]
            assert s["settled"] == (not s["wide"])
            assert c["ns_per_page"] == pytest.approx(c["fork_ns_median"] / n)
            assert c["frames_leaked"] == 0
            d = c["first_fork"]["delta"]
            # What the first fork allocated: the counts the table prints.
            tables = math.ceil(n / 1024)
            assert d["page_tables"] == (tables if c["fork_mode"] == "copy" else 0)
            assert d["frames_used"] >= 1  # at least the child's pgd
            if name == "copy+rmap":
                assert d["pte_chain_nodes"] > 0
            elif not c["rmap"]:
                assert d["pte_chain_nodes"] == 0
        r = e["ratios"]
        cr = r["copy_rmap_over_copy"]
        assert cr["ratio"] == pytest.approx(
            e["configs"]["copy+rmap"]["fork_ns_median"] / e["configs"]["copy"]["fork_ns_median"])
        assert cr["lo"] <= cr["ratio"] <= cr["hi"]
        assert set(r["linux_over"]) == set(CONFIGS)


def test_every_figure_positive(quick_run):
    _, rec, _, _ = quick_run
    seen = 0
    for path, v in _numbers(rec["results"]):
        assert v > 0 and math.isfinite(v), (path, v)
        seen += 1
    assert seen > 100
    for f in rec["findings"]:
        if f["measured"] is not None and f["key"] != "modern_fork_per_page":
            assert f["measured"]["ratio"] > 0, f


def test_text_table(quick_run):
    out, rec, _, _ = quick_run
    header = next(line for line in out.splitlines() if " config " in line)
    for col in ("pages", "config", "fork", "q1-q3", "ns/page", "Linux/this",
                "tables", "nodes", "frames"):
        assert col in header, col
    for e in rec["results"]:
        assert re.search(rf"^\s*{e['pages']:,}  Linux ", out, re.M)
    for name in CONFIGS:
        assert f"  {name} " in out
    assert "Findings" in out and "McCracken" in out and "Torvalds" in out
    # Findings, not a grade of the project's own speed goals.
    assert "NOT met" not in out and "Targets" not in out
    # Which build ran, in the header.
    flat = " ".join(out.split())                   # the header may wrap anywhere
    assert re.search(r"compare \((checked build \(LAZYVM_DEBUG=1\)|optimized build|build "
                     r"not reported by the core)\): fork of N touched private pages, "
                     r"simulator \(", flat)


def test_report_lines_at_most_100_columns(quick_run):
    out = quick_run[0]
    too_wide = [line for line in out.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide


def test_no_progress_bar_when_stderr_is_not_a_terminal(quick_run):
    # The fixture runs without --no-progress, stderr a pipe: no bar, no carriage return.
    assert "\r" not in quick_run[3] and "page/s" not in quick_run[3]


def test_wide_row_is_marked(quick_run):
    _, rec, _, _ = quick_run
    from lazyvm.workloads import compare
    rec = copy.deepcopy(rec)
    s = rec["results"][0]["configs"]["share"]["fork_ns_spread"]
    s.update(wide=True, settled=False, extra=3 * rec["results"][0]["repeats"])
    text = compare_report.format_table(rec)
    row = next(line for line in text.splitlines() if " share " in line)
    assert "~" in row
    wide = sum(e["Linux"]["fork_ns_spread"]["wide"] for e in rec["results"]) + sum(
        c["fork_ns_spread"]["wide"] for e in rec["results"] for c in e["configs"].values())
    assert f"{wide} still wide (marked ~)" in " ".join(text.split())


def test_findings_carry_ranges_and_published_figures(quick_run):
    out, rec, _, _ = quick_run
    keys = {f["key"] for f in rec["findings"]}
    assert {"rmap_fork_overhead", "on_demand_fork_1gb", "slopes"} <= keys
    for f in rec["findings"]:
        if f["measured"] is not None and f["key"] != "modern_fork_per_page":
            m = f["measured"]
            # (lo is None where the low end of a difference of medians is <= 0)
            assert m["lo"] is None or m["lo"] <= m["ratio"], f
            assert m["hi"] is None or m["ratio"] <= m["hi"], f
    # A ratio with its range in the printed findings: 3.6x (3.4-3.9)
    assert re.search(r"\d\.\d+x \(\d[\d.,]*-\d[\d.,]*\)", out)


def test_json_formats_documented(quick_run):
    """docs/JSON.md names every top-level key compare writes."""
    doc = ROOT / "docs" / "JSON.md"
    if not (ROOT / "docs").is_dir():
        pytest.skip("docs/ not beside the tests")
    text = doc.read_text()
    _, rec, _, _ = quick_run
    for key in rec:
        assert f"`{key}`" in text, key


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (the plot extra)")
def test_plot_png(quick_run):
    _, _, png, _ = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (the plot extra)")
def test_plot_draws_quartile_error_bars(quick_run, tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.axes

    from lazyvm.workloads import compare
    calls = []
    real = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, yerr=None, **kw):
        calls.append((list(x), list(y), yerr))
        return real(self, x, y, yerr=yerr, **kw)
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    _, rec, _, _ = quick_run
    compare_report.plot(rec, str(tmp_path / "p.png"))
    # The simulator panel: Linux and each configuration; the predicted panel: this
    # machine's measured fork (the predictions have no spread: plain lines).
    assert len(calls) == 1 + len(CONFIGS) + (1 if rec["predicted"]["profile"] else 0)
    e0 = rec["results"][0]
    s = e0["configs"]["copy"]["fork_ns_spread"]
    xs, ys, (below, above) = calls[1]
    assert ys[0] == pytest.approx(s["median"] / 1e3)
    assert below[0] == pytest.approx((s["median"] - s["q1"]) / 1e3)
    assert above[0] == pytest.approx((s["q3"] - s["median"]) / 1e3)


# ---------------------------------------------------------------- mistakes


def _one_line_error(capsys, argv):
    """Run the command in-process; returns its stderr after checking the contract."""
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv", [
    ["compare", "--sizes", "0"],
    ["compare", "--sizes", "abc"],
    ["compare", "--repeats", "-1"],
    ["compare", "--bogus"],
    ["compare", "--layout", "sparc"],
    ["frobnicate"],
    ["run", "fork_exit", "-p", "pages"],
    ["run", "fork_exit", "-p", "pages=abc"],
    ["run", "fork_exit", "-p", "pages=1.5"],
    ["run", "fork_exit", "-p", "pages=0"],
    ["run", "fork_exit", "-p", "iterations=-3"],
    ["run", "fork_exit", "-p", "pages=99999999"],
    ["run", "fork_exit", "-p", "bogus=1"],
    ["run", "fork_exit", "-p", "pages=1", "-p", "pages=2"],
    ["run", "snapshot", "-p", "write_fraction=2"],
    ["run", "prefork", "-p", "pages=786432", "-p", "children=64"],
    ["run", "fork_exec", "-p", "parent_writes=100"],
    ["run", "no_such_workload"],
    ["run"],
    ["run", "fork_exit", "--configs", "copy,lazy"],
    ["run", "fork_exit", "--quick", "--json", "/nonexistent-dir/x.json"],
])
def test_mistakes_are_one_line_exit_2(argv, capsys):
    _one_line_error(capsys, argv)


def test_size_beyond_user_space(capsys):
    assert "786,432" in _one_line_error(capsys, ["compare", "--sizes", "786433"])


@pytest.mark.parametrize("argv, words", [
    (["--json", "/nonexistent-dir/f.json"], ["--json", "no such directory"]),
    (["--json", "."], ["--json", "directory"]),
    (["--plot", "/nonexistent-dir/f.png"], ["--plot", "no such directory"]),
    (["--plot", "f.xyz"], ["--plot", ".png"]),
])
def test_output_paths_checked_before_the_run(argv, words, capsys, monkeypatch, tmp_path):
    from lazyvm.workloads import compare

    def never(**kw):
        raise AssertionError("the run started before its output path was checked")
    monkeypatch.setattr(compare, "run_compare", never)
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["compare", *argv])
    for w in words:
        assert w in err


def test_usage_error_from_a_handler_is_one_line(capsys, monkeypatch):
    def handler(args):
        raise cli.UsageError("the snapshot file is not a snapshot")
    from lazyvm.commands import run
    monkeypatch.setattr(run, "cmd_run", handler)
    err = _one_line_error(capsys, ["run", "fork_exit"])
    assert err == "lazyvm run: the snapshot file is not a snapshot\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"lazyvm {lazyvm.__version__}"


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "compare" in capsys.readouterr().out


def test_sizes_parser():
    assert common.sizes("1k, 4096,16_384") == [1024, 4096, 16384]


# ---------------------------------------------------------------- run


def test_run_list_shows_parameters_and_defaults(capsys):
    from lazyvm.workloads.builtin import WORKLOADS
    assert cli.main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    for name, w in WORKLOADS.items():
        assert re.search(rf"^{re.escape(name)}$", out, re.M), name
        for k, v in w.defaults.items():
            assert f"{k}={v!r}" in out, (name, k)
    assert all(len(line) <= WIDTH for line in out.splitlines())


def test_readme_uses_the_real_workload_names():
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("README.md not beside the tests")
    from lazyvm.workloads.builtin import EXTERNAL, WORKLOADS
    text = readme.read_text()
    for name in list(WORKLOADS) + list(EXTERNAL):
        assert f"`{name}`" in text, name
    for m in re.finditer(r"lazyvm run (\w[\w-]*)", text):
        assert m.group(1) in WORKLOADS or m.group(1) in EXTERNAL, m.group(0)


def test_run_json_has_the_envelope(tmp_path, capsys):
    js = tmp_path / "r.json"
    assert cli.main(["run", "--full", "small_fork", "--quick", "-p", "iterations=20",
                     "--configs", "copy,share", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= WIDTH for line in out.splitlines())
    rec = json.loads(js.read_text())
    assert rec["format"] == "lazyvm-run" and rec["lazyvm_version"] == lazyvm.__version__
    for key in ("time", "host", "build", "workload", "params", "configs"):
        assert key in rec, key
    assert rec["params"]["iterations"] == 20
    s = rec["configs"]["share"]["loops"]["small_fork"]
    assert s["q1_ns"] <= s["median_ns"] <= s["q3_ns"]


# ---------------------------------------------------------------- layouts


@pytest.mark.skipif("layout" not in MACHINE_KW,
                    reason="needs the Machine(layout=...) keyword, not in this core yet")
@pytest.mark.parametrize("layout", ["pae", "x86_64"])
def test_compare_runs_in_every_layout(layout, tmp_path):
    js = tmp_path / "l.json"
    proc = lazyvm_cmd(["compare", "--full", "--sizes", "1k,4k", "--repeats", "3", "--layout", layout,
                       "--json", str(js)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(js.read_text())
    assert rec["parameters"]["layout"] == layout
    assert f"{layout} layout" in proc.stdout.splitlines()[0]


@pytest.mark.skipif("share_level" not in MACHINE_KW,
                    reason="needs the Machine(share_level=...) keyword, not in this core yet")
def test_run_with_share_level(capsys):
    assert cli.main(["run", "--full", "fork_exit", "--quick", "--layout", "x86_64",
                     "--share-level", "2", "-p", "iterations=2"]) == 0
    assert "share_level=2" in capsys.readouterr().out


# ---------------------------------------------------------------- bench


def test_bench_runs_from_the_checkout(monkeypatch, tmp_path):
    """From the checkout's top directory `lazyvm bench` finds bench/ whichever way
    lazyvm was installed, not only beside the imported package."""
    if not (ROOT / "bench" / "conftest.py").is_file():
        pytest.skip("no bench/ beside the tests")
    if importlib.util.find_spec("pytest_benchmark") is None:
        pytest.skip("pytest-benchmark not installed (the test extra)")
    monkeypatch.chdir(ROOT)
    assert bench.bench_dir() == ROOT / "bench"
    assert cli.main(["bench", "--collect-only", "-q"]) == 0


def test_bench_outside_a_checkout_says_what_it_needs(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(bench, "_PACKAGE_PARENT", tmp_path / "site")
    err = _one_line_error(capsys, ["bench"])
    assert "checkout" in err


def test_compare_takes_more_forks_for_a_wide_row_only():
    """_timed_rounds: a run whose fork times spread wide gets more rounds, up to
    MAX_FACTOR times the repeats; a steady one gets none."""
    from lazyvm.measure import host as measure
    from lazyvm.workloads import compare

    class Run:
        def __init__(self, times):
            self.times, self.forks = times, []

        def fork_once(self):
            self.forks.append(self.times(len(self.forks)))

    steady = Run(lambda k: 100)
    jumpy = Run(lambda k: 10 if k % 2 else 1000)
    settling = Run(lambda k: 1000 if k < 4 and k % 2 else 100)
    st = compare._timed_rounds([steady, jumpy, settling], 5)
    assert st[0] == {"extra": 0, "settled": True} and len(steady.forks) == 5
    assert st[1] == {"extra": 15, "settled": False}
    assert len(jumpy.forks) == measure.MAX_FACTOR * 5
    assert st[2]["settled"] and 0 < st[2]["extra"] < 15


def test_spread_and_ratio():
    from lazyvm.measure import host as measure
    s = measure.spread([1, 2, 3, 4, 100])
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"], s["n"]) == (1, 2, 3, 4, 100, 5)
    assert s["rel_iqr"] == pytest.approx(2 / 3) and s["wide"]
    r = measure.ratio(measure.spread([10, 20, 30]), measure.spread([1, 2, 3]))
    assert r["ratio"] == 10 and r["lo"] == pytest.approx(15 / 2.5)
    assert r["hi"] == pytest.approx(25 / 1.5)


def test_every_subcommand_module_adds_its_parser(monkeypatch, capsys):
    """main() calls add_parser(subparsers) of every module of lazyvm.commands that
    imports; their handlers get the same one-line UsageError contract."""
    import types
    mod = types.ModuleType("lazyvm.commands.sweep")

    def add_parser(sub):
        p = sub.add_parser("sweepish", help="a command from another module")
        p.add_argument("--n", type=int, required=True)

        def handler(args):
            if args.n < 0:
                raise cli.UsageError(f"--n {args.n}: must not be negative")
            print(f"swept {args.n}")
            return 0
        p.set_defaults(handler=handler)
    mod.add_parser = add_parser
    monkeypatch.setitem(sys.modules, "lazyvm.commands.sweep", mod)
    assert cli.main(["sweepish", "--n", "3"]) == 0
    assert capsys.readouterr().out == "swept 3\n"
    assert _one_line_error(capsys, ["sweepish", "--n", "-1"]) == (
        "lazyvm sweepish: --n -1: must not be negative\n")
    _one_line_error(capsys, ["sweepish", "--n", "x"])


def test_a_command_whose_dependency_is_missing_is_named_in_help(monkeypatch):
    import importlib
    import types

    def import_module(name):
        if name == "lazyvm.commands.show":
            raise ModuleNotFoundError("No module named 'websockets'", name="websockets")
        if name == "lazyvm.commands.sweep":  # not in this build: left out without a word
            raise ModuleNotFoundError("No module named 'lazyvm.commands.sweep'", name=name)
        return importlib.import_module(name)
    monkeypatch.setattr(cli, "importlib", types.SimpleNamespace(
        import_module=import_module, util=importlib.util))
    epilog = cli.build_parser().epilog or ""
    assert "show (No module named 'websockets')" in epilog
    assert "sweep" not in epilog


# ---------------------------------------------------------------- predicted kernel time


def _profile_of(rec):
    from lazyvm.costs import load_profile
    name = rec["predicted"]["profile"]
    assert name in ("host", "linux-2.5.41"), name   # the default: one of the two
    return load_profile(name)


def test_compare_predicts_with_the_default_profile_and_says_why(quick_run):
    from lazyvm.costs import host_profile_path
    out, rec, _, _ = quick_run
    pred = rec["predicted"]
    want = "host" if os.path.exists(host_profile_path()) else "linux-2.5.41"
    assert pred["profile"] == want
    assert pred["reason"].startswith("default:") and want in pred["reason"]
    assert f"Predicted kernel time, {want} cost profile (default:" in out
    assert "no spread" in pred["spread"]


def test_compare_kernel_ns_is_the_profile_of_the_recorded_counts(quick_run):
    """Every predicted figure is exactly Profile.kernel_ns of the events recorded beside it."""
    _, rec, _, _ = quick_run
    prof = _profile_of(rec)
    for e in rec["results"]:
        pc = e["predicted"]["configs"]
        for name in CONFIGS:
            ev = e["configs"][name]["events"]
            assert pc[name]["fork_ns"] == prof.kernel_ns(ev["fork"]), (e["pages"], name)
            assert pc[name]["fork_exit_ns"] == prof.kernel_ns(ev["fork_exit"])
            assert type(pc[name]["fork_ns"]) is int
            # a fork and an exit, in the configuration's mode
            mode = name.split("+")[0]
            assert ev["fork"]["forks_" + mode] == 1 and ev["fork_exit"]["exits"] == 1
            # a copy+rmap fork adds a chain slot per entry; a share fork copies none
            assert ev["fork"]["rmap_adds"] == (e["pages"] if name == "copy+rmap" else 0)
            assert ev["fork"]["ptes_copied"] == (e["pages"] if mode == "copy" else 0)
        r = e["predicted"]["ratios"]
        assert r["copy_rmap_over_share_rmap"] == pytest.approx(
            pc["copy+rmap"]["fork_ns"] / pc["share+rmap"]["fork_ns"])
        assert r["share_rmap_over_copy_rmap"] == pytest.approx(
            1 / r["copy_rmap_over_share_rmap"])
        # Copying 262,144 entries costs more than sharing their tables in any profile.
        if e["pages"] >= 65536:
            assert pc["copy"]["fork_ns"] > pc["share"]["fork_ns"]


def test_compare_findings_set_predicted_ratios_beside_the_published(quick_run):
    out, rec, _, _ = quick_run
    name = rec["predicted"]["profile"]
    f = {x["key"]: x for x in rec["findings"]}
    for key in ("mccracken_fork_40mb", "mccracken_fork_exit_40mb", "on_demand_fork_1gb",
                "cow_pt_rfc_512mb", "rmap_fork_overhead"):
        assert f[key]["basis"] == f"predicted ({name})", key
        assert f[key]["measured"]["ratio"] > 0 and isinstance(f[key]["within_2x"], bool)
        # a miss says what each side is made of, and what would close the gap
        assert f[key]["within_2x"] or "fixed" in f[key]["why"], key
    e = next(x for x in rec["results"] if x["pages"] == 10240)
    assert f["mccracken_fork_40mb"]["measured"]["ratio"] == \
        e["predicted"]["ratios"]["copy_rmap_over_share_rmap"]
    odf = next(o for o in rec["predicted"]["odf"] if o["gb"] == 1)
    assert f["on_demand_fork_1gb"]["measured"]["ratio"] == odf["ratio"]
    assert odf["ratio"] == _profile_of(rec).kernel_ns(odf["copy_counts"]) / \
        _profile_of(rec).kernel_ns(odf["share_counts"])
    # --quick does not count 50 GB, and says so
    assert f["on_demand_fork_50gb"]["measured"] is None
    assert "without --quick" in f["on_demand_fork_50gb"]["not_measured_why"]
    kb = f["cow_pt_rfc_child_tables_1gb"]["child_tables_kb"]
    assert kb["copy"] >= 512 * 4 > 100 > kb["share"] > 0
    text = " ".join(out.split())
    assert "[predicted (" in text and "Published: 65x" in text and "16x" in text


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (the plot extra)")
def test_plot_has_a_predicted_panel(quick_run, tmp_path):
    from lazyvm.workloads import compare
    _, rec, _, _ = quick_run
    fig = compare_report.plot(rec, str(tmp_path / "p.png"))
    assert len(fig.axes) == 2
    ax = fig.axes[1]
    assert "predicted kernel time" in ax.get_title()
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for name in CONFIGS:
        ys = list(lines[f"predicted {name}"].get_ydata())
        assert ys == [e["predicted"]["configs"][name]["fork_ns"] / 1e3
                      for e in rec["results"]]
    # this machine's measured fork is on it, with its quartiles
    assert any("measured" in c.get_label() for c in ax.containers)
    # Without a profile, one panel.
    rec = copy.deepcopy(rec)
    rec["predicted"] = {"profile": None, "reason": "prediction off (--costs none)"}
    for e in rec["results"]:
        del e["predicted"]
    assert len(compare_report.plot(rec, str(tmp_path / "q.png")).axes) == 1


def test_same_compare_twice_gives_identical_predictions(tmp_path):
    recs = []
    for i in range(2):
        js = tmp_path / f"{i}.json"
        proc = lazyvm_cmd(["compare", "--full", "--quick", "--sizes", "1k,3k", "--repeats", "3",
                           "--costs", "linux-2.5.41", "--json", str(js)], tmp_path)
        assert proc.returncode == 0, proc.stderr
        recs.append(json.loads(js.read_text()))
    a, b = recs

    def predictions(rec):       # without the simulator's own times set beside them
        return [{"ratios": e["predicted"]["ratios"],
                 "configs": {n: {k: v for k, v in c.items() if not k.startswith("sim_")}
                             for n, c in e["predicted"]["configs"].items()}}
                for e in rec["results"]]
    assert predictions(a) == predictions(b)
    assert predictions(a)[0]["configs"]["copy"]["fork_ns"] > 0
    assert a["predicted"]["odf"] == b["predicted"]["odf"]
    assert a["predicted"]["cow_pt_rfc"] == b["predicted"]["cow_pt_rfc"]
    assert a["predicted"]["reason"] == "--costs linux-2.5.41"
    # and the simulator's own times are not what was compared
    assert [e["configs"]["copy"]["fork_ns"] for e in a["results"]] != \
        [e["configs"]["copy"]["fork_ns"] for e in b["results"]]


@pytest.mark.parametrize("cmd", [["compare", "--sizes", "1k"], ["run", "fork_exit"],
                                 ["run", "published"], ["run", "redis-bgsave"]])
@pytest.mark.parametrize("bad", ["missing", "not-json", "not-a-profile", "unknown-name"])
def test_a_profile_that_does_not_load_is_one_line_before_anything_runs(
        cmd, bad, capsys, monkeypatch, tmp_path):
    from lazyvm.workloads import builtin as workloads
    from lazyvm.workloads import compare
    from lazyvm.workloads import redis as redis_bgsave

    def never(*a, **kw):
        raise AssertionError("measuring started before --costs was checked")
    monkeypatch.setattr(compare, "run_compare", never)
    monkeypatch.setattr(workloads, "run_workload", never)
    monkeypatch.setattr(redis_bgsave, "run_redis_bgsave", never)
    spec = {"missing": str(tmp_path / "nope.json"), "unknown-name": "linux-2.4.20"}.get(bad)
    if spec is None:
        f = tmp_path / "p.json"
        f.write_text("{not json" if bad == "not-json" else '{"format": "other"}')
        spec = str(f)
    err = _one_line_error(capsys, [*cmd, "--costs", spec])
    assert err.startswith(f"lazyvm {cmd[0]}: --costs: ")


def test_run_kernel_ns_is_the_profile_of_the_counts(tmp_path, capsys):
    from lazyvm.costs import load_profile
    js = tmp_path / "r.json"
    assert cli.main(["run", "--full", "small_fork", "--quick", "-p", "iterations=20",
                     "--costs", "linux-2.5.41", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    rec = json.loads(js.read_text())
    prof = load_profile("linux-2.5.41")
    pred = rec["predicted"]
    assert pred["profile"] == "linux-2.5.41" and pred["reason"] == "--costs linux-2.5.41"
    for name in CONFIGS:
        c = rec["configs"][name]
        assert pred["configs"][name]["kernel_ns"] == prof.kernel_ns(c)
        assert pred["configs"][name]["kernel_ns"] == round(sum(
            c.get(e, 0) * __import__("fractions").Fraction(repr(float(prof.costs[e])))
            for e in prof.costs))
        assert c["forks_" + name.split("+")[0]] == c["iterations"]
    pc = pred["configs"]
    assert pred["share_rmap_over_copy_rmap"] == pytest.approx(
        pc["share+rmap"]["kernel_ns"] / pc["copy+rmap"]["kernel_ns"])
    assert pc["copy"]["ratio_vs_copy"] == 1.0
    # the child writes under every table it shares: each one is privatized
    assert rec["configs"]["share"]["unshares"] == 3 * rec["configs"]["share"]["iterations"]
    assert "predicted kernel/iteration (" in out
    assert "linux-2.5.41 cost profile" in " ".join(out.split())
    assert all(len(line) <= WIDTH for line in out.splitlines())


def test_run_costs_none_turns_prediction_off(tmp_path, capsys):
    js = tmp_path / "r.json"
    assert cli.main(["run", "--full", "fork_exit", "--quick", "-p", "iterations=2", "--configs",
                     "copy", "--costs", "none", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    rec = json.loads(js.read_text())
    assert rec["predicted"] is None and "none" in rec["predicted_off"]
    assert "predicted kernel/iteration" not in out
    assert "predicted kernel time: none (prediction off (--costs none))" in out


def test_run_published_prints_the_published_report(tmp_path, capsys, monkeypatch):
    from lazyvm.measure import published
    seen = []

    def report(profile, *a, **kw):
        seen.append(profile)
        return "REPORT: " + "words " * 40, {"profile": profile.name, "cells": []}
    monkeypatch.setattr(published, "report", report)
    js = tmp_path / "p.json"
    assert cli.main(["run", "--full", "published", "--quick", "-p", "big_iterations=1", "-p",
                     "small_iterations=2", "--configs", "copy+rmap,share+rmap",
                     "--json", str(js)]) == 0
    out = capsys.readouterr().out
    # by default the 2002 figures are predicted with the profile fitted to them
    assert [p.name for p in seen] == ["linux-2.5.41"]
    assert "REPORT: " in out and all(len(line) <= WIDTH for line in out.splitlines())
    assert out.index("published figures beside") < out.index("REPORT: ")
    rec = json.loads(js.read_text())
    assert rec["predicted_published"] == {"profile": "linux-2.5.41", "cells": []}
    assert "2.5.41" in rec["predicted"]["reason"]


# ---------------------------------------------------------------- redis-bgsave


def test_run_list_shows_redis_bgsave_with_its_parameters(capsys):
    from lazyvm.workloads import redis as redis_bgsave
    assert cli.main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^redis-bgsave$", out, re.M)
    block = out[out.index("redis-bgsave\n"):].split("\n\n")[0]
    flat = " ".join(block.split())
    for k, v in redis_bgsave.DEFAULTS.items():
        assert f"{k}={v!r}" in flat, k
    for k, v in redis_bgsave.QUICK.items():
        assert f"(quick {v!r})" in flat, k


@pytest.mark.parametrize("argv", [
    ["run", "redis-bgsave", "-p", "keys=0"],
    ["run", "redis-bgsave", "-p", "keys=1.5"],
    ["run", "redis-bgsave", "-p", "bogus=1"],
    ["run", "redis-bgsave", "-p", "layout=sparc"],
    ["run", "redis-bgsave", "-p", "configs=copy,lazy"],
    ["run", "redis-bgsave", "-p", "timeout=-1"],
    ["run", "redis-bgsave", "-p", "baseline=3"],
    ["run", "redis-bgsave", "--configs", "copy,lazy"],
    ["run", "redis-bgsave", "--share-level", "2"],
    ["run", "redis-bgsave", "--costs", "none", "-p", "costs=host"],
])
def test_redis_parameters_checked_before_redis_starts(argv, capsys, monkeypatch):
    from lazyvm.workloads import redis as redis_bgsave

    def never(*a, **kw):
        raise AssertionError("redis started before its parameters were checked")
    monkeypatch.setattr(redis_bgsave, "run_redis_bgsave", never)
    _one_line_error(capsys, argv)


def test_redis_missing_is_one_line_exit_2(capsys, monkeypatch):
    from lazyvm.workloads import redis as redis_bgsave
    monkeypatch.setattr(redis_bgsave.shutil, "which", lambda name: None)
    err = _one_line_error(capsys, ["run", "redis-bgsave", "--quick", "--costs", "none"])
    assert "redis-server is not installed" in err


def test_redis_snapshot_error_is_one_line_exit_2(capsys, monkeypatch):
    from lazyvm.workloads import redis as redis_bgsave
    from lazyvm.workloads import snapshot
    got = []

    def fail(params):
        got.append(params)
        raise snapshot.SnapshotError("the capture did not finish\nwithin the timeout")
    monkeypatch.setattr(redis_bgsave, "run_redis_bgsave", fail)
    err = _one_line_error(capsys, ["run", "redis-bgsave", "--quick", "-p", "keys=100",
                                   "--configs", "copy,share", "--costs", "linux-2.5.41"])
    assert err == "lazyvm run: the capture did not finish within the timeout\n"
    assert got == [{"keys": 100, "quick": True, "costs": "linux-2.5.41",
                    "configs": ["copy", "share"]}]


def test_redis_bgsave_runs_and_prints_its_text(capsys, monkeypatch, tmp_path):
    from lazyvm.workloads import redis as redis_bgsave

    def run(params):
        return "REDIS TEXT\n", {"configs": {}, "params": params}
    monkeypatch.setattr(redis_bgsave, "run_redis_bgsave", run)
    js = tmp_path / "r.json"
    assert cli.main(["run", "redis-bgsave", "--costs", "none", "--layout", "x86_64",
                     "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("REDIS TEXT\n") and "cost profile: none" in out
    rec = json.loads(js.read_text())
    assert rec["params"] == {"costs": None, "layout": "x86_64"}


def test_a_host_profile_predicts_this_machines_fork_from_its_own_counts(tmp_path):
    """With a host's profile (meta["host"]) compare prices this process's own VMAs, PTEs
    and tables beside its measured fork, in wall and in CPU time."""
    from lazyvm.measure.calibrate import predict_fork_ns
    from lazyvm.costs import EVENTS, Profile
    prof = Profile(name="host-test", costs={e: 10.0 * (i + 1) for i, e in enumerate(EVENTS)},
                   uncertainty={e: 1.0 for e in EVENTS}, source={e: "test" for e in EVENTS},
                   meta={"host": {"kernel": "test"}, "fork_vma_no_anon_ns": 5.0})
    path = tmp_path / "h.json"
    prof.save(str(path))
    js = tmp_path / "c.json"
    proc = lazyvm_cmd(["compare", "--full", "--quick", "--sizes", "2k", "--repeats", "3", "--costs",
                       str(path), "--json", str(js)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(js.read_text())
    assert rec["predicted"]["profile"] == "host-test"
    assert rec["predicted"]["reason"] == f"--costs {path}"
    e = rec["results"][0]
    lp = e["predicted"]["Linux"]
    w, b = lp["counts"]["with_pages"], lp["counts"]["baseline"]
    assert w["P"] >= b["P"] + 2048 and w["V"] >= b["V"] and w["T"] >= b["T"]
    assert lp["fork_ns"] == pytest.approx(predict_fork_ns(prof, w["V"], w["A"], w["P"], w["T"]))
    assert lp["measured_fork_ns_median"] == e["Linux"]["fork_ns_median"]
    assert 0 < e["Linux"]["fork_cpu_ns_median"] == lp["measured_fork_cpu_ns_median"]
    f = next(x for x in rec["findings"] if x["key"] == "linux_predicted")
    assert f["measured"]["ratio"] == pytest.approx(lp["fork_ns"] / lp["measured_fork_cpu_ns_median"])
    assert "CPU time" in f["why"]
