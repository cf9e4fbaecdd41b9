# cython: language_level=3
"""lazyvm.core.check: the invariants of DESIGN.md section 3, verified over read-only numpy
views of the core's arrays (Core.views()).  Nothing here changes the machine.

Every frame number read from memory is bounds-checked before it is used, so a corrupted
entry is reported as an InvariantError, never followed.  The work arrays are sized by
what the machine has used (frames below the allocator's high-water mark, swap slots
below the swap area's), never by its size: a 16 TiB machine that uses little is checked
in little memory.  Loops over frames and objects count in 64 bits.

  1. a frame's reference count = present slots pointing at it + caches holding it (with
     eager accounting each slot counts the use count of its table)
  2. rmap: a frame's chain holds exactly those slots; pool nodes used = reachable
  3. a table's use count = the entries of live pgds and live tables pointing at it
  4. a table with use count > 1 is reached only through entries with RW clear
  5. a private frame reached from more than one slot has RW clear in every slot
  6. every frame is free or in use, never both, never neither
  7. a swap slot's count = the swap entries naming it
  Huge pages (DESIGN.md section 10): PS only in pmd entries, pointing at a 512-aligned
  head; one deposited table per huge pmd mapping, on its pmd table's list; the head's
  count = its pmd mappings + the present PTEs mapping any of its frames (+ caches);
  RW clear in every private mapping of a huge page whose count is > 1; a free
  512-frame block is free whole.
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from lazyvm.errors import InvariantError

from lazyvm.core.defs cimport *


def fail(num, msg):
    raise InvariantError(f"invariant {num}: {msg}")


def check(dict v, list pgds, list shm_ranges):
    """Raise InvariantError naming the first invariant broken.  v: Core.views();
    pgds: the live page directories; shm_ranges: (base, npages) of each live object."""
    cdef uint64_t nf = v["nframes"], hwm = v["hwm"], zero = v["zero_pfn"]
    cdef int levels = v["levels"], level
    cdef const int32_t[::1] count = v["count"]
    cdef const uint32_t[::1] link = v["link"]
    cdef const uint32_t[::1] index = v["index"]
    cdef const uint16_t[::1] flags = v["flags"]
    cdef const uint16_t[::1] lidx = v["lidx"]
    cdef const int32_t[::1] swap_count = v["swap_count"]
    cdef const uint32_t[::1] swap_cache = v["swap_cache"]
    cdef const uint32_t[::1] shm = v["shm"]
    cdef uint64_t nswap = v["nswap"], swap_hwm = v["swap_hwm"]
    cdef uint32_t user_entries = v["user_entries"]
    cdef bint wide = v["wide"], top_rw = v["top_rw"], eager = v["eager"]
    # frames >= hwm were never allocated: an entry naming one fails like one beyond
    # memory, so every per-frame array stops at hwm
    cdef int64_t[::1] exp = np.zeros(hwm, dtype=np.int64)
    cdef int32_t[::1] users = np.zeros(hwm, dtype=np.int32)
    cdef int32_t[::1] nslots = np.zeros(hwm, dtype=np.int32)
    cdef int32_t[::1] rwslots = np.zeros(hwm, dtype=np.int32)
    cdef int32_t[::1] rwshared = np.zeros(hwm, dtype=np.int32)  # RW slots in shared tables
    cdef int32_t[::1] maps = np.zeros(hwm, dtype=np.int32)      # mappings of a page (head)
    cdef int32_t[::1] nhuge = np.zeros(hwm, dtype=np.int32)     # huge entries of a pmd table
    cdef uint8_t[::1] deposited = np.zeros(hwm, dtype=np.uint8)
    cdef uint64_t h, d
    cdef int64_t ndeposits = 0
    cdef int64_t tusers
    cdef int64_t[::1] swapexp = np.zeros(max(swap_hwm, 1), dtype=np.int64)
    cdef uint8_t[::1] live_pgd = np.zeros(hwm, dtype=np.uint8)
    cdef uint8_t[::1] tlevel = np.zeros(hwm, dtype=np.uint8)
    cdef uint64_t g, t, i, f, s, steps, n, nents
    cdef uint64_t e, ebits
    cdef int64_t listed, ntab
    phys = v["physical"]
    ents = phys.view(np.uint64 if wide else np.uint32)
    per = 512 if wide else 1024
    nent = v["nent"]

    def entries(uint64_t frame):
        return ents[<size_t>frame * per:(<size_t>frame + 1) * per]

    def row_of_table(uint64_t frame):
        return entries(frame)

    # ---- pgds and the tables they reach, level by level (invariants 3, 4, 6) --------
    kernel = entries(v["swapper_pgd"])[user_entries:nent[levels]]
    frontier = []
    for g in pgds:
        if g >= hwm or (flags[g] & (F_PGD | F_FREE)) != F_PGD:
            fail(6, f"pgd {g} is not an allocated page directory")
        if live_pgd[g]:
            fail(6, f"pgd {g} belongs to two processes")
        live_pgd[g] = 1
        row = entries(g)
        if not np.array_equal(row[user_entries:nent[levels]], kernel):
            fail(1, f"pgd {g}: the kernel entries differ from the boot pgd")
        frontier.append((g, row[:user_entries]))
    want_bits = ENTRY_PDPT if not top_rw else ENTRY_USER
    table_rows = {}
    pmd_rows = {}                    # pmd tables holding huge entries (rmap slots)
    for level in range(levels, 1, -1):
        nxt = {}
        for parent, row in frontier:
            for i in np.flatnonzero(row):
                e = int(row[i])
                ebits = e & FLAGS_MASK
                t = entry_pfn(e)
                if level == 2 and (e & _PS):
                    # a huge mapping: P, US, PS, maybe RW, A, D; a 512-aligned head
                    if (e & (_P | _US)) != (_P | _US) or (ebits & ~(<uint64_t>(
                            _P | _RW | _US | _A | _D | _PS))) or (e >> 52):
                        fail(6, f"pmd table {parent} entry {i} = {e:#x} is not a huge "
                                f"mapping")
                    if t & (HPAGE_NR - 1) or t + HPAGE_NR > hwm \
                            or (flags[t] & (F_HUGE | F_ANON | F_FREE)) != (F_HUGE | F_ANON):
                        fail(6, f"pmd table {parent} entry {i} maps frame {t}, not the "
                                f"head of a huge page")
                    exp[t] += 1
                    nslots[t] += 1
                    maps[t] += 1
                    if e & _RW:
                        rwslots[t] += 1
                    nhuge[parent] += 1
                    pmd_rows[parent] = row_of_table(parent)
                    continue
                if level == levels and not top_rw:
                    ok = ebits == ENTRY_PDPT
                else:
                    ok = (e & _P) and (ebits & ~(<uint64_t>_RW)) == (ENTRY_USER & ~_RW)
                if not ok or (e >> 52) or (not wide and e >> 32):
                    fail(3, f"frame {parent} entry {i} = {e:#x} is not a user table entry")
                if t >= hwm or (flags[t] & (F_PTABLE | F_FREE)) != F_PTABLE \
                        or ((flags[t] >> F_LEVEL_SHIFT) & 7) != level - 1:
                    fail(3, f"frame {parent} entry {i} points at frame {t}, not a page "
                            f"table of level {level - 1}")
                users[t] += 1
                if t not in nxt:
                    nxt[t] = entries(t)
        # invariant 4, over the entries of this level
        for parent, row in frontier:
            if level == levels and not top_rw:
                break
            for i in np.flatnonzero(row):
                e = int(row[i])
                t = entry_pfn(e)
                if level == 2 and (e & _PS):
                    continue
                if users[t] > 1 and (e & _RW):
                    fail(4, f"table {t} has {users[t]} users but frame {parent} entry {i} "
                            f"has RW set")
        for t, row in nxt.items():
            tlevel[t] = level - 1
        frontier = list(nxt.items())
        if level - 1 == 1:
            table_rows = nxt
    ntab = 0
    for t in range(hwm):
        if users[t] and count[t] != users[t]:
            fail(3, f"table {t} use count {count[t]} != {users[t]} entries pointing at it")

    # ---- leaf entries (invariants 1, 5, 7) -------------------------------------------
    cdef const uint64_t[::1] r
    cdef const uint32_t[::1] seg
    cdef uint64_t base, npages, off, stop, k
    for t, row in table_rows.items():
        r = np.ascontiguousarray(row, dtype=np.uint64)
        tusers = users[t] if eager else 1
        for i in range(r.shape[0]):
            e = r[i]
            if e == 0:
                continue
            if e & (_P | _PROTNONE):
                f = entry_pfn(e)
                if f == zero:
                    if e & _RW:
                        fail(5, f"ZERO_PAGE mapped writable at table {t} index {i}")
                    continue
                if f >= hwm or not (flags[f] & (F_ANON | F_SHMEM | F_TAIL)) \
                        or (flags[f] & F_FREE):
                    fail(6, f"table {t} index {i} maps frame {f}, which is not a data "
                            f"frame in use")
                h = f & ~(<uint32_t>(HPAGE_NR - 1)) if flags[f] & F_TAIL else f
                exp[h] += tusers
                nslots[f] += 1
                maps[h] += 1
                if e & _RW:
                    rwslots[h] += 1
                    if users[t] > 1:
                        rwshared[h] += 1
            else:
                s = swp_offset(e)
                if (e & (_P | _PROTNONE)) or (e >> 32) or s == 0 or s >= swap_hwm \
                        or swap_count[s] < 0:
                    fail(7, f"table {t} index {i}: {e:#x} is not a live swap entry")
                swapexp[s] += 1
    shm_all = np.asarray(shm)
    for base_, npages_ in shm_ranges:
        base, npages = base_, npages_
        off = base
        while off < base + npages:       # in chunks: an object may have 2**32 pages
            stop = min(off + (1 << 22), base + npages)
            seg = np.ascontiguousarray(shm_all[off:stop])
            for k in np.flatnonzero(seg):
                f = seg[k]
                if f >= hwm or not (flags[f] & F_SHMEM) or (flags[f] & F_FREE):
                    fail(6, f"shared-memory object holds frame {f}, not a shmem frame")
                exp[f] += 1
            off = stop
    for s in range(1, swap_hwm):
        if swap_count[s] < 0:
            if swapexp[s]:
                fail(7, f"free swap slot {s} is named by {swapexp[s]} entries")
            continue
        if swap_count[s] != swapexp[s]:
            fail(7, f"swap slot {s} count {swap_count[s]} != {swapexp[s]} entries")
        if swap_count[s] == 0:
            fail(7, f"swap slot {s} is allocated but named by no entry")
        f = swap_cache[s]
        if f != 0:
            if f >= hwm or not (flags[f] & F_SWAPCACHE) or index[f] != s:
                fail(1, f"swap cache of slot {s} holds frame {f} that does not know it")
            exp[f] += 1

    # ---- deposited tables: one per huge pmd mapping, on its pmd table's list ---------
    for t in range(hwm):
        if not users[t] or tlevel[t] != 2:
            continue
        n = 0
        d = link[t]
        while d != 0:
            if d >= hwm or (flags[d] & ~(<uint32_t>(7 << F_LEVEL_SHIFT))) \
                    != (F_PTABLE | F_DEPOSIT) or ((flags[d] >> F_LEVEL_SHIFT) & 7) != 1 \
                    or deposited[d] or count[d] != 1 or n > nhuge[t]:
                fail(3, f"pmd table {t}: its deposit list reaches frame {d}, not a "
                        f"deposited leaf table of its own")
            if np.any(entries(d)):
                fail(3, f"deposited table {d} (pmd table {t}) is not empty")
            deposited[d] = 1
            n += 1
            d = link[d]
        if n != nhuge[t]:
            fail(3, f"pmd table {t} has {nhuge[t]} huge mappings and {n} deposited tables")
        ndeposits += n

    # ---- every frame (invariants 1, 5, 6) --------------------------------------------
    listed = 0
    ntab = 0
    for f in range(hwm):
        fl = flags[f]
        if fl & F_FREE:
            if fl != F_FREE:
                fail(6, f"frame {f} is free and in use (flags {fl:#x})")
            listed += 1
            continue
        if fl & F_RESERVED:
            continue
        if fl & F_PGD:
            if not live_pgd[f]:
                fail(6, f"page directory {f} belongs to no live process (leaked)")
        elif fl & F_PTABLE:
            ntab += 1
            if fl & F_DEPOSIT:
                if not deposited[f]:
                    fail(6, f"deposited table {f} is on no pmd table's list (leaked)")
            elif users[f] == 0:
                fail(6, f"page table {f} is reached by no pgd (leaked)")
        elif fl & F_TAIL:
            h = f & ~(<uint32_t>(HPAGE_NR - 1))
            if fl & ~(<uint32_t>(F_TAIL | F_DIRECT | F_DIRTY)) or count[f] != 0 \
                    or (flags[h] & (F_HUGE | F_FREE)) != F_HUGE:
                fail(6, f"frame {f} (flags {fl:#x}, count {count[f]}) is a tail of no "
                        f"huge page")
        elif fl & (F_ANON | F_SHMEM):
            if count[f] != exp[f]:
                fail(1, f"frame {f} count {count[f]} != {exp[f]} "
                        f"(slots {nslots[f]} + caches)")
            if count[f] <= 0:
                fail(6, f"frame {f} is in use with nothing holding it (leaked)")
            # eager: a page under a shared table has a reference per sharer, and its
            # one slot may keep RW (the entries above the table have it clear)
            if (fl & F_ANON) and rwslots[f] and count[f] > 1 and \
                    (not eager or maps[f] > 1 or rwslots[f] > rwshared[f]):
                fail(5, f"private frame {f} has {count[f]} references and "
                        f"{rwslots[f]} writable slots")
            if (fl & F_SWAPCACHE) and (index[f] >= nswap or swap_cache[index[f]] != f):
                fail(1, f"frame {f} thinks it is in the swap cache of slot {index[f]}")
        else:
            fail(6, f"frame {f} is neither free nor in use (flags {fl:#x})")
    if np.any(phys[zero * 4096:(zero + 1) * 4096]):
        fail(6, "the ZERO_PAGE is not all zeros")
    counters = v["counters"]
    if ntab != counters["page_tables"] or len(pgds) != counters["pgds"]:
        fail(3, f"counters: {counters['page_tables']} page tables, {counters['pgds']} "
                f"pgds; the frames say {ntab} and {len(pgds)}")
    if ndeposits != counters["tables_deposited"]:
        fail(3, f"counters: {counters['tables_deposited']} tables deposited, the pmd "
                f"tables hold {ndeposits}")
    bylevel = np.bincount(np.asarray(tlevel)[np.asarray(users) > 0], minlength=5)
    bylevel[1] += ndeposits
    for level in range(1, levels):
        if bylevel[level] != v["tables_by_level"][level - 1]:
            fail(3, f"counters: {v['tables_by_level'][level - 1]} tables of level {level}, "
                    f"the frames say {bylevel[level]}")
    steps = 0
    s = v["swap_free"]
    while s != 0:
        if s >= swap_hwm or swap_count[s] != -1 or steps > nswap:
            fail(7, f"free swap list reaches slot {s}, which is in use")
        steps += 1
        s = swap_cache[s]
    if nswap and steps + (nswap - swap_hwm) != v["swap_nfree"]:
        fail(7, f"{steps} listed + {nswap - swap_hwm} never used free swap "
                f"slots, swap_nfree says {v['swap_nfree']}")
    steps = 0
    f = v["free_head"]
    while f != 0:
        if f >= hwm or flags[f] != F_FREE or steps > nf:
            fail(6, f"free list reaches frame {f}, which is not free")
        steps += 1
        f = link[f]
    for h in v["hfree"]:             # free 512-frame blocks, kept whole
        if h & (HPAGE_NR - 1) or h + HPAGE_NR > hwm \
                or np.any(np.asarray(flags[h:h + HPAGE_NR]) != F_FREE):
            fail(6, f"free huge-page block at frame {h} is not 512 free frames")
        steps += HPAGE_NR
    if steps != listed or listed + (nf - hwm) != v["nfree"]:
        fail(6, f"free list has {steps} frames, {listed} are marked free, "
                f"{nf - hwm} never used; nfree says {v['nfree']}")

    if not v["rmap"]:
        if counters["pte_chain_nodes"] != 0:
            fail(2, "pte_chain nodes in use without rmap")
        return
    _check_rmap(v, {**table_rows, **pmd_rows}, nslots)


def _check_rmap(dict v, dict table_rows, int32_t[::1] nslots):
    """Invariant 2: every chain holds exactly the slots that map its frame; the pool's
    used nodes are exactly those reachable from chains, the rest are on the free list."""
    cdef uint64_t nf = v["nframes"], hwm = v["hwm"]
    cdef uint32_t nrpte = v["nrpte"]
    cdef uint32_t node_hwm = v["node_hwm"], node_cap = v["node_cap"]
    cdef uint32_t slot_shift = v["slot_shift"], per = 512 if v["wide"] else 1024
    cdef const uint32_t[::1] link = v["link"]
    cdef const uint16_t[::1] flags = v["flags"]
    cdef const uint16_t[::1] lidx = v["lidx"]
    cdef const uint32_t[:, ::1] nodes = v["nodes"]
    cdef bint wide = v["wide"]
    cdef uint8_t[::1] node_seen = np.zeros(max(node_cap, 1), dtype=np.uint8)
    cdef uint64_t f, steps
    cdef uint32_t n, k, idx
    cdef uint64_t slot
    cdef int64_t chain_len, seen_nodes = 0, all_slots = 0, direct = 0
    counters = v["counters"]
    nodes64 = np.asarray(v["nodes"]).view(np.uint64)
    cdef int32_t[::1] tord = np.full(hwm, -1, dtype=np.int32)
    cdef uint8_t[::1] mark = np.zeros(max(len(table_rows), 1) * per, dtype=np.uint8)
    cdef uint32_t j = 0, t, i
    rows = []
    for t, row in table_rows.items():
        tord[t] = j
        rows.append(np.ascontiguousarray(row, dtype=np.uint64))
        j += 1
    cdef uint64_t[:, ::1] tab = np.stack(rows) if rows else np.zeros((1, per), np.uint64)
    cdef uint64_t e, mask = (1 << slot_shift) - 1

    def check_slot(uint32_t frame, uint64_t sl):
        cdef uint64_t t = sl >> slot_shift, i = sl & mask, e
        if t >= hwm or tord[t] < 0 or i >= per:
            fail(2, f"frame {frame}: slot ({t}, {i}) is not in a live table")
        e = tab[tord[t], i]
        if not (e & (_P | _PROTNONE)) or entry_pfn(e) != frame:
            fail(2, f"frame {frame}: slot ({t}, {i}) holds {e:#x}")
        if mark[<size_t>tord[t] * per + i]:
            fail(2, f"slot ({t}, {i}) is in a chain twice")
        mark[<size_t>tord[t] * per + i] = 1

    for f in range(hwm):
        fl = flags[f]
        if not (fl & (F_ANON | F_SHMEM | F_TAIL)) or (fl & F_FREE):
            continue
        chain_len = 0
        if fl & F_DIRECT:
            slot = ((<uint64_t>link[f]) << 9 | lidx[f]) if wide else link[f]
            check_slot(f, slot)
            chain_len = 1
            direct += 1
        else:
            n = link[f]
            while n != 0:
                if n >= node_hwm or node_seen[n]:
                    fail(2, f"frame {f}: chain node {n} is out of the pool or shared")
                node_seen[n] = 1
                seen_nodes += 1
                idx = node_idx(&nodes[n, 0])
                if idx >= nrpte or (n != link[f] and idx != 0):
                    fail(2, f"frame {f}: node {n} idx {idx} (only the head has free slots)")
                for k in range(idx, nrpte):
                    slot = int(nodes64[n, 1 + k]) if wide else nodes[n, 1 + k]
                    check_slot(f, slot)
                    chain_len += 1
                n = node_next(&nodes[n, 0])
        if chain_len != nslots[f]:
            fail(2, f"frame {f}: chain holds {chain_len} slots, {nslots[f]} PTEs map it")
        if not (fl & F_DIRECT):
            all_slots += chain_len
    if all_slots != counters["pte_chain_slots"] or direct != counters["rmap_direct"]:
        fail(2, f"counters: {counters['pte_chain_slots']} chain slots, "
                f"{counters['rmap_direct']} direct; the chains hold {all_slots} and {direct}")
    if seen_nodes != counters["pte_chain_nodes"]:
        fail(2, f"{seen_nodes} nodes reachable from chains, {counters['pte_chain_nodes']} in use")
    n = v["node_free"]
    steps = 0
    while n != 0:
        if n >= node_hwm or node_seen[n] or steps > node_cap:
            fail(2, f"free chain node {n} is in use or out of the pool")
        steps += 1
        n = node_next(&nodes[n, 0])
    if steps + (node_cap - node_hwm) != v["node_nfree"] or seen_nodes + steps + 1 != node_hwm:
        fail(2, f"chain pool: {seen_nodes} used + {steps} listed free != "
                f"{node_hwm - 1} ever used")
