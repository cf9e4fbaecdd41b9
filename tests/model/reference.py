"""The reference model every state machine of the tests runs beside lazyvm.Machine.

Written from DESIGN.md and docs/API.md only, and knowing no page table:

* a process (:class:`Space`) is a sorted list of VMAs ``[start, end)``, each with a
  protection and, for a shared mapping, a shared-memory object and the page offset of
  its start;
* private pages live in a dict per process, ``page address -> bytes(4096)`` (an absent
  page reads as zeros); fork copies that dict (:meth:`Space.clone`), so parent and child
  diverge from then on;
* a shared mapping's pages live in its object (``page offset -> bytes``), seen by every
  VMA that names the object, in every process, after fork too;
* what is present is followed too (``present``: "z" the ZERO_PAGE after a read of an
  untouched private page, "d" a private data page, "s" a shared page), for machines that
  keep no contents (``contents=False``), where only presence and counts can be compared;
* exec is a fresh Space; exit drops the process.
"""

PAGE = 4096
ZERO = bytes(PAGE)
I386_TASK_SIZE = 0xC0000000
I386_MMAP_BASE = 0x40000000

# A protection as lazyvm normalises it: x means r, and write implies read.
CANON = {"": "", "r": "r", "rw": "rw", "x": "r", "rx": "r", "rwx": "rw"}


def hx(x):
    return hex(x) if isinstance(x, int) else repr(x)


def norm(entries):
    """(start, end, prot, shared) entries -> coverage: adjacent ranges with equal
    attributes merged, so that a comparison does not depend on how the core merges
    or splits VMAs."""
    out = []
    for s, e, prot, shared in sorted((int(v[0]), int(v[1]), v[2], bool(v[3]))
                                     for v in entries):
        prot = CANON[prot]
        if out and out[-1][1] == s and out[-1][2] == prot and out[-1][3] == shared:
            out[-1][1] = e
        else:
            out.append([s, e, prot, shared])
    return [tuple(x) for x in out]


def pages_of(addr, n, top=None):
    """The page addresses [addr, addr + n) touches; with `top`, only those in
    [0, top) (an access that runs off user space)."""
    if top is None:
        pg, end = addr & ~(PAGE - 1), addr + n
    else:
        pg, end = max(0, addr) & ~(PAGE - 1), min(addr + n, top)
    while pg < end:
        yield pg
        pg += PAGE


class ShmObject:
    """A shared-memory object: page offset -> page bytes, and the offsets that exist
    (faulted in by some process)."""
    _next = 0

    def __init__(self):
        ShmObject._next += 1
        self.oid = ShmObject._next
        self.pages = {}
        self.exists = set()


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


class Space:
    """One process's address space in the model: its VMAs, its private pages and what
    is present.  `task_size` and `mmap_base` are the layout's user space and first-fit
    start (i386 by default)."""

    def __init__(self, task_size=I386_TASK_SIZE, mmap_base=I386_MMAP_BASE):
        self.task_size, self.mmap_base = task_size, mmap_base
        self.vmas = []           # sorted, non-overlapping
        self.pages = {}          # private pages: page address -> bytes
        self.present = {}        # page address -> "z", "d" or "s"
        self.known = True        # presence known (False after a partial OutOfMemory)

    def clone(self):
        """The child of a fork: the same VMAs and objects, a copy of the pages."""
        n = Space(self.task_size, self.mmap_base)
        n.vmas = [v.copy() for v in self.vmas]
        n.pages = dict(self.pages)
        n.present = dict(self.present)
        n.known = self.known
        return n

    # -- VMAs --------------------------------------------------------------------------
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
                right = Vma(addr, v.end, v.prot, v.obj, v.pgoff + (addr - v.start) // PAGE)
                v.end = addr
                self.vmas.insert(i + 1, right)
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
        self.vmas.append(Vma(s, e, CANON[prot], obj, 0))
        self.vmas.sort(key=lambda v: v.start)

    def protect(self, s, e, prot, stop_at_hole=False):
        """Give [s, e) the protection; with stop_at_hole, only up to the first hole
        (a reading DESIGN.md allows for mprotect over a hole)."""
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

    def first_fit(self, length):
        """Where mmap without an address puts `length` bytes: the lowest gap at or above
        mmap_base, or None."""
        cand = self.mmap_base
        for v in self.vmas:
            if v.end <= cand:
                continue
            if v.start >= cand + length:
                break
            cand = v.end
        return cand if cand + length <= self.task_size else None

    # -- pages -------------------------------------------------------------------------
    def access_ok(self, addr, n, write):
        """Whether every page of [addr, addr + n) is in a VMA that allows the access."""
        if addr < 0 or addr + n > self.task_size:
            return False
        for pg in pages_of(addr, n):
            v = self.find(pg)
            if v is None or v.prot not in (("rw",) if write else ("r", "rw")):
                return False
        return True

    def page(self, pg):
        """The bytes of page pg (zeros if never written), None outside every VMA."""
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

    def fault(self, pg, write):
        """What an access leaves present: a shared page, a private data page after a
        write, the ZERO_PAGE after a read of an untouched private page."""
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
            self.set_page(pg, bytes(buf))
