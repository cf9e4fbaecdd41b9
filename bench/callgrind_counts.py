"""Instruction counts of the core's bulk operations, under callgrind.

    python bench/callgrind_counts.py [--tree DIR ...] [--layout i386 ...] [--op copy ...]
                                     [--pages 262144] [--rmap 0|1]

For each tree (a checkout with its core built in place; default: this one), layout and
operation, a child Python runs under `valgrind --tool=callgrind` with collection off
except inside the Core method that does the operation (--toggle-collect on its Python
wrapper, so the count is that one call: argument parsing, the walk, the leaf loops).
The setup (a process with `pages` pages mapped and written) is not counted.  Counts are
repeatable to a few instructions, so two builds compare where timing is too noisy.

Operations (the Core method counted):
  copy    fork in copy mode               Core.fork_copy
  share   fork in share mode              Core.fork_share
  exit    exit of a copy-forked child     Core.exit_mm
  fault   touch(write) of fresh pages     Core.fault_range
  trace   replay of one write per page    Core.fault_pages (the trace engine)

Prints one row per run: tree, layout, op, rmap, instructions, instructions per page.
Trees older than 0.2.0 (one layout, no replay) run what they have.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

OPS = {"copy": "fork_copy", "share": "fork_share", "exit": "exit_mm",
       "fault": "fault_range", "trace": "fault_pages"}


def child(op, layout, pages, rmap):
    """Runs under callgrind: set up, then the one operation."""
    import numpy as np
    import lazyvm
    kw = dict(memory=(pages + 16384) * 4096 + (64 << 20), rmap=bool(rmap))
    try:
        m = lazyvm.Machine(layout=layout, contents=False, **kw)
    except TypeError:                       # 0.1.0: i386 only, always with contents
        if layout != "i386":
            print("SKIP")
            return
        m = lazyvm.Machine(**kw)
    p = m.spawn()
    a = p.mmap(pages * 4096)
    if op == "fault":
        p.touch(a, pages * 4096, write=True)          # counted
        return
    if op == "trace":
        if not hasattr(m, "replay"):
            print("SKIP")
            return
        ev = np.zeros((pages, 4), dtype=np.int64)
        ev[:, 0] = p.pid
        ev[:, 1] = 1
        ev[:, 2] = a + 4096 * np.arange(pages)
        m.replay(ev)                                   # counted
        return
    p.touch(a, pages * 4096, write=True)
    if op == "copy":
        p.fork("copy")                                 # counted
    elif op == "share":
        p.fork("share")                                # counted
    elif op == "exit":
        c = p.fork("copy")
        c.exit()                                       # counted


def run(tree, op, layout, pages, rmap):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONHASHSEED="0")
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               "--collect-atstart=no", f"--toggle-collect=__pyx_pw_*Core_*{OPS[op]}",
               sys.executable, os.path.abspath(__file__), "--child", op, layout,
               str(pages), str(rmap)]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if "SKIP" in proc.stdout:
            return None
        if proc.returncode != 0:
            raise RuntimeError(f"{tree} {op} {layout}: {proc.stderr[-2000:]}")
        text = open(out).read()
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)",
                                                                      text, re.M)
        return int(m.group(1))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        op, layout, pages, rmap = sys.argv[2:6]
        child(op, layout, int(pages), int(rmap))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--tree", action="append", help="checkout(s) to measure")
    ap.add_argument("--layout", action="append", choices=["i386", "pae", "x86_64"])
    ap.add_argument("--op", action="append", choices=sorted(OPS))
    ap.add_argument("--pages", type=int, default=262144)
    ap.add_argument("--rmap", type=int, action="append", choices=[0, 1])
    args = ap.parse_args()
    trees = args.tree or [here]
    print(f"{'tree':<28} {'layout':<7} {'op':<6} rmap {'instructions':>13} {'per page':>9}")
    for layout in args.layout or ["i386", "pae", "x86_64"]:
        for op in args.op or list(OPS):
            for rmap in args.rmap or [0]:
                for tree in trees:
                    n = run(tree, op, layout, args.pages, rmap)
                    if n is None:
                        continue
                    print(f"{tree:<28} {layout:<7} {op:<6} {rmap:>4} {n:>13,} "
                          f"{n / args.pages:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
