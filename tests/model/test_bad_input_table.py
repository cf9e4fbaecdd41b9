"""One table of bad input, every kind lazyvm reads: cost profiles, snapshot files,
scenarios, sweep specs and results, and Machine/Process calls.  Each must raise its
loader's exception (a LazyVMError, ValueError or TypeError) with one line of message;
an API call must also leave the machine unchanged with Machine.check() passing."""
import hashlib
import io
import json

import numpy as np
import pytest

from lazyvm import LazyVMError, Machine, OutOfMemory, SegmentationFault
from lazyvm.costs import ProfileError, load_profile
from lazyvm.view import ScenarioError, build, scenario
from lazyvm.workloads import snapshot as snp
from lazyvm.workloads import sweep as sw

PAGE = 4096


# -- files ---------------------------------------------------------------------------

def _profile(change):
    d = load_profile("linux-2.5.41").to_dict()
    out = change(d)
    return out if isinstance(out, bytes) else json.dumps(d).encode()


def _snapshot(**changes):
    base = 0x7F0000000000
    arrays = {
        "format": np.array(snp.FORMAT), "version": np.array(1, np.int64),
        "meta": np.array("{}"),
        "vma_start": np.array([base], np.uint64), "vma_end": np.array([base + PAGE], np.uint64),
        "vma_offset": np.zeros(1, np.uint64), "vma_inode": np.zeros(1, np.uint64),
        "vma_perms": np.array(["rw-p"]), "vma_name": np.array([""]),
        "page_addr": np.array([base], np.uint64), "page_pfn": np.array([1], np.uint64),
        "page_flags": np.array([1], np.uint8), "cow_addr": np.zeros(0, np.uint64),
        "cow_side": np.zeros(0, np.uint8), "child_new_addr": np.zeros(0, np.uint64)}
    arrays.update(changes)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


SCEN = "[[step]]\ndo = 'spawn'\nas = 'p'\n[[step]]\ndo = 'mmap'\nproc = 'p'\nlength = 8192\nas = 'a'\n"

# (kind, file name, contents, the loader, the exception it must raise)
FILES = [
    ("profile: negative cost", "p.json",
     lambda: _profile(lambda d: d["events"]["ptes_copied"].__setitem__("ns", -1e6)),
     load_profile, ProfileError),
    ("profile: 10**400 cost", "p.json",
     lambda: _profile(lambda d: json.dumps(d).replace('"ns": 0.0', '"ns": 1' + "0" * 400, 1)
                      .encode()), load_profile, ProfileError),
    ("profile: 1e200 uncertainty", "p.json",
     lambda: _profile(lambda d: d["events"]["exits"].__setitem__("uncertainty_ns", 1e200)),
     load_profile, ProfileError),
    ("profile: version true", "p.json",
     lambda: _profile(lambda d: d.__setitem__("version", True)), load_profile, ProfileError),
    ("profile: 100k deep", "p.json", lambda: b"[" * 100_000 + b"]" * 100_000,
     load_profile, ProfileError),
    ("profile: not UTF-8", "p.json", lambda: b'{"name": "\xff"}', load_profile, ProfileError),
    ("snapshot: version 1.7", "s.npz", lambda: _snapshot(version=np.array(1.7)),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: version '1'", "s.npz", lambda: _snapshot(version=np.array("1")),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: pickled meta", "s.npz",
     lambda: _snapshot(meta=np.array([{"a": 1}], dtype=object)),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: meta a list", "s.npz", lambda: _snapshot(meta=np.array("[1]")),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: 0-d page_addr", "s.npz",
     lambda: _snapshot(page_addr=np.array(0x7F0000000000, np.uint64)),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: short perms", "s.npz", lambda: _snapshot(vma_perms=np.array(["r"])),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: unaligned start", "s.npz",
     lambda: _snapshot(vma_start=np.array([0x7F0000000001], np.uint64)),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: string cow_addr", "s.npz", lambda: _snapshot(cow_addr=np.array(["x"])),
     snp.Snapshot.load, snp.SnapshotError),
    ("snapshot: truncated", "s.npz", lambda: _snapshot()[:300],
     snp.Snapshot.load, snp.SnapshotError),
    ("scenario: as = [1]", "s.toml", lambda: b"[[step]]\ndo = 'spawn'\nas = [1]\n",
     lambda f: build(scenario.load(f)), ScenarioError),
    ("scenario: pages = 'two'", "s.toml",
     lambda: (SCEN + "[[step]]\ndo = 'write'\nproc = 'p'\nat = 'a'\npages = 'two'\n").encode(),
     lambda f: build(scenario.load(f)), ScenarioError),
    ("scenario: title = 5", "s.toml", lambda: ("title = 5\n" + SCEN).encode(),
     lambda f: build(scenario.load(f)), ScenarioError),
    ("scenario: memory 16384G", "s.toml",
     lambda: ("[machine]\nmemory = '16384G'\n" + SCEN).encode(),
     lambda f: build(scenario.load(f)), ScenarioError),
    ("scenario: not UTF-8", "s.toml", lambda: b"title = '\xff'\n",
     lambda f: build(scenario.load(f)), ScenarioError),
    ("scenario: SystemExit", "s.py", lambda: b"raise SystemExit(0)\n",
     lambda f: build(scenario.load(f)), ScenarioError),
    ("sweep spec: layout foo", "spec.toml", lambda: b"[[points]]\nlayout = 'foo'\n",
     sw.load_spec, sw.SpecError),
    ("sweep spec: memory 1", "spec.toml", lambda: b"[[points]]\nmemory = 1\n",
     sw.load_spec, sw.SpecError),
    ("sweep results: empty csv", "r.csv", lambda: b"",
     lambda f: sw.sweep(sw.parse_spec({"points": [{"pages": 16}]}), f, progress=False),
     sw.SpecError),
    ("sweep results: not parquet", "r.parquet", lambda: b"PAR1" + b"\0" * 64 + b"PAR1",
     lambda f: sw.sweep(sw.parse_spec({"points": [{"pages": 16}]}), f, progress=False),
     sw.SpecError),
    ("machine costs: negative cost", "p.json",
     lambda: _profile(lambda d: d["events"]["faults"].__setitem__("ns", -5.0)),
     lambda f: Machine(memory=8 << 20, costs=f), ProfileError),
]


