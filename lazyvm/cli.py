"""The ``lazyvm`` command: ``compare``, ``run`` and ``bench``.

    lazyvm compare [--quick] [--sizes N,N,...] [--repeats R] [--json FILE] [--plot FILE.png]
    lazyvm run --list
    lazyvm run NAME [--quick] [--json FILE] [--param KEY=VALUE ...]
    lazyvm bench [pytest arguments...]

Also ``python -m lazyvm ...``.  :func:`main` returns the exit status.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
from pathlib import Path


def _sizes(text: str) -> list[int]:
    """'1024,4096,16k' -> [1024, 4096, 16384]; underscores and k/M suffixes allowed."""
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        mult = 1
        if part[-1] in "kK":
            mult, part = 1024, part[:-1]
        elif part[-1] in "mM":
            mult, part = 1 << 20, part[:-1]
        try:
            n = int(part.replace("_", "")) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a page count: {part!r}") from None
        if n <= 0:
            raise argparse.ArgumentTypeError(f"page counts must be positive: {n}")
        out.append(n)
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {n}")
    return n


def _param(text: str) -> tuple[str, object]:
    """KEY=VALUE, VALUE read as a Python literal when it is one (42, 0.5, True, 'x'),
    else kept as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazyvm",
        description="Simulated Linux i386 virtual memory: lazy page-table sharing at fork "
                    "against eager copying, with and without rmap.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cp = sub.add_parser(
        "compare", help="fork in every configuration beside this machine's own fork()",
        description="For each size, fork a process of N touched pages in every "
                    "configuration (copy, copy+rmap, share, share+rmap) and fork a real "
                    "process of N touched pages on this machine; print a table and the "
                    "ratios beside the published ones.")
    cp.add_argument("--quick", action="store_true",
                    help="small sizes and few repeats (about 10 s)")
    cp.add_argument("--sizes", type=_sizes, metavar="N,N,...",
                    help="touched pages per size (k = 1024), at most 786432 "
                         "(default: 1k,4k,10k,16k,64k,256k,768k)")
    cp.add_argument("--repeats", type=_positive_int, metavar="R",
                    help="timed forks per measurement (default: by size)")
    cp.add_argument("--json", metavar="FILE", help="write every figure to FILE as JSON")
    cp.add_argument("--plot", metavar="FILE.png",
                    help="draw fork latency against pages (needs matplotlib)")
    cp.add_argument("--check", action="store_true",
                    help="run Machine.check() on every machine after measuring it")
    cp.add_argument("--no-progress", action="store_true", help="no progress bar")

    rp = sub.add_parser("run", help="run a named workload",
                        description="Run one of lazyvm's workloads and print its results.")
    rp.add_argument("name", nargs="?", help="workload name (see --list)")
    rp.add_argument("--list", action="store_true", help="list the workloads")
    rp.add_argument("--quick", action="store_true", help="a small, fast version")
    rp.add_argument("--json", metavar="FILE", help="write the results to FILE as JSON")
    rp.add_argument("--param", "-p", type=_param, action="append", default=[],
                    metavar="KEY=VALUE", help="a workload parameter (repeatable)")
    rp.add_argument("--configs", metavar="NAME,NAME",
                    help="configurations to run (copy, copy+rmap, share, share+rmap; "
                         "default all)")
    rp.add_argument("--check", action="store_true",
                    help="run Machine.check() after every iteration (untimed)")

    bp = sub.add_parser("bench", help="run the benchmarks (pytest-benchmark)",
                        usage="lazyvm bench [pytest arguments ...]",
                        description="Run `pytest bench/ --benchmark-only` from a source "
                                    "checkout; extra arguments go to pytest.")
    bp.set_defaults(pytest_args=[])  # every argument after `bench` goes to pytest
    return parser


def cmd_compare(args) -> int:
    from . import compare

    if args.plot:  # fail before a long run, not after it
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("lazyvm compare: --plot needs matplotlib: "
                  "pip install 'lazyvm[plot]' (or pip install matplotlib)", file=sys.stderr)
            return 2
    try:
        record = compare.run_compare(sizes=args.sizes, repeats=args.repeats,
                                     quick=args.quick, progress=not args.no_progress,
                                     check=args.check)
    except ValueError as e:
        print(f"lazyvm compare: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(compare.format_report(record))
    if args.json:
        compare.write_json(record, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        compare.plot(record, args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_run(args) -> int:
    try:
        from . import workloads
    except ImportError as e:
        print(f"lazyvm run: workloads are not available: {e}", file=sys.stderr)
        return 2
    if args.list or not args.name:
        if not args.list:
            print("lazyvm run: name a workload; these are available:", file=sys.stderr)
        import textwrap
        names = sorted(workloads.WORKLOADS)
        width = max((len(n) for n in names), default=0)
        for name in names:
            doc = " ".join((workloads.WORKLOADS[name].__doc__ or "").split())
            print(textwrap.fill(doc, 88, initial_indent=name.ljust(width) + "  ",
                                subsequent_indent=" " * (width + 2)) if doc else name)
        return 0 if args.list else 2
    if args.name not in workloads.WORKLOADS:
        print(f"lazyvm run: no workload {args.name!r}; try: lazyvm run --list",
              file=sys.stderr)
        return 2
    params = dict(args.param)
    known = getattr(workloads.WORKLOADS[args.name], "defaults", None)
    unknown = sorted(set(params) - set(known)) if known is not None else []
    if unknown:
        print(f"lazyvm run {args.name}: no parameter {', '.join(unknown)} "
              f"(it takes {', '.join(known)})", file=sys.stderr)
        return 2
    if args.quick:
        params["quick"] = True
    if args.check:
        params["check"] = True
    if args.configs:
        params["configs"] = [c for c in args.configs.replace(" ", "").split(",") if c]
        valid = getattr(workloads, "CONFIGS", None)
        bad = [c for c in params["configs"] if valid is not None and c not in valid]
        if bad:
            print(f"lazyvm run: unknown configuration {', '.join(bad)}", file=sys.stderr)
            return 2
    results = workloads.run_workload(args.name, **params)
    print(workloads.format_results(results))
    if args.json:
        from .compare import write_json
        write_json(results, args.json)
        print(f"wrote {args.json}")
    return 0


def _bench_dir() -> Path:
    """bench/ beside the package's source directory (a source checkout)."""
    return Path(__file__).resolve().parent.parent / "bench"


def cmd_bench(args) -> int:
    bench = _bench_dir()
    if not bench.is_dir():
        print("lazyvm bench: the benchmarks live in the source tree, not the installed "
              "package.\nFrom a checkout: pip install pytest pytest-benchmark && "
              "pytest bench/ --benchmark-only", file=sys.stderr)
        return 2
    extra = [a for a in args.pytest_args if a != "--"]
    cmd = [sys.executable, "-m", "pytest", str(bench), "--benchmark-only", *extra]
    print("+ " + " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=str(bench.parent))


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.pytest_args = extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    if args.command is None:
        parser.print_help()
        return 2
    handler = {"compare": cmd_compare, "run": cmd_run, "bench": cmd_bench}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
