"""THP measured against lazyvm's prediction: the counts of a fork with and without huge
pages (:func:`fork_counts`), their price, and ``lazyvm calibrate --thp``
(:func:`calibrate_thp`), which puts the costs :mod:`lazyvm.measure.thp` measures into the
host profile.  Kept apart from that module, which also runs as a standard-library-only
worker."""
from __future__ import annotations

from ..costs import Profile
from ..machine import Machine
from .thp import default_jobs, measure, summary, thp_costs, thp_mode


def fork_counts(size, thp):
    """lazyvm's counts of a copy fork of a process holding `size` bytes written in one
    private anonymous VMA at a 512 GiB boundary (x86_64, THP madvised or not), beyond
    the fork of the same process without it: {event: count}."""
    base = 1 << 39

    def one(with_mapping):
        m = Machine(memory=size + (64 << 20), layout="x86_64", contents=False,
                    rmap=False, fork_mode="copy", thp="madvise" if thp else "never")
        p = m.spawn()
        if with_mapping:
            a = p.mmap(size, addr=base)
            if thp:
                p.madvise(a, size, "hugepage")
            p.touch(a, size, write=True)
        before = m._counters()
        p.fork()
        after = m._counters()
        return {k: after[k] - before[k] for k in after}

    full, bare = one(True), one(False)
    return {k: full[k] - bare[k] for k in full if full[k] != bare[k]}


def predicted_fork_ns(profile, size, thp=True):
    """(ns, counts): the predicted kernel time of fork_counts(size, thp)."""
    counts = fork_counts(size, thp)
    return profile.kernel_ns(counts), counts


def validate_fork(measured, profile):
    """Rows of predicted against measured fork (CPU ns beyond the worker's bare fork)
    at each measured size, THP and 4 KiB: {"size", "thp", "measured_ns" (spread),
    "predicted_ns", "ratio" (predicted / measured median), "child_vm_pte_kb"}."""
    s = summary(measured)
    bare = s["bare"]["median"]
    rows = []
    for (size, thp), f in sorted(s["fork"].items()):
        pred, counts = predicted_fork_ns(profile, size, thp)
        meas = {k: (v - bare if k != "n" else v) for k, v in f["cpu_ns"].items()}
        rows.append({"size": size, "thp": thp, "huge_kb": f["huge_kb"],
                     "measured_ns": meas, "predicted_ns": pred, "counts": counts,
                     "ratio": pred / meas["median"] if meas["median"] > 0 else None,
                     "wall_ns": f["wall_ns"], "child_vm_pte_kb": f["child_vm_pte_kb"],
                     "parent_vm_pte_kb": f["parent_vm_pte_kb"]})
    return rows


def calibrate_thp(profile_path, quick=False, progress=None):
    """`lazyvm calibrate --thp`: measure (default_jobs), put thp_splits and thp_faults
    into the profile at profile_path (which `lazyvm calibrate` wrote) and save it; the
    raw figures and the fork validation go to its meta["thp"].  Returns (profile, rows)."""
    prof = Profile.load(profile_path)
    if progress:
        progress(f"measuring THP (the kernel's THP mode: {thp_mode()})")
    measured = measure(default_jobs(quick=quick))
    for e, (ns, se, src) in thp_costs(measured, prof.costs).items():
        prof.costs[e], prof.uncertainty[e], prof.source[e] = ns, se, src
    rows = validate_fork(measured, prof)
    prof.meta["thp"] = {"measured": measured, "validate_fork": rows}
    prof.save(profile_path)
    return prof, rows


def format_validate(rows):
    """predicted against measured fork, one line per size and page size."""
    lines = ["fork beyond the bare worker's (CPU time), predicted against measured:"]
    for r in rows:
        m = r["measured_ns"]
        lines.append(f"  {r['size'] >> 20:>6} MiB {'THP ' if r['thp'] else '4 KiB'}: "
                     f"measured {m['median'] / 1e6:.3f} ms (min {m['min'] / 1e6:.3f}, max "
                     f"{m['max'] / 1e6:.3f}, n={m['n']}), predicted "
                     f"{r['predicted_ns'] / 1e6:.3f} ms ({r['ratio']:.2f}x); child VmPTE "
                     f"{r['child_vm_pte_kb']} kB")
    return "\n".join(lines)
