"""Type stubs of lazyvm/core/defs.pyx."""
from typing import Tuple

DEBUG_BUILD: bool
LAYOUT_I386: int
LAYOUT_PAE: int
LAYOUT_X86_64: int

def counter_names() -> Tuple[str, ...]: ...
def wraparound_checked() -> bool: ...
