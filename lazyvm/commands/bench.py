"""``lazyvm bench``: ``pytest bench/ --benchmark-only`` from a source checkout."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from .common import UsageError

# lazyvm/commands/bench.py -> the directory that holds lazyvm/
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def add_parser(sub) -> None:
    bp = sub.add_parser("bench", help="run the benchmarks (pytest-benchmark)",
                        usage="lazyvm bench [pytest arguments ...]",
                        description="Run `pytest bench/ --benchmark-only` from a source "
                                    "checkout (the current directory or the one the "
                                    "package was imported from); extra arguments go to "
                                    "pytest.")
    bp.set_defaults(handler=cmd_bench, pytest_args=[])


def bench_dir(package_parent=None):
    """bench/ of a source checkout: the current directory's, else the one beside the
    imported package (an editable or in-place build); None if neither has one."""
    for root in (Path.cwd(), package_parent or _PACKAGE_PARENT):
        if (root / "bench" / "conftest.py").is_file():
            return root / "bench"
    return None


def cmd_bench(args) -> int:
    bench = bench_dir()
    if bench is None:
        raise UsageError("the benchmarks are in the source checkout, not the installed "
                         "package: run lazyvm bench from the checkout's top directory")
    missing = [m for m in ("pytest", "pytest_benchmark")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError("needs pytest and pytest-benchmark: pip install 'lazyvm[test]' "
                         "(or pip install pytest pytest-benchmark)")
    extra = [a for a in args.pytest_args if a != "--"]
    # Run from bench/ itself: `python -m` puts the current directory first on sys.path,
    # and from the checkout's top that would be the unbuilt source tree, shadowing a
    # non-editable install.
    cmd = [sys.executable, "-m", "pytest", ".", "--benchmark-only", "-p",
           "no:cacheprovider", *extra]
    if not any(a.startswith("--benchmark-storage") for a in extra):
        # saved runs in the checkout's .benchmarks/, as `pytest bench/` from the top
        cmd.insert(4, "--benchmark-storage=file://" + str(bench.parent / ".benchmarks"))
    # The benchmarks import the lazyvm this command runs, wherever it was imported from.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(_PACKAGE_PARENT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    print(f"+ (cd {bench}; " + " ".join(cmd[1:]) + ")", file=sys.stderr)
    return subprocess.call(cmd, cwd=str(bench), env=env)
