"""Saving and loading models: safetensors + JSON, atomic writes, data re-validation."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors import safe_open

import transmodal as tm
from transmodal.model import _io

from conftest import make_data


@pytest.fixture
def saved(trained_model, tmp_path):
    path = tmp_path / "model"
    trained_model.save(path)
    return trained_model, path


def test_repr_of_a_model_loaded_without_a_modality_says_its_pairs_are_not_loaded(
        saved, paired_data):
    """Loaded without one modality's cells, the model's repr said "0 anchor pairs" while
    the other modalities' pairs are in its data (training it is refused, clearly)."""
    model, path = saved
    assert " anchor pairs, " in repr(model) and "not loaded" not in repr(model)
    loaded = tm.CrossModalAE.load(path, {"rna": paired_data["rna"]})
    assert "pairs not loaded (no cells of 'atac')" in repr(loaded)
    assert "pairs not loaded (no cells of 'rna', 'atac')" in repr(tm.CrossModalAE.load(path))


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_files_and_config(saved, paired_data):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["class"] == "CrossModalAE"
    assert config["format_version"] == 1
    assert set(config["modalities"]) == {"rna", "atac"}
    assert config["modalities"]["rna"]["likelihood"] == "nb"
    assert config["modalities"]["rna"]["layer"] == "counts"
    assert config["var_names"]["rna"] == list(paired_data["rna"].var_names)
    assert config["var_names"]["atac"] == list(paired_data["atac"].var_names)
    assert config["n_vars"] == {"rna": 40, "atac": 25}
    assert config["label_categories"] == ["type0", "type1", "type2"]
    assert config["init_params"]["n_latent"] == 8
    assert config["is_trained"] is True
    assert len(config["history"]["epoch"]) == 2
    # no temporary directories are left next to the model
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]


def test_safetensors_has_no_pickle(saved):
    model, path = saved
    raw = (path / "model.safetensors").read_bytes()
    assert b"\x80\x04\x95" not in raw[:200] and not raw.startswith(b"PK")  # no pickle / zip
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        assert f.metadata() == {"format": "transmodal"}
        module_keys = {f"module.{k}" for k in model.module.state_dict()}
        assert module_keys <= keys
        assert {"anchors.rna|atac.a", "anchors.rna|atac.b", "validation.rna", "validation.atac"} <= keys
        assert keys - module_keys == {
            "anchors.rna|atac.a",
            "anchors.rna|atac.b",
            "validation.rna",
            "validation.atac",
            "cells.rna",
            "cells.atac",
        }
        w = f.get_tensor("module.encoders.rna.net.0.weight")
        assert w.equal(model.module.state_dict()["encoders.rna.net.0.weight"])


def test_round_trip(saved, paired_data):
    model, path = saved
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert loaded.modality_names == ["rna", "atac"]
    assert loaded.is_trained_
    for name in ("rna", "atac"):
        assert np.array_equal(
            loaded.get_latent_representation(name), model.get_latent_representation(name)
        )
    for src, tgt in (("rna", "atac"), ("atac", "rna")):
        a = model.translate(source=src, target=tgt)
        b = loaded.translate(source=src, target=tgt)
        assert np.array_equal(a.X, b.X)
        assert list(a.var_names) == list(b.var_names)
    assert set(loaded.anchors_) == set(model.anchors_) == {"rna|atac"}
    for i in range(2):
        np.testing.assert_array_equal(loaded.anchors_["rna|atac"][i], model.anchors_["rna|atac"][i])
    for name in ("rna", "atac"):
        np.testing.assert_array_equal(loaded.val_masks_[name], model.val_masks_[name])
    pd.testing.assert_frame_equal(
        loaded.history, model.history, check_dtype=False, check_index_type=False
    )
    np.testing.assert_array_equal(loaded.history.index.to_numpy(), [0, 1])
    assert loaded.train_params_ == model.train_params_
    assert loaded.label_categories_ == model.label_categories_
    assert loaded.mixing_accuracy_ == model.mixing_accuracy_ is not None
    assert loaded.disc_accuracy_ == model.disc_accuracy_ is not None
    # state dicts agree exactly (buffers included: preprocessing, batch-norm statistics)
    sa, sb = model.module.state_dict(), loaded.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].equal(sb[k]) for k in sa)


def test_loaded_model_can_continue_training(saved, paired_data, train):
    _, path = saved
    loaded = tm.CrossModalAE.load(path, paired_data)
    train(loaded, max_epochs=1)
    assert len(loaded.history) == 3


def test_new_data_with_unknown_labels_warn_when_training(tmp_path, make_model, train):
    data = make_data()
    model = train(make_model(data, labels_key="label"))
    model.save(tmp_path / "m")
    new = make_data(seed=1)
    for adata in new.values():  # a class the model has never seen
        adata.obs["label"] = adata.obs["label"].cat.add_categories("typeNEW")
        adata.obs.iloc[:7, 0] = "typeNEW"
    loaded = tm.CrossModalAE.load(tmp_path / "m", new)  # unknown labels count as missing
    assert (loaded.mods["rna"].labels[:7] == -1).all()
    with pytest.warns(UserWarning) as record:
        train(loaded, max_epochs=1)
    messages = [str(w.message) for w in record if "carry labels" in str(w.message)]
    assert len(messages) == 2 and all("7 cell(s)" in m and "['typeNEW']" in m for m in messages)


def test_training_further_without_any_label_is_refused(tmp_path, make_model, train):
    """A model trained with a latent classifier, loaded with data whose labels_key column is
    gone (renamed): training further would silently leave the classifier out (the
    constructor refuses such data), so it is refused, naming the column."""
    data = make_data()
    model = train(make_model(data, labels_key="label"))
    model.save(tmp_path / "m")
    renamed = {n: a.copy() for n, a in data.items()}
    for a in renamed.values():
        a.obs = a.obs.rename(columns={"label": "cell_type"})
    loaded = tm.CrossModalAE.load(tmp_path / "m", renamed)  # (embedding needs no labels)
    assert loaded.get_latent_representation("rna").shape[0] == data["rna"].n_obs
    with pytest.raises(ValueError, match=r"labels_key 'label': no cell of the data holds a "
                       r"label .* would train further without it"):
        train(loaded, max_epochs=1)
    renamed["rna"].obs["label"] = np.nan  # unlabelled cells marked NaN, one modality
    renamed["atac"].obs["label"] = data["atac"].obs["label"].to_numpy()  # labelled: trains
    train(tm.CrossModalAE.load(tmp_path / "m", renamed), max_epochs=1)


