"""Paired-cell matching metrics: FOSCTTM, partner top-k and k-NN accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import torch

from ._chunked import (
    Searches,
    _BlockDistance,
    blocks,
    check_ks,
    check_metric,
    check_paired,
    count_block,
)

if TYPE_CHECKING:
    from ._chunked import EmbeddingLike


@overload
def foscttm(
    x: EmbeddingLike, y: EmbeddingLike, *, chunk_size: int | None = ...,
    return_per_cell: Literal[False] = ...,
) -> float: ...


@overload
def foscttm(
    x: EmbeddingLike, y: EmbeddingLike, *, chunk_size: int | None = ...,
    return_per_cell: Literal[True],
) -> tuple[float, np.ndarray, np.ndarray]: ...


def foscttm(
    x: EmbeddingLike,
    y: EmbeddingLike,
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
    return foscttm_of(Searches(xa, ya, chunk_size), return_per_cell=return_per_cell)


def foscttm_of(
    searches: Searches, *, return_per_cell: bool = False
) -> float | tuple[float, np.ndarray, np.ndarray]:
    """:func:`foscttm` of the paired embeddings of ``searches`` (at least 2 rows)."""
    n = searches.x.shape[0]
    rx, ry = searches.partner_ranks()
    fx, fy = rx / (n - 1), ry / (n - 1)
    value = float(0.5 * (fx.mean() + fy.mean()))
    if return_per_cell:
        return value, fx, fy
    return value


def partner_in_top_k(
    x: EmbeddingLike,
    y: EmbeddingLike,
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
    return partner_in_top_k_of(Searches(xa, ya, chunk_size), ks)


def partner_in_top_k_of(searches: Searches, ks: tuple[int, ...]) -> dict[int, float]:
    """:func:`partner_in_top_k` of the paired embeddings of ``searches`` (``ks`` checked)."""
    n = searches.x.shape[0]
    rx, ry = searches.partner_ranks()
    out: dict[int, float] = {}
    for kk in ks:
        kc = min(kk, n)
        out[kk] = float(0.5 * (np.mean(rx < kc) + np.mean(ry < kc)))
    return out


def _within_reference(
    a: np.ndarray, nn: np.ndarray, metric: str, ks: tuple[int, ...], chunk_size: int | None,
    *, accuracy: bool, chance: bool,
) -> tuple[np.ndarray | None, dict[int, np.ndarray] | None]:
    """What the k-NN scores need of the distances among the reference rows ``a``, in one
    pass over them: the position of ``nn[i]`` (``nn_A(b_i)``) in the stable neighbour order
    of ``a_i`` among ``a`` (``accuracy``), and :func:`_occurrence_block`'s counts
    (``chance``)."""
    d_aa = _BlockDistance(a, a, metric)
    n = a.shape[0]
    pos = np.zeros(n, dtype=np.int64) if accuracy else None
    thr = d_aa.exact(np.arange(n, dtype=np.int64), nn) if accuracy else None
    occurrence = {kk: np.zeros(n, dtype=np.int64) for kk in ks} if chance else None
    for s, e, scores, mask in blocks(d_aa, chunk_size):
        if occurrence is not None:  # (first: count_block overwrites entries of the block)
            _occurrence_block(d_aa, s, e, scores, ks, occurrence)
        if pos is not None:
            count_block(d_aa, s, e, scores, mask, thr, tie_before=nn, exclude=nn, out=pos)
    return pos, occurrence


def _knn_arguments(
    x: np.ndarray, y: np.ndarray, k: int | Iterable[int], metric: str
) -> tuple[tuple[int, ...], str, np.ndarray, np.ndarray]:
    """Checked ``(ks, metric, x, y)`` of the k-NN accuracy functions."""
    ks = check_ks(k)
    met = check_metric(metric)
    xa, ya = check_paired(x, y)
    n = xa.shape[0]
    if max(ks) > n:
        raise ValueError(f"k={max(ks)} is larger than the number of cells ({n})")
    return ks, met, xa, ya


def knn_accuracy(
    x: EmbeddingLike,
    y: EmbeddingLike,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
    score: np.ndarray | None = None,
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
    score
        The rows whose accuracy is averaged (a boolean mask or row indices; default all).
        The paper's code scores its held-out test cells this way: neighbours are searched
        among *all* cells, training and test, and the test cells' accuracy is reported;
        scored among the test cells alone, each cell has fewer rows to be confused with,
        and the same embedding scores higher (on 1,874 synthetic cells with 340 held out:
        0.66 / 0.87 at ``k = 5`` / 50 against 0.43 / 0.59 the paper's way), so only this
        way compares with its published numbers.

    Returns
    -------
    ``{"x_to_y": {k: acc}, "y_to_x": {k: acc}, "mean": {k: acc}}`` where ``"x_to_y"``
    queries ``x`` cells against ``y`` (``A = y``, ``B = x``) and ``"y_to_x"`` queries
    ``y`` cells against ``x`` (``A = x``, ``B = y``).  1 = perfect.
    """
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=True, chance=False,
                       score=score)[0]


def _knn_scores(
    x: np.ndarray,
    y: np.ndarray,
    k: int | Iterable[int],
    metric: str,
    chunk_size: int | None,
    *,
    accuracy: bool,
    chance: bool,
    score: np.ndarray | None = None,
) -> tuple[dict[str, dict[int, float]] | None, dict[str, dict[int, float]] | None]:
    """:func:`knn_accuracy` and / or :func:`knn_accuracy_chance`, sharing one nearest-row
    search per direction."""
    ks, met, xa, ya = _knn_arguments(x, y, k, metric)
    return knn_scores_of(Searches(xa, ya, chunk_size), ks, met, accuracy=accuracy,
                         chance=chance, score=_scored_rows(score, xa.shape[0]))


