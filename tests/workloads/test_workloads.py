"""lazyvm.workloads.builtin: every workload runs in every configuration, reports the documented
keys, and its counters say what the policy implies (one unshare per written table,
no unshare under copy, the same COW copies either way, ...)."""

import pytest

from lazyvm.workloads.builtin import (CONFIGS, COUNTER_KEYS, PEAK_KEYS, PUBLISHED, WORKLOADS,
                              format_results, run_workload)

# Tiny shapes: each workload, all four configurations, check() after every iteration.
TINY = {
    "fork_exit": dict(pages=1500, iterations=3),
    "fork_exec": dict(iterations=6),
    # 3,000 pages = 3 tables; writes fall in the first half: 2 tables.
    "snapshot": dict(pages=3000, write_fraction=0.01, write_span=0.5, iterations=2,
                     chunks=3),
    "prefork": dict(pages=2048, children=3, write_fraction=0.01, iterations=2),
    "small_fork": dict(iterations=40),
    "published": dict(big_iterations=2, small_iterations=6),
}

SHARE = [c for c, (mode, _) in CONFIGS.items() if mode == "share"]
COPY = [c for c, (mode, _) in CONFIGS.items() if mode == "copy"]


@pytest.fixture(scope="module")
def results():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run_workload(name, quick=True, check=True, **TINY[name])
        return cache[name]
    return get


def test_every_workload_has_a_tiny_shape():
    assert set(TINY) == set(WORKLOADS)


@pytest.mark.parametrize("name", sorted(TINY))
def test_keys_types_and_no_leak(results, name):
    r = results(name)
    assert r["workload"] == name
    assert set(r["configs"]) == set(CONFIGS)
    assert r["params"]["quick"] is True
    for cname, c in r["configs"].items():
        assert (c["fork_mode"], c["rmap"]) == CONFIGS[cname]
        for k in COUNTER_KEYS + PEAK_KEYS + ("iterations", "time_ns",
                                             "time_per_iteration_ns", "leaked_frames",
                                             "memory"):
            assert type(c[k]) is int, (cname, k, type(c[k]))
            assert c[k] >= 0, (cname, k, c[k])
        assert c["time_ns"] > 0 and c["iterations"] > 0
        assert c["leaked_frames"] == 0, cname
        assert c["frames_peak"] > 0 and c["page_tables_peak"] > 0
        assert c["loops"] and c["phases"]
        for group in ("loops", "phases"):
            for ph, s in c[group].items():
                assert set(s) == {"count", "total_ns", "mean_ns", "median_ns", "min_ns",
                                  "q1_ns", "q3_ns", "max_ns", "wide"}
                assert type(s["wide"]) is bool
                assert all(type(v) is int and v >= 0 for k, v in s.items()
                           if k != "wide"), (ph, s)
                # Every timed figure carries its spread.
                assert s["min_ns"] <= s["q1_ns"] <= s["median_ns"] <= s["q3_ns"] <= s["max_ns"]
                assert s["count"] > 0
        assert sum(s["total_ns"] for s in c["loops"].values()) > 0
        # The phases partition the measured time.
        assert sum(s["total_ns"] for s in c["phases"].values()) == c["time_ns"]
        assert sum(s["count"] for s in c["loops"].values()) == c["iterations"]
        if not c["rmap"]:
            assert c["pte_chain_nodes_peak"] == 0, cname
        assert c["forks"] >= c["iterations"]
        for k in ("swap_ins", "shmem_faults"):
            assert c[k] == 0, (cname, k)
    for cname in COPY:
        assert r["configs"][cname]["unshares"] == 0, cname
        assert r["configs"][cname]["unshare_reuses"] == 0, cname
        assert r["configs"][cname]["tables_dropped"] == 0, cname
    text = format_results(r)
    assert name in text
    for cname in CONFIGS:
        assert cname in text


def test_fork_exit(results):
    r = results("fork_exit")
    n, pages = TINY["fork_exit"]["iterations"], TINY["fork_exit"]["pages"]
    tables = r["info"]["tables"]
    cfg = r["configs"]
    for c in CONFIGS:
        assert cfg[c]["iterations"] == n
        assert cfg[c]["forks"] == n
        # Nobody writes after the fork: no fault at all.
        assert cfg[c]["faults"] == 0 and cfg[c]["cow_copies"] == 0, c
    for c in COPY:
        assert cfg[c]["ptes_copied"] == pages * n, c
    for c in SHARE:
        assert cfg[c]["ptes_copied"] == 0 and cfg[c]["unshares"] == 0, c
        # The child's exit drops one use of every table it shares: nothing else.
        assert cfg[c]["tables_dropped"] == tables * n, c
        assert cfg[c]["page_tables_peak"] < cfg["copy"]["page_tables_peak"]
        assert cfg[c]["frames_peak"] < cfg["copy"]["frames_peak"]
    # The first copy fork with rmap turns every direct slot into a chain.
    assert cfg["copy+rmap"]["pte_chain_nodes_peak"] >= pages
    assert cfg["share+rmap"]["pte_chain_nodes_peak"] == 0


