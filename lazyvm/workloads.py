"""Workloads that compare the four fork policies side by side.

Every workload builds its processes in a fresh Machine for each configuration,

    copy        Machine(fork_mode="copy",  rmap=False)   Linux 2.4 copy_page_range
    copy+rmap   Machine(fork_mode="copy",  rmap=True)    2.5 / 2.6.0 with pte_chains
    share       Machine(fork_mode="share", rmap=False)   lazy page-table sharing (the seed)
    share+rmap  Machine(fork_mode="share", rmap=True)

then measures only the workload proper: the set-up before it, and ``warmup`` untimed
iterations (default 2) that bring the machine to its steady state, are neither timed
nor counted. (Two, because a frame first written by a copy-on-write copy is one the
host has never backed; only from the third iteration on do the frames in rotation
all come back from the free list already backed, and the host's first-touch faults
would otherwise dominate the first iterations' times.) It reports wall time with ``time.perf_counter_ns`` per phase and per
iteration, the counters of ``Machine.stats()`` as differences over the measured
iterations, and the peaks (``reset_peaks()`` before, ``*_peak`` after).

    >>> from lazyvm.workloads import run_workload, format_results
    >>> print(format_results(run_workload("small_fork", quick=True)))   # doctest: +SKIP

``run_workload`` returns a dict::

    {"workload": name, "params": {..., "quick", "warmup", "interleave"},
     "notes": [str, ...],
     "info": {...},                      # facts about the shape (tables written, ...)
     "configs": {config_name: {
         "fork_mode": "copy" | "share", "rmap": bool, "memory": bytes,
         "iterations": int,              # measured iterations of the workload's loop(s)
         "time_ns": int,                 # total measured time (the sum of the phases)
         "time_per_iteration_ns": int,
         "phases": {phase: {"count", "total_ns", "mean_ns", "median_ns", "min_ns"}},
         "loops": {loop: {"count", "total_ns", "mean_ns", "median_ns", "min_ns"}},
         <COUNTER_KEYS>: int,            # differences over the measured run
         <PEAK_KEYS>: int,               # peaks over the measured run
         "leaked_frames": int}},         # frames still used after every process exited,
                                         # beyond the boot frames (0 when nothing leaks)
     "published": [row, ...]}            # only for the "published" workload

Every number ``format_results`` prints is measured in that run, or quoted as published
with its source (see ``PUBLISHED``); the simulator's milliseconds are its own and are
never compared with 2002 hardware, only the ratios are.
"""

import gc
import statistics
import time

import numpy as np

from lazyvm import Machine

__all__ = ["CONFIGS", "COUNTER_KEYS", "PEAK_KEYS", "PUBLISHED", "WORKLOADS",
           "run_workload", "format_results"]

PAGE = 4096
TABLE_SPAN = 1 << 22                 # bytes mapped by one page table
USER_TOP = 0xC0000000                # TASK_SIZE
TEXT_BASE = 0x08048000               # where i386 ELF executables are linked

CONFIGS = {                          # name -> (fork_mode, rmap)
    "copy": ("copy", False),
    "copy+rmap": ("copy", True),
    "share": ("share", False),
    "share+rmap": ("share", True),
}

# Counters reported as differences over the measured run.
COUNTER_KEYS = ("faults", "demand_zero", "zero_page_maps", "cow_copies", "cow_reuses",
                "shmem_faults", "swap_ins", "unshares", "unshare_reuses",
                "tables_dropped", "ptes_copied", "chain_nodes_allocated", "forks")
# Peaks over the measured run (reset_peaks() before it).
PEAK_KEYS = ("frames_peak", "page_tables_peak", "pte_chain_nodes_peak")

_clock = time.perf_counter_ns

# --------------------------------------------------------------------------------------
# Published figures. Quoted, never computed: see ../shared/KERNEL-NOTES.md.

_MCCRACKEN = ("Dave McCracken, shared page tables on Linux 2.5.41, linux-kernel, 2002 "
              "(KERNEL-NOTES.md)")
