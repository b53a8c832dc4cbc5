"""Worker of tests/test_distributed.py: trainings later in a script than one on two
processes that Lightning started (by running the script again).

``python tests/ddp_worker_after.py OUT ddp``: a training on two processes, then one on a
single process in each of them (seed 10 + rank; its history in ``OUT_after_RANK.json``),
then one asking for three processes (its error in ``OUT_refused_RANK.txt``).
``python tests/ddp_worker_after.py OUT single SEED``: the single-process training alone.
"""

from __future__ import annotations

import json
import sys

import torch

import transmodal as tm


def fit(seed: int, **kw) -> tm.CrossModalAE:
    data = tm.datasets.synthetic(n_cells=200, seed=0, n_features={"rna": 30, "atac": 40})
    model = tm.CrossModalAE(
        data, {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")}, n_latent=4,
        hidden=(16,), anchor_fraction=0.5, seed=seed,
    )
    model.train(max_epochs=2, batch_size=32, progress_bar=False, early_stopping=False, **kw)
    return model


def history(model: tm.CrossModalAE, path: str) -> None:
    with open(path, "w") as fh:
        json.dump(model.history.reset_index().to_dict(orient="list"), fh)


def main(out: str, mode: str, seed: str = "0") -> None:
    torch.set_num_threads(1)
    if mode == "single":
        history(fit(int(seed)), out)
        return
    import torch.distributed as dist

    fit(0, devices=2, strategy="ddp")
    rank = dist.get_rank()
    history(fit(10 + rank), f"{out}_after_{rank}.json")  # one process each, after it
    try:
        fit(0, devices=3)
    except ValueError as err:
        with open(f"{out}_refused_{rank}.txt", "w") as fh:
            fh.write(str(err))


if __name__ == "__main__":
    main(*sys.argv[1:])
