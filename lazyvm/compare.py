"""`lazyvm compare`: fork in every configuration beside this machine's own fork().

For each size N (touched pages) the run measures, one after the other and in the same
process:

- Linux: this machine's fork() of a real process holding N touched private pages
  (:mod:`lazyvm.linux`), with a baseline fork of the same process without them;
- the simulator in four configurations: ``copy``, ``copy+rmap``, ``share``,
  ``share+rmap``.  Each gets its own :class:`lazyvm.Machine`, one process with N private
  pages written by ``touch``; its first fork is the warm-up and the one whose counters are
  recorded (page tables, chain nodes, frames it took); then ``repeats`` forks of each
  are timed, round-robin across the four machines, each child exiting before the next
  fork.  The machines are kept alive together for this (their resident memory is small:
  the simulator never writes the data frames of a touched page), and freed before the
  next size; Linux is measured with no machine alive, so that its fork copies only the
  Python process and the N pages.

Every figure the report prints was measured in that run, or is quoted from a publication
with its source (:data:`PUBLISHED`).  The simulator counts the work the kernel would do
and does it in compiled loops over numpy memory: its times are those of that work, not
of a kernel.
"""

from __future__ import annotations

import gc
import math
import statistics
import sys
import time

from . import linux as _linux

PAGE_SIZE = 4096
USER_TOP = 0xC0000000                 # end of i386 user space
USER_PAGES = USER_TOP // PAGE_SIZE    # 786,432: the largest size there is
MAP_BASE = 0x40000000                 # where a mapping goes when it fits above it

DEFAULT_SIZES = (1024, 4096, 10240, 16384, 65536, 262144, 786432)
QUICK_SIZES = (1024, 16384, 65536, 262144)

# (name, fork mode, rmap), in the order rows are printed.
CONFIGS = (
    ("copy", "copy", False),
    ("copy+rmap", "copy", True),
    ("share", "share", False),
    ("share+rmap", "share", True),
)
LINUX = "Linux"
CONFIG_NAMES = tuple(c[0] for c in CONFIGS)

# Counters recorded as deltas across the first fork.
FORK_COUNTERS = ("page_tables", "pte_chain_nodes", "frames_used", "ptes_copied", "pgds",
                 "pt_use_refs", "shared_tables", "chain_nodes_allocated",
                 "pte_chain_slots", "rmap_direct")

# Figures quoted from publications (via ../shared/KERNEL-NOTES.md), never measured here.
# Each says which ratio of this run it is set beside.
PUBLISHED = (
    {
        "key": "rmap_fork_overhead",
        "what": "fork with rmap (pte_chains) against without, \"fork() overheads of "
                "~300% or so\"",
        "ratio": 4.0,
        "ratio_text": "about 4x",
        "source": "Linus Torvalds, linux-kernel, 28 Jan 2002 (reports he had seen; "
                  "in the seed thread)",
        "compare": "copy+rmap / copy",
    },
    {
        "key": "mccracken_fork_40mb",
        "what": "shared page tables on 2.5.4x (with rmap), fork of 40 MB (10,240 pages): "
                "28.4 -> 3.4 ms",
        "ratio": 28.4 / 3.4,
        "ratio_text": "8.4x",
        "pages": 10240,
        "source": "Dave McCracken, shared page tables patch, linux-kernel (2002)",
        "compare": "copy+rmap / share+rmap",
    },
    {
        "key": "mccracken_fork_exit_40mb",
        "what": "same, fork+exit of 40 MB: 44.2 -> 4.1 ms",
        "ratio": 44.2 / 4.1,
        "ratio_text": "10.8x",
        "pages": 10240,
        "source": "Dave McCracken, shared page tables patch, linux-kernel (2002)",
        "compare": "copy+rmap / share+rmap, fork+exit",
    },
    {
        "key": "on_demand_fork_1gb",
        "what": "On-demand-fork (shared last-level tables, x86-64): fork of 1 GB "
                "(262,144 pages) faster than Linux's",
        "ratio": 65.0,
        "ratio_text": "65x",
        "pages": 262144,
        "source": "Zhao, Gong, Fonseca: On-demand-fork, EuroSys 2021",
        "compare": "copy / share",
    },
    {
        "key": "modern_fork_per_page",
        "what": "fork on a modern kernel: 10-16 ms per GB touched, i.e. 38-61 ns per page",
        "ns_per_page": (10e6 / 262144, 16e6 / 262144),
        "source": "Redis documentation (latency of fork on physical machines)",
        "compare": "Linux here, marginal ns per page",
    },
)

