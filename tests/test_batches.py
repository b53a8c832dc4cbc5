"""Batch effects within a modality: ``Modality(batch_key=)`` (a batch-conditioned decoder),
``train(lam_batch=)`` and ``translate(target_batch=)``; the simulator's batches."""

from __future__ import annotations

import json
import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import transmodal as tm
from transmodal.cli import main


def batched(n: int = 600, effect: float = 1.5, seed: int = 0, **kw):
    return tm.datasets.synthetic(
        n, n_features={"rna": 200, "atac": 300}, n_batches={"rna": 2}, batch_effect=effect,
        seed=seed, **kw,
    )


def specs(batch_key: str | None = "batch"):
    return {"rna": tm.Modality("nb", batch_key=batch_key), "atac": tm.Modality("bernoulli")}


def fit(model, **kw):
    kw.setdefault("max_epochs", 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return model.train(progress_bar=False, early_stopping=False, **kw)


@pytest.fixture(scope="module")
def data():
    return batched()


@pytest.fixture(scope="module")
def model(data):
    return fit(tm.CrossModalAE(data, specs(), n_latent=8, anchor_fraction=0.3, seed=0))


# ------------------------------------------------------------------------- simulator
def test_synthetic_batches_shift_only_their_modality():
    plain = tm.datasets.synthetic(300, seed=1)
    data = tm.datasets.synthetic(300, seed=1, n_batches={"rna": 3}, batch_effect=1.0)
    # the other modality and the cell states are untouched
    assert (plain["atac"].X != data["atac"].X).nnz == 0
    assert "batch" not in data["atac"].obs and "batch" not in plain["rna"].obs
    np.testing.assert_array_equal(plain["rna"].obsm["X_true"], data["rna"].obsm["X_true"])
    assert list(data["rna"].obs["batch"].cat.categories) == ["batch0", "batch1", "batch2"]
    assert data["rna"].obs["batch"].value_counts().min() > 60
    # no effect: the same counts; an effect changes them
    none = tm.datasets.synthetic(300, seed=1, n_batches={"rna": 3}, batch_effect=0.0)
    assert (none["rna"].X != plain["rna"].X).nnz == 0
    assert (data["rna"].X != plain["rna"].X).nnz > 0
    # a cell measured in both modalities is in the same batch in both
    both = tm.datasets.synthetic(200, seed=2, n_batches=2, paired=0.5)
    shared = both["rna"].obs_names.intersection(both["atac"].obs_names)
    assert len(shared) == 100
    np.testing.assert_array_equal(
        both["rna"].obs.loc[shared, "batch"].to_numpy(),
        both["atac"].obs.loc[shared, "batch"].to_numpy(),
    )
    assert both["rna"].uns["synthetic"]["n_batches"] == {"rna": 2, "atac": 2}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_batches": 0}, "n_batches must be >= 1"),
        ({"n_batches": {"prot": 2}}, "unknown modalities"),
        ({"batch_effect": -1.0}, "batch_effect"),
    ],
)
def test_synthetic_rejects_bad_batch_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        tm.datasets.synthetic(50, **kw)


# ------------------------------------------------------------------------------ model
def test_the_decoder_takes_the_batch(model, data):
    assert model.batch_categories_ == {"rna": ["batch0", "batch1"]}
    arch = model.module.archs
    assert arch["rna"].n_batches == 2 and arch["atac"].n_batches == 0
    # the RNA decoder reads the shared code plus the batch's one-hot
    assert model.module.decoders["rna"].net[0].in_features == 8 + 2
    rna = data["rna"]
    batch = rna.obs["batch"].to_numpy()
    # reconstructions in each cell's own batch match the measured counts better than in
    # the other batch
    own, other = [], []
    for b, o in (("batch0", "batch1"), ("batch1", "batch0")):
        cells = rna[batch == b]
        for target, out in ((b, own), (o, other)):
            pred = model.translate(cells, source="rna", target="rna", target_batch=target)
            out.append(np.nanmean(tm.metrics.translation_pearson(pred, cells, transform=np.log1p)))
    assert min(own) > max(other) + 0.02
    # default: the mean of the decodings in every batch
    mean = model.translate(rna[:20], source="rna", target="rna")
    both = [model.translate(rna[:20], source="rna", target="rna", target_batch=b).X
            for b in ("batch0", "batch1")]
    np.testing.assert_allclose(mean.X, (both[0] + both[1]) / 2, rtol=1e-5, atol=1e-4)
    assert mean.uns["transmodal"]["target_batch"] == "mean over batches"
    # embedding needs no batch column
    cells = rna[:10].copy()
    del cells.obs["batch"]
    np.testing.assert_allclose(
        model.get_latent_representation("rna", cells),
        model.get_latent_representation("rna")[:10], rtol=1e-5, atol=1e-5,
    )


