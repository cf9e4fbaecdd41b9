"""Model-based and named tests of every paging layout (DESIGN.md sections 2-7).

Written from the contract (DESIGN.md, PLAN.md's API, the public docstrings of
lazyvm/machine.py) only, never from the core's source.

1. ``LayoutMachine``: a hypothesis ``RuleBasedStateMachine`` that drives a
   ``lazyvm.Machine`` through the public API beside a plain-Python reference
   model that knows no layout: a dict of private pages per process
   (page address -> bytes), copied at fork; shared mappings backed by an object
   dict seen by every process that maps it; exec drops everything; exit removes
   the process.  Fixed mmap addresses are anchors chosen per layout so that
   mappings share and cross leaf-table spans and upper-level spans (x86_64: a
   leaf maps 2 MiB, a pmd table 1 GiB, a pud table 512 GiB; pae: 2 MiB, 1 GiB;
   i386: 4 MiB).  After every step ``Machine.check()`` runs, the VMAs are
   compared, every mapped page is compared without faulting it in (translate +
   ``Machine.physical``; for ``contents=False`` only presence and counts), and
   invariants 1, 3, 4 and 5 are re-derived from ``p.walk``/``m.table``/
   ``m.frame_count`` by ``derive`` (part 2).  One TestCase per configuration:
   layout x share_level (i386, pae: 1; x86_64: 1-3) x fork mode (copy, share,
   mixed) x rmap (on, off), plus swap+reclaim variants and contents=False
   variants (TestLayoutI386Sl1CopyRmap ... TestLayoutX86_64Sl3MixedRmapNoContents).

2. ``derive``/``check_derived``: invariants 3, 4, 5 (and 1 for data frames)
   recomputed from the tables, used by the state machine and by named tests
   after forks.

3. OutOfMemory sweeps (``test_oom_*``): ``Machine.fail_after(n)`` for n = 0, 1,
   ... until the call succeeds, for fork (copy, and share at every level), a
   fault that privatizes tables at several levels, munmap of part of a shared
   range and mprotect; after each failure check() passes, contents read back
   unchanged, and a failed fork leaves frames_free as before and no child.

   ``test_oom_with_swap_entries`` does the same with swap entries under shared
   tables, and sweeps reclaim.

4. Named tests of DESIGN section 6 per share level: write protection at the
   shared level (and nothing else touched), top-down privatize, last-sharer
   reuse, the zap fast path at the shared level and below it, the 514-table
   x86_64 figures; besides, per layout: copy-fork entry bits, user-space bounds,
   share_level and memory limits, first-fit placement, contents=False counts
   equal to a machine with contents, and Machine.replay equal to the API.

A bug these tests found, fixed since: a pae pgd frame kept the stale bytes of its
previous use beyond the 4 PDPT entries (test_pae_pgd_frame_holds_only_the_pdpt).

Run time: about 25 s alone, under a minute on two busy cores, with the defaults
(8 examples of 30 steps per state-machine configuration, 46 configurations).
A slow, thorough run (about 7 minutes alone; 5,000 examples, every rule and
every level's privatize and zap fast path reached hundreds of times):

    LAZYVM_HYPOTHESIS_EXAMPLES=100 LAZYVM_HYPOTHESIS_STEPS=60 \\
        python -m pytest tests/test_model_layouts.py -q

Add LAZYVM_STATEFUL_STATS=1 to print what the state machines reached.

(LAZYVM_HYPOTHESIS_EXAMPLES: examples per configuration, default 8;
LAZYVM_HYPOTHESIS_STEPS: steps per example, default 30.)
"""
import collections
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule)

from lazyvm import (Machine, OutOfMemory, ProcessExited,
                    SegmentationFault)

PAGE = 4096
ZERO = bytes(PAGE)
P, RW, PROTNONE = 0x001, 0x002, 0x080
PS = 0x080                       # in a pmd entry: a huge mapping
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

EXAMPLES = int(os.environ.get("LAZYVM_HYPOTHESIS_EXAMPLES", "8"))
STEPS = int(os.environ.get("LAZYVM_HYPOTHESIS_STEPS", "30"))
SEEN = collections.Counter()     # what the state machine reached (LAZYVM_STATEFUL_STATS=1)

# --------------------------------------------------------------------------
# The layouts, restated from DESIGN.md section 6 (not imported from lazyvm).
# --------------------------------------------------------------------------


class Lay:
    def __init__(self, name, levels, entries, shifts, user_entries, task_size, max_sl,
                 anchors):
        self.name, self.levels, self.entries, self.shifts = name, levels, entries, shifts
        self.user_entries, self.task_size, self.max_sl = user_entries, task_size, max_sl
        self.anchors = anchors
        self.wide = name != "i386"

    def span(self, level):
        """Bytes one table of ``level`` (1 = leaf) maps."""
        k = self.levels - level
        return (1 << self.shifts[k]) * self.entries[k]

    def pfn(self, e):
        return (e >> 12) & ((1 << 40) - 1) if self.wide else e >> 12

    def has_rw(self, level):
        """Whether entries of a table of ``level`` have an RW bit (pae's PDPT has not)."""
        return not (self.name == "pae" and level == 3)


def _anchors(*bounds, top):
    """Mapping anchors: 16 pages below each span boundary, so that a mapping of up
    to 40 pages at anchor + k pages (k in 0..40) lies in one span or crosses it."""
    return tuple(sorted({0} | {b - 16 * PAGE for b in bounds} | {top - 48 * PAGE}))


LAY = {
    "i386": Lay("i386", 2, (1024, 1024), (22, 12), 768, 0xC0000000, 1,
                _anchors(4 * MiB, 0x40000000, 0x40400000, top=0xC0000000)),
    "pae": Lay("pae", 3, (4, 512, 512), (30, 21, 12), 3, 0xC0000000, 1,
               _anchors(2 * MiB, GiB, GiB + 2 * MiB, 2 * GiB, top=0xC0000000)),
    "x86_64": Lay("x86_64", 4, (512, 512, 512, 512), (39, 30, 21, 12), 256,
                  0x7FFFFFFFF000, 3,
                  _anchors(2 * MiB, GiB, GiB + 2 * MiB, 512 * GiB, 513 * GiB,
                           top=0x7FFFFFFFF000)),
}
LEVELS = [("i386", 1), ("pae", 1), ("x86_64", 1), ("x86_64", 2), ("x86_64", 3)]

CANON = {"": "", "r": "r", "rw": "rw", "x": "r", "rx": "r", "rwx": "rw"}
PROTS = ("", "r", "rw", "rw", "rw", "x", "rwx")


def hx(x):
    return hex(x) if isinstance(x, int) else repr(x)


def pattern(seed, n):
    return random.Random(repr(seed)).randbytes(n)


# --------------------------------------------------------------------------
# Part 2: invariants re-derived from walk / table / frame_count
# --------------------------------------------------------------------------


class Derived:
    """What the live page tables say, read through m.table alone."""

    def __init__(self):
        self.level = {}                              # table pfn -> its level
        self.refs = collections.defaultdict(list)    # table pfn -> [(parent, idx, entry)]
        self.slots = collections.defaultdict(list)   # data frame -> [(leaf, idx, entry)]
        self.per_proc = {}                           # pgd -> {"tables": {lvl: set}, "rss": n,
        #                                               "rss_present": n, "spans": [...]}
        self.swap_entries = []                       # [(leaf, idx, entry)]
        self.huge_maps = 0                           # huge pmd mappings (distinct slots)


def derive(m, lay, pgds):
    """Walk every live pgd's user entries down to the leaves with m.table."""
    d = Derived()
    kids = {}                                   # table pfn -> [(idx, entry, child)]
    leaf = {}                                   # leaf pfn -> [(idx, entry)]
    huge = {}                                   # pmd table pfn -> [(idx, huge entry)]

    def children(t, lvl):
        if t not in kids:
            ents = np.asarray(m.table(t))
            if lvl == lay.levels:
                ents = ents[:lay.user_entries]
            out = []
            for i in np.flatnonzero(ents):
                e = int(ents[i])
                assert e & P, ("table %s (level %d) entry %d is %s: an upper-level entry "
                               "is either zero or present" % (hx(t), lvl, i, hx(e)))
                if lvl == 2 and e & PS:          # a huge mapping: a leaf of 512 pages
                    assert lay.pfn(e) % 512 == 0, "huge entry %s: head not 512-aligned" % hx(e)
                    huge.setdefault(t, []).append((int(i), e))
                    continue
                low = e & 0xFFF
                if lay.has_rw(lvl):
                    assert low in (0x067, 0x065), (
                        "entry %s of table %s[%d]: a user table entry is table | 0x067 "
                        "(RW cleared when shared)" % (hx(e), t, i))
                else:
                    assert low == 0x001, "pae PDPT entry %s is not table | 0x001" % hx(e)
                assert e >> 52 == 0, "entry %s sets bits 52-63 (NX is never set)" % hx(e)
                out.append((int(i), e, lay.pfn(e)))
            kids[t] = out
        return kids[t]

    def leaves(t):
        if t not in leaf:
            ents = np.asarray(m.table(t))
            leaf[t] = [(int(i), int(ents[i])) for i in np.flatnonzero(ents)]
        return leaf[t]

    for pgd in pgds:
        assert m.frame_kind(pgd) == "pgd", "pgd %s is a %s frame" % (pgd, m.frame_kind(pgd))
        tables = {lvl: set() for lvl in range(1, lay.levels)}
        stack = [(pgd, lay.levels, 0)]
        rss = rss_present = deposits = 0
        spans = []                  # (level, base address) of every table reached
        while stack:
            t, lvl, base = stack.pop()
            if lvl == 1:
                for _i, e in leaves(t):
                    if e & (P | PROTNONE) and m.frame_kind(lay.pfn(e)) != "reserved":
                        rss += 1
                        rss_present += bool(e & P)
                continue
            children(t, lvl)
            for _i, _e in huge.get(t, ()):
                rss += 512
                rss_present += 512
                deposits += 1
            for i, _e, c in children(t, lvl):
                assert d.level.setdefault(c, lvl - 1) == lvl - 1, (
                    "table %s reached at levels %d and %d" % (c, d.level[c], lvl - 1))
                assert c not in tables[lvl - 1], "pgd %s reaches table %s twice" % (pgd, c)
                tables[lvl - 1].add(c)
                cbase = base + i * lay.span(lvl - 1)
                spans.append((lvl - 1, cbase, c))
                stack.append((c, lvl - 1, cbase))
        kernel = np.asarray(m.table(pgd))[lay.user_entries:lay.entries[0]].copy()
        d.per_proc[pgd] = {"tables": tables, "rss": rss, "rss_present": rss_present,
                           "spans": spans, "kernel": kernel, "deposits": deposits}
    for t, lst in kids.items():
        for i, e, c in lst:
            d.refs[c].append((t, i, e))
    for t, lst in huge.items():
        for i, e in lst:
            d.slots[lay.pfn(e)].append((t, i, e))
            d.huge_maps += 1
    for t, lst in leaf.items():
        for i, e in lst:
            assert e >> 52 == 0, "PTE %s of %s[%d] sets bits 52-63 (NX)" % (hx(e), t, i)
            if e & (P | PROTNONE):
                d.slots[lay.pfn(e)].append((t, i, e))
            else:
                d.swap_entries.append((t, i, e))
    return d


