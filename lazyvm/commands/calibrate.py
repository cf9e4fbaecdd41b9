"""``lazyvm calibrate``: this machine's kernel costs, written as the "host" profile."""

from __future__ import annotations

import json
import os
import sys

from ..costs import Profile, ProfileError, host_profile_path
from ..measure import calibrate as cal
from ..measure import thp_model
from .common import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="measure this machine's kernel costs and "
                       "write the 'host' cost profile",
                       description="Measure this machine's kernel with real "
                       "processes, fit the costs and write the 'host' profile.")
    p.add_argument("--validate", action="store_true",
                   help="also time held-out shapes and print predicted vs measured")
    p.add_argument("--quick", action="store_true", help="few repeats (for CI)")
    p.add_argument("--out", metavar="PATH", help="where to write the profile (default: "
                   "the user cache dir, where load_profile('host') reads it)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--thp", action="store_true", help="only measure transparent huge "
                   "pages (fork, split, huge fault) into the profile calibrate wrote")
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args) -> int:
    if not sys.platform.startswith("linux"):
        raise UsageError("calibrate measures a Linux kernel: this is " + sys.platform)
    if args.out is not None and os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory: give a file path")
    out = args.out or host_profile_path()
    if args.thp:
        return _thp(args, out)
    previous = None
    if os.path.exists(out):
        try:
            previous = Profile.load(out)
        except ProfileError:
            previous = None
    prof, report = cal.calibrate(quick=args.quick, validate=args.validate,
                                 progress=lambda m: print(m, file=sys.stderr))
    if previous is not None:
        report["previous"] = cal.compare_profiles(previous, prof)
    prof.save(out)
    if args.json:
        print(json.dumps(prof.to_dict(), indent=1))
    else:
        print(cal.format_report(report))
        if "previous" in report:
            print()
            print(cal.format_compare(report["previous"]))
        print(f"wrote {out}")
    return 0


def _thp(args, out) -> int:
    """calibrate --thp: THP's fork, split and huge fault measured into the profile at
    `out` (lazyvm.measure.thp_model.calibrate_thp)."""
    if not os.path.exists(out):
        raise UsageError(f"--thp adds to a profile: none at {out}; run lazyvm calibrate")
    try:
        _, rows = thp_model.calibrate_thp(out, quick=args.quick,
                                    progress=lambda m: print(m, file=sys.stderr))
    except (ValueError, ProfileError) as e:
        raise UsageError(f"--thp: {e}") from None
    print(thp_model.format_validate(rows))
    print(f"wrote {out}")
    return 0
