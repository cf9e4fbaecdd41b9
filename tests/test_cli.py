"""The `lazyvm` command: `compare --quick` end to end, its JSON and text, and argument errors.

`compare --quick` runs once (module fixture) in a subprocess, as a user runs it, so its
forks of a real process are forks of that child and not of the pytest process.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lazyvm import cli

import lazyvm

# The subprocess imports the same lazyvm as this test (a checkout or an installed copy).
PKG_PARENT = Path(lazyvm.__file__).resolve().parent.parent
CONFIGS = ("copy", "copy+rmap", "share", "share+rmap")
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

# Figures that may be zero or negative: counters and their deltas across a fork (a share
# fork allocates no page table; frames_free falls), the address the mapping went to (0 for
# the whole user space), and Linux's marginal cost per page, a difference of two medians.
NOT_POSITIVE = {"delta", "stats_after", "frames_leaked", "map_address",
                "ns_per_page_marginal", "vmpte_kb"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    js, png = d / "q.json", d / "q.png"
    cmd = [sys.executable, "-m", "lazyvm", "compare", "--quick", "--no-progress",
           "--json", str(js)]
    if HAVE_MPL:
        cmd += ["--plot", str(png)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PKG_PARENT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(js.read_text()), png


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


def test_json_structure(quick_run):
    _, rec, _ = quick_run
    for key in ("tool", "lazyvm_version", "generated", "parameters", "machine",
                "results", "slopes", "targets", "published", "why_different"):
        assert key in rec, key
    mach = rec["machine"]
    for key in ("platform", "kernel", "cpu_model", "cores", "python", "numpy"):
        assert mach.get(key), key
    params = rec["parameters"]
    sizes = params["sizes"]
    assert sizes == sorted(sizes) and len(sizes) >= 2
    assert [c["name"] for c in params["configs"]] == list(CONFIGS)
    assert [e["pages"] for e in rec["results"]] == sizes

    for e in rec["results"]:
        n = e["pages"]
        lin = e["Linux"]
        assert len(lin["fork_ns"]) == lin["repeats"] == e["repeats"]
        assert lin["ns_per_page"] == pytest.approx(lin["fork_ns_median"] / n)
        assert set(e["configs"]) == set(CONFIGS)
        for name in CONFIGS:
            c = e["configs"][name]
            assert (c["fork_mode"], c["rmap"]) == (name.split("+")[0], name.endswith("rmap"))
            assert len(c["fork_ns"]) == len(c["exit_ns"]) == e["repeats"]
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
        assert r["copy_rmap_over_copy"] == pytest.approx(
            e["configs"]["copy+rmap"]["fork_ns_median"] / e["configs"]["copy"]["fork_ns_median"])
        assert set(r["linux_over"]) == set(CONFIGS)


def test_every_figure_positive(quick_run):
    _, rec, _ = quick_run
    seen = 0
    for path, v in _numbers(rec["results"]):
        assert v > 0 and math.isfinite(v), (path, v)
        seen += 1
    assert seen > 100
    for t in rec["targets"]:
        # (the flatness target's value is a difference of two medians: signed)
        if t["met"] is not None and "ns_per_added_page" not in t:
            assert t["value"] > 0, t
    for p in rec["published"]:
        if p.get("measured") is not None:
            assert p["measured"] > 0, p


def test_text_table(quick_run):
    out, rec, _ = quick_run
    header = out.splitlines()[3]
    for col in ("pages", "config", "fork ms", "ns/page", "Linux/this", "c+r/this",
                "tables", "chain nodes", "frames"):
        assert col in header, col
    for e in rec["results"]:
        assert f"{e['pages']:,}  Linux" in out
    for name in CONFIGS:
        assert f"  {name} " in out
    assert "Targets" in out and "Published figures" in out
    # Published figures are quoted with their sources.
    assert "McCracken" in out and "Torvalds" in out


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib not installed (the plot extra)")
def test_plot_png(quick_run):
    _, _, png = quick_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [
    ["compare", "--sizes", "0"],
    ["compare", "--sizes", "abc"],
    ["compare", "--repeats", "-1"],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_size_beyond_user_space(capsys):
    assert cli.main(["compare", "--sizes", "786433", "--no-progress"]) == 2
    assert "786,432" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "compare" in capsys.readouterr().out


def test_sizes_parser():
    assert cli._sizes("1k, 4096,16_384") == [1024, 4096, 16384]
