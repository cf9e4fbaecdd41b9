"""`lazyvm calibrate`: this machine's kernel costs, measured with real processes.

The calibration forks real child processes holding shapes chosen to separate the
costs, times them, and fits the times by least squares (numpy lstsq) to the counts of
what the kernel does for them; the fitted coefficients, each with its standard error,
become the "host" cost profile (lazyvm.costs), written to the user cache directory.

The process that forks (the *worker*) is this file run as a script with
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
predicted against measured fork time.

pte_chains (2.5/2.6.0 rmap) exist in no modern kernel: their costs are derived from two
primitives measured here, a dependent cache miss (a pointer chase over a buffer larger
than the last-level cache, minus the same chase inside L1) and a 64-byte line write,
following Morton 2002 ("an extra two cache misses per page": one when fork adds the
slot, one when exit removes it).  Sharing page tables exists in no released kernel
either: its per-table costs are derived from the same primitives (the profile's
``source`` says how, event by event).

This module imports only the standard library at the top, so that it can be the worker.
"""

import math
import json
import mmap
import os
import sys
import time

PAGE = 4096
REGION = 2 << 20
_clock = time.perf_counter_ns
_cpu = time.thread_time_ns            # CLOCK_THREAD_CPUTIME_ID
_PRESENT = bytes(0 if i < 0x80 else 1 for i in range(256))   # bit 63 of a pagemap entry
_ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _anon(nbytes, prot=mmap.PROT_READ | mmap.PROT_WRITE):
    m = mmap.mmap(-1, nbytes, flags=_ANON, prot=prot)
    try:
        m.madvise(mmap.MADV_NOHUGEPAGE)
    except (AttributeError, OSError):
        pass
    return m


def _touch(m, step=PAGE, write=True):
    if write:
        for off in range(0, len(m), step):
            m[off] = 1
    else:
        s = 0
        for off in range(0, len(m), step):
            s += m[off]
        return s


