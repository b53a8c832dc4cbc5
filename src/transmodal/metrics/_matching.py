"""Paired-cell matching metrics: FOSCTTM, partner top-k and k-NN accuracy."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._chunked import (
    _BlockDistance,
    check_ks,
    check_metric,
    check_paired,
    count_before,
    nearest,
    resolve_chunk_size,
)


def _partner_ranks(q: np.ndarray, r: np.ndarray, chunk_size: int | None) -> np.ndarray:
    """For every row i: number of rows of ``r`` strictly closer (Euclidean) to ``q_i``
    than its partner ``r_i``.
    """
    dist = _BlockDistance(q, r, "euclidean")
    diag = np.arange(q.shape[0], dtype=np.int64)
    thr = dist.exact(diag, diag)
    return count_before(dist, thr, tie_before=None, exclude=diag, chunk_size=chunk_size)


def foscttm(
    x: np.ndarray,
    y: np.ndarray,
    *,
    chunk_size: int | None = None,
    return_per_cell: bool = False,
) -> float | tuple[float, np.ndarray, np.ndarray]:
    """Fraction Of Samples Closer Than the True Match (lower is better).

    For each cell ``i`` the fraction of the ``n - 1`` other rows of ``y`` that are
    *strictly* closer (Euclidean) to ``x[i]`` than its partner ``y[i]``; likewise for
    ``y[i]`` against the rows of ``x``.  Rows at exactly the partner's distance (ties,
    e.g. duplicated cells) are not counted.

    Parameters
    ----------
    x, y
        Paired embeddings of shape ``(n_cells, n_dims)``; row ``i`` of both is the same
        cell.  ``n_cells >= 2``.
    chunk_size
        Query rows processed at once (memory ``O(chunk_size * n_cells)``); ``None``
        picks about 64 MiB per block.
    return_per_cell
        Also return the per-cell fractions of both directions.

    Returns
    -------
    The mean of the two directions' averages (0 = perfect, about 0.5 = random), or
    ``(value, per_cell_x, per_cell_y)`` if ``return_per_cell``.
    """
    xa, ya = check_paired(x, y, min_rows=2)
    n = xa.shape[0]
    fx = _partner_ranks(xa, ya, chunk_size) / (n - 1)
    fy = _partner_ranks(ya, xa, chunk_size) / (n - 1)
    value = float(0.5 * (fx.mean() + fy.mean()))
    if return_per_cell:
        return value, fx, fy
    return value


def partner_in_top_k(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | Iterable[int] = (1, 5, 10, 50),
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Fraction of cells whose true partner is among the ``k`` nearest other-modality rows.

    The rank of the partner of ``x[i]`` is the number of rows of ``y`` strictly closer
    (Euclidean) than ``y[i]`` (ties count in the cell's favour); it is a hit if
    ``rank < k``.  Both directions (``x -> y`` and ``y -> x``) are averaged.

    Parameters
    ----------
    x, y
        Paired embeddings of shape ``(n_cells, n_dims)``.
    k
        One or several neighbourhood sizes; values larger than ``n_cells`` are clipped
        to ``n_cells``.
    chunk_size
        Query rows processed at once; ``None`` picks about 64 MiB per block.

    Returns
    -------
    ``{k: fraction}`` for every requested ``k`` (1 = perfect).
    """
    ks = check_ks(k)
    xa, ya = check_paired(x, y)
    n = xa.shape[0]
    rx = _partner_ranks(xa, ya, chunk_size)
    ry = _partner_ranks(ya, xa, chunk_size)
    out: dict[int, float] = {}
    for kk in ks:
        kc = min(kk, n)
        out[kk] = float(0.5 * (np.mean(rx < kc) + np.mean(ry < kc)))
    return out


def _knn_positions(
    a: np.ndarray, nn: np.ndarray, metric: str, chunk_size: int | None
) -> np.ndarray:
    """Position of ``nn[i]`` (``nn_A(b_i)``) in the stable neighbour order of ``a_i`` among
    ``a``."""
    d_aa = _BlockDistance(a, a, metric)
    thr = d_aa.exact(np.arange(a.shape[0], dtype=np.int64), nn)
    return count_before(d_aa, thr, tie_before=nn, exclude=nn, chunk_size=chunk_size)


def _knn_arguments(
    x: np.ndarray, y: np.ndarray, k: int | Iterable[int], metric: str
) -> tuple[tuple[int, ...], str, np.ndarray, np.ndarray, int]:
    """Checked ``(ks, metric, x, y, n_cells)`` of the k-NN accuracy functions."""
    ks = check_ks(k)
    met = check_metric(metric)
    xa, ya = check_paired(x, y)
    n = xa.shape[0]
    if max(ks) > n:
        raise ValueError(f"k={max(ks)} is larger than the number of cells ({n})")
    return ks, met, xa, ya, n


def knn_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
) -> dict[str, dict[int, float]]:
    """k-NN accuracy of Yang et al. (2021, Nat. Commun., cross-modal autoencoders).

    For a direction with reference modality ``A`` and query modality ``B``: for each
    cell ``i`` take the nearest ``A`` row to ``B[i]``; it is correct if it is among the
    ``k`` nearest ``A`` rows of ``A[i]`` (neighbours computed among *all* rows of ``A``,
    ``A[i]`` itself included).  Neighbour lists use a stable order: among equal
    distances the lower row index comes first (also for the nearest-row search).

    Parameters
    ----------
    x, y
        Paired embeddings of shape ``(n_cells, n_dims)``.
    k
        One or several neighbourhood sizes, each ``<= n_cells``.
    metric
        ``"l1"`` (manhattan, as in the paper) or ``"euclidean"``.
    chunk_size
        Query rows processed at once; ``None`` picks about 64 MiB per block.

    Returns
    -------
    ``{"x_to_y": {k: acc}, "y_to_x": {k: acc}, "mean": {k: acc}}`` where ``"x_to_y"``
    queries ``x`` cells against ``y`` (``A = y``, ``B = x``) and ``"y_to_x"`` queries
    ``y`` cells against ``x`` (``A = x``, ``B = y``).  1 = perfect.
    """
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=True, chance=False)[0]


