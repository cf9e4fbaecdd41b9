"""Stateful (model-based) test of lazyvm's public API.

A hypothesis ``RuleBasedStateMachine`` drives a ``lazyvm.Machine`` and a
plain-Python reference model side by side (the pattern of PyRoaringBitMap's
``test_state_machine.py``), with ``Machine.check()`` after every step.

The reference model is written from ``DESIGN.md`` and ``docs/API.md`` only:

* a process is a sorted list of VMAs ``[start, end)`` with a protection and, for
  a shared mapping, a shared-memory object plus the page offset of ``start``;
* private pages live in a per-process dict ``page address -> bytes(4096)``
  (an absent page reads as zeros); fork copies that dict, so parent and child
  diverge from then on;
* a shared mapping's pages live in its object (``page offset -> bytes``), seen
  by every VMA that names the object, in every process, after fork too;
* exec drops everything; exit removes the process.

Besides reads through the process, pages are compared without faulting them in
(``translate`` + ``Machine.physical``), entry bits are checked against the VMA
protections, and DESIGN section 3 invariants 1, 3, 4, 5 are recomputed from
``pde``/``pte``/``frame_count`` alone (``_independent_check``), so the test
does not rest on ``Machine.check()`` only.  Where DESIGN.md leaves a choice
open (mprotect over a hole, an access beyond user space, an operation that
runs out of memory half-way) the test accepts each reading it allows.

Every configuration fork_mode in {copy, share, mixed} x rmap in {no, yes} x
swap in {no, yes} is one TestCase (TestCopyNoRmap ... TestMixedRmapSwap).
Memory is small, so OutOfMemory is reached naturally; ``Machine.fail_after``
injects it at chosen allocations too.  Set LAZYVM_HYPOTHESIS_EXAMPLES to
change the number of examples per configuration (default 60).
"""

import collections
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule)

import lazyvm
from lazyvm import (LazyVMError, Machine, OutOfMemory, ProcessExited,
                    SegmentationFault)

PAGE = 4096
SPAN = 4 << 20                     # bytes mapped by one page table
USER_TOP = 0xC0000000
MMAP_BASE = 0x40000000
ZERO = bytes(PAGE)

P, RW, PROTNONE = 0x001, 0x002, 0x080

# Fixed addresses are anchor + k pages, k in 0..40.  The anchors put several
# mappings in one 4 MiB table span and make some cross a 4 MiB boundary
# (0x400000, 0x40000000, 0x40400000); the last one runs into the end of user
# space; 0 checks that addr=0 is a real fixed address, not "no address".
ANCHORS = (0x00000000, 0x00400000 - 16 * PAGE, MMAP_BASE - 16 * PAGE,
           0x40400000 - 16 * PAGE, USER_TOP - 32 * PAGE)

CANON = {"": "", "r": "r", "rw": "rw", "x": "r", "rx": "r", "rwx": "rw"}
PROTS = ("", "r", "rw", "rw", "rw", "rw", "x", "rx", "rwx")
BAD_PROTS = ("z", "rwz", "read", "q", "rw ")

MAX_PROCS = 6
MAX_DEAD = 4

EXAMPLES = int(os.environ.get("LAZYVM_HYPOTHESIS_EXAMPLES", "60"))

# What was seen, for tuning (printed with LAZYVM_STATEFUL_STATS=1).
SEEN = collections.Counter()


def readable(prot):
    return CANON[prot] in ("r", "rw")


def writable(prot):
    return CANON[prot] == "rw"


def norm(entries):
    """VMA list -> coverage: adjacent ranges with equal attributes merged, so
    that the comparison does not depend on the core's VMA-merging policy."""
    out = []
    for s, e, prot, shared in sorted((int(v[0]), int(v[1]), v[2], bool(v[3]))
                                     for v in entries):
        prot = CANON[prot]
        if out and out[-1][1] == s and out[-1][2] == prot and out[-1][3] == shared:
            out[-1][1] = e
        else:
            out.append([s, e, prot, shared])
    return [tuple(x) for x in out]


def hx(x):
    return hex(x) if isinstance(x, int) else repr(x)


def pattern(seed, n):
    return random.Random(seed).randbytes(n)


# --------------------------------------------------------------------------
# reference model
# --------------------------------------------------------------------------

class ShmObj:
    """A shared-memory object: page offset -> page bytes."""
    _next = 0

    def __init__(self):
        ShmObj._next += 1
        self.oid = ShmObj._next
        self.pages = {}


class Vma:
    __slots__ = ("start", "end", "prot", "obj", "pgoff")

    def __init__(self, start, end, prot, obj=None, pgoff=0):
        self.start, self.end, self.prot, self.obj, self.pgoff = start, end, prot, obj, pgoff

    @property
    def shared(self):
        return self.obj is not None

    def copy(self):
        return Vma(self.start, self.end, self.prot, self.obj, self.pgoff)

    def key(self):
        return (self.start, self.end, self.prot,
                None if self.obj is None else self.obj.oid, self.pgoff)

    def __repr__(self):
        return "Vma(%s-%s %r %s)" % (hx(self.start), hx(self.end), self.prot,
                                     "shm%d+%d" % (self.obj.oid, self.pgoff)
                                     if self.obj else "private")


