"""``lazyvm sweep``: one workload over a grid of parameters (local processes or Dask)."""

from __future__ import annotations

import os
import sys
import time

from ..workloads import sweep as sw
from .common import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run a workload over a grid of parameters (local processes or Dask)",
        description="Run one point per parameter combination of SPEC (TOML: [grid], "
                    "[fixed], [[points]]), each in a fresh process; write one row a point "
                    "to FILE (.parquet or .csv). Points already in FILE are skipped.")
    p.add_argument("spec", metavar="SPEC", help="the sweep's TOML file")
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="a Dask scheduler (tcp://host:8786) instead of a LocalCluster")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   metavar="N", help="worker processes (local, or the LocalCluster's)")
    p.add_argument("--out", required=True, metavar="FILE", help="results, .parquet or .csv")
    p.add_argument("--plot", metavar="F.png", help="draw --y against --x")
    p.add_argument("--x", metavar="PARAM", default="pages")
    p.add_argument("--y", metavar="FIGURE", default="sim_ns")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args) -> int:
    try:
        if args.workers < 1:
            raise sw.SpecError("--workers must be at least 1")
        if args.scheduler and args.executor != "dask":
            raise sw.SpecError("--scheduler needs --executor dask")
        sw.check_out(args.out)
        points = sw.load_spec(args.spec)
        t0 = time.perf_counter()
        df = sw.sweep(points, args.out, executor=args.executor, workers=args.workers,
                      scheduler=args.scheduler,
                      progress=False if args.no_progress else None)
        took = time.perf_counter() - t0
        failed = int((df["error"] != "").sum()) if len(df) else 0
        print(f"{len(df)} points in {args.out} ({len(points)} in SPEC, {failed} failed; "
              f"{took:.1f} s)")
        if failed:
            first = df[df["error"] != ""].iloc[0]["error"]
            print(f"first failure: {first}", file=sys.stderr)
        if args.plot:
            sw.plot(df, args.plot, args.x, args.y)
            print(f"wrote {args.plot}")
    except sw.SpecError as e:
        raise UsageError(str(e)) from None
    except ImportError as e:
        raise UsageError(f"needs pandas: pip install 'lazyvm[sweep]' ({e})") from None
    return 0
