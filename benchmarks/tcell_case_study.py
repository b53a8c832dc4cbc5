"""The paper's T-cell case study on the data we have (issue 7, item 7).

Yang et al. (2021, Figs. 4-5) integrated 3-D DAPI images of naive CD4+ T-cell nuclei with
scRNA-seq of naive CD4+ T cells, translated the nuclei of each chromatin-packing cluster
(central / peripheral) into RNA, ran differential expression between them and validated two
of the genes (Coro1A, RPL10A) by immunostaining. Their RNA is not public. Here:

- image side: the paper's own 778 nuclei as 10-bin radial DAPI profiles
  (``tcell_chromatin_radial``; published clusters central 460 / peripheral 318; the measured
  log2 Coro1A/RPL10A protein ratio per nucleus), Gaussian likelihood (standardised input);
- RNA side: the labelled T-cell populations of 10x PBMC 68k (``pbmc/pbmc68k_reduced.h5ad``,
  sorted-population labels ``bulk_labels``; ``--populations t_cells`` = 192 cells of five T-cell
  populations, ``cd4`` = the 95 CD4+ ones). That file has no raw counts: ``.raw`` holds
  log-normalised expression (``log1p`` of counts per 10^4) of 765 highly variable genes, so the
  RNA modality is that matrix with a Gaussian likelihood (standardised per gene; translations
  are returned in log-normalised units). The raw-count PBMC file of the data set has no labels.

Nothing is paired and no label is shared, so the model is trained unpaired, without a latent
classifier (the chromatin clusters are never shown to it). Printed, one JSON line per seed:

ROC on translated data. The paper's test -- a classifier on real profiles scored on profiles
translated from RNA with the RNA cells' labels -- cannot be run: no RNA cell has a
central / peripheral label. What is measurable (the forest: ``translated_classifier_roc``
defaults, fitted on the real profiles of a stratified 70 % of the nuclei, scored on the other
30 %, positive class ``peripheral``):

- ``auc_real``: the real held-out profiles (ceiling);
- ``auc_reconstruction``: held-out nuclei encoded and decoded as images (what the latent keeps);
- ``auc_cycle``: held-out nuclei translated image -> RNA -> image (what survives the passage
  through the RNA decoder and encoder);
- RNA -> image: profiles translated from every RNA cell, called central / peripheral by the
  forest (descriptive only: ``rna_predicted_peripheral`` overall and per population), and
  ``domain_auc`` (cross-validated logistic regression telling real nuclei from translated
  ones: 0.5 = the translations look like real nuclei, 1 = they are off the data).

DE on RNA translated from images: every nucleus translated into RNA, Welch's t-test
peripheral vs central (BH), genes ranked; top genes per direction in the JSON line, the full
table as CSV under ``--out``. The translations are deterministic functions of 10 numbers per
nucleus, so these p-values measure how cleanly the decoder separates the clusters, not
biological uncertainty; with several seeds a final line gives the seed-to-seed agreement of the
ranking (Spearman of the mean differences, top-50 marker overlap) and of the cross-modal
matching (``metrics.seed_agreement``, 0 = unrelated, 1 = identical): the check that the ranking
is determined by the data rather than by the run.

Coro1A / RPL10A (the paper's Fig. 5): the measured protein ratio (log2 Coro1A/RPL10A) of
peripheral vs central nuclei, Mann-Whitney U and Welch p-values; the same test on the ratio of
the two genes in RNA translated from images is run only if both genes are among the RNA
features (they are not among pbmc68k_reduced's 765 genes: reported as unavailable).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tcell_case_study.py --seeds 0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

import transmodal as tm
from transmodal.analysis import (
    differential_expression,
    top_markers,
    translated_classifier_roc,
)
from transmodal.analysis._stats import overlap_pvalue
from transmodal.datasets import dataset_dir
from transmodal.workflows._demo import peak_rss_mib
from _runs import json_line

GROUP, REFERENCE = "peripheral", "central"
CLUSTER_KEY, RATIO_KEY, POPULATION_KEY = "chromatin_cluster", "log2_coro1a_rpl10a", "population"
POPULATIONS = {
    "t_cells": (
        "CD4+/CD25 T Reg",
        "CD4+/CD45RO+ Memory",
        "CD4+/CD45RA+/CD25- Naive T",
        "CD8+ Cytotoxic T",
        "CD8+/CD45RA+ Naive Cytotoxic",
    ),
    "cd4": ("CD4+/CD25 T Reg", "CD4+/CD45RO+ Memory", "CD4+/CD45RA+/CD25- Naive T"),
}
RATIO_GENES = ("CORO1A", "RPL10A")
N_LATENT = 8  # below the image side's 10 features (the library default of 32 exceeds them)


def load_nuclei(path=None) -> AnnData:
    """The 778 radial chromatin profiles with ``chromatin_cluster`` and the protein ratio."""
    a = ad.read_h5ad(dataset_dir("tcell_chromatin_radial", path) / "tcell_radial_chromatin.h5ad")
    a.obs[CLUSTER_KEY] = a.obs[CLUSTER_KEY].astype(str)
    return a


def load_pbmc_tcells(path=None, populations: str = "t_cells") -> AnnData:
    """Log-normalised expression (``.raw``, 765 genes) of the chosen labelled T-cell populations."""
    full = ad.read_h5ad(dataset_dir("pbmc", path) / "pbmc68k_reduced.h5ad")
    keep = full.obs["bulk_labels"].astype(str).isin(POPULATIONS[populations]).to_numpy()
    rna = full.raw.to_adata()[keep].copy()
    rna.obs = rna.obs[["bulk_labels"]].rename(columns={"bulk_labels": POPULATION_KEY})
    rna.obs[POPULATION_KEY] = rna.obs[POPULATION_KEY].astype(str)
    rna.X = sparse.csr_matrix(rna.X, dtype=np.float32)
    return rna


def modalities() -> dict[str, tm.Modality]:
    """Gaussian for both: standardised log-normalised RNA, standardised radial profiles."""
    return {"rna": tm.Modality("gaussian"), "image": tm.Modality("gaussian")}


def group_test(values: np.ndarray, labels: np.ndarray, group: str = GROUP, reference: str = REFERENCE) -> dict:
    """``group`` vs ``reference``: medians, means, Mann-Whitney U and Welch p-values."""
    values = np.asarray(values, dtype=np.float64)
    a, b = values[labels == group], values[labels == reference]
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return {
        f"n_{group}": int(a.size),
        f"n_{reference}": int(b.size),
        f"median_{group}": float(np.median(a)),
        f"median_{reference}": float(np.median(b)),
        f"mean_{group}": float(a.mean()),
        f"mean_{reference}": float(b.mean()),
        "mannwhitney_pval": float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue),
        "welch_pval": float(stats.ttest_ind(a, b, equal_var=False).pvalue),
    }


def translated_gene_ratio(translated: AnnData, genes=RATIO_GENES, pseudocount: float = 1.0):
    """log2 ratio of two genes in log-normalised (log1p) translated RNA, or ``None`` if absent."""
    if not all(g in translated.var_names for g in genes):
        return None
    x = np.asarray(translated[:, list(genes)].X, dtype=np.float64)
    lin = np.expm1(np.maximum(x, 0.0))
    return np.log2((lin[:, 0] + pseudocount) / (lin[:, 1] + pseudocount))


def _forest_split(labels: np.ndarray, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    return train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)


def domain_auc(real: np.ndarray, translated: np.ndarray, seed: int = 0) -> float:
    """Cross-validated AUC of a logistic regression telling real from translated profiles."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.vstack([real, translated])
    y = np.r_[np.zeros(len(real)), np.ones(len(translated))]
    n_splits = int(min(5, len(real), len(translated)))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=cv, scoring="roc_auc").mean())


