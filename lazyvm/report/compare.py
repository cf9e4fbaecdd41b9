"""The side-by-side fork comparison as text (the table of every size and
configuration beside this machine's fork, the predicted kernel time, the findings beside
the published figures), as JSON, and as a plot (lazyvm.workloads.compare makes the
record)."""

from __future__ import annotations

from ..machine import CONFIGS
from ..measure import host as _m
from . import format as _r

LINUX = "Linux"                       # the row and key of this machine's own fork
CONFIG_NAMES = tuple(CONFIGS)

WHY_DIFFERENT = (
    "Why the simulator's ratios can differ from the kernel's: the simulator counts the "
    "work the kernel would do (the same PTEs copied, references taken, chain slots "
    "added, tables allocated) and times it as compiled loops over numpy arrays in one "
    "host process. It has no TLB flushes, locks or atomic operations, no slab "
    "allocator, and no process-creation costs (task, files, signal handlers, VMAs) "
    "beyond a few Python objects."
)


PREDICTED_SPREAD = ("no spread: the counts are exact and deterministic, so the predicted "
                    "figures are too (the same counts always give the same prediction); "
                    "*_se is the profile's own uncertainty, not a spread")



def _div(a, b):
    return a / b if b else None


def _mark(s: dict) -> str:
    """'' for a settled spread, '~' for one still wide after the extra repeats."""
    return "~" if s.get("wide") else ""


def format_table(record: dict) -> str:
    """The main table: one row per size x configuration, Linux first."""
    head = ("pages", "config", "warm fork", "q1-q3", "ns/page", "Linux/this", "n",
            "tables", "nodes", "frames")
    rows = []
    for e in record["results"]:
        n = e["pages"]
        lin = e[LINUX]
        ls = lin["fork_ns_spread"]
        tables = lin.get("vmpte_kb")
        med, q = _r.ns_spread(ls)
        rows.append((f"{n:,}", LINUX, med, q + _mark(ls), f"{lin['ns_per_page']:.1f}",
                     "1x", str(ls["n"]),
                     (f"{tables // 4:,}*" if tables is not None else "-"), "-", "-"))
        for name in CONFIG_NAMES:
            c = e["configs"][name]
            s = c["fork_ns_spread"]
            d = c["first_fork"]["delta"]
            med, q = _r.ns_spread(s)
            rows.append(("", name, med, q + _mark(s), f"{c['ns_per_page']:.2f}",
                         _r.x(e["ratios"]["linux_over"][name]["ratio"]), str(s["n"]),
                         _r.integer(d.get("page_tables")),
                         _r.integer(d.get("pte_chain_nodes")),
                         _r.integer(d.get("frames_used"))))
    lines = _r.table(head, rows, left=(1,), blank_before=0)
    unsettled = sum(1 for r in rows if r[3].endswith("~"))
    extra = sum(1 for e in record["results"] for c in e["configs"].values()
                if c["fork_ns_spread"].get("extra"))
    extra += sum(1 for e in record["results"] if e[LINUX]["fork_ns_spread"].get("extra"))
    p = record["parameters"]
    lines += [""]
    lines += _r.wrap(
        "warm fork: median of the timed forks, each right after an untimed one (warm caches, "
        "as Linux's back-to-back forks), the four configurations interleaved round-robin; "
        "q1-q3: its quartiles, in the median's unit; n: forks timed. ns/page = fork / "
        "pages. Linux/this: this machine's fork() time / this row's (a ratio of medians; "
        "its range and copy+rmap's ratio to each row are in the JSON).")
    lines += _r.wrap(
        f"A spread is wide when q3 - q1 exceeds {p['wide_spread']:.0%} of the median; "
        f"such a row gets more forks, up to {p['max_repeat_factor']}x as many. {extra} "
        f"row(s) took more forks; " + (
            f"{unsettled} still wide (marked ~): those medians are less certain than the "
            f"others and a quieter machine or --repeats would help." if unsettled else
            "every row settled."))
    lines += _r.wrap(
        "tables, nodes, frames: what the first fork allocated (page tables, pte_chain "
        "nodes, frames: the child's pgd and tables). * Linux: x86-64 page tables the "
        "touched mapping added to this process (/proc/self/status VmPTE / 4 KiB), which "
        "its fork copies. Fork+exit and first-fork times, with spreads: in the JSON.")
    return "\n".join(lines)


