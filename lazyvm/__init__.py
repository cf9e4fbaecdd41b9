"""lazyvm: a simulator of the Linux virtual-memory system that measures lazy page-table
sharing at fork (Daniel Phillips, 2002) against eager page-table copying, with and
without reverse mapping (rmap pte_chains).

    >>> from lazyvm import Machine
    >>> m = Machine(memory=16 << 20)          # share fork and rmap by default
    >>> p = m.spawn(); a = p.mmap(8 << 20)
    >>> p.touch(a, 8 << 20, write=True); c = p.fork()
    >>> m.stats()["page_tables"]              # the child shares the parent's tables
    2
"""
import importlib as _importlib
import os as _os

__version__ = "0.2.0"


def _source_tree_error() -> ImportError:
    """The one-line error for a source checkout whose compiled core is not built here
    (numpy does the same): importing from the checkout's root shadows any installed
    copy, so the installed core cannot be used from here."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    root = _os.path.dirname(here)
    return ImportError(
        f"lazyvm is being imported from its source tree ({root}), where the compiled "
        f"core lazyvm.core is not built; run Python from another directory to use "
        f"the installed lazyvm, or build here with `pip install -e .` or "
        f"`python setup.py build_ext --inplace`")


try:  # the compiled core: everything below needs it
    _importlib.import_module(__name__ + ".core")
except ModuleNotFoundError as _e:
    _here = _os.path.dirname(_os.path.abspath(__file__))
    if (_e.name == __name__ + ".core" or (_e.name or "").startswith(__name__ + ".core.")) and _os.path.exists(
            _os.path.join(_here, _os.pardir, "setup.py")):
        raise _source_tree_error() from None
    raise

from .errors import (InvariantError, LazyVMError, OutOfMemory, ProcessExited,  # noqa: E402
                     SegmentationFault)
from .machine import Machine, Process  # noqa: E402

__all__ = ["Machine", "Process", "LazyVMError", "SegmentationFault", "OutOfMemory",
           "ProcessExited", "InvariantError", "__version__"]
