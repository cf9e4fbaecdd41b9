"""``lazyvm sweep``: one workload over a grid of parameters, on local processes or Dask.

    lazyvm sweep SPEC.toml --executor local|dask [--scheduler ADDR] [--workers N]
                 --out FILE.parquet|FILE.csv [--plot F.png --x PARAM --y FIGURE]

SPEC (TOML)::

    [grid]                       # lists, crossed: 2 * 2 * 3 = 12 points
    workload = ["fork_exit"]
    fork_mode = ["copy", "share"]
    rmap = [false, true]
    pages = [1024, 16384, 65536]
    [fixed]                      # one value for every point (optional)
    write_fraction = 0.1
    seed = 1
    [[points]]                   # explicit points, added to the grid's (optional)
    fork_mode = "share"
    pages = 262144

Every point runs :func:`run_point` in a fresh process (forked from the executor's
worker): build a Machine, map and write-touch ``pages`` pages, fork, write
``write_fraction`` of the pages (chosen by ``seed``) in the child (workload
``fork_exit``) or the parent (``snapshot``), or exec the child at once (``fork_exec``);
then the child exits.  The workloads are those of ``lazyvm run`` (one registry,
lazyvm.workloads.builtin.WORKLOADS) that say what a sweep point does; the names
``fork-write-exit``, ``parent-writes`` and ``fork-exec`` are still read, with a
DeprecationWarning naming the new one.  A row holds the point's parameters, every
``m.stats()`` counter after the child's first exit, the simulator's wall time: the
first fork of the fresh process (``first_fork_ns``) and each phase's median, quartiles
and extremes over ``repeats`` warm rounds (``fork_ns_median``, ``write_ns_q1``,
``exit_ns_max``, ``sim_ns_median``, ...: TIME_COLUMNS), ``kernel_ns`` (everything, set-up
included) and ``kernel_ns_run`` (fork to exit) when the Machine has a cost profile,
and ``error`` (empty unless the point failed).  Results are one
pandas DataFrame written to Parquet or CSV (by extension).  Re-running with the same
FILE skips the points already done (keyed by their parameters); failed points are
run again.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import json
import math
import multiprocessing as mp
import os
import pickle
import struct
import sys
import time
import traceback
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # a dependency on Python < 3.11 (pyproject.toml)
    import tomli as tomllib

from .. import Machine
from ..costs import load_profile
from ..layout import LAYOUTS, PAGE_SIZE as PAGE
from ..machine import check_machine_args
from ..measure import host as _host
from ..measure.host import memory_for
from ..report import format as report
from . import breakeven
from .builtin import WORKLOADS as REGISTRY

# The registry's workloads that a sweep runs, and breakeven (one cell per point)
WORKLOADS = tuple(name for name, w in REGISTRY.items() if w.sweep) + ("breakeven",)
# Earlier spellings of the workload names, read for one more release with a warning.
RENAMED = {"fork-write-exit": "fork_exit", "parent-writes": "snapshot",
           "fork-exec": "fork_exec"}


class SpecError(ValueError):
    """A sweep SPEC that cannot be run; the message is one line."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool))


