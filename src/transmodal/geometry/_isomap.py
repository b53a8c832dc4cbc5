"""Landmark Isomap: a low-dimensional embedding of a k-NN graph's geodesic distances."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra
from sklearn.neighbors import NearestNeighbors

from .._utils import check_int
from ..metrics._chunked import as_embedding


def knn_graph(x: np.ndarray, n_neighbors: int) -> sp.csr_matrix:
    """Symmetric, connected ``n_neighbors``-NN graph of the rows of ``x``, in hops.

    Every k-NN edge has length 1. If the graph falls apart (separated clusters), every
    two components are joined by a bridge between their closest cells, whose length is
    its Euclidean length in units of the median k-NN edge, so that the distances between
    clusters are kept instead of being lost to "infinitely far". Cost of the bridges: one
    nearest-neighbour search per component (a symmetric k-NN graph rarely has more than a
    few).

    Raises
    ------
    ValueError
        If ``n_neighbors`` is not a positive integer or ``x`` has no more than
        ``n_neighbors`` rows.
    """
    check_int(n_neighbors, "n_neighbors", minimum=1)
    n_neighbors = int(n_neighbors)
    n = x.shape[0]
    if n <= n_neighbors:
        raise ValueError(f"need more than n_neighbors = {n_neighbors} cells, got {n}")
    dist, nbr = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(x).kneighbors(x)
    dist, nbr = dist[:, 1:], nbr[:, 1:]
    g = sp.csr_matrix((np.ones(nbr.size), nbr.ravel(), np.arange(0, nbr.size + 1, n_neighbors)),
                      shape=(n, n))
    g = g.maximum(g.T).tocsr()
    n_comp, comp = connected_components(g, directed=False)
    if n_comp == 1:
        return g
    unit = max(float(np.median(dist)), 1e-12)
    # closest cells between every two components (one nearest-neighbour search per component)
    best = np.full((n_comp, n_comp), np.inf)
    ends = {}
    for c in range(n_comp):
        inside, outside = np.flatnonzero(comp == c), np.flatnonzero(comp != c)
        d, j = NearestNeighbors(n_neighbors=1).fit(x[outside]).kneighbors(x[inside])
        d, j = d[:, 0], outside[j[:, 0]]
        for c2 in np.unique(comp[j]):
            sel = np.flatnonzero(comp[j] == c2)
            k = sel[np.argmin(d[sel])]
            if d[k] < best[c, c2]:
                best[c, c2] = best[c2, c] = d[k]
                ends[(min(c, c2), max(c, c2))] = (inside[k], j[k])
    rows, cols, vals = [], [], []
    for (c, c2), (i, j) in ends.items():
        length = max(best[c, c2] / unit, 1.0)
        rows += [i, j]
        cols += [j, i]
        vals += [length, length]
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
        Seed of the first landmark.

    Returns
    -------
    embedding
        ``(n_cells, n_components)``, centred, scaled to unit root-mean-square norm, axes in
        decreasing order of variance.
    eigenvalues
        Landmark MDS eigenvalues of the kept axes (relative sizes of the axes).

    Raises
    ------
    ValueError
        If ``x`` is not a finite 2-D numeric array, an integer argument is not a positive
        integer, ``x`` has no more than ``n_neighbors`` rows, or ``n_components`` is not
        below the number of landmarks.
    """
    check_int(n_components, "n_components", minimum=1)
    check_int(n_neighbors, "n_neighbors", minimum=1)
    check_int(n_landmarks, "n_landmarks", minimum=1)
    x = as_embedding(x, "x", columns="features")
    n = x.shape[0]
    graph = knn_graph(x, n_neighbors)
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
    d2 = d**2
    dl = d2[:, landmarks]
    mean_l = dl.mean(axis=1)
    centre = np.eye(n_landmarks) - 1.0 / n_landmarks
    b = -0.5 * centre @ dl @ centre
    w, v = np.linalg.eigh(b)
    order = np.argsort(w)[::-1][:n_components]
    w, v = np.maximum(w[order], 1e-12), v[:, order]
    emb = -0.5 * (d2 - mean_l[:, None]).T @ (v / np.sqrt(w))
    emb -= emb.mean(axis=0)
    emb /= max(float(np.sqrt((emb**2).sum(axis=1).mean())), 1e-12)
    return emb, w
