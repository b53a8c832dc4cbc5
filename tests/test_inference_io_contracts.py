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
           train: bool = True, specs=None, n_latent: int = 3, batch_size: int = 32, **kw):
    data = _data(batches=batches, labels=labels) if data is None else data
    specs = specs or {"a": tm.Modality("poisson", batch_key="batch" if batches else None),
                      "b": tm.Modality("gaussian")}
    if labels:
        kw.setdefault("labels_key", "label")
    kw.setdefault("anchor_fraction", 0.0)
    model = tm.CrossModalAE(data, specs, n_latent=n_latent, hidden=(8,), seed=seed, **kw)
    if train:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.train(max_epochs=1, batch_size=batch_size, progress_bar=False)
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
        predicted = model.predict_labels("a")
    assert len(predicted) == data["a"].n_obs


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


def _e_data(n: int = 40, seed: int = 0):
    """Two small paired modalities: Poisson counts 'a' (8 features), Gaussian 'b' (5)."""
    rng = np.random.default_rng(seed)
    names = pd.Index([f"c{i}" for i in range(n)], dtype=object)
    z = rng.normal(size=(n, 2))
    a = rng.poisson(np.exp(0.5 * z @ rng.normal(size=(2, 8)))).astype(np.float32)
    b = (z @ rng.normal(size=(2, 5)) + 0.1 * rng.normal(size=(n, 5))).astype(np.float32)
    return {
        "a": ad.AnnData(a, obs=pd.DataFrame(index=names),
                        var=pd.DataFrame(index=[f"g{i}" for i in range(8)])),
        "b": ad.AnnData(b, obs=pd.DataFrame(index=names.copy()),
                        var=pd.DataFrame(index=[f"p{i}" for i in range(5)])),
    }


def _e_model(data, specs=None, seed: int = 0, train: bool = True, **kw):
    """:func:`_model` of these data, smaller (2 latent dimensions, batches of 20 cells)."""
    return _model(data, seed, train=train, specs=specs, n_latent=2, batch_size=20, **kw)[0]


# model/_ensemble.py (_same_values): NaN entries (missing=True: unmeasured values) in the
# same places of two copies of the data count as equal values, so an ensemble of members
# trained on copies of data with missing values is accepted
def test_ensemble_accepts_members_whose_data_hold_nan_in_the_same_places():
    data = _e_data()
    data["b"].X[0, 1] = np.nan
    data["b"].X[3, 4] = np.nan
    specs = {"a": tm.Modality("poisson"), "b": tm.Modality("gaussian", missing=True)}
    copy = {k: v.copy() for k, v in data.items()}  # equal values, another AnnData
    m0 = _e_model(data, specs, seed=0)
    m1 = _e_model(copy, specs, seed=1)
    ens = tm.Ensemble([m0, m1])
    assert ens.n_latent == 4


# model/_io.py (_with_stand_ins): a dict entry None under a name the model does not have,
# while one of its modalities is left out, is taken for a misspelt name and refused (not
# dropped, standing the left-out modality in without cells)
def test_load_refuses_a_none_entry_under_an_unknown_name_beside_a_lacking_modality(tmp_path):
    data = _e_data()
    _e_model(data).save(tmp_path / "m")
    with pytest.raises(ValueError, match="data holds modality 'bb', which the model does not "
                                         "have, and lacks its modality 'b'"):
        tm.CrossModalAE.load(tmp_path / "m", {"a": data["a"], "bb": None})
    # the model's own name with None stands in without cells
    loaded = tm.CrossModalAE.load(tmp_path / "m", {"a": data["a"], "b": None})
    assert loaded.mods["b"].n_obs == 0 and loaded.mods["a"].n_obs == 40


