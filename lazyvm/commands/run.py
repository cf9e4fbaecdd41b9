"""``lazyvm run``: one of lazyvm's workloads in every configuration."""

from __future__ import annotations

import sys

from ..measure import published
from ..report import format as report
from ..workloads import builtin as workloads
from ..workloads import snapshot
from .common import (UsageError, add_costs_option, add_machine_options, check_outputs,
                     fit_width, machine_options, param, profile)


def add_parser(sub) -> None:
    rp = sub.add_parser("run", help="run a named workload in every configuration",
                        description="Run one of lazyvm's workloads in every "
                                    "configuration and print its results with spreads.")
    rp.add_argument("name", nargs="?", help="workload name (see --list)")
    rp.add_argument("--list", action="store_true",
                    help="list the workloads with their parameters and defaults")
    rp.add_argument("--quick", action="store_true", help="a small, fast version")
    rp.add_argument("--json", metavar="FILE",
                    help="write the results to FILE as JSON (docs/JSON.md)")
    rp.add_argument("--param", "-p", type=param, action="append", default=[],
                    metavar="KEY=VALUE", help="a workload parameter (repeatable)")
    rp.add_argument("--configs", metavar="NAME,NAME",
                    help="configurations to run (copy, copy+rmap, share, share+rmap; "
                         "default all)")
    rp.add_argument("--check", action="store_true",
                    help="run Machine.check() after every iteration (untimed)")
    add_costs_option(rp)
    add_machine_options(rp)
    rp.set_defaults(handler=cmd_run)


def format_list() -> str:
    """Every workload: its name, what it does, and each parameter with its default and
    its --quick value."""
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
    if args.list:
        print(format_list())
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
    opts = machine_options(args)
    if args.name == "published" and args.costs is None:
        # The published figures are Linux 2.5.41's: by default they are predicted with
        # the profile fitted to that kernel, not with this host's.
        args.costs = "linux-2.5.41"
        prof, _, why = profile(args)
        why = ("default for the published workload: its figures are Linux 2.5.41's, the "
               "kernel this built-in profile was fitted to (--costs host for this "
               "machine's)")
    else:
        prof, _, why = profile(args)
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
    check_outputs(args)
    results = workloads.run_workload(args.name, configs=configs, quick=args.quick,
                                     check=args.check, settle=True, costs=prof,
                                     **opts, **params)
    if prof is not None:
        results["predicted"]["reason"] = why
    else:
        results["predicted"] = None
        results["predicted_off"] = why
    print(workloads.format_results(results))
    if prof is None:
        print(f"no predicted kernel time: {why}")
    if args.name == "published" and prof is not None:
        text, rec = published.report(prof)
        print()
        print(fit_width(text))
        results["predicted_published"] = rec
    if args.json:
        report.write_json(results, args.json, kind="run")
        print(f"wrote {args.json}")
    return 0


def _run_external(args, params) -> int:
    """`lazyvm run redis-bgsave ...`: -p checked against the workload's DEFAULTS, the
    cost profile resolved before anything starts; the workload's own errors (redis not
    installed, a failed capture or BGSAVE) are one line, exit status 2."""
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
    prof, spec, why = profile(args)
    params["costs"] = None if prof is None else spec
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
    check_outputs(args)
    try:
        text, rec = workloads.EXTERNAL[args.name].run(params)
    except (snapshot.SnapshotError, OSError, RuntimeError) as e:
        raise UsageError(" ".join(str(e).split()) or type(e).__name__) from None
    rec["costs_reason"] = why
    sys.stdout.write(text)
    print(f"cost profile: {spec if prof is not None else 'none'} ({why})")
    if args.json:
        snapshot.write_json(rec, args.json)
        print(f"wrote {args.json}")
    return 0
