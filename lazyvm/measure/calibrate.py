"""`lazyvm calibrate`: this machine's kernel costs, measured with real processes.

The calibration forks real child processes holding shapes chosen to separate the
costs, times them, and fits the times by least squares (numpy lstsq) to the counts of
what the kernel does for them; the fitted coefficients, each with its standard error,
become the "host" cost profile (lazyvm.costs), written to the user cache directory.

The process that forks (the *worker*) is lazyvm/measure/worker.py run as a script with
``python -I -S``: standard library only, no threads, a few dozen VMAs.  It still is not
a minimal process, so every fork is reported with the counts of what the kernel copies
for it, read from /proc/self/smaps and /proc/self/pagemap just before:

    V  VMAs (every line of /proc/self/maps but [vsyscall], which is not in the mm)
    P  present PTEs in the VMAs fork copies (since Linux 2.6.14 only those with an
       anon_vma, or PFN/mixed maps: smaps "Anonymous" > 0 or VmFlags pf/mm)
    T  page tables below the pgd those PTEs sit in (PTE tables: distinct 2 MiB
       regions; PMD tables: distinct 1 GiB regions; PUD tables: distinct 512 GiB)

and the fit regresses the times on (1, V, A, P, T), A being the VMAs with an anon_vma
(fork also duplicates their anon_vma chain): its intercept is the fork of a process
with no VMA, no PTE and no table, i.e. the fixed cost lazyvm adds per fork.  Each shape
contributes the minimum over its repeats (interference from the host's other work only
adds time).

Shapes (private anonymous memory, MAP_PRIVATE|MAP_ANONYMOUS, MADV_NOHUGEPAGE, written
one byte per page; never mmap.mmap(-1, n), which is MAP_SHARED and whose PTEs fork skips):
bare; dense pages (per PTE); one page per 2 MiB (per table); many one-page VMAs, left
untouched (per VMA); the fault passes (demand-zero, zero page, copy-on-write, reuse,
shmem) and munmap.  The child's exit is timed from the fork's return until the child is
reaped and regressed on the same counts (per PTE zapped, per table freed, per VMA).
`--validate` times held-out shapes (dense, sparse, mixed VMAs, 1 GiB) and prints
predicted against measured fork CPU and wall time.

The convention is cold: before each timed fork the worker reads a MAP_SHARED buffer of
twice the last-level cache (worker.llc_bytes, from sysfs), so small forks find their
tables and struct pages out of the cache as large ones do (--quick skips it).  The fixed
cost is measured in a minimal process, a static C helper (HELPER_C, compiled with the
host's cc) whose forks are a row of the fork regression with the interpreter's overhead
in a column of its own; without a compiler the intercept comes from the worker's fit,
its covariance with the slopes kept in the profile.  Each fork is timed in CPU and wall
time; their ratio, the run's stretch (fit.stretch_of), is recorded in the profile for
every comparison with a wall-clock figure.  Every figure is a minimum over repeats, its
uncertainty the bootstrap's.

pte_chains (2.5/2.6.0 rmap) exist in no modern kernel: their costs are derived from two
primitives measured here, a dependent cache miss (a pointer chase over a buffer larger
than the last-level cache, minus the same chase inside L1) and a 64-byte line write,
following Morton 2002 ("an extra two cache misses per page": one when fork adds the
slot, one when exit removes it).  Sharing page tables exists in no released kernel
either: its per-table costs are derived from the same primitives (the profile's
``source`` says how, event by event).

"""
import json
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .. import Machine
from ..costs import EVENTS, FORMAT_VERSION, Profile, event_covariance, host_profile_path
from . import worker
from .fit import CalibrationError, fit_nonneg, predict_fork_ns, stretch, stretch_of
from .host import machine_description
from ..layout import PAGE_SIZE as PAGE
from .worker import REGION


# ======================================================================================
# The fixed cost of a fork, measured in a minimal process: a small static C program.

HELPER_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