# name: (check, type name for messages, default, extra validation)
PARAMS = {
    "workload": (lambda v: v in WORKLOADS, "one of " + ", ".join(WORKLOADS), "fork_exit"),
    "fork_mode": (lambda v: v in ("copy", "share"), "'copy' or 'share'", "share"),
    "rmap": (lambda v: isinstance(v, bool), "true or false", True),
    "pages": (lambda v: _is_int(v) and v > 0, "a positive integer", 1024),
    "write_fraction": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]", 0.0),
    "seed": (lambda v: _is_int(v) and v >= 0, "a non-negative integer", 0),
    "memory": (lambda v: _is_int(v) and v >= 0, "bytes (0: enough for the point)", 0),
    "layout": (lambda v: isinstance(v, str), "a layout name", "i386"),
    "share_level": (lambda v: _is_int(v) and v >= 1, "an integer >= 1", 1),
    "costs": (lambda v: isinstance(v, str), "a cost profile name or path", ""),
    "contents": (lambda v: isinstance(v, bool), "true or false", True),
    "repeats": (lambda v: _is_int(v) and 1 <= v <= 1000, "an integer from 1 to 1000", 5),
    # workload "breakeven" only (lazyvm.workloads.breakeven: one cell per point)
    "policy": (lambda v: v == "" or v in breakeven.POLICY_NAMES, "a breakeven policy", ""),
    "spread": (lambda v: v in ("clustered", "uniform"), "'clustered' or 'uniform'", "uniform"),
    "child": (lambda v: v in ("exec", "live"), "'exec' or 'live'", "live"),
}
# The timed phases of a point; each has `_median`, `_q1`, `_q3`, `_min`, `_max` columns
# over the point's `repeats` warm rounds, and `first_fork_ns` is the cold first fork.
PHASES = ("fork", "write", "exit", "sim")
TIME_COLUMNS = ("first_fork_ns",) + tuple(f"{ph}_ns_{s}" for ph in PHASES
                                          for s in ("median", "q1", "q3", "min", "max"))
PARAM_ORDER = tuple(PARAMS)


def renamed(name, where="point"):
    """The workload name of the registry for `name`; an earlier spelling gives a
    DeprecationWarning that names the new one."""
    new = RENAMED.get(name) if isinstance(name, str) else None
    if new is None:
        return name
    warnings.warn(f"{where}: workload {name!r} is now called {new!r} (the name lazyvm run "
                  f"uses); {name!r} will not be read by the next release",
                  DeprecationWarning, stacklevel=3)
    return new


def normalise(point, where="point"):
    """A point with every parameter (defaults filled), checked; raises SpecError."""
    if not isinstance(point, dict):
        raise SpecError(f"{where}: a point is a table of parameters")
    if "workload" in point:
        point = dict(point, workload=renamed(point["workload"], where))
    for k, v in point.items():
        if k not in PARAMS:
            raise SpecError(f"{where}: unknown parameter {k!r} (parameters: "
                            f"{', '.join(PARAM_ORDER)})")
        check, what, _ = PARAMS[k]
        if not check(v):
            raise SpecError(f"{where}: {k} = {v!r} is not {what}")
    full = {k: point.get(k, PARAMS[k][2]) for k in PARAM_ORDER}
    full["write_fraction"] = float(full["write_fraction"])
    if full["workload"] == "breakeven":
        _check_breakeven(full, where)
    else:
        _check_machine(full, where)
    if full["costs"]:
        _check_costs(full["costs"], where)
    return full


def _check_machine(point, where):
    """The Machine a point builds must be one Machine accepts, and its pages must fit in
    the layout's user space: checked before any point runs."""
    try:
        lay = check_machine_args(
            memory=point["memory"] or _memory_for(point), fork_mode=point["fork_mode"],
            rmap=point["rmap"], layout=point["layout"], share_level=point["share_level"],
            contents=point["contents"])[-1]
    except (TypeError, ValueError) as e:
        raise SpecError(f"{where}: {e}") from None
    if point["pages"] * PAGE > lay.task_size:
        raise SpecError(f"{where}: pages = {point['pages']:,} is more than the "
                        f"{lay.task_size // PAGE:,} pages of {point['layout']}'s user space")


def _check_breakeven(full, where):
    """A breakeven point: a policy, a size breakeven takes (1 GiB and more: whole GiB)
    and a fraction 0 or 1/2**k.  The policy names the Machine (x86_64, contents=False,
    no pte_chains): fork_mode, rmap, layout, share_level, memory and contents are not
    used."""
    if not full["policy"]:
        raise SpecError(f"{where}: workload breakeven needs a policy (one of "
                        f"{', '.join(breakeven.POLICY_NAMES)})")
    try:
        breakeven.parse_size(full["pages"] * PAGE)
        breakeven.parse_fraction(full["write_fraction"])
    except breakeven.BreakevenError as e:
        raise SpecError(f"{where}: {e}") from None


_COSTS_OK: set = set()


