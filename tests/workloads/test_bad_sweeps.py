"""Sweep specs whose points cannot run are refused before any point runs, and a results
file that is damaged or holds rows this sweep could not have written is refused on
resume instead of being taken as done: one SpecError (a ValueError) line each."""
import pandas as pd
import pytest

from lazyvm.workloads import sweep as sw

BAD_POINTS = {
    "layout foo": ({"layout": "foo"}, "layout"),
    "share_level 9": ({"share_level": 9}, "share_level"),
    "share_level 2 on pae": ({"layout": "pae", "share_level": 2}, "share_level"),
    "memory 1": ({"memory": 1}, "memory"),
    "memory not whole pages": ({"memory": (64 << 20) + 1}, "memory"),
    "memory over i386's 4 GiB": ({"memory": 8 << 30}, "memory"),
    "pages beyond user space": ({"pages": 1 << 20}, "pages"),
}


@pytest.mark.parametrize("case", sorted(BAD_POINTS))
def test_a_point_that_cannot_run_is_refused_up_front(case):
    point, word = BAD_POINTS[case]
    with pytest.raises(sw.SpecError) as exc:
        sw.parse_spec({"points": [{"pages": 16}, point]})
    msg = str(exc.value)
    assert "\n" not in msg and word in msg and "point 2" in msg, msg


def test_good_points_still_parse():
    pts = sw.parse_spec({"grid": {"layout": ["i386", "pae", "x86_64"]},
                         "fixed": {"pages": 16, "memory": 16 << 20}})
    assert [p["layout"] for p in pts] == ["i386", "pae", "x86_64"]
    assert sw.parse_spec({"points": [{"layout": "x86_64", "share_level": 3}]})


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A finished sweep of two points, as CSV and as Parquet."""
    d = tmp_path_factory.mktemp("done")
    pts = sw.parse_spec({"grid": {"pages": [16, 32]}})
    out = {}
    for ext in ("csv", "parquet"):
        path = d / f"r.{ext}"
        df = sw.sweep(pts, path, workers=1, progress=False)
        assert (df["error"] == "").all()
        out[ext] = path
    return pts, out


def _resume(pts, path):
    with pytest.raises(sw.SpecError) as exc:
        sw.sweep(pts, path, workers=1, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and str(path.name) in msg, msg
    return msg


def test_damaged_parquet_is_refused(done, tmp_path):
    pts, out = done
    bad = tmp_path / "r.parquet"
    data = out["parquet"].read_bytes()
    bad.write_bytes(data[:len(data) // 2] + b"\0" * 64 + data[-8:])
    _resume(pts, bad)


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00junk\n\x81\x82\n"])
def test_empty_or_non_utf8_csv_is_refused(tmp_path, content):
    pts = sw.parse_spec({"grid": {"pages": [16]}})
    bad = tmp_path / "r.csv"
    bad.write_bytes(content)
    _resume(pts, bad)


def _edit_csv(src, dst, column, value, row=0):
    df = pd.read_csv(src, keep_default_na=False)
    df[column] = df[column].astype(object)
    df.loc[row, column] = value
    df.to_csv(dst, index=False)


@pytest.mark.parametrize("column, value", [("pages", 64.5), ("pages", "nan"),
                                           ("rmap", "maybe"), ("seed", -3),
                                           ("write_fraction", 7), ("fork_mode", "spoon"),
                                           ("layout", "")])
def test_junk_rows_are_not_taken_as_done(done, tmp_path, column, value):
    pts, out = done
    bad = tmp_path / "r.csv"
    _edit_csv(out["csv"], bad, column, value)
    msg = _resume(pts, bad)
    assert column in msg, msg


def test_junk_parquet_rows_are_not_taken_as_done(done, tmp_path):
    pts, out = done
    df = pd.read_parquet(out["parquet"])
    df["pages"] = df["pages"].astype(float)
    df.loc[0, "pages"] = 16.5
    bad = tmp_path / "r.parquet"
    df.to_parquet(bad, index=False)
    assert "pages" in _resume(pts, bad)


def test_a_good_file_still_resumes(done, tmp_path):
    pts, out = done
    for path in out.values():
        df = sw.sweep(pts, path, workers=1, progress=False)
        assert len(df) == 2 and (df["error"] == "").all()
