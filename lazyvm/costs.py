"""Cost profiles: lazyvm's event counts turned into a predicted kernel time (DESIGN.md §8).

A profile gives every event lazyvm counts (the priced counters of Machine.stats(); the per-level
breakdowns ``unshares_l1``.. and ``tables_dropped_l1``.. are parts of ``unshares`` and
``tables_dropped`` and are not priced again) a cost in ns, the cost's uncertainty (one
standard error, ns) and its source::

    p = load_profile("host")            # made by `lazyvm calibrate` (user cache dir)
    p = load_profile("linux-2.5.41")    # built in: fitted to the 2002 figures
    p = load_profile("my.json")         # a path
    p.kernel_ns(m.stats())              # int ns: sum(count * cost), rounded once

A cost multiplies a counter of ``Machine.stats()``: ``forks_copy``/``forks_share`` carry
the fixed cost of a fork of a minimal process, ``exits`` and ``execs`` the fixed costs of
an exit and an exec; ``faults`` is the cost every fault pays, ``demand_zero``,
``cow_copies``... what such a fault costs beyond it.  The counters overlap the way the
kernel's work does (``tables_copied`` are also ``tables_allocated``), so each cost is the
part of the work its counter adds.  ``exit_vmas`` prices the VMAs an exit or exec tears
down; ``fork_anon_vmas`` and ``exit_anon_vmas`` what those of them with an anon_vma add
(every private VMA but a PROT_NONE guard: Machine counts them).  A counter a stats() dict lacks counts 0 (``Profile.missing`` names it).

The JSON format (``FORMAT``, version ``FORMAT_VERSION``) is described in docs/COSTS.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources

import platformdirs

__all__ = ["EVENTS", "FORMAT", "FORMAT_VERSION", "Profile", "load_profile",
           "host_profile_path", "builtin_profiles", "event_counts", "ProfileError",
           "predict", "predict_configs", "choose_profile", "NONE",
           "event_covariance"]

FORMAT = "lazyvm-cost-profile"
FORMAT_VERSION = 1

# Every priced counter (the VMA counters last: see above).
EVENTS = (
    "forks_copy", "forks_share", "exits", "execs", "fork_vmas",
    "tables_allocated", "tables_freed", "tables_copied", "unshares", "unshare_reuses",
    "tables_dropped", "ptes_copied", "ptes_zapped", "rmap_adds", "rmap_removes",
    "share_wrprotects", "faults", "demand_zero", "zero_page_maps", "cow_copies",
    "cow_reuses", "shmem_faults", "swap_outs", "swap_ins", "exit_vmas",
    "fork_anon_vmas", "exit_anon_vmas", "forks_odf", "eager_refs", "eager_refs_dropped",
    "thp_faults", "thp_splits", "thp_copies",
)

# Events a profile file may lack (it was made before they were priced apart): read as 0
ANON_VMA_EVENTS = ("fork_anon_vmas", "exit_anon_vmas")

# Events a profile may leave out: each is then derived from the profile's own costs of
# other events (in EVENTS order, so a derivation may use an earlier derived one), and its
# source says so.  `lazyvm calibrate --thp` measures the THP ones on this machine.
#   event -> (function(costs, uncertainty, store) -> (ns, se), source)
# `store` is one 8-byte store into a table written in sequence (a 64-byte line write / 8,
# from the profile's measured primitives; 0 when the profile has none).
PAGES_PER_HUGE = 512
DERIVED = {
    "forks_odf": (lambda c, u, st: (c["forks_copy"], u["forks_copy"]),
                  "= forks_copy: On-demand-fork's fixed work is a copy fork's"),
    "eager_refs": (lambda c, u, st: (max(c["ptes_copied"] - st, 0.0), u["ptes_copied"]),
                   "derived: ptes_copied (a PTE copied with its page reference, mapcount "
                   "and rss) minus one entry store: the per-page accounting COW page tables "
                   "v3-v5 do at fork without copying the entry"),
    "eager_refs_dropped": (lambda c, u, st: (max(c["ptes_zapped"] - st, 0.0),
                                             u["ptes_zapped"]),
                           "derived: ptes_zapped (a page reference, mapcount and rss "
                           "dropped with its entry cleared) minus one entry store"),
    "thp_faults": (lambda c, u, st: (PAGES_PER_HUGE * c["demand_zero"],
                                     PAGES_PER_HUGE * u["demand_zero"]),
                   "derived (not measured): 512 demand-zero faults' worth of clearing, "
                   "an upper bound, beyond the table it deposits (tables_allocated); "
                   "`lazyvm calibrate --thp` measures it"),
    "thp_splits": (lambda c, u, st: (PAGES_PER_HUGE * c["eager_refs"],
                                     PAGES_PER_HUGE * u["eager_refs"]),
                   "derived (not measured): 512 x eager_refs, a mapcount and an entry "
                   "per subpage (__split_huge_pmd_locked); `lazyvm calibrate --thp` "
                   "measures it"),
    "thp_copies": (lambda c, u, st: (PAGES_PER_HUGE * c["cow_copies"],
                                     PAGES_PER_HUGE * u["cow_copies"]),
                   "derived: 512 x cow_copies (a 2 MiB copy-on-write, Linux before 5.8; "
                   "kernels since 5.8 split instead, so no kernel here can measure it)"),
}

BUILTIN = ("linux-2.5.41",)


class ProfileError(ValueError):
    """A profile that cannot be read: unknown name, bad JSON, missing or bad field."""


def host_profile_path() -> str:
    """Where `lazyvm calibrate` writes the "host" profile: the user cache dir
    (platformdirs.user_cache_dir("lazyvm"): $XDG_CACHE_HOME/lazyvm, else ~/.cache/lazyvm
    on Linux)."""
    return os.path.join(platformdirs.user_cache_dir("lazyvm"), "host.json")


def builtin_profiles() -> tuple[str, ...]:
    return BUILTIN


# The largest cost or uncertainty a profile may give one event: 1000 s.  A real event
# costs nanoseconds to milliseconds; anything near this bound is a damaged file, and the
# bound keeps every sum of count * cost (and its square, for the uncertainty) finite.
MAX_NS = 1e12


def _exact(n) -> Fraction:
    """A count as an exact fraction: an int as it is, any other number (an average over
    iterations) as the decimal its repr writes, never truncated."""
    if isinstance(n, int):
        return Fraction(n)
    if isinstance(n, Fraction):
        return n
    f = float(n)
    if f == int(f):
        return Fraction(int(f))
    return Fraction(repr(f))


def _num(value, what, bound=MAX_NS, signed=False):
    """A cost or uncertainty: a finite number in [0, bound] (ProfileError otherwise);
    signed: in [-bound, bound] (a covariance, in ns squared)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{what} must be a number, not {_short(value)}")
    if isinstance(value, int) and not -bound <= value <= bound:
        raise ProfileError(f"{what} must be at most {bound:.0e}, not {_short(value)}")
    if not math.isfinite(value):
        raise ProfileError(f"{what} must be finite, not {value!r}")
    if value < 0 and not signed:
        raise ProfileError(f"{what} must not be negative, not {value!r}")
    if abs(value) > bound:
        raise ProfileError(f"{what} must be at most {bound:.0e}, not {value!r}")
    return value