def _check_costs(spec, where):
    """A costs profile must load before any point runs (lazyvm.costs.load_profile)."""
    if spec in _COSTS_OK:
        return
    try:
        load_profile(spec)
    except Exception as e:
        raise SpecError(f"{where}: costs = {spec!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    _COSTS_OK.add(spec)


def point_key(point):
    """The identity of a point: its parameters, canonically."""
    p = {k: point.get(k) for k in PARAM_ORDER}
    p["write_fraction"] = float(p["write_fraction"])
    p["pages"], p["seed"], p["memory"], p["share_level"] = (
        int(p["pages"]), int(p["seed"]), int(p["memory"]), int(p["share_level"]))
    p["rmap"], p["contents"] = bool(p["rmap"]), bool(p["contents"])
    rep = point.get("repeats")
    p["repeats"] = None if rep is None or (isinstance(rep, float) and math.isnan(rep)) \
        else int(rep)
    for k in ("policy", "spread", "child"):
        p[k] = "" if not isinstance(p[k], str) else p[k]
    p["costs"] = "" if p["costs"] is None or (isinstance(p["costs"], float)
                                              and math.isnan(p["costs"])) else str(p["costs"])
    return json.dumps(p, sort_keys=True)


_INTS = ("pages", "seed", "memory", "share_level", "repeats")
_BOOLS = ("rmap", "contents")


def _done_point(rec, where):
    """The parameters of a finished row read back from a results file, as the sweep
    wrote them, or SpecError: a value this sweep could not have written (64.5 pages,
    rmap "maybe", a missing value) is a damaged or foreign file, not a point done."""
    p = {}
    for k in PARAM_ORDER:
        v = rec.get(k)
        if isinstance(v, np.generic):
            v = v.item()
        if k == "costs" and (v is None or (isinstance(v, float) and math.isnan(v))):
            v = ""
        if k in ("repeats", "policy", "spread", "child") and (
                v is None or (isinstance(v, float) and math.isnan(v))):
            v = PARAMS[k][2]                  # an empty cell, or a file from before
        if k in _INTS and isinstance(v, float) and v.is_integer():
            v = int(v)                        # a column that held a missing value
        if k == "write_fraction" and _is_int(v):
            v = float(v)
        ok = (_is_int(v) if k in _INTS else isinstance(v, bool) if k in _BOOLS
              else isinstance(v, float) if k == "write_fraction" else isinstance(v, str))
        if not ok or not PARAMS[k][0](v):
            raise SpecError(f"{where}: {k} = {v!r} is not {PARAMS[k][1]}: not a row this "
                            "sweep wrote; move the file away or choose another --out")
        p[k] = v
    try:
        return normalise(p, where)
    except SpecError as e:
        raise SpecError(f"{e}: not a row this sweep wrote; move the file away or choose "
                        "another --out") from None


def parse_spec(spec):
    """The points of a SPEC dict (already parsed TOML), in order, without duplicates."""
    if not isinstance(spec, dict):
        raise SpecError("SPEC must be a TOML table")
    unknown = set(spec) - {"grid", "fixed", "points"}
    if unknown:
        raise SpecError(f"SPEC: unknown section {sorted(unknown)[0]!r} (use [grid], "
                        "[fixed], [[points]])")
    grid = spec.get("grid", {})
    fixed = spec.get("fixed", {})
    explicit = spec.get("points", [])
    if not isinstance(grid, dict) or not isinstance(fixed, dict):
        raise SpecError("SPEC: [grid] and [fixed] must be tables")
    if not isinstance(explicit, list):
        raise SpecError("SPEC: points must be an array of tables ([[points]])")
    if "grid" in spec and not grid:
        raise SpecError("SPEC: [grid] is empty: give at least one parameter list")
    if not grid and not explicit:
        raise SpecError("SPEC: no points: add a [grid] of parameter lists or [[points]]")
    for k, v in grid.items():
        if k not in PARAMS:
            raise SpecError(f"SPEC: [grid] has unknown parameter {k!r} (parameters: "
                            f"{', '.join(PARAM_ORDER)})")
        if not isinstance(v, list):
            raise SpecError(f"SPEC: [grid] {k} must be a list, not {v!r} (use [fixed] "
                            "for one value)")
        if not v:
            raise SpecError(f"SPEC: [grid] {k} is an empty list: the grid has no points")
    points = []
    if grid:
        names = list(grid)
        for combo in itertools.product(*(grid[n] for n in names)):
            points.append({**fixed, **dict(zip(names, combo))})
    for i, p in enumerate(explicit, 1):
        if not isinstance(p, dict):
            raise SpecError(f"SPEC: points[{i}] must be a table")
        points.append({**fixed, **p})
    out, seen = [], set()
    for i, p in enumerate(points, 1):
        where = f"SPEC point {i} ({', '.join(f'{k}={v!r}' for k, v in p.items())})"
        full = normalise(p, where)
        key = point_key(full)
        if key not in seen:
            seen.add(key)
            out.append(full)
    return out


def load_spec(path):
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise SpecError(f"cannot read SPEC {path}: {e.strerror}") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"SPEC {path} is not valid TOML: {e}") from None
    return parse_spec(spec)


