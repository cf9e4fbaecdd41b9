"""The floors of the package: each imports only from the floors below it.

    0  lazyvm.errors, lazyvm.layout       exceptions; the layouts, entry bits, PAGE, limits
    1  lazyvm.core (compiled)             frames, tables, fork, faults, rmap, swap
    2  lazyvm.vma, lazyvm.costs           VMAs; cost profiles
    3  lazyvm.machine, .process, lazyvm   the model: Machine and Process
    4  lazyvm.measure                     host forks, calibration, fits, published figures
    5  lazyvm.report                      text, JSON, plots: formatting only
    6  lazyvm.workloads | lazyvm.view     the workload registry and runners | the view
    7  lazyvm.commands, lazyvm.__main__   the command line

A module may import any module of a lower floor and the modules of its own package;
two packages on one floor (vma and costs, workloads and view) do not import each other.
Imports inside functions count the same as those at the top.  The one exception is
Machine._repr_html_, which imports the view when a notebook asks for a machine's
picture (machine.py says why where it does).

Every ``import`` statement of every .py file under lazyvm/ is read with ``ast``; run as
a script (``python tests/packaging/test_layers.py [ROOT]``) it prints the breaks of the
tree at ROOT.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (floor, group): a module's group is its package, or itself for a top-level module.
FLOORS = {
    "lazyvm.errors": 0, "lazyvm.layout": 0,
    "lazyvm.core": 1, "lazyvm._core": 1, "lazyvm._check": 1,
    "lazyvm.vma": 2, "lazyvm.costs": 2,
    "lazyvm.machine": 3, "lazyvm.process": 3, "lazyvm": 3,
    "lazyvm.measure": 4,
    "lazyvm.report": 5,
    "lazyvm.workloads": 6, "lazyvm.view": 6,
    "lazyvm.commands": 7, "lazyvm.__main__": 7,
}

# (importing module, function, imported module): the imports allowed to go up.
EXCEPTIONS = {("lazyvm.machine", "_repr_html_", "lazyvm.view")}


# Names that are one group with another: the front (lazyvm/__init__.py) re-exports the
# model, which is machine.py and process.py; ``python -m lazyvm`` is the command line; the compiled core's modules.
SAME = {"lazyvm": "lazyvm.machine", "lazyvm.process": "lazyvm.machine",
        "lazyvm.__main__": "lazyvm.commands",
        "lazyvm._core": "lazyvm.core", "lazyvm._check": "lazyvm.core"}


def group_of(module: str, floors=FLOORS) -> str | None:
    """The entry of `floors` a dotted module name belongs to (the longest prefix but
    the bare package name, which is only itself), as its group."""
    parts = module.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        if name in floors and (k > 1 or module == name):
            return SAME.get(name, name)
    return None


def _modules(root: Path) -> dict:
    """dotted name -> path of every .py file of the package under root/lazyvm."""
    out = {}
    for path in sorted((root / "lazyvm").rglob("*.py")):
        rel = path.relative_to(root).with_suffix("").parts
        if rel[-1] == "__init__":
            rel = rel[:-1]
        out[".".join(rel)] = path
    return out


class _Imports(ast.NodeVisitor):
    """(imported module, enclosing function or None, line) of every import."""

    def __init__(self, module: str, is_package: bool, known: set):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.found: list = []
        self.func: list = []

    def _visit_func(self, node):
        self.func.append(node.name)
        self.generic_visit(node)
        self.func.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _visit_func

    def _add(self, name, node):
        self.found.append((name, self.func[-1] if self.func else None, node.lineno))

    def visit_Import(self, node):
        for a in node.names:
            self._add(a.name, node)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        for a in node.names:
            sub = f"{mod}.{a.name}"
            self._add(sub if sub in self.known else mod, node)


def imports(root: Path = ROOT) -> list:
    """(importer, function or None, imported, file, line) of every import of lazyvm by
    lazyvm under root."""
    mods = _modules(root)
    known = set(mods)
    out = []
    for name, path in mods.items():
        v = _Imports(name, path.name == "__init__.py", known)
        v.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for target, func, line in v.found:
            if target == "lazyvm" or target.startswith("lazyvm."):
                out.append((name, func, target, path.relative_to(root), line))
    return out


def breaks(root: Path = ROOT, floors=FLOORS, exceptions=EXCEPTIONS) -> list:
    """One line per import that goes up a floor, sideways to another package of the
    same floor, or into a module no floor names."""
    out = []
    for importer, func, target, path, line in imports(root):
        a, b = group_of(importer, floors), group_of(target, floors)
        where = f"{path}:{line} {importer} imports {target}"
        if a is None or b is None:
            out.append(f"{where}: {importer if a is None else target} is on no floor")
        elif a == b or (importer, func, b) in exceptions:
            continue
        elif floors[b] >= floors[a]:
            how = "up" if floors[b] > floors[a] else "sideways"
            out.append(f"{where}: {how} from floor {floors[a]} ({a}) to {floors[b]} ({b})"
                       + (f" inside {func}()" if func else ""))
    return out


def hidden(root: Path = ROOT, exceptions=EXCEPTIONS) -> list:
    """Imports of lazyvm inside functions, but for the exceptions."""
    return [f"{path}:{line} {importer}.{func}() imports {target}"
            for importer, func, target, path, line in imports(root)
            if func is not None
            and (importer, func, group_of(target)) not in exceptions]


needs_tree = pytest.mark.skipif(not (ROOT / "lazyvm" / "machine.py").is_file(),
                                reason="no lazyvm source tree beside the tests")


@needs_tree
def test_every_import_goes_down_a_floor():
    assert breaks() == []


@needs_tree
def test_no_import_of_lazyvm_is_hidden_in_a_function():
    assert hidden() == []


@needs_tree
def test_nothing_imports_the_commands():
    users = {i for i, _, t, _, _ in imports() if group_of(t) == "lazyvm.commands"}
    assert users <= {m for m in users if group_of(m) in ("lazyvm.commands",
                                                         "lazyvm.__main__")}


@needs_tree
def test_every_module_is_on_a_floor():
    assert [m for m in _modules(ROOT) if group_of(m) is None] == []


def test_the_checker_finds_an_import_up_and_one_sideways(tmp_path):
    """The checker itself: a tree whose machine imports measure (up, inside a function)
    and whose view imports workloads (sideways) gives exactly those two."""
    pkg = tmp_path / "lazyvm"
    for d in ("", "measure", "view", "workloads"):
        (pkg / d).mkdir(exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "machine.py").write_text("from . import errors\n\ndef f():\n"
                                    "    from .measure import host\n")
    (pkg / "measure" / "host.py").write_text("from ..machine import f\n")
    (pkg / "view" / "draw.py").write_text("from lazyvm.workloads import x\n")
    found = breaks(tmp_path)
    assert len(found) == 2, found
    assert "up from floor 3 (lazyvm.machine) to 4 (lazyvm.measure) inside f()" in found[0]
    assert "sideways from floor 6 (lazyvm.view) to 6 (lazyvm.workloads)" in found[1]
    assert hidden(tmp_path) == ["lazyvm/machine.py:4 lazyvm.machine.f() imports "
                                "lazyvm.measure.host"]


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    found = breaks(root) + hidden(root)
    print("\n".join(found) or "no breaks")
    sys.exit(1 if found else 0)