DIFFERS_FACTOR = 1.5   # a ratio this far (either way) from the published one "differs"
# "Flat in pages": each page added costs at most this fraction of what it costs a copy
# fork, measured from the smallest to the largest size of the run.
FLAT_FRACTION = 0.01

WHY_DIFFERENT = (
    "Why the simulator's ratios can differ from the kernel's: the simulator counts the "
    "work the kernel would do (the same PTEs copied, references taken, chain slots "
    "added, tables allocated) and times it as compiled loops over numpy arrays in one "
    "host process. It has no TLB flushes, locks or atomic operations, no slab "
    "allocator, and no process-creation costs (task, files, signal handlers, VMAs) "
    "beyond a few Python objects."
)

# Why one comparison comes out lower or higher than published, given WHY_DIFFERENT.
REASONS = {
    ("rmap_fork_overhead", "lower"):
        "A chain add here is a few stores into numpy arrays; 2.5's page_add_rmap also "
        "took the page's chain lock and allocated nodes from the slab.",
    ("rmap_fork_overhead", "higher"):
        "Without rmap the simulator's copy loop is a few stores per page into compact "
        "arrays, so the 64-byte chain node it writes per page with rmap weighs more "
        "against it than against 2.4's copy_page_range, which also paid an atomic "
        "get_page on a struct page per page.",
    ("fixed_cost", "higher"):
        "A simulated fork has almost no fixed cost, so when sharing removes the per-page "
        "work almost nothing is left; the published fork after sharing still paid for "
        "creating a process.",
    ("fixed_cost", "lower"):
        "The simulator's per-page work is cheap next to a kernel's, so the work sharing "
        "removes is a smaller part of the whole.",
}


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


