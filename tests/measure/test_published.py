"""McCracken's 2002 process and Morton's corrected figure, predicted by the refit
linux-2.5.41 profile (fitted to the unshared columns only)."""
from lazyvm import Machine
from lazyvm.costs import load_profile
from lazyvm.measure import published as pub


def test_the_segment_shares_libcs_table_for_about_700_pages():
    n = pub.libc_table_shm_pages()
    assert 650 <= n <= 750
    m = Machine(memory=64 << 20, fork_mode="copy")
    p = m.spawn()
    where = pub.build_2002(p)
    shm = p.mmap(4 << 20, shared=True, addr=where["shm"])
    assert shm >> 22 == pub.LIB_BASE >> 22                 # starts under libc's table
    assert ((shm + n * 4096) >> 22) == (pub.LIB_BASE >> 22) + 1
    # the three written pages lie under three different tables
    assert len({a >> 22 for a in pub._written(where)}) == 3


def test_shared_column_predicted_from_the_unshared_fit():
    cells = pub.cell_counts()
    prof = pub.fit_2541(cells)
    text, d = pub.report(prof, cells, odf_profile=None)
    within = [r for r in d["cells"] if abs(r["error_shared"]) <= 0.20]
    assert len(within) >= 7, text
    for r in d["ratios_40M"]:
        assert r["within_1.3x"], r
    by = {(r["size"], r["loop"]): r for r in d["cells"]}
    for loop in pub.LOOPS:                  # 4M and 40M shared: the same three unshares
        assert by[("4M", loop)]["counts"]["share+rmap"]["ptes_copied"] == \
            by[("40M", loop)]["counts"]["share+rmap"]["ptes_copied"]
    # McCracken's small process: sharing slower than copying, as published
    small = by[("400K", "fork+exec+exit")]["predicted_ms"]
    assert small["share+rmap"] > small["copy+rmap"]
    # the cell no assumption explains is named
    assert any(m["cell"] == ["400K", "fork"] and "no assumption explains" in m["text"]
               for m in d["misses"])
    for a in pub.ASSUMPTIONS:
        assert a in text


def test_morton_is_quoted_as_published_and_set_beside_the_counts():
    text, d = pub.report("linux-2.5.41", odf_profile=None)
    assert "19.29" in text and "19.93" in text and "+3.3%" in text
    assert "2.4 against 2.5 with sharing" in text
    assert "+18%" not in text
    mo = d["morton"]
    ticks = {r["ticks"]: r["morton"] for r in mo["rows"]}
    assert ticks["clear_page_tables"] == 172 and ticks["page_add_rmap"] == 134
    assert ticks["page_remove_rmap"] == 111 and ticks["pte_unshare - copy_page_range"] == 76
    assert mo["delta_ns"] > 0                       # sharing slower, from the counts
    sp = d["small_process"]
    assert sp["share+rmap"]["counts"]["unshares"] == 3
    assert mo["entries_copied"]["share"] == mo["entries_copied"]["copy"]


def test_shipped_profile_records_the_assumptions():
    prof = load_profile("linux-2.5.41")
    assert prof.meta["assumptions"] == list(pub.ASSUMPTIONS)
    assert prof.meta["writer"] == pub.WRITER
