"""Scenarios: short scripts of steps on one machine, run step by step for the view.

A scenario is a dict (from TOML, from a Python file, or built in)::

    title = "Share fork, write, privatize"
    about = "What a teacher says first."
    [machine]                 # Machine keywords; memory and swap may be "16M", "1G"
    memory = "16M"
    fork_mode = "share"
    rmap = true
    [[step]]
    do = "spawn"              # spawn | mmap | write | touch | fork | exit | munmap |
    as = "p"                  # mprotect | reclaim | exec
    [[step]]
    do = "mmap"
    proc = "p"
    length = "8M"             # bytes (k/M/G suffixes)
    prot = "rw"               # optional; shared = false; addr = 0x40000000 optional
    as = "a"                  # name of the address, for later steps
    note = "Shown under the step: why it matters."
    [[step]]
    do = "write"              # write/touch/munmap/mprotect: at = address name or
    proc = "p"                # number, page = first page (default 0), pages = count
    at = "a"                  # (default 1); touch: write = true|false
    pages = 4
    [[step]]
    do = "fork"
    proc = "p"
    as = "c"                  # mode = "copy" | "share" (default: the machine's)

A Python scenario file defines ``SCENARIO`` as such a dict.  Every step may have a
``title`` (shown in the step list; made from the step if absent) and a ``note``.
"""
from __future__ import annotations

import inspect
import json
import runpy
from pathlib import Path

PAGE = 4096
ACTIONS = ("spawn", "mmap", "write", "touch", "fork", "exit", "exec", "munmap",
           "mprotect", "reclaim")
_KEYS = {
    "spawn": {"as"},
    "mmap": {"proc", "length", "prot", "shared", "addr", "as"},
    "write": {"proc", "at", "page", "pages", "data"},
    "touch": {"proc", "at", "page", "pages", "write"},
    "fork": {"proc", "mode", "as"},
    "exit": {"proc"},
    "exec": {"proc"},
    "munmap": {"proc", "at", "page", "pages"},
    "mprotect": {"proc", "at", "page", "pages", "prot"},
    "reclaim": {"n", "method"},
}
_COMMON = {"do", "title", "note"}


class ScenarioError(ValueError):
    """A scenario that cannot be read or run; the message says where."""


def parse_size(v, what="size"):
    """An int, or a string such as "16M", "1G", "64k", "0x1000"."""
    if isinstance(v, bool):
        raise ScenarioError(f"{what} must be a number of bytes, not {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        t = v.strip().replace("_", "")
        mult = 1
        if t[-1:] in ("k", "K"):
            mult, t = 1 << 10, t[:-1]
        elif t[-1:] in ("m", "M"):
            mult, t = 1 << 20, t[:-1]
        elif t[-1:] in ("g", "G"):
            mult, t = 1 << 30, t[:-1]
        try:
            return int(t, 0) * mult
        except ValueError:
            pass
    raise ScenarioError(f"{what} must be a number of bytes such as 4096 or '8M', not {v!r}")


def load_toml_text(text, where="scenario"):
    try:
        import tomllib
    except ImportError:                              # Python < 3.11
        try:
            import tomli as tomllib
        except ImportError:
            raise ScenarioError("reading TOML needs Python 3.11 (tomllib) or "
                                "`pip install tomli`") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where}: not valid TOML: {e}") from None


def load(name_or_path):
    """A built-in scenario by name, or a .toml / .py file."""
    from .builtin import BUILTIN
    if name_or_path in BUILTIN:
        return validate(BUILTIN[name_or_path], name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(f"no scenario {name_or_path!r}: built-ins are "
                            f"{', '.join(BUILTIN)}, or give a .toml or .py file")
    if path.suffix == ".py":
        try:
            ns = runpy.run_path(str(path))
        except Exception as e:
            raise ScenarioError(f"{path}: {type(e).__name__}: {e}") from None
        if not isinstance(ns.get("SCENARIO"), dict):
            raise ScenarioError(f"{path}: a Python scenario must define SCENARIO = {{...}}")
        return validate(ns["SCENARIO"], str(path))
    return validate(load_toml_text(path.read_text(), str(path)), str(path))


def validate(sc, where="scenario"):
    """Check a scenario's shape and names before anything runs; return it."""
    if not isinstance(sc, dict):
        raise ScenarioError(f"{where}: a scenario is a table, not {type(sc).__name__}")
    unknown = set(sc) - {"title", "about", "machine", "step"}
    if unknown:
        raise ScenarioError(f"{where}: unknown key {sorted(unknown)[0]!r} (use title, "
                            "about, machine, step)")
    steps = sc.get("step")
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"{where}: no steps: add [[step]] tables")
    from lazyvm import Machine
    params = set(inspect.signature(Machine).parameters)
    mach = sc.get("machine", {})
    if not isinstance(mach, dict):
        raise ScenarioError(f"{where}: [machine] must be a table")
    for k in mach:
        if k not in params:
            raise ScenarioError(f"{where}: [machine] has {k!r}, which this lazyvm's "
                                f"Machine does not take ({', '.join(sorted(params))})")
    names = set()
    for n, st in enumerate(steps, 1):
        here = f"{where}: step {n}"
        if not isinstance(st, dict) or st.get("do") not in ACTIONS:
            raise ScenarioError(f"{here}: 'do' must be one of {', '.join(ACTIONS)}")
        bad = set(st) - _KEYS[st["do"]] - _COMMON
        if bad:
            raise ScenarioError(f"{here} ({st['do']}): unknown key {sorted(bad)[0]!r}")
        for ref in ("proc", "at"):
            v = st.get(ref)
            if isinstance(v, str) and ref == "proc" and v not in names:
                raise ScenarioError(f"{here}: no process named {v!r} yet")
            if isinstance(v, str) and ref == "at" and v not in names:
                raise ScenarioError(f"{here}: no address named {v!r} yet")
        if "proc" in _KEYS[st["do"]] and "proc" not in st:
            raise ScenarioError(f"{here} ({st['do']}): needs proc = NAME")
        if st["do"] in ("write", "touch", "munmap", "mprotect") and "at" not in st:
            raise ScenarioError(f"{here} ({st['do']}): needs at = ADDRESS or NAME")
        if st["do"] == "mmap" and "length" not in st:
            raise ScenarioError(f"{here} (mmap): needs length")
        if st["do"] == "mprotect" and "prot" not in st:
            raise ScenarioError(f"{here} (mprotect): needs prot")
        if "as" in st:
            names.add(st["as"])
    return sc