def format_predicted(record: dict) -> str:
    """The predicted kernel time table: per size and configuration the predicted fork
    and fork+exit, their ratios, and the simulator's (or this machine's) timed fork
    beside them."""
    pred = record.get("predicted") or {}
    if not pred.get("profile"):
        return "\n".join(_r.wrap(f"Predicted kernel time: none ({pred.get('reason')})."))
    out = _r.wrap(f"Predicted kernel time, {pred['profile']} cost profile ({pred['reason']})"
                  f": {pred.get('description') or ''}")
    out.append("")
    head = ("pages", "config", "predicted fork", "+-", "fork+exit", "vs copy", "c+r/this",
            "sim warm fork", "vs copy")
    rows = []
    for e in record["results"]:
        p = e.get("predicted")
        if not p:
            continue
        lin = e[LINUX]
        lp = p.get(LINUX)
        rows.append((f"{e['pages']:,}", LINUX, _r.ns(lp["fork_ns"]) if lp else "-", "",
                     "-", "-", "-", _r.ns(lin["fork_ns_median"]) + "*", "-"))
        for name in CONFIG_NAMES:
            c = p["configs"][name]
            rows.append(("", name, _r.ns(c["fork_ns"]), _r.ns(c["fork_ns_se"]),
                         _r.ns(c["fork_exit_ns"]), _r.x(c["fork_over_copy"]),
                         _r.x(c["copy_rmap_over_this"]), _r.ns(c["sim_fork_ns_median"]),
                         _r.x(c["sim_fork_over_copy"])))
    out += _r.table(head, rows, left=(1,), blank_before=0)
    out.append("")
    out += _r.wrap(
        "predicted fork, fork+exit: the events the simulator counted in one fork (and one "
        "fork+exit) of this size, times the profile's cost of each; +-: the profile's "
        "uncertainty (one standard error) of the fork. " + PREDICTED_SPREAD[0].upper()
        + PREDICTED_SPREAD[1:] + ". vs copy: this row's predicted fork / copy's; "
        "c+r/this: copy+rmap's / this row's. sim warm fork: the simulator's median fork "
        "(its own time, with the spread of the table above); * Linux: this machine's "
        "measured warm fork of this Python process (median), and in predicted fork its "
        "prediction from the process's own VMAs, PTEs and tables (a host's profile only)."
        " This machine's kernel copies, so it is to be set beside the copy rows; it also "
        "copies this Python process's own mappings, which the simulated process has not.")
    for n in pred.get("notes", ()):
        out += _r.wrap("note: " + n, "", "  ")
    return "\n".join(out)


