"""lazyvm show: the snapshot model against the machine's own entries and counts, the
scenario format and its errors, the SVG, and every built-in page rendered in headless
Chromium (DOM, console errors, step navigation, chains, a non-blank screenshot)."""
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from subproc import LAZYVM_ENV, NEUTRAL_CWD

from lazyvm import Machine
from lazyvm.view import (BUILTIN, ScenarioError, build, chromium, machine_html, page_html,
                         snapshot, step_svg)
from lazyvm.view import _adapter as ad
from lazyvm.view import model, scenario

ROOT = Path(__file__).resolve().parents[2]


def _seed_states():
    return build(scenario.load("seed"))


# -- the model ----------------------------------------------------------------------

def test_share_fork_is_one_table_node_with_use_two_and_ro_entries():
    states, diffs = _seed_states()
    st = states[5]                                   # after the share fork
    p, c = st["procs"]
    m = Machine(memory=16 << 20)                     # replay the steps independently
    pp = m.spawn(); a = pp.mmap(8 << 20)
    for i in range(4):
        pp.write(a + i * 4096, b"x")
    for i in (1024, 1025):
        pp.write(a + i * 4096, b"x")
    cc = pp.fork()
    table = pp.pde(a) >> 12
    assert cc.pde(a) >> 12 == table
    node = st["nodes"][f"t{table}"]
    assert node["use"] == m.frame_count(table) == 2
    assert sorted(node["owners"]) == [p["pid"], c["pid"]]
    for proc in (p, c):
        rows = st["nodes"][proc["key"]]["rows"]
        users = [r for r in rows if r["target"]]
        assert [r["flag"] for r in users] == ["RO", "RO"]
        assert users[0]["target"] == f"t{table}"
    # the diff says what the seed says fork does
    d = diffs[4]
    assert f"pte table #{table}: use 1 \u2192 2" in d["changes"]
    assert d["stats"]["forks"] == [0, 1]
    assert not any(k.startswith("f") and v == "new" for k, v in d["after"].items())


def test_privatize_last_sharer_and_exit_fast_path_as_drawn():
    states, diffs = _seed_states()
    before, after = states[5], states[6]             # child writes page 0
    new_tables = [k for k, v in diffs[5]["after"].items()
                  if v == "new" and after["nodes"][k]["kind"] == "table"]
    assert len(new_tables) == 1
    t = after["nodes"][new_tables[0]]
    assert t["use"] == 1 and t["owners"] == [after["procs"][1]["pid"]]
    assert diffs[5]["stats"]["unshares"] == [0, 1]
    # frames the privatized table copied gained a reference and a chain slot
    shared_frames = [n for n in after["nodes"].values()
                     if n["kind"] == "frame" and n["ref"] == 2]
    assert len(shared_frames) == 3 and all(len(n["chain"]) == 2 for n in shared_frames)
    # last sharer: the parent's PDE gets RW back without a copy
    assert diffs[6]["stats"].get("unshare_reuses") == [0, 1]
    assert "unshares" not in diffs[6]["stats"]
    parent_rows = states[7]["nodes"][states[7]["procs"][0]["key"]]["rows"]
    assert parent_rows[0]["flag"] == "RW"
    # exit of a sharer: one use dropped, its private table freed
    d = diffs[7]
    assert d["stats"]["tables_dropped"][1] - d["stats"]["tables_dropped"][0] == 1
    gone = [k for k, v in d["before"].items() if v == "gone"]
    assert any(states[7]["nodes"][k]["kind"] == "table" for k in gone)
    assert len(states[8]["procs"]) == 1


def test_snapshot_agrees_with_pde_pte_and_counts():
    m = Machine(memory=16 << 20, fork_mode="copy", swap=1 << 20)
    p = m.spawn(); a = p.mmap(64 << 10); p.write(a, b"x" * 4096 * 5)
    p.touch(a + 5 * 4096, 4096)                      # ZERO_PAGE
    c = p.fork(); c.mprotect(a + 4096, 4096, "")
    st = snapshot(m)
    for proc in (p, c):
        t = proc.pde(a) >> 12
        node = st["nodes"][f"t{t}"]
        for r in node["rows"]:
            for i in range(r["lo"], r["hi"] + 1):
                pte = proc.pte(a + i * 4096)
                f = pte >> 12
                tgt = st["nodes"][r["target"]]
                if tgt["kind"] == "frame":
                    assert tgt["pfn"] == f and tgt["ref"] == m.frame_count(f)
                    if f >= m.boot_frames:
                        assert sorted(map(tuple, tgt["chain"])) == sorted(m.rmap(f))
                assert r["flag"] == ("PROTNONE" if not pte & 1 else
                                     "RW" if pte & 2 else "RO")
    zero = [n for n in st["nodes"].values() if n.get("fkind") == "reserved"]
    assert len(zero) == 1 and "chain" not in zero[0]


