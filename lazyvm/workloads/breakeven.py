"""`lazyvm run breakeven`: where sharing page tables at fork wins, and where it loses.

A process holds `size` bytes of written private anonymous memory (one VMA at a 512 GiB
boundary, x86_64) and forks.  Its child either execs at once (``child=exec``: a shell's
fork) or lives on while the parent writes (``child=live``: a snapshot such as Redis's
BGSAVE, the child reading through its copy), then exits.  After the fork the parent
writes a `fraction` of its pages, spread over its page tables either *clustered* (whole
leaf tables written, one table in 1/fraction) or *uniform* (one page in 1/fraction:
every table written).  Each cell is simulated with ``contents=False`` for every policy:

    copy            Linux's copy_page_range (accounting does not apply)
    share           lazy page-table sharing at the leaf (Phillips 2002, COW-PTE v2)
    share-eager     sharing with the per-page accounting at fork (COW-PTE v3-v5)
    odf             On-demand-fork (EuroSys 2021): leaf tables wholly inside one VMA
    odf-eager       On-demand-fork with eager accounting
    share-l2        lazy sharing of PMD tables (share_level=2)
and each of these with transparent huge pages (``+thp``: MADV_HUGEPAGE, written before
the fork, so PMD-mapped) where the core has them.

For each cell and policy the counters over the fork and everything after it give, priced
with the cost profile: the parent's fork latency (the fork's kernel time, in the parent's
account), the first write's fault latency (the parent's first write after the fork), the
total kernel time, the child's page tables right after the fork and the page-table peak
beyond the parent's own (kB).

Sizes of 1 GiB and more are simulated at 1 and 2 GiB and extrapolated: every write
pattern here repeats with a period dividing 1 GiB, so every count is exactly
a + b * (size / 1 GiB) there (tests/workloads/test_breakeven.py checks the extrapolation
against simulation at 4 GiB, count by count).  Fractions are powers of two for that
reason.
"""
from __future__ import annotations

import math
import os
import time
from fractions import Fraction

import numpy as np

from ..costs import EVENTS, Profile, ProfileError, load_profile
from ..machine import Machine
from ..measure import thp as thplib, thp_model
from ..report import format as report

PAGE = 4096
HUGE = 2 << 20
GIB = 1 << 30
BASE = 1 << 39                       # a 512 GiB boundary: the region's tables are its own
PTE_SPAN_PAGES = 512

POLICIES = {                         # name -> Machine keywords and fork mode
    "copy": dict(fork_mode="copy"),
    "share": dict(fork_mode="share"),
    "share-eager": dict(fork_mode="share", accounting="eager"),
    "odf": dict(fork_mode="odf"),
    "odf-eager": dict(fork_mode="odf", accounting="eager"),
    "share-l2": dict(fork_mode="share", share_level=2),
}
POLICY_NAMES = tuple(POLICIES) + tuple(p + "+thp" for p in POLICIES)

DEFAULTS = {
    "sizes": "1M,4M,16M,64M,256M,1G,4G,16G,64G",
    "fractions": "0,1/512,1/64,1/8,1",
    "spreads": "clustered,uniform",
    "children": "exec,live",
    "policies": "all",
    "costs": "host",
    "plot": "",
    "layout": "x86_64",
}
QUICK = {"sizes": "1M,16M,256M,1G,4G", "fractions": "0,1/64,1"}


class BreakevenError(RuntimeError):
    """A bad parameter of breakeven (one line)."""


# ------------------------------------------------------------------------ parameters

_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text):
    """"64M", "1G", "4096" -> bytes (a whole number of pages, at least one)."""
    t = str(text).strip().upper().rstrip("B").rstrip("I")
    mult = 1
    if t and t[-1] in _UNITS:
        mult, t = _UNITS[t[-1]], t[:-1]
    try:
        n = int(t) * mult
    except ValueError:
        raise BreakevenError(f"breakeven: size {text!r} is not a size such as 64M or 1G")
    if n <= 0 or n % PAGE:
        raise BreakevenError(f"breakeven: size {text!r} is not a positive whole number "
                             "of 4 KiB pages")
    if n >= GIB and n % GIB:
        raise BreakevenError(f"breakeven: size {text!r}: sizes of 1 GiB and more must be "
                             "whole GiB (they are extrapolated per GiB)")
    return n


def parse_fraction(text):
    """"0", "1", "1/64", "0.125" -> a Fraction: 0 or a power of two 1/2**k, k <= 9
    (a write pattern repeating within 1 GiB)."""
    try:
        f = Fraction(str(text).strip())
    except (ValueError, ZeroDivisionError):
        raise BreakevenError(f"breakeven: fraction {text!r} is not a number")
    if f != 0 and not (f.numerator == 1 and f.denominator & (f.denominator - 1) == 0
                       and f.denominator <= 512):
        raise BreakevenError(f"breakeven: fraction {text!r} must be 0 or 1/2**k with "
                             "k = 0..9 (1, 1/2, ... 1/512)")
    return f


