"""Fixtures shared by the named tests (test_semantics, test_errors)."""
import os
import shutil
import tempfile

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


# Every test, and every command a test runs (subprocesses inherit the environment, and
# tests/subproc.py copies it when it is imported), reads and writes the host cost
# profile (lazyvm.costs.host_profile_path, under $XDG_CACHE_HOME) in a directory of
# this test session, never the user's own cache.  The first command that needs the
# profile makes it there with a quick calibration, as on a fresh install.
_CACHE = tempfile.mkdtemp(prefix="lazyvm-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir():
    yield _CACHE
    shutil.rmtree(_CACHE, ignore_errors=True)
