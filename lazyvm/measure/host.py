"""Measurement shared by every command: the configurations, simulated-memory sizing, the
garbage collector held off while timing, spreads of timed samples and the rule that takes
more repeats while a spread is wide, and this machine's own fork().

Every timed figure a command reports is a :func:`spread` of its samples: the median with
the quartiles and the extremes beside it.  A spread is *wide* when its interquartile range
is more than :data:`WIDE` of its median; :func:`settle` then takes more samples, up to
:data:`MAX_FACTOR` times the first batch, and records whether the spread narrowed.

The host's fork (:class:`LinuxMapping`, :func:`measure_linux`): a private anonymous
mapping of N pages is touched page by page (so the parent holds N present 4 KiB PTEs
and N anonymous pages, as a simulated process does after ``touch``), then ``os.fork()``
is timed in the parent.  The child calls ``os._exit(0)`` at once; the parent waits for it
only after taking the time, so the figure is the fork system call (copy_page_range over
the mapping, plus the fixed cost of duplicating a Python process), not the child's exit.
Two traps are stepped around:

- ``mmap.mmap(-1, n)`` is MAP_SHARED anonymous memory (shmem).  Since Linux 2.6.14 fork
  does not copy the page tables of such a mapping at all (they are refaulted from shmem),
  so timing it would measure nothing.  The mapping here is MAP_PRIVATE | MAP_ANONYMOUS.
- With transparent huge pages a touched region may be mapped by 2 MiB PMDs, which fork
  copies one entry per 512 pages.  ``MADV_NOHUGEPAGE`` keeps it at 4 KiB PTEs.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import mmap
import os
import statistics
import time
from typing import Callable, Iterator, Optional, Sequence

PAGE_SIZE = 4096

# name -> (fork_mode, rmap), in the order every report prints them.
CONFIGS = {
    "copy": ("copy", False),          # Linux 2.4 copy_page_range
    "copy+rmap": ("copy", True),      # 2.5 / 2.6.0 with pte_chains
    "share": ("share", False),        # lazy page-table sharing (the seed)
    "share+rmap": ("share", True),
}
CONFIG_NAMES = tuple(CONFIGS)

LAYOUTS = ("i386", "pae", "x86_64")

# A spread is wide when (q3 - q1) / median exceeds this.
WIDE = 0.25
# settle() takes at most this many times the first batch of samples.
MAX_FACTOR = 4

clock = time.perf_counter_ns


# ---------------------------------------------------------------- the garbage collector


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """Collect once, then keep Python's cyclic garbage collector off inside the block
    (a collection in the middle of a timed region would be timed with it)."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# ---------------------------------------------------------------- spreads


def _quartiles(xs: Sequence[float]) -> tuple:
    """(q1, median, q3) of a non-empty sample, by the inclusive method (numpy's default
    linear interpolation), so one sample gives (x, x, x)."""
    s = sorted(xs)
    if len(s) == 1:
        return s[0], s[0], s[0]
    q1, q2, q3 = statistics.quantiles(s, n=4, method="inclusive")
    return q1, statistics.median(s), q3


def spread(samples: Sequence[float]) -> dict:
    """The summary every timed figure carries: ``median``, ``q1``, ``q3``, ``min``,
    ``max`` (in the samples' unit), ``n`` and ``rel_iqr`` = (q3 - q1) / median, and
    ``wide`` (rel_iqr > WIDE)."""
    if not samples:
        raise ValueError("no samples")
    q1, med, q3 = _quartiles(samples)
    rel = (q3 - q1) / med if med > 0 else 0.0
    return {"median": med, "q1": q1, "q3": q3, "min": min(samples), "max": max(samples),
            "n": len(samples), "rel_iqr": rel, "wide": rel > WIDE}


def ratio(a: dict, b: dict) -> dict:
    """a / b of two spreads: the ratio of the medians, and the range it can take with
    both figures inside their quartiles (q1(a)/q3(b) .. q3(a)/q1(b))."""
    lo = a["q1"] / b["q3"] if b["q3"] > 0 else None
    hi = a["q3"] / b["q1"] if b["q1"] > 0 else None
    return {"ratio": a["median"] / b["median"], "lo": lo, "hi": hi}


