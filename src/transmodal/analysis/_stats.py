"""Multiple-testing adjustment and the hypergeometric overlap test."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats


def benjamini_hochberg(pvals: Any) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaNs kept as NaN.

    ``p_adj[(i)] = min_{j >= i} min(1, m * p_(j) / j)`` over the ``m`` non-missing p-values
    sorted increasingly (``scipy.stats.false_discovery_control(p, method="bh")`` on the
    non-missing values).

    Parameters
    ----------
    pvals
        P-values in ``[0, 1]`` (any shape; NaN allowed).

    Returns
    -------
    Adjusted p-values, same shape as ``pvals``.
    """
    p = np.asarray(pvals, dtype=np.float64)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def overlap_pvalue(n_overlap: int, n_universe: int, n_a: int, n_b: int) -> float:
    """One-sided hypergeometric p-value ``P(X >= n_overlap)`` of two random subsets of
    sizes ``n_a`` and ``n_b`` of a universe of ``n_universe`` items sharing that many."""
    if n_overlap <= 0:
        return 1.0
    return float(stats.hypergeom.sf(n_overlap - 1, n_universe, n_a, n_b))
