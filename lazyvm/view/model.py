"""A picture-ready snapshot of a machine, and what changed between two snapshots.

:func:`snapshot` walks every live process's table tree (through lazyvm.view._adapter
only) and returns plain data: *nodes* (page directories, tables, frames, swap slots, and
summaries of big runs) laid out in columns, one column per level and one for frames,
each node with *rows* (its entries, runs of like entries collapsed) pointing at other
nodes.  A table reached from several page directories is one node: that is what sharing
looks like.  :func:`diff` compares two snapshots node by node and row by row, and says
in words what changed.

Summaries keep big spaces small: a run of GROUP_MIN or more consecutive entries that
point at tables with the same protection and use count becomes one *group* node (its
tables counted, its frames counted by reference count); a leaf table with more than
EXPAND used entries lists runs (consecutive frames with the same count and protection),
at most MAX_ROWS of them.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Dict, List

import numpy as np

from . import _adapter as ad

GROUP_MIN = 5
EXPAND = 16
MAX_ROWS = 12


def _hexaddr(a):
    return f"{a:#010x}" if a < 1 << 32 else f"{a:#014x}"


def _rng(lo, hi):
    return f"[{lo}]" if lo == hi else f"[{lo}\u2013{hi}]"


class _Walker:
    def __init__(self, machine):
        self.m = machine
        self.info = ad.layout_of(machine)
        self.nodes = {}
        self.rmap = bool(getattr(machine, "rmap_enabled", True))
        self._refs = {}

    # -- helpers ------------------------------------------------------------------
    def ref(self, pfn):
        r = self._refs.get(pfn)
        if r is None:
            r = self._refs[pfn] = ad.use_count(self.m, pfn)
        return r

    def level_name(self, depth):
        return self.info.level_names[depth]

    @staticmethod
    def shared_at(vmas, addr):
        for s, e, _prot, shared in vmas:
            if s <= addr < e:
                return shared
        return False

    # -- tables -------------------------------------------------------------------
    def visit(self, pfn, depth, base, vmas):
        key = ("g" if depth == 0 else "t") + str(pfn)
        if key in self.nodes:
            return key
        info = self.info
        node = {"key": key, "col": depth, "pfn": int(pfn), "level": info.levels - depth,
                "name": self.level_name(depth), "rows": []}
        if depth == 0:
            node["kind"] = "pgd"
        else:
            node["kind"] = "table"
            node["use"] = self.ref(pfn)
        self.nodes[key] = node
        entries = np.asarray(ad.table_entries(self.m, pfn))
        if depth == 0:
            user = entries[:info.user_top]
        else:
            user = entries
        if depth < info.levels - 1:
            node["rows"] = self.upper_rows(pfn, user, depth, base, vmas)
        else:
            node["rows"] = self.leaf_rows(pfn, user, depth, base, vmas)
        if depth == 0 and info.user_top < len(entries):
            node["rows"].append({"lo": info.user_top, "hi": len(entries) - 1, "t": int(pfn),
                                 "text": f"{_rng(info.user_top, len(entries) - 1)} kernel "
                                         "(from boot)",
                                 "flag": "kernel", "target": None})
        return key

    def upper_rows(self, pfn, e, depth, base, vmas):
        info = self.info
        span = info.span(depth)
        idx = np.nonzero(e & ad.P)[0]
        if not len(idx):
            return [{"lo": 0, "hi": len(e) - 1, "t": int(pfn), "text": "no user entries",
                     "flag": "empty", "target": None}]
        tabs = ad.frames_of(e[idx], info)
        # pae's PDPT entries have no RW bit: write protection is left to the levels below
        has_rw = not (info.name == "pae" and depth == 0)
        rw = (e[idx] & ad.RW) != 0
        uses = ad.use_counts(self.m, tabs)
        runs = []
        start = 0
        for k in range(1, len(idx) + 1):
            if (k == len(idx) or idx[k] != idx[k - 1] + 1 or rw[k] != rw[start]
                    or uses[k] != uses[start]):
                runs.append((start, k))
                start = k
        rows = []
        child = self.level_name(depth + 1)
        for a, b in runs:
            flag = ("RW" if rw[a] else "RO") if has_rw else "-"
            if b - a < GROUP_MIN:
                for k in range(a, b):
                    i, t = int(idx[k]), int(tabs[k])
                    tkey = self.visit(t, depth + 1, base + i * span, vmas)
                    rows.append({"lo": i, "hi": i, "t": int(pfn), "flag": flag,
                                 "text": f"[{i}] {_hexaddr(base + i * span)} \u2192 "
                                         f"{child} #{t}", "target": tkey})
            else:
                lo, hi = int(idx[a]), int(idx[b - 1])
                gkey = self.group([int(t) for t in tabs[a:b]], depth + 1,
                                  [base + int(i) * span for i in idx[a:b]], vmas, int(uses[a]))
                rows.append({"lo": lo, "hi": hi, "t": int(pfn), "flag": flag,
                             "text": f"{_rng(lo, hi)} {_hexaddr(base + lo * span)} \u2192 "
                                     f"{b - a} tables", "target": gkey})
        return rows

    def leaf_rows(self, pfn, e, depth, base, vmas):
        info = self.info
        used = np.nonzero(e)[0]
        if not len(used):
            return [{"lo": 0, "hi": len(e) - 1, "t": int(pfn), "text": "all entries empty",
                     "flag": "empty", "target": None}]
        ev = e[used]
        present = (ev & ad.P) != 0
        protnone = ~present & ((ev & ad.PROTNONE) != 0)
        mapped = present | protnone
        pf = ad.frames_of(ev, info)
        swp = (ev.astype(np.uint64) >> np.uint64(8)).astype(np.int64)
        rw = (ev & ad.RW) != 0
        target = np.where(mapped, pf, swp)
        refs = np.where(mapped, ad.use_counts(self.m, np.where(mapped, pf, 0)), 0)
        kinds = []
        for k, i in enumerate(used):
            if mapped[k]:
                kinds.append(ad.frame_kind(self.m, int(pf[k]),
                                           self.shared_at(vmas, base + int(i) * 4096)))
            else:
                kinds.append("swap")
        flags = np.where(protnone, 2, np.where(~mapped, 3, np.where(rw, 1, 0)))
        runs = []
        start = 0
        n = len(used)
        expand = n <= EXPAND
        run_step = None
        for k in range(1, n + 1):
            if k < n and not expand:
                step = int(target[k] - target[k - 1])
                if (used[k] == used[k - 1] + 1 and flags[k] == flags[start]
                        and refs[k] == refs[start] and kinds[k] == kinds[start]
                        and step in (0, 1) and run_step in (None, step)):
                    run_step = step
                    continue
            runs.append((start, k))
            start, run_step = k, None
        rows = []
        for r, (a, b) in enumerate(runs):
            if r == MAX_ROWS - 1 and len(runs) > MAX_ROWS:
                rest = runs[r:]
                entries = sum(y - x for x, y in rest)
                rows.append({"lo": int(used[a]), "hi": int(used[-1]), "t": int(pfn),
                             "flag": "more", "target": None,
                             "text": f"\u2026 {len(rest)} more runs, {entries} entries"})
                break
            lo, hi = int(used[a]), int(used[b - 1])
            flag = ("RO", "RW", "PROTNONE", "swap")[int(flags[a])]
            kind = kinds[a]
            tlo, thi = int(target[a]), int(target[b - 1])
            if kind == "swap":
                tkey = self.swap_node(tlo, thi)
                what = f"swap {tlo}" if tlo == thi else f"swap {tlo}\u2013{thi}"
            else:
                tkey = self.frame_node(tlo, thi, int(refs[a]), kind, b - a)
                what = f"#{tlo}" if tlo == thi else f"#{tlo}\u2013#{thi}"
            rows.append({"lo": lo, "hi": hi, "t": int(pfn), "flag": flag, "target": tkey,
                         "text": f"{_rng(lo, hi)} {_hexaddr(base + lo * 4096)} \u2192 {what}"})
        return rows

    # -- targets ------------------------------------------------------------------
    def frame_node(self, lo, hi, ref, kind, nentries):
        col = self.info.levels
        if lo == hi:
            key = f"f{lo}"
            if key not in self.nodes:
                node = {"key": key, "col": col, "kind": "frame", "pfn": lo, "ref": ref,
                        "fkind": kind}
                if self.rmap and kind != "reserved":
                    node["chain"] = ad.chain(self.m, lo)
                self.nodes[key] = node
            return key
        key = f"F{lo}-{hi}"
        if key not in self.nodes:
            self.nodes[key] = {"key": key, "col": col, "kind": "frames", "lo": lo, "hi": hi,
                               "n": hi - lo + 1, "ref": ref, "fkind": kind}
        return key

    def swap_node(self, lo, hi):
        key = f"s{lo}" if lo == hi else f"S{lo}-{hi}"
        if key not in self.nodes:
            self.nodes[key] = {"key": key, "col": self.info.levels, "kind": "swap",
                               "lo": lo, "hi": hi, "n": hi - lo + 1}
        return key

    def group(self, tabs, depth, bases, vmas, use):
        """One node for a run of tables of one level, and one for the frames below."""
        info = self.info
        key = f"G{tabs[0]}-{tabs[-1]}-{len(tabs)}"
        if key in self.nodes:
            return key
        counts = Counter()                       # tables per level below
        leaf = Counter()                         # leaf entries by kind
        mapped = []
        stack = [(t, depth) for t in tabs]
        while stack:
            t, d = stack.pop()
            counts[d] += 1
            e = np.asarray(ad.table_entries(self.m, t))
            if d < info.levels - 1:
                idx = np.nonzero(e & ad.P)[0]
                stack.extend((int(c), d + 1) for c in ad.frames_of(e[idx], info))
                continue
            used = e[e != 0]
            present = (used & ad.P) != 0
            protnone = ~present & ((used & ad.PROTNONE) != 0)
            leaf["present"] += int(present.sum())
            leaf["RW"] += int((present & ((used & ad.RW) != 0)).sum())
            leaf["PROTNONE"] += int(protnone.sum())
            leaf["swap"] += int((~present & ~protnone).sum())
            mapped.append(ad.frames_of(used[present | protnone], info))
        seen = np.unique(np.concatenate(mapped)) if mapped else np.zeros(0, np.int64)
        frames = Counter()                       # distinct frames by reference count
        if len(seen):
            refs, nref = np.unique(ad.use_counts(self.m, seen), return_counts=True)
            frames.update({int(r): int(n) for r, n in zip(refs, nref)})
            lo_f, hi_f = int(seen[0]), int(seen[-1])
        name = self.level_name(depth)
        rows = [{"lo": 0, "hi": 0, "t": tabs[0], "flag": "sum", "target": None,
                 "text": f"{len(tabs)} {name} tables #{min(tabs)}\u2013#{max(tabs)}"}]
        for d in sorted(counts):
            if d > depth:
                rows.append({"lo": d, "hi": d, "t": tabs[0], "flag": "sum", "target": None,
                             "text": f"+ {counts[d]} {self.level_name(d)} tables below"})
        ro = leaf["present"] - leaf["RW"]
        rows.append({"lo": 1, "hi": 1, "t": tabs[0], "flag": "sum", "target": None,
                     "text": f"{leaf['present']} present PTEs: {leaf['RW']} RW, {ro} RO"})
        if leaf["swap"] or leaf["PROTNONE"]:
            rows.append({"lo": 2, "hi": 2, "t": tabs[0], "flag": "sum", "target": None,
                         "text": f"{leaf['swap']} swap entries, {leaf['PROTNONE']} PROTNONE"})
        fkey = None
        if len(seen):
            fkey = "Z" + key
            refs = ", ".join(f"{n} with ref {r}" for r, n in sorted(frames.items()))
            self.nodes[fkey] = {"key": fkey, "col": info.levels, "kind": "frameset",
                                "n": len(seen), "lo": lo_f, "hi": hi_f, "refs": refs}
            rows.append({"lo": 3, "hi": 3, "t": tabs[0], "flag": "sum", "target": fkey,
                         "text": f"\u2192 {len(seen)} frames"})
        node = {"key": key, "col": depth, "kind": "group", "level": info.levels - depth,
                "name": name, "count": len(tabs), "use": use, "pfn": tabs[0], "rows": rows}
        # the group must come before its frame set in draw order
        self.nodes = {**{k: v for k, v in self.nodes.items() if k != fkey}, key: node,
                      **({fkey: self.nodes[fkey]} if fkey else {})}
        return key


def snapshot(machine) -> dict:
    """The machine as plain data (see the module docstring)."""
    w = _Walker(machine)
    procs = []
    for p in sorted(machine.processes, key=lambda p: p.pid):
        vmas = p.vmas
        key = w.visit(p.pgd, 0, 0, vmas)
        w.nodes[key]["pid"] = p.pid
        pst = ad.process_stats(machine, p)
        procs.append({"pid": p.pid, "pgd": int(p.pgd), "key": key,
                      "vmas": [[int(s), int(e), prot, bool(sh)] for s, e, prot, sh in vmas],
                      "stats": pst})
    # who reaches each node
    for pr in procs:
        stack, seen = [pr["key"]], set()
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            node = w.nodes[k]
            node.setdefault("owners", []).append(pr["pid"])
            stack.extend(r["target"] for r in node.get("rows", ()) if r["target"])
    info = w.info
    return {"layout": info.name, "levels": info.levels, "level_names": list(info.level_names),
            "rmap": w.rmap, "procs": procs, "nodes": w.nodes,
            "stats": {k: int(v) for k, v in machine.stats().items()}}


# -- differences ---------------------------------------------------------------------

def _sig(node):
    if node["kind"] in ("frame", "frames", "frameset", "swap"):
        node = {k: v for k, v in node.items() if k != "owners"}   # not drawn on frames
    return json.dumps(node, sort_keys=True, default=str)


def _rowsig(r):
    return (r["text"], r["flag"], r["target"])


def _label(node):
    k = node["kind"]
    if k == "pgd":
        return f"pgd #{node['pfn']} (pid {node.get('pid')})"
    if k == "table":
        return f"{node['name']} table #{node['pfn']}"
    if k == "group":
        return f"{node['count']} {node['name']} tables #{node['pfn']}\u2026"
    if k == "frame":
        return f"frame #{node['pfn']}"
    if k == "frames":
        return f"frames #{node['lo']}\u2013#{node['hi']}"
    if k == "frameset":
        return f"{node['n']} frames"
    return "swap slot " + (str(node["lo"]) if node["lo"] == node["hi"]
                           else f"{node['lo']}\u2013{node['hi']}")


MAX_CHANGES = 24


def diff(before: dict, after: dict) -> dict:
    """{"after": {key: "new"|"changed"}, "before": {key: "gone"|"changed"},
    "rows_after": {key: [row index, ...]}, "rows_before": {...}, "changes": [str, ...],
    "stats": {counter: [before, after]}}."""
    bn, an = before["nodes"], after["nodes"]
    say: List[str] = []
    out: Dict[str, Any] = {"after": {}, "before": {}, "rows_after": {}, "rows_before": {},
                           "changes": say}
    bp = {p["pid"] for p in before["procs"]}
    ap = {p["pid"] for p in after["procs"]}
    for pid in sorted(ap - bp):
        say.append(f"process {pid} appears")
    for pid in sorted(bp - ap):
        say.append(f"process {pid} is gone")
    for key, node in an.items():
        old = bn.get(key)
        if old is None:
            out["after"][key] = "new"
            extra = ""
            if node["kind"] in ("table", "group"):
                extra = f" (use {node['use']})"
            elif node["kind"] in ("frame", "frames"):
                extra = f" (ref {node['ref']})"
            say.append(f"new summary: {_label(node)}{extra}" if node["kind"] in ("group", "frameset")
                       else f"new {_label(node)}{extra}")
            continue
        if _sig(old) == _sig(node):
            continue
        out["after"][key] = "changed"
        out["before"][key] = "changed"
        if old.get("use") != node.get("use"):
            say.append(f"{_label(node)}: use {old.get('use')} \u2192 {node.get('use')}")
        if old.get("ref") != node.get("ref"):
            say.append(f"{_label(node)}: ref {old.get('ref')} \u2192 {node.get('ref')}")
        if old.get("chain") != node.get("chain") and "chain" in node:
            say.append(f"{_label(node)}: chain {len(old.get('chain') or [])} \u2192 "
                       f"{len(node['chain'])} slots")
        orows = {(r["lo"], r["hi"]): r for r in old.get("rows", ())}
        nrows = {(r["lo"], r["hi"]): r for r in node.get("rows", ())}
        ra = [i for i, r in enumerate(node.get("rows", ()))
              if (r["lo"], r["hi"]) not in orows or _rowsig(orows[(r["lo"], r["hi"])]) != _rowsig(r)]
        rb = [i for i, r in enumerate(old.get("rows", ()))
              if (r["lo"], r["hi"]) not in nrows or _rowsig(nrows[(r["lo"], r["hi"])]) != _rowsig(r)]
        if ra:
            out["rows_after"][key] = ra
        if rb:
            out["rows_before"][key] = rb
        for i in ra:
            r = node["rows"][i]
            o = orows.get((r["lo"], r["hi"]))
            if o is not None and o["target"] == r["target"] and o["flag"] != r["flag"]:
                say.append(f"{_label(node)} entry {_rng(r['lo'], r['hi'])}: "
                           f"{o['flag']} \u2192 {r['flag']}")
            elif o is not None and r["target"] != o["target"]:
                say.append(f"{_label(node)} entry {_rng(r['lo'], r['hi'])}: now "
                           f"\u2192 {_label(an[r['target']]) if r['target'] in an else '-'}")
            elif o is None and r["flag"] not in ("sum", "kernel", "more", "empty"):
                overlap = any(x["lo"] <= r["hi"] and r["lo"] <= x["hi"]
                              and x["flag"] not in ("empty", "more") for x in orows.values())
                what = (f"now \u2192 {_label(an[r['target']])}" if overlap and r["target"] in an
                        else "filled")
                say.append(f"{_label(node)} entry {_rng(r['lo'], r['hi'])} {what} ({r['flag']})")
    for key, node in bn.items():
        if key not in an:
            out["before"][key] = "gone"
            if node["kind"] in ("group", "frameset"):
                say.append(f"summary {_label(node)} redrawn")
            else:
                say.append(f"{_label(node)} freed" if node["kind"] != "swap"
                           else f"{_label(node)} released")
    if len(say) > MAX_CHANGES:
        del say[MAX_CHANGES - 1:]
        say.append("\u2026 and more (see the highlighted boxes)")
    bs, as_ = before["stats"], after["stats"]
    out["stats"] = {k: [bs.get(k, 0), v] for k, v in as_.items()
                    if bs.get(k, 0) != v and not k.endswith("_peak")}
    return out
