"""The exceptions of lazyvm (DESIGN.md section 4).

Every class derives from LazyVMError; bad arguments raise the built-in ValueError.
"""


class LazyVMError(Exception):
    """Base class of every lazyvm error except ValueError."""


class SegmentationFault(LazyVMError):
    """An access outside every VMA, or one its protection forbids.  Nothing changed."""


class OutOfMemory(LazyVMError):
    """No free frame, swap slot or pte_chain node could be had.  The operation changed
    no process's memory contents and leaked nothing (DESIGN.md section 4)."""


class ProcessExited(LazyVMError):
    """A call on a process that has exited."""


class InvariantError(LazyVMError):
    """Machine.check() found a broken invariant of DESIGN.md section 3."""
