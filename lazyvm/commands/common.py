"""What every subcommand shares: :class:`UsageError`, the parser class with one-line
errors, and the options and argument types more than one command takes.

A command's handler is ``parser.set_defaults(handler=fn)`` with ``fn(args) -> int``; it
raises :class:`UsageError` for a mistake of the user's, which ``lazyvm.commands.main``
prints as one line (``lazyvm COMMAND: message``) with exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import shutil

from .. import costs
from ..layout import LAYOUTS
from ..measure import host as measure
from ..report import format as report


class UsageError(Exception):
    """A mistake on the command line: main() prints it as one line, exit status 2."""


class _Formatter(argparse.HelpFormatter):
    """Help no wider than 100 columns, however wide the terminal."""

    def __init__(self, prog, **kw):
        kw["width"] = min(shutil.get_terminal_size().columns, 100) - 2
        super().__init__(prog, **kw)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lazyvm compare: error: ...`` and exit 2 (no
    usage block; ``--help`` gives that), and help at most 100 columns wide."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- argument types


def sizes(text: str) -> list:
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


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {n}")
    return n


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return v


def param(text: str) -> tuple:
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


# ---------------------------------------------------------------- shared options


def add_costs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--costs", metavar="PROFILE",
                   help="cost profile for the predicted kernel time: host (made by "
                        "lazyvm calibrate), linux-2.5.41, a JSON file, or none (default: "
                        "host when there is one, else linux-2.5.41)")


def profile(args):
    """(Profile or None, spec, why) for --costs, or UsageError (one line) when it does
    not load: called before anything is measured."""
    try:
        return costs.choose_profile(args.costs)
    except ValueError as e:                   # costs.ProfileError
        raise UsageError(f"--costs: {e}") from None


def add_machine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=tuple(LAYOUTS), default=None,
                   help="the simulated paging layout (default i386: two levels)")
    p.add_argument("--share-level", type=positive_int, default=1, metavar="L",
                   help="the table level a share fork shares (default 1: the leaf "
                        "page tables, as the seed)")


def machine_options(args) -> dict:
    """Machine keywords from --layout and --share-level, or UsageError."""
    layout = args.layout or "i386"
    try:
        measure.machine_options(layout, args.share_level)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return {"layout": layout, "share_level": args.share_level}


def check_outputs(args) -> None:
    """Refuse unwritable --json/--plot paths before a long run starts."""
    try:
        if getattr(args, "json", None):
            report.check_output(args.json, "--json")
        if getattr(args, "plot", None):
            report.check_plot(args.plot)
    except ValueError as e:
        raise UsageError(str(e)) from None


def fit_width(text: str) -> str:
    """`text` with every line wider than report.WIDTH wrapped, its continuation lines
    indented two more than the line itself."""
    out = []
    for line in text.splitlines():
        if len(line) <= report.WIDTH:
            out.append(line)
            continue
        lead = line[:len(line) - len(line.lstrip())]
        out += report.wrap(line.strip(), lead, lead + "  ")
    return "\n".join(out)
