"""The ``lazyvm`` command: ``compare``, ``run`` and ``bench``, and the commands other
modules add (``add_commands(subparsers)`` of lazyvm.costs, lazyvm.measure.calibrate,
lazyvm.workloads.snapshot, lazyvm.view and lazyvm.workloads.sweep, when they are there).

    lazyvm --version
    lazyvm compare [--quick] [--sizes N,N,...] [--repeats R] [--json FILE] [--plot FILE.png]
                   [--costs PROFILE] [--layout {i386,pae,x86_64}] [--share-level L]
    lazyvm run --list
    lazyvm run NAME [--quick] [--json FILE] [-p KEY=VALUE ...] [--costs PROFILE]
                    [--layout ...]

``--costs`` names the cost profile of the predicted kernel time (lazyvm.costs): "host",
"linux-2.5.41", a path, or "none"; by default "host" when lazyvm calibrate wrote one,
else "linux-2.5.41".  A profile that does not load is a one-line error before any run.
    lazyvm bench [pytest arguments...]

Also ``python -m lazyvm ...``.  :func:`main` returns the exit status: 0, 2 for any
mistake on the command line (one line on stderr, never a traceback), 130 on Ctrl-C.

A command's handler is ``parser.set_defaults(handler=fn)`` with ``fn(args) -> int``;
it raises :class:`UsageError` for a mistake of the user's, which main() prints as one
line (``lazyvm COMMAND: message``) with exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

LAYOUTS = ("i386", "pae", "x86_64")
# Modules that may add commands (each with add_commands(subparsers)), in --help order.
# module -> the name its commands go by in the help
COMMAND_MODULES = {"lazyvm.costs": "costs", "lazyvm.measure.calibrate": "calibrate",
                   "lazyvm.workloads.snapshot": "snapshot", "lazyvm.view": "show",
                   "lazyvm.workloads.sweep": "sweep"}


class UsageError(Exception):
    """A mistake on the command line: main() prints it as one line, exit status 2."""


class _Formatter(argparse.HelpFormatter):
    """Help no wider than 100 columns, however wide the terminal."""

    def __init__(self, prog, **kw):
        import shutil

        kw["width"] = min(shutil.get_terminal_size().columns, 100) - 2
        super().__init__(prog, **kw)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lazyvm compare: error: ...`` and exit 2 (no
    usage block; ``--help`` gives that), and help at most 100 columns wide."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from .. import __version__

    return __version__


def _sizes(text: str) -> list:
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


def _param(text: str) -> tuple:
    """KEY=VALUE, VALUE read as a Python literal when it is one (42, 0.5, True, 'x'),
    else kept as a string (which a numeric parameter then refuses)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"not a parameter name: {key!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return key, value


def _add_costs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--costs", metavar="PROFILE",
                   help="cost profile for the predicted kernel time: host (made by "
                        "lazyvm calibrate), linux-2.5.41, a JSON file, or none (default: "
                        "host when there is one, else linux-2.5.41)")


def _profile(args):
    """(Profile or None, spec, why) for --costs, or UsageError (one line) when it does
    not load: called before anything is measured."""
    from .. import costs

    try:
        return costs.choose_profile(args.costs)
    except ValueError as e:                   # costs.ProfileError
        raise UsageError(f"--costs: {e}") from None


