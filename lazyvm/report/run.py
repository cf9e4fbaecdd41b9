"""The results of ``lazyvm run`` as text: per configuration the phases and loops with
their spreads, the counters, the predicted kernel time, and the published figures beside
the simulator's ratios (lazyvm.workloads.builtin makes the record)."""

from .. import Machine
from ..costs import EVENTS
from ..measure.host import WIDE
from . import format as _r

__all__ = ["COUNTER_KEYS", "PEAK_KEYS", "SHOWN_KEYS", "format_results"]

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

    timing_row("time total", [cfgs[c]["time_ns"] for c in names])
    base = cfgs.get("copy", cfgs[names[0]])["time_ns"]
    base_name = "copy" if "copy" in cfgs else names[0]
    rows.append(["time vs %s" % base_name]
                + ["%.2fx" % (cfgs[c]["time_ns"] / base) if base else "-" for c in names])
    rows.append(["iterations"] + [cfgs[c]["iterations"] for c in names])
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
        timing_row("predicted kernel", [pc[c]["kernel_ns"] for c in names])
        timing_row("  per iteration", [pc[c]["kernel_ns_per_iteration"] for c in names])
        rows.append(["predicted vs copy"] + ["%.2fx" % pc[c]["ratio_vs_copy"]
                                              if pc[c]["ratio_vs_copy"] else "-"
                                              for c in names])
    for k in COUNTER_KEYS + PEAK_KEYS + ("leaked_frames",):
        if k not in SHOWN_KEYS + PEAK_KEYS + ("leaked_frames",) and not any(
                cfgs[c][k] for c in names):
            continue                 # a priced event no configuration counted
        rows.append([k] + [cfgs[c][k] for c in names])
    out.append(_table(header, rows))
    if pred:
        sr = pred["share_rmap_over_copy_rmap"]
        out.extend(_r.wrap(
            "predicted kernel: the measured iterations' counts priced by the %s cost "
            "profile%s (%s). Counts are exact, so the prediction has no spread: the same "
            "run gives the same figure (per iteration, when a wide spread added "
            "iterations). Beside it, the simulator's own time, with its spread.%s"
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
