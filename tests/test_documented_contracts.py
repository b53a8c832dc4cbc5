"""Documented behaviours that no other test pinned down, one test each (found by mutation
testing: each test fails when its behaviour is broken): the CLI's subset and runs settings,
the metric directions of the evaluation workflows, posterior sampling, saved label order,
baselines, image filters, the synthetic generator's pairs, labels and simulation model; the
analyses on translated data (ROC, enrichment, cluster robustness), the input transform and
its fitting, image augmentation, saved feature annotations, the consensus table, DCCA,
optimal transport, the profile clustering, Lightning's settings and the read-ahead threads.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import warnings
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy import stats
from sklearn.linear_model import LogisticRegression

import transmodal as tm
from transmodal.analysis import cluster_robustness, enrichment, read_gmt, translated_classifier_roc
from transmodal.data import setup_data
from transmodal.metrics import cluster_accuracy, label_transfer
from transmodal.model import _split
from transmodal.model._split import validation_masks

from test_analysis import roc_data  # (separable classes, as the ROC tests draw them)

matplotlib.use("Agg")  # (before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402


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


# ============================================ mutation testing, fourth round
# ----------------------------------------------------------------- ROC
def test_roc_multiclass_leaves_classes_absent_from_translated_out():
    """Docstring: per-class curves only for classes present among the translated cells;
    the macro AUC leaves absent classes out."""
    x, y = roc_data(0, n_classes=3)
    xt, yt = roc_data(1, n_classes=3)
    keep = yt != "t2"
    res = translated_classifier_roc(x, y, xt[keep], yt[keep], classifier=LogisticRegression())
    assert set(res.curves) == {"t0", "t1"}
    assert np.isfinite(res.auc)
    assert res.auc == pytest.approx(np.mean([res.curves[c].auc for c in ("t0", "t1")]))


def test_roc_counts_train_and_test_cells_separately():
    x, y = roc_data(0, n=120)
    xt, yt = roc_data(1, n=60)
    res = translated_classifier_roc(x, y, xt, yt, classifier=LogisticRegression())
    assert (res.n_train, res.n_test) == (120, 60)
    assert res.to_dict()["n_test"] == 60


# ---------------------------------------------------------- enrichment
def _sets():
    universe = [f"G{i}" for i in range(100)]
    sets = {"A": [f"G{i}" for i in range(10)] + ["X1", "X2"],  # 2 genes outside the universe
            "B": [f"G{i}" for i in range(10, 40)],
            "C": [f"G{i}" for i in range(40, 45)]}
    markers = ["G3", "G1", "G2", "G11", "NOT_IN_U", "G1"]
    return universe, sets, markers


def test_enrichment_hand_computed_row():
    """size = |S & U|, expected = |M| |S&U| / |U|, p = P(X >= overlap), markers outside U dropped,
    genes in marker order."""
    universe, sets, markers = _sets()
    res = enrichment(markers, sets, universe=universe).set_index("set")
    a = res.loc["A"]
    n_m = 4  # G3, G1, G2, G11 (duplicates once, NOT_IN_U dropped)
    assert a["size"] == 10 and a["overlap"] == 3
    assert a["expected"] == pytest.approx(n_m * 10 / 100)
    assert a["fold_enrichment"] == pytest.approx(3 / (n_m * 10 / 100))
    assert a["pval"] == pytest.approx(stats.hypergeom.sf(2, 100, 10, n_m))
    assert list(a["genes"]) == ["G3", "G1", "G2"]
    assert res.attrs["n_markers"] == n_m and res.attrs["n_dropped"] == 1
    assert res.attrs["n_universe"] == 100


def test_enrichment_size_bounds_are_inclusive():
    universe, sets, markers = _sets()
    only = enrichment(markers, sets, universe=universe, min_size=10, max_size=10)
    assert list(only["set"]) == ["A"]
    assert set(enrichment(markers, sets, universe=universe, min_size=5, max_size=30)["set"]) == {"A", "B", "C"}


def test_read_gmt_skips_description_and_keeps_duplicates_once(tmp_path):
    p = tmp_path / "s.gmt"
    p.write_text("S1\tsome description\tG1\tG2\tG1\t\tG3\n\nS2\thttp://x\tG4\n")
    assert read_gmt(p) == {"S1": ["G1", "G2", "G3"], "S2": ["G4"]}


# ---------------------------------------------------------- robustness
def _blobs(n_per=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per)
    return 8.0 * np.eye(3, 2)[labels] + rng.normal(size=(3 * n_per, 2)), labels


def test_cluster_robustness_ensemble_uses_each_method_s_own_labels():
    """The gmm_k columns hold the Gaussian mixture's labels, not k-means'."""
    from sklearn.mixture import GaussianMixture

    x, _ = _blobs()
    x = x * np.array([1.0, 6.0])  # anisotropic: k-means and a full-covariance GMM differ
    res = cluster_robustness(x, k_range=[4], gmm_components=[1], knn=(10,), n_init=2,
                             methods=("gmm",))
    # (fitted on the cells sorted by their coordinates, as cluster_robustness does)
    gm = GaussianMixture(4, n_init=2, random_state=0).fit(x[np.lexsort(x.T[::-1])])
    np.testing.assert_array_equal(res.partitions["gmm_k4"].to_numpy(), gm.predict(x))


def test_cluster_robustness_lifetime_ties_go_to_the_smaller_k():
    """Docstring: 'Ties go to the smaller k'. Two nested k-means partitions (2 pairs of 2
    tight blobs) give lifetimes 0.5 for k = 2 and k = 4 exactly."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [1000.0, 0.0], [1010.0, 0.0]])
    x = np.repeat(centers, 15, axis=0) + 0.01 * rng.normal(size=(60, 2))
    res = cluster_robustness(x, k_range=[2, 4], methods=("kmeans",), knn=(10,),
                             gmm_components=[1], n_init=2)
    assert res.lifetimes[2] == pytest.approx(0.5) and res.lifetimes[4] == pytest.approx(0.5)
    assert res.suggested_k == 2


# ------------------------------------------------------------- inputs
def test_roc_refuses_missing_labels():
    """_inputs.get_labels: missing values are refused (no allow_missing here)."""
    x, y = roc_data(0)
    xt, yt = roc_data(1)
    y = y.astype(object)
    y[3] = None
    with pytest.raises(ValueError, match="1 cells have no label"):
        translated_classifier_roc(x, y, xt, yt, classifier=LogisticRegression())


def test_cluster_robustness_refuses_non_finite_latent_with_its_own_message():
    x, _ = _blobs()
    x[5, 1] = np.nan
    with pytest.raises(ValueError, match="latent holds NaN or infinite"):
        cluster_robustness(x, k_range=[2, 3], knn=(10,), n_init=1)


def test_roc_reads_the_named_layers():

    x, y = roc_data(0)
    xt, yt = roc_data(1)
    rng = np.random.default_rng(5)
    real = ad.AnnData(rng.normal(size=x.shape), layers={"signal": x})  # X: pure noise
    trans = ad.AnnData(rng.normal(size=xt.shape), layers={"signal": xt})
    res = translated_classifier_roc(real, y, trans, yt, layer_real="signal",
                                    layer_translated="signal", classifier=LogisticRegression())
    assert res.auc > 0.95


# ------------------------------------------------------- preprocessing
def _transform_fit(x, idx=None, **opts):
    from transmodal.data import fit_preprocessing
    from transmodal.data._source import MatrixSource
    from transmodal.nn import InputTransform

    o = tm.Modality("poisson", **opts).resolved()
    t = InputTransform(x.shape[1], **o)
    src = MatrixSource(x, name="m", where="X")
    fit_preprocessing(t, src, np.arange(x.shape[0]) if idx is None else idx, seed=0)
    return t


def test_n_pca_up_to_min_of_training_cells_and_features_is_allowed():
    """'n_pca exceeds min(n_train_cells, n_features)' is the error: equality is fine."""
    x = np.random.default_rng(0).poisson(3.0, size=(30, 10)).astype(np.float32)
    t = _transform_fit(x, idx=np.arange(8), n_pca=8)
    assert t.n_input == 8


def test_inverse_undoes_scaling_and_log1p():

    x = np.random.default_rng(0).poisson(5.0, size=(40, 12)).astype(np.float32)
    t = _transform_fit(x, normalize=True, log1p=True, scale=True)
    assert float(t.std.min()) != 1.0 or float(t.mean.abs().max()) > 0  # really scaled
    with torch.no_grad():
        back = t.inverse(t.process(torch.from_numpy(x))).numpy()
    lib = float(t.target_sum)
    np.testing.assert_allclose(back, x / x.sum(1, keepdims=True) * lib, rtol=1e-4, atol=1e-4)


def test_scaling_of_a_feature_in_tiny_units():
    """_preprocess: constancy judged relative to the magnitude (x * 1e-7 is scaled)."""
    from transmodal.data import fit_preprocessing
    from transmodal.data._source import MatrixSource
    from transmodal.nn import InputTransform

    x = (np.random.default_rng(0).normal(size=(60, 3)) * np.array([1.0, 1e-7, 1.0])).astype(np.float32)
    t = InputTransform(3, **tm.Modality("gaussian").resolved())
    fit_preprocessing(t, MatrixSource(x, name="m", where="X"), np.arange(60))
    assert float(t.std[1]) == pytest.approx(float(x[:, 1].std()), rel=1e-3)


def test_all_zero_cell_is_processed_to_finite_values():
    """Library normalisation of an all-zero cell (library 0) must not divide by zero."""
    x = np.random.default_rng(0).poisson(5.0, size=(40, 12)).astype(np.float32)
    t = _transform_fit(x, normalize=True, log1p=True, scale=True)
    with torch.no_grad():
        p = t.process(torch.zeros(2, 12))
    assert torch.isfinite(p).all()


def test_pca_input_is_centred_without_scaling():
    """n_pca without scale: the encoder sees principal components (centred projections),
    the same as sklearn's PCA.transform of the processed data."""

    x = np.random.default_rng(0).poisson(5.0, size=(60, 12)).astype(np.float32)
    t = _transform_fit(x, normalize=True, log1p=True, scale=False, n_pca=3)
    with torch.no_grad():
        enc = t.encoder_input(t.process(torch.from_numpy(x))).numpy()
    np.testing.assert_allclose(enc.mean(0), 0.0, atol=1e-4)


def test_inverse_gives_non_negative_normalised_values():
    """inverse() returns normalised (count-like) units: never negative, even for decoded
    values below the log1p of 0."""

    x = np.random.default_rng(0).poisson(5.0, size=(40, 12)).astype(np.float32)
    t = _transform_fit(x, normalize=True, log1p=True, scale=True)
    with torch.no_grad():
        back = t.inverse(torch.full((2, 12), -50.0))
    assert (back >= 0).all()


