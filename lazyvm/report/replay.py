"""The replay of a captured process as text, JSON and bars (lazyvm.workloads.replay
makes the record: one entry per configuration, and the kernel's figures recorded at
capture)."""

from __future__ import annotations

import json

from ..layout import LAYOUTS

__all__ = ["format_replay", "write_json", "plot_replay"]


def _ms(ns):
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def format_replay(rec):
    """The replay as text: one row per configuration, the kernel's figures below."""
    h = rec["host"]
    lines = [f"replay of {h.get('name') or '?'} (pid {h.get('pid')}) on {rec['layout']}"
             f"{', costs ' + rec['costs'] if rec.get('costs') else ''}: "
             f"{h['present_pages']} present pages, {rec['write_set']} pages written after "
             "the fork", ""]
    head = ("config", "fork ms", "kernel ms", "cow copies", "unshares", "ptes copied",
            "tables P", "tables C", "peak frames", "peak nodes")
    rows = [head]
    for name, c in rec["configs"].items():
        rows.append((name, _ms(c["fork_ns"]), _ms(c["kernel_ns"]), c["cow_copies"],
                     _fmt_unshares(c), c["ptes_copied"], c["page_tables"],
                     c["child_page_tables"], c["frames_peak"], c["pte_chain_nodes_peak"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                               for i, (v, w) in enumerate(zip(r, widths))))
    lines.append("")
    lines.append(f"the write set reaches {rec['write_set_leaf_tables']} of the "
                 f"{rec['leaf_tables']} leaf tables "
                 f"({LAYOUTS[rec['layout']].table_span(1) >> 20} MiB "
                 "spans) that map a page")
    vmpte = h.get("vm_pte_kb")
    lines.append("kernel (recorded at capture): "
                 f"VmPTE {vmpte} kB = {vmpte // 4 if vmpte is not None else '?'} tables, "
                 f"RSS {h['rss_pages']} pages, present {h['present_pages']}, "
                 f"ZERO_PAGE {h['zero_pages']}, swapped {h['swapped_pages']}"
                 + (f", copied on write {h['cow_pages']}" if h.get("cow_pages") is not None
                    else "")
                 + (f", child's new pages {h['child_new_pages']}"
                    if h.get("child_new_pages") is not None else "")
                 + (f", child VmPTE {h['child_vm_pte_kb']} kB"
                    if h.get("child_vm_pte_kb") is not None else ""))
    if vmpte and "copy" in rec["configs"]:
        t = rec["configs"]["copy"]["page_tables"]
        lines.append(f"parent page tables (copy): {t} against VmPTE/4 kB = {vmpte // 4} "
                     f"({100.0 * (t - vmpte / 4) / (vmpte / 4):+.1f}%)"
                     + ("" if rec["layout"] == "x86_64" else
                        f"; on {rec['layout']} the levels differ, so only the leaf "
                        "tables are comparable"))
    for note in rec.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _fmt_unshares(c):
    lv = c.get("unshares_by_level") or {}
    if not lv:
        return str(c["unshares"])
    return f"{c['unshares']} (" + "/".join(str(lv[k]) for k in sorted(lv)) + ")"


def write_json(rec, path):
    with open(path, "w") as f:
        json.dump(rec, f, indent=2, sort_keys=True, default=int)
        f.write("\n")


def plot_replay(rec, path):
    """Bars of fork time, tables and copy-on-write work per configuration (matplotlib)."""
    # matplotlib is optional (the plot extra): imported only when a plot is asked for
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rec["configs"])
    cs = [rec["configs"][n] for n in names]
    panels = [("fork (simulated) ms", [c["fork_ns"] / 1e6 for c in cs]),
              ("ptes copied", [c["ptes_copied"] for c in cs]),
              ("unshares", [c["unshares"] for c in cs]),
              ("page tables parent/child", [c["page_tables"] + c["child_page_tables"]
                                             for c in cs])]
    if all(c["kernel_ns"] is not None for c in cs):
        panels.insert(1, ("predicted kernel ms", [c["kernel_ns"] / 1e6 for c in cs]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.5))
    for ax, (title, vals) in zip(axes, panels):
        ax.bar(names, vals, color=["#777", "#444", "#3a7", "#185"][:len(names)])
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
    h = rec["host"]
    fig.suptitle(f"replay of {h.get('name')} ({rec['layout']}): VmPTE {h.get('vm_pte_kb')} kB,"
                 f" copied on write {h.get('cow_pages')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
