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

import platformdirs

__all__ = ["EVENTS", "FORMAT", "FORMAT_VERSION", "Profile", "load_profile",
           "host_profile_path", "builtin_profiles", "event_counts", "ProfileError",
           "predict", "predict_configs", "choose_profile", "NONE"]

FORMAT = "lazyvm-cost-profile"
FORMAT_VERSION = 1

# Every priced counter (exit_vmas last: see above).
EVENTS = (
    "forks_copy", "forks_share", "exits", "execs", "fork_vmas",
    "tables_allocated", "tables_freed", "tables_copied", "unshares", "unshare_reuses",
    "tables_dropped", "ptes_copied", "ptes_zapped", "rmap_adds", "rmap_removes",
    "share_wrprotects", "faults", "demand_zero", "zero_page_maps", "cow_copies",
    "cow_reuses", "shmem_faults", "swap_outs", "swap_ins", "exit_vmas",
)

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


def _num(value, what):
    """A cost or uncertainty: a finite number in [0, MAX_NS] (ProfileError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{what} must be a number, not {_short(value)}")
    if isinstance(value, int) and not -MAX_NS <= value <= MAX_NS:
        raise ProfileError(f"{what} must be at most {MAX_NS:.0e} ns, not {_short(value)}")
    if not math.isfinite(value):
        raise ProfileError(f"{what} must be finite, not {value!r}")
    if value < 0:
        raise ProfileError(f"{what} must not be negative, not {value!r}")
    if value > MAX_NS:
        raise ProfileError(f"{what} must be at most {MAX_NS:.0e} ns, not {value!r}")
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

    def __post_init__(self):
        if type(self.version) is not int:
            raise ProfileError(f"profile {self.name!r}: version must be an integer, not "
                               f"{_short(self.version)}")
        for what in ("costs", "uncertainty", "source", "meta"):
            if not isinstance(getattr(self, what), dict):
                raise ProfileError(f"profile {self.name!r}: {what} must be a dict, not "
                                   f"{type(getattr(self, what)).__name__}")
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
        return cls(name=name, costs=costs, uncertainty=unc, source=src, version=version,
                   description=description, meta=meta or {})

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