def test_library_counts_unmeasured_entries_as_zero():
    """InputTransform.library: row sums of the raw data; unmeasured (NaN) entries count 0."""
    from transmodal.nn import InputTransform

    t = InputTransform(4, normalize=True, log1p=False, scale=False, missing=True)
    x = torch.tensor([[1.0, float("nan"), 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    torch.testing.assert_close(t.library(x), torch.tensor([8.0, 8.0]))
    p = t.process(x)  # the measured entries of the first cell keep their normalised values
    torch.testing.assert_close(p[0, [0, 2, 3]], torch.tensor([1.0, 3.0, 4.0]) / 8.0)


# ------------------------------------------------------------------ conv
def _views_seen(shape, n=400):
    from transmodal.nn._conv import random_dihedral

    torch.manual_seed(0)
    one = torch.arange(int(np.prod(shape)), dtype=torch.float32)
    y = random_dihedral(one.repeat(n, 1), shape)
    return {tuple(r.tolist()) for r in y}


def test_random_dihedral_draws_every_element_of_the_group():
    """Square images: flips of every spatial axis and 90-degree rotations: all 8 elements
    of the dihedral group; non-square: all 4 flips; z-stacks: the z flip too."""
    assert len(_views_seen((1, 3, 3))) == 8
    assert len(_views_seen((1, 2, 3))) == 4
    assert len(_views_seen((1, 2, 3, 3))) == 16


# ------------------------------------------------------------------- var
def test_encode_var_leaves_out_nullable_integers_beyond_2_53_and_round_trips_the_rest():
    from transmodal.model._var import decode_var, encode_var

    var = pd.DataFrame({
        "big": pd.array([2**60 + 1, None, 3], dtype="Int64"),
        "small": pd.array([1, None, 3], dtype="Int64"),
        "level": pd.Categorical(["b", "a", "b"], categories=["b", "a"], ordered=True),
    }, index=["f0", "f1", "f2"])
    meta, tensors = encode_var(var, "v")
    assert [m["name"] for m in meta] == ["small", "level"]
    back = decode_var(meta, tensors, "v", list(var.index), "var")
    pd.testing.assert_frame_equal(back, var.drop(columns="big"), check_index_type=False)


# ------------------------------------------------------------- baselines
def test_dcca_last_small_batch_is_merged_into_the_previous():
    """DCCA: a last batch smaller than max(batch_size // 2, 2 * n_components) is merged."""
    from transmodal.baselines._dcca import _batches

    sizes = [len(b) for b in _batches(np.arange(10), 4, 3)]
    assert sizes == [4, 6]
    assert [len(b) for b in _batches(np.arange(11), 4, 3)] == [4, 4, 3]


def test_ot_geodesic_of_disconnected_graph_uses_largest_finite_distance():
    """Pairs in different connected components get the largest finite distance; then all
    is divided by the maximum (so the largest within-component distance is 1 too)."""
    from transmodal.baselines import GromovWassersteinOT

    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 2))
    feat = np.vstack([a, a + 1000.0])  # two components of a 3-NN graph
    ot_ = GromovWassersteinOT(n_neighbors=3)
    d = ot_._geodesic(feat)
    assert np.isfinite(d).all() and d.max() == pytest.approx(1.0)
    assert d[:20, :20].max() == pytest.approx(1.0)
    np.testing.assert_allclose(d[:20, 20:], 1.0)


def test_ot_solver_refuses_a_coupling_without_unit_mass(monkeypatch):
    """_solve: a total mass other than 1 is a numerical failure (epsilon doubled)."""
    from transmodal.baselines import GromovWassersteinOT, _ot

    calls = []

    def fake(cx, cy, epsilon, **kw):
        calls.append(epsilon)
        t = np.full((len(cx), len(cy)), 1.0 / (len(cx) * len(cy)))
        return (t * 0.5 if len(calls) == 1 else t), 0.0

    monkeypatch.setattr(_ot, "entropic_gw", fake)
    m = GromovWassersteinOT(epsilon=1e-2, n_retries=2)
    c, eps, _ = m._solve(np.zeros((4, 4)), np.zeros((5, 5)))
    assert calls == [1e-2, 2e-2] and eps == 2e-2
    assert c.sum() == pytest.approx(1.0)


# ------------------------------------------------------------ image clusters
def test_cluster_profiles_default_cut_is_the_paper_height():
    """No n_clusters / height: cut at the largest merge height / 1.3 (Yang et al. 2021)."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score


    x = np.random.default_rng(1).random((40, 8))
    xc = x[np.lexsort(x.T[::-1])]  # the canonical order the function uses
    tree = linkage(tm.images.spearman_distance(xc, condensed=True), "complete")
    expected = fcluster(tree, tree[:, 2].max() / 1.3, "distance")
    got = tm.images.cluster_profiles(xc, tie_break=None)
    assert len(set(got)) == len(set(expected))
    assert adjusted_rand_score(expected, got) == 1


def test_cluster_stability_subsamples_the_given_fraction_and_resolves_ties_plainly(monkeypatch):
    """subsample: a random subset of `fraction` of the rows; tie_order: no tie break."""
    from transmodal.images import _cluster

    rng = np.random.default_rng(0)
    x = rng.random((30, 6))
    sizes, tie_breaks = [], []
    real_profiles, real_cut = _cluster.cluster_profiles, _cluster._cut

    def profiles(p, **kw):
        sizes.append(len(p))
        return real_profiles(p, **kw)

    def cut(p, n_clusters, height, tie_break):
        tie_breaks.append(tie_break)
        return real_cut(p, n_clusters, height, tie_break)

    monkeypatch.setattr(_cluster, "cluster_profiles", profiles)
    monkeypatch.setattr(_cluster, "_cut", cut)
    tm.images.cluster_stability(x, n_clusters=2, n_resamples=2, fraction=0.5)
    assert 15 in sizes
    assert None in tie_breaks and "pearson" in tie_breaks


# ----------------------------------------------------------------- checks
def test_check_seed_and_prior_bounds():
    from transmodal.model._checks import check_number, check_prior, check_seed

    check_seed(2**63 - 1)
    with pytest.raises(ValueError, match=r"\[0, 2\*\*63\)"):
        check_seed(2**63)
    with pytest.raises(ValueError, match="anchor modality 'protein' is not one of"):
        check_prior("anchor:protein", ["rna", "atac"])
    assert check_prior("anchor:rna", ["rna", "atac"]) == "rna"
    with pytest.raises(ValueError, match="> 0"):
        check_number("lr", 0.0, strict=True)


def test_ot_project_x_with_unequal_cell_numbers_averages_x_by_columns():
    """project='x': y_aligned = (T / T.sum(0)).T @ x_features, each y cell a weighted mean of
    x cells (checked where n_x != n_y, so row and column sums differ)."""
    from transmodal.baselines import GromovWassersteinOT

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(50, 4))
    m = GromovWassersteinOT(n_neighbors=5, n_components=None, epsilon=5e-2, max_iter=30,
                            project="x").fit(x, y)
    t = m.coupling_
    np.testing.assert_allclose(m.y_aligned_, (t / t.sum(0, keepdims=True)).T @ m.x_features_)


def test_ot_scale_standardises_each_feature():
    from transmodal.baselines import GromovWassersteinOT

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)) * np.array([1.0, 100.0, 0.01])
    m = GromovWassersteinOT(n_neighbors=5, n_components=None, epsilon=5e-2, max_iter=10).fit(x, x)
    np.testing.assert_allclose(m.x_features_.std(0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m.x_features_.mean(0), 0.0, atol=1e-9)


def test_dcca_loss_is_shift_invariant():
    """Canonical correlations do not change when a constant is added to an output."""
    from transmodal.baselines._dcca import dcca_loss

    g = torch.Generator().manual_seed(0)
    h1, h2 = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    h2 = h2 + 0.5 * h1
    torch.testing.assert_close(dcca_loss(h1 + 5.0, h2 - 3.0), dcca_loss(h1, h2))


def test_dcca_history_is_weighted_by_batch_size(monkeypatch):
    """history_['loss']: mean minibatch loss weighted by batch size."""
    from transmodal.baselines import DCCA, _dcca

    real = _dcca.dcca_loss
    monkeypatch.setattr(_dcca, "dcca_loss",
                        lambda h1, h2, *a: real(h1, h2, *a) * 0.0 - float(h1.shape[0]))
    rng = np.random.default_rng(0)
    x, y = rng.poisson(3.0, size=(60, 6)).astype(float), rng.poisson(3.0, size=(60, 5)).astype(float)
    m = DCCA(n_components=2, hidden=(4,), batch_size=25, max_epochs=1, n_pca=None).fit(x, y)
    # batches of 25 and 25 + 10 (the last one, < max(25 // 2, 4), is merged)
    assert m.history_["loss"][0] == pytest.approx(-(25 * 25 + 35 * 35) / 60)


def test_cluster_profiles_cluster_one_is_the_largest():

    rng = np.random.default_rng(0)
    base = np.linspace(1, 0.3, 10)
    x = np.vstack([base + 0.01 * rng.random((8, 10)), base[::-1] + 0.01 * rng.random((20, 10))])
    labels = tm.images.cluster_profiles(x, n_clusters=2)
    assert (labels == 1).sum() == 20 and (labels == 2).sum() == 8


def test_cluster_profiles_tie_break_does_not_depend_on_units():
    """The tie break adds 1e-6 * second / max(second): cut heights shift by at most 1e-6,
    whatever the profiles' units."""

    rng = np.random.default_rng(0)
    x = rng.random((30, 8))
    for tb in ("euclidean", "pearson"):
        a = tm.images.cluster_profiles(x, height=0.5, tie_break=tb)
        b = tm.images.cluster_profiles(x * 1e9, height=0.5, tie_break=tb)
        np.testing.assert_array_equal(a, b)
        assert len(set(a)) < 30


def test_train_consensus_table_names_both_runs_seeds(paired_data, make_model):

    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        run = tm.workflows.train_consensus(lambda s: make_model(paired_data, seed=s),
                                           seeds=(7, 8, 9), k=10, max_epochs=1, batch_size=32,
                                           progress_bar=False)
    t = run.agreement
    seeds = (7, 8, 9)
    assert list(t["seed_a"]) == [seeds[i] for i in t["run_a"]]
    assert list(t["seed_b"]) == [seeds[i] for i in t["run_b"]]
    assert (t["seed_a"] != t["seed_b"]).all()


# ----------------------------------------------- mutation testing, round 5 (metrics, nn,
# data/_h5ad, images/_read, baselines/_gan, geometry/_procrustes, preprocessing, _utils)


def _two_blobs(n=40, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(["a", "b"], n // 2)
    x = rng.normal(size=(n, 3)) + (lab == "b")[:, None] * 5.0
    return x, lab


def test_cluster_accuracy_needs_labels_on_both_sides():
    x, lab = _two_blobs()
    none = np.array([None] * len(lab), dtype=object)
    for lx, ly in ((none, lab), (lab, none)):
        with pytest.raises(ValueError, match="labelled cells in both"):
            cluster_accuracy(x, x, lx, ly)


def test_label_transfer_k_zero_is_refused_by_transmodal():
    x, lab = _two_blobs()
    with pytest.raises(ValueError, match="k must be a positive integer"):
        label_transfer(x, lab, x, lab, k=0)


def test_label_transfer_k_equal_to_the_reference_size_is_allowed():
    x, lab = _two_blobs(n=10)
    # documented range 1 <= k <= n_ref: k = n_ref votes over the whole reference
    acc = label_transfer(x, lab, x, lab, k=10)
    assert acc == pytest.approx(0.5)  # tie of 5 vs 5 -> the smallest class, "a"


def test_label_transfer_ties_go_to_the_smallest_class_whatever_the_order():
    # reference: "b" listed first; k=2 with one neighbour of each class is a tie, which
    # sklearn (and the code's comment) resolves to the smallest class, "a"
    x_ref = np.array([[0.0], [1.0], [10.0], [11.0]])
    labels_ref = np.array(["b", "a", "a", "b"])
    x_query = np.array([[0.5]])
    assert label_transfer(x_ref, labels_ref, x_query, np.array(["a"]), k=2) == 1.0
    assert label_transfer(x_ref, labels_ref, x_query, np.array(["b"]), k=2) == 0.0


def test_mixing_accuracy_cv_one_is_refused_by_transmodal():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        mixing_accuracy(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), cv=1)


def test_mixing_accuracy_accepts_as_many_rows_as_folds():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    # documented: cv folds need cv rows per modality (fewer is the error)
    acc = mixing_accuracy(rng.normal(size=(5, 2)), rng.normal(size=(5, 2)) + 10.0, cv=5)
    assert acc == pytest.approx(1.0)


def test_mixing_accuracy_linear_standardises_features_first():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    # separable modalities in tiny units: without the documented StandardScaler the L2
    # penalty of the logistic regression flattens the classifier to chance
    x = rng.normal(size=(100, 2)) * 1e-4
    y = rng.normal(size=(100, 2)) * 1e-4 + 1e-3
    assert mixing_accuracy(x, y) > 0.95


def test_mixing_accuracy_max_cells_zero_is_refused_by_its_own_check():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_cells must be a positive integer"):
        mixing_accuracy(rng.normal(size=(20, 2)), rng.normal(size=(20, 2)), max_cells=0)


def test_mixing_accuracy_max_cells_draws_rows_at_random_not_the_first():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    # x: 200 cells of cluster A (far away) then 200 of cluster B; y: cluster B only.
    # A random half of x holds both clusters (partly mixed with y); the first half only A.
    x = np.concatenate([rng.normal(size=(200, 2)) - 20.0, rng.normal(size=(200, 2))])
    y = rng.normal(size=(400, 2))
    acc = mixing_accuracy(x, y, max_cells=200, classifier="knn")
    assert acc < 0.9


def test_translation_pearson_never_leaves_minus_one_to_one():
    from transmodal.metrics import translation_pearson
    rng = np.random.default_rng(0)
    p = rng.normal(size=(2000, 7))
    r = translation_pearson(p, 3.3 * p + 1.0)  # rounding puts many raw ratios above 1
    assert np.all(r <= 1.0) and np.all(r >= -1.0)
    np.testing.assert_allclose(r, 1.0)
    r = translation_pearson(p, -2.0 * p + 1.0)
    assert np.all(r >= -1.0)


def test_pred_constant_over_the_measured_features_gives_nan():
    from transmodal.metrics import translation_pearson
    # pred is constant (0.1) over the three measured features of obs; its centred values
    # are rounding errors (-1.4e-17), not zeros, so only the explicit check makes it NaN
    pred = np.array([[0.1, 0.1, 0.1, 5.0]])
    obs = np.array([[0.2, 0.5, 0.9, np.nan]])
    r = translation_pearson(pred, obs, missing=True)
    assert np.isnan(r[0])


def test_translation_pearson_of_one_feature_is_an_error():
    from transmodal.metrics import translation_pearson
    with pytest.raises(ValueError, match="at least 2 features"):
        translation_pearson(np.ones((3, 1)), np.ones((3, 1)))


def test_a_transform_that_makes_non_finite_values_is_an_error():
    from transmodal.metrics import translation_pearson
    rng = np.random.default_rng(0)
    pred = rng.uniform(1, 2, size=(4, 5))
    obs = pred.copy()
    obs[0, 0] = 0.0  # log(0) = -inf
    with np.errstate(divide="ignore"):
        with pytest.raises(ValueError, match="transform produced NaN or infinite"):
            translation_pearson(pred, obs, transform=np.log)


def test_procrustes_refuses_more_than_ten_dimensions():
    from transmodal.geometry import wasserstein_procrustes
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 11))
    with pytest.raises(ValueError, match="at most 10 dimensions"):
        wasserstein_procrustes(a, a, n_iter=0, n_search=2, n_refine=2)


def test_procrustes_accepts_zero_refinement_iterations():
    from transmodal.geometry import wasserstein_procrustes
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 2)) * [3.0, 1.0]
    q, cost = wasserstein_procrustes(a, a * [-1.0, 1.0], n_iter=0, n_search=50, n_refine=50)
    np.testing.assert_allclose(q @ q.T, np.eye(2), atol=1e-8)
    assert np.isfinite(cost)


def _met():
    import anndata as ad
    mc = np.array([[1, 0, 2], [0, 3, 1]], dtype=float)
    cov = np.array([[2, 0, 2], [1, 3, 4]], dtype=float)
    a = ad.AnnData(np.zeros((2, 3), dtype=np.float32))
    a.layers["mc"], a.layers["cov"] = mc, cov
    return a