def check_derived(m, lay, procs, swap=False, shared_levels=None, eager=False):
    """DESIGN section 3 invariants 3, 4, 5 (and 1 for data frames), from the tables
    (eager: section 10's invariant 1, each slot counting its table's use count):

    3. a table's use count equals the entries of live pgds and live tables that
       point at it;
    4. a table with use count > 1 is reached only through entries with RW clear
       (pae's PDPT entries have no RW bit);
    5. a private frame reached from more than one leaf slot has RW clear in each.
    shared_levels: the levels whose tables may be shared (None: any)."""
    d = derive(m, lay, [p.pgd for p in procs])
    for t, refs in d.refs.items():
        lvl = d.level[t]
        assert m.frame_kind(t) == "table", "table %s is a %s frame" % (t, m.frame_kind(t))
        n = m.frame_count(t)
        assert n == len(refs), ("invariant 3: table %s (level %d) has use count %d, %d "
                                "entries point at it: %s" % (t, lvl, n, len(refs), refs))
        if len(refs) > 1:
            if shared_levels is not None:
                assert lvl in shared_levels, ("a level-%d table %s is shared, only levels %s "
                                              "may be" % (lvl, t, shared_levels))
            assert lay.has_rw(lvl + 1), ("a table below pae's PDPT (%s) is shared: it "
                                         "cannot be write-protected" % t)
            for parent, i, e in refs:
                assert not e & RW, ("invariant 4: shared table %s (level %d, use count %d) "
                                    "reached through writable entry %s of %s[%d]"
                                    % (t, lvl, n, hx(e), parent, i))
    heads = collections.defaultdict(list)       # a frame of a huge page counts on its head
    huge_heads = set()
    for f, slots in d.slots.items():
        if m.frame_kind(f) == "anon" and m.frame_count(f) == 0:
            heads[f & ~511] += slots
            huge_heads.add(f & ~511)
        else:
            heads[f] += slots
            if any(e & PS and d.level.get(t) == 2 for t, _i, e in slots):
                huge_heads.add(f)
    for f, slots in heads.items():
        kind = m.frame_kind(f)
        if kind == "reserved":                   # the ZERO_PAGE: never counted
            assert not any(e & RW for _t, _i, e in slots), ("ZERO_PAGE writable", slots)
            continue
        assert kind in ("anon", "shmem"), "frame %s mapped by %s is %s" % (f, slots, kind)
        n = m.frame_count(f)
        refs = sum(m.frame_count(t) for t, _i, _e in slots) if eager else len(slots)
        if kind == "anon":
            assert n - refs in ((0, 1) if swap else (0,)), (
                "invariant 1: anon frame %s count %d, %d slots (%d references)"
                % (f, n, len(slots), refs))
            if len(slots) > 1 or (f in huge_heads and n > 1 and not eager):
                for t, i, e in slots:
                    assert not e & RW, ("invariant 5: private frame %s in %d slots, "
                                        "writable in %s[%d] = %s" % (f, len(slots), t, i, hx(e)))
        else:
            assert n == refs + 1, (
                "invariant 1: shmem frame %s count %d, %d slots (%d references) + its object"
                % (f, n, len(slots), refs))
    if not swap:
        assert not d.swap_entries, "swap entries without swap: %s" % d.swap_entries[:4]
    for t, i, e in d.swap_entries:
        assert e & 0x81 == 0, "swap entry %s of %s[%d] has bit 0 or 7 set" % (hx(e), t, i)
    if m.rmap_enabled:                         # invariant 2: the chains hold the slots
        for f, slots in d.slots.items():
            if m.frame_kind(f) != "reserved":
                got = sorted((int(t), int(i)) for t, i in m.rmap(f))
                assert got == sorted((t, i) for t, i, _e in slots), (
                    "rmap of frame %s is %s, the tables map it from %s" % (f, got, slots))
    # the per-process and machine table counts
    every = collections.Counter()
    kernel = None
    for p in procs:
        pp = d.per_proc[p.pgd]
        if kernel is None:
            kernel = pp["kernel"]
        assert np.array_equal(pp["kernel"], kernel), (
            "pid %d's kernel entries differ from another process's" % p.pid)
        vmas = [(int(v[0]), int(v[1])) for v in p.vmas]
        for lvl, base, t in pp["spans"]:
            end = base + lay.span(lvl)
            assert any(s < end and base < e for s, e in vmas), (
                "pid %d keeps level-%d table %s for [%s, %s), where no VMA of it lies"
                % (p.pid, lvl, t, hx(base), hx(end)))
        s = p.stats()
        per = {lvl: len(ts) for lvl, ts in pp["tables"].items()}
        per[1] += pp["deposits"]
        assert s["page_tables"] == sum(per.values()), (p.pid, s, per)
        for lvl, n in per.items():
            assert s["page_tables_l%d" % lvl] == n, (p.pid, lvl, s, per)
        assert pp["rss_present"] <= s["rss"] <= pp["rss"], (p.pid, s, pp)
    for t, lvl in d.level.items():
        every[lvl] += 1
    ms = m.stats()
    assert ms["tables_deposited"] == d.huge_maps, (ms["tables_deposited"], d.huge_maps)
    every[1] += d.huge_maps
    assert ms["page_tables"] == sum(every.values()), (ms["page_tables"], every)
    assert ms["tables_allocated"] - ms["tables_freed"] == ms["page_tables"], (
        "tables allocated %d - freed %d != %d live" % (
            ms["tables_allocated"], ms["tables_freed"], ms["page_tables"]))
    for key in ("unshares", "tables_dropped", "page_tables"):
        per = [ms["%s_l%d" % (key, k)] for k in range(1, lay.levels)]
        assert ms[key] == sum(per), (key, ms[key], per)
    for lvl in range(1, lay.levels):
        assert ms["page_tables_l%d" % lvl] == every[lvl], (lvl, ms, every)
    assert ms["pgds"] == len(procs)
    return d


# --------------------------------------------------------------------------
# Part 1: the reference model (no layout in it)
# --------------------------------------------------------------------------

class Obj:
    """A shared-memory object: page offset -> bytes (and which offsets exist)."""

    def __init__(self):
        self.pages = {}
        self.exists = set()


class MVma:
    __slots__ = ("start", "end", "prot", "obj", "pgoff")

    def __init__(self, start, end, prot, obj=None, pgoff=0):
        self.start, self.end, self.prot, self.obj, self.pgoff = start, end, prot, obj, pgoff

    def copy(self):
        return MVma(self.start, self.end, self.prot, self.obj, self.pgoff)

    def __repr__(self):
        return "MVma(%s-%s %r %s)" % (hx(self.start), hx(self.end), self.prot,
                                      "shared+%d" % self.pgoff if self.obj else "private")


