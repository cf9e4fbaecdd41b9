"""Every public method's doctest runs (lazyvm/__init__.py, machine.py)."""
import doctest

import pytest

import lazyvm
import lazyvm.machine


@pytest.mark.parametrize("module", [lazyvm, lazyvm.machine], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0
