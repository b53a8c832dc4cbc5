"""Data-parallel training with two CPU processes (gloo) through Lightning DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

WORKER = Path(__file__).with_name("ddp_worker.py")

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed gloo missing"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    res = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_two_process_ddp_matches_ranks_and_single_process(tmp_path):
    out = str(tmp_path / "ddp")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    _run(torchrun + [str(WORKER), out, "32"], tmp_path)
    w0, w1 = (np.load(f"{out}_weights_{r}.npz") for r in (0, 1))
    assert set(w0.files) == set(w1.files)
    for key in w0.files:  # parameters and batch-norm statistics: identical on both ranks
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
    h0, h1 = (json.loads(Path(f"{out}_history_{r}.json").read_text()) for r in (0, 1))
    assert h0 == h1 and len(h0["epoch"]) == 3  # epoch means over both processes
    saved = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp_model"))
    assert saved == ["ddp_model"]  # written once (rank 0), no temporary leftovers

    # one process with the same global batch (2 x 32 cells per step): the same number of
    # optimiser steps over the same cells, so the fit agrees to a tolerance (not exactly:
    # the batches are composed differently and MMD / discriminator see per-process batches)
    single = str(tmp_path / "single")
    _run([sys.executable, str(WORKER), single, "64"], tmp_path)
    hs = json.loads(Path(f"{single}_history_0.json").read_text())
    for key in ("val_recon_rna", "val_recon_atac"):
        assert h0[key][-1] == pytest.approx(hs[key][-1], rel=0.03), key


def test_two_process_ddp_without_validation_cells_writes_checkpoints(tmp_path):
    """No validation cells (no validation step on any process) and a checkpoint every 2
    epochs, written by rank 0 (the epoch means failed on an empty list of terms)."""
    out, ckpt = str(tmp_path / "noval"), tmp_path / "ckpt"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    _run(torchrun + [str(WORKER), out, "32", "0", str(ckpt)], tmp_path)
    h0, h1 = (json.loads(Path(f"{out}_history_{r}.json").read_text()) for r in (0, 1))
    assert h0 == h1 and len(h0["epoch"]) == 3 and not any(k.startswith("val_") for k in h0)
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((ckpt / "config.json").read_text())["train_params"]["epochs_run"] == 3


def test_trainings_after_one_on_two_processes_in_the_same_script(tmp_path):
    """Lightning keeps the process group of a training on two processes: a later training
    on one process in each of them trains on its own (its losses and batch-norm statistics
    were averaged with the other process's), and one asking for another number of
    processes is refused (it ran in the old group, skipping part of every epoch)."""
    worker = str(WORKER.with_name("ddp_worker_after.py"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    res = subprocess.run([sys.executable, worker, "run", "ddp"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for rank in (0, 1):
        _run([sys.executable, worker, f"alone_{rank}.json", "single", str(10 + rank)], tmp_path)
        after = json.loads((tmp_path / f"run_after_{rank}.json").read_text())
        assert after == json.loads((tmp_path / f"alone_{rank}.json").read_text()), rank
        refused = (tmp_path / f"run_refused_{rank}.txt").read_text()
        assert "asks for 3 process(es), but this process already belongs to a group of 2" \
            in refused


def test_strategy_resolution():
    from transmodal.train._trainer import resolve_strategy

    unused = "ddp_find_unused_parameters_true"
    assert resolve_strategy("ddp") == unused
    assert resolve_strategy("DDP") == unused  # Lightning reads names in any case
    assert resolve_strategy("auto") == "auto"  # one process
    assert resolve_strategy("auto", "auto") == "auto"
    for devices in (2, [0, 1], "2", "0,1", -1, "-1"):
        assert resolve_strategy("auto", devices) == unused, devices
    assert resolve_strategy("auto", 1, num_nodes=2) == unused
    for child in ("ddp_spawn", "ddp_fork", "ddp_notebook", "ddp_spawn_find_unused_parameters_true"):
        with pytest.raises(ValueError, match="child processes"):
            resolve_strategy(child)
    # (named before the data are read, not by torch's DDP reducer during the first step)
    with pytest.raises(ValueError, match="DDP must look for unused ones; use strategy='ddp'"):
        resolve_strategy("ddp_find_unused_parameters_false")
    from transmodal._utils import check_parallel

    with pytest.raises(ValueError, match="strategy must be 'auto', .* got None"):
        check_parallel({"strategy": None})


def test_processes_asked_for_must_fit_how_the_program_was_started(monkeypatch):
    """Under torchrun (WORLD_SIZE) devices x num_nodes must be its number of processes; a
    program that Lightning cannot re-run (no script file) cannot start several itself."""
    import types

    from transmodal._utils import check_parallel

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 processes \(started by torchrun .* "
                       "devices=1 x num_nodes=1"):
        check_parallel({"devices": 1, "num_nodes": 1})
    monkeypatch.delenv("RANK")  # Lightning's own launcher: the script run again
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match="running this script again from its start, so every "
                       "training before that one runs again"):
        check_parallel({"devices": 1, "num_nodes": 1})
    monkeypatch.delenv("LOCAL_RANK")
    check_parallel({"devices": 2, "num_nodes": 1})
    check_parallel({"devices": 1, "num_nodes": 2})
    monkeypatch.delenv("WORLD_SIZE")
    # python -i script.py: the script runs first, and Lightning can run it again
    monkeypatch.setattr(sys, "flags", types.SimpleNamespace(interactive=1))
    check_parallel({"devices": 2})
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)  # at the prompt after it: refused
    with pytest.raises(ValueError, match="not started from a script file"):
        check_parallel({"devices": 2})
    monkeypatch.delattr(sys, "ps1")
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # python -c
    with pytest.raises(ValueError, match="not started from a script file"):
        check_parallel({"devices": 2})
    check_parallel({"devices": 1})


def test_rank_before_a_process_group_is_read_from_the_launcher_for_warnings(monkeypatch):
    """Before a process group exists (warnings of a script started by torchrun), the
    launcher's variables tell the rank, for warnings only; files are written whatever a
    job system exports."""
    from transmodal._utils import is_global_zero

    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):  # (a launcher's, inherited)
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "3")  # without a WORLD_SIZE: a lone process (a job system's)
    assert is_global_zero() and is_global_zero(launcher=True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.setenv(var, "1")
        assert not is_global_zero(launcher=True) and is_global_zero()
        monkeypatch.setenv(var, "0")
    assert is_global_zero(launcher=True)


def test_cli_train_with_two_processes_writes_one_complete_model(tmp_path):
    """``transmodal train`` with ``devices: 2`` (Lightning starts the second process): rank 0
    alone writes the output directory, which holds the model and its side files."""
    import anndata as ad
    import yaml

    import transmodal as tm

    data = tm.datasets.synthetic(
        200, modalities={"rna": "nb", "atac": "bernoulli"}, n_features={"rna": 30, "atac": 40},
        seed=0,
    )
    for name, adata in data.items():
        ad.AnnData(adata.X, obs=adata.obs, var=adata.var).write_h5ad(tmp_path / f"{name}.h5ad")
    cfg = {
        "data": {"rna": "rna.h5ad", "atac": "atac.h5ad"},
        "modalities": {"rna": "nb", "atac": "bernoulli"},
        "model": {"n_latent": 4, "hidden": [16]},
        "train": {"max_epochs": 1, "progress_bar": False, "devices": 2},
        "out": "model",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    res = subprocess.run([sys.executable, "-m", "transmodal", "train", "--config", "run.yaml"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("model saved to") == 1, res.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == ["config.json", "history.csv", "model.safetensors", "run_config.yaml"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    model = tm.CrossModalAE.load(tmp_path / "model", data)
    assert model.is_trained_ and model.get_latent_representation("rna").shape == (200, 4)
