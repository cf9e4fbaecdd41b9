"""How the tests start `python -m lazyvm...` in a subprocess: from a directory that holds
no lazyvm source tree, with the lazyvm these tests import (an installed package in CI,
or a checkout whose core is built in place) first on the path.  Started in the checkout
or an unpacked sdist, `python -m` would import the unbuilt sources instead."""
import os
import tempfile
from pathlib import Path

import lazyvm

LAZYVM_PARENT = str(Path(lazyvm.__file__).resolve().parent.parent)
NEUTRAL_CWD = tempfile.gettempdir()
LAZYVM_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    p for p in (LAZYVM_PARENT, os.environ.get("PYTHONPATH", "")) if p))
