# cython: language_level=3
"""lazyvm.core.defs: the Python side of defs.pxd: the counter names, the layout
numbers, and whether this is the checked build."""

import numpy as np

DEBUG_BUILD = bool(LAZYVM_DEBUG_BUILD)   # built with LAZYVM_DEBUG=1 (bounds checks on)

LAYOUT_I386, LAYOUT_PAE, LAYOUT_X86_64 = L_I386, L_PAE, L_X86_64

_names = None


def wraparound_checked():
    """True if this module was compiled with negative indexes wrapping around (the
    LAZYVM_DEBUG=1 directives; the fast build leaves them unchecked): an independent
    witness of DEBUG_BUILD.  The probe reads inside one array either way."""
    cdef long[::1] mv
    cdef Py_ssize_t k = -1
    arr = np.arange(4, dtype=np.int_)
    mv = arr[1:3]                    # wraps: mv[-1] is arr[2]; unchecked: arr[0]
    return mv[k] == 2


def counter_names():
    """The named counters in st[] order: each one's enum name (defs.pxd) without ST_,
    lower case.  Raises ImportError if the enum is not numbered 0, 1, 2, ... (a
    counter given a number by hand could collide with another)."""
    global _names
    if _names is None:
        members = sorted((v, k) for k, v in globals().items()
                         if k.startswith("ST_") and isinstance(v, int) and k != "ST_NAMED")
        if [v for v, k in members] != list(range(ST_NAMED)):
            raise ImportError("lazyvm.core.defs: the counter enum is not numbered "
                              "0, 1, 2, ... in order")
        _names = tuple(k[3:].lower() for v, k in members)
    return _names
