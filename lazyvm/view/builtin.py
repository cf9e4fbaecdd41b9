"""The built-in scenarios of ``lazyvm show`` (the same shape as a TOML scenario)."""

M8 = "8M"
A = 0x40000000

SEED = {
    "title": "Lazy page-table sharing at fork (Phillips, 2002)",
    "about": "The seed algorithm step by step: on fork, increment the use counts of the "
             "page tables and copy only the page directory; on the first write to a shared "
             "table, privatize it (copy it, extend the pte_chains, drop one use); the last "
             "sharer just gets write access back; on exit, a shared table loses one use "
             "and is otherwise left alone.",
    "machine": {"memory": "16M", "fork_mode": "share", "rmap": True},
    "step": [
        {"do": "spawn", "as": "p", "title": "spawn the parent",
         "note": "A new process has a page directory (pgd) and no user tables: only the "
                 "kernel entries 768\u20131023, copied from the boot pgd."},
        {"do": "mmap", "proc": "p", "length": M8, "as": "a", "title": "parent maps 8 MiB",
         "note": "mmap only records a VMA. Nothing is allocated until a page is touched."},
        {"do": "write", "proc": "p", "at": "a", "page": 0, "pages": 4,
         "title": "parent writes pages 0\u20133",
         "note": "The first fault in a 4 MiB span allocates its page table (use count 1); "
                 "each write fault allocates a zeroed frame (reference count 1). With rmap "
                 "each frame records the one PTE slot that maps it."},
        {"do": "write", "proc": "p", "at": "a", "page": 1024, "pages": 2,
         "title": "parent writes in the second 4 MiB",
         "note": "A second page table for the second 4 MiB span."},
        {"do": "fork", "proc": "p", "as": "c", "mode": "share", "title": "share fork",
         "note": "The seed's fork: copy only the page directory. Each table's use count "
                 "goes 1 \u2192 2 and RW is cleared in both processes' PDEs, which "
                 "write-protects every page under them at once. No PTE, frame count or "
                 "pte_chain is touched."},
        {"do": "write", "proc": "c", "at": "a", "page": 0, "title": "child writes page 0: privatize",
         "note": "A write through a read-only PDE to a shared table: the child gets its own "
                 "copy of the table (use 1) and the old one drops to use 1. Every frame the "
                 "table maps gains a reference and a chain slot, RW is cleared in both "
                 "tables' entries; then the write itself copies page 0 on write. The "
                 "second table stays shared."},
        {"do": "write", "proc": "p", "at": "a", "page": 1, "title": "parent writes page 1: last sharer",
         "note": "The parent's first table now has use count 1: the parent is its last "
                 "sharer, so RW is set in its PDE and nothing is copied. Page 1 is still "
                 "mapped by both tables (ref 2), so the write copies it."},
        {"do": "exit", "proc": "c", "title": "child exits: the fast path",
         "note": "At exit a shared table (the second one, use 2) just loses one use: "
                 "nothing inside it is visited. The child's private table is zapped "
                 "entry by entry and freed; frames it alone held are freed."},
    ],
}

COW = {
    "title": "Copy-on-write after an eager (2.4) fork",
    "about": "Linux 2.4's copy_page_range: fork copies every page table and write-protects "
             "every private page in both processes; the first write to a page copies it, "
             "unless the writer holds the last reference.",
    "machine": {"memory": "16M", "fork_mode": "copy", "rmap": False},
    "step": [
        {"do": "spawn", "as": "p"},
        {"do": "mmap", "proc": "p", "length": "64k", "as": "a"},
        {"do": "write", "proc": "p", "at": "a", "pages": 2,
         "note": "Two private pages, writable, reference count 1."},
        {"do": "touch", "proc": "p", "at": "a", "page": 2, "write": False,
         "title": "p: read page 2",
         "note": "A read of a page never written maps the ZERO_PAGE read-only."},
        {"do": "fork", "proc": "p", "as": "c", "mode": "copy", "title": "copy fork",
         "note": "The child gets its own page table with a copy of every entry. RW is "
                 "cleared in both, each frame gains a reference (ref 2)."},
        {"do": "write", "proc": "c", "at": "a", "page": 0, "title": "c writes page 0: COW copy",
         "note": "The frame has two references: the child gets a new copy (ref 1) and the "
                 "old frame drops to ref 1."},
        {"do": "write", "proc": "p", "at": "a", "page": 0, "title": "p writes page 0: COW reuse",
         "note": "Now the parent holds the only reference: RW is set in place, no copy."},
        {"do": "write", "proc": "c", "at": "a", "page": 2, "title": "c writes page 2: demand zero",
         "note": "Writing a ZERO_PAGE mapping allocates a fresh zeroed frame."},
        {"do": "exit", "proc": "c"},
    ],
}