def test_batch_key_mixes_the_batches_and_keeps_the_clusters():
    data = batched(800, effect=2.0, seed=3)
    rna = data["rna"]
    batch, labels = rna.obs["batch"].to_numpy(), rna.obs["label"].to_numpy()
    scores = {}
    for key, lam_batch in ((None, 0.0), ("batch", 0.0), ("mmd", 1.0)):
        m = tm.CrossModalAE(data, specs(key and "batch"), n_latent=8, anchor_fraction=0.3, seed=0)
        z = fit(m, max_epochs=40, lam_batch=lam_batch).get_latent_representation("rna")
        scores[key] = (
            tm.metrics.mixing_accuracy_multi([z[batch == b] for b in np.unique(batch)]),
            tm.metrics.label_transfer(z[batch == "batch0"], labels[batch == "batch0"],
                                      z[batch == "batch1"], labels[batch == "batch1"]),
        )
    # without the covariate the batches stay apart (measured 1.0); with it they mix more
    # (0.77; 0.5 = chance), with the batch MMD too still more (0.53), and a cluster of one
    # batch still finds its own in the other (0.93 in all three)
    assert scores[None][0] > 0.9
    assert scores["batch"][0] < scores[None][0] - 0.15
    assert scores["mmd"][0] < scores["batch"][0] - 0.1
    assert scores["batch"][1] > 0.9 and scores["mmd"][1] > 0.9


def test_lam_batch_adds_a_batch_mmd_term(data):
    m = fit(tm.CrossModalAE(data, specs(), n_latent=8, geometric_pairs=False), max_epochs=2,
            lam_batch=1.0)
    assert "train_batch_mmd" in m.history.columns and m.train_params_["lam_batch"] == 1.0
    m = fit(tm.CrossModalAE(data, specs(), n_latent=8, geometric_pairs=False), max_epochs=2)
    assert "train_batch_mmd" not in m.history.columns
    with pytest.raises(ValueError, match="lam_batch must be a finite number >= 0"):
        m.train(max_epochs=1, lam_batch=-1.0)


def test_batch_mmd_is_the_mean_mmd_over_every_two_batches_of_two_or_more_cells():
    """The batch MMD of a step, computed from one kernel for all batches, is the mean of
    the pairwise MMDs (each modality's batches apart; a batch of one cell skipped), and
    so is its gradient; no two batches of two cells: None."""
    from transmodal.model._module import CrossModalModule

    gen = torch.Generator().manual_seed(0)
    zs = {n: torch.randn(64, 6, generator=gen, requires_grad=True) for n in ("rna", "atac")}
    bs = {"rna": torch.randint(0, 9, (64,), generator=gen), "atac": torch.arange(64) % 2}
    bs["rna"][5] = 40  # a batch of one cell
    pairs = []
    for name, codes in bs.items():
        groups = [zs[name][codes == c] for c in torch.unique(codes)]
        groups = [g for g in groups if len(g) >= 2]
        pairs += [CrossModalModule._mmd(g, h) for i, g in enumerate(groups)
                  for h in groups[i + 1:]]
    assert len(pairs) == 36 + 1
    expected = torch.stack(pairs).mean()
    got = CrossModalModule.batch_mmd_loss(CrossModalModule, zs, bs)
    torch.testing.assert_close(got, expected)
    for name in zs:
        torch.testing.assert_close(torch.autograd.grad(got, zs[name], retain_graph=True)[0],
                                   torch.autograd.grad(expected, zs[name], retain_graph=True)[0])
    alone = {"rna": torch.tensor([0, 1] + [2] * 62)}  # one batch of two or more cells
    assert CrossModalModule.batch_mmd_loss(CrossModalModule, zs, alone) is None
    # under mixed precision (a half latent): computed in float32, as the pairwise sums
    # were (a step of 256 cells, one batch of 230: sums of its kernel overflow float16)
    z = torch.randn(256, 10, generator=gen, dtype=torch.float64) * 0.3
    codes = {"rna": (torch.arange(256) >= 230).long()}
    exact = CrossModalModule.batch_mmd_loss(CrossModalModule, {"rna": z}, codes)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            half = {"rna": z.float() @ torch.eye(10)}  # (a layer's output: half)
            assert half["rna"].dtype == dtype
            got = CrossModalModule.batch_mmd_loss(CrossModalModule, half, codes)
        assert got.dtype == torch.float32 and abs(got.item() - exact.item()) < 1e-3, dtype


