"""The ``lazyvm`` command: the parser, :class:`UsageError` and :func:`main`; each
subcommand is a module of this package with ``add_parser(subparsers)`` and its handler.

    lazyvm --version
    lazyvm compare [--quick] [--sizes N,N,...] [--repeats R] [--json FILE] [--plot FILE.png]
                   [--costs PROFILE] [--layout {i386,pae,x86_64}] [--share-level L]
    lazyvm run --list
    lazyvm run NAME [--quick] [--json FILE] [-p KEY=VALUE ...] [--costs PROFILE]
                    [--layout ...]
    lazyvm bench [pytest arguments...]
    lazyvm calibrate | capture | replay | show | sweep ...   (see their --help)

``--costs`` names the cost profile of the predicted kernel time (lazyvm.costs): "host",
"linux-2.5.41", a path, or "none"; by default "host" when lazyvm calibrate wrote one,
else "linux-2.5.41".  A profile that does not load is a one-line error before any run.

Also ``python -m lazyvm ...``.  :func:`main` returns the exit status: 0, 2 for any
mistake on the command line (one line on stderr, never a traceback), 130 on Ctrl-C.

A command's handler is ``parser.set_defaults(handler=fn)`` with ``fn(args) -> int``;
it raises :class:`UsageError` for a mistake of the user's, which main() prints as one
line (``lazyvm COMMAND: message``) with exit status 2.  Nothing in lazyvm imports this
package: it is the top floor.
"""

from __future__ import annotations

import importlib
import os
import sys

from .. import __version__
from .common import Parser, UsageError

__all__ = ["main", "build_parser", "UsageError", "SUBCOMMANDS"]

# The subcommand modules, in --help order.  Each is imported when the parser is built,
# so that one whose optional dependency is missing is named in the help instead of
# taking the others down.
SUBCOMMANDS = ("compare", "run", "bench", "calibrate", "capture", "replay", "show",
               "sweep")


def build_parser() -> Parser:
    parser = Parser(
        prog="lazyvm",
        description="Simulated Linux virtual memory: lazy page-table sharing at fork "
                    "against eager copying, with and without rmap.")
    parser.add_argument("--version", action="version", version=f"lazyvm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    missing = []
    for name in SUBCOMMANDS:
        module = f"{__name__}.{name}"
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # not in this build, or a dependency is missing
            if getattr(e, "name", None) != module:
                missing.append(f"{name} ({e})")
            continue
        try:
            mod.add_parser(sub)
        except Exception as e:  # a broken module must not take compare and run down
            missing.append(f"{name} (add_parser failed: {e})")
    if missing:
        parser.epilog = "commands not available: " + "; ".join(missing)
    return parser


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
    try:
        return args.handler(args)
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
