"""CrossModalAE: training, history, embeddings, translation, seeds, priors and anchors."""

from __future__ import annotations

import copy
import json
import os
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import transmodal as tm
from transmodal.data import find_pairs

from conftest import SMALL, default_specs, make_data

N_LATENT = 8


def _latents(model):
    return {n: model.get_latent_representation(n) for n in model.modality_names}


# ------------------------------------------------------------------ training and history
@pytest.mark.parametrize("sparse_rna", [True, False])
def test_trains_on_dense_and_sparse(sparse_rna, make_model, train):
    data = make_data(sparse_rna=sparse_rna)
    model = make_model(data, seed=0)
    assert not model.is_trained_
    out = train(model)
    assert out is model and model.is_trained_
    h = model.history
    assert isinstance(h, pd.DataFrame)
    assert h.index.name == "epoch" and list(h.index) == [0, 1]
    for col in ("train_recon_rna", "train_recon_atac", "train_disc", "train_disc_acc", "train_adv"):
        assert np.isfinite(h[col]).all(), col
    assert model.train_params_["epochs_run"] == 2


def test_dense_and_sparse_input_train_identically(make_model, train):
    lat = []
    for sparse_rna in (True, False):
        model = train(make_model(make_data(sparse_rna=sparse_rna), seed=5))
        lat.append(_latents(model))
    for name in lat[0]:
        np.testing.assert_array_equal(lat[0][name], lat[1][name])


def test_history_columns(trained_model):
    h = trained_model.history
    expected = {
        "train_recon_rna",
        "train_recon_atac",
        "train_disc",
        "train_disc_acc",
        "train_adv",
        "train_cls",
        "train_anchor",
        "train_loss",
        "val_recon_rna",
        "val_recon_atac",
        "val_disc",
        "val_disc_acc",
        "val_adv",
        "val_cls",
        "val_anchor",
        "val_monitor",
    }
    assert expected <= set(h.columns), expected - set(h.columns)
    assert len(h) == 2
    assert np.isfinite(h[sorted(expected)].to_numpy()).all()
    assert ((h["train_disc_acc"] >= 0) & (h["train_disc_acc"] <= 1)).all()
    assert (h[["train_recon_rna", "train_recon_atac", "train_cls", "train_anchor"]] > 0).all().all()
    # val_monitor = reconstruction + classifier + anchor terms (weights 1)
    np.testing.assert_allclose(
        h["val_monitor"],
        h["val_recon_rna"] + h["val_recon_atac"] + h["val_cls"] + h["val_anchor"],
        rtol=1e-5,
    )


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
def test_history_without_labels_or_validation(paired_data, make_model, train):
    # no labels, no anchors and no shape-based pseudo-pairs: no classifier or anchor term
    model = train(make_model(paired_data, validation_fraction=0.0, geometric_pairs=False))
    cols = set(model.history.columns)
    assert {"train_recon_rna", "train_recon_atac", "train_disc", "train_adv"} <= cols
    assert "train_cls" not in cols and "train_anchor" not in cols
    assert not any(c.startswith("val_") for c in cols)
    assert not any(m.any() for m in model.val_masks_.values())


def test_progress_bar_counts_epochs_with_losses(paired_data, make_model, train, capsys):
    model = make_model(paired_data, anchor_fraction=1.0)
    train(model, max_epochs=3, progress_bar=True)
    err = capsys.readouterr().err
    # one bar over the epochs, with the last epoch's losses; no per-step / validation bars
    assert "Training: 100%" in err and "3/3" in err and "epoch/s" in err
    last = model.history.iloc[-1]
    assert f"loss={last['train_loss']:.4g}" in err and f"disc_acc={last['train_disc_acc']:.2f}" in err
    assert "Validation" not in err and "Epoch 0" not in err
    # early stopping ends the bar short, and says so
    train(model, max_epochs=50, progress_bar=True, early_stopping=True, patience=1)
    err = capsys.readouterr().err
    assert len(model.history) < 3 + 50 and "Training (stopped early)" in err
    train(model, max_epochs=1)  # progress_bar=False: silent
    assert "Training" not in capsys.readouterr().err


def test_backed_h5ad_trains_like_in_memory(tmp_path, make_model, train):
    """A backed (on-disk) AnnData is read per batch and gives the same model."""
    data = make_data()
    data["rna"].write_h5ad(tmp_path / "rna.h5ad")
    backed = {"rna": ad.read_h5ad(tmp_path / "rna.h5ad", backed="r"), "atac": data["atac"]}
    z_backed = train(make_model(backed, seed=1)).get_latent_representation("rna")
    z_memory = train(make_model(make_data(), seed=1)).get_latent_representation("rna")
    np.testing.assert_array_equal(z_backed, z_memory)


def test_validation_split_keeps_pairs_together(half_paired_data, make_model):
    model = make_model(half_paired_data, validation_fraction=0.2, seed=3)
    masks = model.val_masks_
    ia, ib = find_pairs(model.mods["rna"], model.mods["atac"])
    np.testing.assert_array_equal(masks["rna"][ia], masks["atac"][ib])
    n_keys = 150 + 75  # distinct cell names over both modalities
    # 20% of distinct cells are held out; paired cells count once
    n_val_keys = masks["rna"].sum() + masks["atac"].sum() - masks["rna"][ia].sum()
    assert n_val_keys == round(0.2 * n_keys)
    again = make_model(half_paired_data, validation_fraction=0.2, seed=3).val_masks_
    other = make_model(half_paired_data, validation_fraction=0.2, seed=4).val_masks_
    np.testing.assert_array_equal(again["rna"], masks["rna"])
    assert not np.array_equal(other["rna"], masks["rna"])


# ------------------------------------------------------------------ embeddings
def test_latent_shapes_and_dtype(trained_model):
    for name in ("rna", "atac"):
        z = trained_model.get_latent_representation(name)
        assert z.shape == (150, N_LATENT)
        assert z.dtype == np.float32
        assert np.isfinite(z).all()
    with pytest.raises(ValueError, match="'prot'"):
        trained_model.get_latent_representation("prot")


