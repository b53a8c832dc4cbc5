"""Yang et al.'s chromatin clustering of the 778 published T-cell radial profiles, reproduced.

Hierarchical clustering, 1 - Spearman correlation, complete linkage, 2 clusters. Prints one JSON
line with the adjusted Rand index (ARI) against the published ``chromatin_cluster``:

- ``ours``: ``transmodal.images.cluster_profiles`` (deterministic: canonical row order, ties
  broken by Pearson, Euclidean or not at all), k = 2 and the paper's height cut, and
  ``cluster_stability`` of the default;
- ``plain_scipy``: ``scipy`` complete linkage with ties left to the row order: file order, the
  paper's order and random orders;
- ``r_hclust_paper_order``: a re-implementation of R's ``hclust`` (Fortran nearest-neighbour
  list, first minimum wins) run in the paper's row order (sorted by log2 Coro1A/RPL10A, as in
  its R script) - checks that our distances are the paper's and that the published clusters are
  one particular resolution of tied distances.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tcell_radial_clusters.py
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_rand_score

import transmodal as tm
from transmodal.datasets import dataset_dir
from _runs import json_line


def plain_scipy(x: np.ndarray, order: np.ndarray, k: int = 2) -> np.ndarray:
    """Complete linkage on 1 - Spearman with rows in ``order``; labels in the original order."""
    tree = linkage(squareform(tm.images.spearman_distance(x[order]), checks=False), "complete")
    labels = np.empty(len(x), dtype=int)
    labels[order] = fcluster(tree, k, "maxclust")
    return labels


def r_hclust_complete(dist: np.ndarray, k: int = 2) -> np.ndarray:
    """Complete linkage as R's ``hclust`` (src/appl/hclust.f) computes it, cut into k groups.

    Nearest neighbours are searched among later rows, the first of equal distances wins, and
    the merged cluster keeps the smaller index, exactly as in the Fortran code.
    """
    n = len(dist)
    d = dist.astype(float).copy()
    np.fill_diagonal(d, np.inf)
    alive = np.ones(n, bool)
    nn, disnn = np.zeros(n, int), np.full(n, np.inf)

    def nearest(i: int) -> tuple[int, float]:
        row = np.where(alive[i + 1 :], d[i, i + 1 :], np.inf)
        j = int(np.argmin(row))  # first minimum, as the Fortran strict '<'
        return i + 1 + j, row[j]

    for i in range(n - 1):
        nn[i], disnn[i] = nearest(i)
    parent = np.arange(n)
    for _ in range(n - k):
        im = int(np.argmin(np.where(alive[:-1], disnn[:-1], np.inf)))
        i2, j2 = sorted((im, int(nn[im])))
        alive[j2] = False
        parent[parent == j2] = i2
        merged = np.maximum(d[i2], d[j2])
        merged[~alive] = np.inf
        merged[i2] = np.inf
        d[i2], d[:, i2] = merged, merged
        if i2 < n - 1:
            nn[i2], disnn[i2] = nearest(i2)
        for i in np.flatnonzero(alive[:-1] & np.isin(nn[:-1], (i2, j2))):
            nn[i], disnn[i] = nearest(i)
    return np.unique(parent, return_inverse=True)[1] + 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="data root (default $TRANSMODAL_DATA)")
    p.add_argument("--n-resamples", type=int, default=50,
                   help="random row orders for plain scipy, and resamples of each kind for "
                        "cluster_stability (default 50)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random row orders and of cluster_stability (default 0)")
    args = p.parse_args()

    tcell = ad.read_h5ad(dataset_dir("tcell_chromatin_radial", args.data) / "tcell_radial_chromatin.h5ad")
    x = np.asarray(tcell.X, dtype=np.float64)
    truth = tcell.obs["cluster_id"].to_numpy()

    def ari(labels: np.ndarray) -> float:
        return round(float(adjusted_rand_score(truth, labels)), 4)

    levels = np.unique(np.round(squareform(tm.images.spearman_distance(x), checks=False), 12))
    paper_order = np.argsort(tcell.obs["log2_coro1a_rpl10a"].to_numpy(), kind="stable")
    rng = np.random.default_rng(args.seed)
    random_orders = [ari(plain_scipy(x, rng.permutation(len(x)))) for _ in range(args.n_resamples)]
    r_labels = np.empty(len(x), dtype=int)
    r_labels[paper_order] = r_hclust_complete(tm.images.spearman_distance(x[paper_order]))
    ours = {}
    for tie_break in ("pearson", "euclidean", None):
        k2 = tm.images.cluster_profiles(x, n_clusters=2, tie_break=tie_break)
        ours[str(tie_break)] = {
            "ari_k2": ari(k2),
            "sizes_k2": np.bincount(k2)[1:].tolist(),
            "ari_paper_height_cut": ari(tm.images.cluster_profiles(x, tie_break=tie_break)),
        }
    result = {
        "dataset": "tcell_chromatin_radial",
        "n_profiles": len(x),
        "published_sizes": np.bincount(truth)[1:].tolist(),
        "distinct_spearman_distances": int(levels.size),
        "min_gap_between_distinct_distances": round(float(np.diff(levels).min()), 6),
        "ours": ours,
        "stability_default_k2": tm.images.cluster_stability(
            x, n_clusters=2, n_resamples=args.n_resamples, seed=args.seed
        ),
        "plain_scipy": {
            "ari_file_order": ari(plain_scipy(x, np.arange(len(x)))),
            "ari_paper_order": ari(plain_scipy(x, paper_order)),
            "ari_random_orders": {
                "mean": round(float(np.mean(random_orders)), 4),
                "min": min(random_orders),
                "max": max(random_orders),
            },
        },
        "r_hclust_paper_order": {"ari_k2": ari(r_labels), "sizes": np.bincount(r_labels)[1:].tolist()},
    }
    print(json_line(result))


if __name__ == "__main__":
    main()
