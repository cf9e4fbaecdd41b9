# cython: language_level=3
"""lazyvm.core.defs: the Python side of defs.pxd: the counter names, the layout
numbers, and whether this is the checked build."""

DEBUG_BUILD = bool(LAZYVM_DEBUG_BUILD)   # built with LAZYVM_DEBUG=1 (bounds checks on)

LAYOUT_I386, LAYOUT_PAE, LAYOUT_X86_64 = L_I386, L_PAE, L_X86_64

_names = None


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
