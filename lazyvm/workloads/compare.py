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
from this process's own counts (lazyvm.measure.calibrate.counts) and set beside its measured CPU
and wall time.  The simulator counts the work the kernel
would do and does it in compiled loops over numpy memory: its times are those of that
work, not of a kernel.
"""

from __future__ import annotations

import gc
import sys
import time

from ..measure import host as _m
from ..report import format as _r
from ..costs import EVENTS

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
        s2 = m.stats()
        # The events of one fork and of one fork+exit (exact counts, the same at every
        # fork of this parent), for the predicted kernel time.
        self.events = {"fork": _events(s0, s1), "fork_exit": _events(s0, s2)}
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
                check: bool = False, layout: str = "i386", share_level: int = 1,
                costs=None, costs_reason: str | None = None) -> dict:
    """Measure every configuration and Linux at each size; returns the whole record
    (what ``--json`` writes, docs/JSON.md): the envelope (format, version, time, host,
    build), parameters, per-size figures with spreads and ratios with their ranges,
    slopes, and the findings beside the published figures.  With `costs` (a cost
    profile: name, path or lazyvm.costs.Profile; `costs_reason` says why it was
    chosen) every size and configuration also gets its predicted kernel time, the
    findings set predicted ratios beside the published ones, and this machine's fork is
    predicted from its own counts (lazyvm.measure.calibrate.counts) when the profile is a
    host's.  Raises ValueError for sizes or options this build cannot run, or a
    profile that does not load (before anything is measured)."""
    from ..costs import load_profile

    prof = load_profile(costs) if costs is not None else None
    counter = None
    if prof is not None:
        from ..measure.calibrate import counts as counter
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
ODF_50GB = 270.0
RFC = ("Chih-En Lin, \"Introduce Copy-On-Write to Page Table\", linux-mm RFC v2, Sep 2022 "
       "(docs/KERNEL-NOTES.md)")
RFC_512MB_MS = (10.0, 0.625)   # fork of a 512 MB process: default vs COW page tables
RFC_CHILD_VMPTE_KB = (2096, 44)  # the child of a 1 GB process: VmPTE default vs COW
FIXED_EVENTS = ("forks_copy", "forks_share", "exits", "execs", "fork_vmas", "exit_vmas")
PREDICTED_SPREAD = ("no spread: the counts are exact and deterministic, so the predicted "
                    "figures are too (the same counts always give the same prediction); "
                    "*_se is the profile's own uncertainty, not a spread")


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
    from ..measure.calibrate import predict_fork_ns

    cfg = entry["configs"]
    pc = {}
    for name in CONFIG_NAMES:
        ev = cfg[name]["events"]
        pc[name] = {"fork_ns": prof.kernel_ns(ev["fork"]),
                    "fork_ns_se": prof.uncertainty_ns(ev["fork"]),
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
        out[LINUX] = {"counts": kc, "fork_ns": pf, "baseline_ns": pb,
                      "measured_fork_ns_median": meas,
                      "error": (pf - meas) / meas if meas else None,
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
    import lazyvm

    m = lazyvm.Machine(memory=nbytes + (nbytes >> 8) + (64 << 20), fork_mode=mode,
                       rmap=False, layout="x86_64", contents=False)
    p = m.spawn()
    a = p.mmap(nbytes)
    p.touch(a, nbytes, write=True)
    before = m.stats()
    c = p.fork()
    after = m.stats()
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
    from ..measure import published

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
                      "this process's own VMAs, PTEs and tables (lazyvm.measure.calibrate.counts "
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
         big["pages"], _m.RMAP_FORK_OVERHEAD, "\"fork() overheads of ~300% or so\", about "
         "4x", _m.LINUS, _why(prof, "copy+rmap", ev[big["pages"]]["copy+rmap"]["fork"],
                               "copy", ev[big["pages"]]["copy"]["fork"],
                               _m.RMAP_FORK_OVERHEAD))
    mc = _m.MCCRACKEN_SHAPES
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
             _m.MCCRACKEN, why)
    od = pred.get("odf")
    for gb, pub, ptext in ((1, _m.ON_DEMAND_FORK_1GB, "65x faster than Linux's fork at 1 GB "
                            "(shared last-level tables, x86-64)"),
                           (50, ODF_50GB, "270x at 50 GB")):
        row = next((o for o in od or () if o["gb"] == gb), None)
        why = (_why(prof, "copy", row["copy_counts"], "share", row["share_counts"], pub)
               if row else None)
        d = item(f"on_demand_fork_{gb}gb", f"copy / share predicted fork ({gb} GB, x86_64 "
                 "counts, one VMA)", row["ratio"] if row else None, gb << 18, pub, ptext,
                 _m.ON_DEMAND_FORK, why)
        if row is None:
            d["not_measured_why"] = ("this lazyvm has no x86_64 layout" if od is None
                                     else "counted without --quick only")
    rfc = pred.get("cow_pt_rfc")
    pub = RFC_512MB_MS[0] / RFC_512MB_MS[1]
    why = None
    if rfc:
        why = _why(prof, "copy", rfc["counts_512mb"]["copy"], "share",
                   rfc["counts_512mb"]["share"], pub)
    item("cow_pt_rfc_512mb", "copy / share predicted fork (512 MB, x86_64 counts)",
         rfc["ratio_512mb"] if rfc else None, 131072, pub,
         f"{RFC_512MB_MS[0]:g} ms -> {RFC_512MB_MS[1]:g} ms, {pub:.0f}x", RFC, why)
    if rfc:
        ck = rfc["child_tables_kb_1gb"]
        cm = rfc["child_mapped_tables_kb_1gb"]
        d = item("cow_pt_rfc_child_tables_1gb", "copy / share page tables the child owns "
                 f"(1 GB, x86_64; lazyvm counts: copy {ck['copy']:,} kB, share "
                 f"{ck['share']:,} kB; it maps {cm['share']:,} kB in all)",
                 _div(ck["copy"], ck["share"]), 262144,
                 RFC_CHILD_VMPTE_KB[0] / RFC_CHILD_VMPTE_KB[1],
                 f"child VmPTE {RFC_CHILD_VMPTE_KB[0]:,} kB vs {RFC_CHILD_VMPTE_KB[1]} kB",
                 RFC, b="counted")
        d["child_tables_kb"] = ck
        d["published_kb"] = list(RFC_CHILD_VMPTE_KB)
        if not d["within_2x"]:
            d["why"] = (f"the copy child's tables match ({ck['copy']:,} vs "
                        f"{RFC_CHILD_VMPTE_KB[0]:,} kB: the PTE tables and the levels "
                        f"above); the shared child owns {ck['share']} kB, the upper levels "
                        f"of its one VMA, while the RFC's child kept "
                        f"{RFC_CHILD_VMPTE_KB[1]} kB: {RFC_CHILD_VMPTE_KB[1] - ck['share']}"
                        " kB more, tables of mappings lazyvm's one-VMA process does not "
                        "have (its program, libraries, stack: an assumption, the RFC does "
                        "not list them)")
    # measured on this machine
    lo, hi = _m.MODERN_FORK_NS_PER_PAGE
    marg = big[LINUX]["ns_per_page_marginal"]
    rng = big[LINUX]["ns_per_page_marginal_range"]
    d = item("modern_fork_per_page", "this machine's fork: marginal ns per page ((fork with "
             "the pages - fork without) / pages)", None, big["pages"], [lo, hi],
             f"{lo:.0f}-{hi:.0f} ns per page (10-16 ms per GB)", _m.REDIS_DOC, b="measured")
    d["measured"] = {"ratio": marg, "lo": rng[0], "hi": rng[1]}
    lp = big["predicted"].get(LINUX)
    if lp:
        d = item("linux_predicted", "this machine's fork of this process (its own VMAs, "
                 "PTEs and tables from /proc/self/smaps and pagemap) predicted / measured",
                 lp["fork_ns"] / lp["measured_fork_ns_median"], big["pages"], None, None,
                 None)
        d["predicted_ns"] = lp["fork_ns"]
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


def format_predicted(record: dict) -> str:
    """The predicted kernel time table: per size and configuration the predicted fork
    and fork+exit, their ratios, and the simulator's (or this machine's) timed fork
    beside them."""
    pred = record.get("predicted") or {}
    if not pred.get("profile"):
        return "\n".join(_r.wrap(f"Predicted kernel time: none ({pred.get('reason')})."))
    out = _r.wrap(f"Predicted kernel time, {pred['profile']} cost profile ({pred['reason']})"
                  f": {pred.get('description') or ''}")
    out.append("")
    head = ("pages", "config", "kernel fork", "+-", "fork+exit", "vs copy", "c+r/this",
            "timed fork", "timed vs copy")
    rows = []
    for e in record["results"]:
        p = e.get("predicted")
        if not p:
            continue
        lin = e[LINUX]
        lp = p.get(LINUX)
        rows.append((f"{e['pages']:,}", LINUX, _r.ns(lp["fork_ns"]) if lp else "-", "",
                     "-", "-", "-", _r.ns(lin["fork_ns_median"]) + "*", "-"))
        for name in CONFIG_NAMES:
            c = p["configs"][name]
            rows.append(("", name, _r.ns(c["fork_ns"]), _r.ns(c["fork_ns_se"]),
                         _r.ns(c["fork_exit_ns"]), _r.x(c["fork_over_copy"]),
                         _r.x(c["copy_rmap_over_this"]), _r.ns(c["sim_fork_ns_median"]),
                         _r.x(c["sim_fork_over_copy"])))
    out += _r.table(head, rows, left=(1,), blank_before=0)
    out.append("")
    out += _r.wrap(
        "kernel fork, fork+exit: the events the simulator counted in one fork (and one "
        "fork+exit) of this size, times the profile's cost of each; +-: the profile's "
        "uncertainty (one standard error) of the fork. " + PREDICTED_SPREAD[0].upper()
        + PREDICTED_SPREAD[1:] + ". vs copy: this row's predicted fork / copy's; "
        "c+r/this: copy+rmap's / this row's. timed fork: the simulator's median fork "
        "(its own time, with the spread of the table above); * Linux: this machine's "
        "measured fork of this Python process (median), and in kernel fork its "
        "prediction from the process's own VMAs, PTEs and tables (a host's profile only)."
        " This machine's kernel copies, so it is to be set beside the copy rows; it also "
        "copies this Python process's own mappings, which the simulated process has not.")
    for n in pred.get("notes", ()):
        out += _r.wrap("note: " + n, "", "  ")
    return "\n".join(out)


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
    out += _r.wrap("Simulator time: ratios of the medians, with the range they take when "
                   "both figures lie inside their quartiles. c+r = copy+rmap, s+r = "
                   "share+rmap. Linux ns/page: the marginal cost, (fork with the N pages - "
                   "fork of the same process without them) / N.")
    pred = record.get("predicted") or {}
    if any(e.get("predicted") for e in results):
        out.append("")
        head = ("pages", "c+r/copy", "c+r/s+r", "c+r/s+r fork+exit", "copy/share",
                "s+r/c+r")
        rows = []
        for e in results:
            r = e["predicted"]["ratios"]
            rows.append((f"{e['pages']:,}", _r.x(r["copy_rmap_over_copy"]),
                         _r.x(r["copy_rmap_over_share_rmap"]),
                         _r.x(r["copy_rmap_over_share_rmap_fork_exit"]),
                         _r.x(r["copy_over_share"]), _r.x(r["share_rmap_over_copy_rmap"])))
        out += _r.table(head, rows, left=())
        out += _r.wrap(f"Predicted kernel time ({pred.get('profile')}): the same ratios "
                       "from the counted events, exact (no range). The findings below set "
                       "these predicted ratios, not the simulator's, beside the published "
                       "figures.")
    out.append("")
    for f in record["findings"]:
        basis = f.get("basis")
        if f["key"] == "slopes":
            sl = f["slopes"]
            text = ("- Growth with pages (log-log slope of the median fork time; 1 = "
                    "linear, 0 = flat): simulator " + ", ".join(
                        f"{k} {v:.2f}" for k, v in sl.items() if v is not None))
            ps = f.get("predicted_slopes")
            if ps:
                text += "; predicted " + ", ".join(f"{k} {v:.2f}" for k, v in ps.items()
                                                   if v is not None)
            out += _r.wrap(text + ".", "", "  ")
            continue
        if f["measured"] is None:
            text = f"- {f['text']}: not measured"
            text += f" ({f['not_measured_why']})." if f.get("not_measured_why") else \
                " (size not in this run)."
            if f.get("published_text"):
                text += f" Published: {f['published_text']} ({f['source']})."
            out += _r.wrap(text, "", "  ")
            continue
        at = f" at {f['at_pages']:,} pages" if f.get("at_pages") else ""
        if f["key"] == "modern_fork_per_page":
            m = f["measured"]
            val = f"{m['ratio']:.1f} ns ({m['lo']:.1f} to {m['hi']:.1f})"
        elif f["key"] == "linux_predicted":
            cpu = f.get("measured_cpu_ns")
            val = (f"{_r.ns(f['predicted_ns'])} / {_r.ns(cpu or f['measured_ns'])} = "
                   f"{f['measured']['ratio']:.2f}"
                   + (f" (wall time {_r.ns(f['measured_ns'])}: "
                      f"{f['predicted_ns'] / f['measured_ns']:.2f})" if cpu else ""))
        else:
            val = _r.x_range(f["measured"])
        label = f" [{basis}]" if basis else ""
        text = f"- {f['text']}{at}{label}: {val}."
        if f.get("published_text"):
            text += f" Published: {f['published_text']} ({f['source']})."
        if f.get("verdict"):
            text += f" {f['verdict']}."
        if f.get("why"):
            text += f" Why: {f['why']}."
        out += _r.wrap(text, "", "  ")
    out.append("")
    out += _r.wrap(WHY_DIFFERENT)
    if pred.get("profile"):
        out += _r.wrap("The predicted kernel time answers that with counts: each counted "
                       "event priced by the profile, fixed costs of fork and exit "
                       "included; where a predicted ratio still misses a published one, "
                       "its line above says what each side is made of and how large a "
                       "cost no counted event carries would have to be.")
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
            + format_predicted(record) + "\n\n" + format_findings(record) + "\n")


# ---------------------------------------------------------------- plot


def plot(record: dict, path: str):
    """Fork latency against pages on log-log axes, one line per configuration and Linux,
    each point the median with its quartiles as an error bar; with a cost profile, a
    second panel of predicted kernel time per configuration, with this machine's
    measured fork (median, quartiles) and, for a host's profile, its prediction from
    this process's own counts.  Needs matplotlib (the ``plot`` extra).  Returns the
    matplotlib Figure (saved to `path` and closed)."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'lazyvm[plot]' "
                           "(or pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = record["results"]
    xs = [e["pages"] for e in results]

    def us(s):
        return {k: s[k] / 1e3 for k in ("median", "q1", "q3")}
    lin_label = f"Linux {record['machine'].get('kernel', '')} (this machine)"
    series = {lin_label: [us(e[LINUX]["fork_ns_spread"]) for e in results]}
    styles = {lin_label: dict(color="black", marker="s", linewidth=2.2)}
    look = {"copy": dict(color="tab:blue", marker="o"),
            "copy+rmap": dict(color="tab:blue", marker="o", linestyle="--"),
            "share": dict(color="tab:green", marker="^"),
            "share+rmap": dict(color="tab:green", marker="^", linestyle="--")}
    for name in CONFIG_NAMES:
        series[f"lazyvm {name}"] = [us(e["configs"][name]["fork_ns_spread"])
                                    for e in results]
        styles[f"lazyvm {name}"] = look[name]
    mach = record["machine"]
    pred = record.get("predicted") or {}
    with_pred = bool(pred.get("profile")) and all(e.get("predicted") for e in results)
    fig, axes = plt.subplots(1, 2 if with_pred else 1,
                             figsize=(15, 6) if with_pred else (8, 5.5), squeeze=False)
    _r.draw_lines(axes[0][0], xs, series, "touched pages (4 KiB)",
                  "fork latency, median and quartiles (µs)",
                  "simulator time: fork latency vs pages\n"
                  f"{mach.get('cpu_model')}, {mach.get('cores')} cores, "
                  f"lazyvm {record['lazyvm_version']}, {_r.build_text(record['build'])}",
                  styles)
    if with_pred:
        ax = axes[0][1]
        for name in CONFIG_NAMES:
            ax.plot(xs, [e["predicted"]["configs"][name]["fork_ns"] / 1e3 for e in results],
                    label=f"predicted {name}", **look[name])
        lin = [us(e[LINUX]["fork_ns_spread"]) for e in results]
        ax.errorbar(xs, [s["median"] for s in lin],
                    yerr=[[s["median"] - s["q1"] for s in lin],
                          [s["q3"] - s["median"] for s in lin]],
                    label=f"{lin_label}, measured (copies, as the copy line)", capsize=3,
                    color="black", marker="s", linewidth=2.2)
        if all(e["predicted"].get(LINUX) for e in results):
            ax.plot(xs, [e["predicted"][LINUX]["fork_ns"] / 1e3 for e in results],
                    label="this machine's fork predicted from this process's own counts",
                    color="black", linestyle=":", marker="x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("touched pages (4 KiB)")
        ax.set_ylabel("predicted kernel time of one fork (µs)")
        ax.set_title(f"predicted kernel time ({pred['profile']} profile, "
                     f"{record['parameters'].get('layout', 'i386')} counts)\n"
                     "exact counts x costs: no spread", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def write_json(record: dict, path: str) -> None:
    """Write a compare record (which carries its own envelope) to `path`."""
    _r.write_json(record, path)
