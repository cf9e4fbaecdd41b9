"""``lazyvm show``: draw page tables step by step (HTML, SVG, PNG)."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import view
from ..view import scenario as sc_mod
from .common import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "show", help="draw page tables step by step (HTML, SVG, PNG)",
        description="Run a scenario (built-in name or .toml/.py file) and draw the "
                    "machine's processes, table trees, use counts, write-protected "
                    "entries, frames and rmap chains at every step.")
    p.add_argument("scenario", nargs="?", help="built-in name or a .toml/.py file")
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
        return 0
    if not args.scenario:
        raise UsageError("name a scenario (lazyvm show --list) or a .toml/.py file")
    if args.toml:
        try:
            sys.stdout.write(sc_mod.to_toml(sc_mod.load(args.scenario)))
        except view.ScenarioError as e:
            raise UsageError(str(e)) from None
        return 0
    if not (args.html or args.svg or args.png):
        default = Path(Path(args.scenario).stem + ".html")
        args.html = str(default)
    try:
        scen = sc_mod.load(args.scenario)
        step = args.step if args.step is not None else len(scen["step"])
        if args.html:
            Path(args.html).write_text(view.page_html(args.scenario), encoding="utf-8")
            print(f"wrote {args.html}")
        if args.svg:
            Path(args.svg).write_text(view.step_svg(args.scenario, step), encoding="utf-8")
            print(f"wrote {args.svg}")
        if args.png:
            view.step_png(args.scenario, step, args.png)
            print(f"wrote {args.png}")
    except view.ScenarioError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(str(e)) from None
    return 0
