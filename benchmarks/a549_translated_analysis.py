"""The paper's downstream analysis on translated data, validated on sci-CAR A549 (issue 7, item 6).

sci-CAR measures RNA and ATAC in the same cells, so the real profile of every translated test
cell is known. Train on the paper's train split (1,534 cells; a seeded fraction of them given
as anchor pairs, the latent classifier on ``treatment_time`` as in the demo), translate the
340 test cells from one modality into the other, and run on the translation what the paper
runs on translated data:

(a) a random forest (``analysis.translated_classifier_roc`` defaults: 100 trees, depth 2)
    fitted on the *real* target-modality profiles of the train cells, 3h vs 0h, scored on the
    translated test cells with their labels: ROC AUC (positive class 3h);
(b) differential expression 3h vs 0h (Welch, BH) on the translated test cells against the same
    test on the *real* target profiles of the same cells: Pearson / Spearman correlation of the
    mean differences and top-50 marker overlap per direction (hypergeometric p-value)
    (``analysis.compare_differential``); ``overlap_both``: up and down markers together, a
    shared marker counted only when it changes in the same direction.

Real and translated profiles are put in the same units before either test: counts normalised
to the median library size of the target's training cells, then ``log1p`` (translations of
count likelihoods already are counts at that library size).

One JSON line per (anchor fraction, direction, seed) with ``method: "transmodal"``, plus
reference lines (the same metrics, seed-independent, printed first):

- ``reference:real_target`` -- the ceiling: (a) the forest scored on the *real* target
  profiles of the test cells; (b) DE on the real target profiles of the *train* cells
  (independent cells, same experiment) against DE on the test cells: how well real data
  reproduce the test cells' DE at all.
- ``reference:paired_knn_regression_k50`` -- a supervised reference that sees every training pair
  (no unpaired model has them): each test cell's target profile predicted as the mean of the
  normalised target profiles of its k = 50 nearest training cells in the source modality's
  PCA space (20 components of the log-normalised source).
- A constant prediction (the mean training profile, the translation baseline of the demo) has
  AUC 0.5 and no DE by construction, so it is not printed.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/a549_translated_analysis.py --seeds 0 --fractions 0 0.25
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

import transmodal as tm
from transmodal.analysis import (
    compare_differential,
    differential_expression,
    translated_classifier_roc,
)
from transmodal.analysis._stats import overlap_pvalue
from transmodal.workflows._demo import a549_model, peak_rss_mib
from _runs import json_line

GROUP, REFERENCE = "3h", "0h"
DIRECTIONS = (("atac", "rna"), ("rna", "atac"))
KNN_K, KNN_PCS = 50, 20


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float64)


def log_normalise(x, target_sum: float) -> np.ndarray:
    """Each cell scaled to ``target_sum`` counts, then ``log1p`` (real and translated alike)."""
    x = np.maximum(dense(x), 0.0)
    return np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1e-12) * target_sum)


def median_library(x) -> float:
    return float(np.median(np.asarray(x.sum(1)).ravel()))


def de_table(x: np.ndarray, labels: np.ndarray, features: Any, *, group: str = GROUP,
             reference: str = REFERENCE, n_top: int = 50) -> pd.DataFrame:
    """Welch DE ``group`` vs ``reference`` on log-normalised profiles ``x`` (columns ``features``)."""
    keep = np.isin(labels, [group, reference])
    obs = pd.DataFrame({"group": np.asarray(labels)[keep].astype(str)})
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(index=pd.Index(np.asarray(features).astype(str)))
    return differential_expression(AnnData(x[keep], obs=obs, var=var), "group", group, reference, n_top=n_top)


def analyse(
    real_train: np.ndarray,
    labels_train: np.ndarray,
    predicted: np.ndarray,
    real_test: np.ndarray,
    labels_test: np.ndarray,
    features: Any,
    *,
    group: str = GROUP,
    reference: str = REFERENCE,
    seed: int = 0,
    n_top: int = 50,
) -> dict[str, Any]:
    """(a) classifier AUC and (b) DE agreement of ``predicted`` against ``real_test``.

    ``real_train`` / ``labels_train``: real target-modality profiles the classifier learns from.
    ``predicted``: profiles of the test cells in the target modality (translated, or any
    reference); ``real_test``: the real target profiles of the same cells; ``labels_test``:
    their labels. All matrices in the same (log-normalised) units with columns ``features``.
    Only cells labelled ``group`` or ``reference`` are used.
    """
    tr = np.isin(labels_train, [group, reference])
    te = np.isin(labels_test, [group, reference])
    roc = translated_classifier_roc(
        real_train[tr], labels_train[tr], predicted[te], labels_test[te], positive=group, seed=seed
    )
    kw = {"group": group, "reference": reference, "n_top": n_top}
    cmp = compare_differential(
        de_table(predicted, labels_test, features, **kw), de_table(real_test, labels_test, features, **kw),
        n_top=n_top,
    )
    return {"auc": roc.auc, "n_train": roc.n_train, "n_test": roc.n_test, **de_summary(cmp)}


def de_summary(cmp) -> dict[str, Any]:
    """Flat JSON fields of a :class:`~transmodal.analysis.DEComparison`."""
    out: dict[str, Any] = {
        "de_pearson": cmp.pearson,
        "de_spearman": cmp.spearman,
        "n_features": cmp.n_common,
    }
    for d, row in cmp.overlap.iterrows():
        out[f"markers_{d}_pred"] = int(row["n_pred"])
        out[f"markers_{d}_obs"] = int(row["n_obs"])
        out[f"overlap_{d}"] = int(row["n_overlap"])
        out[f"overlap_{d}_expected"] = float(row["expected"])
        out[f"overlap_{d}_pval"] = float(row["pval"])
    # both directions together: markers up or down, counted as shared only with the same sign
    pred = {(g, d) for d in ("up", "down") for g in cmp.markers["pred"][d]}
    obs = {(g, d) for d in ("up", "down") for g in cmp.markers["obs"][d]}
    k = len(pred & obs)
    out["overlap_both"] = k
    out["overlap_both_pval"] = overlap_pvalue(k, cmp.n_common, len(pred), len(obs))
    return out


def knn_regression(
    source_train: np.ndarray, target_train: np.ndarray, source_test: np.ndarray,
    *, k: int = KNN_K, n_pcs: int = KNN_PCS, seed: int = 0,
) -> np.ndarray:
    """Mean ``target_train`` row of each test cell's ``k`` nearest training cells (source PCA space).

    ``source_*`` log-normalised source profiles; ``target_train`` normalised (linear) target
    profiles of the same training cells; returns linear profiles (log them afterwards).
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n_pcs = min(n_pcs, source_train.shape[1], source_train.shape[0] - 1)
    pca = PCA(n_pcs, random_state=seed).fit(source_train)
    k = min(k, source_train.shape[0])
    idx = NearestNeighbors(n_neighbors=k).fit(pca.transform(source_train)).kneighbors(
        pca.transform(source_test)
    )[1]
    return target_train[idx].mean(1)


