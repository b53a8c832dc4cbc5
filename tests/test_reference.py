"""CrossModalAE.from_reference: a new modality trained into a trained model's latent space."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import transmodal as tm

SPECS = {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli"),
         "protein": tm.Modality("gaussian")}


@pytest.fixture(scope="module")
def data():
    return tm.datasets.synthetic(
        400, modalities={"rna": "nb", "atac": "bernoulli", "protein": "gaussian"},
        n_features={"rna": 80, "atac": 120, "protein": 20}, seed=3,
    )


@pytest.fixture(scope="module")
def reference(data):
    model = tm.CrossModalAE(
        {k: data[k] for k in ("rna", "atac")}, {k: SPECS[k] for k in ("rna", "atac")},
        n_latent=6, hidden=(32,), anchor_fraction=1.0, labels_key="label", seed=0,
    )
    return model.train(max_epochs=8, progress_bar=False)


def _new(reference, data, **kw):
    kw.setdefault("anchor_fraction", 1.0)
    return tm.CrossModalAE.from_reference(
        reference, {"rna": data["rna"], "protein": data["protein"]},
        {"protein": SPECS["protein"]}, **kw,
    )


def test_anchor_embeds_as_the_reference_and_the_new_modality_aligns(reference, data):
    z_ref = reference.get_latent_representation("rna")
    model = _new(reference, data)
    assert model.init_params_["prior"] == "anchor:rna"
    assert model.init_params_["n_latent"] == 6 and model.modality_names == ["rna", "protein"]
    # the reference's networks, before any training (no warning of random weights for them)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(model.get_latent_representation("rna"), z_ref)
    with pytest.warns(UserWarning, match="untrained model"):  # (but for the new modality)
        model.get_latent_representation("protein")
    model.train(max_epochs=15, progress_bar=False)
    assert model.train_params_["pretrain_epochs"] == 0  # the anchor is not trained again
    # the anchor's cells embed exactly as in the reference, also cells it never saw
    np.testing.assert_array_equal(model.get_latent_representation("rna"), z_ref)
    new_cells = data["rna"][:50].copy()
    new_cells.obs_names = [f"new{i}" for i in range(50)]
    np.testing.assert_array_equal(
        model.get_latent_representation("rna", new_cells),
        reference.get_latent_representation("rna", new_cells),
    )
    # protein cells land by their RNA partners in the reference's space, also by the
    # reference's ATAC embedding (which the new model does not hold)
    z_p = model.get_latent_representation("protein")
    assert tm.metrics.foscttm(z_ref, z_p) < 0.3  # (0.22 here; unaligned: 0.5)
    assert tm.metrics.foscttm(reference.get_latent_representation("atac"), z_p) < 0.35
    # translation to the reference's modality goes through its (copied) decoder
    out = model.translate(data["protein"][:5], source="protein", target="rna")
    assert out.shape == (5, data["rna"].n_vars) and np.isfinite(out.X).all()


def test_reference_modalities_carry_its_weights(reference, data):
    """Every reference modality the data hold starts from the reference's networks (the
    non-anchor ones are fine-tuned); the classifier of the same classes is copied; the
    discriminator, whose classes are the new model's modalities, is new."""
    model = tm.CrossModalAE.from_reference(
        reference, data, {"protein": SPECS["protein"]}, anchor="rna", labels_key="label",
        hidden=(16, 8),
    )
    for name in ("rna", "atac"):
        for part in ("transforms", "encoders", "decoders", "heads"):
            mine = getattr(model.module, part)[name].state_dict()
            theirs = getattr(reference.module, part)[name].state_dict()
            assert mine.keys() == theirs.keys()
            for key in mine:
                assert torch.equal(mine[key], theirs[key]), (name, part, key)
    assert torch.equal(model.module.classifier.weight, reference.module.classifier.weight)
    # hidden sizes only the new modality
    assert model.mods["protein"].spec.hidden is None
    widths = [m.out_features for m in model.module.encoders["protein"].modules()
              if isinstance(m, torch.nn.Linear)]
    assert widths[:2] == [16, 8]
    # the new modality's preprocessing is fitted to its data
    assert not torch.equal(model.module.transforms["protein"].mean, torch.zeros(20))


