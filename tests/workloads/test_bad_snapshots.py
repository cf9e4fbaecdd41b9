"""Damaged and hostile snapshot files: each one SnapshotError (a ValueError) with one
sentence, before anything large is allocated."""
import io
import json
import resource
import zipfile

import numpy as np
import pytest

from lazyvm import Machine
from lazyvm.workloads import snapshot as snp
from lazyvm.workloads.snapshot import Snapshot, SnapshotError

PAGE = 4096
BASE = 0x7F0000000000


def good_arrays():
    """The arrays of a small valid snapshot, as Snapshot.save writes them."""
    starts = np.array([BASE, BASE + 4 * PAGE], np.uint64)
    ends = np.array([BASE + 2 * PAGE, BASE + 8 * PAGE], np.uint64)
    snap = Snapshot(
        (starts, ends, np.zeros(2, np.uint64), np.zeros(2, np.uint64),
         np.array(["rw-p", "r--p"]), np.array(["", "[heap]"])),
        (np.array([BASE, BASE + 4 * PAGE], np.uint64), np.array([5, 6], np.uint64),
         np.array([snp.F_PRESENT, snp.F_PRESENT], np.uint8)),
        (np.array([BASE], np.uint64), np.array([0], np.uint8), np.zeros(0, np.uint64)),
        {"pid": 1, "name": "t", "cow": True})
    arrays = {"format": np.array(snp.FORMAT), "version": np.array(snp.VERSION, np.int64),
              "meta": np.array(json.dumps(snap.meta))}
    for name in snp._VMA_FIELDS + snp._PAGE_FIELDS + snp._COW_FIELDS:
        arrays[name] = getattr(snap, name)
    return arrays


def npz(arrays, compressed=True):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def with_(**changes):
    def make():
        a = good_arrays()
        a.update(changes)
        return npz(a)
    return make


def damaged_deflate():
    data = bytearray(npz(good_arrays()))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("page_pfn.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for k in range(start + 2, start + min(info.compress_size, 40)):
        data[k] ^= 0x5A
    return bytes(data)


def bad_header():
    """A member whose .npy header is not a Python literal (tokenize fails on it)."""
    a = good_arrays()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in a.items():
            b = io.BytesIO()
            np.save(b, arr)
            raw = b.getvalue()
            if name == "vma_start":
                hlen = int.from_bytes(raw[8:10], "little")
                header = ("{'descr': '<u8', 'fortran_order': False, 'shape': (2,), '''"
                          ).ljust(hlen - 1) + "\n"
                raw = raw[:10] + header.encode("latin1") + raw[10 + hlen:]
            zf.writestr(name + ".npy", raw)
    return buf.getvalue()


def huge_declared():
    """A small file declaring 100M-entry page arrays (zeros compress ~1000:1)."""
    a = good_arrays()
    a["vma_end"] = np.array([BASE + 2 * PAGE, BASE + (1 << 40)], np.uint64)
    n = 100_000_000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in a.items():
            if name in ("page_addr", "page_pfn", "page_flags"):
                dt = np.uint8 if name == "page_flags" else np.uint64
                with zf.open(name + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.dtype(dt).str, "fortran_order": False,
                            "shape": (n,)})
                    chunk = bytes(1 << 20)
                    left = n * np.dtype(dt).itemsize
                    while left:
                        f.write(chunk[:min(left, len(chunk))])
                        left -= min(left, len(chunk))
            else:
                b = io.BytesIO()
                np.save(b, arr)
                zf.writestr(name + ".npy", b.getvalue())
    return buf.getvalue()


def pickled():
    a = good_arrays()
    a["meta"] = np.array([{"pid": 1}], dtype=object)
    return npz(a, compressed=False)


def deep_meta():
    return with_(meta=np.array("[" * 100_000 + "]" * 100_000))()


