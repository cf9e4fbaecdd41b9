"""Cost profiles that must be refused with one ProfileError (a ValueError) sentence."""
import json

import pytest

from lazyvm import Machine
from lazyvm.costs import EVENTS, Profile, ProfileError, load_profile


def _good():
    return load_profile("linux-2.5.41").to_dict()


def _write(tmp_path, data, name="p.json"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def _set_ns(field, value):
    def change(d):
        d["events"]["ptes_copied"][field] = value
        return json.dumps(d).encode()
    return change


def _raw(text):
    def change(d):
        return text
    return change


def _top(key, value):
    def change(d):
        d[key] = value
        return json.dumps(d).encode()
    return change


BAD = {
    "negative cost": _set_ns("ns", -1e6),
    "negative uncertainty": _set_ns("uncertainty_ns", -1.0),
    "huge integer cost": lambda d: json.dumps(d).replace(
        json.dumps(d["events"]["ptes_copied"]["ns"]), "1" + "0" * 400, 1).encode(),
    "1e200 uncertainty": _set_ns("uncertainty_ns", 1e200),
    "1e300 cost": _set_ns("ns", 1e300),
    "string cost": _set_ns("ns", "5"),
    "bool cost": _set_ns("ns", True),
    "version true": _top("version", True),
    "version 1.0": _top("version", 1.0),
    "version string": _top("version", "1"),
    "meta a list": _top("meta", [1, 2]),
    "name a number": _top("name", 5),
    "unknown event": lambda d: json.dumps(
        {**d, "events": {**d["events"], "bogus": {"ns": 1, "uncertainty_ns": 0,
                                                  "source": "x"}}}).encode(),
    "deep nesting": _raw(b'{"meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "not utf-8": _raw(b'{"format": "lazyvm-cost-profile", "name": "\xff\xfe"}'),
    "not json": _raw(b"{"),
    "a list": _raw(b"[]"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_profile_file_is_one_profile_error(tmp_path, case):
    path = _write(tmp_path, BAD[case](_good()))
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert isinstance(exc.value, ValueError)
    with pytest.raises(ProfileError):
        Machine(memory=8 << 20, costs=str(path))


def test_negative_cost_is_refused_in_the_constructor():
    d = _good()
    costs = {e: d["events"][e]["ns"] for e in EVENTS}
    costs["ptes_copied"] = -1e6
    with pytest.raises(ProfileError, match="negative"):
        Profile(name="t", costs=costs, uncertainty={e: 0.0 for e in EVENTS},
                source={e: "s" for e in EVENTS})


def test_version_must_be_an_integer_in_the_constructor():
    d = _good()
    with pytest.raises(ProfileError, match="version"):
        Profile(name="t", costs={e: 1.0 for e in EVENTS},
                uncertainty={e: 0.0 for e in EVENTS}, source={e: "s" for e in EVENTS},
                version=True)


def test_a_good_profile_still_loads_and_predicts(tmp_path):
    path = _write(tmp_path, _good())
    prof = load_profile(path)
    m = Machine(memory=8 << 20, costs=prof)
    p = m.spawn()
    p.write(p.mmap(4096), b"x")
    assert m.stats()["kernel_ns"] > 0
    assert prof.uncertainty_ns(m.stats()) >= 0


def test_calibration_holds_a_negative_difference_at_zero(monkeypatch):
    """A cost calibrate gets as a difference of two noisy figures (exec: a child that
    execs minus one that exits) can come out below 0; the profile must still load."""
    import numpy as np
    from lazyvm.measure import calibrate as cal
    rng = np.random.default_rng(3)
    coef = np.array([50_000.0, 800.0, 300.0, 60.0, 900.0])

    def fake_rounds(jobs, reps, rounds, helper=None):
        out = {}
        for job in jobs:
            if job["kind"] == "faults":
                out["faults"] = {"name": "faults", **{
                    k: [float(v), float(v) + 5] for k, v in (
                        ("demand_zero", 900), ("zero_page", 400), ("cow", 1500),
                        ("cow_reuse", 300), ("shmem", 200), ("sparse", 800),
                        ("munmap_dense", 50), ("munmap_sparse", 400))}}
                continue
            vapt = rng.integers(1, 5000, 4).astype(float)
            y = float(coef @ np.concatenate(([1.0], vapt)))
            out[job["name"]] = {"name": job["name"], "V": vapt[0], "A": vapt[1], "P": vapt[2], "T": vapt[3],
                                "fork_ns": [y, y * 1.01], "exit_ns": [y / 2, y / 2 * 1.01],
                                "fork_wall_ns": [y, y], "fork_child_ns": [90_000.0, 91_000],
                                "fork_exec_ns": [80_000.0, 81_000]}    # exec "costs" < 0
        return out

    monkeypatch.setattr(cal, "_rounds", fake_rounds)
    monkeypatch.setattr(cal, "measure_primitives", lambda quick=False: (
        80.0, 1.0, 2.0, 0.1, {"chase_bytes": 256 << 20}))
    prof, _ = cal.calibrate(quick=True, helper=False)
    assert prof.costs["execs"] == 0.0 and "held at 0" in prof.source["execs"]
    assert prof.costs["tables_allocated"] == 0.0
    assert all(v >= 0 for v in prof.costs.values())
    Profile.from_dict(prof.to_dict())