def test_a_model_saved_after_its_cells_were_edited_records_them_as_trained(
        tmp_path, make_model, train):
    """Trained on counts, then the AnnData normalised in place (sc.pp.normalize_total /
    log1p), then saved: loading it with the counts it was trained on finds its training
    cells (the fingerprint was of the edited values, so they were taken for other cells
    and their pairs and split dropped)."""
    data = make_data()
    model = train(make_model(data, anchor_fraction=1.0), max_epochs=1)
    edited = model.mods["rna"].adata.layers["counts"]  # (what the modality reads)
    values = edited.data if hasattr(edited, "data") else edited
    np.log1p(values, out=values)
    model.save(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        loaded = tm.CrossModalAE.load(tmp_path / "m", make_data())
    assert loaded._training_cells and len(loaded.anchors_["rna|atac"][0]) > 0
    loaded.save(tmp_path / "again")  # (passed on as loaded)
    assert json.loads((tmp_path / "again" / "config.json").read_text())["values_fingerprint"] \
        == json.loads((tmp_path / "m" / "config.json").read_text())["values_fingerprint"]


def test_round_trip_anchor_prior_and_three_modalities(tmp_path, make_model, train):
    data = make_data(pairing="half", n_mods=3)
    model = train(make_model(data, prior="anchor:rna", seed=1), max_epochs=2, pretrain_epochs=1)
    model.save(tmp_path / "m3")
    loaded = tm.CrossModalAE.load(tmp_path / "m3", make_data(pairing="half", n_mods=3))
    assert loaded.anchor_modality_ == "rna"
    for name in ("rna", "atac", "prot"):
        assert np.array_equal(
            loaded.get_latent_representation(name), model.get_latent_representation(name)
        )
    # the pre-training epoch has NaN columns; they survive the JSON round trip
    assert model.history.isna().any().any()
    pd.testing.assert_frame_equal(
        loaded.history, model.history, check_dtype=False, check_index_type=False
    )


def test_history_epoch_index_stays_integer_after_load(saved, paired_data):
    model, path = saved
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert model.history.index.dtype.kind == "i"
    assert loaded.history.index.dtype.kind == "i"


def test_load_with_different_var_names(saved, paired_data):
    _, path = saved
    paired_data["atac"].var_names = [f"p{i}" for i in range(25)]
    with pytest.raises(ValueError) as info:
        tm.CrossModalAE.load(path, paired_data)
    assert "'atac'" in str(info.value) and "var_names" in str(info.value)


def test_load_with_fewer_features(saved, paired_data):
    _, path = saved
    paired_data["rna"] = paired_data["rna"][:, :30].copy()
    with pytest.raises(ValueError, match=r"'rna'.*30 features given, 40 expected; 10 missing"):
        tm.CrossModalAE.load(path, paired_data)


def test_features_in_another_order_are_named_as_such(saved, paired_data):
    model, path = saved
    reordered = paired_data["atac"][:, ::-1].copy()
    with pytest.raises(ValueError, match="'atac'.*the same 25 features in another order"):
        model.get_latent_representation("atac", reordered)
    with pytest.raises(ValueError, match="'atac'.*the same 25 features in another order"):
        tm.CrossModalAE.load(path, {**paired_data, "atac": reordered})
    # peaks written by another tool ('chr1-100-600' for 'chr1:100-600'): said so
    peaks = paired_data["atac"].copy()
    model.mods["atac"].var_names[:] = [f"chr1:{100 * i}-{100 * i + 50}" for i in range(25)]
    peaks.var_names = [f"chr1-{100 * i}-{100 * i + 50}" for i in range(25)]
    with pytest.raises(ValueError, match=r"'atac'.*the same 25 features named with other "
                       r"separators \(e.g. 'chr1-0-50' here, 'chr1:0-50' in the model"):
        model.get_latent_representation("atac", peaks)
    # names that repeat cannot be put in order by name: said so
    from transmodal.data._setup import feature_mismatch
    assert "their names repeat, so they cannot be put in order by name" in feature_mismatch(
        ["a", "b", "a"], ["a", "a", "b"])


def test_load_without_data_embeds_and_translates_new_cells(saved, paired_data, train):
    model, path = saved
    rna, atac = paired_data["rna"], paired_data["atac"]
    for data in (None, {"rna": rna}):  # no data at all, or one modality's
        alone = tm.CrossModalAE.load(path, data)
        np.testing.assert_allclose(
            alone.get_latent_representation("atac", atac),
            model.get_latent_representation("atac", atac), atol=1e-6,
        )
        got = alone.translate(rna, source="rna", target="atac")
        want = model.translate(rna, source="rna", target="atac")
        assert list(got.var_names) == list(atac.var_names)
        np.testing.assert_allclose(got.X, want.X, rtol=1e-5)
    with pytest.raises(ValueError, match="'atac': the model holds no cells of it"):
        alone.get_latent_representation("atac")
    with pytest.raises(ValueError, match="modality 'atac' has no cells"):
        train(alone)
    with pytest.raises(ValueError, match="holds modality 'RNA', which the model does not have, "
                       "and lacks its modality 'rna'"):
        tm.CrossModalAE.load(path, {"RNA": rna})  # a misspelt name is not silently dropped
    # beside all of the model's modalities, others are ignored (as by the constructor)
    extra = tm.CrossModalAE.load(path, {"rna": rna, "atac": atac, "prot": rna})
    assert extra.modality_names == ["rna", "atac"]


def test_load_rejects_bad_data_values(saved, paired_data):
    _, path = saved
    paired_data["atac"].X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        tm.CrossModalAE.load(path, paired_data)


def test_load_new_cells_need_no_known_labels(saved, paired_data):
    """Embedding new cells never reads labels: unknown or absent labels become missing."""
    model, path = saved
    for m in ("rna", "atac"):
        obs = paired_data[m].obs
        obs["label"] = obs["label"].cat.add_categories(["new"])
        obs.loc[obs.index[0], "label"] = "new"
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert loaded.mods["rna"].labels[0] == -1 and (loaded.mods["rna"].labels[1:] >= 0).all()
    unlabelled = {n: a.copy() for n, a in paired_data.items()}
    for a in unlabelled.values():
        del a.obs["label"]
    loaded = tm.CrossModalAE.load(path, unlabelled)
    assert (loaded.mods["atac"].labels == -1).all()
    np.testing.assert_array_equal(
        loaded.get_latent_representation("rna"), model.get_latent_representation("rna")
    )


def test_load_training_cells_reordered_keeps_pairs_and_split(saved, paired_data):
    """The training cells in another order (sorted by label) are recognised by name: the
    saved anchor pairs and validation split follow each cell to its new row, silently."""
    model, path = saved
    rng = np.random.default_rng(0)
    shuffled = {n: a[rng.permutation(a.n_obs)].copy() for n, a in paired_data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = tm.CrossModalAE.load(path, shuffled)
    names = {n: a.obs_names.to_numpy() for n, a in paired_data.items()}
    new = {n: a.obs_names.to_numpy() for n, a in shuffled.items()}
    (ia, ib), (ja, jb) = model.anchors_["rna|atac"], loaded.anchors_["rna|atac"]
    assert len(ja) == len(ia) > 0
    np.testing.assert_array_equal(new["rna"][ja], names["rna"][ia])
    np.testing.assert_array_equal(new["atac"][jb], names["atac"][ib])
    for n in ("rna", "atac"):
        assert loaded.val_masks_[n].sum() == model.val_masks_[n].sum() > 0
        assert set(new[n][loaded.val_masks_[n]]) == set(names[n][model.val_masks_[n]])
    assert not loaded._split_dropped
    # saved again, and loaded in the training order: the record is the original one
    loaded.save(path.parent / "again")
    back = tm.CrossModalAE.load(path.parent / "again", paired_data)
    for i in range(2):
        np.testing.assert_array_equal(back.anchors_["rna|atac"][i], model.anchors_["rna|atac"][i])


def test_reordered_cells_of_a_file_without_their_names_are_told_why(saved, paired_data):
    """A file saved before the cells' names were recorded (no cells.* tensors) cannot
    recognise its training cells in another order: the warning says so, and how to load
    them (it said only that they were not the training cells)."""
    from safetensors.torch import load_file, save_file

    _, path = saved
    weights = path / "model.safetensors"
    tensors = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("cells.")}
    save_file(tensors, str(weights), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {k: v for k, v in cfg.items() if k != "weights_sha256"})
    rng = np.random.default_rng(0)
    shuffled = {n: a[rng.permutation(a.n_obs)].copy() for n, a in paired_data.items()}
    with pytest.warns(UserWarning, match=r"not the cells the model was trained on; .* \(this "
                      r"file, saved before the cells' names were recorded, knows its cells "
                      r"only by their order: .* give them in the order they were trained in\)"):
        tm.CrossModalAE.load(path, shuffled)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.CrossModalAE.load(path, paired_data)


def test_a_file_saved_before_later_buffers_loads_with_their_meaning(saved, paired_data):
    """A model saved before marker statistics, the per-modality class mask and the aligned
    classes were kept (the first day's files) loads as it was trained: no markers, every
    class open to every modality and aligned (it was refused as a hand-edited config).
    Another mismatch names the version only where the file's differs."""
    from safetensors.torch import load_file, save_file

    model, path = saved
    weights = path / "model.safetensors"
    tensors = load_file(str(weights))
    later = ("module.marker_mean", "module.marker_std", "module.class_mask",
             "module.held_classes")
    old = {k: v for k, v in tensors.items() if k not in later}
    assert len(old) == len(tensors) - 4
    save_file(old, str(weights), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {k: v for k, v in cfg.items() if k != "weights_sha256"})
    loaded = tm.CrossModalAE.load(path, paired_data)
    np.testing.assert_array_equal(loaded.get_latent_representation("rna"),
                                  model.get_latent_representation("rna"))
    assert loaded.module.class_mask.all() and loaded.module.aligned_classes.all()
    del old[next(k for k in old if k.startswith("module.") and k.endswith("weight"))]
    save_file(old, str(weights), metadata={"format": "transmodal"})
    with pytest.raises(ValueError, match=r"its config was edited, or it was saved by a "
                       r"development version of transmodal .* whose networks differed$"):
        tm.CrossModalAE.load(path, paired_data)
    _edit_config(path, lambda cfg: {**cfg, "transmodal_version": "0.0.1"})
    with pytest.raises(ValueError, match=r"saved by transmodal 0\.0\.1 \(this is .*\), whose "
                       r"networks differ, or its config was edited$"):
        tm.CrossModalAE.load(path, paired_data)


def test_load_tells_other_values_under_the_training_names(saved, paired_data, tmp_path):
    """The cells' names match, but they hold other values (another draw, another run's
    data): other cells, their saved pairs dropped, said so. The training cells in another
    storage (dense, float64), order or file are still recognised."""
    import scipy.sparse as sp

    model, path = saved
    same = {n: a.copy() for n, a in paired_data.items()}
    for a in same.values():
        for key in [None, *a.layers]:
            m = a.X if key is None else a.layers[key]
            m = (m.toarray() if sp.issparse(m) else sp.csr_matrix(m)).astype(np.float64)
            if key is None:
                a.X = m
            else:
                a.layers[key] = m
    same = {n: a[::-1].copy() for n, a in same.items()}
    same["rna"].write_h5ad(tmp_path / "rna.h5ad")
    same["rna"] = ad.read_h5ad(tmp_path / "rna.h5ad", backed="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = tm.CrossModalAE.load(path, same)
    assert loaded._training_cells and len(loaded.anchors_["rna|atac"][0]) > 0
    other = {n: a.copy() for n, a in paired_data.items()}
    other["atac"].X = other["atac"].X[::-1].copy()  # (the names stay)
    with pytest.warns(UserWarning, match=r"not the cells the model was trained on; the saved "
                      r"anchor pairs .* \(modality 'atac': its cells carry the training cells' "
                      r"names but hold other values\)"):
        loaded = tm.CrossModalAE.load(path, other)
    assert not loaded._training_cells and loaded.anchors_ == {}
    # a file saved before the fingerprint: the names decide, as they did
    config = json.loads((path / "config.json").read_text())
    del config["values_fingerprint"]
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    (tmp_path / "old" / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    assert tm.CrossModalAE.load(tmp_path / "old", other)._training_cells


def test_load_other_cells_drops_anchors(saved, paired_data):
    model, path = saved
    subset = {n: a[:100].copy() for n, a in paired_data.items()}
    with pytest.warns(UserWarning, match="anchor"):
        loaded = tm.CrossModalAE.load(path, subset)
    assert loaded.anchors_ == {}
    assert not any(m.any() for m in loaded.val_masks_.values())
    assert all(len(m) == 100 for m in loaded.val_masks_.values())
    # the weights are the saved ones
    np.testing.assert_allclose(
        loaded.get_latent_representation("rna"),
        model.get_latent_representation("rna")[:100],
        rtol=1e-5,
        atol=1e-5,
    )


def test_resaving_a_model_loaded_without_data_keeps_its_training_record(
    tmp_path, make_model, train, paired_data
):
    """A model loaded without its cells (e.g. to copy it) and saved again still knows its
    anchor pairs and validation split when it is loaded with those cells later."""
    model = train(make_model(paired_data, anchor_fraction=0.5, seed=0))
    model.save(tmp_path / "a")
    tm.CrossModalAE.load(tmp_path / "a").save(tmp_path / "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = tm.CrossModalAE.load(tmp_path / "b", paired_data)
    for key, (ia, ib) in model.anchors_.items():
        np.testing.assert_array_equal(again.anchors_[key][0], ia)
        np.testing.assert_array_equal(again.anchors_[key][1], ib)
    assert again.anchors_.keys() == model.anchors_.keys() and len(model.anchors_)
    for name, mask in model.val_masks_.items():
        np.testing.assert_array_equal(again.val_masks_[name], mask)


def test_models_whose_own_widths_are_not_the_model_default_load(tmp_path):
    """The size check compares only widths that built networks: every modality with its own
    hidden widths leaves the model-wide default (256, 128) unused."""
    data = tm.datasets.synthetic(120, modalities={"a": "gaussian", "b": "gaussian"},
                                 n_features=12, seed=0)
    specs = {k: tm.Modality("gaussian", hidden=(16,)) for k in data}
    model = tm.CrossModalAE(data, specs, n_latent=4, geometric_pairs=False)
    model.save(tmp_path / "m")
    tm.CrossModalAE.load(tmp_path / "m", data)
    tm.CrossModalAE.load(tmp_path / "m")


def test_loaded_pairs_keep_the_constructors_order(tmp_path, make_model, three_mod_data):
    """The order of the modality pairs sets the training batches' draws: a loaded model
    lists them as the constructor did (not in a set's per-process hash order)."""
    model = make_model(three_mod_data, geometric_pairs=True)
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", three_mod_data)
    assert list(loaded.geometric_pairs_) == list(model.geometric_pairs_) == [
        "rna|atac", "rna|prot", "atac|prot"
    ]


def test_load_with_cells_named_by_row_numbers_warns(tmp_path, make_model, train, paired_data):
    """Names "0".."n-1" cannot tell the training cells from others: the saved pairs and
    split are kept for them, with a warning."""
    data = {k: a.copy() for k, a in paired_data.items()}
    for a in data.values():
        a.obs_names = [str(i) for i in range(a.n_obs)]
    with pytest.warns(UserWarning, match="row numbers"):
        model = train(make_model(data, anchor_fraction=1.0, seed=0))
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match="cannot be told from their names") as rec:
        loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    assert len(rec) == 1 and loaded.anchors_.keys() == model.anchors_.keys()
    # nothing stored by row (no pairs, no validation cells): nothing to warn of
    bare = make_model(data, anchor_fraction=0, geometric_pairs=False, validation_fraction=0)
    bare.save(tmp_path / "bare")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.CrossModalAE.load(tmp_path / "bare", data)


def test_load_not_a_model(tmp_path, paired_data):
    with pytest.raises(FileNotFoundError):
        tm.CrossModalAE.load(tmp_path / "nothing", paired_data)


def test_load_bad_config(saved, paired_data):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["format_version"] = 99
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format_version"):
        tm.CrossModalAE.load(path, paired_data)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        tm.CrossModalAE.load(path, paired_data)


def test_save_existing_without_overwrite(saved):
    model, path = saved
    before = _snapshot(path)
    mtimes = {p.name: os.stat(p).st_mtime_ns for p in path.iterdir()}
    with pytest.raises(FileExistsError):
        model.save(path)
    assert _snapshot(path) == before
    assert {p.name: os.stat(p).st_mtime_ns for p in path.iterdir()} == mtimes
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]


def test_save_overwrite_replaces(saved, paired_data, make_model, train):
    model, path = saved
    other = train(make_model(paired_data, seed=9))
    other.save(path, overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert loaded.anchors_ == {}
    assert loaded.label_categories_ is None
    assert np.array_equal(
        loaded.get_latent_representation("rna"), other.get_latent_representation("rna")
    )
    assert not np.array_equal(
        loaded.get_latent_representation("rna"), model.get_latent_representation("rna")
    )


def _boom(*args, **kwargs):
    raise RuntimeError("disk full")


def test_failed_save_leaves_no_partial_directory(trained_model, tmp_path, monkeypatch):
    monkeypatch.setattr(_io, "save_file", _boom)
    path = tmp_path / "new_model"
    with pytest.raises(RuntimeError, match="disk full"):
        trained_model.save(path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_existing_model(saved, paired_data, monkeypatch):
    model, path = saved
    before = _snapshot(path)
    monkeypatch.setattr(_io, "save_file", _boom)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(path, overwrite=True)
    assert _snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]
    monkeypatch.undo()
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert np.array_equal(
        loaded.get_latent_representation("atac"), model.get_latent_representation("atac")
    )


def test_failed_config_write_keeps_existing_model(saved, monkeypatch):
    model, path = saved
    before = _snapshot(path)
    monkeypatch.setattr(_io.json, "dumps", _boom)
    with pytest.raises(RuntimeError):
        model.save(path, overwrite=True)
    assert _snapshot(path) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]


def test_save_untrained_model(tmp_path, paired_data, make_model):
    model = make_model(paired_data, seed=0)
    model.save(tmp_path / "untrained")
    loaded = tm.CrossModalAE.load(tmp_path / "untrained", paired_data)
    assert not loaded.is_trained_ and loaded.history is None
    assert np.array_equal(
        loaded.get_latent_representation("rna"), model.get_latent_representation("rna")
    )


# ------------------------------------------------------------- overwrite keeps foreign files
def _tree(path):
    """Every file under ``path`` with its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_save_refuses_a_link_to_nothing_before_training(tmp_path, paired_data, make_model,
                                                      monkeypatch):
    """A symbolic link to a removed scratch folder failed only after training."""
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "scratch" / "run")
    model = make_model(paired_data)
    with pytest.raises(FileNotFoundError, match="run is a symbolic link to .*scratch/run"):
        model.save(link)
    monkeypatch.setattr(tm.CrossModalAE, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(FileNotFoundError, match="symbolic link"):
        tm.tl.integrate(paired_data, {"rna": tm.Modality("nb", layer="counts"),
                                      "atac": "poisson"}, model_dir=link)
    assert link.is_symlink() and not link.exists()


def test_overwrite_refuses_directory_with_foreign_files(saved):
    model, path = saved
    (path / "figs").mkdir()
    (path / "figs" / "umap.png").write_text("x")
    (path / "rna.h5ad").write_text("data")
    before = _tree(path)
    with pytest.raises(FileExistsError, match=r"holds files that are not part of a saved model") as err:
        model.save(path, overwrite=True)
    assert "figs/" in str(err.value) and "rna.h5ad" in str(err.value) and str(path) in str(err.value)
    assert _tree(path) == before  # nothing moved, replaced or deleted
    assert sorted(p.name for p in path.parent.iterdir()) == ["model"]  # no temporary left


def test_overwrite_refuses_the_command_lines_output_saying_so(saved):
    """A directory written by `transmodal train` (the model beside history.csv and
    run_config.yaml) is not replaced by model.save (those files would describe another
    run), with a message that says whose files they are."""
    model, path = saved
    (path / "history.csv").write_text("epoch\n0\n")
    (path / "run_config.yaml").write_text("out: model\n")
    before = _tree(path)
    with pytest.raises(FileExistsError, match=r"is the output of the command line's train "
                       r"\(its history.csv, run_config.yaml would go on describing"):
        model.save(path, overwrite=True)
    assert _tree(path) == before


def test_a_save_removes_what_killed_saves_left_and_refuses_a_read_only_model(
        saved, tmp_path, monkeypatch):
    """A save killed (SIGKILL: no clean-up runs) leaves its hidden temporary directory; the
    next save of the same path removes those of processes of this host that no longer run
    (a job pre-empted while checkpointing filled the disk with them), and leaves those of
    running processes and other hosts. A read-only model directory is not replaced."""
    import subprocess
    import sys

    from transmodal._utils import _host

    model, path = saved
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)
    left = {
        f".{path.name}.{_host()}-{dead}-abc123.tmp": False,  # a killed save: removed
        f".{path.name}.old-{_host()}-{dead}-def456": False,  # its replaced model: removed
        f".{path.name}.{_host()}-{os.getpid()}-ghi789.tmp": True,  # this process: kept
        f".{path.name}.otherhost-{dead}-jkl012.tmp": True,  # another host's: kept
        f".other.{_host()}-{dead}-mno345.tmp": True,  # another path's: kept
    }
    for name in left:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 10)
    model.save(path, overwrite=True)
    assert {n: (tmp_path / n).exists() for n in left} == left
    monkeypatch.setattr("transmodal._utils.os.access", lambda *a, **k: False)  # (root: no
    with pytest.raises(PermissionError, match=r"is read-only .* refusing to replace it"):
        model.save(path, overwrite=True)  # read-only directories of its own)


def test_overwrite_project_folder_is_refused(trained_model, tmp_path):
    proj = tmp_path / "proj"
    (proj / "figs").mkdir(parents=True)
    (proj / "figs" / "umap.png").write_text("x")
    with pytest.raises(FileExistsError, match=r"figs/"):
        trained_model.save(proj, overwrite=True)
    assert (proj / "figs" / "umap.png").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_overwrite_empty_directory(trained_model, paired_data, tmp_path):
    (tmp_path / "empty").mkdir()
    trained_model.save(tmp_path / "empty", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["config.json", "model.safetensors"]
    tm.CrossModalAE.load(tmp_path / "empty", paired_data)


def test_overwrite_current_directory_is_refused(trained_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    for where in (".", "", str(tmp_path), ".."):
        with pytest.raises(ValueError, match="current working directory"):
            trained_model.save(where, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_overwrite_a_file_is_refused(trained_model, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is not a directory"):
            trained_model.save(target, overwrite=overwrite)
    assert target.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _ensemble(data, make_model, train, n):
    return tm.Ensemble([train(make_model(data, seed=s), max_epochs=1) for s in range(n)])


def test_overwrite_larger_ensemble_with_smaller_one(paired_data, make_model, train, tmp_path):
    """Members left from the larger ensemble are saved models: replaced with the rest."""
    big = _ensemble(paired_data, make_model, train, 3)
    path = tmp_path / "ens"
    big.save(path)
    small = tm.Ensemble(big.models[:2])
    small.save(path, overwrite=True)
    assert sorted(p.name for p in path.iterdir()) == ["ensemble.json", "member0", "member1"]
    assert len(tm.Ensemble.load(path, paired_data).models) == 2
    # a member directory holding anything else is not a saved model: refused
    big.save(path, overwrite=True)
    (path / "member2" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"member2/"):
        small.save(path, overwrite=True)
    assert (path / "member2" / "notes.txt").read_text() == "mine"
    assert len(tm.Ensemble.load(path, paired_data).models) == 3
    # a saved model and a saved ensemble replace each other; another program's config.json
    # is not a model's
    one = tmp_path / "one"
    big.models[0].save(one)
    small.save(one, overwrite=True)
    assert sorted(p.name for p in one.iterdir()) == ["ensemble.json", "member0", "member1"]
    big.models[0].save(one, overwrite=True)
    assert sorted(p.name for p in one.iterdir()) == ["config.json", "model.safetensors"]
    # a model whose files are links (git-annex, DVC) is still a saved model
    store = tmp_path / "store"
    store.mkdir()
    (one / "model.safetensors").rename(store / "w")
    (one / "model.safetensors").symlink_to(store / "w")
    big.models[0].save(one, overwrite=True)
    assert not (one / "model.safetensors").is_symlink() and (store / "w").is_file()
    (one / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(FileExistsError, match=r"not part of a saved model \(config.json\)"):
        small.save(one, overwrite=True)
    assert (one / "config.json").read_text() == '{"my": "settings"}'


def test_overwrite_keeps_sibling_saved_models(trained_model, paired_data, make_model, train, tmp_path):
    """A user's other saved models inside the target are not ensemble members: refused."""
    path = tmp_path / "results"
    trained_model.save(path)
    trained_model.save(path / "model_b")
    before = _tree(path)
    with pytest.raises(FileExistsError, match=r"model_b/"):
        trained_model.save(path, overwrite=True)
    assert _tree(path) == before
    # without ensemble.json, member-named directories are not members either
    (path / "model_b").rename(path / "member0")
    with pytest.raises(FileExistsError, match=r"member0/"):
        _ensemble(paired_data, make_model, train, 2).save(path, overwrite=True)
    assert (path / "member0" / "config.json").is_file()


def _write_cli_inputs(folder):
    data = tm.datasets.synthetic(60, n_features=15, seed=0)
    for name, adata in data.items():
        adata.write_h5ad(folder / f"{name}.h5ad")
    config = {
        "data": {"rna": "rna.h5ad", "atac": "atac.h5ad"},
        "modalities": {"rna": {"likelihood": "nb"}, "atac": {"likelihood": "bernoulli"}},
        "model": {"n_latent": 2, "hidden": [8], "seed": 0},
        "train": {"max_epochs": 2, "batch_size": 32, "progress_bar": False},
        "out": ".",  # the folder holding the config and the data
    }
    (folder / "run.yaml").write_text(json.dumps(config))  # JSON is YAML
    return folder / "run.yaml"


def test_cli_train_overwrite_keeps_input_data(tmp_path, capsys):
    from transmodal.cli import main

    config = _write_cli_inputs(tmp_path)
    before = _tree(tmp_path)
    assert main(["train", "--config", str(config), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not part of a saved model" in err and "rna.h5ad" in err and "run.yaml" in err
    assert "training on" not in err  # refused before the data are read
    assert _tree(tmp_path) == before
    # an output directory of an earlier run is replaced (model and side files together)
    out = tmp_path / "out"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 0
    assert main(["train", "--config", str(config), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "history.csv", "model.safetensors", "run_config.yaml"
    ]
    assert _tree(tmp_path).keys() - {f"out/{p.name}" for p in out.iterdir()} == before.keys()
    # the resolved config names where the model went (--out, not the config's out: .)
    run = yaml.safe_load((out / "run_config.yaml").read_text())
    assert run["out"] == str(out.resolve())


# ----------------------------------------------------------------- corrupt or edited config
def _edit_config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    cfg = edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


def _drop(*keys):
    def edit(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        del d[keys[-1]]
        return cfg

    return edit


def _set(*keys, value):
    def edit(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
        return cfg

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda cfg: list(cfg), "expected a JSON object, got a JSON array"),
        (_drop("init_params"), "missing field 'init_params'"),
        (_set("format_version", value=True), "unsupported format_version True"),
        (_drop("n_vars"), "missing field 'n_vars'"),
        (_drop("var_names", "atac"), "field 'var_names' has no entry for modality 'atac'"),
        (_set("n_vars", "rna", value="40"), "field 'n_vars' must be an object of integers"),
        (_set("history", value={"loss": [1.0, 0.5]}), "'epoch' list"),
        (_set("history", "epoch", value=[0]), "differ in length"),
        (_set("init_params", "n_latent", value="four"), "init_params.n_latent must be a JSON integer"),
        (_set("init_params", "dropout", value="0.1"), "init_params.dropout must be a JSON number"),
        (_set("init_params", "n_latnt", value=4), r"unknown init_params key\(s\) \['n_latnt'\]"),
        (_drop("init_params", "seed"), r"init_params is missing key\(s\) \['seed'\]"),
        (_set("init_params", "n_latent", value=0), "n_latent must be an integer >= 1"),
        (_set("init_params", "hidden", value=[32, "x"]), "hidden must be a non-empty list"),
        (_set("modalities", "rna", "likelihod", value="nb"), r"modalities: .*likelihod"),
        (_set("label_categories", value=["type0", "type0", "type1"]), "list of distinct strings"),
        (_set("init_params", "seed", value=2**70), r"seed must be an integer in \[0, 2\*\*63\)"),
        # sizes beyond the weights are refused before anything is built (allocated)
        (_set("init_params", "n_latent", value=10**30), r"init_params.n_latent = 10+ is larger"),
        (_set("init_params", "hidden", value=[10**11]), r"init_params.hidden = 10+ is larger"),
        # sizes and options of other fields: refused, naming the field (not a traceback)
        (_set("var_names", "rna", value=[f"g{i}" for i in range(39)]),
         "modality 'rna': n_vars is 40 but var_names lists 39 features"),
        (_set("preprocessing", "rna", "normalize", value="no"),
         r"field 'preprocessing' must be an object of objects of options \['normalize'"),
        (_set("preprocessing", "rna", "n_pca", value=5 * 10**6), "field 'preprocessing'"),
        (_set("preprocessing", value=["rna"]), "field 'preprocessing'"),
        (_set("image_spacing", value=[1.0]), "field 'image_spacing' must be null or an object"),
        (_set("image_spacing", value={"rna": [0.0, -1.0]}), "lists of positive numbers"),
        (_set("image_spacing", value={"dna": [1.0, 1.0]}),
         r"field 'image_spacing' has an entry for 'dna', which is not a modality"),
        (_set("modalities", "rna", "likelihood", value=["nb"]),
         r"modalities: modality 'rna': field 'likelihood' must be a likelihood name"),
        (_set("modalities", "rna", "normalize", value="yes"), r"modalities: modality 'rna'"),
    ],
)
def test_load_rejects_edited_config(saved, paired_data, edit, message):
    _, path = saved
    _edit_config(path, edit)
    with pytest.raises(ValueError, match=message) as err:
        tm.CrossModalAE.load(path, paired_data)
    assert str(path / "config.json") in str(err.value)


def test_load_builds_no_network_before_the_saved_shapes_are_checked(saved, paired_data,
                                                                     monkeypatch):
    """An edited width that the size check lets through (a zero-sized tensor added to the
    weights made any width look like one of theirs) is refused before the networks are
    built: they are built on the meta device first (it read 1.7-3.9 GB from edited configs
    of a few kB)."""
    import torch
    from safetensors.torch import load_file, save_file

    from transmodal.model import _model

    _, path = saved
    weights = path / "model.safetensors"
    # (copies: an older safetensors maps the file it reads, which is written over below)
    tensors = {k: v.clone() for k, v in load_file(str(weights)).items()}
    tensors["module.zz"] = torch.zeros((0, 10**9))
    save_file(tensors, str(weights), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {**cfg, "weights_sha256": _sha256(weights),
                                    "init_params": {**cfg["init_params"], "hidden": [20_000]}})
    built = []
    real = _model.CrossModalModule

    def recording(*args, **kwargs):
        module = real(*args, **kwargs)
        built.append(next(module.parameters()).device.type)
        return module

    monkeypatch.setattr(_model, "CrossModalModule", recording)
    with pytest.raises(ValueError, match=r"model.safetensors does not match the architecture in "
                       r"config.json \(tensor shapes differ: .*\(20000, 8\) built"):
        tm.CrossModalAE.load(path, paired_data)
    assert built == ["meta"]
    # the unexpected tensor alone (the widths as saved) is named as such
    _edit_config(path, _set("init_params", "hidden", value=[32]))
    with pytest.raises(ValueError, match=r"unexpected \['zz'\]"):
        tm.CrossModalAE.load(path, paired_data)
    # integer weights (cast into the float parameters without a word before)
    del tensors["module.zz"]
    key = next(k for k, v in sorted(tensors.items())  # (a weight matrix)
               if k.startswith("module.") and v.ndim == 2 and v.is_floating_point())
    tensors[key] = tensors[key].to(torch.int8)
    save_file(tensors, str(weights), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {**cfg, "weights_sha256": _sha256(weights)})
    with pytest.raises(ValueError, match=f"tensor types differ: {key[len('module.'):]}: "
                       "torch.int8 saved, torch.float32 built"):
        tm.CrossModalAE.load(path, paired_data)


@pytest.mark.parametrize(("text", "match"), [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("9" * 5_000, "is not valid JSON"),
])
def test_load_names_a_config_python_cannot_parse(saved, paired_data, text, match):
    _, path = saved
    (path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        tm.CrossModalAE.load(path, paired_data)
    assert str(path / "config.json") in str(err.value)


@pytest.mark.parametrize(("column", "kept"), [
    ({"name": "gene", "kind": "string", "dtype": "S20000000"}, "object"),
    ({"name": "flag", "kind": "number", "dtype": "datetime64[ns]"}, "bool"),
    ({"name": "flag", "kind": "number", "dtype": "complex128"}, "bool"),
    # a pyarrow dtype: not numeric with pyarrow, not buildable without (a NameError before)
    ({"name": "flag", "kind": "number", "dtype": "timestamp[ns][pyarrow]"}, "bool"),
])
def test_load_keeps_var_columns_as_read_where_the_dtype_was_never_saved(
    tmp_path, make_model, train, paired_data, column, kept
):
    """A dtype name that save() never writes for a column (a bytes dtype of 20 MB per value
    allocated gigabytes; dates failed translations' writes) is not applied: the column
    keeps the dtype it is stored with. Sparse columns, which save() writes, keep theirs."""
    data = {**paired_data, "rna": paired_data["rna"].copy()}
    n = data["rna"].n_vars
    data["rna"].var["gene"] = [f"G{i}" for i in range(n)]
    data["rna"].var["flag"] = np.arange(n) % 2 == 0
    data["rna"].var["sparse"] = pd.arrays.SparseArray(np.arange(n) % 3, dtype="Sparse[int64, 0]")
    model = train(make_model(data), max_epochs=1)
    model.save(tmp_path / "m")

    def edit(cfg):
        entry = next(e for e in cfg["var"]["rna"] if e["name"] == column["name"])
        entry["dtype"] = column["dtype"]
        return cfg

    _edit_config(tmp_path / "m", edit)
    var = tm.CrossModalAE.load(tmp_path / "m").translate(
        paired_data["atac"], source="atac", target="rna").var
    assert str(var[column["name"]].dtype) == kept
    assert str(var["sparse"].dtype) == "Sparse[int64, 0]"
    # a column described twice
    model.save(tmp_path / "m", overwrite=True)
    _edit_config(tmp_path / "m", lambda cfg: {**cfg, "var": {
        **cfg["var"], "rna": cfg["var"]["rna"] + [cfg["var"]["rna"][-1]]}})
    with pytest.raises(ValueError, match="is described twice"):
        tm.CrossModalAE.load(tmp_path / "m")


def test_load_config_without_later_optional_params(saved, paired_data):
    """Parameters added after format_version 1 (n_private, geometric_pairs, ...) default."""
    model, path = saved
    optional = ("disc_noise", "disc_conditional", "variational", "n_private", "marker_key",
                "geometric_pairs", "partial_alignment")
    _edit_config(path, lambda cfg: {**cfg, "init_params": {
        k: v for k, v in cfg["init_params"].items() if k not in optional}})
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert np.array_equal(
        loaded.get_latent_representation("rna"), model.get_latent_representation("rna")
    )


def test_config_resaved_with_sorted_keys_or_a_bom_loads_as_saved(saved, paired_data):
    """A config.json re-saved by a JSON tool with its keys sorted (jq -S) keeps the order the
    networks were built in (the discriminator's classes: they were swapped, and further
    training went wrong silently); one written with a byte-order mark loads."""
    import torch

    model, path = saved
    assert model.modality_names == ["rna", "atac"]  # (sorted: atac, rna)
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(json.dumps(json.loads(text), sort_keys=True, indent=4))
    loaded = tm.CrossModalAE.load(path, paired_data)
    assert loaded.modality_names == ["rna", "atac"]
    z = torch.from_numpy(model.get_latent_representation("rna"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval().discriminate(z),
                                   model.module.eval().discriminate(z))
    (path / "config.json").write_text("\ufeff" + text, encoding="utf-8")
    assert tm.CrossModalAE.load(path, paired_data).modality_names == ["rna", "atac"]
    # an order that does not list the modalities is refused by name
    (path / "config.json").write_text(text)
    _edit_config(path, lambda cfg: {**cfg, "modality_order": ["rna", "rna2"]})
    with pytest.raises(ValueError, match=r"field 'modality_order' \['rna', 'rna2'\] does not "
                       r"list the modalities \['atac', 'rna'\]"):
        tm.CrossModalAE.load(path, paired_data)


@pytest.mark.parametrize("keep", [0, 100])
def test_load_rejects_truncated_weights(saved, paired_data, keep):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(ValueError, match="does not match the checksum recorded in config.json "
                       "when it was saved") as err:
        tm.CrossModalAE.load(path, paired_data)
    assert str(weights) in str(err.value)
    # a model file without a checksum (saved before they were recorded)
    _edit_config(path, lambda cfg: {k: v for k, v in cfg.items() if k != "weights_sha256"})
    with pytest.raises(ValueError, match="is not a readable safetensors file") as err:
        tm.CrossModalAE.load(path, paired_data)
    assert str(weights) in str(err.value)


def test_load_detects_changed_weights_and_warns_about_non_finite_ones(saved, paired_data):
    import torch
    from safetensors.torch import load_file, save_file

    model, path = saved
    weights = path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0xFF  # one byte of the data flipped: still a readable file
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="does not match the checksum"):
        tm.CrossModalAE.load(path, paired_data)
    model.save(path, overwrite=True)
    tensors = load_file(str(weights))
    key = next(k for k in tensors if k.startswith("module.") and tensors[k].is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, str(weights), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {**cfg, "weights_sha256": _sha256(weights)})
    with pytest.warns(UserWarning, match=r"1 tensor\(s\) hold NaN or infinite weights \(e.g. "
                      f"'{key}'\\); the model's outputs will not be finite"):
        tm.CrossModalAE.load(path, paired_data)


def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_save_needs_a_path(saved):
    model, _ = saved
    for bad in (None, 3, b"model"):
        with pytest.raises(TypeError, match="the directory to write must be a path"):
            model.save(bad)


def test_loading_embedding_and_translating_do_not_import_lightning(saved, paired_data, tmp_path):
    """Lightning (seconds to import) is loaded only to train: a fresh process that loads a
    model, embeds and translates never imports it."""
    import subprocess
    import sys

    _, path = saved
    paired_data["rna"].write_h5ad(tmp_path / "rna.h5ad")
    code = (
        "import sys, anndata, transmodal as tm\n"
        f"m = tm.CrossModalAE.load({str(path)!r})\n"
        f"rna = anndata.read_h5ad({str(tmp_path / 'rna.h5ad')!r})\n"
        "m.get_latent_representation('rna', rna)\n"
        "m.translate(rna, source='rna', target='atac')\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="POSIX limits")
def test_a_full_disk_while_writing_out_is_said_so(tmp_path):
    """translate(out=) onto a disk that fills up (a file-size limit): h5py's "Can't
    decrement id ref count (unable to extend file properly, errno = 27)" became an OSError
    naming the file and the likely cause; nothing is left at the path."""
    import subprocess
    import sys

    script = f"""
import resource, signal, warnings
import numpy as np, transmodal as tm
warnings.simplefilter("ignore")
d = tm.datasets.synthetic(400, n_features={{"rna": 50, "atac": 600}}, seed=0)
m = tm.CrossModalAE(d, {{"rna": "nb", "atac": "bernoulli"}}, n_latent=4, hidden=(8,),
                    anchor_fraction=1.0, seed=0)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
try:
    m.translate(d["rna"], source="rna", target="atac", out={str(tmp_path / "t.h5ad")!r},
                batch_size=32)
except OSError as err:
    print("OSError:", err)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert "OSError: writing " in out.stdout and "is the disk full, or a file-size limit " \
        "reached? (nothing was written at the path)" in out.stdout, out.stdout + out.stderr
    assert not (tmp_path / "t.h5ad").exists()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
def test_atomic_writes_follow_the_umask_without_setting_it(tmp_path, monkeypatch):
    """Saved files and directories get the modes the umask asks for; the umask is read, not
    set to 0 for a moment (a file another thread created then was world-writable)."""
    from transmodal import _utils

    old = os.umask(0o027)
    try:
        def refuse(mask):
            raise AssertionError(f"os.umask({mask:o}) called")

        monkeypatch.setattr(_utils.os, "umask", refuse)
        with _utils.atomic_file(tmp_path / "f.json") as tmp:
            tmp.write_text("{}")
        with _utils.atomic_directory(tmp_path / "d", overwrite=False) as tmp:
            (tmp / "config.json").write_text("{}")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "d" / "config.json").stat().st_mode & 0o777 == 0o640


def test_atomic_directory_restores_the_old_directory_if_the_swap_fails(tmp_path, monkeypatch):
    from transmodal import _utils

    target = tmp_path / "out"
    target.mkdir()
    old = json.dumps({"class": "CrossModalAE", "format_version": 1, "old": True})
    (target / "config.json").write_text(old)  # (only a model's config.json is replaced)
    real_replace, calls = os.replace, []

    def flaky(src, dst):  # the second rename (new directory into place) fails
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(_utils, "_exchange", lambda a, b: False)  # (a system without it)
    monkeypatch.setattr(_utils.os, "replace", flaky)
    with pytest.raises(OSError, match="disk gone"):
        with _utils.atomic_directory(target, overwrite=True) as tmp:
            (tmp / "config.json").write_text("new")
    assert (target / "config.json").read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left behind
    monkeypatch.setattr(_utils.os, "replace", real_replace)
    with _utils.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_atomic_directory_looks_again_at_what_was_written_there_meanwhile(
    tmp_path, monkeypatch, overwrite
):
    """Two writers of one new path (two threads saving models there): the one that finds
    the other's directory when it is about to put its own in place does not replace it
    unseen - without overwrite it raises FileExistsError (both had reported success, one
    model lost), with overwrite only a directory of what may be replaced goes."""
    from transmodal import _utils

    target = tmp_path / "m"
    real_sync = _utils._sync
    other = {"config.json": json.dumps({"class": "CrossModalAE", "format_version": 1}),
             "notes.txt": "not a model's"}

    def sync_then_another_writer(path):  # the other writer finishes while this one syncs
        real_sync(path)
        target.mkdir()
        for name, text in other.items():
            (target / name).write_text(text)

    monkeypatch.setattr(_utils, "_sync", sync_then_another_writer)
    with pytest.raises(FileExistsError):
        with _utils.atomic_directory(target, overwrite=overwrite) as tmp:
            (tmp / "config.json").write_text("new")
    assert {p.name: p.read_text() for p in target.iterdir()} == other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing left behind


def test_atomic_directory_swaps_old_and_new_in_one_step(tmp_path, monkeypatch):
    """Where the system can exchange two directories atomically, an existing one is replaced
    without a moment in which neither is at the path (no two renames)."""
    from transmodal import _utils

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a")
    if not _utils._exchange(a, b):
        pytest.skip("this system or file system cannot exchange directories atomically")
    assert (b / "x").read_text() == "a" and not (a / "x").exists()
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text(json.dumps({"class": "CrossModalAE", "format_version": 1}))

    def no_rename(src, dst):
        raise AssertionError("renamed instead of exchanged")

    monkeypatch.setattr(_utils.os, "replace", no_rename)
    with _utils.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "config.json").write_text("new")
    assert (target / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]  # old one removed


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.pop("validation.atac"), r"validation.atac is missing"),
        (lambda t: t.update({"validation.rna": t["validation.rna"][:5]}), r"validation.rna"),
        # (a float mask read as bool made every cell a validation cell)
        (lambda t: t.update({"validation.rna": t["validation.rna"].float() + 0.5}),
         r"validation.rna .* one 0 / 1 \(uint8\) value per cell"),
        (lambda t: t.pop("anchors.rna|atac.b"), r"anchors.rna\|atac.b: missing"),
        (lambda t: t.update({"anchors.rna|atac.a": t["anchors.rna|atac.a"] + 10**6}),
         r"rows outside modality 'rna'"),
        (lambda t: t.update({"anchors.rna|atac.a": t["anchors.rna|atac.a"][:3]}), r"differ in length"),
    ],
)
def test_load_rejects_damaged_pair_and_mask_tensors(saved, paired_data, edit, match):
    from safetensors.torch import load_file, save_file

    _, path = saved
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "transmodal"})
    _edit_config(path, lambda cfg: {**cfg, "weights_sha256": _sha256(path / "model.safetensors")})
    with pytest.raises(ValueError, match=match) as info:
        tm.CrossModalAE.load(path, paired_data)
    assert "model.safetensors" in str(info.value)


def test_feature_annotations_survive_a_load_without_data(tmp_path, make_model, train, paired_data):
    """Translations of a model loaded without the target's data keep its ``var`` columns,
    with their dtypes (nullable ones too), categories and category order; other objects
    are not saved; the result stays writable."""
    atac = paired_data["atac"]
    n = atac.n_vars
    var = atac.var
    var["symbol"] = [f"S{i}" for i in range(n)]
    var["highly_variable"] = np.arange(n) % 2 == 0
    var["mean"] = np.linspace(0.0, 1.0, n).astype(np.float32)
    var.loc[var.index[3], "mean"] = np.nan
    var["all_nan"] = np.nan
    var["start"] = np.arange(n, dtype=np.int32) * 1000
    var["count"] = pd.array([1, None] * (n // 2) + [2] * (n % 2), dtype="Int64")
    var["chrom"] = pd.Categorical(["chr1", "chr2", None] * (n // 3) + ["chr1"] * (n % 3))
    var["level"] = pd.Categorical(["low", "high"] * (n // 2) + ["low"] * (n % 2),
                                  categories=["low", "mid", "high"], ordered=True)
    var["cluster"] = pd.Categorical(np.arange(n) % 3)
    var["obj"] = [object()] * n
    var.index.name = "peak_id"  # (its name too, in memory and loaded)
    model = make_model(paired_data)
    train(model)
    assert model.translate(paired_data["rna"][:5], source="rna",
                           target="atac").var.index.name == "peak_id"
    model.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    saved = [c["name"] for c in cfg["var"]["atac"]]
    assert "obj" not in saved and "rna" not in cfg["var"]  # rna: no columns
    # columns whose names repeat (as strings) cannot be told apart: left out, the rest saved
    twice = paired_data["rna"].copy()
    twice.var[0] = 1.0
    twice.var["0"] = "x"
    twice.var["kept"] = 2
    model2 = make_model({"rna": twice, "atac": atac})
    model2.save(tmp_path / "m2")
    cfg2 = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert [c["name"] for c in cfg2["var"]["rna"]] == ["kept"]
    from transmodal.model._var import encode_var  # big-endian numbers: stored natively

    meta, tensors = encode_var(pd.DataFrame({"x": np.arange(3, dtype=">f8")}), "v")
    assert meta[0]["kind"] == "number" and tensors["v.0"].tolist() == [0.0, 1.0, 2.0]
    with warnings.catch_warnings():  # NaN in a var column is a missing value, not a weight
        warnings.filterwarnings("error", message=".*NaN or infinite weights")
        alone = tm.CrossModalAE.load(tmp_path / "m")
    got = alone.translate(paired_data["rna"], source="rna", target="atac",
                          out=tmp_path / "t.h5ad")
    pd.testing.assert_frame_equal(got.var, var.drop(columns="obj"), check_index_type=False)
    cfg["var"]["atac"][saved.index("symbol")]["values"] = ["S0"]  # hand-edited
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"var\['atac'\]\[\d+\] \(column 'symbol'\).*list 'values'"):
        tm.CrossModalAE.load(tmp_path / "m")
    cfg["var"] = ["not an object"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="field 'var' must be an object of lists"):
        tm.CrossModalAE.load(tmp_path / "m")


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoints_resume_a_stopped_training(paired_data, make_model, train, tmp_path,
                                               monkeypatch):
    """train(checkpoint_dir=, checkpoint_every=) saves the model (its own format) every N
    epochs, on Ctrl+C and at the end; resume_training goes on from the last checkpoint for
    the epochs left, also from a resumed run that stopped again (the README's first
    recipe, epochs_run, over-trained then)."""
    from transmodal.train._callbacks import SaveEvery

    ckpt = tmp_path / "ckpt"
    whole = train(make_model(paired_data, labels_key="label", anchor_fraction=0.5, seed=0),
                  max_epochs=10, early_stopping=False)
    real = SaveEvery.on_train_epoch_end

    class Lost(Exception):
        """The machine is gone (nothing after it runs)."""

    def lost_after(n):
        def hook(self, trainer, plan):
            real(self, trainer, plan)
            if len(plan.history_rows) == n:
                raise Lost
        return hook

    model = make_model(paired_data, labels_key="label", anchor_fraction=0.5, seed=0)
    model.mixing_accuracy_ = model.disc_accuracy_ = 0.5  # (as if measured by an earlier call)
    with monkeypatch.context() as mp:
        mp.setattr(SaveEvery, "on_train_epoch_end", lost_after(5))
        with pytest.raises(Lost):
            train(model, max_epochs=10, early_stopping=False, checkpoint_dir=ckpt,
                  checkpoint_every=2)
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]
    saved = tm.CrossModalAE.load(ckpt, paired_data)
    assert list(saved.history.index) == [0, 1, 2, 3] and not saved.train_params_["finished"]
    assert saved.mixing_accuracy_ is None and saved.disc_accuracy_ is None  # (not its weights')
    np.testing.assert_allclose(saved.history.to_numpy(), whole.history.iloc[:4].to_numpy(),
                               rtol=1e-6)
    # its latent statistics are set as at the end of a training (loaded as it is, it embeds
    # as a finished model does), and checkpoints leave the training as it was
    z = saved.get_latent_representation("rna")
    saved._recalibrate_latent_norm(frozen=None, batch_size=saved.train_params_["batch_size"],
                                   device="cpu", seed=saved.train_params_["seed"])
    np.testing.assert_allclose(saved.get_latent_representation("rna"), z, atol=1e-5)
    kept = train(make_model(paired_data, labels_key="label", anchor_fraction=0.5, seed=0),
                 max_epochs=10, early_stopping=False, checkpoint_dir=tmp_path / "kept",
                 checkpoint_every=2)
    np.testing.assert_allclose(kept.history.to_numpy(), whole.history.to_numpy(), rtol=1e-6)
    with monkeypatch.context() as mp:  # resumed, and lost again
        mp.setattr(SaveEvery, "on_train_epoch_end", lost_after(3))
        with pytest.raises(Lost):
            tm.workflows.resume_training(ckpt, paired_data, progress_bar=False)
    assert len(tm.CrossModalAE.load(ckpt, paired_data).history) == 6
    resumed = tm.workflows.resume_training(ckpt, paired_data, progress_bar=False)
    assert list(resumed.history.index) == list(range(10))  # ten in all, numbered on
    assert resumed.train_params_["finished"] and resumed.train_params_["adv_warmup_epochs"] == 0
    # at the end the checkpoint is the trained model itself, and there is nothing to resume
    final = tm.CrossModalAE.load(ckpt, paired_data)
    np.testing.assert_array_equal(final.get_latent_representation("rna"),
                                  resumed.get_latent_representation("rna"))
    with pytest.warns(UserWarning, match=r"the training ended \(10 epochs\); nothing to resume"):
        tm.workflows.resume_training(ckpt, paired_data)
    with pytest.warns(UserWarning, match="nothing to resume"):  # (the target given again)
        tm.workflows.resume_training(ckpt, paired_data, max_epochs=10)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) of train\(\): \['n_epochs'\]; "
                       r"n_epochs: the number of epochs is max_epochs="):
        tm.workflows.resume_training(ckpt, paired_data, n_epochs=3)
    with pytest.raises(TypeError, match=r"ckpt_dir: the checkpoint is resume_training's first "
                       r"argument"):  # (not checkpoint_dir=, which it sets itself)
        tm.workflows.resume_training(ckpt, paired_data, ckpt_dir=ckpt)
    with pytest.raises(TypeError, match=r"^resume_training\(\): missing a required argument: "
                       r"'checkpoint_dir'; the checkpoint is its first argument"):
        tm.workflows.resume_training(checkpoint=ckpt, data=paired_data)
    with pytest.raises(TypeError, match=r"^resume_training\(\): multiple values for argument "
                       r"'checkpoint_dir'; the checkpoint is its first argument"):
        tm.workflows.resume_training(paired_data, checkpoint_dir=ckpt)  # (the data first)
    # a modality without cells (left out, or given as None) is named: training needs it
    with pytest.raises(ValueError, match=r"the data lack modality 'atac' .*which training needs"):
        tm.workflows.resume_training(ckpt, {"rna": paired_data["rna"], "atac": None})
    # more epochs than the target: goes on; a new lr takes lr_disc along (it followed lr)
    # (said so: the record lists the new settings alone)
    with pytest.warns(UserWarning, match=r"the epochs left train with other settings than the "
                      r"10 done \(lr .* -> 0.0001\); the model's train_params_ will list"):
        more = tm.workflows.resume_training(ckpt, paired_data, max_epochs=11, lr=1e-4,
                                            progress_bar=False)
    assert len(more.history) == 11 and more.train_params_["lr_disc"] == 1e-4
    with pytest.warns(UserWarning, match=r"max_epochs=5 is below the 11 epochs done; the "
                      r"training is finished as it stands"):
        tm.workflows.resume_training(ckpt, paired_data, max_epochs=5, progress_bar=False)
    # a model saved by save() is no checkpoint
    whole.save(tmp_path / "saved")
    with pytest.raises(ValueError, match="holds a saved model, not a checkpoint"):
        tm.workflows.resume_training(tmp_path / "saved", paired_data)
    # Ctrl+C (or SIGTERM) saves the epochs done at once
    from transmodal.train._plan import CrossModalPlan

    plan_end = CrossModalPlan.on_train_epoch_end

    def interrupted(self):
        plan_end(self)
        if len(self.history_rows) == 3:
            raise KeyboardInterrupt

    other = tmp_path / "other"
    stopped = make_model(paired_data, seed=1)
    stopped.mixing_accuracy_ = 0.5  # (as if measured by an earlier call)
    with monkeypatch.context() as mp:
        mp.setattr(CrossModalPlan, "on_train_epoch_end", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(stopped, max_epochs=10, checkpoint_dir=other)
    last = tm.CrossModalAE.load(other, paired_data)
    assert len(last.history) == 3  # (none at 10 epochs)
    # the checkpoint is the model the user holds (latent statistics set after the stop);
    # the separability of earlier weights is not kept
    np.testing.assert_array_equal(last.get_latent_representation("rna"),
                                  stopped.get_latent_representation("rna"))
    assert stopped.mixing_accuracy_ is None and stopped.disc_accuracy_ is None
    # other cells are refused, without load()'s warning that their pairs are dropped for a
    # further training (none follows)
    subset = {k: a[:40].copy() for k, a in paired_data.items()}
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not the cells its training ran on"):
            tm.workflows.resume_training(ckpt, subset)
    assert not any("are dropped" in str(w.message) for w in told)
    # ... as are other values under the training cells' names (another draw of a simulator)
    redrawn = {k: a.copy() for k, a in paired_data.items()}
    redrawn["atac"].X = redrawn["atac"].X[::-1].copy()
    with pytest.raises(ValueError, match=r"not the cells its training ran on \(other cells, a "
                       r"subset of them, or other values under their names\)"):
        tm.workflows.resume_training(ckpt, redrawn)


def test_a_checkpoint_that_cannot_be_written_does_not_end_the_training(
        paired_data, make_model, train, tmp_path, monkeypatch):
    """Before each checkpoint the directory is checked again: another run's checkpoint
    written there meanwhile (two jobs sharing checkpoint_dir) is left alone, with a
    warning, as is a directory that can no longer be written; the training goes on
    without checkpoints (it overwrote the other run's, or ended with the error)."""
    from transmodal.model import _training

    ckpt = tmp_path / "ckpt"
    other = train(make_model(paired_data, seed=1), max_epochs=3)
    real = _training.TrainingMixin._save_checkpoint
    calls = []

    def meanwhile(self, path, rows, *a, **k):
        real(self, path, rows, *a, **k)
        calls.append(len(rows))
        if len(rows) == 1:  # the other job writes its checkpoint there
            other.save(path, overwrite=True)

    monkeypatch.setattr(_training.TrainingMixin, "_save_checkpoint", meanwhile)
    with pytest.warns(UserWarning, match=r"after epoch 2 could not be written \(checkpoint_dir "
                      r".* now holds a saved model \(3 epochs\) of another training \(another "
                      r"run writing there.*which is kept\); the training goes on without "
                      "checkpoints") as record:
        model = train(make_model(paired_data, seed=0), max_epochs=4, early_stopping=False,
                      checkpoint_dir=ckpt, checkpoint_every=1)
    assert len(model.history) == 4 and calls == [1]
    # said once: the last checkpoint, at the end, is not tried (checkpoints have ended)
    assert sum("could not be written" in str(w.message) for w in record) == 1
    kept = tm.CrossModalAE.load(ckpt)
    assert kept.init_params_["seed"] == 1 and len(kept.history) == 3
    # a directory that cannot be written any more
    monkeypatch.setattr(_training.TrainingMixin, "_save_checkpoint", real)

    def unwritable(*a, **k):
        raise PermissionError("cannot write there")

    with monkeypatch.context() as mp:
        mp.setattr("transmodal.model._io.save_model", unwritable)
        with pytest.warns(UserWarning, match="after epoch 1 could not be written") as record:
            model = train(make_model(paired_data, seed=2), max_epochs=3, early_stopping=False,
                          checkpoint_dir=tmp_path / "c2", checkpoint_every=1)
    assert len(model.history) == 3
    # the periodic checkpoints end; the last one is tried again at the end (and fails here)
    assert [str(w.message).split(" could not")[0] for w in record
            if "could not be written" in str(w.message)] == [
        "the checkpoint after epoch 1", "the final checkpoint"]
    # a failure that passes (a full disk freed): the last checkpoint is written at the end
    failures = []

    def once(*a, **k):
        if not failures:
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real_save(*a, **k)

    from transmodal.model import _io

    real_save = _io.save_model
    with monkeypatch.context() as mp:
        mp.setattr("transmodal.model._io.save_model", once)
        with pytest.warns(UserWarning, match="without periodic checkpoints"):
            model = train(make_model(paired_data, seed=2), max_epochs=3, early_stopping=False,
                          checkpoint_dir=tmp_path / "c4", checkpoint_every=1)
    assert len(tm.CrossModalAE.load(tmp_path / "c4").history) == 3
    # a final checkpoint that cannot be written is told as such
    with monkeypatch.context() as mp:
        mp.setattr("transmodal.model._io.save_model", unwritable)
        with pytest.warns(UserWarning, match="the final checkpoint could not be written to"):
            train(make_model(paired_data, seed=2), max_epochs=2, early_stopping=False,
                  checkpoint_dir=tmp_path / "c3", checkpoint_every=5)


def test_checkpoint_dir_holding_another_training_is_refused(paired_data, make_model, train,
                                                            tmp_path):
    """A new model's first checkpoint would replace another run's (a job submitted again),
    a model or an ensemble saved there: refused before training."""
    ckpt = tmp_path / "ckpt"
    train(make_model(paired_data, seed=0), max_epochs=2, checkpoint_dir=ckpt)
    fresh = make_model(paired_data, seed=0)
    with pytest.raises(FileExistsError, match=r"holds a saved model \(2 epochs\) whose training "
                       r"this one does not continue .*resume_training"):
        fresh.train(max_epochs=1, checkpoint_dir=ckpt, progress_bar=False)
    assert fresh.history is None
    # the model whose checkpoint it is goes on writing there
    own = tm.CrossModalAE.load(ckpt, paired_data)
    train(own, max_epochs=1, checkpoint_dir=ckpt)
    assert len(tm.CrossModalAE.load(ckpt, paired_data).history) == 3
    ensemble = tmp_path / "ens"
    tm.Ensemble([own, train(make_model(paired_data, seed=1), max_epochs=1)]).save(ensemble)
    with pytest.raises(FileExistsError, match="holds a saved ensemble"):
        train(own, max_epochs=1, checkpoint_dir=ensemble)


def test_a_checkpoint_taken_while_the_anchor_pre_trains_says_so(paired_data, make_model, train,
                                                                tmp_path, monkeypatch):
    from transmodal.train._plan import CrossModalPlan

    plan_end = CrossModalPlan.on_train_epoch_end

    def interrupted(self):
        plan_end(self)
        raise KeyboardInterrupt

    model = make_model(paired_data, prior="anchor:rna", anchor_fraction=0.5, seed=0)
    with monkeypatch.context() as mp:
        mp.setattr(CrossModalPlan, "on_train_epoch_end", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(model, max_epochs=8, pretrain_epochs=3, adv_warmup_epochs=2,
                  checkpoint_dir=tmp_path / "c")
    saved = tm.CrossModalAE.load(tmp_path / "c", paired_data)
    assert saved.train_params_["pretrain_left"] == 2
    with pytest.warns(UserWarning, match=r"stopped while it pre-trained the anchor modality "
                      r"'rna' \(2 epoch\(s\) left\): the other modalities' networks are untrained"):
        saved.get_latent_representation("atac")
    resumed = tm.workflows.resume_training(tmp_path / "c", paired_data, progress_bar=False)
    assert len(resumed.history) == 8 and resumed.train_params_["pretrain_left"] == 0
    # the 2 pre-training epochs left, then the warm-up over 2 epochs (it starts once the
    # pre-training is over, not 4): the adversarial weight reaches lam_adv at epoch 4 of 8
    p = resumed.train_params_
    assert (p["pretrain_epochs"], p["adv_warmup_epochs"]) == (2, 2)
    np.testing.assert_allclose(resumed.history["lam_adv_effective"].to_numpy(),
                               [0, 0, 0, 0.5, 1, 1, 1, 1])


def test_checkpoint_options_are_checked_before_training(trained_model, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
        trained_model.train(max_epochs=1, checkpoint_dir=tmp_path / "c", checkpoint_every=0)
    taken = tmp_path / "project"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    epochs = len(trained_model.history)
    with pytest.raises(FileExistsError, match="holds files that are not part of a saved model"):
        trained_model.train(max_epochs=1, checkpoint_dir=taken, progress_bar=False)
    assert len(trained_model.history) == epochs  # nothing trained
    with pytest.raises(TypeError, match="checkpointing.*checkpoint_dir="):
        trained_model.train(max_epochs=1, enable_checkpointing=True)
    with pytest.warns(UserWarning, match="checkpoint_every=5 has no effect: no checkpoint_dir"):
        trained_model.train(max_epochs=1, checkpoint_every=5, progress_bar=False)


def test_saved_feature_annotations_follow_the_model_features(paired_data, make_model, train,
                                                            tmp_path):
    """save() writes the target's var for the model's own features: an AnnData whose
    features were reordered in place since keeps each annotation with its feature; one
    whose features were filtered in place (sc.pp.filter_genes) saves none, with a warning
    (it wrote a var of other length, and the model could not be loaded without data)."""
    atac = paired_data["atac"]
    atac.var["peak_id"] = [f"id_{v}" for v in atac.var_names]
    model = train(make_model(paired_data, seed=0), max_epochs=1)
    atac._inplace_subset_var(np.arange(atac.n_vars)[::-1])  # reordered in place
    model.save(tmp_path / "reordered")
    alone = tm.CrossModalAE.load(tmp_path / "reordered")
    for got in (alone.translate(paired_data["rna"][:3].copy(), source="rna", target="atac"),
                model.translate(paired_data["rna"][:3].copy(), source="rna", target="atac")):
        assert list(got.var["peak_id"]) == [f"id_{v}" for v in got.var_names]
    keep = np.ones(atac.n_vars, dtype=bool)
    keep[:5] = False
    atac._inplace_subset_var(keep)  # filtered in place
    with pytest.warns(UserWarning, match="modality 'atac': its AnnData's var no longer lists"):
        model.save(tmp_path / "filtered")
    alone = tm.CrossModalAE.load(tmp_path / "filtered")
    got = alone.translate(paired_data["rna"][:3].copy(), source="rna", target="atac")
    assert got.n_vars == alone.mods["atac"].source.n_vars and "peak_id" not in got.var


def test_a_model_replaced_while_being_read_is_not_mixed(trained_model, paired_data,
                                                         make_model, train, tmp_path,
                                                         monkeypatch):
    """Another process saving a model over the one being loaded, between the weights'
    checksum and their reading, gave one model's config with the other's weights,
    silently: the weights file must be the one checked."""
    from transmodal.model import _io

    other = train(make_model(paired_data, seed=5), max_epochs=1)
    path = tmp_path / "m"
    trained_model.save(path)
    real = _io._sha256

    def then_saved_over(where):
        digest = real(where)
        monkeypatch.setattr(_io, "_sha256", real)
        other.save(path, overwrite=True)  # (the other process)
        return digest

    monkeypatch.setattr(_io, "_sha256", then_saved_over)
    with pytest.raises(ValueError, match="was replaced while being read.*load it again"):
        tm.CrossModalAE.load(path)
    assert tm.CrossModalAE.load(path).init_params_["seed"] == 5  # (whole: the other one)



def test_writes_without_overwrite_never_replace_what_another_process_wrote(
        tmp_path, trained_model):
    """overwrite=False holds until the write is committed: a file or directory that
    appeared meanwhile (another process writing the same output) is not replaced (both
    writers reported success, one output silently lost)."""
    from transmodal._utils import atomic_directory, atomic_file

    target = tmp_path / "out.txt"
    with pytest.raises(FileExistsError, match="was written while this was"):
        with atomic_file(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")  # (the other process)
    assert target.read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_file(tmp_path / "new.txt") as tmp:  # (nothing there: written)
        tmp.write_text("mine")
    assert (tmp_path / "new.txt").read_text() == "mine"
    folder = tmp_path / "model"
    with pytest.raises(FileExistsError, match="exists"):
        with atomic_directory(folder, overwrite=False) as tmp:
            (tmp / "a.txt").write_text("mine")
            trained_model.save(folder)  # (the other process)
    assert tm.CrossModalAE.load(folder).init_params_ == trained_model.init_params_
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new.txt", "out.txt"]
    # a link to a file not written yet is replaced by the file, as before
    (tmp_path / "link.txt").symlink_to(tmp_path / "elsewhere.txt")
    with atomic_file(tmp_path / "link.txt") as tmp:
        tmp.write_text("mine")
    assert not (tmp_path / "link.txt").is_symlink()
    assert (tmp_path / "link.txt").read_text() == "mine"
    (tmp_path / "link.txt").unlink()
    # the last step itself: a directory created between the check and the rename
    from transmodal._utils import _rename_new

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("mine")
    for theirs in ("model", "new.txt"):  # (a directory, a file)
        with pytest.raises(FileExistsError, match="was created while this was written"):
            _rename_new(tmp_path / "a", tmp_path / theirs)
    assert (tmp_path / "new.txt").read_text() == "mine" and (tmp_path / "a" / "x").exists()


def test_leftover_temporaries_of_other_processes_are_not_signalled_on_windows(
    tmp_path, monkeypatch
):
    """Before writing, temporaries left beside the target by killed processes are removed,
    a process counted as alive by os.kill(pid, 0); on Windows os.kill terminates the process
    whatever the signal, so there no process is signalled and leftovers are left alone."""
    from transmodal import _utils

    target = tmp_path / "m.h5ad"
    leftover = tmp_path / f".m.h5ad.{_utils._host()}-4194000-x"
    leftover.write_text("half written")
    calls = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: calls.append((pid, sig)))
    monkeypatch.setattr(os, "name", "nt")
    _utils._remove_stale_temporaries(target)
    monkeypatch.undo()
    assert calls == [] and leftover.exists()
    _utils._remove_stale_temporaries(target)  # (no such process here: removed)
    assert not leftover.exists()


def test_peak_rss_where_the_platform_has_no_resource_module(monkeypatch):
    """tm.workflows imports without the POSIX-only ``resource`` module (Windows); the peak
    RSS of the benchmarks is then NaN."""
    import sys

    from transmodal.workflows._demo import peak_rss_mib

    assert peak_rss_mib() > 0
    monkeypatch.setitem(sys.modules, "resource", None)
    assert np.isnan(peak_rss_mib())
