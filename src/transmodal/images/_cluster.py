"""Hierarchical clustering of radial profiles (1 - Spearman correlation, complete linkage)."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from anndata import AnnData
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from scipy.stats import rankdata

from .._utils import check_int, user_stacklevel
from ..data._modality import is_number

TieBreak = Literal["pearson", "euclidean"]
TIE_BREAKS = {"pearson": "correlation", "euclidean": "euclidean"}  # scipy pdist metrics
TIE_BREAK_EPS = 1e-6  # far below the gaps between distinct Spearman distances
PAPER_HEIGHT_DIVISOR = 1.3  # Yang et al. (2021): cutree(h = max(height) / 1.3)


def spearman_distance(profiles: AnnData | np.ndarray, *, condensed: bool = False) -> np.ndarray:
    """1 - Spearman correlation between the rows of ``profiles`` (an ``(n, bins)`` array, or
    an AnnData: its ``X``, as :func:`cluster_profiles` takes): a square matrix, or with
    ``condensed`` the upper triangle in :func:`scipy.spatial.distance.pdist`'s layout (what
    :func:`scipy.cluster.hierarchy.linkage` takes; half the memory of the square).

    Ranks use the average of ties. The correlations are computed from twice-centred ranks,
    which are integers, so every entry is exact and independent of the row order. A constant
    row has correlation 0 with every other row (distance 1). Rows are compared in blocks, so
    that beside the result only a few megabytes are needed.

    Parameters
    ----------
    profiles
        The ``(n, bins)`` profiles, one per row: an array or an AnnData (its ``X``).
    condensed
        Return the condensed upper triangle instead of the square matrix.

    Returns
    -------
    The ``(n, n)`` distances in [0, 2] (zero diagonal), or with ``condensed`` their
    ``n * (n - 1) / 2`` entries above the diagonal in :func:`~scipy.spatial.distance.pdist`
    order.
    """
    x = profiles.X if isinstance(profiles, AnnData) else profiles
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    if not (x.ndim == 2 and x.shape[0] == 0):  # (no profiles: 0 x 0 distances)
        x = _as_matrix(x)  # (n, bins), finite: NaN would be ranked as a value
    n, m = x.shape
    centred = 2.0 * rankdata(x, axis=1) - (m + 1)  # integers: exact sums of products
    var = np.einsum("ij,ij->i", centred, centred)
    out = np.empty(n * (n - 1) // 2)
    step = max(1, 2**20 // max(n, 1))
    for s in range(0, n, step):
        e = min(n, s + step)
        cov = centred[s:e] @ centred[s:].T  # rows s..e against rows s..n
        denom = np.sqrt(np.outer(var[s:e], var[s:]))
        corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
        dist = np.clip(1.0 - corr, 0.0, 2.0)
        for i in range(s, e):  # row i's pairs (i, j > i) in pdist order
            start = i * n - i * (i + 1) // 2
            out[start : start + n - 1 - i] = dist[i - s, i + 1 - s :]
    if condensed:
        return out
    return squareform(out, checks=False) if n else np.zeros((0, 0))


def cluster_profiles(
    profiles: AnnData | np.ndarray,
    n_clusters: int | None = None,
    height: float | None = None,
    *,
    tie_break: TieBreak | None = "pearson",
) -> np.ndarray:
    """Cluster radial profiles hierarchically as Yang et al. (2021) did, deterministically.

    Distance 1 - Spearman correlation between profiles, complete linkage
    (:func:`scipy.cluster.hierarchy.linkage`), tree cut into ``n_clusters`` clusters or at
    ``height``; with neither, at the paper's height, the largest merge height / 1.3.

    Spearman correlation over a few bins takes few distinct values (10 bins: 56 among the 778
    published T-cell profiles), and complete linkage then depends on which of the tied pairs it
    merges first, i.e. on the row order. Two measures make the result a function of the set of
    profiles alone:

    - rows are put in a canonical order (lexicographic by their values) before the linkage and
      the labels are mapped back, so any permutation of the input gives the same clusters;
    - with ``tie_break`` (default ``"pearson"``), ties are broken by a second distance between
      the profiles, 1 - Pearson correlation (``"pearson"``, the same notion of shape on the
      values instead of their ranks) or the Euclidean distance (``"euclidean"``):
      ``1e-6 * second / max(second)`` is added to every distance, far below the gaps between
      distinct Spearman distances (0.012 for 10 bins without tied values), so of two equally
      Spearman-correlated pairs the one closer by the second distance merges first. Cut heights
      shift by at most ``1e-6``.

    How much the clusters depend on the data is measured by :func:`cluster_stability`.

    Parameters
    ----------
    profiles
        ``(n, bins)`` array or AnnData (``X``), e.g. from
        :func:`~transmodal.images.radial_profiles`. No NaN.
    n_clusters
        Number of clusters to cut the tree into.
    height
        Cut height (in 1 - Spearman units) instead of ``n_clusters``.
    tie_break
        ``"pearson"``, ``"euclidean"`` or ``None`` (ties resolved by the canonical row order
        alone: deterministic, but arbitrary).

    Returns
    -------
    Integer labels ``1..k`` in input row order; cluster 1 is the largest (equal sizes: the one
    whose first member comes first in the canonical order).

    Notes
    -----
    On the 778 published T-cell profiles (``tcell_chromatin_radial``) the published two
    clusters are reproduced exactly only by R's ``hclust`` with the rows in the paper's order
    (sorted by the Coro1A/RPL10A ratio), i.e. by one particular order of tied distances; other
    orders give ARI 0.01 to 0.99 with them. The default here gives ARI 0.45
    (``benchmarks/tcell_radial_clusters.py``).
    """
    x = _as_matrix(profiles)
    n = x.shape[0]
    if n_clusters is not None and height is not None:
        raise ValueError("give n_clusters or height, not both")
    if n_clusters is not None and (
        isinstance(n_clusters, bool)
        or not isinstance(n_clusters, (int, np.integer))
        or not 1 <= n_clusters <= n
    ):
        raise ValueError(f"n_clusters={n_clusters!r}: expected an integer between 1 and the {n} profiles")
    if height is not None and not (is_number(height) and height >= 0):
        raise ValueError(f"height={height!r}: expected a finite number >= 0 (1 - Spearman units)")
    if tie_break is not None and tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break={tie_break!r}: expected one of {sorted(TIE_BREAKS)} or None")
    if n == 1:
        return np.ones(1, dtype=np.int64)

    order = np.lexsort(x.T[::-1])  # canonical order: by the first bin, then the second, ...
    raw = _cut(x[order], n_clusters, height, tie_break)
    # renumber by size (descending), then by first canonical position
    ids, first, sizes = np.unique(raw, return_index=True, return_counts=True)
    rank = np.lexsort((first, -sizes))
    new_id = np.empty(ids.max() + 1, dtype=np.int64)
    new_id[ids[rank]] = np.arange(1, ids.size + 1)
    labels = np.empty(n, dtype=np.int64)
    labels[order] = new_id[raw]
    if n_clusters is not None and ids.size < n_clusters:
        warnings.warn(
            f"n_clusters={n_clusters}: only {ids.size} cluster(s) could be made (identical or "
            "tied profiles cannot be split)",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return labels


def cluster_stability(
    profiles: AnnData | np.ndarray,
    n_clusters: int | None = None,
    height: float | None = None,
    *,
    tie_break: TieBreak | None = "pearson",
    n_resamples: int = 20,
    fraction: float = 0.8,
    seed: int = 0,
) -> dict[str, float]:
    """How stable :func:`cluster_profiles` is, by the adjusted Rand index (ARI) with its result.

    Three resamplings, ``n_resamples`` times each, with the same cut rule (``n_clusters``,
    ``height`` or the paper's default):

    - ``permutation``: the rows in a random order (must give the same clusters: ARI 1);
    - ``subsample``: a random subset of ``fraction`` of the rows, compared on those rows;
    - ``tie_order``: plain complete linkage on 1 - Spearman in a random row order, without
      canonical order or tie break (what a non-deterministic implementation would give):
      how much the arbitrary order of tied distances alone can change the clusters.

    Parameters
    ----------
    profiles, n_clusters, height, tie_break
        As in :func:`cluster_profiles`.
    n_resamples
        Number of resamples of each kind.
    fraction
        Share of the rows in each subsample, in (0, 1].
    seed
        Seed of the random resampling.

    Returns
    -------
    ``permutation_ari_min``; ``subsample_ari_mean``, ``_std``, ``_min``; ``tie_order_ari_mean``,
    ``_min``, ``_max``; ``n_resamples``; ``fraction``.
    """
    from sklearn.metrics import adjusted_rand_score

    if not (is_number(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction={fraction!r}: expected a number in (0, 1]")
    check_int(n_resamples, "n_resamples", minimum=1)
    x = _as_matrix(profiles)
    n, n_sub = x.shape[0], min(x.shape[0], max(2, round(fraction * x.shape[0])))
    if n < 2:
        raise ValueError(f"profiles: {n} row; stability needs at least 2 profiles")
    if is_number(n_clusters, integer=True) and n_clusters > n_sub:
        raise ValueError(
            f"n_clusters={n_clusters}: more than the {n_sub} profiles of each subsample "
            f"(fraction={fraction} of {n}); raise fraction or lower n_clusters"
        )
    kw = {"n_clusters": n_clusters, "height": height, "tie_break": tie_break}
    reference = cluster_profiles(x, **kw)
    rng = np.random.default_rng(seed)
    ari = {"permutation": [], "subsample": [], "tie_order": []}
    for _ in range(n_resamples):
        perm = rng.permutation(n)
        ari["permutation"].append(adjusted_rand_score(reference[perm], cluster_profiles(x[perm], **kw)))
        sub = rng.choice(n, size=n_sub, replace=False)
        ari["subsample"].append(adjusted_rand_score(reference[sub], cluster_profiles(x[sub], **kw)))
        perm = rng.permutation(n)
        ari["tie_order"].append(
            adjusted_rand_score(reference[perm], _cut(x[perm], n_clusters, height, None))
        )
    return {
        "permutation_ari_min": float(np.min(ari["permutation"])),
        "subsample_ari_mean": float(np.mean(ari["subsample"])),
        "subsample_ari_std": float(np.std(ari["subsample"])),
        "subsample_ari_min": float(np.min(ari["subsample"])),
        "tie_order_ari_mean": float(np.mean(ari["tie_order"])),
        "tie_order_ari_min": float(np.min(ari["tie_order"])),
        "tie_order_ari_max": float(np.max(ari["tie_order"])),
        "n_resamples": int(n_resamples),
        "fraction": float(fraction),
    }


def _cut(
    x: np.ndarray, n_clusters: int | None, height: float | None, tie_break: TieBreak | None
) -> np.ndarray:
    """fcluster labels of complete linkage on 1 - Spearman (+ tie break) of ``x`` in its row order."""
    dist = spearman_distance(x, condensed=True)
    if tie_break is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            second = np.nan_to_num(pdist(x, TIE_BREAKS[tie_break]), nan=1.0)  # constant rows: 1
        top = second.max() if second.size else 0.0
        if top > 0:
            second *= TIE_BREAK_EPS  # (the same arithmetic as dist + eps * second / top)
            second /= top
            dist += second
        del second
    tree = linkage(dist, method="complete")
    if n_clusters is not None:
        return fcluster(tree, n_clusters, criterion="maxclust")
    cut = tree[:, 2].max() / PAPER_HEIGHT_DIVISOR if height is None else height
    return fcluster(tree, cut, criterion="distance")


def _as_matrix(profiles: AnnData | np.ndarray) -> np.ndarray:
    x = profiles.X if isinstance(profiles, AnnData) else profiles
    if hasattr(x, "toarray"):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(
            f"profiles: expected an (n, bins) matrix with n >= 1 and bins >= 2, got shape {x.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(x).all(1))
    if bad.size:
        raise ValueError(
            f"profiles: {bad.size} row(s) with NaN or inf (e.g. row {bad[0]}); drop them first"
        )
    return x
