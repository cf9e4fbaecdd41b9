"""The measuring worker of `lazyvm calibrate`: this file run as a script with
``python -I -S``, standard library only (isolated: it cannot import lazyvm), no threads,
a few dozen VMAs.  It reads a JSON list of jobs on stdin and writes one JSON line per
job: fork timings of shapes chosen to separate the costs (job_fork) and the fault
passes (job_faults).  It is not a minimal process, so every fork is reported with the
counts of what the kernel copies for it, read from /proc/self/smaps and
/proc/self/pagemap just before (:func:`counts`):

    V  VMAs (every line of /proc/self/maps but [vsyscall], which is not in the mm)
    P  present PTEs in the VMAs fork copies (since Linux 2.6.14 only those with an
       anon_vma, or PFN/mixed maps: smaps "Anonymous" > 0 or VmFlags pf/mm)
    T  page tables below the pgd those PTEs sit in (PTE tables: distinct 2 MiB
       regions; PMD tables: distinct 1 GiB regions; PUD tables: distinct 512 GiB)

and A, the VMAs with an anon_vma (fork also duplicates their anon_vma chain).
Shapes (private anonymous memory, MAP_PRIVATE|MAP_ANONYMOUS, MADV_NOHUGEPAGE, written
one byte per page; never mmap.mmap(-1, n), which is MAP_SHARED and whose PTEs fork skips):
bare; dense pages (per PTE); one page per 2 MiB (per table); many one-page VMAs, left
untouched (per VMA); the fault passes (demand-zero, zero page, copy-on-write, reuse,
shmem) and munmap.  The child's exit is timed from the fork's return until the child is
reaped.  :func:`counts` also serves lazyvm compare, for the process it forks.
"""


import json
import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE                   # the host's page, which the worker measures
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


def counts(pid="self"):
    """(V, A, P, T) of this process (or of process `pid`) now (see the module
    docstring)."""
    vmas, copied = 0, []
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
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
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
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


def llc_bytes():
    """The size of the last-level cache (the highest level in sysfs), or 32 MiB when
    sysfs does not say."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    best = (0, 0)
    try:
        for d in os.listdir(base):
            if not d.startswith("index"):
                continue
            with open(os.path.join(base, d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(base, d, "size")) as f:
                text = f.read().strip()
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            size = int(text.rstrip("KMG")) * mult
            best = max(best, (level, size))
    except (OSError, ValueError):
        pass
    return best[1] or (32 << 20)


class Evictor:
    """A MAP_SHARED anonymous buffer (fork copies none of its PTEs, and smaps counts
    none of it as Anonymous) read end to end before each timed fork, so that the fork
    finds its page tables and struct pages out of the cache, as a fork larger than the
    cache does: the cold convention."""

    def __init__(self, nbytes):
        self.buf = mmap.mmap(-1, nbytes) if nbytes else None
        if self.buf is not None:
            for off in range(0, nbytes, PAGE):
                self.buf[off] = 1

    def __call__(self):
        if self.buf is not None:
            self.buf.find(b"\x02")          # reads every byte: memchr, no allocation

    def close(self):
        if self.buf is not None:
            self.buf.close()


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


def job_fork(shape, repeats, warmup=1, execs=0, evict=0):
    """Fork `repeats` times.  fork_ns: the CPU time of the forking thread across
    os.fork() (CLOCK_THREAD_CPUTIME_ID: the kernel's work for the fork, without the time
    other work on the host preempts it; fork_wall_ns beside it).  exit_ns: the child
    waits on a pipe, reads its own CPU clock, then _exit()s; the CPU time its rusage
    reports beyond that reading is its exit.  With execs, fork_exec_ns: the whole CPU
    time of a child that execs /bin/true, and fork_child_ns: that of a child that exits
    at once, both from the rusage of wait4.  With evict (bytes), a buffer that size is
    read before each timed fork (Evictor)."""
    ev = Evictor(evict)
    sh = Shape(**shape)
    v, a, p, t = counts()
    fork_ns, wall_ns, exit_ns, exec_ns, child_ns = [], [], [], [], []
    r, w = os.pipe()
    br, bw = os.pipe()
    for k in range(warmup + repeats):
        ev()
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
    ev.close()
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


if __name__ == "__main__":
    worker_main()
