"""A user's script type-checks under mypy --strict against lazyvm's annotations
(issue 8: type annotations on the public API, .pyi stubs of the compiled modules)."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent('''
    from typing import Dict, List, Optional, Tuple
    import numpy as np
    import lazyvm
    from lazyvm import Machine, Process, OutOfMemory, SegmentationFault

    m: Machine = Machine(memory=16 << 20, fork_mode="copy", rmap=True, swap=1 << 20,
                         layout="x86_64", share_level=2, contents=True)
    p: Process = m.spawn()
    a: int = p.mmap(1 << 20, prot="rw", shared=False)
    p.write(a, b"data")
    data: bytes = p.read(a, 4)
    p.touch(a, 1 << 20, write=True)
    p.touch_pages(np.array([a], dtype=np.int64), write=False)
    c: Process = p.fork(mode="share")
    walk: List[Tuple[int, int, int, int]] = c.walk(a)
    phys: Optional[int] = c.translate(a)
    entry: int = c.pte(a) | c.pde(a)
    s: Dict[str, int] = m.stats()
    ps: Dict[str, int] = c.stats()
    view: np.ndarray = m.table(c.pgd)
    kind: str = m.frame_kind(c.pgd)
    slots: List[Tuple[int, int]] = m.rmap(0)
    freed: int = m.reclaim(1)
    kids: List[Process] = m.replay(np.zeros((0, 4), dtype=np.int64))
    for v in p.vmas:
        start: int = v.start
        prot: str = v.prot
    c.exit(); p.munmap(a, 4096); p.mprotect(a + 4096, 4096, "r"); p.exec()
    m.check()
    version: str = lazyvm.__version__
''')


def test_user_script_passes_mypy_strict(tmp_path):
    if shutil.which("mypy") is None and subprocess.run(
            [sys.executable, "-m", "mypy", "--version"], capture_output=True).returncode:
        pytest.skip("mypy is not installed (pip install mypy)")
    script = tmp_path / "user.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    # --follow-imports=silent: as for an installed package, mypy reads lazyvm's types but
    # reports only the user's own script
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                        "--follow-imports=silent", "--cache-dir", str(tmp_path / "cache"),
                        str(script)],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={"MYPYPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout + r.stderr
