"""Without --costs, compare, run and replay predict with this machine's host profile; on
the first run, when there is none, a quick calibration makes it and says so.  Every test
here points the cache at tmp_path: none writes the user's cache dir."""

import json
import os
import sys

import pytest

from lazyvm import commands as cli
from lazyvm.costs import host_profile_path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the calibration measures a Linux kernel")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert host_profile_path().startswith(str(tmp_path))
    assert not os.path.exists(host_profile_path())
    return tmp_path


def test_the_first_run_calibrates_caches_and_says_so_then_reuses_it(empty_cache, capsys):
    js = empty_cache / "r.json"
    assert cli.main(["run", "fork_exit", "--quick", "-p", "iterations=2", "-p",
                     "pages=64", "--json", str(js)]) == 0
    out, err = capsys.readouterr()
    assert "lazyvm run: no host profile yet" in err
    assert f"saved the host profile to {host_profile_path()}" in err
    assert os.path.exists(host_profile_path())
    rec = json.loads(js.read_text())
    assert rec["predicted"]["profile"] == "host"
    assert "quick calibration" in rec["predicted"]["reason"]
    made = os.path.getmtime(host_profile_path())
    # The second run finds it: no calibration, no word on stderr.
    assert cli.main(["compare", "--quick", "--sizes", "1024", "--repeats", "3",
                     "--json", str(js)]) == 0
    out, err = capsys.readouterr()
    assert "no host profile" not in err and "saved" not in err
    assert os.path.getmtime(host_profile_path()) == made
    rec = json.loads(js.read_text())
    assert rec["predicted"]["profile"] == "host"
    assert rec["predicted"]["reason"].startswith("default: the host profile")


@pytest.mark.parametrize("costs", ["linux-2.5.41", "none"])
def test_an_explicit_profile_never_calibrates(empty_cache, capsys, costs):
    assert cli.main(["run", "fork_exit", "--quick", "-p", "iterations=2", "-p",
                     "pages=64", "--costs", costs]) == 0
    out, err = capsys.readouterr()
    assert "no host profile" not in err
    assert not os.path.exists(host_profile_path())


def test_published_keeps_the_2002_kernels_profile_without_calibrating(empty_cache, capsys):
    assert cli.main(["run", "published", "--quick", "-p", "big_iterations=1", "-p",
                     "small_iterations=1", "--configs", "copy+rmap,share+rmap"]) == 0
    out, err = capsys.readouterr()
    assert "no host profile" not in err
    assert "linux-2.5.41" in out


@pytest.fixture(scope="module")
def snapshot_file(tmp_path_factory):
    import subprocess
    d = tmp_path_factory.mktemp("snap")
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    f = d / "s.npz"
    try:
        assert cli.main(["capture", str(proc.pid), "--out", str(f)]) == 0
    finally:
        proc.kill()
        proc.wait()
    return f


def test_replay_predicts_with_the_host_profile_by_default_and_writes_the_envelope(
        snapshot_file, tmp_path, capsys):
    js = tmp_path / "r.json"
    assert cli.main(["replay", str(snapshot_file), "--layout", "i386", "--configs",
                     "copy,share", "--repeats", "3", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    rec = json.loads(js.read_text())
    assert rec["format"] == "lazyvm-replay" and "lazyvm_version" in rec
    assert rec["costs"] == "host" and rec["costs_reason"].startswith("default:")
    assert "cores" in rec["host"] and "present_pages" in rec["captured"]
    for c in rec["configs"].values():
        assert c["kernel_ns"] > 0
        assert c["fork_ns_q1"] <= c["fork_ns_median"] <= c["fork_ns_q3"]
        assert len(c["fork_ns_all"]) == 3
    assert "q1-q3" in out
    assert cli.main(["replay", str(snapshot_file), "--layout", "i386", "--configs", "copy",
                     "--repeats", "1", "--costs", "none", "--json", str(js)]) == 0
    rec = json.loads(js.read_text())
    assert rec["costs"] is None and rec["configs"]["copy"]["kernel_ns"] is None
