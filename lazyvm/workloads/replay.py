"""Replay of a captured address space: build it in a Machine (x86_64 at the real
addresses; i386 or pae relocated into 3 GiB, each VMA keeping its offset within its leaf
table's span), fork it in each configuration, write the recorded copy-on-write set and
record the counters beside the kernel's own figures (lazyvm.report.replay prints them).

    lazyvm replay FILE [--layout x86_64|i386|pae] [--costs PROFILE] [--json F] [--plot F]
"""

from __future__ import annotations

import time

import numpy as np

from .. import Machine
from ..costs import load_profile
from ..layout import LAYOUTS, PAGE_SIZE as PAGE
from ..machine import CONFIGS
from ..measure.fit import stretch
from ..measure.host import check_host_memory, memory_for, spread
from .snapshot import _NONE, F_PRESENT, LEAF_SPAN, SIDE_CHILD, SnapshotError

__all__ = ["replay", "load_costs"]


def _memory_for(snap, layout, npages_written):
    """Machine memory for the replay: data frames (with the copies), three sets of tables
    (parent, child, privatized), the boot frames and slack."""
    present = int(((snap.page_flags & F_PRESENT) != 0).sum())
    span = LEAF_SPAN[layout]
    leaf = len(np.unique(snap.page_addr // np.uint64(span))) + len(snap.vma_start)
    frames = present + 2 * npages_written + 4 * leaf + 512
    mem = frames * PAGE
    # The layout's own limit (lazyvm.layout): on x86_64 that is 2**44 bytes, the frames
    # a 32-bit frame number names, below the 2**46 of the contract.
    limit = LAYOUTS[layout].max_memory
    if mem > limit:
        raise SnapshotError(f"the replay needs {mem >> 20} MiB of simulated memory, more "
                            f"than {layout} allows ({limit >> 20} MiB)")
    try:
        check_host_memory(mem, "the replay")
    except ValueError as e:
        raise SnapshotError(str(e)) from None
    return memory_for(frames, layout)


def load_costs(costs):
    """The cost profile for a spec (name, path or Profile), or SnapshotError with the
    cost model's own sentence (no such profile, no host profile yet, bad JSON)."""
    try:
        return load_profile(costs)
    except ValueError as e:                       # costs.ProfileError is a ValueError
        raise SnapshotError(str(e)) from None


def _delta(a, b):
    return {k: b[k] - a.get(k, 0) for k in b if isinstance(b[k], int)}


def replay(snap, layout=None, costs=None, configs=None, repeats=3, use_trace=True):
    """Build, fork and write snap in each configuration; return a record (a dict: host,
    configs, layout, params, notes)."""
    layout = layout or "x86_64"
    if layout not in LAYOUTS:
        raise SnapshotError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    configs = list(configs or CONFIGS)
    for c in configs:
        if c not in CONFIGS:
            raise SnapshotError(f"unknown configuration {c!r}: use {', '.join(CONFIGS)}")
    extra = {"layout": layout, "contents": False}
    st = None
    if costs is not None:
        extra["costs"] = load_costs(costs)
        st = stretch(extra["costs"])      # the calibration's wall/CPU, or None
    wset = snap.cow_addr
    vid = snap.page_vma(wset)
    private_w = np.array([p[3] == "p" and "w" in p[:3] for p in snap.vma_perms], bool)
    writable = (vid >= 0) & private_w[np.maximum(vid, 0)]
    placed = snap.placement(layout)
    writable &= placed[np.maximum(vid, 0)] != _NONE
    memory = _memory_for(snap, layout, int(writable.sum()))
    notes = list(snap.meta.get("notes", []))
    if (~writable).any():
        where = sorted({f"{snap.vma_name[i] or 'anonymous'} {snap.vma_perms[i]}"
                        if i >= 0 else "no VMA" for i in vid[~writable].tolist()})
        notes.append(f"{int((~writable).sum())} pages of the copy-on-write set lie outside "
                     f"private writable VMAs ({'; '.join(where[:4])}): no write of the "
                     "process copied them, the kernel copied or dropped them itself, and "
                     "replay does not write them")
    record = {"snapshot": {"pid": snap.meta.get("pid"), "name": snap.meta.get("name")},
              "layout": layout, "memory": memory, "costs": _costs_name(costs),
              "captured": snap.host(), "repeats": repeats, "configs": {},
              "notes": notes,
              "write_set": int(writable.sum()), "stretch": st}
    if st:
        notes.append(f"kernel_wall_ns is kernel_ns (CPU time) x {st:.2f}, the wall/CPU "
                     "stretch lazyvm calibrate measured in the run that made the profile: "
                     "compare it with wall-clock figures such as Redis's latest_fork_usec")
    wa, ws = wset[writable], snap.cow_side[writable]
    # What the write set reaches: leaf tables (the span one leaf table maps) written,
    # against the leaf tables the address space has.
    span = LEAF_SPAN[layout]
    pv = snap.page_vma()
    pok = (pv >= 0) & (placed[np.maximum(pv, 0)] != _NONE)
    shift = placed.astype(np.int64) - snap.vma_start.astype(np.int64)
    page_new = snap.page_addr[pok].astype(np.int64) + shift[pv[pok]]
    w_new = wa.astype(np.int64) + shift[vid[writable]]
    record["leaf_tables"] = int(len(np.unique(page_new // span)))
    record["write_set_leaf_tables"] = int(len(np.unique(w_new // span)))
    for name in configs:
        fork_mode, rmap = CONFIGS[name]
        m = Machine(memory=memory, fork_mode=fork_mode, rmap=rmap, **extra)
        t0 = time.perf_counter_ns()
        p, amap = snap.spawn(m, layout)
        build_ns = time.perf_counter_ns() - t0
        left_out = amap.left_out
        times = []
        for _ in range(max(0, repeats - 1)):        # untimed children, timed forks
            t = time.perf_counter_ns()
            c = p.fork()
            times.append(time.perf_counter_ns() - t)
            c.exit()
        m.reset_peaks()
        s0 = m.stats()
        t = time.perf_counter_ns()
        c = p.fork()
        times.append(time.perf_counter_ns() - t)
        s1 = m.stats()
        fork = _delta(s0, s1)
        tables_fork = (dict(p.stats()), dict(c.stats()))
        addrs = amap(wa)
        t = time.perf_counter_ns()
        traced = _write(m, p, c, addrs, ws, use_trace)
        write_ns = time.perf_counter_ns() - t
        s2 = m.stats()
        writes = _delta(s1, s2)
        total = _delta(s0, s2)
        pt, ct = dict(p.stats()), dict(c.stats())
        kernel_ns = fork.get("kernel_ns")
        kernel_total = total.get("kernel_ns")
        sp = spread(times)
        rec = {"fork_mode": fork_mode, "rmap": rmap,
               "fork_ns_median": int(sp["median"]), "fork_ns_q1": int(sp["q1"]),
               "fork_ns_q3": int(sp["q3"]), "fork_ns_min": int(sp["min"]),
               "fork_ns_max": int(sp["max"]), "fork_ns_all": times,
               "first_fork_ns": times[0],
               "kernel_ns": kernel_ns, "kernel_ns_fork_and_writes": kernel_total,
               "kernel_wall_ns": (round(kernel_ns * st) if kernel_ns is not None and st
                                  else None),
               "write_ns": write_ns, "build_ns": build_ns, "trace_engine": traced,
               "cow_copies": writes.get("cow_copies", 0),
               "cow_reuses": writes.get("cow_reuses", 0),
               "unshares": total.get("unshares", 0),
               "unshares_by_level": {k: v for k, v in total.items()
                                     if k.startswith("unshares_l")},
               "ptes_copied": total.get("ptes_copied", 0),
               "ptes_copied_fork": fork.get("ptes_copied", 0),
               "tables_copied": fork.get("tables_copied"),
               "page_tables": pt["page_tables"], "child_page_tables": ct["page_tables"],
               "page_tables_after_fork": tables_fork[0]["page_tables"],
               "child_page_tables_after_fork": tables_fork[1]["page_tables"],
               "parent_tables_by_level": {k: v for k, v in pt.items()
                                          if k.startswith("page_tables_l")},
               "machine_page_tables": s2["page_tables"],
               "frames_peak": s2["frames_peak"], "frames_before_fork": s0["frames_used"],
               "pte_chain_nodes_peak": s2["pte_chain_nodes_peak"],
               "rss": p.stats()["rss"],
               "left_out_pages": left_out}
        record["configs"][name] = rec
        del m, p, c
    return record


def _costs_name(costs):
    if costs is None:
        return None
    return getattr(costs, "name", str(costs))


def _write(m, p, c, addrs, sides, use_trace):
    """Write the set: the parent's pages from the parent, the child's from the child, in
    address order (with m.replay, the trace engine, when `use_trace`).  Returns whether
    the trace engine was used."""
    if not len(addrs):
        return False
    who = np.where(sides == SIDE_CHILD, c.pid, p.pid).astype(np.int64)
    if use_trace:
        ev = np.zeros((len(addrs), 4), np.int64)
        ev[:, 0] = who
        ev[:, 1] = 1
        ev[:, 2] = addrs
        m.replay(ev)
        return True
    for proc in (p, c):
        sel = who == proc.pid
        if sel.any():
            proc.touch_pages(addrs[sel], write=True)
    return False