def counts():
    """(V, A, P, T) of this process now (see the module docstring)."""
    vmas, copied = 0, []
    cur = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                if cur:
                    copied.append(cur) if cur[2] else None
                lo, hi = (int(x, 16) for x in head.split("-"))
                name = line.split()[-1] if len(line.split()) >= 6 else ""
                if name == "[vsyscall]":
                    cur = None
                    continue
                vmas += 1
                cur = [lo, hi, False]
            elif cur is not None and head == "Anonymous:" and int(line.split()[1]) > 0:
                cur[2] = True
            elif cur is not None and head == "VmFlags:" and (
                    " pf" in line or " mm" in line):
                cur[2] = True
    if cur and cur[2]:
        copied.append(cur)
    ptes = 0
    l1, l2, l3 = set(), set(), set()
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        for lo, hi, _ in copied:
            # read 2 MiB-aligned chunks so that each chunk is one PTE table's entries
            a = lo
            while a < hi:
                b = min(hi, (a // REGION + 1) * REGION)
                n = (b - a) // PAGE
                data = os.pread(fd, n * 8, (a // PAGE) * 8)
                present = data[7::8].translate(_PRESENT).count(1)
                if present:
                    ptes += present
                    l1.add(a >> 21)
                    l2.add(a >> 30)
                    l3.add(a >> 39)
                a = b
    finally:
        os.close(fd)
    return vmas, len(copied), ptes, len(l1) + len(l2) + len(l3)


class Shape:
    """Mappings added to this process: dense pages, sparse pages, many VMAs, mixed."""

    def __init__(self, dense=0, sparse=0, vmas=0, mixed=0, mixed_pages=8):
        self.maps = []
        if dense:
            m = _anon(dense * PAGE)
            _touch(m)
            self.maps.append(m)
        if sparse:
            m = _anon(sparse * REGION)
            _touch(m, REGION)
            self.maps.append(m)
        for i in range(vmas):                 # untouched: no anon_vma, fork copies no PTE
            self.maps.append(_anon(PAGE, mmap.PROT_READ if i % 2 else
                                   mmap.PROT_READ | mmap.PROT_WRITE))
        for i in range(mixed):                # touched rw areas between PROT_NONE pages
            m = _anon(mixed_pages * PAGE)
            _touch(m)
            self.maps.append(m)
            self.maps.append(_anon(PAGE, 0))          # PROT_NONE

    def close(self):
        for m in self.maps:
            m.close()
        self.maps = []


def _reap(pid):
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"child ended with status {status:#x}")


def _reap_cpu(pid):
    """Reap `pid`; return the CPU time (user + system, ns) the child used in all."""
    _, status, ru = os.wait4(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"child ended with status {status:#x}")
    return int(round((ru.ru_utime + ru.ru_stime) * 1e9))


def job_fork(shape, repeats, warmup=1, execs=0):
    """Fork `repeats` times.  fork_ns: the CPU time of the forking thread across
    os.fork() (CLOCK_THREAD_CPUTIME_ID: the kernel's work for the fork, without the time
    other work on the host preempts it; fork_wall_ns beside it).  exit_ns: the child
    waits on a pipe, reads its own CPU clock, then _exit()s; the CPU time its rusage
    reports beyond that reading is its exit.  With execs, fork_exec_ns: the whole CPU
    time of a child that execs /bin/true, and fork_child_ns: that of a child that exits
    at once, both from the rusage of wait4."""
    sh = Shape(**shape)
    v, a, p, t = counts()
    fork_ns, wall_ns, exit_ns, exec_ns, child_ns = [], [], [], [], []
    r, w = os.pipe()
    br, bw = os.pipe()
    for k in range(warmup + repeats):
        t0 = _clock()
        c0 = _cpu()
        pid = os.fork()
        if pid == 0:                  # wait until the parent has taken its time, then exit
            os.read(r, 1)
            os.write(bw, b"%23d\n" % _cpu())
            os._exit(0)
        c1 = _cpu()
        t1 = _clock()
        os.write(w, b"x")
        before = int(os.read(br, 24))
        total = _reap_cpu(pid)
        if k >= warmup:
            fork_ns.append(c1 - c0)
            wall_ns.append(t1 - t0)
            exit_ns.append(total - before)
    for fd in (r, w, br, bw):
        os.close(fd)
    for k in range(execs + (1 if execs else 0)):
        for do_exec in (True, False):
            pid = os.fork()
            if pid == 0:
                if do_exec:
                    try:
                        os.execv("/bin/true", ["true"])
                    finally:
                        os._exit(1)
                os._exit(0)
            total = _reap_cpu(pid)
            if k >= 1:
                (exec_ns if do_exec else child_ns).append(total)
    again = counts()
    sh.close()
    return {"V": v, "A": a, "P": p, "T": t, "counts_after": again, "fork_ns": fork_ns,
            "fork_wall_ns": wall_ns, "exit_ns": exit_ns, "fork_exec_ns": exec_ns,
            "fork_child_ns": child_ns}


def _passes(m, step, write, fresh_pass):
    """CPU ns of one pass that faults (fresh_pass) minus one that does not."""
    t0 = _cpu()
    fresh_pass()
    t1 = _cpu()
    _touch(m, step, write)
    t2 = _cpu()
    return (t1 - t0) - (t2 - t1)


def job_faults(pages, tables, repeats):
    """Per-fault ns, each the time of a pass that faults minus the same pass again.
    Keys: demand_zero (write, fresh dense), sparse (write, one page per 2 MiB: adds a
    PTE table per fault), zero_page (read, fresh), cow (write after fork, the child
    alive), cow_reuse (write after the child exited), shmem (a child's read of
    MAP_SHARED pages fork did not copy), munmap_dense / munmap_sparse (ns per page of
    unmapping exclusive pages)."""
    out = {k: [] for k in ("demand_zero", "sparse", "zero_page", "cow", "cow_reuse",
                           "shmem", "munmap_dense", "munmap_sparse")}
    for _ in range(repeats):
        m = _anon(pages * PAGE)
        out["demand_zero"].append(_passes(m, PAGE, True, lambda: _touch(m)) / pages)
        t0 = _cpu(); m.close(); t1 = _cpu()
        out["munmap_dense"].append((t1 - t0) / pages)

        m = _anon(tables * REGION)
        out["sparse"].append(_passes(m, REGION, True, lambda: _touch(m, REGION)) / tables)
        t0 = _cpu(); m.close(); t1 = _cpu()
        out["munmap_sparse"].append((t1 - t0) / tables)

        m = _anon(pages * PAGE)
        out["zero_page"].append(_passes(m, PAGE, False,
                                        lambda: _touch(m, PAGE, False)) / pages)
        m.close()

        m = _anon(pages * PAGE)
        _touch(m)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(r, 1)
            os._exit(0)
        out["cow"].append(_passes(m, PAGE, True, lambda: _touch(m)) / pages)
        os.write(w, b"x")
        _reap(pid)
        os.close(r); os.close(w)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        _reap(pid)
        # every page is exclusive again but still write-protected: write faults reuse
        out["cow_reuse"].append(_passes(m, PAGE, True, lambda: _touch(m)) / pages)
        m.close()

        s = mmap.mmap(-1, pages * PAGE)       # MAP_SHARED: fork skips its page tables
        _touch(s)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            ns = _passes(s, PAGE, False, lambda: _touch(s, PAGE, False))
            os.write(w, str(ns).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 64)
            if not chunk:
                break
            data += chunk
        os.close(r)
        _reap(pid)
        out["shmem"].append(int(data) / pages)
        s.close()
    return out


def worker_main():
    """The worker: run the JSON list of jobs on stdin, one JSON line out per job."""
    jobs = json.loads(sys.stdin.read())
    for job in jobs:
        kind = job.pop("kind")
        name = job.pop("name", kind)
        if kind == "fork":
            res = job_fork(**job)
        elif kind == "faults":
            res = job_faults(**job)
        else:
            raise SystemExit(f"unknown job {kind}")
        res["name"] = name
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()



# ======================================================================================
# The calibration proper (runs in the lazyvm process; numpy imported when needed).

FIT_SHAPES = [                              # (name, shape) regressed on (1, V, A, P, T)
    ("bare", {}),
    ("dense 4096", {"dense": 4096}),
    ("dense 16384", {"dense": 16384}),
    ("dense 65536", {"dense": 65536}),
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
REPEATS, QUICK_REPEATS = 24, 8
ROUNDS, QUICK_ROUNDS = 3, 2
FAULT_PAGES, FAULT_TABLES = 8192, 512
NRPTE = 7                                   # pte_chain slots per 64-byte line, 8-byte
                                            # pointers: (64 - 8) / 8


PIN_NOTE = {"forks_copy": "intercept of the fork", "forks_share": "intercept of the fork",
            "exits": "intercept of the exit", "ptes_copied": "per-PTE of the fork",
            "ptes_zapped": "per-PTE of the exit", "tables_freed": "per-table of the exit"}


class CalibrationError(RuntimeError):
    pass


def run_worker(jobs, timeout=300):
    """Run `jobs` in a fresh `python -I -S calibrate.py` worker; return its results."""
    import subprocess
    proc = subprocess.run([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                          input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=timeout, env={"PATH": os.environ.get("PATH", "")})
    if proc.returncode != 0:
        raise CalibrationError("the measuring process failed: "
                               + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def fit(X, y, weights=None):
    """Weighted least squares y ~ X b.  Returns dict: coef, se (standard errors,
    sqrt(diag(s^2 (X'WX)^-1)) with s^2 the weighted residual variance), residuals
    (y - X b, unweighted), rel_residuals, dof.  With as many rows as columns the
    standard errors are undefined: NaN."""
    import numpy as np
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    coef, _, rank, _ = np.linalg.lstsq(Xw, yw, rcond=None)
    if rank < X.shape[1]:
        raise CalibrationError(f"the shapes do not separate the costs (rank {rank} "
                               f"of {X.shape[1]})")
    res = y - X @ coef
    dof = X.shape[0] - X.shape[1]
    if dof > 0:
        s2 = float(((res * sw) ** 2).sum()) / dof
        cov = s2 * np.linalg.inv(Xw.T @ Xw)
        se = np.sqrt(np.diag(cov))
    else:
        se = np.full(X.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(y != 0, res / y, np.nan)
    return {"coef": coef, "se": se, "residuals": res, "rel_residuals": rel, "dof": dof}


def fit_nonneg(X, y, weights=None):
    """`fit` with every coefficient >= 0: the feasible subset of free coefficients with
    the least weighted residual (exact for the handful of columns used here; 2**k
    solves).  Adds "pinned": the columns held at 0.  A pinned column's standard error
    is the one the unconstrained fit gives it (what the data say about it)."""
    import itertools
    import numpy as np
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    k = X.shape[1]
    free_all = fit(X, y, w)
    if (free_all["coef"] >= 0).all():
        return dict(free_all, pinned=[])
    best = None
    for r in range(k - 1, 0, -1):
        for cols in itertools.combinations(range(k), r):
            try:
                f = fit(X[:, cols], y, w)
            except CalibrationError:
                continue
            if (f["coef"] < 0).any():
                continue
            rss = float((f["residuals"] ** 2 * w).sum())
            if best is None or rss < best[0]:
                best = (rss, cols, f)
    if best is None:
        raise CalibrationError("no non-negative fit")
    _, cols, f = best
    coef = np.zeros(k)
    se = np.array(free_all["se"], dtype=float)
    coef[list(cols)] = f["coef"]
    se[list(cols)] = f["se"]
    res = y - X @ coef
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(y != 0, res / y, np.nan)
    return {"coef": coef, "se": se, "residuals": res, "rel_residuals": rel,
            "dof": X.shape[0] - len(cols), "pinned": [j for j in range(k) if j not in cols]}


def _median(v):
    import statistics
    return float(statistics.median(v))


def _stat(v):
    """The figure a shape contributes: the minimum over its repeats."""
    return float(min(v))


def _se_median(v):
    """Standard error of a median: 1.2533 * sd / sqrt(n) (normal approximation)."""
    import statistics
    if len(v) < 2:
        return float("nan")
    return 1.2533 * statistics.stdev(v) / math.sqrt(len(v))


def measure_primitives(quick=False):
    """(miss_ns, miss_se, line_ns, line_se, info): a dependent cache miss (pointer
    chase over 256 MiB in a random cycle, minus the same chase over 16 KiB) and a
    64-byte line write (one byte per line over 256 MiB, already faulted in)."""
    import numpy as np
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
    return (_stat(misses), _se_median(misses), _stat(lines), _se_median(lines),
            {"cache_miss_samples_ns": misses, "line_write_samples_ns": lines, "chase_steps": steps,
             "chase_bytes": n_big * 4, "line_write_bytes": int(buf_bytes)})


def _rounds(jobs, reps, rounds):
    """Run `jobs` in `rounds` rounds (each shape built afresh each round, its forks split
    between the rounds) so that a slow spell of the host falls on every shape alike;
    the samples of a shape are concatenated."""
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
        for r in run_worker(rj):
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
                old[key] += r[key]
    return merged


def _shape_rows(results):
    import numpy as np
    X = np.array([[1.0, r["V"], r["A"], r["P"], r["T"]] for r in results])
    fork = np.array([_stat(r["fork_ns"]) for r in results])
    exit_ = np.array([_stat(r["exit_ns"]) for r in results])
    return X, fork, exit_


def calibrate(quick=False, validate=False, progress=None):
    """Measure, fit and build the host Profile.  Returns (profile, report) where report
    holds every measured figure (the profile's meta holds the same)."""
    from lazyvm.costs import Profile
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    load_before = _loadavg()
    reps = QUICK_REPEATS if quick else REPEATS
    jobs = [{"kind": "fork", "name": "bare", "shape": {}, "repeats": reps,
             "execs": max(3, reps // 2)}]
    jobs += [{"kind": "fork", "name": n, "shape": s, "repeats": reps}
             for n, s in FIT_SHAPES[1:]]
    jobs.append({"kind": "faults", "pages": FAULT_PAGES // (4 if quick else 1),
                 "tables": FAULT_TABLES // (4 if quick else 1),
                 "repeats": 1 if quick else 3})
    if validate:
        jobs += [{"kind": "fork", "name": n, "shape": s, "repeats": reps}
                 for n, s in HELD_OUT]
    rounds = QUICK_ROUNDS if quick else ROUNDS
    say(f"timing {len(jobs)} jobs in a separate process, {rounds} round(s), {reps} forks "
        "per shape in all")
    results = _rounds(jobs, reps, rounds)
    say("measuring a cache miss and a line write")
    miss, miss_se, line, line_se, prim = measure_primitives(quick)

    fit_res = [results[n] for n, _ in FIT_SHAPES]
    X, y_fork, y_exit = _shape_rows(fit_res)
    ff = fit_nonneg(X, y_fork, 1.0 / y_fork ** 2)  # relative least squares, costs >= 0
    fe = fit_nonneg(X, y_exit, 1.0 / y_exit ** 2)
    fl = results["faults"]
    med = {k: _stat(v) for k, v in fl.items() if k != "name"}
    sem = {k: _se_median(v) for k, v in fl.items() if k != "name"}
    bare = results["bare"]
    exec_extra = _stat(bare["fork_exec_ns"]) - _stat(bare["fork_child_ns"])
    exec_se = math.hypot(_se_median(bare["fork_exec_ns"]), _se_median(bare["fork_child_ns"]))

    c, u, s = {}, {}, {}
    names = ("intercept", "per-VMA", "per-anon_vma", "per-PTE", "per-table")
    pinned = [f"{names[j]} of the fork fit" for j in ff["pinned"]]
    pinned += [f"{names[j]} of the exit fit" for j in fe["pinned"]]

    def put(event, ns, se, source):
        if event in PIN_NOTE and any(p.startswith(PIN_NOTE[event]) for p in pinned):
            source += "; held at 0 by the non-negative fit (the data want it below 0)"
        c[event] = round(float(ns), 2)
        u[event] = round(float(se), 2) if math.isfinite(se) else round(abs(float(ns)), 2)
        s[event] = source

    regr = "fork regression on (1, V, A, P, T) over %d shapes" % len(FIT_SHAPES)
    erg = "exit regression (the child's CPU time from its last reading until reaped) on (1, V, A, P, T)"
    b, e = ff["coef"], fe["coef"]
    bs, es = ff["se"], fe["se"]
    tbl_alloc = med["sparse"] - med["demand_zero"]
    tbl_alloc_se = math.hypot(sem["sparse"], sem["demand_zero"])
    put("forks_copy", b[0], bs[0], f"measured: intercept of the {regr} (a process with "
        "no VMA, PTE or table; includes the interpreter's os.fork wrapper)")
    put("forks_share", b[0], bs[0], "= forks_copy: a share fork does the same fixed work "
        "(no released kernel shares tables)")
    put("exits", e[0], es[0], f"measured: intercept of the {erg}")
    put("execs", exec_extra, exec_se, "measured: CPU time of a child that execs "
        "/bin/true minus that of a child that exits at once (includes loading and "
        "running /bin/true)")
    put("fork_vmas", b[1] + b[2], math.hypot(bs[1], bs[2]), "measured: per-VMA plus "
        f"per-anon_vma coefficients of the {regr} (lazyvm's VMAs are anonymous memory; "
        "a VMA without anon_vma costs the per-VMA coefficient alone, in meta)")
    put("exit_vmas", e[1] + e[2], math.hypot(es[1], es[2]), "measured: per-VMA plus "
        f"per-anon_vma coefficients of the {erg} "
        "(lazyvm 0.2.0 does not count VMAs torn down yet)")
    put("ptes_copied", b[3], bs[3], f"measured: per-PTE coefficient of the {regr}")
    put("ptes_zapped", e[3], es[3], f"measured: per-PTE coefficient of the {erg} "
        "(pages still mapped by the parent: a reference dropped, not a page freed)")
    alloc_note = ""
    if tbl_alloc < 0:
        alloc_note = f"; the difference measured {tbl_alloc:.0f} ns, held at 0"
        tbl_alloc = 0.0
    put("tables_allocated", tbl_alloc, tbl_alloc_se, "measured: write fault one page per "
        "2 MiB minus write fault on dense pages (the fault that allocates a PTE table)"
        + alloc_note)
    put("tables_copied", b[4] - tbl_alloc, math.hypot(bs[4], tbl_alloc_se),
        f"measured: per-table coefficient of the {regr} minus tables_allocated (a table "
        "copied is also counted allocated)")
    put("tables_freed", e[4], es[4], f"measured: per-table coefficient of the {erg}")
    put("faults", 0.0, 0.0, "0 by construction: every fault is priced by its kind "
        "(demand_zero, zero_page_maps, cow_copies, cow_reuses, shmem_faults, swap_ins, "
        "unshares)")
    put("demand_zero", med["demand_zero"], sem["demand_zero"], "measured: write fault on "
        "a fresh private page, per page (a faulting pass minus a second pass; the "
        "minimum over the passes, as for every fault below)")
    put("zero_page_maps", med["zero_page"], sem["zero_page"], "measured: read fault on a "
        "fresh private page (maps the zero page), per page")
    put("cow_copies", med["cow"], sem["cow"], "measured: write fault on a page shared "
        "with a live child (copy-on-write copy), per page")
    put("cow_reuses", med["cow_reuse"], sem["cow_reuse"], "measured: write fault on a "
        "write-protected page whose child has exited (reused in place), per page")
    put("shmem_faults", med["shmem"], sem["shmem"], "measured: a child's read faults on "
        "MAP_SHARED pages fork did not copy, per page (fault-around maps up to 16 "
        "pages per fault)")
    m_src = (f"derived: one dependent cache miss ({miss:.1f} ns, pointer chase over "
             f"{prim['chase_bytes'] >> 20} MiB)")
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

    from lazyvm.costs import FORMAT_VERSION
    meta = {
        "host": _host(),
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": bool(quick), "repeats": reps,
        "statistic": "minimum over repeats",
        "fork_vma_no_anon_ns": float(b[1]), "exit_vma_no_anon_ns": float(e[1]),
        "fit": {"regressors": ["1", "V", "A", "P", "T"],
                "fork": _fit_meta(ff, fit_res, y_fork, "fork_ns"),
                "exit": _fit_meta(fe, fit_res, y_exit, "exit_ns")},
        "worker_base": {x: bare[x] for x in "VAPT"},
        "fit_pinned_at_0": pinned,
        "faults": {k: {"min_ns": med[k], "se_ns": sem[k], "samples": fl[k]}
                   for k in med},
        "munmap_exclusive_ns_per_page": med["munmap_dense"],
        "munmap_exclusive_ns_per_table": med["munmap_sparse"],
        "primitives": {"cache_miss_ns": miss, "cache_miss_se": miss_se,
                       "line_write_ns": line, "line_write_se": line_se, **prim},
    }
    prof = Profile(name="host", costs=c, uncertainty=u, source=s, version=FORMAT_VERSION,
                   description=f"this machine's kernel ({meta['host'].get('kernel', '?')},"
                   f" {meta['host'].get('cpu_model', '?')}), made by lazyvm calibrate",
                   meta=meta)
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
            "dof": int(f["dof"]),
            "rows": [{"shape": r["name"], **{x: r[x] for x in "VAPT"},
                      "ns": float(yy), "median_ns": _median(r[key]), "residual_ns": float(res),
                      "rel_residual": float(rel)}
                     for r, yy, res, rel in zip(rows, y, f["residuals"],
                                                f["rel_residuals"])]}


def _host():
    try:
        from lazyvm.measure.host import machine_description
        return machine_description()
    except Exception as e:                  # the description is informative only
        return {"error": str(e)}


def predict_fork_ns(profile, V, A, P, T):
    """Predicted ns of a copy fork of a process with V VMAs (A of them with an
    anon_vma), P copied PTEs and T tables (each both copied and allocated)."""
    c = profile.costs
    plain = profile.meta.get("fork_vma_no_anon_ns", c["fork_vmas"])
    return (c["forks_copy"] + plain * (V - A) + c["fork_vmas"] * A
            + c["ptes_copied"] * P + (c["tables_copied"] + c["tables_allocated"]) * T)


def lazyvm_fork_counts(shape):
    """The event counts of a copy fork, in lazyvm (x86_64, no rmap, no contents), of a
    process holding `shape` (the mappings the worker adds, built the same way), or
    None when this lazyvm has no x86_64 layout."""
    from lazyvm import Machine
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
        import numpy as np
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
    from lazyvm.costs import EVENTS
    return {e: int(after[e]) - int(before[e]) for e in EVENTS if e in after}


def validate_rows(profile, results, base=None, shapes=None):
    """Predicted against measured fork of each held-out result.  "predicted_ns" prices
    the worker's own counts (V, A, P, T); with `base` (the bare worker's V, A, P, T)
    and `shapes`, "lazyvm_ns" prices lazyvm's own event counts of the shape
    (profile.kernel_ns, as Machine(costs=...) does) plus the bare worker."""
    rows = []
    for k, r in enumerate(results):
        pred = predict_fork_ns(profile, r["V"], r["A"], r["P"], r["T"])
        meas = _stat(r["fork_ns"])
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
                     "error": (pred - meas) / meas})
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
           ""]
    for which in ("fork", "exit"):
        f = meta["fit"][which]
        terms = " + ".join(f"{c:.{1 if n != 'P' else 2}f} (+-{e:.{1 if n != 'P' else 2}f}) {n}"
                           for c, e, n in zip(f["coef"][1:], f["se"][1:], "VAPT"))
        out.append(f"{which} fit: ns = {f['coef'][0]:.0f} (+-{f['se'][0]:.0f}) + {terms}"
                   f"   [{f['dof']} dof]")
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
    out = ["held-out shapes (not in the fit): predicted vs measured copy fork (measured: "
           "minimum, median and maximum over the repeats)",
           f"  {'shape':<26} {'V':>5} {'A':>5} {'P':>7} {'T':>5} {'predicted':>11} "
           f"{'measured':>11} {'median':>9} {'max':>9}  error"]
    for r in rows:
        out.append(f"  {r['shape']:<26} {r['V']:>5} {r['A']:>5} {r['P']:>7} {r['T']:>5} "
                   f"{r['predicted_ns'] / 1e3:>8.1f} us {r['measured_ns'] / 1e3:>8.1f} us "
                   f"{r['measured_median_ns'] / 1e3:>9.1f} {r['measured_max_ns'] / 1e3:>9.1f}"
                   f"  {100 * r['error']:+.1f}%")
    errs = sorted(abs(r["error"]) for r in rows)
    import statistics
    out.append(f"  median |error| {100 * statistics.median(errs):.1f}%, largest "
               f"{100 * errs[-1]:.1f}%  (target: 15% median, 30% largest)")
    if all("lazyvm_ns" in r for r in rows):
        out.append("the same shapes simulated in lazyvm (x86_64, copy fork), its event "
                   "counts priced by the profile, plus the bare worker:")
        for r in rows:
            c = r["lazyvm_counts"]
            out.append(f"  {r['shape']:<26} fork_vmas={c.get('fork_vmas', 0):>5} "
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


if __name__ == "__main__":
    worker_main()
