"""`lazyvm compare`: fork in every configuration beside this machine's own fork().

For each size N (touched pages) the run measures, one after the other and in the same
process:

- Linux: this machine's fork() of a real process holding N touched private pages
  (:func:`lazyvm.measure.host.measure_linux`), with a baseline fork of the same process
  without them;
- the simulator in four configurations: ``copy``, ``copy+rmap``, ``share``,
  ``share+rmap``.  Each gets its own :class:`lazyvm.Machine`, one process with N private
  pages written by ``touch``; its first fork is the warm-up and the one whose counters are
  recorded (page tables, chain nodes, frames it took); then ``repeats`` forks of each
  are timed, round-robin across the four machines, each child exiting before the next
  fork.  A configuration whose spread is wide (:data:`lazyvm.measure.host.WIDE`) gets more
  rounds, up to :data:`lazyvm.measure.host.MAX_FACTOR` times as many, and the report says
  whether it settled.  The machines are kept alive together for this (their resident
  memory is small: the simulator never writes the data frames of a touched page), and
  freed before the next size; Linux is measured with no machine alive, so that its fork
  copies only the Python process and the N pages.

Every timed figure carries its spread (median, quartiles, extremes).  Every figure the
report prints was measured in that run, or is quoted from a publication with its source
(:mod:`lazyvm.measure.host`'s published figures), or is predicted from exact counts.

With a cost profile (``costs``, lazyvm.costs; `lazyvm compare --costs`) each size and
configuration also gets a *predicted kernel time*: the events of its first fork and of
fork+exit (differences of ``Machine.stats()``) priced by the profile.  Those figures are
deterministic and carry no spread.  The findings then set predicted ratios (not the
simulator's) beside McCracken, On-demand-fork (x86_64 counts at 1, 8 and 50 GB) and the
COW page-table RFC, and say for each miss what each side is made of and what fixed cost
no count carries would close it; with a host's profile this machine's fork is predicted
from this process's own counts (lazyvm.measure.worker.counts) and set beside its measured CPU
and wall time.  The simulator counts the work the kernel
would do and does it in compiled loops over numpy memory: its times are those of that
work, not of a kernel.
"""

from __future__ import annotations

import gc
import sys
import time

import tqdm

from .. import Machine
from ..costs import EVENTS, load_profile
from ..layout import LAYOUTS, PAGE_SIZE
from ..machine import CONFIGS as CONFIG_MODES
from ..measure import host as _m
from ..measure import published
from ..measure.fit import predict_fork_ns, stretch
from ..measure.worker import counts as count_this_process
from ..report import format as _r
from ..report.compare import LINUX, PREDICTED_SPREAD, WHY_DIFFERENT
from .builtin import WORKLOADS

# The registry's workload whose shape compare times: a process of N touched pages forks
# and the child exits, here beside this machine's own fork of the same process.
WORKLOAD = WORKLOADS["fork_exit"]

MAP_BASE = LAYOUTS["i386"].mmap_base  # where a mapping goes when it fits above it
USER_PAGES = _m.layout_limits("i386")[0]   # 786,432: the largest i386 size there is

DEFAULT_SIZES = (1024, 4096, 10240, 16384, 65536, 262144, 786432)
QUICK_SIZES = (1024, 10240, 65536, 262144)

CONFIG_NAMES = tuple(CONFIG_MODES)
# (name, fork mode, rmap), in the order rows are printed.
CONFIGS = tuple((name, mode, rmap) for name, (mode, rmap) in CONFIG_MODES.items())

