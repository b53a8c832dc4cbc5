"""Batch effects within a modality: the batch-conditioned decoder (``Modality(batch_key=)``).

Simulated RNA counts + binary ATAC (:func:`transmodal.datasets.synthetic`, 4 clusters,
2,400 cells, every cell measured in both, 10 % of the pairs used as anchors); the RNA cells
come from several batches, each shifting every gene (log fold changes of sd
``--batch-effect``), the ATAC cells from one. Scenarios:

- ``balanced``: 3 RNA batches, each holding every cluster in the same proportions;
- ``imbalanced``: 2 RNA batches, and clusters 0 and 1 are missing from batch 0 (its cells
  of those clusters are dropped), as when samples differ in composition;
- ``unpaired``: as ``balanced``, but with 2,000 cells, no anchors, the pairs hidden (the
  ATAC ``obs_names`` renamed) and 100 epochs: the library's default unpaired integration
  (shape-based pseudo-pairs; the features of each batch are centred before the shapes are
  matched when the modality has a ``batch_key``).

Methods: ``none`` (no ``batch_key``: the batch effect is left to the encoder),
``batch_key`` (``Modality("nb", batch_key="batch")``: the decoder takes the batch as a
covariate; the library's batch correction) and ``batch_key_mmd`` (the same plus
``train(lam_batch=1)``, a kernel MMD between the batches' latent points). Per run one JSON
line:

- ``batch_mixing``: balanced accuracy of a logistic regression telling the RNA batches
  apart in the latent space, on the clusters every batch holds (chance: 1 / batches);
- ``rna_label_purity``: 3-fold cross-validated 15-NN accuracy of the cluster labels in the
  RNA latent space (do distinct cells stay apart?);
- ``foscttm`` on the true pairs, ``label_transfer`` (5-NN, ATAC -> RNA);
- ``translation_pearson``: ATAC -> RNA translations of each cell against its partner's
  measured RNA (per-cell Pearson of log1p values, mean), decoded in the partner's batch
  (``translate(target_batch=...)``) where the model knows batches;
- ``seconds`` (model creation + training), ``peak_rss_mib``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/batches.py --seeds 0 1 2 | tee benchmarks/out/batches.jsonl
    .venv/bin/python benchmarks/batches.py --summary benchmarks/out/batches.jsonl
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _runs import grid_main, grid_parser, scenario_table

SCENARIOS = ("balanced", "imbalanced", "unpaired")
# the unpaired scenario: the settings of benchmarks/unpaired.py's synthetic data sets
UNPAIRED_CELLS = 2000
UNPAIRED_EPOCHS = 100
EPOCHS = 60  # the other scenarios
METHODS = ("none", "batch_key", "batch_key_mmd")
N_CELLS = 2400
ANCHOR_FRACTION = 0.1
N_LATENT = 16


def make_data(scenario: str, seed: int, batch_effect: float, n_cells: int = N_CELLS):
    """The scenario's ``{"rna", "atac"}`` data and the clusters every RNA batch holds."""
    import transmodal as tm

    n_batches = 2 if scenario == "imbalanced" else 3
    data = tm.datasets.synthetic(
        n_cells, n_batches={"rna": n_batches}, batch_effect=batch_effect, seed=seed
    )
    if scenario == "unpaired":  # pairs hidden: true_pairs still finds them (obs["true_cell"])
        data["atac"].obs_names = [f"atac_{name}" for name in data["atac"].obs_names]
    if scenario == "imbalanced":
        rna = data["rna"]
        drop = (rna.obs["batch"] == "batch0") & rna.obs["label"].isin(["cluster0", "cluster1"])
        data["rna"] = rna[~drop.to_numpy()].copy()
        return data, ["cluster2", "cluster3"]
    return data, list(data["rna"].obs["label"].cat.categories)


def run_one(
    scenario: str, method: str, seed: int, batch_effect: float, max_epochs: int | None,
    n_cells: int = N_CELLS,
) -> dict:
    """Train one model and score it (see the module docstring)."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    import transmodal as tm
    from transmodal.workflows._demo import peak_rss_mib

    warnings.filterwarnings("ignore")
    unpaired = scenario == "unpaired"
    if unpaired and n_cells == N_CELLS:
        n_cells = UNPAIRED_CELLS
    if max_epochs is None:  # (not given)
        max_epochs = UNPAIRED_EPOCHS if unpaired else EPOCHS
    data, common = make_data(scenario, seed, batch_effect, n_cells)
    specs = {
        "rna": tm.Modality("nb", batch_key=None if method == "none" else "batch"),
        "atac": tm.Modality("bernoulli"),
    }
    t0 = time.perf_counter()
    model = tm.CrossModalAE(
        data, specs, n_latent=N_LATENT, anchor_fraction=0.0 if unpaired else ANCHOR_FRACTION,
        seed=seed,
    )
    model.train(
        max_epochs=max_epochs, progress_bar=False,
        lam_batch=1.0 if method == "batch_key_mmd" else 0.0,
    )
    seconds = time.perf_counter() - t0
    rna, atac = data["rna"], data["atac"]
    zr, za = model.get_latent_representation("rna"), model.get_latent_representation("atac")
    labels_r = rna.obs["label"].to_numpy()
    labels_a = atac.obs["label"].to_numpy()
    batch = rna.obs["batch"].to_numpy()
    shared = np.isin(labels_r, common)
    mixing = tm.metrics.mixing_accuracy_multi(
        [zr[shared & (batch == b)] for b in np.unique(batch)], seed=0
    )
    purity = cross_val_score(KNeighborsClassifier(15), zr, labels_r, cv=3).mean()
    rows_r, rows_a = tm.datasets.true_pairs(data, "rna", "atac")
    pearson = np.empty(len(rows_r))
    for b in np.unique(batch[rows_r]):
        sel = np.flatnonzero(batch[rows_r] == b)
        pred = model.translate(
            atac[rows_a[sel]], source="atac", target="rna",
            target_batch=None if method == "none" else str(b),
        )
        observed = rna.X[rows_r[sel]]
        pearson[sel] = tm.metrics.translation_pearson(pred.X, observed, transform=np.log1p)
    return {
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "batch_effect": batch_effect,
        "n_batches": int(len(np.unique(batch))),
        "batch_mixing": float(mixing),
        "rna_label_purity": float(purity),
        "foscttm": float(tm.metrics.foscttm(zr[rows_r], za[rows_a])),
        "label_transfer": float(tm.metrics.label_transfer(za, labels_a, zr, labels_r)),
        "translation_pearson": float(np.nanmean(pearson)),
        "epochs": int(model.train_params_["epochs_run"]),
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def summary(path: str) -> None:
    """Print the README table (mean ± sd over seeds) from saved JSON lines."""
    cols = ("batch_mixing", "rna_label_purity", "foscttm", "label_transfer",
            "translation_pearson", "seconds")
    scenario_table(path, SCENARIOS, METHODS, cols)


def main() -> None:
    parser = grid_parser(
        __doc__, "scenario", SCENARIOS, METHODS, max_epochs=None,
        epochs_help=f"epochs per run (default {EPOCHS}; {UNPAIRED_EPOCHS} for 'unpaired')",
    )
    parser.add_argument("--batch-effect", type=float, default=1.0,
                        help="sd of each RNA batch's per-gene log fold change (default 1; 0: no "
                             "batch effect)")
    grid_main(
        parser, __file__, "scenario", summary,
        lambda a, scenario, method, seed: run_one(
            scenario, method, seed, a.batch_effect, a.max_epochs),
        lambda a: ["--batch-effect", str(a.batch_effect)],
    )


if __name__ == "__main__":
    main()
