"""Property: one corrupted entry never crashes the core.  Each case corrupts one entry
of one table (a random value, a bit flip, a frame beyond memory, a swap offset beyond
the swap area) in a random layout, fork mode (copy, share, odf), accounting, THP and
rmap setting, then forks, writes from
each side, reclaims, munmaps and exits.  Every error must be a LazyVMError; the child
process running the cases must end normally (a segfault or a hang fails the test).

LAZYVM_FUZZ_CASES sets the number of cases (the default keeps the suite quick)."""
import os
import subprocess
import sys

from subproc import LAZYVM_ENV, NEUTRAL_CWD

CASES = int(os.environ.get("LAZYVM_FUZZ_CASES", "48"))

CHILD = r"""
import random, sys
import numpy as np
import lazyvm
from lazyvm import LazyVMError, Machine

PAGE = 4096
seed, cases = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
errors = 0

def attempt(f, *a):
    global errors
    try:
        return f(*a)
    except LazyVMError:
        errors += 1
        return None

for case in range(cases):
    layout = rng.choice(("i386", "pae", "x86_64"))
    mode = rng.choice(("copy", "share", "odf"))
    rmap = rng.random() < 0.5
    accounting = rng.choice(("lazy", "eager"))
    thp = "never" if layout == "i386" else rng.choice(("never", "always"))
    m = Machine(memory=24 << 20, layout=layout, fork_mode=mode, rmap=rmap, swap=1 << 20,
                accounting=accounting, thp=thp)
    p = m.spawn()
    npages = rng.choice((8, 64, 600))
    a = p.mmap(npages * PAGE)
    for k in range(npages):
        if rng.random() < 0.8:
            p.write(a + k * PAGE, bytes([k & 255]) * 16)
    if rng.random() < 0.3:
        attempt(m.reclaim, rng.randint(1, 8))     # some swap entries
    # one entry of one table on the walk of a random page
    target = a + rng.randrange(npages) * PAGE
    walk = m._core.walk(p.pgd, target)
    level, t, i, e = rng.choice(walk)
    wide = m._core.wide
    bits = 64 if wide else 32
    nframes = m._core.nframes
    kind = rng.choice(("random", "flip", "frame", "swap", "zero"))
    if kind == "random":
        v = rng.getrandbits(bits)
    elif kind == "flip":
        v = e ^ (1 << rng.randrange(bits))
    elif kind == "frame":
        v = ((nframes + rng.randrange(1 << 20)) << 12) | (e & 0xFFF) | 0x1
    elif kind == "swap":
        v = (rng.randrange(1, 1 << 24) << 8) & ~0x81
    else:
        v = 0
    v &= (1 << bits) - 1
    view = m._core.physical.view("<u8" if wide else "<u4")
    view[t * (512 if wide else 1024) + i] = v
    c = attempt(p.fork)
    for q in (p, c):
        if q is not None and q.alive:
            for k in rng.sample(range(npages), min(npages, 6)):
                attempt(q.write, a + k * PAGE, b"w")
                attempt(q.read, a + k * PAGE, 3)
    attempt(m.reclaim, rng.randint(1, 16))
    for q in (c, p):
        if q is not None and q.alive:
            attempt(q.munmap, a, rng.randrange(1, npages + 1) * PAGE)
            attempt(q.touch, a, npages * PAGE)
    attempt(m.check)
    for q in (c, p):
        if q is not None and q.alive:
            attempt(q.exit)
print("OK", cases, errors)
"""


def test_one_corrupted_entry_never_crashes_the_core():
    seed = int(os.environ.get("LAZYVM_FUZZ_SEED", "1"))
    proc = subprocess.run([sys.executable, "-c", CHILD, str(seed), str(CASES)],
                          cwd=NEUTRAL_CWD, env=LAZYVM_ENV, capture_output=True, text=True,
                          timeout=60 + 2 * CASES)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    words = proc.stdout.split()
    assert words[0] == "OK" and int(words[1]) == CASES, proc.stdout
