"""Deep ensembles: tm.Ensemble and tm.workflows.train_ensemble."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import transmodal as tm


@pytest.fixture
def ensemble(paired_data, make_model):
    """Three seeds of a small model with a latent classifier, 2 epochs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*disagree.*", category=UserWarning)
        return tm.workflows.train_ensemble(
            lambda s: make_model(paired_data, seed=s, labels_key="label"), seeds=(0, 1, 2),
            k=10, max_epochs=2, batch_size=32, progress_bar=False,
        )


def test_ensemble_embeds_members_side_by_side_with_equal_weight(ensemble, paired_data):
    ens = ensemble
    assert [m.init_params_["seed"] for m in ens.models] == [0, 1, 2]
    z = ens.get_latent_representation("rna", paired_data["rna"])
    assert z.shape == (paired_data["rna"].n_obs, ens.n_latent) and z.dtype == np.float32
    assert ens.n_latent == sum(m.module.n_latent for m in ens.models)
    for i, (m, s) in enumerate(zip(ens.models, ens.scales_)):
        part = z[:, i * m.module.n_latent:(i + 1) * m.module.n_latent]
        np.testing.assert_allclose(part, m.get_latent_representation("rna") / s, rtol=1e-5)
    # every member's training latents (both modalities) have unit root-mean-square spread
    both = np.vstack([ens.get_latent_representation(n) for n in ens.modality_names])
    for i, m in enumerate(ens.models):
        part = both[:, i * m.module.n_latent:(i + 1) * m.module.n_latent].astype(np.float64)
        rms = np.sqrt(((part - part.mean(0)) ** 2).sum(1).mean())
        assert rms == pytest.approx(1.0, rel=1e-4)