def test_batch_key_errors_name_the_modality_and_field(data):
    with pytest.raises(ValueError, match="'rna'.*'batch_key' must be a non-empty string"):
        tm.CrossModalAE(data, {"rna": tm.Modality("nb", batch_key=3), "atac": "bernoulli"})
    with pytest.raises(ValueError, match="'rna'.*batch_key 'sample' not found in obs"):
        tm.CrossModalAE(data, specs("sample"))
    holes = {k: v.copy() for k, v in data.items()}
    holes["rna"].obs["batch"] = holes["rna"].obs["batch"].astype(object)
    holes["rna"].obs.iloc[:3, holes["rna"].obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(ValueError, match=r"'rna'.*batch_key 'batch' is missing for 3 "
                       r"cell\(s\); every cell"):
        tm.CrossModalAE(holes, specs())
    holes["rna"].obs.iloc[:3, holes["rna"].obs.columns.get_loc("batch")] = "None"  # a name
    with pytest.raises(ValueError, match=r"missing for 3 cell\(s\) \(the text 'None' is read "
                       r"as a missing value, as pandas writes one: rename that batch\)"):
        tm.CrossModalAE(holes, specs())
    # a continuous column given as batch_key: one batch per cell, said so (not as labels_key)
    per_cell = {k: v.copy() for k, v in data.items()}
    per_cell["rna"].obs["plate"] = np.random.default_rng(0).normal(size=per_cell["rna"].n_obs)
    with pytest.warns(UserWarning, match=r"batch_key 'plate' puts \d+ of \d+ cells in a batch of "
                      "their own") as record:
        tm.CrossModalAE(per_cell, specs("plate"), geometric_pairs=False)
    assert not any("labels_key" in str(w.message) for w in record)


def test_obs_columns_edited_after_the_model_is_built_are_refused_for_training():
    """A batch, label or marker column edited in place after the model is built (a sample
    merged or renamed, a label corrected) is refused by train(): the model would train on
    the codes it read then; re-typed or reordered columns are the same values."""
    data = batched(120, seed=2)
    rna = data["rna"]
    for adata in data.values():
        adata.obs["ratio"] = np.linspace(0.0, 1.0, adata.n_obs)
    del data["atac"].obs["label"]  # (an unlabelled modality)
    model = tm.CrossModalAE(data, specs(), labels_key="label", marker_key="ratio",
                            n_latent=4, anchor_fraction=0.5, seed=0)
    # the same values as another dtype, their categories reordered: not changed
    rna.obs["batch"] = rna.obs["batch"].astype("category")
    rna.obs["batch"] = rna.obs["batch"].cat.reorder_categories(
        rna.obs["batch"].cat.categories[::-1])
    rna.obs["label"] = rna.obs["label"].astype(str)
    fit(model, max_epochs=1)
    original = rna.obs.copy()
    edits = {
        "batch": lambda obs: obs.assign(batch=obs["batch"].astype(str).replace(
            {"batch1": "batch0"})),  # two samples merged
        "label": lambda obs: obs.assign(label=np.where(
            np.arange(len(obs)) < 7, obs["label"].iloc[-1], obs["label"])),
        "ratio": lambda obs: obs.assign(ratio=obs["ratio"] * 2),
    }
    for key, edit in edits.items():
        rna.obs = edit(original.copy())
        changed = int((rna.obs[key].astype(str) != original[key].astype(str)).sum())
        with pytest.raises(ValueError, match=rf"modality 'rna': obs\['{key}'\] \({changed} "
                           r"cell\(s\)\) changed since the model was built; it trains on the "
                           r"batches, labels and markers it read then"):
            fit(model, max_epochs=1)
    # values moved to other cells (a table assigned in another order) are a change too
    moved = original.copy()
    moved["batch"] = moved["batch"].to_numpy()[::-1]
    rna.obs = moved
    changed = int((moved["batch"].astype(str) != original["batch"].astype(str)).sum())
    with pytest.raises(ValueError, match=rf"obs\['batch'\] \({changed} cell\(s\)\) changed"):
        fit(model, max_epochs=1)
    # labels given to the unlabelled modality since: not read by the model, not refused
    data["atac"].obs["label"] = "x"
    rna.obs = original.drop(columns="ratio")
    with pytest.raises(ValueError, match=r"obs\['ratio'\] \(removed\) changed"):
        fit(model, max_epochs=1)
    rna.obs = original  # restored: trains
    fit(model, max_epochs=1)
    assert len(model.history) == 2


def test_barcodes_repeated_across_samples_are_told_to_keep_the_pairs():
    """10x barcodes restart in each sample: the duplicate-name error advises a sample
    prefix (the modality's batch_key), and cells paired by names made unique in file order
    (obs_names_make_unique, the modalities' samples in different orders) warn that the
    pairs lie in different batches."""
    data = batched(200, seed=3)
    rna, atac = data["rna"], data["atac"]
    atac.obs["batch"] = rna.obs["batch"].to_numpy()
    batch = rna.obs["batch"].astype(str).to_numpy()
    barcodes = pd.Series(batch).groupby(batch).cumcount().map("AAAC{:04d}-1".format).to_numpy()
    rna.obs_names = atac.obs_names = barcodes
    rna.obs["barcode"] = atac.obs["barcode"] = barcodes
    codes = rna.obs["batch"].cat.codes.to_numpy()
    rna, atac = rna[np.argsort(codes, kind="stable")].copy(), \
        atac[np.argsort(-codes, kind="stable")].copy()  # the files list the samples apart
    both = {"rna": tm.Modality("nb", batch_key="batch"),
            "atac": tm.Modality("bernoulli", batch_key="batch")}
    with pytest.raises(ValueError, match=r"modality 'rna': obs_names are not unique .*"
                       r"adata.obs_names = adata.obs\['batch'\].astype\(str\)"):
        tm.CrossModalAE({"rna": rna, "atac": atac}, both)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (anndata's own warning)
        rna.obs_names_make_unique()
        atac.obs_names_make_unique()
    pairs = {"rna": rna, "atac": atac}
    match = (r"(\d+) of the 200 cells that 'rna' and 'atac' pair by name lie in different "
             r"batches \(obs\['batch'\] / obs\['batch'\]\)")
    with pytest.warns(UserWarning, match="cells paired across batches: " + match):
        tm.CrossModalAE(pairs, both, n_latent=4, geometric_pairs=False)
    with pytest.warns(UserWarning, match="anchor pairs across batches: ") as record:
        tm.CrossModalAE(pairs, both, n_latent=4, anchor_fraction=1.0,
                        validation_fraction=0)
    assert int(re.search(match, str(record[0].message)).group(1)) > 150
    # named with their sample first, the pairs are the same cells: no warning
    for adata in pairs.values():
        adata.obs_names = adata.obs["batch"].astype(str) + "_" + adata.obs["barcode"]
    assert (pairs["rna"].obs.loc[atac.obs_names, "true_cell"].to_numpy()
            == atac.obs["true_cell"].to_numpy()).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.CrossModalAE(pairs, both, n_latent=4, anchor_fraction=1.0)
    # batches named alike but drawn apart in each modality (sequencing lanes '0', '1',
    # '2' of each library): the pairs are right, no warning
    rng = np.random.default_rng(0)
    for adata in pairs.values():
        adata.obs["lane"] = rng.integers(0, 3, adata.n_obs).astype(str)
    lanes = {"rna": tm.Modality("nb", batch_key="lane"),
             "atac": tm.Modality("bernoulli", batch_key="lane")}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.CrossModalAE(pairs, lanes, n_latent=4, anchor_fraction=1.0)


def test_target_batch_errors(model):
    with pytest.raises(ValueError, match=r"\['batch7'\] is not a batch of modality 'rna'.*batch0"):
        model.translate(source="atac", target="rna", target_batch="batch7")
    with pytest.raises(ValueError, match="holds 2 batches for 600 cells"):
        model.translate(source="atac", target="rna", target_batch=["batch0", "batch1"])
    with pytest.raises(ValueError, match="modality 'atac' has no batches"):
        model.translate(source="rna", target="atac", target_batch="batch0")


def test_batches_save_load_and_train_on(model, data, tmp_path):
    model.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["batch_categories"] == {"rna": ["batch0", "batch1"]}
    assert config["modalities"]["rna"]["batch_key"] == "batch"
    expected = model.translate(source="atac", target="rna", target_batch="batch1").X
    # without data: translations need no batch column
    bare = tm.CrossModalAE.load(tmp_path / "m")
    got = bare.translate(data["atac"], source="atac", target="rna", target_batch="batch1").X
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # with the data it trains on
    fit(tm.CrossModalAE.load(tmp_path / "m", data), max_epochs=1)
    # on cells of one batch only, the other is named as absent (not as held by validation)
    one = {k: v.copy() for k, v in data.items()}
    one["rna"] = one["rna"][one["rna"].obs["batch"] == "batch0"].copy()
    with pytest.warns(UserWarning, match=r"batch\(es\) \['batch1'\] of the model hold no cell "
                      "of these data") as rec:
        tm.CrossModalAE.load(tmp_path / "m", one).train(
            max_epochs=1, progress_bar=False, early_stopping=False
        )
    assert not any("only validation cells" in str(w.message) for w in rec)
    # cells without a known batch embed and translate, but cannot be trained on
    renamed = {k: v.copy() for k, v in data.items()}
    renamed["rna"].obs["batch"] = renamed["rna"].obs["batch"].cat.rename_categories(["x", "y"])
    loaded = tm.CrossModalAE.load(tmp_path / "m", renamed)
    assert loaded.get_latent_representation("rna").shape == (data["rna"].n_obs, 8)
    with pytest.raises(ValueError, match=r"'rna': \d+ cell\(s\) .*have no batch of the model"):
        loaded.train(max_epochs=1, progress_bar=False)
    # a validation cell (the saved split, same cells) without its batch: named too
    holes = {k: v.copy() for k, v in data.items()}
    val = np.flatnonzero(model.val_masks_["rna"])[0]
    holes["rna"].obs["batch"] = holes["rna"].obs["batch"].astype(object)
    holes["rna"].obs.iloc[val, holes["rna"].obs.columns.get_loc("batch")] = np.nan
    with pytest.raises(ValueError, match=r"'rna': 1 cell\(s\) \(1 of them validation cells\) "
                       "have no batch"):
        tm.CrossModalAE.load(tmp_path / "m", holes).train(max_epochs=1, progress_bar=False)
    # a config whose batched modality has no batches saved is refused
    del config["batch_categories"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'batch_categories' has no entry for modality 'rna'"):
        tm.CrossModalAE.load(tmp_path / "m")


def test_ensemble_and_cli_pass_the_target_batch(model, data, tmp_path, capsys):
    other = fit(tm.CrossModalAE(data, specs(), n_latent=8, anchor_fraction=0.3, seed=1), max_epochs=2)
    ens = tm.Ensemble([model, other])
    t = ens.translate(data["atac"][:30], source="atac", target="rna", target_batch="batch0")
    singles = [m.translate(data["atac"][:30], source="atac", target="rna",
                           target_batch="batch0").X for m in (model, other)]
    np.testing.assert_allclose(t.X, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-3)
    no_batches = fit(tm.CrossModalAE(data, specs(None), n_latent=8, geometric_pairs=False),
                     max_epochs=1)
    with pytest.raises(ValueError, match="models\\[1\\] has batches \\{\\}"):
        tm.Ensemble([model, no_batches])
    model.save(tmp_path / "m")
    data["atac"].write_h5ad(tmp_path / "atac.h5ad")
    out = tmp_path / "rna_from_atac.h5ad"
    args = ["translate", "--model", str(tmp_path / "m"), "--data",
            f"atac={tmp_path / 'atac.h5ad'}", "--source", "atac", "--target", "rna"]
    assert main([*args, "--target-batch", "batch1", "--out", str(out)]) == 0
    import anndata as ad

    written = ad.read_h5ad(out)
    np.testing.assert_allclose(
        written.X, model.translate(source="atac", target="rna", target_batch="batch1").X,
        rtol=1e-5, atol=1e-4,
    )
    assert main([*args, "--target-batch", "nope", "--out", str(tmp_path / "x.h5ad")]) == 2
    assert "--target-batch: ['nope'] is not a batch of modality 'rna'" in capsys.readouterr().err


def test_image_modality_with_batches():
    from test_image_modality import nuclei

    img, feat = nuclei(60)
    img.obs["plate"] = np.where(np.arange(60) % 2, "p1", "p2")
    m = tm.CrossModalAE(
        {"img": img, "feat": feat},
        {"img": tm.Modality("gaussian", obsm_key="crops", hidden=(8, 16), batch_key="plate"),
         "feat": tm.Modality("gaussian")},
        n_latent=4, anchor_fraction=0.5,
    )
    fit(m, max_epochs=2)
    # the convolutional decoder reads the shared code plus the plate's one-hot
    assert m.module.decoders["img"].net[0].in_features == 4 + 2
    p1, p2 = (m.translate(source="feat", target="img", target_batch=b) for b in ("p1", "p2"))
    assert p1.obsm["crops"].shape == (60, 1, 16, 16)
    assert np.abs(p1.X - p2.X).mean() > 1e-4  # the plate changes the decoded images
    both = m.translate(source="feat", target="img")
    np.testing.assert_allclose(both.X, (p1.X + p2.X) / 2, rtol=1e-5, atol=1e-5)


def test_translation_in_each_partners_batch(model, data):
    rna, atac = data["rna"], data["atac"]
    per_cell = model.translate(atac, source="atac", target="rna", target_batch=rna.obs["batch"])
    assert per_cell.uns["transmodal"]["target_batch"] == "per cell"
    batch = rna.obs["batch"].to_numpy()
    for b in ("batch0", "batch1"):
        one = model.translate(atac[batch == b], source="atac", target="rna", target_batch=b)
        np.testing.assert_allclose(per_cell.X[batch == b], one.X, rtol=1e-5, atol=1e-4)
    # evaluate_paired decodes in the partners' batches, which scores above the mean decoding
    from transmodal.workflows._evaluate import comparison_space

    res = tm.workflows.evaluate_paired(model, data, source="atac", target="rna")
    to_units, compare = comparison_space(model, "rna")
    observed = compare(to_units(rna.X.toarray()))

    def score(pred):
        return float(np.nanmean(tm.metrics.translation_pearson(compare(pred.X), observed)))

    assert res["translation_pearson_atac_to_rna"] == pytest.approx(score(per_cell), abs=1e-6)
    assert score(per_cell) > score(model.translate(atac, source="atac", target="rna")) + 0.01


def test_per_cell_batches_align_by_index(model, data):
    rna, atac = data["rna"], data["atac"]
    order = np.random.default_rng(0).permutation(atac.n_obs)
    shuffled = atac[order].copy()
    # the partners' Series is aligned to the shuffled cells by obs_names
    got = model.translate(shuffled, source="atac", target="rna", target_batch=rna.obs["batch"])
    want = model.translate(atac, source="atac", target="rna", target_batch=rna.obs["batch"])
    np.testing.assert_allclose(got.X, want.X[order], rtol=1e-5, atol=1e-4)
    foreign = rna.obs["batch"].copy()
    foreign.index = [f"x{i}" for i in range(len(foreign))]
    with pytest.raises(ValueError, match="Series whose index does not name every cell"):
        model.translate(atac, source="atac", target="rna", target_batch=foreign)
    # by position: an array
    by_position = model.translate(shuffled, source="atac", target="rna",
                                  target_batch=rna.obs["batch"].to_numpy()[order])
    np.testing.assert_allclose(by_position.X, got.X, rtol=1e-5, atol=1e-4)
    holes = rna.obs["batch"].astype(object).to_numpy()
    holes[:2] = np.nan
    with pytest.raises(ValueError, match="target_batch is missing .* for 2 cell"):
        model.translate(atac, source="atac", target="rna", target_batch=holes)


def test_batch_warnings(data):
    plain = tm.CrossModalAE(data, specs(None), n_latent=4, geometric_pairs=False)
    with pytest.warns(UserWarning, match="lam_batch=1.0 has no effect"):
        plain.train(max_epochs=1, lam_batch=1.0, progress_bar=False, early_stopping=False)
    lonely = {k: v.copy() for k, v in data.items()}
    lonely["rna"].obs["batch"] = lonely["rna"].obs["batch"].cat.add_categories("solo")
    model = tm.CrossModalAE(lonely, specs(), n_latent=4, geometric_pairs=False)
    val = np.flatnonzero(model.val_masks_["rna"])
    lonely["rna"].obs.iloc[val[:3], lonely["rna"].obs.columns.get_loc("batch")] = "solo"
    model = tm.CrossModalAE(lonely, specs(), n_latent=4, geometric_pairs=False)  # same split
    with pytest.warns(UserWarning, match=r"batch\(es\) \['solo'\] hold no training cell"):
        model.train(max_epochs=1, progress_bar=False, early_stopping=False)


def test_evaluate_paired_warns_about_unknown_partner_batches(model, data):
    odd = {k: v.copy() for k, v in data.items()}
    odd["rna"].obs["batch"] = odd["rna"].obs["batch"].cat.add_categories("zzz")
    odd["rna"].obs.iloc[0, odd["rna"].obs.columns.get_loc("batch")] = "zzz"
    with pytest.warns(UserWarning, match="1 partner cell\\(s\\) have no batch of the model"):
        tm.workflows.evaluate_paired(model, odd, source="atac", target="rna")
    # partners without the column at all: averaged likewise, said likewise
    del odd["rna"].obs["batch"]
    with pytest.warns(UserWarning, match=r"modality 'rna': the partner cells have no "
                      r"obs\['batch'\] column .* translated as the mean over the batches"):
        tm.workflows.evaluate_paired(model, odd, source="atac", target="rna")


def test_config_batches_must_fit_the_weights(model, tmp_path):
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["batch_categories"]["rna"] = ["batch0", "batch0"]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'batch_categories' of modality 'rna' must list distinct"):
        tm.CrossModalAE.load(tmp_path / "m")
    config["batch_categories"]["rna"] = ["batch0", "batch1", "batch2"]
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match the architecture.*shapes differ"):
        tm.CrossModalAE.load(tmp_path / "m")


def test_shape_based_pairs_see_batch_centred_features(monkeypatch):
    """Without pairs or labels the pseudo-pairs match shapes; a batch effect would be the
    most visible shape, so each batch's features are centred first."""
    import transmodal.model._priors as model_mod

    data = batched(300, effect=2.0, seed=1, paired=False)
    seen = {}

    def capture(xa, xb, **kw):
        seen["rna"], seen["atac"] = xa, xb
        return real(xa, xb, **kw)

    real = model_mod.geometric_pairs
    monkeypatch.setattr(model_mod, "geometric_pairs", capture)
    model = tm.CrossModalAE(data, specs(), n_latent=4, geometric_pairs="overlay", seed=0)
    assert model.geometric_pairs_
    train = ~model.val_masks_["rna"]
    batch = data["rna"].obs["batch"].to_numpy()[train]
    assert len(seen["rna"]) == train.sum()
    for b in ("batch0", "batch1"):
        np.testing.assert_allclose(seen["rna"][batch == b].mean(0), 0.0, atol=1e-4)
    # without a batch_key the batches sit apart in the features the shapes are matched on
    tm.CrossModalAE(data, specs(None), n_latent=4, geometric_pairs="overlay", seed=0)
    assert np.abs(seen["rna"][batch == "batch0"].mean(0)).max() > 0.5


def test_shape_based_pairs_refuse_batches_of_one_cell():
    # a per-cell id as batch_key: centring each one-cell batch would leave every cell at zero
    data = batched(120, seed=2, paired=False)
    data["rna"].obs["cell_id"] = data["rna"].obs_names.astype(str)
    with pytest.raises(ValueError, match=r"modality 'rna': \d+ of the \d+ cells .* only cell of "
                       r"their batch \(batch_key 'cell_id'\)"):
        tm.CrossModalAE(data, specs("cell_id"), n_latent=4, seed=0, geometric_pairs=True)
    # on by default: the model warns and trains without them
    with pytest.warns(UserWarning, match=r"on by default here, cannot be computed \(modality "
                      r"'rna': .* only cell of their batch"):
        model = tm.CrossModalAE(data, specs("cell_id"), n_latent=4, seed=0)
    assert model.geometric_pairs_ == {}


def _rare_batch(n_rare, seed=0):
    """640 cells of two modalities; the first ``n_rare`` of modality a in batch "rare"."""
    rng = np.random.default_rng(seed)
    n = 640
    z = rng.normal(size=(n, 3))
    a = ad.AnnData((z @ rng.normal(size=(3, 30)) + rng.normal(size=(n, 30))).astype(np.float32))
    a.obs_names = [f"a{i}" for i in range(n)]
    a.obs["batch"] = ["rare" if i < n_rare else "main" for i in range(n)]
    b = ad.AnnData((z @ rng.normal(size=(3, 20)) + rng.normal(size=(n, 20))).astype(np.float32))
    b.obs_names = [f"b{i}" for i in range(n)]
    specs = {"a": tm.Modality("gaussian", batch_key="batch"), "b": tm.Modality("gaussian")}
    return tm.CrossModalAE({"a": a, "b": b}, specs, geometric_pairs=False, seed=0)


def test_history_mean_of_the_batch_loss_counts_only_the_steps_that_hold_it(monkeypatch):
    """The batch MMD exists only in steps holding 2 cells each of two batches: its epoch
    mean is over those steps (it was divided by every step: 1.27 where they held 2.20)."""
    from transmodal.train._plan import CrossModalPlan

    seen = []
    real = CrossModalPlan._accumulate

    def spy(self, split, terms, weights):
        if split == "train":
            seen.append(terms.get("batch_mmd"))
        return real(self, split, terms, weights)

    monkeypatch.setattr(CrossModalPlan, "_accumulate", spy)
    model = _rare_batch(30)
    model.train(max_epochs=1, batch_size=32, lam_batch=1.0, progress_bar=False)
    held = [float(v) for v in seen if v is not None]
    assert 0 < len(held) < len(seen)  # (the case: some steps without the term)
    assert model.history["train_batch_mmd"].iloc[0] == pytest.approx(np.mean(held), rel=1e-5)


def test_lam_batch_that_no_step_uses_warns():
    # a batch of 6 cells among 640: no step of 32 cells holds two of them
    model = _rare_batch(6)
    with pytest.warns(UserWarning, match=r"lam_batch=1.0 had no effect: no training step held "
                      r"2 cells each of two batches .* raise batch_size \(now 32\)"):
        model.train(max_epochs=1, batch_size=32, lam_batch=1.0, progress_bar=False)
    assert "train_batch_mmd" not in model.history.columns


def test_lam_batch_on_a_frozen_anchor_names_the_anchor():
    """The batches are the anchor's, which a further training leaves frozen: the warning
    said to raise batch_size (steps held 200 cells)."""
    model = tm.CrossModalAE(batched(300, seed=1), specs(), n_latent=4, prior="anchor:rna",
                            anchor_fraction=0.5, seed=0)
    fit(model, max_epochs=2, pretrain_epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, lam_batch=1.0, batch_size=200, progress_bar=False)
    said = [str(w.message) for w in caught if "lam_batch" in str(w.message)]
    assert len(said) == 1 and "but the anchor modality 'rna', which this training" in said[0]


def test_a_number_and_its_text_in_one_column_are_one_batch_said_so():
    """anndata.concat of objects whose sample ids had other types leaves 1 and '1' in one
    object column: one batch (labels likewise one class), with a warning naming both."""
    data = batched(120)
    data["rna"].obs["sample"] = np.array([1] * 60 + ["1"] * 60, dtype=object)
    data["rna"].obs["kind"] = np.array([2] * 40 + ["2"] * 40 + ["x"] * 40, dtype=object)
    with pytest.warns(UserWarning, match=r"modality 'rna': batch_key 'sample' holds the number "
                      r"1 and the text '1', read as one batch '1'") as got:
        model = tm.CrossModalAE(data, specs("sample"), labels_key="kind", geometric_pairs=False)
    assert any("labels_key 'kind' holds the number 2 and the text '2', read as one class '2'"
               in str(w.message) for w in got)
    assert model.batch_categories_ == {"rna": ["1"]} and model.label_categories_ == ["2", "x"]
    data["rna"].obs["sample"] = np.array(["1"] * 60 + ["2"] * 60, dtype=object)  # (texts: quiet)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        tm.CrossModalAE(data, specs("sample"), geometric_pairs=False)
    assert not [w for w in got if "holds the number" in str(w.message)]
