"""``lazyvm show``: a page-table view for teaching.

    lazyvm show SCENARIO --html FILE          # the whole scenario, step by step
    lazyvm show SCENARIO --svg FILE --step N  # one step (after it, changes marked)
    lazyvm show SCENARIO --png FILE --step N  # the same, through headless Chromium
    lazyvm show --list
    lazyvm show seed --toml > my.toml          # a built-in as TOML, to edit

SCENARIO is a built-in name (seed, cow, rmap, reclaim, small-process) or a .toml / .py
file (lazyvm/view/scenario.py describes the format; docs/SHOW.md has a tutorial).

    >>> from lazyvm import Machine
    >>> from lazyvm.view import machine_html
    >>> m = Machine(memory=8 << 20); p = m.spawn(); p.write(p.mmap(4096), b"x")
    >>> "use 1" in machine_html(m)
    True
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import model, render, scenario as sc_mod
from .builtin import BUILTIN
from .scenario import ScenarioError

__all__ = ["build", "page_html", "step_svg", "machine_html", "snapshot",
           "chromium", "screenshot", "BUILTIN", "ScenarioError"]

snapshot = model.snapshot


def build(scenario):
    """Run a scenario dict; return (states, diffs): states[0] before step 1,
    states[k] after step k, diffs[k-1] between them."""
    states = []
    sc_mod.run(scenario, lambda m, st: states.append(model.snapshot(m)))
    diffs = [model.diff(a, b) for a, b in zip(states, states[1:])]
    return states, diffs


def page_html(name_or_path):
    """The self-contained HTML page of a scenario (a built-in name or a file)."""
    scen = sc_mod.load(name_or_path)
    states, diffs = build(scen)
    return render.page(scen, states, diffs, name=str(name_or_path))


def step_svg(name_or_path, step):
    """A standalone SVG of the machine after step (1-based), its changes marked."""
    scen = sc_mod.load(name_or_path)
    n = len(scen["step"])
    if not 1 <= step <= n:
        raise ScenarioError(f"--step must be 1..{n} for this scenario, not {step}")
    states, diffs = build(scen)
    d = diffs[step - 1]
    return render.svg(states[step], d["after"], d["rows_after"],
                      title=f"step {step}: {sc_mod.step_title(scen['step'][step - 1])}",
                      standalone=True)


def machine_html(machine):
    """HTML of a machine's current state (what Machine._repr_html_ returns)."""
    return render.machine_page(model.snapshot(machine), title=repr(machine))


# -- Chromium -----------------------------------------------------------------------

def chromium():
    """The path of a Chromium/Chrome binary, or None."""
    env = os.environ.get("LAZYVM_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_args(binary, profile_dir):
    args = [binary, "--headless", "--disable-gpu", "--no-first-run",
            "--disable-extensions", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile_dir}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")             # Chromium refuses to run as root otherwise
    return args


def run_chromium(extra, timeout=60):
    """Run headless Chromium with extra arguments; return its stdout (bytes)."""
    binary = chromium()
    if binary is None:
        raise ScenarioError("this needs Chromium (Debian: apt-get install chromium; or set "
                            "LAZYVM_CHROMIUM to a Chrome binary)")
    with tempfile.TemporaryDirectory(prefix="lazyvm-chromium-") as prof:
        r = subprocess.run(chromium_args(binary, prof) + extra, capture_output=True,
                           timeout=timeout)
    if r.returncode != 0:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise ScenarioError(f"chromium failed (status {r.returncode}): {tail[0]}")
    return r.stdout


def screenshot(html_or_svg_path, png_path, width, height):
    """Screenshot a local file with headless Chromium."""
    url = Path(html_or_svg_path).resolve().as_uri()
    run_chromium([f"--screenshot={Path(png_path).resolve()}",
                  f"--window-size={int(width)},{int(height)}", url])
    if not Path(png_path).is_file():
        raise ScenarioError("chromium wrote no screenshot")


def step_png(name_or_path, step, png_path):
    text = step_svg(name_or_path, step)
    import re
    m = re.search(r'width="(\d+)" height="(\d+)"', text)
    w, h = (int(m.group(1)), int(m.group(2))) if m else (1400, 900)
    with tempfile.TemporaryDirectory(prefix="lazyvm-png-") as tmp:
        f = Path(tmp) / "step.html"
        f.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><style>'
                     'body{margin:0;background:#fff}</style></head><body>' +
                     text.split("?>", 1)[-1] + "</body></html>")
        screenshot(f, png_path, w, h)
