"""``python -m lazyvm``: the ``lazyvm`` command (see :mod:`lazyvm.commands`)."""

import sys

from .commands import main

sys.exit(main())
