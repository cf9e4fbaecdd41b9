"""The results of ``lazyvm run`` as text: per configuration the phases and loops with
their spreads, the counters, the predicted kernel time, and the published figures beside
the simulator's ratios (lazyvm.workloads.builtin makes the record)."""

from .. import Machine
from ..costs import EVENTS
from ..measure.host import WIDE, machine_description
from . import format as _r

__all__ = ["COUNTER_KEYS", "PEAK_KEYS", "SHOWN_KEYS", "format_results", "format_summary"]

# Counters reported as differences over the measured run: the ones format_results
# prints, then every priced event of the cost model
# (lazyvm.costs.EVENTS) the core counts, so that a run's counts can be priced.
SHOWN_KEYS = ("faults", "demand_zero", "zero_page_maps", "cow_copies", "cow_reuses",
              "shmem_faults", "swap_ins", "unshares", "unshare_reuses",
              "tables_dropped", "ptes_copied", "chain_nodes_allocated", "forks")
_CORE_COUNTERS = set(Machine(memory=4 << 20).stats())
COUNTER_KEYS = SHOWN_KEYS + tuple(e for e in EVENTS
                                  if e in _CORE_COUNTERS and e not in SHOWN_KEYS)
# Peaks over the measured run (reset_peaks() before it).
PEAK_KEYS = ("frames_peak", "page_tables_peak", "pte_chain_nodes_peak")


def _fmt_ns(ns, unit):
    return _r.ns_column(ns, unit)


def _unit_for(values):
    return _r.unit_for(max([v for v in values if v] or [0]))[1]


def _table(header, rows):
    return "\n".join(_r.table(header, rows, left=(0,)))


def _count(v):
    """A per-iteration count: an integer when it is one, else one decimal."""
    return "{:,}".format(int(v)) if float(v).is_integer() else "{:,.1f}".format(v)


SUMMARY_LINES = 25            # the most lines format_summary prints