def format_findings(record: dict) -> str:
    """Per-size ratios with ranges, the slopes, and each finding beside the published
    figure it can be set against."""
    results = record["results"]
    out = ["Findings", "========"]
    head = ("pages", "Linux ns/page", "copy ns/page", "c+r/copy", "c+r/s+r", "copy/share")
    rows = []
    for e in results:
        lin, r = e[LINUX], e["ratios"]
        marg = lin["ns_per_page_marginal"]
        rows.append((f"{e['pages']:,}",
                     f"{marg:.1f}" if marg > 0 else "below noise",
                     f"{e['configs']['copy']['ns_per_page']:.2f}",
                     _r.x_range(r["copy_rmap_over_copy"]),
                     _r.x_range(r["copy_rmap_over_share_rmap"]),
                     _r.x_range(r["copy_over_share"])))
    out += _r.table(head, rows, left=())
    out += _r.wrap("Simulator time: ratios of the medians, with the range they take when "
                   "both figures lie inside their quartiles. c+r = copy+rmap, s+r = "
                   "share+rmap. Linux ns/page: the marginal cost, (fork with the N pages - "
                   "fork of the same process without them) / N; below noise where the "
                   "difference is not above zero (the spread of the two medians hides it).")
    pred = record.get("predicted") or {}
    if any(e.get("predicted") for e in results):
        out.append("")
        head = ("pages", "c+r/copy", "c+r/s+r", "c+r/s+r fork+exit", "copy/share")
        rows = []
        for e in results:
            r = e["predicted"]["ratios"]
            rows.append((f"{e['pages']:,}", _r.x(r["copy_rmap_over_copy"]),
                         _r.x(r["copy_rmap_over_share_rmap"]),
                         _r.x(r["copy_rmap_over_share_rmap_fork_exit"]),
                         _r.x(r["copy_over_share"])))
        out += _r.table(head, rows, left=())
        out += _r.wrap(f"Predicted kernel time ({pred.get('profile')}): the same ratios "
                       "from the counted events, exact (no range). The findings below set "
                       "these predicted ratios, not the simulator's, beside the published "
                       "figures.")
    out.append("")
    for f in record["findings"]:
        basis = f.get("basis")
        if f["key"] == "slopes":
            sl = f["slopes"]
            text = ("- Growth with pages (log-log slope of the median fork time; 1 = "
                    "linear, 0 = flat): simulator " + ", ".join(
                        f"{k} {v:.2f}" for k, v in sl.items() if v is not None))
            ps = f.get("predicted_slopes")
            if ps:
                text += "; predicted " + ", ".join(f"{k} {v:.2f}" for k, v in ps.items()
                                                   if v is not None)
            out += _r.wrap(text + ".", "", "  ")
            continue
        if f["measured"] is None:
            text = f"- {f['text']}: not measured"
            text += f" ({f['not_measured_why']})." if f.get("not_measured_why") else \
                " (size not in this run)."
            if f.get("published_text"):
                text += f" Published: {f['published_text']} ({f['source']})."
            out += _r.wrap(text, "", "  ")
            continue
        at = f" at {f['at_pages']:,} pages" if f.get("at_pages") else ""
        if f["key"] == "modern_fork_per_page":
            m = f["measured"]
            val = f"{m['ratio']:.1f} ns ({m['lo']:.1f} to {m['hi']:.1f})"
        elif f["key"] == "linux_predicted":
            cpu = f.get("measured_cpu_ns")
            pw, st = f.get("predicted_wall_ns"), f.get("stretch")
            val = (f"{_r.ns(f['predicted_ns'])} / {_r.ns(cpu or f['measured_ns'])} = "
                   f"{f['measured']['ratio']:.2f}"
                   + (f" (wall time {_r.ns(f['measured_ns'])}: predicted x the profile's "
                      f"wall/CPU stretch {st:.2f} = {_r.ns(pw)}, "
                      f"{pw / f['measured_ns']:.2f})" if pw else
                      f" (wall time {_r.ns(f['measured_ns'])}: "
                      f"{f['predicted_ns'] / f['measured_ns']:.2f}, no stretch in the "
                      "profile)" if cpu else ""))
        else:
            val = _r.x_range(f["measured"])
        label = f" [{basis}]" if basis else ""
        text = f"- {f['text']}{at}{label}: {val}."
        if f.get("published_text"):
            text += f" Published: {f['published_text']} ({f['source']})."
        if f.get("verdict"):
            text += f" {f['verdict']}."
        if f.get("why"):
            text += f" Why: {f['why']}."
        out += _r.wrap(text, "", "  ")
    out.append("")
    out += _r.wrap(WHY_DIFFERENT)
    if pred.get("profile"):
        out += _r.wrap("The predicted kernel time answers that with counts: each counted "
                       "event priced by the profile, fixed costs of fork and exit "
                       "included; where a predicted ratio still misses a published one, "
                       "its line above says what each side is made of and how large a "
                       "cost no counted event carries would have to be.")
    return "\n".join(out)


