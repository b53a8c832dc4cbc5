"""The core demo (sci-CAR A549, paper's split and setting) over several seeds.

Prints one JSON line: the demo metrics per seed, their mean and standard deviation.

    .venv/bin/python benchmarks/a549_demo.py --seeds 0 1 2 --out benchmarks/out/a549_demo
"""

from __future__ import annotations

import argparse

import numpy as np

from transmodal.workflows import run_demo
from transmodal.workflows._demo import DEMO_KEYS
from _runs import json_line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds, one run each (default: 0 1 2)")
    p.add_argument("--out", default="benchmarks/out/a549_demo",
                   help="output directory; each seed writes metrics.json and latent.png to "
                        "OUT/seed<N>")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="training epochs (default: the model's size-aware default, with early "
                        "stopping)")
    args = p.parse_args()
    runs = [
        run_demo(f"{args.out}/seed{s}", seed=s, max_epochs=args.max_epochs, progress_bar=False, verbose=False)
        for s in args.seeds
    ]
    keys = list(DEMO_KEYS) + ["seconds", "epochs"]
    summary = {
        "dataset": "scicar_a549",
        "method": "transmodal.CrossModalAE",
        "settings": {"anchor_fraction": 0.0, "labels_key": "treatment_time", "split": "yang2021",
                     "max_epochs": args.max_epochs},
        "seeds": args.seeds,
        "mean": {k: float(np.mean([r[k] for r in runs])) for k in keys},
        "std": {k: float(np.std([r[k] for r in runs])) for k in keys},
        "per_seed": runs,
        # (the seeds run in one process: each seed's peak_rss_mib is the process's peak so
        # far, so their maximum is the figure, not their mean)
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
    }
    print(json_line(summary))


if __name__ == "__main__":
    main()