@pytest.mark.parametrize("kind, name, make, loader, exc", FILES, ids=[r[0] for r in FILES])
def test_bad_file(tmp_path, kind, name, make, loader, exc):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(exc) as info:
        loader(str(path))
    assert isinstance(info.value, (LazyVMError, ValueError, TypeError))
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    assert "allow_pickle" not in msg


# -- calls -----------------------------------------------------------------------------

def _machine():
    m = Machine(memory=16 << 20, layout="x86_64", swap=1 << 20)
    p = m.spawn()
    a = p.mmap(4 * PAGE)
    p.write(a, b"data")
    s = p.mmap(PAGE, shared=True)
    p.write(s, b"shm")
    p.fork()
    return m, p, a


def _state(m):
    s = m.stats()
    s.pop("faults", None)
    return (s, [(q.pid, q.alive, q.vmas) for q in m.processes],
            hashlib.sha1(m.physical.tobytes()).hexdigest(), m._shm_live)


CALLS = [
    ("read at 2**64", lambda m, p, a: p.read(2 ** 64, 4), ValueError),
    ("write at -1", lambda m, p, a: p.write(-1, b"x"), ValueError),
    ("touch 2**70 bytes", lambda m, p, a: p.touch(a, 2 ** 70), ValueError),
    ("touch_pages at -4096", lambda m, p, a: p.touch_pages([-PAGE]), ValueError),
    ("touch_pages floats", lambda m, p, a: p.touch_pages([1.5]), TypeError),
    ("mmap 2**46 shared over a mapping",
     lambda m, p, a: p.mmap(1 << 46, shared=True, addr=a), OutOfMemory),
    ("mmap at 2**64", lambda m, p, a: p.mmap(PAGE, addr=2 ** 64), ValueError),
    ("munmap length -4096", lambda m, p, a: p.munmap(a, -PAGE), ValueError),
    ("mprotect 'rwz'", lambda m, p, a: p.mprotect(a, PAGE, "rwz"), ValueError),
    ("mprotect a hole", lambda m, p, a: p.mprotect(a, 64 * PAGE, "r"), ValueError),
    ("read a hole", lambda m, p, a: p.read(a + 64 * PAGE, 1), SegmentationFault),
    ("pte of 2**64", lambda m, p, a: p.pte(2 ** 64), ValueError),
    ("frame_kind -1", lambda m, p, a: m.frame_kind(-1), ValueError),
    ("table 2**40", lambda m, p, a: m.table(2 ** 40), ValueError),
    ("reclaim -1", lambda m, p, a: m.reclaim(-1), ValueError),
    ("replay uint64 pid 2**64-1",
     lambda m, p, a: m.replay(np.array([(2 ** 64 - 1, 0, a, 0)], np.uint64)), ValueError),
    ("replay address outside user space",
     lambda m, p, a: m.replay(np.array([(p.pid, 0, -PAGE, 0)])), ValueError),
    ("replay fork arg 7", lambda m, p, a: m.replay(np.array([(p.pid, 2, 0, 7)])), ValueError),
    ("replay floats", lambda m, p, a: m.replay(np.zeros((1, 4))), ValueError),
    ("fork mode 'spoon'", lambda m, p, a: p.fork(mode="spoon"), ValueError),
    ("Machine memory 1", lambda m, p, a: Machine(memory=1), ValueError),
    ("Machine layout 5", lambda m, p, a: Machine(layout=5), TypeError),
    ("Machine share_level 9", lambda m, p, a: Machine(share_level=9), ValueError),
    ("Machine memory 2**64", lambda m, p, a: Machine(memory=2 ** 64), ValueError),
]


@pytest.mark.parametrize("kind, call, exc", CALLS, ids=[r[0] for r in CALLS])
def test_bad_call(kind, call, exc):
    m, p, a = _machine()
    before = _state(m)
    with pytest.raises(exc) as info:
        call(m, p, a)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    m.check()
    assert _state(m) == before
