"""How well each modality's finished embedding is standardised, by dropout rate.

Trains on simulated paired cells (every pair used) and reports, over all cells: the mean
per-dimension sd of each modality's embedding, the distance between the modalities' mean
embeddings in units of that spread, how well a linear classifier tells the modalities
apart (balanced accuracy, 0.5 = mixed) and FOSCTTM. One JSON line per dropout rate.

    .venv/bin/python benchmarks/latent_calibration.py --dropouts 0.1 0.5 --epochs 10
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import transmodal as tm
from _runs import json_line


def calibration(z_a: np.ndarray, z_b: np.ndarray) -> dict[str, float]:
    """Spread, mean gap and linear separability of two modalities' embeddings."""
    spread = float(np.sqrt((z_a.var(0) + z_b.var(0)) / 2).mean())
    return {
        "sd_a": float(z_a.std(0).mean()),
        "sd_b": float(z_b.std(0).mean()),
        "mean_gap_in_sd": float(np.linalg.norm(z_a.mean(0) - z_b.mean(0)) / spread),
        "mixing": float(tm.metrics.mixing_accuracy(z_a, z_b, seed=0)),
        "foscttm": float(np.mean(tm.metrics.foscttm(z_a, z_b))),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.5],
                   help="dropout rates, one model and JSON line each (default: 0.1 0.5)")
    p.add_argument("--epochs", type=int, default=10,
                   help="training epochs per model (train's max_epochs; default 10)")
    p.add_argument("--cells", type=int, default=300,
                   help="simulated paired cells, all used as anchor pairs (default 300)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the simulated data and of every model (default 0)")
    p.add_argument("--prior", default="learned", help='"learned" or "anchor:rna"')
    p.add_argument("--pretrain-epochs", type=int, default=None,
                   help="anchor prior: epochs of pre-training the anchor (within --epochs)")
    args = p.parse_args()
    data = tm.datasets.synthetic(args.cells, modalities={"rna": "nb", "atac": "bernoulli"},
                                 n_features={"rna": 100, "atac": 200}, seed=args.seed)
    for dropout in args.dropouts:
        start = time.perf_counter()
        model = tm.CrossModalAE(data, {"rna": "nb", "atac": "bernoulli"}, n_latent=8,
                                hidden=(32, 16), dropout=dropout, anchor_fraction=1.0,
                                prior=args.prior, seed=args.seed)
        pretrain = {} if args.pretrain_epochs is None else {"pretrain_epochs": args.pretrain_epochs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (separability, after few epochs)
            model.train(max_epochs=args.epochs, progress_bar=False, **pretrain)
        z = [model.get_latent_representation(n) for n in ("rna", "atac")]
        print(json_line({"benchmark": "latent_calibration", "dropout": dropout,
                          "prior": args.prior, "pretrain_epochs": args.pretrain_epochs,
                          "epochs": args.epochs, "cells": args.cells, "seed": args.seed,
                          **calibration(*z), "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
