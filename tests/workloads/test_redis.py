"""lazyvm run redis-bgsave, end to end at a small size: Debian's redis-server, a BGSAVE
under a SET load captured with --cow, replayed (skips where redis-server is absent)."""

import shutil
import socket

import pytest

from lazyvm.workloads import redis as redis_bgsave
from lazyvm.workloads.snapshot import SnapshotError

HAVE_REDIS = bool(shutil.which("redis-server") and shutil.which("redis-benchmark"))
needs_redis = pytest.mark.skipif(
    not HAVE_REDIS, reason="redis-server / redis-benchmark not installed "
                           "(apt-get install redis-server redis-tools)")


@pytest.fixture(scope="module")
def run():
    return redis_bgsave.run_redis_bgsave({"keys": 40_000, "value_size": 512,
                                          "repeats": 1, "costs": None})


@needs_redis
def test_bgsave_captured_and_replayed(run):
    text, rec = run
    h, r, cmp_ = rec["host"], rec["redis"], rec["comparison"]
    assert r["rdb_last_cow_size"] > 0 and r["latest_fork_usec"] > 0
    assert h["cow_pages"] > 0 and h["vm_pte_kb"] > 0
    # The captured set against Redis's own count (its child's Private_Dirty summed from
    # smaps): the target is 15%; measured here -1% to -2%.
    assert abs(cmp_["cow_plus_new_vs_rdb_last_cow_size"]) <= 0.15, cmp_
    # On x86_64 the parent's tables, every level below the pgd, are VmPTE / 4 kB.
    if rec["layout"] == "x86_64":
        assert abs(cmp_["parent_tables_vs_vm_pte"]) <= 0.03, cmp_
    # Copy fork copies exactly the pages it is told were copied.
    assert cmp_["copy_cow_copies_equal_write_set"]
    assert rec["write_set"] >= h["cow_pages"] - 8
    for name in ("copy", "copy+rmap", "share", "share+rmap"):
        assert rec["configs"][name]["cow_copies"] == rec["write_set"]
    assert "rdb_last_cow_size" in text and "latest_fork_usec" in text
    assert "VmPTE" in text


@needs_redis
def test_server_is_stopped(run):
    _, rec = run
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", rec["redis"]["port"]), timeout=1).close()


def test_missing_redis_says_how_to_install(monkeypatch):
    monkeypatch.setattr(redis_bgsave.shutil, "which", lambda name: None)
    with pytest.raises(redis_bgsave.RedisMissing, match="apt-get install redis-server"):
        redis_bgsave.run_redis_bgsave({"quick": True})


def test_unknown_parameter():
    with pytest.raises(SnapshotError, match="no parameter size"):
        redis_bgsave.run_redis_bgsave({"size": 3})