# -- one point ------------------------------------------------------------------------

def _memory_for(point):
    """Enough memory for the point: its pages twice (copy-on-write copies), tables,
    boot frames and chains, with lazyvm.measure.host.memory_for's slack and limit."""
    pages = point["pages"]
    frames = 2 * pages + pages // 256 + 4096
    if point["layout"] not in LAYOUTS:          # Machine names the layouts in its error
        return frames * PAGE
    return memory_for(frames, point["layout"])


def check_points(points):
    """Every point against this build and this machine, before any runs: the memory it
    needs within the layout's limit and this machine's memory (normalise has checked
    its pages against the layout's user space).  Raises SpecError naming the first point that fails."""
    for i, p in enumerate(points, 1):
        if p["workload"] == "breakeven":         # sized by breakeven, not by a Machine
            continue
        where = f"SPEC point {i} (pages={p['pages']:,}, layout={p['layout']})"
        max_memory = _host.layout_limits(p["layout"])[1]   # pages: checked by normalise
        need = p["memory"] or _memory_for(p)
        if need > max_memory:
            raise SpecError(f"{where}: needs {need >> 20:,} MiB of simulated memory, more "
                            f"than {p['layout']}'s {max_memory >> 20:,} MiB")
        try:
            _host.check_host_memory(need, where)
        except ValueError as e:
            raise SpecError(str(e)) from None


def result_columns():
    """Every column a row of a sweep can have: the parameters, the counters of
    Machine.stats(), the times and the rest."""
    return (PARAM_ORDER + ("error",) + tuple(Machine(memory=4 << 20).stats())
            + TIME_COLUMNS + ("kernel_ns_run", "pages_written", "machine_memory"))


def check_plot_columns(x, y):
    """--x must be a parameter, --y a column of the results."""
    if x not in PARAM_ORDER:
        raise SpecError(f"--x {x!r} is not a parameter (parameters: "
                        f"{', '.join(PARAM_ORDER)})")
    cols = result_columns()
    if y not in cols:
        near = [c for c in cols if c.startswith(y)]
        raise SpecError(f"--y {y!r} is not a column of the results"
                        + (f" (did you mean {', '.join(near[:3])}?)" if near else
                           " (e.g. sim_ns_median, fork_ns_median, first_fork_ns, "
                           "ptes_copied, kernel_ns)"))


def check_scheduler(address, timeout=5.0):
    """A Dask scheduler address that answers: tcp://HOST:PORT (or tls://), reachable
    within `timeout` seconds.  Raises SpecError in one line."""
    import re
    import socket
    m = re.fullmatch(r"(tcp|tls)://\[?([^\]/]+?)\]?:(\d+)/?", address or "")
    if not m:
        raise SpecError(f"--scheduler {address!r}: not a Dask scheduler address "
                        "(tcp://HOST:PORT)")
    host, port = m.group(2), int(m.group(3))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise SpecError(f"--scheduler {address}: no scheduler answers there ({why})") \
            from None