def settle(samples: list, more: Callable[[int], list], batch: int,
           factor: int = MAX_FACTOR) -> dict:
    """Add batches of samples from ``more(batch)`` while their spread is wide, until it
    settles or ``factor * batch`` samples have been taken.  ``samples`` is extended in
    place; returns its spread with ``extra`` (samples added) and ``settled``."""
    extra = 0
    s = spread(samples)
    while s["wide"] and len(samples) + batch <= factor * max(batch, 1):
        got = more(batch)
        samples.extend(got)
        extra += len(got)
        s = spread(samples)
    s["extra"] = extra
    s["settled"] = not s["wide"]
    return s


def slope(xs: Sequence[float], ys: Sequence[float]) -> Optional[float]:
    """Least-squares slope of log(y) against log(x): 1 for a cost linear in pages,
    0 for a flat one.  None with fewer than two points or a non-positive y."""
    import math

    if len(xs) < 2 or min(ys) <= 0:
        return None
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else None


# ---------------------------------------------------------------- machines


def machine_keywords() -> set:
    """The keyword arguments this build's Machine takes."""
    from ..machine import Machine

    return set(inspect.signature(Machine).parameters)


def machine_options(layout: str = "i386", share_level: int = 1) -> dict:
    """The keywords to give Machine for a layout and share level: none for the defaults
    (so this works on a core without them); ValueError naming the missing keyword when
    this build's Machine cannot take what was asked."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    have = machine_keywords()
    out = {}
    if layout != "i386":
        if "layout" not in have:
            raise ValueError(f"layout {layout!r} needs Machine(layout=...), which this "
                             f"build of lazyvm does not have yet; only i386 runs")
        out["layout"] = layout
    if share_level != 1:
        if "share_level" not in have:
            raise ValueError("share level other than 1 needs Machine(share_level=...), "
                             "which this build of lazyvm does not have yet")
        out["share_level"] = share_level
    return out


_LIMITS: dict = {}


def layout_limits(layout: str = "i386") -> tuple:
    """(user pages, maximum simulated memory in bytes) of a layout: the largest process
    there is and the most memory a Machine may have.  Read from lazyvm.layout's table
    when it has one, else from a small Machine of that layout (its ``m.layout``)."""
    if layout in _LIMITS:
        return _LIMITS[layout]
    if layout == "i386" and "layout" not in machine_keywords():
        out = (0xC0000000 // PAGE_SIZE, 1 << 32)   # the 0.1.0 core: i386 only
    else:
        from .. import layout as _layout

        info = getattr(_layout, "LAYOUTS", {}).get(layout)
        if info is None:
            if "layout" not in machine_keywords():
                raise ValueError(f"layout {layout!r} is not in this build of lazyvm")
            from ..machine import Machine

            info = Machine(memory=4 << 20, layout=layout).layout
        out = (int(info.task_size) // PAGE_SIZE, int(info.max_memory))
    _LIMITS[layout] = out
    return out


def memory_for(frames: int, layout: str = "i386") -> int:
    """Bytes of simulated memory for a run that needs about ``frames`` frames: 25% and
    4,096 frames of slack (boot frames, pgds), whole MiB, at most the layout's limit."""
    need = int(frames * 1.25) + 4096
    mib = -(-need // 256)
    return min(mib << 20, layout_limits(layout)[1])


def build_info() -> dict:
    """Which compiled core ran: ``debug`` is True for the checked build (LAZYVM_DEBUG=1:
    bounds and wraparound checks), False for the fast one, None when the core does not
    say; ``core`` is the file it was loaded from."""
    from ..core import api, defs

    debug = getattr(defs, "DEBUG_BUILD", None)
    return {"debug": None if debug is None else bool(debug),
            "core": getattr(api, "__file__", None)}


# ---------------------------------------------------------------- this machine's fork()


def _fork_once(cpu: Optional[list] = None) -> tuple:
    """Fork; the child exits at once.  Returns (ns spent in os.fork() in the parent,
    ns from before the fork until the child has been reaped); with `cpu`, appends the
    parent thread's CPU time across os.fork() (CLOCK_THREAD_CPUTIME_ID: the kernel's
    work for the fork, without the time other work on the host preempted it)."""
    c0 = time.thread_time_ns()
    t0 = clock()
    pid = os.fork()
    if pid == 0:  # child: leave without running any Python clean-up
        os._exit(0)
    t1 = clock()
    if cpu is not None:
        cpu.append(time.thread_time_ns() - c0)
    _, status = os.waitpid(pid, 0)
    t2 = clock()
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"forked child ended with status {status:#x}")
    return t1 - t0, t2 - t0


