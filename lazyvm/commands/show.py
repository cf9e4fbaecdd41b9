"""``lazyvm show``: draw page tables step by step (HTML, SVG, PNG)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import view
from ..view import scenario as sc_mod
from ..workloads.builtin import WORKLOADS
from .common import UsageError

# The workloads of the registry that have a picture: `lazyvm show fork_exit` draws one
# iteration of what `lazyvm run fork_exit` and a sweep's fork_exit points run.
DRAWN = {name: w.scenario for name, w in WORKLOADS.items() if w.scenario}


def _scenario(name):
    """A workload's scenario by name, else the name itself (a built-in or a file)."""
    return DRAWN.get(name, name)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "show", help="draw page tables step by step (HTML, SVG, PNG)",
        description="Run a scenario (built-in name or .toml/.py file) and draw the "
                    "machine's processes, table trees, use counts, write-protected "
                    "entries, frames and rmap chains at every step.")
    p.add_argument("scenario", nargs="?",
                   help="built-in name, a workload of lazyvm run, or a .toml/.py file")
    p.add_argument("--html", metavar="FILE", help="write the step-by-step page")
    p.add_argument("--svg", metavar="FILE", help="write one step as SVG (with --step)")
    p.add_argument("--png", metavar="FILE", help="write one step as PNG (needs Chromium)")
    p.add_argument("--step", type=int, metavar="N", help="the step for --svg/--png "
                   "(default: the last)")
    p.add_argument("--list", action="store_true", help="list the built-in scenarios")
    p.add_argument("--toml", action="store_true",
                   help="print the scenario as TOML (a start for your own) and stop")
    p.set_defaults(handler=cmd_show)


def cmd_show(args) -> int:
    if args.list:
        for name, s in view.BUILTIN.items():
            print(f"{name:14s} {s['title']}")
        for name, s in DRAWN.items():
            print(f"{name:14s} {s['title']} (the workload of lazyvm run {name})")
        return 0
    if not args.scenario:
        raise UsageError("name a scenario (lazyvm show --list) or a .toml/.py file")
    if args.toml:
        try:
            sys.stdout.write(sc_mod.to_toml(sc_mod.load(_scenario(args.scenario))))
        except view.ScenarioError as e:
            raise UsageError(str(e)) from None
        return 0
    if not (args.html or args.svg or args.png):
        default = Path(Path(args.scenario).stem + ".html")
        args.html = str(default)
    try:
        what = _scenario(args.scenario)
        scen = sc_mod.load(what)
        step = args.step if args.step is not None else len(scen["step"])
        if args.html:
            Path(args.html).write_text(view.page_html(what), encoding="utf-8")
            print(f"wrote {args.html}")
        if args.svg:
            Path(args.svg).write_text(view.step_svg(what, step), encoding="utf-8")
            print(f"wrote {args.svg}")
        if args.png:
            view.step_png(what, step, args.png)
            print(f"wrote {args.png}")
    except view.ScenarioError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0