def test_saved_reference_and_saved_new_model(reference, data, tmp_path):
    """A reference given as a saved directory (loaded without its data); a new model saved
    before training loads with its anchor still counted as trained."""
    reference.save(tmp_path / "ref")
    model = _new(str(tmp_path / "ref"), data)
    np.testing.assert_array_equal(model.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna"))
    model.save(tmp_path / "new")
    again = tm.CrossModalAE.load(tmp_path / "new", {"rna": data["rna"], "protein": data["protein"]})
    again.train(max_epochs=2, progress_bar=False)
    assert again.train_params_["pretrain_epochs"] == 0
    np.testing.assert_array_equal(again.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna"))


def test_default_anchor(reference, data):
    """The only reference modality the data hold; with several, the reference's own anchor
    or an error asking for one."""
    assert _new(reference, data).anchor_modality_ == "rna"
    only_atac = tm.CrossModalAE.from_reference(
        reference, {"atac": data["atac"], "protein": data["protein"]},
        {"protein": SPECS["protein"]}, anchor_fraction=1.0,
    )
    assert only_atac.anchor_modality_ == "atac"
    with pytest.raises(ValueError, match=r"choose the one whose networks stay frozen with anchor="):
        tm.CrossModalAE.from_reference(reference, data, {"protein": SPECS["protein"]})


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(anchor="protein"), ValueError, r"anchor='protein' is not in the reference"),
    (dict(n_latent=8), ValueError, r"n_latent=8: the reference's networks were built with n_latent=6"),
    (dict(variational=True), ValueError, r"variational=True"),
    (dict(prior="learned"), ValueError, r"choose the reference modality it keeps with anchor="),
    (dict(n_latnet=6), TypeError, r"unexpected keyword argument 'n_latnet'; did you mean n_latent=\?"),
])
def test_refused_parameters(reference, data, kwargs, error, match):
    with pytest.raises(error, match=match):
        _new(reference, data, **kwargs)


def test_refused_data_and_references(reference, data):
    with pytest.raises(ValueError, match=r"data hold none of the reference's modalities"):
        tm.CrossModalAE.from_reference(
            reference, {"protein": data["protein"], "x": data["protein"]},
            {"protein": SPECS["protein"], "x": SPECS["protein"]},
        )
    with pytest.raises(ValueError, match=r"anchor='atac' is not in data"):
        _new(reference, data, anchor="atac")
    # a reference modality's spec given otherwise
    with pytest.raises(ValueError, match=r"modality 'rna' is the reference's"):
        tm.CrossModalAE.from_reference(
            reference, {"rna": data["rna"], "protein": data["protein"]},
            {"rna": tm.Modality("poisson"), "protein": SPECS["protein"]},
        )
    # ... the same spec is accepted
    tm.CrossModalAE.from_reference(
        reference, {"rna": data["rna"], "protein": data["protein"]},
        {"rna": tm.Modality("nb"), "protein": SPECS["protein"]}, anchor_fraction=1.0,
    )
    # other features than the reference's
    fewer = data["rna"][:, :-1].copy()
    with pytest.raises(ValueError, match=r"modality 'rna': var_names of the given data do not "
                                         r"match the reference model"):
        tm.CrossModalAE.from_reference(reference, {"rna": fewer, "protein": data["protein"]},
                                       {"protein": SPECS["protein"]})
    untrained = tm.CrossModalAE({k: data[k] for k in ("rna", "atac")},
                                {k: SPECS[k] for k in ("rna", "atac")}, anchor_fraction=0)
    with pytest.raises(ValueError, match=r"reference is an untrained model"):
        _new(untrained, data)
    with pytest.raises(TypeError, match=r"reference must be a trained CrossModalAE or the path "
                       r"of a saved one, got dict$"):
        _new({"rna": data["rna"]}, data)
    ensemble = tm.Ensemble.__new__(tm.Ensemble)  # (its type is all that is read)
    with pytest.raises(TypeError, match=r"got Ensemble; an Ensemble's members are models: pass "
                       r"one of them, e.g. ensemble.models\[0\]$"):
        _new(ensemble, data)