def _toml_value(key, v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return hex(v) if key in ("addr", "at") and v >= 4096 else str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    raise ScenarioError(f"cannot write {key} = {v!r} as TOML")


def to_toml(sc):
    """A scenario as TOML text (what `lazyvm show NAME --toml` prints): a start for
    one's own."""
    out = []
    for k in ("title", "about"):
        if k in sc:
            out.append(f"{k} = {_toml_value(k, sc[k])}")
    if sc.get("machine"):
        out.append("\n[machine]")
        out.extend(f"{k} = {_toml_value(k, v)}" for k, v in sc["machine"].items())
    for st in sc["step"]:
        out.append("\n[[step]]")
        out.extend(f"{k} = {_toml_value(k, v)}" for k, v in st.items())
    return "\n".join(out) + "\n"


def step_title(st):
    if st.get("title"):
        return st["title"]
    d = st["do"]
    who = st.get("proc", "")
    if d == "spawn":
        return f"spawn {st.get('as', '')}".strip()
    if d == "mmap":
        return f"{who}: mmap {st['length']}"
    if d in ("write", "touch", "munmap", "mprotect"):
        n = st.get("pages", 1)
        page = st.get("page", 0)
        what = f"page {page}" if n == 1 else f"pages {page}\u2013{page + n - 1}"
        extra = f" {st['prot']!r}" if d == "mprotect" else ""
        return f"{who}: {d} {what}{extra}"
    if d == "fork":
        return f"{who}: fork \u2192 {st.get('as', '')} ({st.get('mode', 'default')})"
    if d == "reclaim":
        return f"reclaim {st.get('n', 1)}"
    return f"{who}: {d}"


def make_machine(sc):
    from lazyvm import Machine
    kw = dict(sc.get("machine", {}))
    for k in ("memory", "swap"):
        if k in kw:
            kw[k] = parse_size(kw[k], k)
    kw.setdefault("memory", 16 << 20)
    try:
        return Machine(**kw)
    except (TypeError, ValueError) as e:
        raise ScenarioError(f"[machine]: {e}") from None


def run(sc, on_state):
    """Run scenario sc, calling on_state(machine, step_or_None) on the fresh machine and
    after every step.  A step that fails raises ScenarioError naming it."""
    m = make_machine(sc)
    names = {}
    on_state(m, None)
    for n, st in enumerate(sc["step"], 1):
        try:
            _do(m, st, names)
        except ScenarioError:
            raise
        except Exception as e:            # a lazyvm error or a bad value: name the step
            raise ScenarioError(f"step {n} ({step_title(st)}): {type(e).__name__}: {e}") \
                from None
        on_state(m, st)
    return m


def _addr(st, names):
    at = st["at"]
    base = names[at] if isinstance(at, str) else parse_size(at, "at")
    return base + int(st.get("page", 0)) * PAGE, int(st.get("pages", 1)) * PAGE


def _do(m, st, names):
    d = st["do"]
    p = names.get(st.get("proc")) if "proc" in st else None
    if d == "spawn":
        r = m.spawn()
    elif d == "mmap":
        addr = st.get("addr")
        r = p.mmap(parse_size(st["length"], "length"), prot=st.get("prot", "rw"),
                   shared=st.get("shared", False),
                   addr=None if addr is None else parse_size(addr, "addr"))
    elif d == "write":
        a, n = _addr(st, names)
        data = st.get("data")
        if data is None and getattr(m, "contents", True) is False:
            p.touch(a, n, write=True)          # no page contents: a write fault alone
        elif data is None:
            for off in range(0, n, PAGE):
                p.write(a + off, b"x")
        else:
            p.write(a, data.encode())
        r = None
    elif d == "touch":
        a, n = _addr(st, names)
        p.touch(a, n, write=bool(st.get("write", False)))
        r = None
    elif d == "fork":
        r = p.fork(mode=st.get("mode"))
    elif d == "exit":
        r = p.exit()
    elif d == "exec":
        r = p.exec()
    elif d == "munmap":
        a, n = _addr(st, names)
        r = p.munmap(a, n)
    elif d == "mprotect":
        a, n = _addr(st, names)
        r = p.mprotect(a, n, st["prot"])
    elif d == "reclaim":
        r = m.reclaim(int(st.get("n", 1)), method=st.get("method"))
    if "as" in st:
        names[st["as"]] = r