def test_methylation_rates_key_added_with_slash_is_refused():
    from transmodal.preprocessing import methylation_rates
    with pytest.raises(ValueError, match="without '/'"):
        methylation_rates(_met(), key_added="rates/x")
    # the rates never replace the read counts they are computed from
    met = _met()
    for layer, reads in (("mc", "methylated"), ("cov", "covering")):
        with pytest.raises(ValueError, match=rf"key_added='{layer}' is the layer of the {reads} "
                           r"reads; the rates go to a layer of their own"):
            methylation_rates(met, key_added=layer)
    np.testing.assert_array_equal(met.layers["mc"], _met().layers["mc"])


def test_methylation_rates_error_names_the_cell_in_a_later_chunk():
    import anndata as ad
    from transmodal.preprocessing import methylation_rates
    a = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    a.obs_names, a.var_names = ["c0", "c1", "c2"], ["r0", "r1"]
    a.layers["mc"] = np.array([[0, 0], [0, 0], [0, 5.0]])
    a.layers["cov"] = np.array([[1, 1], [1, 1], [1, 2.0]])
    with pytest.raises(ValueError, match="cell 'c2', region 'r1'"):
        methylation_rates(a, chunk_size=1)


def test_modality_hidden_width_zero_is_refused():
    import transmodal as tm
    with pytest.raises(ValueError, match="'hidden' must be a list of positive integers"):
        tm.Modality("gaussian", hidden=(64, 0)).check("rna")


def test_image_modalities_are_not_standardised_by_default():
    import transmodal as tm
    assert tm.Modality("gaussian").resolved(image=True)["scale"] is False
    assert tm.Modality("gaussian").resolved(image=False)["scale"] is True
    assert tm.Modality("gaussian", scale=True).resolved(image=True)["scale"] is True


def test_output_file_suffix_is_case_insensitive(tmp_path):
    from transmodal.data._h5ad import check_output_h5ad
    check_output_h5ad(tmp_path / "out.H5AD", [None])  # accepted, as .h5ad
    with pytest.raises(ValueError, match="must be an .h5ad file path"):
        check_output_h5ad(tmp_path / "out.h5", [None])


def test_too_few_rows_written_is_an_error_and_leaves_no_file(tmp_path):
    from transmodal.data._h5ad import write_rows_h5ad
    obs = pd.DataFrame(index=["a", "b", "c"])
    var = pd.DataFrame(index=["g0", "g1"])
    out = tmp_path / "x.h5ad"
    with pytest.raises(ValueError, match="only 2 of 3 rows were written"):
        write_rows_h5ad(out, iter([np.ones((2, 2), np.float32)]), n_obs=3, obs=obs, var=var)
    assert not out.exists()


def test_obs_of_another_length_than_n_obs_is_refused(tmp_path):
    from transmodal.data._h5ad import write_rows_h5ad
    obs = pd.DataFrame(index=["a", "b"])
    var = pd.DataFrame(index=["g0", "g1"])
    out = tmp_path / "x.h5ad"
    with pytest.raises(ValueError, match="obs has 2 rows, expected 3"):
        write_rows_h5ad(out, iter([np.ones((3, 2), np.float32)]), n_obs=3, obs=obs, var=var)
    assert not out.exists()


def test_the_block_generator_is_closed_at_once_when_writing_fails(tmp_path):
    from transmodal.data._h5ad import write_rows_h5ad
    closed = []

    def blocks():
        try:
            while True:
                yield np.ones((2, 2), np.float32)
        finally:
            closed.append(True)

    gen = blocks()  # (held here: garbage collection would close it only later)
    obs, var = pd.DataFrame(index=list("abc")), pd.DataFrame(index=["g0", "g1"])
    with pytest.raises(ValueError, match="rows written"):
        write_rows_h5ad(tmp_path / "x.h5ad", gen, n_obs=3, obs=obs, var=var)
    assert closed == [True]


def test_csr_block_with_other_columns_is_refused(tmp_path):
    import h5py
    from transmodal.data._h5ad import CSRRows
    with h5py.File(tmp_path / "m.h5", "w") as f:
        w = CSRRows(f, "X", n_obs=2, n_vars=2)
        with pytest.raises(ValueError, match="block has 3 columns, expected 2"):
            w.write(np.eye(2, 3, dtype=np.float32))


def _nuclei_files(tmp_path, ndim=2):
    import tifffile
    shape = (40, 40) if ndim == 2 else (12, 40, 40)
    labels = np.zeros(shape, np.uint16)
    image = np.zeros(shape, np.float32)
    sl = (slice(10, 20), slice(10, 20)) if ndim == 2 else (slice(3, 8), slice(10, 20), slice(10, 20))
    labels[sl] = 1
    image[sl] = 5.0
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", labels)
    return tmp_path / "img.tif", tmp_path / "mask.tif"


def test_crop_axes_are_channel_then_spatial_axes(tmp_path):
    from transmodal.images import read_nuclei
    img, mask = _nuclei_files(tmp_path, 2)
    ad2 = read_nuclei([(img, mask)], crop_size=16, min_area=1)
    assert ad2.uns["crops"]["axes"] == "cyx"
    img, mask = _nuclei_files(tmp_path, 3)
    ad3 = read_nuclei([(img, mask)], crop_size=(8, 16, 16), min_area=1)
    assert ad3.uns["crops"]["axes"] == "czyx"


def test_crop_size_zero_is_refused(tmp_path):
    from transmodal.images import read_nuclei
    img, mask = _nuclei_files(tmp_path, 2)
    with pytest.raises(ValueError, match="crop_size=0: expected a positive integer"):
        read_nuclei([(img, mask)], crop_size=0, min_area=1)


def test_crops_over_4_gib_warn_before_allocation():
    from transmodal.images._read import CROP_MEMORY_WARN, _warn_crop_memory
    # 2**20 nuclei x 32 x 32 x (4 bytes x 1 channel + 1 byte mask) = 5 GiB
    assert 2**20 * 32 * 32 * 5 > CROP_MEMORY_WARN
    with pytest.warns(UserWarning, match="GiB"):
        _warn_crop_memory(2**20, 1, (32, 32))


def test_image_id_categories_keep_the_order_of_the_images(tmp_path):
    import shutil
    from transmodal.images import read_nuclei
    img, mask = _nuclei_files(tmp_path, 2)
    for name in ("b", "a"):
        shutil.copy(img, tmp_path / f"{name}.tif")
        shutil.copy(mask, tmp_path / f"{name}_mask.tif")
    ad = read_nuclei([(tmp_path / "b.tif", tmp_path / "b_mask.tif"),
                      (tmp_path / "a.tif", tmp_path / "a_mask.tif")], crop_size=16, min_area=1)
    assert list(ad.obs["image_id"].cat.categories) == ["b", "a"]
    assert list(ad.obs_names) == ["b_1", "a_1"]


def test_crop_memory_counts_every_channel_and_the_masks():
    from transmodal.images._read import _warn_crop_memory
    # 2**18 nuclei x 32 x 32 x (4 bytes x 4 channels + 1) = 4.25 GiB
    with pytest.warns(UserWarning, match="4 channel"):
        _warn_crop_memory(2**18, 4, (32, 32))


def _gan_counts() -> tuple[np.ndarray, np.ndarray]:
    """Two small count matrices (32 cells; 12 and 9 features) for the GAN baselines."""
    rng = np.random.default_rng(0)
    return (rng.poisson(3.0, size=(32, 12)).astype(float),
            rng.poisson(2.0, size=(32, 9)).astype(float))


def test_cycle_loss_is_the_documented_l1():
    import torch
    from transmodal.baselines import CycleGAN
    x, y = _gan_counts()
    # one full batch, a learning rate too small to move the weights: the logged cycle term
    # is the loss of the final networks on all cells
    m = CycleGAN(max_epochs=1, batch_size=32, lr=1e-12, n_pca=None, hidden_g=(16,),
                 hidden_d=(8,)).fit(x, y)
    fx, fy = m.x_features_, m.y_features_
    with torch.no_grad():
        tx, ty = torch.as_tensor(fx, dtype=torch.float32), torch.as_tensor(fy, dtype=torch.float32)
        l1 = (m.f_(m.g_(tx)) - tx).abs().mean() + (m.g_(m.f_(ty)) - ty).abs().mean()
    assert m.history_["cycle"][0] == pytest.approx(float(l1), rel=1e-4)


def test_an_epoch_has_ceil_of_the_larger_modality_over_batch_size_steps(monkeypatch):
    import transmodal.baselines._gan as gan
    lengths = []
    orig = gan._cycle_order
    monkeypatch.setattr(gan, "_cycle_order", lambda rng, n, length: (lengths.append(length), orig(rng, n, length))[1])
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(10, 6)).astype(float)
    y = rng.poisson(2.0, size=(45, 5)).astype(float)
    gan.CycleGAN(max_epochs=1, batch_size=10, n_pca=None, hidden_g=(8,), hidden_d=(8,)).fit(x, y)
    assert lengths == [50, 50]  # ceil(45 / 10) = 5 steps of 10 cells of each modality


def test_discriminator_loss_is_the_mean_of_the_two_halves():
    import torch
    from transmodal.baselines import CycleGAN
    x, y = _gan_counts()
    m = CycleGAN(max_epochs=1, batch_size=32, lr=1e-12, n_pca=None, hidden_g=(16,),
                 hidden_d=(8,)).fit(x, y)
    tx = torch.as_tensor(m.x_features_, dtype=torch.float32)
    ty = torch.as_tensor(m.y_features_, dtype=torch.float32)
    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        dy_real, dy_fake = m.d_y_(ty), m.d_y_(m.g_(tx))
        dx_real, dx_fake = m.d_x_(tx), m.d_x_(m.f_(ty))
        want = 0.5 * (mse(dy_real, torch.ones_like(dy_real)) + mse(dy_fake, torch.zeros_like(dy_fake))
                      + mse(dx_real, torch.ones_like(dx_real)) + mse(dx_fake, torch.zeros_like(dx_fake)))
    assert m.history_["discriminator"][0] == pytest.approx(float(want), rel=1e-4)


def test_embeddings_are_copies_the_caller_may_change():
    from transmodal.baselines import CycleGAN
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(20, 6)).astype(float)
    y = rng.poisson(2.0, size=(20, 5)).astype(float)
    m = CycleGAN(max_epochs=1, batch_size=10, n_pca=None, hidden_g=(8,), hidden_d=(8,)).fit(x, y)
    for embed in (m.embed_x, m.embed_y):
        e = embed()
        before = e.copy()
        e[:] = 0.0
        np.testing.assert_array_equal(embed(), before)


def test_adam_beta_of_one_is_refused():
    from transmodal.baselines import CycleGAN
    for betas in ((0.5, 1.0), (1.0, 0.999)):
        with pytest.raises(ValueError, match=r"betas must be two numbers in \[0, 1\)"):
            CycleGAN(betas=betas)


def test_magan_pair_loss_covers_both_directions():
    import torch
    from transmodal.baselines import MAGAN
    x, y = _gan_counts()
    ix = iy = np.arange(8)
    m = MAGAN(max_epochs=1, batch_size=32, lr=1e-12, n_pca=None, hidden_g=(16,),
              hidden_d=(8,), lam_pairs=2.0).fit(x, y, pairs=(ix, iy))
    px = torch.as_tensor(m.x_features_[ix], dtype=torch.float32)
    py = torch.as_tensor(m.y_features_[iy], dtype=torch.float32)
    mse = torch.nn.functional.mse_loss
    with torch.no_grad():
        want = 2.0 * (mse(m.g_(px), py) + mse(m.f_(py), px))
    assert m.history_["supervised"][0] == pytest.approx(float(want), rel=1e-4)


def test_magan_with_pairs_is_deterministic_for_a_seed():
    from transmodal.baselines import MAGAN
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(24, 6)).astype(float)
    y = rng.poisson(2.0, size=(24, 5)).astype(float)
    ix = iy = np.arange(12)  # more pairs than a batch: the pair order matters

    def fit():
        return MAGAN(max_epochs=2, batch_size=4, n_pca=None, hidden_g=(8,), hidden_d=(8,),
                     seed=3).fit(x, y, pairs=(ix, iy)).translate_x_to_y(x)

    np.testing.assert_array_equal(fit(), fit())


def test_lam_cycle_zero_turns_the_cycle_term_off_and_is_allowed():
    from transmodal.baselines import CycleGAN
    assert CycleGAN(lam_cycle=0.0).lam_cycle == 0.0
    with pytest.raises(ValueError, match="lam_cycle must be a finite number >= 0"):
        CycleGAN(lam_cycle=-1.0)


def test_mlp_hidden_layers_are_layer_normalised():
    from torch import nn
    from transmodal.nn._mlp import mlp
    kinds = [type(m) for m in mlp(4, (8, 6), 2)]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.LeakyReLU, nn.Linear, nn.LayerNorm,
                     nn.LeakyReLU, nn.Linear]
    assert nn.LayerNorm not in [type(m) for m in mlp(4, (8,), 2, norm=False)]


def test_exact_statistics_of_a_single_cell_keep_the_old_ones():
    import torch
    from transmodal.nn._mlp import MLPEncoder
    torch.manual_seed(0)
    enc = MLPEncoder(3, 2, (4,))
    before = enc.standardize.running_var.clone()
    with enc.exact_statistics():
        enc(torch.randn(1, 3))
    torch.testing.assert_close(enc.standardize.running_var, before)