BAD = {
    "damaged deflate stream": damaged_deflate,
    "npy header not a literal": bad_header,
    "100M-entry arrays": huge_declared,
    "pickled meta": pickled,
    "meta a number": with_(meta=np.array("5")),
    "meta a list": with_(meta=np.array("[1, 2]")),
    "meta an int array": with_(meta=np.arange(3)),
    "meta 100k deep": deep_meta,
    "version an array": with_(version=np.array([1, 1])),
    "version 1.7": with_(version=np.array(1.7)),
    "version '1'": with_(version=np.array("1")),
    "version true": with_(version=np.array(True)),
    "format an array": with_(format=np.array(["lazyvm-snapshot"] * 2)),
    "0-d vma_start": with_(vma_start=np.array(BASE, np.uint64)),
    "0-d page_flags": with_(page_flags=np.array(1, np.uint8)),
    "2-d page_addr": with_(page_addr=np.zeros((2, 1), np.uint64)),
    "short vma_perms": with_(vma_perms=np.array(["rw", "r"])),
    "perms not rwxp": with_(vma_perms=np.array(["abcd", "r--p"])),
    "unaligned vma start": with_(vma_start=np.array([BASE + 1, BASE + 4 * PAGE], np.uint64)),
    "float vma start": with_(vma_start=np.array([BASE, BASE + 4 * PAGE], np.float64)),
    "negative vma start": with_(vma_start=np.array([-PAGE, BASE + 4 * PAGE], np.int64)),
    "string cow_addr": with_(cow_addr=np.array(["0x7f0000000000"])),
    "unaligned page_addr": with_(page_addr=np.array([BASE + 5, BASE + 4 * PAGE], np.uint64)),
    "vma_name numbers": with_(vma_name=np.array([1, 2])),
    "page_flags floats": with_(page_flags=np.array([1.0, 1.0])),
    "cow_side 7": with_(cow_side=np.array([7], np.uint8)),
    "not a zip": lambda: b"PK\x03\x04" + b"\0" * 100,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_snapshot_is_one_snapshot_error(tmp_path, case):
    path = tmp_path / "s.npz"
    path.write_bytes(BAD[case]())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SnapshotError) as exc:
        Snapshot.load(path)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert msg and "\n" not in msg and len(msg) < 300, msg
    assert "allow_pickle" not in msg
    assert grew < 200 << 10, f"peak RSS grew {grew >> 10} MiB"    # ru_maxrss is KiB


def test_a_good_synthetic_snapshot_loads_and_replays(tmp_path):
    path = tmp_path / "s.npz"
    path.write_bytes(npz(good_arrays()))
    snap = Snapshot.load(path)
    assert snap.vma_perms.tolist() == ["rw-p", "r--p"] and snap.meta["pid"] == 1
    m = Machine(memory=16 << 20, layout="x86_64")
    p, _ = snap.spawn(m, "x86_64")
    assert len(p.vmas) == 2
    m.check()


# ------------------------------------------------------------------ capture --cow's words

FORKED_EARLY = """
import os, sys, time
parent = os.getpid()
child = os.fork()
if child == 0:
    while os.getppid() == parent:       # lives as long as its parent
        time.sleep(0.02)
    os._exit(0)
print("forked", flush=True)
sys.stdin.readline()
"""


def test_capture_cow_after_the_fork_says_the_fork_came_first():
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", FORKED_EARLY], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "forked\n"
        with pytest.raises(SnapshotError) as exc:
            snp.capture(p.pid, cow=True, timeout=10,
                        on_ready=lambda: (p.stdin.write("\n"), p.stdin.flush()))
        msg = str(exc.value)
        assert "before it forked" not in msg and "\n" not in msg, msg
        assert "already" in msg and "before the capture" in msg, msg
    finally:
        p.kill()
        p.wait()


def test_capture_cow_timeout_names_the_earlier_child():
    import subprocess
    import sys
    p = subprocess.Popen([sys.executable, "-c", FORKED_EARLY], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "forked\n"
        with pytest.raises(SnapshotError, match="did not fork within 0.3 s.*already"):
            snp.capture(p.pid, cow=True, timeout=0.3)
    finally:
        p.kill()
        p.wait()
