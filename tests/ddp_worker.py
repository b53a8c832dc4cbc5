"""Worker of tests/test_distributed.py: trains one small model, writes weights and history.

Run as ``torchrun --nproc_per_node 2 tests/ddp_worker.py OUT BATCH_SIZE [VALIDATION_FRACTION
[CHECKPOINT_DIR]]`` (distributed) or ``python tests/ddp_worker.py OUT BATCH_SIZE`` (one
process).
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import torch

import transmodal as tm


def main(out: str, batch_size: int, validation_fraction: float = 0.1,
         checkpoint_dir: str | None = None) -> None:
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    data = tm.datasets.synthetic(n_cells=300, seed=0, n_features={"rna": 50, "atac": 60})
    model = tm.CrossModalAE(
        data,
        {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")},
        n_latent=4,
        hidden=(32,),
        anchor_fraction=0.5,
        validation_fraction=validation_fraction,
        seed=0,
    )
    model.train(
        max_epochs=3,
        batch_size=batch_size,
        devices=world,
        strategy="ddp" if world > 1 else "auto",
        progress_bar=False,
        early_stopping=False,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=2,
    )
    state = {k: v.numpy() for k, v in model.module.state_dict().items()}
    np.savez(f"{out}_weights_{rank}.npz", **state)
    with open(f"{out}_history_{rank}.json", "w") as fh:
        json.dump(model.history.reset_index().to_dict(orient="list"), fh)
    model.save(f"{out}_model", overwrite=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(float(a) for a in sys.argv[3:4]), *sys.argv[4:5])
