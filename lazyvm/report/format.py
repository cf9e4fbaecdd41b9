"""Formatting shared by every command: numbers with their spreads, tables no wider than
:data:`WIDTH` columns, wrapped prose, the JSON every command writes (with its envelope:
format, version, host, time and build), output paths checked before a run, and plots
with error bars.  Nothing here measures anything.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from typing import Iterable, Optional, Sequence

WIDTH = 100                   # no line a command prints is wider
JSON_FORMAT_VERSION = 2       # docs/JSON.md; 0.1.0 wrote version 1 (no envelope)
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


# ---------------------------------------------------------------- numbers


def _num(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def unit_for(ns: float) -> tuple:
    """(divisor, unit) to print `ns` with."""
    if ns >= 1e6:
        return 1e6, "ms"
    if ns >= 1e3:
        return 1e3, "us"
    return 1.0, "ns"


def ns(v: Optional[float], unit: Optional[tuple] = None) -> str:
    """A time in ns as '1.40 ms', '3.4 us', '850 ns'."""
    if v is None:
        return "-"
    div, name = unit or unit_for(v)
    return f"{_num(v / div)} {name}"


def ns_spread(s: dict) -> tuple:
    """(median, 'q1-q3') of a spread in ns, both in the median's unit."""
    u = unit_for(s["median"])
    return ns(s["median"], u), f"{_num(s['q1'] / u[0])}-{_num(s['q3'] / u[0])}"


def x(r: Optional[float]) -> str:
    """A ratio as '3.6x'."""
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    return f"{r:.2g}x"


def x_range(r: dict) -> str:
    """A ratio with its range: '3.6x (3.4-3.9)'."""
    if r.get("lo") is None or r.get("hi") is None:
        return x(r["ratio"])
    return f"{x(r['ratio'])} ({x(r['lo'])[:-1]}-{x(r['hi'])[:-1]})"


def integer(v: Optional[int]) -> str:
    return "-" if v is None else f"{v:,}"


# ---------------------------------------------------------------- text


def table(head: Sequence[str], rows: Iterable[Sequence[str]], left: Iterable[int] = (0,),
          blank_before: Optional[int] = None) -> list:
    """Lines of a table: a header, a rule, the rows; columns in `left` are left-aligned,
    the others right-aligned.  With `blank_before` = i, a blank line goes before every
    row (after the first) whose column i is not empty."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    left = set(left)

    def fmt(r):
        return "  ".join(s.ljust(w) if i in left else s.rjust(w)
                         for i, (s, w) in enumerate(zip(r, widths))).rstrip()
    out = [fmt(head), "  ".join("-" * w for w in widths)]
    for r in rows:
        if blank_before is not None and r[blank_before] and len(out) > 2:
            out.append("")
        out.append(fmt(r))
    return out


def wrap(text: str, first: str = "", rest: str = "", width: int = WIDTH) -> list:
    """`text` filled to `width` columns, the first line indented by `first`, the others
    by `rest`."""
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False, break_long_words=False)


# ---------------------------------------------------------------- files


def check_output(path: str, what: str = "--json") -> None:
    """Raise ValueError (one line) unless `path` can be written: its directory exists
    and is writable, and it is not a directory.  Called before a long run starts."""
    d = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{what} {path}: is a directory")
    if not os.path.isdir(d):
        raise ValueError(f"{what} {path}: no such directory {d}")
    if not os.access(d, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{what} {path}: not writable")


def check_plot(path: str) -> None:
    """check_output for a plot, and that matplotlib is there and knows the format."""
    check_output(path, "--plot")
    if os.path.splitext(path)[1].lower() not in PLOT_SUFFIXES:
        raise ValueError(f"--plot {path}: name a {', '.join(PLOT_SUFFIXES)} file")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install 'lazyvm[plot]' "
                         "(or pip install matplotlib)") from None


def envelope(kind: str) -> dict:
    """The keys every JSON file a command writes starts with (docs/JSON.md)."""
    from .. import __version__
    from ..measure.host import build_info, machine_description

    return {
        "format": f"lazyvm-{kind}",
        "format_version": JSON_FORMAT_VERSION,
        "lazyvm_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": machine_description(),
        "build": build_info(),
    }


def write_json(record: dict, path: str, kind: Optional[str] = None) -> None:
    """Write `record` to `path` as JSON; with `kind`, under the envelope's keys (the
    record's own keys win)."""
    out = dict(envelope(kind), **record) if kind else record
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars from stats() or medians
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def build_text(build: dict) -> str:
    """'checked build (LAZYVM_DEBUG=1)', 'optimized build' or 'build not reported'."""
    if build.get("debug") is None:
        return "build not reported by the core"
    return "checked build (LAZYVM_DEBUG=1)" if build["debug"] else "optimized build"


# ---------------------------------------------------------------- plots


def draw_lines(ax, xs: Sequence[float], series: dict, xlabel: str, ylabel: str,
               title: str, styles: Optional[dict] = None) -> None:
    """Log-log lines with error bars on matplotlib axes `ax`: `series` maps a label to a
    list of spreads (one per x); bars run from q1 to q3."""
    for label, spreads in series.items():
        med = [s["median"] for s in spreads]
        err = [[s["median"] - s["q1"] for s in spreads],
               [s["q3"] - s["median"] for s in spreads]]
        ax.errorbar(xs, med, yerr=err, label=label, capsize=3,
                    **(styles or {}).get(label, {}))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)


def plot_lines(path: str, xs: Sequence[float], series: dict, xlabel: str, ylabel: str,
               title: str, styles: Optional[dict] = None) -> None:
    """Log-log lines with error bars (draw_lines) saved to `path`.  Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    draw_lines(ax, xs, series, xlabel, ylabel, title, styles)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
