"""This machine's kernel with transparent huge pages: fork, split and fault, measured with
real processes.

Every job runs in a worker (this file run as ``python -I -S``: standard library only, a
small process, so that its own fork cost stays small beside the mapping's):

- :func:`job_fork`: a private anonymous mapping of ``size`` bytes, ``MADV_HUGEPAGE``
  (``thp=True``) or ``MADV_NOHUGEPAGE``, written one byte per 4 KiB page; the parent then
  forks ``repeats`` times.  Each fork is timed as the forking thread's CPU time
  (CLOCK_THREAD_CPUTIME_ID) and as wall time; the child reads its own ``VmPTE`` and
  reports it through a pipe, then exits.  The job also reports how much of the mapping
  is PMD-mapped (``AnonHugePages`` of its smaps entry) and the parent's ``VmPTE``.
- :func:`job_split`: a THP mapping is forked; while the child waits, the parent writes one
  byte in each 2 MiB.  Since Linux 5.8 each write splits the PMD mapping (withdrawing the
  table fork deposited) and copies one 4 KiB page; before 5.8 it copied 2 MiB.
- :func:`job_fault`: one write per 2 MiB of a fresh ``MADV_HUGEPAGE`` mapping: each is a
  huge-page fault (a 2 MiB page allocated and zeroed, a PTE table deposited); beside it
  the same number of 4 KiB demand-zero faults.

:func:`measure` runs them in a worker and returns the samples; ``lazyvm calibrate
--thp`` turns them into the profile's THP costs (:func:`thp_costs`,
:func:`lazyvm.measure.thp_model.calibrate_thp`) and checks the predicted fork against them
(:func:`lazyvm.measure.thp_model.validate_fork`).  Whether THP is on at
all is :func:`thp_mode` (``/sys/kernel/mm/transparent_hugepage/enabled``): with ``never``
the THP jobs report ``huge_kb == 0`` and their figures are 4 KiB ones.
"""

import json
import mmap
import os
import sys
import time

PAGE = 4096
HUGE = 2 << 20
_ANON = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
_cpu = time.thread_time_ns
_clock = time.perf_counter_ns
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path=THP_ENABLED):
    """"always", "madvise" or "never" (the bracketed word of the sysfs file), or None when
    the kernel has no THP."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if "[" not in text:
        return None
    return text[text.index("[") + 1:text.index("]")]


def status_kb(key, pid="self"):
    """A kB field of /proc/PID/status (VmPTE, VmRSS), or None."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def smaps_kb(lo, hi, key, pid="self"):
    """The sum of a kB field over the smaps entries of the VMAs that overlap [lo, hi)."""
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start < hi and end > lo
            elif inside and line.startswith(key + ":"):
                total += int(line.split()[1])
    return total


def address_of(m):
    """The start address of an mmap object."""
    import ctypes
    return ctypes.addressof(ctypes.c_char.from_buffer(m))


GIB = 1 << 30


def mapping(size, thp):
    """A private anonymous mapping of size bytes starting at a 1 GiB boundary (a larger
    one is made and the ends beyond the aligned part are left untouched), so that its
    page tables are its own: size / 2 MiB PTE tables and ceil(size / 1 GiB) PMD tables
    once written.  madvised HUGEPAGE or NOHUGEPAGE.  Returns (mmap object, offset of
    the aligned part)."""
    m = mmap.mmap(-1, size + GIB, flags=_ANON)
    base = address_of(m)
    off = (-base) % GIB
    m.madvise(mmap.MADV_HUGEPAGE if thp else mmap.MADV_NOHUGEPAGE, off, size)
    if not thp:
        m.madvise(mmap.MADV_NOHUGEPAGE)
    return m, off


def _write_pages(m, off, size, step=PAGE):
    for o in range(off, off + size, step):
        m[o] = 1


def _vma_huge_kb(m, off):
    """AnonHugePages of the VMAs holding the mapping (madvise may have split it)."""
    base = address_of(m)
    return smaps_kb(base, base + len(m), "AnonHugePages")


def _reap(pid):
    _, status = os.waitpid(pid, 0)
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"child ended with status {status:#x}")