_LINUS = ("Linus Torvalds, linux-kernel, 28 Jan 2002: \"fork() overheads of ~300% or "
          "so\" with rmap (seed/000_93a9f16881749517.txt, KERNEL-NOTES.md)")

PUBLISHED = [
    # name, baseline ms, with shared tables ms, what the simulator compares, source
    {"shape": "40 MB fork", "before_ms": 28.4, "after_ms": 3.4,
     "measure": ("40MB fork+exit", "fork"), "source": _MCCRACKEN},
    {"shape": "40 MB fork+exit", "before_ms": 44.2, "after_ms": 4.1,
     "measure": ("40MB fork+exit", None), "source": _MCCRACKEN},
    {"shape": "40 MB fork+exec+exit", "before_ms": 49.3, "after_ms": 10.7,
     "measure": ("40MB fork+exec+exit", None), "source": _MCCRACKEN},
    {"shape": "400 KB fork+exec+exit", "before_ms": 6.5, "after_ms": 7.7,
     "measure": ("400KB fork+exec+exit", None), "source": _MCCRACKEN},
]
# Linus' figure is a ratio only: fork with rmap about 300% slower, i.e. about 4x.
PUBLISHED_RMAP_FORK = {"shape": "rmap fork overhead (copy+rmap / copy)",
                       "ratio_text": "~4x (\"~300%\" slower)", "ratio": 4.0,
                       "measure": ("40MB fork+exit", "fork"), "source": _LINUS}


# --------------------------------------------------------------------------------------
# Measurement


