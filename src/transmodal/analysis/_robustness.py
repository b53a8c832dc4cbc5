"""Robustness of a clustering of the joint latent space (Yang et al. 2021, Methods).

Silhouette over numbers of clusters (k-means), Gaussian-mixture BIC over numbers of
components, and a co-association matrix over an ensemble of k-means, Gaussian-mixture and
spectral clusterings (k-NN graphs of several sizes).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from .._utils import check_int
from ..metrics._chunked import check_ks
from ._inputs import get_latent

METHODS = ("kmeans", "gmm", "spectral")


@dataclass
class ClusterRobustness:
    """Result of :func:`cluster_robustness`.

    Attributes
    ----------
    silhouette
        Mean silhouette width of k-means with ``k`` clusters (index ``k``).
    bic
        Bayesian information criterion of a Gaussian mixture with ``n_components``
        components (index; lower is better).
    coassociation
        ``(m, m)`` float32: fraction of the ensemble's clusterings that put cells ``i`` and
        ``j`` together (the ``m`` cells of ``indices``).
    partitions
        ``(m, n_clusterings)`` labels, one column per clustering of the ensemble, named
        ``kmeans_k3``, ``gmm_k3``, ``spectral_knn20_k3``, ...
    indices
        Rows of the input the analysis used (all, or a sorted subsample of ``max_cells``).
    linkage
        Average-linkage hierarchy of ``1 - coassociation`` (scipy format).
    lifetimes
        For each ``k``: the range of dendrogram heights over which ``k`` clusters exist;
        for ``k = 1``, from the last merge up to 1, the largest possible distance.
    suggested_k
        ``k`` with the longest lifetime (the evidence-accumulation rule of Fred & Jain,
        2005): the number of clusters most stable across the ensemble.  1 means that no
        partition is stable: the ensemble's clusterings disagree more than they agree
        (e.g. a latent without cluster structure).
    silhouette_k, bic_k
        The best ``k`` by silhouette (largest) and by BIC (smallest; may be 1, i.e. no
        cluster structure); ``None`` when not computable.
    labels
        Consensus labels of the ``indices`` cells: the hierarchy cut at ``suggested_k``.
    """

    silhouette: pd.DataFrame
    bic: pd.DataFrame
    coassociation: np.ndarray
    partitions: pd.DataFrame
    indices: np.ndarray
    linkage: np.ndarray
    lifetimes: pd.Series
    suggested_k: int
    silhouette_k: int | None
    bic_k: int | None
    labels: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (no matrices).

        Returns
        -------
        ``{"suggested_k", "silhouette_k", "bic_k", "silhouette", "bic", "n_cells",
        "n_clusterings"}``: the numbers of clusters chosen (as the attributes), the
        silhouette and BIC by number of clusters (``{k: value}``), and the numbers of
        cells and of clusterings, as plain Python numbers.
        """
        return {
            "suggested_k": self.suggested_k,
            "silhouette_k": self.silhouette_k,
            "bic_k": self.bic_k,
            "silhouette": {int(k): float(v) for k, v in self.silhouette["silhouette"].items()},
            "bic": {int(k): float(v) for k, v in self.bic["bic"].items()},
            "n_cells": int(len(self.indices)),
            "n_clusterings": int(self.partitions.shape[1]),
        }


def _ints(values: Iterable[int] | int, name: str) -> list[int]:
    """``values`` (one integer >= 1 or several) as a sorted list of distinct integers."""
    return sorted(set(check_ks(values, name)))


def _spectral_partitions(z, knn: int, ks: Sequence[int], n_init: int, seed: int) -> dict[int, np.ndarray]:
    """Spectral clustering on a symmetrised k-NN connectivity graph, for each number of clusters.

    Equivalent to ``SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=knn)``
    for each ``k``, with the spectral embedding computed once (its leading ``k``
    eigenvectors) instead of once per ``k``.
    """
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding
    from sklearn.neighbors import kneighbors_graph

    conn = kneighbors_graph(z, n_neighbors=knn, include_self=True)
    affinity = 0.5 * (conn + conn.T)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        maps = spectral_embedding(affinity, n_components=max(ks), random_state=seed, drop_first=False)
    return {
        k: KMeans(k, n_init=n_init, random_state=seed).fit_predict(maps[:, :k]) for k in ks
    }