def test_use_counts_fast_path_equals_frame_count():
    m = Machine(memory=16 << 20)
    p = m.spawn(); a = p.mmap(8 << 20); p.touch(a, 8 << 20, write=True); p.fork()
    pf = np.arange(m.memory // 4096)
    assert ad.use_counts(m, pf).tolist() == [m.frame_count(int(f)) for f in pf]


def test_big_runs_collapse_and_page_stays_small():
    m = Machine(memory=256 << 20)
    p = m.spawn(); a = p.mmap(200 << 20); p.touch(a, 200 << 20, write=True)
    kids = [p.fork() for _ in range(3)]
    kids[0].write(a, b"x")
    st = snapshot(m)
    groups = [n for n in st["nodes"].values() if n["kind"] == "group"]
    assert groups and sum(n["count"] for n in groups if n["use"] == 4) >= 40
    sets = [n for n in st["nodes"].values() if n["kind"] == "frameset"]
    assert sum(n["n"] for n in sets) + 1024 >= 50 * 1024
    html = machine_html(m)
    assert len(html) < 200_000


def test_diff_marks_rows_and_gone_nodes():
    m = Machine(memory=16 << 20)
    p = m.spawn(); a = p.mmap(4096); p.write(a, b"x")
    s0 = snapshot(m)
    c = p.fork()
    s1 = snapshot(m)
    c.exit()
    s2 = snapshot(m)
    d1, d2 = model.diff(s0, s1), model.diff(s1, s2)
    pk = f"g{p.pgd}"
    assert d1["rows_after"][pk] == [0] and d1["after"][f"g{c.pgd}"] == "new"
    assert d2["before"][f"g{c.pgd}"] == "gone"
    assert model.diff(s2, s2) == {"after": {}, "before": {}, "rows_after": {},
                                  "rows_before": {}, "changes": [], "stats": {}}


# -- scenarios ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_runs_and_checks(name):
    sc = scenario.load(name)
    seen = []

    def on_state(m, st):
        m.check()
        seen.append(st)
    scenario.run(sc, on_state)
    assert len(seen) == len(sc["step"]) + 1


def test_small_process_privatizes_all_three_tables():
    states, diffs = build(scenario.load("small-process"))
    unshares = [d["stats"].get("unshares") for d in diffs]
    assert [u for u in unshares if u] == [[0, 1], [1, 2], [2, 3]]


TOML = """
title = "t"
[machine]
memory = "8M"
fork_mode = "copy"
[[step]]
do = "spawn"
as = "p"
[[step]]
do = "mmap"
proc = "p"
length = "16k"
as = "a"
[[step]]
do = "write"
proc = "p"
at = "a"
pages = 2
"""


def test_toml_and_python_files(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(TOML)
    states, _ = build(scenario.load(str(f)))
    assert states[-1]["stats"]["demand_zero"] == 2
    g = tmp_path / "s.py"
    g.write_text("SCENARIO = {'step': [{'do': 'spawn', 'as': 'p'}, "
                 "{'do': 'mmap', 'proc': 'p', 'length': 4096, 'as': 'a'}, "
                 "{'do': 'touch', 'proc': 'p', 'at': 'a'}]}\n")
    states, _ = build(scenario.load(str(g)))
    assert states[-1]["stats"]["zero_page_maps"] == 1


@pytest.mark.parametrize("bad, msg", [
    ("[[step]]\ndo = 'dance'\n", "'do' must be one of"),
    ("[[step]]\ndo = 'spawn'\nlength = 3\n", "unknown key 'length'"),
    ("[[step]]\ndo = 'exit'\nproc = 'q'\n", "no process named 'q'"),
    ("[machine]\nwarp = 9\n[[step]]\ndo = 'spawn'\n", "Machine does not take"),
    ("title = 'x'\n", "no steps"),
    ("[[step]\n", "not valid TOML"),
    ("[machine]\nmemory = 'lots'\n[[step]]\ndo = 'spawn'\n", "memory must be"),
    ("[[step]]\ndo = 'spawn'\nas = 'p'\n[[step]]\ndo = 'write'\nproc = 'p'\nat = 0x40000000\n",
     "SegmentationFault"),
])
def test_bad_scenarios_say_where_in_one_line(tmp_path, bad, msg):
    f = tmp_path / "bad.toml"
    f.write_text(bad)
    with pytest.raises(ScenarioError) as e:
        build(scenario.load(str(f)))
    assert msg in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("entry", [["lazyvm", "show"]])
def test_cli_errors_are_one_line_exit_2(tmp_path, entry):
    r = subprocess.run([sys.executable, "-m", *entry, "nosuch"], capture_output=True,
                       text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "no scenario 'nosuch'" in r.stderr
    assert r.stderr.startswith("lazyvm show: ") and r.stderr.count("lazyvm show:") == 1
    out = tmp_path / "c.html"
    r = subprocess.run([sys.executable, "-m", *entry, "cow", "--html", str(out)],
                       capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert r.returncode == 0 and out.stat().st_size > 10_000
    out = tmp_path / "c.svg"
    r = subprocess.run([sys.executable, "-m", "lazyvm", "show", "cow", "--svg", str(out),
                        "--step", "99"], capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert r.returncode == 2 and "--step must be 1..9" in r.stderr


def test_svg_is_well_formed_and_marks_changes():
    text = step_svg("seed", 5)
    root = ET.fromstring(text.split("?>", 1)[1])
    ns = "{http://www.w3.org/2000/svg}"
    groups = [g for g in root.iter(ns + "g") if "node" in g.get("class", "").split()]
    uses = [g.get("data-use") for g in groups if g.get("data-kind") == "table"]
    assert uses == ["2", "2"]
    assert any("shared" in g.get("class") for g in groups)
    assert any("m-row" in g.get("class", "") for g in root.iter(ns + "g"))
    assert "<style>" in text and "http://" not in text.replace(
        "http://www.w3.org/2000/svg", "")


def test_page_is_self_contained():
    html = page_html("seed")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert html.count("<template id=") == len(BUILTIN["seed"]["step"]) + 1


# -- in a real browser ----------------------------------------------------------------

CHROMIUM = chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium; or set "
                             "LAZYVM_CHROMIUM): the browser tests need it")


def _dom(path, fragment=""):
    from lazyvm.view import run_chromium
    return run_chromium(["--dump-dom", path.resolve().as_uri() + fragment]).decode()


def _root_attrs(dom):
    tag = re.search(r"<html[^>]*>", dom).group(0)
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag))


@needs_chromium
@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_page_renders_in_chromium_without_errors(tmp_path, name):
    f = tmp_path / f"{name}.html"
    f.write_text(page_html(name))
    nsteps = len(BUILTIN[name]["step"])
    states, _ = build(scenario.load(name))
    last = max(range(1, nsteps + 1), key=lambda k: (len(states[k]["nodes"]), k))
    dom = _dom(f, f"#step={last}")
    attrs = _root_attrs(dom)
    assert attrs.get("data-ready") == "1", "the page's script did not finish"
    assert attrs.get("data-errors") == "", attrs.get("data-errors")
    assert attrs.get("data-current-step") == str(last)
    assert dom.count('<li class="on">') == 1 and len(re.findall(r"<li[ >]", dom)) >= nsteps
    after = dom.split('id="after"', 1)[1].split("</svg>", 1)[0]
    assert 'data-kind="pgd"' in after
    want = sorted(str(n["use"]) for n in states[last]["nodes"].values() if n["kind"] == "table")
    got = sorted(re.findall(r'data-kind="table" data-use="(\d+)"', after))
    assert got == want
    assert "Step %d of %d" % (last, nsteps) in dom


@needs_chromium
@pytest.mark.parametrize("name", ["seed", "rmap"])
def test_buttons_keys_and_clicks_drive_the_page(tmp_path, name):
    f = tmp_path / f"{name}.html"
    f.write_text(page_html(name))
    attrs = _root_attrs(_dom(f, "#selftest"))
    assert attrs.get("data-errors") == ""
    assert attrs.get("data-selftest") == "ok", attrs.get("data-selftest")
    assert attrs.get("data-chain-shown")       # a frame was clicked and its chain shown


@needs_chromium
def test_step_navigation_and_chain_on_demand(tmp_path):
    f = tmp_path / "rmap.html"
    f.write_text(page_html("rmap"))
    states, _ = build(scenario.load("rmap"))
    frame = next(n for n in states[5]["nodes"].values()
                 if n["kind"] == "frame" and len(n.get("chain", ())) == 3)
    dom = _dom(f, f"#step=5&chain={frame['pfn']}")
    attrs = _root_attrs(dom)
    assert attrs["data-current-step"] == "5" and attrs["data-errors"] == ""
    pfn, slots, hits = attrs["data-chain-shown"].split(":")
    assert (int(pfn), int(slots), int(hits)) == (frame["pfn"], 3, 3)
    assert "chain of 3 slots" in dom
    dom2 = _dom(f, "#step=2")
    assert _root_attrs(dom2)["data-current-step"] == "2"


@needs_chromium
def test_a_broken_page_is_caught(tmp_path):
    f = tmp_path / "broken.html"
    f.write_text(page_html("cow").replace("var cur=1", "var cur=1;undefinedFunction()"))
    attrs = _root_attrs(_dom(f))
    assert "undefinedFunction" in attrs.get("data-errors", "")
    assert attrs.get("data-ready") is None


@needs_chromium
def test_screenshot_is_not_blank(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image", reason="reading the PNG needs matplotlib")
    png = tmp_path / "seed.png"
    r = subprocess.run([sys.executable, "-m", "lazyvm", "show", "seed", "--png", str(png),
                        "--step", "6"], capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    img = mpimg.imread(str(png))
    assert img.shape[0] > 300 and img.shape[1] > 600
    gray = img[..., :3].mean(axis=2)
    assert (gray < 0.5).mean() > 0.005          # dark text and lines
    assert len(np.unique((img[..., :3] * 255).astype(int).reshape(-1, 3), axis=0)) > 20


def test_doctests_of_the_package():
    import doctest
    import lazyvm.view
    r = doctest.testmod(lazyvm.view, optionflags=doctest.ELLIPSIS)
    assert r.attempted > 0 and r.failed == 0


BIG = {"title": "A 4-process 3 GiB machine",
       "machine": {"memory": "4G", "fork_mode": "share", "rmap": True},
       "step": [{"do": "spawn", "as": "p"},
                {"do": "mmap", "proc": "p", "length": "3G", "addr": 0, "as": "a"},
                {"do": "touch", "proc": "p", "at": "a", "pages": 786432, "write": True},
                {"do": "fork", "proc": "p", "as": "c1"},
                {"do": "fork", "proc": "p", "as": "c2"},
                {"do": "fork", "proc": "p", "as": "c3"},
                {"do": "write", "proc": "c1", "at": "a", "pages": 3},
                {"do": "write", "proc": "c2", "at": "a", "page": 400000},
                {"do": "touch", "proc": "c3", "at": "a", "page": 100000, "pages": 20000,
                 "write": True}]}


def test_a_4_process_3gib_page_stays_under_5mb(tmp_path):
    from lazyvm.view import render
    sc = scenario.validate(BIG)
    states, diffs = build(sc)
    assert states[-1]["stats"]["page_tables"] > 768 and len(states[-1]["procs"]) == 4
    html = render.page(sc, states, diffs, name="big")
    assert len(html.encode()) < 5 << 20
    if CHROMIUM is not None:
        f = tmp_path / "big.html"
        f.write_text(html)
        attrs = _root_attrs(_dom(f, f"#step={len(BIG['step'])}"))
        assert attrs.get("data-ready") == "1" and attrs.get("data-errors") == ""


HAS_LAYOUTS = "layout" in __import__("inspect").signature(Machine).parameters
needs_layouts = pytest.mark.skipif(not HAS_LAYOUTS, reason="this lazyvm's Machine has no "
                                   "layout= (0.2.0): pae/x86_64 views need it")


def _check_against_walk(m, st, procs_addrs):
    """Every walk of p.walk(addr) is a path of rows in the snapshot."""
    for proc, addr in procs_addrs:
        path = proc.walk(addr)
        key = f"g{proc.pgd}"
        for level, table, index, entry in path:
            node = st["nodes"][key]
            assert node["pfn"] == table and node["level"] == level
            rows = [r for r in node["rows"] if r["lo"] <= index <= r["hi"]]
            if entry == 0:                   # an empty entry is in no row that points
                assert not [r for r in rows if r["target"]]
                break
            row, = rows
            key = row["target"]
            if level == 1:
                assert st["nodes"][key].get("pfn", st["nodes"][key].get("lo")) == \
                    (int(entry) >> 12) & ((1 << 40) - 1)
            else:
                assert key == f"t{(int(entry) >> 12) & ((1 << 40) - 1)}"
                assert st["nodes"][key]["use"] == m.frame_count(int(entry) >> 12 & ((1 << 40) - 1))


@needs_layouts
@pytest.mark.parametrize("layout, share_level", [("i386", 1), ("pae", 1), ("x86_64", 1),
                                                 ("x86_64", 2), ("x86_64", 3)])
def test_layout_views_follow_the_walk(layout, share_level, tmp_path):
    m = Machine(memory=32 << 20, layout=layout, share_level=share_level)
    p = m.spawn(); a = p.mmap(8 << 20)
    for i in (0, 1, 2, 600, 1500):
        p.write(a + i * 4096, b"x")
    c = p.fork()
    st = snapshot(m)
    assert {n["col"] for n in st["nodes"].values()} == set(range(m.layout.levels + 1))
    addrs = [a + i * 4096 for i in (0, 1, 600, 1500, 1800)]
    _check_against_walk(m, st, [(q, x) for q in (p, c) for x in addrs])
    shared = [n for n in st["nodes"].values() if n["kind"] == "table" and n["use"] > 1]
    assert shared and all(n["level"] == share_level for n in shared)
    c.write(a, b"y")
    st = snapshot(m)
    _check_against_walk(m, st, [(q, x) for q in (p, c) for x in addrs])
    if CHROMIUM is not None and (layout, share_level) in (("pae", 1), ("x86_64", 2)):
        sc = scenario.validate({**BUILTIN["seed"], "machine": {
            **BUILTIN["seed"]["machine"], "layout": layout, "share_level": share_level}})
        states, diffs = build(sc)
        from lazyvm.view import render
        f = tmp_path / "l.html"
        f.write_text(render.page(sc, states, diffs))
        attrs = _root_attrs(_dom(f, "#step=6"))
        assert attrs.get("data-ready") == "1" and attrs.get("data-errors") == ""


def test_show_command_parser_and_handler(tmp_path):
    import argparse
    from lazyvm.commands.show import add_parser
    parser = argparse.ArgumentParser(prog="lazyvm")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "s.html"
    args = parser.parse_args(["show", "cow", "--html", str(out)])
    assert args.handler(args) == 0 and out.stat().st_size > 10_000
    args = parser.parse_args(["show", "nosuch"])
    from lazyvm.commands import UsageError
    with pytest.raises(UsageError, match="no scenario 'nosuch'"):
        args.handler(args)


@needs_layouts
def test_scenario_on_a_machine_without_contents():
    sc = scenario.validate({**BUILTIN["seed"], "machine": {
        **BUILTIN["seed"]["machine"], "contents": False}})
    states, diffs = build(sc)
    assert diffs[5]["stats"]["unshares"] == [0, 1]


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_as_toml_round_trips(name, tmp_path):
    r = subprocess.run([sys.executable, "-m", "lazyvm", "show", name, "--toml"],
                       capture_output=True, text=True, cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
    assert r.returncode == 0, r.stderr
    f = tmp_path / f"{name}.toml"
    f.write_text(r.stdout)
    assert scenario.load(str(f)) == BUILTIN[name]
    a, _ = build(scenario.load(str(f)))
    b, _ = build(BUILTIN[name])
    assert [s["stats"] for s in a] == [s["stats"] for s in b]
