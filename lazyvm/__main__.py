"""``python -m lazyvm``: the ``lazyvm`` command (see :mod:`lazyvm.cli`)."""

import sys

from .cli import main

sys.exit(main())