def test_variational_log_variance_is_bounded():
    import torch
    from transmodal.nn._mlp import MLPEncoder
    torch.manual_seed(0)
    enc = MLPEncoder(3, 2, (4,), variational=True).eval()
    with torch.no_grad():
        enc.net[-1].bias[2:] = 100.0   # the log-variance half
        _, hi = enc.distribution(torch.randn(5, 3))
        enc.net[-1].bias[2:] = -100.0
        _, lo = enc.distribution(torch.randn(5, 3))
    assert float(hi.max()) <= 6.0 and float(lo.min()) >= -10.0


def test_decoder_hands_its_last_hidden_width_to_the_head():
    import torch
    from transmodal.nn._mlp import MLPDecoder
    dec = MLPDecoder(2, (8, 5))
    assert dec.n_out == 5 == dec(torch.zeros(3, 2)).shape[1]
    assert MLPDecoder(2, ()).n_out == 2


def test_batch_moments_are_dropped_when_the_encoder_leaves_training():
    import torch
    from transmodal.nn._mlp import MLPEncoder
    enc = MLPEncoder(3, 2, (4,)).train()
    enc(torch.randn(40, 3))
    assert enc.batch_moments is not None
    enc.eval()
    assert enc.batch_moments is None


def test_exact_statistics_gives_back_the_mode_it_found():
    import torch
    from transmodal.nn._mlp import MLPEncoder
    enc = MLPEncoder(3, 2, (4,)).eval()
    with enc.exact_statistics():
        enc(torch.randn(40, 3))
    assert not enc.training and not enc.standardize.training


def test_integer_arguments_refuse_booleans():
    from transmodal.geometry import wasserstein_procrustes
    a = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0; got True"):
        wasserstein_procrustes(a, a, n_iter=True)


def test_missing_label_strings_are_read_in_any_case():
    from transmodal._utils import is_missing_text
    for text in ("nan", "NaN", "NAN", "None", "NONE", "<NA>", "<na>", " ", ""):
        assert is_missing_text(text), text
    assert not is_missing_text("nano")


def _hinted():
    from transmodal._hints import argument_hints

    class Thing:
        @argument_hints
        def fit(self, batch_size=1, seed=0, n=0, batch_key=None):
            return batch_size

        @argument_hints
        def __init__(self, hidden=1):
            pass
    return Thing


def test_short_prefixes_get_no_guess_but_longer_ones_do():
    Thing = _hinted()
    with pytest.raises(TypeError, match=r"did you mean batch_size=\?"):
        Thing().fit(batch_s=3)
    with pytest.raises(TypeError) as err:
        Thing().fit(se=3)  # two letters: too short to guess from (seed)
    assert "did you mean" not in str(err.value)


def test_constructor_errors_name_the_class_not___init__():
    Thing = _hinted()
    with pytest.raises(TypeError, match=r"^Thing\(\): got an unexpected keyword argument 'hiden'"):
        Thing(hiden=3)


def test_an_ambiguous_prefix_names_every_name_it_begins():
    Thing = _hinted()
    with pytest.raises(TypeError, match=r"'batch'; did you mean batch_size= or batch_key=\?$"):
        Thing().fit(batch=3)


def test_series_naming_a_cell_twice_is_refused():
    from transmodal._utils import align_to_cells
    s = pd.Series([1, 2, 3], index=["a", "a", "b"])
    with pytest.raises(ValueError, match="does not name every cell once"):
        align_to_cells(s, ["a", "b"], "labels")


def test_lists_cut_short_in_messages_say_how_many_more():
    """A warning listing 3 of 20 batches said nothing of the other 17."""
    from transmodal._utils import first_few
    assert first_few([f"s{i}" for i in range(20)]) == "['s0', 's1', 's2'] and 17 more"
    assert first_few(["a", "b", "c"]) == "['a', 'b', 'c']" and first_few([]) == "[]"


def test_series_indexed_by_numbers_of_string_names_says_so():
    """obs_names '0', '1', ... and a Series indexed by the integers 0, 1, ... (not a
    RangeIndex): the message named cells '0', '1' that seemed to be in the index."""
    from transmodal._utils import align_to_cells
    s = pd.Series(["x", "y", "z"], index=pd.Index([2, 0, 1]))
    with pytest.raises(ValueError, match=r"holds them as int64 values, not as the strings of "
                       r"the obs_names: give it series.index.astype\(str\)"):
        align_to_cells(s, ["0", "1", "2"], "target_batch")
    s.index = s.index.astype(str)
    assert list(align_to_cells(s, ["0", "1", "2"], "target_batch")) == ["y", "z", "x"]


def test_jsonable_writes_non_finite_floats_as_none():
    from transmodal._utils import jsonable
    assert jsonable({"a": float("nan"), "b": [np.float64(np.inf), 1.5]}) == {"a": None, "b": [None, 1.5]}


def test_feature_moments_skip_an_empty_first_block():
    from transmodal._utils import FeatureMoments
    m = FeatureMoments()
    m.add(np.empty((0, 3)))
    m.add(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    np.testing.assert_allclose(m.mean(), [2.0, 2.0, 2.0])


def test_folds_are_shuffled_with_the_seed():
    from transmodal.metrics import mixing_accuracy
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 0.3
    assert len({mixing_accuracy(x, y, seed=s) for s in range(4)}) > 1


# ------------------------------------------------------------------ mutation round 6:
# train/_trainer.py, data/_prefetch.py, datasets/_synthetic.py

# train/_trainer.py
def test_resolve_strategy_one_listed_device_stays_one_process():
    """A list naming a single device (or "1,") is one process: "auto" is left alone."""
    from transmodal.train._trainer import resolve_strategy

    assert resolve_strategy("auto", [0]) == "auto"
    assert resolve_strategy("auto", "1,") == "auto"
    assert resolve_strategy("auto", [0, 1]) == "ddp_find_unused_parameters_true"


# train/_trainer.py
def test_default_max_epochs_follows_the_documented_heuristic():
    """400 epochs up to 20,000 cells, then proportionally fewer, at least 10."""
    from transmodal.train import default_max_epochs

    assert default_max_epochs(1) == 400
    assert default_max_epochs(0) == 400
    assert default_max_epochs(20_000) == 400
    assert default_max_epochs(40_000) == 200
    assert default_max_epochs(80_000) == 100
    assert default_max_epochs(10**6) == 10  # 8 by the ratio: the floor
    assert default_max_epochs(10**8) == 10
    assert default_max_epochs(1000, cap=50, decay_at=100) == 10
    assert default_max_epochs(200, cap=50, decay_at=1000) == 50


# datasets/_synthetic.py
@pytest.mark.parametrize("kw", [{"seed": True}, {"n_clusters": True}, {"n_latent": True},
                                      {"n_features": True}, {"n_batches": True}])
def test_synthetic_refuses_booleans_for_integer_arguments(kw):
    from transmodal.datasets import synthetic

    with pytest.raises(ValueError, match="must be an integer"):
        synthetic(10, **kw)


# datasets/_synthetic.py
def test_synthetic_shares_round_of_the_paired_fraction():
    """The first round(paired * n_cells) cells are shared (10 * 0.29 = 2.9: 3 cells)."""
    from transmodal.datasets import synthetic, true_pairs

    data = synthetic(10, paired=0.29, n_features=5, seed=0)
    assert data["rna"].uns["synthetic"]["n_shared"] == 3
    assert len(true_pairs(data, "rna", "atac")[0]) == 3
    assert list(data["rna"].obs_names[:3]) == ["cell0", "cell1", "cell2"]
    assert data["rna"].obs_names[3] == "rna_cell3"


# datasets/_synthetic.py
def test_synthetic_trajectory_branch_point_is_at_one_third():
    """Stem pseudotimes fill [0, 1/3], branch pseudotimes [1/3, 1]."""
    from transmodal.datasets import synthetic

    obs = synthetic(600, shape="trajectory", modalities={"g": "gaussian"}, n_features=3,
                    seed=0)["g"].obs
    t = obs["pseudotime"].to_numpy()
    stem = (obs["label"] == "stem").to_numpy()
    assert t[stem].max() <= 1 / 3 and t[stem].max() > 0.3
    assert t[~stem].min() >= 1 / 3 and t[~stem].min() < 0.37
    assert t[~stem].max() > 0.97


# datasets/_synthetic.py
def test_synthetic_counts_have_a_per_gene_baseline():
    """"nb": rate softmax(h + gene baseline): genes differ in mean expression by a log-normal
    baseline of sd 1 besides their signal (log gene means spread by more than 1)."""
    from transmodal.datasets import synthetic

    for seed in (0, 1):
        x = synthetic(1000, modalities={"rna": "nb"}, n_features=300, seed=seed)["rna"].X
        means = np.asarray(x.mean(0)).ravel()
        assert np.log(means + 1e-3).std() > 0.95


# train/_trainer.py
def test_quiet_lightning_sets_and_gives_back_logger_levels():
    from transmodal.train._trainer import _quiet_lightning

    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    before = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.DEBUG)
        with _quiet_lightning():
            assert [lg.level for lg in loggers] == [logging.WARNING] * 2
        assert [lg.level for lg in loggers] == [logging.DEBUG] * 2
    finally:
        for lg, level in zip(loggers, before):
            lg.setLevel(level)


# train/_trainer.py
@pytest.mark.parametrize("cublas", [None, ":16:8"])
def test_process_state_restored_gives_back_every_flag(cublas, monkeypatch):
    """Deterministic mode, cuDNN benchmark, CUBLAS_WORKSPACE_CONFIG (unset or the caller's
    own value) and the SIGINT handler come back as they were."""
    import signal

    import torch

    from transmodal.train._trainer import _process_state_restored

    if cublas is None:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    else:
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", cublas)
    det = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    bench = torch.backends.cudnn.benchmark
    handler = signal.getsignal(signal.SIGINT)
    try:
        with _process_state_restored():
            torch.use_deterministic_algorithms(not det[0], warn_only=not det[1])
            torch.backends.cudnn.benchmark = not bench
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled()) == det
        assert torch.backends.cudnn.benchmark == bench
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == cublas
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        torch.backends.cudnn.benchmark = bench
        signal.signal(signal.SIGINT, handler)


class _TrainerStopped(Exception):
    pass


def _recording_trainer(monkeypatch, seen, fit=None):
    """Replace Lightning's Trainer in run_training by a recorder (no training)."""
    import types

    import torch

    from transmodal.train import _trainer

    class Fake:
        interrupted = False
        received_sigterm = False
        world_size = 1

        def __init__(self, **kw):
            seen["init"] = kw
            self.strategy = types.SimpleNamespace(root_device=torch.device("cpu"))
            if fit is None:
                raise _TrainerStopped

        def fit(self, plan, train_dataloaders, val_dataloaders):
            seen["fit"] = (train_dataloaders, val_dataloaders)
            seen["limit_val_batches"] = getattr(self, "limit_val_batches", None)
            fit(self)

    monkeypatch.setattr(_trainer.pl, "Trainer", Fake)
    return _trainer


# train/_trainer.py
def test_run_training_passes_its_settings_to_lightning(monkeypatch):
    from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

    seen = {}
    _trainer = _recording_trainer(monkeypatch, seen)
    mine = Callback()
    with pytest.raises(_TrainerStopped):
        _trainer.run_training(None, [1], [2], max_epochs=7, min_epochs=3, patience=4,
                              callbacks=[mine], progress_bar=False)
    kw = seen["init"]
    assert (kw["max_epochs"], kw["min_epochs"], kw["deterministic"]) == (7, 3, True)
    assert kw["enable_checkpointing"] is False and kw["enable_progress_bar"] is False
    assert kw["strategy"] == "auto" and kw["num_sanity_val_steps"] == 0
    assert mine in kw["callbacks"]
    stops = [cb for cb in kw["callbacks"] if isinstance(cb, EarlyStopping)]
    assert len(stops) == 1 and stops[0].monitor == "val_monitor"
    assert stops[0].patience == 4 and stops[0].mode == "min"
    assert not any(type(cb).__name__ == "EpochProgressBar" for cb in kw["callbacks"])
    # no validation cells, or early_stopping=False: no early stopping; a checkpoint
    # callback switches Lightning's checkpointing on; the bar is there by default
    for val, early in (([2], False), (None, True)):
        with pytest.raises(_TrainerStopped):
            _trainer.run_training(None, [1], val, max_epochs=2, early_stopping=early,
                                  callbacks=[ModelCheckpoint()])
        cbs = seen["init"]["callbacks"]
        assert not any(isinstance(cb, EarlyStopping) for cb in cbs)
        assert seen["init"]["enable_checkpointing"] is True
        assert any(type(cb).__name__ == "EpochProgressBar" for cb in cbs)


# train/_trainer.py
def test_run_training_prefetch_default_and_history(monkeypatch):
    """prefetch=None reads ahead (2) when a modality is read from a file, else not;
    without validation batches Lightning's validation is switched off; the history is a
    frame indexed by the integer epoch."""
    import types

    seen = {}
    _trainer = _recording_trainer(monkeypatch, seen, fit=lambda trainer: None)

    class OnDisk(list):
        on_disk = True

    plan = types.SimpleNamespace(history_rows=[{"epoch": 0.0, "loss": 2.0},
                                               {"epoch": 1.0, "loss": 1.0}], diverged=False)
    for train, val, expected in (([1], [2], 0), (OnDisk([1]), [2], 2), ([1], OnDisk([2]), 2),
                                 ([1], None, 0)):
        history = _trainer.run_training(plan, train, val, max_epochs=2, progress_bar=False)
        train_dl, val_dl = seen["fit"]
        assert train_dl.prefetch == expected
        assert (val_dl is None) is (val is None)
        assert val_dl is None or val_dl.prefetch == expected
        assert seen["limit_val_batches"] == (0 if val is None else None)
    history = _trainer.run_training(plan, [1], None, max_epochs=2, prefetch=3,
                                    progress_bar=False)
    assert seen["fit"][0].prefetch == 3
    assert history.index.name == "epoch" and list(history.index) == [0, 1]
    assert history.index.dtype.kind == "i" and list(history["loss"]) == [2.0, 1.0]