def _knn_scores(
    x: np.ndarray,
    y: np.ndarray,
    k: int | Iterable[int],
    metric: str,
    chunk_size: int | None,
    *,
    accuracy: bool,
    chance: bool,
) -> tuple[dict[str, dict[int, float]] | None, dict[str, dict[int, float]] | None]:
    """:func:`knn_accuracy` and / or :func:`knn_accuracy_chance`, sharing one nearest-row
    search per direction."""
    ks, met, xa, ya, n = _knn_arguments(x, y, k, metric)
    acc: dict[str, dict[int, float]] = {}
    level: dict[str, dict[int, float]] = {}
    for key, ref, query in (("x_to_y", ya, xa), ("y_to_x", xa, ya)):
        nn = nearest(_BlockDistance(query, ref, met), chunk_size)
        if accuracy:
            pos = _knn_positions(ref, nn, met, chunk_size)
            acc[key] = {kk: float(np.mean(pos < kk)) for kk in ks}
        if chance:
            occurrence = _k_occurrence(ref, met, ks, chunk_size)
            level[key] = {kk: float(occurrence[kk][nn].mean() / n) for kk in ks}
    for scores in (acc, level):
        if scores:
            scores["mean"] = {kk: 0.5 * (scores["x_to_y"][kk] + scores["y_to_x"][kk]) for kk in ks}
    return (acc or None), (level or None)


def knn_accuracy_and_chance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """``(knn_accuracy(...), knn_accuracy_chance(...))`` in one pass: the nearest-row search
    of each direction is done once for both (same arguments and results)."""
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=True, chance=True)


def _k_occurrence(
    a: np.ndarray, metric: str, ks: tuple[int, ...], chunk_size: int | None
) -> dict[int, np.ndarray]:
    """``N_k(h)``: in how many rows' ``k`` nearest rows of ``a`` (the row itself included)
    row ``h`` appears, for every ``k`` in ``ks``. Neighbours are ranked by exact distance,
    the lower row first among equal ones (as :func:`knn_accuracy` ranks them): the block's
    approximate distances only choose the candidates, every row within rounding of its
    ``k``-th nearest."""
    dist = _BlockDistance(a, a, metric)
    n, k_max = a.shape[0], min(max(ks), a.shape[0])
    chunk = resolve_chunk_size(chunk_size, n, n)
    buf = dist.make_buffer(chunk)
    occurrence = {kk: np.zeros(n, dtype=np.int64) for kk in ks}
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        scores = dist.scores(s, e, buf)  # larger score = closer
        kth = np.partition(scores, n - k_max, axis=1)[:, n - k_max]  # k-th largest
        # exact_j within the k nearest  =>  S_j >= S_(k) - 2 tol
        r_idx, c_idx = np.nonzero(scores >= (kth - 2.0 * dist.tol(s, e))[:, None])
        exact = dist.exact(s + r_idx, c_idx)
        order = np.lexsort((c_idx, exact, r_idx))
        rows, cols = r_idx[order], c_idx[order]
        rank = np.arange(rows.size) - np.searchsorted(rows, rows)  # position within its row
        for kk in ks:
            occurrence[kk] += np.bincount(cols[rank < kk], minlength=n)
    return occurrence


def knn_accuracy_chance(
    x: np.ndarray,
    y: np.ndarray,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
) -> dict[str, dict[int, float]]:
    """The :func:`knn_accuracy` that the same embeddings score under a random pairing.

    :func:`knn_accuracy` rewards an embedding whose retrieved rows are *hubs* (rows that
    are among the ``k`` nearest neighbours of many rows, which high-dimensional spaces
    and predictions shrunk towards the mean produce), whether or not they belong to the
    right cell. This function gives the score's chance level for a given geometry: the
    expected accuracy when the pairing of the rows of ``x`` and ``y`` is replaced by a
    uniformly random one, keeping both embeddings. For a direction with reference ``A``
    and query ``B`` it equals ``mean_j N_k(nn_A(B[j])) / n``, where ``N_k(h)`` counts
    the rows of ``A`` whose ``k`` nearest ``A`` rows (themselves included) contain
    ``h``. Compare :func:`knn_accuracy` with this level, not with ``k / n``: on the 340
    sci-CAR A549 test cells (``benchmarks/a549_pairing.py``) MAGAN's embedding, 100 ATAC
    principal components, has a chance level of 0.24-0.28 at ``k = 50`` and the
    autoencoder's 16-dimensional latent 0.14, against ``k / n = 0.15``.

    Neighbour lists are ranked by exact distance, the lower row index first among equal
    ones, as in :func:`knn_accuracy` (whatever ``chunk_size``).

    Parameters
    ----------
    x, y
        Embeddings of shape ``(n_cells, n_dims)`` (same number of rows).
    k
        One or several neighbourhood sizes, each ``<= n_cells``.
    metric
        ``"l1"`` (manhattan, as in the paper) or ``"euclidean"``.
    chunk_size
        Rows processed at once; ``None`` picks about 64 MiB per block.

    Returns
    -------
    The structure of :func:`knn_accuracy`: ``{"x_to_y": {k: level}, "y_to_x": {k: level},
    "mean": {k: level}}``.
    """
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=False, chance=True)[1]
