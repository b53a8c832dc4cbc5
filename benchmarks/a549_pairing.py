"""The paper's Fig. 2 comparison on sci-CAR A549: methods x anchor fractions x seeds.

Trains on the paper's train split (1,534 paired cells, of which a seeded fraction is given
to the method as known pairs), evaluates on its 340 test cells, and prints one JSON line per
(method, fraction, seed) with the demo's metrics; writes ``benchmarks/out/a549_pairing.png``.

    .venv/bin/python benchmarks/a549_pairing.py --seeds 0 1 2 --fractions 0 0.05 0.25 0.5 1 \
        --methods transmodal cca dcca magan cyclegan | tee benchmarks/out/a549_pairing.jsonl
    # the README's table (and the figure again) from saved lines, e.g. of runs in parts:
    .venv/bin/python benchmarks/a549_pairing.py --summary benchmarks/out/a549_pairing.jsonl

``transmodal_contrastive`` is the autoencoder with the contrastive anchor loss
(``anchor_distance="contrastive"``) in the setting ``a549_model(contrastive=True)`` /
``A549_CONTRASTIVE_TRAIN`` of ``transmodal.workflows._demo`` (chosen on validation cells);
``*_ensemble`` methods train ``--ensemble-size`` seeds with ``tm.workflows.train_ensemble``.

Every row also reports ``knn_chance_l1_{k}``: the k-NN accuracy that the same embeddings
score under a random pairing (:func:`transmodal.metrics.knn_accuracy_chance`). The paper's
k-NN accuracy rewards hubs, so methods that embed in different spaces are compared on how
far they rise above their own chance level. ``knn_acc_l1_{k}`` searches the neighbours
among the 340 test cells; ``knn_acc_l1_{k}_paper`` (and its chance level) among all 1,874
cells, scoring the test cells, as the paper's code does: only these compare with its
published numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import transmodal as tm
from transmodal.workflows import evaluate_paired
from transmodal.workflows._demo import (
    A549_CONTRASTIVE_TRAIN, a549_model, paper_knn_accuracy, peak_rss_mib,
)
from _runs import json_line

# which anchor fractions each method is run at (the paper's Fig. 2 design)
FRACTIONS = {
    "transmodal": None,  # all requested fractions
    "transmodal_ensemble": None,  # tm.workflows.train_ensemble of --ensemble-size seeds
    "transmodal_contrastive": None,  # contrastive anchor loss (needs pairs: no 0 % row)
    "transmodal_contrastive_ensemble": None,  # train_ensemble of the contrastive setting
    "dcca": None,
    "magan": None,
    "cca": (1.0,),
    "cyclegan": (0.0,),
}


PAPER_KNN = ("knn_acc_l1_5_paper", "knn_acc_l1_50_paper", "knn_chance_l1_5_paper",
             "knn_chance_l1_50_paper")


def _embedding_metrics(zx, zy, labels) -> dict:
    knn, chance = tm.metrics.knn_accuracy_and_chance(zx, zy, k=(5, 50), metric="l1")
    ca = tm.metrics.cluster_accuracy(zx, zy, labels, labels, metric="l1")
    return {
        "foscttm": tm.metrics.foscttm(zx, zy),
        "knn_acc_l1_5": knn["mean"][5],
        "knn_acc_l1_50": knn["mean"][50],
        "knn_chance_l1_5": chance["mean"][5],
        "knn_chance_l1_50": chance["mean"][50],
        "cluster_accuracy": ca["mean"],
        "cluster_accuracy_rna_to_atac": ca["x_to_y"],
        "cluster_accuracy_atac_to_rna": ca["y_to_x"],
        "mixing_accuracy": tm.metrics.mixing_accuracy(zx, zy),
    }


def run_transmodal(train, test, fraction, seed, n_members: int = 1, contrastive: bool = False) -> dict:
    """One model, or with ``n_members > 1`` an ensemble of the seeds
    ``seed * n_members, ..., seed * n_members + n_members - 1`` (disjoint per ``seed``);
    ``contrastive``: the contrastive-anchor setting (``a549_model(contrastive=True)``)."""
    train_kw = dict(A549_CONTRASTIVE_TRAIN) if contrastive else {}
    build = lambda s: a549_model(train, anchor_fraction=fraction, seed=s, contrastive=contrastive)  # noqa: E731
    if n_members == 1:
        model = build(seed).train(progress_bar=False, **train_kw)
    else:
        model = tm.workflows.train_ensemble(
            build, seeds=range(seed * n_members, (seed + 1) * n_members), progress_bar=False,
            **train_kw,
        )
    res = evaluate_paired(model, test, source="rna", target="atac", labels_key="treatment_time")
    res.update(paper_knn_accuracy(
        *(model.get_latent_representation(k, part[k]) for part in (train, test)
          for k in ("rna", "atac"))))
    keep = (
        "foscttm", "knn_acc_l1_5", "knn_acc_l1_50", "knn_chance_l1_5", "knn_chance_l1_50",
        *PAPER_KNN, "cluster_accuracy",
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
    return {**_embedding_metrics(zx, zy, labels),
            **paper_knn_accuracy(method.embed_x(x), method.embed_y(y), zx, zy)}


def _mean_sd(rows: list[dict], metric: str) -> tuple[float, float]:
    v = np.array([r[metric] for r in rows], dtype=float)
    return float(v.mean()), float(v.std())


def _label(row: dict) -> str:
    """Method name of a row; ensembles with their size (``transmodal_ensemble x3``)."""
    size = row.get("ensemble_size")
    return row["method"] if size is None else f"{row['method']} x{size}"


def _groups(results: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Rows per (method, anchor fraction), methods in the order of ``FRACTIONS``."""
    out: dict[tuple[str, float], list[dict]] = {}
    order = {m: i for i, m in enumerate(FRACTIONS)}
    key = lambda r: (order.get(r["method"], 99), r.get("ensemble_size", 0), r["anchor_fraction"])  # noqa: E731
    for r in sorted(results, key=key):
        out.setdefault((_label(r), r["anchor_fraction"]), []).append(r)
    return out


