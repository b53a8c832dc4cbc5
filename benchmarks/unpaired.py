"""Fully unpaired, unlabelled integration: transmodal against optimal transport (SCOT).

Pairs and labels are hidden from every method (the second modality's ``obs_names`` are
renamed, no ``labels_key``); they are used only to score the result. Datasets:

- ``a549``: sci-CAR A549 RNA / ATAC counts, all 1,874 cells (truly paired, scored by
  FOSCTTM and 5-NN transfer of ``treatment_time``);
- ``pbmc``: Pamona's unpaired PBMC RNA / ATAC embeddings (5-NN label transfer on the four
  shared cell types; no pairs exist, so no FOSCTTM);
- ``syn_clusters``, ``syn_trajectory``, ``syn_unequal`` (2,000 genes vs 200 peaks),
  ``syn_noise`` (noise 1.5): :func:`transmodal.datasets.synthetic`, 2,000 paired cells,
  RNA counts + binary ATAC;
- ``nuclei``: 3,000 DSB2018 nuclei (one fixed random draw) as 32 x 32 crops (a
  convolutional autoencoder) against the same nuclei's radial profiles + morphology
  (``benchmarks/nuclei_image_profile.py``'s two modalities); FOSCTTM only (no labels).

Methods: ``transmodal`` (the library's defaults, which without pairs or labels include the
shape-based pseudo-pairs of :mod:`transmodal.geometry`: ``geometric_pairs="overlay+transport"``),
``transmodal_overlay`` (the earlier default: the Isomap overlay's pseudo-pairs only,
``geometric_pairs="overlay"``), ``transmodal_transport`` (landmark transport's pairs only,
``geometric_pairs="transport"``), ``adversarial`` (the paper's purely
adversarial alignment: ``lam_mmd=0``, ``geometric_pairs=False``) and ``ot`` (:class:`~transmodal.baselines.GromovWassersteinOT`
on log-normalised counts, SCOT's defaults). Each run is a separate process (so that its peak
RSS is its own) and prints one JSON line; ``--summary FILE`` turns saved lines into the
README's table (mean and seed-to-seed standard deviation).

    .venv/bin/python benchmarks/unpaired.py --seeds 0 1 2 3 4 | tee benchmarks/out/unpaired.jsonl
    # what the README reports (2-core CPU budget): --max-epochs 100 (nuclei: --seeds 0 1 2)
    .venv/bin/python benchmarks/unpaired.py --summary benchmarks/out/unpaired.jsonl
    # seed-to-seed spread of the methods alone: one synthetic draw, seeds 0-4
    .venv/bin/python benchmarks/unpaired.py --datasets syn_clusters --data-seed 0
    # the medoid of 3 runs (what transmodal.workflows.train_consensus keeps) from saved runs
    .venv/bin/python benchmarks/unpaired.py --summary benchmarks/out/unpaired_fixed_draw.jsonl --medoid 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
from _runs import json_line

DATASETS = ("a549", "pbmc", "syn_clusters", "syn_trajectory", "syn_unequal", "syn_noise", "nuclei")
METHODS = ("transmodal", "transmodal_overlay", "transmodal_transport", "adversarial", "ot")
N_SYNTHETIC = 2000
N_LATENT = 16
N_NUCLEI = 3000


def load(name: str, seed: int):
    """``(x, y, modality_specs, label_key, paired, shared_classes)`` with pairs hidden;
    ``modality_specs`` are the keyword arguments of each modality's :class:`Modality`;
    ``seed`` draws the synthetic data sets (the real ones are fixed)."""
    import transmodal as tm

    key, shared, paired = None, None, name != "pbmc"
    if name == "nuclei":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from nuclei_image_profile import CHANNELS
        from nuclei_image_profile import load as load_nuclei

        image, profile = load_nuclei(32)
        rows = np.sort(np.random.default_rng(0).choice(image.n_obs, N_NUCLEI, replace=False))
        x, y = image[rows].copy(), profile[rows]
        specs = ({"likelihood": "gaussian", "obsm_key": "crops", "hidden": CHANNELS},
                 {"likelihood": "gaussian"})
    else:
        if name == "a549":
            d = tm.datasets.scicar_a549()
            x, y, lik, key = d["rna"], d["atac"], ("nb", "nb"), "treatment_time"
        elif name == "pbmc":
            d = tm.datasets.pbmc_rna_atac_unpaired()
            x, y, lik, key = d["rna"], d["atac"], ("gaussian", "gaussian"), "cell_type"
            shared = tm.datasets.PBMC_SHARED_CLASSES
        else:
            kw = {"n_cells": N_SYNTHETIC, "seed": seed}
            shape = name.split("_", 1)[1]
            if shape == "trajectory":
                kw["shape"] = "trajectory"
            elif shape == "unequal":
                kw["n_features"] = {"rna": 2000, "atac": 200}
            elif shape == "noise":
                kw["noise"] = 1.5
            d = tm.datasets.synthetic(**kw)
            x, y, lik, key = d["rna"], d["atac"], ("nb", "bernoulli"), "label"
        specs = ({"likelihood": lik[0]}, {"likelihood": lik[1]})
    y = y.copy()
    y.obs_names = [f"hidden_{i}" for i in range(y.n_obs)]  # hide the pairing
    return x, y, specs, key, paired, shared


def _dense(a) -> np.ndarray:
    import scipy.sparse as sp

    return np.asarray(a.toarray() if sp.issparse(a) else a, dtype=np.float64)


def ot_features(adata, likelihood: str, obsm_key: str | None = None) -> np.ndarray:
    """OT's input: counts normalised to the median library size and log1p-transformed
    (images: the flattened crops)."""
    if obsm_key is not None:
        crops = np.asarray(adata.obsm[obsm_key], dtype=np.float64)
        return crops.reshape(len(crops), -1)
    x = _dense(adata.X)
    if likelihood in ("nb", "zinb", "poisson"):
        lib = np.maximum(x.sum(1, keepdims=True), 1.0)
        x = np.log1p(x / lib * np.median(lib))
    return x


def _run_name(dataset: str, data_seed: int | None) -> str:
    """Name of a run's data: ``dataset``, or ``dataset@draw`` for a fixed synthetic draw."""
    return dataset if data_seed is None else f"{dataset}@{data_seed}"


