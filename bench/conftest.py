"""pytest configuration of the lazyvm micro-benchmarks (pytest-benchmark).

Run:   pytest bench/ --benchmark-only
       pytest bench/ --benchmark-only --benchmark-sort=name --benchmark-columns=min,mean,median,rounds

Benchmarks are grouped (``benchmark.group``) so each group reads as ratios of one
operation: the simulator's policies side by side, the numpy streaming baseline and the
host's own fork of the same number of pages. The helpers are in benchlib.py.
"""

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Benchmarks run only when asked for: --benchmark-only / --benchmark-enable, or
    bench/ named on the command line. A plain `pytest` from the top never runs them."""
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable",
                                                                     False):
        return
    for a in config.args:
        p = Path(a.split("::")[0]).resolve()
        if p == _HERE or _HERE in p.parents:
            return
    skip = pytest.mark.skip(reason="benchmarks: run pytest bench/ --benchmark-only")
    for item in items:
        if _HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