# train/_trainer.py
def test_run_training_turns_lightning_endings_into_its_own_errors(monkeypatch):
    import types

    from transmodal._interrupts import Terminated

    plan = types.SimpleNamespace(history_rows=[{"epoch": 0, "loss": 1.0}], diverged=True)

    def diverge(trainer):
        raise FloatingPointError("diverged in epoch 1")

    _trainer = _recording_trainer(monkeypatch, {}, fit=diverge)
    with pytest.raises(_trainer.TrainingDiverged, match="epoch 1") as err:
        _trainer.run_training(plan, [1], None, max_epochs=2, progress_bar=False)
    assert list(err.value.history.index) == [0]
    plan.diverged = False  # a FloatingPointError not of the plan's check goes through
    with pytest.raises(FloatingPointError) as err:
        _trainer.run_training(plan, [1], None, max_epochs=2, progress_bar=False)
    assert type(err.value) is FloatingPointError

    def sigterm_exit(trainer):  # Lightning's teardown after a SIGTERM: sys.exit(1)
        trainer.interrupted, trainer.received_sigterm = True, True
        raise SystemExit(1)

    _trainer = _recording_trainer(monkeypatch, {}, fit=sigterm_exit)
    with pytest.raises(_trainer.TrainingInterrupted, match="after 1 complete") as err:
        _trainer.run_training(plan, [1], None, max_epochs=2, progress_bar=False)
    assert err.value.kind is Terminated and err.value.exit is None

    def own_exit(trainer):  # the caller's own SystemExit, not an interrupt: as it is
        raise SystemExit(3)

    _trainer = _recording_trainer(monkeypatch, {}, fit=own_exit)
    with pytest.raises(SystemExit) as err:
        _trainer.run_training(plan, [1], None, max_epochs=2, progress_bar=False)
    assert err.value.code == 3


# train/_trainer.py
def test_training_interrupted_kind_and_exit():
    import pandas as pd

    from transmodal._interrupts import Terminated
    from transmodal.train._trainer import TrainingInterrupted

    assert issubclass(Terminated, KeyboardInterrupt)  # (a training stops as after Ctrl+C)
    h = pd.DataFrame({"loss": [1.0]})
    assert TrainingInterrupted(h).kind is KeyboardInterrupt
    assert TrainingInterrupted(h, sigterm=True).kind is Terminated
    assert TrainingInterrupted(h, Terminated()).kind is Terminated
    own = SystemExit(3)
    err = TrainingInterrupted(h, own)
    assert err.exit is own and err.kind is KeyboardInterrupt
    assert TrainingInterrupted(h, KeyboardInterrupt()).exit is None
    assert isinstance(err, KeyboardInterrupt) and "after 1 complete" in str(err)


# datasets/_synthetic.py
def test_synthetic_noise_has_a_private_two_dimensional_factor():
    """noise times a private 2-dimensional factor per cell plus iid noise: with much noise,
    two directions carry a large share of the variance (iid noise alone would spread it)."""
    from transmodal.datasets import synthetic

    x = synthetic(1000, modalities={"g": "gaussian"}, n_features=50, noise=5.0, seed=0)["g"].X
    ev = np.linalg.eigvalsh(np.cov(np.asarray(x, dtype=float).T))[::-1]
    assert ev[:2].sum() / ev.sum() > 0.3
    assert ev[2] / ev[1] < 0.5  # (the third is noise-sized)


# datasets/_synthetic.py
def test_synthetic_out_refuses_before_writing_anything(tmp_path):
    """An existing file of any modality is refused before a file is written."""
    from transmodal.datasets import synthetic

    (tmp_path / "atac.h5ad").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="atac.h5ad exists"):
        synthetic(20, n_features=5, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atac.h5ad"]
    assert (tmp_path / "atac.h5ad").read_bytes() == b"mine"


# datasets/_synthetic.py
def test_synthetic_unshared_cells_draw_their_own_batches():
    """Cells of different modalities that are not the same cell are put in batches
    independently (shared cells: the same batch in each modality)."""
    from transmodal.datasets import synthetic

    data = synthetic(200, paired=0.25, n_batches=3, n_features=5, seed=0)
    rna, atac = (data[m].obs["batch"].cat.codes.to_numpy() for m in ("rna", "atac"))
    np.testing.assert_array_equal(rna[:50], atac[:50])
    assert (rna[50:] != atac[50:]).mean() > 0.4
    assert (rna[50:] != rna[:150]).mean() > 0.4  # (not the shared cells' draws again)


# datasets/_synthetic.py
def test_synthetic_var_names_prefixed_only_for_a_shared_kind():
    from transmodal.datasets import synthetic

    data = synthetic(10, modalities={"a": "nb", "b": "nb", "c": "gaussian"}, n_features=3)
    assert list(data["a"].var_names) == ["a_gene0", "a_gene1", "a_gene2"]
    assert list(data["b"].var_names) == ["b_gene0", "b_gene1", "b_gene2"]
    assert list(data["c"].var_names) == ["feat0", "feat1", "feat2"]


# datasets/_synthetic.py
def test_true_pairs_refuses_repeated_cells_in_the_second_modality():
    from transmodal.datasets import synthetic, true_pairs

    data = synthetic(10, n_features=3, seed=0)
    data["atac"].obs["true_cell"] = ["cell0"] * 10
    with pytest.raises(ValueError, match="'atac' is not unique"):
        true_pairs(data, "rna", "atac")


# datasets/_synthetic.py
def test_synthetic_trajectory_needs_two_latent_dimensions():
    from transmodal.datasets import synthetic

    with pytest.raises(ValueError, match="n_latent must be >= 2"):
        synthetic(10, shape="trajectory", n_latent=1, n_features=3)
    assert synthetic(10, n_latent=1, n_features=3)["rna"].obsm["X_true"].shape == (10, 1)


# datasets/_synthetic.py
def test_synthetic_accessibility_has_a_per_cell_depth():
    """"bernoulli": p = sigmoid(h + peak offset + cell depth), the depth N(0, 0.5) per cell:
    cells of one state differ in their open fraction by about that much on the logit scale."""
    from scipy.special import logit

    from transmodal.datasets import synthetic

    x = synthetic(1000, modalities={"atac": "bernoulli"}, n_features=1000,
                  cluster_separation=0.0, seed=0)["atac"].X
    frac = np.asarray(x.mean(1)).ravel()
    assert 0.12 < frac.mean() < 0.18  # (about 0.15, as documented)
    assert np.std(logit(np.clip(frac, 1e-3, 1 - 1e-3))) > 0.25


# data/_prefetch.py
def _next_in_thread(it, timeout=10.0):
    """next(it) in a helper thread: ("value", x) / ("raised", exc) / ("blocked", None)."""
    out = []

    def run():
        try:
            out.append(("value", next(it)))
        except BaseException as err:  # noqa: BLE001
            out.append(("raised", err))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else ("blocked", None)


# data/_prefetch.py
def test_prefetcher_ends_for_good_after_the_last_item_or_an_error():
    from transmodal.data._prefetch import Prefetcher

    it = Prefetcher(iter([1, 2]), depth=1)
    assert [next(it), next(it)] == [1, 2]
    for _ in range(2):  # exhausted: StopIteration again, never a wait
        kind, err = _next_in_thread(it)
        assert kind == "raised" and isinstance(err, StopIteration)

    def broken():
        yield 1
        raise OSError("disk")

    it = Prefetcher(broken(), depth=2)
    assert next(it) == 1
    kind, err = _next_in_thread(it)
    assert kind == "raised" and isinstance(err, OSError)
    kind, err = _next_in_thread(it)
    assert kind == "raised" and isinstance(err, StopIteration)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        Prefetcher(iter([]), depth=0)
    assert list(Prefetcher(iter(range(5)), depth=1)) == list(range(5))


# data/_prefetch.py
def test_prefetcher_closed_after_an_interrupted_start_raises_nothing(monkeypatch):
    """Ctrl+C while the reader thread starts (Thread.start waits for it): closing the
    iterator raised "cannot join thread before it is started", which replaced the
    KeyboardInterrupt and lost a training's epochs (5 % of interrupts of short epochs)."""
    import threading

    from transmodal.data._prefetch import Prefetcher

    def interrupted(self):
        raise KeyboardInterrupt  # (before the thread reports that it started)

    monkeypatch.setattr(threading.Thread, "start", interrupted)
    it = Prefetcher(iter([1, 2]), depth=1)
    with pytest.raises(KeyboardInterrupt):
        next(it)
    it.close()  # (no RuntimeError)
    assert it._stop.is_set()


# data/_prefetch.py
def test_prefetcher_reads_at_most_depth_items_ahead_and_close_stops_it():
    import time

    from transmodal.data._prefetch import Prefetcher

    produced = []

    def source():
        for i in range(10_000):
            produced.append(i)
            yield i

    it = Prefetcher(source(), depth=2)
    assert next(it) == 0
    time.sleep(0.3)
    # one handed out, `depth` in the queue, one held by the reader waiting for room
    assert len(produced) <= 1 + 2 + 1
    thread = it._thread
    it.close()
    assert not thread.is_alive()  # close() waits for the reader
    kind, err = _next_in_thread(it)
    assert kind == "raised" and isinstance(err, StopIteration)


# data/_prefetch.py
def test_dropping_a_prefetcher_stops_its_reader():
    import gc

    from transmodal.data._prefetch import Prefetcher

    it = Prefetcher(iter(range(10**9)), depth=2)
    next(it)
    thread = it._thread
    del it
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


# data/_prefetch.py
def test_prefetch_loader_reads_ahead_from_one_and_close_stops_every_reader():
    from transmodal.data._prefetch import Prefetcher, PrefetchLoader

    plain = PrefetchLoader(list(range(5)), batch_size=None, prefetch=0)
    assert not isinstance(iter(plain), Prefetcher) and list(plain) == list(range(5))
    one = PrefetchLoader(list(range(5)), batch_size=None, prefetch=1)
    assert isinstance(iter(one), Prefetcher) and list(one) == list(range(5))
    assert PrefetchLoader(list(range(5)), batch_size=None, prefetch=3).prefetch == 3

    loader = PrefetchLoader(range(10**6), batch_size=None, prefetch=2)
    readers = [iter(loader) for _ in range(3)]
    for r in readers:
        next(r)
    threads = [r._thread for r in readers]
    assert len(loader._readers) == 3  # (unfinished readers are all kept)
    loader.close()
    assert not any(t.is_alive() for t in threads)
    assert all(r._finished for r in readers)


# datasets/_synthetic.py
def test_synthetic_trajectory_records_no_cluster_count():
    """n_clusters is ignored for a trajectory: not recorded, and the data do not depend on it."""
    from transmodal.datasets import synthetic

    a = synthetic(30, shape="trajectory", n_clusters=2, n_features=4, seed=1)["rna"]
    b = synthetic(30, shape="trajectory", n_clusters=7, n_features=4, seed=1)["rna"]
    assert a.uns["synthetic"]["n_clusters"] is None
    np.testing.assert_array_equal(a.X.toarray(), b.X.toarray())


# datasets/_synthetic.py (found by the mutation round: a record shared between modalities)
def test_synthetic_records_are_each_modality_s_own():
    """uns['synthetic'] of each modality is its own: editing one's nested settings leaves
    the others' as they were."""
    from transmodal.datasets import synthetic

    for mudata in (False, True):
        data = synthetic(20, n_features=5, seed=0, return_mudata=mudata)
        mods = data.mod if mudata else data
        rna, atac = mods["rna"].uns["synthetic"], mods["atac"].uns["synthetic"]
        rna["n_features"]["rna"] = 999
        rna["library_size"].append(0)
        assert atac["n_features"] == {"rna": 5, "atac": 5}
        assert atac["library_size"] != rna["library_size"]


# ------------------------------------------------------------------ mutation round 6:
# plotting/*, cli/_main.py, workflows/_demo.py

def _two_latents(n=30, dims=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"rna": rng.normal(size=(n, dims)), "atac": rng.normal(size=(n, dims)) + 0.5}


# ------------------------------------------------------------ plotting/_embedding.py
def test_latent_refuses_a_folder_as_path_before_drawing(tmp_path):
    """Documented: ValueError before drawing if path cannot be written; a folder is named."""
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="is a folder, not a file name"):
        tm.pl.latent(_two_latents(), path=tmp_path)
    assert plt.get_fignums() == before


# ------------------------------------------------------------ plotting/_analysis.py
def test_roc_legend_gives_each_curves_auc_and_title_kind():
    """One legend entry per curve with its AUC; title "AUC ..." for a binary problem,
    "macro AUC ..." for several classes, and a given title replaces it."""
    x, y = roc_data(0)
    xt, yt = roc_data(1)
    res = translated_classifier_roc(x, y, xt, yt)
    ax = tm.pl.roc(res)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [f"{c} (AUC {cv.auc:.3f})" for c, cv in res.curves.items()]
    assert ax.get_title() == f"AUC {res.auc:.3f}"
    x3, y3 = roc_data(0, n_classes=3)
    res3 = translated_classifier_roc(x3, y3, x3, y3)
    ax3 = tm.pl.roc(res3)
    assert ax3.get_title() == f"macro AUC {res3.auc:.3f}"
    assert len(ax3.get_legend().get_texts()) == len(res3.curves) == 3
    assert tm.pl.roc(res3, title="mine").get_title() == "mine"
    plt.close("all")


