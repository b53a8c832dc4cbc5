"""What embedding and translation (model/_inference.py), model files (model/_io.py) and
ensembles (model/_ensemble.py) do, pinned down. Found by mutation testing (round 8): each
test fails on a change of the code that the rest of the suite let pass."""

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import transmodal as tm


def _data(n: int = 60, seed: int = 0, batches: bool = False, labels: bool = False):
    """Two small paired modalities: Poisson counts 'a' (12 features), Gaussian 'b' (6)."""
    rng = np.random.default_rng(seed)
    names = pd.Index([f"c{i}" for i in range(n)], dtype=object)
    z = rng.normal(size=(n, 2))
    a = rng.poisson(np.exp(0.5 * z @ rng.normal(size=(2, 12)))).astype(np.float32)
    b = (z @ rng.normal(size=(2, 6)) + 0.1 * rng.normal(size=(n, 6))).astype(np.float32)
    obs = pd.DataFrame(index=names)
    if batches:
        obs["batch"] = pd.Categorical(np.where(np.arange(n) % 3 == 0, "b0", "b1"))
    if labels:
        obs["label"] = pd.Categorical(np.where(z[:, 0] > 0, "hi", "lo"))
    data = {
        "a": ad.AnnData(a, obs=obs.copy(),
                             var=pd.DataFrame(index=[f"g{i}" for i in range(12)])),
        "b": ad.AnnData(b, obs=obs.copy(),
                             var=pd.DataFrame(index=[f"p{i}" for i in range(6)])),
    }
    return data


def _model(data=None, seed: int = 0, batches: bool = False, labels: bool = False,
               train: bool = True, **kw):
    data = _data(batches=batches, labels=labels) if data is None else data
    specs = {"a": tm.Modality("poisson", batch_key="batch" if batches else None),
             "b": tm.Modality("gaussian")}
    if labels:
        kw.setdefault("labels_key", "label")
    kw.setdefault("anchor_fraction", 0.0)
    model = tm.CrossModalAE(data, specs, n_latent=3, hidden=(8,), seed=seed, **kw)
    if train:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.train(max_epochs=1, batch_size=32, progress_bar=False)
    return model, data


# model/_inference.py
def test_embedding_of_one_cell_and_of_no_cells():
    """One cell gives one row; no cells give a (0, n_latent) array (the network still runs
    once for the width)."""
    model, data = _model()
    one = model.get_latent_representation("b", data["b"][:1])
    assert one.shape == (1, 3)
    np.testing.assert_allclose(one, model.get_latent_representation("b")[:1], rtol=1e-5)
    none = model.get_latent_representation("b", data["b"][:0])
    assert none.shape == (0, 3) and none.dtype == np.float32


def test_a_single_non_finite_cell_is_warned_about():
    """The NaN / infinite output warning counts every such cell, also when only one is."""
    model, data = _model()
    cells = data["b"][:4].copy()
    cells.X = cells.X.copy()
    cells.X[2] = 1e30
    with pytest.warns(UserWarning, match="the embeddings: 1 of 4 cell"):
        model.get_latent_representation("b", cells)


def test_posterior_draws_depend_on_seed_not_on_torchs_global_generator():
    """sample=True draws from the call's own generator seeded with ``seed``: the same seed
    gives the same draws whatever torch's global generator did in between."""
    model, data = _model(variational=True)
    torch.manual_seed(1)
    x1 = model.translate(source="b", target="a", sample=True, seed=7).X
    torch.manual_seed(12345)
    torch.rand(100)
    x2 = model.translate(source="b", target="a", sample=True, seed=7).X
    np.testing.assert_array_equal(x1, x2)
    x3 = model.translate(source="b", target="a", sample=True, seed=8).X
    assert not np.array_equal(x1, x3)


def test_per_cell_target_batches_do_not_depend_on_the_block_size():
    """target_batch with one batch per cell: each cell is decoded in its own batch, whatever
    the cells per forward pass (the codes follow the blocks)."""
    model, data = _model(batches=True)
    per_cell = data["a"].obs["batch"].astype(str).to_numpy()[::-1].copy()
    whole = model.translate(source="b", target="a", target_batch=per_cell, batch_size=1024).X
    small = model.translate(source="b", target="a", target_batch=per_cell, batch_size=7).X
    np.testing.assert_allclose(small, whole, rtol=1e-5, atol=1e-6)
    # and it is each cell's own batch
    b0 = model.translate(source="b", target="a", target_batch="b0").X
    b1 = model.translate(source="b", target="a", target_batch="b1").X
    expected = np.where((per_cell == "b0")[:, None], b0, b1)
    np.testing.assert_allclose(small, expected, rtol=1e-5, atol=1e-6)