SUMMARY_LINES = 25            # the most lines format_summary prints


def _group_line(rule: str, groups) -> str:
    """A line over a table's header naming groups of columns: `rule` is the table's
    line of dashes, `groups` (title, number of columns) from the left."""
    spans = [len(r) for r in rule.split("  ")]
    out, col = "", 0
    for title, n in groups:
        width = sum(spans[col:col + n]) + 2 * (n - 1)
        out += (title.center(width) if title else " " * width) + "  "
        col += n
    return out.rstrip()


def _profile_sureness(record: dict) -> str:
    """One line on how far the predicted figures can be trusted: what the profile is,
    its own uncertainty at the largest size, and how it was made."""
    pred = record.get("predicted") or {}
    top = record["results"][-1]
    c = (top.get("predicted") or {}).get("configs", {}).get("copy")
    rel = (f" (+-{100 * c['fork_ns_se'] / c['fork_ns']:.0f}% at {top['pages']:,} pages, "
           f"one standard error)" if c and c["fork_ns"] else "")
    if pred.get("profile") == "host":
        how = ("exact counts priced by this machine's kernel costs, fitted to real forks"
               + rel + "; pte_chains and shared tables exist in no released kernel, so "
               "their costs come from measured cache misses")
    else:
        how = (f"exact counts priced by the {pred.get('profile')} profile" + rel + ": "
               + (pred.get("description") or ""))
    return how


def host_like_name(pred: dict) -> bool:
    """Whether a run's "predicted" record was priced by a host's profile."""
    return pred.get("profile") == "host" or any(
        "x86-64 kernel" in n for n in pred.get("notes", ()))


