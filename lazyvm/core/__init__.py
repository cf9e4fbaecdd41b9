"""lazyvm.core: the compiled core, one module per concern, as Linux splits mm/.

  defs        (defs.pxd) typedefs, entry bits, frame flags, layouts, error codes,
              the pte_chain node encoding, vma_t/mm_t/walk_t, the counters
  state       the State class: every field of the core, no operations
  frames      mm/page_alloc.c: frames and page tables
  rmap        mm/rmap.c: the pte_chain pool, page_add_rmap, page_remove_rmap
  swap        mm/swapfile.c: swap slots and the swap cache
  accounting  eager accounting of shared leaf tables (COW page tables v3-v5)
  thp         mm/huge_memory.c: transparent huge pages
  fork        mm/memory.c copy_page_range, and the share fork's walker
  fault       the MMU, handle_mm_fault, privatize
  zap         zap_page_range, free_pgtables, unshare, change_protection
  reclaim     mm/vmscan.c: the rmap clock and 2.4's page-table scan
  trace       the engine of Machine.replay, touch, read and write
  inspection  counters, walks, translations
  api         Core: the thin Python entry points
  check       the invariant checker over read-only views

Each module cimports only the ones above it.  The Python layer imports Core, check,
DEBUG_BUILD, host_zeros and the LAYOUT_* numbers from here.
"""
from lazyvm.core.defs import (DEBUG_BUILD, LAYOUT_I386, LAYOUT_PAE, LAYOUT_X86_64,
                              counter_names)
from lazyvm.core.state import host_zeros
from lazyvm.core.api import Core
from lazyvm.core.check import check

COUNTER_NAMES = counter_names()

__all__ = ["COUNTER_NAMES", "Core", "DEBUG_BUILD", "LAYOUT_I386", "LAYOUT_PAE",
           "LAYOUT_X86_64", "check", "host_zeros"]