def run_breakeven_point(point):
    """A breakeven cell (lazyvm.workloads.breakeven.counts: simulated, or extrapolated
    per GiB beyond 2 GiB): its total counts, and with costs the predicted parent fork
    latency (kernel_ns_fork), first write (kernel_ns_first_write), total from the fork on
    (kernel_ns_run) and the child's own page tables (child_pt_kb)."""
    row = dict(point)
    t0 = time.perf_counter_ns()
    c = breakeven.counts(point["policy"], point["pages"] * PAGE,
                         Fraction(point["write_fraction"]).limit_denominator(1 << 20),
                         point["spread"], point["child"])
    row.update({k: int(v) for k, v in c["total"].items()})
    row.update({"pages_written": c["written"], "child_tables": c["child_tables"],
                "peak_tables": c["peak_tables"], "extrapolated": bool(c.get("extrapolated")),
                "sim_ns": time.perf_counter_ns() - t0})
    if point["costs"]:
        pr = breakeven.price(c, load_profile(point["costs"]))
        row.update({"kernel_ns_fork": pr["fork_ns"], "kernel_ns_run": pr["total_ns"],
                    "kernel_ns_first_write": pr["first_write_ns"] or 0,
                    "child_pt_kb": pr["child_pt_kb"], "peak_pt_kb": pr["peak_pt_kb"]})
    return row


def run_point(point):
    """Run one point in this process; return its row (a dict).  The fork, the writes
    and the exit run 1 + `repeats` times: the first is the cold first fork of a fresh
    process (`first_fork_ns`; the counters are of it), the `repeats` after it are warm
    and give each phase's median, quartiles and extremes."""
    if point["workload"] == "breakeven":
        return run_breakeven_point(point)
    row = dict(point)
    kw = {"fork_mode": point["fork_mode"], "rmap": point["rmap"],
          "memory": point["memory"] or _memory_for(point), "layout": point["layout"],
          "share_level": point["share_level"], "contents": point["contents"]}
    if point["costs"]:
        kw["costs"] = point["costs"]
    kind = REGISTRY[point["workload"]].sweep
    clock = time.perf_counter_ns
    m = Machine(**kw)
    p = m.spawn()
    n = point["pages"]
    a = p.mmap(n * PAGE)
    p.touch(a, n * PAGE, write=True)
    m.reset_peaks()
    before = m.stats()
    k = int(round(point["write_fraction"] * n))
    rng = np.random.default_rng(point["seed"])
    idx = rng.choice(n, size=k, replace=False) if k else np.zeros(0, np.int64)
    addrs = a + idx.astype(np.int64) * PAGE
    times = {ph: [] for ph in PHASES}
    for r in range(1 + int(point.get("repeats") or 1)):
        t0 = clock()
        c = p.fork()
        t1 = clock()
        if kind == "exec":
            c.exec()
        elif k:
            (p if kind == "parent" else c).touch_pages(addrs, write=True)
        t2 = clock()
        c.exit()
        t3 = clock()
        if r == 0:
            stats = m.stats()
            row.update({key: int(v) for key, v in stats.items()})
            if "kernel_ns" in stats:        # the fork, the writes and the exit alone
                row["kernel_ns_run"] = int(stats["kernel_ns"]) - int(before["kernel_ns"])
            row["first_fork_ns"] = t1 - t0
            continue
        for ph, ns in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
            times[ph].append(ns)
    for ph, xs in times.items():
        sp = _host.spread(xs)
        for s in ("median", "q1", "q3", "min", "max"):
            row[f"{ph}_ns_{s}"] = int(sp[s])
    row.update({"pages_written": k, "machine_memory": kw["memory"]})
    return row


def run_point_fresh(point):
    """run_point in a fresh process forked from this one (POSIX), so no point sees
    another's host memory or state; a failure becomes the row's error."""
    if not hasattr(os, "fork"):
        return _guarded(point)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child
        try:
            os.close(r)
            data = pickle.dumps(_guarded(point))
            with os.fdopen(w, "wb") as f:
                f.write(struct.pack("<Q", len(data)))
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        head = f.read(8)
        data = f.read(struct.unpack("<Q", head)[0]) if len(head) == 8 else b""
    _, status = os.waitpid(pid, 0)
    if data:
        return pickle.loads(data)
    row = dict(point)
    row["error"] = f"point process died (wait status {status})"
    return row