def format_summary(record: dict) -> str:
    """The answer first, at most SUMMARY_LINES lines: per size what sharing page tables
    saves at fork and costs at the first write (predicted kernel time), the page
    tables the child owns, and this machine's measured fork beside them; then one line
    on how sure each figure is."""
    mach = record["machine"]
    p = record["parameters"]
    pred = record.get("predicted") or {}
    mem = mach.get("memory_bytes")
    load = mach.get("load_average")
    layout = p.get("layout", "i386")
    out = _r.wrap(
        f"lazyvm {record['lazyvm_version']} compare: fork of N touched pages, {layout} "
        f"layout, {mach.get('cpu_model')} ({mach.get('cores')} cores"
        + (f", {mem / (1 << 30):.1f} GiB" if mem else "")
        + (f", load {load[0]:.2f}" if load else "") + ")")
    if pred.get("profile"):
        out += _r.wrap(f"predicted kernel time: {pred['profile']} cost profile "
                       f"({pred['reason']})", "", "  ")
        groups = (("", 1), ("predicted kernel fork", 4), ("first write", 2),
                  ("child's tables", 2), ("Linux fork", 1))
        head = ("pages", "copy", "share", "c+rmap", "s+rmap", "copy", "share", "copy",
                "share", "measured")
    else:
        out += _r.wrap(f"predicted kernel time: none ({pred.get('reason')})", "", "  ")
        groups = (("", 1), ("child's tables", 2), ("Linux fork", 1))
        head = ("pages", "copy", "share", "measured")
    rows = []
    for e in record["results"]:
        lin = e[LINUX]["fork_ns_spread"]
        linux = f"{_r.ns(lin['median'])}"
        tab = [f"{e['configs'][n]['first_fork']['delta'].get('page_tables', 0) * 4:,} kB"
               for n in ("copy", "share")]
        if pred.get("profile"):
            pc = e["predicted"]["configs"]
            rows.append((f"{e['pages']:,}", *(_r.ns(pc[n]["fork_ns"]) for n in
                                              ("copy", "share", "copy+rmap", "share+rmap")),
                         _r.ns(pc["copy"]["first_write_ns"]),
                         _r.ns(pc["share"]["first_write_ns"]), *tab, linux))
        else:
            rows.append((f"{e['pages']:,}", *tab, linux))
    table = _r.table(head, rows, left=())
    out.append(_group_line(table[1], groups))
    out += table
    top = record["results"][-1]
    if pred.get("profile"):
        pc = top["predicted"]["configs"]
        saved = pc["copy"]["fork_ns"] - pc["share"]["fork_ns"]
        extra = pc["share"]["first_write_ns"] - pc["copy"]["first_write_ns"]
        tables = top["configs"]["copy"]["first_fork"]["delta"].get("page_tables", 0)
        if saved > 0:
            line = (f"at {top['pages']:,} pages sharing saves {_r.ns(saved)} of kernel time "
                    f"per fork ({_r.x(_div(pc['copy']['fork_ns'], pc['share']['fork_ns']))}"
                    f" less than copying)")
        else:
            line = f"at {top['pages']:,} pages sharing saves nothing at fork"
        if extra > 0 and tables:
            line += (f" and costs {_r.ns(extra)} more at the first write under each shared "
                     f"table (it copies that table's entries): ")
            line += (f"sharing is ahead while the child writes under fewer than about "
                     f"{int(saved // extra):,} of its {tables:,} tables"
                     if saved // extra < tables else
                     f"sharing is ahead even if the child writes under all {tables:,} "
                     f"tables")
        out += _r.wrap(line + ".", "", "  ")
    out.append("how sure:")
    if pred.get("profile"):
        out += _r.wrap("- predicted kernel time: " + _profile_sureness(record) + ".",
                       "", "  ")
        if host_like_name(pred) and layout != "x86_64":
            out += _r.wrap(f"- the host profile prices this machine's x86-64 kernel; these "
                           f"counts are {layout}'s (--layout x86_64 counts the work this "
                           f"kernel does).", "", "  ")
    lin = top[LINUX]["fork_ns_spread"]
    out += _r.wrap(
        f"- Linux fork: fork() of this Python process holding the N pages, warm median "
        f"of {lin['n']} (at {top['pages']:,} pages {_r.ns(lin['median'])}, q1-q3 "
        f"{_r.ns_spread(lin)[1]}); this kernel copies: set it beside copy.", "", "  ")
    out += _r.wrap("- tables: the page tables the child owns after the fork (x 4 KiB), "
                   "counted exactly.", "", "  ")
    out += _r.wrap("every table (the simulator's own times with spreads, fork+exit, the "
                   "findings beside the published figures): --full, or --json", "", "")
    return "\n".join(out) + "\n"


def format_report(record: dict) -> str:
    """Everything `lazyvm compare --full` prints after the summary: header, table,
    predicted kernel time, findings."""
    mach = record["machine"]
    mem = mach.get("memory_bytes")
    p = record["parameters"]
    load = mach.get("load_average")
    head = _r.wrap(
        f"lazyvm {record['lazyvm_version']} compare ({_r.build_text(record['build'])}): "
        f"fork of N touched private pages, simulator ({p.get('layout', 'i386')}) vs this "
        f"machine's Linux")
    head += _r.wrap(
        f"host: {mach.get('cpu_model')}, {mach.get('cores')} cores"
        + (f", {mem / (1 << 30):.1f} GiB" if mem else "")
        + (", virtual machine" if mach.get("hypervisor") else "")
        + f"; Linux {mach.get('kernel')} {mach.get('arch')}; Python {mach.get('python')}, "
        f"numpy {mach.get('numpy')}"
        + (f"; load {load[0]:.2f}" if load else ""))
    head += _r.wrap(f"run: {record['time']}, {record['wall_ns'] / 1e9:.1f} s", "", "  ")
    return ("\n".join(head) + "\n\n" + format_table(record) + "\n\n"
            + format_predicted(record) + "\n\n" + format_findings(record) + "\n")