def test_written_and_shown_figure_is_the_one_pyplot_shows(tmp_path, monkeypatch):
    """show=True with path: the drawn figure is a pyplot figure when plt.show runs (not a
    bare Agg figure that pyplot cannot show), and it is closed afterwards."""
    current = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: current.append(
        (plt.gcf(), [t.get_text() for ax in plt.gcf().axes for t in [ax.xaxis.label]])))
    before = plt.get_fignums()
    assert tm.pl.latent(_two_latents(), path=tmp_path / "l.png", show=True) is None
    assert len(current) == 1
    fig, xlabels = current[0]
    assert xlabels == ["PC1 of latent"]  # the drawn panel, not a new empty figure
    assert plt.get_fignums() == before
    plt.close("all")


def _de_table(effect, marker):
    effect = np.asarray(effect, float)
    return pd.DataFrame(
        {"log2fc": effect, "marker": marker,
         "direction": np.where(effect > 0, "up", np.where(effect < 0, "down", "none"))},
        index=[f"f{i}" for i in range(len(effect))])


def test_de_scatter_draws_observed_on_x_and_each_marker_group():
    """Observed effect on x, predicted on y; markers of both results in opposite directions
    get their own group (not counted as shared), as the docstring says."""
    obs = _de_table([1, 2, -1, 0.5, 3, -2], [True, True, False, False, True, True])
    pred = _de_table([1.5, -2, -1, 0.2, 2, 1], [True, True, True, False, False, False])
    ax = tm.pl.de_scatter(pred, obs)
    groups = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}
    assert set(groups) == {"other", "marker: observed only", "marker: predicted only",
                           "marker: both", "marker: both, opposite directions"}
    np.testing.assert_array_equal(groups["marker: both"], [[1.0, 1.5]])
    np.testing.assert_array_equal(groups["marker: both, opposite directions"], [[2.0, -2.0]])
    np.testing.assert_array_equal(groups["marker: predicted only"], [[-1.0, -1.0]])
    np.testing.assert_array_equal(groups["marker: observed only"], [[3.0, 2.0], [-2.0, 1.0]])
    assert ax.get_xlabel() == "observed log2fc" and ax.get_ylabel() == "predicted log2fc"
    r = np.corrcoef([1, 2, -1, 0.5, 3, -2], [1.5, -2, -1, 0.2, 2, 1])[0, 1]
    assert ax.get_title() == f"Pearson r = {r:.3f} (6 features)"
    plt.close("all")


def test_de_scatter_title_counts_features_left_out_as_nan():
    obs = _de_table([1, 2, -1, np.nan], [False] * 4)
    pred = _de_table([1.5, -2, -1, 0.5], [False] * 4)
    ax = tm.pl.de_scatter(pred, obs, highlight=False)
    assert ax.get_title().endswith("(3 features, 1 NaN left out)")
    plt.close("all")


def _de_tables(seed):
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 0.5, size=(60, 40))
    x[:30, :5] += 3.0
    x[30:, 5:10] += 3.0
    obs = pd.DataFrame({"group": pd.Categorical(["A"] * 30 + ["B"] * 30)},
                       index=[f"c{i}" for i in range(60)])
    return ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(40)]))


def test_marker_overlap_bars_are_grouped_per_direction_with_the_counts():
    """Four bars per direction (predicted, observed, overlap, expected), centred on the
    direction's tick, heights from result.overlap."""
    from transmodal.analysis import compare_differential, differential_expression

    obs = differential_expression(_de_tables(0), "group", "A", "B")
    pred = differential_expression(_de_tables(1), "group", "A", "B")
    res = compare_differential(pred, obs)
    ax = tm.pl.marker_overlap(res)
    bars = ax.patches
    assert len(bars) == 8
    centres = np.array([b.get_x() + b.get_width() / 2 for b in bars]).reshape(4, 2)
    heights = np.array([b.get_height() for b in bars]).reshape(4, 2)
    np.testing.assert_allclose(centres.mean(axis=0), [0.0, 1.0])  # centred on the ticks
    np.testing.assert_allclose(np.diff(centres, axis=0), 0.2)  # side by side, in order
    cols = ["n_pred", "n_obs", "n_overlap", "expected"]
    np.testing.assert_allclose(heights, res.overlap.loc[["up", "down"], cols].to_numpy(float).T)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["up in group", "down in group"]
    top = np.nanmax(heights)
    assert ax.get_ylim()[1] == pytest.approx(top * 1.35 + 1)  # room for the p-values
    assert ax.get_title() == f"marker overlap ({res.n_common} common features)"
    plt.close("all")


def test_coassociation_image_is_in_dendrogram_order_on_a_fixed_range():
    from scipy.cluster.hierarchy import leaves_list

    from transmodal.analysis import cluster_robustness

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(15, 2)) + c for c in ([0, 0], [8, 0], [0, 8])])
    x = x[rng.permutation(len(x))]  # clusters interleaved: the order matters
    res = cluster_robustness(x, n_init=1, knn=(10,))
    # (values within (0.25, 0.75): the colour range stays [0, 1], comparable across plots)
    res = dataclasses.replace(res, coassociation=0.25 + 0.5 * res.coassociation)
    ax = tm.pl.coassociation(res)
    im = ax.get_images()[0]
    order = leaves_list(res.linkage)
    assert not np.array_equal(order, np.arange(len(order)))
    np.testing.assert_array_equal(im.get_array(), res.coassociation[np.ix_(order, order)])
    assert im.get_clim() == (0, 1)
    assert ax.get_xlabel() == f"{len(order)} cells (dendrogram order)"
    assert ax.get_title() == f"suggested k = {res.suggested_k}"
    assert len(ax.figure.axes) == 2  # with its colour bar
    assert len(tm.pl.coassociation(res, colorbar=False).figure.axes) == 1
    plt.close("all")


def test_lda_of_a_one_dimensional_latent_with_three_clusters():
    """n_components is limited by the latent's width too: a 1-D latent gives one
    discriminant (jittered rows), not an sklearn error."""
    rng = np.random.default_rng(0)
    lab = np.repeat(["a", "b", "c"], 20)
    z = (np.repeat([0.0, 5.0, 10.0], 20) + rng.normal(size=60))[:, None]
    ax = tm.pl.lda(z, lab)
    assert ax.get_xlabel() == "LD1" and ax.get_ylabel() == ""
    y = np.asarray(ax.collections[0].get_offsets())[:, 1]
    assert 0 < np.ptp(y) <= 0.6 and np.abs(y).max() <= 0.3  # jitter around row 0
    plt.close("all")