# model/_inference.py (_source_for): new cells whose obsm array (columns taken by position,
# so not compared by name) has another number of columns than the model reads are refused
# with a ValueError that counts them
def test_new_cells_with_another_number_of_unnamed_obsm_columns_are_refused():
    data = _e_data()
    rng = np.random.default_rng(1)
    data["b"].obsm["prot"] = rng.normal(size=(40, 4)).astype(np.float32)
    specs = {"a": tm.Modality("poisson"), "b": tm.Modality("gaussian", obsm_key="prot")}
    model = _e_model(data, specs)
    new = data["b"][:6].copy()
    new.obsm["prot"] = rng.normal(size=(6, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'b'.*5 features given, 4 expected"):
        model.get_latent_representation("b", new)
    with pytest.raises(ValueError, match=r"'b'.*5 features given, 4 expected"):
        model.translate(new, source="b", target="a")


# model/_inference.py (_source_for): values of new cells given to a built model are checked
# as new cells: the advice is to put the data there as in training, not a likelihood or
# layer option that only a new model takes
def test_bad_values_of_new_cells_are_told_to_follow_the_training_data():
    data = _e_data()
    model = _e_model(data)
    new = data["a"][:5].copy()
    new.X = new.X + 0.5  # not counts
    with pytest.raises(ValueError, match="non-integer values") as info:
        model.get_latent_representation("a", new)
    assert "as in training: put their raw counts there" in str(info.value)
    assert "likelihood='gaussian'" not in str(info.value)


def _e_images(n: int = 30, size: int = 8, seed: int = 0):
    """Disc images (n, 1, size, size) in [0, 1] and a paired Gaussian modality."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(size=n)
    yy, xx = np.mgrid[:size, :size]
    r = np.sqrt((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2) / (size / 2)
    crops = np.stack([np.clip(1 - r, 0, 1) ** (0.5 + 2 * ti) for ti in t])[:, None]
    img = ad.AnnData(np.zeros((n, 1), np.float32))
    img.obsm["crops"] = crops.astype(np.float32)
    img.obs_names = [f"n{i}" for i in range(n)]
    feat = ad.AnnData(np.stack([t, t ** 2, np.sin(3 * t)], 1).astype(np.float32))
    feat.obs_names = img.obs_names
    return img, feat


# model/_inference.py (_source_for): new cells whose images have the model's number of
# pixels but another shape are refused, naming both shapes (not read as the model's shape)
def test_new_images_of_another_shape_with_as_many_pixels_are_refused():
    img, feat = _e_images()
    specs = {"img": tm.Modality("gaussian", obsm_key="crops", hidden=(8, 16)),
             "feat": tm.Modality("gaussian")}
    model = tm.CrossModalAE({"img": img, "feat": feat}, specs, n_latent=3, seed=0,
                            anchor_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=15, progress_bar=False)
    new = img[:4].copy()
    new.obsm["crops"] = np.ascontiguousarray(
        img.obsm["crops"][:4].reshape(4, 1, 4, 16))  # 64 pixels, other shape
    with pytest.raises(ValueError, match=r"holds images of shape \(1, 4, 16\); the model was "
                                         r"built for \(1, 8, 8\)"):
        model.get_latent_representation("img", new)


# model/_ensemble.py (Ensemble): members decoding by other batches (one built with a
# batch_key, one without) are refused, naming the batches
def test_ensemble_refuses_members_with_other_batches():
    data = _e_data()
    batch = pd.Categorical(np.where(np.arange(40) % 2 == 0, "b0", "b1"))
    for v in data.values():
        v.obs["batch"] = batch
    with_batches = _e_model(data, {"a": tm.Modality("poisson", batch_key="batch"),
                                   "b": tm.Modality("gaussian")}, seed=0)
    without = _e_model(data, seed=1)
    with pytest.raises(ValueError, match=r"models\[1\] has batches \{\}; models\[0\] has "
                                         r"\{'a': \['b0', 'b1'\]\}"):
        tm.Ensemble([with_batches, without])


# model/_ensemble.py (Ensemble): scales must be one number per member: a list of another
# length is refused (not cut to the members by zip)
def test_ensemble_refuses_scales_of_another_length():
    data = _e_data()
    members = [_e_model(data, seed=s) for s in (0, 1)]
    with pytest.raises(ValueError, match="scales must be 2 positive numbers"):
        tm.Ensemble(members, scales=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="scales must be 2 positive numbers"):
        tm.Ensemble(members, scales=[1.0])


# model/_ensemble.py (Ensemble.history): members that share a seed are told apart by their
# position: the history is indexed by (member, epoch) and holds every member's epochs
def test_ensemble_history_of_members_sharing_a_seed_is_indexed_by_member():
    data = _e_data()
    members = [_e_model(data, seed=0) for _ in range(2)]
    hist = tm.Ensemble(members).history
    assert list(hist.index.names) == ["member", "epoch"]
    assert sorted(set(hist.index.get_level_values("member"))) == [0, 1]
    assert len(hist) == len(members[0].history) + len(members[1].history)


# model/_ensemble.py (_write_by_blocks): written block by block, a last block of one cell
# is written too (40 cells in blocks of 13: 13, 13, 13, 1)
def test_ensemble_file_embedding_keeps_a_last_block_of_one_cell(tmp_path):
    data = _e_data()
    ens = tm.Ensemble([_e_model(data, seed=s) for s in (0, 1)])
    memory = ens.get_latent_representation("a")
    written = ens.get_latent_representation("a", batch_size=13, out=tmp_path / "z.h5ad")
    assert written.n_obs == 40
    np.testing.assert_allclose(np.asarray(written.X[:]), memory, rtol=1e-5, atol=1e-6)


# model/_io.py (_check_sizes): a layer width edited in config.json to one more than the
# largest dimension of the saved weights is refused as such, naming the field
def test_load_refuses_a_width_one_above_the_largest_saved_dimension(tmp_path):
    import json

    data = _e_data()
    model = _e_model(data)
    largest = max(max(t.shape, default=1) for t in model.module.state_dict().values())
    model.save(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    config = json.loads(cfg.read_text())
    config["init_params"]["n_latent"] = largest + 1
    cfg.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"init_params.n_latent = {largest + 1} is larger "
                                         "than any dimension of the saved weights"):
        tm.CrossModalAE.load(tmp_path / "m", data)



# model/_inference.py (translate): uns['transmodal']['linear'] of a preprocessed target
# (gaussian) says whether its values are linear: only where log1p was undone
def test_translation_to_a_gaussian_target_without_log1p_is_not_linear():
    data = _e_data()
    model = _e_model(data)  # 'b': gaussian, no log1p
    info = model.translate(source="a", target="b").uns["transmodal"]
    assert info["linear"] is False
    assert info["units"] == "preprocessing inverted"


# model/_ensemble.py (translate): without library_size, members decode counts at their own
# training cells' median library size (their validation splits differ by seed), and the
# recorded library size is the mean of theirs
def test_ensemble_translation_records_the_mean_of_the_members_library_sizes():
    data = _e_data()
    members = [_e_model(data, seed=s) for s in (1, 2)]
    sizes = [float(m.module.transforms["a"].library_size) for m in members]
    assert sizes[0] != sizes[1]  # (seeds 1 and 2 hold out other cells)
    info = tm.Ensemble(members).translate(source="b", target="a").uns["transmodal"]
    assert info["library_size"] == pytest.approx(np.mean(sizes))
    assert info["ensemble"] == 2


# model/_io.py (_saved_pairs): a saved anchor row equal to the modality's number of cells
# (one past its last row) is refused as outside its cells
def test_load_refuses_a_saved_pair_row_one_past_the_last_cell(tmp_path):
    data = _e_data()
    model = _e_model(data, anchor_fraction=0.5)
    assert len(model.anchors_["a|b"][0])
    model.save(tmp_path / "m")

    def edit(t):
        rows = t["anchors.a|b.a"].clone()
        rows[0] = 40  # the modality has rows 0..39
        t["anchors.a|b.a"] = rows

    _rewrite_weights(tmp_path / "m", edit)
    with pytest.raises(ValueError, match=r"anchors.a\|b.a: rows outside modality 'a''s 40 cells"):
        tm.CrossModalAE.load(tmp_path / "m", data)


# model/_ensemble.py (read_manifest): an ensemble.json whose 'weights_sha256' lists another
# number of checksums than members is refused, naming the field
def test_ensemble_manifest_refuses_a_checksum_list_of_another_length(tmp_path):
    import json

    data = _e_data()
    tm.Ensemble([_e_model(data, seed=s) for s in (0, 1)]).save(tmp_path / "e")
    cfg = tmp_path / "e" / "ensemble.json"
    manifest = json.loads(cfg.read_text())
    for sums in (manifest["weights_sha256"] + ["0" * 64], manifest["weights_sha256"][:1]):
        cfg.write_text(json.dumps({**manifest, "weights_sha256": sums}))
        with pytest.raises(ValueError, match="'weights_sha256' must list one checksum"):
            tm.Ensemble.load(tmp_path / "e", data)


# model/_io.py (_reordering): the training cells plus further cells are not the training
# cells in another order: the saved pairs and split are dropped with a warning, and the
# model loads over all the given cells
def test_load_with_the_training_cells_and_more_drops_the_saved_pairs(tmp_path):
    data = _e_data()
    _e_model(data, anchor_fraction=0.5).save(tmp_path / "m")
    more = _e_data(n=50, seed=3)
    for k in more:
        more[k].obs_names = [f"c{i}" for i in range(50)]  # c0..c39 as trained, and 10 more
    with pytest.warns(UserWarning, match="not the cells the model was trained on"):
        loaded = tm.CrossModalAE.load(tmp_path / "m", more)
    assert loaded.anchors_ == {} and loaded.mods["a"].n_obs == 50
    assert not loaded.val_masks_["a"].any()


# model/_ensemble.py (read_manifest): JSON booleans are not scales: an ensemble.json whose
# 'scales' holds true is refused
def test_ensemble_manifest_refuses_boolean_scales(tmp_path):
    import json

    data = _e_data()
    tm.Ensemble([_e_model(data, seed=s) for s in (0, 1)]).save(tmp_path / "e")
    cfg = tmp_path / "e" / "ensemble.json"
    manifest = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**manifest, "scales": [True, True]}))
    with pytest.raises(ValueError, match="'scales' must list one number per member"):
        tm.Ensemble.load(tmp_path / "e", data)


# model/_io.py (load_model): a model loaded with a modality standing in without cells says
# nothing of dropped anchor pairs (it cannot train anyway)
def test_load_with_a_stand_in_does_not_warn_that_pairs_are_dropped(tmp_path):
    data = _e_data()
    _e_model(data, anchor_fraction=0.5).save(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not the cells the model was trained on")
        loaded = tm.CrossModalAE.load(tmp_path / "m", {"a": data["a"], "b": None})
    assert loaded.mods["b"].n_obs == 0


# model/_io.py (load_model): training further a model loaded with other cells than its
# training cells says that load() dropped the saved validation split
def test_training_after_a_load_with_other_cells_names_the_dropped_split(tmp_path):
    data = _e_data()
    _e_model(data).save(tmp_path / "m")
    other = {k: v.copy() for k, v in data.items()}
    for v in other.values():
        v.obs_names = [f"x{i}" for i in range(40)]
    loaded = tm.CrossModalAE.load(tmp_path / "m", other)  # (no pairs saved: no warning)
    with pytest.warns(UserWarning, match=r"load\(\) dropped the saved validation split"):
        loaded.train(max_epochs=1, batch_size=20, progress_bar=False)


# model/_io.py (_saved_mask): a saved validation mask must hold 0 / 1 values only: a 2 is
# refused as damage (not read as True)
def test_load_refuses_a_validation_mask_holding_a_value_above_one(tmp_path):
    import torch

    data = _e_data()
    _e_model(data).save(tmp_path / "m")

    def edit(t):
        mask = t["validation.a"].clone()
        mask[0] = 2
        t["validation.a"] = mask.to(torch.uint8)

    _rewrite_weights(tmp_path / "m", edit)
    with pytest.raises(ValueError, match=r"validation.a is missing or does not hold one 0 / 1"):
        tm.CrossModalAE.load(tmp_path / "m", data)