def plot(results: list[dict], path: Path) -> None:
    """The paper's Fig. 2c-e panels; k-NN panels also show each method's chance level
    (dashed: its k-NN accuracy under a random pairing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("knn_acc_l1_5", "knn_acc_l1_50", "cluster_accuracy", "foscttm")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6))
    groups = _groups(results)
    methods = list(dict.fromkeys(m for m, _ in groups))
    for ax, metric in zip(axes, metrics):
        chance = metric.replace("knn_acc", "knn_chance")
        for m in methods:
            fr = [f for mm, f in groups if mm == m]
            stats = [_mean_sd(groups[(m, f)], metric) for f in fr]
            line = ax.errorbar([100 * f for f in fr], [s[0] for s in stats],
                               yerr=[s[1] for s in stats], marker="o", capsize=3, label=m)
            if chance != metric and all(chance in r for f in fr for r in groups[(m, f)]):
                ax.plot([100 * f for f in fr], [_mean_sd(groups[(m, f)], chance)[0] for f in fr],
                        ls="--", lw=1, marker="_", ms=10, color=line[0].get_color())
        ax.set_xlabel("anchor pairs (%)")
        ax.set_title(metric + (" (dashed: chance)" if chance != metric else ""))
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def summary(results: list[dict]) -> str:
    """The README's markdown table: mean ± sd over seeds per (method, anchor fraction);
    k-NN accuracies with the mean chance level of the same embeddings in brackets."""
    cols = ("foscttm", "knn_acc_l1_5", "knn_acc_l1_50", "cluster_accuracy", "mixing_accuracy")
    out = ["| method | anchors | FOSCTTM | kNN acc k=5 (chance) | kNN acc k=50 (chance) "
           "| cluster acc | mixing | s/run |", "|---|---|---|---|---|---|---|---|"]
    for (m, f), rows in _groups(results).items():
        cells = []
        for c in cols:
            mean, sd = _mean_sd(rows, c)
            cell = f"{mean:.3f} ± {sd:.3f}"
            chance = c.replace("knn_acc", "knn_chance")
            if chance != c and all(chance in r for r in rows):
                cell += f" ({_mean_sd(rows, chance)[0]:.3f})"
            cells.append(cell)
        cells.append(f"{_mean_sd(rows, 'seconds')[0]:.0f}")
        out.append(f"| {m} | {100 * f:g} % | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds, one run each per method and fraction (default: 0 1 2)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.0, 0.05, 0.25, 0.5, 1.0],
                   help="anchor fractions in [0, 1]: share of the train cells given as known "
                        "pairs (cca runs at 1 only, cyclegan at 0 only)")
    p.add_argument("--methods", nargs="+", default=list(FRACTIONS), choices=list(FRACTIONS),
                   help="methods to run (default: all)")
    p.add_argument("--ensemble-size", type=int, default=3,
                   help="members of the *_ensemble methods (seed s trains seeds s*N ... s*N+N-1)")
    p.add_argument("--figure", default="benchmarks/out/a549_pairing.png",
                   help="PNG file the Fig. 2 panels are written to (also with --summary)")
    p.add_argument("--summary", metavar="JSONL",
                   help="print the README table of saved JSON lines and redraw the figure")
    args = p.parse_args()
    bad = [f for f in args.fractions if not 0.0 <= f <= 1.0]
    if bad:
        p.error(f"--fractions must lie in [0, 1]; got {bad}")
    if args.summary:
        with open(args.summary) as fh:
            results = [json.loads(line) for line in fh if line.startswith("{")]
        print(summary(results))
        plot(results, Path(args.figure))
        return
    data = tm.datasets.scicar_a549()
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    train = {k: a[split == "train"].copy() for k, a in data.items()}
    test = {k: a[split == "test"].copy() for k, a in data.items()}
    results = []
    for method in args.methods:
        fractions = FRACTIONS[method] or args.fractions
        if FRACTIONS[method] and set(FRACTIONS[method]) != set(args.fractions):
            print(f"a549_pairing.py: {method} runs at anchor fraction(s) "
                  f"{list(FRACTIONS[method])} only (the paper's design)", file=sys.stderr)
        for fraction in fractions:
            if (method == "dcca" or "contrastive" in method) and fraction == 0:
                print(f"a549_pairing.py: {method} skipped at anchor fraction 0: it needs "
                      "pairs to train", file=sys.stderr)
                continue
            for seed in args.seeds:
                t0 = time.perf_counter()
                if method == "transmodal":
                    res = run_transmodal(train, test, fraction, seed)
                elif method == "transmodal_ensemble":
                    res = run_transmodal(train, test, fraction, seed, args.ensemble_size)
                elif method == "transmodal_contrastive":
                    res = run_transmodal(train, test, fraction, seed, contrastive=True)
                elif method == "transmodal_contrastive_ensemble":
                    res = run_transmodal(
                        train, test, fraction, seed, args.ensemble_size, contrastive=True
                    )
                else:
                    res = run_baseline(method, train, test, fraction, seed)
                row = {
                    "dataset": "scicar_a549",
                    "method": method,
                    "anchor_fraction": fraction,
                    "seed": seed,
                    **({"ensemble_size": args.ensemble_size}
                       if method.endswith("_ensemble") else {}),
                    **{k: float(v) for k, v in res.items()},
                    "seconds": time.perf_counter() - t0,
                    "peak_rss_mib": peak_rss_mib(),
                }
                results.append(row)
                print(json_line(row), flush=True)
    plot(results, Path(args.figure))


if __name__ == "__main__":
    main()
