"""Least-squares fits of kernel costs, and the fork time they predict.

:func:`fit` is weighted least squares with standard errors; :func:`fit_nonneg` the same
with every coefficient kept at zero or above (a cost is never negative), used for the
published figures as well as this machine's calibration; :func:`predict_fork_ns` prices a
copy fork of a process with V VMAs, A of them with an anon_vma, P copied PTEs and T
tables; :func:`stretch_of` is the wall/CPU stretch of a run's forks and :func:`stretch`
the one a profile records.
"""

import itertools

import numpy as np


class CalibrationError(RuntimeError):
    pass


def fit(X, y, weights=None):
    """Weighted least squares y ~ X b.  Returns dict: coef, se (standard errors,
    sqrt(diag(s^2 (X'WX)^-1)) with s^2 the weighted residual variance), residuals
    (y - X b, unweighted), rel_residuals, dof.  With as many rows as columns the
    standard errors are undefined: NaN."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    coef, _, rank, _ = np.linalg.lstsq(Xw, yw, rcond=None)
    if rank < X.shape[1]:
        raise CalibrationError(f"the shapes do not separate the costs (rank {rank} "
                               f"of {X.shape[1]})")
    res = y - X @ coef
    dof = X.shape[0] - X.shape[1]
    if dof > 0:
        s2 = float(((res * sw) ** 2).sum()) / dof
        cov = s2 * np.linalg.inv(Xw.T @ Xw)
        se = np.sqrt(np.diag(cov))
    else:
        cov = np.full((X.shape[1], X.shape[1]), np.nan)
        se = np.full(X.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(y != 0, res / y, np.nan)
    return {"coef": coef, "se": se, "cov": cov, "residuals": res, "rel_residuals": rel,
            "dof": dof}


def fit_nonneg(X, y, weights=None):
    """`fit` with every coefficient >= 0: the feasible subset of free coefficients with
    the least weighted residual (exact for the handful of columns used here; 2**k
    solves).  Adds "pinned": the columns held at 0.  A pinned column's standard error
    is the one the unconstrained fit gives it (what the data say about it)."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    k = X.shape[1]
    free_all = fit(X, y, w)
    if (free_all["coef"] >= 0).all():
        return dict(free_all, pinned=[])
    # the covariance: the free columns' from their fit, a pinned column's variance the
    # unconstrained fit's, uncorrelated with the rest
    best = None
    for r in range(k - 1, 0, -1):
        for cols in itertools.combinations(range(k), r):
            try:
                f = fit(X[:, cols], y, w)
            except CalibrationError:
                continue
            if (f["coef"] < 0).any():
                continue
            rss = float((f["residuals"] ** 2 * w).sum())
            if best is None or rss < best[0]:
                best = (rss, cols, f)
    if best is None:
        raise CalibrationError("no non-negative fit")
    _, cols, f = best
    coef = np.zeros(k)
    se = np.array(free_all["se"], dtype=float)
    coef[list(cols)] = f["coef"]
    se[list(cols)] = f["se"]
    cov = np.diag(se ** 2)
    cov[np.ix_(list(cols), list(cols))] = f["cov"]
    res = y - X @ coef
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(y != 0, res / y, np.nan)
    return {"coef": coef, "se": se, "cov": cov, "residuals": res, "rel_residuals": rel,
            "dof": X.shape[0] - len(cols), "pinned": [j for j in range(k) if j not in cols]}


def predict_fork_ns(profile, V, A, P, T):
    """Predicted CPU ns of a copy fork of a process with V VMAs (A of them with an
    anon_vma), P copied PTEs and T tables (each both copied and allocated)."""
    c = profile.costs
    return (c["forks_copy"] + c["fork_vmas"] * V + c["fork_anon_vmas"] * A
            + c["ptes_copied"] * P + (c["tables_copied"] + c["tables_allocated"]) * T)


def stretch_of(rows, floor_ns=1_000_000):
    """The wall/CPU stretch of forks: for each fork of each row (dicts with "fork_ns"
    and "fork_wall_ns" lists), its wall time over the row's minimum CPU time (the
    fork's own cost), over the rows whose fork costs at least floor_ns of CPU (below
    it the clocks' own overhead dominates; all rows if none does).
    {"median", "q1", "q3", "min", "max", "n"}."""
    import statistics
    big = [r for r in rows if r["fork_ns"] and min(r["fork_ns"]) >= floor_ns] or rows
    ratios = sorted(w / min(r["fork_ns"]) for r in big for w in r["fork_wall_ns"]
                    if min(r["fork_ns"]) > 0)
    if not ratios:
        return {"median": 1.0, "q1": 1.0, "q3": 1.0, "min": 1.0, "max": 1.0, "n": 0}
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"median": float(statistics.median(ratios)), "q1": float(q[0]),
            "q3": float(q[2]), "min": float(ratios[0]), "max": float(ratios[-1]),
            "n": len(ratios)}


def stretch(profile):
    """The wall/CPU stretch recorded in `profile` (its median), or None."""
    st = (profile.meta or {}).get("stretch")
    return float(st["median"]) if isinstance(st, dict) and "median" in st else None