# Counters recorded as deltas across the first fork.
FORK_COUNTERS = ("page_tables", "pte_chain_nodes", "frames_used", "ptes_copied", "pgds",
                 "pt_use_refs", "shared_tables", "chain_nodes_allocated",
                 "pte_chain_slots", "rmap_direct")

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
    tables (parent and a copying child), with lazyvm.measure.host.memory_for's slack."""
    return _m.memory_for(pages + 2 * (-(-pages // 512)), layout)


def map_address(pages: int, user_pages: int = USER_PAGES) -> int:
    """Where the N-page mapping goes: at 1 GiB if it fits below the top of user space,
    else at 0 (786,432 pages fill the whole i386 user space). Both are 4 MiB aligned, so
    it takes ceil(N/1024) i386 page tables exactly."""
    return MAP_BASE if MAP_BASE // PAGE_SIZE + pages <= user_pages else 0


def _events(before: dict, after: dict) -> dict:
    """The growth of every priced event (lazyvm.costs.EVENTS) the core counts."""
    return {e: int(after[e]) - int(before[e]) for e in EVENTS if e in before and e in after}


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
        options = options or {}
        layout = options.get("layout", "i386")
        self.pages, self.mode, self.rmap, self.repeats = pages, mode, rmap, repeats
        t_build = _m.clock()
        self.m = m = Machine(memory=machine_memory(pages, layout), fork_mode=mode,
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
        s2 = m.stats()
        # The events of one fork and of one fork+exit (exact counts, the same at every
        # fork of this parent), for the predicted kernel time.
        self.events = {"fork": _events(s0, s1), "fork_exit": _events(s0, s2)}
        self.first = {
            "fork_ns": t1 - t0,
            "exit_ns": t3 - t2,
            "delta": {k: s1[k] - s0[k] for k in FORK_COUNTERS if k in s0 and k in s1},
        }
        # The events of the child's first write to one of its pages after a fork: a
        # copy-on-write copy, and under a shared table also the table's privatization.
        c = p.fork(mode=mode)
        s3 = m.stats()
        c.write(self.addr, b"\x01")
        self.events["first_write"] = _events(s3, m.stats())
        c.exit()
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
            "events": self.events,
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
    for name, (mode, rmap) in CONFIG_MODES.items():
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
             published.RMAP_FORK_OVERHEAD, "\"fork() overheads of ~300% or so\", about 4x",
             published.LINUS_SOURCE)
    e = _nearest(results, 10240)
    mc = published.MCCRACKEN_SHAPES
    item("mccracken_fork_40mb", "copy+rmap / share+rmap fork time (40 MB)",
         e["ratios"]["copy_rmap_over_share_rmap"] if e else None, 10240,
         mc[0]["before_ms"] / mc[0]["after_ms"],
         f"{mc[0]['before_ms']} -> {mc[0]['after_ms']} ms, "
         f"{mc[0]['before_ms'] / mc[0]['after_ms']:.1f}x", published.MCCRACKEN_SOURCE)
    item("mccracken_fork_exit_40mb", "copy+rmap / share+rmap fork+exit time", e["ratios"]["copy_rmap_over_share_rmap_fork_exit"] if e else None, 10240,
         mc[1]["before_ms"] / mc[1]["after_ms"],
         f"{mc[1]['before_ms']} -> {mc[1]['after_ms']} ms, "
         f"{mc[1]['before_ms'] / mc[1]['after_ms']:.1f}x", published.MCCRACKEN_SOURCE)
    e = _nearest(results, 262144)
    item("on_demand_fork_1gb", "copy / share fork time (1 GiB)",
         e["ratios"]["copy_over_share"] if e else None, 262144, published.ON_DEMAND_FORK_1GB,
         "65x faster than Linux's fork (shared last-level tables, x86-64)",
         published.ON_DEMAND_FORK_SOURCE)
    if big:
        e = big[-1]
        lo, hi = published.MODERN_FORK_NS_PER_PAGE
        marg = e[LINUX]["ns_per_page_marginal"]
        rng = e[LINUX]["ns_per_page_marginal_range"]
        item("modern_fork_per_page", "this machine's fork: marginal ns per page "
             "((fork with the pages - fork without) / pages)",
             {"ratio": marg, "lo": rng[0], "hi": rng[1]}, e["pages"], [lo, hi],
             f"{lo:.0f}-{hi:.0f} ns per page (10-16 ms per GB)", published.REDIS_DOC_SOURCE)
        r = e["ratios"].get("linux_marginal_over_copy_per_page")
        item("linux_over_copy_per_page", "this machine's marginal ns/page / copy's "
             "ns/page", r, e["pages"], None, None, None)
    item("slopes", "log-log slope of fork time against pages (1 = linear, 0 = flat)",
         None, None, None, None, None)
    out[-1]["slopes"] = slopes
    return out


def check_sizes(sizes=None, quick: bool = False, layout: str = "i386") -> list:
    """The sizes a run measures (the defaults when None), sorted, each checked against
    the layout's user space and memory limit and this machine's memory; ValueError
    (one line) for the first that does not fit."""
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
        _m.check_host_memory(machine_memory(n, layout), f"size {n:,} pages")
    return sizes


def run_compare(sizes=None, repeats=None, quick: bool = False, progress: bool = True,
                check: bool = False, layout: str = "i386", share_level: int = 1,
                costs=None, costs_reason: str | None = None) -> dict:
    """Measure every configuration and Linux at each size; returns the whole record
    (what ``--json`` writes, docs/JSON.md): the envelope (format, version, time, host,
    build), parameters, per-size figures with spreads and ratios with their ranges,
    slopes, and the findings beside the published figures.  With `costs` (a cost
    profile: name, path or lazyvm.costs.Profile; `costs_reason` says why it was
    chosen) every size and configuration also gets its predicted kernel time, the
    findings set predicted ratios beside the published ones, and this machine's fork is
    predicted from its own counts (lazyvm.measure.worker.counts) when the profile is a
    host's.  Raises ValueError for sizes or options this build cannot run, or a
    profile that does not load (before anything is measured)."""
    prof = load_profile(costs) if costs is not None else None
    counter = count_this_process if prof is not None else None
    options = _m.machine_options(layout, share_level)
    user_pages, _ = _m.layout_limits(layout)
    sizes = check_sizes(sizes, quick, layout)
    reps = {n: (repeats if repeats else default_repeats(n, quick)) for n in sizes}

    record = _r.envelope("compare")
    bar = _progress_bar(sum(n * (len(CONFIG_NAMES) + 1) for n in sizes), progress)
    t_start = time.perf_counter_ns()
    results = []
    try:
        for n in sizes:
            entry = {"pages": n, "bytes": n * PAGE_SIZE, "repeats": reps[n]}
            bar.set_description(f"{n:,} pages: {LINUX}")
            entry[LINUX] = _m.measure_linux(n, reps[n], counter=counter)
            bar.update(n)
            entry["configs"] = measure_size(n, reps[n], check, bar, options, user_pages)
            entry["ratios"] = _ratios(entry)
            if prof is not None:
                entry["predicted"] = predicted_size(entry, prof)
            results.append(entry)
    finally:
        bar.close()
    wall_ns = time.perf_counter_ns() - t_start

    slopes = {name: _m.slope(sizes, [e["configs"][name]["fork_ns_median"]
                                     for e in results]) for name in CONFIG_NAMES}
    slopes[LINUX] = _m.slope(sizes, [e[LINUX]["fork_ns_median"] for e in results])
    pred = predicted_record(prof, costs_reason, layout, quick, results)
    record.update({
        "tool": "lazyvm compare",
        "generated": record["time"],
        "parameters": {
            "workload": WORKLOAD.name,
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
        "predicted": pred,
        "findings": (predicted_findings(results, slopes, pred, prof) if prof is not None
                     else findings(results, slopes)),
        "why_different": WHY_DIFFERENT,
    })
    return record


# ---------------------------------------------------------------- predicted kernel time

ODF_GB_QUICK = (1, 8)          # On-demand-fork sizes counted with --quick (50 GB: ~4 s)
ODF_GB = (1, 8, 50)
FIXED_EVENTS = ("forks_copy", "forks_share", "exits", "execs", "fork_vmas", "exit_vmas",
                "fork_anon_vmas", "exit_anon_vmas")
def _div(a, b):
    return a / b if b else None


def host_like(prof) -> bool:
    """Whether a profile describes a host's kernel (lazyvm calibrate wrote it, with the
    host in its meta), so that this machine's fork can be predicted with it."""
    return isinstance(prof.meta.get("host"), dict)


def predicted_size(entry: dict, prof) -> dict:
    """The predicted kernel time of one size: per configuration the fork and fork+exit
    events (counted at the first fork) priced by `prof` (int ns, exactly
    prof.kernel_ns(counts)) with their ratios; and, for a host's profile, this machine's
    fork predicted from this process's own counts (V, A, P, T) beside its measured
    median."""
    cfg = entry["configs"]
    pc = {}
    for name in CONFIG_NAMES:
        ev = cfg[name]["events"]
        pc[name] = {"fork_ns": prof.kernel_ns(ev["fork"]),
                    "fork_ns_se": prof.uncertainty_ns(ev["fork"]),
                    "first_write_ns": prof.kernel_ns(ev.get("first_write", {})),
                    "first_write_ns_se": prof.uncertainty_ns(ev.get("first_write", {})),
                    "fork_exit_ns": prof.kernel_ns(ev["fork_exit"]),
                    "fork_exit_ns_se": prof.uncertainty_ns(ev["fork_exit"]),
                    "sim_fork_ns_median": cfg[name]["fork_ns_median"]}
    copy, cr = pc["copy"], pc["copy+rmap"]
    for name, c in pc.items():
        c["fork_over_copy"] = _div(c["fork_ns"], copy["fork_ns"])
        c["fork_exit_over_copy"] = _div(c["fork_exit_ns"], copy["fork_exit_ns"])
        c["copy_rmap_over_this"] = _div(cr["fork_ns"], c["fork_ns"])
        c["sim_fork_over_copy"] = _div(c["sim_fork_ns_median"], copy["sim_fork_ns_median"])
    sr, sh = pc["share+rmap"], pc["share"]
    out = {"configs": pc, "ratios": {
        "copy_rmap_over_copy": _div(cr["fork_ns"], copy["fork_ns"]),
        "copy_rmap_over_share_rmap": _div(cr["fork_ns"], sr["fork_ns"]),
        "copy_over_share": _div(copy["fork_ns"], sh["fork_ns"]),
        "share_rmap_over_copy_rmap": _div(sr["fork_ns"], cr["fork_ns"]),
        "copy_rmap_over_share_rmap_fork_exit": _div(cr["fork_exit_ns"],
                                                    sr["fork_exit_ns"])}}
    lin = entry[LINUX]
    kc = lin.get("kernel_counts")
    if kc and host_like(prof):
        w, b = kc["with_pages"], kc["baseline"]
        pf = float(predict_fork_ns(prof, w["V"], w["A"], w["P"], w["T"]))
        pb = float(predict_fork_ns(prof, b["V"], b["A"], b["P"], b["T"]))
        meas = lin["fork_ns_median"]
        cpu = lin.get("fork_cpu_ns_median")
        st = stretch(prof)
        wall = pf * st if st else None
        out[LINUX] = {"counts": kc, "fork_ns": pf, "baseline_ns": pb,
                      "measured_fork_ns_median": meas,
                      "error": (pf - meas) / meas if meas else None,
                      "stretch": st, "fork_wall_ns": wall,
                      "error_wall": (wall - meas) / meas if meas and wall else None,
                      "measured_fork_cpu_ns_median": cpu,
                      "error_cpu": (pf - cpu) / cpu if cpu else None,
                      "marginal_ns_per_page": (pf - pb) / entry["pages"],
                      "measured_marginal_ns_per_page": lin["ns_per_page_marginal"]}
    return out


def _fork_counts(mode: str, nbytes: int):
    """(fork events, the child's page tables, the tables the fork allocated for it) of
    a copy or share fork, x86_64 without rmap or contents, of one process with `nbytes`
    touched in one VMA.  The child's page tables (Process.stats) include the tables it
    shares; the ones allocated (Machine.stats page_tables growth) are its own, which is
    what its VmPTE would be charged."""
    before, after, c = published.one_vma_fork(mode, nbytes)
    return (_events(before, after), int(c.stats()["page_tables"]),
            int(after["page_tables"]) - int(before["page_tables"]))


def cow_pt_rfc(prof) -> dict | None:
    """The COW page-table RFC's shapes in lazyvm (x86_64, copy vs share of the last-level
    tables): the predicted fork of a 512 MB process, and the child's page tables (kB)
    of a 1 GB one.  None when this lazyvm has no x86_64 layout."""
    try:
        out = {"fork_512mb": {}, "child_tables_kb_1gb": {},
               "child_mapped_tables_kb_1gb": {}, "counts_512mb": {}}
        for mode in ("copy", "share"):
            ev, _, _ = _fork_counts(mode, 512 << 20)
            out["counts_512mb"][mode] = ev
            out["fork_512mb"][mode] = prof.kernel_ns(ev)
            _, mapped, own = _fork_counts(mode, 1 << 30)
            out["child_tables_kb_1gb"][mode] = own * 4
            out["child_mapped_tables_kb_1gb"][mode] = mapped * 4
    except TypeError:                 # Machine(layout=..., contents=...) not in this core
        return None
    out["ratio_512mb"] = _div(out["fork_512mb"]["copy"], out["fork_512mb"]["share"])
    return out


def predicted_record(prof, reason, layout: str, quick: bool, results: list) -> dict:
    """The run's "predicted" key: which profile and why, how the figures were made,
    and the predictions of the published shapes no size of the run holds (On-demand-
    fork, the COW page-table RFC)."""
    if prof is None:
        return {"profile": None, "reason": reason or "no cost profile given"}
    notes = []
    if host_like(prof) and layout != "x86_64":
        notes.append(f"the {prof.name} profile prices this host's x86-64 kernel, but the "
                     f"counts are of the {layout} layout (1,024 entries per table on "
                     "i386): --layout x86_64 counts the work this machine's kernel does")
    if not host_like(prof) and layout != "i386" and prof.name == "linux-2.5.41":
        notes.append(f"the linux-2.5.41 profile prices an i386 kernel; the counts are of "
                     f"the {layout} layout")
    gbs = ODF_GB_QUICK if quick else ODF_GB
    od = published.odf(prof, gbs)
    if quick:
        notes.append(f"On-demand-fork counted at {', '.join(map(str, gbs))} GB; 50 GB "
                     f"(about 4 s and 0.6 GB of memory to count) without --quick")
    host = _m.machine_description()
    return {"profile": prof.name, "reason": reason or f"--costs {prof.name}",
            "load_average": host.get("load_average"), "cores": host.get("cores"),
            "description": prof.description, "version": prof.version,
            "method": "per size and configuration, the events of the first fork (and of "
                      "fork+exit) counted as differences of Machine.stats(), priced by "
                      "the profile (Profile.kernel_ns); this machine's fork priced from "
                      "this process's own VMAs, PTEs and tables (lazyvm.measure.worker.counts "
                      "of /proc/self/smaps and pagemap) when the profile is a host's",
            "spread": PREDICTED_SPREAD, "notes": notes,
            "odf": od, "odf_gb": list(gbs), "cow_pt_rfc": cow_pt_rfc(prof)}


def _missing_fixed(a: float, b: float, r: float):
    """The time t that, added to both a and b, makes (a + t) / (b + t) = r: what a fixed
    cost no count carries would have to be for the predicted a/b to be the published r
    (negative: no fixed cost can explain it)."""
    return (a - r * b) / (r - 1) if r != 1 else None


def _why(prof, name_a, a_counts, name_b, b_counts, r_pub, op="fork") -> str:
    """Where a predicted ratio a/b misses the published r_pub, and why, from the counts:
    what each predicted time is made of, and the fixed cost that would close the gap."""
    def made_of(counts):
        parts = prof.kernel_ns_parts(counts)
        fixed = sum(v for e, v in parts.items() if e in FIXED_EVENTS)
        top = sorted(((e, v) for e, v in parts.items() if e not in FIXED_EVENTS and v > 0),
                     key=lambda kv: -kv[1])[:2]
        return fixed, ", ".join(f"{e} {_r.ns(v)}" for e, v in top) or "nothing else"
    a, b = prof.kernel_ns(a_counts), prof.kernel_ns(b_counts)
    fa, ta = made_of(a_counts)
    fb, tb = made_of(b_counts)
    t = _missing_fixed(a, b, r_pub)
    fixed_cost = prof.costs["forks_copy"]
    se = prof.uncertainty["forks_copy"]
    text = (f"{name_a} {_r.ns(a)} = fixed {_r.ns(fa)} + {ta}; {name_b} {_r.ns(b)} = fixed "
            f"{_r.ns(fb)} + {tb}. ")
    if t is not None and t > 0:
        text += (f"A fixed cost of {_r.ns(t)} more per {op}, in both, would give the "
                 f"published ratio: work no counted event carries (the profile's fork "
                 f"fixed cost is {_r.ns(fixed_cost)} +- {_r.ns(se)})")
    else:
        text += ("No fixed cost can close it: the published ratio is higher than the "
                 "counted work allows, so the counted per-entry work is priced too high "
                 f"for {name_b} or too low for {name_a} by this profile")
    return text


def _verdict(pred: float, pub: float) -> tuple:
    f = pred / pub
    ok = 0.5 <= f <= 2.0
    return ok, (f"within 2x ({f:.2f} of published)" if ok else
                f"MISSES: {f:.2f} of published" if f < 1 else
                f"MISSES: {f:.1f}x published")


def predicted_findings(results: list, slopes: dict, pred: dict, prof) -> list:
    """The findings with predicted ratios (not the simulator's) beside the published
    figures: each {"key", "basis" ("predicted (PROFILE)" or "measured"), "text",
    "measured" (the figure: {"ratio"} or the measured ratio object), "at_pages",
    "published", "published_text", "source", "within_2x", "verdict", "why"}."""
    out = []
    basis = f"predicted ({prof.name})"

    def item(key, text, value, at, published, ptext, source, why=None, b=basis):
        d = {"key": key, "basis": b, "text": text,
             "measured": None if value is None else {"ratio": value, "lo": None, "hi": None},
             "at_pages": at, "published": published, "published_text": ptext,
             "source": source, "within_2x": None, "verdict": None, "why": why}
        if value is not None and isinstance(published, (int, float)):
            d["within_2x"], d["verdict"] = _verdict(value, published)
            if d["within_2x"]:
                d["why"] = None
        out.append(d)
        return d

    by = {e["pages"]: e for e in results}
    big = max(results, key=lambda e: e["pages"])
    ev = {n: {c: e["configs"][c]["events"] for c in CONFIG_NAMES} for n, e in by.items()}
    r = big["predicted"]["ratios"]["copy_rmap_over_copy"]
    item("rmap_fork_overhead", "copy+rmap / copy predicted fork, at the largest size,", r,
         big["pages"], published.RMAP_FORK_OVERHEAD,
         "\"fork() overheads of ~300% or so\", about 4x", published.LINUS_SOURCE,
         _why(prof, "copy+rmap", ev[big["pages"]]["copy+rmap"]["fork"],
              "copy", ev[big["pages"]]["copy"]["fork"], published.RMAP_FORK_OVERHEAD))
    mc = published.MCCRACKEN_SHAPES
    e = by.get(10240)
    for key, shp, k, ratio_key in (
            ("mccracken_fork_40mb", mc[0], "fork", "copy_rmap_over_share_rmap"),
            ("mccracken_fork_exit_40mb", mc[1], "fork_exit",
             "copy_rmap_over_share_rmap_fork_exit")):
        pub = shp["before_ms"] / shp["after_ms"]
        val = e["predicted"]["ratios"][ratio_key] if e else None
        why = (_why(prof, "copy+rmap", ev[10240]["copy+rmap"][k], "share+rmap",
                    ev[10240]["share+rmap"][k], pub, k.replace("_", "+")) if e else None)
        item(key, f"copy+rmap / share+rmap predicted {k.replace('_', '+')} (40 MB)", val,
             10240, pub, f"{shp['before_ms']} -> {shp['after_ms']} ms, {pub:.1f}x",
             published.MCCRACKEN_SOURCE, why)
    od = pred.get("odf")
    for gb, pub, ptext in ((1, published.ON_DEMAND_FORK_1GB, "65x faster than Linux's fork at 1 GB "
                            "(shared last-level tables, x86-64)"),
                           (50, published.ON_DEMAND_FORK_50GB, "270x at 50 GB")):
        row = next((o for o in od or () if o["gb"] == gb), None)
        why = (_why(prof, "copy", row["copy_counts"], "share", row["share_counts"], pub)
               if row else None)
        d = item(f"on_demand_fork_{gb}gb", f"copy / share predicted fork ({gb} GB, x86_64 "
                 "counts, one VMA)", row["ratio"] if row else None, gb << 18, pub, ptext,
                 published.ON_DEMAND_FORK_SOURCE, why)
        if row is None:
            d["not_measured_why"] = ("this lazyvm has no x86_64 layout" if od is None
                                     else "counted without --quick only")
    rfc = pred.get("cow_pt_rfc")
    ms512, kb_child = published.RFC_512MB_MS, published.RFC_CHILD_VMPTE_KB
    pub = ms512[0] / ms512[1]
    why = None
    if rfc:
        why = _why(prof, "copy", rfc["counts_512mb"]["copy"], "share",
                   rfc["counts_512mb"]["share"], pub)
    item("cow_pt_rfc_512mb", "copy / share predicted fork (512 MB, x86_64 counts)",
         rfc["ratio_512mb"] if rfc else None, 131072, pub,
         f"{ms512[0]:g} ms -> {ms512[1]:g} ms, {pub:.0f}x", published.RFC_SOURCE, why)
    if rfc:
        ck = rfc["child_tables_kb_1gb"]
        cm = rfc["child_mapped_tables_kb_1gb"]
        d = item("cow_pt_rfc_child_tables_1gb", "copy / share page tables the child owns "
                 f"(1 GB, x86_64; lazyvm counts: copy {ck['copy']:,} kB, share "
                 f"{ck['share']:,} kB; it maps {cm['share']:,} kB in all)",
                 _div(ck["copy"], ck["share"]), 262144,
                 kb_child[0] / kb_child[1],
                 f"child VmPTE {kb_child[0]:,} kB vs {kb_child[1]} kB",
                 published.RFC_SOURCE, b="counted")
        d["child_tables_kb"] = ck
        d["published_kb"] = list(kb_child)
        if not d["within_2x"]:
            d["why"] = (f"the copy child's tables match ({ck['copy']:,} vs "
                        f"{kb_child[0]:,} kB: the PTE tables and the levels "
                        f"above); the shared child owns {ck['share']} kB, the upper levels "
                        f"of its one VMA, while the RFC's child kept "
                        f"{kb_child[1]} kB: {kb_child[1] - ck['share']}"
                        " kB more, tables of mappings lazyvm's one-VMA process does not "
                        "have (its program, libraries, stack: an assumption, the RFC does "
                        "not list them)")
    # measured on this machine
    lo, hi = published.MODERN_FORK_NS_PER_PAGE
    marg = big[LINUX]["ns_per_page_marginal"]
    rng = big[LINUX]["ns_per_page_marginal_range"]
    d = item("modern_fork_per_page", "this machine's fork: marginal ns per page ((fork with "
             "the pages - fork without) / pages)", None, big["pages"], [lo, hi],
             f"{lo:.0f}-{hi:.0f} ns per page (10-16 ms per GB)", published.REDIS_DOC_SOURCE,
             b="measured")
    d["measured"] = {"ratio": marg, "lo": rng[0], "hi": rng[1]}
    lp = big["predicted"].get(LINUX)
    if lp:
        d = item("linux_predicted", "this machine's fork of this process (its own VMAs, "
                 "PTEs and tables from /proc/self/smaps and pagemap) predicted / measured",
                 lp["fork_ns"] / lp["measured_fork_ns_median"], big["pages"], None, None,
                 None)
        d["predicted_ns"] = lp["fork_ns"]
        d["predicted_wall_ns"] = lp.get("fork_wall_ns")
        d["stretch"] = lp.get("stretch")
        d["measured_ns"] = lp["measured_fork_ns_median"]
        d["measured_cpu_ns"] = lp["measured_fork_cpu_ns_median"]
        if d["measured_cpu_ns"]:
            d["measured"] = {"ratio": lp["fork_ns"] / d["measured_cpu_ns"], "lo": None,
                             "hi": None}
            d["text"] = d["text"].replace("/ measured", "/ measured CPU time")
        load = (pred.get("load_average") or [None])[0]
        val = [v for v in prof.meta.get("validate") or ()
               if isinstance(v, dict) and isinstance(v.get("error"), (int, float))]
        d["why"] = ("the profile was fitted to CPU time (the forking thread's clock); the "
                    "wall time also holds time the fork did not run (other work on the "
                    "host, or the hypervisor's" + (f"; load {load:.1f} on "
                                                   f"{pred.get('cores')} cores" if load
                                                   else "") + ")")
        if val:
            d["why"] += ("; the profile's own held-out shapes, measured when it was made: "
                         + ", ".join(f"{v.get('shape')} {100 * v['error']:+.0f}%"
                                     for v in val)
                         + " (predicted against measured CPU time: large dense forks take "
                         "longer per PTE than the fitted shapes)")
    item("slopes", "log-log slope of fork time against pages (1 = linear, 0 = flat)",
         None, None, None, None, None, b="simulator time, measured")
    out[-1]["slopes"] = slopes
    sizes = [e["pages"] for e in results]
    out[-1]["predicted_slopes"] = {
        name: _m.slope(sizes, [e["predicted"]["configs"][name]["fork_ns"] for e in results])
        for name in CONFIG_NAMES}
    return out


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
    # tqdm's monitor is a thread; forking a threaded process is best avoided.
    tqdm.tqdm.monitor_interval = 0
    return tqdm.tqdm(total=total, unit="page", unit_scale=True, file=sys.stderr,
                     dynamic_ncols=True, leave=False)