def _guarded(point):
    try:
        row = run_point(point)
        row["error"] = ""
    except Exception as e:                            # recorded, the sweep goes on
        row = dict(point)
        tb = traceback.extract_tb(e.__traceback__)[-1:]
        where = f" at {Path(tb[0].filename).name}:{tb[0].lineno}" if tb else ""
        row["error"] = f"{type(e).__name__}: {e}{where}".replace("\n", " ")
    return row


# -- running a sweep ----------------------------------------------------------------

# pandas, pyarrow, dask and matplotlib are optional (the sweep and plot extras): each is
# imported where it is needed, so that a sweep without them says which one to install.

def read_results(path):
    import pandas as pd
    path = Path(path)
    if not path.exists():
        return None
    if path.suffix == ".parquet":
        return _renamed_rows(pd.read_parquet(path))
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for col in ("error", "costs", "layout", "workload", "fork_mode"):
        if col in df:                    # an all-empty column reads back as float NaN
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return _renamed_rows(df)


def _renamed_rows(df):
    """Rows written under an earlier workload name carry the registry's name, so that a
    results file written before the renaming resumes."""
    if "workload" in df:
        df["workload"] = df["workload"].replace(RENAMED)
    return df


def write_results(df, path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def check_out(path):
    suffix = Path(path).suffix
    if suffix not in (".parquet", ".csv"):
        raise SpecError(f"--out must end in .parquet or .csv, not {suffix or 'nothing'!r}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SpecError("Parquet needs pyarrow: pip install 'lazyvm[sweep]' (or use "
                            ".csv)") from None


def check_writable(path, what):
    try:
        report.check_output(path, what)
    except ValueError as e:
        raise SpecError(str(e)) from None


def check_plot(path):
    try:
        report.check_plot(path)
    except ValueError as e:
        raise SpecError(str(e)) from None


def _frame(rows):
    import pandas as pd
    df = pd.DataFrame(rows)
    first = [c for c in PARAM_ORDER if c in df] + (["error"] if "error" in df else [])
    df = df[first + [c for c in df.columns if c not in first]]
    df["error"] = df["error"].fillna("").astype(str)
    return df


def sweep(points, out, executor="local", workers=2, scheduler=None, progress=None,
          checkpoint_s=10.0):
    """Run the points not already done in out; write every row to out; return the
    DataFrame.  executor "local" (ProcessPoolExecutor) or "dask" (a LocalCluster of
    `workers` processes, or the scheduler at `scheduler`)."""
    import pandas as pd
    check_out(out)
    try:
        old = read_results(out)
    except (ValueError, OSError, KeyError, TypeError) as e:
        # damaged Parquet (pyarrow's ArrowInvalid), empty or non-UTF-8 CSV
        first = " ".join(str(e).split())[:160] or type(e).__name__
        raise SpecError(f"{out}: cannot resume from it ({type(e).__name__}: {first}); "
                        "move it away or choose another --out") from None
    done = {}
    if old is not None and len(old):
        missing = [c for c in PARAM_ORDER if c not in old]
        if missing:
            raise SpecError(f"{out} has no column {missing[0]!r}: not a lazyvm sweep file")
        for i, rec in enumerate(old.to_dict("records"), 1):
            if not rec.get("error"):
                rec.update(_done_point(rec, f"{out}: row {i}"))
                done[point_key(rec)] = rec
    todo = [p for p in points if point_key(p) not in done]
    rows = list(done.values())
    if progress is None:
        progress = sys.stderr.isatty()
    bar = None
    if progress and todo:
        bar = tqdm(total=len(todo), unit="point", desc="sweep", file=sys.stderr)
    last = time.monotonic()

    def collect(row):
        nonlocal last
        rows.append(row)
        if bar is not None:
            bar.update(1)
        if time.monotonic() - last > checkpoint_s:
            write_results(_frame(rows), out)
            last = time.monotonic()

    try:
        if todo:
            if executor == "local":
                _run_local(todo, workers, collect)
            elif executor == "dask":
                _run_dask(todo, workers, scheduler, collect)
            else:
                raise SpecError(f"--executor must be local or dask, not {executor!r}")
    finally:
        if bar is not None:
            bar.close()
        if rows:
            df = _frame(rows)
            order = {point_key(p): i for i, p in enumerate(points)}
            df["_o"] = [order.get(point_key(r), len(order)) for r in df.to_dict("records")]
            df = df.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
            write_results(df, out)
    return df if rows else pd.DataFrame()


def _run_local(todo, workers, collect):
    ctx = mp.get_context("fork") if hasattr(os, "fork") else None
    ex = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futs = [ex.submit(run_point_fresh, p) for p in todo]
        for f in cf.as_completed(futs):
            collect(f.result())
    finally:                     # on Ctrl-C, drop what has not started; keep what is done
        ex.shutdown(wait=True, cancel_futures=True)


def _run_dask(todo, workers, scheduler, collect):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SpecError("--executor dask needs dask.distributed: pip install "
                        "'lazyvm[sweep]'") from None
    import dask
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, ValueError, TimeoutError) as e:
            raise SpecError(f"--scheduler {scheduler}: no Dask scheduler answers there "
                            f"({' '.join(str(e).split()) or type(e).__name__})") from None
    else:
        # Fork the workers from this process, which has lazyvm, numpy and distributed
        # imported already: the cluster is up in ~0.3 s instead of ~2 s for spawned
        # workers that import everything again (measured; docs/SWEEP.md).  Linux only:
        # macOS's system libraries do not survive fork.
        method = "fork" if hasattr(os, "fork") and sys.platform.startswith("linux") \
            else "spawn"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                   processes=True, dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        futs = client.map(run_point_fresh, todo, pure=False)
        try:
            for f in as_completed(futs):
                collect(f.result())
        finally:
            client.cancel(futs)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# -- plot -----------------------------------------------------------------------------

def plot(df, path, x, y):
    """The median of y against x, one line per combination of the other parameters that
    vary; seeds are repeats (bars: their min to max)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpecError("--plot needs matplotlib: pip install 'lazyvm[plot]'") from None
    if x not in df:
        raise SpecError(f"--x {x!r} is not a column (parameters: {', '.join(PARAM_ORDER)})")
    if y not in df:
        raise SpecError(f"--y {y!r} is not a column of the results")
    ok = df[df["error"] == ""]
    if not len(ok):
        raise SpecError("--plot: every point failed; nothing to draw")
    scale, unit = (1e6, " (ms)") if y.endswith("_ns") else (1, "")
    vary = [c for c in PARAM_ORDER if c not in (x, "seed") and ok[c].nunique() > 1]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    groups = ok.groupby(vary, sort=True) if vary else [((), ok)]
    lo_all, hi_all = [], []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        agg = g.groupby(x, sort=True)[y].agg(["median", "min", "max"]) / scale
        label = ", ".join(f"{k}={v}" for k, v in zip(vary, key)) or y
        ax.errorbar(agg.index, agg["median"], yerr=[agg["median"] - agg["min"],
                                                   agg["max"] - agg["median"]],
                    marker="o", capsize=3, label=label)
        lo_all.append(agg["min"].min())
        hi_all.append(agg["max"].max())
    ax.set_xlabel(x)
    nseeds = ok["seed"].nunique()
    ax.set_ylabel(y + unit + (f"\nmedian of {nseeds} seeds, bars min\u2013max"
                              if nseeds > 1 else ""))
    if pd_numeric(ok[x]) and ok[x].min() > 0 and ok[x].max() / ok[x].min() > 50:
        ax.set_xscale("log")
    if min(lo_all) > 0 and max(hi_all) / min(lo_all) > 100:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"lazyvm sweep: {y} against {x}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pd_numeric(col):
    return col.dtype.kind in "iuf"