def test_classes_named_twice_give_one_column():
    """predict_labels(classes=): each class once, in the order given."""
    model, data = _model(labels=True)
    proba = model.predict_labels("a", classes=["lo", "hi", "lo"], return_proba=True)
    assert list(proba.columns) == ["lo", "hi"]
    np.testing.assert_allclose(proba.to_numpy().sum(1), 1.0, rtol=1e-5)


def test_embedding_file_names_latent0_and_holds_the_given_cells(tmp_path):
    """out=: var_names latent0...; the given cells' obs (not the training cells')."""
    model, data = _model()
    cells = data["b"][10:25]
    written = model.get_latent_representation("b", cells, out=tmp_path / "z.h5ad")
    assert list(written.var_names) == ["latent0", "latent1", "latent2"]
    assert list(written.obs_names) == list(cells.obs_names)
    np.testing.assert_allclose(
        written.X[:], model.get_latent_representation("b", cells), rtol=1e-6)
    written.file.close()


def test_a_record_without_classifier_trained_is_taken_as_trained():
    """Models whose train_params lack 'classifier_trained' (saved before it was recorded)
    predict labels without the untrained-classifier warning."""
    model, data = _model(labels=True)
    model.train_params_.pop("classifier_trained", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict_labels("a")


# model/_io.py
def _rewrite_weights(path, edit):
    """Apply ``edit(tensors)`` to a saved model's weights and record the new checksum (as a
    file saved so would hold)."""
    import hashlib
    import json

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "transmodal"})
    cfg = json.loads((path / "config.json").read_text())
    cfg["weights_sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    (path / "config.json").write_text(json.dumps(cfg))


def test_resaving_without_data_keeps_the_saved_cells_digest(tmp_path):
    """A model loaded without its cells and saved again records the digest of its training
    cells (not of the cell-less stand-ins): a file saved before the cells' names were
    recorded (no cells.* tensors) still finds its anchor pairs when loaded with them."""
    model, data = _model(anchor_fraction=0.5)
    model.save(tmp_path / "a")
    _rewrite_weights(tmp_path / "a", lambda t: [t.pop(k) for k in list(t)
                                                   if k.startswith("cells.")])
    tm.CrossModalAE.load(tmp_path / "a").save(tmp_path / "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = tm.CrossModalAE.load(tmp_path / "b", data)
    assert again.anchors_.keys() == model.anchors_.keys() and len(model.anchors_)
    for key, (ia, ib) in model.anchors_.items():
        np.testing.assert_array_equal(again.anchors_[key][0], ia)
        np.testing.assert_array_equal(again.anchors_[key][1], ib)


# model/_ensemble.py
def _ensemble(batches: bool = False, **kw):
    data = _data(batches=batches)
    members = [_model(data, seed=s, batches=batches, **kw)[0] for s in (0, 1)]
    return tm.Ensemble(members), data


def test_ensemble_scale_is_the_rms_distance_of_the_latents_from_their_mean():
    """scales_: root-mean-square over cells (every modality) of the Euclidean distance of
    a member's latent from its mean."""
    ens, data = _ensemble()
    for m, s in zip(ens.models, ens.scales_):
        z = np.concatenate([m.get_latent_representation(n) for n in ("a", "b")]).astype(float)
        expected = np.sqrt(((z - z.mean(0)) ** 2).sum(1).mean())
        np.testing.assert_allclose(s, expected, rtol=1e-6)


def test_ensemble_refuses_scales_below_float32s_normal_range():
    """scales must lie within float32's normal range: a positive subnormal one is refused."""
    ens, data = _ensemble()
    with pytest.raises(ValueError, match="positive numbers within float32's range"):
        tm.Ensemble(ens.models, scales=[1.0, 1e-40])


def test_ensemble_file_translation_with_per_cell_batches_follows_the_blocks(tmp_path):
    """out= with one target batch per cell, in several blocks: equal to the in-memory
    translation (each block gets its own cells' batches)."""
    ens, data = _ensemble(batches=True)
    per_cell = data["a"].obs["batch"].astype(str).to_numpy()[::-1].copy()
    memory = ens.translate(source="b", target="a", target_batch=per_cell).X
    written = ens.translate(source="b", target="a", target_batch=per_cell, batch_size=7,
                            out=tmp_path / "t.h5ad")
    np.testing.assert_allclose(written.X[:], memory, rtol=1e-5, atol=1e-6)
    written.file.close()


def test_ensemble_file_blocks_hold_at_most_chunk_values_of_the_wider_side(
    tmp_path, monkeypatch
):
    """out=: blocks of at most CHUNK_VALUES values per cell of the wider of source and
    target (here the 12-feature target of a 6-feature source)."""
    import transmodal.model._ensemble as ens_mod

    ens, data = _ensemble()
    monkeypatch.setattr(ens_mod, "CHUNK_VALUES", 100)
    sizes = []
    inner = ens_mod.Ensemble._translate_rows

    def spy(self, adata, *args):
        sizes.append(adata.n_obs)
        return inner(self, adata, *args)

    monkeypatch.setattr(ens_mod.Ensemble, "_translate_rows", spy)
    written = ens.translate(source="b", target="a", batch_size=50, out=tmp_path / "t.h5ad")
    written.file.close()
    assert max(sizes) == 100 // 12 and sum(sizes) == data["b"].n_obs


def test_ensemble_translation_records_the_library_size_given():
    """library_size given: uns['transmodal']['library_size'] is it (not the members' own)."""
    ens, data = _ensemble()
    t = ens.translate(source="b", target="a", library_size=1234.0)
    assert t.uns["transmodal"]["library_size"] == 1234.0
    np.testing.assert_allclose(t.X.sum(1), 1234.0, rtol=1e-3)


def test_ensemble_load_passes_each_members_warning_on_once(tmp_path):
    """Ensemble.load gives a warning that every member raises (other cells than the training
    cells) once."""
    ens, data = _ensemble(anchor_fraction=0.5)
    ens.save(tmp_path / "e")
    other = {k: v[::-1].copy() for k, v in data.items()}
    for v in other.values():
        v.obs_names = [f"x{i}" for i in range(v.n_obs)]
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tm.Ensemble.load(tmp_path / "e", other)
    messages = [str(w.message) for w in rec]
    dropped = [m for m in messages if "not the cells the model was trained on" in m]
    assert len(dropped) == 1 and len(messages) == len(set(messages))


def test_ensemble_manifest_refuses_member_directories_not_named_memberN(tmp_path):
    """ensemble.json's 'members' must be member0, member1, ... (not any path)."""
    import json

    ens, data = _ensemble()
    ens.save(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "ensemble.json").read_text())
    (tmp_path / "e" / "member0").rename(tmp_path / "e" / "other")
    cfg["members"] = ["other", "member1"]
    (tmp_path / "e" / "ensemble.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="'members' must list member directories"):
        tm.Ensemble.load(tmp_path / "e", data)


# model/_io.py
def test_load_refuses_an_empty_batch_list(tmp_path):
    """config.json: a modality's batch_categories must list at least one batch."""
    import json

    model, data = _model(batches=True)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["batch_categories"]["a"] = []
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="batch_categories' of modality 'a' must list"):
        tm.CrossModalAE.load(tmp_path / "m", data)


def test_load_takes_a_whole_number_for_a_float_parameter(tmp_path):
    """init_params: a JSON integer where the parameter's default is a float
    (validation_fraction 0, as a JSON tool may write 0.0) is a number, and loads."""
    import json

    model, data = _model(validation_fraction=0.0)
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["init_params"]["validation_fraction"] == 0.0
    cfg["init_params"]["validation_fraction"] = 0
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    back = tm.CrossModalAE.load(tmp_path / "m", data)
    np.testing.assert_allclose(back.get_latent_representation("b"),
                                    model.get_latent_representation("b"), rtol=1e-6)


def test_load_warns_about_infinite_weights(tmp_path):
    """Weights with infinite values (not only NaN) load with the diverged-training warning."""
    model, data = _model()
    model.save(tmp_path / "m")
    key = next(k for k in model.module.state_dict() if k.endswith("weight"))

    def edit(t):
        t[f"module.{key}"] = t[f"module.{key}"].clone()
        t[f"module.{key}"].view(-1)[0] = float("inf")

    _rewrite_weights(tmp_path / "m", edit)
    with pytest.warns(UserWarning, match="hold NaN or infinite weights"):
        tm.CrossModalAE.load(tmp_path / "m", data)
