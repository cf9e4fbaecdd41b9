"""Every subcommand answers a mistake with one line on stderr that names it (`lazyvm
compare: ...`) and exit status 2, before any work starts, never with a traceback.  The
commands run as a user runs them: `python -m lazyvm ...` in a fresh process."""

import os
import subprocess
import sys

import pytest
from subproc import LAZYVM_ENV

SPEC = "[grid]\npages = [1024]\n"
BIG_SPEC = "[grid]\npages = [1024, 100000000]\n"

# (subcommand, arguments, a phrase the one line must hold)
CASES = [
    ("compare", ["--quik"], "unrecognized arguments: --quik"),
    ("compare", ["--sizes", "0"], "positive"),
    ("compare", ["--sizes", "100000000"], "user space"),
    ("compare", ["--share-level", "2"], "--share-level 2"),
    ("compare", ["--layout", "x86_64", "--share-level", "9"], "--share-level 9"),
    ("compare", ["--json", "nodir/x.json"], "no such directory"),
    ("compare", ["--plot", "nodir/x.png"], "no such directory"),
    ("compare", ["--plot", "x.txt"], ".png"),
    ("compare", ["--costs", "nosuch"], "unknown cost profile"),
    ("compare", ["--repeats", "-1"], "positive"),
    ("run", [], "name a workload"),
    ("run", ["nosuch"], "no workload 'nosuch'"),
    ("run", ["fork_exit", "--quick", "--share-level", "2"], "--share-level 2"),
    ("run", ["fork_exit", "-p", "nosuch=1"], "no parameter"),
    ("run", ["fork_exit", "-p", "pages=-3"], "pages=-3"),
    ("run", ["prefork", "-p", "pages=786432", "-p", "children=64", "-p",
             "write_fraction=1.0", "--layout", "x86_64"], "this machine's"),
    ("run", ["fork_exit", "--json", "nodir/x.json"], "no such directory"),
    ("run", ["fork_exit", "--configs", "bogus"], "unknown configuration"),
    ("run", ["fork_exit", "--quik"], "unrecognized arguments"),
    ("calibrate", ["--out", "."], "is a directory"),
    ("calibrate", ["--quik"], "unrecognized arguments"),
    ("capture", ["2", "--out", "x.npz"], "process 2"),
    ("capture", ["notapid", "--out", "x.npz"], "not a process id"),
    ("capture", [str(os.getpid()), "--out", "nodir/x.npz"], "no such directory"),
    ("capture", ["1"], "--out"),
    ("replay", ["nofile.npz"], "no such file"),
    ("replay", ["nofile.npz", "--plot", "x.txt"], ".png"),
    ("replay", ["nofile.npz", "--json", "nodir/x.json"], "no such directory"),
    ("replay", ["nofile.npz", "--layout", "sparc"], "invalid choice"),
    ("show", ["nofile.toml"], "nofile.toml: no such file"),
    ("show", ["nosuch"], "no scenario 'nosuch'"),
    ("show", ["seed", "--html", "nodir/x.html"], "no such directory"),
    ("show", ["seed", "--svg", "x.svg", "--step", "99"], "--step must be 1..8"),
    ("show", [], "name a scenario"),
    ("sweep", ["nospec.toml", "--out", "r.csv"], "nospec.toml"),
    ("sweep", ["spec.toml", "--out", "r.txt"], ".parquet or .csv"),
    ("sweep", ["spec.toml", "--out", "nodir/r.csv"], "no such directory"),
    ("sweep", ["big.toml", "--out", "r.csv"], "user space"),
    ("sweep", ["spec.toml", "--out", "r.csv", "--plot", "p.png", "--y", "nosuch"],
     "--y 'nosuch'"),
    ("sweep", ["spec.toml", "--out", "r.csv", "--executor", "dask", "--scheduler",
               "notanaddress"], "not a Dask scheduler address"),
    ("sweep", ["spec.toml", "--out", "r.csv", "--executor", "dask", "--scheduler",
               "tcp://127.0.0.1:1"], "no scheduler answers"),
    ("sweep", ["spec.toml", "--out", "r.csv", "--workers", "0"], "--workers"),
]


@pytest.mark.parametrize("sub,args,phrase", CASES,
                         ids=[" ".join([c[0]] + c[1]) for c in CASES])
def test_a_mistake_is_one_line_naming_the_subcommand_and_exit_2(tmp_path, sub, args,
                                                                  phrase):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "spec.toml").write_text(SPEC)
    (cwd / "big.toml").write_text(BIG_SPEC)
    before = set(os.listdir(cwd))
    # An empty cache: a command that made the host profile (a quick calibration) before
    # refusing its arguments would say so on stderr.
    env = dict(LAZYVM_ENV, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "lazyvm", sub, *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    err = r.stderr
    assert "Traceback" not in err, err
    assert r.returncode == 2, (r.returncode, err, r.stdout)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"lazyvm {sub}: "), err
    assert phrase in err, err
    assert r.stdout == ""                            # no work started, nothing printed
    assert set(os.listdir(cwd)) == before            # and nothing written
    assert not (tmp_path / "cache").exists()