RMAP = {
    "title": "Reverse mapping: chains grow with copy forks, not with share forks",
    "about": "With rmap every frame knows the PTE slots that map it (its pte_chain). A copy "
             "fork adds a slot to every page's chain; a share fork adds none, because a "
             "slot in a shared table stands for every sharer. Click a frame to see its "
             "chain.",
    "machine": {"memory": "16M", "fork_mode": "share", "rmap": True},
    "step": [
        {"do": "spawn", "as": "p"},
        {"do": "mmap", "proc": "p", "length": "64k", "as": "a"},
        {"do": "write", "proc": "p", "at": "a", "pages": 3,
         "note": "One slot per frame, stored directly in the frame (PageDirect)."},
        {"do": "fork", "proc": "p", "as": "c1", "mode": "copy", "title": "copy fork c1",
         "note": "Copy fork: a new table, and every frame's chain grows by a slot."},
        {"do": "fork", "proc": "p", "as": "c2", "mode": "copy", "title": "copy fork c2",
         "note": "Another copy: three slots per frame."},
        {"do": "fork", "proc": "p", "as": "c3", "mode": "share", "title": "share fork c3",
         "note": "Share fork: the parent's table gains a use; no chain changes."},
        {"do": "write", "proc": "c3", "at": "a", "page": 2, "title": "c3 writes page 2: privatize",
         "note": "Privatizing the shared table extends the chains: the new table's slots "
                 "join every frame it maps, then page 2 is copied on write."},
        {"do": "exit", "proc": "c1", "note": "Exit removes c1's slots from the chains."},
    ],
}

RECLAIM = {
    "title": "Reclaim through the reverse map, in a shared table",
    "about": "To swap a frame out, reclaim writes it to swap and turns every slot that maps "
             "it into a swap entry. A change that is the same for every sharer is made in "
             "place, even in a shared table; a fault that installs a PTE privatizes first.",
    "machine": {"memory": "16M", "fork_mode": "share", "rmap": True, "swap": "1M"},
    "step": [
        {"do": "spawn", "as": "p"},
        {"do": "mmap", "proc": "p", "length": "64k", "as": "a"},
        {"do": "write", "proc": "p", "at": "a", "pages": 4},
        {"do": "fork", "proc": "p", "as": "c", "mode": "share",
         "note": "The table is shared (use 2)."},
        {"do": "reclaim", "n": 2, "title": "reclaim 2 frames",
         "note": "The clock's first lap clears the accessed bits, the second takes two "
                 "frames: their slots become swap entries, in the shared table itself."},
        {"do": "touch", "proc": "c", "at": "a", "page": 0, "write": False,
         "title": "c reads page 0: swap in",
         "note": "The fault installs a PTE for the child only, so the table is privatized "
                 "first; then page 0 comes back from swap."},
        {"do": "exit", "proc": "c"},
        {"do": "exit", "proc": "p", "note": "Everything is free again."},
    ],
}

SMALL = {
    "title": "Why sharing loses for a small process",
    "about": "A process with three page tables (code/data, heap, stack). Share fork saves "
             "copying three tables, but a child that writes to each region privatizes all "
             "three anyway: the same copying, done later in three extra faults. Compare "
             "the counters of the share fork with the copy fork at the end.",
    "machine": {"memory": "16M", "fork_mode": "share", "rmap": True},
    "step": [
        {"do": "spawn", "as": "p"},
        {"do": "mmap", "proc": "p", "length": "16k", "addr": 0x08048000, "as": "data",
         "title": "map data at 0x08048000"},
        {"do": "mmap", "proc": "p", "length": "16k", "addr": A, "as": "heap",
         "title": "map heap at 0x40000000"},
        {"do": "mmap", "proc": "p", "length": "16k", "addr": 0xBFFFC000, "as": "stack",
         "title": "map stack at 0xbfffc000"},
        {"do": "write", "proc": "p", "at": "data", "pages": 4},
        {"do": "write", "proc": "p", "at": "heap", "pages": 4},
        {"do": "write", "proc": "p", "at": "stack", "pages": 4,
         "note": "Three tables, each with a handful of pages."},
        {"do": "fork", "proc": "p", "as": "c", "mode": "share", "title": "share fork",
         "note": "Three use counts incremented, three PDEs write-protected."},
        {"do": "write", "proc": "c", "at": "data", "title": "c writes data: privatize 1",
         "note": "The child's first write in each region privatizes that table."},
        {"do": "write", "proc": "c", "at": "heap", "title": "c writes heap: privatize 2"},
        {"do": "write", "proc": "c", "at": "stack", "title": "c writes stack: privatize 3",
         "note": "All three tables copied: what a copy fork does at once, in three faults."},
        {"do": "fork", "proc": "p", "as": "d", "mode": "copy", "title": "copy fork, for comparison",
         "note": "The eager fork copies the three tables now (tables_copied, ptes_copied "
                 "in the counters), with no later privatize faults."},
    ],
}

BUILTIN = {"seed": SEED, "cow": COW, "rmap": RMAP, "reclaim": RECLAIM, "small-process": SMALL}
