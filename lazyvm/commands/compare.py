"""``lazyvm compare``: fork in every configuration beside this machine's own fork()."""

from __future__ import annotations

import sys

from ..workloads import compare
from .common import (UsageError, add_costs_option, add_machine_options, check_outputs,
                     machine_options, positive_int, profile, sizes)


def add_parser(sub) -> None:
    cp = sub.add_parser(
        "compare", help="fork in every configuration beside this machine's own fork()",
        description="For each size, fork a process of N touched pages in every "
                    "configuration (copy, copy+rmap, share, share+rmap) and fork a real "
                    "process of N touched pages on this machine; print a table with "
                    "spreads and the findings beside the published figures.")
    cp.add_argument("--quick", action="store_true",
                    help="four sizes up to 262,144 pages and few repeats (5-7 s)")
    cp.add_argument("--sizes", type=sizes, metavar="N,N,...",
                    help="touched pages per size (k = 1024), at most the layout's user "
                         "space (786432 on i386; default: 1k,4k,10k,16k,64k,256k,768k)")
    cp.add_argument("--repeats", type=positive_int, metavar="R",
                    help="timed forks per measurement before any taken for a wide "
                         "spread (default: by size)")
    cp.add_argument("--json", metavar="FILE",
                    help="write every figure to FILE as JSON (docs/JSON.md)")
    cp.add_argument("--plot", metavar="FILE.png",
                    help="draw fork latency against pages with quartile error bars "
                         "(.png, .svg or .pdf; needs matplotlib)")
    cp.add_argument("--check", action="store_true",
                    help="run Machine.check() on every machine after measuring it")
    cp.add_argument("--no-progress", action="store_true",
                    help="no progress bar (there is one only when stderr is a terminal)")
    add_costs_option(cp)
    add_machine_options(cp)
    cp.set_defaults(handler=cmd_compare)


def cmd_compare(args) -> int:
    check_outputs(args)
    opts = machine_options(args)
    prof, _, why = profile(args)
    try:
        record = compare.run_compare(sizes=args.sizes, repeats=args.repeats,
                                     quick=args.quick, progress=not args.no_progress,
                                     check=args.check, costs=prof, costs_reason=why,
                                     **opts)
    except ValueError as e:
        raise UsageError(str(e)) from None
    sys.stdout.write(compare.format_report(record))
    if args.json:
        compare.write_json(record, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        compare.plot(record, args.plot)
        print(f"wrote {args.plot}")
    return 0
