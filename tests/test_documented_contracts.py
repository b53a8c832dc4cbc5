"""Documented behaviours that no other test pinned down, one test each (found by mutation
testing: each test fails when its behaviour is broken): the CLI's subset and runs settings,
the metric directions of the evaluation workflows, posterior sampling, saved label order,
baselines, image filters, the synthetic generator's pairs and labels.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import transmodal as tm
from transmodal.data import setup_data
from transmodal.model._split import validation_masks


# ------------------------------------------------------------------ model/_split.py (S3)
def test_validation_split_is_dropped_when_a_modality_keeps_under_two_training_cells():
    """Documented: all-False masks when any modality would be left with fewer than 2
    training cells (here a 3-cell modality beside a 100-cell one, fraction 0.9)."""
    data = {
        "big": ad.AnnData(np.zeros((100, 2), np.float32),
                          obs=pd.DataFrame(index=[f"c{i}" for i in range(100)])),
        "small": ad.AnnData(np.zeros((3, 2), np.float32),
                            obs=pd.DataFrame(index=["s0", "s1", "s2"])),
    }
    mods, _ = setup_data(data, {"big": "gaussian", "small": "gaussian"})
    for seed in range(3):
        masks = validation_masks(mods, 0.9, seed)
        assert not any(m.any() for m in masks.values())
    # (0.5 of them: 2 validation, 1 training cell) - also dropped
    assert not any(m.any() for m in validation_masks(mods, 0.5, 0).values())


# ------------------------------------------------------------------ cli/_commands.py (C1-C3)
def _cli_workdir(tmp_path: Path) -> Path:
    from test_cli import _simulate  # tests/test_cli.py's data
    for name, adata in _simulate().items():
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
    return tmp_path


@pytest.mark.parametrize("combine", ["consensus", "ensemble"])
def test_train_passes_runs_k_on(tmp_path, monkeypatch, combine):
    """``runs: {k: ...}`` of the config reaches train_consensus / train_ensemble."""
    from test_cli import _config, _write_config
    import transmodal.workflows as wf
    from transmodal.cli._commands import cmd_train

    work = _cli_workdir(tmp_path)
    cfg = _config(work, runs={"seeds": [0, 1], "combine": combine, "k": 7}, out="m")
    cfg["model"].pop("seed")
    path = _write_config(work / "runs.yaml", cfg)
    seen = {}

    class Stop(Exception):
        pass

    def fake(build, seeds, **kw):
        seen.update(kw, seeds=list(seeds))
        raise Stop

    monkeypatch.setattr(wf, f"train_{combine}", fake)
    with pytest.raises(Stop):
        cmd_train(str(path))
    assert seen["k"] == 7 and seen["seeds"] == [0, 1]


def test_train_subset_and_run_config_out(tmp_path, capsys):
    """The config's ``subset`` (split == train: 90 of 120 cells) is what trains, and
    run_config.yaml records the directory written (--out overrides the config's out)."""
    from test_cli import N_RNA, N_TRAIN, _config, _write_config
    from transmodal.cli import main

    work = _cli_workdir(tmp_path)
    path = _write_config(work / "run.yaml", _config(work, out="from_config"))
    other = work / "from_cli"
    assert main(["train", "--config", str(path), "--out", str(other)]) == 0
    assert f"rna {N_TRAIN} x {N_RNA}" in capsys.readouterr().err
    from safetensors.numpy import load_file
    saved = load_file(str(other / "model.safetensors"))
    assert len(saved["validation.rna"]) == N_TRAIN  # one entry per training-data cell
    run = yaml.safe_load((other / "run_config.yaml").read_text())
    assert Path(run["out"]) == other.resolve()
    assert not (work / "from_config").exists()


def test_runs_k_defaults_to_the_workflows_default(tmp_path):
    """``runs:`` without ``k`` uses train_consensus' / train_ensemble's own default."""
    import inspect

    from test_cli import _config, _write_config
    from transmodal.cli._config import load_config
    from transmodal.workflows import train_consensus, train_ensemble

    work = _cli_workdir(tmp_path)
    cfg = _config(work, runs={"seeds": [0, 1]})
    cfg["model"].pop("seed")
    loaded = load_config(_write_config(work / "r.yaml", cfg))
    for fn in (train_consensus, train_ensemble):
        assert loaded.runs["k"] == inspect.signature(fn).parameters["k"].default


def test_train_subset_of_a_mudata(tmp_path, capsys):
    """``subset`` also selects the cells of a ``mudata:`` input (its global obs)."""
    import mudata as md

    from test_cli import N_RNA, N_TRAIN, _config, _simulate, _write_config
    from transmodal.cli import main

    mods = _simulate()
    mdata = md.MuData(mods)
    mdata.obs["split"] = mods["rna"].obs["split"].reindex(mdata.obs_names).to_numpy()
    mdata.write(tmp_path / "d.h5mu")
    cfg = _config(tmp_path, out="m")
    del cfg["data"]
    cfg["mudata"] = "d.h5mu"
    path = _write_config(tmp_path / "mu.yaml", cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", "--config", str(path)]) == 0
    assert f"rna {N_TRAIN} x {N_RNA}" in capsys.readouterr().err


# ------------------------------------------------------------------ workflows/_evaluate.py (E3-E5)
def test_evaluate_paired_names_every_direction(trained_model, paired_data):
    """``{a}_to_{b}``: cells of a queried against b, for every per-direction metric."""
    from transmodal.workflows import evaluate_paired

    res = evaluate_paired(trained_model, paired_data, source="rna", target="atac",
                          labels_key="label")
    z_r = trained_model.get_latent_representation("rna", paired_data["rna"])
    z_a = trained_model.get_latent_representation("atac", paired_data["atac"])
    lab = paired_data["rna"].obs["label"].astype(str).to_numpy()
    ca = tm.metrics.cluster_accuracy(z_r, z_a, lab, lab, metric="l1")
    assert res["cluster_accuracy_rna_to_atac"] == pytest.approx(ca["x_to_y"])
    assert res["cluster_accuracy_atac_to_rna"] == pytest.approx(ca["y_to_x"])
    knn, _ = tm.metrics.knn_accuracy_and_chance(z_r, z_a, k=(5, 50), metric="l1")
    for k in (5, 50):
        assert res[f"knn_acc_l1_{k}_rna_to_atac"] == pytest.approx(knn["x_to_y"][k])
        assert res[f"knn_acc_l1_{k}_atac_to_rna"] == pytest.approx(knn["y_to_x"][k])


def test_evaluate_unpaired_names_every_direction(trained_model, paired_data):
    from transmodal.workflows import evaluate_unpaired

    rna = paired_data["rna"].copy()
    rna.obs_names = [f"r{i}" for i in range(rna.n_obs)]
    data = {"rna": rna, "atac": paired_data["atac"]}
    res = evaluate_unpaired(trained_model, data, source="rna", target="atac", labels_key="label")
    z_r = trained_model.get_latent_representation("rna", rna)
    z_a = trained_model.get_latent_representation("atac", data["atac"])
    lr = rna.obs["label"].astype(str).to_numpy()
    la = data["atac"].obs["label"].astype(str).to_numpy()
    lt = tm.metrics.label_transfer_both(z_r, lr, z_a, la, k=5, classes=sorted(set(lr)))
    assert res["label_transfer_rna_to_atac"] == pytest.approx(lt["x_to_y"])
    assert res["label_transfer_atac_to_rna"] == pytest.approx(lt["y_to_x"])
    ca = tm.metrics.cluster_accuracy(z_r, z_a, lr, la, metric="l1")
    assert res["cluster_accuracy_rna_to_atac"] == pytest.approx(ca["x_to_y"])
    assert res["cluster_accuracy_atac_to_rna"] == pytest.approx(ca["y_to_x"])


# ------------------------------------------------------------------ variational sampling (N5)
def _fixed_posterior(model, name, logvar):
    """Make modality ``name``'s encoder return the posterior N(0, exp(logvar) I)."""
    enc = model.module.encoders[name]
    width = enc.distribution(torch.zeros(2, model.mods[name].source.n_vars))[0].shape[1]

    def distribution(x, like_batch=False):
        mean = torch.zeros(x.shape[0], width)
        return mean, torch.full_like(mean, logvar)
    enc.distribution = distribution


def test_posterior_samples_have_standard_deviation_exp_half_logvar(paired_data, make_model):
    """z = mean + eps * exp(logvar / 2), in training (reconstruction) and in
    translate(sample=True): a posterior of variance 4 draws with standard deviation 2."""
    model = make_model(paired_data, variational=True, seed=0)
    module = model.module
    x = torch.from_numpy(model.mods["rna"].source.rows(np.arange(150))).repeat(20, 1)
    _fixed_posterior(model, "rna", float(np.log(4.0)))
    module.train()
    z, _, _ = module.reconstruction("rna", x)
    assert z.std().item() == pytest.approx(2.0, rel=0.05)
    module.eval()
    seen = {}
    def decode(target, z, *args, **kw):
        seen["z"] = z
        return z
    module.decode = decode
    module.output = lambda target, params, *a, **kw: params
    module.translate(x, "rna", "atac", sample=True, generator=torch.Generator().manual_seed(0))
    assert seen["z"].std().item() == pytest.approx(2.0, rel=0.05)


# ------------------------------------------------------------------ analysis/_de.py (A5)
def test_de_ties_of_underflowed_p_values_go_by_decreasing_abs_t():
    """Documented order: by p-value, ties (p underflowed to 0) by decreasing |t|."""
    rng = np.random.default_rng(0)
    n = 60
    noise = rng.normal(0, 0.01, size=(2 * n, 3))
    x = noise + np.r_[np.zeros(n), np.ones(n)][:, None] * np.array([100.0, 300.0, 200.0])
    a = ad.AnnData(x)
    a.var_names = ["small", "large", "middle"]
    a.obs["g"] = ["r"] * n + ["q"] * n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        de = tm.analysis.differential_expression(a, "g", "q", "r")
    assert (de["pval"] == 0).all()  # underflowed: only |t| orders them
    assert list(de.index) == ["large", "middle", "small"]
    assert tm.analysis.top_markers(de)["up"] == ["large", "middle", "small"]


# ------------------------------------------------------------------ metrics/_agreement.py (G1)
def test_seed_agreement_chance_level_is_that_of_the_searched_modality():
    """For queries of a in b the chance overlap is k / n_b (the searched modality's size),
    which matters when the modalities differ in size."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    runs = [{"a": rng.normal(size=(200, 3)), "b": rng.normal(size=(40, 3))} for _ in range(2)]
    k = 5
    got = tm.metrics.seed_agreement(runs, k=k, warn_below=None)["agreement"].iloc[0]

    def nn(q, r):
        return NearestNeighbors(n_neighbors=k).fit(r).kneighbors(q, return_distance=False)

    scores = []
    for a, b in (("a", "b"), ("b", "a")):
        n1, n2 = nn(runs[0][a], runs[0][b]), nn(runs[1][a], runs[1][b])
        raw = np.mean([len(set(x) & set(y)) / k for x, y in zip(n1, n2)])
        chance = k / len(runs[0][b])
        scores.append((raw - chance) / (1 - chance))
    assert got == pytest.approx(np.mean(scores), abs=1e-9)


# ------------------------------------------------------------------ datasets/_synthetic.py (Y2)
def test_true_pairs_survive_renamed_obs_names():
    """Documented: the cell identity is recorded, so pairs are known even when the
    modalities' obs_names are changed."""
    from transmodal.datasets import synthetic, true_pairs

    data = synthetic(60, paired=0.5, seed=0, n_features=8)
    want = true_pairs(data, "rna", "atac")
    data["atac"].obs_names = "atac_" + data["atac"].obs_names
    got = true_pairs(data, "rna", "atac")
    assert len(want[0]) == 30
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w, g)


# ------------------------------------------------------------------ images (IM1, IM3)
def _nuclei_scene(tmp_path):
    import tifffile

    labels = np.zeros((48, 48), np.uint16)
    labels[10:15, 10:15] = 1   # exactly 25 pixels, inside
    labels[20:26, 20:26] = 2   # 36 pixels, inside
    labels[42:48, 20:26] = 3   # touches the last row
    labels[20:26, 42:48] = 4   # touches the last column
    labels[0:6, 30:36] = 5     # touches the first row
    labels[30:36, 0:6] = 6     # touches the first column
    image = np.where(labels > 0, 200, 5).astype(np.uint16)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", labels)
    return tmp_path / "img.tif", tmp_path / "mask.tif"


def test_min_area_keeps_a_nucleus_of_exactly_min_area(tmp_path):
    """"dropped as small (< min_area)": a nucleus of min_area pixels is kept."""
    img, mask = _nuclei_scene(tmp_path)
    nuclei = tm.images.read_nuclei([(img, mask)], crop_size=16, min_area=25)
    assert list(nuclei.obs["label"]) == [1, 2]
    assert nuclei.uns["nuclei_filter"]["n_dropped_small"] == 0


def test_exclude_border_drops_nuclei_on_every_face(tmp_path):
    img, mask = _nuclei_scene(tmp_path)
    nuclei = tm.images.read_nuclei([(img, mask)], crop_size=16, min_area=1)
    # 3 (last row), 4 (last column), 5 (first row), 6 (first column)
    assert list(nuclei.obs["label"]) == [1, 2]
    assert nuclei.uns["nuclei_filter"]["n_dropped_border"] == 4


def test_synthetic_labels_follow_the_cell_state_in_partly_paired_data():
    """Shared cells carry the same label in every modality, and each cell's label is that
    of its true state (nearest cluster centre of X_true)."""
    from transmodal.datasets import synthetic, true_pairs

    data = synthetic(300, paired=0.3, seed=0, n_features=8)
    ra, rb = true_pairs(data, "rna", "atac")
    np.testing.assert_array_equal(
        data["rna"].obs["label"].to_numpy()[ra], data["atac"].obs["label"].to_numpy()[rb]
    )
    for a in data.values():
        z, lab = a.obsm["X_true"], a.obs["label"].to_numpy()
        centres = {c: z[lab == c].mean(0) for c in np.unique(lab)}
        names = list(centres)
        nearest = np.array(names)[np.argmin(
            [np.linalg.norm(z - centres[c], axis=1) for c in names], axis=0)]
        assert (nearest == lab).mean() > 0.9


# ------------------------------------------------------------------ baselines/_cca.py (BL2)
def test_cca_translation_is_informative_in_both_directions():
    """translate_y_to_x, like translate_x_to_y, beats predicting x's mean profile."""
    from test_baselines_paired import simulate
    from transmodal.baselines._cca import CCA

    x, y, _ = simulate()
    cca = CCA(n_components=5).fit(x, y)
    for pred, truth in ((cca.translate_x_to_y(x, space="log"), y),
                        (cca.translate_y_to_x(y, space="log"), x)):
        t = np.log1p(truth)
        assert np.mean((pred - t) ** 2) < 0.7 * np.mean((t - t.mean(0)) ** 2)


# ------------------------------------------------------------------ baselines/_gan.py (GN1)
def test_gan_generators_are_trained_to_pass_as_real(monkeypatch):
    """Documented loss: generators ``adv(D_y(G(x)), real) + adv(D_x(F(y)), real)``,
    discriminators ``(adv(D(real), real) + adv(D(fake), fake)) / 2`` per modality."""
    from test_baselines_paired import simulate
    from transmodal.baselines._gan import CycleGAN

    x, y, _ = simulate(60)
    calls = []
    real_adv = CycleGAN._adv

    def adv(self, logits, real):
        calls.append(real)
        return real_adv(self, logits, real)

    monkeypatch.setattr(CycleGAN, "_adv", adv)
    CycleGAN(hidden_g=(8,), hidden_d=(8,), max_epochs=1, batch_size=30).fit(x, y)
    flags = np.array(calls).reshape(-1, 6)  # per step: 2 generator, 4 disc.
    assert flags[:, :2].all()                        # generators: their fakes as real
    assert (flags[:, 2:] == [True, False, True, False]).all()


# ------------------------------------------------------------------ images/_files.py (F1)
def test_folder_pairs_match_masks_by_name_beside_extra_masks(tmp_path):
    """Image and mask folders are matched by file name: an extra mask (of no image) does
    not shift the pairing."""
    import tifffile

    img, mask = _nuclei_scene(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", tifffile.imread(img))
        tifffile.imwrite(tmp_path / "labels" / f"{name}.tif", tifffile.imread(mask))
    tifffile.imwrite(tmp_path / "labels" / "_extra.tif", np.ones((30, 30), np.uint16))
    nuclei = tm.images.read_nuclei(tmp_path, crop_size=16, min_area=1)
    assert list(nuclei.obs_names) == ["a_1", "a_2", "b_1", "b_2"]


# ------------------------------------------------------------------ nn/_conv.py (CV1)
def test_conv_encoder_without_standardisation():
    from transmodal.nn._conv import ConvEncoder

    enc = ConvEncoder((1, 8, 8), 4, (4,), dropout=0.0, standardize=False)
    assert isinstance(enc.standardize, torch.nn.Identity)
    enc.train()
    z = enc(torch.rand(16, 64) * 10)
    assert not torch.allclose(z.mean(0), torch.zeros(4), atol=1e-3)  # not batch-normalised


# ------------------------------------------------------------------ model/_io.py (I5)
@pytest.mark.filterwarnings("ignore:Label predictions come from an untrained model")
def test_save_load_keeps_the_order_of_numeric_label_classes(paired_data, make_model, tmp_path):
    """Classes "2" and "10" (ordered by value: the classifier's outputs) keep their order
    through save / load, so the loaded model predicts the same labels."""
    data = {k: a.copy() for k, a in paired_data.items()}
    for a in data.values():
        a.obs["label"] = np.where(np.arange(a.n_obs) % 2 == 0, "2", "10")
    model = make_model(data, labels_key="label", seed=0)
    assert model.label_categories_ == ["2", "10"]
    model.save(tmp_path / "m")
    loaded = tm.CrossModalAE.load(tmp_path / "m", data)
    assert loaded.label_categories_ == model.label_categories_
    np.testing.assert_array_equal(
        np.asarray(loaded.predict_labels("rna")), np.asarray(model.predict_labels("rna"))
    )
