"""The compiled core's definitions: the counters are declared once (defs.pxd's enum) and
the Python names come from that declaration, in its order."""
import re
from pathlib import Path

import lazyvm
import lazyvm.core
from lazyvm.core import defs

PXD = Path(lazyvm.core.__file__).parent / "defs.pxd"


def _enum_members():
    """The members of the counter enum, in the order defs.pxd lists them."""
    text = PXD.read_text()
    body = text.split("cpdef enum:", 1)[1]
    names = []
    for line in body.splitlines()[1:]:
        if not line.startswith("    "):
            break
        m = re.match(r"\s+(ST_\w+)\s*(=)?", line)
        assert m, line
        assert not m.group(2), f"{line.strip()}: counters are numbered by Cython, not by hand"
        names.append(m.group(1))
    return names


def test_counter_names_follow_the_enum_order():
    members = _enum_members()
    assert members[-1] == "ST_NAMED"
    assert lazyvm.core.COUNTER_NAMES == tuple(n[3:].lower() for n in members[:-1])
    # and the values are 0, 1, 2, ... in that order
    assert [getattr(defs, n) for n in members] == list(range(len(members)))


def test_stats_and_views_name_every_counter_once():
    m = lazyvm.Machine(memory=8 << 20)
    names = lazyvm.core.COUNTER_NAMES
    assert len(set(names)) == len(names)
    st = m.stats()
    for n in names:
        assert n in st, n
    assert list(m._core.views()["counters"]) == list(names)


def test_counters_count_where_they_should():
    m = lazyvm.Machine(memory=8 << 20, fork_mode="copy")
    p = m.spawn()
    a = p.mmap(1 << 20)
    p.touch(a, 1 << 20, write=True)
    c = p.fork()
    c.write(a, b"x")
    st = m.stats()
    assert st["forks"] == st["forks_copy"] == 1
    assert st["ptes_copied"] == 256
    assert st["cow_copies"] == 1
    assert st["demand_zero"] == 256