def _short(value) -> str:
    """repr(value), cut to 60 characters (an int of 10**400 has 401 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 60:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class Profile:
    """Per-event kernel costs (ns), their uncertainties (ns, one standard error) and
    sources; `meta` carries the host description, fit residuals and the like."""
    name: str
    costs: dict
    uncertainty: dict
    source: dict
    version: int = FORMAT_VERSION
    description: str = ""
    meta: dict = field(default_factory=dict)
    covariance: "dict | None" = None

    def __post_init__(self):
        if type(self.version) is not int:
            raise ProfileError(f"profile {self.name!r}: version must be an integer, not "
                               f"{_short(self.version)}")
        for what in ("costs", "uncertainty", "source", "meta"):
            if not isinstance(getattr(self, what), dict):
                raise ProfileError(f"profile {self.name!r}: {what} must be a dict, not "
                                   f"{type(getattr(self, what)).__name__}")
        self._derive()
        missing = [e for e in EVENTS if e not in self.costs]
        if missing:
            raise ProfileError(f"profile {self.name!r} has no cost for {', '.join(missing)}"
                               + (" (made by an older lazyvm: run lazyvm calibrate again)"
                                  if self.name == "host" else ""))
        unknown = [e for e in self.costs if e not in EVENTS]
        if unknown:
            raise ProfileError(f"profile {self.name!r}: unknown events {', '.join(unknown)}")
        for e in EVENTS:
            _num(self.costs[e], f"cost of {e}")
            _num(self.uncertainty.get(e, None), f"uncertainty of {e}")
            if not isinstance(self.source.get(e), str) or not self.source[e]:
                raise ProfileError(f"profile {self.name!r}: no source for {e}")
        self._cov = self._check_covariance(self.covariance)

    def _check_covariance(self, cov):
        """The covariance block as (events, matrix rows), or None.  Format:
        {"events": [names], "ns2": [[...], ...]}, symmetric, finite, a non-negative
        diagonal."""
        if cov is None:
            return None
        where = f"profile {self.name!r}: covariance"
        if not isinstance(cov, dict) or not isinstance(cov.get("events"), list) \
                or not isinstance(cov.get("ns2"), list):
            raise ProfileError(f"{where} must be {{'events': [...], 'ns2': [[...]]}}")
        ev, mat = cov["events"], cov["ns2"]
        bad = [e for e in ev if e not in EVENTS]
        if bad or len(set(ev)) != len(ev):
            raise ProfileError(f"{where}: unknown or repeated events {bad or ev}")
        if len(mat) != len(ev) or any(not isinstance(r, list) or len(r) != len(ev)
                                      for r in mat):
            raise ProfileError(f"{where}: ns2 must be {len(ev)} x {len(ev)}")
        for i, r in enumerate(mat):
            for j, v in enumerate(r):
                _num(v, f"{where}[{ev[i]}][{ev[j]}]", MAX_NS * MAX_NS, signed=True)
                if abs(v - mat[j][i]) > 1e-9 * max(1.0, abs(v)):
                    raise ProfileError(f"{where}: not symmetric at {ev[i]}, {ev[j]}")
            if r[i] < 0:
                raise ProfileError(f"{where}: negative variance of {ev[i]}")
            u = float(self.uncertainty[ev[i]])
            if abs(math.sqrt(r[i]) - u) > max(0.05, 0.01 * u):
                raise ProfileError(f"{where}: the variance of {ev[i]} is "
                                   f"{math.sqrt(r[i]):.2f} ns squared, its uncertainty "
                                   f"{u:.2f} ns")
        return ev, mat

    def _derive(self):
        """Fill the DERIVED events this profile leaves out, from its other costs."""
        if not any(e in DERIVED and e not in self.costs for e in EVENTS):
            return
        base = [e for e in EVENTS if e not in DERIVED and e not in self.costs]
        if base:                        # the missing-cost error below names them
            return
        self.costs, self.uncertainty, self.source = (dict(self.costs), dict(self.uncertainty),
                                                     dict(self.source))
        prim = (self.meta or {}).get("primitives") or {}
        store = float(prim.get("line_write_ns", 0.0)) / 8
        for e in EVENTS:
            if e in DERIVED and e not in self.costs:
                fn, why = DERIVED[e]
                ns, se = fn(self.costs, self.uncertainty, store)
                self.costs[e], self.uncertainty[e] = round(float(ns), 3), round(float(se), 3)
                self.source[e] = why + (f" (entry store {store:.2f} ns)" if store else "")

    # -- prediction -------------------------------------------------------------------
    def kernel_ns(self, stats: dict) -> int:
        """sum(stats[e] * costs[e]) in ns, computed exactly (costs as written in the
        profile, as fractions) and rounded once, half to even.  Counters absent from
        `stats` count 0 (see `missing`)."""
        total = Fraction(0)
        for e in EVENTS:
            n = stats.get(e, 0)
            if n:
                total += _exact(n) * Fraction(repr(float(self.costs[e])))
        return round(total)

    def kernel_ns_parts(self, stats: dict) -> dict:
        """{event: ns} of every event with a non-zero count (floats, for reports)."""
        return {e: float(stats[e]) * float(self.costs[e]) for e in EVENTS
                if stats.get(e, 0)}

    def uncertainty_ns(self, stats: dict) -> float:
        """Standard error of kernel_ns(stats): sqrt(n' C n) with n the counts and C the
        costs' covariance: the profile's covariance block where it has one (fitted
        coefficients correlate: a fit's intercept and slope typically anti-correlate),
        each other cost's uncertainty squared on the diagonal, independent."""
        n = {e: float(stats.get(e, 0) or 0) for e in EVENTS}
        var = 0.0
        inside = set()
        if self._cov is not None:
            ev, mat = self._cov
            inside = set(ev)
            for i, a in enumerate(ev):
                if n[a]:
                    for j, b in enumerate(ev):
                        var += n[a] * n[b] * float(mat[i][j])
        var += sum((n[e] * float(self.uncertainty[e])) ** 2 for e in EVENTS
                   if e not in inside)
        return math.sqrt(max(var, 0.0))

    def missing(self, stats: dict) -> list:
        """Priced events that `stats` does not count (they contribute 0)."""
        return [e for e in EVENTS if e not in stats]

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "version": self.version, "name": self.name,
             "description": self.description,
             "events": {e: {"ns": self.costs[e], "uncertainty_ns": self.uncertainty[e],
                            "source": self.source[e]} for e in EVENTS}}
        if self.covariance is not None:
            d["covariance"] = self.covariance
        d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "profile") -> "Profile":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ProfileError(f"{where}: not a lazyvm cost profile (format != {FORMAT!r})")
        version = d.get("version")
        if type(version) is not int:
            raise ProfileError(f"{where}: the profile's version must be an integer, not "
                               f"{_short(version)}")
        if version != FORMAT_VERSION:
            raise ProfileError(f"{where}: profile format version {_short(version)}, "
                               f"this lazyvm reads version {FORMAT_VERSION}")
        ev = d.get("events")
        if not isinstance(ev, dict):
            raise ProfileError(f"{where}: no events")
        costs, unc, src = {}, {}, {}
        for e, v in ev.items():
            if not isinstance(v, dict):
                raise ProfileError(f"{where}: event {e} is not an object")
            costs[e] = v.get("ns")
            unc[e] = v.get("uncertainty_ns")
            src[e] = v.get("source")
        name, description, meta = d.get("name", ""), d.get("description", ""), d.get("meta")
        if not isinstance(name, str) or not isinstance(description, str):
            raise ProfileError(f"{where}: name and description must be strings")
        if meta is not None and not isinstance(meta, dict):
            raise ProfileError(f"{where}: meta must be an object, not "
                               f"{type(meta).__name__}")
        covariance = d.get("covariance")
        if covariance is not None and not isinstance(covariance, dict):
            raise ProfileError(f"{where}: covariance must be an object, not "
                               f"{type(covariance).__name__}")
        for e in ANON_VMA_EVENTS:
            if e not in costs and all(x in costs for x in EVENTS
                                      if x not in ANON_VMA_EVENTS and x not in DERIVED):
                # a profile made before the anon_vma events: its fork_vmas / exit_vmas
                # price every VMA as one with an anon_vma, as it was made to
                costs[e], unc[e] = 0.0, 0.0
                src[e] = ("0: absent from this profile, made before lazyvm priced VMAs "
                          f"with an anon_vma apart ({e[:4]}_vmas carries their cost)")
        return cls(name=name, costs=costs, uncertainty=unc, source=src, version=version,
                   description=description, meta=meta or {}, covariance=covariance)

    def save(self, path: str) -> None:
        """Write the profile as JSON (atomically: a temporary file renamed over it)."""
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> "Profile":
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise ProfileError(f"cannot read cost profile {path}: {e.strerror}") from None
        if len(data) > MAX_FILE_BYTES:
            raise ProfileError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB, not a "
                               "cost profile")
        return cls.from_dict(_parse_json(data, path), path)

    def format(self) -> str:
        """A table of the costs: event, ns, uncertainty, source."""
        w = max(len(e) for e in EVENTS)
        lines = [f"profile {self.name} (format {FORMAT} v{self.version})"]
        if self.description:
            lines.append(self.description)
        for e in EVENTS:
            lines.append(f"  {e:<{w}}  {self.costs[e]:>10.1f} ns  +- {self.uncertainty[e]:>8.1f}"
                         f"  {self.source[e]}")
        return "\n".join(lines)


