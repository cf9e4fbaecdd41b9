"""Scenarios that must be refused with one ScenarioError (a ValueError) line before
anything runs, a Python scenario that is run once, and a page that still parses when a
note holds markup."""
import json
import re
import subprocess
import sys

import pytest

from lazyvm.view import ScenarioError, build, chromium, page_html, scenario

from subproc import LAZYVM_ENV, NEUTRAL_CWD

HEAD = "[[step]]\ndo = 'spawn'\nas = 'p'\n"
MMAP = HEAD + "[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = 8192\nas = 'a'\n"

BAD_TOML = {
    "as a list": ("[[step]]\ndo = 'spawn'\nas = [1]\n", "as"),
    "pages a word": (MMAP + "[[step]]\ndo = 'write'\nproc = 'p'\nat = 'a'\npages = 'two'\n",
                     "pages"),
    "pages zero": (MMAP + "[[step]]\ndo = 'touch'\nproc = 'p'\nat = 'a'\npages = 0\n",
                   "pages"),
    "page negative": (MMAP + "[[step]]\ndo = 'touch'\nproc = 'p'\nat = 'a'\npage = -1\n",
                      "page"),
    "page a float": (MMAP + "[[step]]\ndo = 'touch'\nproc = 'p'\nat = 'a'\npage = 1.5\n",
                     "page"),
    "title a number": ("title = 5\n" + HEAD, "title"),
    "about a table": ("about = {x = 1}\n" + HEAD, "about"),
    "step title a number": ("[[step]]\ndo = 'spawn'\ntitle = 5\n", "title"),
    "note a list": ("[[step]]\ndo = 'spawn'\nnote = ['<b>']\n", "note"),
    "proc a number": (HEAD + "[[step]]\ndo = 'exit'\nproc = 1\n", "proc"),
    "length a list": (HEAD + "[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = [1]\n", "length"),
    "length a word": (HEAD + "[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = 'big'\n", "length"),
    "at a float": (MMAP + "[[step]]\ndo = 'touch'\nproc = 'p'\nat = 1.5\n", "at"),
    "prot a number": (MMAP + "[[step]]\ndo = 'mprotect'\nproc = 'p'\nat = 'a'\nprot = 4\n",
                      "prot"),
    "write a string": (MMAP + "[[step]]\ndo = 'touch'\nproc = 'p'\nat = 'a'\nwrite = 'yes'\n",
                       "write"),
    "shared a string": (HEAD + "[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = 4096\n"
                        "shared = 'no'\n", "shared"),
    "data a number": (MMAP + "[[step]]\ndo = 'write'\nproc = 'p'\nat = 'a'\ndata = 5\n",
                      "data"),
    "mode a number": (HEAD + "[[step]]\ndo = 'fork'\nproc = 'p'\nmode = 1\n", "mode"),
    "reclaim n a word": ("[machine]\nswap = '1M'\n" + HEAD +
                         "[[step]]\ndo = 'reclaim'\nn = 'all'\n", "n"),
    "memory 16384G": ("[machine]\nmemory = '16384G'\n" + HEAD, "memory"),
    "memory 16384G x86_64": ("[machine]\nmemory = '16384G'\nlayout = 'x86_64'\n" + HEAD,
                             "memory"),
    "memory empty": ("[machine]\nmemory = ''\n" + HEAD, "memory"),
    "steps a table": ("[step]\ndo = 'spawn'\n", "step"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOML))
def test_bad_toml_scenario_is_one_scenario_error(tmp_path, case):
    text, word = BAD_TOML[case]
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ScenarioError) as exc:
        build(scenario.load(str(f)))
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert "\n" not in msg and word in msg, msg


def test_non_utf8_toml_is_one_scenario_error(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_bytes(b"title = '\xff\xfe'\n" + HEAD.encode())
    with pytest.raises(ScenarioError, match="UTF-8") as exc:
        scenario.load(str(f))
    assert "\n" not in str(exc.value)


PY_COUNTS = """
import os
with open(os.environ["LAZYVM_TEST_COUNT"], "a") as f:
    f.write("ran\\n")
SCENARIO = {"step": [{"do": "spawn", "as": "p"},
                     {"do": "mmap", "proc": "p", "length": 4096, "as": "a"},
                     {"do": "touch", "proc": "p", "at": "a"}]}
"""


def _show(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lazyvm", "show", *map(str, args)],
                          capture_output=True, text=True, cwd=NEUTRAL_CWD,
                          env=env or LAZYVM_ENV)


def test_a_python_scenario_is_run_once(tmp_path):
    f = tmp_path / "s.py"
    f.write_text(PY_COUNTS)
    count = tmp_path / "count"
    env = dict(LAZYVM_ENV, LAZYVM_TEST_COUNT=str(count))
    r = _show(f, "--html", tmp_path / "s.html", "--svg", tmp_path / "s.svg", env=env)
    assert r.returncode == 0, r.stderr
    assert count.read_text() == "ran\n"


@pytest.mark.parametrize("code, word", [("raise SystemExit(0)", "SystemExit"),
                                        ("import sys; sys.exit(3)", "SystemExit"),
                                        ("1/0", "ZeroDivisionError")])
def test_a_python_scenario_that_exits_is_an_error(tmp_path, code, word):
    f = tmp_path / "s.py"
    f.write_text(code + "\n")
    with pytest.raises(ScenarioError, match=word):
        scenario.load(str(f))
    r = _show(f, "--html", tmp_path / "s.html")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and word in r.stderr
    assert not (tmp_path / "s.html").exists()


def test_help_and_docs_say_a_python_scenario_is_run_as_code():
    r = subprocess.run([sys.executable, "-m", "lazyvm", "show", "--help"],
                       capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert "run as Python code" in " ".join(r.stdout.split())
    from pathlib import Path
    docs = Path(__file__).resolve().parents[2] / "docs" / "SHOW.md"
    assert "run as Python code" in " ".join(docs.read_text().split())


MARKUP = "<!--<script> and </script> & <b>"


def _scenario_with_markup(tmp_path):
    f = tmp_path / "note.toml"
    f.write_text(f"title = {json.dumps(MARKUP)}\n" + HEAD +
                 f"note = {json.dumps(MARKUP)}\n"
                 "[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = 4096\n"
                 f"title = {json.dumps(MARKUP)}\n")
    return f


def test_the_data_blob_holds_no_markup(tmp_path):
    html = page_html(str(_scenario_with_markup(tmp_path)))
    blob = re.search(r'<script type="application/json" id="lz-data">(.*?)</script>', html,
                     re.S).group(1)
    assert "</" not in blob and "<!" not in blob
    data = json.loads(blob)
    assert data["steps"][0]["note"] == MARKUP
    assert html.count("</script>") == 3


@pytest.mark.skipif(chromium() is None, reason="Chromium not found")
def test_a_note_holding_markup_still_renders(tmp_path):
    from lazyvm.view import run_chromium
    out = tmp_path / "note.html"
    out.write_text(page_html(str(_scenario_with_markup(tmp_path))))
    dom = run_chromium(["--dump-dom", out.resolve().as_uri() + "#step=1"]).decode()
    tag = re.search(r"<html[^>]*>", dom).group(0)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag))
    assert attrs.get("data-ready") == "1", "the page's script did not run"
    assert attrs.get("data-errors") == "", attrs.get("data-errors")