def time_forks(repeats: int, warmup: int = 1, cpu: Optional[list] = None) -> tuple:
    """Time `repeats` forks of this process after `warmup` untimed ones, with the
    garbage collector off.  Returns (fork ns list, fork-to-reaped ns list); with `cpu`,
    appends each timed fork's CPU time (see _fork_once) to it."""
    with gc_off():
        for _ in range(warmup):
            _fork_once()
        forks, waits = [], []
        for _ in range(repeats):
            f, w = _fork_once(cpu)
            forks.append(f)
            waits.append(w)
    return forks, waits


def vm_status_kb(key: str) -> Optional[int]:
    """A field of /proc/self/status in kB (VmRSS, VmPTE, ...), or None if unreadable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class LinuxMapping:
    """A private anonymous mapping of `pages` 4 KiB pages, every page written once.

    Use as a context manager; the mapping is unmapped on exit.  ``touch_ns`` is the time
    the writes took (the host's own demand-zero faults), ``vmpte_kb`` the growth of this
    process's page-table memory (/proc/self/status VmPTE) the mapping caused.
    """

    def __init__(self, pages: int):
        if pages < 0:
            raise ValueError("pages must be >= 0")
        self.pages = pages
        self.touch_ns = 0
        self.vmpte_kb = None
        self._mm = None

    def __enter__(self) -> "LinuxMapping":
        if self.pages == 0:
            return self
        import numpy as np

        pte_before = vm_status_kb("VmPTE")
        size = self.pages * PAGE_SIZE
        self._mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            try:
                self._mm.madvise(mmap.MADV_NOHUGEPAGE)
            except OSError:  # kernels without THP refuse the advice; then pages are 4 KiB
                pass
        t0 = clock()
        view = np.frombuffer(self._mm, dtype=np.uint8)
        view[::PAGE_SIZE] = 1  # one write per page: a present, writable, dirty PTE each
        del view  # an exported buffer would keep mmap.close() from unmapping
        self.touch_ns = clock() - t0
        pte_after = vm_status_kb("VmPTE")
        if pte_before is not None and pte_after is not None:
            self.vmpte_kb = pte_after - pte_before
        return self

    def __exit__(self, *exc) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None


def measure_linux_fork(pages: int, repeats: int, warmup: int = 1) -> list:
    """Fork this process `repeats` times while it holds `pages` touched private pages.

    Returns the ns each os.fork() took in the parent (after `warmup` untimed forks).
    ``pages=0`` gives the baseline: the cost of forking this Python process as it is.
    """
    with LinuxMapping(pages):
        forks, _ = time_forks(repeats, warmup)
    return forks


def measure_linux(pages: int, repeats: int, warmup: int = 1,
                  counter: Optional[Callable[[], tuple]] = None) -> dict:
    """Baseline and N-page fork of this process, measured back to back, each taking more
    forks while its spread is wide (:func:`settle`).

    Returns (ns unless named otherwise): ``fork_ns``, ``fork_wait_ns`` (fork until the
    child is reaped) and ``baseline_ns`` (forks with no extra mapping) as samples, each
    with its spread (``*_spread``) and median (``*_median``); ``ns_per_page`` =
    median(fork)/pages, ``ns_per_page_marginal`` = (median(fork) - median(baseline))/pages
    with its range from the quartiles, ``touch_ns`` and ``vmpte_kb``.  With `counter`
    (lazyvm.measure.calibrate.counts: what fork copies of this process, (V, A, P, T)), also
    ``kernel_counts``: {"baseline": {V, A, P, T}, "with_pages": ...}, each read just
    before the forks it goes with (untimed).  ``fork_cpu_ns_median`` and
    ``fork_cpu_ns_spread``: the CPU time of the first batch of N-page forks (the
    forking thread's clock across os.fork(), as lazyvm calibrate times its forks).
    """
    kc = {}
    if counter is not None:
        kc["baseline"] = dict(zip("VAPT", counter()))
    base, base_wait = time_forks(repeats, warmup)
    base_s = settle(base, lambda k: time_forks(k, 0)[0], repeats)
    cpu: list = []
    with LinuxMapping(pages) as lm:
        if counter is not None:
            kc["with_pages"] = dict(zip("VAPT", counter()))
        forks, waits = time_forks(repeats, warmup, cpu)

        def more(k):
            f, w = time_forks(k, 0)
            waits.extend(w)
            return f
        fork_s = settle(forks, more, repeats)
    wait_s = spread(waits)
    med, med_base = fork_s["median"], base_s["median"]
    out = {
        "pages": pages,
        "repeats": len(forks),
        "fork_ns": forks,
        "fork_ns_median": med,
        "fork_ns_spread": fork_s,
        "fork_wait_ns": waits,
        "fork_wait_ns_median": wait_s["median"],
        "fork_wait_ns_spread": wait_s,
        "baseline_ns": base,
        "baseline_ns_median": med_base,
        "baseline_ns_spread": base_s,
        "baseline_wait_ns_median": statistics.median(base_wait),
        "ns_per_page": med / pages if pages else None,
        "ns_per_page_marginal": (med - med_base) / pages if pages else None,
        "ns_per_page_marginal_range": ([(fork_s["q1"] - base_s["q3"]) / pages,
                                        (fork_s["q3"] - base_s["q1"]) / pages]
                                       if pages else None),
        "touch_ns": lm.touch_ns,
    }
    if lm.vmpte_kb is not None:
        out["vmpte_kb"] = lm.vmpte_kb
    if kc:
        out["kernel_counts"] = kc
    if cpu:
        out["fork_cpu_ns_spread"] = spread(cpu)
        out["fork_cpu_ns_median"] = out["fork_cpu_ns_spread"]["median"]
    return out


def machine_description() -> dict:
    """What a reader needs to place the figures: platform, kernel, CPU, cores, memory,
    transparent-huge-page mode, Python and numpy versions, and the load average."""
    import platform
    import sys

    import numpy as np

    uname = os.uname()
    desc = {
        "platform": platform.platform(),
        "system": uname.sysname,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "arch": uname.machine,
        **_cpuinfo(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "page_size": mmap.PAGESIZE,
    }
    if hasattr(os, "sched_getaffinity"):
        desc["cores_usable"] = len(os.sched_getaffinity(0))
    meminfo = _read_first("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            desc["memory_bytes"] = int(line.split()[1]) * 1024
            break
    thp = _read_first("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp is not None:
        desc["transparent_hugepage"] = thp
    if hasattr(os, "getloadavg"):
        desc["load_average"] = list(os.getloadavg())
    return desc


def _read_first(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpuinfo() -> dict:
    import platform

    info = {}
    text = _read_first("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if ":" not in line:
            continue
        k, v = (s.strip() for s in line.split(":", 1))
        if k == "model name" and "cpu_model" not in info:
            info["cpu_model"] = v
        elif k == "flags" and "hypervisor" not in info:
            info["hypervisor"] = "hypervisor" in v.split()
        elif k == "cpu MHz" and "cpu_mhz" not in info:
            try:
                info["cpu_mhz"] = float(v)
            except ValueError:
                pass
    if "cpu_model" not in info:
        info["cpu_model"] = platform.processor() or platform.machine()
    return info


# ---------------------------------------------------------------- published figures
# Quoted, never measured here: the one home of every published figure a command sets
# beside its own (docs/KERNEL-NOTES.md gives the context of each).

MCCRACKEN = ("Dave McCracken, \"Fork timing numbers for shared page tables\", "
             "linux-kernel, 10 Oct 2002; 2.5.41, with rmap")
LINUS = "Linus Torvalds, linux-kernel, 28 Jan 2002, in the seed thread"
ON_DEMAND_FORK = "Zhao, Gong, Fonseca: On-demand-fork, EuroSys 2021"
REDIS_DOC = "Redis documentation (latency of fork on physical machines)"

# McCracken's shapes: ms before (2.5.41, copying, with rmap) and after (shared tables).
MCCRACKEN_SHAPES = (
    {"shape": "40 MB fork", "pages": 10240, "before_ms": 28.4, "after_ms": 3.4},
    {"shape": "40 MB fork+exit", "pages": 10240, "before_ms": 44.2, "after_ms": 4.1},
    {"shape": "40 MB fork+exec+exit", "pages": 10240, "before_ms": 49.3,
     "after_ms": 10.7},
    {"shape": "400 KB fork+exec+exit", "pages": 100, "before_ms": 6.5, "after_ms": 7.7},
)
RMAP_FORK_OVERHEAD = 4.0           # Linus: "~300%" slower, i.e. about 4x
ON_DEMAND_FORK_1GB = 65.0          # fork of 1 GB (262,144 pages), x86-64, vs Linux's
MODERN_FORK_NS_PER_PAGE = (10e6 / 262144, 16e6 / 262144)   # 10-16 ms per GB touched