def _add_machine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=LAYOUTS, default=None,
                   help="the simulated paging layout (default i386: two levels)")
    p.add_argument("--share-level", type=_positive_int, default=1, metavar="L",
                   help="the table level a share fork shares (default 1: the leaf "
                        "page tables, as the seed)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lazyvm",
        description="Simulated Linux virtual memory: lazy page-table sharing at fork "
                    "against eager copying, with and without rmap.")
    parser.add_argument("--version", action="version",
                        version=f"lazyvm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    cp = sub.add_parser(
        "compare", help="fork in every configuration beside this machine's own fork()",
        description="For each size, fork a process of N touched pages in every "
                    "configuration (copy, copy+rmap, share, share+rmap) and fork a real "
                    "process of N touched pages on this machine; print a table with "
                    "spreads and the findings beside the published figures.")
    cp.add_argument("--quick", action="store_true",
                    help="four sizes up to 262,144 pages and few repeats (5-7 s)")
    cp.add_argument("--sizes", type=_sizes, metavar="N,N,...",
                    help="touched pages per size (k = 1024), at most the layout's user "
                         "space (786432 on i386; default: 1k,4k,10k,16k,64k,256k,768k)")
    cp.add_argument("--repeats", type=_positive_int, metavar="R",
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
    _add_costs_option(cp)
    _add_machine_options(cp)
    cp.set_defaults(handler=cmd_compare)

    rp = sub.add_parser("run", help="run a named workload in every configuration",
                        description="Run one of lazyvm's workloads in every "
                                    "configuration and print its results with spreads.")
    rp.add_argument("name", nargs="?", help="workload name (see --list)")
    rp.add_argument("--list", action="store_true",
                    help="list the workloads with their parameters and defaults")
    rp.add_argument("--quick", action="store_true", help="a small, fast version")
    rp.add_argument("--json", metavar="FILE",
                    help="write the results to FILE as JSON (docs/JSON.md)")
    rp.add_argument("--param", "-p", type=_param, action="append", default=[],
                    metavar="KEY=VALUE", help="a workload parameter (repeatable)")
    rp.add_argument("--configs", metavar="NAME,NAME",
                    help="configurations to run (copy, copy+rmap, share, share+rmap; "
                         "default all)")
    rp.add_argument("--check", action="store_true",
                    help="run Machine.check() after every iteration (untimed)")
    _add_costs_option(rp)
    _add_machine_options(rp)
    rp.set_defaults(handler=cmd_run)

    bp = sub.add_parser("bench", help="run the benchmarks (pytest-benchmark)",
                        usage="lazyvm bench [pytest arguments ...]",
                        description="Run `pytest bench/ --benchmark-only` from a source "
                                    "checkout (the current directory or the one the "
                                    "package was imported from); extra arguments go to "
                                    "pytest.")
    bp.set_defaults(handler=cmd_bench, pytest_args=[])

    missing = []
    for name, label in COMMAND_MODULES.items():
        try:
            mod = importlib.import_module(name)
        except ImportError as e:  # not in this build, or a dependency is missing
            if getattr(e, "name", None) != name:
                missing.append(f"{label} ({e})")
            continue
        add = getattr(mod, "add_commands", None)
        if add is not None:
            try:
                add(sub)
            except Exception as e:  # a broken module must not take compare and run down
                missing.append(f"{label} (add_commands failed: {e})")
    if missing:
        parser.epilog = "commands not available: " + "; ".join(missing)
    return parser


# ---------------------------------------------------------------- compare


def _check_outputs(args) -> None:
    """Refuse unwritable --json/--plot paths before a long run starts."""
    from ..report import format as report

    try:
        if getattr(args, "json", None):
            report.check_output(args.json, "--json")
        if getattr(args, "plot", None):
            report.check_plot(args.plot)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _machine_options(args) -> dict:
    from ..measure import host as measure

    layout = args.layout or "i386"
    try:
        measure.machine_options(layout, args.share_level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return {"layout": layout, "share_level": args.share_level}


def cmd_compare(args) -> int:
    from ..workloads import compare

    _check_outputs(args)
    opts = _machine_options(args)
    profile, _, why = _profile(args)
    try:
        record = compare.run_compare(sizes=args.sizes, repeats=args.repeats,
                                     quick=args.quick, progress=not args.no_progress,
                                     check=args.check, costs=profile, costs_reason=why,
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


# ---------------------------------------------------------------- run


def _format_list(workloads) -> str:
    """Every workload: its name, what it does, and each parameter with its default and
    its --quick value."""
    from ..report import format as report

    out = []
    every = dict(workloads.WORKLOADS, **workloads.EXTERNAL)
    for name in sorted(every):
        w = every[name]
        doc = " ".join((w.__doc__ or "").split())
        out.append(name)
        out += report.wrap(doc, "    ", "    ")
        params = ", ".join(
            f"{k}={v!r}" + (f" (quick {w.quick[k]!r})" if w.quick.get(k) != v else "")
            for k, v in w.defaults.items())
        out += report.wrap("parameters: " + params, "    ", "      ")
        out.append("")
    out.append("Example: lazyvm run snapshot --quick -p write_fraction=0.2")
    return "\n".join(out)


def cmd_run(args) -> int:
    from ..workloads import builtin as workloads

    if args.list:
        print(_format_list(workloads))
        return 0
    names = sorted(list(workloads.WORKLOADS) + list(workloads.EXTERNAL))
    if not args.name:
        raise UsageError("name a workload (" + ", ".join(names)
                         + "); lazyvm run --list describes them")
    if args.name not in names:
        raise UsageError(f"no workload {args.name!r}: the workloads are "
                         + ", ".join(names))
    params = {}
    for key, value in args.param:
        if key in params:
            raise UsageError(f"parameter {key} given twice")
        params[key] = value
    if args.name in workloads.EXTERNAL:
        return _run_external(args, params)
    opts = _machine_options(args)
    if args.name == "published" and args.costs is None:
        # The published figures are Linux 2.5.41's: by default they are predicted with
        # the profile fitted to that kernel, not with this host's.
        args.costs = "linux-2.5.41"
        profile, _, why = _profile(args)
        why = ("default for the published workload: its figures are Linux 2.5.41's, the "
               "kernel this built-in profile was fitted to (--costs host for this "
               "machine's)")
    else:
        profile, _, why = _profile(args)
    try:
        workloads.check_params(args.name, params, args.quick, opts["layout"])
    except ValueError as e:
        raise UsageError(str(e)) from None
    configs = None
    if args.configs:
        configs = [c for c in args.configs.replace(" ", "").split(",") if c]
        bad = [c for c in configs if c not in workloads.CONFIGS]
        if bad or not configs:
            raise UsageError(f"unknown configuration {', '.join(bad) or '(none)'}: use "
                             + ", ".join(workloads.CONFIGS))
    _check_outputs(args)
    results = workloads.run_workload(args.name, configs=configs, quick=args.quick,
                                     check=args.check, settle=True, costs=profile,
                                     **opts, **params)
    if profile is not None:
        results["predicted"]["reason"] = why
    else:
        results["predicted"] = None
        results["predicted_off"] = why
    print(workloads.format_results(results))
    if profile is None:
        print(f"no predicted kernel time: {why}")
    if args.name == "published" and profile is not None:
        from ..measure import published

        text, rec = published.report(profile)
        print()
        print(_fit_width(text))
        results["predicted_published"] = rec
    if args.json:
        from ..report import format as report

        report.write_json(results, args.json, kind="run")
        print(f"wrote {args.json}")
    return 0


def _fit_width(text: str) -> str:
    """`text` with every line wider than report.WIDTH wrapped, its continuation lines
    indented two more than the line itself."""
    from ..report import format as report

    out = []
    for line in text.splitlines():
        if len(line) <= report.WIDTH:
            out.append(line)
            continue
        lead = line[:len(line) - len(line.lstrip())]
        out += report.wrap(line.strip(), lead, lead + "  ")
    return "\n".join(out)


def _run_external(args, params) -> int:
    """`lazyvm run redis-bgsave ...`: -p checked against the workload's DEFAULTS, the
    cost profile resolved before anything starts; the workload's own errors (redis not
    installed, a failed capture or BGSAVE) are one line, exit status 2."""
    from ..workloads import builtin as workloads

    if args.share_level != 1:
        raise UsageError(f"{args.name} replays with share level 1 only")
    try:
        params = workloads.check_external_params(args.name, params, args.quick)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if "costs" in params and args.costs is not None:
        raise UsageError("give the cost profile once: --costs or -p costs=")
    if "costs" in params:
        args.costs = params["costs"]
    profile, spec, why = _profile(args)
    params["costs"] = None if profile is None else spec
    if args.configs:
        try:
            params.update(workloads.check_external_params(
                args.name, {"configs": args.configs}))
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.layout:
        params["layout"] = args.layout
    if args.check:
        params["check"] = True
    _check_outputs(args)
    from ..workloads import snapshot

    try:
        text, rec = workloads.EXTERNAL[args.name].run(params)
    except (snapshot.SnapshotError, OSError, RuntimeError) as e:
        raise UsageError(" ".join(str(e).split()) or type(e).__name__) from None
    rec["costs_reason"] = why
    sys.stdout.write(text)
    print(f"cost profile: {spec if profile is not None else 'none'} ({why})")
    if args.json:
        snapshot.write_json(rec, args.json)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------- bench


def _bench_dir():
    """bench/ of a source checkout: the current directory's, else the one beside the
    imported package (an editable or in-place build); None if neither has one."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / "bench" / "conftest.py").is_file():
            return root / "bench"
    return None


def cmd_bench(args) -> int:
    bench = _bench_dir()
    if bench is None:
        raise UsageError("the benchmarks are in the source checkout, not the installed "
                         "package: run lazyvm bench from the checkout's top directory")
    missing = [m for m in ("pytest", "pytest_benchmark")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError("needs pytest and pytest-benchmark: pip install 'lazyvm[test]' "
                         "(or pip install pytest pytest-benchmark)")
    extra = [a for a in args.pytest_args if a != "--"]
    # Run from bench/ itself: `python -m` puts the current directory first on sys.path,
    # and from the checkout's top that would be the unbuilt source tree, shadowing a
    # non-editable install.
    cmd = [sys.executable, "-m", "pytest", ".", "--benchmark-only", "-p",
           "no:cacheprovider", *extra]
    if not any(a.startswith("--benchmark-storage") for a in extra):
        # saved runs in the checkout's .benchmarks/, as `pytest bench/` from the top
        cmd.insert(4, "--benchmark-storage=file://" + str(bench.parent / ".benchmarks"))
    # The benchmarks import the lazyvm this command runs, wherever it was imported from.
    here = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [here] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    print(f"+ (cd {bench}; " + " ".join(cmd[1:]) + ")", file=sys.stderr)
    return subprocess.call(cmd, cwd=str(bench), env=env)


# ---------------------------------------------------------------- main


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
    handler = getattr(args, "handler", None) or getattr(args, "func", None)
    try:
        return handler(args)
    except UsageError as e:
        print(f"lazyvm {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