static long long ns(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* usage: helper FORKS EVICT_BYTES.  Prints "ready", waits for a line on stdin (the
   caller reads /proc/PID/smaps and pagemap meanwhile), then forks FORKS + 1 times
   (the first a warm-up), each child _exit(0)ing at once, and prints per fork the
   forking thread's CPU ns and the wall ns across fork(). */
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    size_t evict = argc > 2 ? (size_t)atoll(argv[2]) : 0;
    volatile unsigned char *buf = NULL;
    char line[16];
    if (evict) {
        buf = mmap(NULL, evict, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) return 2;
        for (size_t i = 0; i < evict; i += 4096) buf[i] = 1;
    }
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) return 3;
    for (int k = 0; k <= n; k++) {
        unsigned long sum = 0;
        if (buf) for (size_t i = 0; i < evict; i += 64) sum += buf[i];
        long long c0 = ns(CLOCK_THREAD_CPUTIME_ID), w0 = ns(CLOCK_MONOTONIC);
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        long long c1 = ns(CLOCK_THREAD_CPUTIME_ID), w1 = ns(CLOCK_MONOTONIC);
        if (pid < 0) return 4;
        int status;
        waitpid(pid, &status, 0);
        if (k) printf("%lld %lld %lu\n", c1 - c0, w1 - w0, sum & 1);
    }
    return 0;
}
"""


def build_helper(directory):
    """Compile HELPER_C with the host's C compiler (cc -static -O2, else dynamic -O2)
    into `directory`.  Returns (path, how) or (None, why not)."""
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None, "no C compiler (cc, gcc, clang) on PATH"
    src = os.path.join(directory, "forkfixed.c")
    exe = os.path.join(directory, "forkfixed")
    with open(src, "w") as f:
        f.write(HELPER_C)
    errors = []
    for how, flags in (("static", ["-static", "-O2"]), ("dynamic", ["-O2"])):
        r = subprocess.run([cc, *flags, "-o", exe, src], capture_output=True, text=True)
        if r.returncode == 0:
            return exe, f"{os.path.basename(cc)} {' '.join(flags)} ({how})"
        errors.append((r.stderr.strip().splitlines() or ["?"])[-1])
    return None, "the C compiler failed: " + "; ".join(errors)


def run_helper(exe, forks, evict=0, timeout=120):
    """Run the compiled helper: its (V, A, P, T) read from /proc while it waits, and
    the CPU and wall ns of each of its `forks` forks."""
    import subprocess
    proc = subprocess.Popen([exe, str(forks), str(evict)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise CalibrationError("the fork helper did not start")
        v, a, p, t = worker.counts(proc.pid)
        out, _ = proc.communicate("go\n", timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise CalibrationError(f"the fork helper failed (status {proc.returncode})")
    cpu, wall = [], []
    for line in out.splitlines():
        c, w, _ = line.split()
        cpu.append(int(c))
        wall.append(int(w))
    return {"name": "C helper", "V": v, "A": a, "P": p, "T": t, "fork_ns": cpu,
            "fork_wall_ns": wall}


# ======================================================================================
# The calibration proper.

FIT_SHAPES = [                              # (name, shape) regressed on (1, V, A, P, T)
    ("bare", {}),
    ("dense 4096", {"dense": 4096}),
    ("dense 16384", {"dense": 16384}),
    ("dense 65536", {"dense": 65536}),
    ("dense 131072", {"dense": 131072}),      # 512 MiB
    ("dense 524288", {"dense": 524288}),      # 2 GiB
    ("sparse 256", {"sparse": 256}),
    ("sparse 1024", {"sparse": 1024}),
    ("sparse 2048", {"sparse": 2048}),
    ("vmas 1000", {"vmas": 1000}),
    ("vmas 3000", {"vmas": 3000}),
    ("vmas 6000", {"vmas": 6000}),
    ("anon vmas 1000", {"mixed": 1000, "mixed_pages": 1}),
    ("anon vmas 3000", {"mixed": 3000, "mixed_pages": 1}),
]
HELD_OUT = [                                # never in the fit: --validate only
    ("dense 40000", {"dense": 40000}),
    ("sparse 1500", {"sparse": 1500}),
    ("mixed 1000 VMAs x 8 pages", {"mixed": 1000, "mixed_pages": 8}),
    ("1 GiB", {"dense": 262144}),
]
# --quick (CI): the shapes up to 256 MiB, no eviction, about 6 s
QUICK_FIT_SHAPES = [(n, sh) for n, sh in FIT_SHAPES if sh.get("dense", 0) <= 65536]
REPEATS, QUICK_REPEATS = 24, 8
ROUNDS, QUICK_ROUNDS = 3, 2
FAULT_PAGES, FAULT_TABLES = 8192, 512
NRPTE = 7                                   # pte_chain slots per 64-byte line, 8-byte
                                            # pointers: (64 - 8) / 8


PIN_NOTE = {"forks_copy": "intercept of the fork", "forks_share": "intercept of the fork",
            "exits": "intercept of the exit", "ptes_copied": "per-PTE of the fork",
            "ptes_zapped": "per-PTE of the exit", "tables_freed": "per-table of the exit"}


def run_worker(jobs, timeout=300):
    """Run `jobs` in a fresh `python -I -S worker.py`; return its results."""
    proc = subprocess.run([sys.executable, "-I", "-S", os.path.abspath(worker.__file__)],
                          input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=timeout, env={"PATH": os.environ.get("PATH", "")})
    if proc.returncode != 0:
        raise CalibrationError("the measuring process failed: "
                               + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def _median(v):
    return float(statistics.median(v))


def _stat(v):
    """The figure a shape contributes: the minimum over its repeats."""
    return float(min(v))


def _se_min(v, resamples=400):
    """Standard error of the minimum of the samples v: the standard deviation of the
    minimum over bootstrap resamples (a fixed seed, so a rerun on the same samples
    gives the same figure).  It reflects the spread of the lowest samples, where a
    minimum lives, not the spread of the whole set that a median's formula uses."""
    import random
    import statistics
    v = [float(x) for x in v]
    if len(v) < 2:
        return float("nan")
    rng = random.Random(20021010 + len(v))
    mins = [min(rng.choices(v, k=len(v))) for _ in range(resamples)]
    return statistics.pstdev(mins)