def test_fork_exec(results):
    r = results("fork_exec")
    p = r["params"]
    n = p["iterations"]
    cmd = p["cmd_text"] + p["cmd_data"] + p["cmd_stack"]
    cfg = r["configs"]
    for c in CONFIGS:
        assert cfg[c]["iterations"] == n
        # The command image is demand-zero; the parent's one stack write is a COW copy
        # while the child still maps the page.
        assert cfg[c]["demand_zero"] == n * cmd, c
        assert cfg[c]["cow_copies"] == n * p["parent_writes"], c
    for c in SHARE:
        # Only the shell's stack table is written while shared.
        assert cfg[c]["unshares"] == n, c
        # Privatize copies the entries this mm's VMAs cover: the stack's.
        assert cfg[c]["ptes_copied"] == n * p["shell_stack"], c
    for c in COPY:
        assert cfg[c]["ptes_copied"] == n * r["info"]["shell_pages"], c


def test_snapshot(results):
    r = results("snapshot")
    n = TINY["snapshot"]["iterations"]
    info = r["info"]
    assert info["tables_written"] == 2 and info["tables"] == 3
    cfg = r["configs"]
    for c in CONFIGS:
        # Every parent write copies once; the child's reads find present pages.
        assert cfg[c]["cow_copies"] == info["pages_written"] * n, c
        assert cfg[c]["zero_page_maps"] == 0 and cfg[c]["demand_zero"] == 0, c
    for c in SHARE:
        assert cfg[c]["unshares"] > 0
        assert cfg[c]["unshares"] == info["tables_written"] * n, c
        assert cfg[c]["page_tables_peak"] < cfg["copy"]["page_tables_peak"], c
        assert cfg[c]["page_tables_peak"] < cfg["copy+rmap"]["page_tables_peak"], c
    assert (cfg["share+rmap"]["pte_chain_nodes_peak"]
            < cfg["copy+rmap"]["pte_chain_nodes_peak"])


def test_prefork(results):
    r = results("prefork")
    p = r["params"]
    n, k = p["iterations"], p["children"]
    info = r["info"]
    cfg = r["configs"]
    for c in CONFIGS:
        assert cfg[c]["forks"] == n * k, c
        assert cfg[c]["cow_copies"] == n * k * info["pages_written_per_child"], c
    for c in SHARE:
        assert cfg[c]["unshares"] == n * k * info["tables_written_per_child"], c


def test_small_fork(results):
    r = results("small_fork")
    n = TINY["small_fork"]["iterations"]
    cfg = r["configs"]
    assert r["info"]["tables_written_per_child"] == 3
    for c in CONFIGS:
        assert cfg[c]["cow_copies"] == 3 * n, c
        assert cfg[c]["faults"] == 3 * n, c
    for c in SHARE:
        # Each child's write unshares every table it writes under: three.
        assert cfg[c]["unshares"] == 3 * n, c
    for c in CONFIGS:
        # Fork copies 12 PTEs, or privatize copies the same 12 (its VMAs' entries).
        assert cfg[c]["ptes_copied"] == 3 * r["params"]["pages_per_area"] * n, c


def test_published(results):
    r = results("published")
    rows = r["published"]
    assert len(rows) == len(PUBLISHED) + 1
    for row, pub in zip(rows, PUBLISHED):
        assert row["shape"] == pub["shape"]
        assert (row["published_before_ms"], row["published_after_ms"]) == (
            pub["before_ms"], pub["after_ms"])
        assert set(row["sim_ratio"]) == {"share/copy", "share+rmap/copy+rmap"}
        # Each ratio with the range it takes inside the quartiles.
        assert all(v["lo"] <= v["ratio"] <= v["hi"] and v["lo"] > 0
                   for v in row["sim_ratio"].values())
        assert all(v > 0 for v in row["sim_ms"].values())
    assert rows[-1]["sim_ratio"]["copy+rmap/copy"]["ratio"] > 0
    # A 40 MB fork that copies 10,240 PTEs is slower than one that shares ~12 tables.
    assert rows[0]["sim_ratio"]["share/copy"]["ratio"] < 1
    assert rows[0]["sim_ratio"]["share+rmap/copy+rmap"]["ratio"] < 1
    text = format_results(r)
    for pub in PUBLISHED:
        assert pub["shape"] in text
        assert "%.1f -> %.1f ms" % (pub["before_ms"], pub["after_ms"]) in text
    assert "McCracken" in text and "Torvalds" in text


