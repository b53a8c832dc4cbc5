"""How far can any method go on sci-CAR A549 in the demo's metrics?

Treatment time from one modality alone: a logistic regression trained on the train split's
log1p-normalised profiles of that modality, accuracy on the test cells (bounds how well any
embedding can place that modality's cells in the right treatment-time cluster).

Translation against the mean-profile baseline:
Supervised references that see the true pairs (not available to an unpaired model): k-NN
regression on the paired training cells in the source's PCA space, and the oracle mean
profile of the cell's true treatment-time class. All are compared with the test cells'
observed profiles by per-cell Pearson in log1p space, exactly as the demo compares
translations. Prints one JSON line.

    .venv/bin/python benchmarks/a549_translation_ceiling.py
"""

from __future__ import annotations


import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

import transmodal as tm
from _runs import json_line


def _normalised(x, target: float) -> np.ndarray:
    x = np.asarray(x.todense() if hasattr(x, "todense") else x, dtype=np.float64)
    return x / np.maximum(x.sum(1, keepdims=True), 1.0) * target


def main() -> None:
    import argparse

    # (no options: --help says what it does, anything else is refused)
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    data = tm.datasets.scicar_a549()
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    tr, te = split == "train", split == "test"
    out: dict = {"dataset": "scicar_a549", "metric": "per-cell Pearson, log1p space"}
    for s, t in (("rna", "atac"), ("atac", "rna")):
        lib = float(np.median(np.asarray(data[t].X[tr].sum(1)).ravel()))
        target = _normalised(data[t].X, lib)
        source = np.log1p(_normalised(data[s].X, 1e4))
        pca = PCA(20, random_state=0).fit(source[tr])
        z_tr, z_te = pca.transform(source[tr]), pca.transform(source[te])
        obs = np.log1p(target[te])
        res = {
            "baseline_mean_profile": float(
                np.nanmean(tm.metrics.mean_profile_baseline(np.log1p(target[tr].mean(0, keepdims=True)), obs))
            )
        }
        for k in (10, 50, 200):
            idx = NearestNeighbors(n_neighbors=k).fit(z_tr).kneighbors(z_te)[1]
            pred = np.log1p(target[tr][idx].mean(1))
            res[f"paired_knn_regression_k{k}"] = float(np.nanmean(tm.metrics.translation_pearson(pred, obs)))
        labels = data[t].obs["treatment_time"].astype(str).to_numpy()
        means = {c: np.log1p(target[tr][labels[tr] == c].mean(0)) for c in np.unique(labels)}
        pred = np.stack([means[c] for c in labels[te]])
        res["oracle_class_mean"] = float(np.nanmean(tm.metrics.translation_pearson(pred, obs)))
        out[f"{s}_to_{t}"] = res
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for name, a in data.items():
        x = np.log1p(_normalised(a.X, float(np.median(np.asarray(a.X.sum(1)).ravel()))))
        y = a.obs["treatment_time"].astype(str).to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        out[f"treatment_time_accuracy_from_{name}_alone"] = float(clf.fit(x[tr], y[tr]).score(x[te], y[te]))
    print(json_line(out))


if __name__ == "__main__":
    main()
