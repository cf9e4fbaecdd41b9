"""lazyvm.workloads.snapshot: capture of real processes this test starts, the file format, the
relocation into 3 GiB, replay, and bad input (docs/SNAPSHOT.md, DESIGN.md section 9)."""

import inspect
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from subproc import LAZYVM_ENV, NEUTRAL_CWD

from lazyvm import Machine
from lazyvm.workloads import snapshot as snp
from lazyvm.workloads.snapshot import Snapshot, SnapshotError

PAGE = 4096
ROOT = os.geteuid() == 0
HAS_LAYOUT = "layout" in inspect.signature(Machine).parameters
needs_root = pytest.mark.skipif(not ROOT, reason="frame numbers in pagemap need root")
needs_layout = pytest.mark.skipif(
    not HAS_LAYOUT, reason="Machine has no layout= keyword yet (x86_64 replay needs the "
                           "0.2.0 core)")

# A process that maps NPAGES private anonymous pages, writes every one, reports the
# mapping's address, forks on "go", and then writes set A in the parent and set B in the
# child (the child lives 0.4 s more, so a poll sees its final state).
TARGET = r"""
import ctypes, mmap, os, sys, time
n = int(sys.argv[1])
A = [int(x) for x in sys.argv[2].split(",") if x]
B = [int(x) for x in sys.argv[3].split(",") if x]
m = mmap.mmap(-1, n * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(n):
    m[i * 4096] = 1
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)
sys.stdin.readline()
pid = os.fork()
if pid == 0:
    for i in B:
        m[i * 4096 + 1] = 2
    time.sleep(0.4)
    os._exit(0)
for i in A:
    m[i * 4096 + 1] = 3
os.waitpid(pid, 0)
print("done", flush=True)
sys.stdin.readline()
"""

NPAGES = 1536                               # 6 MiB: spans several 2 MiB leaf tables
SET_A = [1, 5, 9, 200, 700, 1535]           # parent writes (5 also by the child)
SET_B = [2, 5, 300, 301, 302, 1024]         # child writes


class Target:
    def __init__(self, tmp_path, npages=NPAGES, a=SET_A, b=SET_B):
        script = tmp_path / "target.py"
        script.write_text(TARGET)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(npages), ",".join(map(str, a)),
             ",".join(map(str, b))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        self.base = int(self.proc.stdout.readline())
        self.npages = npages

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("end\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def region(self, addrs):
        """Page indices of addrs inside the mapping, and the mask of those inside."""
        rel = (np.asarray(addrs, np.int64) - self.base) // PAGE
        inside = (rel >= 0) & (rel < self.npages)
        return rel, inside


@pytest.fixture(scope="module")
def cow_capture(tmp_path_factory):
    t = Target(tmp_path_factory.mktemp("target"))
    try:
        snap = snp.capture(t.proc.pid, cow=True, timeout=30, on_ready=t.go)
        assert t.proc.stdout.readline().strip() == "done"
    finally:
        t.finish()
    return t, snap


# --------------------------------------------------------------------------- capture

@needs_root
def test_cow_set_is_the_known_write_set(cow_capture):
    t, snap = cow_capture
    rel, inside = t.region(snap.cow_addr)
    assert sorted(rel[inside].tolist()) == sorted(set(SET_A) | set(SET_B))
    side = dict(zip(rel[inside].tolist(), snap.cow_side[inside].tolist()))
    # A page both wrote was copied once, by whichever wrote first; the others by their
    # writer.
    for i in set(SET_A) - set(SET_B):
        assert side[i] == snp.SIDE_PARENT, i
    for i in set(SET_B) - set(SET_A):
        assert side[i] == snp.SIDE_CHILD, i
    assert snap.meta["child_pid"] != t.proc.pid and snap.meta["polls"] >= 1


def test_capture_records_maps_pages_and_status(cow_capture):
    t, snap = cow_capture
    rel, inside = t.region(snap.page_addr)
    assert inside.sum() == NPAGES                      # every page of the mapping
    assert np.all(snap.page_flags[inside] & snp.F_PRESENT)
    assert not np.any(snap.page_flags[inside] & (snp.F_FILE | snp.F_ZERO))
    v = snap.page_vma(np.array([t.base], np.uint64))[0]
    assert v >= 0 and str(snap.vma_perms[v]).startswith("rw") \
        and str(snap.vma_perms[v])[3] == "p"
    assert snap.vma_start[v] <= t.base and t.base + NPAGES * PAGE <= snap.vma_end[v]
    st = snap.meta["status"]
    assert st["VmPTE"] > 0 and st["VmRSS"] * 1024 // PAGE >= NPAGES
    assert snap.meta["name"].startswith("python")
    if ROOT:
        assert snap.meta["zero_pfn"] > 0 and snap.meta["pfn_readable"]
        assert np.all(snap.page_pfn[inside] > 0)
        # Six distinct frames in the mapping: no two pages share one.
        assert len(np.unique(snap.page_pfn[inside])) == NPAGES


def test_capture_without_cow_and_zero_page(tmp_path):
    script = tmp_path / "z.py"
    script.write_text(
        "import ctypes, mmap, sys\n"
        "m = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "[m[i * 4096] for i in range(32)]\n"        # read: the ZERO_PAGE
        "for i in range(32, 40): m[i * 4096] = 1\n"  # write: own frames
        "print(ctypes.addressof(ctypes.c_char.from_buffer(m)), flush=True)\n"
        "sys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        base = int(p.stdout.readline())
        snap = snp.capture(p.pid)
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=10)
    rel = (snap.page_addr.astype(np.int64) - base) // PAGE
    inside = (rel >= 0) & (rel < 64)
    assert sorted(rel[inside].tolist()) == list(range(40))
    zero = (snap.page_flags[inside] & snp.F_ZERO) != 0
    if ROOT:
        assert sorted(rel[inside][zero].tolist()) == list(range(32))
    assert not snap.meta["cow"] and len(snap.cow_addr) == 0


def test_capture_600_mb_in_5_seconds(tmp_path):
    script = tmp_path / "big.py"
    script.write_text("import sys\nb = bytearray(b'\\x01') * (600 << 20)\n"
                      "print('ready', flush=True)\nsys.stdin.readline()\n")
    p = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        t = time.perf_counter()
        snap = snp.capture(p.pid)
        snap.save(tmp_path / "big.npz")
        elapsed = time.perf_counter() - t
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)
    assert snap.host()["present_pages"] >= (600 << 20) // PAGE
    assert elapsed <= 5.0, f"capture and save of 600 MB took {elapsed:.2f} s"


