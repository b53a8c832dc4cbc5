"""Unsupervised cross-modal correspondences from the shapes of two modalities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from .._utils import check_int
from ..metrics._chunked import as_dense_matrix
from ._isomap import landmark_isomap
from ._procrustes import wasserstein_procrustes


@dataclass(frozen=True)
class GeometricMatch:
    """Result of :func:`geometric_pairs`.

    Attributes
    ----------
    rows_a, rows_b
        Matched rows: ``rows_a[k]`` of ``a`` and ``rows_b[k]`` of ``b`` (each cell of both
        modalities with its nearest partner in the other).
    embedding_a, embedding_b
        The aligned Isomap coordinates of every row of ``a`` and ``b``.
    cost
        Mean squared transport distance after alignment (lower: shapes overlay better).
    """

    rows_a: np.ndarray
    rows_b: np.ndarray
    embedding_a: np.ndarray
    embedding_b: np.ndarray
    cost: float


def _reduce(x: np.ndarray, n_pca: int, seed: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0)
    sd = x.std(axis=0)
    x = x / np.where(sd > 1e-8, sd, 1.0)
    n = min(n_pca, x.shape[0] - 1, x.shape[1])
    if n < x.shape[1]:
        x = PCA(n, svd_solver="randomized", random_state=seed).fit_transform(x)
    return x


def _check_cells(x: Any, name: str, n_neighbors: int, n_components: int) -> np.ndarray:
    """``x`` (array, sparse matrix or AnnData) as a dense float64 array
    (:func:`~transmodal.metrics._chunked.as_dense_matrix`) with more cells than
    ``n_neighbors`` and ``n_components``; errors name the argument ``name``."""
    x = as_dense_matrix(x, name)
    for arg, value in (("n_neighbors", n_neighbors), ("n_components", n_components)):
        if x.shape[0] <= value:
            raise ValueError(
                f"{name} has {x.shape[0]} cells; geometric_pairs needs more than "
                f"{arg}={value} cells per modality (lower {arg})"
            )
    return x


def geometric_pairs(
    a: Any,
    b: Any,
    *,
    n_components: int = 5,
    n_neighbors: int = 15,
    n_landmarks: int = 300,
    n_pca: int = 30,
    seed: int = 0,
) -> GeometricMatch:
    """Match the cells of two unpaired modalities by the shape of their data.

    No pairs, labels or shared features are used. Each modality's features are
    standardised and reduced to ``n_pca`` principal components; its k-NN-graph geodesic
    distances are embedded in ``n_components`` dimensions by :func:`landmark_isomap`; the
    two embeddings (same population, hence roughly the same shape up to a rotation) are
    overlaid by :func:`wasserstein_procrustes`; every cell is matched to its nearest
    neighbour in the other modality. Cost: ``O(n_landmarks * n)`` per modality plus a
    fixed-size transport search, so it stays cheap where Gromov-Wasserstein transport
    (``O(n^2)`` memory, ``O(n^3)`` time) does not.

    The shape does not always determine the alignment: modalities whose geometries
    differ (clusters merged in one of them, symmetric shapes) can be overlaid in a wrong
    orientation. Use the result as soft evidence (pseudo-anchors that the autoencoders
    may override), and check agreement over seeds
    (:func:`transmodal.metrics.seed_agreement`).

    Parameters
    ----------
    a, b
        ``(n_a, p_a)`` and ``(n_b, p_b)`` preprocessed features (e.g. log-normalised
        expression and accessibility): arrays, scipy sparse matrices or AnnData (its
        ``X``); feature counts may differ; each needs more than ``n_neighbors`` and
        ``n_components`` cells. Sparse input is densified: ``n * p`` float64 values in
        memory, so reduce very wide sparse data (e.g. to a few hundred principal
        components or a subsample of cells) first.
    n_components
        Isomap dimensions overlaid (<= 10; ``2^n_components`` orientations are searched).
    n_neighbors
        Neighbours per cell in each k-NN graph.
    n_landmarks
        Landmarks of the landmark Isomap.
    n_pca
        Principal components kept per modality before the graph.
    seed
        Seed of landmarks, subsamples and PCA (an integer >= 0).

    Returns
    -------
    GeometricMatch

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not a finite 2-D numeric matrix or has too few cells, or an
        integer argument is out of range.
    """
    check_int(n_components, "n_components", minimum=1)
    if n_components > 10:
        raise ValueError(
            f"n_components must be <= 10 (2^n_components orientations are searched); "
            f"got {n_components}"
        )
    check_int(n_neighbors, "n_neighbors", minimum=1)
    check_int(n_landmarks, "n_landmarks", minimum=2)
    if n_landmarks <= n_components:
        raise ValueError(
            f"n_landmarks must be greater than n_components={n_components}; got {n_landmarks}"
        )
    check_int(n_pca, "n_pca", minimum=1)
    check_int(seed, "seed", minimum=0)
    a = _check_cells(a, "a", n_neighbors, n_components)
    b = _check_cells(b, "b", n_neighbors, n_components)
    emb = []
    for x in (a, b):
        e, _ = landmark_isomap(
            _reduce(x, n_pca, seed),
            n_components=n_components,
            n_neighbors=n_neighbors,
            n_landmarks=n_landmarks,
            seed=seed,
        )
        emb.append(e)
    q, cost = wasserstein_procrustes(emb[0], emb[1], seed=seed)
    ea, eb = emb[0] @ q, emb[1]
    to_b = NearestNeighbors(n_neighbors=1).fit(eb).kneighbors(ea, return_distance=False)[:, 0]
    to_a = NearestNeighbors(n_neighbors=1).fit(ea).kneighbors(eb, return_distance=False)[:, 0]
    rows_a = np.concatenate([np.arange(len(ea)), to_a])
    rows_b = np.concatenate([to_b, np.arange(len(eb))])
    return GeometricMatch(rows_a, rows_b, ea, eb, cost)


def transport_pairs(
    a: Any,
    b: Any,
    *,
    n_landmarks: int = 2000,
    n_neighbors: int | None = None,
    max_iter: int = 30,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Match landmark cells of two unpaired modalities by Gromov-Wasserstein transport.

    At most ``n_landmarks`` seeded cells per modality are coupled by entropic
    Gromov-Wasserstein transport between their k-NN-graph geodesic distances
    (:class:`transmodal.baselines.GromovWassersteinOT`); every landmark is matched to the
    landmark of the other modality that receives most of its mass. Cost: ``O(m^2)`` memory
    and ``O(m^3)`` time per iteration for ``m = min(n, n_landmarks)``, independent of the
    number of cells beyond that.

    Parameters
    ----------
    a, b
        ``(n_a, p_a)`` and ``(n_b, p_b)`` preprocessed features: arrays, scipy sparse
        matrices or AnnData (its ``X``), at least 2 cells each; feature counts may
        differ. Sparse input is densified (``n * p`` float64 values in memory).
    n_landmarks
        Cells per modality that enter the transport problem.
    n_neighbors
        Neighbours per cell in each k-NN graph; ``None``: 30, or one less than the
        number of landmark cells of the smaller modality when that is 30 or fewer.
    max_iter
        Iterations of the solver (its plan changes little after the first tens).
    seed
        Seed of the landmark choice and the solver's PCA (an integer >= 0).

    Returns
    -------
    ``(rows_a, rows_b)``: matched rows of ``a`` and ``b`` (each landmark of both
    modalities with its partner).

    Raises
    ------
    ValueError
        If ``a`` or ``b`` is not a finite 2-D numeric matrix with at least 2 cells
        (more than ``n_neighbors`` landmark cells when it is given), or an integer
        argument is out of range.
    RuntimeError
        If the transport solver fails numerically.
    """
    from ..baselines import GromovWassersteinOT

    check_int(n_landmarks, "n_landmarks", minimum=2)
    check_int(n_neighbors, "n_neighbors", minimum=1, allow_none=True)
    check_int(max_iter, "max_iter", minimum=1)
    check_int(seed, "seed", minimum=0)
    n_landmarks = int(n_landmarks)
    a = as_dense_matrix(a, "a", min_rows=2)
    b = as_dense_matrix(b, "b", min_rows=2)
    m = {name: min(len(x), n_landmarks) for name, x in (("a", a), ("b", b))}
    if n_neighbors is None:
        n_neighbors = min(30, min(m.values()) - 1)
    for name, x in (("a", a), ("b", b)):
        if m[name] <= n_neighbors:
            raise ValueError(
                f"{name} has {len(x)} cells (at most n_landmarks={n_landmarks} enter the "
                f"transport); the k-NN graph needs more than n_neighbors={n_neighbors} "
                "(lower n_neighbors, or pass None)"
            )
    rng = np.random.default_rng([seed, 17])
    la, lb = (
        np.sort(rng.choice(len(x), n_landmarks, replace=False)) if len(x) > n_landmarks
        else np.arange(len(x))
        for x in (a, b)
    )
    plan = GromovWassersteinOT(
        n_neighbors=int(n_neighbors), max_iter=max_iter, seed=seed
    ).fit(a[la], b[lb]).coupling_
    rows_a = np.concatenate([la, la[plan.argmax(axis=0)]])
    rows_b = np.concatenate([lb[plan.argmax(axis=1)], lb])
    return rows_a, rows_b
