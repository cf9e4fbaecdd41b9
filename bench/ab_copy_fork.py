"""Time the copy fork of two builds, alternating them: A B A B ... in one run.

    python bench/ab_copy_fork.py TREE_A TREE_B [--rounds 4] [--reps 7] [--pages 262144]

Each round runs each tree's child process once (a checkout with its core built in
place; 0.1.0's flat package works too); a child sets up one i386 process with `pages`
pages written (rmap off), then times `reps` copy forks (each child exits untimed) and
prints nanoseconds per page.  Prints min / median / max per tree over every fork, the
per-round medians, and the load average before and after.
"""
import argparse
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
import lazyvm
pages, reps, core = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "core"
kw = dict(memory=(pages + 16384) * 4096 + (64 << 20), rmap=False, fork_mode="copy")
m = lazyvm.Machine(**kw)
p = m.spawn()
a = p.mmap(pages * 4096)
p.touch(a, pages * 4096, write=True)
c = p.fork(); c.exit()                       # warm up
out = []
for _ in range(reps):
    if core:                                 # the compiled core's call alone
        t0 = time.perf_counter_ns()
        g = m._core.fork_copy(p.pgd, p._varr)
        t1 = time.perf_counter_ns()
        m._core.exit_mm(g, p._varr, True)
    else:
        t0 = time.perf_counter_ns()
        c = p.fork()
        t1 = time.perf_counter_ns()
        c.exit()
    out.append((t1 - t0) / pages)
print(" ".join(f"{x:.4f}" for x in out))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--pages", type=int, default=262144)
    ap.add_argument("--core", action="store_true",
                    help="time the core's fork_copy call alone, not Process.fork")
    args = ap.parse_args()
    load0 = os.getloadavg()
    allv = {t: [] for t in args.trees}
    rounds = {t: [] for t in args.trees}
    for r in range(args.rounds):
        for tree in args.trees:
            env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.pages), str(args.reps),
                                  "core" if args.core else "fork"],
                                 env=env, cwd="/", capture_output=True, text=True, check=True)
            vals = [float(x) for x in out.stdout.split()]
            allv[tree] += vals
            rounds[tree].append(statistics.median(vals))
    load1 = os.getloadavg()
    what = "Core.fork_copy" if args.core else "Process.fork"
    print(f"i386 copy fork ({what}) of {args.pages} pages, rmap off: ns per page, "
          f"{args.rounds} rounds x {args.reps} forks, alternating")
    for tree in args.trees:
        v = sorted(allv[tree])
        print(f"{tree:<24} min {v[0]:.3f}  median {statistics.median(v):.3f}  "
              f"max {v[-1]:.3f}   round medians "
              + " ".join(f"{x:.3f}" for x in rounds[tree]))
    a, b = (statistics.median(allv[t]) for t in args.trees)
    print(f"median ratio {args.trees[1]} / {args.trees[0]}: {b / a:.3f}")
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
