"""Variants of the A549 contrastive-anchor setting, scored on validation cells only.

Settings of ``benchmarks/a549_pairing.py`` are chosen here, never on its 340 test cells:
the model is fitted on the paper's train split less a seeded set of validation cells
(``--n-validation``, default 307 = 20 %) and scored on those. Per (anchor fraction, seed)
one JSON line: validation FOSCTTM, the training cells' FOSCTTM (the gap is what the pairing
fails to generalise), the paper's k-NN accuracy (L1, k = 5 / 50) with its chance level, seconds.
A variant is the setting ``a549_model(contrastive=True)`` / ``A549_CONTRASTIVE_TRAIN`` (or, with
``--setting demo``, the demo's ``a549_model()`` and default training) with some arguments
replaced:

    # the setting itself, then e.g. the ATAC encoder input without library normalisation
    .venv/bin/python benchmarks/a549_validation.py --fractions 1 0.25 --seeds 0 1 2
    .venv/bin/python benchmarks/a549_validation.py --modality atac '{"normalize": false}'
    # model / training arguments (JSON), ensembles of N members (seed s: sN ... sN + N - 1)
    .venv/bin/python benchmarks/a549_validation.py --model '{"n_latent": 8}' --train '{"batch_size": 256}'
    .venv/bin/python benchmarks/a549_validation.py --fractions 1 --seeds 0 1 --members 10
    # a registered network architecture (the module that registers it imported first)
    .venv/bin/python benchmarks/a549_validation.py --import benchmarks/plugins/residual.py \
        --modality rna '{"architecture": "residual"}' --modality atac '{"architecture": "residual"}'
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np

import transmodal as tm
from transmodal.nn._registry import import_modules
from transmodal.workflows._demo import (
    A549_CONTRASTIVE_PCA,
    A549_CONTRASTIVE_TRAIN,
    a549_modalities,
    a549_model,
)
from _runs import json_line


def validation_split(train: dict, n_validation: int, seed: int) -> tuple[dict, dict]:
    """``(fit, validation)`` cells of the train split (a seeded choice of rows)."""
    n = next(iter(train.values())).n_obs
    if not 0 < n_validation < n:
        raise SystemExit(f"--n-validation must be in (0, {n}), got {n_validation}")
    perm = np.random.default_rng(seed).permutation(n)
    val, fit = np.sort(perm[:n_validation]), np.sort(perm[n_validation:])
    return ({k: a[fit].copy() for k, a in train.items()},
            {k: a[val].copy() for k, a in train.items()})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="model seeds, one run each per fraction (default: 0 1 2)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25],
                   help="anchor fractions: share of the fitted cells given as anchor pairs "
                        "(default: 1 0.25)")
    p.add_argument("--members", type=int, default=1, help="ensemble members per seed")
    p.add_argument("--model", type=json.loads, default={}, metavar="JSON",
                   help="CrossModalAE arguments replacing the setting's")
    p.add_argument("--train", type=json.loads, default={}, metavar="JSON",
                   help="train() arguments replacing A549_CONTRASTIVE_TRAIN's")
    p.add_argument("--modality", nargs=2, action="append", default=[], metavar=("NAME", "JSON"),
                   help="Modality fields replacing the setting's for modality NAME")
    p.add_argument("--setting", choices=("contrastive", "demo"), default="contrastive",
                   help="the variant's base: the contrastive setting or the demo's (L1 anchors)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import a module first (a name or a .py file), e.g. one that registers "
                        "an architecture")
    p.add_argument("--n-validation", type=int, default=307,
                   help="validation cells held out of the 1,534 train cells (default 307 = 20 %%)")
    p.add_argument("--split-seed", type=int, default=123,
                   help="seed of the validation split, the same for every --seeds run "
                        "(default 123)")
    args = p.parse_args()
    import_modules(args.imports)

    data = tm.datasets.scicar_a549()
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    train = {k: a[split == "train"].copy() for k, a in data.items()}
    fit, val = validation_split(train, args.n_validation, args.split_seed)
    contrastive = args.setting == "contrastive"
    modalities = a549_modalities(A549_CONTRASTIVE_PCA if contrastive else None)
    fields = {name: json.loads(f) for name, f in args.modality}
    for name, changes in fields.items():
        if name not in modalities:
            raise SystemExit(f"--modality: unknown modality {name!r}; one of {list(modalities)}")
        try:
            modalities[name] = replace(modalities[name], **changes)
        except TypeError as err:
            raise SystemExit(f"--modality {name}: {err}") from None
    train_kw = {**(A549_CONTRASTIVE_TRAIN if contrastive else {}), **args.train}
    for fraction in args.fractions:
        for seed in args.seeds:
            t0 = time.perf_counter()
            build = lambda s: a549_model(  # noqa: E731
                fit, anchor_fraction=fraction, seed=s, contrastive=contrastive,
                modalities=modalities, **args.model,
            )
            if args.members == 1:
                model = build(seed).train(progress_bar=False, **train_kw)
            else:
                seeds = range(seed * args.members, (seed + 1) * args.members)
                model = tm.workflows.train_ensemble(build, seeds=seeds, progress_bar=False, **train_kw)

            def latents(cells: dict) -> list[np.ndarray]:
                return [model.get_latent_representation(m, cells[m]) for m in ("rna", "atac")]

            zv = latents(val)
            knn, chance = tm.metrics.knn_accuracy_and_chance(*zv, k=(5, 50), metric="l1")
            print(json_line({
                "setting": args.setting, "anchor_fraction": fraction, "seed": seed,
                "members": args.members, "model": args.model, "train": args.train,
                "modality": fields,
                "foscttm_validation": tm.metrics.foscttm(*zv),
                "foscttm_train": tm.metrics.foscttm(*latents(fit)),
                **{f"knn_acc_l1_{k}_validation": knn["mean"][k] for k in (5, 50)},
                **{f"knn_chance_l1_{k}_validation": chance["mean"][k] for k in (5, 50)},
                "seconds": time.perf_counter() - t0,
            }, default=float), flush=True)


if __name__ == "__main__":
    main()
