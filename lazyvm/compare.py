"""`lazyvm compare`: fork in every configuration beside this machine's own fork().

For each size N (touched pages) the run measures, one after the other and in the same
process:

- Linux: this machine's fork() of a real process holding N touched private pages
  (:func:`lazyvm.measure.measure_linux`), with a baseline fork of the same process
  without them;
- the simulator in four configurations: ``copy``, ``copy+rmap``, ``share``,
  ``share+rmap``.  Each gets its own :class:`lazyvm.Machine`, one process with N private
  pages written by ``touch``; its first fork is the warm-up and the one whose counters are
  recorded (page tables, chain nodes, frames it took); then ``repeats`` forks of each
  are timed, round-robin across the four machines, each child exiting before the next
  fork.  A configuration whose spread is wide (:data:`lazyvm.measure.WIDE`) gets more
  rounds, up to :data:`lazyvm.measure.MAX_FACTOR` times as many, and the report says
  whether it settled.  The machines are kept alive together for this (their resident
  memory is small: the simulator never writes the data frames of a touched page), and
  freed before the next size; Linux is measured with no machine alive, so that its fork
  copies only the Python process and the N pages.

Every timed figure carries its spread (median, quartiles, extremes).  Every figure the
report prints was measured in that run, or is quoted from a publication with its source
(:mod:`lazyvm.measure`'s published figures).  The simulator counts the work the kernel
would do and does it in compiled loops over numpy memory: its times are those of that
work, not of a kernel.
"""

from __future__ import annotations

import gc
import sys
import time

from . import measure as _m
from . import report as _r

PAGE_SIZE = _m.PAGE_SIZE
MAP_BASE = 0x40000000                 # where a mapping goes when it fits above it
USER_PAGES = _m.layout_limits("i386")[0]   # 786,432: the largest i386 size there is

DEFAULT_SIZES = (1024, 4096, 10240, 16384, 65536, 262144, 786432)
QUICK_SIZES = (1024, 10240, 65536, 262144)

LINUX = "Linux"
CONFIG_NAMES = _m.CONFIG_NAMES
# (name, fork mode, rmap), in the order rows are printed (0.1.0's shape).
CONFIGS = tuple((name, mode, rmap) for name, (mode, rmap) in _m.CONFIGS.items())

# Counters recorded as deltas across the first fork.
FORK_COUNTERS = ("page_tables", "pte_chain_nodes", "frames_used", "ptes_copied", "pgds",
                 "pt_use_refs", "shared_tables", "chain_nodes_allocated",
                 "pte_chain_slots", "rmap_direct")

WHY_DIFFERENT = (
    "Why the simulator's ratios can differ from the kernel's: the simulator counts the "
    "work the kernel would do (the same PTEs copied, references taken, chain slots "
    "added, tables allocated) and times it as compiled loops over numpy arrays in one "
    "host process. It has no TLB flushes, locks or atomic operations, no slab "
    "allocator, and no process-creation costs (task, files, signal handlers, VMAs) "
    "beyond a few Python objects."
)


def default_repeats(pages: int, quick: bool = False) -> int:
    """Timed forks per measurement: fewer for big sizes, where each is long and steady."""
    if quick:
        return 9
    if pages <= 16384:
        return 31
    if pages <= 65536:
        return 15
    if pages <= 262144:
        return 9
    return 7