def job_fork(size, thp, repeats, warmup=1):
    """Fork a process holding `size` written bytes (THP or 4 KiB) `repeats` times."""
    pte_before = status_kb("VmPTE")
    m, off = mapping(size, thp)
    _write_pages(m, off, size)
    huge_kb = _vma_huge_kb(m, off)
    parent_pte = status_kb("VmPTE")
    cpu, wall, child_pte = [], [], []
    for k in range(warmup + repeats):
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        t0 = _clock()
        c0 = _cpu()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, b"%d\n" % status_kb("VmPTE"))
            os.read(go_r, 1)
            os._exit(0)
        c1 = _cpu()
        t1 = _clock()
        os.close(w)
        pte = int(os.read(r, 32))
        parent_after = status_kb("VmPTE")
        os.write(go_w, b"x")
        _reap(pid)
        for fd in (r, go_r, go_w):
            os.close(fd)
        if k >= warmup:
            cpu.append(c1 - c0)
            wall.append(t1 - t0)
            child_pte.append(pte)
    m.close()
    return {"size": size, "thp": thp, "huge_kb": huge_kb, "vm_pte_kb_before": pte_before,
            "parent_vm_pte_kb": parent_pte,
            "parent_vm_pte_kb_after": parent_after, "child_vm_pte_kb": child_pte,
            "fork_cpu_ns": cpu, "fork_wall_ns": wall}


def job_bare(repeats, warmup=1):
    """Fork of the worker alone (the fixed cost beside the mapping's)."""
    cpu = []
    for k in range(warmup + repeats):
        c0 = _cpu()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        c1 = _cpu()
        _reap(pid)
        if k >= warmup:
            cpu.append(c1 - c0)
    return {"fork_cpu_ns": cpu}


def job_split(size, thp, repeats):
    """Per write (ns, CPU) of one byte per 2 MiB of a mapping shared with a live child:
    a PMD split and a 4 KiB copy-on-write with THP (Linux >= 5.8), a copy-on-write of one
    4 KiB page without.  Also the same pass again (no fault) to subtract."""
    per_write, copied_kb = [], []
    for _ in range(repeats):
        m, off = mapping(size, thp)
        _write_pages(m, off, size)
        huge_before = _vma_huge_kb(m, off)
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.read(go_r, 1)
            os._exit(0)
        n = size // HUGE
        c0 = _cpu()
        for o in range(off, off + size, HUGE):
            m[o] = 2
        c1 = _cpu()
        for o in range(off, off + size, HUGE):
            m[o] = 3
        c2 = _cpu()
        huge_after = _vma_huge_kb(m, off)
        os.write(go_w, b"x")
        _reap(pid)
        os.close(go_r)
        os.close(go_w)
        per_write.append(((c1 - c0) - (c2 - c1)) / n)
        copied_kb.append([huge_before, huge_after])
        m.close()
    return {"size": size, "thp": thp, "write_ns": per_write, "huge_kb_before_after": copied_kb}