def test_ensemble_translation_is_the_members_mean(ensemble, paired_data):
    ens = ensemble
    out = ens.translate(paired_data["rna"], source="rna", target="atac")
    each = [m.translate(paired_data["rna"], source="rna", target="atac").X for m in ens.models]
    np.testing.assert_allclose(out.X, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    assert list(out.var_names) == list(paired_data["atac"].var_names)
    assert out.uns["transmodal"]["ensemble"] == 3
    # a draw asked of an ensemble is told that its translations are means (a model's hint
    # would send it to sample=, which an ensemble has not)
    for name in ("sample", "n_samples"):
        with pytest.raises(TypeError, match=rf"^Ensemble.translate\(\): .*'{name}'; an "
                           r"ensemble's translations are the mean of its members' \(no draws\)"):
            ens.translate(paired_data["rna"], source="rna", target="atac", **{name: True})
    with pytest.raises(TypeError, match=r"'give_mean'; an ensemble's embedding is its members' "
                       r"posterior means side by side$"):
        ens.get_latent_representation("rna", give_mean=False)


def test_ensemble_translation_to_a_file_equals_the_one_in_memory(ensemble, paired_data, tmp_path):
    """out= translates and writes batch_size cells at a time (here from a backed file, the
    last block short) and returns the file opened read-only."""
    import anndata as ad

    ens = ensemble
    want = ens.translate(paired_data["rna"], source="rna", target="atac")
    paired_data["rna"].write_h5ad(tmp_path / "rna.h5ad")
    cells = ad.read_h5ad(tmp_path / "rna.h5ad", backed="r")
    got = ens.translate(cells, source="rna", target="atac", batch_size=37,
                        out=tmp_path / "t.h5ad")
    assert got.isbacked and got.shape == want.shape
    np.testing.assert_allclose(got.X[:], want.X, rtol=1e-5, atol=1e-6)
    assert list(got.obs_names) == list(want.obs_names)
    assert list(got.var_names) == list(want.var_names)
    assert dict(got.uns["transmodal"]) == dict(want.uns["transmodal"])
    got.file.close()
    # a view of the backed cells, in another order (anndata cannot slice it again)
    order = np.random.default_rng(0).permutation(cells.n_obs)[:50]
    want = ens.translate(cells[order], source="rna", target="atac")
    got = ens.translate(cells[order], source="rna", target="atac", batch_size=16,
                        out=tmp_path / "view.h5ad")
    np.testing.assert_allclose(got.X[:], want.X, rtol=1e-5, atol=1e-6)
    assert list(got.obs_names) == list(cells.obs_names[order])
    got.file.close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ens.translate(cells, source="rna", target="atac", out=tmp_path / "t.h5ad")
    with pytest.raises(ValueError, match="the file the cells are read from"):
        ens.translate(cells, source="rna", target="atac", out=tmp_path / "rna.h5ad",
                      overwrite=True)
    with pytest.raises(ValueError, match="unknown target 'protein'"):
        ens.translate(cells, source="rna", target="protein", out=tmp_path / "p.h5ad")
    assert not (tmp_path / "p.h5ad").exists()


def test_ensemble_embeds_to_a_file_as_in_memory(ensemble, paired_data, tmp_path):
    """out= of the embedding, like CrossModalAE's: block by block, the cells' obs, the
    file returned read-only; the same argument checks as translate's."""
    import anndata as ad

    ens = ensemble
    want = ens.get_latent_representation("atac", paired_data["atac"])
    paired_data["atac"].write_h5ad(tmp_path / "atac.h5ad")
    cells = ad.read_h5ad(tmp_path / "atac.h5ad", backed="r")
    got = ens.get_latent_representation("atac", cells, batch_size=37, out=tmp_path / "z.h5ad")
    assert got.isbacked and got.shape == want.shape == (cells.n_obs, ens.n_latent)
    np.testing.assert_allclose(got.X[:], want, rtol=1e-5, atol=1e-6)
    assert list(got.obs_names) == list(cells.obs_names)
    assert list(got.var_names) == [f"latent{i}" for i in range(ens.n_latent)]
    assert got.uns["transmodal"]["ensemble"] == 3
    got.file.close()
    training = ens.get_latent_representation("rna", out=tmp_path / "train.h5ad")
    np.testing.assert_allclose(training.X[:], ens.get_latent_representation("rna"),
                               rtol=1e-5, atol=1e-6)
    training.file.close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ens.get_latent_representation("atac", cells, out=tmp_path / "z.h5ad")
    with pytest.raises(ValueError, match="unknown modality 'protein'"):
        ens.get_latent_representation("protein", cells, out=tmp_path / "p.h5ad")
    assert not (tmp_path / "p.h5ad").exists()


def test_ensemble_translates_images_to_a_file(tmp_path):
    from test_image_modality import fit, image_model, nuclei

    img, feat = nuclei(n=60)
    ens = tm.Ensemble([fit(image_model(img, feat, seed=s), max_epochs=1) for s in (0, 1)])
    want = ens.translate(feat, source="feat", target="img")
    got = ens.translate(feat, source="feat", target="img", batch_size=25,
                        out=tmp_path / "img.h5ad")
    assert got.obsm["crops"].shape == want.obsm["crops"].shape == (60, 1, 16, 16)
    np.testing.assert_allclose(got.obsm["crops"][:], want.obsm["crops"], rtol=1e-5, atol=1e-6)
    got.file.close()


def test_ensemble_labels_are_the_members_mean_probability(ensemble, paired_data):
    ens = ensemble
    proba = ens.predict_labels("atac", paired_data["atac"], return_proba=True)
    each = [m.predict_labels("atac", paired_data["atac"], return_proba=True) for m in ens.models]
    np.testing.assert_allclose(proba.to_numpy(), np.mean([p.to_numpy() for p in each], axis=0),
                               rtol=1e-6)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    labels = ens.predict_labels("atac", paired_data["atac"])
    assert (labels == proba.idxmax(axis=1).to_numpy()).all()


def test_ensemble_evaluates_and_round_trips(ensemble, paired_data, tmp_path):
    ens = ensemble
    res = tm.workflows.evaluate_paired(ens, paired_data, source="rna", target="atac",
                                       labels_key="label")
    assert 0 <= res["foscttm"] <= 1 and "translation_pearson_rna_to_atac" in res
    # the observed profiles in the translations' units: the members' mean library size
    from transmodal.workflows import comparison_space

    pred = ens.translate(paired_data["rna"], source="rna", target="atac")
    libs = [float(m.module.transforms["atac"].library_size) for m in ens.models]
    assert len(set(libs)) > 1 and pred.uns["transmodal"]["library_size"] == np.mean(libs)
    to_units, compare = comparison_space(ens.models[0], "atac",
                                         pred.uns["transmodal"]["library_size"])
    by_hand = tm.metrics.translation_pearson_summary(
        compare(pred.X), compare(to_units(paired_data["atac"].X)))
    assert res["translation_pearson_rna_to_atac"] == pytest.approx(by_hand, rel=1e-9)
    ens.save(tmp_path / "ens")
    cfg = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert cfg["members"] == ["member0", "member1", "member2"]
    back = tm.Ensemble.load(tmp_path / "ens", paired_data)
    np.testing.assert_allclose(back.scales_, ens.scales_)
    np.testing.assert_allclose(back.get_latent_representation("atac"),
                               ens.get_latent_representation("atac"), rtol=1e-5, atol=1e-6)
    bare = tm.Ensemble.load(tmp_path / "ens")  # without data: for new cells
    np.testing.assert_allclose(bare.get_latent_representation("atac", paired_data["atac"]),
                               ens.get_latent_representation("atac"), rtol=1e-5, atol=1e-6)
    with pytest.raises(FileExistsError):
        ens.save(tmp_path / "ens")


def test_ensemble_tells_other_tools_methods(ensemble):
    """An Ensemble answers other tools' method names as a model does (typos keep Python's
    own 'Did you mean')."""
    with pytest.raises(AttributeError, match=r"^'Ensemble' object has no attribute "
                       r"'get_normalized_expression'; .* translate\(adata"):
        ensemble.get_normalized_expression
    with pytest.raises(AttributeError) as err:
        ensemble.translat
    assert err.value.name == "translat" and err.value.obj is ensemble
    assert not hasattr(ensemble, "foo")


def test_ensemble_errors(ensemble, paired_data, make_model, tmp_path):
    m0, m1 = ensemble.models[:2]
    with pytest.raises(ValueError, match="at least two models"):
        tm.Ensemble([m0])
    with pytest.raises(ValueError, match=r"models\[1\] is not trained"):
        tm.Ensemble([m0, make_model(paired_data, seed=5)])
    with pytest.raises(TypeError, match=r"models\[1\] is a str"):
        tm.Ensemble([m0, "model"])
    with pytest.raises(ValueError, match="scales must be 2 positive"):
        tm.Ensemble([m0, m1], scales=[1.0, 0.0])
    # the latents are divided by them in float32 (1e300: zeros; 1e-300: infinities)
    with pytest.raises(ValueError, match="scales must be 2 positive numbers within float32's"):
        tm.Ensemble([m0, m1], scales=[1e300, 1e-300])
    with pytest.raises(FileNotFoundError, match="not a saved transmodal Ensemble"):
        tm.Ensemble.load(tmp_path, paired_data)
    m0.save(tmp_path / "single")  # a single model: pointed to CrossModalAE.load
    with pytest.raises(FileNotFoundError, match="single model: load it with tm.CrossModalAE.load"):
        tm.Ensemble.load(tmp_path / "single", paired_data)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ensemble.json").write_text(json.dumps(
        {"format": "transmodal-ensemble", "format_version": 1, "members": ["../x"], "scales": [1]}))
    with pytest.raises(ValueError, match="member directories"):
        tm.Ensemble.load(tmp_path / "bad", paired_data)
    with pytest.raises(ValueError, match=r"models\[1\] is models\[0\]"):
        tm.Ensemble([m0, m0])
    # a tampered ensemble.json is named in the error, whatever is wrong with it
    head = {"format": "transmodal-ensemble", "format_version": 1}
    for bad, match in [
        ([1, 2], "must hold a JSON object"),
        ({**head, "members": ["member0", "member1"]}, "'scales' must list one number"),
        ({**head, "members": ["member0", "member1"], "scales": ["a", 1]}, "'scales'"),
        ({**head, "members": ["member0", "member0"], "scales": [1, 1]}, "names a directory twice"),
    ]:
        (tmp_path / "bad" / "ensemble.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match) as info:
            tm.Ensemble.load(tmp_path / "bad", paired_data)
        assert "ensemble.json" in str(info.value)
    (tmp_path / "bad" / "ensemble.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="not valid JSON"):
        tm.Ensemble.load(tmp_path / "bad", paired_data)
    with pytest.raises(ValueError, match="do not pass seed"):
        tm.workflows.train_ensemble(lambda s: make_model(paired_data, seed=s), seeds=(0, 1),
                                    seed=3)
    with pytest.raises(ValueError, match="checkpoint_dir= saves one model's training"):
        tm.workflows.train_ensemble(lambda s: make_model(paired_data, seed=s), seeds=(0, 1),
                                    checkpoint_dir=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="at least two integers"):
        tm.workflows.train_consensus(lambda s: make_model(paired_data, seed=s), seeds=3)


def test_ensemble_refuses_other_units_or_other_data(ensemble, paired_data, make_model, train):
    m0 = ensemble.models[0]
    specs = {"rna": tm.Modality("gaussian", layer="counts"), "atac": tm.Modality("poisson")}
    gaussian = train(make_model(paired_data, specs, labels_key="label", seed=1), max_epochs=1)
    with pytest.raises(ValueError, match=r"models\[1\], modality 'rna': reads or models its "
                       r"data otherwise.*'nb'.*averaged across units"):
        tm.Ensemble([m0, gaussian])
    other = {k: a.copy() for k, a in paired_data.items()}
    other["atac"].X = other["atac"].X + 1  # the same names, other values
    moved = train(make_model(other, labels_key="label", seed=1), max_epochs=1)
    with pytest.raises(ValueError, match=r"modality 'atac': its cells hold other values"):
        tm.Ensemble([m0, moved])


def test_train_ensemble_warns_when_runs_disagree(paired_data, make_model, monkeypatch):
    def disagreeing(runs, k, run_names=None):
        warnings.warn("runs 0 and 1 disagree", UserWarning, stacklevel=2)

    monkeypatch.setattr(tm.metrics, "seed_agreement", disagreeing)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        with pytest.warns(UserWarning, match="disagree.*prefer train_consensus"):
            ens = tm.workflows.train_ensemble(lambda s: make_model(paired_data, seed=s),
                                              seeds=(0, 1), max_epochs=1, batch_size=32,
                                              progress_bar=False)
    assert len(ens.models) == 2


def test_train_ensemble_does_not_check_runs_that_anchor_pairs_tie(
    paired_data, make_model, monkeypatch
):
    """Known pairs between every two modalities fix the alignment: low agreement there is
    noise in single-cell matches (A549: 0.05-0.2), which the ensemble averages, so the
    advice to keep one run instead would be wrong."""
    def disagreeing(runs, k, run_names=None):
        warnings.warn("runs 0 and 1 disagree", UserWarning, stacklevel=2)

    monkeypatch.setattr(tm.metrics, "seed_agreement", disagreeing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ens = tm.workflows.train_ensemble(
            lambda s: make_model(paired_data, seed=s, anchor_fraction=0.5), seeds=(0, 1),
            max_epochs=1, batch_size=32, progress_bar=False,
        )
    assert len(ens.models) == 2
    # too few pairs to fix the alignment, or the anchor loss off: checked
    for fraction, lam_anchor in ((0.02, 1.0), (0.5, 0.0)):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
            with pytest.warns(UserWarning, match="disagree"):
                tm.workflows.train_ensemble(
                    lambda s: make_model(paired_data, seed=s, anchor_fraction=fraction),
                    seeds=(0, 1), max_epochs=1, batch_size=32, progress_bar=False,
                    lam_anchor=lam_anchor,
                )


def test_runs_warnings_are_shown_once_at_the_callers_line(paired_data, make_model):
    """train() sets warning filters, which clears Python's once-per-line record: each run's
    warnings are passed on once, with the number of runs, pointing at the user's call."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", message=".*(separable|disagree).*")
        tm.workflows.train_ensemble(
            lambda s: make_model(paired_data, seed=s, validation_fraction=0.0), seeds=(0, 1, 2),
            max_epochs=1, batch_size=32, progress_bar=False,
        )
    off = [w for w in rec if "early_stopping=True is off" in str(w.message)]
    assert len(off) == 1 and str(off[0].message).endswith("[all 3 runs]")
    assert off[0].filename == __file__
    # counted by runs (a warning given twice per run: 2 of 2); an "error" filter still
    # raises in the first run; a run's failure is what is raised
    built = []

    def build(s):
        built.append(s)
        warnings.warn("twice per run")
        warnings.warn("twice per run")
        if s == 1:
            raise RuntimeError("run 1 failed")
        return make_model(paired_data, seed=s)

    fit = dict(max_epochs=1, batch_size=32, progress_bar=False)
    with pytest.warns(UserWarning, match=r"twice per run \[all 2 runs\]"):
        with pytest.raises(RuntimeError, match="run 1 failed") as err:
            tm.workflows.train_ensemble(build, seeds=(0, 1), **fit)
    assert "raised by the run of seed 1, after 1 of the 2 runs had finished" in str(
        getattr(err.value, "__notes__", [""])[0]
    )
    # the finished run is not lost (e.g. to Ctrl+C in the tenth of ten long runs)
    assert [m.init_params_["seed"] for m in err.value.runs] == [0]
    assert err.value.runs[0].is_trained_
    built.clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="twice per run")
        with pytest.raises(UserWarning, match="twice per run"):
            tm.workflows.train_ensemble(build, seeds=(0, 1), **fit)
    assert built == [0]


def test_ensemble_rejects_members_with_other_features_or_classes(ensemble, paired_data, make_model):
    m0 = ensemble.models[0]
    fit = dict(max_epochs=1, batch_size=32, progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        reordered = {n: a[:, ::-1].copy() for n, a in paired_data.items()}
        other_order = make_model(reordered, labels_key="label").train(**fit)
        no_labels = make_model(paired_data).train(**fit)
        fewer = make_model({n: a[:120].copy() for n, a in paired_data.items()},
                           labels_key="label").train(**fit)
    with pytest.raises(ValueError, match=r"models\[1\], modality 'rna': holds other cells"):
        tm.Ensemble([m0, fewer])
    with pytest.raises(ValueError, match=r"models\[1\], modality 'rna': var_names differ"):
        tm.Ensemble([m0, other_order])
    with pytest.raises(ValueError, match=r"models\[1\] has label categories None"):
        tm.Ensemble([m0, no_labels])


def test_predict_labels_classes_argument_and_ensemble_classes_seen(ensemble, paired_data):
    model = ensemble.models[0]
    assert ensemble.classes_seen == model.classes_seen
    one = model.predict_labels("rna", classes="type1", return_proba=True)
    assert list(one.columns) == ["type1"] and np.allclose(one.to_numpy(), 1.0)
    twice = model.predict_labels("rna", classes=["type2", "type0", "type2"], return_proba=True)
    assert list(twice.columns) == ["type2", "type0"]
    with pytest.raises(ValueError, match="classes must name at least one"):
        model.predict_labels("rna", classes=[])
    with pytest.warns(UserWarning, match="sample=True has no effect"):
        model.translate(paired_data["rna"][:5], source="rna", target="atac", sample=True)
    with pytest.raises(ValueError, match="seed must be an integer"):
        model.translate(paired_data["rna"][:5], source="rna", target="atac", seed=None)


def test_ensemble_of_a_model_loaded_without_data_needs_scales(ensemble, tmp_path):
    m0, m1 = ensemble.models[:2]
    m1.save(tmp_path / "m1")
    bare = tm.CrossModalAE.load(tmp_path / "m1")
    with pytest.raises(ValueError, match=r"models\[1\] holds no cells of modality 'rna'.*scales="):
        tm.Ensemble([m0, bare])
    # loaded with one modality's data only: named (it was a message to pass adata=)
    part = tm.CrossModalAE.load(tmp_path / "m1", {"rna": m1.mods["rna"].adata})
    with pytest.raises(ValueError, match=r"models\[1\] holds no cells of modality 'atac'.*scales="):
        tm.Ensemble([m0, part])
    assert tm.Ensemble([m0, bare], scales=ensemble.scales_[:2]).scales_.tolist() == list(
        ensemble.scales_[:2]
    )


def test_seed_agreement_matches_the_runs_cells_by_name(paired_data, make_model):
    """The same cells stored in another order are the same cells; other cells are refused;
    the warning names the runs as the caller does; two seeds have no medoid."""
    fit = dict(max_epochs=1, batch_size=32, progress_bar=False)
    order = np.random.default_rng(0).permutation(paired_data["rna"].n_obs)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        a = make_model(paired_data, seed=0).train(**fit)
        b = make_model({n: x[order].copy() for n, x in paired_data.items()}, seed=1).train(**fit)
        renamed = {n: x.copy() for n, x in paired_data.items()}
        for x in renamed.values():
            x.obs_names = "other_" + x.obs_names
        c = make_model(renamed, seed=2).train(**fit)
    aligned = [{n: m.get_latent_representation(n)[
        pd.Index(m.mods[n].obs_names).get_indexer(paired_data[n].obs_names)
    ] for n in m.modality_names} for m in (a, b)]
    want = tm.metrics.seed_agreement(aligned, k=10, warn_below=None)
    got = tm.metrics.seed_agreement([a, b], k=10, warn_below=None)
    assert got["agreement"].iloc[0] == pytest.approx(want["agreement"].iloc[0])
    with pytest.raises(ValueError, match=r"runs\[1\]\['rna'\] embeds other cells than runs\[0\]"):
        tm.metrics.seed_agreement([a, c], k=10)
    with pytest.warns(UserWarning, match="the runs of seed 5 and seed 9 disagree"):
        tm.metrics.seed_agreement([a, b], k=10, warn_below=1.01, run_names=["seed 5", "seed 9"])
    with pytest.warns(UserWarning, match="two runs agree with each other equally"):
        tm.workflows.train_consensus(lambda s: make_model(paired_data, seed=s), seeds=(3, 4),
                                     **fit)


def test_seed_agreement_of_ensembles(ensemble):
    """Ensembles in a list of runs are compared by row position (their members' cells are
    the same by construction)."""
    table = tm.metrics.seed_agreement([ensemble, ensemble.models[0]], k=5, warn_below=None)
    assert len(table) == 1 and np.isfinite(table["agreement"]).all()


def test_ensemble_load_warns_once_for_all_members(paired_data, make_model, tmp_path):
    """Loading on other cells drops each member's anchor pairs: said once, at the caller's
    line, not once per member."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ens = tm.workflows.train_ensemble(
            lambda s: make_model(paired_data, seed=s, anchor_fraction=1.0), seeds=(0, 1, 2),
            max_epochs=1, progress_bar=False,
        )
    ens.save(tmp_path / "ens")
    subset = {n: a[:100].copy() for n, a in paired_data.items()}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        tm.Ensemble.load(tmp_path / "ens", subset)
    other = [w for w in rec if "not the cells the model was trained on" in str(w.message)]
    assert len(other) == 1 and other[0].filename == __file__
    with warnings.catch_warnings(), pytest.raises(UserWarning, match="not the cells"):
        warnings.simplefilter("error")  # the caller's filters apply
        tm.Ensemble.load(tmp_path / "ens", subset)
    # a member that fails to load: the members loaded before it still say their warnings
    weights = tmp_path / "ens" / "member1" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    with warnings.catch_warnings(record=True) as rec, pytest.raises(ValueError, match="checksum"):
        warnings.simplefilter("always")
        tm.Ensemble.load(tmp_path / "ens", subset)
    assert sum("not the cells the model was trained on" in str(w.message) for w in rec) == 1


def test_ensemble_mods_names_the_features_its_errors_point_to(ensemble, paired_data):
    """The feature-order error tells to read model.mods[name].var_names: an Ensemble has it."""
    ens = ensemble
    assert list(ens.mods["rna"].var_names) == list(ens.models[1].mods["rna"].var_names)
    shuffled = paired_data["rna"][:, ::-1].copy()
    with pytest.raises(ValueError, match=r"model.mods\[name\].var_names"):
        ens.get_latent_representation("rna", shuffled)
    fixed = shuffled[:, ens.mods["rna"].var_names].copy()
    np.testing.assert_allclose(ens.get_latent_representation("rna", fixed),
                               ens.get_latent_representation("rna", paired_data["rna"]))


def test_an_ensemble_replaced_while_being_read_is_not_mixed(ensemble, tmp_path, monkeypatch):
    """Another process saving an ensemble over the one being loaded (between its members)
    gave members of both, silently; the manifest's checksums tell them apart."""
    path = tmp_path / "ens"
    ensemble.save(path)
    assert tm.Ensemble.load(path).scales_.tolist() == ensemble.scales_.tolist()
    other = tm.Ensemble(ensemble.models[::-1])
    real = tm.CrossModalAE.load.__func__
    loaded = []

    def then_saved_over(cls, where, *a, **k):
        model = real(cls, where, *a, **k)
        loaded.append(where)
        if len(loaded) == 1:  # (the other process)
            other.save(path, overwrite=True)
        return model

    monkeypatch.setattr(tm.CrossModalAE, "load", classmethod(then_saved_over))
    with pytest.raises(ValueError, match=r"member2 is not the member that .*ensemble.json "
                                         r"lists .*replaced while being read"):
        tm.Ensemble.load(path)


def test_only_the_first_process_saves_an_ensemble(ensemble, tmp_path, monkeypatch):
    """Under DDP the other processes write nothing (as CrossModalAE.save): they crashed on
    the members' files, which only the first process writes."""
    from transmodal.model import _ensemble

    monkeypatch.setattr(_ensemble, "is_global_zero", lambda *a, **k: False)
    ensemble.save(tmp_path / "ens")
    assert not (tmp_path / "ens").exists()