def format_summary(results):
    """The answer first, at most SUMMARY_LINES lines: per configuration the predicted
    kernel time of one iteration and its ratio to copy, the work behind it (entries
    copied, tables privatized at a first write, copy-on-write copies, page tables at
    the peak), the simulator's own time; then how sure each figure is."""
    cfgs = results["configs"]
    names = list(cfgs)
    prm = results["params"]
    pred = results.get("predicted")
    mach = machine_description()
    mem = mach.get("memory_bytes")
    load = mach.get("load_average")
    shown = ", ".join("%s=%s" % (k, v) for k, v in prm.items()
                      if k not in ("quick", "warmup", "interleave", "layout", "settle",
                                   "share_level") and not isinstance(v, bool))
    out = _r.wrap("lazyvm run %s (%s%s), %s layout, %s (%s cores%s%s)" % (
        results["workload"], shown, ", --quick" if prm.get("quick") else "",
        prm.get("layout", "i386"), mach.get("cpu_model"), mach.get("cores"),
        ", %.1f GiB" % (mem / 2**30) if mem else "",
        ", load %.2f" % load[0] if load else ""), "", "  ")
    if pred:
        out += _r.wrap("predicted kernel time: %s cost profile (%s)"
                       % (pred["profile"], pred.get("reason") or "--costs"), "", "  ")
    else:
        out += _r.wrap("predicted kernel time: none (%s)"
                       % results.get("predicted_off", "--costs none"), "", "  ")
    head = ["per iteration"]
    rows = []
    if pred:
        pc = pred["configs"]
        rows.append(["predicted kernel"] + [_r.ns(pc[c]["kernel_ns_per_iteration"])
                                            for c in names])
        rows.append(["  vs copy"] + [_r.x(pc[c]["ratio_vs_copy"]) for c in names])
    for label, key in (("entries copied", "ptes_copied"),
                       ("tables privatized", "unshares"), ("cow copies", "cow_copies"),
                       ("pte_chain slots added", "rmap_adds")):
        vals = [cfgs[c]["per_iteration"].get(key, 0) for c in names]
        if key == "rmap_adds" and not any(vals):
            continue
        rows.append([label] + [_count(v) for v in vals])
    rows.append(["page tables (peak)"] + ["{:,}".format(cfgs[c]["page_tables_peak"])
                                          for c in names])
    rows.append(["simulator time (median)"] + [_r.ns(cfgs[c]["time_per_iteration_ns"])
                                      for c in names])
    out += _r.table(head + names, rows, left=(0,))
    if pred and "copy" in pc and "share" in pc:
        a, b = pc["copy"]["kernel_ns_per_iteration"], pc["share"]["kernel_ns_per_iteration"]
        if a and b:
            out += _r.wrap("sharing %s %s of predicted kernel time per iteration (share %s "
                           "copy's)." % ("saves" if b < a else "costs", _r.ns(abs(a - b)),
                                         _r.x(b / a)), "", "  ")
    out.append("how sure:")
    if pred:
        rel = [pc[c]["kernel_ns_per_iteration_se"] / pc[c]["kernel_ns_per_iteration"]
               for c in names if pc[c]["kernel_ns_per_iteration"]]
        out += _r.wrap("- predicted kernel time: exact counts (the same every run) priced "
                       "by the %s profile, whose own uncertainty is +-%.0f%% here (one "
                       "standard error)%s." % (
                           pred["profile"], 100 * max(rel or [0]),
                           "; its shared-table and pte_chain costs are derived, not "
                           "measured" if pred["profile"] == "host" else
                           ": " + (pred.get("profile_description") or "")), "", "  ")
    wide = [c for c in names for s in cfgs[c]["loops"].values() if s.get("wide")]
    out += _r.wrap("- simulator time: lazyvm's own time in Python, not a kernel's (each "
                   "loop's median and quartiles: --full)%s." % (
                       "; spread wide for " + ", ".join(sorted(set(wide))) if wide
                       else "; every loop's spread is narrow"), "", "  ")
    out += _r.wrap("- counts: exact, per iteration of the workload as asked (totals in "
                   "--json). Linux's own fork is measured by lazyvm compare.", "", "  ")
    out += _r.wrap("every table (phases with spreads, every counter%s): --full, or --json"
                   % (", the published figures" if results.get("published") else ""),
                   "", "")
    return "\n".join(out)