def job_fault(size, repeats):
    """Per fault (ns, CPU): one write per 2 MiB of a fresh THP mapping (a huge fault
    each), and one write per 4 KiB page of a fresh 4 KiB mapping (a demand-zero fault
    each), each minus the same pass again."""
    huge, small, huge_kb = [], [], []
    for _ in range(repeats):
        m, off = mapping(size, True)
        c0 = _cpu()
        _write_pages(m, off, size, HUGE)
        c1 = _cpu()
        _write_pages(m, off, size, HUGE)
        c2 = _cpu()
        huge.append(((c1 - c0) - (c2 - c1)) / (size // HUGE))
        huge_kb.append(_vma_huge_kb(m, off))
        m.close()
        m, off = mapping(size, False)
        c0 = _cpu()
        _write_pages(m, off, size)
        c1 = _cpu()
        _write_pages(m, off, size)
        c2 = _cpu()
        small.append(((c1 - c0) - (c2 - c1)) / (size // PAGE))
        m.close()
    return {"size": size, "huge_fault_ns": huge, "small_fault_ns": small, "huge_kb": huge_kb}


JOBS = {"fork": job_fork, "bare": job_bare, "split": job_split, "fault": job_fault}


def worker_main():
    """Run the JSON list of jobs on stdin, one JSON line out per job."""
    jobs = json.loads(sys.stdin.read())
    for job in jobs:
        kind = job.pop("kind")
        res = JOBS[kind](**job)
        res["kind"] = kind
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


def default_jobs(sizes=(1 << 30, 4 << 30), repeats=5, quick=False):
    """The jobs `measure` runs: bare fork, fork at each size with THP and with 4 KiB,
    splits and faults over 256 MiB."""
    if quick:
        sizes, repeats = (64 << 20,), 3
    jobs = [{"kind": "bare", "repeats": repeats * 2}]
    for s in sizes:
        for thp in (True, False):
            jobs.append({"kind": "fork", "size": s, "thp": thp, "repeats": repeats})
    probe = min(256 << 20, min(sizes))
    for thp in (True, False):
        jobs.append({"kind": "split", "size": probe, "thp": thp, "repeats": repeats})
    jobs.append({"kind": "fault", "size": probe, "repeats": repeats})
    return jobs


def measure(jobs=None, timeout=1800):
    """Run `jobs` (default_jobs()) in a fresh worker; return {"thp_mode", "kernel",
    "loadavg_before_after", "results": [one dict per job]}."""
    import subprocess
    jobs = default_jobs() if jobs is None else jobs
    load0 = os.getloadavg()
    proc = subprocess.run([sys.executable, "-I", "-S", os.path.abspath(__file__)],
                          input=json.dumps(jobs), capture_output=True, text=True,
                          timeout=timeout, env={"PATH": os.environ.get("PATH", "")})
    if proc.returncode != 0:
        raise RuntimeError("the THP measuring process failed: "
                           + (proc.stderr.strip().splitlines() or ["?"])[-1])
    return {"thp_mode": thp_mode(), "kernel": os.uname().release,
            "loadavg_before_after": [list(load0), list(os.getloadavg())],
            "results": [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]}


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _spread(v):
    """{"min", "median", "max", "n"} of samples."""
    return {"min": min(v), "median": _median(v), "max": max(v), "n": len(v)}


def summary(measured):
    """The figures of a measure() result: {"fork": {(size, thp): {...}}, "bare", "split",
    "fault"}, each timed figure as a spread (ns)."""
    out = {"fork": {}, "split": {}, "fault": None, "bare": None}
    for r in measured["results"]:
        if r["kind"] == "bare":
            out["bare"] = _spread(r["fork_cpu_ns"])
        elif r["kind"] == "fork":
            out["fork"][(r["size"], r["thp"])] = {
                "cpu_ns": _spread(r["fork_cpu_ns"]), "wall_ns": _spread(r["fork_wall_ns"]),
                "huge_kb": r["huge_kb"], "parent_vm_pte_kb": r["parent_vm_pte_kb"],
                "vm_pte_kb_before": r.get("vm_pte_kb_before"),
                "child_vm_pte_kb": _median(r["child_vm_pte_kb"])}
        elif r["kind"] == "split":
            out["split"][r["thp"]] = {"write_ns": _spread(r["write_ns"]),
                                      "huge_kb_before_after": r["huge_kb_before_after"][0]}
        elif r["kind"] == "fault":
            out["fault"] = {"huge_ns": _spread(r["huge_fault_ns"]),
                            "small_ns": _spread(r["small_fault_ns"]),
                            "huge_kb": _median(r["huge_kb"])}
    return out


def thp_costs(measured, costs):
    """The THP events measured here, from a measure() result and the profile's costs of
    the events they are measured beside: {event: (ns, se, source)}.

    - thp_splits: a write after fork to a THP mapping (a split and a 4 KiB copy-on-write)
      minus a write after fork to a 4 KiB mapping (the copy-on-write fault alone), each
      the minimum over its repeats (the host's other work only adds time);
    - thp_faults: a write to a fresh 2 MiB of a MADV_HUGEPAGE mapping (allocate, clear
      2 MiB, deposit a table), minus the fault's base cost (`faults`) and the deposited
      table (lazyvm counts it in `tables_allocated`), the minimum over its repeats.
    A THP fork is priced by the 4 KiB costs alone (per huge PMD, the table it deposits),
    so the THP fork this machine measures checks the model rather than fits it
    (validate_fork).
    Raises ValueError when the kernel mapped no huge page (THP off, or none to be had)."""
    s = summary(measured)
    sp = s["split"]
    if not sp.get(True) or sp[True]["huge_kb_before_after"][0] == 0:
        raise ValueError(f"no huge page was mapped (THP is {measured.get('thp_mode')!r} in "
                         f"{THP_ENABLED}): nothing to measure")
    w_thp, w_4k = sp[True]["write_ns"], sp[False]["write_ns"]
    split = w_thp["min"] - w_4k["min"]
    split_se = (w_thp["max"] - w_thp["min"]) / 2
    f = s["fault"]["huge_ns"]
    fault = f["min"] - costs["faults"] - costs["tables_allocated"]
    fault_se = (f["median"] - f["min"])
    n_split = measured_size = None
    for r in measured["results"]:
        if r["kind"] == "split":
            measured_size = r["size"]
            n_split = len(r["write_ns"])
    how = (f"measured on {measured.get('kernel', '?')} (THP {measured.get('thp_mode')}), "
           f"{measured_size >> 20} MiB, min of {n_split} repeats: ")
    return {
        "thp_splits": (round(split, 1), round(split_se, 1), how +
                       f"a write after fork to a THP mapping ({w_thp['min']:.0f} ns: split "
                       f"and 4 KiB copy) minus one to a 4 KiB mapping ({w_4k['min']:.0f} ns)"),
        "thp_faults": (round(max(fault, 0.0), 1), round(fault_se, 1), how +
                       f"a huge-page write fault ({f['min']:.0f} ns, median "
                       f"{f['median']:.0f}) minus faults and tables_allocated (the deposit)"),
    }


if __name__ == "__main__":
    worker_main()
