"""Adding a modality to a trained model: ``CrossModalAE.from_reference`` against training
every modality again.

Simulated data (:func:`transmodal.datasets.synthetic`, 4 clusters, 2,000 cells measured in
three modalities: RNA counts, binary ATAC, 50 Gaussian protein-like features). The
reference is an RNA + ATAC model (every pair used as an anchor pair); then the protein
modality arrives. Scenarios: ``anchors10``: 10 % of the protein cells carry the name of
their RNA / ATAC partner (the others are renamed, so only these pairs are known);
``unpaired``: none does (the library's default shape-based pseudo-pairs link them).
Methods:

- ``from_reference``: ``CrossModalAE.from_reference(reference, {"rna", "protein"})``, RNA
  frozen as the anchor, the protein networks trained into the reference's latent space (the
  reference's ATAC embedding is used as it is);
- ``joint``: one new RNA + ATAC + protein model trained from scratch on the same cells and
  known pairs.

Per run one JSON line: FOSCTTM of the protein cells against their true RNA and ATAC
partners, among the cells whose pairs the models were not given (``foscttm_protein_rna``,
``foscttm_protein_atac``; over every protein cell, known pairs included:
``foscttm_protein_rna_all``), 5-NN label transfer protein -> RNA, how far the RNA embedding moved from the
reference's (``rna_drift``: the largest absolute coordinate difference; a joint model's
latent space is another one, so n/a), ``seconds`` (the new model's creation + training;
``reference_seconds``: the reference's, which ``from_reference`` reuses), ``peak_rss_mib``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reference.py --seeds 0 1 2 3 4 | tee benchmarks/out/reference.jsonl
    .venv/bin/python benchmarks/reference.py --summary benchmarks/out/reference.jsonl
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _runs import grid_main, grid_parser, scenario_table

SCENARIOS = ("anchors10", "unpaired")
METHODS = ("from_reference", "joint")
N_CELLS = 2000
N_LATENT = 16
KNOWN = 0.1  # the share of protein cells paired by name in scenario anchors10


def make_data(scenario: str, seed: int, n_cells: int = N_CELLS) -> dict:
    """Three modalities of the same cells, the protein cells renamed but for the known
    share (``true_pairs`` still finds every pair through ``obs["true_cell"]``)."""
    import transmodal as tm

    data = tm.datasets.synthetic(
        n_cells, modalities={"rna": "nb", "atac": "bernoulli", "protein": "gaussian"}, seed=seed
    )
    prot = data["protein"]
    known = np.random.default_rng(seed).random(prot.n_obs) < (
        KNOWN if scenario == "anchors10" else 0.0)
    prot.obs_names = [n if k else f"protein_{n}" for n, k in zip(prot.obs_names, known)]
    return data


def run_one(scenario: str, method: str, seed: int, max_epochs: int,
            n_cells: int = N_CELLS) -> dict:
    """Train the reference (``from_reference``) and the new model, and score it (see the
    module docstring)."""
    import transmodal as tm
    from transmodal.workflows._demo import peak_rss_mib

    warnings.filterwarnings("ignore")
    data = make_data(scenario, seed, n_cells)
    specs = {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli"),
             "protein": tm.Modality("gaussian")}
    train = dict(max_epochs=max_epochs, progress_bar=False)
    reference_seconds, drift, z_atac = float("nan"), float("nan"), None
    if method == "from_reference":
        t0 = time.perf_counter()
        reference = tm.CrossModalAE(
            {k: data[k] for k in ("rna", "atac")}, {k: specs[k] for k in ("rna", "atac")},
            n_latent=N_LATENT, anchor_fraction=1.0, seed=seed,
        ).train(**train)
        reference_seconds = time.perf_counter() - t0
        z_ref = reference.get_latent_representation("rna")
        z_atac = reference.get_latent_representation("atac")
        t0 = time.perf_counter()
        model = tm.CrossModalAE.from_reference(
            reference, {k: data[k] for k in ("rna", "protein")}, {"protein": specs["protein"]},
            anchor="rna", anchor_fraction=1.0 if scenario == "anchors10" else 0.0, seed=seed,
        ).train(**train)
        seconds = time.perf_counter() - t0
        drift = float(np.abs(model.get_latent_representation("rna") - z_ref).max())
    else:
        t0 = time.perf_counter()
        model = tm.CrossModalAE(data, specs, n_latent=N_LATENT, anchor_fraction=1.0,
                                seed=seed).train(**train)
        seconds = time.perf_counter() - t0
        z_atac = model.get_latent_representation("atac")
    z_rna = model.get_latent_representation("rna")
    z_prot = model.get_latent_representation("protein")
    rows_r, rows_p = tm.datasets.true_pairs(data, "rna", "protein")
    rows_a, rows_pa = tm.datasets.true_pairs(data, "atac", "protein")
    # (pairs given to the models, by name, are not scored: they were trained to lie together)
    hidden = ~data["protein"].obs_names.isin(data["rna"].obs_names)
    unknown_r, unknown_a = hidden[rows_p], hidden[rows_pa]
    labels_r = data["rna"].obs["label"].to_numpy()
    labels_p = data["protein"].obs["label"].to_numpy()
    return {
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "n_cells": n_cells,
        "foscttm_protein_rna": float(tm.metrics.foscttm(z_rna[rows_r[unknown_r]],
                                                         z_prot[rows_p[unknown_r]])),
        "foscttm_protein_atac": float(tm.metrics.foscttm(z_atac[rows_a[unknown_a]],
                                                          z_prot[rows_pa[unknown_a]])),
        "foscttm_protein_rna_all": float(tm.metrics.foscttm(z_rna[rows_r], z_prot[rows_p])),
        "label_transfer": float(tm.metrics.label_transfer(z_rna, labels_r, z_prot, labels_p)),
        "rna_drift": drift,
        "epochs": int(model.train_params_["epochs_run"]),
        "seconds": seconds,
        "reference_seconds": reference_seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def summary(path: str) -> None:
    """Print the README table (mean ± sd over seeds) from saved JSON lines."""
    cols = ("foscttm_protein_rna", "foscttm_protein_atac", "label_transfer", "rna_drift",
            "seconds", "reference_seconds")
    scenario_table(path, SCENARIOS, METHODS, cols)


def main() -> None:
    parser = grid_parser(__doc__, "scenario", SCENARIOS, METHODS, max_epochs=60)
    grid_main(
        parser, __file__, "scenario", summary,
        lambda a, scenario, method, seed: run_one(scenario, method, seed, a.max_epochs),
        lambda a: [],
    )


if __name__ == "__main__":
    main()
