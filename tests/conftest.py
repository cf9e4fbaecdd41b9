"""Fixtures shared by the named tests (test_semantics, test_errors)."""
import pytest

from lazyvm import Machine


@pytest.fixture(params=[False, True], ids=["no-rmap", "rmap"])
def rmap(request):
    return request.param


@pytest.fixture
def m(rmap):
    """A 16 MiB machine forking in copy mode; its invariants are checked at teardown."""
    machine = Machine(memory=16 << 20, fork_mode="copy", rmap=rmap)
    yield machine
    machine.check()