def format_results(results):
    """A readable table of one run_workload() result (or a list of them)."""
    if isinstance(results, (list, tuple)):
        return "\n\n".join(format_results(r) for r in results)
    cfgs = results["configs"]
    names = list(cfgs)
    params = ", ".join("%s=%s" % kv for kv in results["params"].items())
    out = _r.wrap("workload %s  (%s)" % (results["workload"], params), "", "  ")
    if results.get("info"):
        out.extend(_r.wrap(", ".join("%s=%s" % kv for kv in results["info"].items()),
                           "  ", "  "))
    header = ["", *names]
    rows = []

    def timing_row(label, values):
        unit = _unit_for(values)
        rows.append(["%s (%s)" % (label, unit)]
                    + [_fmt_ns(v, unit) if v is not None else "-" for v in values])

    timing_row("time per iteration", [cfgs[c]["time_per_iteration_ns"] for c in names])
    base = cfgs.get("copy", cfgs[names[0]])["time_per_iteration_ns"]
    base_name = "copy" if "copy" in cfgs else names[0]
    rows.append(["  vs %s" % base_name]
                + ["%.2fx" % (cfgs[c]["time_per_iteration_ns"] / base) if base else "-"
                   for c in names])
    rows.append(["iterations run"] + [cfgs[c]["iterations"] for c in names])
    wide = []

    def spread_rows(label, group, key):
        """A median row and a quartiles row (q1-q3, in the median's unit; ~ wide)."""
        ss = [cfgs[c][group].get(key) for c in names]
        unit = _unit_for([s["median_ns"] if s else None for s in ss])
        rows.append(["%s median (%s)" % (label, unit)]
                    + [_fmt_ns(s["median_ns"], unit) if s else "-" for s in ss])
        cells = []
        for c, s in zip(names, ss):
            if not s:
                cells.append("-")
                continue
            cells.append("%s-%s%s" % (_fmt_ns(s["q1_ns"], unit), _fmt_ns(s["q3_ns"], unit),
                                      "~" if s["wide"] else ""))
            if s["wide"]:
                wide.append("%s %s" % (c, label.strip()))
        rows.append(["  q1-q3"] + cells)

    for lp in cfgs[names[0]]["loops"]:
        spread_rows(lp, "loops", lp)
    for ph in cfgs[names[0]]["phases"]:
        spread_rows("  " + ph, "phases", ph)
    pred = results.get("predicted")
    if pred:
        pc = pred["configs"]
        timing_row("predicted kernel/iteration",
                   [pc[c]["kernel_ns_per_iteration"] for c in names])
        rows.append(["  vs copy"] + ["%.2fx" % pc[c]["ratio_vs_copy"]
                                              if pc[c]["ratio_vs_copy"] else "-"
                                              for c in names])
    rows.append(["per iteration:"] + [""] * len(names))
    for k in COUNTER_KEYS:
        if k not in SHOWN_KEYS and not any(cfgs[c][k] for c in names):
            continue                 # a priced event no configuration counted
        rows.append(["  " + k] + [_count(cfgs[c]["per_iteration"][k]) for c in names])
    for k in PEAK_KEYS + ("leaked_frames",):
        rows.append([k] + [cfgs[c][k] for c in names])
    out.append(_table(header, rows))
    if pred:
        sr = pred["share_rmap_over_copy_rmap"]
        out.extend(_r.wrap(
            "predicted kernel/iteration: the counts of one iteration priced by the %s "
            "cost profile%s (%s). Counts are exact, so the prediction has no spread: "
            "every run gives the same figure. Every time and count above is per "
            "iteration (a loop that ran more iterations for a wide spread weighs as "
            "often as it was asked for); totals are in the JSON.%s"
            % (pred["profile"], " (%s)" % pred["reason"] if pred.get("reason") else "",
               pred["profile_description"] or "no description",
               " share+rmap / copy+rmap predicted: %s." % _r.x(sr) if sr else ""),
            "", "  "))
        missing = sorted({e for c in pred["configs"].values() for e in c["missing"]})
        if missing:
            out.extend(_r.wrap("not counted by this core, priced 0: " + ", ".join(missing)
                               + ".", "", "  "))
    if results.get("published"):
        out.append("")
        out.extend(_r.wrap("published figures beside the simulator's (ratios: after/before "
                           "of medians, with their range when both lie inside their "
                           "quartiles):"))
        for r in results["published"]:
            if "published_before_ms" in r:
                pub = "%.1f -> %.1f ms = %.2fx" % (r["published_before_ms"],
                                                  r["published_after_ms"],
                                                  r["published_ratio"])
            else:
                pub = r["published_text"]
            sim = "; ".join("%s %s" % (k, _r.x_range(v)) for k, v in r["sim_ratio"].items())
            out.extend(_r.wrap("- %s: published %s; simulator %s." % (r["shape"], pub,
                                                                     sim or "-"), "", "  "))
        srcs = []
        for r in results["published"]:
            if r["source"] not in srcs:
                srcs.append(r["source"])
        for src in srcs:
            out.extend(_r.wrap("source: " + src, "", "  "))
    for n in results.get("notes", ()):
        out.extend(_r.wrap("note: " + n, "", "  "))
    extra = ["%s %s +%d (%s)" % (c, lp, st["extra"], "settled" if st["settled"]
                                 else "still wide")
             for c in names for lp, st in cfgs[c].get("settle", {}).items() if st["extra"]]
    if extra:
        out.extend(_r.wrap("more iterations for a wide spread: " + "; ".join(extra) + ".",
                           "", "  "))
    if wide:
        out.extend(_r.wrap(
            "spread wide (q3 - q1 above %d%% of the median, marked ~): %s. Those medians "
            "are uncertain: run again with more iterations (the -p ...iterations= "
            "parameters) on a quieter machine." % (round(WIDE * 100), "; ".join(wide)),
            "", "  "))
    return "\n".join(out)
