"""Saving and loading models: safetensors + JSON, atomic writes, data re-validation."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open

import transmodal as tm
from transmodal.model import _io

from conftest import make_data


@pytest.fixture
def saved(trained_model, tmp_path):
    path = tmp_path / "model"
    trained_model.save(path)
    return trained_model, path


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
    # state dicts agree exactly (buffers included: preprocessing, batch-norm statistics)
    sa, sb = model.module.state_dict(), loaded.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(sa[k].equal(sb[k]) for k in sa)


def test_loaded_model_can_continue_training(saved, paired_data, train):
    _, path = saved
    loaded = tm.CrossModalAE.load(path, paired_data)
    train(loaded, max_epochs=1)
    assert len(loaded.history) == 3


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
    with pytest.raises(ValueError, match="'rna'"):
        tm.CrossModalAE.load(path, paired_data)


def test_load_with_missing_modality(saved, paired_data):
    _, path = saved
    with pytest.raises(ValueError, match="'atac'"):
        tm.CrossModalAE.load(path, {"rna": paired_data["rna"]})


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


def test_save_onto_a_file_raises(trained_model, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        trained_model.save(target, overwrite=True)
    assert target.read_text() == "x"


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
