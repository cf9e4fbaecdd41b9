"""No file git tracks under lazyvm/ is a build product: the C that Cython writes, compiled
modules and Cython's annotated HTML are made from the sources by the build."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATED = (".c", ".so", ".html", ".pyd")


def tracked(root: Path) -> list:
    """The files git tracks under root/lazyvm, or None when root is not a git checkout."""
    if shutil.which("git") is None:
        return None
    r = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", "lazyvm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return [f for f in r.stdout.split("\0") if f]


def test_git_tracks_no_generated_file_in_the_package():
    files = tracked(ROOT)
    if files is None:
        pytest.skip("not a git checkout (an unpacked sdist or an installed copy): "
                    "nothing here is tracked")
    assert files, "git tracks no file under lazyvm/"
    assert [f for f in files if f.endswith(GENERATED)] == []


def test_the_check_sees_a_tracked_generated_file(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "lazyvm").mkdir()
    (tmp_path / "lazyvm" / "_x.c").write_text("int x;\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "lazyvm/_x.c"], check=True)
    assert [f for f in tracked(tmp_path) if f.endswith(GENERATED)] == ["lazyvm/_x.c"]