class PModel:
    def __init__(self):
        self.vmas = []
        self.pages = {}          # private page -> bytes
        self.present = {}        # page -> "z" (ZERO_PAGE), "d" (private data), "s" (shared)
        self.known = True        # presence known (False after a partial OutOfMemory)

    def clone(self):
        n = PModel()
        n.vmas = [v.copy() for v in self.vmas]
        n.pages = dict(self.pages)
        n.present = dict(self.present)
        n.known = self.known
        return n

    def norm(self):
        out = []
        for v in self.vmas:
            k = [v.start, v.end, v.prot, v.obj is not None]
            if out and out[-1][1] == k[0] and out[-1][2:] == k[2:]:
                out[-1][1] = k[1]
            else:
                out.append(k)
        return [tuple(x) for x in out]

    def find(self, a):
        for v in self.vmas:
            if v.start <= a < v.end:
                return v
        return None

    def _split(self, a):
        for i, v in enumerate(self.vmas):
            if v.start < a < v.end:
                self.vmas.insert(i + 1, MVma(a, v.end, v.prot, v.obj,
                                             v.pgoff + (a - v.start) // PAGE))
                v.end = a
                return

    def unmap(self, s, e):
        self._split(s)
        self._split(e)
        self.vmas = [v for v in self.vmas if not (s <= v.start and v.end <= e)]
        for d in (self.pages, self.present):
            for a in [a for a in d if s <= a < e]:
                del d[a]

    def map(self, s, e, prot, obj):
        self.unmap(s, e)
        self.vmas.append(MVma(s, e, CANON[prot], obj, 0))
        self.vmas.sort(key=lambda v: v.start)

    def covered(self, s, e):
        a = s
        while a < e:
            v = self.find(a)
            if v is None:
                return False
            a = v.end
        return True

    def protect(self, s, e, prot):
        self._split(s)
        self._split(e)
        for v in self.vmas:
            if s <= v.start and v.end <= e:
                v.prot = CANON[prot]

    def access_ok(self, addr, n, write):
        for pg in pages_of(addr, n):
            v = self.find(pg)
            if v is None or v.prot not in (("rw",) if write else ("r", "rw")):
                return False
        return True

    def page(self, pg):
        v = self.find(pg)
        if v.obj is not None:
            return v.obj.pages.get(v.pgoff + (pg - v.start) // PAGE, ZERO)
        return self.pages.get(pg, ZERO)

    def fault(self, pg, write):
        v = self.find(pg)
        if v.obj is not None:
            self.present[pg] = "s"
            v.obj.exists.add(v.pgoff + (pg - v.start) // PAGE)
        elif write:
            self.present[pg] = "d"
        else:
            self.present.setdefault(pg, "z")

    def read(self, addr, n):
        out = bytearray()
        for pg in pages_of(addr, n):
            lo, hi = max(addr, pg), min(addr + n, pg + PAGE)
            out += self.page(pg)[lo - pg:hi - pg]
            self.fault(pg, False)
        return bytes(out)

    def write(self, addr, data):
        for pg in pages_of(addr, len(data)):
            self.fault(pg, True)
        for pg in pages_of(addr, len(data)):
            lo, hi = max(addr, pg), min(addr + len(data), pg + PAGE)
            buf = bytearray(self.page(pg))
            buf[lo - pg:hi - pg] = data[lo - addr:hi - addr]
            v = self.find(pg)
            if v.obj is not None:
                v.obj.pages[v.pgoff + (pg - v.start) // PAGE] = bytes(buf)
            else:
                self.pages[pg] = bytes(buf)


def pages_of(addr, n):
    pg = addr & ~(PAGE - 1)
    while pg < addr + n:
        yield pg
        pg += PAGE


def interesting_pages(v, mdl):
    """The pages of a VMA worth comparing: all of a small one; of a big one its ends
    and every page the model knows anything about (the rest must be untouched, which
    the rss comparison covers)."""
    if v.end - v.start <= 64 * PAGE:
        return range(v.start, v.end, PAGE)
    pts = {v.start, v.start + PAGE, v.end - 2 * PAGE, v.end - PAGE}
    pts.update(a for d in (mdl.present, mdl.pages) for a in d if v.start <= a < v.end)
    if v.obj is not None:
        for off in set(v.obj.pages) | v.obj.exists:
            a = v.start + (off - v.pgoff) * PAGE
            if v.start <= a < v.end:
                pts.add(a)
    return sorted(pts)


class Slot:
    def __init__(self, p, mdl):
        self.p, self.mdl = p, mdl


class LayoutMachine(RuleBasedStateMachine):
    LAYOUT = "i386"
    SHARE_LEVEL = 1
    FORK_MODE = "copy"          # "copy", "share", "odf" or "mixed" (any of the three)
    ACCOUNTING = "lazy"         # "lazy" or "eager"
    THP = "never"               # "never", "always" or "madvise" (pae, x86_64)
    THP_COW = "split"
    RMAP = False
    SWAP = 0
    CONTENTS = True
    MEMORY = 8 * MiB
    MAX_PROCS = 4

    def __init__(self):
        super().__init__()
        self.lay = LAY[self.LAYOUT]
        self.m = Machine(memory=self.MEMORY, layout=self.LAYOUT, share_level=self.SHARE_LEVEL,
                         fork_mode="share" if self.FORK_MODE == "mixed" else self.FORK_MODE,
                         rmap=self.RMAP, swap=self.SWAP, contents=self.CONTENTS,
                         accounting=self.ACCOUNTING, thp=self.THP, thp_cow=self.THP_COW)
        self.free0 = self.m.stats()["frames_free"]
        self.procs = []

    # ---- helpers -------------------------------------------------------

    @initialize(data=st.data())
    def first(self, data):
        """A first process with a few mappings at the anchors, partly written, so
        that forks have tables to share and copy from the first step on."""
        s = Slot(self.m.spawn(), PModel())
        self.procs.append(s)
        for _ in range(data.draw(st.integers(1, 3), label="mappings")):
            a = self._fixed_addr(data)
            n = min(data.draw(st.integers(8, 40), label="pages") * PAGE,
                    self.lay.task_size - a)
            shared = data.draw(st.integers(0, 3), label="shared") == 0
            s.p.mmap(n, prot="rw", shared=shared, addr=a)
            s.mdl.map(a, a + n, "rw", Obj() if shared else None)
            pages = [pg for pg in range(a, a + n, PAGE)
                     if data.draw(st.integers(0, 2), label="write") == 0]
            if self.CONTENTS:
                for pg in pages:
                    buf = pattern((pg, "init"), PAGE)
                    s.p.write(pg, buf)
                    s.mdl.write(pg, buf)
            elif pages:
                s.p.touch_pages(np.array(pages, dtype=np.uint64), write=True)
                for pg in pages:
                    s.mdl.fault(pg, True)

    def _pick(self, data):
        return self.procs[data.draw(st.integers(0, len(self.procs) - 1), label="proc")]

    def _fixed_addr(self, data):
        return (data.draw(st.sampled_from(self.lay.anchors), label="anchor")
                + data.draw(st.integers(0, 40), label="page") * PAGE)

    def _range(self, data, s, max_pages, want=None):
        """(addr, length) aligned, mostly in or around one VMA."""
        vmas = s.mdl.vmas
        if want:
            vmas = [v for v in vmas if v.prot in want] or vmas
        if vmas and data.draw(st.integers(0, 3), label="inside"):
            v = data.draw(st.sampled_from(vmas), label="vma")
            npg = (v.end - v.start) // PAGE
            lo = data.draw(st.integers(0, npg - 1), label="lo")
            hi = data.draw(st.integers(lo + 1, lo + max_pages), label="hi")
            a = v.start + lo * PAGE
            return a, min((hi - lo) * PAGE, self.lay.task_size - a)
        a = self._fixed_addr(data)
        n = data.draw(st.integers(1, max_pages), label="pages") * PAGE
        return a, min(n, self.lay.task_size - a)

    def _bytes_range(self, data, s, want):
        a, n = self._range(data, s, 3, want)
        a += data.draw(st.integers(0, PAGE - 1), label="offset")
        n = data.draw(st.integers(1, 2 * PAGE + 64), label="length")
        return a, min(n, self.lay.task_size - a)

    def _oom(self, s, what):
        """A partial OutOfMemory: pages faulted in before it may stay mapped."""
        s.mdl.known = False

    # ---- rules ---------------------------------------------------------

    @precondition(lambda self: len(self.procs) < self.MAX_PROCS)
    @rule()
    def spawn(self):
        self.procs.append(Slot(self.m.spawn(), PModel()))

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mmap_fixed(self, data):
        s = self._pick(data)
        a = self._fixed_addr(data)
        n = data.draw(st.integers(1, 40), label="pages") * PAGE
        n = min(n, self.lay.task_size - a)
        prot = data.draw(st.sampled_from(PROTS), label="prot")
        shared = data.draw(st.booleans(), label="shared")
        try:
            got = s.p.mmap(n, prot=prot, shared=shared, addr=a)
        except OutOfMemory:            # unmapping the old pages could not privatize
            return
        assert got == a
        s.mdl.map(a, a + n, prot, Obj() if shared else None)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mmap_big(self, data):
        """A mapping of whole table spans of some level (x86_64 up to 512 GiB), or
        one page more or less, at a span boundary; a few of its pages touched."""
        s = self._pick(data)
        lay = self.lay
        level = data.draw(st.integers(1, lay.levels - 1), label="level")
        span = lay.span(level)
        count = data.draw(st.integers(1, 2), label="spans")
        at = data.draw(st.integers(1, 2), label="at")
        if (at + count) * span + PAGE > lay.task_size:
            level, span, count = 1, lay.span(1), 1
        base = span * at
        lo = data.draw(st.sampled_from((0, 0, PAGE, -PAGE)), label="lo")
        hi = data.draw(st.sampled_from((0, 0, PAGE, -PAGE)), label="hi")
        a, e = base + lo, base + count * span + hi
        shared = span <= GiB and data.draw(st.integers(0, 3), label="shared") == 0
        s.p.mmap(e - a, prot="rw", shared=shared, addr=a)
        s.mdl.map(a, e, "rw", Obj() if shared else None)
        pages = sorted(pg for pg in {a, e - PAGE, base, base + span - PAGE, base + span // 2,
                                     base + span} if a <= pg < e)
        SEEN["big-l%d" % level] += 1
        write = data.draw(st.booleans(), label="write")
        try:
            s.p.touch_pages(np.array(pages, dtype=np.uint64), write=write)
        except OutOfMemory:
            return self._oom(s, "touch_pages")
        for pg in pages:
            s.mdl.fault(pg, write)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mmap_anywhere(self, data):
        s = self._pick(data)
        n = data.draw(st.integers(1, 24), label="pages") * PAGE
        shared = data.draw(st.booleans(), label="shared")
        a = s.p.mmap(n, prot="rw", shared=shared)
        assert a % PAGE == 0 and 0 <= a and a + n <= self.lay.task_size
        assert not any(v.start < a + n and a < v.end for v in s.mdl.vmas), (
            "mmap placed %s over a mapping" % hx(a))
        s.mdl.map(a, a + n, "rw", Obj() if shared else None)

    @precondition(lambda self: any(s.mdl.vmas for s in self.procs))
    @rule(data=st.data())
    def munmap(self, data):
        s = data.draw(st.sampled_from([s for s in self.procs if s.mdl.vmas]), label="proc")
        if data.draw(st.booleans(), label="whole"):
            v = data.draw(st.sampled_from(s.mdl.vmas), label="vma")
            a, n = v.start, v.end - v.start
        else:
            a, n = self._range(data, s, 20)
        try:
            s.p.munmap(a, n)
        except OutOfMemory:            # docstring: nothing is unmapped
            return
        s.mdl.unmap(a, a + n)

    @precondition(lambda self: any(s.mdl.vmas for s in self.procs))
    @rule(data=st.data())
    def mprotect(self, data):
        s = data.draw(st.sampled_from([s for s in self.procs if s.mdl.vmas]), label="proc")
        a, n = self._range(data, s, 20)
        prot = data.draw(st.sampled_from(PROTS), label="prot")
        if not s.mdl.covered(a, a + n):
            before = s.mdl.norm()
            with pytest.raises(ValueError):
                s.p.mprotect(a, n, prot)
            assert s.mdl.norm() == before
            return
        try:
            s.p.mprotect(a, n, prot)
        except OutOfMemory:            # docstring: no protection changed
            return
        s.mdl.protect(a, a + n, prot)

    @precondition(lambda self: any(s.mdl.vmas for s in self.procs))
    @rule(data=st.data())
    def madvise(self, data):
        """Huge-page advice: splits VMAs (and the huge mappings an end cuts), changes
        no byte; a range not all mapped is a ValueError."""
        s = data.draw(st.sampled_from([s for s in self.procs if s.mdl.vmas]), label="proc")
        a, n = self._range(data, s, 600)
        advice = data.draw(st.sampled_from(("hugepage", "nohugepage")), label="advice")
        SEEN["madvise"] += 1
        if not s.mdl.covered(a, a + n):
            with pytest.raises(ValueError):
                s.p.madvise(a, n, advice)
            return
        try:
            s.p.madvise(a, n, advice)
        except OutOfMemory:            # a shared table could not be privatized
            return

    @precondition(lambda self: self.CONTENTS and self.procs)
    @rule(data=st.data())
    def read(self, data):
        s = self._pick(data)
        a, n = self._bytes_range(data, s, ("r", "rw"))
        if not s.mdl.access_ok(a, n, False):
            with pytest.raises(SegmentationFault):
                s.p.read(a, n)
            return
        try:
            got = s.p.read(a, n)
        except OutOfMemory:
            return self._oom(s, "read")
        assert got == s.mdl.read(a, n), "read(%s, %d) of pid %d" % (hx(a), n, s.p.pid)

    @precondition(lambda self: self.CONTENTS and self.procs)
    @rule(data=st.data())
    def write(self, data):
        s = self._pick(data)
        a, n = self._bytes_range(data, s, ("rw",))
        buf = pattern(data.draw(st.integers(0, 1 << 30), label="seed"), n)
        if not s.mdl.access_ok(a, n, True):
            with pytest.raises(SegmentationFault):
                s.p.write(a, buf)
            return
        try:
            s.p.write(a, buf)
        except OutOfMemory:            # no byte changed; earlier pages may be mapped
            return self._oom(s, "write")
        s.mdl.write(a, buf)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def touch(self, data):
        s = self._pick(data)
        write = data.draw(st.booleans(), label="write")
        a, n = self._range(data, s, 40, ("rw",) if write else ("r", "rw"))
        if not s.mdl.access_ok(a, n, write):
            with pytest.raises(SegmentationFault):
                s.p.touch(a, n, write=write)
            return
        try:
            s.p.touch(a, n, write=write)
        except OutOfMemory:
            return self._oom(s, "touch")
        for pg in pages_of(a, n):
            s.mdl.fault(pg, write)

    @precondition(lambda self: any(s.mdl.vmas for s in self.procs))
    @rule(data=st.data())
    def touch_pages(self, data):
        s = data.draw(st.sampled_from([s for s in self.procs if s.mdl.vmas]), label="proc")
        write = data.draw(st.booleans(), label="write")
        pages = []
        for _ in range(data.draw(st.integers(1, 12), label="n")):
            v = data.draw(st.sampled_from(s.mdl.vmas), label="vma")
            pages.append(v.start + data.draw(st.integers(0, (v.end - v.start) // PAGE - 1),
                                             label="page") * PAGE
                         + data.draw(st.integers(0, PAGE - 1), label="off"))
        arr = np.array(pages, dtype=np.uint64)
        if not all(s.mdl.access_ok(a, 1, write) for a in pages):
            with pytest.raises(SegmentationFault):
                s.p.touch_pages(arr, write=write)
            return
        try:
            s.p.touch_pages(arr, write=write)
        except OutOfMemory:
            return self._oom(s, "touch_pages")
        for a in pages:
            s.mdl.fault(a & ~(PAGE - 1), write)

    @precondition(lambda self: self.procs and len(self.procs) < self.MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data):
        s = self._pick(data)
        mode = (data.draw(st.sampled_from(("copy", "share", "odf")), label="mode")
                if self.FORK_MODE == "mixed" else self.FORK_MODE)
        s0 = self.m.stats()
        nprocs = len(self.m.processes)
        try:
            c = s.p.fork(mode=mode)
        except OutOfMemory:
            SEEN["fork-oom"] += 1
            s1 = self.m.stats()
            for k in ("frames_free", "page_tables", "pgds", "pte_chain_nodes", "swap_used"):
                assert s1[k] == s0[k], "a failed %s fork changed %s: %d -> %d" % (
                    mode, k, s0[k], s1[k])
            assert len(self.m.processes) == nprocs, "a failed fork left a child"
            return
        assert c.alive and c.pid not in [t.p.pid for t in self.procs]
        self.procs.append(Slot(c, s.mdl.clone()))
        self._derived()

    @precondition(lambda self: self.CONTENTS and self.procs)
    @rule(data=st.data())
    def write_again(self, data):
        self.write(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def touch_again(self, data):
        self.touch(data)

    @precondition(lambda self: self.procs and len(self.procs) < self.MAX_PROCS)
    @rule(data=st.data())
    def fork_again(self, data):
        self.fork(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def exec(self, data):
        s = self._pick(data)
        s.p.exec()
        s.mdl = PModel()

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def exit(self, data):
        s = self._pick(data)
        s.p.exit()
        self.procs.remove(s)
        with pytest.raises(ProcessExited):
            s.p.read(0, 1) if self.CONTENTS else s.p.touch(0, PAGE)

    @precondition(lambda self: self.SWAP)
    @rule(n=st.integers(1, 64))
    def reclaim(self, n):
        try:
            got = self.m.reclaim(n)
        except OutOfMemory:                  # swap full before anything was freed
            return
        assert 0 <= got <= n

    @precondition(lambda self: self.SWAP)
    @rule(n=st.integers(1, 64))
    def reclaim_again(self, n):
        self.reclaim(n)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def inject_oom(self, data):
        """Let the next n allocations succeed and every later one fail, for one
        operation; each rule above accepts what DESIGN section 4 allows after an
        OutOfMemory (no byte changed, no VMA changed by a failed munmap/mprotect, no
        child and no frame lost by a failed fork)."""
        ops = ["touch", "touch_pages", "fork", "munmap", "mprotect", "mmap_fixed", "spawn",
               "madvise"]
        if self.CONTENTS:
            ops += ["write", "write", "read"]
        if self.SWAP:
            ops += ["reclaim"]
        op = data.draw(st.sampled_from(ops), label="op")
        if op in ("fork", "spawn") and len(self.procs) >= self.MAX_PROCS:
            op = "touch"
        if op in ("touch_pages", "munmap", "mprotect", "madvise") and not any(
                t.mdl.vmas for t in self.procs):
            op = "touch"
        n = data.draw(st.integers(0, 2) | st.integers(0, 12), label="fail_after")
        SEEN["inject-" + op] += 1
        self.m.fail_after(n)
        try:
            if op == "reclaim":
                self.reclaim(data.draw(st.integers(1, 64), label="n"))
            elif op == "spawn":
                free, nprocs = self.m.stats()["frames_free"], len(self.m.processes)
                try:
                    self.spawn()
                except OutOfMemory:
                    assert self.m.stats()["frames_free"] == free
                    assert len(self.m.processes) == nprocs
            else:
                getattr(self, op)(data)
        finally:
            self.m.fail_after(None)

    # ---- comparison ----------------------------------------------------

    def _derived(self):
        levels = None
        if self.FORK_MODE == "copy":
            levels = ()
        elif self.FORK_MODE == "odf":
            levels = (1,)
        else:
            levels = tuple(range(1, self.SHARE_LEVEL + 1))
        check_derived(self.m, self.lay, [s.p for s in self.procs], swap=bool(self.SWAP),
                      shared_levels=levels, eager=self.ACCOUNTING == "eager")

    def _compare(self, s):
        p, mdl, lay = s.p, s.mdl, self.lay
        assert p.alive
        got = [(int(a), int(b), pr, bool(sh)) for a, b, pr, sh in p.vmas]
        merged = []
        for k in got:
            if merged and merged[-1][1] == k[0] and merged[-1][2:] == k[2:]:
                merged[-1] = (merged[-1][0],) + k[1:]
            else:
                merged.append(k)
        assert merged == mdl.norm(), "pid %d vmas %s, model %s" % (p.pid, merged, mdl.norm())
        phys = self.m.physical if self.CONTENTS else None
        presence = mdl.known and not self.SWAP and self.THP == "never"   # a huge fault
        # maps 512 pages at once
        rss_lo = rss_hi = 0
        for v in mdl.vmas:
            for pg in interesting_pages(v, mdl):
                pa = p.translate(pg)
                state = mdl.present.get(pg)
                if presence:
                    if state in ("d", "s"):
                        rss_hi += 1
                        rss_lo += v.prot != ""
                    if state is None:
                        assert pa is None, ("pid %d page %s never touched maps %s"
                                            % (p.pid, hx(pg), hx(pa)))
                    elif v.prot != "":
                        assert pa is not None, ("pid %d page %s (%s) is not mapped"
                                                % (p.pid, hx(pg), state))
                if v.prot == "":
                    assert pa is None, ("pid %d page %s of a PROT_NONE mapping translates "
                                        "to %s" % (p.pid, hx(pg), hx(pa)))
                if pa is None:
                    continue
                w = p.walk(pg)
                assert (w[-1][0] == 1 or w[-1][3] & PS) and w[-1][3] & P
                pte = w[-1][3]
                writable = all(e & RW for lvl, _t, _i, e in w if lay.has_rw(lvl))
                if v.prot != "rw":
                    assert not writable, ("pid %d page %s of a %r mapping is writable: %s"
                                          % (p.pid, hx(pg), v.prot, w))
                if v.obj is not None:
                    assert pte & RW or v.prot != "rw", ("shared page %s pte %s lacks RW"
                                                        % (hx(pg), hx(pte)))
                if presence and state == "z":
                    assert not pte & RW
                if phys is not None:
                    got = phys[pa & ~(PAGE - 1):(pa & ~(PAGE - 1)) + PAGE].tobytes()
                    assert got == mdl.page(pg), ("pid %d page %s (%r) holds other bytes "
                                                 "than the model" % (p.pid, hx(pg), v))
            for pg in (v.start - PAGE, v.end):
                if 0 <= pg < lay.task_size and mdl.find(pg) is None:
                    assert p.translate(pg) is None, "unmapped %s is mapped" % hx(pg)
        if presence:
            rss = p.stats()["rss"]
            assert rss_lo <= rss <= rss_hi, ("pid %d rss %d, model %d..%d"
                                             % (p.pid, rss, rss_lo, rss_hi))

    @invariant()
    def consistent(self):
        self.m.check()
        assert sorted(q.pid for q in self.m.processes) == sorted(s.p.pid for s in self.procs)
        for s in self.procs:
            self._compare(s)
        self._derived()

    def teardown(self):
        st0 = self.m.stats()
        for k in ("unshares_l1", "unshares_l2", "unshares_l3", "unshare_reuses",
                  "tables_dropped_l1", "tables_dropped_l2", "tables_dropped_l3",
                  "cow_copies", "cow_reuses", "swap_outs", "swap_ins", "forks_copy",
                  "forks_share", "shmem_faults", "zero_page_maps", "forks_odf",
                  "odf_tables_shared", "eager_refs", "thp_faults", "thp_fallbacks",
                  "thp_splits", "thp_copies"):
            SEEN[k] += st0.get(k, 0)
        SEEN["examples"] += 1
        if self.CONTENTS:
            for s in self.procs:
                for v in s.mdl.vmas:
                    if v.prot == "":
                        continue
                    if v.end - v.start <= 64 * PAGE:
                        assert s.p.read(v.start, v.end - v.start) == b"".join(
                            s.mdl.page(pg) for pg in range(v.start, v.end, PAGE)), (
                            "pid %d contents of %r" % (s.p.pid, v))
                    else:
                        for pg in interesting_pages(v, s.mdl):
                            assert s.p.read(pg, PAGE) == s.mdl.page(pg), (
                                "pid %d page %s of %r" % (s.p.pid, hx(pg), v))
        for s in self.procs:
            s.p.exit()
        self.procs = []
        self.m.check()
        st_ = self.m.stats()
        assert st_["frames_free"] == self.free0, (st_["frames_free"], self.free0)
        assert st_["page_tables"] == 0 and st_["pte_chain_nodes"] == 0
        assert st_["swap_used"] == 0


def _configuration(layout, sl, mode, rmap, swap=False, contents=True, accounting="lazy",
                   thp="never", thp_cow="split"):
    name = "TestLayout%s%sSl%d%s%s%s%s%s%s" % (
        layout[0].upper(), layout[1:], sl, mode.capitalize(), "Rmap" if rmap else "NoRmap",
        "Swap" if swap else "", "" if contents else "NoContents",
        "Eager" if accounting == "eager" else "",
        "" if thp == "never" else "Thp" + thp.capitalize() + thp_cow.capitalize())
    memory = (3 * MiB) if swap else 8 * MiB
    if thp != "never":               # room for a few runs of 512 frames (and fallbacks)
        memory = 16 * MiB if swap else 24 * MiB
    attrs = dict(LAYOUT=layout, SHARE_LEVEL=sl, FORK_MODE=mode, RMAP=rmap,
                 ACCOUNTING=accounting, CONTENTS=contents, SWAP=(8 * MiB) if swap else 0,
                 THP=thp, THP_COW=thp_cow, MEMORY=memory)
    machine = type(name + "Machine", (LayoutMachine,), attrs)
    case = machine.TestCase
    case.settings = settings(max_examples=EXAMPLES, stateful_step_count=STEPS,
                             deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
    case.__name__ = case.__qualname__ = name
    return name, case


def _configurations():
    for layout in ("i386", "pae", "x86_64"):
        for sl in range(1, LAY[layout].max_sl + 1):
            for mode in ("copy", "share", "mixed"):
                for rmap in (False, True):
                    yield layout, sl, mode, rmap, False, True
        top = LAY[layout].max_sl
        for sl in range(1, top + 1):
            for rmap in (False, True):
                yield layout, sl, "mixed", rmap, True, True
        yield layout, top, "mixed", True, False, False
        yield layout, top, "mixed", True, True, False
        # On-demand-fork and eager accounting (DESIGN section 10): leaf sharing only
        yield layout, 1, "odf", True, False, True, "lazy"
        yield layout, 1, "odf", False, False, True, "eager"
        for rmap in (False, True):
            yield layout, 1, "mixed", rmap, False, True, "eager"
        yield layout, 1, "mixed", True, True, True, "eager"
        yield layout, 1, "mixed", True, True, False, "eager"
        if layout == "i386":
            continue
        # transparent huge pages (DESIGN section 10) with every fork mode and accounting
        yield layout, 1, "mixed", True, False, True, "lazy", "always", "split"
        yield layout, 1, "mixed", False, False, True, "eager", "always", "copy"
        yield layout, 1, "mixed", True, True, True, "eager", "madvise", "split"
        yield layout, 1, "mixed", True, True, True, "lazy", "always", "copy"
        yield layout, 1, "mixed", True, False, False, "eager", "always", "split"
        yield layout, top, "mixed", True, False, True, "lazy", "always", "split"


for _cfg in _configurations():
    _name, _case = _configuration(*_cfg)
    globals()[_name] = _case
del _cfg, _name, _case


# --------------------------------------------------------------------------
# Shared set-up of the named tests: an address space across span boundaries
# --------------------------------------------------------------------------

def boundary(lay):
    """An address at a boundary of every level's span below the pgd: a page just
    below it and one at it are in different tables at every level that can be
    shared (i386 4 MiB, pae 1 GiB, x86_64 512 GiB)."""
    return lay.span(lay.levels - 1)


def space(layout, share_level=1, rmap=True, memory=16 * MiB, fork_mode="share", swap=0):
    """A machine and a process whose mappings cross span boundaries at every level:
    a private rw mapping of 16 pages across boundary(), written except pages 5 and
    10 (read: ZERO_PAGE); a shared rw mapping of 8 pages right after it, written; a
    read-only private mapping of 4 pages elsewhere, read.  Returns (m, p, expect),
    expect = {page address: bytes} of every page present."""
    lay = LAY[layout]
    m = Machine(memory=memory, layout=layout, share_level=share_level, rmap=rmap,
                fork_mode=fork_mode, swap=swap)
    p = m.spawn()
    b = boundary(lay)
    expect = {}
    priv = p.mmap(16 * PAGE, prot="rw", addr=b - 8 * PAGE)
    for k in range(16):
        a = priv + k * PAGE
        if k in (5, 10):
            expect[a] = p.read(a, PAGE)
        else:
            expect[a] = pattern(("priv", layout, k), PAGE)
            p.write(a, expect[a])
    shm = p.mmap(8 * PAGE, prot="rw", shared=True, addr=b + 8 * PAGE)
    for k in range(8):
        expect[shm + k * PAGE] = pattern(("shm", layout, k), PAGE)
        p.write(shm + k * PAGE, expect[shm + k * PAGE])
    ro = p.mmap(4 * PAGE, prot="r", addr=3 * lay.span(1) + 4 * PAGE)
    for k in range(4):
        expect[ro + k * PAGE] = p.read(ro + k * PAGE, PAGE)
    m.check()
    return m, p, expect


def contents_of(p, expect):
    return {a: p.read(a, PAGE) for a in expect}


def assert_contents(p, expect):
    for a, data in expect.items():
        assert p.read(a, PAGE) == data, "pid %d page %s changed" % (p.pid, hx(a))


def shared_levels(m, mode):
    return () if mode == "copy" else tuple(range(1, m.share_level + 1))


def sweep(m, call, after_failure, limit=2000):
    """fail_after(n) for n = 0, 1, ... until call() succeeds; after_failure(n) after
    each OutOfMemory (check() already passed).  Returns (n, result)."""
    for n in range(limit):
        m.fail_after(n)
        try:
            r = call()
        except OutOfMemory:
            m.fail_after(None)
            m.check()
            after_failure(n)
            continue
        finally:
            m.fail_after(None)
        m.check()
        return n, r
    raise AssertionError("call still fails after %d allocations" % limit)


FORKS = [(lay, "copy", 1) for lay in LAY] + [(lay, "share", sl) for lay, sl in LEVELS]


# --------------------------------------------------------------------------
# Part 2: invariants after forks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_derived_invariants_after_forks(layout, share_level, rmap):
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    levels = tuple(range(1, share_level + 1))
    b = boundary(lay)
    c1 = p.fork("share")
    d = check_derived(m, lay, [p, c1], shared_levels=levels)
    shared = [t for t, refs in d.refs.items() if len(refs) == 2]
    assert shared and all(d.level[t] == share_level for t in shared), (
        "a share fork shares exactly the level-%d tables: %s"
        % (share_level, [(t, d.level[t]) for t in shared]))
    c2 = c1.fork("copy")            # copy from a process whose tables are shared
    check_derived(m, lay, [p, c1, c2], shared_levels=levels)
    c3 = p.fork("share")            # a third sharer
    d = check_derived(m, lay, [p, c1, c2, c3], shared_levels=levels)
    assert max(len(r) for r in d.refs.values()) == 3
    c1.write(b - PAGE, b"one")      # privatize, from a sharer of three
    check_derived(m, lay, [p, c1, c2, c3], shared_levels=levels)
    c2.write(b, b"two")
    c3.munmap(b - 2 * PAGE, 4 * PAGE)
    check_derived(m, lay, [p, c1, c2, c3], shared_levels=levels)
    c4 = c3.fork("share")
    c3.mprotect(b + 8 * PAGE, 2 * PAGE, "r")
    check_derived(m, lay, [p, c1, c2, c3, c4], shared_levels=levels)
    m.check()
    assert_contents(p, expect)
    exp1 = dict(expect)
    exp1[b - PAGE] = b"one" + expect[b - PAGE][3:]
    assert_contents(c1, exp1)
    c1.exit()
    check_derived(m, lay, [p, c2, c3, c4], shared_levels=levels)
    for q in (c2, c3, c4):
        q.exit()
    d = check_derived(m, lay, [p], shared_levels=levels)
    assert all(len(r) == 1 for r in d.refs.values())
    assert_contents(p, expect)


# --------------------------------------------------------------------------
# Part 3: OutOfMemory sweeps
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout,mode,share_level", FORKS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_oom_fork(layout, mode, share_level, rmap):
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    before = m.stats()
    pids = [q.pid for q in m.processes]

    def failed(n):
        s = m.stats()
        assert s["frames_free"] == before["frames_free"], (
            "fork failing after %d allocations left %d frames free, %d before"
            % (n, s["frames_free"], before["frames_free"]))
        for k in ("page_tables", "pgds", "pte_chain_nodes", "pte_chain_slots"):
            assert s[k] == before[k], (n, k, s[k], before[k])
        assert [q.pid for q in m.processes] == pids, "a failed fork left a child"
        check_derived(m, lay, [p], shared_levels=shared_levels(m, mode))
        assert_contents(p, expect)

    n, c = sweep(m, lambda: p.fork(mode=mode), failed)
    used = before["frames_free"] - m.stats()["frames_free"]
    assert n >= 1 and used <= n, (n, used)
    check_derived(m, lay, [p, c], shared_levels=shared_levels(m, mode))
    assert_contents(c, expect)
    assert_contents(p, expect)
    c.exit()
    assert m.stats()["frames_free"] == before["frames_free"]


@pytest.mark.parametrize("layout,mode,share_level", FORKS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_oom_fault_privatizes_levels(layout, mode, share_level, rmap):
    """A write across boundary() in the child: with a share fork it must privatize a
    table on each side at every shared level, then copy two frames."""
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    c = p.fork(mode=mode)
    b = boundary(lay)
    data = pattern("cross", 2 * PAGE)
    addr = b - PAGE - 100

    def failed(n):
        check_derived(m, lay, [p, c], shared_levels=shared_levels(m, mode))
        assert_contents(p, expect)
        assert_contents(c, expect)

    free = m.stats()["frames_free"]
    n, _ = sweep(m, lambda: c.write(addr, data), failed)
    # failed attempts may leave tables privatized and pages mapped, so n need not be
    # the whole cost; the frames taken in the end are: two tables per shared level
    # and three copied pages
    assert n >= 1
    assert free - m.stats()["frames_free"] == (
        2 * share_level if mode == "share" else 0) + 3
    check_derived(m, lay, [p, c], shared_levels=shared_levels(m, mode))
    assert_contents(p, expect)
    assert c.read(addr, len(data)) == data
    assert c.read(b - 2 * PAGE, PAGE - 100) == expect[b - 2 * PAGE][:-100]


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_oom_munmap_part_of_shared_range(layout, share_level, rmap):
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    c = p.fork("share")
    b = boundary(lay)
    vmas = c.vmas

    def failed(n):
        assert c.vmas == vmas, "munmap failing after %d allocations unmapped something" % n
        check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
        assert_contents(p, expect)
        assert_contents(c, expect)

    n, _ = sweep(m, lambda: c.munmap(b - 3 * PAGE, 6 * PAGE), failed)
    assert n >= 1, n
    check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
    assert_contents(p, expect)
    gone = set(range(b - 3 * PAGE, b + 3 * PAGE, PAGE))
    assert_contents(c, {a: d for a, d in expect.items() if a not in gone})
    for a in gone:
        with pytest.raises(SegmentationFault):
            c.read(a, 1)


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_oom_mprotect_part_of_shared_range(layout, share_level, rmap):
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    c = p.fork("share")
    b = boundary(lay)
    vmas = c.vmas

    def failed(n):
        assert c.vmas == vmas, "mprotect failing after %d allocations changed VMAs" % n
        check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
        assert_contents(p, expect)
        assert_contents(c, expect)

    # [b-3P, b+3P) of the private mapping and [b+8P, b+10P) of the shared one
    n, _ = sweep(m, lambda: (c.mprotect(b - 3 * PAGE, 6 * PAGE, "r"),
                             c.mprotect(b + 8 * PAGE, 2 * PAGE, "r")), failed)
    check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
    assert_contents(p, expect)
    assert_contents(c, expect)
    for a in (b - 3 * PAGE, b + 2 * PAGE, b + 8 * PAGE):
        with pytest.raises(SegmentationFault):
            c.write(a, b"x")
        p.write(a, b"p")                # the parent keeps its protection
    expect[b + 8 * PAGE] = b"p" + expect[b + 8 * PAGE][1:]   # seen through the object
    assert_contents(c, expect)


@pytest.mark.parametrize("layout,share_level", LEVELS)
def test_oom_mprotect_single_call(layout, share_level):
    """One mprotect over the shared range that straddles boundary(): fails whole."""
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, True)
    c = p.fork("share")
    b = boundary(lay)
    vmas = c.vmas

    def failed(n):
        assert c.vmas == vmas, "mprotect failing after %d allocations changed VMAs" % n
        for a in range(b - 8 * PAGE, b + 8 * PAGE, PAGE):
            assert c.translate(a) is not None, (
                "mprotect failing after %d allocations made %s PROT_NONE" % (n, hx(a)))
        assert_contents(c, expect)

    n, _ = sweep(m, lambda: c.mprotect(b - 4 * PAGE, 8 * PAGE, ""), failed)
    assert n >= 1, n
    for a in range(b - 4 * PAGE, b + 4 * PAGE, PAGE):
        with pytest.raises(SegmentationFault):
            c.read(a, 1)
        assert c.translate(a) is None
    assert_contents(p, expect)


# --------------------------------------------------------------------------
# Part 4: named tests of DESIGN section 6, per share level
# --------------------------------------------------------------------------

def delta(m, s0, *keys):
    s = m.stats()
    return {k: s[k] - s0[k] for k in keys}


def unshare_keys(lay):
    return ["unshares_l%d" % k for k in range(1, lay.levels)]


def drop_keys(lay):
    return ["tables_dropped_l%d" % k for k in range(1, lay.levels)]


@pytest.mark.parametrize("layout,share_level", LEVELS)
def test_share_fork_write_protects_exactly_level(layout, share_level):
    """A share fork at share_level L clears RW in the entries pointing at level-L
    tables, in parent and child; the levels above are copies with RW set; the
    level-L tables and everything below them are the parent's, unchanged."""
    lay, L = LAY[layout], share_level
    m, p, expect = space(layout, L)
    b = boundary(lay)
    addrs = [b - 8 * PAGE, b - PAGE, b, b + 8 * PAGE, 3 * lay.span(1) + 4 * PAGE]
    before = {a: p.walk(a) for a in addrs}
    d = derive(m, lay, [p.pgd])
    n_level = len(d.per_proc[p.pgd]["tables"][L])
    above = sum(len(d.per_proc[p.pgd]["tables"][k]) for k in range(L + 1, lay.levels))
    s0 = m.stats()
    c = p.fork("share")
    dl = delta(m, s0, "share_wrprotects", "page_tables", "tables_allocated", "ptes_copied",
               "rmap_adds", "forks_share")
    assert dl["share_wrprotects"] == n_level, (dl, n_level)
    assert dl["page_tables"] == above and dl["tables_allocated"] == above, (dl, above)
    assert dl["ptes_copied"] == 0 and dl["rmap_adds"] == 0 and dl["forks_share"] == 1, dl
    for a in addrs:
        wp, wc, w0 = p.walk(a), c.walk(a), before[a]
        assert [r[0] for r in wp] == [r[0] for r in wc] == list(range(lay.levels, 0, -1))
        for rp, rc, r0 in zip(wp, wc, w0):
            lvl = rp[0]
            if lvl <= L:                 # inside the shared tables: untouched, the same
                assert rp == rc == r0, (a, lvl, rp, rc, r0)
                continue
            assert rp[1] == r0[1], "the parent's level-%d table moved" % lvl
            assert lvl == lay.levels or rc[1] != rp[1], "level-%d table not copied" % lvl
            assert lay.pfn(rp[3]) == lay.pfn(r0[3])
            if lvl == L + 1:             # the entries pointing at the shared tables
                assert lay.pfn(rc[3]) == lay.pfn(rp[3])
                assert not rp[3] & RW and not rc[3] & RW, (a, rp, rc)
                assert m.frame_count(lay.pfn(rp[3])) == 2
                assert rp[3] | RW == r0[3], "only RW changes in the parent's entry"
            else:                        # copied levels above: writable
                assert lvl == L + 1 or not lay.has_rw(lvl) or (rp[3] & RW and rc[3] & RW)
                assert rp[3] == r0[3]
                assert lay.pfn(rc[3]) != lay.pfn(rp[3])
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))
    assert_contents(c, expect)


@pytest.mark.parametrize("layout,share_level", LEVELS)
def test_child_write_privatizes_top_down_then_last_sharer_reuses(layout, share_level):
    lay, L = LAY[layout], share_level
    m, p, expect = space(layout, L)
    b = boundary(lay)
    a = b - 2 * PAGE
    path0 = p.walk(a)
    c = p.fork("share")
    s0 = m.stats()
    c.write(a, b"child")
    dl = delta(m, s0, "unshares", "unshare_reuses", "cow_copies", "cow_reuses",
               "tables_allocated", *unshare_keys(lay))
    for k in range(1, lay.levels):
        assert dl["unshares_l%d" % k] == (1 if k <= L else 0), (k, dl)
    assert dl["unshares"] == L and dl["tables_allocated"] == L, dl
    assert dl["unshare_reuses"] == 0 and dl["cow_copies"] == 1, dl
    wc, wp = c.walk(a), p.walk(a)
    assert all(e & RW for lvl, _t, _i, e in wc if lay.has_rw(lvl)), wc
    for rc, rp, r0 in zip(wc, wp, path0):
        assert rp[1] == r0[1], "the parent keeps its tables"
        assert rc[1] != rp[1], "the child's level-%d table is its own now" % rc[0]
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))
    assert c.read(a, 5) == b"child" and p.read(a, PAGE) == expect[a]

    # the parent is now the last sharer of every table on that path: no copy
    s0 = m.stats()
    p.write(a, b"parent")
    dl = delta(m, s0, "unshares", "unshare_reuses", "cow_copies", "cow_reuses",
               "tables_allocated", "frames_free", *unshare_keys(lay))
    assert dl["unshares"] == 0 and dl["tables_allocated"] == 0, dl
    assert dl["unshare_reuses"] == L, ("the last sharer sets RW in one entry per shared "
                                       "level: %s" % dl)
    assert dl["cow_copies"] == 0 and dl["cow_reuses"] == 1 and dl["frames_free"] == 0, dl
    wp = p.walk(a)
    assert [r[1] for r in wp] == [r[1] for r in path0]
    assert all(e & RW for lvl, _t, _i, e in wp if lay.has_rw(lvl)), wp
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))

    # across the boundary the tables are still shared: the parent writing first copies
    s0 = m.stats()
    p.write(b + PAGE, b"parent")
    dl = delta(m, s0, "unshares", "unshare_reuses", *unshare_keys(lay))
    for k in range(1, lay.levels):
        assert dl["unshares_l%d" % k] == (1 if k <= L else 0), (k, dl)
    assert dl["unshare_reuses"] == 0
    assert c.read(b + PAGE, PAGE) == expect[b + PAGE]
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))


@pytest.mark.parametrize("layout,share_level", LEVELS)
def test_zap_whole_span_drops_one_use(layout, share_level):
    """munmap of a whole level-L span in the child, then its exit: the shared tables
    lose one use each (tables_dropped_l<L>), nothing is copied or freed below."""
    lay, L = LAY[layout], share_level
    span = lay.span(L)
    m = Machine(memory=16 * MiB, layout=layout, share_level=L, contents=False)
    p = m.spawn()
    base = 2 * span
    p.mmap(span, addr=base)
    p.touch_pages(np.array([base, base + span // 2, base + span - PAGE], dtype=np.uint64),
                  write=True)
    other = 4 * span + 8 * PAGE
    p.mmap(4 * PAGE, addr=other)
    p.touch(other, 4 * PAGE, write=True)
    c = p.fork("share")
    t = lay.pfn([r for r in p.walk(base) if r[0] == L + 1][0][3])
    assert m.frame_count(t) == 2
    s0 = m.stats()
    c.munmap(base, span)
    dl = delta(m, s0, "unshares", "frames_free", "ptes_zapped", "tables_freed",
               *drop_keys(lay))
    for k in range(1, lay.levels):
        assert dl["tables_dropped_l%d" % k] == (1 if k == L else 0), (k, dl)
    assert dl["unshares"] == 0 and dl["ptes_zapped"] == 0 and dl["frames_free"] == 0, dl
    assert m.frame_count(t) == 1
    assert [r[0] for r in c.walk(base)][-1] == L + 1 and c.walk(base)[-1][3] == 0
    assert p.translate(base + span - PAGE) is not None
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))

    d = derive(m, lay, [c.pgd])
    mine = d.per_proc[c.pgd]["tables"]
    n_shared = len(mine[L])
    n_own = sum(len(mine[k]) for k in range(L + 1, lay.levels))
    s0 = m.stats()
    c.exit()
    dl = delta(m, s0, "unshares", "frames_free", "ptes_zapped", "page_tables",
               *drop_keys(lay))
    for k in range(1, lay.levels):
        assert dl["tables_dropped_l%d" % k] == (n_shared if k == L else 0), (k, dl)
    assert dl["unshares"] == 0 and dl["ptes_zapped"] == 0, dl
    assert dl["page_tables"] == -n_own and dl["frames_free"] == n_own + 1, (dl, n_own)
    d = check_derived(m, lay, [p], shared_levels=())
    assert p.stats()["rss"] == 3 + 4


BIG_MEMORY = 2 * GiB + 64 * MiB


def test_x86_64_one_gib_copy_fork_tables():
    """A 1 GiB mapping at a 1 GiB boundary, every page written: 512 leaf tables, one
    pmd and one pud table; a copy fork allocates all 514 again."""
    m = Machine(memory=BIG_MEMORY, layout="x86_64", fork_mode="copy", rmap=False,
                contents=False)
    p = m.spawn()
    a = p.mmap(GiB, addr=GiB)
    p.touch(a, GiB, write=True)
    s = p.stats()
    assert s["page_tables"] == 514, s
    assert (s["page_tables_l1"], s["page_tables_l2"], s["page_tables_l3"]) == (512, 1, 1)
    assert s["rss"] == GiB // PAGE
    s0 = m.stats()
    assert s0["page_tables"] == 514
    c = p.fork("copy")
    dl = delta(m, s0, "page_tables", "tables_allocated", "tables_copied", "ptes_copied")
    assert dl["page_tables"] == 514 and dl["tables_allocated"] == 514, dl
    assert dl["tables_copied"] == 514 and dl["ptes_copied"] == GiB // PAGE, dl
    assert c.stats()["page_tables"] == 514
    c.exit()
    assert m.stats()["page_tables"] == 514
    m.check()


@pytest.mark.parametrize("share_level,allocated", [(1, 2), (2, 1), (3, 0)])
def test_x86_64_one_gib_share_fork_tables(share_level, allocated):
    m = Machine(memory=BIG_MEMORY, layout="x86_64", share_level=share_level, rmap=False,
                contents=False)
    p = m.spawn()
    a = p.mmap(GiB, addr=GiB)
    p.touch(a, GiB, write=True)
    assert p.stats()["page_tables"] == 514
    s0 = m.stats()
    c = p.fork("share")
    dl = delta(m, s0, "page_tables", "tables_allocated", "ptes_copied", "share_wrprotects")
    assert dl["page_tables"] == allocated and dl["tables_allocated"] == allocated, dl
    assert dl["ptes_copied"] == 0, dl
    assert dl["share_wrprotects"] == {1: 512, 2: 1, 3: 1}[share_level], dl
    assert c.stats()["page_tables"] == 514 and c.stats()["rss"] == GiB // PAGE
    s0 = m.stats()
    c.touch(a + GiB // 2, PAGE, write=True)     # one write: one table per shared level
    dl = delta(m, s0, "page_tables", "unshares", "cow_copies")
    assert dl == {"page_tables": share_level, "unshares": share_level, "cow_copies": 1}, dl
    s0 = m.stats()
    c.exit()
    dl = delta(m, s0, "page_tables", "tables_dropped")
    assert m.stats()["page_tables"] == 514
    m.check()


if os.environ.get("LAZYVM_STATEFUL_STATS"):
    import atexit
    atexit.register(lambda: print("\n".join("%8d %s" % (v, k) for k, v in sorted(SEEN.items()))))


@pytest.mark.parametrize("how", ["spawn", "copy", "share"])
def test_pae_pgd_frame_holds_only_the_pdpt(how):
    """A pae pgd is the 4-entry PDPT (DESIGN section 6): m.table of it shows those 4
    entries, or a frame whose other entries are zero, never another page's bytes."""
    m = Machine(memory=8 * MiB, layout="pae")
    p = m.spawn()
    a = p.mmap(2 * PAGE)
    p.write(a, b"\xff" * 2 * PAGE)
    p.munmap(a, PAGE)               # frees one data frame, keeps its tables
    q = m.spawn() if how == "spawn" else p.fork(how)
    ents = np.asarray(m.table(q.pgd))
    assert ents.size == 4 or not ents[4:].any(), (
        "pae pgd %d: %d stale entries beyond the PDPT" % (q.pgd, int((ents[4:] != 0).sum())))


# --------------------------------------------------------------------------
# Bounds and placement per layout (DESIGN sections 4-7)
# --------------------------------------------------------------------------

MMAP_BASE = {"i386": 0x40000000, "pae": 0x40000000, "x86_64": 0x2AAAAAAAB000}
MAX_MEMORY = {"i386": 4 * GiB, "pae": 64 * GiB}


@pytest.mark.parametrize("layout", sorted(LAY))
def test_user_space_bounds(layout):
    lay = LAY[layout]
    top = lay.task_size
    m = Machine(memory=8 * MiB, layout=layout)
    p = m.spawn()
    for call in (lambda: p.mmap(PAGE, addr=top), lambda: p.mmap(2 * PAGE, addr=top - PAGE),
                 lambda: p.munmap(top, PAGE), lambda: p.mprotect(top - PAGE, 2 * PAGE, "r"),
                 lambda: p.touch(top, PAGE), lambda: p.mmap(PAGE, addr=top + 4 * GiB)):
        with pytest.raises(ValueError):
            call()
    a = p.mmap(PAGE, addr=top - PAGE)           # the last user page
    p.write(a + PAGE - 3, b"end")
    assert p.read(a + PAGE - 3, 3) == b"end"
    with pytest.raises(ValueError):
        p.write(a + PAGE - 2, b"end")            # one byte beyond user space
    assert p.read(a + PAGE - 3, 3) == b"end"
    w = p.walk(a)
    assert [r[0] for r in w] == list(range(lay.levels, 0, -1))
    assert w[0][2] == lay.user_entries - 1, "the last user page is under the last user entry"
    m.check()
    p.exit()
    assert m.stats()["page_tables"] == 0


@pytest.mark.parametrize("layout", sorted(LAY))
def test_share_level_and_memory_limits(layout):
    lay = LAY[layout]
    for sl in (0, lay.max_sl + 1, -1):
        with pytest.raises(ValueError):
            Machine(memory=8 * MiB, layout=layout, share_level=sl)
    for sl in range(1, lay.max_sl + 1):
        assert Machine(memory=8 * MiB, layout=layout, share_level=sl).share_level == sl
    if layout in MAX_MEMORY:
        with pytest.raises(ValueError):
            Machine(memory=MAX_MEMORY[layout] + PAGE, layout=layout, contents=False)


@pytest.mark.parametrize("layout", sorted(LAY))
def test_first_fit_placement(layout):
    lay = LAY[layout]
    base = MMAP_BASE[layout]
    m = Machine(memory=8 * MiB, layout=layout)
    p = m.spawn()
    assert p.mmap(3 * PAGE) == base
    assert p.mmap(PAGE) == base + 3 * PAGE
    p.munmap(base + PAGE, PAGE)
    assert p.mmap(PAGE) == base + PAGE           # first fit: the hole
    p.mmap(lay.task_size - base, addr=base)     # everything above the base
    assert p.mmap(2 * PAGE) == 0                # then the lowest gap anywhere
    m.check()


@pytest.mark.parametrize("layout", sorted(LAY))
def test_no_contents_machine(layout):
    """contents=False: read and write raise ValueError; touch, fork, copy-on-write,
    zap and reclaim keep every count as a machine with contents does."""
    figures = []
    for contents in (True, False):
        m = Machine(memory=8 * MiB, layout=layout, contents=contents, swap=4 * MiB,
                    share_level=LAY[layout].max_sl)
        p = m.spawn()
        b = boundary(LAY[layout])
        a = p.mmap(32 * PAGE, addr=b - 16 * PAGE)
        if not contents:
            with pytest.raises(ValueError):
                p.read(a, 1)
            with pytest.raises(ValueError):
                p.write(a, b"x")
        p.touch(a, 32 * PAGE, write=True)
        c = p.fork("share")
        c.touch(a, 8 * PAGE, write=True)
        d = p.fork("copy")
        d.touch(a + 20 * PAGE, 4 * PAGE, write=True)
        got = m.reclaim(16)
        c.touch(a, 32 * PAGE)
        d.munmap(a, 16 * PAGE)
        m.check()
        check_derived(m, LAY[layout], [p, c, d], swap=True)
        s = m.stats()
        figures.append((got, [q.stats() for q in (p, c, d)],
                        {k: s[k] for k in ("cow_copies", "cow_reuses", "unshares",
                                           "swap_outs", "swap_ins", "page_tables",
                                           "frames_free", "tables_dropped")}))
        for q in (p, c, d):
            q.exit()
        assert m.stats()["frames_free"] == m.stats()["frames_total"] - m.boot_frames
    assert figures[0] == figures[1]


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("rmap", [False, True], ids=["scan", "rmap"])
def test_oom_with_swap_entries(layout, share_level, rmap):
    """Swap entries under shared tables: a reclaim, a fork of each kind, a child's
    privatizing write and a partial munmap, each swept with fail_after."""
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap, swap=4 * MiB)
    b = boundary(lay)
    exp = {}                            # pid -> expected pages, if not expect

    def unchanged(n):
        check_derived(m, lay, m.processes, swap=True)
        for q in m.processes:       # without faulting: swapped-out pages stay out
            for a, data in exp.get(q.pid, expect).items():
                pa = q.translate(a)
                if pa is not None:
                    assert m.physical[pa:pa + PAGE].tobytes() == data, (q.pid, hx(a))

    # reclaim: an OutOfMemory only if nothing could be freed
    n, got = sweep(m, lambda: m.reclaim(64), unchanged)
    assert got > 0 and m.stats()["swap_used"] > 0
    swapped = [a for a in expect if p.translate(a) is None]
    assert swapped, "reclaim swapped nothing out"
    for mode in ("copy", "share"):
        s0 = [m.stats()]
        procs = len(m.processes)

        def fork_failed(n):
            s = m.stats()
            for k in ("frames_free", "swap_used", "page_tables", "pte_chain_nodes"):
                assert s[k] == s0[0][k], (mode, n, k, s[k], s0[0][k])
            assert len(m.processes) == procs
            unchanged(n)
            s0[0] = m.stats()       # reading a swapped-out page back takes a frame

        n, c = sweep(m, lambda: p.fork(mode), fork_failed)
        assert n >= 1
        assert all(c.translate(a) is None for a in swapped), "the swap entries went"
    c = m.processes[-1]                 # the share child
    data = pattern("swap-cross", 2 * PAGE)
    sweep(m, lambda: c.write(b - PAGE - 7, data), unchanged)
    assert c.read(b - PAGE - 7, len(data)) == data
    exp[c.pid] = {a: c.read(a, PAGE) for a in expect}
    s0 = m.stats()
    c2 = p.fork("share")              # a fresh sharer, for a munmap that must privatize
    vmas = c2.vmas
    c = c2

    def munmap_failed(n):
        assert c.vmas == vmas
        unchanged(n)

    n, _ = sweep(m, lambda: c.munmap(b + 2 * PAGE, 4 * PAGE), munmap_failed)
    assert n >= 1
    for q in m.processes:
        assert_contents(q, {a: d for a, d in exp.get(q.pid, expect).items()
                            if q is not c or not b + 2 * PAGE <= a < b + 6 * PAGE})
    for q in m.processes:
        q.exit()
    s = m.stats()
    assert s["swap_used"] == 0 and s["frames_free"] == s["frames_total"] - m.boot_frames


@pytest.mark.parametrize("share_level,span_level", [(2, 1), (3, 1), (3, 2)])
def test_x86_64_munmap_whole_lower_span_inside_shared_table(share_level, span_level):
    """x86_64, share_level L: the child unmaps a whole level-j span (j < L) whose
    level-L table it still uses elsewhere.  Top down: every shared table above j
    still maps something, so each is privatized (unshares_l<j+1..L>); the level-j
    table's span is gone, so it only loses one use (tables_dropped_l<j>)."""
    lay, L, j = LAY["x86_64"], share_level, span_level
    m = Machine(memory=16 * MiB, layout="x86_64", share_level=L, contents=False)
    p = m.spawn()
    region = lay.span(L)                      # the second level-L table's span
    base = region + 2 * lay.span(j)
    other = region + 5 * lay.span(j) + 8 * PAGE
    p.mmap(lay.span(j), addr=base)
    p.touch_pages(np.array([base, base + lay.span(j) - PAGE], dtype=np.uint64), write=True)
    p.mmap(4 * PAGE, addr=other)
    p.touch(other, 4 * PAGE, write=True)
    c = p.fork("share")
    s0 = m.stats()
    c.munmap(base, lay.span(j))
    dl = delta(m, s0, "ptes_zapped", "tables_allocated", "cow_copies",
               *(unshare_keys(lay) + drop_keys(lay)))
    for k in range(1, lay.levels):
        assert dl["unshares_l%d" % k] == (1 if j < k <= L else 0), (k, dl)
        assert dl["tables_dropped_l%d" % k] == (1 if k == j else 0), (k, dl)
    assert dl["ptes_zapped"] == 0 and dl["cow_copies"] == 0, dl
    assert dl["tables_allocated"] == L - j, dl
    check_derived(m, lay, [p, c], shared_levels=tuple(range(1, L + 1)))
    assert c.translate(base) is None and c.translate(other) is not None
    assert p.translate(base) is not None and p.translate(base + lay.span(j) - PAGE) is not None
    c.exit()
    check_derived(m, lay, [p], shared_levels=())
    p.exit()
    assert m.stats()["frames_free"] == m.stats()["frames_total"] - m.boot_frames


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("seed", range(3))
def test_replay_matches_the_api(layout, share_level, seed):
    """Machine.replay of a random trace leaves the same counters, tables and pages as
    the same events made through Process calls on a twin machine."""
    lay = LAY[layout]
    rnd = random.Random("%s-%d-%d" % (layout, share_level, seed))
    twins = [Machine(memory=8 * MiB, layout=layout, share_level=share_level,
                     fork_mode="share") for _ in range(2)]
    setups = []
    for m in twins:
        p = m.spawn()
        setups.append(p)
    b = boundary(lay)
    regions = [(b - 24 * PAGE, 48 * PAGE, False), (3 * lay.span(1) - 8 * PAGE, 16 * PAGE, True)]
    for p in setups:
        for a, n, shared in regions:
            p.mmap(n, shared=shared, addr=a)
    pids = [setups[0].pid]
    mapped = {pids[0]: sorted(a + k * PAGE for a, n, _ in regions for k in range(n // PAGE))}
    next_pid = pids[0] + 1
    events = []
    for _ in range(120):
        k = rnd.random()
        pid = rnd.choice(pids)
        if k < 0.7:
            if mapped[pid]:
                events.append((pid, int(rnd.random() < 0.5), rnd.choice(mapped[pid]), 0))
        elif k < 0.82 and len(pids) < 5:
            events.append((pid, 2, 0, rnd.choice((0, 1, -1))))
            pids.append(next_pid)
            mapped[next_pid] = list(mapped[pid])
            next_pid += 1
        elif k < 0.9 and len(pids) > 1:
            events.append((pid, 3, 0, 0))
            pids.remove(pid)
        else:
            a, n, _sh = rnd.choice(regions)
            lo = rnd.randrange(n // PAGE)
            ln = rnd.randint(1, n // PAGE - lo) * PAGE
            events.append((pid, 4, a + lo * PAGE, ln))
            mapped[pid] = [x for x in mapped[pid] if not a + lo * PAGE <= x < a + lo * PAGE + ln]
    children = twins[0].replay(np.array(events, dtype=np.int64))
    assert len(children) == sum(1 for e in events if e[1] == 2)
    m = twins[1]
    procs = {setups[1].pid: setups[1]}
    for pid, kind, addr, arg in events:
        q = procs[pid]
        if kind in (0, 1):
            q.touch_pages(np.array([addr], dtype=np.uint64), write=bool(kind))
        elif kind == 2:
            c = q.fork(mode={0: "copy", 1: "share", -1: None}[arg])
            procs[c.pid] = c
        elif kind == 3:
            q.exit()
            del procs[pid]
        else:
            q.munmap(addr, arg)
    s_replay, s_api = twins[0].stats(), twins[1].stats()
    diff = {k: (s_replay[k], s_api.get(k)) for k in s_replay if s_replay[k] != s_api.get(k)}
    assert not diff, diff
    for m in twins:
        m.check()
    live = [{q.pid: (q.stats(), q.vmas) for q in m.processes} for m in twins]
    assert live[0] == live[1]
    for m in twins:
        check_derived(m, lay, m.processes)


@pytest.mark.parametrize("layout", sorted(LAY))
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_copy_fork_entry_bits(layout, rmap):
    """Copy fork (DESIGN section 2): private writable PTEs lose RW in parent and child,
    the child's lose A; each frame takes a reference (and a chain slot); shared
    mappings stay writable; the child's tables are all new."""
    lay = LAY[layout]
    m, p, expect = space(layout, 1, rmap, fork_mode="copy")
    b = boundary(lay)
    priv = [a for a in range(b - 8 * PAGE, b + 8 * PAGE, PAGE) if a not in (b - 3 * PAGE,
                                                                           b + 2 * PAGE)]
    shm = list(range(b + 8 * PAGE, b + 16 * PAGE, PAGE))
    counts = {a: m.frame_count(p.translate(a) >> 12) for a in priv + shm}
    c = p.fork("copy")
    for a in priv + shm:
        wp, wc = p.walk(a), c.walk(a)
        assert all(rp[1] != rc[1] for rp, rc in zip(wp, wc)), "a table is shared: %s" % a
        ep, ec = wp[-1][3], wc[-1][3]
        assert lay.pfn(ep) == lay.pfn(ec)
        f = lay.pfn(ep)
        assert m.frame_count(f) == counts[a] + 1
        if a in priv:
            assert not ep & RW and not ec & RW, (hx(a), hx(ep), hx(ec))
            assert not ec & 0x020, "the child's PTE %s keeps A" % hx(ec)
        else:
            assert ep & RW and ec & RW, (hx(a), hx(ep), hx(ec))
        if rmap:
            slots = {(int(t), int(i)) for t, i in m.rmap(f)}
            assert {(wp[-1][1], wp[-1][2]), (wc[-1][1], wc[-1][2])} <= slots
    check_derived(m, lay, [p, c], shared_levels=())
    assert_contents(c, expect)


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("rmap", [False, True], ids=["norm", "rmap"])
def test_share_fork_touches_no_pte_count_or_chain(layout, share_level, rmap):
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, rmap)
    frames = {lay.pfn(p.walk(a)[-1][3]) for a in expect}
    frames = {f for f in frames if m.frame_kind(f) != "reserved"}
    before = {f: (m.frame_count(f), sorted(m.rmap(f)) if rmap else None) for f in frames}
    leaves = {a: p.walk(a)[-1] for a in expect}
    s0 = m.stats()
    c = p.fork("share")
    assert {f: (m.frame_count(f), sorted(m.rmap(f)) if rmap else None)
            for f in frames} == before
    assert {a: p.walk(a)[-1] for a in expect} == leaves
    assert {a: c.walk(a)[-1] for a in expect} == leaves
    dl = delta(m, s0, "rmap_adds", "ptes_copied", "pte_chain_slots", "frames_free")
    assert dl["rmap_adds"] == dl["ptes_copied"] == dl["pte_chain_slots"] == 0, dl


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("how", ["exit", "exec", "munmap_all"])
def test_zap_of_shared_tables_needs_no_memory(layout, share_level, how):
    """Exit, exec and an munmap of everything take the fast path at every shared
    table (DESIGN sections 2 and 6): they allocate nothing, so they succeed with
    every allocation failing."""
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, True)
    c = p.fork("share")
    c2 = c.fork("copy")
    m.fail_after(0)
    try:
        for q in (c, c2):
            if how == "exit":
                q.exit()
            elif how == "exec":
                q.exec()
            else:                   # one munmap of the whole user space
                q.munmap(0, lay.task_size)
                assert q.vmas == []
    finally:
        m.fail_after(None)
    m.check()
    live = m.processes
    d = check_derived(m, lay, live, shared_levels=())
    assert all(len(r) == 1 for r in d.refs.values())
    assert_contents(p, expect)


@pytest.mark.parametrize("layout,share_level", LEVELS)
@pytest.mark.parametrize("shared", [False, True], ids=["private", "shared"])
def test_oom_mmap_fixed_over_shared_tables(layout, share_level, shared):
    """MAP_FIXED over part of a range whose tables are shared: the old pages must be
    unmapped first, which privatizes; a failure leaves the old mapping whole."""
    lay = LAY[layout]
    m, p, expect = space(layout, share_level, True)
    c = p.fork("share")
    b = boundary(lay)
    vmas = c.vmas

    def failed(n):
        assert c.vmas == vmas, "mmap failing after %d allocations changed VMAs" % n
        check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
        assert_contents(c, expect)
        assert_contents(p, expect)

    n, a = sweep(m, lambda: c.mmap(4 * PAGE, prot="rw", shared=shared, addr=b - 2 * PAGE),
                 failed)
    assert n >= 1 and a == b - 2 * PAGE
    new = set(range(b - 2 * PAGE, b + 2 * PAGE, PAGE))
    for x in new:
        assert c.read(x, PAGE) == ZERO
    assert_contents(c, {x: d for x, d in expect.items() if x not in new})
    assert_contents(p, expect)
    check_derived(m, lay, [p, c], shared_levels=shared_levels(m, "share"))