def case_study(
    nuclei: AnnData,
    rna: AnnData,
    *,
    seed: int = 0,
    n_latent: int = N_LATENT,
    max_epochs: int | None = None,
    test_fraction: float = 0.3,
    n_top: int = 50,
    n_show: int = 20,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    """Train unpaired, translate both ways, run the analyses.

    Returns ``(JSON row, DE table, {modality: latent of every cell})``.
    """
    if len(nuclei.obs_names.intersection(rna.obs_names)):
        raise ValueError("nuclei and RNA cells share obs_names: they would be treated as pairs")
    t0 = time.perf_counter()
    model = tm.CrossModalAE({"rna": rna, "image": nuclei}, modalities=modalities(), n_latent=n_latent, seed=seed)
    model.train(max_epochs=max_epochs, progress_bar=False)
    train_seconds = time.perf_counter() - t0
    clusters = nuclei.obs[CLUSTER_KEY].to_numpy().astype(str)
    real = np.asarray(nuclei.X, dtype=np.float64)

    # --- ROC: forest on real profiles of 70 % of the nuclei, scored on the other 30 %
    tr, te = _forest_split(clusters, seed, test_fraction)
    recon = model.translate(nuclei[te], source="image", target="image").X
    rna_from_test = model.translate(nuclei[te], source="image", target="rna")
    cycle = model.translate(rna_from_test, source="rna", target="image").X

    def auc(x):
        return translated_classifier_roc(real[tr], clusters[tr], x, clusters[te], positive=GROUP, seed=seed)

    roc_real = auc(real[te])
    forest = roc_real.classifier
    positive_col = list(roc_real.classes).index(GROUP)

    # --- RNA -> image: descriptive calls and realism of the translated profiles
    image_from_rna = np.asarray(model.translate(rna, source="rna", target="image").X, dtype=np.float64)
    called = forest.predict_proba(image_from_rna)[:, list(forest.classes_).index(positive_col)] > 0.5
    populations = rna.obs[POPULATION_KEY].to_numpy().astype(str)
    per_population = {p: float(called[populations == p].mean()) for p in sorted(set(populations))}

    # --- DE on RNA translated from every nucleus, peripheral vs central
    rna_from_images = model.translate(nuclei, source="image", target="rna")
    de = differential_expression(rna_from_images, CLUSTER_KEY, GROUP, REFERENCE, n_top=n_top)
    markers = top_markers(de, n_top=n_top)
    ranked = {
        d: [(g, round(float(de.at[g, "mean_diff"]), 4)) for g in markers[d][:n_show]] for d in ("up", "down")
    }

    # --- Coro1A / RPL10A
    protein = group_test(nuclei.obs[RATIO_KEY].to_numpy(), clusters)
    ratio = translated_gene_ratio(rna_from_images)
    missing = [g for g in RATIO_GENES if g not in rna.var_names]
    row = {
        "dataset": "tcell_chromatin_radial + pbmc68k_reduced",
        "comparison": f"{GROUP}_vs_{REFERENCE}",
        "seed": seed,
        "n_nuclei": int(nuclei.n_obs),
        "n_rna_cells": int(rna.n_obs),
        "n_genes": int(rna.n_vars),
        "n_latent": n_latent,
        "epochs": int(model.train_params_["epochs_run"]),
        "mixing_accuracy": None if model.mixing_accuracy_ is None else float(model.mixing_accuracy_),
        "auc_real": roc_real.auc,
        "auc_reconstruction": auc(recon).auc,
        "auc_cycle": auc(cycle).auc,
        "n_forest_train": len(tr),
        "n_forest_test": len(te),
        "rna_predicted_peripheral": float(called.mean()),
        "rna_predicted_peripheral_by_population": per_population,
        "real_peripheral_fraction": float(np.mean(clusters == GROUP)),
        "domain_auc_rna_to_image": domain_auc(real, image_from_rna, seed),
        "de_n_significant": int((de["pval_adj"] < 0.05).sum()),
        "de_n_up": int(((de["pval_adj"] < 0.05) & (de["direction"] == "up")).sum()),
        "de_n_down": int(((de["pval_adj"] < 0.05) & (de["direction"] == "down")).sum()),
        "de_max_abs_mean_diff": float(de["mean_diff"].abs().max()),
        "de_top_up": ranked["up"],
        "de_top_down": ranked["down"],
        "protein_log2_coro1a_rpl10a": protein,
        "translated_rna_coro1a_rpl10a": (
            {"available": False, "missing_genes": missing} if ratio is None
            else {"available": True, **group_test(ratio, clusters)}
        ),
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
        "peak_rss_mib": peak_rss_mib(),
    }
    latents = {"rna": model.get_latent_representation("rna", rna),
               "image": model.get_latent_representation("image", nuclei)}
    return row, de, latents


def seed_stability(
    des: dict[int, pd.DataFrame], latents: dict[int, dict[str, np.ndarray]] | None = None, n_top: int = 50
) -> dict[str, Any]:
    """Agreement between seeds: of the DE rankings (Spearman of mean differences, marker
    overlap) and, given the latents, of the cross-modal matching (``metrics.seed_agreement``)."""
    seeds = sorted(des)
    pairs = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1 :]:
            common = des[a].index.intersection(des[b].index)
            rho = stats.spearmanr(des[a].loc[common, "mean_diff"], des[b].loc[common, "mean_diff"])[0]
            ma, mb = top_markers(des[a], n_top=n_top), top_markers(des[b], n_top=n_top)
            sa = {(g, d) for d in ("up", "down") for g in ma[d]}
            sb = {(g, d) for d in ("up", "down") for g in mb[d]}
            k = len(sa & sb)
            pairs.append({
                "seeds": [a, b],
                "spearman_mean_diff": float(rho),
                "marker_overlap": k,
                "n_markers": [len(sa), len(sb)],
                "overlap_pval": overlap_pvalue(k, len(common), len(sa), len(sb)),
            })
    out = {
        "summary": "seed_stability",
        "seeds": seeds,
        "mean_spearman_mean_diff": float(np.mean([p["spearman_mean_diff"] for p in pairs])),
        "pairs": pairs,
    }
    if latents is not None:
        agree = tm.metrics.seed_agreement([latents[s] for s in seeds], warn_below=None)
        out["seed_agreement"] = [round(float(a), 4) for a in agree["agreement"]]
        out["mean_seed_agreement"] = float(agree["agreement"].mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="seeds, one model and JSON line each; with several, a final "
                        "seed-stability line (default: 0)")
    p.add_argument("--populations", choices=sorted(POPULATIONS), default="t_cells",
                   help="RNA cells: t_cells = 192 cells of five T-cell populations, cd4 = the "
                        "95 CD4+ ones (default t_cells)")
    p.add_argument("--n-latent", type=int, default=N_LATENT,
                   help=f"latent dimensions (default {N_LATENT}, below the image side's 10 "
                        "features)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the model's size-aware default")
    p.add_argument("--data", default=None, help="data root (default $TRANSMODAL_DATA)")
    p.add_argument("--out", default="benchmarks/out/tcell_case_study", help="DE tables (CSV) go here")
    args = p.parse_args()
    nuclei = load_nuclei(args.data)
    rna = load_pbmc_tcells(args.data, args.populations)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    des, latents = {}, {}
    for seed in args.seeds:
        row, de, latents[seed] = case_study(nuclei, rna, seed=seed, n_latent=args.n_latent, max_epochs=args.max_epochs)
        row["populations"] = args.populations
        de.to_csv(out / f"de_translated_rna_{args.populations}_seed{seed}.csv")
        des[seed] = de
        print(json_line(row), flush=True)
    if len(des) > 1:
        print(json_line(seed_stability(des, latents)), flush=True)


if __name__ == "__main__":
    main()