def measure_primitives(quick=False):
    """(miss_ns, miss_se, line_ns, line_se, info): a dependent cache miss (pointer
    chase over 256 MiB in a random cycle, minus the same chase over 16 KiB) and a
    64-byte line write (one byte per line over 256 MiB, already faulted in)."""
    rng = np.random.default_rng(20021010)
    n_big = 1 << (24 if quick else 26)      # uint32 entries: 64 or 256 MiB (> the LLC)
    n_small = 1 << 12                       # 16 KiB: inside L1
    steps = 100_000 if quick else 300_000

    def cycle(n):                           # Sattolo: one cycle through all n entries
        perm = rng.permutation(n).astype(np.uint32)
        nxt = np.empty(n, dtype=np.uint32)
        nxt[perm] = np.roll(perm, -1)
        return nxt

    def chase(arr):
        mv = memoryview(arr).cast("B").cast("I")
        i = 0
        t0 = time.thread_time_ns()
        for _ in range(steps):
            i = mv[i]
        return (time.thread_time_ns() - t0) / steps

    big, small = cycle(n_big), cycle(n_small)
    rounds = 3 if quick else 5
    misses = []
    for _ in range(rounds):
        misses.append(chase(big) - chase(small))
    # like the forks, each primitive is the minimum over its rounds (below)
    del big, small
    buf = np.zeros((64 if quick else 256) << 20, dtype=np.uint8)
    buf[::4096] = 1                         # fault it in first
    lines = []
    for k in range(rounds + 1):
        t0 = time.thread_time_ns()
        buf[::64] = k
        t = (time.thread_time_ns() - t0) / (buf.size // 64)
        if k:
            lines.append(t)
    buf_bytes = buf.size
    del buf
    return (_stat(misses), _se_min(misses), _stat(lines), _se_min(lines),
            {"cache_miss_samples_ns": misses, "line_write_samples_ns": lines, "chase_steps": steps,
             "chase_bytes": n_big * 4, "line_write_bytes": int(buf_bytes)})


def _rounds(jobs, reps, rounds, helper=None):
    """Run `jobs` in `rounds` rounds (each shape built afresh each round, its forks split
    between the rounds) so that a slow spell of the host falls on every shape alike;
    the samples of a shape are concatenated.  helper: (executable, evict bytes) of the
    compiled minimal process, run after the worker in each round ("C helper")."""
    per = [reps // rounds + (1 if k < reps % rounds else 0) for k in range(rounds)]
    merged = {}
    for k in range(rounds):
        rj = []
        for j in jobs:
            j = dict(j)
            if j["kind"] == "fork":
                j["repeats"] = per[k]
                if j.get("execs"):
                    j["execs"] = max(1, j["execs"] // rounds)
            rj.append(j)
        out = run_worker(rj)
        if helper is not None:
            out.append(run_helper(helper[0], per[k], helper[1]))
        for r in out:
            old = merged.get(r["name"])
            if old is None:
                merged[r["name"]] = r
                continue
            if "V" not in r:                 # the fault passes: samples concatenated
                for key, v in r.items():
                    if isinstance(v, list):
                        old[key] += v
                continue
            # a rebuilt shape's counts can differ by a few of the worker's own pages:
            # the row keeps the mean, and every round's counts are kept beside it
            old.setdefault("rounds", [[old[x] for x in "VAPT"]])
            old["rounds"].append([r[x] for x in "VAPT"])
            for i, key in enumerate("VAPT"):
                old[key] = round(sum(c[i] for c in old["rounds"]) / len(old["rounds"]))
            for key in ("fork_ns", "fork_wall_ns", "exit_ns", "fork_exec_ns",
                        "fork_child_ns"):
                if key in r:
                    old[key] += r[key]
    return merged


def _shape_rows(results):
    X = np.array([[1.0, r["V"], r["A"], r["P"], r["T"]] for r in results])
    fork = np.array([_stat(r["fork_ns"]) for r in results])
    exit_ = np.array([_stat(r["exit_ns"]) for r in results])
    return X, fork, exit_


def host_costs(ff, fe, faults, exec_ns, prim, helper=None, regr_shapes=0):
    """The host profile's costs from the fits and the measured figures.

    ff, fe: fit_nonneg results of the fork fit on (1, V, A, P, T[, Py]) and the exit fit
    on (1, V, A, P, T); faults: {kind: (min ns, se)}; exec_ns: (ns, se); prim: (miss,
    miss_se, line, line_se, info); helper: how the C helper was built (its row pins the
    intercept; the Py column carries the interpreter's os.fork overhead), or None.
    Returns (costs, uncertainty, source, covariance block, pinned)."""
    import numpy as np
    miss, miss_se, line, line_se, info = prim
    c, u, s = {}, {}, {}
    names = ("intercept", "per-VMA", "per-anon_vma", "per-PTE", "per-table", "per-Python")
    pinned = [f"{names[j]} of the fork fit" for j in ff["pinned"]]
    pinned += [f"{names[j]} of the exit fit" for j in fe["pinned"]]

    def put(event, ns, se, source):
        if event in PIN_NOTE and any(p.startswith(PIN_NOTE[event]) for p in pinned):
            source += "; held at 0 by the non-negative fit (the data want it below 0)"
        if ns < 0:                  # a difference of two noisy figures; costs are >= 0
            source += f"; measured {float(ns):.0f} ns, held at 0"
            se, ns = math.hypot(se, ns) if math.isfinite(se) else abs(float(ns)), 0.0
        c[event] = round(float(ns), 2)
        u[event] = round(float(se), 2) if math.isfinite(se) else round(abs(float(ns)), 2)
        s[event] = source

    regr = f"fork regression on (1, V, A, P, T) over {regr_shapes} shapes"
    erg = ("exit regression (the child's CPU time from its last reading until reaped) on "
           "(1, V, A, P, T)")
    b, e = ff["coef"], fe["coef"]
    bs, es = ff["se"], fe["se"]
    dz, dz_se = faults["demand_zero"]
    sp, sp_se = faults["sparse"]
    tbl_alloc, tbl_alloc_se = sp - dz, math.hypot(sp_se, dz_se)
    if helper:
        put("forks_copy", b[0], bs[0], "measured: the fork of a minimal process, a static C "
            f"program ({helper}) whose forks are a row of the {regr} with the worker's "
            "interpreter overhead in a column of its own: the intercept is its fork less "
            "its own VMAs, PTEs and tables")
    else:
        put("forks_copy", b[0], bs[0], f"measured: intercept of the {regr} (a process with "
            "no VMA, PTE or table; includes the interpreter's os.fork wrapper: no C "
            "compiler for the minimal helper), its covariance with the slopes in the "
            "profile's covariance block")
    put("forks_share", b[0], bs[0], "= forks_copy: a share fork does the same fixed work "
        "(no released kernel shares tables)")
    put("exits", e[0], es[0], f"measured: intercept of the {erg}")
    put("execs", exec_ns[0], exec_ns[1], "measured: CPU time of a child that execs "
        "/bin/true minus that of a child that exits at once (includes loading and "
        "running /bin/true)")
    put("fork_vmas", b[1], bs[1], f"measured: per-VMA coefficient of the {regr} (every "
        "VMA)")
    put("fork_anon_vmas", b[2], bs[2], f"measured: per-anon_vma coefficient of the {regr} "
        "(what a VMA with an anon_vma adds: its chain is duplicated)")
    put("exit_vmas", e[1], es[1], f"measured: per-VMA coefficient of the {erg}")
    put("exit_anon_vmas", e[2], es[2], f"measured: per-anon_vma coefficient of the {erg}")
    put("ptes_copied", b[3], bs[3], f"measured: per-PTE coefficient of the {regr}, "
        "cold (the cache evicted before each fork)")
    put("ptes_zapped", e[3], es[3], f"measured: per-PTE coefficient of the {erg} "
        "(pages still mapped by the parent: a reference dropped, not a page freed)")
    alloc_note = ""
    if tbl_alloc < 0:
        alloc_note = f"; the difference measured {tbl_alloc:.0f} ns, held at 0"
        tbl_alloc = 0.0
    put("tables_allocated", tbl_alloc, tbl_alloc_se, "measured: write fault one page per "
        "2 MiB minus write fault on dense pages (the fault that allocates a PTE table)"
        + alloc_note)
    copied = b[4] - tbl_alloc
    copied_note = ""
    if copied < 0:
        copied_note = (f"; the difference measured {copied:.0f} ns (the fork's per-table "
                       "cost is below a fault's table allocation), held at 0")
        copied = 0.0
    put("tables_copied", copied, math.hypot(bs[4], tbl_alloc_se),
        f"measured: per-table coefficient of the {regr} minus tables_allocated (a table "
        "copied is also counted allocated)" + copied_note)
    put("tables_freed", e[4], es[4], f"measured: per-table coefficient of the {erg}")
    put("faults", 0.0, 0.0, "0 by construction: every fault is priced by its kind "
        "(demand_zero, zero_page_maps, cow_copies, cow_reuses, shmem_faults, swap_ins, "
        "unshares)")
    put("demand_zero", dz, dz_se, "measured: write fault on a fresh private page, per "
        "page (a faulting pass minus a second pass; the minimum over the passes, as for "
        "every fault below)")
    put("zero_page_maps", *faults["zero_page"], "measured: read fault on a fresh private "
        "page (maps the zero page), per page")
    put("cow_copies", *faults["cow"], "measured: write fault on a page shared with a live "
        "child (copy-on-write copy), per page")
    put("cow_reuses", *faults["cow_reuse"], "measured: write fault on a write-protected "
        "page whose child has exited (reused in place), per page")
    put("shmem_faults", *faults["shmem"], "measured: a child's read faults on MAP_SHARED "
        "pages fork did not copy, per page (fault-around maps up to 16 pages per fault)")
    m_src = (f"derived: one dependent cache miss ({miss:.1f} ns, pointer chase over "
             f"{info['chase_bytes'] >> 20} MiB)")
    l_src = f"a 64-byte line write ({line:.2f} ns)"
    put("rmap_adds", miss + line / NRPTE, math.hypot(miss_se, line_se / NRPTE),
        m_src + f" + {l_src} / {NRPTE} slots per node: Morton 2002, 'an extra two "
        "cache misses per page' (add at fork, remove at exit); no modern kernel has "
        "pte_chains")
    put("rmap_removes", miss + line / NRPTE, math.hypot(miss_se, line_se / NRPTE),
        m_src + f" + {l_src} / {NRPTE}: the second of Morton's two misses per page")
    put("share_wrprotects", miss + line / 8, math.hypot(miss_se, line_se / 8),
        m_src + f" (the table's use count) + {l_src} / 8 (its entry write-protected); "
        "no released kernel shares tables")
    put("tables_dropped", miss, miss_se, m_src + " (a shared table's use count "
        "dropped); no released kernel shares tables")
    put("unshares", miss + line, math.hypot(miss_se, line_se), m_src + f" + {l_src} "
        "(old table's use count dropped, entry rewritten), beyond the table allocated "
        "and the entries copied, which are priced by their own counters")
    put("unshare_reuses", miss + line / 8, math.hypot(miss_se, line_se / 8),
        m_src + f" + {l_src} / 8 (the entry made writable)")
    put("swap_outs", miss + 64 * line, math.hypot(miss_se, 64 * line_se),
        m_src + f" + 64 x {l_src}: NOT a swap device (this host has no swap); a 4 KiB "
        "copy to memory, as zram without compression")
    put("swap_ins", miss + 64 * line, math.hypot(miss_se, 64 * line_se),
        m_src + f" + 64 x {l_src}: NOT a swap device; a 4 KiB copy from memory")

    # the covariance of the fitted costs: fork parameters, then exit's, then the table
    # allocation (measured apart, independent of both fits)
    kf, ke = len(b), len(e)
    cov = np.zeros((kf + ke + 1, kf + ke + 1))
    cov[:kf, :kf] = ff["cov"]
    cov[kf:kf + ke, kf:kf + ke] = fe["cov"]
    cov[-1, -1] = tbl_alloc_se ** 2
    alloc = kf + ke
    loadings = {"forks_copy": {0: 1.0}, "forks_share": {0: 1.0}, "fork_vmas": {1: 1.0},
                "fork_anon_vmas": {2: 1.0}, "ptes_copied": {3: 1.0},
                "tables_copied": {4: 1.0, alloc: -1.0}, "tables_allocated": {alloc: 1.0},
                "exits": {kf: 1.0}, "exit_vmas": {kf + 1: 1.0},
                "exit_anon_vmas": {kf + 2: 1.0}, "ptes_zapped": {kf + 3: 1.0},
                "tables_freed": {kf + 4: 1.0}}
    block = None
    if np.isfinite(cov).all():
        block = event_covariance(loadings, cov.tolist())
        # the rounded uncertainties are the block's diagonal, to the rounding
        for i, ev in enumerate(block["events"]):
            u[ev] = round(math.sqrt(max(block["ns2"][i][i], 0.0)), 2)
    return c, u, s, block, pinned


def calibrate(quick=False, validate=False, progress=None, helper=True):
    """Measure, fit and build the host Profile.  Returns (profile, report) where report
    holds every measured figure (the profile's meta holds the same).  helper=False
    skips the compiled minimal-process helper (the intercept then comes from the
    worker's fit alone)."""
    import tempfile
    import numpy as np
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    load_before = _loadavg()
    reps = QUICK_REPEATS if quick else REPEATS
    shapes = QUICK_FIT_SHAPES if quick else FIT_SHAPES
    llc = worker.llc_bytes()
    evict = 0 if quick else 2 * llc
    jobs = [{"kind": "fork", "name": "bare", "shape": {}, "repeats": reps,
             "execs": max(3, reps // 2), "evict": evict}]
    jobs += [{"kind": "fork", "name": n, "shape": sh, "repeats": reps, "evict": evict}
             for n, sh in shapes[1:]]
    jobs.append({"kind": "faults", "pages": FAULT_PAGES // (4 if quick else 1),
                 "tables": FAULT_TABLES // (4 if quick else 1),
                 "repeats": 1 if quick else 3})
    if validate:
        jobs += [{"kind": "fork", "name": n, "shape": sh, "repeats": reps, "evict": evict}
                 for n, sh in HELD_OUT]
    rounds = QUICK_ROUNDS if quick else ROUNDS
    with tempfile.TemporaryDirectory(prefix="lazyvm-calibrate-") as tmp:
        exe, how = build_helper(tmp) if helper else (None, "not asked for (helper=False)")
        say(f"timing {len(jobs)} jobs in a separate process, {rounds} round(s), {reps} "
            f"forks per shape in all; the minimal C helper: {how}; "
            + (f"{evict >> 20} MiB read before each fork (twice the {llc >> 20} MiB "
               "last-level cache)" if evict else "no eviction (--quick)"))
        results = _rounds(jobs, reps, rounds, helper=(exe, evict) if exe else None)
    say("measuring a cache miss and a line write")
    miss, miss_se, line, line_se, prim = measure_primitives(quick)

    fit_res = [results[n] for n, _ in shapes]
    X, y_fork, y_exit = _shape_rows(fit_res)
    Xf, yf, fork_rows = X, y_fork, list(fit_res)
    if exe:
        hr = results["C helper"]
        Xf = np.column_stack([X, np.ones(len(X))])
        Xf = np.vstack([Xf, [1.0, hr["V"], hr["A"], hr["P"], hr["T"], 0.0]])
        yf = np.append(y_fork, _stat(hr["fork_ns"]))
        fork_rows.append(hr)
    ff = fit_nonneg(Xf, yf, 1.0 / yf ** 2)      # relative least squares, costs >= 0
    fe = fit_nonneg(X, y_exit, 1.0 / y_exit ** 2)
    fl = results["faults"]
    faults = {k: (_stat(v), _se_min(v)) for k, v in fl.items() if k != "name"}
    bare = results["bare"]
    exec_ns = (_stat(bare["fork_exec_ns"]) - _stat(bare["fork_child_ns"]),
               math.hypot(_se_min(bare["fork_exec_ns"]), _se_min(bare["fork_child_ns"])))
    c, u, s, cov, pinned = host_costs(ff, fe, faults, exec_ns,
                                      (miss, miss_se, line, line_se, prim),
                                      helper=how if exe else None, regr_shapes=len(shapes))
    stretch = stretch_of(fork_rows)
    meta = {
        "host": _host(),
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": bool(quick), "repeats": reps,
        "statistic": "minimum over repeats; uncertainties of a minimum by bootstrap",
        "cache": {"convention": "cold" if evict else "warm (--quick: no eviction)",
                  "llc_bytes": llc, "evicted_bytes_before_each_fork": evict},
        "helper": {"built": how, "row": ({x: results["C helper"][x] for x in "VAPT"}
                                         | {"min_ns": _stat(results["C helper"]["fork_ns"]),
                                            "median_ns": _median(results["C helper"]["fork_ns"]),
                                            "se_min_ns": _se_min(results["C helper"]["fork_ns"])})
                   if exe else None},
        "stretch": stretch,
        "fit": {"regressors": ["1", "V", "A", "P", "T"] + (["Py"] if exe else []),
                "fork": _fit_meta(ff, fork_rows, yf, "fork_ns"),
                "exit": _fit_meta(fe, fit_res, y_exit, "exit_ns")},
        "worker_base": {x: bare[x] for x in "VAPT"},
        "fit_pinned_at_0": pinned,
        "faults": {k: {"min_ns": faults[k][0], "se_ns": faults[k][1], "samples": fl[k]}
                   for k in faults},
        "munmap_exclusive_ns_per_page": faults["munmap_dense"][0],
        "munmap_exclusive_ns_per_table": faults["munmap_sparse"][0],
        "primitives": {"cache_miss_ns": miss, "cache_miss_se": miss_se,
                       "line_write_ns": line, "line_write_se": line_se, **prim},
    }
    if exe:
        meta["python_fork_overhead_ns"] = float(ff["coef"][5])
    prof = Profile(name="host", costs=c, uncertainty=u, source=s, version=FORMAT_VERSION,
                   description=f"this machine's kernel ({meta['host'].get('kernel', '?')},"
                   f" {meta['host'].get('cpu_model', '?')}), made by lazyvm calibrate",
                   meta=meta, covariance=cov)
    report = {"profile": prof, "meta": meta, "raw": results}
    if validate:
        report["validate"] = validate_rows(prof, [results[n] for n, _ in HELD_OUT],
                                           base=[bare[x] for x in "VAPT"],
                                           shapes=[sh for _, sh in HELD_OUT])
        meta["validate"] = report["validate"]
    meta["seconds"] = round(time.perf_counter() - t_start, 1)
    meta["loadavg_before_after"] = [load_before, _loadavg()]
    return prof, report


def _loadavg():
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _fit_meta(f, rows, y, key):
    return {"coef": [float(x) for x in f["coef"]], "se": [float(x) for x in f["se"]],
            "cov": [[float(x) for x in row] for row in f["cov"]],
            "dof": int(f["dof"]),
            "rows": [{"shape": r["name"], **{x: r[x] for x in "VAPT"},
                      "ns": float(yy), "median_ns": _median(r[key]), "residual_ns": float(res),
                      "rel_residual": float(rel)}
                     for r, yy, res, rel in zip(rows, y, f["residuals"],
                                                f["rel_residuals"])]}


def _host():
    try:
        return machine_description()
    except Exception as e:                  # the description is informative only
        return {"error": str(e)}


def lazyvm_fork_counts(shape):
    """The event counts of a copy fork, in lazyvm (x86_64, no rmap, no contents), of a
    process holding `shape` (the mappings the worker adds, built the same way), or
    None when this lazyvm has no x86_64 layout."""
    pages = (shape.get("dense", 0) + shape.get("sparse", 0)
             + shape.get("mixed", 0) * (shape.get("mixed_pages", 8) + 1) + 64)
    try:
        m = Machine(memory=max(64 << 20, pages * 2 * PAGE + (16 << 20)), fork_mode="copy",
                    rmap=False, layout="x86_64", contents=False)
    except TypeError:
        return None
    p = m.spawn()
    if shape.get("dense"):
        a = p.mmap(shape["dense"] * PAGE)
        p.touch(a, shape["dense"] * PAGE, write=True)
    if shape.get("sparse"):
        n = shape["sparse"]
        a = p.mmap((n + 1) * REGION)
        a = -(-a // REGION) * REGION            # the worker's touches are 2 MiB apart
        p.touch_pages(np.arange(n, dtype=np.uint64) * np.uint64(REGION) + np.uint64(a),
                      write=True)
    for i in range(shape.get("vmas", 0)):
        p.mmap(PAGE, prot="r" if i % 2 else "rw")
    for i in range(shape.get("mixed", 0)):
        a = p.mmap(shape.get("mixed_pages", 8) * PAGE)
        p.touch(a, shape.get("mixed_pages", 8) * PAGE, write=True)
        p.mmap(PAGE, prot="")
    before = m.stats()
    p.fork()
    after = m.stats()
    return {e: int(after[e]) - int(before[e]) for e in EVENTS if e in after}


def validate_rows(profile, results, base=None, shapes=None):
    """Predicted against measured fork of each held-out result: CPU time (the profile's
    prediction against the minimum measured) and wall time (the prediction times the
    run's stretch against the median measured wall time).  "predicted_ns" prices the
    worker's own counts (V, A, P, T); with `base` (the bare worker's V, A, P, T) and
    `shapes`, "lazyvm_ns" prices lazyvm's own event counts of the shape
    (profile.kernel_ns, as Machine(costs=...) does) plus the bare worker."""
    st = stretch(profile) or 1.0
    rows = []
    for k, r in enumerate(results):
        pred = predict_fork_ns(profile, r["V"], r["A"], r["P"], r["T"])
        meas = _stat(r["fork_ns"])
        wall = _median(r["fork_wall_ns"])
        lz = None
        if base is not None and shapes is not None:
            counts = lazyvm_fork_counts(shapes[k])
            if counts is not None:
                counts["forks_copy"] = 0         # the worker's fork is in `base`
                lz = {"counts": counts,
                      "ns": profile.kernel_ns(counts) + predict_fork_ns(profile, *base)}
        rows.append({"shape": r["name"], "V": r["V"], "A": r["A"], "P": r["P"], "T": r["T"],
                     "measured_median_ns": _median(r["fork_ns"]),
                     "predicted_ns": pred, "measured_ns": meas,
                     "measured_min_ns": float(min(r["fork_ns"])),
                     "measured_max_ns": float(max(r["fork_ns"])),
                     "repeats": len(r["fork_ns"]),
                     "error": (pred - meas) / meas,
                     "stretch": st,
                     "measured_stretch": wall / meas if meas else None,
                     "predicted_wall_ns": pred * st, "measured_wall_ns": wall,
                     "measured_wall_min_ns": float(min(r["fork_wall_ns"])),
                     "measured_wall_max_ns": float(max(r["fork_wall_ns"])),
                     "wall_error": (pred * st - wall) / wall if wall else None})
        if lz is not None:
            rows[-1]["lazyvm_ns"] = lz["ns"]
            rows[-1]["lazyvm_counts"] = lz["counts"]
            rows[-1]["lazyvm_error"] = (lz["ns"] - meas) / meas
    return rows


def format_report(report):
    prof = report["profile"]
    meta = report["meta"]
    h = meta["host"]
    out = [f"host: {h.get('kernel', '?')} {h.get('arch', '?')}, {h.get('cpu_model', '?')}"
           f", {h.get('cores', '?')} cores, hypervisor={h.get('hypervisor', '?')}, "
           f"THP {h.get('transparent_hugepage', '?')}",
           "worker process: V={V} VMAs (A={A} with anon_vma), P={P} copied PTEs, T={T} "
           "tables (regressed away)".format(**meta["worker_base"]),
           f"{meta['repeats']} forks per shape, the minimum of each; relative least squares",
           f"cache: {meta['cache']['convention']} ({meta['cache']['evicted_bytes_before_each_fork'] >> 20}"
           f" MiB read before each fork; last-level cache {meta['cache']['llc_bytes'] >> 20} MiB)",
           "minimal process: " + (meta["helper"]["built"] if not meta["helper"]["row"] else
                                  "a static C helper, {} (V={V} A={A} P={P} T={T}): fork "
                                  "min {min:.1f} us, median {med:.1f} us".format(
                                      meta["helper"]["built"], **meta["helper"]["row"],
                                      min=meta["helper"]["row"]["min_ns"] / 1e3,
                                      med=meta["helper"]["row"]["median_ns"] / 1e3)),
           "wall/CPU stretch of this run's forks (wall over the shape's minimum CPU): "
           "median {median:.2f}, quartiles {q1:.2f}-{q3:.2f}, range {min:.2f}-{max:.2f} "
           "over {n} forks".format(**meta["stretch"]),
           ""]
    for which in ("fork", "exit"):
        f = meta["fit"][which]
        regs = meta["fit"]["regressors"][1:] if which == "fork" else ["V", "A", "P", "T"]
        terms = " + ".join(f"{c:.{1 if n != 'P' else 2}f} (+-{e:.{1 if n != 'P' else 2}f}) {n}"
                           for c, e, n in zip(f["coef"][1:], f["se"][1:], regs))
        cov = f.get("cov")
        corr = ""
        if cov and cov[0][0] > 0 and cov[3][3] > 0:
            corr = f", corr(intercept, P) {cov[0][3] / math.sqrt(cov[0][0] * cov[3][3]):+.2f}"
        out.append(f"{which} fit: ns = {f['coef'][0]:.0f} (+-{f['se'][0]:.0f}) + {terms}"
                   f"   [{f['dof']} dof{corr}]")
        for r in f["rows"]:
            out.append(f"  {r['shape']:<15} V={r['V']:>5} A={r['A']:>5} P={r['P']:>6} "
                       f"T={r['T']:>5}  min {r['ns'] / 1e3:>8.1f} us (median "
                       f"{r['median_ns'] / 1e3:>8.1f})  residual {r['residual_ns'] / 1e3:>+7.1f}"
                       f" us ({100 * r['rel_residual']:+.1f}%)")
    p = meta["primitives"]
    out.append(f"cache miss {p['cache_miss_ns']:.1f} +- {p['cache_miss_se']:.1f} ns, "
               f"line write {p['line_write_ns']:.2f} +- {p['line_write_se']:.2f} ns")
    out.append("")
    out.append(prof.format())
    if "validate" in report:
        out.append("")
        out.append(format_validate(report["validate"]))
    out.append("")
    out.append(f"calibration took {meta['seconds']:.1f} s")
    la = meta.get("loadavg_before_after") or [None, None]
    cores = h.get("cores_usable") or h.get("cores") or 1
    if any(x is not None and x > 0.75 * cores for x in la):
        out.append(f"NOTE: the host was busy (load average {la[0]} before, {la[1]} after, "
                   f"{cores} cores): other work stretches forks and faults, and the "
                   "minimum over the repeats only partly removes it; rerun when it is idle")
    return "\n".join(out)


def format_validate(rows):
    import statistics
    st = rows[0]["stretch"] if rows else 1.0
    out = ["held-out shapes (not in the fit): predicted vs measured copy fork; CPU: the "
           "minimum over the repeats (median, maximum beside it); wall: the median, "
           f"predicted as CPU x the run's stretch {st:.2f}",
           f"  {'shape':<26} {'P':>7} {'T':>5} {'CPU pred':>9} {'meas':>9} {'median':>9} "
           f"{'max':>9} {'error':>7}   {'wall pred':>9} {'meas':>9} {'error':>7} "
           f"{'stretch':>7}"]
    for r in rows:
        out.append(f"  {r['shape']:<26} {r['P']:>7} {r['T']:>5} "
                   f"{r['predicted_ns'] / 1e3:>9.1f} {r['measured_ns'] / 1e3:>9.1f} "
                   f"{r['measured_median_ns'] / 1e3:>9.1f} {r['measured_max_ns'] / 1e3:>9.1f}"
                   f" {100 * r['error']:>+6.1f}%   {r['predicted_wall_ns'] / 1e3:>9.1f} "
                   f"{r['measured_wall_ns'] / 1e3:>9.1f} {100 * r['wall_error']:>+6.1f}% "
                   f"{r['measured_stretch']:>7.2f}")
    out.append("  (us)")
    errs = sorted(abs(r["error"]) for r in rows)
    werrs = sorted(abs(r["wall_error"]) for r in rows)
    out.append(f"  CPU: median |error| {100 * statistics.median(errs):.1f}%, largest "
               f"{100 * errs[-1]:.1f}%  (target: 12% median, 20% largest); wall: median "
               f"{100 * statistics.median(werrs):.1f}%, largest {100 * werrs[-1]:.1f}%")
    if all("lazyvm_ns" in r for r in rows):
        out.append("the same shapes simulated in lazyvm (x86_64, copy fork), its event "
                   "counts priced by the profile, plus the bare worker:")
        for r in rows:
            c = r["lazyvm_counts"]
            out.append(f"  {r['shape']:<26} fork_vmas={c.get('fork_vmas', 0):>5} "
                       f"fork_anon_vmas={c.get('fork_anon_vmas', 0):>5} "
                       f"ptes_copied={c.get('ptes_copied', 0):>7} "
                       f"tables_copied={c.get('tables_copied', 0):>5} "
                       f"{r['lazyvm_ns'] / 1e3:>8.1f} us vs {r['measured_ns'] / 1e3:>8.1f} us"
                       f"  {100 * r['lazyvm_error']:+.1f}%")
        errs = sorted(abs(r["lazyvm_error"]) for r in rows)
        out.append(f"  median |error| {100 * statistics.median(errs):.1f}%, largest "
                   f"{100 * errs[-1]:.1f}%")
    return "\n".join(out)


def compare_profiles(old, new):
    """Per measured event: the move from `old` to `new` in units of the larger of the
    two uncertainties (derived and constant events included; 0 when both are 0)."""
    rows = []
    for e in new.costs:
        u = max(old.uncertainty.get(e, 0), new.uncertainty[e])
        d = new.costs[e] - old.costs.get(e, 0)
        rows.append({"event": e, "old_ns": old.costs.get(e), "new_ns": new.costs[e],
                     "moved_ns": d, "in_uncertainties": abs(d) / u if u else
                     (0.0 if d == 0 else float("inf"))})
    return rows


def format_compare(rows):
    out = ["against the profile this run replaces (move / larger uncertainty):"]
    for r in rows:
        flag = "  MOVED MORE THAN ITS UNCERTAINTY" if r["in_uncertainties"] > 1 else ""
        out.append(f"  {r['event']:<18} {r['old_ns']:>11.1f} -> {r['new_ns']:>11.1f} ns "
                   f"({r['in_uncertainties']:.2f}){flag}")
    n = sum(r["in_uncertainties"] > 1 for r in rows)
    out.append(f"  {n} of {len(rows)} costs moved by more than their uncertainty")
    return "\n".join(out)


# -- the default profile ------------------------------------------------------------

def ensure_host_profile(say=None):
    """The host profile, made now by a quick calibration (``lazyvm calibrate --quick``,
    about 10 s) and saved where load_profile("host") reads it when there is none yet.
    Returns (path, seconds the calibration took, or None when the profile was there).
    Raises OSError when it cannot be saved, RuntimeError when the measurement fails."""
    path = host_profile_path()
    if os.path.exists(path):
        return path, None
    t0 = time.perf_counter()
    prof, _ = calibrate(quick=True, progress=say)
    prof.save(path)
    return path, time.perf_counter() - t0

