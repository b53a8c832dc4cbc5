"""tm.tl.integrate: the scanpy-style call that trains and writes the embeddings into the data."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import mudata
import numpy as np
import pytest

import transmodal as tm

SPECS = {"rna": "nb", "atac": "bernoulli"}
FAST = dict(
    max_epochs=2,
    model_kwargs={"n_latent": 4, "hidden": [16], "geometric_pairs": False},
    train_kwargs={"progress_bar": False, "batch_size": 64},
)


@pytest.fixture(scope="module")
def partly_paired():
    return tm.datasets.synthetic(
        160, n_features={"rna": 20, "atac": 24}, paired=0.5, seed=0, return_mudata=True
    )


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_integrate_writes_mudata_in_place_and_saves_the_model(partly_paired, tmp_path):
    mdata = partly_paired.copy()
    assert tm.tl.integrate(mdata, SPECS, model_dir=tmp_path / "run", **FAST) is None

    latents = {}
    for name in SPECS:
        mod = mdata[name]
        z = mod.obsm["X_transmodal"]
        assert z.shape == (mod.n_obs, 4) and z.dtype == np.float32
        assert mod.uns["transmodal"]["modality"] == name
        latents[name] = z
    joint = mdata.obsm["X_transmodal"]
    assert joint.shape == (mdata.n_obs, 4) and np.isfinite(joint).all()
    # a paired cell's joint embedding is the mean of its two modalities' latents,
    # a cell measured once is its only latent
    rows = {n: mdata.obs_names.get_indexer(mdata[n].obs_names) for n in SPECS}
    both = np.intersect1d(rows["rna"], rows["atac"])
    only_rna = np.setdiff1d(rows["rna"], rows["atac"])
    assert len(both) and len(only_rna)
    pos = {n: {g: i for i, g in enumerate(r)} for n, r in rows.items()}
    g = both[0]
    expected = (latents["rna"][pos["rna"][g]] + latents["atac"][pos["atac"][g]]) / 2
    np.testing.assert_allclose(joint[g], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(joint[only_rna[0]], latents["rna"][pos["rna"][only_rna[0]]], rtol=1e-6)

    params = mdata.uns["transmodal"]["params"]
    assert params["n_latent"] == 4 and params["train"]["max_epochs"] == 2
    assert params["modalities"]["rna"]["likelihood"] == "nb"
    assert params["model_dir"] == str(tmp_path / "run")
    # the results are plain data: the MuData round-trips through .h5mu
    mdata.write(tmp_path / "out.h5mu")
    back = mudata.read_h5mu(tmp_path / "out.h5mu")
    np.testing.assert_array_equal(back.obsm["X_transmodal"], joint)
    assert int(back.uns["transmodal"]["params"]["n_latent"]) == 4
    # the modalities' order, part of the setting, survives the file's sorted keys
    assert list(params["modality_order"]) == list(SPECS)
    assert list(back.uns["transmodal"]["params"]["modality_order"]) == list(SPECS)
    # the saved model embeds the cells exactly as written
    model = tm.CrossModalAE.load(tmp_path / "run", mdata)
    np.testing.assert_allclose(model.get_latent_representation("atac"), latents["atac"], atol=1e-6)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_integrate_copy_leaves_the_input_untouched(partly_paired):
    data = {n: partly_paired[n].copy() for n in SPECS}
    out = tm.tl.integrate(data, SPECS, copy=True, key_added="tm", **FAST)
    assert all("X_tm" not in a.obsm and "tm" not in a.uns for a in data.values())
    assert set(out) == set(SPECS)
    assert out["rna"].obsm["X_tm"].shape == (data["rna"].n_obs, 4)
    assert out["atac"].uns["tm"]["params"]["seed"] == 0
    # same seed, same result
    again = tm.tl.integrate(data, SPECS, copy=True, key_added="tm", **FAST)
    np.testing.assert_array_equal(again["rna"].obsm["X_tm"], out["rna"].obsm["X_tm"])
    # a MuData copied: without mudata 0.3's notice of its update defaults
    mdata = mudata.MuData(data)  # (whose own construction gives the notice)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        copied = tm.tl.integrate(mdata, SPECS, copy=True, **FAST)
    assert "X_transmodal" in copied.obsm
    assert not [w for w in record if "pull_on_update" in str(w.message)]


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_joint_embedding_is_nan_for_cells_outside_the_embedded_modalities():
    rng = np.random.default_rng(0)
    mods = {
        "a": ad.AnnData(rng.random((3, 2)), obs={"i": range(3)}),
        "b": ad.AnnData(rng.random((2, 2)), obs={"i": range(2)}),
    }
    mods["a"].obs_names = ["c0", "c1", "c2"]
    mods["b"].obs_names = ["c2", "c3"]
    mdata = mudata.MuData(mods)
    z = tm.tl.joint_embedding(mdata, {"a": np.ones((3, 2), dtype=np.float32)})
    row = {name: i for i, name in enumerate(mdata.obs_names)}
    assert np.isnan(z[row["c3"]]).all()
    np.testing.assert_array_equal(z[row["c2"]], [1.0, 1.0])


def test_joint_embedding_checks_its_inputs(partly_paired):
    n_rna = partly_paired["rna"].n_obs
    cases = [
        (dict(partly_paired.mod), {"rna": np.ones((n_rna, 3))}, "must be a MuData"),
        (partly_paired, {}, "non-empty"),
        (partly_paired, {"protein": np.ones((n_rna, 3))}, "'protein' is not a modality"),
        (partly_paired, {"rna": np.ones((3, 2))}, r"latents\['rna'\] has shape \(3, 2\)"),
        (partly_paired, {"rna": np.ones((n_rna, 2)),
                         "atac": np.ones((partly_paired["atac"].n_obs, 3))}, "differ in width"),
    ]
    for data, latents, match in cases:
        with pytest.raises(ValueError, match=match):
            tm.tl.joint_embedding(data, latents)


def test_integrate_backed_inputs_fail_before_training(tmp_path):
    data = tm.datasets.synthetic(60, n_features=10, seed=0)
    for name, adata in data.items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    lazy = {n: tm.datasets.read_backed(tmp_path / f"{n}.h5ad") for n in data}
    with pytest.raises(ValueError, match="copy=True needs data in memory"):
        tm.tl.integrate(lazy, SPECS, copy=True, **FAST)
    backed = {n: ad.read_h5ad(tmp_path / f"{n}.h5ad", backed="r") for n in data}
    views = {n: a[:30] for n, a in backed.items()}
    with pytest.raises(ValueError, match="modality 'rna' is a view of a backed AnnData"):
        tm.tl.integrate(views, SPECS, **FAST)


def test_integrate_rejects_bad_arguments_by_name(partly_paired, tmp_path):
    data = {n: partly_paired[n] for n in SPECS}
    with pytest.raises(ValueError, match="key_added must be a non-empty string"):
        tm.tl.integrate(data, SPECS, key_added="")
    with pytest.raises(ValueError, match=r"pass 'seed' as integrate\(seed=...\)"):
        tm.tl.integrate(data, SPECS, model_kwargs={"seed": 3})
    with pytest.raises(ValueError, match="model_kwargs: unknown argument 'n_latnet'"):
        tm.tl.integrate(data, SPECS, model_kwargs={"n_latnet": 3})
    with pytest.raises(ValueError, match=r"train_kwargs: unknown argument 'epochs' \(the number "
                                         r"of epochs is integrate\(max_epochs=\)\)"):
        tm.tl.integrate(data, SPECS, train_kwargs={"epochs": 3})
    # the device, the epochs and the seed are integrate's own arguments: hints name them so
    for where, kw, said in (
            ("model_kwargs", {"device": "cuda"}, "the device is integrate(accelerator=)"),
            ("train_kwargs", {"use_gpu": True}, "the device is integrate(accelerator=)"),
            ("train_kwargs", {"n_epochs": 3}, "the number of epochs is integrate(max_epochs=)"),
            ("model_kwargs", {"seeds": 3}, "did you mean integrate(seed=)?")):
        with pytest.raises(ValueError, match=rf"{where}: unknown argument '{next(iter(kw))}' "
                           rf"\({re.escape(said)}"):
            tm.tl.integrate(data, SPECS, **{where: kw})
    # an argument of the model in train_kwargs, of train() in model_kwargs: where it goes
    for where, kw, said in (("model_kwargs", {"lr": 1e-3}, "an argument of train(): pass it in "
                             "train_kwargs"),
                            ("train_kwargs", {"n_latent": 8}, "an argument of the model: pass "
                             "it in model_kwargs")):
        with pytest.raises(ValueError, match=rf"{where}: unknown argument '{next(iter(kw))}' "
                           rf"\({re.escape(said)}\)"):
            tm.tl.integrate(data, SPECS, **{where: kw})
    # a model's or training's argument given to integrate itself: where it goes
    for kw, said in (({"n_latent": 8}, "CrossModalAE()'s n_latent= goes in model_kwargs="
                                       "{'n_latent': ...}"),
                     ({"lr": 1e-3}, "train()'s lr= goes in train_kwargs={'lr': ...}"),
                     ({"batch_key": "b"}, "batches are each modality's: integrate(data, "
                                          "{'rna': Modality('nb', batch_key='batch')"),
                     ({"device": "cuda"}, "the device is integrate(accelerator=)"),
                     ({"max_epoch": 2}, "did you mean max_epochs=?")):
        with pytest.raises(TypeError, match=rf"^integrate\(\): got an unexpected keyword "
                           rf"argument '{next(iter(kw))}'; {re.escape(said)}"):
            tm.tl.integrate(data, SPECS, **kw)
    with pytest.raises(ValueError, match="data must be a MuData or a dict of AnnData"):
        tm.tl.integrate([data["rna"], data["atac"]], SPECS)
    names = list(SPECS)
    same = {names[0]: data[names[0]], names[1]: data[names[0]]}  # e.g. X and obsm of one object
    with pytest.raises(ValueError, match=f"{names[0]!r} and {names[1]!r} are the same AnnData"):
        tm.tl.integrate(same, SPECS)
    combined = data[names[0]].copy()  # (a 10x matrix of two feature types: how to split it)
    combined.var["feature_types"] = ["Gene Expression", "Peaks"] * (combined.n_vars // 2) \
        + ["Peaks"] * (combined.n_vars % 2)
    with pytest.raises(ValueError, match=r"are the same AnnData object.*var\['feature_types'\] "
                       r"holds 'Gene Expression', 'Peaks'.*mudata.MuData\(adata\) splits it"):
        tm.tl.integrate({names[0]: combined, names[1]: combined}, SPECS)
    (tmp_path / "run").mkdir()
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        tm.tl.integrate(data, SPECS, model_dir=tmp_path / "run")
    assert all("X_transmodal" not in a.obsm for a in data.values())


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_integrate_refuses_a_key_with_a_slash(paired_data):
    with pytest.raises(ValueError, match="key_added must be a non-empty string without '/'"):
        tm.tl.integrate(paired_data, {"rna": "nb", "atac": "poisson"}, key_added="a/b")


def test_integrate_gives_each_object_its_own_uns():
    mdata = tm.datasets.synthetic(
        40, n_features={"rna": 10, "atac": 12}, paired=0.5, seed=0, return_mudata=True
    )
    tm.tl.integrate(mdata, SPECS, **{**FAST, "max_epochs": 1})
    objects = {"rna": mdata["rna"].uns, "atac": mdata["atac"].uns, "mdata": mdata.uns}
    before = {k: v["transmodal"]["params"]["n_latent"] for k, v in objects.items()}
    assert before == {"rna": 4, "atac": 4, "mdata": 4}
    mdata["rna"].uns["transmodal"]["params"]["model_dir"] = "edited_in_rna"
    mdata["rna"].uns["transmodal"]["params"]["modalities"]["atac"]["likelihood"] = "edited"
    for other in ("atac", "mdata"):
        params = objects[other]["transmodal"]["params"]
        assert params["model_dir"] is None
        assert params["modalities"]["atac"]["likelihood"] == "bernoulli"
    assert objects["atac"]["transmodal"]["modality"] == "atac"
    assert "modality" not in mdata.uns["transmodal"]


def test_integrate_warns_of_an_earlier_embedding_it_leaves_in_place():
    """A modality left out of this call keeps an earlier call's embedding: another model's
    latent space, warned of (pl.embedding would draw it beside this call's)."""
    data = tm.datasets.synthetic(40, n_features={"rna": 10, "atac": 12}, seed=0)
    data["prot"] = ad.AnnData(np.zeros((5, 3), np.float32), obsm={"X_transmodal": np.ones((5, 4))})
    with pytest.warns(UserWarning, match=r"modality 'prot' is not integrated by this call but "
                      r"keeps obsm\['X_transmodal'\] of an earlier one") as rec:
        tm.tl.integrate(data, SPECS, **{**FAST, "max_epochs": 1})
    assert all(w.filename == __file__ for w in rec)
    del data["prot"].obsm["X_transmodal"]
    data["rna_again"] = data["rna"]  # (the same object: written by this call)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tm.tl.integrate(data, SPECS, **{**FAST, "max_epochs": 1})
    assert not any("not integrated" in str(w.message) for w in rec)


def test_integrate_warnings_point_at_the_callers_line():
    """Warnings of the model's construction and training, raised through integrate, point
    at the integrate(...) line, as for direct calls."""
    data = tm.datasets.synthetic(120, n_features={"rna": 20, "atac": 24}, seed=0)
    names = data["rna"].var_names.tolist()
    names[1] = names[0]
    data["rna"].var_names = names
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tm.tl.integrate(data, SPECS, max_epochs=1,
                        model_kwargs={"n_latent": 4, "anchor_fraction": 1.0},
                        train_kwargs={"progress_bar": False, "beta": 2.0, "pretrain_epochs": 1})
    messages = {str(w.message)[:40]: w.filename for w in rec}
    assert any("not unique" in m for m in messages) and any("beta" in m for m in messages)
    assert set(messages.values()) == {__file__}, messages


def _two_modalities():
    rng = np.random.default_rng(0)
    mods = {"a": ad.AnnData(rng.random((3, 2))), "b": ad.AnnData(rng.random((2, 2)))}
    mods["a"].obs_names = ["c0", "c1", "c2"]
    mods["b"].obs_names = ["c2", "c3"]
    return mudata.MuData(mods)


def test_joint_embedding_is_float32():
    mdata = _two_modalities()
    z = tm.tl.joint_embedding(mdata, {"a": np.ones((3, 2)), "b": np.zeros((2, 2))})
    assert z.dtype == np.float32
    row = {name: i for i, name in enumerate(mdata.obs_names)}
    np.testing.assert_array_equal(z[row["c2"]], [0.5, 0.5])


def test_joint_embedding_without_obsmap_refuses_cells_the_mudata_lacks():
    mdata = _two_modalities()
    del mdata.obsmap["a"]  # no obsmap: rows matched by obs_names
    mdata.mod["a"].obs_names = ["c0", "c1", "zz"]  # 'zz' is not a cell of the MuData
    with pytest.raises(ValueError, match="cells missing from the MuData's obs_names"):
        tm.tl.joint_embedding(mdata, {"a": np.arange(6, dtype=np.float32).reshape(3, 2)})