def machine_memory(pages: int, layout: str = "i386") -> int:
    """Bytes of simulated memory for N touched pages: the pages and two sets of page
    tables (parent and a copying child), with lazyvm.measure.memory_for's slack."""
    return _m.memory_for(pages + 2 * (-(-pages // 512)), layout)


def map_address(pages: int, user_pages: int = USER_PAGES) -> int:
    """Where the N-page mapping goes: at 1 GiB if it fits below the top of user space,
    else at 0 (786,432 pages fill the whole i386 user space). Both are 4 MiB aligned, so
    it takes ceil(N/1024) i386 page tables exactly."""
    return MAP_BASE if MAP_BASE // PAGE_SIZE + pages <= user_pages else 0


class SimFork:
    """One configuration at one size: a machine whose one process has N touched private
    pages, forked again and again.

    Building it (``__init__``) times the fork of an empty process (the simulator's fixed
    cost of a fork), maps and touches the pages, then makes the first fork: it warms up
    (the chain pool grows to its steady size) and is the one whose counters are
    recorded (``first`` holds the growth of each FORK_COUNTERS counter across it, before
    the child exits).  ``fork_once()`` times two more forks and their children's exits:
    the first comes after whatever ran before (another machine's forks: caches cold), the
    second right after it (caches warm, as when Linux's fork is timed back to back);
    ``result()`` gives the figures (ns) and frees the machine.
    """

    def __init__(self, pages: int, mode: str, rmap: bool, repeats: int,
                 options: dict | None = None, user_pages: int = USER_PAGES):
        import lazyvm

        options = options or {}
        layout = options.get("layout", "i386")
        self.pages, self.mode, self.rmap, self.repeats = pages, mode, rmap, repeats
        t_build = _m.clock()
        self.m = m = lazyvm.Machine(memory=machine_memory(pages, layout), fork_mode=mode,
                                    rmap=rmap, **options)
        self.p = p = m.spawn()
        p.fork(mode=mode).exit()
        self.empty = []
        for _ in range(repeats):
            t0 = _m.clock()
            c = p.fork(mode=mode)
            self.empty.append(_m.clock() - t0)
            c.exit()

        self.addr = map_address(pages, user_pages)
        length = pages * PAGE_SIZE
        p.mmap(length, prot="rw", shared=False, addr=self.addr)
        t0 = _m.clock()
        p.touch(self.addr, length, write=True)
        self.touch_ns = _m.clock() - t0
        self.setup_ns = _m.clock() - t_build

        self.s0 = s0 = m.stats()
        t0 = _m.clock()
        c = p.fork(mode=mode)
        t1 = _m.clock()
        s1 = m.stats()
        t2 = _m.clock()
        c.exit()
        t3 = _m.clock()
        self.first = {
            "fork_ns": t1 - t0,
            "exit_ns": t3 - t2,
            "delta": {k: s1[k] - s0[k] for k in FORK_COUNTERS if k in s0 and k in s1},
        }
        self.forks, self.exits, self.cold = [], [], []

    def _fork_exit(self) -> tuple:
        t0 = _m.clock()
        c = self.p.fork(mode=self.mode)
        t1 = _m.clock()
        c.exit()
        return t1 - t0, _m.clock() - t1

    def fork_once(self) -> None:
        """Time a fork with cold caches, then one with warm caches (the one reported),
        each with the exit of its child."""
        self.cold.append(self._fork_exit()[0])
        f, e = self._fork_exit()
        self.forks.append(f)
        self.exits.append(e)

    def result(self, check: bool = False, settled: dict | None = None) -> dict:
        """The figures of this configuration; frees the machine."""
        m = self.m
        s_end = m.stats()
        if check:
            m.check()
        forks, exits = self.forks, self.exits
        fork_s = _m.spread(forks)
        fork_s.update(settled or {"extra": 0, "settled": not fork_s["wide"]})
        fe = [f + e for f, e in zip(forks, exits)]
        out = {
            "pages": self.pages,
            "fork_mode": self.mode,
            "rmap": self.rmap,
            "repeats": len(forks),
            "memory_bytes": int(m.memory),
            "map_address": self.addr,
            "setup_ns": self.setup_ns,
            "touch_ns": self.touch_ns,
            "empty_fork_ns_median": _m.spread(self.empty)["median"],
            "empty_fork_ns_spread": _m.spread(self.empty),
            "fork_ns": forks,
            "fork_ns_median": fork_s["median"],
            "fork_ns_spread": fork_s,
            "exit_ns": exits,
            "exit_ns_median": _m.spread(exits)["median"],
            "exit_ns_spread": _m.spread(exits),
            "fork_exit_ns_median": _m.spread(fe)["median"],
            "fork_exit_ns_spread": _m.spread(fe),
            "fork_cold_ns": self.cold,
            "fork_cold_ns_median": _m.spread(self.cold)["median"],
            "fork_cold_ns_spread": _m.spread(self.cold),
            "ns_per_page": fork_s["median"] / self.pages,
            "first_fork": self.first,
            "stats_after": {k: int(v) for k, v in s_end.items()},
            # frames still used beyond those of the parent before its first fork
            "frames_leaked": int(s_end["frames_used"] - self.s0["frames_used"]),
        }
        if check:
            out["checked"] = True
        self.m = self.p = None  # free the machine's memory before the next is built
        return out


# Simulated machines of one size are kept alive together, so that their timed forks can
# be interleaved, while the resident memory they add stays under this; a machine that
# would go over it is measured on its own at once and freed.
RESIDENT_BUDGET = 1 << 30


def measure_size(pages: int, repeats: int, check: bool = False, bar=None,
                 options: dict | None = None, user_pages: int = USER_PAGES) -> dict:
    """All four configurations at one size, their timed forks interleaved round-robin
    (the order rotating every round), so a burst of load on the host falls on all of
    them alike; then more rounds for those whose spread is wide.  Returns
    {config name: figures}."""
    bar = bar or _NoBar()
    live, out = [], {}
    rss0 = _m.vm_status_kb("VmRSS")
    for name, (mode, rmap) in _m.CONFIGS.items():
        bar.set_description(f"{pages:,} pages: {name} (set-up)")
        run = SimFork(pages, mode, rmap, repeats, options, user_pages)
        rss = _m.vm_status_kb("VmRSS")
        if rss0 is not None and rss is not None and (rss - rss0) * 1024 > RESIDENT_BUDGET:
            out[name] = run.result(check, _timed_rounds([run], repeats)[0])
            gc.collect()
        else:
            live.append((name, run))
        bar.update(pages // 2)
    bar.set_description(f"{pages:,} pages: forks")
    settled = _timed_rounds([run for _, run in live], repeats)
    for (name, run), st in zip(live, settled):
        out[name] = run.result(check, st)
    del live, run
    gc.collect()
    bar.update(pages * len(CONFIG_NAMES) - (pages // 2) * len(CONFIG_NAMES))
    return {name: out[name] for name in CONFIG_NAMES}


def _timed_rounds(runs: list, repeats: int) -> list:
    """`repeats` rounds of one timed fork per run, the order rotating, GC off; then
    batches of `repeats` more rounds among the runs whose spread is wide, while any is
    and none has more than MAX_FACTOR * repeats.  Returns per run {"extra": forks
    added, "settled": bool}."""
    def rounds(group, n):
        with _m.gc_off():
            k = len(group)
            for r in range(n):
                for i in range(k):
                    group[(r + i) % k].fork_once()

    rounds(runs, repeats)
    extra = [0] * len(runs)
    while True:
        wide = [i for i, run in enumerate(runs) if _m.spread(run.forks)["wide"]
                and len(run.forks) + repeats <= _m.MAX_FACTOR * repeats]
        if not wide:
            break
        rounds([runs[i] for i in wide], repeats)
        for i in wide:
            extra[i] += repeats
    return [{"extra": e, "settled": not _m.spread(run.forks)["wide"]}
            for e, run in zip(extra, runs)]


def _ratios(entry: dict) -> dict:
    """The ratios of one size, from its measured spreads: each a {"ratio" (of the
    medians), "lo", "hi" (with both figures inside their quartiles)}."""
    lin = entry[LINUX]
    cfg = entry["configs"]
    t = {name: cfg[name]["fork_ns_spread"] for name in CONFIG_NAMES}
    fe = {name: cfg[name]["fork_exit_ns_spread"] for name in CONFIG_NAMES}
    lf = lin["fork_ns_spread"]
    r = {
        "copy_rmap_over_copy": _m.ratio(t["copy+rmap"], t["copy"]),
        "copy_rmap_over_share_rmap": _m.ratio(t["copy+rmap"], t["share+rmap"]),
        "copy_over_share": _m.ratio(t["copy"], t["share"]),
        "share_rmap_over_share": _m.ratio(t["share+rmap"], t["share"]),
        "copy_rmap_over_share_rmap_fork_exit": _m.ratio(fe["copy+rmap"],
                                                        fe["share+rmap"]),
        "linux_over": {name: _m.ratio(lf, t[name]) for name in CONFIG_NAMES},
        "copy_rmap_over": {name: _m.ratio(t["copy+rmap"], t[name])
                           for name in CONFIG_NAMES},
    }
    marg = lin.get("ns_per_page_marginal")
    if marg and marg > 0:
        lo, hi = lin["ns_per_page_marginal_range"]
        c = t["copy"]
        n = entry["pages"]
        r["linux_marginal_over_copy_per_page"] = {
            "ratio": marg / (c["median"] / n),
            "lo": lo / (c["q3"] / n) if lo > 0 else None,
            "hi": hi / (c["q1"] / n)}
    return r


def _nearest(results: list, pages: int) -> dict | None:
    """The result entry for exactly `pages`, or None."""
    for e in results:
        if e["pages"] == pages:
            return e
    return None


def findings(results: list, slopes: dict) -> list:
    """What this run found, each beside the published figure it can be set against:
    dicts of {"key", "text" (what was measured), "measured" (a ratio dict or None),
    "at_pages", "published", "published_text", "source"}."""
    out = []
    big = [e for e in results if e["pages"] >= 65536]

    def item(key, text, measured, at, published, ptext, source):
        out.append({"key": key, "text": text, "measured": measured, "at_pages": at,
                    "published": published, "published_text": ptext, "source": source})

    if big:
        worst = max(big, key=lambda e: e["ratios"]["copy_rmap_over_copy"]["ratio"])
        item("rmap_fork_overhead", "copy+rmap / copy fork time, the largest over "
             "sizes >= 65,536,", worst["ratios"]["copy_rmap_over_copy"], worst["pages"],
             _m.RMAP_FORK_OVERHEAD, "\"fork() overheads of ~300% or so\", about 4x", _m.LINUS)
    e = _nearest(results, 10240)
    mc = _m.MCCRACKEN_SHAPES
    item("mccracken_fork_40mb", "copy+rmap / share+rmap fork time (40 MB)",
         e["ratios"]["copy_rmap_over_share_rmap"] if e else None, 10240,
         mc[0]["before_ms"] / mc[0]["after_ms"],
         f"{mc[0]['before_ms']} -> {mc[0]['after_ms']} ms, "
         f"{mc[0]['before_ms'] / mc[0]['after_ms']:.1f}x", _m.MCCRACKEN)
    item("mccracken_fork_exit_40mb", "copy+rmap / share+rmap fork+exit time", e["ratios"]["copy_rmap_over_share_rmap_fork_exit"] if e else None, 10240,
         mc[1]["before_ms"] / mc[1]["after_ms"],
         f"{mc[1]['before_ms']} -> {mc[1]['after_ms']} ms, "
         f"{mc[1]['before_ms'] / mc[1]['after_ms']:.1f}x", _m.MCCRACKEN)
    e = _nearest(results, 262144)
    item("on_demand_fork_1gb", "copy / share fork time (1 GiB)",
         e["ratios"]["copy_over_share"] if e else None, 262144, _m.ON_DEMAND_FORK_1GB,
         "65x faster than Linux's fork (shared last-level tables, x86-64)",
         _m.ON_DEMAND_FORK)
    if big:
        e = big[-1]
        lo, hi = _m.MODERN_FORK_NS_PER_PAGE
        marg = e[LINUX]["ns_per_page_marginal"]
        rng = e[LINUX]["ns_per_page_marginal_range"]
        item("modern_fork_per_page", "this machine's fork: marginal ns per page "
             "((fork with the pages - fork without) / pages)",
             {"ratio": marg, "lo": rng[0], "hi": rng[1]}, e["pages"], [lo, hi],
             f"{lo:.0f}-{hi:.0f} ns per page (10-16 ms per GB)", _m.REDIS_DOC)
        r = e["ratios"].get("linux_marginal_over_copy_per_page")
        item("linux_over_copy_per_page", "this machine's marginal ns/page / copy's "
             "ns/page", r, e["pages"], None, None, None)
    item("slopes", "log-log slope of fork time against pages (1 = linear, 0 = flat)",
         None, None, None, None, None)
    out[-1]["slopes"] = slopes
    return out


def run_compare(sizes=None, repeats=None, quick: bool = False, progress: bool = True,
                check: bool = False, layout: str = "i386", share_level: int = 1) -> dict:
    """Measure every configuration and Linux at each size; returns the whole record
    (what ``--json`` writes, docs/JSON.md): the envelope (format, version, time, host,
    build), parameters, per-size figures with spreads and ratios with their ranges,
    slopes, and the findings beside the published figures.  Raises ValueError for
    sizes or options this build cannot run."""
    options = _m.machine_options(layout, share_level)
    user_pages, max_memory = _m.layout_limits(layout)
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    sizes = sorted(set(int(n) for n in sizes))
    for n in sizes:
        if not 1 <= n <= user_pages:
            raise ValueError(f"size {n:,} pages: must be 1..{user_pages:,} (the user "
                             f"space of {layout})")
        if n + 2 * (-(-n // 512)) + 4096 > max_memory // PAGE_SIZE:
            raise ValueError(f"size {n:,} pages: more than the {max_memory >> 20:,} MiB "
                             f"a {layout} machine may have")
    reps = {n: (repeats if repeats else default_repeats(n, quick)) for n in sizes}

    record = _r.envelope("compare")
    bar = _progress_bar(sum(n * (len(CONFIG_NAMES) + 1) for n in sizes), progress)
    t_start = time.perf_counter_ns()
    results = []
    try:
        for n in sizes:
            entry = {"pages": n, "bytes": n * PAGE_SIZE, "repeats": reps[n]}
            bar.set_description(f"{n:,} pages: {LINUX}")
            entry[LINUX] = _m.measure_linux(n, reps[n])
            bar.update(n)
            entry["configs"] = measure_size(n, reps[n], check, bar, options, user_pages)
            entry["ratios"] = _ratios(entry)
            results.append(entry)
    finally:
        bar.close()
    wall_ns = time.perf_counter_ns() - t_start

    slopes = {name: _m.slope(sizes, [e["configs"][name]["fork_ns_median"]
                                     for e in results]) for name in CONFIG_NAMES}
    slopes[LINUX] = _m.slope(sizes, [e[LINUX]["fork_ns_median"] for e in results])
    record.update({
        "tool": "lazyvm compare",
        "generated": record["time"],
        "parameters": {
            "sizes": sizes,
            "repeats": reps,
            "quick": quick,
            "layout": layout,
            "share_level": share_level,
            "configs": [{"name": n, "fork_mode": m, "rmap": r} for n, m, r in CONFIGS],
            "map_base": MAP_BASE,
            "warmup_forks": 1,
            "statistic": "median with quartiles (q1, q3) and min, max",
            "wide_spread": _m.WIDE,
            "max_repeat_factor": _m.MAX_FACTOR,
            "check": check,
        },
        "machine": record["host"],
        "wall_ns": wall_ns,
        "results": results,
        "slopes": slopes,
        "findings": findings(results, slopes),
        "why_different": WHY_DIFFERENT,
    })
    return record


class _NoBar:
    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr counting pages measured when stderr is a terminal (and
    `enabled`), else a stand-in that does nothing: no carriage returns in a log."""
    if not enabled or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        return _NoBar()
    try:
        import tqdm
    except ImportError:
        return _NoBar()
    # tqdm's monitor is a thread; forking a threaded process is best avoided.
    tqdm.tqdm.monitor_interval = 0
    return tqdm.tqdm(total=total, unit="page", unit_scale=True, file=sys.stderr,
                     dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------- report


def _mark(s: dict) -> str:
    """'' for a settled spread, '~' for one still wide after the extra repeats."""
    return "~" if s.get("wide") else ""


def format_table(record: dict) -> str:
    """The main table: one row per size x configuration, Linux first."""
    head = ("pages", "config", "fork", "q1-q3", "ns/page", "Linux/this", "c+r/this",
            "n", "tables", "nodes", "frames")
    rows = []
    for e in record["results"]:
        n = e["pages"]
        lin = e[LINUX]
        ls = lin["fork_ns_spread"]
        cr = e["configs"]["copy+rmap"]["fork_ns_spread"]
        tables = lin.get("vmpte_kb")
        med, q = _r.ns_spread(ls)
        rows.append((f"{n:,}", LINUX, med, q + _mark(ls), f"{lin['ns_per_page']:.1f}",
                     "1x", _r.x(_m.ratio(cr, ls)["ratio"]), str(ls["n"]),
                     (f"{tables // 4:,}*" if tables is not None else "-"), "-", "-"))
        for name in CONFIG_NAMES:
            c = e["configs"][name]
            s = c["fork_ns_spread"]
            d = c["first_fork"]["delta"]
            med, q = _r.ns_spread(s)
            rows.append(("", name, med, q + _mark(s), f"{c['ns_per_page']:.2f}",
                         _r.x(e["ratios"]["linux_over"][name]["ratio"]),
                         _r.x(e["ratios"]["copy_rmap_over"][name]["ratio"]), str(s["n"]),
                         _r.integer(d.get("page_tables")),
                         _r.integer(d.get("pte_chain_nodes")),
                         _r.integer(d.get("frames_used"))))
    lines = _r.table(head, rows, left=(1,), blank_before=0)
    unsettled = sum(1 for r in rows if r[3].endswith("~"))
    extra = sum(1 for e in record["results"] for c in e["configs"].values()
                if c["fork_ns_spread"].get("extra"))
    extra += sum(1 for e in record["results"] if e[LINUX]["fork_ns_spread"].get("extra"))
    p = record["parameters"]
    lines += [""]
    lines += _r.wrap(
        "fork: median of the timed forks, each right after an untimed one (warm caches, "
        "as Linux's back-to-back forks), the four configurations interleaved round-robin; "
        "q1-q3: its quartiles, in the median's unit; n: forks timed. ns/page = fork / "
        "pages. Linux/this: this machine's fork() time / this row's; c+r/this: "
        "copy+rmap's / this row's (ratios of medians; their ranges are in the JSON).")
    lines += _r.wrap(
        f"A spread is wide when q3 - q1 exceeds {p['wide_spread']:.0%} of the median; "
        f"such a row gets more forks, up to {p['max_repeat_factor']}x as many. {extra} "
        f"row(s) took more forks; " + (
            f"{unsettled} still wide (marked ~): those medians are less certain than the "
            f"others and a quieter machine or --repeats would help." if unsettled else
            "every row settled."))
    lines += _r.wrap(
        "tables, nodes, frames: what the first fork allocated (page tables, pte_chain "
        "nodes, frames: the child's pgd and tables). * Linux: x86-64 page tables the "
        "touched mapping added to this process (/proc/self/status VmPTE / 4 KiB), which "
        "its fork copies. Fork+exit and first-fork times, with spreads: in the JSON.")
    return "\n".join(lines)


def format_findings(record: dict) -> str:
    """Per-size ratios with ranges, the slopes, and each finding beside the published
    figure it can be set against."""
    results = record["results"]
    out = ["Findings", "========"]
    head = ("pages", "Linux ns/page", "copy ns/page", "c+r/copy", "c+r/s+r", "copy/share")
    rows = []
    for e in results:
        lin, r = e[LINUX], e["ratios"]
        rows.append((f"{e['pages']:,}", f"{lin['ns_per_page_marginal']:.1f}",
                     f"{e['configs']['copy']['ns_per_page']:.2f}",
                     _r.x_range(r["copy_rmap_over_copy"]),
                     _r.x_range(r["copy_rmap_over_share_rmap"]),
                     _r.x_range(r["copy_over_share"])))
    out += _r.table(head, rows, left=())
    out += _r.wrap("Ratios: of the medians, with the range they take when both figures "
                   "lie inside their quartiles. c+r = copy+rmap, s+r = share+rmap. "
                   "Linux ns/page: the marginal cost, (fork with the N pages - fork of the same process "
                   "without them) / N.")
    out.append("")
    for f in record["findings"]:
        if f["key"] == "slopes":
            sl = f["slopes"]
            out += _r.wrap("- Growth with pages (log-log slope of the median fork time; "
                           "1 = linear, 0 = flat): " + ", ".join(
                               f"{k} {v:.2f}" for k, v in sl.items() if v is not None)
                           + ".", "", "  ")
            continue
        if f["measured"] is None:
            text = f"- {f['text']}: not measured (size not in this run)."
            if f.get("published_text"):
                text += f" Published: {f['published_text']} ({f['source']})."
            out += _r.wrap(text, "", "  ")
            continue
        at = f" at {f['at_pages']:,} pages" if f.get("at_pages") else ""
        if f["key"] == "modern_fork_per_page":
            m = f["measured"]
            val = f"{m['ratio']:.1f} ns ({m['lo']:.1f} to {m['hi']:.1f})"
        else:
            val = _r.x_range(f["measured"])
        text = f"- {f['text']}{at}: {val}."
        if f.get("published_text"):
            text += f" Published: {f['published_text']} ({f['source']})."
        out += _r.wrap(text, "", "  ")
    out.append("")
    out += _r.wrap(WHY_DIFFERENT)
    return "\n".join(out)


def format_report(record: dict) -> str:
    """Everything `lazyvm compare` prints: header, table, findings."""
    mach = record["machine"]
    mem = mach.get("memory_bytes")
    p = record["parameters"]
    load = mach.get("load_average")
    head = _r.wrap(
        f"lazyvm {record['lazyvm_version']} compare ({_r.build_text(record['build'])}): "
        f"fork of N touched private pages, simulator ({p.get('layout', 'i386')}) vs this "
        f"machine's Linux")
    head += _r.wrap(
        f"host: {mach.get('cpu_model')}, {mach.get('cores')} cores"
        + (f", {mem / (1 << 30):.1f} GiB" if mem else "")
        + (", virtual machine" if mach.get("hypervisor") else "")
        + f"; Linux {mach.get('kernel')} {mach.get('arch')}; Python {mach.get('python')}, "
        f"numpy {mach.get('numpy')}"
        + (f"; load {load[0]:.2f}" if load else ""))
    head += _r.wrap(f"run: {record['time']}, {record['wall_ns'] / 1e9:.1f} s", "", "  ")
    return ("\n".join(head) + "\n\n" + format_table(record) + "\n\n"
            + format_findings(record) + "\n")


# ---------------------------------------------------------------- plot


def plot(record: dict, path: str) -> None:
    """Fork latency against pages on log-log axes, one line per configuration and Linux,
    each point the median with its quartiles as an error bar.  Needs matplotlib (the
    ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'lazyvm[plot]' "
                           "(or pip install matplotlib)") from e
    results = record["results"]

    def us(s):
        return {k: s[k] / 1e3 for k in ("median", "q1", "q3")}
    series = {f"Linux {record['machine'].get('kernel', '')} (this machine)":
              [us(e[LINUX]["fork_ns_spread"]) for e in results]}
    styles = {next(iter(series)): dict(color="black", marker="s", linewidth=2.2)}
    look = {"copy": dict(color="tab:blue", marker="o"),
            "copy+rmap": dict(color="tab:blue", marker="o", linestyle="--"),
            "share": dict(color="tab:green", marker="^"),
            "share+rmap": dict(color="tab:green", marker="^", linestyle="--")}
    for name in CONFIG_NAMES:
        series[f"lazyvm {name}"] = [us(e["configs"][name]["fork_ns_spread"])
                                    for e in results]
        styles[f"lazyvm {name}"] = look[name]
    mach = record["machine"]
    _r.plot_lines(path, [e["pages"] for e in results], series,
                  "touched pages (4 KiB)", "fork latency, median and quartiles (µs)",
                  "fork latency vs pages\n"
                  f"{mach.get('cpu_model')}, {mach.get('cores')} cores, "
                  f"lazyvm {record['lazyvm_version']}, {_r.build_text(record['build'])}",
                  styles)


def write_json(record: dict, path: str) -> None:
    """Write a compare record (which carries its own envelope) to `path`."""
    _r.write_json(record, path)