def test_untrained_model_warns_before_use(paired_data, make_model, trained_model):
    model = make_model(paired_data, labels_key="label")
    calls = {
        "Embeddings": lambda m: m.get_latent_representation("rna"),
        "Translations": lambda m: m.translate(source="rna", target="atac"),
        "Label predictions": lambda m: m.predict_labels("atac"),
    }
    for what, call in calls.items():
        with pytest.warns(UserWarning, match=f"{what} come from an untrained model") as rec:
            call(model)
        assert rec[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained model: no warning
        trained_model.get_latent_representation("rna")
        trained_model.translate(source="rna", target="atac")


def test_embed_new_cells(trained_model, paired_data):
    z_all = trained_model.get_latent_representation("rna")
    rows = np.array([17, 3, 99, 42, 0, 149])
    new = paired_data["rna"][rows].copy()
    z_new = trained_model.get_latent_representation("rna", new)
    assert z_new.shape == (6, N_LATENT) and z_new.dtype == np.float32
    np.testing.assert_allclose(z_new, z_all[rows], rtol=1e-5, atol=1e-5)
    # batch size does not change the embedding (eval mode, per-cell normalisation)
    z_small = trained_model.get_latent_representation("rna", batch_size=7)
    np.testing.assert_allclose(z_small, z_all, rtol=1e-5, atol=1e-5)


def test_embed_with_wrong_var_names(trained_model, paired_data):
    rna = paired_data["rna"].copy()
    rna.var_names = [f"other{i}" for i in range(rna.n_vars)]
    with pytest.raises(ValueError) as info:
        trained_model.get_latent_representation("rna", rna)
    assert "'rna'" in str(info.value)
    reordered = paired_data["rna"][:, ::-1].copy()
    with pytest.raises(ValueError, match="'rna'"):
        trained_model.get_latent_representation("rna", reordered)
    fewer = paired_data["atac"][:, :20].copy()
    with pytest.raises(ValueError, match="'atac'"):
        trained_model.get_latent_representation("atac", fewer)


def test_embed_new_cells_checks_values(trained_model, paired_data):
    atac = paired_data["atac"][:5].copy()
    atac.X[0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        trained_model.get_latent_representation("atac", atac)


# ------------------------------------------------------------------ translation
def test_translate(trained_model, paired_data):
    out = trained_model.translate(source="rna", target="atac")
    assert isinstance(out, ad.AnnData)
    assert out.shape == (150, 25)
    assert list(out.var_names) == list(paired_data["atac"].var_names)
    assert list(out.obs_names) == list(paired_data["rna"].obs_names)
    assert "label" in out.obs
    X = np.asarray(out.X)
    assert X.dtype == np.float32 and np.isfinite(X).all()
    assert (X >= 0).all()
    # count targets are decoded at the median training library size of the target
    lib = float(trained_model.module.transforms["atac"].library_size)
    assert out.uns["transmodal"] == {"source": "rna", "target": "atac", "units": "counts",
                                     "linear": True, "library_size": lib}
    np.testing.assert_allclose(X.sum(1), lib, rtol=1e-4)
    train_rows = np.flatnonzero(~trained_model.val_masks_["atac"])
    assert lib == pytest.approx(np.median(paired_data["atac"].X[train_rows].sum(1)))

    fixed = trained_model.translate(source="rna", target="atac", library_size=1000.0)
    np.testing.assert_allclose(np.asarray(fixed.X).sum(1), 1000.0, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(fixed.X) / 1000.0, X / lib, rtol=1e-4, atol=1e-7)


def test_translate_new_cells_and_reverse(trained_model, paired_data):
    atac = paired_data["atac"][10:20].copy()
    out = trained_model.translate(atac, source="atac", target="rna")
    assert out.shape == (10, 40)
    assert list(out.obs_names) == list(atac.obs_names)
    assert list(out.var_names) == list(paired_data["rna"].var_names)
    assert (np.asarray(out.X) >= 0).all()
    full = trained_model.translate(source="atac", target="rna")
    np.testing.assert_allclose(np.asarray(out.X), np.asarray(full.X)[10:20], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'prot'"):
        trained_model.translate(source="rna", target="prot")
    bad = paired_data["atac"].copy()
    bad.var_names = [f"x{i}" for i in range(bad.n_vars)]
    with pytest.raises(ValueError, match="'atac'"):
        trained_model.translate(bad, source="atac", target="rna")


# ------------------------------------------------------------------ seeds
def test_seed_makes_runs_identical(paired_data, make_model, train):
    a = train(make_model(paired_data, seed=3, labels_key="label", anchor_fraction=0.3))
    b = train(make_model(make_data(), seed=3, labels_key="label", anchor_fraction=0.3))
    c = train(make_model(make_data(), seed=4, labels_key="label", anchor_fraction=0.3))
    la, lb, lc = _latents(a), _latents(b), _latents(c)
    for name in la:
        assert np.array_equal(la[name], lb[name])
        assert not np.array_equal(la[name], lc[name])
    pd.testing.assert_frame_equal(a.history, b.history)
    ta = a.translate(source="rna", target="atac").X
    tb = b.translate(source="rna", target="atac").X
    assert np.array_equal(ta, tb)


def test_train_seed_overrides_model_seed(paired_data, make_model, train):
    a = train(make_model(paired_data, seed=3), seed=10)
    b = train(make_model(paired_data, seed=3), seed=10)
    c = train(make_model(paired_data, seed=3), seed=11)
    assert np.array_equal(a.get_latent_representation("rna"), b.get_latent_representation("rna"))
    assert not np.array_equal(a.get_latent_representation("rna"), c.get_latent_representation("rna"))
    assert a.train_params_["seed"] == 10


def test_global_rng_untouched(paired_data, make_model, train):
    state = torch.random.get_rng_state()
    det = torch.are_deterministic_algorithms_enabled()
    train(make_model(paired_data, seed=1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.are_deterministic_algorithms_enabled() == det


def test_callers_grad_mode_and_default_dtype_do_not_change_training(paired_data, make_model, train):
    """Training inside the user's torch.no_grad() / inference_mode() works and leaves grad
    mode as the user had it (Lightning switches autograd on process-wide); a float64 default
    dtype builds the same float32 networks from the same seed."""
    ref = _latents(train(make_model(paired_data, seed=1)))
    with torch.no_grad():
        a = _latents(train(make_model(paired_data, seed=1)))
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        b = _latents(train(make_model(paired_data, seed=1)))  # built inside the block too
        assert torch.is_inference_mode_enabled()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = make_model(paired_data, seed=1)
        assert next(model.module.parameters()).dtype == torch.float32
        c = _latents(train(model))
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(before)
    for other in (a, b, c):
        for name in ref:
            np.testing.assert_array_equal(other[name], ref[name])


def test_seeding_leaves_cuda_generators_alone_when_cuda_is_not_used(paired_data, make_model,
                                                                    train, monkeypatch):
    """torch.manual_seed would also (lazily) seed every CUDA generator, changing the caller's
    later GPU draws; building, training and translating on the CPU seed only the CPU's."""
    if torch.cuda.is_initialized():  # (started by an earlier test: then it is seeded)
        pytest.skip("CUDA was started by an earlier test")
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    model = train(make_model(paired_data, seed=7))
    model.translate(source="rna", target="atac", seed=3)
    assert calls == []


def test_process_wide_torch_flags_are_restored(paired_data, make_model, train, monkeypatch):
    """Lightning's deterministic=True sets torch flags and an environment variable for the
    whole process; training gives the caller's back."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = True
        train(make_model(paired_data, seed=1), max_epochs=1)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def test_ctrl_c_stops_training_and_keeps_the_epochs_run(paired_data, make_model, train,
                                                         monkeypatch, tmp_path):
    """Ctrl+C raises KeyboardInterrupt (Lightning exits the process with SystemExit(1)), the
    model keeps the completed epochs in its history, and Ctrl+C works again afterwards
    (Lightning leaves SIGINT ignored)."""
    import signal

    from transmodal.train import CrossModalPlan

    end_of_epoch = CrossModalPlan.on_train_epoch_end

    def interrupted(plan):
        end_of_epoch(plan)
        if len(plan.history_rows) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(CrossModalPlan, "on_train_epoch_end", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    model = make_model(paired_data, seed=1)
    with pytest.raises(KeyboardInterrupt, match="after 2 complete epoch"):
        train(model, max_epochs=5, early_stopping=False)
    assert signal.getsignal(signal.SIGINT) is handler
    assert model.is_trained_ and len(model.history) == 2
    assert model.train_params_["epochs_run"] == 2
    assert not model.module.training
    assert np.isfinite(model.get_latent_representation("rna")).all()

    def first(plan):  # within the first epoch: nothing to record; the model saves and loads
        raise KeyboardInterrupt

    monkeypatch.setattr(CrossModalPlan, "on_train_epoch_end", first)
    fresh = make_model(paired_data, seed=1)
    weights = {k: v.clone() for k, v in fresh.module.state_dict().items()}
    with pytest.raises(KeyboardInterrupt, match="within its first epoch.*before this train"):
        train(fresh, max_epochs=5, early_stopping=False)
    assert fresh.history_ is None and not fresh.is_trained_
    # the steps of the partial epoch are undone: the model is as it was
    for k, v in fresh.module.state_dict().items():
        assert torch.equal(v, weights[k]), k
    # the same in a continued training: the trained weights stay, with their statistics and
    # the settings they were trained with
    z = model.get_latent_representation("rna")
    params = dict(model.train_params_)
    with pytest.raises(KeyboardInterrupt, match="within its first epoch"):
        train(model, max_epochs=5, early_stopping=False, lam_cls=0.5, seed=9)
    np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    assert len(model.history) == 2 and model.train_params_ == params
    fresh.save(tmp_path / "m")
    assert tm.CrossModalAE.load(tmp_path / "m", paired_data).history_ is None


def test_untrained_classifier_and_endless_warm_up_are_named(paired_data, make_model, train,
                                                             tmp_path):
    model = make_model(paired_data, labels_key="label", disc_conditional=True)
    with pytest.warns(UserWarning, match=r"lam_cls=0 leaves the latent classifier of labels_key "
                      r"'label' untrained.*disc_conditional") as rec:
        train(model, lam_cls=0)
    assert not model.train_params_["classifier_trained"]
    assert not any("adv_warmup" in str(w.message) for w in rec)
    with pytest.warns(UserWarning, match="untrained latent classifier .*lam_cls=0"):
        model.predict_labels("rna")
    model.save(tmp_path / "m")  # the flag is saved with the model
    loaded = tm.CrossModalAE.load(tmp_path / "m", paired_data)
    with pytest.warns(UserWarning, match="untrained latent classifier"):
        loaded.predict_labels("rna")
    train(model, max_epochs=1)  # lam_cls > 0 once: trained from then on
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(model, max_epochs=1, lam_cls=0)
        model.predict_labels("rna")
    assert model.train_params_["classifier_trained"]
    with pytest.warns(UserWarning, match=r"adv_warmup_epochs=10 .* reaches max_epochs=4: the "
                      r"adversarial weight never reaches lam_adv=1.0, and early stopping"):
        train(make_model(paired_data), max_epochs=4, adv_warmup_epochs=10)
    with warnings.catch_warnings():  # reached in the last epoch: nothing to say
        warnings.filterwarnings("error", message=".*adv_warmup_epochs")
        train(make_model(paired_data), max_epochs=3, adv_warmup_epochs=3)


@pytest.mark.parametrize("precision", ["16-true", "bf16-true", "8-mixed", True, 32.0])
def test_unsupported_precision_is_refused_up_front(paired_data, make_model, precision):
    with pytest.raises(ValueError, match="precision must be one of"):
        make_model(paired_data).train(max_epochs=1, progress_bar=False, precision=precision)
    tm.CrossModalAE._check_train_params({"precision": None})  # Lightning's default: allowed


# ------------------------------------------------------------------ priors
@pytest.mark.parametrize("prior", ["foo", "anchor:prot", "anchor", "Learned", None, 3])
def test_invalid_prior(paired_data, make_model, prior):
    with pytest.raises(ValueError, match="prior"):
        make_model(paired_data, prior=prior)


@pytest.mark.parametrize("prior", ["learned", "anchor:rna"])
def test_embeddings_are_standardised_as_they_are_computed_whatever_the_dropout(
        paired_data, make_model, train, prior):
    """The latent statistics set when training ends (and when the anchor is frozen) are
    those of the encoder as it embeds, without dropout: taken with dropout 0.5 on, the
    training cells' embeddings came out with sd 0.6 and each modality's mean off 0."""
    model = train(make_model(paired_data, dropout=0.5, prior=prior, seed=3), max_epochs=4,
                  **({"pretrain_epochs": 2} if prior != "learned" else {}))
    for name in ("rna", "atac"):
        z = model.get_latent_representation(name)[~model.val_masks_[name]]
        np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(z.std(0, ddof=1), 1.0, atol=0.01, err_msg=name)


def test_anchor_prior_freezes_anchor_after_pretraining(paired_data, make_model, train):
    kw = dict(prior="anchor:rna", seed=2, labels_key="label")
    pre = train(make_model(paired_data, **kw), max_epochs=1, pretrain_epochs=1)
    full = train(make_model(make_data(), **kw), max_epochs=3, pretrain_epochs=1)
    assert full.anchor_modality_ == "rna"
    for part in ("encoders", "decoders", "heads"):
        p_pre = dict(getattr(pre.module, part)["rna"].named_parameters())
        p_full = dict(getattr(full.module, part)["rna"].named_parameters())
        assert p_pre.keys() == p_full.keys() and p_pre
        for k in p_pre:
            assert torch.equal(p_pre[k], p_full[k]), f"{part}.rna.{k} changed after pre-training"
    # frozen, the anchor embeds with latent statistics set exactly from its training cells
    # (the running average of a short pre-training lags the weights: its cloud sat shifted
    # and shrunken, out of reach of the batch-standardised encoders aligned to it)
    bn_pre = pre.module.encoders["rna"].standardize
    bn_full = full.module.encoders["rna"].standardize
    exact = copy.deepcopy(full)
    exact._recalibrate_latent_norm(frozen=None, batch_size=32, device=torch.device("cpu"), seed=2)
    bn_exact = exact.module.encoders["rna"].standardize
    torch.testing.assert_close(bn_full.running_mean, bn_exact.running_mean)
    torch.testing.assert_close(bn_full.running_var, bn_exact.running_var)
    # a fit that only pre-trains the anchor ends with the same statistics
    assert torch.equal(bn_pre.running_mean, bn_full.running_mean)
    z = full.get_latent_representation("rna")[~full.val_masks_["rna"]]
    assert np.abs(z.mean(0)).max() < 0.1 and abs(z.std(0).mean() - 1.0) < 0.1
    # the other modality did train after pre-training
    p_pre = dict(pre.module.encoders["atac"].named_parameters())
    p_full = dict(full.module.encoders["atac"].named_parameters())
    assert any(not torch.equal(p_pre[k], p_full[k]) for k in p_pre)
    # parameters are trainable again for the user after training
    assert all(p.requires_grad for p in full.module.parameters())

    h = full.history
    assert list(h.index) == [0, 1, 2]
    # epoch 0: only the anchor autoencoder, no alignment
    assert np.isfinite(h.loc[0, "train_recon_rna"])
    assert np.isnan(h.loc[0, "train_recon_atac"]) and np.isnan(h.loc[0, "train_adv"])
    assert h.loc[0, "lam_adv_effective"] == 0.0
    # later: the anchor is frozen (no reconstruction term), the others are aligned to it
    assert h.loc[1:, "train_recon_rna"].isna().all()
    assert np.isfinite(h.loc[1:, ["train_recon_atac", "train_adv", "train_disc"]].to_numpy()).all()
    # continued training (another seed) leaves the frozen anchor's embedding as it was
    train(full, max_epochs=1, seed=5)
    np.testing.assert_array_equal(full.get_latent_representation("rna")[~full.val_masks_["rna"]], z)


def test_learned_prior_trains_every_modality(trained_model):
    assert trained_model.anchor_modality_ is None
    h = trained_model.history
    assert np.isfinite(h[["train_recon_rna", "train_recon_atac"]].to_numpy()).all()


# ------------------------------------------------------------------ anchors
def test_anchor_fraction_selects_half_of_paired_training_cells(paired_data, make_model):
    model = make_model(paired_data, anchor_fraction=0.5, seed=0)
    assert set(model.anchors_) == {"rna|atac"}
    ia, ib = model.anchors_["rna|atac"]
    n_train = int((~model.val_masks_["rna"]).sum())
    assert len(ia) == len(ib) == round(0.5 * n_train)
    assert len(np.unique(ia)) == len(ia)
    # anchors are training cells and true pairs
    assert not model.val_masks_["rna"][ia].any() and not model.val_masks_["atac"][ib].any()
    np.testing.assert_array_equal(
        np.asarray(paired_data["rna"].obs_names)[ia], np.asarray(paired_data["atac"].obs_names)[ib]
    )
    same = make_model(make_data(), anchor_fraction=0.5, seed=0).anchors_["rna|atac"]
    np.testing.assert_array_equal(same[0], ia)
    np.testing.assert_array_equal(same[1], ib)
    other = make_model(make_data(), anchor_fraction=0.5, seed=1).anchors_["rna|atac"]
    assert not np.array_equal(other[0], ia)
    assert make_model(make_data(), anchor_fraction=0.0).anchors_ == {}


def test_default_anchor_fraction_warns_that_known_pairs_go_unused(half_paired_data, make_model):
    with pytest.warns(UserWarning, match=r"known pairs unused: 'rna' and 'atac' share \d+ "
                      r"training cells.*anchor_fraction=1.0") as rec:
        model = make_model(half_paired_data)
    assert rec[0].filename.endswith("conftest.py")  # make_model's CrossModalAE(...) line
    assert model.anchors_ == {} and model.init_params_["anchor_fraction"] == 0.0
    pa, pb = find_pairs(model.mods["rna"], model.mods["atac"])
    n = int((~model.val_masks_["rna"][pa] & ~model.val_masks_["atac"][pb]).sum())
    assert f"share {n} training cells" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model(half_paired_data, anchor_fraction=0)  # chosen: silent
        unpaired = {k: a.copy() for k, a in half_paired_data.items()}
        unpaired["atac"].obs_names = [f"x{i}" for i in range(unpaired["atac"].n_obs)]
        make_model(unpaired)  # nothing to use
    # a few equal names (barcodes of two runs meeting by chance) are not advised as pairs
    names = list(unpaired["atac"].obs_names)
    names[:2] = unpaired["rna"].obs_names[:2]
    unpaired["atac"].obs_names = names
    with pytest.warns(UserWarning, match=r"few shared cell names: 'rna' and 'atac' share \d "
                      r"of \d+ training cells' names. Barcodes of separate runs") as rec:
        make_model(unpaired)
    assert not any("known pairs unused" in str(w.message) for w in rec)
    # used as anchors all the same: said so too where the names are barcodes (other names
    # shared by few cells are taken for partly paired cells)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        make_model(unpaired, anchor_fraction=1.0)
    assert not [w for w in rec if "few shared" in str(w.message)]
    rng = np.random.default_rng(0)
    for adata in unpaired.values():
        adata.obs_names = ["".join(rng.choice(list("ACGT"), 16)) + "-1"
                           for _ in range(adata.n_obs)]
    names = list(unpaired["atac"].obs_names)
    names[:2] = unpaired["rna"].obs_names[:2]
    unpaired["atac"].obs_names = names
    with pytest.warns(UserWarning, match=r"anchor pairs from few shared names: 'rna' and "
                      r"'atac' share \d of \d+ training cells' names. Barcodes of separate runs"):
        make_model(unpaired, anchor_fraction=1.0)


def test_row_number_cell_names_are_not_advised_as_pairs(paired_data, make_model):
    """AnnData(matrix) names cells "0".."n-1" in every modality: such shared names are not
    taken for known pairs to use."""
    data = {k: a.copy() for k, a in paired_data.items()}
    data["atac"] = data["atac"][::-1].copy()  # other cells under the same row numbers
    for a in data.values():
        a.obs_names = [str(i) for i in range(a.n_obs)]
    with pytest.warns(UserWarning, match=r"cell names that are row numbers: 'rna' and 'atac' "
                      r"pair \d+ cells only by names that are numbers") as rec:
        make_model(data)
    assert not any("known pairs unused" in str(w.message) for w in rec)
    with pytest.warns(UserWarning, match="anchor pairs from row numbers"):
        model = make_model(data, anchor_fraction=1.0, validation_fraction=0.2)
    with warnings.catch_warnings():  # once: not again for the validation pairs of train()
        warnings.simplefilter("error")
        model.train(max_epochs=1, progress_bar=False)
    with pytest.warns(UserWarning, match=r"cell names that are row numbers"):  # after a filter
        make_model({k: a[1:].copy() for k, a in data.items()})
    with warnings.catch_warnings():  # real names (or row numbers in one modality): silent
        warnings.simplefilter("error")
        data["atac"].obs_names = [f"a{i}" for i in range(data["atac"].n_obs)]
        make_model(data, anchor_fraction=0)


def test_mudata_pairs_by_its_cells_names_not_its_row_keys(paired_data, make_model):
    """A MuData pairs cells through its rows (obsmap), but whether the names say which cells
    are the same is a matter of the cells' own names: barcodes are known pairs, row numbers
    are not."""
    md = pytest.importorskip("mudata")

    def mudata(data):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # mudata's pull_on_update notice
            return md.MuData({k: a.copy() for k, a in data.items()})

    specs = default_specs(2)
    with pytest.warns(UserWarning, match="known pairs unused") as rec:
        make_model(mudata(paired_data), specs)
    assert not any("row numbers" in str(w.message) for w in rec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_model(mudata(paired_data), specs, anchor_fraction=1.0)
    numbered = {k: a.copy() for k, a in paired_data.items()}
    for a in numbered.values():
        a.obs_names = [str(i) for i in range(a.n_obs)]
    with pytest.warns(UserWarning, match="cell names that are row numbers"):
        make_model(mudata(numbered), specs)


def test_pseudo_pairs_for_a_modality_that_no_anchors_chain_to_the_others(three_mod_data,
                                                                          specs3, make_model):
    """RNA and ATAC paired, protein measured on other cells: the anchors tie nothing to the
    protein, so it gets pseudo-pairs with both (and RNA-ATAC, anchored, none)."""
    three_mod_data["prot"].obs_names = "p_" + three_mod_data["prot"].obs_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = make_model(three_mod_data, specs3, anchor_fraction=1.0, seed=0)
    assert set(model.anchors_) == {"rna|atac"}
    assert set(model.geometric_pairs_) == {"rna|prot", "atac|prot"}
    # every modality chained by anchors: none
    three_mod_data["prot"].obs_names = three_mod_data["rna"].obs_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert make_model(three_mod_data, specs3, anchor_fraction=1.0).geometric_pairs_ == {}


def test_pseudo_pairs_beside_too_few_anchors_and_options_that_cannot_act(paired_data,
                                                                          make_model, train):
    """One anchor pair is too few for the anchor loss: the pseudo-pairs stay on in its
    place; geometric_pairs=True beside usable anchors, and training options that nothing
    reads, say that they have no effect."""
    n = paired_data["rna"].n_obs
    with pytest.warns(UserWarning, match="too few for the anchor loss; the shape-based "
                      "pseudo-pairs take their place"):
        model = train(make_model(paired_data, anchor_fraction=1.5 / n, seed=0))
    assert len(model.anchors_["rna|atac"][0]) == 1 and len(model.geometric_pairs_["rna|atac"][0])
    assert "train_anchor" in model.history
    with pytest.warns(UserWarning, match="geometric_pairs=True has no effect"):
        make_model(paired_data, anchor_fraction=0.5, geometric_pairs=True)
    plain = make_model(paired_data, geometric_pairs=False)
    for kw, match in (({"beta": 0.5}, "beta=0.5 has no effect: the model is not variational"),
                      ({"lam_cls": 3.0}, "lam_cls=3.0 has no effect"),
                      ({"anchor_distance": "contrastive"}, "no anchor pairs or pseudo-pairs")):
        with pytest.warns(UserWarning, match=match):
            train(plain, **kw)


def test_a_small_modality_beside_a_large_one_keeps_a_validation_split():
    """The split drawn over all cells can leave a small unpaired modality (40 cells beside
    2,000) with fewer than 2 validation cells, which switched validation off for every
    modality: it now draws its share from its own cells, the large one's split unchanged."""
    a = tm.datasets.synthetic(40, n_features={"rna": 20, "atac": 20}, paired=False, seed=0)
    b = tm.datasets.synthetic(2000, n_features={"rna": 20, "atac": 20}, paired=False, seed=1)
    model = tm.CrossModalAE({"rna": a["rna"], "atac": b["atac"]},
                            {"rna": "nb", "atac": "bernoulli"}, n_latent=3, hidden=(8,),
                            geometric_pairs=False, seed=0)
    assert model.val_masks_["rna"].sum() == 4 and model.val_masks_["atac"].sum() > 150


def test_a_small_paired_modality_keeps_a_validation_split_with_its_partners():
    """A CITE-seq-like subset (30 of 300 cells also measured in a second modality) or a
    modality of 12 cells drew no validation cell for some seeds, which switched validation
    off for every modality: the small one now draws at least 2 (paired ones with their
    partners), for every seed."""
    from transmodal.data import setup_data
    from transmodal.model._split import validation_masks

    d = tm.datasets.synthetic(300, seed=0, n_features=20,
                              modalities={"rna": "nb", "prot": "gaussian"})
    d["prot"] = d["prot"][:30].copy()
    d["tiny"] = tm.datasets.synthetic(12, seed=1, n_features=5, paired=False,
                                      modalities={"tiny": "gaussian", "x": "gaussian"})["tiny"]
    mods, _ = setup_data(d, {"rna": "nb", "prot": "gaussian", "tiny": "gaussian"})
    rows = pd.Index(d["rna"].obs_names).get_indexer(d["prot"].obs_names)
    for seed in range(20):
        masks = validation_masks(mods, 0.1, seed)
        assert masks["prot"].sum() >= 2 and masks["tiny"].sum() >= 2, seed
        assert 20 <= masks["rna"].sum() <= 40 and (~masks["tiny"]).sum() >= 2
        np.testing.assert_array_equal(masks["rna"][rows], masks["prot"])  # partners together
    # a modality of 3 cells cannot keep 2 validation and 2 training cells: none at all
    d["tiny"] = d["tiny"][:3].copy()
    mods, _ = setup_data(d, {"rna": "nb", "prot": "gaussian", "tiny": "gaussian"})
    assert not any(m.any() for m in validation_masks(mods, 0.1, 0).values())


def test_modalities_without_information_and_contrastive_in_one_dimension_are_named(
    paired_data, make_model, train
):
    const = {n: a.copy() for n, a in paired_data.items()}
    const["atac"].X = np.ones(const["atac"].shape, dtype=np.float32)
    with pytest.warns(UserWarning, match="modality 'atac': X is the same in every training cell"):
        make_model(const)
    one = {n: a.copy() for n, a in paired_data.items()}
    one["rna"] = one["rna"][:, :1].copy()
    with pytest.warns(UserWarning, match="modality 'rna' has one feature: normalize=True"):
        make_model(one)
    model = make_model(paired_data, n_latent=1, anchor_fraction=1.0)
    with pytest.raises(ValueError, match="contrastive' needs n_latent >= 2"):
        train(model, anchor_distance="contrastive")


def test_anchor_fraction_partial_pairing(half_paired_data, make_model):
    model = make_model(half_paired_data, anchor_fraction=0.5, seed=0)
    ia, ib = model.anchors_["rna|atac"]
    pa, pb = find_pairs(model.mods["rna"], model.mods["atac"])
    n_paired_train = int((~model.val_masks_["rna"][pa] & ~model.val_masks_["atac"][pb]).sum())
    assert len(ia) == round(0.5 * n_paired_train)
    assert set(zip(ia.tolist(), ib.tolist())) <= set(zip(pa.tolist(), pb.tolist()))


def test_anchor_loss_pulls_pairs_together(make_model, train):
    dist = {}
    for frac in (0.0, 0.5):
        model = train(
            make_model(make_data(), anchor_fraction=frac, geometric_pairs=False, seed=0),
            max_epochs=10,
            lam_anchor=10.0,
        )
        z_rna = model.get_latent_representation("rna")
        z_atac = model.get_latent_representation("atac")
        dist[frac] = float(np.linalg.norm(z_rna - z_atac, axis=1).mean())
        if frac > 0:
            h = model.history["train_anchor"].to_numpy()
            assert h[-1] < 0.75 * h[0]
    assert dist[0.5] < 0.7 * dist[0.0], dist


def test_few_anchor_pairs_are_standardised_as_their_modality_batch(make_model, train):
    """Paired cells are encoded with their modality's batch statistics: 2 pairs (which
    batch normalisation over the pairs alone set to +-1 in every coordinate, leaving the
    anchor loss without a gradient) are pulled together."""
    from transmodal.nn._mlp import MLPEncoder

    torch.manual_seed(0)
    enc = MLPEncoder(5, 3, (8,), dropout=0.0).train()
    x = torch.randn(32, 5)
    z_batch = enc(x)  # records the batch's moments
    torch.testing.assert_close(enc.distribution(x[:2], like_batch=True)[0], z_batch[:2])
    assert enc(x[:2]).abs().sub(1.0).abs().max() < 0.05  # alone: +-1 everywhere (eps)
    enc.eval()  # evaluation: running statistics, like_batch or not
    torch.testing.assert_close(enc.distribution(x[:2], like_batch=True)[0], enc(x[:2]))

    data = make_data()
    dist = {}
    for lam in (0.0, 10.0):
        model = train(
            make_model(data, anchor_fraction=2 / 135, geometric_pairs=False, dropout=0.0, seed=0),
            max_epochs=8, lam_anchor=lam,
        )
        a, b = model.anchors_["rna|atac"]
        assert len(a) == 2
        za, zb = model.get_latent_representation("rna"), model.get_latent_representation("atac")
        dist[lam] = float(np.abs(za[a] - zb[b]).sum(1).mean())
    assert dist[10.0] < 0.4 * dist[0.0], dist


# ------------------------------------------------------------------ latent classifier
def test_classifier_loss_decreases(paired_data, make_model, train):
    model = train(make_model(paired_data, labels_key="label", seed=0), max_epochs=6)
    cls = model.history["train_cls"].to_numpy()
    assert np.isfinite(cls).all()
    assert cls[-1] < cls[0] - 0.1
    assert model.label_categories_ == ["type0", "type1", "type2"]
    assert model.module.classifier.out_features == 3


# ------------------------------------------------------------------ three modalities
@pytest.mark.parametrize("pairing", ["full", "half"])
def test_three_modalities(pairing, make_model, train):
    data = make_data(pairing=pairing, n_mods=3)
    model = make_model(data, anchor_fraction=0.5, labels_key="label", seed=0)
    assert model.modality_names == ["rna", "atac", "prot"]
    assert set(model.anchors_) == {"rna|atac", "rna|prot", "atac|prot"}
    n_pairs = {"rna|atac": 150, "rna|prot": 150, "atac|prot": 150}
    if pairing == "half":
        n_pairs = {"rna|atac": 75, "rna|prot": 75, "atac|prot": 75}
    for key, (ia, ib) in model.anchors_.items():
        a, b = key.split("|")
        pa, pb = find_pairs(model.mods[a], model.mods[b])
        assert len(pa) == n_pairs[key]
        n_train = int((~model.val_masks_[a][pa] & ~model.val_masks_[b][pb]).sum())
        assert len(ia) == round(0.5 * n_train)
        names_a = np.asarray(data[a].obs_names)[ia]
        np.testing.assert_array_equal(names_a, np.asarray(data[b].obs_names)[ib])
    train(model)
    h = model.history
    for name in ("rna", "atac", "prot"):
        assert np.isfinite(h[f"train_recon_{name}"]).all()
        assert model.get_latent_representation(name).shape == (150, N_LATENT)
    assert model.module.discriminator[-1].out_features == 3
    out = model.translate(source="rna", target="prot")
    assert out.shape == (150, 10)
    assert list(out.var_names) == [f"X_prot_{i}" for i in range(10)]
    assert out.uns["transmodal"]["units"] == "preprocessing inverted"
    assert np.isfinite(np.asarray(out.X)).all()
    back = model.translate(data["prot"], source="prot", target="atac")
    assert back.shape == (150, 25) and (np.asarray(back.X) >= 0).all()
    assert list(back.obs_names) == list(data["prot"].obs_names)


def test_three_modalities_anchor_prior(three_mod_data, make_model, train):
    model = make_model(three_mod_data, prior="anchor:prot", seed=0)
    train(model, max_epochs=2, pretrain_epochs=1)
    h = model.history
    assert np.isnan(h.loc[0, "train_recon_rna"]) and np.isfinite(h.loc[0, "train_recon_prot"])
    assert np.isfinite(h.loc[1, ["train_recon_rna", "train_recon_atac", "train_adv"]].to_numpy()).all()


# ------------------------------------------------------------------ warnings and errors
def test_warns_when_modalities_stay_separable(paired_data, make_model, train):
    # every encoder standardises its latent per modality (the same mean and variance on the
    # training cells), so a linear classifier sees the modalities apart only where their
    # embeddings differ beyond that; here atac's are moved off by 3 standard deviations
    model = train(make_model(paired_data, n_latent=8, seed=0), max_epochs=2)
    bn = model.module.encoders["atac"].standardize
    bn.running_mean += 3 * bn.running_var.sqrt()
    with pytest.warns(UserWarning, match="modalities remain separable.*add labels_key or anchor"):
        model._warn_if_separable()
    assert model.mixing_accuracy_ > 0.8
    bn.running_mean -= 3 * bn.running_var.sqrt()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model._warn_if_separable()
    assert model.mixing_accuracy_ < 0.7


def test_warns_when_the_discriminator_still_tells_the_modalities_apart(paired_data, make_model,
                                                                     train):
    # without any alignment term the standardised latents overlap in mean and variance, so
    # the linear check is blind (0.5); the discriminator is not (val accuracy 1.0)
    model = make_model(paired_data, anchor_fraction=0, geometric_pairs=False, seed=0)
    with pytest.warns(UserWarning, match=r"the latent discriminator tells them apart with "
                      r"balanced accuracy (0\.9[1-9]|1\.00)\. ") as rec:
        train(model, max_epochs=20, lam_adv=0, lam_mmd=0, quiet=False)
    assert model.mixing_accuracy_ < 0.7 and "linear classifier" not in str(rec[0].message)
    assert model.disc_accuracy_ > 0.9
    # a conditional discriminator is scored as it was trained: given the cells' labels
    cond = train(make_model(paired_data, anchor_fraction=0, labels_key="label",
                            disc_conditional=True, seed=0), max_epochs=3)
    rows = {n: np.arange(md.n_obs) for n, md in cond.mods.items()}
    embs = {n: cond.get_latent_representation(n) for n in cond.mods}
    zs = {n: torch.from_numpy(z) for n, z in embs.items()}
    ys = {n: torch.from_numpy(md.labels) for n, md in cond.mods.items()}
    with torch.no_grad():
        expected = float(cond.module.discriminator_loss(zs, ys)[1])
    assert cond._disc_accuracy(embs, rows) == pytest.approx(expected)
    # ... on the cells of the classes every modality holds: a class of one modality tells
    # the modality by itself (rna's cells of the first class are relabelled as its own)
    labels = {n: md.labels.copy() for n, md in cond.mods.items()}
    private = labels["rna"] == labels["rna"].min()
    cond.mods["rna"].labels = np.where(private, labels["rna"].max(), labels["rna"])
    shared = set(cond.mods["rna"].labels.tolist()) & set(cond.mods["atac"].labels.tolist())
    keep = {n: np.isin(md.labels, sorted(shared)) for n, md in cond.mods.items()}
    with torch.no_grad():
        expected = float(cond.module.discriminator_loss(
            {n: zs[n][keep[n]] for n in zs},
            {n: torch.from_numpy(cond.mods[n].labels[keep[n]]) for n in zs})[1])
    assert cond._disc_accuracy(embs, rows) == pytest.approx(expected)
    few = {n: r[:10] for n, r in rows.items()}  # too few cells to say anything
    assert cond._disc_accuracy({n: z[:10] for n, z in embs.items()}, few) is None
    # unlabelled cells are scored with the classifier's prediction, as the discriminator
    # sees them in training
    cond.mods["rna"].labels = np.full_like(labels["rna"], -1)
    with torch.no_grad():
        predicted = cond.module.classifier(zs["rna"]).argmax(-1)
        expected = float(cond.module.discriminator_loss(
            zs, {"rna": predicted, "atac": torch.from_numpy(labels["atac"])})[1])
    assert set(predicted.tolist()) == set(labels["atac"].tolist())  # every class shared
    assert cond._disc_accuracy(embs, rows) == pytest.approx(expected)
    for n, y in labels.items():
        cond.mods[n].labels = y
    # short aligned runs: validation accuracies measured with lagging statistics do not
    # count, the final latents do
    for seed in (0, 1):
        model = train(make_model(paired_data, anchor_fraction=0, seed=seed), max_epochs=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model._warn_if_separable()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_without_cuda_raises(paired_data, make_model, accelerator):
    model = make_model(paired_data)
    with pytest.raises(ValueError, match="CUDA"):
        model.train(max_epochs=1, accelerator=accelerator, progress_bar=False)
    assert not model.is_trained_
    with pytest.raises(ValueError, match="CUDA"):
        model.get_latent_representation("rna", device="cuda")


def test_mixed_precision_training_on_cpu(half_paired_data, make_model, train):
    """``precision="bf16-mixed"`` (Lightning autocast) trains every loss term; the model and
    its embeddings stay float32."""
    model = make_model(half_paired_data, labels_key="label", anchor_fraction=1.0)
    train(model, max_epochs=3, precision="bf16-mixed")
    hist = model.history.select_dtypes("number").to_numpy()
    assert len(hist) == 3 and np.isfinite(hist).all()
    assert model.history["train_anchor"].iloc[-1] < model.history["train_anchor"].iloc[0]
    z = model.get_latent_representation("rna")
    assert z.dtype == np.float32 and np.isfinite(z).all()


def test_bad_device_and_modality_arguments_are_named(paired_data, make_model):
    model = make_model(paired_data)
    with pytest.raises(ValueError, match="device must be"):
        model.get_latent_representation("rna", device="tpu")
    # torch devices that hold no data: refused before the weights are moved (they were lost)
    for device in ("meta", torch.device("meta")):
        with pytest.raises(ValueError, match="device must be 'cpu', 'cuda'"):
            model.get_latent_representation("rna", device=device)
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS .* not available"):
            model.get_latent_representation("rna", device="mps")
    # "gpu" / "gpu:N", as training's accelerator="gpu": CUDA, named as given in errors
    if torch.cuda.is_available():
        np.testing.assert_allclose(model.get_latent_representation("rna", device="gpu"),
                                   model.get_latent_representation("rna"), atol=1e-4)
    else:
        for device in ("gpu", "GPU:0"):  # (no GPU of either kind, as training says)
            with pytest.raises(ValueError, match=f"device '{device}' requested but no GPU is "
                               r"available \(neither CUDA nor an Apple GPU\)"):
                model.get_latent_representation("rna", device=device)
        with pytest.raises(ValueError, match="device 'cuda' requested but CUDA is not"):
            model.get_latent_representation("rna", device="cuda")
    for device in ("gpu:", "gpu:abc", "gpus"):
        with pytest.raises(ValueError, match=f"device must be .*got '{device}'"):
            model.get_latent_representation("rna", device=device)
    assert np.isfinite(model.get_latent_representation("rna")).all()  # the model still works
    with pytest.raises(TypeError, match="modality must be a modality name"):
        model.get_latent_representation(paired_data["rna"], "rna")
    with pytest.raises(TypeError, match="target must be a modality name"):
        model.translate(source="rna", target=paired_data["atac"])
    with pytest.raises(ValueError, match="unknown target 'protein'"):
        model.translate(source="rna", target="protein")


def test_invalid_accelerator(paired_data, make_model, monkeypatch):
    with pytest.raises(ValueError, match="accelerator"):
        make_model(paired_data).train(max_epochs=1, accelerator="tpu9000")
    # names in any case, as device= reads them
    trained = make_model(paired_data).train(max_epochs=1, accelerator=" CPU", progress_bar=False)
    assert trained.is_trained_
    from transmodal._utils import mps_available

    if not torch.cuda.is_available() and not mps_available():
        with pytest.raises(ValueError, match="accelerator 'GPU' requested but no GPU is "
                           "available \\(neither CUDA nor an Apple GPU\\)"):
            make_model(paired_data).train(max_epochs=1, accelerator="GPU")
    if not mps_available():  # named at once, not by Lightning after the data are read
        with pytest.raises(ValueError, match="accelerator 'mps' requested but MPS"):
            make_model(paired_data).train(max_epochs=1, accelerator="mps")
    model = make_model(paired_data)
    for kw, match in (
        ({"devices": 0}, "devices must be a positive number"),
        ({"devices": [0, 1]}, "lists GPU indices, but training runs on the CPU"),
        ({"devices": -1}, "devices=-1 means all GPUs, but training runs on the CPU"),
        ({"num_nodes": 0}, "num_nodes must be a positive integer"),
        ({"strategy": "nonsense"}, "unknown strategy 'nonsense'"),
        ({"strategy": "ddp_spawn"}, "trains in child processes"),
    ):
        with pytest.raises(ValueError, match=match):
            model.train(max_epochs=1, **kw)
    from transmodal._utils import check_parallel

    check_parallel({"strategy": "DDP", "devices": "2", "num_nodes": 1})  # valid as Lightning's
    check_parallel({"devices": "auto", "accelerator": "auto"})
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="lists GPU indices, but training runs on the CPU"):
            check_parallel({"devices": [0], "accelerator": "auto"})

    # accelerator names in any case, as train() reads them: "GPU" trains on the GPUs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_parallel({"devices": [0, 1], "accelerator": " GPU"})
    with pytest.raises(ValueError, match="CUDA device 2 does not exist"):
        check_parallel({"devices": [2], "accelerator": "Cuda"})


@pytest.mark.parametrize(
    "kw",
    [
        {"n_latent": 0},
        {"hidden": ()},
        {"dropout": 1.0},
        {"anchor_fraction": 1.5},
        {"anchor_fraction": -0.1},
        {"validation_fraction": 1.0},
        {"n_latent": True},
        {"n_latent": 2.0},
        {"dropout": "0.1"},
        {"anchor_fraction": "0.5"},
        {"disc_noise": -1.0},
        {"seed": -1},
        {"seed": None},
        {"seed": 1.5},
        {"seed": 2**70},
        {"variational": "yes"},
    ],
)
def test_invalid_model_params(paired_data, make_model, kw):
    (key,) = kw
    with pytest.raises(ValueError, match=key):
        make_model(paired_data, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 0}, {"max_epochs": 0}, {"lam_adv": -1.0}, {"lam_anchor": -1.0},
        {"max_epochs": 2.5}, {"max_epochs": True}, {"max_epochs": "2"}, {"seed": -3},
        {"early_stopping": None},
    ],
)
def test_invalid_train_params(paired_data, make_model, kw):
    model = make_model(paired_data)
    (key,) = kw
    with pytest.raises(ValueError, match=key):
        model.train(progress_bar=False, **{"max_epochs": 1, **kw})


def test_numpy_scalar_arguments_are_saved_as_numbers(paired_data, make_model, tmp_path):
    """Values taken from numpy (seeds from a generator, grids) train, save and load."""
    model = make_model(
        paired_data, n_latent=np.int64(4), n_private=np.int64(0), dropout=np.float32(0.1),
        seed=np.int64(3), anchor_fraction=np.float64(0.5), variational=np.bool_(False),
    )
    model.train(max_epochs=np.int64(1), batch_size=np.int64(32), seed=np.int64(1),
                lr=np.float32(1e-3), progress_bar=False)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["init_params"]["seed"] == 3 and cfg["train_params"]["batch_size"] == 32
    loaded = tm.CrossModalAE.load(tmp_path / "m", paired_data)
    np.testing.assert_allclose(
        loaded.get_latent_representation("rna"), model.get_latent_representation("rna"), atol=1e-6
    )


def test_modality_name_with_pipe(paired_data, make_model):
    data = {"rna|x": paired_data["rna"], "atac": paired_data["atac"]}
    with pytest.raises(ValueError, match="'rna\\|x'"):
        make_model(data, {"rna|x": tm.Modality("nb"), "atac": tm.Modality("poisson")})


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_mudata_input_trains(paired_data, make_model, train):
    import mudata

    mdata = mudata.MuData({"rna": paired_data["rna"], "atac": paired_data["atac"]})
    model = train(make_model(mdata, default_specs(), anchor_fraction=0.5))
    assert len(model.anchors_["rna|atac"][0]) > 0
    assert model.get_latent_representation("atac").shape == (150, N_LATENT)


def test_repr(trained_model):
    text = repr(trained_model)
    assert "CrossModalAE" in text and "rna: 150 x 40 (nb)" in text and "trained=True" in text


# ------------------------------------------------------------------ regressions
def test_zero_cells(trained_model, paired_data):
    empty = paired_data["rna"][:0].copy()
    assert trained_model.get_latent_representation("rna", empty).shape == (0, N_LATENT)
    assert trained_model.translate(empty, source="rna", target="atac").shape == (0, 25)


@pytest.mark.parametrize("pairs", [{}, {"anchor_fraction": 0.5}])
def test_anchor_latent_frozen_after_pretraining(paired_data, make_model, train, pairs):
    # also with an anchor loss, which encodes the frozen modality's paired cells again
    pre = train(make_model(paired_data, prior="anchor:rna", seed=2, **pairs),
                max_epochs=1, pretrain_epochs=1)
    full = train(make_model(make_data(), prior="anchor:rna", seed=2, **pairs),
                 max_epochs=3, pretrain_epochs=1)
    np.testing.assert_array_equal(
        pre.get_latent_representation("rna"), full.get_latent_representation("rna")
    )


def test_history_index_unique_after_continued_training(paired_data, make_model, train):
    model = train(make_model(paired_data))
    train(model, max_epochs=1)
    assert len(model.history) == 3
    assert model.history.index.is_unique
    # epochs_run counts this call's epochs, epochs_total all of them
    assert model.train_params_["epochs_run"] == 1
    assert model.train_params_["epochs_total"] == 3


def test_anchor_prior_needs_pretraining_once(paired_data, make_model, train):
    model = make_model(paired_data, prior="anchor:rna", seed=2)
    with pytest.raises(ValueError, match="pretrain_epochs=0 .* keep its random weights"):
        train(model, max_epochs=2, pretrain_epochs=0)
    train(model, max_epochs=2, pretrain_epochs=1)
    z = model.get_latent_representation("rna")
    # continued training: the trained anchor is not pre-trained again by default
    train(model, max_epochs=1)
    assert model.train_params_["pretrain_epochs"] == 0
    np.testing.assert_array_equal(z, model.get_latent_representation("rna"))


def test_interrupted_pretraining_is_finished_by_the_next_call(
    paired_data, make_model, train, monkeypatch, tmp_path
):
    """Ctrl+C after 2 of 5 pre-training epochs: the next call (also after save / load)
    pre-trains the anchor 3 more epochs before freezing it, instead of freezing it half
    trained; fewer, asked for explicitly, warn."""
    from transmodal.train import CrossModalPlan

    end_of_epoch = CrossModalPlan.on_train_epoch_end

    def interrupted(plan):
        end_of_epoch(plan)
        if len(plan.history_rows) == 2:
            raise KeyboardInterrupt

    model = make_model(paired_data, prior="anchor:rna", seed=2)
    with monkeypatch.context() as mp:
        mp.setattr(CrossModalPlan, "on_train_epoch_end", interrupted)
        with pytest.raises(KeyboardInterrupt, match="after 2 complete epoch"):
            train(model, max_epochs=10, pretrain_epochs=5, early_stopping=False)
    assert model.train_params_["pretrain_left"] == 3
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", paired_data)
    with pytest.warns(UserWarning, match="3 epoch.*short of the pre-training"):
        train(loaded, max_epochs=4, pretrain_epochs=1, early_stopping=False)
    with pytest.warns(UserWarning, match="only the anchor modality 'rna' is trained"):
        train(model, max_epochs=2, early_stopping=False)  # 2 of the 3 owed
    assert model.train_params_["pretrain_epochs"] == 2
    assert model.train_params_["pretrain_left"] == 1
    z = model.get_latent_representation("rna")
    train(model, max_epochs=6, early_stopping=False)
    assert model.train_params_["pretrain_epochs"] == 1
    assert model.train_params_["pretrain_left"] == 0
    assert not np.array_equal(z, model.get_latent_representation("rna"))  # trained on
    z = model.get_latent_representation("rna")
    train(model, max_epochs=1)  # pre-trained: frozen from now on
    assert model.train_params_["pretrain_epochs"] == 0
    np.testing.assert_array_equal(z, model.get_latent_representation("rna"))


def test_small_anchor_fraction_gives_at_least_one_pair(paired_data, make_model):
    model = make_model(paired_data, anchor_fraction=1e-4)
    assert len(model.anchors_["rna|atac"][0]) == 1
    # one pair is too few for the anchor loss (a batch needs 2): the pseudo-pairs stay on
    assert len(model.geometric_pairs_["rna|atac"][0])
    two = make_model(paired_data, anchor_fraction=2.5 / paired_data["rna"].n_obs)
    assert len(two.anchors_["rna|atac"][0]) == 2
    assert two.geometric_pairs_ == {}  # usable anchors are prior knowledge: no pseudo-pairs


def test_translation_units_say_what_the_inverse_preprocessing_gives(paired_data, make_model,
                                                                   train):
    specs = {"rna": tm.Modality("nb", layer="counts"),
             "atac": tm.Modality("gaussian", log1p=True, normalize=True)}
    model = train(make_model(paired_data, specs), max_epochs=1)
    units = model.translate(source="rna", target="atac").uns["transmodal"]["units"]
    assert units == ("preprocessing inverted (log1p undone: linear values; in units of cells "
                     "normalised to the median training library size; with log1p undone on a "
                     "mean of log values, a profile sums to less than it)")
    assert model.translate(source="rna", target="atac").uns["transmodal"]["linear"] is True
    counts = model.translate(source="atac", target="rna").uns["transmodal"]
    assert counts["units"] == "counts" and counts["linear"] is True


def test_library_size_only_acts_on_count_targets(paired_data, make_model, train):
    specs = {"rna": tm.Modality("nb", layer="counts"), "atac": tm.Modality("bernoulli")}
    model = train(make_model(paired_data, specs), max_epochs=1)
    with pytest.warns(UserWarning, match="library_size=100.0 has no effect: target 'atac'"):
        model.translate(source="rna", target="atac", library_size=100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = model.translate(source="atac", target="rna", library_size=100.0)
    # the library size the counts are expected at is recorded with them (not for 'atac')
    assert t.uns["transmodal"]["library_size"] == 100.0
    np.testing.assert_allclose(np.asarray(t.X).sum(1), 100.0, rtol=1e-4)
    counts = paired_data["rna"].layers["counts"]
    totals = np.asarray(counts.sum(1)).ravel()[~model.val_masks_["rna"]]
    default = model.translate(source="atac", target="rna")
    assert default.uns["transmodal"]["library_size"] == pytest.approx(np.median(totals))
    assert "library_size" not in model.translate(source="rna", target="atac").uns["transmodal"]
    ens = tm.Ensemble([model, train(make_model(paired_data, specs, seed=1), max_epochs=1)])
    assert ens.translate(paired_data["atac"], source="atac", target="rna", library_size=50.0) \
        .uns["transmodal"]["library_size"] == 50.0
    # by default each member decodes at its own training cells' median: their mean
    mean = ens.translate(paired_data["atac"], source="atac", target="rna")
    np.testing.assert_allclose(np.asarray(mean.X).sum(1), mean.uns["transmodal"]["library_size"],
                               rtol=1e-4)


def test_divergence_gives_a_clear_error(paired_data, make_model, train):
    with pytest.raises(FloatingPointError, match="diverged in epoch 0"):
        train(make_model(paired_data), max_epochs=2, lr=1e30)


def test_divergence_puts_back_the_last_finite_weights(paired_data, make_model, train):
    model = train(make_model(paired_data, seed=0), max_epochs=2)
    z = model.get_latent_representation("rna")
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(FloatingPointError, match="keeps the weights it had before this training"):
        train(model, max_epochs=2, lr=1e30)
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in state.items())
    np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    assert model.is_trained_ and len(model.history) == 2
    # diverging in the first training: the initial weights, still untrained
    fresh = make_model(paired_data, seed=0)
    with pytest.raises(FloatingPointError):
        train(fresh, max_epochs=2, lr=1e30)
    assert not fresh.is_trained_ and fresh.history is None
    assert all(torch.isfinite(v).all() for v in fresh.module.state_dict().values() if v.is_floating_point())


@pytest.mark.parametrize("order", ["stored", "by_label"])
def test_latent_statistics_are_those_of_the_final_weights(paired_data, make_model, train, order):
    # after a few steps the batch norm's running average (momentum 0.01) still lies near its
    # start; training ends by recomputing it from the training cells with the final weights,
    # over all cells at once (cells stored sorted by label, and batches of 32 that leave 22
    # cells for the last: the same statistics)
    if order == "by_label":
        paired_data = {k: a[np.argsort(a.obs["label"].to_numpy(), kind="stable")].copy()
                       for k, a in paired_data.items()}
    model = make_model(paired_data, seed=0, validation_fraction=0.0, dropout=0.0)
    train(model, max_epochs=2, early_stopping=False)
    for name in model.modality_names:
        bn = model.module.encoders[name].standardize
        assert bn.momentum == 0.01 and not model.module.training
        z = model.get_latent_representation(name)
        assert np.abs(z.mean(0)).max() < 1e-4, name  # (the running average: 0.39)
        np.testing.assert_allclose(z.var(0, ddof=1), 1.0, rtol=1e-3, err_msg=name)


def test_weights_turned_nan_by_an_epoch_s_last_step_are_put_back(
    paired_data, make_model, train, monkeypatch
):
    # the epoch's losses were finite, so only its weights show it (and the validation loss,
    # on which Lightning's early stopping would otherwise just stop)
    from transmodal.train import CrossModalPlan

    original = CrossModalPlan.on_train_epoch_end

    def poisoned(plan):
        if plan.current_epoch == 1:
            plan.module.encoders["rna"].net[0].weight.data.fill_(float("nan"))
        return original(plan)

    monkeypatch.setattr(CrossModalPlan, "on_train_epoch_end", poisoned)
    model = make_model(paired_data, seed=0)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1: the network weights.*"
                       "keeps its weights after epoch 0 of this training"):
        train(model, max_epochs=3)
    assert all(torch.isfinite(v).all() for v in model.module.state_dict().values()
               if v.is_floating_point())
    assert model.is_trained_ and list(model.history.index) == [0]
    assert np.isfinite(model.get_latent_representation("rna")).all()


def test_outputs_that_are_not_finite_are_named(make_model, train):
    data = tm.datasets.synthetic(
        120, modalities={"rna": "nb", "prot": "gaussian"},
        n_features={"rna": 30, "prot": 8}, seed=0,
    )
    model = train(make_model(data, {"rna": "nb", "prot": "gaussian"}), max_epochs=1)
    extreme = data["prot"][:5].copy()
    extreme.X = np.full(extreme.shape, 1e30, dtype=np.float32)
    with pytest.warns(UserWarning, match="modality 'prot': the embeddings: 5 of 5 cell") as rec:
        model.get_latent_representation("prot", extreme)
    assert rec[0].filename == __file__  # the user's line
    with pytest.warns(UserWarning, match="translation 'prot' -> 'rna': 5 of 5 cell"):
        model.translate(extreme, source="prot", target="rna")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_latent_representation("prot", data["prot"][:5])
    with pytest.raises(ValueError, match="library_size must be at most"):
        model.translate(data["prot"][:5], source="prot", target="rna", library_size=1e39)


def test_conditional_discriminator(paired_data, make_model, train):
    model = train(make_model(paired_data, labels_key="label", disc_conditional=True))
    first = model.module.discriminator[0]
    assert first.in_features == model.init_params_["n_latent"] + 3  # z + one-hot of 3 labels
    assert "train_adv" in model.history
    # unlabelled cells are allowed: they condition on a zero vector
    z = torch.zeros(4, model.init_params_["n_latent"])
    logits = model.module.discriminate(z, torch.tensor([0, 1, -1, 2]))
    assert logits.shape == (4, 2)
    with pytest.raises(ValueError, match="labels_key"):
        make_model(paired_data, disc_conditional=True)


def test_variational_variant(paired_data, make_model, train):
    model = train(make_model(paired_data, variational=True, seed=0), max_epochs=3, beta=0.01)
    assert {"train_kl_rna", "train_kl_atac"} <= set(model.history.columns)
    z1 = model.get_latent_representation("rna")
    np.testing.assert_array_equal(z1, model.get_latent_representation("rna"))  # posterior mean
    mean = model.translate(paired_data["rna"], source="rna", target="atac").X
    s1 = model.translate(paired_data["rna"], source="rna", target="atac", sample=True, seed=1).X
    s1b = model.translate(paired_data["rna"], source="rna", target="atac", sample=True, seed=1).X
    s2 = model.translate(paired_data["rna"], source="rna", target="atac", sample=True, seed=2).X
    np.testing.assert_array_equal(s1, s1b)
    assert not np.allclose(s1, s2) and not np.allclose(s1, mean)
    # a larger KL weight pulls the posteriors closer to the prior
    strong = train(make_model(paired_data, variational=True, seed=0), max_epochs=3, beta=10.0,
                   adv_warmup_epochs=0)
    assert strong.history["train_kl_rna"].iloc[-1] < model.history["train_kl_rna"].iloc[-1]
    # early stopping follows the validation loss without the KL (in evaluation the KL
    # follows the batch norm's lagging running statistics, which a large beta magnified)
    h = strong.history
    np.testing.assert_allclose(h["val_monitor"], h["val_recon_rna"] + h["val_recon_atac"],
                               rtol=1e-5)


def test_partly_shared_classes_and_predict_labels(make_model, train):
    """A class seen in only one modality is recorded; labels transfer over every class."""
    data = make_data()
    atac = data["atac"]
    # atac never carries "type2": its cells of that type are unlabelled
    lab = atac.obs["label"].astype(object)
    lab[lab == "type2"] = None
    atac.obs["label"] = pd.Categorical(lab, categories=["type0", "type1"])
    model = train(make_model(data, labels_key="label"), max_epochs=3)
    mask = model.module.class_mask.numpy()
    assert mask[0].tolist() == [True, True, True] and mask[1].tolist() == [True, True, False]
    assert model.classes_seen == {"rna": ["type0", "type1", "type2"], "atac": ["type0", "type1"]}
    pred = model.predict_labels("rna")
    assert pred.shape == (data["rna"].n_obs,) and set(pred) <= {"type0", "type1", "type2"}
    proba = model.predict_labels("atac", return_proba=True, classes=["type0", "type1"])
    assert list(proba.columns) == ["type0", "type1"]
    np.testing.assert_allclose(proba.to_numpy().sum(1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="not among"):
        model.predict_labels("rna", classes=["nope"])


def _private_type2_data():
    """make_data() with atac's "type2" cells unlabelled (a third of them): rna holds all
    three classes, atac two, so "type2" is private to rna."""
    data = make_data()
    lab = data["atac"].obs["label"].astype(object)
    lab[lab == "type2"] = None
    data["atac"].obs["label"] = pd.Categorical(lab, categories=["type0", "type1"])
    return data


def test_partial_alignment_leaves_private_classes_out(make_model, train):
    """With classes partly shared, the alignment terms weigh a labelled cell of a private
    class 0 (no gradient reaches it from the adversary; the discriminator and MMD are those
    of the other cells), one of a shared class 1, an unlabelled cell the classifier's
    probability of the shared classes."""
    data = _private_type2_data()
    model = train(make_model(data, labels_key="label", seed=0), max_epochs=1)
    module = model.module.eval()
    assert module.aligned_classes.tolist() == [True, True, False]
    off = make_model(data, labels_key="label", partial_alignment=False).module
    assert off.aligned_classes.all()
    zs = {n: torch.from_numpy(model.get_latent_representation(n)) for n in data}
    ys = {n: torch.from_numpy(md.labels) for n, md in model.mods.items()}
    private = ys["rna"] == 2
    assert 0 < int(private.sum()) < len(private) and (ys["atac"] < 0).any()
    w = module.alignment_weights("rna", zs["rna"], ys["rna"])
    assert torch.equal(w, (~private).float())
    unlabelled = ys["atac"] < 0
    w = module.alignment_weights("atac", zs["atac"], ys["atac"])
    with torch.no_grad():
        proba = module.classifier(zs["atac"]).softmax(-1)
    torch.testing.assert_close(w[unlabelled], proba[unlabelled, :2].sum(-1))
    assert (w[~unlabelled] == 1).all()
    # the adversary's gradient reaches no private cell, and every shared one
    z = zs["rna"].clone().requires_grad_(True)
    module.adversarial_loss("rna", z, None, ys["rna"]).backward()
    grad = z.grad.abs().sum(-1)
    assert (grad[private] == 0).all() and (grad[~private] > 0).all()
    # discriminator and MMD: as if the private cells were not there
    shared = {"rna": zs["rna"][~private], "atac": zs["atac"]}
    shared_ys = {"rna": ys["rna"][~private], "atac": ys["atac"]}
    for got, expected in zip(module.discriminator_loss(zs, ys),
                             module.discriminator_loss(shared, shared_ys)):
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(module.mmd_loss(zs, ys), module.mmd_loss(shared, shared_ys))
    assert not torch.allclose(module.mmd_loss(zs), module.mmd_loss(zs, ys))
    # the check for separable modalities looks at the aligned cells
    embs = {n: z.numpy() for n, z in zs.items()}
    kept = model._aligned_points(embs, {n: np.arange(len(z)) for n, z in embs.items()})
    np.testing.assert_array_equal(kept["rna"], embs["rna"][~private.numpy()])
    assert len(kept["atac"]) == int((w >= 0.5).sum())


def test_partial_alignment_is_saved(make_model, train, tmp_path):
    """A loaded model aligns the classes it was trained to align (the buffer is saved and
    the host-side flag follows a loaded state)."""
    data = _private_type2_data()
    model = train(make_model(data, labels_key="label", seed=0), max_epochs=1)
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    assert loaded.module.aligned_classes.tolist() == [True, True, False]
    z = torch.from_numpy(loaded.get_latent_representation("rna"))
    y = torch.from_numpy(loaded.mods["rna"].labels)
    torch.testing.assert_close(loaded.module.alignment_weights("rna", z, y),
                               model.module.alignment_weights("rna", z, y))
    everything = make_model(data, labels_key="label", partial_alignment=False).module
    everything.load_state_dict(model.module.state_dict())
    assert everything.alignment_weights("rna", z, y) is not None
    everything.load_state_dict(make_model(data, labels_key="label",
                                          partial_alignment=False).module.state_dict())
    assert everything.alignment_weights("rna", z, y) is None


def _relabel(adata, mapping):
    lab = adata.obs["label"].astype(object).map(lambda v: mapping.get(v, v))
    adata.obs["label"] = pd.Categorical(lab)


def test_partial_alignment_of_three_modalities_acts_pair_by_pair(make_model):
    """Three modalities holding a chain of classes (rna: type0, type1; atac: type1, type2;
    prot: type2 and its own): each class is aligned among the modalities that hold it, so
    rna's type1 cells are not pushed onto prot's type2 cells; a pair sharing no class adds
    nothing to the MMD, and a modality without weight is left out of the discriminator's
    means (it counted as accuracy 0, which hid a perfect discriminator)."""
    data = make_data(n_mods=3)
    _relabel(data["rna"], {"type2": None})
    _relabel(data["atac"], {"type0": None})
    _relabel(data["prot"], {"type0": "own", "type1": None})
    model = make_model(data, labels_key="label", seed=0)
    module = model.module.eval()
    cats = model.label_categories_
    held = {n: sorted(cats[i] for i in np.flatnonzero(module.held_classes[k].numpy()))
            for k, n in enumerate(model.modality_names)}
    assert held == {"rna": ["type0", "type1"], "atac": ["type1", "type2"],
                    "prot": ["own", "type2"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (untrained)
        zs = {n: torch.from_numpy(model.get_latent_representation(n)) for n in data}
    ys = {n: torch.from_numpy(md.labels) for n, md in model.mods.items()}
    code = {c: i for i, c in enumerate(cats)}
    # rna and prot share no class: no rna cell has weight towards prot
    assert (module.alignment_weights("rna", zs["rna"], ys["rna"], other="prot")[
        ys["rna"] >= 0] == 0).all()
    expected = torch.stack([
        module._mmd(zs[a], zs[b],
                    module.alignment_weights(a, zs[a], ys[a], other=b),
                    module.alignment_weights(b, zs[b], ys[b], other=a))
        for a, b in (("rna", "atac"), ("atac", "prot"))
    ]).mean()
    torch.testing.assert_close(module.mmd_loss(zs, ys), expected)
    # the adversary's target for a labelled type1 rna cell: rna or atac, evenly
    one = ys["rna"] == code["type1"]
    i = int(np.flatnonzero(one.numpy())[0])
    with torch.no_grad():
        log_q = F.log_softmax(module.discriminate(zs["rna"][i : i + 1]), -1)[0]
        got = module.adversarial_loss("rna", zs["rna"][i : i + 1], None, ys["rna"][i : i + 1])
    names = model.modality_names
    torch.testing.assert_close(
        got, -(0.5 * log_q[names.index("rna")] + 0.5 * log_q[names.index("atac")]))
    # a modality whose every cell is of its own class: left out of the discriminator
    data = make_data(n_mods=3)
    data["prot"].obs["label"] = pd.Categorical(["own"] * data["prot"].n_obs)
    model = make_model(data, labels_key="label", seed=0)
    module = model.module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zs = {n: torch.from_numpy(model.get_latent_representation(n)) for n in data}
    ys = {n: torch.from_numpy(md.labels) for n, md in model.mods.items()}
    assert (module.alignment_weights("prot", zs["prot"], ys["prot"]) == 0).all()
    with torch.no_grad():
        losses, accs = [], []
        for k, n in enumerate(("rna", "atac")):
            logits = module.discriminate(zs[n])
            target = torch.full((len(logits),), names.index(n))
            losses.append(F.cross_entropy(logits, target))
            accs.append((logits.argmax(-1) == target).float().mean())
        loss, acc = module.discriminator_loss(zs, ys)
    torch.testing.assert_close(loss, torch.stack(losses).mean())
    torch.testing.assert_close(acc, torch.stack(accs).mean())


def test_partial_alignment_which_classes_are_aligned(make_model):
    """A modality whose training cells are mostly unlabelled counts as holding every class
    (every class aligned); modalities sharing no class align every cell (the setup warns)."""
    data = make_data()
    lab = data["atac"].obs["label"].astype(object)
    lab[lab != "type0"] = None  # two thirds unlabelled
    data["atac"].obs["label"] = pd.Categorical(lab, categories=["type0"])
    assert make_model(data, labels_key="label").module.aligned_classes.all()
    data = make_data()
    data["atac"].obs["label"] = pd.Categorical(["other"] * data["atac"].n_obs)
    with pytest.warns(UserWarning, match="share no label class"):
        model = make_model(data, labels_key="label")
    assert model.module.aligned_classes.all()
    with pytest.raises(ValueError, match="partial_alignment must be True or False"):
        make_model(data, labels_key="label", partial_alignment="yes")


def test_anchor_distance_l2(paired_data, make_model, train):
    model = train(make_model(paired_data, anchor_fraction=0.5), anchor_distance="l2")
    assert model.history["train_anchor"].notna().all()
    with pytest.raises(ValueError, match="anchor_distance"):
        model.train(max_epochs=1, anchor_distance="cosine")


def test_contrastive_anchor_loss_is_symmetric_infonce(paired_data, make_model):
    """The loss is CLIP's: cross-entropy of cosine similarities / temperature against the
    partner, averaged over both directions; identical partners score far better than wrong ones."""
    module = make_model(paired_data).module.eval()
    rng = torch.Generator().manual_seed(0)
    xa = torch.poisson(torch.full((16, module.archs["rna"].n_vars), 2.0), generator=rng)
    xb = torch.poisson(torch.full((16, module.archs["atac"].n_vars), 2.0), generator=rng)
    pairs = {"rna|atac": {"a": xa, "b": xb}}
    loss = module.anchor_loss(pairs, "contrastive", temperature=0.5)
    with torch.no_grad():
        za = F.normalize(module.encode("rna", xa), dim=-1)
        zb = F.normalize(module.encode("atac", xb), dim=-1)
    logits, target = za @ zb.T / 0.5, torch.arange(16)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    torch.testing.assert_close(loss.detach(), expected)
    # partners with identical latent points score far better than wrong partners
    same = module.anchor_loss({"rna|rna": {"a": xa, "b": xa}}, "contrastive", temperature=0.05)
    wrong = module.anchor_loss(
        {"rna|rna": {"a": xa, "b": xa.flip(0)}}, "contrastive", temperature=0.05
    )
    assert float(same) < 0.5 * float(wrong)


def test_contrastive_anchors_rank_partners_first(make_model, train):
    """Contrastive anchors lower the training pairs' FOSCTTM against no anchors; the
    temperature is validated and recorded."""
    score = {}
    for frac in (0.0, 0.5):
        model = train(
            make_model(make_data(), anchor_fraction=frac, geometric_pairs=False, seed=0),
            max_epochs=10,
            anchor_distance="contrastive",
            anchor_temperature=0.3,
        )
        ia, ib = model.anchors_["rna|atac"] if frac else find_pairs(
            model.mods["rna"], model.mods["atac"]
        )
        z_rna = model.get_latent_representation("rna")[ia]
        z_atac = model.get_latent_representation("atac")[ib]
        score[frac] = tm.metrics.foscttm(z_rna, z_atac)
        if frac:
            assert model.train_params_["anchor_temperature"] == 0.3
            h = model.history["train_anchor"].to_numpy()
            assert h[-1] < 0.75 * h[0]
    assert score[0.5] < score[0.0] - 0.1, score
    with pytest.raises(ValueError, match="anchor_temperature"):
        model.train(max_epochs=1, anchor_distance="contrastive", anchor_temperature=0)


def test_anchor_pairs_across_three_modalities_without_direct_pairs(make_model, train):
    """rna-atac and atac-prot share cells, rna-prot share none: both pair sets are used."""
    data = make_data(n_mods=3)
    n = data["rna"].n_obs
    half = n // 2
    names = np.asarray(data["atac"].obs_names)
    data["rna"].obs_names = [f"r{i}" if i >= half else names[i] for i in range(n)]
    data["prot"].obs_names = [f"p{i}" if i < half else names[i] for i in range(n)]
    model = make_model(data, anchor_fraction=1.0)
    assert set(model.anchors_) == {"rna|atac", "atac|prot"}
    train(model)
    assert model.history["train_anchor"].notna().all()


def test_private_latent_dimensions(paired_data, make_model, train):
    model = train(make_model(paired_data, n_private=3, seed=0))
    n_latent = model.init_params_["n_latent"]
    enc = model.module.encoders["rna"]
    assert enc.net[-1].out_features == n_latent + 3  # shared + private code
    assert model.module.decoders["atac"].net[0].in_features == n_latent + 3
    assert model.get_latent_representation("rna").shape == (paired_data["rna"].n_obs, n_latent)
    out = model.translate(paired_data["rna"], source="rna", target="atac")
    assert out.shape == paired_data["atac"].shape and np.isfinite(out.X).all()
    # the private part matters for a modality's own reconstruction only
    x = torch.from_numpy(paired_data["atac"].X.astype(np.float32))
    with torch.no_grad():
        t = model.module.transforms["atac"]
        full = model.module.encoders["atac"](t.encoder_input(t.process(x)))
        own = model.module.decode("atac", full)["mu"]
        shared_only = model.module.decode("atac", full[:, :n_latent])["mu"]
    assert not torch.allclose(own, shared_only)
    # reconstruction (source == target) keeps the private part; translation cannot
    recon = model.translate(paired_data["atac"], source="atac", target="atac").X
    with torch.no_grad():
        expected = model.module.output("atac", model.module.decode("atac", full)).numpy()
    np.testing.assert_allclose(recon, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="n_private"):
        make_model(paired_data, n_private=-1)


def test_marker_conditioned_discriminator(make_model, train):
    data = make_data()
    rng = np.random.default_rng(0)
    for a in data.values():
        ratio = rng.normal(2.0, 0.5, a.n_obs)
        ratio[:10] = np.nan  # not measured in some cells
        a.obs["ratio"] = ratio
    model = train(make_model(data, marker_key="ratio"))
    n_latent = model.init_params_["n_latent"]
    assert model.module.discriminator[0].in_features == n_latent + 2  # value + measured flag
    assert float(model.module.marker_mean) == pytest.approx(2.0, abs=0.15)
    logits = model.module.discriminate(torch.zeros(3, n_latent), m=torch.tensor([[1.0], [np.nan], [3.0]]))
    assert torch.isfinite(logits).all()
    data["rna"].obs["ratio"] = "high"
    with pytest.raises(ValueError, match="numeric"):
        make_model(data, marker_key="ratio")
    with pytest.raises(ValueError, match="not found"):
        make_model(data, marker_key="nope")


# ------------------------------------------------------------------ argument and data checks
def test_last_batch_of_one_cell_trains():
    # 143 cells -> 129 training cells = 128 + 1 with the default batch_size
    data = tm.datasets.synthetic(143, n_features={"rna": 30, "atac": 40})
    model = tm.CrossModalAE(data, {"rna": "nb", "atac": "bernoulli"}, n_latent=4, hidden=(16,))
    assert int((~model.val_masks_["rna"]).sum()) == 129
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*")
        model.train(max_epochs=1, progress_bar=False)
    assert model.is_trained_


def test_too_few_cells_or_batch_of_one_raise(paired_data, make_model):
    model = make_model(paired_data)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 2, got 1"):
        model.train(max_epochs=1, batch_size=1)
    one = {"rna": paired_data["rna"][:1].copy(), "atac": paired_data["atac"]}
    with pytest.raises(ValueError, match="modality 'rna' has 1 training cell"):
        make_model(one).train(max_epochs=1)


@pytest.mark.parametrize("distance", ["l1", "contrastive"])
def test_one_anchor_pair_is_skipped(half_paired_data, make_model, train, distance):
    atac = half_paired_data["atac"]
    rna_names = set(half_paired_data["rna"].obs_names)
    atac.obs_names = [n if n == atac.obs_names[0] else f"u{i}" for i, n in enumerate(atac.obs_names)]
    assert sum(n in rna_names for n in atac.obs_names) == 1
    model = make_model(half_paired_data, anchor_fraction=1.0, validation_fraction=0.0)
    assert len(model.anchors_["rna|atac"][0]) == 1
    with pytest.warns(UserWarning, match="only 1 training pair"):
        train(model, anchor_distance=distance)
    assert model.is_trained_


def test_models_saved_with_a_slash_in_a_name_still_load(paired_data, make_model,
                                                         monkeypatch, tmp_path):
    """'/' is refused in new models' names (they become file names and HDF5 keys), but
    models saved before that rule load."""
    import transmodal.model._model as model_module

    data = {"rna/1": paired_data["rna"], "atac": paired_data["atac"]}
    specs = {"rna/1": tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
    with monkeypatch.context() as mp:  # (as the earlier version built it)
        mp.setattr(model_module, "check_modality_name", lambda name, new=True: None)
        old = make_model(data, specs)
    old.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna/1"),
                                  old.get_latent_representation("rna/1"))


def test_modality_name_with_dot_or_bar(paired_data, make_model):
    for bad in ("rna.1", "rna|1", "rna/1"):
        data = {bad: paired_data["rna"], "atac": paired_data["atac"]}
        specs = {bad: tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
        with pytest.raises(ValueError, match=f"modality '{bad}'.*may not contain '.', '/' or "
                           r"'\|'.*'rna_1'"):
            make_model(data, specs)
    # names torch's module containers hold (a bare KeyError from torch before)
    for bad in ("train", "keys", "cuda"):
        data = {bad: paired_data["rna"], "atac": paired_data["atac"]}
        specs = {bad: tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
        with pytest.raises(ValueError, match=f"modality '{bad}': the name is taken by torch"):
            make_model(data, specs)


@pytest.mark.parametrize("hidden", [64, "64", [64.0], []])
def test_model_hidden_type(paired_data, make_model, hidden):
    with pytest.raises(ValueError, match="hidden must be a non-empty list of positive integers"):
        make_model(paired_data, hidden=hidden)


def test_model_hidden_accepts_an_array(paired_data, make_model):
    model = make_model(paired_data, hidden=np.array([16]))
    assert model.init_params_["hidden"] == [16] and type(model.init_params_["hidden"][0]) is int


def test_anchor_fraction_without_shared_cells(paired_data, make_model):
    paired_data["atac"].obs_names = [f"other{i}" for i in range(paired_data["atac"].n_obs)]
    with pytest.raises(ValueError, match="anchor_fraction=0.5 needs paired cells.*equal obs_names"):
        make_model(paired_data, anchor_fraction=0.5)
    assert make_model(paired_data, anchor_fraction=0.0).anchors_ == {}


def test_numeric_labels_with_nan_and_unused_categories(paired_data, make_model, train):
    codes = paired_data["rna"].obs["label"].cat.codes.to_numpy()
    rna_num = codes.astype(float)
    rna_num[:3] = np.nan
    paired_data["rna"].obs["num"] = rna_num
    paired_data["atac"].obs["num"] = pd.Categorical(codes, categories=[0, 1, 2, 99])
    model = train(make_model(paired_data, labels_key="num"))
    assert model.label_categories_ == ["0", "1", "2"]
    assert model.classes_seen == {"rna": ["0", "1", "2"], "atac": ["0", "1", "2"]}
    assert set(model.predict_labels("atac")) <= {"0", "1", "2"}
    # classes may be named by the numbers of the training column
    proba = model.predict_labels("atac", classes=[0, 2.0], return_proba=True)
    assert list(proba.columns) == ["0", "2"]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"lr": -1}, "lr must be a finite number > 0, got -1"),
        ({"lr_disc": 0}, "lr_disc must be a finite number > 0, got 0"),
        ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0, got -0.1"),
        ({"lam_adv": float("nan")}, "lam_adv must be a finite number >= 0, got nan"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 2, got 2.5"),
        ({"n_disc_steps": 0}, "n_disc_steps must be an integer >= 1, got 0"),
    ],
)
def test_train_arguments_are_checked(paired_data, make_model, kw, expected):
    with pytest.raises(ValueError) as info:
        make_model(paired_data).train(max_epochs=1, progress_bar=False, **kw)
    assert str(info.value) == expected


@pytest.mark.parametrize("library_size", [0, -5, float("nan"), float("inf")])
def test_translate_library_size_must_be_positive(paired_data, make_model, library_size):
    model = make_model(paired_data)
    with pytest.raises(ValueError, match="library_size must be a finite number > 0"):
        model.translate(source="atac", target="rna", library_size=library_size)


def test_translate_library_size_per_cell_is_refused_briefly(paired_data, make_model):
    """scGLUE's per-cell target_libsize: refused in a message of its own size, with the
    way to get it (not the whole array)."""
    model = make_model(paired_data)
    sizes = np.full(paired_data["atac"].n_obs, 1e4)
    with pytest.raises(ValueError) as err:
        model.translate(source="atac", target="rna", library_size=sizes)
    assert str(err.value).startswith("library_size must be one number") and len(str(err.value)) < 300
    assert f"got ndarray of shape ({len(sizes)},); for one per cell, scale the rows" in str(err.value)
    with pytest.raises(ValueError, match=r"got Tensor of shape \(3,\); for one per cell"):
        model.translate(source="atac", target="rna", library_size=torch.ones(3))
    # into a target without library sizes the advice is that none applies (its uns has no
    # library_size to scale by)
    other = make_model(paired_data, {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")})
    with pytest.raises(ValueError, match=r"shape \(\d+,\); and none has any effect here: "
                       r"target 'atac' has the 'bernoulli' likelihood, not a count one$"):
        other.translate(source="rna", target="atac", library_size=sizes)


# ------------------------------------------------------------------ conditioning must not leak
def _with_marker(data, seed=0):
    rng = np.random.default_rng(seed)
    for a in data.values():
        a.obs["m"] = rng.normal(size=a.n_obs)
    return data


def test_marker_measured_in_one_modality_only_is_rejected(paired_data, make_model, train, tmp_path):
    data = _with_marker(paired_data)
    data["atac"].obs["m"] = np.nan
    with pytest.raises(ValueError, match="marker_key 'm': not measured in any training cell of "
                       "modality 'atac'; the discriminator would tell the modalities apart"):
        make_model(data, marker_key="m")
    data["atac"].obs.loc[data["atac"].obs_names[::2], "m"] = 1.0  # partly measured: allowed
    model = train(make_model(data, marker_key="m"), max_epochs=1)
    # a loaded model is not re-checked: new cells may lack the marker
    model.save(tmp_path / "m")
    data["atac"].obs["m"] = np.nan
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    assert loaded.get_latent_representation("atac").shape == (data["atac"].n_obs, N_LATENT)


def test_disc_conditional_classes_must_connect_the_modalities(paired_data, make_model):
    # a modality without any label (labels to transfer to it) is conditioned on the
    # classifier's predictions, as a mostly unlabelled one is (it was refused, while one
    # label in 300 was not)
    labels = paired_data["atac"].obs["label"]
    for absent in (np.nan, None):
        if absent is None:
            del paired_data["atac"].obs["label"]
        else:
            paired_data["atac"].obs["label"] = absent
        model = make_model(paired_data, labels_key="label", disc_conditional=True)
        assert model.classes_seen["atac"] == model.classes_seen["rna"]
        model.train(max_epochs=2, batch_size=64, progress_bar=False)
        assert np.isfinite(model.history.to_numpy(dtype=float)).any()
        assert model.disc_accuracy_ is not None  # (scored with atac's predicted classes)
    paired_data["atac"].obs["label"] = labels
    # without conditioning the classifier may use one modality's labels only
    assert make_model(paired_data, labels_key="label").classes_seen["atac"]
    # classes named differently in each modality: the labels alone tell them apart
    paired_data["atac"].obs["label"] = "atac_" + paired_data["rna"].obs["label"].astype(str)
    with pytest.warns(UserWarning, match="share no label class"), pytest.raises(
        ValueError, match=r"the modalities \['rna'\] / \['atac'\] share no label class"
    ):
        make_model(paired_data, labels_key="label", disc_conditional=True)
    # a few unlabelled cells do not change that
    labels = paired_data["atac"].obs["label"]
    paired_data["atac"].obs["label"] = labels.where(np.arange(len(labels)) >= 5)
    with pytest.warns(UserWarning, match="share no label class"), pytest.raises(
        ValueError, match="most training cells labelled"
    ):
        make_model(paired_data, labels_key="label", disc_conditional=True)
    # mostly unlabelled: those cells are conditioned on predictions of any class
    paired_data["atac"].obs["label"] = labels.where(np.arange(len(labels)) < 20)
    with pytest.warns(UserWarning, match="share no label class"):
        make_model(paired_data, labels_key="label", disc_conditional=True)


def test_disc_conditional_takes_modalities_linked_through_a_third(three_mod_data, specs3,
                                                                 make_model):
    """rna and prot share no class, but each shares one with atac: one aligned space."""
    label = three_mod_data["rna"].obs["label"].astype(str)
    classes = sorted(label.unique())
    three_mod_data["rna"] = three_mod_data["rna"][label != classes[-1]].copy()
    three_mod_data["prot"] = three_mod_data["prot"][label == classes[-1]].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor the warning that the labels cannot align them
        warnings.filterwarnings("ignore", message="known pairs unused")
        model = make_model(three_mod_data, specs3, labels_key="label", disc_conditional=True)
    assert set(model.classes_seen["rna"]).isdisjoint(model.classes_seen["prot"])


def test_unmeasured_markers_take_the_nearest_measured_value():
    """In a step, a cell without a marker value takes that of the nearest measured cell of
    any modality (the measured-indicator gave the less measured modality away)."""
    from transmodal.model._module import CrossModalModule

    zs = {"a": torch.tensor([[0.0, 0.0], [10.0, 0.0]]), "b": torch.tensor([[0.1, 0.0], [9.9, 0.0]])}
    nan = float("nan")
    ms = {"a": torch.tensor([[1.0, nan], [2.0, nan]]), "b": torch.tensor([[nan, nan], [nan, 5.0]])}
    out = CrossModalModule.impute_markers(zs, ms)
    assert out["a"].tolist() == [[1.0, 5.0], [2.0, 5.0]]
    assert out["b"].tolist() == [[1.0, 5.0], [2.0, 5.0]]
    full = {"a": torch.ones(2, 2), "b": torch.zeros(2, 2)}
    assert CrossModalModule.impute_markers(zs, full) is full  # nothing missing: unchanged


def test_conditional_discriminator_gives_unlabelled_cells_predicted_labels(paired_data,
                                                                           make_model):
    """Unlabelled cells are conditioned on the classifier's prediction: with zeros, the
    modality with fewer labels was told apart by its unlabelled cells."""
    labels = paired_data["atac"].obs["label"].astype(object)
    labels.iloc[::3] = np.nan
    paired_data["atac"].obs["label"] = labels
    model = make_model(paired_data, labels_key="label", disc_conditional=True)
    module = model.module.eval()
    z = torch.randn(20, module.classifier.in_features)
    predicted = module.classifier(z).argmax(-1)
    unlabelled = torch.full((20,), -1)
    given = predicted.clone()
    given[:5] = (predicted[:5] + 1) % module.n_labels  # given labels win over predictions
    mixed = torch.where(torch.arange(20) < 5, given, unlabelled)
    assert torch.equal(module.discriminate(z, unlabelled), module.discriminate(z, predicted))
    assert torch.equal(module.discriminate(z, mixed), module.discriminate(z, given))
    assert torch.equal(module.discriminate(z), module.discriminate(z, predicted))


@pytest.mark.parametrize("marker_key", [[], (), 3, ["m", 3]])
def test_marker_key_must_name_columns(paired_data, make_model, marker_key):
    with pytest.raises(ValueError, match="marker_key must be a column name or a non-empty list"):
        make_model(_with_marker(paired_data), marker_key=marker_key)


def test_huge_marker_values_are_standardised_in_float64(paired_data, make_model):
    data = _with_marker(paired_data)
    for a in data.values():
        a.obs["m"] *= 1e18  # float32 squares overflow: the sd used to be inf
    model = make_model(data, marker_key="m")
    values = np.concatenate([a.obs["m"].to_numpy() for a in data.values()])
    assert np.isfinite(model.module.marker_std.numpy()).all()
    np.testing.assert_allclose(model.module.marker_std.item(), values.std(), rtol=0.05)


# ------------------------------------------------------------------ epoch-count arguments
@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"pretrain_epochs": -1}, "pretrain_epochs must be an integer >= 0, got -1"),
        ({"pretrain_epochs": 1.5}, "pretrain_epochs must be an integer >= 0, got 1.5"),
        ({"adv_warmup_epochs": -3}, "adv_warmup_epochs must be an integer >= 0, got -3"),
        ({"patience": -1}, "patience must be an integer >= 0, got -1"),
        ({"patience": True}, "patience must be an integer >= 0, got True"),
    ],
)
def test_train_epoch_arguments_are_checked(paired_data, make_model, kw, expected):
    with pytest.raises(ValueError) as info:
        make_model(paired_data).train(max_epochs=1, progress_bar=False, **kw)
    assert str(info.value) == expected


def test_anchor_prior_pretraining_longer_than_training(paired_data, make_model):
    model = make_model(paired_data, prior="anchor:rna")
    with pytest.raises(ValueError, match="pretrain_epochs=3 > max_epochs=2.*leaves no epoch to "
                       "train the other modalities"):
        model.train(max_epochs=2, pretrain_epochs=3, progress_bar=False)


def test_learned_prior_ignores_pretrain_epochs_with_a_warning(paired_data, make_model, train):
    with pytest.warns(UserWarning, match="pretrain_epochs=5 is ignored"):
        model = train(make_model(paired_data), max_epochs=1, pretrain_epochs=5)
    assert model.train_params_["pretrain_epochs"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*separable.*")
        train(make_model(paired_data, anchor_fraction=0), max_epochs=1, pretrain_epochs=0)


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
def test_early_stopping_without_validation_cells_warns(paired_data, make_model, train):
    model = make_model(paired_data, validation_fraction=0.0, geometric_pairs=False)
    with pytest.warns(UserWarning, match="early_stopping=True is off") as record:
        train(model, max_epochs=2)
    assert sum("early_stopping" in str(w.message) for w in record) == 1
    assert len(model.history) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", message=".*separable.*")
        warnings.filterwarnings("ignore", message=".*validation_step.*")
        train(model, max_epochs=1, early_stopping=False)
    # a small modality draws 2 validation cells of its own (12 cells at 0.1); one of
    # fewer than 4 cells leaves every modality without validation cells: it is named
    paired_data["atac"] = paired_data["atac"][-12:].copy()
    model = make_model(paired_data, geometric_pairs=False)
    assert model.val_masks_["atac"].sum() == 2
    paired_data["atac"] = paired_data["atac"][-3:].copy()
    model = make_model(paired_data, geometric_pairs=False)
    with pytest.warns(UserWarning, match=r"no validation cells .*: the split needs 2 "
                      r"validation and 2 training cells in every modality, and 'atac' \(3 "
                      r"cells\) holds fewer than 4\); all 1 epochs run"):
        train(model, max_epochs=1)


# ------------------------------------------------------- new data after training (probes)
def _prot_model(paired_data, make_model, train, columns):
    """rna + a protein panel held as an obsm DataFrame (the scvi-tools CITE-seq layout)."""
    rna = paired_data["rna"].copy()
    prot = rna.copy()
    values = np.asarray(paired_data["atac"].X[:, :6], dtype=np.float32)
    prot.obsm["prot"] = pd.DataFrame(values, index=rna.obs_names, columns=columns)
    specs = {"rna": tm.Modality("nb", layer="counts"),
             "prot": tm.Modality("poisson", obsm_key="prot")}
    return train(make_model({"rna": rna, "prot": prot}, specs), max_epochs=1), prot


def test_obsm_dataframe_features_are_matched_by_name(paired_data, make_model, train, tmp_path):
    names = [f"CD{i}" for i in range(6)]
    model, prot = _prot_model(paired_data, make_model, train, names)
    assert list(model.mods["prot"].var_names) == names
    z = model.get_latent_representation("prot", prot)
    new = prot.copy()
    new.obsm["prot"] = prot.obsm["prot"].iloc[:, ::-1]  # same proteins, reversed
    with pytest.raises(ValueError, match="modality 'prot'.*another order"):
        model.get_latent_representation("prot", new)
    new.obsm["prot"] = prot.obsm["prot"].set_axis([f"X{i}" for i in range(6)], axis=1)
    with pytest.raises(ValueError, match="modality 'prot'.*6 missing"):
        model.get_latent_representation("prot", new)
    # an array has no names: its columns are taken by position, with a warning
    new.obsm["prot"] = prot.obsm["prot"].to_numpy()
    with pytest.warns(UserWarning, match=r"modality 'prot': obsm\['prot'\] is an array without "
                      r"column names, but the model knows its columns by name \(\['CD0', "):
        np.testing.assert_allclose(model.get_latent_representation("prot", new), z, rtol=1e-6)
    # translations into the panel carry the protein names; save / load keeps them
    assert list(model.translate(source="rna", target="prot").var_names) == names
    model.save(tmp_path / "m")
    bad = {"rna": paired_data["rna"], "prot": prot.copy()}
    bad["prot"].obsm["prot"] = prot.obsm["prot"].iloc[:, ::-1]
    with pytest.raises(ValueError, match="modality 'prot'.*another order"):
        tm.CrossModalAE.load(tmp_path / "m", bad)
    # loaded without the panel: its names are kept, checked on new cells, and not warned about
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        alone = tm.CrossModalAE.load(tmp_path / "m", {"rna": paired_data["rna"]})
    assert list(alone.translate(paired_data["rna"], source="rna", target="prot").var_names) == names
    with pytest.raises(ValueError, match="modality 'prot'.*another order"):
        alone.get_latent_representation("prot", bad["prot"])
    np.testing.assert_allclose(alone.get_latent_representation("prot", prot), z, rtol=1e-5)


def test_named_columns_for_a_model_that_knows_them_by_position(paired_data, make_model, train):
    """A model trained on an obsm array (or saved before the columns' names were recorded)
    takes a named DataFrame's columns by position: warned (a reordered panel went
    unnoticed), as the opposite case is."""
    rna = paired_data["rna"].copy()
    rna.obsm["prot"] = np.asarray(paired_data["atac"].X[:, :6], dtype=np.float32)
    arrays = {"rna": rna, "prot": rna}
    specs = {"rna": tm.Modality("nb", layer="counts"),
             "prot": tm.Modality("poisson", obsm_key="prot")}
    model = train(make_model(arrays, specs), max_epochs=1)
    named = rna.copy()
    named.obsm["prot"] = pd.DataFrame(rna.obsm["prot"], index=rna.obs_names,
                                      columns=[f"CD{i}" for i in range(6)])
    with pytest.warns(UserWarning, match=r"modality 'prot': obsm\['prot'\] names its columns "
                      r"\(\['CD0', .*only by position .* in the order given, unchecked"):
        model.get_latent_representation("prot", named)
    with warnings.catch_warnings(record=True) as told:  # (numbered: positions, no names)
        warnings.simplefilter("always")
        model.get_latent_representation("prot", rna)
        named.obsm["prot"].columns = range(6)
        model.get_latent_representation("prot", named)
    assert not [w for w in told if "by position" in str(w.message)]


def test_translation_keeps_the_target_var_columns(paired_data, make_model, train):
    data = {k: v.copy() for k, v in paired_data.items()}
    data["atac"].var["chrom"] = [f"chr{i % 3}" for i in range(data["atac"].n_vars)]
    model = train(make_model(data), max_epochs=1)
    out = model.translate(source="rna", target="atac")
    assert list(out.var["chrom"]) == list(data["atac"].var["chrom"])
    assert out.var is not data["atac"].var


def test_training_data_changed_in_place_is_noticed(paired_data, make_model, train):
    data = {k: v.copy() for k, v in paired_data.items()}
    model = train(make_model(data, labels_key="label"), max_epochs=1)
    # values edited in place (what sc.pp.log1p does): refused as they are for new data
    np.log1p(data["atac"].X, out=data["atac"].X)
    with pytest.raises(ValueError, match="modality 'atac'.*non-integer"):
        model.get_latent_representation("atac")
    with pytest.raises(ValueError, match="modality 'atac'.*non-integer"):
        train(model, max_epochs=1)
    # check_data=False: the user opted out of the scans (cells passed as adata still are)
    unchecked = make_model(data, labels_key="label", check_data=False)
    assert np.isfinite(unchecked.get_latent_representation("atac")).all()
    with pytest.raises(ValueError, match="modality 'atac'.*non-integer"):
        unchecked.get_latent_representation("atac", data["atac"])
    # cells removed in place (sc.pp.filter_cells(inplace=True)): named, not a deep error
    data["rna"]._inplace_subset_obs(np.arange(100))
    for call in (lambda: model.get_latent_representation("rna"),
                 lambda: model.translate(source="rna", target="atac"),
                 lambda: model.predict_labels("rna"),
                 lambda: train(model, max_epochs=1)):
        with pytest.raises(ValueError, match=r"modality 'rna'.*changed since the model was built"):
            call()


def test_var_names_renamed_in_place_are_warned_of(paired_data, make_model, train):
    """var_names renamed after building (e.g. to gene symbols), the matrix unchanged: the
    model's own cells are read as built, with a warning naming the renaming (it was silent,
    while the same AnnData given as adata is refused)."""
    data = {k: v.copy() for k, v in paired_data.items()}
    model = train(make_model(data), max_epochs=1)
    z = model.get_latent_representation("rna")
    old = data["rna"].var_names.copy()
    data["rna"].var_names = [f"SYMBOL{i}" for i in range(data["rna"].n_vars)]
    with pytest.warns(UserWarning, match=rf"modality 'rna': its AnnData's var_names have "
                      rf"changed since the model was built \({len(old)} of {len(old)} renamed, "
                      rf"e.g. '{old[0]}' -> 'SYMBOL0'\)"):
        np.testing.assert_array_equal(model.get_latent_representation("rna"), z)
    with pytest.raises(ValueError, match="features of the given data do not match"):
        model.get_latent_representation("rna", data["rna"])
    data["rna"].var_names = old  # named back: silent again
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.get_latent_representation("rna")


def test_a_matrix_replaced_in_the_training_anndata_is_read_anew(paired_data, make_model, train):
    """adata.X = ... (or a layer set again) after building: the methods on the model's own
    cells and train() read the AnnData as it is now (they kept the first matrix), e.g. the
    raw counts put back after an in-place normalisation was refused."""
    data = {k: v.copy() for k, v in paired_data.items()}
    data["atac"].layers["counts"] = data["atac"].X.copy()
    specs = {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli", layer="counts")}
    model = train(make_model(data, specs), max_epochs=1)
    raw = data["rna"].X.copy()
    z = model.get_latent_representation("rna")
    data["rna"].X = raw[::-1].copy()  # other valid counts (the cells in reverse)
    with pytest.warns(UserWarning, match=r"modality 'rna': its AnnData's X was replaced since "
                      r"the model was built; the model reads it as it is now"):
        changed = model.get_latent_representation("rna")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # once per replacement
        model.get_latent_representation("rna")
    np.testing.assert_allclose(changed, model.get_latent_representation("rna", data["rna"]),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed, z, atol=1e-3)
    # edited in place and refused, then replaced by the raw counts: accepted again
    x = data["rna"].X
    values = x if isinstance(x, np.ndarray) else x.data  # (sparse: its stored values)
    np.log1p(values, out=values)
    with pytest.raises(ValueError, match="modality 'rna'.*non-integer"):
        model.get_latent_representation("rna")
    data["rna"].X = raw
    with pytest.warns(UserWarning, match="was replaced"):
        np.testing.assert_allclose(model.get_latent_representation("rna"), z, rtol=1e-5,
                                   atol=1e-6)
    rows = model.mods["atac"].source.rows(np.arange(5)).copy()
    data["atac"].layers["counts"] = np.zeros(data["atac"].shape, dtype=np.float32)
    with pytest.warns(UserWarning, match=r"modality 'atac': its AnnData's layers\['counts'\]"):
        train(model, max_epochs=1)  # trained on the replaced layer
    assert model.mods["atac"].source.rows(np.arange(5)).sum() == 0 < rows.sum()
    # another feature set, or the layer deleted: named
    del data["atac"].layers["counts"]
    with pytest.raises(ValueError, match=r"modality 'atac': layer 'counts' not found"):
        model.get_latent_representation("atac")
    # genes filtered in place (sc.pp.filter_genes): named as such
    data["rna"]._inplace_subset_var(np.arange(data["rna"].n_vars - 1))
    with pytest.raises(ValueError, match=r"modality 'rna': its AnnData's X now holds other "
                       r"features than when the model was built .*filtered in place"):
        model.translate(source="rna", target="atac")


def test_a_matrix_edited_in_place_is_told_like_a_replaced_one(paired_data, make_model, train):
    """sc.pp.scale(adata) or adata.X *= 100 keep the object: it was read silently with the
    preprocessing fitted on the old values (means ~5 against data means ~500)."""
    rng = np.random.default_rng(0)
    data = {k: v.copy() for k, v in paired_data.items()}
    data["prot"] = ad.AnnData(rng.normal(5.0, 1.0, (data["rna"].n_obs, 12)).astype(np.float32),
                              obs=pd.DataFrame(index=data["rna"].obs_names))
    specs = {"rna": tm.Modality("nb", layer="counts"), "prot": tm.Modality("gaussian")}
    model = train(make_model({"rna": data["rna"], "prot": data["prot"]}, specs), max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # unchanged: nothing to tell
        z = model.get_latent_representation("prot")
    data["prot"].X *= 100
    with pytest.warns(UserWarning, match=r"modality 'prot': its AnnData's X was changed in place "
                      r"since the model was built; the model reads it as it is now \(its "
                      r"preprocessing, fitted when it was built, is kept"):
        changed = model.get_latent_representation("prot")
    assert not np.allclose(changed, z, atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # once per change
        model.get_latent_representation("prot")
    # a sparse layer's stored values edited in place
    data["rna"].layers["counts"].data[:] += 1
    with pytest.warns(UserWarning, match=r"layers\['counts'\] was changed in place"):
        train(model, max_epochs=1)


def test_a_modality_may_be_named_pairs(paired_data, make_model, train):
    """The training batches held the anchor pairs beside the modalities, under "pairs": a
    modality of that name was taken for the pairs (a deep unpacking error) or replaced by
    them (KeyError)."""
    data = {"rna": paired_data["rna"], "pairs": paired_data["atac"]}
    specs = {"rna": tm.Modality("nb", layer="counts"), "pairs": tm.Modality("poisson")}
    for fraction in (0.0, 1.0):
        model = train(make_model(data, specs, anchor_fraction=fraction), max_epochs=1)
        assert "train_recon_pairs" in model.history.columns
        # pairs in every step: the shape-based pseudo-pairs at 0 %, the anchors at 100 %
        assert "train_anchor" in model.history.columns
        assert bool(model.anchors_) == bool(fraction)


@pytest.mark.parametrize("bad", [64.0, "64", None, True, 0])
def test_inference_batch_size_is_checked_first(trained_model, tmp_path, bad):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        trained_model.get_latent_representation("rna", batch_size=bad)
    out = tmp_path / "t.h5ad"
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        trained_model.translate(source="rna", target="atac", batch_size=bad, out=out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_all_zero_modality_warns(paired_data, make_model):
    data = {k: v.copy() for k, v in paired_data.items()}
    data["atac"].X = np.zeros(data["atac"].shape, dtype=np.float32)
    with pytest.warns(UserWarning, match="modality 'atac': X is all zeros"):
        make_model(data, geometric_pairs=False)


def test_translate_out_names_an_unwritable_obs_column(paired_data, trained_model, tmp_path):
    rna = paired_data["rna"].copy()
    rna.obs["sample"] = pd.Series([1, "a"] * (rna.n_obs // 2), index=rna.obs_names, dtype=object)
    out = tmp_path / "t.h5ad"
    with pytest.raises(ValueError, match=r"cannot write the annotations of the cells \(obs\)"
                       r".*mixed types in obs.*astype\(str\)"):
        trained_model.translate(rna, source="rna", target="atac", out=out)
    assert not out.exists()
    # the target's var is copied into a translation: named as such
    var = paired_data["atac"].var.copy()
    var["mixed"] = pd.Series([1, "a"] * (len(var) // 2) + [1] * (len(var) % 2),
                             index=var.index, dtype=object)
    from transmodal.data._h5ad import write_skeleton

    with pytest.raises(ValueError, match=r"cannot write the features' annotations \(var\)"
                       r".*mixed types in var"):
        write_skeleton(tmp_path / "skeleton.h5ad", obs=pd.DataFrame(index=["c"]), var=var)
    # an error of the element itself (a reserved column name) named it "obs" by default
    var = pd.DataFrame({"_index": list(paired_data["atac"].var_names)},
                       index=paired_data["atac"].var_names)
    with pytest.raises(ValueError, match=r"cannot write the features' annotations \(var\) "
                       r"\('_index' is a reserved name") as err:
        write_skeleton(tmp_path / "reserved.h5ad", obs=pd.DataFrame(index=["c"]), var=var)
    assert "astype" not in str(err.value)  # (the advice for mixed types does not apply)
    # new cells without X, for a model that reads X: the fix at inference is named
    atac = paired_data["atac"]
    bare = ad.AnnData(obs=atac.obs[[]].copy(), var=atac.var[[]].copy())
    bare.layers["raw"] = atac.X.copy()
    with pytest.raises(ValueError, match=r"modality 'atac': adata.X is empty.*"
                       r"adata.X = adata.layers\['raw'\]"):
        trained_model.get_latent_representation("atac", bare)


def test_failed_training_leaves_a_usable_model(paired_data, make_model, train, monkeypatch):
    import transmodal.train as tm_train

    model = make_model(paired_data, prior="anchor:rna", seed=2)

    def broken(plan, *args, **kwargs):  # a run that dies half-way (bf16, Ctrl+C, ...)
        plan.module.double()
        for p in plan.module.parameters():
            p.requires_grad_(False)
        raise RuntimeError("boom")

    monkeypatch.setattr(tm_train, "run_training", broken)
    with pytest.raises(RuntimeError, match="boom"):
        train(model, max_epochs=2, pretrain_epochs=1)
    params = list(model.module.parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert not model.module.training and not model.is_trained_
    assert model.get_latent_representation("rna").dtype == np.float32


def test_epoch_means_weigh_cells_and_the_monitor_is_built_from_them():
    """Each term's epoch mean is over what it averages: a step of 2 cells weighed as much as
    one of 128 (the validation's last step), a step without a labelled cell diluted the
    classifier's mean, a step without the batch MMD its mean; the monitored validation
    loss and the history's loss are weighted sums of those means."""
    from types import SimpleNamespace

    from transmodal.train._plan import CrossModalPlan

    plan = SimpleNamespace(_sums={}, _counts={}, device=torch.device("cpu"), lam_cls=2.0,
                           lam_anchor=0.5, current_epoch=5, pretrain_epochs=0,
                           adv_warmup_epochs=1, _val_means={}, lam_adv=1.0, lam_latent=0.0,
                           lam_mmd=0.0, lam_batch=3.0, beta=0.0, pretraining=False)
    plan._adv_weight = lambda: CrossModalPlan._adv_weight(plan)
    plan._objective = lambda terms: CrossModalPlan._objective(plan, terms)
    plan._means = lambda split: CrossModalPlan._means(plan, split)
    logged = {}
    plan.log = lambda name, value, **kw: logged.update({name: value})
    t = torch.tensor
    steps = [  # (terms, weights)
        ({"recon_a": t(1.0), "cls": t(0.5), "anchor": t(4.0), "batch_mmd": t(2.0)},
         {"recon_a": 128, "cls": t(2)}),
        ({"recon_a": t(3.0), "cls": t(0.0), "anchor": t(2.0), "batch_mmd": None},
         {"recon_a": 2, "cls": t(0)}),
    ]
    for terms, weights in steps:
        CrossModalPlan._accumulate(plan, "val", terms, weights)
    CrossModalPlan.on_validation_epoch_end(plan)
    means = plan._val_means
    assert means["val_recon_a"] == pytest.approx((128 * 1.0 + 2 * 3.0) / 130)
    assert means["val_cls"] == pytest.approx(0.5)  # (0.25 averaged over steps)
    assert means["val_anchor"] == pytest.approx(3.0)
    assert means["val_batch_mmd"] == pytest.approx(2.0)  # (1.0 over every step)
    monitor = means["val_recon_a"] + 2.0 * 0.5 + 0.5 * 3.0
    assert means["val_monitor"] == pytest.approx(monitor) == logged["val_monitor"]
    # the loss: the objective of the means (the batch MMD weighed by lam_batch)
    assert means["val_loss"] == pytest.approx(monitor + 3.0 * 2.0)
    # nothing accumulated (no validation cells): no means, nothing to stack
    assert CrossModalPlan._means(plan, "val") == {}


def test_early_stopping_counts_patience_after_the_warm_up(paired_data, make_model, train):
    """Epochs of the adversarial warm-up are not monitored: the first monitored epoch is the
    first after it, so patience=1 can stop the run two epochs after the warm-up at the
    earliest (a plateau inside the warm-up used to stop it right at its end)."""
    model = train(make_model(paired_data, seed=1), max_epochs=12, adv_warmup_epochs=6,
                  patience=1, lr=0.3)  # stopped after 6 epochs (the warm-up) before
    assert len(model.history) >= 8


def test_validation_history_holds_the_training_terms(paired_data, make_model, train):
    """val_* columns have the same loss terms as train_* (latent prior, batch MMD), so
    val_loss and train_loss compare; the frozen anchor adds none."""
    model = train(make_model(paired_data, seed=0), max_epochs=2, lam_latent=1.0)
    h = model.history
    assert {"train_latent_l2", "val_latent_l2"} <= set(h.columns)
    assert np.isfinite(h["val_latent_l2"]).all()


def test_early_stopping_scores_the_anchor_share_of_validation_pairs(
    paired_data, make_model, train, monkeypatch
):
    """The validation anchor loss uses ``anchor_fraction`` of the validation cells' pairs,
    not all of them (which would tell model selection more pairs than the model knows)."""
    import transmodal.model._training as model_module

    seen = {}
    real = model_module.EpochBatches

    def recording(mods, indices, **kw):
        seen["val" if kw.get("shuffle") is False else "train"] = kw.get("pairs") or {}
        return real(mods, indices, **kw)

    monkeypatch.setattr(model_module, "EpochBatches", recording)
    model = make_model(paired_data, anchor_fraction=0.2, geometric_pairs=False, seed=0)
    train(model, max_epochs=1)
    n_val = int(model.val_masks_["rna"].sum())  # every cell is paired
    n_train_pairs = len(model.anchors_["rna|atac"][0])
    n_val_pairs = len(seen["val"]["rna|atac"][0])
    assert n_train_pairs == round(0.2 * (150 - n_val)) and n_val_pairs == round(0.2 * n_val)
    a, b = seen["val"]["rna|atac"]
    assert model.val_masks_["rna"][a].all() and model.val_masks_["atac"][b].all()


def test_class_with_only_validation_cells_warns(paired_data, make_model):
    """A rare class whose cells all fall in the validation split is never learnt, yet the
    default predict_labels scores it: named at construction."""
    val = make_model(paired_data, labels_key="label", seed=0).val_masks_
    for name, a in paired_data.items():
        lab = a.obs["label"].astype(str).to_numpy(dtype=object)
        lab[np.flatnonzero(val[name])[:2]] = "rare"
        a.obs["label"] = lab
    with pytest.warns(UserWarning, match=r"'label': class\(es\) \['rare'\] have no training cell "
                      r"in any modality.*validation_fraction"):
        model = make_model(paired_data, labels_key="label", seed=0)
    assert "rare" in model.label_categories_
    assert all("rare" not in seen for seen in model.classes_seen.values())


def test_wrong_modality_spec_type_names_what_is_accepted(paired_data):
    with pytest.raises(ValueError, match=r"modality 'rna': spec must be a likelihood name such as "
                       r"'nb' or a mapping of Modality fields \(in Python also a tm.Modality\), got int"):
        tm.CrossModalAE(paired_data, {"rna": 5, "atac": "bernoulli"})


def test_new_cells_in_other_units_are_told_to_match_the_training_data(paired_data, make_model,
                                                                       train, tmp_path):
    """A built model's options are fixed: the advice for new cells is to give them as in
    training, not to pass layer= or another likelihood."""
    model = train(make_model(paired_data), max_epochs=1)
    where = model.mods["rna"].source.where
    new = paired_data["rna"][:10].copy()
    counts = new.layers["counts"]
    new.layers["counts"] = np.log1p(counts.toarray() if hasattr(counts, "toarray") else counts)
    with pytest.raises(ValueError, match=r"non-integer values; the 'nb' likelihood needs raw counts; "
                       r"the model reads these cells' layers\['counts'\], as in training: put their "
                       r"raw counts there$") as err:
        model.get_latent_representation("rna", new)
    assert "layer" not in str(err.value).split("; the model")[-1].replace(where, "")
    new.layers["counts"] = -np.ones(new.shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"negative values.*needs raw counts; the model reads"):
        model.translate(new, source="rna", target="atac")
    # the same when a saved model is loaded around such data
    model.save(tmp_path / "m")
    with pytest.raises(ValueError, match=r"negative values.*needs raw counts; the model reads"):
        tm.CrossModalAE.load(tmp_path / "m", {**paired_data, "rna": new})


def test_new_cells_in_other_units_than_the_training_cells_are_warned_of(
    paired_data, make_model, train, tmp_path
):
    """A Gaussian modality reads any values, so raw counts given to a model trained on
    log-normalised values (or log values to one that normalises counts itself) pass every
    check: warned of, naming the modality and field, at embedding, translation, load and
    from_reference; cells in the training units, binary ones and files saved before the
    record are not."""
    counts = paired_data["rna"].layers["counts"].toarray()
    log = np.log1p(counts / counts.sum(1, keepdims=True) * 1e3).astype(np.float32)
    data = {"rna": paired_data["rna"].copy(), "atac": paired_data["atac"]}
    data["rna"].X = log
    specs = {"rna": tm.Modality("gaussian"), "atac": tm.Modality("poisson")}
    model = train(make_model(data, specs), max_epochs=1)
    assert model.integer_input_ == {"rna": False}  # (a count likelihood checks its own)
    raw = data["rna"][:20].copy()
    raw.X = counts[:20].astype(np.float32)
    told = (r"modality 'rna': X of the given cells holds only integers \(raw counts\?\), but "
            r"the model was trained on non-integer values .* preprocess them as the training "
            r"cells were \(e.g. sc.pp.normalize_total, sc.pp.log1p\)$")
    with pytest.warns(UserWarning, match=told):
        model.get_latent_representation("rna", raw)
    with pytest.warns(UserWarning, match=told):
        model.translate(raw, source="rna", target="atac")

    def quiet(call):  # no warning of units
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            out = call()
        assert not [w for w in got if "of the given cells holds" in str(w.message)]
        return out

    quiet(lambda: model.translate(data["rna"][:20], source="rna", target="atac"))
    binary = raw.copy()
    binary.X = (counts[:20] > 0).astype(np.float32)  # (0 / 1: no units to tell)
    quiet(lambda: model.get_latent_representation("rna", binary))
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match=told):
        loaded = tm.CrossModalAE.load(tmp_path / "m", {"rna": raw, "atac": data["atac"][:20]})
    assert loaded.integer_input_ == model.integer_input_
    with pytest.warns(UserWarning, match=told):
        tm.CrossModalAE.from_reference(model, {"rna": raw, "atac": data["atac"][:20]},
                                       anchor="atac")
    # a file saved before the record: nothing to compare with
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["integer_input"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    old = quiet(lambda: tm.CrossModalAE.load(tmp_path / "m", {"rna": raw,
                                                                "atac": data["atac"][:20]}))
    assert old.integer_input_ == {}
    quiet(lambda: old.get_latent_representation("rna", raw))
    # the other way round: counts that the model normalises and log-transforms itself
    data["rna"].X = counts.astype(np.float32)
    own = tm.Modality("gaussian", normalize=True, log1p=True)
    model = train(make_model(data, {**specs, "rna": own}), max_epochs=1)
    new = data["rna"][:20].copy()
    new.X = log[:20]
    with pytest.warns(UserWarning, match=r"modality 'rna': X of the given cells holds "
                      r"non-integer values .* trained on integers only \(e.g. raw counts, which "
                      r"it transforms itself: normalize=True, log1p=True\).*give their raw "
                      r"values, as for the training cells$"):
        model.get_latent_representation("rna", new)
    quiet(lambda: model.get_latent_representation("rna", data["rna"][:20]))


def test_scvi_tools_spellings_name_the_transmodal_argument(paired_data, make_model, tmp_path):
    """What scvi-tools users type fails with the method's name and the transmodal spelling,
    not a bare TypeError; the signatures stay what they are."""
    import inspect

    model = make_model(paired_data)
    cases = [
        (lambda: model.train(n_epochs=2), r"CrossModalAE.train\(\): .*'n_epochs'; .*max_epochs="),
        (lambda: model.train(use_gpu=True), r"'use_gpu'; choose the device with accelerator="),
        (lambda: model.train(plan_kwargs={"lr": 1e-2}), r"train\(\)'s own arguments \(lr="),
        (lambda: model.train(train_size=0.9), r"CrossModalAE\(\.\.\., validation_fraction=\)"),
        (lambda: model.train(max_epoch=2), r"did you mean max_epochs=\?"),
        (lambda: model.get_latent_representation(adata=paired_data["rna"]),
         r"get_latent_representation\(\): missing a required argument: 'modality'; name the "
         r"modality"),
        (lambda: model.translate(paired_data["rna"], source="rna"),
         r"'target'; name the modalities"),
        (lambda: model.translate(paired_data["rna"], "rna", "atac"),
         r"too many positional arguments; source and target are named"),
        (lambda: model.save(tmp_path / "m", save_anndata=True), r"not saved with the model"),
        (lambda: tm.CrossModalAE.load(tmp_path / "m", adata=paired_data),
         r"CrossModalAE.load\(\): .*'adata'; the data are load\(\)'s second argument"),
        (lambda: model.train(learning_rate=1e-2), r"'learning_rate'; the learning rate is lr="),
        (lambda: model.train(kl_weight=0.1), r"'kl_weight'; the KL weight .* is beta="),
        (lambda: make_model(paired_data, n_hidden=64),
         r"^CrossModalAE\(\): .*'n_hidden'; the hidden layers' widths are hidden="),
        (lambda: make_model(paired_data, dropout_rate=0.2), r"'dropout_rate'; .* is dropout="),
        (lambda: make_model(paired_data, gene_likelihood="nb"),
         r"'gene_likelihood'; the likelihood is each modality's: Modality\('nb'\)"),
    ]
    # scGLUE's spellings: the counterpart, not the nearest name (lam_align is no lam_latent)
    cases += [
        (lambda: model.train(lam_align=0.05), r"'lam_align'; .* lam_adv= .* lam_mmd="),
        (lambda: model.train(lam_kl=1.0), r"'lam_kl'; the KL weight .* is beta="),
        (lambda: model.train(lam_data=1.0), r"'lam_data'; the reconstruction has weight 1"),
        (lambda: model.train(align_burnin=5), r"'align_burnin'; .* over adv_warmup_epochs="),
        (lambda: model.train(temperature=0.1), r"did you mean anchor_temperature=\?"),
        (lambda: model.train(sede=1), r"did you mean seed=\?"),
        (lambda: model.train(lam_adversarial=1), r"did you mean lam_adv=\?"),
        (lambda: model.train(batch=64), r"did you mean batch_size=\?"),
        (lambda: make_model(paired_data, validation=0.2), r"did you mean validation_fraction"),
        (lambda: model.train(n_latent=8), r"'n_latent'; .* CrossModalAE\(\.\.\., n_latent=\)"),
        (lambda: model.train(reduce_lr_patience=5), r"'reduce_lr_patience'; .*\(no scheduler\)"),
        (lambda: model.translate(paired_data["rna"], source="rna", target="atac",
                                 target_libsize=1e4), r"'target_libsize'; .* library_size="),
        (lambda: make_model(paired_data, random_seed=0), r"'random_seed'; the seed is seed="),
        (lambda: make_model(paired_data, use_cell_type="cell_type"),
         r"'use_cell_type'; .* labels_key="),
        (lambda: make_model(paired_data, use_highly_variable=True),
         r"'use_highly_variable'; .* subset the AnnData first"),
        (lambda: model.train(anchor_temp=0.2), r"did you mean anchor_temperature=\?"),
    ]
    # the device: accelerator= in training, device= at inference, chosen per call (train's
    # devices= is no device name); totalVI's and scvi-tools' inference names
    rna = paired_data["rna"]
    cases += [
        (lambda: model.train(device="cuda"), r"'device'; choose the device with accelerator="),
        (lambda: model.translate(rna, source="rna", target="atac", accelerator="cuda"),
         r"'accelerator'; the device is device= \('cpu', 'cuda', 'gpu', 'mps' or 'auto'\)"),
        (lambda: model.get_latent_representation("rna", use_gpu=True),
         r"'use_gpu'; the device is device="),
        (lambda: model.predict_labels("rna", accelerator="gpu"), r"the device is device="),
        (lambda: make_model(paired_data, device="cuda"),
         r"'device'; the device is chosen per call: train\(accelerator="),
        (lambda: model.translate(rna, source="rna", target="atac", n_samples=25),
         r"'n_samples'; translations decode each cell's latent .* sample=True decodes one"),
        (lambda: model.translate(rna, source="rna", target="atac", transform_batch="b"),
         r"'transform_batch'; .* target_batch="),
        (lambda: make_model(paired_data, protein_expression_obsm_key="prot"),
         r"'protein_expression_obsm_key'; .* Modality\('nb', obsm_key='protein_expression'\)"),
        (lambda: make_model(paired_data, empirical_protein_background_prior=True),
         r"there is no protein background model"),
        (lambda: tm.Modality("nb", gene_likelihood="nb"),
         r"^Modality\(\): .*'gene_likelihood'; the likelihood is the first argument"),
        (lambda: tm.Modality("nb", hiden=(8,)), r"^Modality\(\): .*'hiden'; did you mean hidden="),
        # a name that begins several: all of them; a short name lengthened; other tools'
        (lambda: model.train(checkpoint="d"),
         r"'checkpoint'; did you mean checkpoint_dir= or checkpoint_every=\?$"),
        (lambda: model.train(beta_kl=0.1), r"'beta_kl'; did you mean beta=\?$"),
        (lambda: model.train(checkpoint_freq=5), r"written every checkpoint_every= epochs"),
        (lambda: make_model(paired_data, latent_size=8), r"latent dimensions are n_latent="),
        # batches (scvi-tools' setup_anndata(batch_key=, categorical_covariate_keys=))
        (lambda: model.train(batch_key="b"),
         r"'batch_key'; batches are set when the model is built: Modality\(\.\.\., batch_key="),
        (lambda: tm.Modality("nb", categorical_covariate_keys=["b"]),
         r"'categorical_covariate_keys'; a modality's batches are one column, batch_key="),
        (lambda: make_model(paired_data, categorical_covariate_keys=["b"]),
         r"'categorical_covariate_keys'; batches are each modality's"),
        # the data given first: the modality is given twice (not its own value twice)
        (lambda: model.get_latent_representation(rna, modality="rna"),
         r"multiple values for argument 'modality'; name the modality the cells come from "
         r"first"),
    ]
    for call, message in cases:
        with pytest.raises(TypeError, match=message):
            call()
    # no suggestion of a merely similar name
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'lam_graph'; there is no"):
        model.train(lam_graph=0.02)
    for absurd in ("lam_foo", "mode", "max_cells"):  # (merely alike: none)
        with pytest.raises(TypeError, match=rf"unexpected keyword argument '{absurd}'$"):
            model.train(**{absurd: 1})
    assert not (tmp_path / "m").exists()
    assert list(inspect.signature(tm.CrossModalAE.train).parameters)[:2] == ["self", "max_epochs"]
    assert list(inspect.signature(tm.CrossModalAE.load).parameters)[:2] == ["path", "data"]
    assert list(inspect.signature(tm.CrossModalAE).parameters)[:2] == ["data", "modalities"]
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'foo'$"):
        model.train(foo=1)
    # the unknown keyword is named first (as Python does), with the nearest spelling; an
    # argument given twice gets no suggestion of its own name
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'targt'; did you mean "
                       r"target=\?"):
        model.translate(paired_data["rna"], source="rna", targt="atac")
    with pytest.raises(TypeError, match=r"multiple values for argument 'modality'$"):
        model.get_latent_representation("rna", modality="rna")
    # other tools' methods: how transmodal does it (Python's 'Did you mean' kept for typos)
    for call, message in [
        (lambda: tm.CrossModalAE.setup_anndata, r"^type object 'CrossModalAE' has no attribute "
         r"'setup_anndata'; there is no setup step: the model is built from the data"),
        (lambda: model.get_normalized_expression, r"^'CrossModalAE' object has no attribute "
         r"'get_normalized_expression'; .* translate\(adata, source='rna', target='rna'\) "
         r"\(transform_batch: target_batch="),
        (lambda: model.decode_data, r"translations are model.translate"),
    ]:
        with pytest.raises(AttributeError, match=message):
            call()
    with pytest.raises(AttributeError) as err:
        model.get_latent_represntation
    assert err.value.name == "get_latent_represntation" and err.value.obj is model
    assert not hasattr(model, "foo") and not hasattr(tm.CrossModalAE, "foo")
    import abc  # (the class keeps subclassing with abc.ABC possible)
    assert issubclass(type("Mine", (tm.CrossModalAE, abc.ABC), {}), tm.CrossModalAE)
    # an AttributeError inside a subclass's property is its own, not the property missing
    mine = type("Mine", (tm.CrossModalAE,), {"broken": property(lambda self: self.nothing_)})
    broken = object.__new__(mine)
    with pytest.raises(AttributeError, match=r"^'Mine' object has no attribute 'nothing_'$"):
        broken.broken
    # the same path twice, as a Path and a string: no hint to do what was done
    with pytest.raises(TypeError, match=r"multiple values for argument 'checkpoint_dir'$"):
        tm.workflows.resume_training(tmp_path / "ckpt", checkpoint_dir=str(tmp_path / "ckpt"))


def test_cross_translation_ignores_the_source_private_part():
    """Translating into another modality decodes the shared part with the target's private
    part at zero (the source's private coordinates are its own)."""
    data = make_data()
    specs = {"rna": tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
    model = tm.CrossModalAE(data, specs, n_private=3, seed=0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, batch_size=32, progress_bar=False)
    mod = model.module.eval()
    counts = data["rna"].layers["counts"]
    x = torch.from_numpy(np.asarray(counts.todense() if hasattr(counts, "todense") else counts,
                                    dtype=np.float32))
    with torch.no_grad():
        t = mod.transforms["rna"]
        full = mod.encoders["rna"](t.encoder_input(t.process(x)))
        z = torch.cat([full[:, :8], torch.zeros(len(full), 3)], 1)
        expected = mod.output("atac", mod.decode("atac", z)).numpy()
    got = model.translate(data["rna"], source="rna", target="atac").X
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_classifier_loss_skips_unlabelled_cells():
    data = make_data()
    model = tm.CrossModalAE(data, {"rna": tm.Modality("nb", layer="counts"),
                                   "atac": tm.Modality("poisson")}, labels_key="label", seed=0,
                            **SMALL)
    mod = model.module.eval()
    z = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2, -1, -1, 1, 2, 1, -1, 2, 1, 1, 2, -1, 1, 2, 1, -1, 2, 1, 2])
    with torch.no_grad():
        full = mod.classifier_loss({"rna": z}, {"rna": y})
        labelled = mod.classifier_loss({"rna": z[y >= 0]}, {"rna": y[y >= 0]})
    torch.testing.assert_close(full, labelled)


def test_adversarial_loss_drives_the_encoders_towards_confusion_or_the_anchor(paired_data,
                                                                             make_model):
    """The encoders' adversarial term is smallest where the discriminator cannot tell the
    modalities apart (learned prior: log(2) at equal logits, more where it is sure) and, with
    an anchor modality, where the discriminator takes the cells for the anchor's."""
    model = make_model(paired_data)
    mod = model.module
    z = torch.zeros(4, model.module.n_latent)

    def loss(logits, anchor=None):
        mod.discriminate = lambda z, y=None, m=None: torch.tensor([logits] * len(z))
        try:
            return float(mod.adversarial_loss("rna", z, anchor))
        finally:
            del mod.discriminate

    rna, atac = mod.names.index("rna"), mod.names.index("atac")
    sure = [0.0, 0.0]
    sure[rna] = 5.0  # the discriminator is sure these rna cells are rna
    assert loss([0.0, 0.0]) == pytest.approx(np.log(2))
    assert loss(sure) > loss([0.0, 0.0]) + 1
    fooled = [0.0, 0.0]
    fooled[atac] = 5.0
    assert loss(fooled, anchor="atac") < 0.01 < 5 < loss(sure, anchor="atac")


def test_adversarial_warm_up_reaches_full_weight_in_its_last_epoch():
    from types import SimpleNamespace

    from transmodal.train._plan import CrossModalPlan

    w = [CrossModalPlan._adv_weight(SimpleNamespace(
        pretraining=False, current_epoch=e, pretrain_epochs=0, adv_warmup_epochs=3,
        lam_adv=2.0)) for e in range(5)]
    # epochs 0, 1, 2 of a 3-epoch warm-up: 1/3, 2/3, 3/3 of lam_adv (the warning that the
    # warm-up reaches max_epochs counts on the full weight at epoch adv_warmup_epochs - 1)
    np.testing.assert_allclose(w, [2 / 3, 4 / 3, 2.0, 2.0, 2.0])


def test_early_stopping_waits_for_patience_epochs_without_improvement():
    data = make_data()
    model = tm.CrossModalAE(data, {"rna": tm.Modality("nb", layer="counts"),
                                   "atac": tm.Modality("poisson")}, anchor_fraction=0.5,
                            seed=0, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=25, batch_size=32, progress_bar=False, patience=3,
                    adv_warmup_epochs=0)
    h = model.history_["val_monitor"].to_numpy()
    assert len(h) > 3 + 1
    if len(h) < 25:  # stopped early: the last 3 epochs did not improve on the best before
        assert h[-3:].min() >= h[:-3].min()


def test_a_cuda_device_named_gpu_on_a_mac_points_to_the_apple_gpu(monkeypatch):
    """'gpu:0' names a CUDA device: where only an Apple GPU is available the message says
    how to reach it (it said no GPU was available); bare 'gpu' takes it."""
    import transmodal._utils as utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(utils, "mps_available", lambda: True)
    assert utils.resolve_device("gpu") == torch.device("mps")
    with pytest.raises(ValueError, match=r"'gpu:0' requested but CUDA is not available \('gpu:0' "
                       r"names a CUDA device; the Apple GPU is 'gpu' or 'mps'\)"):
        utils.resolve_device("gpu:0")
    monkeypatch.setattr(utils, "mps_available", lambda: False)
    with pytest.raises(ValueError, match=r"no GPU is available \(neither CUDA nor an Apple GPU\)"):
        utils.resolve_device("gpu:0")