class PModel:
    def __init__(self):
        self.vmas = []          # sorted, non-overlapping
        self.pages = {}         # private pages: page address -> bytes

    def clone(self):
        n = PModel()
        n.vmas = [v.copy() for v in self.vmas]
        n.pages = dict(self.pages)
        return n

    def canon(self):
        """VMAs with adjacent pieces of one mapping merged back together."""
        out = []
        for v in self.vmas:
            k = list(v.key())
            if out:
                s, e, prot, oid, pgoff = out[-1]
                if (e == k[0] and prot == k[2] and oid == k[3]
                        and (oid is None or pgoff + (e - s) // PAGE == k[4])):
                    out[-1][1] = k[1]
                    continue
            out.append(k)
        return out

    def same_state(self, other):
        return self.canon() == other.canon() and self.pages == other.pages

    def norm(self):
        return norm((v.start, v.end, v.prot, v.shared) for v in self.vmas)

    def find(self, addr):
        for v in self.vmas:
            if v.start <= addr < v.end:
                return v
        return None

    def _split(self, addr):
        for i, v in enumerate(self.vmas):
            if v.start < addr < v.end:
                right = Vma(addr, v.end, v.prot, v.obj,
                            v.pgoff + (addr - v.start) // PAGE)
                v.end = addr
                self.vmas.insert(i + 1, right)
                return

    def unmap(self, s, e):
        self._split(s)
        self._split(e)
        self.vmas = [v for v in self.vmas if not (s <= v.start and v.end <= e)]
        for a in [a for a in self.pages if s <= a < e]:
            del self.pages[a]

    def map(self, s, e, prot, obj):
        self.unmap(s, e)
        self.vmas.append(Vma(s, e, CANON[prot], obj, 0))
        self.vmas.sort(key=lambda v: v.start)

    def protect(self, s, e, prot, stop_at_hole=False):
        self._split(s)
        self._split(e)
        expect = s
        for v in self.vmas:
            if v.end <= s or v.start >= e:
                continue
            if stop_at_hole and v.start != expect:
                break
            v.prot = CANON[prot]
            expect = v.end

    def covered(self, s, e):
        a = s
        while a < e:
            v = self.find(a)
            if v is None:
                return False
            a = v.end
        return True

    def overlaps(self, s, e):
        return any(v.start < e and s < v.end for v in self.vmas)

    def access_ok(self, addr, n, write):
        if addr < 0 or addr + n > USER_TOP:
            return False
        pg = addr & ~(PAGE - 1)
        while pg < addr + n:
            v = self.find(pg)
            if v is None or not (writable(v.prot) if write else readable(v.prot)):
                return False
            pg += PAGE
        return True

    def page(self, pg):
        v = self.find(pg)
        if v is None:
            return None
        if v.obj is not None:
            return v.obj.pages.get(v.pgoff + (pg - v.start) // PAGE, ZERO)
        return self.pages.get(pg, ZERO)

    def set_page(self, pg, data):
        v = self.find(pg)
        if v.obj is not None:
            v.obj.pages[v.pgoff + (pg - v.start) // PAGE] = data
        else:
            self.pages[pg] = data

    def read(self, addr, n):
        out = bytearray()
        off = 0
        while off < n:
            a = addr + off
            pg = a & ~(PAGE - 1)
            o = a - pg
            k = min(PAGE - o, n - off)
            out += self.page(pg)[o:o + k]
            off += k
        return bytes(out)

    def write(self, addr, data):
        off = 0
        while off < len(data):
            a = addr + off
            pg = a & ~(PAGE - 1)
            o = a - pg
            k = min(PAGE - o, len(data) - off)
            buf = bytearray(self.page(pg))
            buf[o:o + k] = data[off:off + k]
            self.set_page(pg, bytes(buf))
            off += k

    def first_fit(self, length):
        cand = MMAP_BASE
        for v in self.vmas:
            if v.end <= cand:
                continue
            if v.start >= cand + length:
                break
            cand = v.end
        return cand if cand + length <= USER_TOP else None


def pages_of(addr, n):
    pg = max(0, addr) & ~(PAGE - 1)
    while pg < min(addr + n, USER_TOP):
        yield pg
        pg += PAGE


# --------------------------------------------------------------------------
# the state machine
# --------------------------------------------------------------------------

class VMStateMachine(RuleBasedStateMachine):
    FORK_MODE = "copy"          # "copy", "share" or "mixed" (random per fork)
    RMAP = False
    SWAP = 0
    MEMORY = 4 << 20

    def __init__(self):
        super().__init__()
        self.m = Machine(memory=self.MEMORY,
                         fork_mode="share" if self.FORK_MODE == "mixed" else self.FORK_MODE,
                         rmap=self.RMAP, swap=self.SWAP)
        self.stats0 = self.m.stats()
        self.frames_total = self.stats0["frames_total"]
        assert self.frames_total == self.MEMORY // PAGE and self.m.memory == self.MEMORY
        assert self.m.rmap_enabled == self.RMAP
        SEEN["examples"] += 1
        self.procs = []         # [[Process, PModel], ...]
        self.dead = []          # exited Process objects
        self.armed = False

    # ---- helpers -------------------------------------------------------

    def _invoke(self, fn, *args, **kw):
        """The call under test: any fault injection is switched off as soon as
        it returns or raises, before anything is verified."""
        try:
            return fn(*args, **kw)
        finally:
            self._disarm()

    def _disarm(self):
        if self.armed:
            self.m.fail_after(None)
            self.armed = False

    def _pick(self, data):
        i = data.draw(st.integers(0, len(self.procs) - 1), label="proc")
        return i, self.procs[i][0], self.procs[i][1]

    def _draw_addr(self, data, mdl, aligned=True):
        if mdl.vmas and data.draw(st.booleans(), label="near_vma"):
            v = mdl.vmas[data.draw(st.integers(0, len(mdl.vmas) - 1), label="vma")]
            npg = (v.end - v.start) // PAGE
            base = v.start + data.draw(st.integers(-2, npg + 1), label="page") * PAGE
            base = max(0, base)
        else:
            base = (data.draw(st.sampled_from(ANCHORS), label="anchor")
                    + data.draw(st.integers(0, 40), label="page") * PAGE)
        if not aligned:
            base += data.draw(st.sampled_from((0, 1, 2, PAGE - 1, PAGE - 3, 2048))
                              | st.integers(0, PAGE - 1), label="offset")
        return base

    def _draw_range(self, data, mdl, max_pages, aligned=True, want=None):
        """(addr, length): mostly inside one VMA (one that allows ``want``
        access, if any does), else anywhere near."""
        vmas = mdl.vmas
        if want is not None and data.draw(st.integers(0, 3), label="prefer") > 0:
            vmas = [v for v in vmas if (writable(v.prot) if want == "w" else readable(v.prot))]
            vmas = vmas or mdl.vmas
        if vmas and data.draw(st.integers(0, 3), label="inside") > 0:
            v = vmas[data.draw(st.integers(0, len(vmas) - 1), label="vma")]
            size = v.end - v.start
            if aligned:
                npg = size // PAGE
                lo = data.draw(st.integers(0, npg - 1), label="lo")
                hi = data.draw(st.integers(lo + 1, min(npg, lo + max_pages)), label="hi")
                return v.start + lo * PAGE, (hi - lo) * PAGE
            lo = data.draw(st.integers(0, size - 1), label="lo")
            n = data.draw(st.integers(1, min(size - lo, max_pages * PAGE)), label="length")
            return v.start + lo, n
        addr = self._draw_addr(data, mdl, aligned)
        if aligned:
            return addr, data.draw(st.integers(1, max_pages), label="pages") * PAGE
        return addr, self._draw_len(data)

    def _draw_len(self, data):
        return data.draw(st.integers(1, 16)
                         | st.sampled_from((PAGE - 1, PAGE, PAGE + 1, 2 * PAGE, 3 * PAGE + 5))
                         | st.integers(1, 3 * PAGE + 100), label="length")

    def _retire(self, i, why):
        """The model cannot tell which of two legitimate states the core is in:
        exit the process and forget it."""
        SEEN["retired:" + why] += 1
        p = self.procs.pop(i)[0]
        p.exit()
        self._bury(p)

    def _bury(self, p):
        self.dead.append(p)
        del self.dead[:-MAX_DEAD]

    def _resolve(self, i, candidates, what):
        """After an operation failed (OutOfMemory, or an mprotect over a hole
        refused), the process must be in one of ``candidates`` (name, model)."""
        p, _ = self.procs[i]
        got = norm(p.vmas)
        matches = [(n, c) for n, c in candidates if c.norm() == got]
        assert matches, ("%s failed and left VMAs %r, which are none of %r"
                         % (what, got, [(n, c.norm()) for n, c in candidates]))
        SEEN["%s:%s" % (what, matches[0][0])] += 1
        if all(c.same_state(matches[0][1]) for _, c in matches[1:]):
            self.procs[i][1] = matches[0][1]
            return True
        self._retire(i, what)
        return False

    def _check_page(self, p, mdl, pg, fetch=False):
        """Non-faulting check of one page through translate/pte/pde and the
        physical array; with fetch, also read it through the process."""
        expect = mdl.page(pg)
        v = mdl.find(pg)
        phys = p.translate(pg)
        pte = p.pte(pg)
        if v is None:
            assert phys is None, "unmapped %s translates to %s" % (hx(pg), hx(phys))
            assert pte in (0, None), "unmapped %s has pte %s" % (hx(pg), hx(pte))
            return
        pte = int(pte or 0)
        pde = int(p.pde(pg) or 0)
        if pde & P:
            assert pde & 0xFFF in (0x067, 0x065), "pde %s for %s" % (hx(pde), hx(pg))
        if phys is not None:
            phys = int(phys)
            base = phys & ~(PAGE - 1)
            assert base // PAGE < self.frames_total
            got = self.m.physical[base:base + PAGE].tobytes()
            assert got == expect, ("page %s (%s) of pid %s: frame %s holds other bytes "
                                   "than the model (first diff at %d)"
                                   % (hx(pg), v, p.pid, hx(base // PAGE),
                                      next(k for k in range(PAGE) if got[k] != expect[k])))
            if self.RMAP and expect != ZERO and pte & P:
                slots = {(int(a), int(b)) for a, b in self.m.rmap(base // PAGE)}
                assert ((pde >> 12), (pg >> 12) & 1023) in slots, (
                    "rmap of frame %s lacks slot of %s" % (hx(base // PAGE), hx(pg)))
        if v.prot == "":
            assert not pte & P, "page %s of a PROT_NONE vma has P: pte %s" % (hx(pg), hx(pte))
        elif pte & (P | PROTNONE) == PROTNONE:
            raise AssertionError("PROTNONE pte %s left at %s in a %r vma"
                                 % (hx(pte), hx(pg), v.prot))
        if v.prot != "rw" and pte & P:
            assert not (pte & RW and pde & RW), (
                "page %s of a %r vma is user-writable (pde %s pte %s)"
                % (hx(pg), v.prot, hx(pde), hx(pte)))
        if pte and not pte & (P | PROTNONE):
            assert self.SWAP, "swap entry %s at %s without swap" % (hx(pte), hx(pg))
        if fetch and readable(v.prot):
            try:
                got = bytes(p.read(pg, PAGE))
            except OutOfMemory:
                SEEN["verify-read-oom"] += 1
            else:
                assert got == expect, "read of %s (%s) differs from the model" % (hx(pg), v)

    def _check_range(self, p, mdl, addr, n, fetch=False):
        for pg in pages_of(addr, n):
            self._check_page(p, mdl, pg, fetch)

    def _check_process(self, p, mdl, fetch=False):
        for v in mdl.vmas:
            if fetch and readable(v.prot):
                try:
                    got = bytes(p.read(v.start, v.end - v.start))
                except OutOfMemory:
                    SEEN["verify-read-oom"] += 1
                else:
                    assert got == mdl.read(v.start, v.end - v.start), (
                        "pid %s: contents of %s differ from the model" % (p.pid, v))
            for pg in range(v.start, v.end, PAGE):
                self._check_page(p, mdl, pg)
        for v in mdl.vmas:              # the holes around the mappings
            for pg in (v.start - PAGE, v.end):
                if 0 <= pg < USER_TOP and mdl.find(pg) is None:
                    self._check_page(p, mdl, pg)

    def _independent_check(self, all_pdes=True):
        """DESIGN section 3 invariants 1, 3, 4 and 5 recomputed from the public
        API alone (pde, pte, frame_count), not trusting Machine.check()."""
        slots = {}              # (table pfn, index) -> (pte, shared mapping?)
        users = collections.defaultdict(set)    # table pfn -> pids whose PDE points at it
        for p, mdl in self.procs:
            spans = {x for v in mdl.vmas for x in range(v.start >> 22, ((v.end - 1) >> 22) + 1)}
            for x in (range(USER_TOP >> 22) if all_pdes else sorted(spans)):
                pde = int(p.pde(x << 22) or 0)
                if pde & P:
                    assert x in spans, ("pid %s keeps a table at PDE %d where it maps nothing"
                                        % (p.pid, x))
                    users[pde >> 12].add((p.pid, pde))
            for v in mdl.vmas:
                for pg in range(v.start, v.end, PAGE):
                    pde = int(p.pde(pg) or 0)
                    if not pde & P:
                        continue
                    pte = int(p.pte(pg) or 0)
                    if not pte:     # (a new VMA in a hole of a shared table needs no copy)
                        continue
                    key = (pde >> 12, (pg >> 12) & 1023)
                    if key in slots:
                        assert slots[key] == (pte, v.shared), (
                            "slot %s seen as %s and as %s" % (key, slots[key], (pte, v.shared)))
                    slots[key] = (pte, v.shared)
        for table, who in users.items():
            assert self.m.frame_count(table) == len(who), (
                "table %s has use count %d, but %d pgds point at it"
                % (hx(table), self.m.frame_count(table), len(who)))
            if len(who) > 1:
                assert all(not pde & RW for _, pde in who), (
                    "shared table %s reached through a writable PDE" % hx(table))
        frames = collections.defaultdict(list)
        for key, (pte, shared) in slots.items():
            if pte & (P | PROTNONE):
                frames[pte >> 12].append((pte, shared))
        for pfn, refs in frames.items():
            count = self.m.frame_count(pfn)
            shared = {sh for _, sh in refs}
            assert len(shared) == 1, "frame %s is in private and shared mappings" % hx(pfn)
            shared = shared.pop()
            if count == 0:          # only a reserved frame: the ZERO_PAGE
                assert not shared and not any(pte & RW for pte, _ in refs)
                assert not self.m.physical[pfn * PAGE:(pfn + 1) * PAGE].any()
                continue
            extra = count - len(refs)
            allowed = (1,) if shared else ((0, 1) if self.SWAP else (0,))
            assert extra in allowed, ("frame %s: count %d, %d slots map it (%s)"
                                      % (hx(pfn), count, len(refs),
                                         "shared" if shared else "private"))
            if not shared and len(refs) > 1:
                assert not any(pte & RW for pte, _ in refs), (
                    "private frame %s in %d slots, one of them writable" % (hx(pfn), len(refs)))
        SEEN["independent-checks"] += 1

    def _present_writable(self, p, pg):
        pte = int(p.pte(pg) or 0)
        pde = int(p.pde(pg) or 0)
        return pte & P and pte & RW and pde & RW

    # ---- operations (shared by the plain rules and the OOM-injection rule) --

    def _op_spawn(self, data):
        n = len(self.m.processes)
        free = self.m.stats()["frames_free"]
        try:
            p = self._invoke(self.m.spawn)
        except OutOfMemory:
            SEEN["spawn-oom"] += 1
            assert len(self.m.processes) == n
            assert self.m.stats()["frames_free"] == free
            return
        assert p.alive and p.vmas == []
        assert p.pid not in [q.pid for q, _ in self.procs]
        self.procs.append([p, PModel()])

    def _op_mmap(self, data):
        i, p, mdl = self._pick(data)
        length = data.draw(st.integers(1, 24), label="pages") * PAGE
        prot = data.draw(st.sampled_from(PROTS), label="prot")
        shared = data.draw(st.booleans(), label="shared")
        addr = self._draw_addr(data, mdl) if data.draw(st.booleans(), label="fixed") else None
        if addr is not None and addr + length > USER_TOP:
            with pytest.raises(ValueError):
                self._invoke(p.mmap, length, prot=prot, shared=shared, addr=addr)
            return
        where = addr if addr is not None else mdl.first_fit(length)
        try:
            a = self._invoke(p.mmap, length, prot=prot, shared=shared, addr=addr)
        except OutOfMemory:
            SEEN["mmap-oom"] += 1
            after = mdl.clone()
            if where is not None:
                after.map(where, where + length, prot, ShmObj() if shared else None)
            self._resolve(i, [("before", mdl), ("after", after)], "mmap")
            return
        a = int(a)
        assert a % PAGE == 0
        if addr is not None:
            assert a == addr, "fixed mmap at %s returned %s" % (hx(addr), hx(a))
        elif where is not None:
            assert a == where, ("mmap(%s) placed at %s, first fit at or above 0x40000000 "
                                "is %s" % (hx(length), hx(a), hx(where)))
        else:
            assert a + length <= MMAP_BASE and not mdl.overlaps(a, a + length)
        mdl.map(a, a + length, prot, ShmObj() if shared else None)
        for pg in range(a, a + length, PAGE):       # a fresh mapping has no pages
            assert p.translate(pg) is None, "fresh mapping page %s is mapped" % hx(pg)
            assert p.pte(pg) in (0, None), "fresh mapping page %s has pte %s" % (
                hx(pg), hx(p.pte(pg)))

    def _op_munmap(self, data):
        i, p, mdl = self._pick(data)
        addr = self._draw_addr(data, mdl)
        length = data.draw(st.integers(1, 48), label="pages") * PAGE
        if addr + length > USER_TOP:
            with pytest.raises(ValueError):
                self._invoke(p.munmap, addr, length)
            return
        after = mdl.clone()
        after.unmap(addr, addr + length)
        try:
            self._invoke(p.munmap, addr, length)
        except OutOfMemory:
            SEEN["munmap-oom"] += 1
            if not self._resolve(i, [("before", mdl), ("after", after)], "munmap"):
                return
        else:
            self.procs[i][1] = after
        self._check_range(p, self.procs[i][1], addr - PAGE, length + 2 * PAGE)

    def _op_mprotect(self, data):
        i, p, mdl = self._pick(data)
        addr, length = self._draw_range(data, mdl, 48)
        prot = data.draw(st.sampled_from(PROTS), label="prot")
        if addr + length > USER_TOP:
            with pytest.raises(ValueError):
                self._invoke(p.mprotect, addr, length, prot)
            return
        covered = mdl.covered(addr, addr + length)
        after = mdl.clone()
        after.protect(addr, addr + length, prot)
        try:
            self._invoke(p.mprotect, addr, length, prot)
        except OutOfMemory:
            SEEN["mprotect-oom"] += 1
            if not self._resolve(i, [("before", mdl), ("after", after)], "mprotect"):
                return
        except (ValueError, LazyVMError) as e:
            # DESIGN.md does not say what mprotect over a hole does.
            if covered:
                raise
            SEEN["mprotect-hole-raises-" + type(e).__name__] += 1
            partial = mdl.clone()
            partial.protect(addr, addr + length, prot, stop_at_hole=True)
            if not self._resolve(i, [("before", mdl), ("partial", partial)],
                                 "mprotect-hole"):
                return
        else:
            if not covered:
                SEEN["mprotect-hole-ok"] += 1
            self.procs[i][1] = after
        self._check_range(p, self.procs[i][1], addr, length)

    def _op_write(self, data):
        i, p, mdl = self._pick(data)
        addr, n = self._draw_range(data, mdl, 3, aligned=False, want="w")
        buf = pattern(data.draw(st.integers(0, 2 ** 32), label="seed"), n)
        ok = mdl.access_ok(addr, n, write=True)
        try:
            self._invoke(p.write, addr, buf)
        except SegmentationFault:
            SEEN["write-segv"] += 1
            assert not ok, "write of %d bytes at %s raised SegmentationFault" % (n, hx(addr))
        except ValueError:
            assert addr + n > USER_TOP, "write of %d at %s raised ValueError" % (n, hx(addr))
        except OutOfMemory:
            SEEN["write-oom"] += 1
        else:
            assert ok, "write of %d bytes at %s should have faulted" % (n, hx(addr))
            SEEN["write-ok"] += 1
            mdl.write(addr, buf)
            for pg in pages_of(addr, n):
                assert self._present_writable(p, pg), (
                    "after a write, page %s is not present and writable" % hx(pg))
        # On failure nothing changed; on success exactly the new bytes.
        self._check_range(p, mdl, addr, n, fetch=True)

    def _op_read(self, data):
        i, p, mdl = self._pick(data)
        addr, n = self._draw_range(data, mdl, 3, aligned=False, want="r")
        ok = mdl.access_ok(addr, n, write=False)
        try:
            got = self._invoke(p.read, addr, n)
        except SegmentationFault:
            SEEN["read-segv"] += 1
            assert not ok, "read of %d bytes at %s raised SegmentationFault" % (n, hx(addr))
        except ValueError:
            assert addr + n > USER_TOP, "read of %d at %s raised ValueError" % (n, hx(addr))
        except OutOfMemory:
            SEEN["read-oom"] += 1
        else:
            assert ok, "read of %d bytes at %s should have faulted" % (n, hx(addr))
            SEEN["read-ok"] += 1
            got = bytes(got)
            assert len(got) == n
            assert got == mdl.read(addr, n), "read of %d at %s differs from the model" % (
                n, hx(addr))
            for pg in pages_of(addr, n):
                assert int(p.pte(pg) or 0) & P, "after a read, page %s is not present" % hx(pg)
        self._check_range(p, mdl, addr, n)

    def _op_touch(self, data):
        i, p, mdl = self._pick(data)
        write = data.draw(st.booleans(), label="write")
        addr, n = self._draw_range(data, mdl, 30, want="w" if write else "r")
        ok = mdl.access_ok(addr, n, write)
        try:
            self._invoke(p.touch, addr, n, write=write)
        except SegmentationFault:
            SEEN["touch-segv"] += 1
            assert not ok, "touch(%s, %s, write=%s) raised SegmentationFault" % (
                hx(addr), hx(n), write)
        except ValueError:
            assert addr + n > USER_TOP, "touch(%s, %s) raised ValueError" % (hx(addr), hx(n))
        except OutOfMemory:
            SEEN["touch-oom"] += 1
        else:
            assert ok, "touch(%s, %s, write=%s) should have faulted" % (hx(addr), hx(n), write)
            SEEN["touch-ok"] += 1
            for pg in pages_of(addr, n):
                if write:
                    assert self._present_writable(p, pg), (
                        "after touch(write=True), %s is not present and writable" % hx(pg))
                else:
                    assert int(p.pte(pg) or 0) & P, (
                        "after touch(write=False), %s is not present" % hx(pg))
        self._check_range(p, mdl, addr, n)

    def _op_touch_pages(self, data):
        i, p, mdl = self._pick(data)
        k = data.draw(st.integers(1, 12), label="count")
        addrs = [self._draw_addr(data, mdl, aligned=data.draw(st.booleans(), label="aligned"))
                 for _ in range(k)]
        addrs = [a for a in addrs if a < USER_TOP] or [MMAP_BASE]
        write = data.draw(st.booleans(), label="write")
        ok = all(mdl.access_ok(a, 1, write) for a in addrs)
        try:
            self._invoke(p.touch_pages, np.array(addrs, dtype=np.uint32), write=write)
        except SegmentationFault:
            SEEN["touch_pages-segv"] += 1
            assert not ok, "touch_pages(%s, write=%s) raised SegmentationFault" % (
                [hx(a) for a in addrs], write)
        except OutOfMemory:
            SEEN["touch_pages-oom"] += 1
        else:
            assert ok, "touch_pages(%s, write=%s) should have faulted" % (
                [hx(a) for a in addrs], write)
        for a in addrs:
            self._check_page(p, mdl, a & ~(PAGE - 1))

    def _op_fork(self, data):
        if len(self.procs) >= MAX_PROCS:
            return self._op_write(data)
        i, p, mdl = self._pick(data)
        if self.FORK_MODE == "mixed":
            mode = data.draw(st.sampled_from(("copy", "share")), label="mode")
        else:
            mode = data.draw(st.sampled_from((None, self.FORK_MODE)), label="mode")
        before = self.m.stats()
        pids = sorted(q.pid for q in self.m.processes)
        try:
            c = self._invoke(p.fork) if mode is None else self._invoke(p.fork, mode=mode)
        except OutOfMemory:
            SEEN["fork-oom"] += 1
            after = self.m.stats()
            assert sorted(q.pid for q in self.m.processes) == pids, "failed fork left a child"
            for key in ("frames_free", "page_tables", "pte_chain_nodes", "swap_used"):
                assert after[key] == before[key], (
                    "failed fork changed %s: %d -> %d" % (key, before[key], after[key]))
            return
        mode = mode or self.FORK_MODE
        SEEN["fork-" + mode] += 1
        assert c.alive and c.pid not in pids
        self.procs.append([c, mdl.clone()])
        after = self.m.stats()
        pdx = sorted({x for v in mdl.vmas for x in range(v.start >> 22, ((v.end - 1) >> 22) + 1)})
        present = [x for x in pdx if int(p.pde(x << 22) or 0) & P]
        if mode == "share":
            # Only the pgd is copied; each present user PDE takes one use of its
            # table, read-only in parent and child; no PTE, frame or chain touched.
            assert after["frames_free"] == before["frames_free"] - 1, (
                "share fork took %d frames" % (before["frames_free"] - after["frames_free"]))
            for key in ("ptes_copied", "pte_chain_nodes", "pte_chain_slots", "page_tables"):
                assert after[key] == before[key], "share fork changed %s" % key
            assert after["pt_use_refs"] == before["pt_use_refs"] + len(present)
            for x in present:
                pp, cp = int(p.pde(x << 22)), int(c.pde(x << 22))
                assert pp == cp and not pp & RW, (
                    "after share fork, PDE %d: parent %s child %s" % (x, hx(pp), hx(cp)))
        else:
            for x in present:
                cp = int(c.pde(x << 22) or 0)
                assert not cp & P or cp >> 12 != int(p.pde(x << 22)) >> 12, (
                    "copy fork left child PDE %d on the parent's table" % x)
        self._independent_check(all_pdes=False)

    def _op_exit(self, data):
        i, p, mdl = self._pick(data)
        self._invoke(p.exit)
        self.procs.pop(i)
        assert not p.alive
        assert p.pid not in [q.pid for q in self.m.processes]
        self._bury(p)

    def _op_exec(self, data):
        i, p, mdl = self._pick(data)
        self._invoke(p.exec)
        assert p.alive and p.vmas == []
        self.procs[i][1] = PModel()
        for v in mdl.vmas:
            for pg in (v.start, v.end - PAGE):
                self._check_page(p, self.procs[i][1], pg)

    def _op_reclaim(self, data):
        k = data.draw(st.integers(1, 64), label="n")
        if not self.SWAP:
            with pytest.raises(ValueError):
                self._invoke(self.m.reclaim, k)
            return
        method = data.draw(st.sampled_from((None, "scan", "rmap") if self.RMAP
                                           else (None, "scan")), label="method")
        free0 = self.m.stats()["frames_free"]
        try:
            got = self._invoke(self.m.reclaim, k, method=method)
        except OutOfMemory:
            SEEN["reclaim-oom"] += 1
        else:
            SEEN["reclaimed"] += got
            assert 0 <= got <= k
            free1 = self.m.stats()["frames_free"]
            assert free1 - free0 == got, (
                "reclaim returned %d but %d frames were freed" % (got, free1 - free0))
        self._independent_check()
        for p, mdl in self.procs:           # without faulting anything in
            self._check_process(p, mdl)
        if self.procs:                      # and one process read back in full
            i, p, mdl = self._pick(data)
            self._check_process(p, mdl, fetch=True)

    # ---- rules ---------------------------------------------------------

    @initialize(data=st.data())
    def first_process(self, data):
        """One process with a few writable mappings to start from: one placed
        by the kernel, the others at fixed addresses around table boundaries."""
        p = self.m.spawn()
        mdl = PModel()
        self.procs.append([p, mdl])
        for k in range(data.draw(st.integers(1, 4), label="mappings")):
            length = data.draw(st.integers(1, 24), label="pages") * PAGE
            shared = data.draw(st.booleans(), label="shared")
            if k == 0:
                addr = None
            else:
                addr = (data.draw(st.sampled_from(ANCHORS[:4]), label="anchor")
                        + data.draw(st.integers(0, 32), label="page") * PAGE)
            a = p.mmap(length, prot="rw", shared=shared, addr=addr)
            mdl.map(a, a + length, "rw", ShmObj() if shared else None)

    @precondition(lambda self: len(self.procs) < MAX_PROCS)
    @rule(data=st.data())
    def spawn(self, data):
        self._op_spawn(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mmap(self, data):
        self._op_mmap(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mmap_again(self, data):             # mappings are the raw material: twice the weight
        self._op_mmap(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def munmap(self, data):
        self._op_munmap(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def mprotect(self, data):
        self._op_mprotect(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def write(self, data):
        self._op_write(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def write_again(self, data):            # the workload: writes weigh three times
        self._op_write(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def write_more(self, data):
        self._op_write(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def read(self, data):
        self._op_read(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def touch(self, data):
        self._op_touch(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def touch_again(self, data):
        self._op_touch(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def touch_pages(self, data):
        self._op_touch_pages(data)

    @precondition(lambda self: self.procs and len(self.procs) < MAX_PROCS)
    @rule(data=st.data())
    def fork(self, data):
        self._op_fork(data)

    @precondition(lambda self: self.procs and len(self.procs) < MAX_PROCS)
    @rule(data=st.data())
    def fork_again(self, data):
        self._op_fork(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def exit(self, data):
        self._op_exit(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def exec(self, data):
        self._op_exec(data)

    @rule(data=st.data())
    def reclaim(self, data):
        self._op_reclaim(data)

    @precondition(lambda self: self.SWAP)
    @rule(data=st.data())
    def reclaim_again(self, data):
        self._op_reclaim(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def verify(self, data):
        i, p, mdl = self._pick(data)
        self._check_process(p, mdl, fetch=data.draw(st.booleans(), label="fetch"))
        self._independent_check()

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def inject_oom(self, data):
        """Make the n-th allocation from now fail, then run one operation."""
        op = data.draw(st.sampled_from(("write", "touch", "touch_pages", "read", "fork",
                                        "mprotect", "munmap", "mmap", "reclaim",
                                        "spawn")), label="op")
        if op == "spawn" and len(self.procs) >= MAX_PROCS:
            op = "write"
        n = data.draw(st.integers(0, 1) | st.integers(0, 8), label="fail_after")
        SEEN["inject-" + op] += 1
        self.m.fail_after(n)
        self.armed = True
        try:
            getattr(self, "_op_" + op)(data)
        finally:
            self._disarm()

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def inject_oom_again(self, data):
        self.inject_oom(data)

    @precondition(lambda self: self.procs)
    @rule(data=st.data())
    def bad_arguments(self, data):
        """Bad ranges and protections raise ValueError and change nothing."""
        i, p, mdl = self._pick(data)
        call = data.draw(st.sampled_from(("mmap", "munmap", "mprotect")), label="call")
        kind = data.draw(st.sampled_from(("addr", "len", "zero", "outside", "prot")),
                         label="kind")
        addr = self._draw_addr(data, mdl)
        length = data.draw(st.integers(1, 8), label="pages") * PAGE
        prot = data.draw(st.sampled_from(("", "r", "rw")), label="prot")
        if kind == "addr":
            addr += data.draw(st.integers(1, PAGE - 1), label="misalign")
        elif kind == "len":
            length += data.draw(st.integers(-PAGE + 1, PAGE - 1).filter(bool), label="misalign")
        elif kind == "zero":
            length = 0
        elif kind == "outside":
            addr, length = data.draw(st.sampled_from((
                (USER_TOP, PAGE), (USER_TOP - PAGE, 2 * PAGE), (0xFFFFF000, PAGE),
                (USER_TOP - PAGE, 0x40002000),        # end wraps to 0x1000 in 32 bits
                (0, 1 << 32),                          # length is 0 in 32 bits
                (1 << 32, PAGE),                       # address is 0 in 32 bits
                (0, USER_TOP + PAGE))), label="range")
        elif kind == "prot":
            if call == "munmap":
                return
            prot = data.draw(st.sampled_from(BAD_PROTS), label="badprot")
        SEEN["bad-" + call + "-" + kind] += 1
        with pytest.raises(ValueError):
            if call == "mmap":
                self._invoke(p.mmap, length, prot=prot, shared=False, addr=addr)
            elif call == "munmap":
                self._invoke(p.munmap, addr, length)
            else:
                self._invoke(p.mprotect, addr, length, prot)
        if call == "mmap" and kind in ("len", "zero", "prot"):
            with pytest.raises(ValueError):     # the same without an address
                self._invoke(p.mmap, length, prot=prot, shared=True, addr=None)

    @precondition(lambda self: self.dead)
    @rule(data=st.data())
    def call_exited(self, data):
        p = self.dead[data.draw(st.integers(0, len(self.dead) - 1), label="dead")]
        a = MMAP_BASE
        calls = {
            "mmap": lambda: p.mmap(PAGE, prot="rw", shared=False, addr=None),
            "mmap_fixed": lambda: p.mmap(PAGE, prot="rw", shared=True, addr=a),
            "munmap": lambda: p.munmap(a, PAGE),
            "mprotect": lambda: p.mprotect(a, PAGE, "r"),
            "read": lambda: p.read(a, 1),
            "write": lambda: p.write(a, b"x"),
            "touch": lambda: p.touch(a, PAGE, write=True),
            "touch_pages": lambda: p.touch_pages(np.array([a], dtype=np.uint32), write=False),
            "fork": lambda: p.fork(),
            "exec": lambda: p.exec(),
            "exit": lambda: p.exit(),
            "pde": lambda: p.pde(a),
            "pte": lambda: p.pte(a),
            "translate": lambda: p.translate(a),
        }
        name = data.draw(st.sampled_from(sorted(calls)), label="call")
        with pytest.raises(ProcessExited):
            calls[name]()
        assert not p.alive

    # ---- invariants and teardown -----------------------------------------

    @invariant()
    def consistent(self):
        SEEN["steps"] += 1
        self.m.check()
        assert sorted(q.pid for q in self.m.processes) == sorted(p.pid for p, _ in self.procs)
        for p, mdl in self.procs:
            assert p.alive
            vm = p.vmas
            for v in vm:
                assert v[2] in ("", "r", "rw"), "Process.vmas reports prot %r" % (v[2],)
            assert norm(vm) == mdl.norm(), "pid %s: vmas %r, model %r" % (
                p.pid, norm(vm), mdl.norm())
        st_ = self.m.stats()
        assert 0 <= st_["frames_free"] <= st_["frames_total"] - self.m.boot_frames
        assert st_["frames_free"] + st_["frames_used"] == st_["frames_total"]
        assert st_["pgds"] == len(self.procs)
        pgds = [int(p.pgd) for p, _ in self.procs]
        assert len(set(pgds)) == len(pgds) and all(0 < x < self.frames_total for x in pgds)
        if not self.RMAP:
            assert st_["pte_chain_nodes"] == 0
        if self.FORK_MODE == "copy":
            assert st_["shared_tables"] == 0 and st_["unshares"] == 0

    def teardown(self):
        self._disarm()
        s = self.m.stats()
        SEEN["max-frames-peak-pct"] = max(SEEN["max-frames-peak-pct"], 100 * (
            s["frames_peak"] - self.m.boot_frames) // (s["frames_total"] - self.m.boot_frames))
        for k in ("cow_copies", "cow_reuses", "unshares", "unshare_reuses", "tables_dropped",
                  "swap_ins", "swap_outs", "shmem_faults", "zero_page_maps"):
            SEEN["stat-" + k] += s[k]
        self._independent_check()
        for p, mdl in self.procs:
            self._check_process(p, mdl, fetch=True)
        self._independent_check()
        for p, _ in self.procs:
            p.exit()
        self.procs = []
        self.m.check()
        s = self.m.stats()
        assert self.m.processes == [] or list(self.m.processes) == []
        assert s["frames_free"] == s["frames_total"] - self.m.boot_frames, (
            "after every exit %d frames free, expected %d"
            % (s["frames_free"], s["frames_total"] - self.m.boot_frames))
        assert s["pte_chain_nodes"] == 0, "%d chain nodes left" % s["pte_chain_nodes"]
        assert s["swap_used"] == 0, "%d swap slots left in use" % s["swap_used"]
        assert s["page_tables"] == self.stats0["page_tables"]


def _configuration(fork_mode, rmap, swap):
    name = "Test%s%s%s" % (fork_mode.capitalize(), "Rmap" if rmap else "NoRmap",
                           "Swap" if swap else "")
    machine = type(name + "Machine", (VMStateMachine,), dict(
        FORK_MODE=fork_mode, RMAP=rmap,
        SWAP=(4 << 20) if swap else 0,
        # Small enough that OutOfMemory comes naturally now and then.
        MEMORY=(2 << 20) if swap else (3 << 19),
    ))
    case = machine.TestCase
    case.settings = settings(max_examples=EXAMPLES, stateful_step_count=50, deadline=None,
                             database=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.filter_too_much,
                                                    HealthCheck.data_too_large])
    case.__name__ = case.__qualname__ = name
    return name, case


for _mode in ("copy", "share", "mixed"):
    for _rmap in (False, True):
        for _swap in (False, True):
            _name, _case = _configuration(_mode, _rmap, _swap)
            globals()[_name] = _case
del _mode, _rmap, _swap, _name, _case


# --------------------------------------------------------------------------
# a few plain tests of argument handling the state machine does not reach
# --------------------------------------------------------------------------

def test_machine_bad_sizes():
    for memory in (4097, (4 << 30) + PAGE, 0):
        with pytest.raises(ValueError):
            Machine(memory=memory)
    with pytest.raises(ValueError):
        Machine(memory=4 << 20, swap=4097)


def test_negative_arguments_are_value_errors():
    m = Machine(memory=4 << 20)
    p = m.spawn()
    for call in (lambda: p.munmap(-PAGE, PAGE), lambda: p.munmap(0, -PAGE),
                 lambda: p.mprotect(-PAGE, PAGE, "r"), lambda: p.mmap(-PAGE),
                 lambda: p.mmap(PAGE, addr=-PAGE)):
        with pytest.raises(ValueError):
            call()
    m.check()


def test_touch_pages_dtypes():
    m = Machine(memory=4 << 20)
    p = m.spawn()
    a = p.mmap(8 * PAGE, prot="rw")
    for dt in (np.uint32, np.int64, np.uint64):
        p.touch_pages(np.arange(a, a + 8 * PAGE, PAGE, dtype=dt), write=True)
    p.exit()
    m.check()
    assert m.stats()["frames_free"] == m.stats()["frames_total"] - m.boot_frames


if os.environ.get("LAZYVM_STATEFUL_STATS"):
    import atexit
    atexit.register(lambda: print("\n".join("%6d %s" % (v, k) for k, v in sorted(SEEN.items()))))