def machine_memory(pages: int) -> int:
    """Bytes of simulated memory for N touched pages: the pages, two sets of page tables
    (parent and a copying child), and 4096 frames of headroom (boot frames, pgds),
    rounded up to 1 MiB and capped at the 4 GiB non-PAE limit."""
    frames = pages + 2 * (-(-pages // 1024)) + 4096
    mib = 1 << 20
    size = -(-frames * PAGE_SIZE // mib) * mib
    return min(size, 1 << 32)


def map_address(pages: int) -> int:
    """Where the N-page mapping goes: at 1 GiB if it fits below 3 GiB, else at 0 (786,432
    pages fill the whole user space). Both are 4 MiB aligned, so it takes ceil(N/1024)
    page tables exactly."""
    return MAP_BASE if MAP_BASE + pages * PAGE_SIZE <= USER_TOP else 0


def _median(xs):
    return statistics.median(xs)


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

    def __init__(self, pages: int, mode: str, rmap: bool, repeats: int):
        import lazyvm

        self.pages, self.mode, self.rmap, self.repeats = pages, mode, rmap, repeats
        t_build = time.perf_counter_ns()
        self.m = m = lazyvm.Machine(memory=machine_memory(pages), fork_mode=mode,
                                    rmap=rmap)
        self.p = p = m.spawn()
        p.fork(mode=mode).exit()
        self.empty = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            c = p.fork(mode=mode)
            self.empty.append(time.perf_counter_ns() - t0)
            c.exit()

        self.addr = map_address(pages)
        length = pages * PAGE_SIZE
        p.mmap(length, prot="rw", shared=False, addr=self.addr)
        t0 = time.perf_counter_ns()
        p.touch(self.addr, length, write=True)
        self.touch_ns = time.perf_counter_ns() - t0
        self.setup_ns = time.perf_counter_ns() - t_build

        self.s0 = s0 = m.stats()
        t0 = time.perf_counter_ns()
        c = p.fork(mode=mode)
        t1 = time.perf_counter_ns()
        s1 = m.stats()
        t2 = time.perf_counter_ns()
        c.exit()
        t3 = time.perf_counter_ns()
        self.first = {
            "fork_ns": t1 - t0,
            "exit_ns": t3 - t2,
            "delta": {k: s1[k] - s0[k] for k in FORK_COUNTERS if k in s0 and k in s1},
        }
        self.forks, self.exits, self.cold = [], [], []

    def _fork_exit(self) -> tuple[int, int]:
        t0 = time.perf_counter_ns()
        c = self.p.fork(mode=self.mode)
        t1 = time.perf_counter_ns()
        c.exit()
        return t1 - t0, time.perf_counter_ns() - t1

    def fork_once(self) -> None:
        """Time a fork with cold caches, then one with warm caches (the one reported),
        each with the exit of its child."""
        self.cold.append(self._fork_exit()[0])
        f, e = self._fork_exit()
        self.forks.append(f)
        self.exits.append(e)

    def result(self, check: bool = False) -> dict:
        """The figures of this configuration; frees the machine."""
        m = self.m
        s_end = m.stats()
        if check:
            m.check()
        forks, exits = self.forks, self.exits
        med = _median(forks)
        out = {
            "pages": self.pages,
            "fork_mode": self.mode,
            "rmap": self.rmap,
            "repeats": len(forks),
            "memory_bytes": int(m.memory),
            "map_address": self.addr,
            "setup_ns": self.setup_ns,
            "touch_ns": self.touch_ns,
            "empty_fork_ns_median": _median(self.empty),
            "fork_ns": forks,
            "fork_ns_median": med,
            "exit_ns": exits,
            "exit_ns_median": _median(exits),
            "fork_exit_ns_median": _median([f + e for f, e in zip(forks, exits)]),
            "fork_cold_ns": self.cold,
            "fork_cold_ns_median": _median(self.cold),
            "ns_per_page": med / self.pages,
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


def measure_size(pages: int, repeats: int, check: bool = False, bar=None) -> dict:
    """All four configurations at one size, their timed forks interleaved round-robin
    (the order rotating every round), so a burst of load on the host falls on all of
    them alike.  Returns {config name: figures}."""
    bar = bar or _NoBar()
    live, out = [], {}
    rss0 = _linux._vm_status_kb("VmRSS")
    for name, mode, rmap in CONFIGS:
        bar.set_description(f"{pages:,} pages: {name} (set-up)")
        run = SimFork(pages, mode, rmap, repeats)
        rss = _linux._vm_status_kb("VmRSS")
        if rss0 is not None and rss is not None and (rss - rss0) * 1024 > RESIDENT_BUDGET:
            _timed_rounds([run], repeats)
            out[name] = run.result(check)
            gc.collect()
        else:
            live.append((name, run))
        bar.update(pages // 2)
    bar.set_description(f"{pages:,} pages: forks")
    _timed_rounds([run for _, run in live], repeats)
    for name, run in live:
        out[name] = run.result(check)
    del live, run
    gc.collect()
    bar.update(pages * len(CONFIGS) - (pages // 2) * len(CONFIGS))
    return {name: out[name] for name in CONFIG_NAMES}


def _timed_rounds(runs: list, repeats: int) -> None:
    """`repeats` rounds of one timed fork per run, the order rotating, GC off."""
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        k = len(runs)
        for r in range(repeats):
            for i in range(k):
                runs[(r + i) % k].fork_once()
    finally:
        if gc_was:
            gc.enable()


def _slope(xs, ys):
    """Least-squares slope of log(y) against log(x): 1 for a cost linear in pages,
    0 for a flat one.  None with fewer than two points."""
    if len(xs) < 2:
        return None
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den


def _ratios(entry: dict) -> dict:
    """The ratios of one size, from its measured medians."""
    lin = entry[LINUX]
    cfg = entry["configs"]
    t = {name: cfg[name]["fork_ns_median"] for name in CONFIG_NAMES}
    fe = {name: cfg[name]["fork_exit_ns_median"] for name in CONFIG_NAMES}
    r = {
        "linux_over_copy_per_page": lin["ns_per_page"] / cfg["copy"]["ns_per_page"],
        "copy_rmap_over_copy": t["copy+rmap"] / t["copy"],
        "copy_rmap_over_share_rmap": t["copy+rmap"] / t["share+rmap"],
        "copy_over_share": t["copy"] / t["share"],
        "share_rmap_over_share": t["share+rmap"] / t["share"],
        "copy_rmap_over_share_rmap_fork_exit": fe["copy+rmap"] / fe["share+rmap"],
        "linux_over": {name: lin["fork_ns_median"] / t[name] for name in CONFIG_NAMES},
        "copy_rmap_over": {name: t["copy+rmap"] / t[name] for name in CONFIG_NAMES},
    }
    if lin.get("ns_per_page_marginal") and lin["ns_per_page_marginal"] > 0:
        r["linux_marginal_over_copy_per_page"] = (lin["ns_per_page_marginal"]
                                                  / cfg["copy"]["ns_per_page"])
    r["copy_rmap_over_linux"] = t["copy+rmap"] / lin["fork_ns_median"]
    return r


def _nearest(results: list, pages: int) -> dict | None:
    """The result entry for exactly `pages`, or None."""
    for e in results:
        if e["pages"] == pages:
            return e
    return None


def evaluate_targets(results: list) -> list:
    """The issue's targets, each with the measured figure and whether it is met.
    ``met`` is None when the sizes of this run do not include what the target needs."""
    targets = []
    # Below this many pages, per-page figures are dominated by the fixed cost of a fork.
    big = [e for e in results if e["pages"] >= 65536]

    # 1. copy fork at least 40x faster per page than this machine's Linux.
    t = {
        "name": "copy fork >= 40x faster per page than Linux",
        "measure": "Linux marginal ns/page / copy ns/page, smallest over sizes >= 65,536",
        "at_pages": None, "value": None, "threshold": 40.0, "met": None,
    }
    if big:
        vals = [(e["pages"], e["ratios"].get("linux_marginal_over_copy_per_page",
                                             e["ratios"]["linux_over_copy_per_page"]))
                for e in big]
        worst = min(vals, key=lambda v: v[1])
        t.update(at_pages=worst[0], value=worst[1], met=worst[1] >= 40.0)
    targets.append(t)
    # 2. copy+rmap at most 2x copy.
    vals = [(e["pages"], e["ratios"]["copy_rmap_over_copy"]) for e in results]
    worst = max(vals, key=lambda v: v[1])
    targets.append({
        "name": "copy+rmap <= 2x copy",
        "measure": "copy+rmap fork time / copy fork time, largest over sizes",
        "at_pages": worst[0], "value": worst[1], "threshold": 2.0,
        "met": worst[1] <= 2.0,
    })
    # 3. share+rmap at least 100x faster than copy+rmap at 262,144 pages.
    e = _nearest(results, 262144)
    targets.append({
        "name": "share+rmap >= 100x faster than copy+rmap at 262,144 pages",
        "measure": "copy+rmap fork time / share+rmap fork time at 262,144 pages",
        "at_pages": 262144,
        "value": e["ratios"]["copy_rmap_over_share_rmap"] if e else None,
        "threshold": 100.0,
        "met": (e["ratios"]["copy_rmap_over_share_rmap"] >= 100.0) if e else None,
    })
    # 4. share+rmap flat in pages: what one more page adds to its fork, against copy.
    lo, hi = results[0], results[-1]
    t = {
        "name": "share+rmap fork time flat in pages",
        "measure": (f"share+rmap fork time added per page from the smallest to the "
                    f"largest size (at least 65,536 pages and 16x the smallest), as a "
                    f"fraction of copy's ns/page at the largest "
                    f"(flat: <= {FLAT_FRACTION:.0%})"),
        "at_pages": None, "value": None, "threshold": FLAT_FRACTION, "met": None,
    }
    if hi["pages"] >= 65536 and hi["pages"] >= 16 * lo["pages"]:
        sr_lo = lo["configs"]["share+rmap"]["fork_ns_median"]
        sr_hi = hi["configs"]["share+rmap"]["fork_ns_median"]
        per_page = (sr_hi - sr_lo) / (hi["pages"] - lo["pages"])
        frac = per_page / hi["configs"]["copy"]["ns_per_page"]
        t.update(value=frac, met=frac <= FLAT_FRACTION, ns_per_added_page=per_page,
                 from_pages=lo["pages"], to_pages=hi["pages"],
                 from_ns=sr_lo, to_ns=sr_hi,
                 slope=_slope([e["pages"] for e in results],
                              [e["configs"]["share+rmap"]["fork_ns_median"]
                               for e in results]))
    targets.append(t)
    return targets


def compare_published(results: list) -> list:
    """Each published figure beside the ratio this run measured for it."""
    out = []
    for pub in PUBLISHED:
        item = {k: v for k, v in pub.items()}
        if pub["key"] == "rmap_fork_overhead":
            vals = [e["ratios"]["copy_rmap_over_copy"] for e in results
                    if e["pages"] >= 65536]
            if not vals:
                item["measured"] = None
                item["verdict"] = "not measured (no size of 65,536 pages or more)"
                out.append(item)
                continue
            item["measured"] = max(vals)
            item["measured_note"] = "largest over sizes >= 65,536"
        elif pub["key"] == "modern_fork_per_page":
            e = results[-1]
            if e["pages"] < 65536:
                item["measured"] = None
                item["verdict"] = "not measured (no size of 65,536 pages or more)"
                out.append(item)
                continue
            item["measured"] = e[LINUX]["ns_per_page_marginal"]
            item["measured_at_pages"] = e["pages"]
            lo, hi = pub["ns_per_page"]
            m = item["measured"]
            item["verdict"] = ("within" if lo <= m <= hi else
                               "below" if m < lo else "above")
            out.append(item)
            continue
        else:
            e = _nearest(results, pub["pages"])
            if e is None:
                item["measured"] = None
                item["verdict"] = "not measured (size not in this run)"
                out.append(item)
                continue
            key = {"mccracken_fork_40mb": "copy_rmap_over_share_rmap",
                   "mccracken_fork_exit_40mb": "copy_rmap_over_share_rmap_fork_exit",
                   "on_demand_fork_1gb": "copy_over_share"}[pub["key"]]
            item["measured"] = e["ratios"][key]
            item["measured_at_pages"] = e["pages"]
        f = item["measured"] / pub["ratio"]
        item["measured_over_published"] = f
        item["verdict"] = ("close" if 1 / DIFFERS_FACTOR <= f <= DIFFERS_FACTOR else
                           "lower" if f < 1 else "higher")
        kind = "rmap_fork_overhead" if pub["key"] == "rmap_fork_overhead" else "fixed_cost"
        if item["verdict"] != "close":
            item["reason"] = REASONS[(kind, item["verdict"])]
        out.append(item)
    return out


def _lazyvm_version() -> str:
    try:
        import lazyvm
        v = getattr(lazyvm, "__version__", None)
        if v:
            return str(v)
    except ImportError:
        pass
    try:
        from importlib.metadata import version
        return version("lazyvm")
    except Exception:
        return "unknown"


def run_compare(sizes=None, repeats=None, quick: bool = False, progress: bool = True,
                check: bool = False) -> dict:
    """Measure every configuration and Linux at each size; returns the whole record
    (what ``--json`` writes): parameters, machine description, per-size figures and
    ratios, targets and the published figures set beside the measured ones."""
    if sizes is None:
        sizes = QUICK_SIZES if quick else DEFAULT_SIZES
    sizes = sorted(set(int(n) for n in sizes))
    for n in sizes:
        if not 1 <= n <= USER_PAGES:
            raise ValueError(f"size {n} pages: must be 1..{USER_PAGES:,} (3 GiB of i386 "
                             "user space)")
    reps = {n: (repeats if repeats else default_repeats(n, quick)) for n in sizes}

    bar = _progress_bar(sum(n * (len(CONFIGS) + 1) for n in sizes), progress)
    t_start = time.perf_counter_ns()
    results = []
    try:
        for n in sizes:
            entry = {"pages": n, "bytes": n * PAGE_SIZE, "repeats": reps[n]}
            bar.set_description(f"{n:,} pages: {LINUX}")
            entry[LINUX] = _linux.measure_linux(n, reps[n])
            bar.update(n)
            entry["configs"] = measure_size(n, reps[n], check, bar)
            entry["ratios"] = _ratios(entry)
            results.append(entry)
    finally:
        bar.close()
    wall_ns = time.perf_counter_ns() - t_start

    return {
        "tool": "lazyvm compare",
        "lazyvm_version": _lazyvm_version(),
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "parameters": {
            "sizes": sizes,
            "repeats": reps,
            "quick": quick,
            "configs": [{"name": c[0], "fork_mode": c[1], "rmap": c[2]} for c in CONFIGS],
            "map_base": MAP_BASE,
            "warmup_forks": 1,
            "statistic": "median",
            "check": check,
        },
        "machine": _linux.machine_description(),
        "wall_ns": wall_ns,
        "results": results,
        "slopes": {name: _slope(sizes, [e["configs"][name]["fork_ns_median"]
                                        for e in results]) for name in CONFIG_NAMES}
                  | {LINUX: _slope(sizes, [e[LINUX]["fork_ns_median"] for e in results])},
        "targets": evaluate_targets(results),
        "published": compare_published(results),
        "why_different": WHY_DIFFERENT,
    }


class _NoBar:
    def set_description(self, *_):
        pass

    def update(self, *_):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar on stderr counting pages measured, or a stand-in that does nothing."""
    if not enabled:
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


def _ms(ns) -> str:
    ms = ns / 1e6
    if ms >= 100:
        return f"{ms:,.0f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.4f}"


def _x(r) -> str:
    if r is None:
        return "-"
    if r >= 100:
        return f"{r:,.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    if r >= 0.1:
        return f"{r:.2f}x"
    return f"{r:.2g}x"


def _int(v) -> str:
    return "-" if v is None else f"{v:,}"


def format_table(record: dict) -> str:
    """The main table: one row per size x configuration, Linux first."""
    head = ("pages", "config", "fork ms", "ns/page", "Linux/this", "c+r/this",
            "fork+exit ms", "1st fork ms", "tables", "chain nodes", "frames")
    rows = []
    for e in record["results"]:
        n = e["pages"]
        lin = e[LINUX]
        cr = e["configs"]["copy+rmap"]["fork_ns_median"]
        tables = lin.get("vmpte_kb")
        rows.append((f"{n:,}", LINUX, _ms(lin["fork_ns_median"]),
                     f"{lin['ns_per_page']:.1f}", _x(1.0),
                     _x(cr / lin["fork_ns_median"]), _ms(lin["fork_wait_ns_median"]),
                     "-", (f"{tables // 4:,}*" if tables is not None else "-"), "-", "-"))
        for name in CONFIG_NAMES:
            c = e["configs"][name]
            d = c["first_fork"]["delta"]
            rows.append(("", name, _ms(c["fork_ns_median"]), f"{c['ns_per_page']:.2f}",
                         _x(e["ratios"]["linux_over"][name]),
                         _x(e["ratios"]["copy_rmap_over"][name]),
                         _ms(c["fork_exit_ns_median"]), _ms(c["first_fork"]["fork_ns"]),
                         _int(d.get("page_tables")), _int(d.get("pte_chain_nodes")),
                         _int(d.get("frames_used"))))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    left = {1}
    def fmt(r):
        return "  ".join(s.ljust(w) if i in left else s.rjust(w)
                         for i, (s, w) in enumerate(zip(r, widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths)]
    for r in rows:
        if r[0] and len(lines) > 2:
            lines.append("")
        lines.append(fmt(r))
    lines += [
        "",
        "fork ms: median of the timed forks, each right after an untimed one (warm caches,",
        "  as Linux's back-to-back forks), the four configurations interleaved round-robin;",
        "  ns/page = fork ms / pages.",
        "Linux/this: this machine's fork() time / this row's (how many times faster than the",
        "  real kernel here); c+r/this: copy+rmap's fork time / this row's.",
        "fork+exit: simulator fork + child exit; Linux: fork until the child is reaped.",
        "1st fork: the first fork's time, growing the chain pool included (host page",
        "  faults); tables, chain nodes, frames: what that fork allocated (page tables,",
        "  pte_chain nodes, frames: the child's pgd and tables).",
        "* Linux tables: x86-64 page tables (512 entries) the touched mapping added to this",
        "  process (/proc/self/status VmPTE / 4 KiB), which its fork copies.",
    ]
    return "\n".join(lines)


def format_reading(record: dict) -> str:
    """Per-size ratios, the targets, and the published figures beside the measured ones."""
    results = record["results"]
    out = ["Reading", "======="]
    head = ("pages", "Linux ns/page", "(marginal)", "copy ns/page", "Linux/copy per page",
            "copy+rmap/copy", "copy+rmap/share+rmap", "copy/share")
    rows = []
    for e in results:
        lin, r = e[LINUX], e["ratios"]
        marg = lin["ns_per_page_marginal"]
        rows.append((f"{e['pages']:,}", f"{lin['ns_per_page']:.1f}", f"{marg:.1f}",
                     f"{e['configs']['copy']['ns_per_page']:.2f}",
                     _x(r.get("linux_marginal_over_copy_per_page")),
                     _x(r["copy_rmap_over_copy"]), _x(r["copy_rmap_over_share_rmap"]),
                     _x(r["copy_over_share"])))
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    out.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    for row in rows:
        out.append("  ".join(s.rjust(w) for s, w in zip(row, widths)))
    out += _wrap("Linux/copy per page uses Linux's marginal cost per page, (fork with the "
                 "N pages - fork of the same process without them) / N, beside copy's "
                 "ns/page; '-' where the marginal cost is lost in the noise of forking "
                 "the Python process itself (a difference of two medians, <= 0).", 88)
    slopes = record["slopes"]
    out += _wrap("Growth with pages (log-log slope of fork time; 1 = linear, 0 = flat): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items() if v is not None)
                 + ".", 88)

    big = results[-1]
    cold = ", ".join(
        f"{name} {big['configs'][name]['fork_cold_ns_median'] / 1e3:,.1f} us "
        f"(warm {big['configs'][name]['fork_ns_median'] / 1e3:,.1f})"
        for name in CONFIG_NAMES)
    out += _wrap(f"With caches cold (each fork right after another machine's; not in the "
                 f"table), median fork at {big['pages']:,} pages: {cold}.", 88)

    out += ["", "Targets"]
    for t in record["targets"]:
        if t["met"] is None:
            out += _wrap(f"[not measured] {t['name']}: not measurable with the sizes of "
                         f"this run", 88, "  ", "      ")
            continue
        v = t["value"]
        if "ns_per_added_page" in t:
            val = (f"{t['ns_per_added_page']:+.4f} ns per added page, {v:.2%} of copy's "
                   f"({t['from_ns'] / 1e3:.1f} -> {t['to_ns'] / 1e3:.1f} us from "
                   f"{t['from_pages']:,} to {t['to_pages']:,} pages; log-log slope "
                   f"{t['slope']:.2f})")
        else:
            val = _x(v)
        if t["at_pages"]:
            val += f" at {t['at_pages']:,} pages"
        out += _wrap(f"[{'met' if t['met'] else 'NOT met'}] {t['name']}: {val}. "
                     f"Measured as: {t['measure']}.", 88, "  ", "      ")

    out += ["", "Published figures (quoted, not measured here) beside this run's"]
    for p in record["published"]:
        out += _wrap(f"- {p['what']}"
                     + (f": {p['ratio_text']}" if "ratio_text" in p else "")
                     + f". Source: {p['source']}.", 88, "  ", "    ")
        if p["key"] == "modern_fork_per_page" and p["measured"] is not None:
            lo, hi = p["ns_per_page"]
            here = (f"Here: this machine's fork, {p['measured']:.1f} ns per page marginal "
                    f"at {p['measured_at_pages']:,} pages: {p['verdict']} that range")
            if p["verdict"] != "within":
                here += f" ({lo:.0f}-{hi:.0f})"
                if record["machine"].get("hypervisor"):
                    here += "; this machine is a virtual machine"
            out += _wrap(here + ".", 88, "    ", "    ")
            continue
        if p["measured"] is None:
            out += _wrap(f"Here ({p['compare']}): {p['verdict']}.", 88, "    ", "    ")
            continue
        at = (f" at {p['measured_at_pages']:,} pages" if p.get("measured_at_pages")
              else f" ({p['measured_note']})" if p.get("measured_note") else "")
        word = {"close": "close to the published figure",
                "lower": f"lower than published by {1 / p['measured_over_published']:.1f}x",
                "higher": f"higher than published by {p['measured_over_published']:.1f}x"
                }[p["verdict"]]
        out += _wrap(f"Here, {p['compare']}{at}: {_x(p['measured'])}, {word}."
                     + (f" {p['reason']}" if p.get("reason") else ""), 88, "    ", "    ")
    if any(p.get("verdict") in ("lower", "higher") for p in record["published"]):
        out += [""] + _wrap(WHY_DIFFERENT, 88)
    return "\n".join(out)


def _wrap(text: str, width: int, first: str = "", rest: str = "") -> list:
    """`text` filled to `width` columns, the first line indented by `first`, the others
    by `rest`."""
    import textwrap
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False)


def format_report(record: dict) -> str:
    """Everything `lazyvm compare` prints: header, table, reading."""
    mach = record["machine"]
    mem = mach.get("memory_bytes")
    head = [
        f"lazyvm {record['lazyvm_version']} compare: fork of N touched private pages, "
        f"simulator (i386) vs this machine's Linux",
        f"host: {mach.get('cpu_model')}, {mach.get('cores')} cores"
        + (f", {mem / (1 << 30):.1f} GiB" if mem else "")
        + (", virtual machine" if mach.get("hypervisor") else "")
        + f"; Linux {mach.get('kernel')} {mach.get('arch')}; Python {mach.get('python')}, "
        f"numpy {mach.get('numpy')}",
        f"run: {record['wall_ns'] / 1e9:.1f} s; repeats per size: "
        + ", ".join(f"{n:,}:{r}" for n, r in record["parameters"]["repeats"].items()),
        "",
    ]
    return "\n".join(head) + format_table(record) + "\n\n" + format_reading(record) + "\n"


# ---------------------------------------------------------------- plot


def plot(record: dict, path: str) -> None:
    """Fork latency against pages on log-log axes: one line per configuration and Linux.
    Needs matplotlib (the ``plot`` extra)."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'lazyvm[plot]' "
                           "(or pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = record["results"]
    xs = [e["pages"] for e in results]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    styles = {LINUX: dict(color="black", marker="s", linewidth=2.2),
              "copy": dict(color="tab:blue", marker="o"),
              "copy+rmap": dict(color="tab:blue", marker="o", linestyle="--"),
              "share": dict(color="tab:green", marker="^"),
              "share+rmap": dict(color="tab:green", marker="^", linestyle="--")}
    ax.plot(xs, [e[LINUX]["fork_ns_median"] / 1e3 for e in results],
            label=f"Linux {record['machine'].get('kernel', '')} (this machine)",
            **styles[LINUX])
    for name in CONFIG_NAMES:
        ax.plot(xs, [e["configs"][name]["fork_ns_median"] / 1e3 for e in results],
                label=f"lazyvm {name}", **styles[name])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("touched pages (4 KiB)")
    ax.set_ylabel("fork latency, median (µs)")
    mach = record["machine"]
    ax.set_title("fork latency vs pages\n"
                 f"{mach.get('cpu_model')}, {mach.get('cores')} cores, "
                 f"lazyvm {record['lazyvm_version']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(record: dict, path: str) -> None:
    import json
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=_json_default)
        f.write("\n")


def _json_default(o):
    # numpy scalars from stats() or medians
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