def test_reference_batches(data):
    """A batch-aware reference modality keeps the reference's batches: cells of another
    batch are refused by name."""
    rna = data["rna"].copy()
    rna.obs["batch"] = pd.Categorical(np.where(np.arange(rna.n_obs) % 2, "b1", "b0"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = tm.CrossModalAE(
            {"rna": rna, "atac": data["atac"]},
            {"rna": tm.Modality("nb", batch_key="batch"), "atac": SPECS["atac"]},
            n_latent=4, hidden=(16,), anchor_fraction=1.0,
        ).train(max_epochs=1, progress_bar=False)
    only_b1 = rna[rna.obs["batch"] == "b1"].copy()
    model = tm.CrossModalAE.from_reference(
        reference, {"rna": only_b1, "protein": data["protein"]}, {"protein": SPECS["protein"]},
        anchor_fraction=1.0,
    )
    assert model.batch_categories_["rna"] == ["b0", "b1"]
    np.testing.assert_array_equal(model.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna", only_b1))
    # a new batch of the frozen anchor's cells (scArches' query mapping): its encoder reads
    # no batch, so they embed as the reference embeds them, with a warning; its decoder is
    # not trained while it stays frozen, and training it again is refused
    other = rna.copy()
    other.obs["batch"] = "b2"
    with pytest.warns(UserWarning, match=r"modality 'rna' \(the frozen anchor\): \d+ of its "
                      r"\d+ cells are of batches the reference lacks \(\['b2'\]"):
        new = tm.CrossModalAE.from_reference(
            reference, {"rna": other, "protein": data["protein"]}, {"protein": SPECS["protein"]},
            anchor_fraction=1.0)
    np.testing.assert_array_equal(new.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna", other))
    new.train(max_epochs=1, progress_bar=False)
    np.testing.assert_array_equal(new.get_latent_representation("rna"),
                                  reference.get_latent_representation("rna", other))
    assert new.translate(data["protein"], source="protein", target="rna").n_obs == \
        data["protein"].n_obs
    with pytest.raises(ValueError, match=r"modality 'rna': \d+ cell\(s\) .*have no batch of "
                       r"the model .* holding a batch other than \['b0', 'b1'\]"):
        new.train(max_epochs=1, pretrain_epochs=1, progress_bar=False)
    # a reference modality that trains on (not the anchor) keeps refusing them
    with pytest.raises(ValueError, match=r"modality 'rna': batch 'b2' .* is not one of the "
                                         r"model's batches \['b0', 'b1'\]"):
        tm.CrossModalAE.from_reference(reference, {"rna": other, "atac": data["atac"],
                                                   "protein": data["protein"]},
                                       {"protein": SPECS["protein"]}, anchor="atac")


def test_copied_networks_are_not_called_random_and_retraining_the_anchor_is_warned(
        reference, data):
    """Before training, embeddings / translations / label predictions of the copied
    networks (anchor, fine-tuned reference modality, copied classifier) give no warning of
    random weights, nor does train(lam_cls=0); train(pretrain_epochs=k) warns that it trains
    the anchor again, and does."""
    model = tm.CrossModalAE.from_reference(
        reference, data, {"protein": SPECS["protein"]}, anchor="rna", labels_key="label",
        anchor_fraction=1.0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.get_latent_representation("atac")
        model.translate(data["rna"][:5], source="rna", target="atac")
        np.testing.assert_array_equal(model.predict_labels("rna"),
                                      reference.predict_labels("rna"))
        model.train(max_epochs=1, lam_cls=0, progress_bar=False)
        model.predict_labels("protein")
    with pytest.warns(UserWarning, match=r"pretrain_epochs=1 trains the anchor modality 'rna' "
                                         r"again, whose networks came from the reference"):
        model.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    assert not np.array_equal(model.get_latent_representation("rna"),
                              reference.get_latent_representation("rna"))


def test_classifier_of_other_classes_and_unspecified_modalities(reference, data):
    """A labels_key whose classes differ from the reference's trains a new classifier
    (warned); a dict holding a modality neither the reference's nor specified is refused."""
    fewer = {k: data[k][data[k].obs["label"] != "cluster3"].copy() for k in ("rna", "protein")}
    with pytest.warns(UserWarning, match=r"the reference's latent classifier .* is not copied"):
        model = _new(reference, fewer, labels_key="label")
    assert not torch.equal(model.module.classifier.weight[:3],
                           reference.module.classifier.weight[:3])
    with pytest.warns(UserWarning, match="untrained model"):
        model.predict_labels("rna")
    with pytest.raises(ValueError, match=r"data hold modality 'protein', which the reference "
                                         r"lacks and modalities does not specify"):
        tm.CrossModalAE.from_reference(reference, data, anchor="rna")


def test_reference_saved_before_the_sizes_existed(reference, data, tmp_path):
    """A reference file whose init_params lack variational / n_private (saved before those
    options existed) gives the new model their defaults; an ensemble is refused by name."""
    import json

    reference.save(tmp_path / "ref")
    cfg = json.loads((tmp_path / "ref" / "config.json").read_text())
    for key in ("variational", "n_private"):
        del cfg["init_params"][key]
    (tmp_path / "ref" / "config.json").write_text(json.dumps(cfg))
    model = _new(tmp_path / "ref", data)
    assert model.init_params_["variational"] is False and model.init_params_["n_private"] == 0
    (tmp_path / "ens").mkdir()
    (tmp_path / "ens" / "ensemble.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds an ensemble, which has no single latent space"):
        _new(tmp_path / "ens", data)


def test_trained_model_warns_of_an_unfinished_pretraining_for_copied_modalities(reference, data):
    """Once trained, the reference's modalities are no exception to the warnings: a training
    that stopped while it pre-trained the anchor again is told for them too."""
    model = _new(reference, data).train(max_epochs=1, progress_bar=False)
    model.train_params_["pretrain_left"] = 2  # (as an interrupted train(pretrain_epochs=3))
    with pytest.warns(UserWarning, match="stopped while it pre-trained"):
        model.get_latent_representation("rna")
