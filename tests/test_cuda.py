"""CUDA: the same model trained, embedded, translated, saved and loaded on a GPU.

Skipped on machines without CUDA (CI has none); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import transmodal as tm
from transmodal.baselines import DCCA, MAGAN, CycleGAN
from transmodal.metrics import foscttm

from test_image_modality import fit, image_model, nuclei

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _quiet_train(model, **kw):
    kw = {"max_epochs": 3, "batch_size": 32, "progress_bar": False, **kw}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.train(**kw)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gpu_training_with_every_prior_matches_on_cpu(half_paired_data, make_model, precision):
    """Anchors (half the cells), labels, a variational encoder and private dimensions,
    trained on the GPU; the trained weights give the same embedding, translation and
    labels on the GPU and on the CPU."""
    model = make_model(half_paired_data, anchor_fraction=1.0, labels_key="label",
                       variational=True, n_private=2)
    _quiet_train(model, accelerator="gpu", precision=precision)
    hist = model.history
    assert len(hist) == 3 and np.isfinite(hist.select_dtypes("number").to_numpy()).all()
    assert next(model.module.parameters()).device.type == "cpu"  # handed back on the CPU
    for mod in ("rna", "atac"):
        z_gpu = model.get_latent_representation(mod, device="cuda")
        z_cpu = model.get_latent_representation(mod, device="cpu")
        assert z_gpu.shape == (150, 8)
        np.testing.assert_allclose(z_gpu, z_cpu, atol=2e-4, rtol=1e-3)
    t_gpu = model.translate(source="atac", target="rna", device="cuda")
    t_cpu = model.translate(source="atac", target="rna", device="cpu")
    np.testing.assert_allclose(t_gpu.X, t_cpu.X, rtol=2e-3, atol=1e-4)
    lab_gpu = model.predict_labels("atac", half_paired_data["atac"], device="cuda")
    lab_cpu = model.predict_labels("atac", half_paired_data["atac"], device="cpu")
    assert (np.asarray(lab_gpu) == np.asarray(lab_cpu)).mean() > 0.98


def test_gpu_trained_model_saved_and_loaded_on_cpu(paired_data, make_model, tmp_path):
    model = make_model(paired_data)
    _quiet_train(model, accelerator="cuda")
    model.save(tmp_path / "m")
    back = tm.CrossModalAE.load(tmp_path / "m", paired_data)
    np.testing.assert_array_equal(
        back.get_latent_representation("rna"), model.get_latent_representation("rna")
    )


def test_gpu_and_cpu_training_agree(paired_data, make_model):
    """The same seed trained on either device aligns the paired cells equally well (float
    arithmetic differs, and the adversarial game amplifies it, so not bit for bit). With
    every pair an anchor the result is stable: six CPU seeds span FOSCTTM 0.147-0.157."""
    fos = {}
    for acc in ("cpu", "gpu"):
        model = make_model(paired_data, seed=3, anchor_fraction=1.0)
        _quiet_train(model, accelerator=acc, max_epochs=6)
        fos[acc] = foscttm(model.get_latent_representation("rna"),
                           model.get_latent_representation("atac"))
    assert abs(fos["gpu"] - fos["cpu"]) < 0.05, fos


def test_gpu_unpaired_default_geometric_pairs(paired_data, make_model):
    """Unpaired, unlabelled: the default pseudo-pairs (computed on the CPU) train on the GPU."""
    data = {k: a.copy() for k, a in paired_data.items()}
    data["atac"].obs_names = [f"hidden{i}" for i in range(data["atac"].n_obs)]
    model = make_model(data)
    _quiet_train(model, accelerator="gpu")
    assert sum(len(v[0]) for v in model.geometric_pairs_.values()) > 0
    assert np.isfinite(model.get_latent_representation("atac", device="cuda")).all()


def test_gpu_image_modality_round_trip():
    img, feat = nuclei(n=64)
    model = image_model(img, feat, variational=True)
    fit(model, max_epochs=2, accelerator="gpu", batch_size=16)
    crops_gpu = model.translate(feat, source="feat", target="img", device="cuda")
    crops_cpu = model.translate(feat, source="feat", target="img", device="cpu")
    a, b = crops_gpu.obsm["crops"], crops_cpu.obsm["crops"]
    assert a.shape == (64, 1, 16, 16)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_ensemble_on_gpu(paired_data, make_model):
    models = []
    for seed in (0, 1):
        m = make_model(paired_data, seed=seed)
        _quiet_train(m, accelerator="gpu", max_epochs=1)
        models.append(m)
    ens = tm.Ensemble(models)
    z = ens.get_latent_representation("atac", device="cuda")
    np.testing.assert_allclose(z, ens.get_latent_representation("atac", device="cpu"), atol=2e-4)


@pytest.mark.parametrize("cls", [DCCA, CycleGAN, MAGAN])
def test_neural_baselines_on_gpu(cls, paired_data):
    x = paired_data["rna"].layers["counts"].toarray()
    y = paired_data["atac"].X
    kw = ({"n_components": 4, "hidden": (32,)} if cls is DCCA
          else {"hidden_g": (32,), "hidden_d": (32,)})
    model = cls(max_epochs=2, n_pca=10, device="cuda", **kw)
    idx = np.arange(len(x))
    model.fit(x, y) if cls is CycleGAN else model.fit(x, y, pairs=(idx, idx))
    assert np.isfinite(model.embed_x()).all() and np.isfinite(model.embed_y()).all()
    if cls is not DCCA:  # DCCA has no decoders
        assert np.isfinite(model.translate_x_to_y(x[:5])).all()
