"""The workloads `lazyvm run` runs outside the simulator's loop: each runs real
processes or a grid of its own and returns (text, record) itself.  With
lazyvm.workloads.builtin.WORKLOADS they make the one registry of workload names."""
from __future__ import annotations

from ..layout import LAYOUTS
from ..machine import CONFIGS
from . import breakeven, redis


class External:
    """A named workload that runs outside the simulator's loop: `run(params)` returns
    (text, record) itself (`lazyvm run NAME` prints the text).  Its parameters are its
    module's DEFAULTS, its --quick ones DEFAULTS updated by QUICK."""

    def __init__(self, name, module, runner, doc):
        self.name = name
        self._module = module            # the module that holds DEFAULTS, QUICK, runner
        self._runner = runner
        self.__doc__ = doc

    def _mod(self):
        return self._module

    @property
    def defaults(self):
        return dict(self._mod().DEFAULTS)

    @property
    def quick(self):
        return dict(self.defaults, **self._mod().QUICK, quick=True)

    def run(self, params):
        return getattr(self._mod(), self._runner)(params)

    def __repr__(self):
        return "<external workload %s>" % self.name


EXTERNAL = {w.name: w for w in [
    External("redis-bgsave", redis, "run_redis_bgsave",
             "A real Redis BGSAVE (redis-server, DEBUG POPULATE, under a "
             "redis-benchmark SET load) captured from /proc and replayed in every "
             "configuration, beside Redis's latest_fork_usec and rdb_last_cow_size and "
             "the kernel's VmPTE. Needs redis-server and redis-benchmark."),
    External("breakeven", breakeven, "run_breakeven",
             "Where sharing page tables at fork wins: copy, share, share-eager, odf, "
             "odf-eager and share-l2, with 4 KiB pages and THP, over resident size, the "
             "fraction written after fork, clustered or uniform writes, and a child that "
             "execs or lives; predicted parent fork latency, first-write latency, total "
             "kernel time and page-table memory (contents=False, x86_64). -p plot=FILE.png "
             "draws the heat maps."),
]}


def check_external_params(name, params, quick=False):
    """The -p parameters of external workload `name`, checked against its DEFAULTS: a
    key it has, and a value of the kind its default is (a positive integer, a positive
    number, True or False, text; layout one of the layouts, configs names of CONFIGS,
    out a file name).  Returns them with quick=True added for --quick.  Raises
    ValueError with a one-line message."""
    w = EXTERNAL[name]
    defaults = w.defaults
    out = {}
    for key, value in params.items():
        if key not in defaults:
            raise ValueError("workload %s has no parameter %r (it takes %s)"
                             % (name, key, ", ".join(defaults)))
        d = defaults[key]
        if key == "layout":
            ok, want = value in LAYOUTS, "one of " + ", ".join(LAYOUTS)
        elif key == "configs":
            names = ([c for c in value.replace(" ", "").split(",") if c]
                     if isinstance(value, str) else value)
            ok = (isinstance(names, (list, tuple)) and bool(names)
                  and all(c in CONFIGS for c in names))
            want = "configuration names (%s), comma-separated" % ", ".join(CONFIGS)
            if ok:
                value = list(names)
        elif key in ("out", "costs"):
            ok, want = isinstance(value, str) and bool(value), "a file name" if (
                key == "out") else "a cost profile name or path"
        elif isinstance(d, bool):
            ok, want = isinstance(value, bool), "True or False"
        elif isinstance(d, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            want = "a positive integer"
        elif isinstance(d, float):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
                  and value > 0)
            want = "a positive number"
        elif isinstance(d, str) and isinstance(value, (int, float, tuple, list)) \
                and not isinstance(value, bool):
            # -p KEY=0 or KEY=0,1 read as a number or a tuple: a comma-separated list
            items = value if isinstance(value, (tuple, list)) else [value]
            ok = all(isinstance(v, (int, float, str)) and not isinstance(v, bool)
                     for v in items)
            want = "a str (a comma-separated list)"
            if ok:
                value = ",".join(str(v) for v in items)
        else:
            ok, want = isinstance(value, type(d)), "a %s" % type(d).__name__
        if not ok:
            raise ValueError("parameter %s=%r of workload %s: must be %s"
                             % (key, value, name, want))
        out[key] = value
    if quick:
        out["quick"] = True
    return out