# ---------------------------------------------------------------- plot


def plot(record: dict, path: str):
    """Fork latency against pages on log-log axes, one line per configuration and Linux,
    each point the median with its quartiles as an error bar; with a cost profile, a
    second panel of predicted kernel time per configuration, with this machine's
    measured fork (median, quartiles) and, for a host's profile, its prediction from
    this process's own counts.  Needs matplotlib (the ``plot`` extra).  Returns the
    matplotlib Figure (saved to `path` and closed)."""
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--plot needs matplotlib: pip install 'lazyvm[plot]' "
                           "(or pip install matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = record["results"]
    xs = [e["pages"] for e in results]

    def us(s):
        return {k: s[k] / 1e3 for k in ("median", "q1", "q3")}
    lin_label = f"Linux {record['machine'].get('kernel', '')} (this machine)"
    series = {lin_label: [us(e[LINUX]["fork_ns_spread"]) for e in results]}
    styles = {lin_label: dict(color="black", marker="s", linewidth=2.2)}
    look = {"copy": dict(color="tab:blue", marker="o"),
            "copy+rmap": dict(color="tab:blue", marker="o", linestyle="--"),
            "share": dict(color="tab:green", marker="^"),
            "share+rmap": dict(color="tab:green", marker="^", linestyle="--")}
    for name in CONFIG_NAMES:
        series[f"lazyvm {name}"] = [us(e["configs"][name]["fork_ns_spread"])
                                    for e in results]
        styles[f"lazyvm {name}"] = look[name]
    mach = record["machine"]
    pred = record.get("predicted") or {}
    with_pred = bool(pred.get("profile")) and all(e.get("predicted") for e in results)
    fig, axes = plt.subplots(1, 2 if with_pred else 1,
                             figsize=(15, 6) if with_pred else (8, 5.5), squeeze=False)
    _r.draw_lines(axes[0][0], xs, series, "touched pages (4 KiB)",
                  "warm fork: median and quartiles of forks that each follow an "
                  "untimed one (µs)",
                  "measured: warm fork vs pages (lazyvm's own time; Linux's fork())\n"
                  f"{mach.get('cpu_model')}, {mach.get('cores')} cores, "
                  f"lazyvm {record['lazyvm_version']}, {_r.build_text(record['build'])}",
                  styles)
    if with_pred:
        ax = axes[0][1]
        for name in CONFIG_NAMES:
            ax.plot(xs, [e["predicted"]["configs"][name]["fork_ns"] / 1e3 for e in results],
                    label=f"predicted {name}", **look[name])
        lin = [us(e[LINUX]["fork_ns_spread"]) for e in results]
        ax.errorbar(xs, [s["median"] for s in lin],
                    yerr=[[s["median"] - s["q1"] for s in lin],
                          [s["q3"] - s["median"] for s in lin]],
                    label=f"{lin_label}, measured (copies, as the copy line)", capsize=3,
                    color="black", marker="s", linewidth=2.2)
        if all(e["predicted"].get(LINUX) for e in results):
            ax.plot(xs, [e["predicted"][LINUX]["fork_ns"] / 1e3 for e in results],
                    label="this machine's fork predicted from this process's own counts",
                    color="black", linestyle=":", marker="x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("touched pages (4 KiB)")
        ax.set_ylabel("predicted kernel time of one fork (µs)")
        ax.set_title(f"predicted kernel time ({pred['profile']} profile, "
                     f"{record['parameters'].get('layout', 'i386')} counts)\n"
                     "exact counts x costs: no spread", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def write_json(record: dict, path: str) -> None:
    """Write a compare record (which carries its own envelope) to `path`."""
    _r.write_json(record, path)
