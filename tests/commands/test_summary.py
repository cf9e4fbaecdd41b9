"""compare and run open with the answer: a summary of at most 25 lines (no wider than
100 columns) that sets what sharing saves and costs beside this machine's fork and says
how sure each figure is; every table follows under --full."""

import json

import pytest

from lazyvm import commands as cli
from lazyvm.report import compare

LIMIT = 25
TINY = {"fork_exit": ["-p", "pages=64", "-p", "iterations=3"],
        "fork_exec": ["-p", "iterations=3"],
        "snapshot": ["-p", "pages=256", "-p", "iterations=2"],
        "prefork": ["-p", "pages=256", "-p", "children=2", "-p", "iterations=2"],
        "small_fork": ["-p", "iterations=5"],
        "published": ["-p", "big_iterations=1", "-p", "small_iterations=2"]}


def _lines(text):
    return text.rstrip("\n").splitlines()


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    js = tmp_path_factory.mktemp("cmp") / "c.json"
    import contextlib
    import io
    outs = {}
    for full in (False, True):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            argv = ["compare", "--sizes", "1024,8192", "--repeats", "3", "--no-progress",
                    "--json", str(js)] + (["--full"] if full else [])
            assert cli.main(argv) == 0
        outs[full] = buf.getvalue()
    return outs, json.loads(js.read_text())


def test_compare_opens_with_a_summary_of_at_most_25_lines(compare_run):
    outs, rec = compare_run
    summary = _lines(outs[False])[:-1]              # the last line: "wrote FILE"
    assert len(summary) <= LIMIT, "\n".join(summary)
    assert all(len(line) <= 100 for line in summary)
    text = "\n".join(summary)
    for phrase in ("predicted kernel fork", "first write", "child's tables", "Linux fork",
                   "how sure:", "- predicted kernel time:", "- Linux fork:", "--full"):
        assert phrase in text, phrase
    # --full (the run that wrote the JSON): the same summary, then every table
    full = _lines(outs[True])
    again = _lines(compare.format_summary(rec))
    assert full[:len(again)] == again and len(full) > 3 * LIMIT
    assert "Findings" in outs[True] and "Findings" not in outs[False]


def test_compare_summary_without_a_profile_still_fits(compare_run):
    _, rec = compare_run
    rec = dict(rec, predicted={"profile": None, "reason": "prediction off (--costs none)"})
    text = compare.format_summary(rec)
    assert len(_lines(text)) <= LIMIT and "predicted kernel time: none" in text


def test_a_negative_marginal_cost_is_below_the_noise(compare_run):
    _, rec = compare_run
    rec = json.loads(json.dumps(rec))
    rec["results"][0]["Linux"]["ns_per_page_marginal"] = -389.8
    text = compare.format_findings(rec)
    assert "-389.8" not in text and "below noise" in text


@pytest.mark.parametrize("name", sorted(TINY))
def test_run_opens_with_a_summary_of_at_most_25_lines(name, capsys):
    for costs in ("linux-2.5.41", "none"):
        assert cli.main(["run", name, "--quick", "--costs", costs] + TINY[name]) == 0
        out = capsys.readouterr().out
        lines = _lines(out)
        assert len(lines) <= LIMIT, out
        assert all(len(line) <= 100 for line in lines), out
        assert "how sure:" in out and "per iteration" in out and "--full" in out
        assert ("  vs copy" in out) == (costs != "none")
    assert cli.main(["run", name, "--quick", "--full"] + TINY[name]) == 0
    full = capsys.readouterr().out
    assert len(_lines(full)) > LIMIT and "q1-q3" in full