def test_lda_draws_each_modality_as_its_own_row_and_marker():
    """Two clusters: one discriminant on x, modality j drawn as row j (jittered), one
    marker shape per modality; modality names are class names ("1" and 1 are one)."""
    rng = np.random.default_rng(0)
    lab = np.tile(["a", "b"], 40)
    z = np.where(lab == "a", 0.0, 4.0)[:, None] + rng.normal(size=(80, 3))
    data = {"rna": z[:40], "atac": z[40:]}
    ax = tm.pl.lda(data, {"rna": lab[:40], "atac": lab[40:]})
    rows = [np.asarray(c.get_offsets())[:, 1] for c in ax.collections[:2]]
    assert np.all(np.abs(rows[0]) <= 0.3) and np.all(np.abs(rows[1] - 1) <= 0.3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rna", "atac"]
    assert ax.get_ylabel() == "modality"
    shapes = [c.get_paths()[0].vertices.tolist() for c in ax.collections[:2]]
    assert shapes[0] != shapes[1]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["a", "b", "modality", "rna", "atac"]
    mixed = np.array(["1"] * 40 + [1] * 40, dtype=object)  # one modality "1"
    ax = tm.pl.lda(z, lab, modality=mixed)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1"]
    plt.close("all")


def test_latent_draws_the_modalities_interleaved():
    """Cells are drawn in a shuffled order: no modality is drawn on top of the other."""
    z = _two_latents(n=50)
    fig = tm.pl.latent(z, show=False)
    colours = np.asarray(fig.axes[0].collections[0].get_facecolors())
    first = (colours[:, :3] == colours[0, :3]).all(axis=1)
    # the first modality's cells are spread over the drawing order, not a block
    assert 0 < first[:50].sum() < 50 and 0 < first[50:].sum() < 50
    plt.close("all")


def test_latent_ten_classes_use_tab10_and_an_empty_label_mapping_draws_one_panel():
    cmap = matplotlib.colormaps["tab10"]
    z = {"rna": np.random.default_rng(0).normal(size=(40, 3))}
    lab = {"rna": np.array([f"c{i}" for i in range(10)] * 4)}
    fig = tm.pl.latent(z, lab, show=False)
    handles = fig.axes[1].get_legend().legend_handles
    got = [tuple(np.asarray(h.get_facecolor()).ravel()[:4]) for h in handles]
    assert got == [tuple(cmap(i)) for i in range(10)]
    fig = tm.pl.latent(z, {}, show=False)  # no labels: the modality panel only
    assert len(fig.axes) == 1
    plt.close("all")


def test_embedding_colours_a_boolean_column_as_two_classes():
    rng = np.random.default_rng(0)
    a = ad.AnnData(obsm={"X_transmodal": rng.normal(size=(30, 2))})
    a.obs["flag"] = np.arange(30) % 2 == 0
    fig = tm.pl.embedding({"rna": a}, color="flag", show=False)
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["False", "True"]
    plt.close("all")


def test_latent_legends_keep_modality_order_and_list_unlabelled_last_in_grey():
    z = _two_latents(n=12)
    lab = {"rna": np.array(["b", None, "a"] * 4, dtype=object), "atac": np.array(["a"] * 12)}
    fig = tm.pl.latent(z, lab, show=False)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["rna", "atac"]
    leg = fig.axes[1].get_legend()
    assert [t.get_text() for t in leg.get_texts()] == ["a", "b", "(no label)"]
    grey = np.asarray(leg.legend_handles[-1].get_facecolor()).ravel()[:3]
    np.testing.assert_allclose(grey, 0.85)
    plt.close("all")


def test_continuous_labels_draw_cells_without_a_value_in_grey():
    z = _two_latents(n=30)
    vals = {k: np.linspace(0, 1, 30) for k in z}
    vals["atac"][:3] = np.nan
    fig = tm.pl.latent(z, vals, continuous=True, show=False, label_name="size")
    offsets = fig.axes[1].collections[0].get_offsets()
    assert len(offsets) == 60 and np.ma.count_masked(offsets) == 0  # NaN cells drawn too
    assert fig.axes[2].get_ylabel() == "size (grey: no value)"
    plt.close("all")


@pytest.mark.parametrize(("n_values", "colour_map"), [(20, False), (21, True)])
def test_embedding_numeric_column_is_a_measurement_beyond_20_values(n_values, colour_map):
    """Documented: a numeric obs column with more than 20 distinct values gets a colour map;
    with 20 it is drawn as classes."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(obsm={"X_transmodal": rng.normal(size=(42, 2))})
    a.obs["x"] = np.arange(42) % n_values
    fig = tm.pl.embedding({"rna": a}, color="x", show=False)
    assert (len(fig.axes) == 3) is colour_map  # the colour bar's axes
    assert (fig.axes[1].get_legend() is None) is colour_map
    plt.close("all")


# ------------------------------------------------------------ workflows/_demo.py
def test_a549_model_is_the_documented_demo_setting():
    """README: the demo model has n_latent=16 and labels_key="treatment_time", 0 % anchors
    by default, NB likelihoods for both modalities; seed and anchor_fraction reach it."""
    from transmodal.workflows._demo import a549_model

    try:
        data = tm.datasets.scicar_a549()
    except FileNotFoundError:
        pytest.skip("$TRANSMODAL_DATA/scicar_a549 missing")
    train = {k: a[:200].copy() for k, a in data.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = a549_model(train)
        other = a549_model(train, seed=3, anchor_fraction=0.5)
    assert model.init_params_["n_latent"] == 16
    assert model.init_params_["labels_key"] == "treatment_time"
    assert model.init_params_["anchor_fraction"] == 0.0
    assert {k: md.spec.likelihood for k, md in model.mods.items()} == {"rna": "nb", "atac": "nb"}
    assert other.init_params_["seed"] == 3 and other.init_params_["anchor_fraction"] == 0.5


def test_run_demo_passes_seed_and_epochs_to_the_model(tmp_path, monkeypatch):
    """run_demo(seed=, max_epochs=, progress_bar=) reach the model and its training (spied:
    the training stops at once), and the model is built on the train split's cells."""
    from transmodal.workflows import _demo

    try:
        tm.datasets.dataset_dir("scicar_a549")
    except FileNotFoundError:
        pytest.skip("$TRANSMODAL_DATA/scicar_a549 missing")
    seen = {}

    class Stop(Exception):
        pass

    def spy(train, **kwargs):
        seen["model"] = kwargs
        seen["split"] = set(train["rna"].obs["yang2021_split"].astype(str))

        class Model:
            def train(self, **kw):
                seen["train"] = kw
                raise Stop

        return Model()

    monkeypatch.setattr(_demo, "a549_model", spy)
    with pytest.raises(Stop):
        _demo.run_demo(tmp_path / "demo", seed=7, max_epochs=3, progress_bar=False,
                       verbose=False)
    assert seen["model"] == {"seed": 7}
    assert seen["train"] == {"max_epochs": 3, "progress_bar": False}
    assert seen["split"] == {"train"}
    assert not (tmp_path / "demo" / "metrics.json").exists()


# ------------------------------------------------------------ plotting/_embedding.py, history
def test_history_of_runs_names_them_by_the_index_level_and_dashes_validation():
    one = pd.DataFrame({"train_loss": [3.0, 2.0, 1.5], "val_loss": [3.2, 2.4, 2.0]},
                       index=pd.Index([0, 1, 2], name="epoch"))
    h = pd.concat({0: one, 1: one + 0.1}, names=["run"])
    fig = tm.pl.history(h, show=False)
    ax = fig.axes[0]
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["run 0 train", "run 0 val", "run 1 train", "run 1 val"]
    styles = [ln.get_linestyle() for ln in ax.get_lines()]
    assert styles == ["-", "--", "-", "--"]
    np.testing.assert_allclose(ax.get_lines()[3].get_ydata(), [3.3, 2.5, 2.1])
    plt.close("all")


def test_embedding_numeric_in_one_modality_and_classes_in_another_are_classes():
    rng = np.random.default_rng(0)
    a = ad.AnnData(obsm={"X_transmodal": rng.normal(size=(30, 2))})
    b = ad.AnnData(obsm={"X_transmodal": rng.normal(size=(30, 2))})
    a.obs["x"] = np.arange(30.0)  # numbers here,
    b.obs["x"] = pd.Categorical(["p", "q"] * 15)  # classes there: drawn as classes
    fig = tm.pl.embedding({"a": a, "b": b}, color="x", show=False)
    assert len(fig.axes) == 2 and fig.axes[1].get_legend() is not None
    plt.close("all")


# ------------------------------------------------------------ plotting/_gallery.py
def test_gallery_prefers_obsm_crops_of_an_anndata_row():
    crops = np.random.default_rng(0).uniform(size=(3, 1, 6, 6))
    a = ad.AnnData(np.zeros((3, 1)), obsm={"crops": crops, "masks": (crops > 0.5)[:, 0][:, None]})
    fig = tm.pl.gallery({"real": a}, n=3, show=False)
    np.testing.assert_allclose(fig.axes[0].get_images()[0].get_array(), crops[0, 0])
    plt.close("all")


def test_gallery_refuses_an_empty_colour_range():
    crops = np.random.default_rng(0).uniform(size=(3, 1, 6, 6))
    with pytest.raises(ValueError, match="vmin must be below vmax"):
        tm.pl.gallery({"real": crops}, vmin=0.5, vmax=0.5, show=False)


# ------------------------------------------------------------ cli/_main.py
@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (KeyError("no modality 'x' in the model"), 2,
         "transmodal: error: no modality 'x' in the model"),
        (FileNotFoundError(2, "No such file or directory", "cells.h5ad"), 2,
         "transmodal: error: No such file or directory: cells.h5ad"),
        (ValueError("first line\n  second line\n"), 2, "transmodal: error: first line second line"),
        (ValueError("out exists; pass overwrite=True to replace it"), 2,
         "transmodal: error: out exists; pass --overwrite to replace it"),
        (ValueError(""), 2, "transmodal: error: ValueError"),
        (KeyboardInterrupt(), 130, "transmodal: interrupted"),
    ],
)
def test_cli_main_turns_user_errors_into_one_line(error, code, line, monkeypatch, capsys,
                                                       tmp_path):
    """main's documented error policy: user errors (ValueError, KeyError, OSError, ...) print
    one line 'transmodal: error: ...' and return 2 (KeyError without quotes, OSError as
    'reason: file', the library's advice in the command line's terms); Ctrl+C returns 130."""
    from transmodal.cli import _commands, main

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(_commands, "cmd_demo", fail)
    assert main(["demo", "--out", str(tmp_path / "d")]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [line]


def test_cli_passes_each_option_to_its_command(monkeypatch, tmp_path):
    from transmodal.cli import _commands, main

    seen = {}

    def record(name):
        def f(*args, **kwargs):
            seen[name] = (args, kwargs)
            return 0
        return f

    for name in ("cmd_train", "cmd_embed", "cmd_translate", "cmd_evaluate", "cmd_demo"):
        monkeypatch.setattr(_commands, name, record(name))
    assert main(["train", "--config", "c.yaml", "--resume", "--out", "o"]) == 0
    assert seen["cmd_train"][1] == {"out": "o", "overwrite": False, "resume": True,
                                    "imports": []}
    assert main(["embed", "--model", "m", "--data", "rna=a.h5ad", "--data", "atac=b.h5ad",
                 "--out", "o", "--key", "X_k", "--modality", "rna"]) == 0
    assert seen["cmd_embed"][0][1] == ["rna=a.h5ad", "atac=b.h5ad"]  # --data twice: both
    assert seen["cmd_embed"][1] == {"modality": "rna", "key": "X_k", "overwrite": False}
    assert main(["embed", "--model", "m", "--data", "rna=a.h5ad", "--out", "o"]) == 0
    assert seen["cmd_embed"][1]["key"] == "X_transmodal"
    assert main(["translate", "--model", "m", "--data", "rna=a.h5ad", "--source", "rna",
                 "--target", "atac", "--out", "o.h5ad", "--library-size", "1e4",
                 "--target-batch", "b1", "--overwrite"]) == 0
    assert seen["cmd_translate"][1] == {"library_size": 10000.0, "overwrite": True,
                                        "target_batch": "b1"}
    assert main(["evaluate", "--model", "m", "--data", "rna=a.h5ad", "--source", "rna",
                 "--target", "atac", "--labels-key", "ct", "--train-data", "rna=t.h5ad"]) == 0
    assert seen["cmd_evaluate"][1] == {"labels_key": "ct", "out": None, "overwrite": False,
                                       "train_data": ["rna=t.h5ad"]}
    assert main(["demo", "--out", "d", "--seed", "4", "--no-progress"]) == 0
    assert seen["cmd_demo"][1] == {"seed": 4, "max_epochs": None, "progress_bar": False,
                                   "data_path": None}


def test_gallery_tiles_show_the_chosen_channel_on_the_colour_range_with_row_names():
    rng = np.random.default_rng(0)
    crops = rng.uniform(size=(3, 2, 5, 5))
    fig = tm.pl.gallery({"real": crops}, n=2, channel=0, vmin=0.0, vmax=2.0, show=False)
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "real"
    im = fig.axes[1].get_images()[0]
    np.testing.assert_allclose(im.get_array(), crops[1, 0])
    assert im.get_clim() == (0.0, 2.0)
    rgb = tm.pl.gallery({"he": 10 * crops[:, [0, 1, 0]]}, n=1, channel=(0, 1, 2), vmin=0.0,
                        vmax=10.0, show=False)
    np.testing.assert_allclose(rgb.axes[0].get_images()[0].get_array(),
                               np.moveaxis(crops[0, [0, 1, 0]], 0, -1))  # scaled to [0, 1]
    plt.close("all")


def test_gallery_warns_of_pixels_clipped_below_the_range_in_the_drawn_tiles():
    crops = np.full((4, 1, 5, 5), 0.5)
    low = crops.copy()
    low[:2] = -0.5  # the drawn tiles: half of their pixels far below vmin=0
    with pytest.warns(UserWarning, match="50% of the drawn pixels"):
        tm.pl.gallery({"low": low}, n=4, show=False)
    import warnings

    hidden = crops.copy()
    hidden[2:] = -0.5  # clipped values only in cells that are not drawn: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.pl.gallery({"low": hidden}, n=2, show=False)
        tm.pl.gallery({"low": low}, n=4, vmin=None, vmax=None, show=False)
    plt.close("all")


def test_gallery_warns_of_clipping_against_a_one_sided_range():
    high = np.full((2, 1, 5, 5), 3.0)
    with pytest.warns(UserWarning, match="outside the colour range"):
        tm.pl.gallery({"high": high}, vmin=None, vmax=1.0, show=False)
    plt.close("all")


# ------------------------------------------------------------------ mutation round 7:
# data/_setup.py, _hints.py, model/_split.py
def _named_adata(names, n_vars=2, obs=None):
    return ad.AnnData(
        np.zeros((len(names), n_vars), np.float32),
        obs=pd.DataFrame(obs or {}, index=list(names)))


def _set_up(data, order=None):
    order = order or list(data)
    mods, _ = setup_data({n: data[n] for n in order}, {n: "gaussian" for n in order})
    return mods


# model/_split.py: validation_masks
def test_validation_share_is_rounded_not_cut():
    """``fraction`` of the pairing keys is rounded: 0.1 of 37 paired cells is 4, not 3."""
    names = [f"c{i}" for i in range(37)]
    mods = _set_up({"a": _named_adata(names), "b": _named_adata(names)})
    masks = _split.validation_masks(mods, 0.1, 0)
    assert masks["a"].sum() == masks["b"].sum() == 4


def test_small_modality_own_draw_does_not_depend_on_dict_order():
    """A small modality's own validation draw is seeded by its name, not its place in the
    dict: the same masks whatever order the modalities are given in."""
    big = [f"c{i}" for i in range(200)]
    data = {"big": _named_adata(big), "mid": _named_adata(big[:40]),
            "tiny": _named_adata([f"t{i}" for i in range(12)])}
    for seed in range(5):
        one = _split.validation_masks(_set_up(data, ["big", "mid", "tiny"]), 0.05, seed)
        two = _split.validation_masks(_set_up(data, ["tiny", "mid", "big"]), 0.05, seed)
        assert one["tiny"].sum() >= 2
        for n in data:
            np.testing.assert_array_equal(one[n], two[n])


# model/_split.py: names_digest
def test_names_digest_separates_the_names():
    """The digest of the training cells' names tells ['ab', 'c'] from ['a', 'bc']."""
    d = _split.names_digest
    assert d(np.array(["ab", "c"])) != d(np.array(["a", "bc"]))
    assert d(np.array(["a", "bc"])) == d(["a", "bc"])


def test_two_validation_cells_from_the_shared_draw_are_kept():
    """Documented: only a modality the shared draw leaves with *fewer than 2* validation
    cells draws its own share; one left with exactly 2 keeps them (and its partners' split
    is not moved)."""
    big = [f"c{i}" for i in range(200)]
    mods = _set_up({"big": _named_adata(big), "mid": _named_adata(big[:40])})
    kept = 0
    for seed in range(60):
        masks = _split.validation_masks(mods, 0.1, seed)
        if masks["mid"].sum() == 2:
            kept += 1
            assert masks["big"].sum() == 20, seed
    assert kept


# data/_setup.py: ModalityData.check_current
def test_check_current_refuses_cells_renamed_or_reordered_in_place():
    """Documented: ValueError when the AnnData no longer holds the cells the model was built
    with, also for as many cells under other names or in another order."""
    names = [f"c{i}" for i in range(6)]
    data = {"a": _named_adata(names), "b": _named_adata(names)}
    mods = _set_up(data)
    mods["a"].check_current()  # (unchanged: fine)
    data["a"].obs_names = [f"x{i}" for i in range(6)]
    with pytest.raises(ValueError, match=r"modality 'a': its AnnData has changed"):
        mods["a"].check_current()
    data["b"]._inplace_subset_obs(np.arange(6)[::-1])  # (reordered in place)
    with pytest.raises(ValueError, match=r"modality 'b': its AnnData has changed"):
        mods["b"].check_current()


def test_validation_masks_are_all_or_nothing():
    """Documented: all-False masks when any modality would be left with fewer than 2
    validation or training cells; else every modality has at least 2 of each."""
    data = {"big": _named_adata([f"c{i}" for i in range(100)]),
            "small": _named_adata(["s0", "s1", "s2"])}
    mods = _set_up(data)
    seen_none = 0
    for fraction in (0.02, 0.3, 0.5):
        for seed in range(15):
            masks = _split.validation_masks(mods, fraction, seed)
            if not any(m.any() for m in masks.values()):
                seen_none += 1
                continue
            for m in masks.values():
                assert m.sum() >= 2 and (~m).sum() >= 2, (fraction, seed)
    assert seen_none


# data/_setup.py: ModalityData.obs_columns_changed
def test_marker_cells_without_a_value_are_not_counted_as_changed():
    """A marker column edited in one cell is one cell changed: cells without a value (NaN)
    before and after are unchanged."""
    names = [f"c{i}" for i in range(8)]
    ratio = [0.1, np.nan, 0.3, np.nan, 0.5, 0.6, 0.7, 0.8]
    data = {"a": _named_adata(names, obs={"m": ratio}), "b": _named_adata(names, obs={"m": ratio})}
    mods, _ = setup_data(data, {"a": "gaussian", "b": "gaussian"}, marker_key="m")
    assert mods["a"].obs_columns_changed(None, None, "m") == []
    data["a"].obs["m"] = data["a"].obs["m"].astype("float32")  # (re-typed: not changed)
    assert mods["a"].obs_columns_changed(None, None, "m") == []
    data["a"].obs.loc["c0", "m"] = 0.9
    assert mods["a"].obs_columns_changed(None, None, ["m"]) == ["obs['m'] (1 cell(s))"]
    del data["b"].obs["m"]
    assert mods["b"].obs_columns_changed(None, None, "m") == ["obs['m'] (removed)"]


def test_unknown_labels_of_new_data_are_not_counted_as_changed():
    """Labels outside a trained model's categories are missing (-1) when read and when read
    again: an edit of one other cell is one cell changed."""
    names = [f"c{i}" for i in range(6)]
    lab = ["A", "B", "C", "C", "A", "B"]  # 'C' is no class of the model
    data = {"a": _named_adata(names, obs={"y": lab}), "b": _named_adata(names, obs={"y": lab})}
    mods, cats = setup_data(data, {"a": "gaussian", "b": "gaussian"}, labels_key="y",
                                  label_categories=["A", "B"], labels_optional=True)
    assert mods["a"].unknown_labels == {"C": 2}
    data["a"].obs["y"] = ["B", "B", "C", "C", "A", "B"]
    assert mods["a"].obs_columns_changed("y", cats, None) == ["obs['y'] (1 cell(s))"]


# model/_split.py: _row_number_pairs / _pairs_across_batches (through warn_unused_pairs)
def _unused_pair_warnings(data, batch_key=None):
    mods, _ = setup_data(data, {n: tm.Modality("gaussian", batch_key=batch_key)
                                      for n in data})
    masks = {n: np.ones(md.n_obs, bool) for n, md in mods.items()}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _split.warn_unused_pairs(mods, masks)
    return [str(w.message) for w in rec]


def test_row_number_advice_only_where_both_modalities_are_named_by_numbers():
    """Pairs are advised as row-number pairs only where both modalities' names are numbers;
    one modality with real names makes equal names known pairs."""
    nums = [str(i) for i in range(30)]
    both = _unused_pair_warnings({"a": _named_adata(nums), "b": _named_adata(nums)})
    assert any(m.startswith("cell names that are row numbers") for m in both)
    mixed = _unused_pair_warnings(
        {"a": _named_adata(nums), "b": _named_adata(nums + [f"AAAC-{i}" for i in range(5)])})
    assert not any("row numbers" in m for m in mixed)
    assert any(m.startswith("known pairs unused") for m in mixed)


def test_pairs_across_batches_warn_only_when_most_lie_apart():
    """'Most' pairs in different batches warn; a third of them does not."""
    names = [f"c{i}" for i in range(60)]
    a_batch = ["s1"] * 30 + ["s2"] * 30

    def run(n_apart):
        b_batch = list(a_batch)
        for i in range(n_apart):  # the first n_apart cells: the other sample in 'b'
            b_batch[i if i < 30 else i] = "s2" if a_batch[i] == "s1" else "s1"
        return _unused_pair_warnings(
            {"a": _named_adata(names, obs={"batch": a_batch}),
             "b": _named_adata(names, obs={"batch": b_batch})}, batch_key="batch")

    assert not any("across batches" in m for m in run(20))
    warned = [m for m in run(40) if m.startswith("cells paired across batches")]
    assert warned and "40 of the 60 cells" in warned[0]


def test_pairs_across_batches_need_twenty_pairs():
    """Under 20 pairs with a batch in both modalities, pairs in different batches do not
    warn (too few to tell)."""
    names = [f"c{i}" for i in range(12)]
    a = _named_adata(names, obs={"batch": ["s1"] * 6 + ["s2"] * 6})
    b = _named_adata(names, obs={"batch": ["s2"] * 6 + ["s1"] * 6})  # every pair apart
    assert not any("across batches" in m
                   for m in _unused_pair_warnings({"a": a, "b": b}, batch_key="batch"))


def test_unhashable_obs_values_are_compared_each_time():
    """A label column whose values cannot be hashed (lists) is still compared cell by cell
    when it is edited."""
    names = [f"c{i}" for i in range(4)]
    lab = pd.Series([["A"], ["B"], ["A"], ["B"]], index=names, dtype=object)
    data = {"a": _named_adata(names), "b": _named_adata(names)}
    for ad_ in data.values():
        ad_.obs["y"] = lab
    mods, cats = setup_data(data, {"a": "gaussian", "b": "gaussian"}, labels_key="y")
    assert mods["a"].obs_columns_changed("y", cats, None) == []
    data["a"].obs["y"] = pd.Series([["B"], ["B"], ["A"], ["B"]], index=names, dtype=object)
    assert mods["a"].obs_columns_changed("y", cats, None) == ["obs['y'] (1 cell(s))"]


def test_pairs_across_batches_count_only_batch_names_both_use():
    """Only batch names both modalities use are compared: a sample each modality names its
    own way ('s3' / 's4') is not 'another batch'."""
    names = [f"c{i}" for i in range(60)]
    a = _named_adata(names, obs={"batch": ["s1"] * 10 + ["s2"] * 10 + ["s3"] * 40})
    b = _named_adata(names, obs={"batch": ["s1"] * 10 + ["s2"] * 10 + ["s4"] * 40})
    assert not any("across batches" in m
                   for m in _unused_pair_warnings({"a": a, "b": b}, batch_key="batch"))


# data/_setup.py: label_codes
def test_label_categories_of_older_models_match_the_raw_text():
    """Categories saved before numbers were normalised ('1.0') still match a float column's
    values (by their raw text), not as unknown labels."""
    from transmodal.data._setup import label_codes

    names = [f"c{i}" for i in range(4)]
    a = _named_adata(names, obs={"y": [1.0, 2.0, np.nan, 1.0]})
    codes, cats = label_codes(a, "y", "a", ["1.0", "2.0"])
    assert cats == ["1.0", "2.0"]
    assert codes.tolist() == [0, 1, -1, 0]


# model/_split.py: _decorated_pairs
def test_decorated_name_advice_for_a_mudata_says_to_build_it_anew():
    """The 'named differently' advice compares a MuData's modalities' own names too (its
    rows pair them): renamed, the MuData is built anew."""
    mudata = pytest.importorskip("mudata")
    bare = [f"AAAC{i:03d}" for i in range(30)]
    a = _named_adata([b + "-1" for b in bare])
    b = _named_adata(["S1#" + n for n in bare])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md = mudata.MuData({"a": a, "b": b})
    mods, _ = setup_data(md, {"a": "gaussian", "b": "gaussian"})
    assert "then build it anew: mdata = mudata.MuData" in _split._decorated_pairs(mods, "a", "b")
    # (the same cells as a dict of AnnData: advised, without the MuData's part)
    mods, _ = setup_data({"a": a, "b": b}, {"a": "gaussian", "b": "gaussian"})
    advice = _split._decorated_pairs(mods, "a", "b")
    assert "AAAC000-1" in advice and "MuData" not in advice


# data/_setup.py: batch_codes
def test_new_data_without_the_batch_column_get_unknown_batches():
    """Documented (setup_data, batch_categories): with labels_optional, a missing batch
    column gives code -1 (no error), an unknown batch too."""
    names = [f"c{i}" for i in range(4)]
    specs = {"a": tm.Modality("gaussian", batch_key="batch"), "b": "gaussian"}
    data = {"a": _named_adata(names), "b": _named_adata(names)}
    mods, _ = setup_data(data, specs, batch_categories={"a": ["s1", "s2"]},
                               labels_optional=True)
    assert mods["a"].batches.tolist() == [-1] * 4
    assert mods["a"].batch_categories == ["s1", "s2"]
    data["a"].obs["batch"] = ["s1", "s3", "s2", "s1"]
    mods, _ = setup_data(data, specs, batch_categories={"a": ["s1", "s2"]},
                               labels_optional=True)
    assert mods["a"].batches.tolist() == [0, -1, 1, 0]


# _hints.py: nearest_names / known_name_hint
def test_nearest_names_follow_their_documented_examples():
    from transmodal._hints import nearest_names

    assert nearest_names("checkpoint", ["checkpoint_dir", "checkpoint_every", "seed"]) == [
        "checkpoint_dir", "checkpoint_every"]
    assert nearest_names("batch", ["batch_size", "seed"]) == ["batch_size"]
    assert nearest_names("hidden_dims", ["hidden", "dropout"]) == ["hidden"]
    assert nearest_names("beta_kl", ["beta", "seed"]) == ["beta"]
    # names merely alike, short prefixes, loss weights of another term: none
    assert nearest_names("validation", ["variational", "validation_fraction"]) == [
        "validation_fraction"]
    assert nearest_names("num_workers", ["num_nodes"]) == []
    assert nearest_names("bat", ["batch_size", "batch_key"]) == []
    assert nearest_names("lr_max", ["lr"]) == []
    assert nearest_names("lam_kl", ["lam_cls", "lam_adv"]) == []  # (0.77 alike)
    assert nearest_names("lam_advs", ["lam_cls", "lam_adv"]) == ["lam_adv"]
    # a prefix of more than three names: no guess
    assert nearest_names("lam_", ["lam_adv", "lam_cls", "lam_mmd", "lam_anchor"]) == []


def test_known_name_hint_tables_then_loose_spelling():
    from transmodal._hints import known_name_hint

    # the first table that has the name answers; later tables are looked in too
    assert "KL weight" in known_name_hint(("resume_training", "train"), "kl_weight", ["beta"])
    assert "first argument" in known_name_hint(("resume_training", "train"), "ckpt_dir", [])
    # a spelling merely alike: only for a config file's keys (loose)
    assert known_name_hint("train", "out_folder", ["out_dir"], loose=True) == (
        "did you mean 'out_dir'?")
    assert known_name_hint("train", "out_folder", ["out_dir"]) is None


def test_decorated_names_need_most_unique_matches():
    """The 'named differently' advice needs the bare names unique in each modality and
    matching at least half of the smaller one's cells."""
    bare = [f"AAAC{i:03d}" for i in range(20)]

    def advice(a_names, b_names):
        mods, _ = setup_data({"a": _named_adata(a_names), "b": _named_adata(b_names)},
                                   {"a": "gaussian", "b": "gaussian"})
        return _split._decorated_pairs(mods, "a", "b")

    assert advice([b + "-1" for b in bare], ["S1#" + b for b in bare])
    # 6 of 20 match once decorations are set aside: no advice
    assert advice([b + "-1" for b in bare],
                  ["S1#" + b for b in bare[:6]] + [f"GGGT{i:03d}" for i in range(14)]) is None
    # bare names that repeat (two suffixes of one barcode): no advice
    assert advice([b + "-1" for b in bare[:10]] + [b + "-2" for b in bare[:10]],
                  ["S1#" + b for b in bare]) is None


def test_decorated_names_set_aside_all_but_the_barcode():
    """Cells named around their barcode otherwise (Seurat's merge: 'pbmc_<barcode>-1';
    anndata.concat: '<barcode>-1_s1') are told as the same cells, with a renaming that pairs
    them; barcodes that repeat within a modality once bare are not."""
    import pandas as pd

    rng = np.random.default_rng(0)
    codes = ["".join(rng.choice(list("ACGT"), 16)) for _ in range(30)]
    seurat, plain = ["pbmc_" + c + "-1" for c in codes], [c + "-1" for c in codes]
    advice = _split.decorated_names_advice("rna", "atac", seurat, plain)
    assert "30 of their cells match once all but the barcode" in advice
    rename = advice.split("e.g. in both ")[1]
    renamed = [pd.Index(names).str.extract(r"([ACGTN]{12,})", expand=False)
               for names in (seurat, plain)]
    assert "str.extract(r'([ACGTN]{12,})', expand=False)" in rename
    assert (renamed[0] == renamed[1]).all()
    assert "all but the barcode" in _split.decorated_names_advice(
        "rna", "atac", [c + "-1_s1" for c in codes], plain)
    # (one modality from two samples: its bare barcodes repeat)
    assert _split.decorated_names_advice(
        "rna", "atac", ["a_" + c for c in codes[:15]] + ["b_" + c for c in codes[:15]],
        plain) is None


def test_batch_of_its_own_warns_only_for_most_cells():
    """The 'a batch of their own' warning needs more than half the cells alone in their
    batch: 3 singletons among 10 cells are batches."""
    names = [f"c{i}" for i in range(10)]
    batch = ["p1", "p2", "p3"] + ["big"] * 7
    data = {"a": _named_adata(names, obs={"batch": batch}), "b": _named_adata(names)}
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        setup_data(data, {"a": tm.Modality("gaussian", batch_key="batch"),
                                "b": "gaussian"})
    assert not any("batch of their own" in str(w.message) for w in rec)
    data["a"].obs["batch"] = [f"p{i}" for i in range(6)] + ["big"] * 4
    with pytest.warns(UserWarning, match=r"puts 6 of 10 cells in a batch of their own"):
        setup_data(data, {"a": tm.Modality("gaussian", batch_key="batch"),
                                "b": "gaussian"})


def test_unknown_batch_is_an_error_where_batches_are_required():
    """Without labels_optional, a batch outside the known batch_categories is an error that
    names it (not a silent code)."""
    names = [f"c{i}" for i in range(4)]
    data = {"a": _named_adata(names, obs={"batch": ["s1", "s9", "s2", "s1"]}),
            "b": _named_adata(names)}
    with pytest.raises(ValueError, match=r"batch 's9' in obs\['batch'\] is not one of "
                             r"the model's batches \['s1', 's2'\]"):
        setup_data(data, {"a": tm.Modality("gaussian", batch_key="batch"),
                                "b": "gaussian"}, batch_categories={"a": ["s1", "s2"]})


# model/_split.py: choose_anchors
def test_anchors_are_pairs_of_training_cells_in_both_modalities():
    """Documented: anchors are drawn from the paired *training* cells: a pair whose cell is
    a validation cell in either modality is no anchor."""
    names = [f"c{i}" for i in range(10)]
    mods = _set_up({"a": _named_adata(names), "b": _named_adata(names[::-1])})
    train = {"a": np.ones(10, bool), "b": np.ones(10, bool)}
    train["b"][:3] = False  # (b's rows 0-2: cells c9, c8, c7)
    train["a"][0] = False
    ia, ib = _split.choose_anchors(mods, train, 1.0, 0, warn=False)["a|b"]
    assert sorted(np.asarray(names)[ia]) == [f"c{i}" for i in range(1, 7)]
    np.testing.assert_array_equal(mods["a"].obs_names[ia], mods["b"].obs_names[ib])


# data/_setup.py: marker_values
def test_infinite_marker_values_are_refused():
    names = [f"c{i}" for i in range(4)]
    m = [0.1, np.inf, 0.3, np.nan]
    data = {"a": _named_adata(names, obs={"m": m}), "b": _named_adata(names, obs={"m": m})}
    with pytest.raises(ValueError, match=r"modality 'a': marker_key 'm' holds infinite"):
        setup_data(data, {"a": "gaussian", "b": "gaussian"}, marker_key="m")