def _table_name(dataset: str, data_seed: int | None) -> str:
    """A run's data set as the summary tables name it."""
    return dataset if data_seed is None else f"{dataset} (draw {data_seed})"


def run_one(
    dataset: str,
    method: str,
    seed: int,
    save_dir: str | None = None,
    max_epochs: int | None = None,
    data_seed: int | None = None,
) -> dict:
    """One run; ``data_seed`` fixes the synthetic draw (default: a new draw per ``seed``)."""
    import transmodal as tm
    from transmodal.workflows._demo import peak_rss_mib

    if not dataset.startswith("syn"):
        data_seed = None  # real data sets are fixed: nothing to draw
    x, y, specs, key, paired, shared = load(dataset, seed if data_seed is None else data_seed)
    t0 = time.perf_counter()
    if method == "ot":
        ot = tm.baselines.GromovWassersteinOT(seed=seed).fit(
            ot_features(x, specs[0]["likelihood"], specs[0].get("obsm_key")),
            ot_features(y, specs[1]["likelihood"], specs[1].get("obsm_key")),
        )
        zx, zy = ot.embed_x(), ot.embed_y()
    else:
        # adversarial-only: the plain adversarial autoencoder, without the MMD term and
        # without the default shape-based pseudo-pairs
        # transmodal_overlay: the earlier default, pseudo-pairs from the Isomap overlay only
        # (geometric_pairs="overlay"; the default adds landmark Gromov-Wasserstein transport)
        # transmodal_transport: landmark transport's pseudo-pairs only
        adversarial = method == "adversarial"
        train = {"lam_mmd": 0.0} if adversarial else {}
        geometry = {"adversarial": False, "transmodal_overlay": "overlay",
                    "transmodal_transport": "transport"}.get(method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the separability warning is reported as a number
            model = tm.CrossModalAE(
                {"x": x, "y": y},
                modalities={"x": tm.Modality(**specs[0]), "y": tm.Modality(**specs[1])},
                n_latent=N_LATENT,
                geometric_pairs=geometry,
                seed=seed,
            )
            model.train(max_epochs=max_epochs, progress_bar=False, **train)
        zx, zy = model.get_latent_representation("x"), model.get_latent_representation("y")
    seconds = time.perf_counter() - t0
    if save_dir:  # embeddings, for the seed-agreement summary
        os.makedirs(save_dir, exist_ok=True)
        name = _run_name(dataset, data_seed)
        path = os.path.join(save_dir, f"{name}_{method}_{seed}.npz")
        if os.path.exists(path):  # (--summary and --medoid read the latest run's)
            print(f"unpaired.py: replacing {path}, saved by an earlier run", file=sys.stderr)
        np.savez_compressed(path, x=zx, y=zy)
    lt = {"y_to_x": None, "x_to_y": None}
    if key is not None:
        lx = x.obs[key].astype(str).to_numpy()
        ly = y.obs[key].astype(str).to_numpy()
        lt = tm.metrics.label_transfer_both(zx, lx, zy, ly, k=5, classes=shared)
    out = {
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "data_seed": data_seed,
        "n_cells": [int(x.n_obs), int(y.n_obs)],
        "foscttm": tm.metrics.foscttm(zx, zy) if paired else None,
        "label_transfer_y_to_x": lt["y_to_x"],
        "label_transfer_x_to_y": lt["x_to_y"],
        "max_epochs": max_epochs if method != "ot" else None,
        "seconds": seconds,
        "peak_rss_mib": peak_rss_mib(),
    }
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def _saved_runs(save_dir: str, name: str, method: str, seeds: list[int]) -> tuple[list[int], list[dict]]:
    """Seeds with saved embeddings, and their ``{"x": ..., "y": ...}`` embeddings."""
    found, runs = [], []
    for s in seeds:
        f = os.path.join(save_dir, f"{name}_{method}_{s}.npz")
        if os.path.exists(f):
            z = np.load(f)
            found.append(s)
            runs.append({"x": z["x"], "y": z["y"]})
    return found, runs


def _agreement(save_dir: str, dataset: str, method: str, seeds: list[int]) -> float | None:
    """Mean chance-corrected seed agreement of the saved embeddings (None if < 2 saved)."""
    import transmodal as tm

    _, runs = _saved_runs(save_dir, dataset, method, seeds)
    if len(runs) < 2:
        return None
    return float(tm.metrics.seed_agreement(runs, warn_below=None)["agreement"].mean())


def _load_rows(path: str) -> dict[tuple, list[dict]]:
    """Saved JSON lines per (dataset, data seed, method), failed runs left out."""
    rows = defaultdict(list)
    with open(path) as fh:
        for line in fh:
            if line.startswith("{"):
                r = json.loads(line)
                if "error" not in r:
                    rows[(r["dataset"], r.get("data_seed"), r["method"])].append(r)
    return rows


def medoid_summary(path: str, save_dir: str, size: int) -> str:
    """Markdown table: FOSCTTM of one run against the medoid of ``size`` runs
    (:func:`transmodal.metrics.medoid_run`, what :func:`transmodal.workflows.train_consensus`
    keeps), over every ``size``-subset of the saved seeds of data sets whose runs embed the
    same cells."""
    from itertools import combinations

    import transmodal as tm

    out = [f"| dataset | method | seeds | one run | medoid of {size} (all subsets) | subsets |",
           "|---|---|---|---|---|---|"]
    for (d, ds, m), rs in _load_rows(path).items():
        if (d.startswith("syn") and ds is None) or rs[0]["foscttm"] is None:
            continue
        fos = {r["seed"]: r["foscttm"] for r in rs}
        seeds, runs = _saved_runs(save_dir, _run_name(d, ds), m, sorted(fos))
        if len(runs) < size:
            continue
        table = tm.metrics.seed_agreement(runs, warn_below=None)
        picks = []
        for sub in combinations(range(len(runs)), size):
            part = table[table["run_a"].isin(sub) & table["run_b"].isin(sub)]
            picks.append(fos[seeds[tm.metrics.medoid_run(part)]])
        one = np.array([fos[s] for s in seeds])
        out.append(f"| {_table_name(d, ds)} | {m} | {len(seeds)} | "
                   f"{one.mean():.3f} ± {one.std():.3f} | "
                   f"{np.mean(picks):.3f} ± {np.std(picks):.3f} | {len(picks)} |")
    return "\n".join(out)


def summary(path: str, save_dir: str) -> str:
    """Markdown table: mean ± sd over seeds per dataset and method, and seed agreement."""
    rows = _load_rows(path)
    cols = ("foscttm", "label_transfer_y_to_x", "seconds", "peak_rss_mib")
    out = ["| dataset | method | seeds | FOSCTTM | label transfer (y→x) | seconds | peak RSS MiB "
           "| seed agreement |", "|---|---|---|---|---|---|---|---|"]

    def order(kv):
        d, ds, m = kv[0]
        return DATASETS.index(d), -1 if ds is None else ds, METHODS.index(m)

    for (d, ds, m), rs in sorted(rows.items(), key=order):
        cells = []
        for c in cols:
            v = np.array([r[c] for r in rs if r[c] is not None], dtype=float)
            if not len(v):
                cells.append("–")
            elif c in ("seconds", "peak_rss_mib"):
                cells.append(f"{v.mean():.0f}")
            else:
                cells.append(f"{v.mean():.3f} ± {v.std():.3f}")
        # without a fixed draw, synthetic runs of different seeds embed different cells
        name = _run_name(d, ds)
        fixed = not d.startswith("syn") or ds is not None
        agree = _agreement(save_dir, name, m, [r["seed"] for r in rs]) if fixed else None
        cells.append("–" if agree is None else f"{agree:.2f}")
        out.append(f"| {_table_name(d, ds)} | {m} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                    help="data sets to run (default: all)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                    help="methods to run (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                    help="seeds, one run each per data set and method; each also draws new "
                         "synthetic data unless --data-seed (default: 0 1 2 3 4)")
    ap.add_argument("--summary", metavar="FILE", help="print the table of saved JSON lines")
    ap.add_argument("--medoid", type=int, metavar="K", default=None,
                    help="with --summary: FOSCTTM of the medoid of K >= 2 saved runs instead "
                         "(data sets with fewer saved runs are left out)")
    ap.add_argument("--save-dir", default="benchmarks/out/unpaired",
                    help="where each run's embeddings are saved (for seed agreement)")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="epochs of the autoencoders (default: the library's size-aware default)")
    ap.add_argument("--data-seed", type=int, default=None,
                    help="one fixed synthetic draw for every seed (then the seeds vary only "
                         "the methods); default: a new draw per seed")
    ap.add_argument("--one", nargs=3, metavar=("DATASET", "METHOD", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.medoid is not None and args.medoid < 2:  # (0 would print the plain summary)
        ap.error(f"--medoid must be at least 2 (the medoid of K >= 2 saved runs); "
                 f"got {args.medoid}")
    if args.medoid is not None and not args.summary:  # (it would run the whole benchmark)
        ap.error("--medoid reads saved runs: give it with --summary FILE")
    if args.summary:
        if args.medoid:
            print(medoid_summary(args.summary, args.save_dir, args.medoid))
        else:
            print(summary(args.summary, args.save_dir))
        return
    if args.one:
        d, m, s = args.one
        print(json_line(run_one(d, m, int(s), args.save_dir, args.max_epochs, args.data_seed)),
              flush=True)
        return
    failed = 0
    for d in args.datasets:
        for m in args.methods:
            for s in args.seeds:
                res = subprocess.run(
                    [sys.executable, __file__, "--one", d, m, str(s), "--save-dir", args.save_dir]
                    + ([] if args.max_epochs is None else ["--max-epochs", str(args.max_epochs)])
                    + ([] if args.data_seed is None else ["--data-seed", str(args.data_seed)]),
                    capture_output=True, text=True, env=os.environ.copy(),
                )
                lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
                if res.returncode or not lines:
                    failed += 1
                    print(json_line({"dataset": d, "method": m, "seed": s,
                                      "error": res.stderr.strip().splitlines()[-3:]}), flush=True)
                else:
                    for note in res.stderr.splitlines():  # (e.g. replaced embeddings)
                        if note.startswith("unpaired.py:"):
                            print(note, file=sys.stderr)
                    print(lines[-1], flush=True)
    if failed:  # (the lines of the runs that finished are printed above)
        sys.exit(f"unpaired.py: {failed} run(s) failed (their lines hold the errors)")


if __name__ == "__main__":
    main()
