"""Every public method's doctest runs (lazyvm/__init__.py, machine.py, process.py)."""
import doctest

import pytest

import lazyvm
import lazyvm.machine
import lazyvm.process


@pytest.mark.parametrize("module", [lazyvm, lazyvm.machine, lazyvm.process], ids=lambda m: m.__name__)
def test_doctests(module):
    # process.py's examples build their machine with Machine, as a user's session has it
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False,
                             extraglobs={"Machine": lazyvm.Machine})
    assert result.attempted > 0
    assert result.failed == 0
