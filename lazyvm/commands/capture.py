"""``lazyvm capture``: record a live process's address space into a snapshot file."""

from __future__ import annotations

import sys
import time

from ..workloads.snapshot import SnapshotError, capture
from .common import UsageError, positive_float


def add_parser(sub) -> None:
    cp = sub.add_parser(
        "capture", help="record a live process's address space (and what it copies on "
                        "write across its next fork)",
        description="Read /proc/PID/maps, /proc/PID/pagemap and /proc/PID/status into a "
                    "snapshot file; with --cow, wait for the process's next fork and "
                    "record the pages copied on write until the child exits.")
    cp.add_argument("pid", metavar="PID", help="the process to capture")
    cp.add_argument("--out", "-o", metavar="FILE", required=True,
                    help="snapshot file to write (numpy .npz, docs/SNAPSHOT.md)")
    cp.add_argument("--cow", action="store_true",
                    help="wait for the next fork and record the copy-on-write set")
    cp.add_argument("--timeout", metavar="S", type=positive_float, default=60.0,
                    help="seconds to wait for the fork and for the child (default 60)")
    cp.set_defaults(handler=cmd_capture)


def _pid(text):
    try:
        pid = int(text)
    except ValueError:
        raise UsageError(f"not a process id: {text!r}") from None
    if pid <= 0:
        raise UsageError(f"not a process id: {text!r}")
    return pid


def cmd_capture(args) -> int:
    pid = _pid(args.pid)
    t0 = time.perf_counter()

    def ready():                       # the watch for the fork has begun
        print(f"capture: waiting up to {args.timeout:g} s for process {pid} to fork",
              file=sys.stderr, flush=True)
    try:
        snap = capture(pid, cow=args.cow, timeout=args.timeout, on_ready=ready)
        try:
            snap.save(args.out)
        except OSError as e:
            raise SnapshotError(f"cannot write {args.out}: {e.strerror}") from None
    except SnapshotError as e:
        raise UsageError(str(e)) from None
    h = snap.host()
    print(f"captured {h['name']} (pid {pid}): {len(snap.vma_start)} VMAs, "
          f"{h['present_pages']} present pages ({h['zero_pages']} ZERO_PAGE), "
          f"VmPTE {h['vm_pte_kb']} kB, RSS {h['rss_pages']} pages, "
          f"read in {snap.meta['capture_s']:.3f} s"
          + (f"; copied on write while child {snap.meta['child_pid']} lived: "
             f"{h['cow_pages']} pages (parent {snap.meta['cow_by_parent']}, child "
             f"{snap.meta['cow_by_child']}, unknown {snap.meta['cow_side_unknown']}), "
             f"{snap.meta['polls']} polls" if args.cow else "")
          + f" in {time.perf_counter() - t0:.2f} s -> {args.out}")
    for note in snap.meta.get("notes", []):
        print(f"note: {note}")
    return 0