def test_one_configuration_and_defaults_are_quick_or_full():
    r = run_workload("fork_exit", configs=["share"], quick=True, pages=64, iterations=2)
    assert list(r["configs"]) == ["share"]
    assert "time vs share" in format_results(r)
    assert WORKLOADS["small_fork"].defaults["iterations"] == 10000
    assert WORKLOADS["small_fork"].quick["iterations"] == 1000
    r = WORKLOADS["small_fork"](quick=True, configs="copy", iterations=3)
    assert r["configs"]["copy"]["iterations"] == 3


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_workload("no_such_workload")
    with pytest.raises(ValueError):
        run_workload("fork_exit", configs=["copy", "lazy"], quick=True)
    with pytest.raises(TypeError):
        run_workload("fork_exit", quick=True, bogus=1)


def test_warmup_is_neither_timed_nor_counted():
    # The first copy fork with rmap turns each PageDirect frame into a chain node; the
    # node outlives the child's exit (removal never collapses back to direct), so later
    # forks allocate none. With warmup=1 that first fork is not counted.
    pages = 1500
    cold = run_workload("fork_exit", configs=["copy+rmap"], warmup=0, check=True,
                        pages=pages, iterations=2)["configs"]["copy+rmap"]
    warm = run_workload("fork_exit", configs=["copy+rmap"], warmup=1, check=True,
                        pages=pages, iterations=2)["configs"]["copy+rmap"]
    assert cold["iterations"] == warm["iterations"] == 2
    assert cold["forks"] == warm["forks"] == 2
    assert cold["chain_nodes_allocated"] == pages
    assert warm["chain_nodes_allocated"] == 0
    assert warm["pte_chain_nodes_peak"] == pages
    with pytest.raises(ValueError):
        run_workload("fork_exit", quick=True, warmup=-1)


def test_interleaved_and_sequential_runs_count_the_same():
    kw = dict(quick=True, pages=1024, children=2, write_fraction=0.02, iterations=2)
    a = run_workload("prefork", interleave=True, **kw)
    b = run_workload("prefork", interleave=False, **kw)
    assert a["info"] == b["info"]
    for c in CONFIGS:
        for k in COUNTER_KEYS + PEAK_KEYS + ("iterations", "leaked_frames"):
            assert a["configs"][c][k] == b["configs"][c][k], (c, k)


@pytest.mark.parametrize("name, params, words", [
    ("fork_exit", {"pages": "abc"}, ["pages", "integer"]),
    ("fork_exit", {"pages": 1.5}, ["pages", "integer"]),
    ("fork_exit", {"pages": True}, ["pages", "integer"]),
    ("fork_exit", {"iterations": 0}, ["iterations", ">= 1"]),
    ("fork_exit", {"pages": 786433}, ["pages", "786432"]),
    ("fork_exit", {"bogus": 1}, ["bogus", "pages, iterations"]),
    ("snapshot", {"write_fraction": 1.5}, ["write_fraction", "0 to 1"]),
    ("snapshot", {"write_span": 0}, ["write_span"]),
    ("prefork", {"children": -1}, ["children"]),
    ("prefork", {"pages": 786432, "children": 64}, ["MiB", "memory"]),
    ("fork_exec", {"parent_writes": 9}, ["parent_writes", "shell_stack"]),
    ("published", {"parent_stack_write": 1}, ["parent_stack_write", "True or False"]),
])
def test_check_params_refuses_with_one_line(name, params, words):
    """Every parameter is checked for its name, type and range, and the whole for its
    memory, before anything runs (0.1.0 took pages='abc' into the run and failed there
    with a traceback)."""
    from lazyvm.workloads.builtin import check_params
    with pytest.raises(ValueError) as e:
        check_params(name, params)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_check_params_accepts_and_fills_defaults():
    from lazyvm.workloads.builtin import check_params
    q = check_params("snapshot", {"write_fraction": 0, "pages": 4096}, quick=True)
    assert q == dict(WORKLOADS["snapshot"].quick, write_fraction=0, pages=4096)
    # An integer where the default is a float is a number all the same.
    assert check_params("snapshot", {"write_span": 1})["write_span"] == 1


