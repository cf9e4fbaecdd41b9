"""Packaging: what a new user meets before the first figure.  Importing from a source
tree without the compiled core says so in one line; the version, licence and metadata
are right; the sdist holds the tests, bench, docs and LICENSE and the wheel no generated
C; .gitignore covers what the CLI writes; the docs stand alone.

The build test makes an sdist and a wheel from a copy of the tree with `python -m build`
(about a minute: it compiles the core); it skips when `build` is not installed.
"""

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import lazyvm

ROOT = Path(__file__).resolve().parents[2]
HAVE_TREE = (ROOT / "pyproject.toml").is_file() and (ROOT / "lazyvm").is_dir()
needs_tree = pytest.mark.skipif(not HAVE_TREE, reason="no source tree beside the tests")


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# ---------------------------------------------------------------- import


def test_import_from_an_unbuilt_source_tree_says_so_in_one_line(tmp_path):
    """As after `pip install .` and `python` in the checkout: the checkout's lazyvm/ has
    no compiled core and shadows the installed one (0.1.0: "No module named
    'lazyvm._core'" after a traceback through machine.py)."""
    src = tmp_path / "checkout"
    (src / "lazyvm").mkdir(parents=True)
    for f in Path(lazyvm.__file__).parent.glob("*.py"):
        shutil.copy(f, src / "lazyvm" / f.name)
    (src / "lazyvm" / "core").mkdir()
    shutil.copy(Path(lazyvm.__file__).parent / "core" / "__init__.py",
                src / "lazyvm" / "core" / "__init__.py")
    (src / "setup.py").write_text("# a source tree\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import lazyvm"], cwd=src, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: lazyvm is being imported from its source tree")
    assert str(src) in last and "pip install -e ." in last
    # Nothing else of the package ran: the traceback is the import line and the raise.
    assert "machine.py" not in proc.stderr


def test_a_broken_core_is_not_reported_as_a_source_tree(tmp_path):
    """Only a missing core gets the source-tree message; another ImportError (a core
    built for another numpy, say) is raised as it is."""
    pkg = tmp_path / "site" / "lazyvm"
    pkg.mkdir(parents=True)
    shutil.copy(Path(lazyvm.__file__), pkg / "__init__.py")
    (pkg / "core").mkdir()
    (pkg / "core" / "__init__.py").write_text(
        "raise ImportError('numpy.core.multiarray failed')\n")
    (pkg.parent / "setup.py").write_text("# a source tree too\n")
    proc = subprocess.run([sys.executable, "-c", "import lazyvm"], cwd=tmp_path / "site",
                          capture_output=True, text=True, timeout=60)
    assert "numpy.core.multiarray failed" in proc.stderr
    assert "source tree" not in proc.stderr


# ---------------------------------------------------------------- metadata


@needs_tree
def test_version_is_one_figure():
    assert _pyproject()["project"]["version"] == lazyvm.__version__ == "0.2.0"


@needs_tree
def test_licence_is_an_spdx_string_and_a_file():
    proj = _pyproject()["project"]
    assert proj["license"] == "MIT"  # PEP 639, not the deprecated {text = ...} table
    assert proj["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text
    # An SPDX licence and a licence classifier together are refused by setuptools.
    assert not [c for c in proj["classifiers"] if c.startswith("License ::")]
    build = _pyproject()["build-system"]["requires"]
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77
               for r in build), build


@needs_tree
def test_classifiers_and_extras():
    proj = _pyproject()["project"]
    assert "Programming Language :: Python :: 3" in proj["classifiers"]
    assert "Operating System :: POSIX :: Linux" in proj["classifiers"]
    extras = proj["optional-dependencies"]
    names = {re.split(r"[<>=\[]", r)[0] for r in extras["test"]}
    assert {"pytest", "pytest-benchmark", "hypothesis", "matplotlib", "platformdirs",
            "build"} <= names
    assert {re.split(r"[<>=\[]", r)[0] for r in extras["sweep"]} >= {"dask", "pandas",
                                                                     "pyarrow"}
    # Only URLs that are true: none is invented for a host the project does not have.
    for url in proj.get("urls", {}).values():
        assert "example" not in url


# ---------------------------------------------------------------- .gitignore


def _glob(name, pat):
    """fnmatch as git does it: * and ? never match a slash."""
    rx = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                 for c in pat)
    return re.fullmatch(rx, name) is not None


def _ignored(patterns, path):
    """A small gitignore matcher, enough for the patterns of this repository."""
    hit = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        anchored = pat.startswith("/") or "/" in pat.rstrip("/")
        pat = pat.lstrip("/")
        is_dir = pat.endswith("/")
        pat = pat.rstrip("/")
        parts = path.split("/")
        cands = (["/".join(parts[:i]) for i in range(1, len(parts))] if is_dir else
                 ["/".join(parts[:i]) for i in range(1, len(parts) + 1)])
        if not anchored:
            cands = [c.split("/")[-1] for c in cands]
        if any(_glob(c, pat) for c in cands):
            hit = not neg
    return hit


@needs_tree
@pytest.mark.parametrize("path", ["fork.json", "fork.png", "run.json", "fork.svg",
                                  "lazyvm/core/api.c", "lazyvm/core/fork.cpython-311.so",
                                  "build/lib/x.py", "dist/lazyvm-0.2.0.tar.gz",
                                  "lazyvm.egg-info/PKG-INFO", ".venv-ci/bin/python",
                                  "tests/__pycache__/x.pyc", ".benchmarks/x.json"])