class _Meter:
    """Times phases and iterations of one configuration's run and diffs its counters.

    A body iterates ``for _ in meter.loop(n)``: first ``warmup`` iterations that are
    neither timed nor counted (they bring the machine to its steady state: chains
    already built, free frames already backed by host memory), then `n` measured ones.
    The counters are summed and the peaks maxed over the measured segments. (The
    runner keeps Python's cyclic garbage collector off while the bodies run.)"""

    def __init__(self, machine, check, warmup):
        self.m = machine
        self.check = check
        self.warmup = warmup
        self.phases = {}             # phase -> [ns, ...]
        self.loops = {}              # loop -> [ns per iteration, ...]
        self.iterations = 0
        self.counters = dict.fromkeys(COUNTER_KEYS, 0)
        self.peaks = dict.fromkeys(PEAK_KEYS, 0)
        self._on = False
        self._before = None

    def loop(self, n):
        """Yield `warmup` untimed iterations, then `n` measured ones."""
        for _ in range(self.warmup):
            yield
        self._begin()
        try:
            for _ in range(n):
                yield
        finally:
            self._end()

    def _begin(self):
        self.m.reset_peaks()
        self._before = self.m.stats()
        self._on = True

    def _end(self):
        if not self._on:
            return
        after = self.m.stats()
        self._on = False
        for k in COUNTER_KEYS:
            self.counters[k] += int(after[k]) - int(self._before[k])
        for k in PEAK_KEYS:
            self.peaks[k] = max(self.peaks[k], int(after[k]))

    def add(self, phase, ns):
        if self._on:
            self.phases.setdefault(phase, []).append(ns)

    def done(self, loop, ns):
        """One iteration of `loop` took `ns`; with check=True verify the invariants
        (outside the timed region, warm-up iterations included)."""
        if self._on:
            self.loops.setdefault(loop, []).append(ns)
            self.iterations += 1
        if self.check:
            self.m.check()

    def result(self):
        out = {}
        total = sum(sum(v) for v in self.phases.values())
        out["iterations"] = self.iterations
        out["time_ns"] = int(total)
        out["time_per_iteration_ns"] = int(total // max(1, self.iterations))
        out["phases"] = {k: _summary(v) for k, v in self.phases.items()}
        out["loops"] = {k: _summary(v) for k, v in self.loops.items()}
        out.update(self.counters)
        out.update(self.peaks)
        return out


def _summary(samples):
    return {"count": len(samples), "total_ns": int(sum(samples)),
            "mean_ns": int(sum(samples) // max(1, len(samples))),
            "median_ns": int(statistics.median(samples)) if samples else 0,
            "min_ns": int(min(samples)) if samples else 0}


def _memory_for(frames):
    """Bytes of simulated memory for a run that needs about `frames` frames:
    25% and 4,096 frames of slack, whole MiB, at most 4 GiB."""
    need = int(frames * 1.25) + 4096
    mib = -(-need // 256)
    return min(mib << 20, 4 << 30)


def _pages_array(base, indices):
    """Addresses of pages `indices` (numpy ints) of a mapping at `base`."""
    return (np.asarray(indices, dtype=np.int64) * PAGE + base).astype(np.uint64)


def _spread(n, count, span=1.0, offset=0.0):
    """`count` page indices spread evenly over the first `span` fraction of `n` pages,
    shifted by `offset` (a fraction of the spacing). Sorted and unique."""
    limit = max(1, int(round(n * span)))
    count = max(0, min(count, limit))
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    step = limit / count
    idx = (np.arange(count) * step + offset * step).astype(np.int64) % limit
    return np.unique(idx)


def _image(p, text=0, data=0, heap=0, stack=0, heap_own_table=False):
    """Map and fill a small program image in process `p`, as exec'd programs look:
    text at 0x08048000 (written, then made read-only: it stands for file pages that are
    present), data and heap after it (rw, written), a stack ending at the top of user
    space (rw, written). With heap_own_table the heap starts at the next 4 MiB boundary,
    so data, heap and stack each sit under their own page table. Returns
    {region: (address, pages)} for the regions mapped."""
    regions = {}
    addr = TEXT_BASE
    if text:
        p.mmap(text * PAGE, prot="rw", addr=addr)
        p.touch(addr, text * PAGE, write=True)
        p.mprotect(addr, text * PAGE, "r")
        regions["text"] = (addr, text)
        addr += text * PAGE
    if data:
        p.mmap(data * PAGE, prot="rw", addr=addr)
        p.touch(addr, data * PAGE, write=True)
        regions["data"] = (addr, data)
        addr += data * PAGE
    if heap:
        if heap_own_table:
            addr = (addr + TABLE_SPAN - 1) // TABLE_SPAN * TABLE_SPAN
        p.mmap(heap * PAGE, prot="rw", addr=addr)
        p.touch(addr, heap * PAGE, write=True)
        regions["heap"] = (addr, heap)
        addr += heap * PAGE
    if stack:
        s = USER_TOP - stack * PAGE
        p.mmap(stack * PAGE, prot="rw", addr=s)
        p.touch(s, stack * PAGE, write=True)
        regions["stack"] = (s, stack)
    return regions


def _span_tables(addr, length):
    """Number of page tables spanned by [addr, addr + length)."""
    return ((addr + length - 1) >> 22) - (addr >> 22) + 1


def _tables_of(addrs):
    """Number of distinct page tables (4 MiB spans) holding the given addresses."""
    return int(np.unique(np.asarray(addrs, dtype=np.uint64) >> np.uint64(22)).size)


# --------------------------------------------------------------------------------------
# Workloads. Each body is a generator: it does its set-up, then iterates
# meter.loop(n) (warm-up, then measured iterations), yielding after every iteration so
# that the runner can interleave the configurations; it returns a dict of facts about
# its shape. The runner exits whatever is left and checks for leaks.


def _fork_exit(m, meter, pages, iterations):
    p = m.spawn()
    a = p.mmap(pages * PAGE, prot="rw")
    p.touch(a, pages * PAGE, write=True)
    for _ in meter.loop(iterations):
        t0 = _clock()
        c = p.fork()
        t1 = _clock()
        c.exit()
        t2 = _clock()
        meter.add("fork", t1 - t0)
        meter.add("exit", t2 - t1)
        meter.done("fork+exit", t2 - t0)
        yield
    return {"tables": _span_tables(a, pages * PAGE)}


def _fork_exec(m, meter, iterations, shell_text, shell_data, shell_heap, shell_stack,
               cmd_text, cmd_data, cmd_stack, parent_writes):
    if not 0 <= parent_writes <= shell_stack:
        raise ValueError("parent_writes must be between 0 and shell_stack")
    p = m.spawn()
    shell = _image(p, shell_text, shell_data, shell_heap, shell_stack)
    stack_top_page = USER_TOP - PAGE
    for _ in meter.loop(iterations):
        t0 = _clock()
        c = p.fork()
        t1 = _clock()
        # The parent returns from fork() through its stack before the child runs.
        for i in range(parent_writes):
            p.write(stack_top_page - i * PAGE, b"\x01")
        t2 = _clock()
        c.exec()
        t3 = _clock()
        _image(c, cmd_text, cmd_data, 0, cmd_stack)
        t4 = _clock()
        c.exit()
        t5 = _clock()
        meter.add("fork", t1 - t0)
        meter.add("parent", t2 - t1)
        meter.add("exec", t3 - t2)
        meter.add("image", t4 - t3)
        meter.add("exit", t5 - t4)
        meter.done("fork+exec+exit", t5 - t0)
        yield
    return {"shell_pages": sum(n for _, n in shell.values()),
            "shell_tables": _tables_of([a for a, _ in shell.values()])}


def _snapshot(m, meter, pages, write_fraction, write_span, iterations, chunks):
    p = m.spawn()
    a = p.mmap(pages * PAGE, prot="rw")
    p.touch(a, pages * PAGE, write=True)
    writes = _pages_array(a, _spread(pages, int(round(pages * write_fraction)),
                                     span=write_span))
    bounds = np.linspace(0, pages, chunks + 1).astype(np.int64)
    parts = [writes[i::chunks] for i in range(chunks)]
    for _ in meter.loop(iterations):
        t0 = _clock()
        c = p.fork()
        t1 = _clock()
        tw = tr = 0
        # BGSAVE: the child streams the whole dataset out while the parent keeps
        # serving writes; interleaved in `chunks` steps.
        for i in range(chunks):
            s = _clock()
            if parts[i].size:
                p.touch_pages(parts[i], write=True)
            e = _clock()
            n = int(bounds[i + 1] - bounds[i])
            if n:
                c.touch(a + int(bounds[i]) * PAGE, n * PAGE, write=False)
            f = _clock()
            tw += e - s
            tr += f - e
        t2 = _clock()
        c.exit()
        t3 = _clock()
        meter.add("fork", t1 - t0)
        meter.add("parent_write", tw)
        meter.add("child_read", tr)
        meter.add("exit", t3 - t2)
        meter.done("snapshot", t3 - t0)
        yield
    return {"pages_written": int(writes.size), "tables_written": _tables_of(writes),
            "tables": _span_tables(a, pages * PAGE)}


def _prefork(m, meter, pages, children, write_fraction, iterations):
    p = m.spawn()
    a = p.mmap(pages * PAGE, prot="rw")
    p.touch(a, pages * PAGE, write=True)
    count = int(round(pages * write_fraction))
    # Each child writes its own pages, spread over the whole dataset.
    writes = [_pages_array(a, _spread(pages, count, offset=k / children))
              for k in range(children)]
    for _ in meter.loop(iterations):
        t0 = _clock()
        kids = [p.fork() for _ in range(children)]
        t1 = _clock()
        for c, w in zip(kids, writes):
            if w.size:
                c.touch_pages(w, write=True)
        t2 = _clock()
        for c in kids:
            c.exit()
        t3 = _clock()
        meter.add("fork", t1 - t0)
        meter.add("work", t2 - t1)
        meter.add("exit", t3 - t2)
        meter.done("prefork", t3 - t0)
        yield
    return {"pages_written_per_child": int(writes[0].size),
            "tables_written_per_child": _tables_of(writes[0]) if writes[0].size else 0,
            "tables": _span_tables(a, pages * PAGE)}


def _small_fork(m, meter, iterations, pages_per_area):
    p = m.spawn()
    img = _image(p, 0, pages_per_area, pages_per_area, pages_per_area,
                 heap_own_table=True)
    targets = [img["data"][0], img["heap"][0], img["stack"][0]]
    for _ in meter.loop(iterations):
        t0 = _clock()
        c = p.fork()
        t1 = _clock()
        for t in targets:
            c.write(t, b"\x01")
        t2 = _clock()
        c.exit()
        t3 = _clock()
        meter.add("fork", t1 - t0)
        meter.add("child_write", t2 - t1)
        meter.add("exit", t3 - t2)
        meter.done("small_fork", t3 - t0)
        yield
    return {"tables_written_per_child": _tables_of(targets),
            "pages": 3 * pages_per_area}


def _published(m, meter, big_iterations, small_iterations, parent_stack_write):
    # One program shape, two sizes: text, data, heap and stack; 40 MB and 400 KB
    # touched in all. The parent returns from fork() through its stack (one write)
    # before the child runs, as a real parent does.
    text, data, stack = 40, 20, 8
    big = m.spawn()
    _image(big, text, data, 10240 - text - data - stack, stack)
    small = m.spawn()
    _image(small, text, data, 100 - text - data - stack, stack)
    top = USER_TOP - PAGE

    def once(p, loop, do_exec):
        t0 = _clock()
        c = p.fork()
        t1 = _clock()
        if parent_stack_write:
            p.write(top, b"\x01")
        t2 = _clock()
        if do_exec:
            c.exec()
        t3 = _clock()
        c.exit()
        t4 = _clock()
        meter.add(loop + "/fork", t1 - t0)
        meter.add(loop + "/parent", t2 - t1)
        if do_exec:
            meter.add(loop + "/exec", t3 - t2)
        meter.add(loop + "/exit", t4 - t3)
        meter.done(loop, t4 - t0)

    for _ in meter.loop(big_iterations):
        once(big, "40MB fork+exit", False)
        yield
    for _ in meter.loop(big_iterations):
        once(big, "40MB fork+exec+exit", True)
        yield
    for _ in meter.loop(small_iterations):
        once(small, "400KB fork+exec+exit", True)
        yield
    return {"big_pages": 10240, "small_pages": 100}


class Workload:
    """A named workload: `body(machine, meter, **params)`, its default and quick
    parameters and the frames it needs. Calling it runs it: w(**kw) is
    run_workload(w.name, **kw)."""

    def __init__(self, name, body, defaults, quick, frames, doc, notes=()):
        self.name = name
        self.body = body
        self.defaults = defaults
        self.quick = quick
        self.frames = frames         # params -> frames needed
        self.__doc__ = doc
        self.notes = list(notes)

    def __call__(self, **kw):
        return run_workload(self.name, **kw)

    def __repr__(self):
        return "<workload %s>" % self.name


def _tables_for(pages):
    return pages // 1024 + 4


WORKLOADS = {w.name: w for w in [
    Workload("fork_exit", _fork_exit,
             dict(pages=262144, iterations=50), dict(pages=2048, iterations=5),
             lambda q: q["pages"] + 2 * _tables_for(q["pages"]),
             "A process with `pages` touched pages forks, and the child exits; "
             "repeated `iterations` times."),
    Workload("fork_exec", _fork_exec,
             dict(iterations=5000, shell_text=64, shell_data=16, shell_heap=32,
                  shell_stack=8, cmd_text=16, cmd_data=4, cmd_stack=4, parent_writes=1),
             dict(iterations=100, shell_text=64, shell_data=16, shell_heap=32,
                  shell_stack=8, cmd_text=16, cmd_data=4, cmd_stack=4, parent_writes=1),
             lambda q: 2 * (q["shell_text"] + q["shell_data"] + q["shell_heap"]
                            + q["shell_stack"] + q["cmd_text"] + q["cmd_data"]
                            + q["cmd_stack"]) + 64,
             "A shell (text r, data, heap, stack rw at the top of user space) forks; "
             "the parent returns through its stack (`parent_writes` stack pages "
             "written), the child exec()s, maps and writes a small command image "
             "and exits; repeated."),
    Workload("snapshot", _snapshot,
             dict(pages=262144, write_fraction=0.1, write_span=1.0, iterations=8,
                  chunks=8),
             dict(pages=4096, write_fraction=0.1, write_span=1.0, iterations=2,
                  chunks=4),
             lambda q: (q["pages"] + int(q["pages"] * q["write_fraction"])
                        + 2 * _tables_for(q["pages"])),
             "Redis BGSAVE: a parent with `pages` touched pages forks; the child "
             "reads every page and exits while the parent writes `write_fraction` "
             "of its pages, spread evenly over the first `write_span` of them; "
             "interleaved in `chunks` steps; repeated."),
    Workload("prefork", _prefork,
             dict(pages=65536, children=8, write_fraction=0.05, iterations=8),
             dict(pages=2048, children=4, write_fraction=0.05, iterations=2),
             lambda q: (q["pages"] * (1 + q["children"] * q["write_fraction"])
                        + (q["children"] + 1) * _tables_for(q["pages"])),
             "A server with `pages` touched pages forks `children` children; each "
             "writes its own `write_fraction` of the pages, spread over all of "
             "them; then all exit; repeated."),
    Workload("small_fork", _small_fork,
             dict(iterations=10000, pages_per_area=4),
             dict(iterations=1000, pages_per_area=4),
             lambda q: 6 * q["pages_per_area"] + 64,
             "A small process (data, heap and stack, each under its own page table, "
             "`pages_per_area` pages each) forks; the child writes once under each "
             "table and exits. The case where sharing was reported slower: every "
             "child unshares every table it writes."),
    Workload("published", _published,
             dict(big_iterations=300, small_iterations=10000, parent_stack_write=True),
             dict(big_iterations=20, small_iterations=200, parent_stack_write=True),
             lambda q: 10240 + 100 + 2 * 64,
             "The shapes of the published measurements (McCracken 2002, Linus 2002), "
             "with the published figures beside the simulator's ratios.",
             notes=["2.5.41 carried rmap (pte_chains): McCracken's before/after pair "
                    "corresponds to copy+rmap -> share+rmap; share/copy is shown too.",
                    "Published milliseconds are 2002 hardware; compare ratios only.",
                    "Program: 40 pages text, 20 data, heap, 8 stack; 10,240 pages "
                    "(40 MB) or 100 pages (400 KB) touched in all."]),
]}


# --------------------------------------------------------------------------------------
# Runner


def run_workload(name, configs=None, quick=False, check=False, memory=None, warmup=2,
                 interleave=True, **params):
    """Run workload `name` in each configuration of `configs` (names from CONFIGS,
    default all four) with its default parameters (its quick ones with quick=True),
    overridden by `params`. Each measured loop is preceded by `warmup` iterations that
    are neither timed nor counted. With interleave=True (the default) the
    configurations take turns, one iteration each, so that drift of the host (CPU
    frequency, caches, other load) falls on all of them alike; interleave=False runs
    them one after the other, with one machine alive at a time. With check=True,
    Machine.check() runs after every iteration (untimed) and after the final teardown.
    `memory` overrides the simulated memory size. Returns the dict described in the
    module docstring."""
    if name not in WORKLOADS:
        raise ValueError("unknown workload %r (one of %s)" % (name, ", ".join(WORKLOADS)))
    w = WORKLOADS[name]
    q = dict(w.quick if quick else w.defaults)
    unknown = set(params) - set(q)
    if unknown:
        raise TypeError("workload %s has no parameter %s (it takes %s)"
                        % (name, ", ".join(sorted(unknown)), ", ".join(q)))
    q.update(params)
    if configs is None:
        configs = list(CONFIGS)
    elif isinstance(configs, str):
        configs = [configs]
    for c in configs:
        if c not in CONFIGS:
            raise ValueError("unknown configuration %r (one of %s)"
                             % (c, ", ".join(CONFIGS)))
    if warmup < 0:
        raise ValueError("warmup must not be negative")
    mem = memory if memory is not None else _memory_for(w.frames(q))
    out = {"workload": name,
           "params": dict(q, quick=bool(quick), warmup=warmup, interleave=interleave),
           "notes": list(w.notes), "info": {}, "configs": {}}
    groups = [list(configs)] if interleave else [[c] for c in configs]
    for group in groups:
        out["info"] = _run_group(w, group, q, mem, check, warmup, out["configs"])
    if name == "published":
        out["published"] = _published_rows(out)
    return out


def _run_group(w, configs, q, mem, check, warmup, results):
    """Run `configs` of workload `w` side by side, one iteration each in turn; store
    each configuration's result in `results`; return the workload's info."""
    runs = {}
    for c in configs:
        fork_mode, rmap = CONFIGS[c]
        m = Machine(memory=mem, fork_mode=fork_mode, rmap=rmap)
        meter = _Meter(m, check, warmup)
        runs[c] = (m, meter, w.body(m, meter, **q))
    info = {}
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        active = list(configs)
        while active:
            for c in list(active):
                try:
                    next(runs[c][2])
                except StopIteration as stop:
                    info = stop.value or {}
                    active.remove(c)
    finally:
        if gc_was:
            gc.enable()
    for c in configs:
        fork_mode, rmap = CONFIGS[c]
        m, meter, _ = runs.pop(c)
        r = {"fork_mode": fork_mode, "rmap": rmap, "memory": int(mem)}
        r.update(meter.result())
        for p in list(m.processes):
            p.exit()
        if check:
            m.check()
        r["leaked_frames"] = int(m.stats()["frames_used"]) - int(m.boot_frames)
        results[c] = r
    return info


def _sim_ms(cfg, measure):
    """Median milliseconds of one operation of a published shape in one config."""
    loop, phase = measure
    if phase is None:
        s = cfg["loops"].get(loop)
    else:
        s = cfg["phases"].get(loop + "/" + phase)
    return None if not s else s["median_ns"] / 1e6


def _published_rows(res):
    cfgs = res["configs"]
    rows = []
    for pub in PUBLISHED:
        row = {"shape": pub["shape"], "published_before_ms": pub["before_ms"],
               "published_after_ms": pub["after_ms"],
               "published_ratio": pub["after_ms"] / pub["before_ms"],
               "source": pub["source"], "sim_ms": {}, "sim_ratio": {}}
        for c in cfgs:
            row["sim_ms"][c] = _sim_ms(cfgs[c], pub["measure"])
        for after, before in (("share", "copy"), ("share+rmap", "copy+rmap")):
            a, b = row["sim_ms"].get(after), row["sim_ms"].get(before)
            if a is not None and b:
                row["sim_ratio"][after + "/" + before] = a / b
        rows.append(row)
    pub = PUBLISHED_RMAP_FORK
    row = {"shape": pub["shape"], "published_ratio": pub["ratio"],
           "published_text": pub["ratio_text"], "source": pub["source"],
           "sim_ms": {c: _sim_ms(cfgs[c], pub["measure"]) for c in cfgs},
           "sim_ratio": {}}
    a, b = row["sim_ms"].get("copy+rmap"), row["sim_ms"].get("copy")
    if a is not None and b:
        row["sim_ratio"]["copy+rmap/copy"] = a / b
    a, b = row["sim_ms"].get("share+rmap"), row["sim_ms"].get("share")
    if a is not None and b:
        row["sim_ratio"]["share+rmap/share"] = a / b
    rows.append(row)
    return rows


# --------------------------------------------------------------------------------------
# Formatting


def _fmt_ns(ns, unit):
    div = {"ms": 1e6, "us": 1e3, "ns": 1.0}[unit]
    v = ns / div
    return "%.3f" % v if v < 10 else "%.1f" % v if v < 1000 else "%.0f" % v


def _unit_for(values):
    top = max([v for v in values if v] or [0])
    return "ms" if top >= 1e6 else "us" if top >= 1e3 else "ns"


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate([header] + rows):
        cells = [str(r[0]).ljust(widths[0])]
        cells += [str(x).rjust(widths[i + 1]) for i, x in enumerate(r[1:])]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_results(results):
    """A readable table of one run_workload() result (or a list of them)."""
    if isinstance(results, (list, tuple)):
        return "\n\n".join(format_results(r) for r in results)
    cfgs = results["configs"]
    names = list(cfgs)
    params = ", ".join("%s=%s" % kv for kv in results["params"].items())
    out = ["workload %s  (%s)" % (results["workload"], params)]
    if results.get("info"):
        out.append("  " + ", ".join("%s=%s" % kv for kv in results["info"].items()))
    header = ["", *names]
    rows = []

    def timing_row(label, values):
        unit = _unit_for(values)
        rows.append(["%s (%s)" % (label, unit)]
                    + [_fmt_ns(v, unit) if v is not None else "-" for v in values])

    timing_row("time total", [cfgs[c]["time_ns"] for c in names])
    base = cfgs.get("copy", cfgs[names[0]])["time_ns"]
    base_name = "copy" if "copy" in cfgs else names[0]
    rows.append(["time vs %s" % base_name]
                + ["%.2fx" % (cfgs[c]["time_ns"] / base) if base else "-" for c in names])
    rows.append(["iterations"] + [cfgs[c]["iterations"] for c in names])
    loops = list(cfgs[names[0]]["loops"])
    for lp in loops:
        timing_row("%s median" % lp,
                   [cfgs[c]["loops"].get(lp, {}).get("median_ns") for c in names])
    for ph in cfgs[names[0]]["phases"]:
        timing_row("  %s mean" % ph,
                   [cfgs[c]["phases"].get(ph, {}).get("mean_ns") for c in names])
    for k in COUNTER_KEYS + PEAK_KEYS + ("leaked_frames",):
        rows.append([k] + [cfgs[c][k] for c in names])
    out.append(_table(header, rows))
    if results.get("published"):
        out.append("")
        out.append("published figures beside the simulator's (ratios: after/before; "
                   "simulator times are medians of this run)")
        prow = []
        for r in results["published"]:
            if "published_before_ms" in r:
                pub = "%.1f -> %.1f ms = %.2fx" % (r["published_before_ms"],
                                                  r["published_after_ms"],
                                                  r["published_ratio"])
            else:
                pub = r["published_text"]
            sim = []
            for k, v in r["sim_ratio"].items():
                sim.append("%s %.2fx" % (k, v))
            ms = " ".join("%s=%s" % (c, "%.3g" % (v * 1e3) if v is not None else "-")
                          for c, v in r["sim_ms"].items())
            prow.append([r["shape"], pub, "; ".join(sim) or "-", ms])
        out.append(_table(["shape", "published", "simulator ratio",
                           "simulator us (median)"], prow))
        srcs = []
        for r in results["published"]:
            if r["source"] not in srcs:
                srcs.append(r["source"])
        out.extend("source: " + s for s in srcs)
    for n in results.get("notes", ()):
        out.append("note: " + n)
    return "\n".join(out)


if __name__ == "__main__":       # python -m lazyvm.workloads [name ...] [--quick]
    import sys
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    quick = "--quick" in sys.argv
    for n in args or list(WORKLOADS):
        print(format_results(run_workload(n, quick=quick)))
        print()
