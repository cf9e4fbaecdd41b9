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

    >>> from lazyvm.report.run import format_results
    >>> from lazyvm.workloads.builtin import run_workload
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

Every number lazyvm.report.run.format_results prints is measured in that run, or quoted as published
with its source (see ``PUBLISHED``); the simulator's milliseconds are its own and are
never compared with 2002 hardware, only the ratios are.
"""

import numpy as np

from .. import Machine
from .. import costs as _costs
from ..layout import LAYOUTS, PAGE_SIZE as PAGE, TEXT_BASE
from ..machine import CONFIGS
from ..measure import host as _m
from ..measure import published
from ..report.run import COUNTER_KEYS, PEAK_KEYS
from .external import EXTERNAL, External, check_external_params  # noqa: F401 (the registry's)

__all__ = ["CONFIGS", "COUNTER_KEYS", "PEAK_KEYS", "PUBLISHED", "WORKLOADS", "EXTERNAL",
           "run_workload", "check_params", "check_external_params",
           "predicted"]

TABLE_SPAN = LAYOUTS["i386"].table_span(1)   # bytes mapped by one page table
USER_TOP = LAYOUTS["i386"].task_size   # TASK_SIZE

_clock = _m.clock

# --------------------------------------------------------------------------------------
# Published figures: quoted, never computed (lazyvm.measure.published holds them).

PUBLISHED = [
    # shape, baseline ms, with shared tables ms, what the simulator compares, source
    dict(shape=s["shape"], before_ms=s["before_ms"], after_ms=s["after_ms"],
         measure=(loop, phase), source=published.MCCRACKEN_SOURCE)
    for s, (loop, phase) in zip(published.MCCRACKEN_SHAPES, [
        ("40MB fork+exit", "fork"), ("40MB fork+exit", None),
        ("40MB fork+exec+exit", None), ("400KB fork+exec+exit", None)])
]
# Linus' figure is a ratio only: fork with rmap about 300% slower, i.e. about 4x.
PUBLISHED_RMAP_FORK = {"shape": "rmap fork overhead (copy+rmap / copy)",
                       "ratio_text": "~4x (\"~300%\" slower)",
                       "ratio": published.RMAP_FORK_OVERHEAD,
                       "measure": ("40MB fork+exit", "fork"), "source": published.LINUS_SOURCE}


# --------------------------------------------------------------------------------------
# Measurement


class _Meter:
    """Times phases and iterations of one configuration's run and diffs its counters.

    A body iterates ``for _ in meter.loop(n)``: first ``warmup`` iterations that are
    neither timed nor counted (they bring the machine to its steady state: chains
    already built, free frames already backed by host memory), then `n` measured ones.
    The counters are summed and the peaks maxed over the measured segments. (The
    runner keeps Python's cyclic garbage collector off while the bodies run.)

    With ``settle`` a loop whose per-iteration times have a wide spread
    (lazyvm.measure.host.WIDE) runs `n` more iterations, again while it stays wide, up to
    lazyvm.measure.host.MAX_FACTOR times `n`; ``settled`` records per loop the iterations
    added and whether the spread narrowed."""

    def __init__(self, machine, check, warmup, settle=False):
        self.m = machine
        self.check = check
        self.warmup = warmup
        self.settle = settle
        self.settled = {}            # loop -> {"extra": iterations added, "settled"}
        self._last = None            # the loop of the latest done()
        self.phases = {}             # phase -> [ns, ...]
        self.loops = {}              # loop -> [ns per iteration, ...]
        self.iterations = 0
        self.counters = dict.fromkeys(COUNTER_KEYS, 0)
        self.asked = {}              # loop -> iterations asked for (without settle's)
        self.loop_counters = {}      # loop -> {counter: difference over its iterations}
        self._seg = None             # the loop of the measured segment under way
        self.peaks = dict.fromkeys(PEAK_KEYS, 0)
        self._on = False
        self._before = None

    def loop(self, n):
        """Yield `warmup` untimed iterations, then `n` measured ones (and more while
        their spread is wide, with ``settle``)."""
        for _ in range(self.warmup):
            yield
        self._begin()
        self._seg = None
        try:
            done, limit = 0, n
            while done < limit:
                yield
                done += 1
                if done == limit and self.settle and self._last in self.loops:
                    wide = _m.spread(self.loops[self._last])["wide"]
                    if wide and limit + n <= _m.MAX_FACTOR * n:
                        limit += n
                    elif self._last not in self.settled:
                        self.settled[self._last] = {"extra": limit - n,
                                                    "settled": not wide}
        finally:
            self._end()
            if self._seg is not None:
                self.asked[self._seg] = self.asked.get(self._seg, 0) + n

    def _begin(self):
        self.m.reset_peaks()
        self._before = self.m.stats()
        self._on = True

    def _end(self):
        if not self._on:
            return
        after = self.m.stats()
        self._on = False
        seg = self.loop_counters.setdefault(self._seg, dict.fromkeys(COUNTER_KEYS, 0))
        for k in COUNTER_KEYS:
            d = int(after[k]) - int(self._before[k])
            self.counters[k] += d
            seg[k] += d
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
            self._last = loop
            self._seg = loop
        if self.check:
            self.m.check()

    def result(self):
        out = {}
        total = sum(sum(v) for v in self.phases.values())
        out["iterations"] = self.iterations
        out["time_ns"] = int(total)
        out["iterations_asked"] = sum(self.asked.values())
        out["time_per_iteration_ns"] = self._per_iteration_time()
        out["per_iteration"] = self._per_iteration_counts()
        out["phases"] = {k: _summary(v) for k, v in self.phases.items()}
        out["loops"] = {k: _summary(v) for k, v in self.loops.items()}
        out.update(self.counters)
        out.update(self.peaks)
        if self.settle:
            out["settle"] = self.settled
        return out


    def _weights(self):
        """{loop: (iterations run, iterations asked)}: a loop that ran more iterations
        for a wide spread weighs in per iteration, as often as it was asked for."""
        return {lp: (len(self.loops.get(lp, ())), self.asked[lp]) for lp in self.asked
                if self.loops.get(lp)}

    def _per_iteration_time(self):
        """ns of one iteration of the workload as asked: each loop's median time per
        iteration, weighted by the iterations asked of it (a median, so that an
        outlier iteration does not move it)."""
        w = self._weights()
        asked = sum(a for _, a in w.values())
        if not asked:
            return 0
        return int(round(sum(_m.spread(self.loops[lp])["median"] * a
                             for lp, (_, a) in w.items()) / asked))

    def _per_iteration_counts(self):
        """{counter: float}: each counter per iteration of the workload as asked (each
        loop's difference divided by the iterations it ran, weighted by the iterations
        asked of it), so that configurations which ran different numbers of iterations
        compare like with like."""
        w = self._weights()
        asked = sum(a for _, a in w.values())
        out = {}
        for k in COUNTER_KEYS:
            v = sum(self.loop_counters[lp][k] / ran * a for lp, (ran, a) in w.items()
                    if lp in self.loop_counters)
            out[k] = (v / asked) if asked else 0.0
        return out


def _summary(samples):
    """count, total and mean of a phase's or loop's samples, and their spread: median,
    quartiles, extremes (ns, integers) and whether it is wide (lazyvm.measure.host.WIDE)."""
    out = {"count": len(samples), "total_ns": int(sum(samples)),
           "mean_ns": int(sum(samples) // max(1, len(samples)))}
    if samples:
        s = _m.spread(samples)
        out.update({"median_ns": int(s["median"]), "q1_ns": int(s["q1"]),
                    "q3_ns": int(s["q3"]), "min_ns": int(s["min"]),
                    "max_ns": int(s["max"]), "wide": bool(s["wide"])})
    else:
        out.update(dict.fromkeys(("median_ns", "q1_ns", "q3_ns", "min_ns", "max_ns"), 0),
                   wide=False)
    return out


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

    def __init__(self, name, body, defaults, quick, frames, doc, notes=(), sweep=None,
                 scenario=None):
        self.name = name
        # The workload's shape as `lazyvm show` draws it: the steps of one iteration at
        # a size the picture can hold (lazyvm.view's scenario format), or None.
        self.scenario = None if scenario is None else {
            "title": f"{name}: one iteration, small", "about": " ".join(doc.split()),
            "machine": {"memory": "16M"}, "step": scenario}
        # What a point of `lazyvm sweep` does between its fork and the child's exit:
        # "child" (the child writes), "parent" (the parent writes while the child
        # lives) or "exec" (the child execs); None: the workload is not swept.
        self.sweep = sweep
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
             "repeated `iterations` times.", sweep="child",
             scenario=[{"do": "spawn", "as": "p"},
                       {"do": "mmap", "proc": "p", "length": "32k", "as": "a"},
                       {"do": "write", "proc": "p", "at": "a", "pages": 8,
                        "title": "the parent touches its pages"},
                       {"do": "fork", "proc": "p", "as": "c", "title": "fork"},
                       {"do": "exit", "proc": "c", "title": "the child exits"}]),
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
             "and exits; repeated.", sweep="exec",
             scenario=[{"do": "spawn", "as": "p"},
                       {"do": "mmap", "proc": "p", "length": "16k", "as": "a"},
                       {"do": "write", "proc": "p", "at": "a", "pages": 4,
                        "title": "the shell's pages"},
                       {"do": "fork", "proc": "p", "as": "c", "title": "fork"},
                       {"do": "write", "proc": "p", "at": "a", "page": 3,
                        "title": "the parent returns through its stack"},
                       {"do": "exec", "proc": "c", "title": "the child execs"},
                       {"do": "exit", "proc": "c", "title": "the command exits"}]),
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
             "interleaved in `chunks` steps; repeated.", sweep="parent",
             scenario=[{"do": "spawn", "as": "p"},
                       {"do": "mmap", "proc": "p", "length": "32k", "as": "a"},
                       {"do": "write", "proc": "p", "at": "a", "pages": 8,
                        "title": "the dataset"},
                       {"do": "fork", "proc": "p", "as": "c", "title": "fork (BGSAVE)"},
                       {"do": "touch", "proc": "c", "at": "a", "pages": 8,
                        "write": False, "title": "the child reads every page"},
                       {"do": "write", "proc": "p", "at": "a", "page": 2,
                        "title": "the parent writes one page"},
                       {"do": "exit", "proc": "c", "title": "the child exits"}]),
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


def _at_least(key):
    """The smallest value an integer parameter may take: 1 for counts of things the
    workload needs at least one of, else 0."""
    if key in ("pages", "children", "chunks", "pages_per_area") or "iterations" in key:
        return 1
    return 0


def check_params(name, params, quick=False, layout="i386"):
    """The parameters workload `name` would run with: its defaults (its quick ones with
    quick=True) overridden by `params`, each checked for its name, type and range, and
    the whole for the memory it needs.  Raises ValueError with a one-line message naming
    the parameter and what it takes."""
    if name not in WORKLOADS:
        raise ValueError("no workload %r; try: lazyvm run --list" % (name,))
    w = WORKLOADS[name]
    q = dict(w.quick if quick else w.defaults)
    for key, value in params.items():
        if key not in q:
            raise ValueError("workload %s has no parameter %r (it takes %s)"
                             % (name, key, ", ".join(q)))
        default = q[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
            want = "True or False"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "an integer >= %d" % _at_least(key)
            ok = ok and value >= _at_least(key)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number from 0 to 1"
            ok = ok and 0 <= value <= 1 and not (key == "write_span" and value == 0)
            if key == "write_span":
                want = "a number above 0, at most 1"
        if not ok:
            raise ValueError("parameter %s=%r of workload %s: must be %s"
                             % (key, value, name, want))
        q[key] = value
    if name == "fork_exec" and q["parent_writes"] > q["shell_stack"]:
        raise ValueError("parameter parent_writes=%d of workload fork_exec: at most "
                         "shell_stack (%d)" % (q["parent_writes"], q["shell_stack"]))
    user_pages, max_memory = _m.layout_limits(layout)
    if q.get("pages", 0) > user_pages:
        raise ValueError("parameter pages=%d of workload %s: at most %d (the user space "
                         "of %s)" % (q["pages"], name, user_pages, layout))
    need = int(w.frames(q) * 1.25) * PAGE
    if need > max_memory:
        raise ValueError("workload %s with these parameters needs about %d MiB of "
                         "simulated memory, more than %s's %d MiB"
                         % (name, need >> 20, layout, max_memory >> 20))
    _m.check_host_memory(need, "workload %s with these parameters" % name)
    return q


def run_workload(name, configs=None, quick=False, check=False, memory=None, warmup=2,
                 interleave=True, layout="i386", share_level=1, settle=False, costs=None,
                 **params):
    """Run workload `name` in each configuration of `configs` (names from CONFIGS,
    default all four) with its default parameters (its quick ones with quick=True),
    overridden by `params`. Each measured loop is preceded by `warmup` iterations that
    are neither timed nor counted. With interleave=True (the default) the
    configurations take turns, one iteration each, so that drift of the host (CPU
    frequency, caches, other load) falls on all of them alike; interleave=False runs
    them one after the other, with one machine alive at a time. With check=True,
    Machine.check() runs after every iteration (untimed) and after the final teardown.
    With settle=True a loop whose times spread wide runs more iterations (see _Meter;
    `lazyvm run` does this), so its counts are no longer exact multiples of the
    iterations asked for. `memory` overrides the simulated memory size; `layout` and
    `share_level` go to
    Machine (lazyvm.measure.host.machine_options). With `costs` (a cost profile: a name, a
    path or a lazyvm.costs.Profile) the result also has "predicted" (see `predicted`):
    the counts of each configuration priced by the profile.  Returns the dict described
    in the module docstring.  Raises ValueError for a parameter check_params refuses (or
    a profile that does not load), TypeError for one the workload does not have."""
    profile = _costs.load_profile(costs) if costs is not None else None
    if name not in WORKLOADS:
        raise ValueError("unknown workload %r (one of %s)" % (name, ", ".join(WORKLOADS)))
    w = WORKLOADS[name]
    defaults = w.quick if quick else w.defaults
    unknown = set(params) - set(defaults)
    if unknown:
        raise TypeError("workload %s has no parameter %s (it takes %s)"
                        % (name, ", ".join(sorted(unknown)), ", ".join(defaults)))
    q = check_params(name, params, quick, layout)
    options = _m.machine_options(layout, share_level)
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
    mem = memory if memory is not None else _m.memory_for(w.frames(q), layout)
    out = {"workload": name,
           "params": dict(q, quick=bool(quick), warmup=warmup, interleave=interleave,
                          layout=layout, share_level=share_level, settle=settle),
           "notes": list(w.notes), "info": {}, "configs": {}}
    groups = [list(configs)] if interleave else [[c] for c in configs]
    for group in groups:
        out["info"] = _run_group(w, group, q, mem, check, warmup, out["configs"],
                                 options, settle)
    if name == "published":
        out["published"] = _published_rows(out)
    if profile is not None:
        out["predicted"] = predicted(out, profile)
    return out


def predicted(results, profile):
    """The predicted kernel time of each configuration of a run_workload result: its
    measured-run counts (COUNTER_KEYS) priced by `profile`.  Returns {"profile",
    "profile_description", "configs": {config: lazyvm.costs.predict() + "ratio_vs_copy"},
    "share_rmap_over_copy_rmap" (None without both), "spread"}.  The counts are exact,
    so the figures are too: the same counts always give the same prediction."""
    prof = _costs.load_profile(profile)
    cfgs = _costs.predict_configs(results["configs"], prof, base="copy")
    a, b = cfgs.get("share+rmap"), cfgs.get("copy+rmap")
    return {"profile": prof.name, "profile_description": prof.description,
            "configs": cfgs,
            "share_rmap_over_copy_rmap": (
                a["kernel_ns_per_iteration"] / b["kernel_ns_per_iteration"]
                if a and b and b["kernel_ns_per_iteration"] else None),
            "spread": "none: the counts are exact and deterministic, so the prediction "
                      "is; kernel_ns_se is the profile's own uncertainty"}


def _run_group(w, configs, q, mem, check, warmup, results, options=None, settle=False):
    """Run `configs` of workload `w` side by side, one iteration each in turn; store
    each configuration's result in `results`; return the workload's info."""
    runs = {}
    for c in configs:
        fork_mode, rmap = CONFIGS[c]
        m = Machine(memory=mem, fork_mode=fork_mode, rmap=rmap, **(options or {}))
        meter = _Meter(m, check, warmup, settle)
        runs[c] = (m, meter, w.body(m, meter, **q))
    info = {}
    with _m.gc_off():
        active = list(configs)
        while active:
            for c in list(active):
                try:
                    next(runs[c][2])
                except StopIteration as stop:
                    info = stop.value or {}
                    active.remove(c)
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


def _sim_summary(cfg, measure):
    """The summary (median, quartiles, ns) of one operation of a published shape in one
    config, or None."""
    loop, phase = measure
    if phase is None:
        return cfg["loops"].get(loop)
    return cfg["phases"].get(loop + "/" + phase)


def _sim_ratio(a, b):
    """a / b of two summaries, with its range from their quartiles (lazyvm.measure.host.ratio)."""
    if not a or not b or not b["median_ns"]:
        return None
    def sp(x):
        return {"median": x["median_ns"], "q1": x["q1_ns"], "q3": x["q3_ns"]}
    return _m.ratio(sp(a), sp(b))


def _published_rows(res):
    """Each published figure beside the simulator's: its median times (ms) per config
    ("sim_ms") and its ratios with their ranges ("sim_ratio": {"a/b": {"ratio", "lo",
    "hi"}})."""
    cfgs = res["configs"]
    rows = []
    pairs = (("share", "copy"), ("share+rmap", "copy+rmap"))
    for pub in PUBLISHED + [PUBLISHED_RMAP_FORK]:
        if "before_ms" in pub:
            row = {"shape": pub["shape"], "published_before_ms": pub["before_ms"],
                   "published_after_ms": pub["after_ms"],
                   "published_ratio": pub["after_ms"] / pub["before_ms"]}
        else:
            row = {"shape": pub["shape"], "published_ratio": pub["ratio"],
                   "published_text": pub["ratio_text"]}
            pairs = (("copy+rmap", "copy"), ("share+rmap", "share"))
        row.update(source=pub["source"], sim_ms={}, sim_ratio={})
        summ = {c: _sim_summary(cfgs[c], pub["measure"]) for c in cfgs}
        for c, sm in summ.items():
            row["sim_ms"][c] = None if not sm else sm["median_ns"] / 1e6
        for after, before in pairs:
            r = _sim_ratio(summ.get(after), summ.get(before))
            if r is not None:
                row["sim_ratio"][after + "/" + before] = r
        rows.append(row)
    return rows