def test_gitignore_covers_what_the_cli_and_builds_write(path):
    gi = ROOT / ".gitignore"
    if not gi.is_file():
        pytest.skip(".gitignore not beside the tests")
    pats = [ln.strip() for ln in gi.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert _ignored(pats, path), path


@needs_tree
@pytest.mark.parametrize("path", ["lazyvm/profiles/host.json", "tests/data/x.json",
                                  "docs/fork.png", "lazyvm/core/fork.pyx",
                                  "lazyvm/core/defs.pxd"])
def test_gitignore_keeps_sources(path):
    gi = ROOT / ".gitignore"
    if not gi.is_file():
        pytest.skip(".gitignore not beside the tests")
    pats = [ln.strip() for ln in gi.read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert not _ignored(pats, path), path


# ---------------------------------------------------------------- docs


def _docs():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


@needs_tree
def test_docs_stand_alone():
    """No doc points outside the repository (0.1.0's docs/API.md pointed at
    ../shared/DESIGN.md, and DESIGN.md at a seed/ file that is not shipped); every
    relative link names a file that is there."""
    for doc in _docs():
        text = doc.read_text()
        for bad in ("../", "/work/", "seed/000", "shared/DESIGN", "shared/KERNEL"):
            assert bad not in text, (doc.name, bad)
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                continue
            assert (doc.parent / target).exists(), (doc.name, target)


@needs_tree
def test_the_seed_is_in_the_docs_with_its_citation():
    seed = (ROOT / "docs" / "SEED.md").read_text()
    for words in ("Daniel Phillips", "linux-kernel", "28 Jan 2002",
                  "Lazy page table instantiation", "copy_page_range", "zap_page_range",
                  "handle_mm_fault", "use count"):
        assert words in seed, words
    assert "SEED.md" in (ROOT / "docs" / "DESIGN.md").read_text()


# ---------------------------------------------------------------- sdist and wheel


def _copy_tree(dst):
    """The tree without build products, caches or virtual environments."""
    def ignore(d, names):
        return [n for n in names if n in ("build", "dist", ".git", "__pycache__",
                                          ".pytest_cache", ".hypothesis", ".benchmarks")
                or n.startswith(".venv") or n.endswith((".so", ".egg-info"))
                or (n.endswith((".c", ".html")) and Path(d).name in ("lazyvm", "core"))]
    shutil.copytree(ROOT, dst, ignore=ignore)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    if not HAVE_TREE:
        pytest.skip("no source tree beside the tests")
    d = tmp_path_factory.mktemp("dist")
    # (run from d: in the checkout, `python -m build` would find the build/ directory)
    have = subprocess.run([sys.executable, "-m", "build", "--version"], cwd=d,
                          capture_output=True, text=True, timeout=60)
    if have.returncode != 0:
        pytest.skip("the build package is not installed (the test extra)")
    _copy_tree(d / "tree")
    env = dict(os.environ, LAZYVM_DEBUG="1")  # the quicker -O1 build will do
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(d / "out"),
                           str(d / "tree")], capture_output=True, text=True, env=env,
                          timeout=900, cwd=d)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sdist = next((d / "out").glob("lazyvm-*.tar.gz"))
    wheel = next((d / "out").glob("lazyvm-*.whl"))
    with tarfile.open(sdist) as t:
        snames = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    with zipfile.ZipFile(wheel) as z:
        wnames = z.namelist()
        meta = z.read(next(n for n in wnames if n.endswith(".dist-info/METADATA"))).decode()
    return snames, wnames, meta


def test_sdist_holds_tests_bench_docs_and_licence(dists):
    snames, _, _ = dists
    for f in ("LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
              ".gitignore", ".ci/run", "lazyvm/core/fork.pyx", "lazyvm/core/defs.pxd",
              "lazyvm/py.typed", "tests/conftest.py", "tests/vmhelpers.py",
              "bench/conftest.py", "bench/benchlib.py", "docs/SEED.md", "docs/JSON.md",
              "docs/DESIGN.md", "docs/KERNEL-NOTES.md"):
        assert f in snames, f
    # Every test and benchmark of the tree, so the suite runs from the sdist.
    for sub in ("tests", "bench"):
        for f in (ROOT / sub).rglob("*.py"):
            assert f.relative_to(ROOT).as_posix() in snames, f
    assert not [n for n in snames if n.endswith((".so", ".c", ".html"))], snames


def test_wheel_has_the_core_and_no_generated_c(dists):
    _, wnames, meta = dists
    for mod in ("api", "check", "fork"):
        assert any(re.fullmatch(rf"lazyvm/core/{mod}\..*\.so", n) for n in wnames), wnames
    assert "lazyvm/py.typed" in wnames and "lazyvm/core/api.pyi" in wnames
    assert "lazyvm/core/defs.pxd" in wnames
    assert not [n for n in wnames if n.endswith((".c", ".html"))]
    assert not [n for n in wnames if n.startswith(("tests/", "bench/"))]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wnames), wnames
    assert "License-Expression: MIT" in meta
    assert "Classifier: Operating System :: POSIX :: Linux" in meta