def _scored_rows(score: np.ndarray | None, n: int) -> np.ndarray | None:
    """``score`` (a boolean mask or row indices of ``n`` rows) as sorted unique row indices;
    ``None`` for all rows. ``ValueError`` for a wrong length, out-of-range or no rows."""
    if score is None:
        return None
    a = np.asarray(score)
    if a.dtype == bool:
        if a.shape != (n,):
            raise ValueError(f"score: a boolean mask of {a.size} entries for {n} cells")
        a = np.flatnonzero(a)
    elif a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise ValueError("score: expected a boolean mask or integer row indices")
    a = np.unique(a.astype(np.int64))
    if not a.size or a[0] < 0 or a[-1] >= n:
        raise ValueError(f"score: row indices must be non-empty and in [0, {n}), got "
                         f"{a[:5].tolist()}{' ...' if a.size > 5 else ''}")
    return a


def knn_scores_of(
    searches: Searches, ks: tuple[int, ...], metric: str, *, accuracy: bool, chance: bool,
    score: np.ndarray | None = None,
) -> tuple[dict[str, dict[int, float]] | None, dict[str, dict[int, float]] | None]:
    """:func:`_knn_scores` of the paired embeddings of ``searches`` (``ks`` checked, each at
    most the number of rows; ``metric`` canonical), averaged over the rows ``score``
    (:func:`_scored_rows`; ``None``: all)."""
    xa, ya, n = searches.x, searches.y, searches.x.shape[0]
    rows = slice(None) if score is None else score
    acc: dict[str, dict[int, float]] = {}
    level: dict[str, dict[int, float]] = {}
    for key, ref, nn in zip(("x_to_y", "y_to_x"), (ya, xa), searches.nearest(metric)):
        pos, occurrence = _within_reference(ref, nn, metric, ks, searches.chunk_size,
                                            accuracy=accuracy, chance=chance)
        if pos is not None:
            acc[key] = {kk: float(np.mean(pos[rows] < kk)) for kk in ks}
        if occurrence is not None:
            level[key] = {kk: float(occurrence[kk][nn[rows]].mean() / n) for kk in ks}
    for scores in (acc, level):
        if scores:
            scores["mean"] = {kk: 0.5 * (scores["x_to_y"][kk] + scores["y_to_x"][kk]) for kk in ks}
    return (acc or None), (level or None)


def knn_accuracy_and_chance(
    x: EmbeddingLike,
    y: EmbeddingLike,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
    score: np.ndarray | None = None,
) -> tuple[dict[str, dict[int, float]], dict[str, dict[int, float]]]:
    """``(knn_accuracy(...), knn_accuracy_chance(...))`` in one pass: the nearest-row search
    of each direction is done once for both (same arguments and results).

    Parameters
    ----------
    x, y, k, metric, chunk_size, score
        As in :func:`knn_accuracy`.

    Returns
    -------
    The results of :func:`knn_accuracy` and :func:`knn_accuracy_chance`.
    """
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=True, chance=True, score=score)


def _occurrence_block(
    dist: _BlockDistance, s: int, e: int, scores: np.ndarray, ks: tuple[int, ...],
    occurrence: dict[int, np.ndarray],
) -> None:
    """Add the rows ``s:e`` of ``dist`` (the reference against itself; ``scores``: their
    block) to ``N_k(h)``: in how many rows' ``k`` nearest rows (the row itself included)
    row ``h`` appears, for every ``k`` in ``ks``. Neighbours are ranked by exact distance,
    the lower row first among equal ones (as :func:`knn_accuracy` ranks them): the block's
    approximate distances only choose the candidates, every row within rounding of its
    ``k``-th nearest."""
    n = dist.n_ref
    k_max = min(max(ks), n)
    # the k-th largest score of each row (torch's top-k: a tenth of np.partition's time)
    kth = torch.topk(torch.from_numpy(scores), k_max, dim=1, sorted=False).values.amin(1).numpy()
    # exact_j within the k nearest  =>  S_j >= S_(k) - 2 tol
    r_idx, c_idx = np.nonzero(scores >= (kth - 2.0 * dist.tol(s, e))[:, None])
    exact = dist.exact(s + r_idx, c_idx)
    order = np.lexsort((c_idx, exact, r_idx))
    rows, cols = r_idx[order], c_idx[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)  # position within its row
    for kk in ks:
        occurrence[kk] += np.bincount(cols[rank < kk], minlength=n)


def knn_accuracy_chance(
    x: EmbeddingLike,
    y: EmbeddingLike,
    *,
    k: int | Iterable[int] = (5, 50),
    metric: str = "l1",
    chunk_size: int | None = None,
    score: np.ndarray | None = None,
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
    score
        The rows whose level is averaged, as in :func:`knn_accuracy` (default all).

    Returns
    -------
    The structure of :func:`knn_accuracy`: ``{"x_to_y": {k: level}, "y_to_x": {k: level},
    "mean": {k: level}}``.
    """
    return _knn_scores(x, y, k, metric, chunk_size, accuracy=False, chance=True,
                       score=score)[1]
