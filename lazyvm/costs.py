"""Cost profiles: lazyvm's event counts turned into a predicted kernel time (DESIGN.md §8).

A profile gives every event lazyvm counts (PLAN.md's EVENT COUNTERS; the per-level
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
down.  A counter a stats() dict lacks counts 0 (``Profile.missing`` names it).

The JSON format (``FORMAT``, version ``FORMAT_VERSION``) is described in docs/COSTS.md.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from importlib import resources

__all__ = ["EVENTS", "FORMAT", "FORMAT_VERSION", "Profile", "load_profile",
           "host_profile_path", "builtin_profiles", "event_counts", "ProfileError",
           "predict", "predict_configs", "choose_profile", "NONE"]

FORMAT = "lazyvm-cost-profile"
FORMAT_VERSION = 1

# Every priced counter, in the order PLAN.md lists them (exit_vmas last: see above).
EVENTS = (
    "forks_copy", "forks_share", "exits", "execs", "fork_vmas",
    "tables_allocated", "tables_freed", "tables_copied", "unshares", "unshare_reuses",
    "tables_dropped", "ptes_copied", "ptes_zapped", "rmap_adds", "rmap_removes",
    "share_wrprotects", "faults", "demand_zero", "zero_page_maps", "cow_copies",
    "cow_reuses", "shmem_faults", "swap_outs", "swap_ins", "exit_vmas",
    "forks_odf", "eager_refs", "eager_refs_dropped", "thp_faults", "thp_splits",
    "thp_copies",
)

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
    (platformdirs.user_cache_dir("lazyvm"); without platformdirs, the same directory
    on Linux: $XDG_CACHE_HOME/lazyvm, else ~/.cache/lazyvm)."""
    try:
        import platformdirs
        base = platformdirs.user_cache_dir("lazyvm")
    except ImportError:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME")
                            or os.path.join(os.path.expanduser("~"), ".cache"), "lazyvm")
    return os.path.join(base, "host.json")


def builtin_profiles() -> tuple[str, ...]:
    return BUILTIN


def _num(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{what} must be a number, not {value!r}")
    if not math.isfinite(value):
        raise ProfileError(f"{what} must be finite, not {value!r}")
    return value


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

    def __post_init__(self):
        self._derive()
        missing = [e for e in EVENTS if e not in self.costs]
        if missing:
            raise ProfileError(f"profile {self.name!r} has no cost for {', '.join(missing)}")
        unknown = [e for e in self.costs if e not in EVENTS]
        if unknown:
            raise ProfileError(f"profile {self.name!r}: unknown events {', '.join(unknown)}")
        for e in EVENTS:
            _num(self.costs[e], f"cost of {e}")
            _num(self.uncertainty.get(e, None), f"uncertainty of {e}")
            if not isinstance(self.source.get(e), str) or not self.source[e]:
                raise ProfileError(f"profile {self.name!r}: no source for {e}")

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
                total += int(n) * Fraction(repr(float(self.costs[e])))
        return round(total)

    def kernel_ns_parts(self, stats: dict) -> dict:
        """{event: ns} of every event with a non-zero count (floats, for reports)."""
        return {e: int(stats[e]) * float(self.costs[e]) for e in EVENTS
                if stats.get(e, 0)}

    def uncertainty_ns(self, stats: dict) -> float:
        """Standard error of kernel_ns(stats), treating the costs' errors as independent."""
        return math.sqrt(sum((int(stats.get(e, 0)) * float(self.uncertainty[e])) ** 2
                             for e in EVENTS))

    def missing(self, stats: dict) -> list:
        """Priced events that `stats` does not count (they contribute 0)."""
        return [e for e in EVENTS if e not in stats]

    # -- persistence ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.version, "name": self.name,
                "description": self.description,
                "events": {e: {"ns": self.costs[e], "uncertainty_ns": self.uncertainty[e],
                               "source": self.source[e]} for e in EVENTS},
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict, where: str = "profile") -> "Profile":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ProfileError(f"{where}: not a lazyvm cost profile (format != {FORMAT!r})")
        if d.get("version") != FORMAT_VERSION:
            raise ProfileError(f"{where}: profile format version {d.get('version')!r}, "
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
        return cls(name=str(d.get("name", "")), costs=costs, uncertainty=unc, source=src,
                   version=d["version"], description=str(d.get("description", "")),
                   meta=d.get("meta") or {})

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
            with open(path) as f:
                d = json.load(f)
        except OSError as e:
            raise ProfileError(f"cannot read cost profile {path}: {e.strerror}") from None
        except json.JSONDecodeError as e:
            raise ProfileError(f"{path}: not JSON ({e})") from None
        return cls.from_dict(d, path)

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
        text = resources.files("lazyvm").joinpath("profiles", spec + ".json").read_text()
        return Profile.from_dict(json.loads(text), spec)
    if os.path.exists(spec):
        return Profile.load(spec)
    raise ProfileError(f"unknown cost profile {spec!r}: not 'host', one of "
                       f"{', '.join(BUILTIN)}, or an existing JSON file")


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


def predict(counts: dict, profile, iterations: int | None = None) -> dict:
    """The predicted kernel time of `counts` (event counters over a run, e.g. a
    run_workload configuration's differences): {"profile", "kernel_ns" (int),
    "kernel_ns_se", "kernel_ns_per_iteration" (int, or None without iterations),
    "missing" (priced events `counts` lacks: they count 0)}."""
    prof = load_profile(profile)
    ns = prof.kernel_ns(counts)
    return {"profile": prof.name, "kernel_ns": ns,
            "kernel_ns_se": prof.uncertainty_ns(counts),
            "kernel_ns_per_iteration": (ns // iterations) if iterations else None,
            "missing": prof.missing(counts)}


def predict_configs(configs: dict, profile, base: str = "copy") -> dict:
    """predict() for each {config name: counts} (counts may be a run_workload config
    result: its "iterations" is used), plus "ratio_vs_<base>": kernel_ns / base's."""
    prof = load_profile(profile)
    out = {name: predict(c, prof, c.get("iterations")) for name, c in configs.items()}
    b = out.get(base, {}).get("kernel_ns")
    for name, r in out.items():
        r[f"ratio_vs_{base}"] = (r["kernel_ns"] / b) if b else None
    return out