def _list(value, what):
    if isinstance(value, (int, float)):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    items = [v for v in str(value).replace(" ", "").split(",") if v]
    if not items:
        raise BreakevenError(f"breakeven: {what} is empty")
    return items


def grid(params):
    """The checked grid: {"sizes", "fractions", "spreads", "children", "policies"}."""
    p = dict(DEFAULTS, **{k: v for k, v in params.items() if v is not None})
    unknown = sorted(set(params) - set(DEFAULTS) - {"quick", "check"})
    if unknown:
        raise BreakevenError(f"breakeven has no parameter {', '.join(unknown)} (it takes "
                             f"{', '.join(DEFAULTS)})")
    if p["layout"] != "x86_64":
        raise BreakevenError("breakeven simulates x86_64 (share level 2 and huge pages "
                             f"need it), not {p['layout']}")
    out = {"sizes": sorted({parse_size(s) for s in _list(p["sizes"], "sizes")}),
           "fractions": sorted({parse_fraction(f) for f in _list(p["fractions"],
                                                                 "fractions")}),
           "spreads": _list(p["spreads"], "spreads"),
           "children": _list(p["children"], "children"),
           "policies": (list(POLICY_NAMES) if p["policies"] == "all"
                        else _list(p["policies"], "policies"))}
    for key, allowed in (("spreads", ("clustered", "uniform")), ("children", ("exec", "live")),
                         ("policies", POLICY_NAMES)):
        bad = [v for v in out[key] if v not in allowed]
        if bad:
            raise BreakevenError(f"breakeven: {key} {', '.join(bad)}: use "
                                 f"{', '.join(allowed)}")
    return out


# ------------------------------------------------------------------------ simulation

def written_pages(npages, fraction, spread):
    """Page indexes the parent writes after the fork, in order: W = npages * fraction
    (at least 1 when fraction > 0); uniform: one page in 1/fraction; clustered: runs of
    min(512, W) pages (whole leaf tables), one run per 1/fraction of that length."""
    if fraction == 0:
        return np.zeros(0, dtype=np.int64)
    w = max(1, int(npages * fraction))
    step = fraction.denominator
    if spread == "uniform":
        return np.arange(0, npages, step, dtype=np.int64)[:w]
    run = min(PTE_SPAN_PAGES, w)
    period = run * step
    starts = np.arange(0, npages, period, dtype=np.int64)
    return (starts[:, None] + np.arange(run, dtype=np.int64)[None, :]).ravel()[:w]


