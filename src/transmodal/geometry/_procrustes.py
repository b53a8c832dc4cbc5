"""Wasserstein-Procrustes: the rotation that best overlays two unpaired point clouds."""

from __future__ import annotations

import itertools

import numpy as np

from .._utils import check_int
from ..metrics._chunked import as_embedding


def _subsample(rng: np.random.Generator, x: np.ndarray, n: int) -> np.ndarray:
    return x if len(x) <= n else x[rng.choice(len(x), n, replace=False)]


def _refine(
    a: np.ndarray, b: np.ndarray, q: np.ndarray, n_iter: int
) -> tuple[np.ndarray, float]:
    """Alternate an exact transport plan and an orthogonal Procrustes fit, ``n_iter`` times
    or until the plan repeats (from then on every iteration would repeat the last)."""
    import ot

    wa = np.full(len(a), 1.0 / len(a))
    wb = np.full(len(b), 1.0 / len(b))
    last = None
    for _ in range(n_iter):
        plan = ot.emd(wa, wb, ot.dist(a @ q, b))
        if last is not None and np.array_equal(plan, last):
            break
        last = plan
        u, _, vt = np.linalg.svd(a.T @ plan @ b)
        q = u @ vt
    cost = ot.dist(a @ q, b)
    return q, float((ot.emd(wa, wb, cost) * cost).sum())


def wasserstein_procrustes(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_iter: int = 30,
    n_search: int = 500,
    n_refine: int = 1500,
    seed: int = 0,
) -> tuple[np.ndarray, float]:
    """Orthogonal ``Q`` minimising the Wasserstein distance between ``a @ Q`` and ``b``.

    Wasserstein-Procrustes (Grave et al., AISTATS 2019; Alvarez-Melis & Jaakkola 2018):
    alternate the exact optimal transport plan between the two clouds (POT's
    ``ot.emd``) and the orthogonal Procrustes rotation for that plan. The problem is
    non-convex, so when the axes of ``a`` and ``b`` are principal axes (as from
    :func:`landmark_isomap`), every one of the ``2^d`` sign flips is tried as a start
    (``n_iter // 3`` iterations on ``n_search`` random cells of each) and the best is
    refined (``n_iter`` iterations on ``n_refine`` cells).

    Parameters
    ----------
    a, b
        ``(n_a, d)`` and ``(n_b, d)`` point clouds (any numbers of rows, same ``d`` <= 10).
    n_iter
        Alternations of the refinement.
    n_search, n_refine
        Cells per cloud in the search and in the refinement (exact transport is
        ``O(n^3)``, so these stay small).
    seed
        Seed of the subsamples (an integer >= 0).

    Returns
    -------
    Q
        ``(d, d)`` orthogonal matrix.
    cost
        The mean squared distance of the optimal transport between ``a @ Q`` and ``b`` on
        the refinement cells.

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not a finite 2-D numeric array, they differ in columns or
        have more than 10, or ``n_iter`` / ``n_search`` / ``n_refine`` / ``seed`` is not an
        integer (>= 0 for ``n_iter`` and ``seed``, >= 1 for the others).
    """
    a = as_embedding(a, "a")
    b = as_embedding(b, "b")
    check_int(n_iter, "n_iter", minimum=0)
    check_int(n_search, "n_search", minimum=1)
    check_int(n_refine, "n_refine", minimum=1)
    check_int(seed, "seed", minimum=0)
    d = a.shape[1]
    if b.shape[1] != d:
        raise ValueError(f"a and b need the same number of columns, got {d} and {b.shape[1]}")
    if d > 10:
        raise ValueError(f"at most 10 dimensions (2^d sign flips are searched), got {d}")
    rng = np.random.default_rng(seed)
    sa, sb = _subsample(rng, a, n_search), _subsample(rng, b, n_search)
    best_q, best = np.eye(d), np.inf
    for signs in itertools.product((1.0, -1.0), repeat=d):
        q, cost = _refine(sa, sb, np.diag(signs), max(1, n_iter // 3))
        if cost < best:
            best_q, best = q, cost
    ra, rb = _subsample(rng, a, n_refine), _subsample(rng, b, n_refine)
    return _refine(ra, rb, best_q, n_iter)