def split_a549(data=None):
    data = tm.datasets.scicar_a549() if data is None else data
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    train = {k: a[split == "train"].copy() for k, a in data.items()}
    test = {k: a[split == "test"].copy() for k, a in data.items()}
    return train, test


def references(train, test, seed: int = 0) -> list[dict[str, Any]]:
    """The seed-independent reference lines (real target = ceiling, paired k-NN regression)."""
    rows = []
    for s, t in DIRECTIONS:
        t0 = time.perf_counter()
        lib_t, lib_s = median_library(train[t].X), median_library(train[s].X)
        y_tr = train[t].obs["treatment_time"].astype(str).to_numpy()
        y_te = test[t].obs["treatment_time"].astype(str).to_numpy()
        real_tr = log_normalise(train[t].X, lib_t)
        real_te = log_normalise(test[t].X, lib_t)
        features = train[t].var_names
        base = {"dataset": "scicar_a549", "direction": f"{s}_to_{t}", "comparison": f"{GROUP}_vs_{REFERENCE}"}
        # ceiling: real test profiles for (a); DE replicated on independent real (train) cells for (b)
        ceil = analyse(real_tr, y_tr, real_te, real_te, y_te, features, seed=seed)
        replication = compare_differential(de_table(real_tr, y_tr, features), de_table(real_te, y_te, features))
        ceil.update(de_summary(replication))
        rows.append({**base, "method": "reference:real_target", **ceil,
                     "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()})
        t0 = time.perf_counter()
        target_lin = np.expm1(real_tr)
        pred = np.log1p(knn_regression(
            log_normalise(train[s].X, lib_s), target_lin, log_normalise(test[s].X, lib_s), seed=seed
        ))
        res = analyse(real_tr, y_tr, pred, real_te, y_te, features, seed=seed)
        rows.append({**base, "method": f"reference:paired_knn_regression_k{KNN_K}", **res,
                     "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()})
    return rows


def run_transmodal(train, test, fraction: float, seed: int, max_epochs: int | None = None) -> list[dict]:
    """Train one model and analyse its test translations in both directions."""
    t0 = time.perf_counter()
    model = a549_model(train, anchor_fraction=fraction, seed=seed)
    model.train(max_epochs=max_epochs, progress_bar=False)
    train_seconds = time.perf_counter() - t0
    rows = []
    for s, t in DIRECTIONS:
        t1 = time.perf_counter()
        lib_t = median_library(train[t].X)
        translated = model.translate(test[s], source=s, target=t)
        assert np.array_equal(translated.var_names, train[t].var_names)
        res = analyse(
            log_normalise(train[t].X, lib_t),
            train[t].obs["treatment_time"].astype(str).to_numpy(),
            log_normalise(translated.X, lib_t),
            log_normalise(test[t].X, lib_t),
            test[t].obs["treatment_time"].astype(str).to_numpy(),
            train[t].var_names,
            seed=seed,
        )
        rows.append({
            "dataset": "scicar_a549", "method": "transmodal", "direction": f"{s}_to_{t}",
            "comparison": f"{GROUP}_vs_{REFERENCE}", "anchor_fraction": fraction, "seed": seed,
            **res,
            "epochs": int(model.train_params_["epochs_run"]),
            "train_seconds": train_seconds,
            "seconds": time.perf_counter() - t1,
            "peak_rss_mib": peak_rss_mib(),
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds, one model each per fraction (default: 0)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.25],
                   help="anchor fractions: share of the train cells given as anchor pairs "
                        "(default: 0 0.25)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the model's size-aware default")
    p.add_argument("--no-references", action="store_true", help="skip the reference lines")
    args = p.parse_args()
    train, test = split_a549()
    if not args.no_references:
        for row in references(train, test):
            print(json_line(row), flush=True)
    for fraction in args.fractions:
        for seed in args.seeds:
            for row in run_transmodal(train, test, fraction, seed, args.max_epochs):
                print(json_line(row), flush=True)


if __name__ == "__main__":
    main()
