"""``lazyvm replay``: fork a captured address space in every configuration."""

from __future__ import annotations

import importlib.util
import sys

from ..layout import LAYOUTS
from ..workloads.snapshot import (Snapshot, SnapshotError, format_replay, plot_replay,
                                  replay, write_json)
from .common import UsageError


def add_parser(sub) -> None:
    rp = sub.add_parser(
        "replay", help="fork a captured address space in every configuration",
        description="Build a snapshot's address space (x86_64 at its real addresses, or "
                    "relocated into i386/pae's 3 GiB), fork it in copy, copy+rmap, share "
                    "and share+rmap, write the recorded copy-on-write set, and print the "
                    "counters beside the kernel's recorded figures.")
    rp.add_argument("file", metavar="FILE", help="a snapshot written by lazyvm capture")
    rp.add_argument("--layout", choices=tuple(LAYOUTS), default=None,
                    help="paging layout (default x86_64 when the core has it, else i386)")
    rp.add_argument("--costs", metavar="PROFILE",
                    help="predict kernel time with a cost profile (host, linux-2.5.41, "
                         "or a JSON file)")
    rp.add_argument("--configs", metavar="NAME,NAME",
                    help="configurations (default copy,copy+rmap,share,share+rmap)")
    rp.add_argument("--repeats", type=int, default=3, metavar="R",
                    help="forks timed per configuration (median; default 3)")
    rp.add_argument("--json", metavar="F", help="write every figure to F as JSON")
    rp.add_argument("--plot", metavar="F", help="draw the configurations to F (PNG)")
    rp.set_defaults(handler=cmd_replay)


def cmd_replay(args) -> int:
    try:
        snap = Snapshot.load(args.file)
    except SnapshotError as e:
        raise UsageError(str(e)) from None
    configs = None
    if args.configs:
        configs = [c for c in args.configs.replace(" ", "").split(",") if c]
    if args.repeats is not None and args.repeats < 1:
        raise UsageError("--repeats must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install matplotlib")
    try:
        rec = replay(snap, layout=args.layout, costs=args.costs, configs=configs,
                     repeats=args.repeats)
    except SnapshotError as e:
        raise UsageError(str(e)) from None
    sys.stdout.write(format_replay(rec))
    if args.json:
        write_json(rec, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_replay(rec, args.plot)
        print(f"wrote {args.plot}")
    return 0
