"""Landmark Isomap: a low-dimensional embedding of a k-NN graph's geodesic distances."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra
from sklearn.neighbors import NearestNeighbors

from .._utils import check_int, user_stacklevel
from ..metrics._chunked import as_embedding

# landmark MDS eigenvalues at most this fraction of the largest count as zero
_EIGEN_RTOL = 1e-9


def knn_graph(x: Any, n_neighbors: int) -> sp.csr_matrix:
    """Symmetric, connected ``n_neighbors``-NN graph of the rows of ``x``, in hops.

    Every k-NN edge has length 1. If the graph falls apart (separated clusters), its
    components are joined by bridges, whose length is their Euclidean length in units of
    the median non-zero k-NN edge (at least 1), so that the distances between clusters are kept
    instead of being lost to "infinitely far". Each component is bridged to every other
    component that holds the nearest outside cell of one of its cells, through the closest
    such pair; the components so joined are bridged again in the same way until one is
    left (at most ``log2`` of the number of components rounds, as each round at least
    halves it). Cost of the bridges: one nearest-neighbour search per component and round
    (a symmetric k-NN graph rarely has more than a few components; with very few
    neighbours, e.g. ``n_neighbors=1`` on 20,000 cells, it can have thousands, and minutes
    go to bridging).

    Parameters
    ----------
    x
        ``(n_cells, n_features)`` array-like, or an AnnData whose dense ``X`` it is.
    n_neighbors
        Neighbours per cell (before symmetrisation).

    Returns
    -------
    ``(n_cells, n_cells)`` symmetric sparse matrix of edge lengths (1 for k-NN edges).

    Raises
    ------
    ValueError
        If ``n_neighbors`` is not a positive integer, ``x`` is not a dense, finite 2-D
        numeric array, or ``x`` has no more than ``n_neighbors`` rows.
    """
    check_int(n_neighbors, "n_neighbors", minimum=1)
    return _knn_graph(as_embedding(x, "x", columns="features"), int(n_neighbors))


def _knn_graph(x: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """:func:`knn_graph` of a validated float64 array ``x``."""
    n = x.shape[0]
    if n <= n_neighbors:
        raise ValueError(f"need more than n_neighbors = {n_neighbors} cells, got {n}")
    # without a query, each cell is left out of its own list (a duplicated cell's copy may
    # come first among the exact distances, and dropping the first column kept a self-loop)
    dist, nbr = NearestNeighbors(n_neighbors=n_neighbors).fit(x).kneighbors()
    g = sp.csr_matrix((np.ones(nbr.size), nbr.ravel(), np.arange(0, nbr.size + 1, n_neighbors)),
                      shape=(n, n))
    g = g.maximum(g.T).tocsr()
    n_comp, comp = connected_components(g, directed=False)
    if n_comp == 1:
        return g
    # duplicated cells give k-NN edges of length 0; the unit is a typical non-zero edge
    positive = dist[dist > 0]
    unit = float(np.median(positive)) if positive.size else 1.0
    rows, cols, vals = [], [], []
    while n_comp > 1:
        # closest cells between each component and those holding its cells' nearest
        # outside cells (one nearest-neighbour search per component)
        ends: dict[tuple[int, int], tuple[float, int, int]] = {}
        for c in range(n_comp):
            inside, outside = np.flatnonzero(comp == c), np.flatnonzero(comp != c)
            d, j = NearestNeighbors(n_neighbors=1).fit(x[outside]).kneighbors(x[inside])
            d, j = d[:, 0], outside[j[:, 0]]
            for c2 in np.unique(comp[j]):
                sel = np.flatnonzero(comp[j] == c2)
                k = sel[np.argmin(d[sel])]
                key = (min(c, int(c2)), max(c, int(c2)))
                if key not in ends or d[k] < ends[key][0]:
                    ends[key] = (float(d[k]), int(inside[k]), int(j[k]))
        for length, i, j in ends.values():
            length = max(length / unit, 1.0)
            rows += [i, j]
            cols += [j, i]
            vals += [length, length]
        # every component gained a bridge, so the components at least halve each round
        bridged = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
        n_comp, comp = connected_components(g + bridged, directed=False)
    bridges = sp.csr_matrix((vals, (rows, cols)), shape=(n, n))
    return (g + bridges).tocsr()


def landmark_isomap(
    x: np.ndarray,
    *,
    n_components: int = 5,
    n_neighbors: int = 15,
    n_landmarks: int = 300,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Embed cells so that Euclidean distances approximate k-NN-graph geodesic distances.

    Landmark Isomap (de Silva & Tenenbaum, NIPS 2002): geodesic (hop-count) distances on
    the symmetric ``n_neighbors``-NN graph are computed from ``n_landmarks`` landmark cells
    only, chosen by farthest-point sampling from a seeded start; classical MDS of the
    landmarks gives the axes, every cell is placed by distance-based triangulation. Cost
    ``O(n_landmarks * n * n_neighbors)`` time and ``O(n_landmarks * n)`` memory, against the
    ``O(n^2)`` of full Isomap. Separated clusters are joined as in :func:`knn_graph`.

    Parameters
    ----------
    x
        ``(n_cells, n_features)`` (e.g. principal components).
    n_components
        Embedding dimensions (at most ``n_landmarks - 1``).
    n_neighbors
        Neighbours per cell in the graph.
    n_landmarks
        Landmarks (capped at the number of cells).
    seed
        Seed of the first landmark (an integer >= 0).

    Returns
    -------
    embedding
        ``(n_cells, n_components)``, centred, scaled to unit root-mean-square norm, axes in
        decreasing order of variance. Axes whose eigenvalue is not positive (at most
        ``1e-9`` of the largest: the geodesic distances span fewer dimensions, e.g. a
        curve asked for 4 axes) are all zero, with a ``UserWarning``.
    eigenvalues
        Landmark MDS eigenvalues of the axes (relative sizes of the axes), decreasing; 0
        for the zero axes.

    Raises
    ------
    ValueError
        If ``x`` is not a finite 2-D numeric array, an integer argument is not a positive
        integer (``seed``: >= 0), ``x`` has no more than ``n_neighbors`` rows,
        ``n_components`` is not below the number of landmarks, or a geodesic distance is
        not finite.
    """
    check_int(n_components, "n_components", minimum=1)
    check_int(n_neighbors, "n_neighbors", minimum=1)
    check_int(n_landmarks, "n_landmarks", minimum=1)
    check_int(seed, "seed", minimum=0)
    x = as_embedding(x, "x", columns="features")
    n = x.shape[0]
    graph = _knn_graph(x, int(n_neighbors))
    n_landmarks = min(int(n_landmarks), n)
    if not 1 <= n_components < n_landmarks:
        raise ValueError(
            f"n_components must be in [1, n_landmarks - 1] = [1, {n_landmarks - 1}], "
            f"got {n_components}"
        )
    rng = np.random.default_rng(seed)
    landmarks = [int(rng.integers(n))]
    rows = [dijkstra(graph, indices=landmarks[0], directed=False, unweighted=False)]
    nearest = rows[0].copy()
    for _ in range(n_landmarks - 1):  # farthest-point sampling, reusing every row
        reach = np.where(np.isfinite(nearest), nearest, -1.0)
        reach[landmarks] = -2.0
        nxt = int(np.argmax(reach))
        landmarks.append(nxt)
        rows.append(dijkstra(graph, indices=nxt, directed=False, unweighted=False))
        nearest = np.minimum(nearest, rows[-1])
    d = np.vstack(rows)  # (L, n)
    if not np.isfinite(d).all():  # knn_graph is connected; a safety net against NaN output
        raise ValueError(
            "non-finite geodesic distances on the k-NN graph of x (disconnected graph or "
            "overflow); cannot embed"
        )
    d2 = d**2
    dl = d2[:, landmarks]
    mean_l = dl.mean(axis=1)
    centre = np.eye(n_landmarks) - 1.0 / n_landmarks
    b = -0.5 * centre @ dl @ centre
    w, v = np.linalg.eigh(b)
    order = np.argsort(w)[::-1][:n_components]
    w, v = w[order], v[:, order]
    # axes without (numerically) positive eigenvalue carry no distance information: their
    # coordinates would be noise divided by a near-zero sqrt(eigenvalue), blown up to
    # dominate the real axes, so they are zero instead
    keep = w > _EIGEN_RTOL * w[0]  # none when w[0] <= 0
    if not keep.all():
        warnings.warn(
            f"landmark_isomap: only {int(keep.sum())} of n_components={n_components} "
            "landmark MDS eigenvalues are positive (the geodesic distances span fewer "
            "dimensions); the other axes are zero",
            UserWarning, stacklevel=user_stacklevel(),
        )
    w = np.where(keep, w, 0.0)
    scale = np.zeros(len(w))
    scale[keep] = 1.0 / np.sqrt(w[keep])
    emb = -0.5 * (d2 - mean_l[:, None]).T @ (v * scale)
    emb -= emb.mean(axis=0)
    emb /= max(float(np.sqrt((emb**2).sum(axis=1).mean())), 1e-12)
    return emb, w