# --------------------------------------------------------------------------- file format

def test_round_trip(cow_capture, tmp_path):
    _, snap = cow_capture
    path = tmp_path / "s.npz"
    snap.save(path)
    back = Snapshot.load(path)
    for name in snp._VMA_FIELDS + snp._PAGE_FIELDS + snp._COW_FIELDS:
        a, b = getattr(snap, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert back.meta == snap.meta
    with np.load(path) as z:
        assert str(z["format"]) == "lazyvm-snapshot" and int(z["version"]) == 1


def test_truncated_and_foreign_files(cow_capture, tmp_path):
    _, snap = cow_capture
    good = tmp_path / "s.npz"
    snap.save(good)
    data = good.read_bytes()
    cases = {
        "truncated": data[:len(data) // 2],
        "empty": b"",
        "text": b"hello, this is not a snapshot\n" * 10,
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
    np.savez(tmp_path / "foreign.npz", x=np.arange(3))
    np.save(tmp_path / "array.npy", np.arange(3))
    arrays = {k: getattr(snap, k) for k in snp._VMA_FIELDS + snp._PAGE_FIELDS +
              snp._COW_FIELDS}
    np.savez(tmp_path / "future.npz", format=np.array("lazyvm-snapshot"),
             version=np.array(99), meta=np.array("{}"), **arrays)
    expect = {"truncated": "truncated", "empty": "not a lazyvm snapshot",
              "text": "not a lazyvm snapshot", "foreign.npz": "not a lazyvm snapshot",
              "array.npy": "not a lazyvm snapshot", "future.npz": "version 99",
              "missing.npz": "no such file"}
    for name, words in expect.items():
        with pytest.raises(SnapshotError, match=words):
            Snapshot.load(tmp_path / name)


# --------------------------------------------------------------------------- relocation

def _random_vmas(rng, n):
    """Sorted, non-overlapping VMAs at x86_64-like addresses: clusters far apart (as the
    binary, heap, mmap area and stack are), VMAs inside a cluster close together."""
    starts, ends = [], []
    addr = 0
    for base in sorted(rng.choice(1 << 14, size=4, replace=False)):
        far = (0x550000000000 if base < 1 << 13 else 0x7f0000000000) + (int(base) << 24)
        addr = max(addr + (1 << 30), far)
        for _ in range(n):
            addr += int(rng.integers(0, 3)) * int(rng.integers(1, 1 << 10)) * PAGE
            length = int(rng.integers(1, 3000)) * PAGE
            starts.append(addr)
            ends.append(addr + length)
            addr += length
    return np.array(starts, np.uint64), np.array(ends, np.uint64)


@pytest.mark.parametrize("layout", ["i386", "pae"])
@pytest.mark.parametrize("seed", range(6))
def test_relocation_keeps_table_spans(layout, seed):
    rng = np.random.default_rng(seed)
    s, e = _random_vmas(rng, 12)
    assert np.all(s[1:] >= e[:-1]) and int(e[-1]) <= snp.USER_TOP_X86_64
    new = snp.relocate(s, e, layout)
    span = snp.LEAF_SPAN[layout]
    assert np.all(new != snp._NONE)
    new_end = new + (e - s)
    assert np.all(new % span == s % span)             # offset within the leaf span
    assert np.all(new[1:] >= new_end[:-1])            # in order, no overlap
    assert int(new_end[-1]) <= 0xC0000000 and int(new[0]) >= span
    # The same leaf tables, counted over every page of every VMA.
    def spans(starts, ends):
        out = set()
        for a, b in zip(starts.tolist(), ends.tolist()):
            out.update(range(a // span, (b - 1) // span + 1))
        return out
    assert len(spans(new, new_end)) == len(spans(s, e))
    # Two VMAs share a leaf table after relocation exactly when they did before.
    for i in range(len(s) - 1):
        before = (int(e[i]) - 1) // span == int(s[i + 1]) // span
        after = (int(new_end[i]) - 1) // span == int(new[i + 1]) // span
        assert before == after, i


def test_relocation_x86_64_keeps_addresses_and_drops_vsyscall():
    s = np.array([0x555555554000, 0x7ffd0000000, 0xFFFFFFFFFF600000], np.uint64)
    e = np.array([0x555555556000, 0x7ffd0021000, 0xFFFFFFFFFF601000], np.uint64)
    new = snp.relocate(s, e, "x86_64")
    assert new[:2].tolist() == s[:2].tolist() and new[2] == snp._NONE


def test_relocation_that_does_not_fit():
    # 800 VMAs one page each, every one in its own 4 MiB span on the host: 800 leaf
    # tables, more than i386's 768.
    s = np.arange(800, dtype=np.uint64) * np.uint64(1 << 23) + np.uint64(0x100000000)
    with pytest.raises(SnapshotError, match="does not fit"):
        snp.relocate(s, s + np.uint64(PAGE), "i386")
    assert np.all(snp.relocate(s, s + np.uint64(PAGE), "pae") != snp._NONE)  # 2 MiB


def _synthetic(starts, ends, perms, pages):
    n = len(starts)
    vmas = (np.array(starts, np.uint64), np.array(ends, np.uint64), np.zeros(n, np.uint64),
            np.zeros(n, np.uint64), np.array(perms, "<U4"), np.array([""] * n))
    pages = np.array(sorted(pages), np.uint64)
    flags = np.full(len(pages), snp.F_PRESENT, np.uint8)
    return Snapshot(vmas, (pages, np.zeros(len(pages), np.uint64), flags), None,
                    {"pid": 0, "name": "synthetic", "status": {"VmPTE": 0, "VmRSS": 0},
                     "notes": []})


def test_spawn_relocated_reaches_the_same_leaf_tables():
    # Three VMAs: two in one 4 MiB span (they share a table), one 6 MiB further on that
    # straddles two spans; a read-only VMA with written pages is mapped rw, written, then
    # made read-only (as RELRO is).
    base = 0x7f1234400000 + 0x1000
    starts = [base, base + 0x3000, base + 0x600000]
    ends = [base + 0x2000, base + 0x5000, base + 0x600000 + 0x500000]
    perms = ["rw-p", "r--p", "rw-p"]
    pages = [starts[0], starts[1], starts[2], starts[2] + 0x4fe000]
    snap = _synthetic(starts, ends, perms, pages)
    m = Machine(memory=16 << 20, fork_mode="copy")
    p, amap = snap.spawn(m, "i386")
    new = amap(np.array(pages, np.uint64))
    assert np.all(new % (1 << 22) == np.array(pages) % (1 << 22))
    tables = len({int(a) >> 22 for a in new})
    assert snp._tables_of(p)["page_tables"] == tables == 3
    assert [v[2] for v in p.vmas] == ["rw", "r", "rw"]
    assert m.stats()["demand_zero"] == 4
    m.check()


# --------------------------------------------------------------------------- replay

@needs_root
def test_replay_writes_the_captured_set(cow_capture):
    _, snap = cow_capture
    rec = snp.replay(snap, layout="i386", repeats=2)
    n = rec["write_set"]
    assert n == len(snap.cow_addr) > len(set(SET_A) | set(SET_B)) - 1
    assert set(rec["configs"]) == set(snp.CONFIGS)
    for name, c in rec["configs"].items():
        assert c["cow_copies"] == n, name          # every page copied once, in each mode
        assert c["page_tables"] > 0 and c["child_page_tables"] > 0
    copy, share = rec["configs"]["copy"], rec["configs"]["share"]
    assert copy["unshares"] == 0 and share["unshares"] > 0
    assert copy["ptes_copied"] == copy["ptes_copied_fork"] >= rec["host"]["present_pages"] - 1
    assert share["ptes_copied_fork"] == 0
    assert rec["configs"]["copy+rmap"]["pte_chain_nodes_peak"] > 0
    assert copy["pte_chain_nodes_peak"] == 0
    text = snp.format_replay(rec)
    assert "share+rmap" in text and "VmPTE" in text


@needs_root
@needs_layout
def test_replay_x86_64_matches_the_kernel(cow_capture):
    _, snap = cow_capture
    rec = snp.replay(snap, layout="x86_64", repeats=1)
    h = rec["host"]
    tables = rec["configs"]["copy"]["page_tables"]
    assert abs(tables - h["vm_pte_kb"] / 4) <= 0.03 * h["vm_pte_kb"] / 4 + 1
    assert rec["configs"]["copy"]["cow_copies"] == len(snap.cow_addr)


@needs_root
def test_trace_engine_against_touch_pages(cow_capture):
    if not hasattr(Machine, "replay"):
        pytest.skip("Machine has no replay() (the trace engine) yet")
    _, snap = cow_capture
    a = snp.replay(snap, layout="i386", repeats=1, use_trace=True)
    b = snp.replay(snap, layout="i386", repeats=1, use_trace=False)
    for name in snp.CONFIGS:
        assert a["configs"][name]["trace_engine"] and not b["configs"][name]["trace_engine"]
        for k in ("cow_copies", "unshares", "ptes_copied", "page_tables",
                  "child_page_tables", "frames_peak", "pte_chain_nodes_peak"):
            assert a["configs"][name][k] == b["configs"][name][k], (name, k)


def test_json_fields(cow_capture, tmp_path):
    import json
    _, snap = cow_capture
    rec = snp.replay(snap, layout="i386", repeats=1, configs=["copy", "share"])
    snp.write_json(rec, tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    for k in ("vm_pte_kb", "rss_pages", "cow_pages"):
        assert isinstance(d["host"][k], int), k
    for name in ("copy", "share"):
        for k in ("page_tables", "cow_copies", "unshares", "ptes_copied", "fork_ns"):
            assert isinstance(d["configs"][name][k], int), (name, k)
        assert "kernel_ns" in d["configs"][name]


# --------------------------------------------------------------------------- bad input

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "lazyvm", *map(str, args)],
                          capture_output=True, text=True, timeout=60,
                          cwd=NEUTRAL_CWD, env=LAZYVM_ENV)


def _gone_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_missing_pid():
    pid = _gone_pid()
    with pytest.raises(SnapshotError, match=f"no process {pid}"):
        snp.capture(pid)
    r = _cli("capture", pid, "--out", "/tmp/never-written.npz")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and f"no process {pid}" in r.stderr


def test_exited_process(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while snp._state(p.pid) != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)                   # a zombie: exited, not yet reaped
    try:
        with pytest.raises(SnapshotError, match="has exited"):
            snp.capture(p.pid)
        r = _cli("capture", p.pid, "--out", tmp_path / "x.npz")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.count("\n") == 1 and "has exited" in r.stderr
    finally:
        p.wait()


def test_no_fork_within_timeout(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(SnapshotError, match="did not fork within 0.3 s"):
            snp.capture(p.pid, cow=True, timeout=0.3)
    finally:
        p.kill()
        p.wait()


def test_cli_bad_files(cow_capture, tmp_path):
    (tmp_path / "t.npz").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    for f, words in ((tmp_path / "t.npz", "not a lazyvm snapshot"),
                     (tmp_path / "none.npz", "no such file")):
        r = _cli("replay", f)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    r = _cli("capture", "notapid", "--out", tmp_path / "x.npz")
    assert r.returncode == 2 and "not a process id" in r.stderr


def test_cli_capture_and_replay(tmp_path):
    t = Target(tmp_path, npages=256, a=[3], b=[4])
    out = tmp_path / "c.npz"
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lazyvm", "capture",
                                 str(t.proc.pid), "--out", str(out), "--cow",
                                 "--timeout", "30"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=NEUTRAL_CWD, env=LAZYVM_ENV)
        assert "waiting" in proc.stderr.readline()     # the watch has begun
        t.go()
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "copied on write" in stdout
    finally:
        t.finish()
    r = _cli("replay", out, "--layout", "i386", "--json", tmp_path / "r.json",
             "--repeats", "1", "--plot", tmp_path / "r.png")
    assert r.returncode == 0, r.stderr
    assert "copy+rmap" in r.stdout and (tmp_path / "r.json").exists()
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- without root

NONROOT_DRIVER = r"""
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from lazyvm.workloads import snapshot as snp
t = subprocess.Popen([sys.argv[3], sys.argv[2], "256", "3,7", "4,7"], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, text=True)
base = int(t.stdout.readline())
def go():
    t.stdin.write("go\n"); t.stdin.flush()
s = snp.capture(t.pid, cow=True, timeout=30, on_ready=go)
t.stdout.readline(); t.stdin.write("x\n"); t.stdin.flush(); t.wait()
rel = (s.cow_addr.astype(np.int64) - base) // 4096
inside = (rel >= 0) & (rel < 256)
print(json.dumps({"set": sorted(rel[inside].tolist()), "sides": s.cow_side[inside].tolist(),
                  "notes": s.meta["notes"], "pfn_readable": s.meta["pfn_readable"],
                  "zero": int((s.page_flags & snp.F_ZERO).sum()),
                  "present": s.host()["present_pages"]}))
"""


@needs_root
def test_capture_without_root_uses_the_exclusive_bit():
    import json
    import shutil
    import tempfile
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is needed to drop to an unprivileged user")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = subprocess.run(drop + [sys.executable, "-c", f"import sys; sys.path.insert(0, "
                                   f"{checkout!r}); import numpy, lazyvm.workloads.snapshot"],
                           capture_output=True, text=True, timeout=60, cwd="/")
    if probe.returncode:
        pytest.skip("user 65534 cannot run this interpreter or read this checkout: "
                    + probe.stderr.strip().splitlines()[-1])
    d = tempfile.mkdtemp(prefix="lazyvm-nonroot-")
    try:
        os.chmod(d, 0o755)
        for name, text in (("target.py", TARGET), ("driver.py", NONROOT_DRIVER)):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
            os.chmod(os.path.join(d, name), 0o644)
        # The target needs only the standard library; the system python runs where this
        # interpreter's own install (under /root, say) is closed to user 65534.
        target_py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) \
            else sys.executable
        r = subprocess.run(drop + [sys.executable, os.path.join(d, "driver.py"), checkout,
                                   os.path.join(d, "target.py"), target_py],
                           capture_output=True, text=True, timeout=120, cwd="/")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert not out["pfn_readable"] and out["zero"] == 0 and out["present"] > 256
    assert out["set"] == [3, 4, 7]                    # from the exclusive bit alone
    assert set(out["sides"]) == {snp.SIDE_UNKNOWN}
    assert any("not readable" in n for n in out["notes"])


def test_unknown_cost_profile_is_a_clear_error(cow_capture):
    _, snap = cow_capture
    with pytest.raises(SnapshotError, match="cost"):
        snp.replay(snap, layout="i386", costs="no-such-profile", configs=["copy"])
    with pytest.raises(SnapshotError, match="unknown configuration"):
        snp.replay(snap, layout="i386", configs=["eager"])