def test_wide_spread_is_marked_in_the_report(results):
    """A figure whose quartiles are far apart is marked ~ and named below the table."""
    import copy
    r = copy.deepcopy(results("small_fork"))
    s = r["configs"]["share"]["loops"]["small_fork"]
    s.update(q1_ns=1, q3_ns=10 * s["median_ns"], wide=True)
    text = format_results(r)
    assert "~" in text and "spread wide" in text and "share small_fork" in text


@pytest.mark.parametrize("name", sorted(TINY))
def test_report_is_at_most_100_columns(results, name):
    for line in format_results(results(name)).splitlines():
        assert len(line) <= 100, line


def _fake_clock(durations):
    """A clock for fork_exit's body (three readings per iteration: before the fork,
    after it, after the exit) whose k-th iteration lasts durations(k) ns."""
    def gen():
        k = 0
        while True:
            base = k * 10**6
            yield base
            yield base + 1
            yield base + durations(k)
            k += 1
    g = gen()
    return lambda: next(g)


def test_a_wide_loop_takes_more_iterations_until_it_settles_or_says_not(monkeypatch):
    """With settle=True (what `lazyvm run` asks for) a loop whose times spread wide runs
    more iterations, up to MAX_FACTOR times as many, and records whether it settled."""
    from lazyvm.measure import host as measure
    from lazyvm.workloads import builtin as workloads

    def run(durations):
        monkeypatch.setattr(workloads, "_clock", _fake_clock(durations))
        r = run_workload("fork_exit", configs=["copy"], pages=64, iterations=4,
                         settle=True)
        return r, r["configs"]["copy"]

    # Steady: no extra iterations.
    r, c = run(lambda k: 100)
    assert c["iterations"] == 4 and c["settle"]["fork+exit"] == {"extra": 0,
                                                                  "settled": True}
    # Alternating 10 and 1000 ns for ever: up to 4x the iterations, then it says so.
    r, c = run(lambda k: 10 if k % 2 else 1000)
    assert c["iterations"] == measure.MAX_FACTOR * 4
    assert c["settle"]["fork+exit"] == {"extra": 12, "settled": False}
    assert c["forks"] == c["iterations"]  # the counters follow the iterations run
    text = format_results(r)
    assert "fork+exit +12 (still wide)" in text and "spread wide" in text
    # Wide at first (the 2 warm-up and 4 measured iterations), then steady: it settles.
    r, c = run(lambda k: 100 if k >= 6 or k % 2 else 1000)
    st = c["settle"]["fork+exit"]
    assert st["settled"] and 0 < st["extra"] < 12
    assert not c["loops"]["fork+exit"]["wide"]


# ---------------------------------------------------------------- predicted kernel time


def test_counter_keys_carry_every_priced_event_the_core_counts():
    from lazyvm import Machine
    from lazyvm.costs import EVENTS
    counted = set(Machine(memory=8 << 20).stats())
    assert {e for e in EVENTS if e in counted} <= set(COUNTER_KEYS)
    assert "forks_copy" in COUNTER_KEYS and "rmap_adds" in COUNTER_KEYS


@pytest.mark.parametrize("name", ["snapshot", "fork_exec"])
def test_same_run_twice_gives_identical_predictions(name):
    from lazyvm.costs import load_profile
    prof = load_profile("linux-2.5.41")
    a = run_workload(name, quick=True, costs=prof, **TINY[name])
    b = run_workload(name, quick=True, costs="linux-2.5.41", **TINY[name])
    assert a["predicted"] == b["predicted"]
    # ... while the simulator's own times differ from run to run
    assert [c["time_ns"] for c in a["configs"].values()] != \
        [c["time_ns"] for c in b["configs"].values()]
    for cname, c in a["configs"].items():
        p = a["predicted"]["configs"][cname]
        assert p["kernel_ns"] == prof.kernel_ns(c) > 0
        assert p["kernel_ns_per_iteration"] == p["kernel_ns"] // c["iterations"]
        assert p["missing"] == [e for e in prof.costs if e not in c]
    pc = a["predicted"]["configs"]
    assert a["predicted"]["share_rmap_over_copy_rmap"] == pytest.approx(
        pc["share+rmap"]["kernel_ns"] / pc["copy+rmap"]["kernel_ns"])
    assert "predicted kernel (" in format_results(a)


def test_no_costs_no_prediction():
    r = run_workload("fork_exit", quick=True, configs="copy", **TINY["fork_exit"])
    assert "predicted" not in r and "predicted kernel" not in format_results(r)
