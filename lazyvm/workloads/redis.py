"""Redis BGSAVE, end to end: a real fork of a real program, captured and replayed.

``run_redis_bgsave(params)`` starts Debian's ``redis-server`` on a free loopback port
(``--save ""``, ``--appendonly no``, ``--enable-debug-command yes``, a temporary
directory), fills it with ``DEBUG POPULATE``, starts a bounded ``redis-benchmark`` SET
load (``-n`` requests, 127.0.0.1 only), and runs ``BGSAVE`` while
:func:`lazyvm.workloads.snapshot.capture` with ``cow`` records the BGSAVE child.  It then replays
the capture in every configuration and prints the replay beside Redis's own figures
(``latest_fork_usec``, ``rdb_last_cow_size``) and the kernel's ``VmPTE``.  The server is
always stopped.  Returns ``(text, record)``.

Parameters (``lazyvm run redis-bgsave -p keys=400000 ...``): see ``DEFAULTS``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from . import snapshot

__all__ = ["run_redis_bgsave", "format_redis", "DEFAULTS", "RedisMissing"]

DEFAULTS = {
    "keys": 400_000,          # DEBUG POPULATE count
    "value_size": 1024,       # bytes per value (about 1.3 kB of RSS per key)
    "requests": 20_000_000,   # redis-benchmark -n: an upper bound; stopped after BGSAVE
    "clients": 4,             # redis-benchmark -c
    "pipeline": 16,           # redis-benchmark -P
    "layout": None,           # replay layout (x86_64 when the core has it, else i386)
    "costs": "host",          # cost profile for the predicted kernel time (None: none)
    "repeats": 3,             # forks timed per configuration
    "timeout": 300.0,         # seconds for the whole BGSAVE
    "load_s": 0.5,            # seconds of SET load before BGSAVE
    "configs": None,          # configurations (default all four)
    "quick": False,           # keys=20000, value_size=512
    "out": None,              # also save the capture to this snapshot file
    "baseline": True,         # first a BGSAVE with no load and no capture (its fork time)
}
QUICK = {"keys": 20_000, "value_size": 512, "requests": 2_000_000}


class RedisMissing(snapshot.SnapshotError):
    """redis-server (or redis-benchmark) is not installed."""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Client:
    """A minimal RESP client for the few commands used here (no redis-py needed)."""

    def __init__(self, port, timeout=60.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis closed the connection")
                self.buf += chunk
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"redis: unexpected reply {line[:40]!r}")

    def info(self, section):
        out = {}
        for line in self.call("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                try:
                    out[k] = int(v)
                except ValueError:
                    out[k] = v
        return out


def _binaries():
    server = shutil.which("redis-server")
    bench = shutil.which("redis-benchmark")
    if not server or not bench:
        missing = "redis-server" if not server else "redis-benchmark"
        raise RedisMissing(f"{missing} is not installed: apt-get install redis-server "
                           "redis-tools (Debian/Ubuntu), or put it on PATH")
    return server, bench


def _wait_ready(proc, port, logfile, deadline):
    while True:
        if proc.poll() is not None:
            raise snapshot.SnapshotError(f"redis-server exited at start (status "
                                         f"{proc.returncode}): {_tail(logfile)}")
        try:
            c = _Client(port, timeout=5)
            if c.call("PING") == "PONG":
                return c
            c.close()
        except (OSError, RuntimeError):
            pass
        if time.monotonic() > deadline:
            raise snapshot.SnapshotError("redis-server did not answer PING within 20 s")
        time.sleep(0.05)


def _tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.read().splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc, port):
    """SHUTDOWN NOSAVE, then terminate, then kill: the server never outlives the run."""
    if proc.poll() is None:
        try:
            c = _Client(port, timeout=5)
            try:
                c.call("SHUTDOWN", "NOSAVE")
            except (ConnectionError, OSError, RuntimeError):
                pass
            c.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cow_log(logfile):
    """The server's "Fork CoW for RDB" / "RDB: N MB of memory used by copy-on-write"
    lines, as written."""
    try:
        with open(logfile, errors="replace") as f:
            return [line.split("* ", 1)[-1].strip() for line in f
                    if "copy-on-write" in line or "Fork CoW" in line]
    except OSError:
        return []


def _wait_bgsave(client, deadline):
    """Until INFO persistence says no BGSAVE is running (SnapshotError past deadline)."""
    time.sleep(0.05)
    while client.info("persistence").get("rdb_bgsave_in_progress"):
        if time.monotonic() > deadline:
            raise snapshot.SnapshotError("BGSAVE did not finish within the timeout")
        time.sleep(0.05)


def run_redis_bgsave(params=None):
    """A real Redis BGSAVE (apt redis-server) under a redis-benchmark SET load, captured
    with capture --cow and replayed in every configuration beside Redis's
    latest_fork_usec and rdb_last_cow_size and the kernel's VmPTE.  params: a dict of
    DEFAULTS' keys (unknown keys raise SnapshotError).  Returns (text, record)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULTS) - {"check"})
    if unknown:
        raise snapshot.SnapshotError(f"redis-bgsave has no parameter {', '.join(unknown)} "
                                     f"(it takes {', '.join(DEFAULTS)})")
    p = dict(DEFAULTS)
    if params.get("quick"):
        p.update(QUICK)
    p.update(params)
    for k in ("keys", "value_size", "requests", "clients", "pipeline", "repeats"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] <= 0:
            raise snapshot.SnapshotError(f"{k} must be a positive integer, not {p[k]!r}")
    server, bench = _binaries()
    tmp = tempfile.mkdtemp(prefix="lazyvm-redis-")
    port = _free_port()
    logfile = os.path.join(tmp, "redis.log")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
         "--save", "", "--appendonly", "no", "--dir", tmp, "--dbfilename", "dump.rdb",
         "--enable-debug-command", "yes", "--daemonize", "no", "--logfile", logfile,
         "--io-threads", "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=tmp)
    loadgen = None
    try:
        client = _wait_ready(proc, port, logfile, time.monotonic() + 20)
        t = time.perf_counter()
        client.call("DEBUG", "POPULATE", p["keys"], "key", p["value_size"])
        populate_s = time.perf_counter() - t
        before = client.info("memory")
        base = {}
        if p["baseline"]:
            # A BGSAVE of the same data with no load and nothing polling /proc: the
            # capture and the load share the CPUs with the fork they watch, so this is
            # the fork time to compare a prediction with.
            client.call("BGSAVE")
            _wait_bgsave(client, time.monotonic() + p["timeout"])
            base = {"latest_fork_usec": client.info("stats").get("latest_fork_usec"),
                    "rdb_last_cow_size": client.info("persistence").get("rdb_last_cow_size")}
        loadgen = subprocess.Popen(
            [bench, "-h", "127.0.0.1", "-p", str(port), "-t", "set", "-n", str(p["requests"]),
             "-r", str(p["keys"]), "-d", str(p["value_size"]), "-c", str(p["clients"]),
             "-P", str(p["pipeline"]), "-q"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(p["load_s"])
        if loadgen.poll() is not None:
            raise snapshot.SnapshotError("redis-benchmark ended before BGSAVE: raise "
                                         "requests")
        result = {}
        ready = threading.Event()

        def watch():
            try:
                result["snap"] = snapshot.capture(proc.pid, cow=True, timeout=p["timeout"],
                                                  on_ready=ready.set)
            except BaseException as e:           # handed to the main thread
                result["error"] = e
                ready.set()

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        ready.wait(30)
        if "error" in result:
            raise result["error"]
        t = time.perf_counter()
        reply = client.call("BGSAVE")
        th.join(p["timeout"] + 30)
        save_s = time.perf_counter() - t
        if th.is_alive():
            raise snapshot.SnapshotError("the capture did not finish within the timeout")
        if "error" in result:
            raise result["error"]
        _wait_bgsave(client, time.monotonic() + 60)   # the parent reaps the child
        still_loading = loadgen.poll() is None
        loadgen.terminate()
        loadgen.wait()
        loadgen = None
        pers = client.info("persistence")
        stats = client.info("stats")
        after = client.info("memory")
        client.close()
    finally:
        if loadgen is not None:
            loadgen.terminate()
            loadgen.wait()
        _stop(proc, port)
        cow_lines = _cow_log(logfile)
        shutil.rmtree(tmp, ignore_errors=True)
    snap = result["snap"]
    if p["out"]:
        snap.save(p["out"])
    if pers.get("rdb_last_bgsave_status") != "ok":
        raise snapshot.SnapshotError(f"BGSAVE failed: {pers.get('rdb_last_bgsave_status')}")
    cost_notes = []
    rec = snapshot.replay(snap, layout=p["layout"], costs=_costs(p["costs"], cost_notes),
                          configs=p["configs"], repeats=p["repeats"])
    rec["notes"].extend(cost_notes)
    redis = {"version": _version(server), "port": port, "bgsave_reply": reply,
             "latest_fork_usec": stats.get("latest_fork_usec"),
             "rdb_last_cow_size": pers.get("rdb_last_cow_size"),
             "rdb_last_bgsave_time_sec": pers.get("rdb_last_bgsave_time_sec"),
             "used_memory_rss": before.get("used_memory_rss"),
             "used_memory_rss_after": after.get("used_memory_rss"),
             "used_memory": before.get("used_memory"),
             "uncaptured": base,
             "load_running_at_end": still_loading, "populate_s": round(populate_s, 3),
             "bgsave_s": round(save_s, 3), "log": cow_lines}
    rec["redis"] = redis
    rec["params"] = {k: v for k, v in p.items() if k != "check"}
    rec["capture"] = {k: snap.meta.get(k) for k in (
        "capture_s", "polls", "child_seen_s", "fork_to_first_read_s", "cow_by_parent",
        "cow_by_child", "cow_side_unknown", "child_pid")}
    rec["comparison"] = _compare(rec)
    return format_redis(rec), rec


def _costs(name, notes):
    """The cost profile, or None with a note where it cannot be had (no cost model in
    this build, or no host profile yet: `lazyvm calibrate` makes it)."""
    if name is None:
        return None
    try:
        return snapshot.load_costs(name)
    except snapshot.SnapshotError as e:
        notes.append(f"no predicted kernel time: {e}")
        return None


def _version(server):
    try:
        out = subprocess.run([server, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
        return out.split()[2].split("=")[1] if "v=" in out else out.strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _compare(rec):
    """The replay against the kernel's and Redis's own figures."""
    h, r = rec["host"], rec["redis"]
    out = {}
    cow_bytes = (h["cow_pages"] or 0) * snapshot.PAGE
    new_bytes = (h["child_new_pages"] or 0) * snapshot.PAGE
    out["cow_bytes"] = cow_bytes
    out["cow_plus_child_new_bytes"] = cow_bytes + new_bytes
    if r.get("rdb_last_cow_size"):
        out["cow_vs_rdb_last_cow_size"] = round(cow_bytes / r["rdb_last_cow_size"] - 1, 4)
        out["cow_plus_new_vs_rdb_last_cow_size"] = round(
            (cow_bytes + new_bytes) / r["rdb_last_cow_size"] - 1, 4)
    if h.get("vm_pte_kb") and "copy" in rec["configs"]:
        t = rec["configs"]["copy"]["page_tables"]
        out["parent_tables_vs_vm_pte"] = round(t / (h["vm_pte_kb"] / 4) - 1, 4)
    copy = rec["configs"].get("copy")
    if copy is not None:
        out["copy_cow_copies_equal_write_set"] = copy["cow_copies"] == rec["write_set"]
    ns = [(n, c["kernel_ns"]) for n, c in rec["configs"].items() if c["kernel_ns"]]
    if r.get("latest_fork_usec") and "copy" in dict(ns):
        out["predicted_copy_fork_vs_latest_fork_usec"] = round(
            dict(ns)["copy"] / 1000 / r["latest_fork_usec"] - 1, 4)
        un = (r.get("uncaptured") or {}).get("latest_fork_usec")
        if un:
            out["predicted_copy_fork_vs_uncaptured_latest_fork_usec"] = round(
                dict(ns)["copy"] / 1000 / un - 1, 4)
    return out


def _mb(b):
    return "-" if b is None else f"{b / (1 << 20):.1f} MB"


def format_redis(rec):
    """The replay table and, below it, Redis's and the kernel's figures beside it."""
    r, h, cmp_ = rec["redis"], rec["host"], rec["comparison"]
    lines = [f"redis-bgsave: redis {r['version']}, {rec['params']['keys']} keys of "
             f"{rec['params']['value_size']} B, RSS {_mb(r['used_memory_rss'])}, BGSAVE "
             f"under a redis-benchmark SET load ({rec['params']['clients']} clients, "
             f"pipeline {rec['params']['pipeline']}), {r['bgsave_s']} s", ""]
    lines.append(snapshot.format_replay(rec).rstrip("\n"))
    lines.append("")
    lines.append("against Redis and the kernel:")
    rows = [("figure", "Redis / kernel", "capture / replay")]
    vm = h.get("vm_pte_kb")
    copy = rec["configs"].get("copy", {})
    rows.append(("page tables of the parent", f"VmPTE {vm} kB = {vm // 4 if vm else '-'}",
                 f"{copy.get('page_tables', '-')} (copy, {rec['layout']})"))
    rows.append(("page tables of the child", f"VmPTE {h.get('child_vm_pte_kb')} kB",
                 f"{copy.get('child_page_tables', '-')} (copy)"))
    rows.append(("copied on write", f"rdb_last_cow_size {_mb(r['rdb_last_cow_size'])}",
                 f"{h['cow_pages']} pages = {_mb(cmp_['cow_bytes'])} "
                 f"(+ child's new {h['child_new_pages']} = "
                 f"{_mb(cmp_['cow_plus_child_new_bytes'])})"))
    rows.append(("copy-fork cow_copies", f"{h['cow_pages']} captured",
                 f"{copy.get('cow_copies', '-')} of {rec['write_set']} written"))
    kns = copy.get("kernel_ns")
    un = r.get("uncaptured") or {}
    if un.get("latest_fork_usec"):
        rows.append(("fork time, idle", f"latest_fork_usec "
                     f"{un['latest_fork_usec']} us", "(a BGSAVE before: no load, no capture)"))
    rows.append(("fork time", f"latest_fork_usec {r['latest_fork_usec']} us",
                 f"predicted {kns / 1000:.0f} us (copy, {rec['costs']})" if kns else
                 f"simulated {copy.get('fork_ns', 0) / 1000:.0f} us (copy; no cost model)"))
    w = [max(len(x[i]) for x in rows) for i in range(3)]
    for row in rows:
        lines.append("  " + "  ".join(v.ljust(w[i]) for i, v in enumerate(row)))
    for k, v in cmp_.items():
        if isinstance(v, float):
            lines.append(f"  {k}: {v * 100:+.1f}%")
    for note in rec["notes"]:
        if note.startswith("no predicted kernel time"):
            lines.append(f"  note: {note}")
    for line in r.get("log", []):
        lines.append(f"  redis log: {line}")
    if not r.get("load_running_at_end"):
        lines.append("  note: the SET load ended before BGSAVE did (raise requests)")
    return "\n".join(lines) + "\n"


run_redis_bgsave.defaults = DEFAULTS
