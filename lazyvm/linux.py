"""This machine's own fork(), measured on a real process, and a description of the host.

`lazyvm compare` sets the simulator beside the kernel it runs on: a private anonymous
mapping of N pages is touched page by page (so the parent holds N present 4 KiB PTEs and
N anonymous pages, as a simulated process does after ``touch``), then ``os.fork()`` is
timed in the parent.  The child calls ``os._exit(0)`` at once; the parent waits for it only
after taking the time, so the figure is the fork system call (copy_page_range over the
mapping, plus the fixed cost of duplicating a Python process) and not the child's exit.

Two traps this module steps around:

- ``mmap.mmap(-1, n)`` is MAP_SHARED anonymous memory (shmem).  Since Linux 2.6.14 fork
  does not copy the page tables of such a mapping at all (they are refaulted from shmem),
  so timing it would measure nothing.  The mapping here is MAP_PRIVATE | MAP_ANONYMOUS.
- With transparent huge pages a touched region may be mapped by 2 MiB PMDs, which fork
  copies one entry per 512 pages.  ``MADV_NOHUGEPAGE`` keeps it at 4 KiB PTEs.
"""

from __future__ import annotations

import gc
import mmap
import os
import platform
import statistics
import sys
import time

PAGE_SIZE = 4096

__all__ = ["measure_linux_fork", "LinuxMapping", "machine_description", "PAGE_SIZE"]


def _fork_once() -> tuple[int, int]:
    """Fork; the child exits at once.  Returns (ns spent in os.fork() in the parent,
    ns from before the fork until the child has been reaped)."""
    t0 = time.perf_counter_ns()
    pid = os.fork()
    if pid == 0:  # child: leave without running any Python clean-up
        os._exit(0)
    t1 = time.perf_counter_ns()
    _, status = os.waitpid(pid, 0)
    t2 = time.perf_counter_ns()
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        raise RuntimeError(f"forked child ended with status {status:#x}")
    return t1 - t0, t2 - t0


def _time_forks(repeats: int, warmup: int = 1) -> tuple[list[int], list[int]]:
    """Time `repeats` forks of this process after `warmup` untimed ones, with the
    garbage collector off.  Returns (fork ns list, fork-to-reaped ns list)."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(warmup):
            _fork_once()
        forks, waits = [], []
        for _ in range(repeats):
            f, w = _fork_once()
            forks.append(f)
            waits.append(w)
    finally:
        if was_enabled:
            gc.enable()
    return forks, waits


def _vm_status_kb(key: str) -> int | None:
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

        pte_before = _vm_status_kb("VmPTE")
        size = self.pages * PAGE_SIZE
        self._mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            try:
                self._mm.madvise(mmap.MADV_NOHUGEPAGE)
            except OSError:  # kernels without THP refuse the advice; then pages are 4 KiB
                pass
        t0 = time.perf_counter_ns()
        view = np.frombuffer(self._mm, dtype=np.uint8)
        view[::PAGE_SIZE] = 1  # one write per page: a present, writable, dirty PTE each
        del view  # an exported buffer would keep mmap.close() from unmapping
        self.touch_ns = time.perf_counter_ns() - t0
        pte_after = _vm_status_kb("VmPTE")
        if pte_before is not None and pte_after is not None:
            self.vmpte_kb = pte_after - pte_before
        return self

    def __exit__(self, *exc) -> None:
        if self._mm is not None:
            self._mm.close()
            self._mm = None


def measure_linux_fork(pages: int, repeats: int, warmup: int = 1) -> list[int]:
    """Fork this process `repeats` times while it holds `pages` touched private pages.

    Returns the ns each os.fork() took in the parent (after `warmup` untimed forks).
    ``pages=0`` gives the baseline: the cost of forking this Python process as it is.
    """
    with LinuxMapping(pages):
        forks, _ = _time_forks(repeats, warmup)
    return forks


def measure_linux(pages: int, repeats: int, warmup: int = 1) -> dict:
    """Baseline and N-page fork of this process, measured back to back.

    Returns a dict of figures (all ns unless named otherwise): ``baseline_ns`` (forks with
    no extra mapping), ``fork_ns`` (forks holding `pages` touched pages), ``fork_wait_ns``
    (fork until the child is reaped: fork + the child's exit + wakeup), their medians,
    ``ns_per_page`` = median(fork)/pages, ``ns_per_page_marginal`` =
    (median(fork) - median(baseline))/pages, ``touch_ns`` and ``vmpte_kb``.
    """
    base, base_wait = _time_forks(repeats, warmup)
    with LinuxMapping(pages) as lm:
        forks, waits = _time_forks(repeats, warmup)
    med = statistics.median(forks)
    med_base = statistics.median(base)
    out = {
        "pages": pages,
        "repeats": repeats,
        "fork_ns": forks,
        "fork_ns_median": med,
        "fork_wait_ns": waits,
        "fork_wait_ns_median": statistics.median(waits),
        "baseline_ns": base,
        "baseline_ns_median": med_base,
        "baseline_wait_ns_median": statistics.median(base_wait),
        "ns_per_page": med / pages if pages else None,
        "ns_per_page_marginal": (med - med_base) / pages if pages else None,
        "touch_ns": lm.touch_ns,
    }
    if lm.vmpte_kb is not None:
        out["vmpte_kb"] = lm.vmpte_kb
    return out


def _read_first(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpuinfo() -> dict:
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


def machine_description() -> dict:
    """What a reader needs to place the figures: platform, kernel, CPU, cores, memory,
    transparent-huge-page mode, Python and numpy versions."""
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
    return desc
