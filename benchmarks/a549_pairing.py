"""The paper's Fig. 2 comparison on sci-CAR A549: methods x anchor fractions x seeds.

Trains on the paper's train split (1,534 paired cells, of which a seeded fraction is given
to the method as known pairs), evaluates on its 340 test cells, and prints one JSON line per
(method, fraction, seed) with the demo's metrics; writes ``benchmarks/out/a549_pairing.png``.

    .venv/bin/python benchmarks/a549_pairing.py --seeds 0 1 2 --fractions 0 0.05 0.25 0.5 1 \
        --methods transmodal cca dcca magan cyclegan
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import transmodal as tm
from transmodal.workflows import evaluate_paired
from transmodal.workflows._demo import a549_model, peak_rss_mib

# which anchor fractions each method is run at (the paper's Fig. 2 design)
FRACTIONS = {
    "transmodal": None,  # all requested fractions
    "dcca": None,
    "magan": None,
    "cca": (1.0,),
    "cyclegan": (0.0,),
}


def _embedding_metrics(zx, zy, labels) -> dict:
    knn = tm.metrics.knn_accuracy(zx, zy, k=(5, 50), metric="l1")
    ca = tm.metrics.cluster_accuracy(zx, zy, labels, labels, metric="l1")
    return {
        "foscttm": tm.metrics.foscttm(zx, zy),
        "knn_acc_l1_5": knn["mean"][5],
        "knn_acc_l1_50": knn["mean"][50],
        "cluster_accuracy": ca["mean"],
        "cluster_accuracy_rna_to_atac": ca["x_to_y"],
        "cluster_accuracy_atac_to_rna": ca["y_to_x"],
        "mixing_accuracy": tm.metrics.mixing_accuracy(zx, zy),
    }


def run_transmodal(train, test, fraction, seed) -> dict:
    model = a549_model(train, anchor_fraction=fraction, seed=seed)
    model.train(progress_bar=False)
    res = evaluate_paired(model, test, source="rna", target="atac", labels_key="treatment_time")
    keep = (
        "foscttm", "knn_acc_l1_5", "knn_acc_l1_50", "cluster_accuracy",
        "cluster_accuracy_rna_to_atac", "cluster_accuracy_atac_to_rna", "mixing_accuracy",
        "translation_pearson_rna_to_atac", "translation_pearson_atac_to_rna",
        "baseline_pearson_rna_to_atac", "baseline_pearson_atac_to_rna",
    )
    return {k: res[k] for k in keep}


def run_baseline(name, train, test, fraction, seed) -> dict:
    from transmodal import baselines

    cls = {"cca": "CCA", "dcca": "DCCA", "magan": "MAGAN", "cyclegan": "CycleGAN"}[name]
    if not hasattr(baselines, cls):
        raise SystemExit(f"baseline {cls} is not available in transmodal.baselines")
    method = getattr(baselines, cls)(seed=seed)
    x, y = train["rna"].X, train["atac"].X
    n = x.shape[0]
    rng = np.random.default_rng([seed, 11])
    idx = np.sort(rng.choice(n, int(round(fraction * n)), replace=False))
    if name == "cca":
        method.fit(x[idx], y[idx])
    elif name in ("dcca", "magan"):
        method.fit(x, y, pairs=(idx, idx) if len(idx) else None)
    else:
        method.fit(x, y)
    zx, zy = method.embed_x(test["rna"].X), method.embed_y(test["atac"].X)
    labels = test["rna"].obs["treatment_time"].astype(str).to_numpy()
    return _embedding_metrics(zx, zy, labels)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("knn_acc_l1_5", "knn_acc_l1_50", "cluster_accuracy", "foscttm")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    methods = sorted({r["method"] for r in results})
    for ax, metric in zip(axes, metrics):
        for m in methods:
            rows = [r for r in results if r["method"] == m]
            fr = sorted({r["anchor_fraction"] for r in rows})
            mean = [np.mean([r[metric] for r in rows if r["anchor_fraction"] == f]) for f in fr]
            sd = [np.std([r[metric] for r in rows if r["anchor_fraction"] == f]) for f in fr]
            ax.errorbar([100 * f for f in fr], mean, yerr=sd, marker="o", capsize=3, label=m)
        ax.set_xlabel("anchor pairs (%)")
        ax.set_title(metric)
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.05, 0.25, 0.5, 1.0])
    p.add_argument("--methods", nargs="+", default=list(FRACTIONS), choices=list(FRACTIONS))
    p.add_argument("--figure", default="benchmarks/out/a549_pairing.png")
    args = p.parse_args()
    data = tm.datasets.scicar_a549()
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    train = {k: a[split == "train"].copy() for k, a in data.items()}
    test = {k: a[split == "test"].copy() for k, a in data.items()}
    results = []
    for method in args.methods:
        fractions = FRACTIONS[method] or args.fractions
        for fraction in fractions:
            if fraction not in args.fractions and FRACTIONS[method] is None:
                continue
            if method == "dcca" and fraction == 0:  # DCCA needs pairs to train at all
                continue
            for seed in args.seeds:
                t0 = time.perf_counter()
                if method == "transmodal":
                    res = run_transmodal(train, test, fraction, seed)
                else:
                    res = run_baseline(method, train, test, fraction, seed)
                row = {
                    "dataset": "scicar_a549",
                    "method": method,
                    "anchor_fraction": fraction,
                    "seed": seed,
                    **{k: float(v) for k, v in res.items()},
                    "seconds": time.perf_counter() - t0,
                    "peak_rss_mib": peak_rss_mib(),
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    plot(results, Path(args.figure))


if __name__ == "__main__":
    main()