def machine_for(policy, size, fraction):
    """A Machine for one cell (x86_64, contents=False, no pte_chains: today's kernels
    have none), or raise TypeError/ValueError when the core lacks the policy."""
    base, thp = (policy[:-4], True) if policy.endswith("+thp") else (policy, False)
    kw = dict(POLICIES[base])
    if thp:
        kw["thp"] = "madvise"
    copies = int(size * (fraction if fraction else 0)) + size
    memory = size + copies + (size // 256) + (64 << 20)
    memory += (-memory) % (HUGE)
    return Machine(memory=memory, layout="x86_64", contents=False, rmap=False, **kw), thp


def supported(policy):
    """None if the core simulates `policy`, else why not (one line)."""
    try:
        m, thp = machine_for(policy, 1 << 20, Fraction(0))
        if thp:
            p = m.spawn()
            a = p.mmap(HUGE, addr=BASE)
            p.madvise(a, HUGE, "hugepage")
        if POLICIES[policy.replace("+thp", "")]["fork_mode"] == "odf":
            m.spawn().fork(mode="odf")
    except (TypeError, ValueError, AttributeError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _counters(m):
    return m._counters()


def _diff(a, b):
    return {k: b[k] - a.get(k, 0) for k in b if isinstance(b[k], int)}


def simulate(policy, size, fraction, spread, child, check=False):
    """The counts of one cell: {"fork", "first_write", "total": event deltas;
    "child_tables" (the tables the child reaches right after the fork, shared ones
    included), "peak_tables" (page-table peak from the fork on, beyond the parent's
    own), "written"}."""
    m, thp = machine_for(policy, size, fraction)
    p = m.spawn()
    a = p.mmap(size, addr=BASE)
    if thp:
        p.madvise(a, size, "hugepage")
    p.touch(a, size, write=True)
    own = m.stats()["page_tables"]
    m.reset_peaks()
    c0 = _counters(m)
    c = p.fork()
    c1 = _counters(m)
    child_tables = c.stats()["page_tables"]
    if child == "exec":
        c.exec()
    pages = written_pages(size // PAGE, fraction, spread)
    first = None
    if pages.size:
        f0 = _counters(m)
        p.touch_pages(a + PAGE * pages[:1], write=True)
        first = _diff(f0, _counters(m))
        if pages.size > 1:
            p.touch_pages(a + PAGE * pages[1:], write=True)
    c.exit()
    if check:
        m.check()
    end = _counters(m)
    peak = m.stats()["page_tables_peak"]
    return {"fork": _diff(c0, c1), "first_write": first, "total": _diff(c0, end),
            "child_tables": child_tables, "peak_tables": peak - own,
            "written": int(pages.size)}


def _lin(a, b, k):
    """a + (k - 1) * (b - a), per key, recursively over dicts (None stays None)."""
    if a is None:
        return None
    if isinstance(a, dict):
        return {key: _lin(a[key], b[key], k) for key in a}
    return a + (k - 1) * (b - a)


def counts(policy, size, fraction, spread, child, check=False, cache=None):
    """simulate(), or for size = k GiB with k > 2 the exact extrapolation from 1 and
    2 GiB (counts are a + b * k there: every pattern repeats within 1 GiB)."""
    if size <= 2 * GIB:
        key = (policy, size, fraction, spread, child)
        if cache is not None and key in cache:
            return cache[key]
        r = simulate(policy, size, fraction, spread, child, check)
        if cache is not None:
            cache[key] = r
        return r
    one = counts(policy, GIB, fraction, spread, child, check, cache)
    two = counts(policy, 2 * GIB, fraction, spread, child, check, cache)
    out = _lin(one, two, size // GIB)
    out["extrapolated"] = True
    return out


# ------------------------------------------------------------------------ prediction

def price(c, prof):
    """Predicted figures of a counts() result: fork_ns (the parent's fork latency),
    first_write_ns, total_ns; child_pt_kb, the page tables the fork allocated for the
    child (its own, unshared: what the child's VmPTE counts), and peak_pt_kb."""
    return {"fork_ns": prof.kernel_ns(c["fork"]),
            "first_write_ns": (prof.kernel_ns(c["first_write"])
                               if c["first_write"] is not None else None),
            "total_ns": prof.kernel_ns(c["total"]),
            "child_pt_kb": 4 * c["fork"].get("tables_allocated", 0),
            "peak_pt_kb": 4 * c["peak_tables"]}


def _fraction_text(f):
    return "0" if f == 0 else ("1" if f == 1 else f"1/{f.denominator}")


def run(params=None, progress=None):
    """Simulate the grid; returns the record (without the JSON envelope)."""
    params = dict(params or {})
    quick = params.pop("quick", False)
    check = params.pop("check", False)
    if quick:
        params = dict(QUICK, **params)
    g = grid(params)
    spec = params.get("costs", DEFAULTS["costs"])
    prof = load_profile(spec) if spec else None
    t0 = time.perf_counter()
    missing = {pol: why for pol in g["policies"] if (why := supported(pol)) is not None}
    pols = [pol for pol in g["policies"] if pol not in missing]
    cache = {}
    cells = []
    for child in g["children"]:
        for spread in g["spreads"]:
            for f in g["fractions"]:
                if f in (0, 1) and spread != g["spreads"][0]:
                    continue                  # nothing or everything: no spread
                for size in g["sizes"]:
                    row = {"size": size, "fraction": _fraction_text(f), "spread": spread,
                           "child": child, "policies": {}}
                    for pol in pols:
                        c = counts(pol, size, f, spread, child, check, cache)
                        entry = {"counts": {k: c[k] for k in ("fork", "first_write",
                                                                 "total")},
                                 "child_tables": c["child_tables"],
                                 "peak_tables": c["peak_tables"], "written": c["written"],
                                 "extrapolated": bool(c.get("extrapolated"))}
                        if prof is not None:
                            entry.update(price(c, prof))
                        row["policies"][pol] = entry
                    if prof is not None and pols:
                        got = row["policies"]
                        row["winner"] = min(pols, key=lambda q: got[q]["total_ns"])
                        row["fork_winner"] = min(pols, key=lambda q: got[q]["fork_ns"])
                    cells.append(row)
                    if progress:
                        progress(len(cells))
    seconds = time.perf_counter() - t0
    return {"workload": "breakeven",
            "params": {"sizes": g["sizes"],
                       "fractions": [_fraction_text(f) for f in g["fractions"]],
                       "spreads": g["spreads"], "children": g["children"],
                       "policies": g["policies"], "costs": spec},
            "profile": prof.name if prof is not None else None,
            "profile_sources": ({e: prof.source[e] for e in EVENTS} if prof is not None
                                else None),
            "not_simulated": missing, "cells": cells, "seconds": round(seconds, 2),
            "simulated_cells": len(cache)}


# ------------------------------------------------------------------------ published

# Published points drawn on the figures (sources in docs/BREAKEVEN.md): size in bytes,
# the fraction of pages written after the fork, and what was measured.
PUBLISHED = [
    {"label": "COW-PTE v2 (lazy): 10 -> 0.625 ms", "size": 512 << 20, "fraction": "0",
     "fork_ms": {"copy": 10.0, "share": 0.625},
     "source": "Chih-En Lin, COW page tables RFC v2, linux-mm, Sep 2022"},
    {"label": "COW-PTE v5 (eager): ~10 ms both", "size": 512 << 20, "fraction": "0",
     "fork_ms": {"copy": 10.0, "share-eager": 10.0},
     "source": "Chih-En Lin, COW page tables v3-v5, linux-mm, Dec 2022 - Apr 2023"},
    {"label": "ODF 65x", "size": 1 << 30, "fraction": "0", "ratio": 65.0,
     "source": "Zhao, Gong, Fonseca: On-demand-fork, EuroSys 2021"},
    {"label": "ODF 270x", "size": 50 << 30, "fraction": "0", "ratio": 270.0,
     "source": "Zhao, Gong, Fonseca: On-demand-fork, EuroSys 2021"},
    {"label": "Tatashin 3.9-4.4 ms/GB", "size": 1 << 30, "fraction": "0",
     "fork_ms": {"copy": 4.15}, "range_ms": (3.9, 4.4),
     "source": "Pasha Tatashin on COW-PTE v4, linux-mm, Feb 2023"},
    {"label": "THP 1 GB: 0.77 vs 66-104 ms", "size": 1 << 30, "fraction": "0",
     "fork_ms": {"copy+thp": 0.77, "copy": 85.0}, "range_ms": (66.0, 104.0),
     "source": "measured on the machines lazyvm was built on (KERNEL-NOTES)"},
    {"label": "McCracken 400K: share loses", "size": 400 << 10, "fraction": "1",
     "source": "Dave McCracken, linux-kernel, 10 Oct 2002 (fork+exec+exit 7.5 -> 7.7 ms)"},
]


# ------------------------------------------------------------------------ report

SHORT = {"copy": "C", "share": "S", "share-eager": "E", "odf": "O", "odf-eager": "Oe",
         "share-l2": "S2"}


def short(policy):
    base = policy.replace("+thp", "")
    return SHORT[base] + ("h" if policy.endswith("+thp") else "")


def size_text(n):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def _ms(ns):
    return "-" if ns is None else (f"{ns / 1e6:.3g}" if ns >= 1e4 else f"{ns / 1e6:.2g}")


def format_text(rec):
    """Tables: the winner by total kernel time per (child, spread) over fraction x size;
    the parent's fork latency, first-write latency and child page tables per policy."""
    out = []
    prm = rec["params"]
    sizes = prm["sizes"]
    pols = [p for p in prm["policies"] if p not in rec["not_simulated"]]
    out.append(f"breakeven: {len(rec['cells'])} cells x {len(pols)} policies "
               f"({rec['simulated_cells']} simulated, the rest extrapolated per GiB) in "
               f"{rec['seconds']} s; cost profile {rec['profile']}")
    for pol, why in rec["not_simulated"].items():
        out.append(f"  not simulated: {pol} ({why})")
    if rec["profile"] is None:
        out.append("no cost profile: counts only (see the JSON)")
        return "\n".join(out) + "\n"
    out.append("policies: " + ", ".join(f"{short(p)} {p}" for p in pols))
    for child in prm["children"]:
        for spread in prm["spreads"]:
            rows = [c for c in rec["cells"] if c["child"] == child
                    and (c["spread"] == spread or c["fraction"] in ("0", "1"))]
            if not rows:
                continue
            out.append("")
            out.append(f"winner by total kernel time, child {child}, writes {spread} "
                       f"(rows: fraction of pages the parent writes after fork)")
            table = []
            for fr in prm["fractions"]:
                cells = {c["size"]: c for c in rows if c["fraction"] == fr}
                if not cells:
                    continue
                table.append([fr] + [short(cells[s]["winner"]) if s in cells else "-"
                                     for s in sizes])
            out += report.table(["fraction"] + [size_text(s) for s in sizes], table)
    first = [c for c in rec["cells"] if c["fraction"] == "0"][:len(sizes)]
    if first:
        out.append("")
        out.append("parent fork latency, ms (the parent's kernel_ns for fork)")
        out += (report.table(["policy"] + [size_text(c["size"]) for c in first],
                                [[p] + [_ms(c["policies"][p]["fork_ns"]) for c in first]
                                 for p in pols]))
        out.append("")
        out.append("child's own page tables right after fork (allocated by the fork), kB")
        out += (report.table(["policy"] + [size_text(c["size"]) for c in first],
                                [[p] + [str(c["policies"][p]["child_pt_kb"]) for c in first]
                                 for p in pols]))
    live = [c for c in rec["cells"] if c["child"] == "live" and c["fraction"] == "1"]
    if live:
        out.append("")
        out.append("first write's fault latency, us (the parent's first write after fork, "
                   "child alive)")
        out += (report.table(["policy"] + [size_text(c["size"]) for c in live],
                                [[p] + [f"{c['policies'][p]['first_write_ns'] / 1e3:.3g}"
                                        for c in live] for p in pols]))
    return "\n".join(out) + "\n"


def plot(rec, path):
    """Two figures: `path`, the winning policy by total kernel time over size and the
    fraction written, one panel per (child, spread), with the crossover line where lazy
    share stops beating copy and the published points; and `path` with "-fork" before
    its suffix, the parent's fork latency against size per policy, published points
    beside.  Returns the paths written.  Needs matplotlib."""

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    prm = rec["params"]
    pols = [p for p in prm["policies"] if p not in rec["not_simulated"]]
    sizes, fracs = prm["sizes"], prm["fractions"]
    panels = [(ch, sp) for ch in prm["children"] for sp in prm["spreads"]]
    cmap = ListedColormap(plt.get_cmap("tab10").colors[:max(len(pols), 2)]
                          + plt.get_cmap("Dark2").colors[:max(len(pols) - 10, 0)])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 3.5, 4.8),
                             squeeze=False, layout="constrained")
    for ax, (child, spread) in zip(axes[0], panels):
        win = np.full((len(fracs), len(sizes)), np.nan)
        ratio = np.full((len(fracs), len(sizes)), np.nan)
        for c in rec["cells"]:
            if c["child"] != child or (c["spread"] != spread and c["fraction"] not in ("0", "1")):
                continue
            i, j = fracs.index(c["fraction"]), sizes.index(c["size"])
            win[i, j] = pols.index(c["winner"])
            pc = c["policies"]
            if "share" in pc and "copy" in pc:
                ratio[i, j] = math.log(pc["share"]["total_ns"] / pc["copy"]["total_ns"])
        lim = max(1.0, float(np.nanmax(np.abs(ratio)))) if not np.all(np.isnan(ratio)) else 1
        im = ax.imshow(ratio / math.log(10), origin="lower", aspect="auto", cmap="RdBu_r",
                       vmin=-lim / math.log(10), vmax=lim / math.log(10),
                       interpolation="nearest")
        for i in range(len(fracs)):
            for j in range(len(sizes)):
                if not np.isnan(win[i, j]):
                    ax.text(j, i, short(pols[int(win[i, j])]), ha="center", va="center",
                            fontsize=7)
        if np.nanmax(ratio) > 0 > np.nanmin(ratio):
            ax.contour(np.arange(len(sizes)), np.arange(len(fracs)), ratio, levels=[0.0],
                       colors="k", linewidths=1.5)
        for pt in PUBLISHED:
            if pt["fraction"] in fracs:
                x = float(np.interp(math.log(pt["size"]), [math.log(s) for s in sizes],
                                    np.arange(len(sizes))))
                y = fracs.index(pt["fraction"])
                ax.plot([x], [y], marker="*", color="crimson", markersize=9)
        ax.set_xticks(range(len(sizes)), [size_text(s) for s in sizes], rotation=45,
                      fontsize=8)
        ax.set_yticks(range(len(fracs)), fracs, fontsize=8)
        ax.set_xlabel("resident size")
        ax.set_ylabel("fraction written after fork")
        ax.set_title(f"child {child}, writes {spread}", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), fraction=0.02, pad=0.01,
                 label="log10 total kernel time, share / copy")
    handles = [plt.Line2D([], [], linestyle="", label=f"{short(p)} {p}") for p in pols]
    handles.append(plt.Line2D([], [], color="k", label="share = copy (4 KiB)"))
    handles.append(plt.Line2D([], [], marker="*", linestyle="", color="crimson",
                              label="published point"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7)
    fig.suptitle(f"winner (letters) by total kernel time (fork, writes, exec/exit); colour: "
                 f"lazy share against copy (blue: share cheaper); profile {rec['profile']}",
                 fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)

    stem, suffix = os.path.splitext(path)
    fork_path = stem + "-fork" + suffix
    zero = [c for c in rec["cells"] if c["fraction"] == "0"][:len(sizes)]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    gib = [c["size"] / GIB for c in zero]
    for k, p in enumerate(pols):
        ax.plot(gib, [c["policies"][p]["fork_ns"] / 1e6 for c in zero], marker="o",
                markersize=3, label=p, color=cmap(k),
                linestyle="--" if p.endswith("+thp") else "-")
    for pt in PUBLISHED:
        for pol, ms in pt.get("fork_ms", {}).items():
            ax.plot([pt["size"] / GIB], [ms], marker="*", color="crimson", markersize=10)
        if "range_ms" in pt:
            ax.vlines(pt["size"] / GIB, *pt["range_ms"], color="crimson", linewidth=2)
        y = (max(pt["fork_ms"].values()) if "fork_ms" in pt else None)
        if y is not None:
            ax.annotate(pt["label"], (pt["size"] / GIB, y), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("resident size, GiB")
    ax.set_ylabel("parent's fork latency, ms (predicted)")
    ax.set_title(f"fork latency per policy, profile {rec['profile']}; stars: published",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(fork_path, dpi=120)
    plt.close(fig)
    return [path, fork_path]


def run_breakeven(params=None):
    """`lazyvm run breakeven`: (text, record with the JSON envelope)."""
    params = dict(params or {})
    path = params.pop("plot", "") or ""
    quick = params.get("quick", False)
    try:
        if path:
            report.check_plot(path)
        rec = run(params)
    except (ValueError, ProfileError) as e:
        raise BreakevenError(f"breakeven: {e}") from None
    text = format_text(rec)
    if rec["profile"] is not None:
        prof = load_profile(rec["params"]["costs"])
        default_grid = not quick and not set(params) - {"costs", "check"}
        rec["targets"] = targets(prof, rec["seconds"] if default_grid else None)
        text += "\ntargets (published against predicted, profile " + prof.name + ")\n"
        text += format_targets(rec["targets"]) + "\n"
    if path:
        written = plot(rec, path)
        rec["plots"] = written
        text += "wrote " + ", ".join(written) + "\n"
    return text, dict(report.envelope("run"), **rec)


# ------------------------------------------------------------------------ targets

def odf_rule(vmas):
    """On-demand-fork's rule for the leaf tables of an mm whose private anonymous VMAs are
    `vmas` [(start, end), ...] with every page written: (shared, copied).  A 2 MiB table
    is shared when its whole span lies inside one VMA, else copied."""
    spans = {}
    for lo, hi in vmas:
        for t in range(lo // HUGE, (hi - 1) // HUGE + 1):
            spans.setdefault(t, []).append((lo, hi))
    shared = sum(1 for t, vs in spans.items()
                 if any(lo <= t * HUGE and (t + 1) * HUGE <= hi for lo, hi in vs))
    return shared, len(spans) - shared


ODF_VMAS = [(BASE, BASE + 10 * HUGE),                         # 10 whole tables
            (BASE + 10 * HUGE + 5 * PAGE, BASE + 13 * HUGE),  # a partial head, 2 whole
            (BASE + 13 * HUGE + 2 * PAGE, BASE + 15 * HUGE + 7 * PAGE),  # head, 1, tail
            (BASE + 20 * HUGE + 3 * PAGE, BASE + 20 * HUGE + 9 * PAGE)]   # inside one


def odf_tables(policy="odf"):
    """(shared, copied) leaf tables of an odf fork of ODF_VMAS, all written, as the core
    counts them (odf_tables_shared, odf_tables_copied)."""
    m = Machine(memory=256 << 20, layout="x86_64", contents=False, rmap=False,
                fork_mode="odf")
    p = m.spawn()
    for lo, hi in ODF_VMAS:
        p.mmap(hi - lo, addr=lo)
        p.touch(lo, hi - lo, write=True)
    before = m._counters()
    p.fork()
    after = m._counters()
    return (after["odf_tables_shared"] - before["odf_tables_shared"],
            after["odf_tables_copied"] - before["odf_tables_copied"])


def small_process(prof, policy, areas=3, pages=4):
    """McCracken's small process on x86_64 without pte_chains: `areas` areas of `pages`
    pages, each under its own leaf table, written; it forks, the child writes one page
    under each table and exits.  Predicted kernel ns of fork, writes and exit."""
    m, _ = machine_for(policy, 16 << 20, Fraction(0))
    p = m.spawn()
    addrs = [BASE + k * GIB for k in range(areas)]
    for a in addrs:
        p.mmap(pages * PAGE, addr=a)
        p.touch(a, pages * PAGE, write=True)
    c0 = _counters(m)
    c = p.fork()
    for a in addrs:
        c.touch(a, PAGE, write=True)
    c.exit()
    return prof.kernel_ns(_diff(c0, _counters(m)))


def _unshare_as_copy(prof):
    """`prof` with a privatize's own work priced as the per-table work of a fork's copy
    (tables_copied): copy_pte_range's table walk, done in the fault handler instead."""
    costs = dict(prof.costs, unshares=prof.costs["tables_copied"])
    return Profile(name=prof.name + " (unshares = tables_copied)", costs=costs,
                   uncertainty=dict(prof.uncertainty), source=dict(prof.source),
                   meta=prof.meta)


def _row(name, published, predicted, holds, note=""):
    return {"target": name, "published": published, "predicted": predicted,
            "holds": holds, "note": note}


def targets(prof, seconds=None):
    """The published-against-predicted checks of docs/BREAKEVEN.md, from breakeven's own
    counts priced with `prof`: a list of rows {"target", "published", "predicted",
    "holds" (True, False or None when it could not be checked), "note"}."""
    rows = []
    z = Fraction(0)

    def cell(pol, size, f=z, spread="clustered", child="live"):
        return price(counts(pol, size, f, spread, child), prof)

    have = {p: supported(p) is None for p in POLICY_NAMES}
    half = 512 << 20
    c5, s5 = cell("copy", half), cell("share", half)
    r = c5["fork_ns"] / s5["fork_ns"]
    rows.append(_row("512 MiB: lazy share fork >= 10x below copy",
                     "COW-PTE v2: 10 ms vs 0.625 ms (16x)",
                     f"{c5['fork_ns'] / 1e6:.2f} vs {s5['fork_ns'] / 1e6:.3f} ms ({r:.0f}x)",
                     r >= 10))
    if have["share-eager"]:
        e5 = cell("share-eager", half)
        r = e5["fork_ns"] / c5["fork_ns"]
        rows.append(_row("512 MiB: eager share fork within 15% of copy",
                         "COW-PTE v5: about 10 ms both",
                         f"{e5['fork_ns'] / 1e6:.2f} vs {c5['fork_ns'] / 1e6:.2f} ms "
                         f"({r:.2f}x)", abs(r - 1) <= 0.15))
    c1, s1 = cell("copy", GIB), cell("share", GIB)
    rows.append(_row("1 GiB: child's own page tables, copy 2,048 + upper kB, share <= 16 kB",
                     "COW-PTE v2: child VmPTE 2,096 vs 44 kB (with the rest of the process)",
                     f"copy {c1['child_pt_kb']} kB, share {s1['child_pt_kb']} kB",
                     c1["child_pt_kb"] - 2048 in (4, 8) and s1["child_pt_kb"] <= 16,
                     "x86_64: 512 leaf tables plus a PMD and a PUD table"))
    meta = (prof.meta or {}).get("thp")
    kern = None
    if meta:
        summ = thplib.summary(meta["measured"])
        f1, f4k = summ["fork"].get((GIB, True)), summ["fork"].get((GIB, False))
        if f1 and f4k and f1.get("vm_pte_kb_before") is not None:
            kern = {k: (f["child_vm_pte_kb"], f["parent_vm_pte_kb"],
                        f["parent_vm_pte_kb"] - f["vm_pte_kb_before"])
                    for k, f in (("thp", f1), ("4k", f4k))}
    sim = None
    if have["copy+thp"]:
        m, _ = machine_for("copy+thp", GIB, z)
        p = m.spawn()
        a = p.mmap(GIB, addr=BASE)
        p.madvise(a, GIB, "hugepage")
        p.touch(a, GIB, write=True)
        ch = p.fork()
        sim = (4 * ch.stats()["page_tables"], 4 * p.stats()["page_tables"])
    if kern:
        ktext = (f"kernel here: child = parent VmPTE, THP {kern['thp'][0]} kB, 4 KiB "
                 f"{kern['4k'][0]} kB; the mapping's own: THP {kern['thp'][2]} kB, 4 KiB "
                 f"{kern['4k'][2]} kB")
    else:
        ktext = "kernel: not measured (lazyvm calibrate --thp)"
    stext = (f"lazyvm: child {sim[0]} kB = parent {sim[1]} kB" if sim else
             "lazyvm: " + (supported("copy+thp") or ""))
    holds = None
    if kern and sim:
        holds = (kern["thp"][0] == kern["thp"][1] and kern["4k"][0] == kern["4k"][1]
                 and sim[0] == sim[1] and abs(kern["thp"][2] - sim[0]) <= 8)
    rows.append(_row(
        "THP 1 GiB: child's VmPTE after fork = the parent's = lazyvm's, as with 4 KiB",
        "Hildenbrand: a deposited table per huge PMD; here 2,092 vs 2,096 kB",
        ktext + "; " + stext, holds,
        "the mapping's own: VmPTE growth when it was written; within 8 kB: a PMD or PUD "
        "table more or less, as mmap placed it"))
    if meta:
        for r_ in thp_model.validate_fork(meta["measured"], prof):
            if r_["thp"]:
                ratio = r_["ratio"]
                m_ = r_["measured_ns"]
                rows.append(_row(
                    f"THP fork of {r_['size'] >> 30} GiB: predicted within 30% of measured",
                    "here: 1 GB 0.77 ms THP vs 66-104 ms 4 KiB (wall)",
                    f"predicted {r_['predicted_ns'] / 1e6:.3f} ms, measured (CPU) "
                    f"{m_['median'] / 1e6:.3f} ms [{m_['min'] / 1e6:.3f}-"
                    f"{m_['max'] / 1e6:.3f}] ({ratio:.2f}x)",
                    abs(ratio - 1) <= 0.30,
                    "lazyvm's counts of the fork, priced: a deposited table per huge PMD; "
                    "the core counts no huge entry copied (its reference and mapcount), "
                    "which the measured time includes; measured under the load "
                    f"{meta['measured'].get('loadavg_before_after', [[None]])[0][0]}"))
    else:
        rows.append(_row("THP fork within 30% of measured at 1 and 4 GiB",
                         "here: 1 GB 0.77 ms THP vs 66-104 ms 4 KiB", "not measured", None,
                         "run lazyvm calibrate --thp"))
    if have["share+thp"] and have["share-l2+thp"]:
        ct, st, s2 = (cell(p, GIB) for p in ("copy+thp", "share+thp", "share-l2+thp"))
        g1, g2 = ct["fork_ns"] / st["fork_ns"], ct["fork_ns"] / s2["fork_ns"]
        rows.append(_row("THP 1 GiB: share level 1 gains <= 1.2x over copy, level 2 > 10x",
                         "Tatashin: no gain from COW-PTE with THP",
                         f"level 1 {g1:.2f}x, level 2 {g2:.1f}x", g1 <= 1.2 and g2 > 10))
    else:
        rows.append(_row("THP 1 GiB: share level 1 gains <= 1.2x over copy, level 2 > 10x",
                         "Tatashin: no gain from COW-PTE with THP", "not simulated", None,
                         supported("share+thp") or ""))
    if have["odf"]:
        got = odf_tables()
        want = odf_rule(ODF_VMAS)
        rows.append(_row("ODF: leaf tables shared/copied follow ODF's rule (x86_64)",
                         "ODF: share a table only inside one private anonymous VMA",
                         f"shared {got[0]}, copied {got[1]}; rule {want[0]}, {want[1]}",
                         got == want))
        o1, o50 = cell("odf", GIB), cell("odf", 50 * GIB)
        k1, k50 = cell("copy", GIB), cell("copy", 50 * GIB)
        r1, r50 = k1["fork_ns"] / o1["fork_ns"], k50["fork_ns"] / o50["fork_ns"]
        per_gb = (k50["fork_ns"] - k1["fork_ns"]) / (o50["fork_ns"] - o1["fork_ns"])
        rows.append(_row("ODF: copy/odf fork ratio grows with size toward its per-GB "
                         "asymptote", "65x at 1 GB, 270x at 50 GB (growth 4.2x)",
                         f"{r1:.0f}x at 1 GiB, {r50:.0f}x at 50 GiB (growth {r50 / r1:.1f}x; "
                         f"per-GB asymptote {per_gb:.0f}x)",
                         r50 > r1 and r50 <= per_gb * 1.0001,
                         "in shape: the 1 GB ratio depends on the fixed fork cost"))
    sc, ss = small_process(prof, "copy"), small_process(prof, "share")
    note = "3 areas, each its own table, the child writes each"
    if ss <= sc and prof.costs["unshares"] < prof.costs["tables_copied"]:
        alt = small_process(_unshare_as_copy(prof), "share")
        note += (f"; the profile prices a privatize's own work (unshares) at "
                 f"{prof.costs['unshares']:.0f} ns against {prof.costs['tables_copied']:.0f} "
                 f"ns for a table fork copies: priced alike, share {alt / 1e3:.1f} us "
                 f"({alt / sc:.2f}x)")
    rows.append(_row("McCracken's small process: sharing slower than copying",
                     "400K fork+exec+exit 7.5 -> 7.7 ms; Morton +3.3%",
                     f"copy {sc / 1e3:.1f} us, share {ss / 1e3:.1f} us ({ss / sc:.2f}x)",
                     ss > sc, note))
    if seconds is not None:
        rows.append(_row("breakeven's default grid in at most 60 s", "-",
                         f"{seconds:.1f} s", seconds <= 60))
    return rows


def format_targets(rows):
    """One block per target: whether it holds, then the published and predicted figures
    (and the note), wrapped to the report width."""
    mark = {True: "yes", False: "NO ", None: " - "}
    out = []
    for r in rows:
        out += report.wrap(r["target"], mark[r["holds"]] + "  ", "     ")
        out += report.wrap("published: " + r["published"], "       ", "         ")
        out += report.wrap("predicted: " + r["predicted"], "       ", "         ")
        if r["note"]:
            out += report.wrap("note: " + r["note"], "       ", "         ")
    return "\n".join(out)


