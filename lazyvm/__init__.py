"""lazyvm: a simulator of the Linux i386 virtual-memory system that measures lazy
page-table sharing at fork (Daniel Phillips, 2002) against eager page-table copying,
with and without reverse mapping (rmap pte_chains).

    >>> from lazyvm import Machine
    >>> m = Machine(memory=16 << 20)          # share fork and rmap by default
    >>> p = m.spawn(); a = p.mmap(8 << 20)
    >>> p.touch(a, 8 << 20, write=True); c = p.fork()
    >>> m.stats()["page_tables"]              # the child shares the parent's tables
    2
"""
from .errors import (InvariantError, LazyVMError, OutOfMemory, ProcessExited,
                     SegmentationFault)
from .machine import Machine, Process

__version__ = "0.1.0"
__all__ = ["Machine", "Process", "LazyVMError", "SegmentationFault", "OutOfMemory",
           "ProcessExited", "InvariantError", "__version__"]