def _silhouette(z: np.ndarray, labels: np.ndarray, score) -> float:
    """Mean silhouette width; NaN when k-means found fewer than 2 distinct clusters."""
    n_found = len(np.unique(labels))
    return float(score(z, labels)) if 2 <= n_found < len(labels) else float("nan")


def _coassociation(partitions: pd.DataFrame) -> np.ndarray:
    """Fraction of partitions in which each pair of cells shares a cluster (one product)."""
    blocks = []
    for col in partitions:
        _, inv = np.unique(partitions[col].to_numpy(), return_inverse=True)
        blocks.append(np.eye(inv.max() + 1, dtype=np.float32)[inv])
    h = np.hstack(blocks)
    c = h @ h.T
    c /= partitions.shape[1]
    return c


def cluster_robustness(
    x: AnnData | np.ndarray,
    *,
    k_range: Iterable[int] = range(2, 9),
    n_clusters: int | None = None,
    gmm_components: Iterable[int] = range(1, 6),
    knn: Iterable[int] = (10, 20, 50, 100),
    methods: Sequence[str] = METHODS,
    n_init: int = 10,
    covariance_type: str = "full",
    max_cells: int | None = 3000,
    use_rep: str | None = "X_transmodal",
    seed: int = 0,
) -> ClusterRobustness:
    """How robust is a clustering of the latent space, and how many clusters does it support?

    1. Silhouette: k-means (``n_init`` starts) for every ``k`` in ``k_range``; mean
       silhouette width.
    2. BIC: a Gaussian mixture (``n_init`` initialisations, ``covariance_type``) for every
       number of components in ``gmm_components``.
    3. Co-association: an ensemble of clusterings -- k-means, Gaussian mixture and spectral
       clustering on the k-NN graph for each ``knn`` (graphs with ``knn >= m`` are skipped),
       each for every ``k`` in ``k_range`` (or only ``n_clusters`` when given, to test the
       robustness of one chosen number) -- and the fraction of clusterings that put each
       pair of cells together.
    4. Suggested number of clusters: the ``k`` in ``k_range``, or 1, whose clusters live
       longest in the average-linkage dendrogram of ``1 - coassociation`` (the largest gap
       between successive merge heights, or between the last merge and 1 for a single
       cluster; Fred & Jain 2005).  Ties go to the smaller ``k``.  On a latent without
       cluster structure the clusterings cut it differently, the last merge happens well
       below 1 and the suggestion is 1 (one Gaussian cloud of 500 cells in 16 dimensions:
       1 on three seeds, where k = 2 ... 8 alone suggested 2-3).  A cloud in 2-4
       dimensions can be cut into stable slices, so read ``bic_k`` beside it.

    The result does not depend on the order of the cells: they are analysed sorted by their
    coordinates (k-means' and the mixtures' initialisations, the subsample and the
    hierarchy's ties follow that order), and every result is given back in the order of
    ``indices``.

    The co-association matrix takes ``O(m^2)`` memory (the float32 matrix plus condensed
    distances for the hierarchy: at most about 10 bytes x m^2, ~90 MiB for m = 3000) and
    silhouette and the hierarchy ``O(m^2)`` time, so above ``max_cells`` cells a random
    subsample (seeded) is analysed; ``indices`` records it.

    Parameters
    ----------
    x
        ``(cells, dims)`` latent coordinates, or an AnnData (``obsm[use_rep]``; ``X`` when
        ``use_rep=None``).
    k_range
        Numbers of clusters for silhouette and the ensemble (values outside ``[2, m)`` are
        dropped).
    n_clusters
        Restrict the ensemble to this number of clusters.
    gmm_components
        Numbers of mixture components for the BIC table (the paper: 1-5).
    knn
        Neighbourhood sizes of the spectral clusterings' k-NN graphs (the paper: 10, 20,
        50, 100).
    methods
        Members of the ensemble, any of ``"kmeans"``, ``"gmm"``, ``"spectral"``.
    n_init
        Initialisations of every k-means and Gaussian-mixture fit.
    covariance_type
        Of the Gaussian mixtures (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``).
    max_cells
        Subsample above this many cells (``None``: never).
    use_rep
        ``obsm`` key of an AnnData input.
    seed
        Seeds the subsample and every clustering.

    Returns
    -------
    :class:`ClusterRobustness`.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    z = get_latent(x, use_rep, "x")
    n = z.shape[0]
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {list(methods)}")
    check_int(n_init, "n_init", minimum=1)
    check_int(max_cells, "max_cells", minimum=3, allow_none=True)
    check_int(n_clusters, "n_clusters", minimum=2, allow_none=True)
    if n < 3:
        raise ValueError(f"need at least 3 cells, got {n}")
    # the cells sorted by their coordinates: every choice below (the subsample, the
    # clusterings' initialisations, the ties of the hierarchy) is made in this order, so that
    # reordering the cells reorders the results but changes none
    order = np.lexsort(z.T[::-1])
    if max_cells is not None and n > max_cells:
        order = order[np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))]
    z = z[order]
    m = z.shape[0]
    ks = [k for k in _ints(k_range, "k_range") if 2 <= k < m]
    if not ks:
        raise ValueError(f"k_range has no number of clusters in [2, {m}) for {m} cells")
    if n_clusters is not None and not 2 <= n_clusters < m:
        raise ValueError(f"n_clusters must lie in [2, {m}), got {n_clusters}")
    ens_ks = ks if n_clusters is None else [int(n_clusters)]
    components = [c for c in _ints(gmm_components, "gmm_components") if 1 <= c <= m]
    graphs = [k for k in _ints(knn, "knn") if 1 <= k < m]

    kmeans = {k: KMeans(k, n_init=n_init, random_state=seed).fit_predict(z) for k in sorted({*ks, *ens_ks})}
    silhouette = pd.DataFrame(
        {"silhouette": [_silhouette(z, kmeans[k], silhouette_score) for k in ks]},
        index=pd.Index(ks, name="k"),
    )
    bic = {}
    gmm_labels = {}
    for c in sorted({*components, *(ens_ks if "gmm" in methods else [])}):
        gm = GaussianMixture(c, covariance_type=covariance_type, n_init=n_init, random_state=seed).fit(z)
        if c in components:
            bic[c] = gm.bic(z)
        gmm_labels[c] = gm.predict(z)
    bic = pd.DataFrame({"bic": list(bic.values())}, index=pd.Index(list(bic), name="n_components"))

    parts = {}
    if "kmeans" in methods:
        parts.update({f"kmeans_k{k}": kmeans[k] for k in ens_ks})
    if "gmm" in methods:
        parts.update({f"gmm_k{k}": gmm_labels[k] for k in ens_ks})
    if "spectral" in methods:
        for g in graphs:
            for k, lab in _spectral_partitions(z, g, ens_ks, n_init, seed).items():
                parts[f"spectral_knn{g}_k{k}"] = lab
    if not parts:
        raise ValueError(f"no clustering in the ensemble: every knn in {list(knn)} is >= {m} cells")
    partitions = pd.DataFrame(parts)
    coassoc = _coassociation(partitions)

    # condensed distances 1 - co-association (upper triangle; the diagonal is dropped)
    dist = squareform(coassoc, checks=False).astype(np.float64)
    np.subtract(1.0, dist, out=dist)
    tree = linkage(dist, method="average")
    del dist
    heights = tree[:, 2]
    # k clusters exist between merge heights m - k - 1 and m - k (0-based); one cluster from
    # the last merge up to the largest possible distance, 1
    lifetimes = pd.Series(
        {1: 1.0 - heights[-1], **{k: heights[m - k] - heights[m - k - 1] for k in ks}},
        name="lifetime",
    )
    lifetimes.index.name = "k"
    suggested = int(lifetimes.idxmax())
    sil = silhouette["silhouette"]
    labels = fcluster(tree, suggested, criterion="maxclust") - 1
    # back to the cells' own order (ascending indices); the tree's leaves renumbered
    back = np.argsort(order, kind="stable")
    leaf = np.empty(m, dtype=np.int64)
    leaf[back] = np.arange(m)  # (sorted position -> position in the result)
    tree = tree.copy()
    for col in (0, 1):
        ids = tree[:, col].astype(np.int64)
        is_leaf = ids < m
        tree[is_leaf, col] = leaf[ids[is_leaf]]
    return ClusterRobustness(
        silhouette=silhouette,
        bic=bic,
        coassociation=coassoc[np.ix_(back, back)],
        partitions=partitions.iloc[back].reset_index(drop=True),
        indices=order[back],
        linkage=tree,
        lifetimes=lifetimes,
        suggested_k=suggested,
        silhouette_k=None if sil.isna().all() else int(sil.idxmax()),
        bic_k=int(bic["bic"].idxmin()) if len(bic) else None,
        labels=labels[back],
    )