MAX_FILE_BYTES = 16 << 20      # a profile is a few KiB; calibrate's meta adds tens


def _parse_json(data: bytes, where: str):
    """The JSON object in data (UTF-8), or ProfileError naming what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"{where}: not UTF-8 text (byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"{where}: not JSON ({e})") from None
    except RecursionError:
        raise ProfileError(f"{where}: JSON nested too deep to be a cost profile") from None
    except ValueError as e:
        raise ProfileError(f"{where}: not a readable JSON document ({e})") from None


def load_profile(spec) -> Profile:
    """A Profile from `spec`: a Profile (returned as is), "host" (the profile `lazyvm
    calibrate` wrote to the user cache dir), a built-in name ("linux-2.5.41") or a path
    to a JSON profile.  Raises ProfileError if it cannot."""
    if isinstance(spec, Profile):
        return spec
    if not isinstance(spec, (str, os.PathLike)):
        raise ProfileError(f"costs must be a profile name, a path or a Profile, not {spec!r}")
    spec = os.fspath(spec)
    if spec == "host":
        path = host_profile_path()
        if not os.path.exists(path):
            raise ProfileError(f"no host profile at {path}: run `lazyvm calibrate` first")
        return Profile.load(path)
    if spec in BUILTIN:
        data = resources.files("lazyvm").joinpath("profiles", spec + ".json").read_bytes()
        return Profile.from_dict(_parse_json(data, spec), spec)
    if os.path.exists(spec):
        return Profile.load(spec)
    raise ProfileError(f"unknown cost profile {spec!r}: not 'host', one of "
                       f"{', '.join(BUILTIN)}, or an existing JSON file")


def event_covariance(loadings: dict, cov) -> dict:
    """The covariance block of events priced from fitted parameters: `loadings` maps
    each event to {parameter index: weight} (cost = sum of weight * parameter), `cov`
    is the parameters' covariance matrix (a sequence of rows).  Returns the
    Profile.covariance dict {"events", "ns2"} (ns squared)."""
    ev = list(loadings)
    mat = []
    for a in ev:
        row = []
        for b in ev:
            row.append(float(sum(wa * wb * float(cov[i][j])
                                 for i, wa in loadings[a].items()
                                 for j, wb in loadings[b].items())))
        mat.append(row)
    for i in range(len(ev)):                 # exactly symmetric
        for j in range(i):
            mat[i][j] = mat[j][i]
    return {"events": ev, "ns2": mat}


NONE = "none"          # the --costs value that turns prediction off


def choose_profile(spec: "str | os.PathLike[str] | None" = None
                   ) -> "tuple[Profile | None, str, str]":
    """The profile a command predicts with, and why: (Profile or None, spec, reason).

    `spec` None is the default: "host" when `lazyvm calibrate` has written a host
    profile (host_profile_path()), else the built-in "linux-2.5.41".  "none" turns
    prediction off (Profile None).  Anything else is load_profile's: a name or a path.
    Raises ProfileError when the profile does not load (the default host profile
    included: a damaged file is not silently replaced by another profile)."""
    if spec is not None and os.fspath(spec) == NONE:
        return None, NONE, "prediction off (--costs none)"
    if spec is None:
        path = host_profile_path()
        if os.path.exists(path):
            spec, reason = "host", f"default: the host profile lazyvm calibrate wrote ({path})"
        else:
            spec, reason = BUILTIN[0], (f"default: no host profile at {path} (run lazyvm "
                                        f"calibrate for one), so the built-in {BUILTIN[0]}")
    else:
        spec = os.fspath(spec)
        reason = f"--costs {spec}"
    return load_profile(spec), spec, reason


def event_counts(stats: dict) -> dict:
    """The EVENT COUNTERS of a stats() dict (absent ones left out)."""
    return {e: int(stats[e]) for e in EVENTS if e in stats}


def _per_iteration_ns(prof: Profile, counts: dict, iterations) -> "float | None":
    """Predicted ns of one iteration: of counts["per_iteration"] (a run_workload
    configuration's counters per iteration) when there is one, else of the totals
    divided by `iterations`; None without either."""
    per = counts.get("per_iteration") if isinstance(counts, dict) else None
    if isinstance(per, dict):
        return sum(float(per.get(e, 0)) * float(prof.costs[e]) for e in EVENTS)
    if not iterations:
        return None
    return float(Fraction(prof.kernel_ns(counts)) / int(iterations))


def _per_iteration_se(prof: Profile, counts: dict, iterations) -> "float | None":
    """The profile's uncertainty (one standard error) of _per_iteration_ns."""
    per = counts.get("per_iteration") if isinstance(counts, dict) else None
    if isinstance(per, dict):
        return math.sqrt(sum((float(per.get(e, 0)) * float(prof.uncertainty[e])) ** 2
                             for e in EVENTS))
    if not iterations:
        return None
    return prof.uncertainty_ns(counts) / int(iterations)


def predict(counts: dict, profile, iterations: int | None = None) -> dict:
    """The predicted kernel time of `counts` (event counters over a run, e.g. a
    run_workload configuration's differences): {"profile", "kernel_ns" (int, the
    total), "kernel_ns_se", "kernel_ns_per_iteration" (float ns per iteration, or None
    without iterations), "missing" (priced events `counts` lacks: they count 0)}.
    The per-iteration figure is the one to compare across runs and configurations: a
    total moves with the number of iterations run."""
    prof = load_profile(profile)
    ns = prof.kernel_ns(counts)
    return {"profile": prof.name, "kernel_ns": ns,
            "kernel_ns_se": prof.uncertainty_ns(counts),
            "kernel_ns_per_iteration": _per_iteration_ns(prof, counts, iterations),
            "kernel_ns_per_iteration_se": _per_iteration_se(prof, counts, iterations),
            "missing": prof.missing(counts)}


def predict_configs(configs: dict, profile, base: str = "copy") -> dict:
    """predict() for each {config name: counts} (counts may be a run_workload config
    result: its "per_iteration" counts or its "iterations" are used), plus
    "ratio_vs_<base>": this configuration's predicted kernel time per iteration / the
    base's (totals when no configuration has iterations), so that configurations
    which ran different numbers of iterations compare like with like."""
    prof = load_profile(profile)
    out = {name: predict(c, prof, c.get("iterations")) for name, c in configs.items()}
    key = ("kernel_ns_per_iteration"
           if all(r["kernel_ns_per_iteration"] is not None for r in out.values())
           else "kernel_ns")
    b = out.get(base, {}).get(key)
    for name, r in out.items():
        r[f"ratio_vs_{base}"] = (r[key] / b) if b else None
    return out
