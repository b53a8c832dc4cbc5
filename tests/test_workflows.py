"""Evaluation on paired cells, plots, the A549 demo and the demo benchmark, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import transmodal as tm
from transmodal.workflows import evaluate_paired, evaluate_unpaired, run_demo
from transmodal.workflows._demo import DEMO_KEYS

ROOT = Path(__file__).resolve().parents[1]


def _has_a549() -> bool:
    try:
        tm.datasets.dataset_dir("scicar_a549")
    except FileNotFoundError:
        return False
    return True


needs_a549 = pytest.mark.skipif(not _has_a549(), reason="$TRANSMODAL_DATA/scicar_a549 missing")


def test_evaluate_paired_keys_and_ranges(trained_model, paired_data):
    # the model's anchor pairs (half the training pairs) among the cells: said so, with
    # the score on them and on the others
    n_anchors = len(trained_model.anchors_["rna|atac"][0])
    with pytest.warns(UserWarning, match=rf"evaluate_paired: {n_anchors} of the "
                      rf"{paired_data['rna'].n_obs} pairs evaluated are anchor pairs of the model "
                      r"\(trained to lie together; FOSCTTM 0.\d+ on them; FOSCTTM 0.\d+ on the "
                      r"other \d+\), so the metrics are optimistic") as record:
        res = evaluate_paired(trained_model, paired_data, source="rna", target="atac",
                              labels_key="label")
    anchors = paired_data["rna"].obs_names.isin(
        trained_model.mods["rna"].obs_names[trained_model.anchors_["rna|atac"][0]])
    z_r = trained_model.get_latent_representation("rna", paired_data["rna"])
    z_a = trained_model.get_latent_representation("atac", paired_data["atac"])
    others = tm.metrics.foscttm(z_r[~anchors], z_a[~anchors])
    assert f"on the other {(~anchors).sum()})" in str(record[0].message)
    assert f"{others:.3f} on the other" in str(record[0].message)
    # held-out cells only (no anchors among them), or other cells named as the anchors
    # (barcodes of another run): no warning
    held = {k: v[~anchors] for k, v in paired_data.items()}
    other = {k: v[::-1].copy() for k, v in paired_data.items()}
    for k, v in other.items():
        v.obs_names = paired_data[k].obs_names  # (other cells under the same names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert evaluate_paired(trained_model, held, source="rna", target="atac")["foscttm"] \
            == pytest.approx(others)
        evaluate_paired(trained_model, other, source="rna", target="atac")
    assert res["n_cells"] == paired_data["rna"].n_obs
    for key in ("foscttm", "cluster_accuracy", "label_transfer", "mixing_accuracy", "knn_acc_l1_5",
                "knn_acc_l1_50", "knn_chance_l1_5", "knn_chance_l1_50", "partner_top1",
                "partner_top50"):
        assert 0.0 <= res[key] <= 1.0, key
    for d in ("rna_to_atac", "atac_to_rna"):
        assert -1.0 <= res[f"translation_pearson_{d}"] <= 1.0
        assert -1.0 <= res[f"baseline_pearson_{d}"] <= 1.0
    # cluster accuracy per direction: cells of the first modality labelled from the second
    lab = paired_data["rna"].obs["label"].astype(str).to_numpy()
    ca = tm.metrics.cluster_accuracy(z_r, z_a, lab, lab)
    assert res["cluster_accuracy_rna_to_atac"] == pytest.approx(ca["x_to_y"])
    lt = tm.metrics.label_transfer_both(z_r, lab, z_a, lab, k=5)  # both directions too
    assert res["label_transfer_rna_to_atac"] == pytest.approx(lt["x_to_y"])
    assert res["label_transfer_atac_to_rna"] == pytest.approx(lt["y_to_x"])


def test_evaluate_paired_runs_each_neighbour_search_once(trained_model, paired_data,
                                                         monkeypatch):
    """FOSCTTM and partner top-k share the partner ranks, k-NN accuracy and cluster
    accuracy the nearest cells (both directions from one pass), and the k-NN accuracy's two
    uses of the distances among a modality's cells (neighbour positions, chance level) one
    pass: two Euclidean and three L1 passes over the blocks of distances in all (twelve
    before), with the public functions' results."""
    from transmodal.metrics import _chunked, _matching

    anchors = paired_data["rna"].obs_names.isin(
        trained_model.mods["rna"].obs_names[trained_model.anchors_["rna|atac"][0]])
    held = {k: v[~anchors] for k, v in paired_data.items()}  # (no anchor warning's passes)
    passes = []
    real = _chunked.blocks

    def spy(dist, chunk_size):
        passes.append(dist.metric)
        return real(dist, chunk_size)

    monkeypatch.setattr(_chunked, "blocks", spy)
    monkeypatch.setattr(_matching, "blocks", spy)
    res = evaluate_paired(trained_model, held, source="rna", target="atac", labels_key="label")
    assert sorted(passes) == ["euclidean"] * 2 + ["l1"] * 3
    monkeypatch.undo()
    z_r = trained_model.get_latent_representation("rna", held["rna"])
    z_a = trained_model.get_latent_representation("atac", held["atac"])
    lab = held["rna"].obs["label"].astype(str).to_numpy()
    assert res["foscttm"] == tm.metrics.foscttm(z_r, z_a)
    top = tm.metrics.partner_in_top_k(z_r, z_a, k=(1, 5, 10, 50))
    assert [res[f"partner_top{k}"] for k in (1, 5, 10, 50)] == list(top.values())
    knn, chance = tm.metrics.knn_accuracy_and_chance(z_r, z_a, k=(5, 50), metric="l1")
    assert [res[f"knn_acc_l1_{k}"] for k in (5, 50)] == list(knn["mean"].values())
    assert [res[f"knn_chance_l1_{k}"] for k in (5, 50)] == list(chance["mean"].values())
    assert res["cluster_accuracy"] == tm.metrics.cluster_accuracy(z_r, z_a, lab, lab)["mean"]


def test_evaluate_paired_scores_given_cells_after_the_training_data_changed(paired_data,
                                                                           make_model, train):
    """Cells given to evaluate: its baseline profile comes from the model's training matrix,
    also once the training AnnData lost that matrix or cells (it was an error), and from a
    matrix replaced there (read anew, with the warning)."""
    data = {k: v.copy() for k, v in paired_data.items()}
    model = train(make_model(data, anchor_fraction=1.0), max_epochs=1)
    test = {k: v[:50].copy() for k, v in paired_data.items()}
    want = evaluate_paired(model, test, source="rna", target="atac")
    data["rna"]._inplace_subset_obs(np.arange(100))
    assert evaluate_paired(model, test, source="rna", target="atac") == want
    data["atac"].X = data["atac"].X[::-1].copy()
    with pytest.warns(UserWarning, match="modality 'atac': its AnnData's X was replaced"):
        moved = evaluate_paired(model, test, source="rna", target="atac")
    assert moved["baseline_pearson_rna_to_atac"] != want["baseline_pearson_rna_to_atac"]
    assert moved["foscttm"] == want["foscttm"]


def test_evaluations_give_each_warning_once(trained_model, paired_data):
    """A matrix read by several steps of an evaluation (embedding, translation) is checked
    by each: its warning (here: cells without a non-zero value) is given once, at the
    caller's line, also where the steps' own warning filters would repeat it."""
    test = {k: v[:60].copy() for k, v in paired_data.items()}
    test["atac"].X[:3] = 0  # (poisson counts: empty cells warned of)
    for evaluate, kw in ((evaluate_paired, {}), (evaluate_unpaired, {"labels_key": "label"})):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            evaluate(trained_model, test, source="rna", target="atac", **kw)
        empty = [w for w in caught if "hold no non-zero value" in str(w.message)]
        assert len(empty) == 1 and empty[0].filename == __file__, evaluate.__name__


def test_evaluate_paired_needs_shared_cells(trained_model, paired_data):
    rna = paired_data["rna"].copy()
    rna.obs_names = [f"other{i}" for i in range(rna.n_obs)]
    with pytest.raises(ValueError, match="present in both"):
        evaluate_paired(trained_model, {"rna": rna, "atac": paired_data["atac"]}, source="rna", target="atac")
    atac = paired_data["atac"].copy()
    atac.obs_names = ["c0"] * atac.n_obs
    with pytest.raises(ValueError, match="modality 'atac': obs_names are not unique"):
        evaluate_paired(trained_model, {"rna": paired_data["rna"], "atac": atac},
                        source="rna", target="atac")


def test_evaluate_unpaired_scores_shared_classes(trained_model, paired_data):
    """Cells measured apart: label metrics on the classes both modalities hold."""
    rna = paired_data["rna"].copy()
    rna.obs_names = [f"r{i}" for i in range(rna.n_obs)]  # no cell in common
    atac = paired_data["atac"].copy()
    classes = sorted(atac.obs["label"].astype(str).unique())
    private = atac.obs["label"].astype(str).to_numpy() == classes[0]
    lab = atac.obs["label"].astype(object).to_numpy()
    lab[private] = "atac only"  # a class the RNA cells never hold
    atac.obs["label"] = lab
    data = {"rna": rna, "atac": atac}
    with pytest.raises(ValueError, match="evaluate_unpaired"):
        evaluate_paired(trained_model, data, source="rna", target="atac", labels_key="label")
    res = evaluate_unpaired(trained_model, data, source="rna", target="atac", labels_key="label")
    assert res["n_cells_rna"] == rna.n_obs and res["shared_classes"] == len(classes) - 1
    z_r = trained_model.get_latent_representation("rna", rna)
    z_a = trained_model.get_latent_representation("atac", atac)
    lr = rna.obs["label"].astype(str).to_numpy()
    shared = classes[1:]
    lt = tm.metrics.label_transfer_both(z_r, lr, z_a, lab, k=5, classes=shared)
    assert res["label_transfer_rna_to_atac"] == pytest.approx(lt["x_to_y"])
    assert res["label_transfer"] == pytest.approx(lt["mean"])
    # RNA cells of the class ATAC lacks are not scored; their nearest ATAC cell being of
    # ATAC's private class counts as wrong
    nn = tm.metrics.cluster_accuracy(z_r, z_a, np.where(np.isin(lr, shared), lr, None),
                                     np.where(np.isin(lab, shared), lab, None))
    assert res["cluster_accuracy"] == pytest.approx(nn["mean"])
    assert 0.5 <= res["label_transfer"] <= 1.0 and 0.0 <= res["mixing_accuracy"] <= 1.0
    atac.obs["label"] = "other"
    with pytest.raises(ValueError, match="share no class"):
        evaluate_unpaired(trained_model, data, source="rna", target="atac", labels_key="label")


def test_evaluate_paired_leaves_unlabelled_cells_out_and_names_bad_arguments(
    trained_model, paired_data, tmp_path
):
    for adata in paired_data.values():
        lab = adata.obs["label"].astype(object).to_numpy()
        lab[:30] = np.nan
        adata.obs["label"] = lab
    res = evaluate_paired(trained_model, paired_data, source="rna", target="atac", labels_key="label")
    z_r = trained_model.get_latent_representation("rna", paired_data["rna"])
    z_a = trained_model.get_latent_representation("atac", paired_data["atac"])
    lab = paired_data["rna"].obs["label"].to_numpy()
    assert res["cluster_accuracy"] == pytest.approx(tm.metrics.cluster_accuracy(z_r, z_a, lab, lab)["mean"])
    with pytest.raises(ValueError, match="source and target must differ"):
        evaluate_paired(trained_model, paired_data, source="rna", target="rna")
    with pytest.raises(ValueError, match=r"target 'protein' is not a modality of the model"):
        evaluate_paired(trained_model, paired_data, source="rna", target="protein")
    with pytest.raises(ValueError, match="modality 'rna': labels_key 'nope' not found"):
        evaluate_paired(trained_model, paired_data, source="rna", target="atac", labels_key="nope")
    few = {k: a[:3].copy() for k, a in paired_data.items()}  # too few cells for k-NN accuracy
    res = evaluate_paired(trained_model, few, source="rna", target="atac")
    assert res["n_cells"] == 3 and "knn_acc_l1_5" not in res and "mixing_accuracy" not in res
    assert 0 <= res["foscttm"] <= 1
    # a model loaded without its data compares translations with the evaluated cells' mean
    trained_model.save(tmp_path / "m")
    bare = tm.CrossModalAE.load(tmp_path / "m")
    res = evaluate_paired(bare, paired_data, source="rna", target="atac")
    assert -1.0 <= res["baseline_pearson_rna_to_atac"] <= 1.0


def test_baseline_is_the_mean_training_profile(trained_model, paired_data):
    """The baseline uses the same units and comparison space as the translations."""
    from transmodal.workflows import comparison_space

    to_units, compare = comparison_space(trained_model, "atac")
    x = paired_data["atac"].X
    observed = compare(to_units(x))
    train_rows = ~trained_model.val_masks_["atac"]
    mean = compare(to_units(x[train_rows]).mean(0, keepdims=True))
    expected = np.nanmean([np.corrcoef(mean[0], o)[0, 1] for o in observed])
    res = evaluate_paired(trained_model, paired_data, source="rna", target="atac")
    assert res["baseline_pearson_rna_to_atac"] == pytest.approx(expected, rel=1e-6)


def test_latent_and_history_plots(trained_model, paired_data, tmp_path):
    z = {k: trained_model.get_latent_representation(k) for k in ("rna", "atac")}
    labels = {k: paired_data[k].obs["label"].to_numpy() for k in z}
    tm.pl.latent(z, labels, path=tmp_path / "latent.png")
    tm.pl.history(trained_model.history, path=tmp_path / "history.png")
    assert (tmp_path / "latent.png").stat().st_size > 1000
    assert (tmp_path / "history.png").stat().st_size > 1000


@needs_a549
def test_demo_runs_end_to_end(tmp_path):
    with warnings.catch_warnings(record=True) as rec:  # (the paper's empty ATAC cells kept)
        warnings.simplefilter("always")
        metrics = run_demo(tmp_path / "demo", seed=0, max_epochs=2, progress_bar=False,
                           verbose=False)
    assert not [w for w in rec if "no non-zero value" in str(w.message)]
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert list(saved)[: len(DEMO_KEYS) + 3] == [*DEMO_KEYS, "seconds", "peak_rss_mib", "seed"]
    for key in (*DEMO_KEYS, "seconds", "peak_rss_mib"):
        assert key in saved and np.isfinite(saved[key])
    assert saved["n_test_cells"] == 340
    assert metrics["foscttm"] == saved["foscttm"]
    assert (tmp_path / "demo" / "latent.png").stat().st_size > 1000


@needs_a549
def test_demo_benchmark_prints_one_json_line(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "a549_demo.py"), "--seeds", "0", "--max-epochs", "1",
         "--out", str(tmp_path / "bench")],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["seeds"] == [0] and "foscttm" in result["mean"]


@needs_a549
def test_a549_contrastive_setting_trains():
    """The benchmark's contrastive-anchor setting: encoders on principal components, more
    dropout, the contrastive anchor loss; trains and embeds held-out cells."""
    from transmodal.workflows._demo import (
        A549_CONTRASTIVE_DROPOUT,
        A549_CONTRASTIVE_PCA,
        A549_CONTRASTIVE_TRAIN,
        a549_model,
    )

    data = tm.datasets.scicar_a549()
    split = data["rna"].obs["yang2021_split"].astype(str).to_numpy()
    train = {k: a[split == "train"][:400].copy() for k, a in data.items()}
    test = {k: a[split == "test"].copy() for k, a in data.items()}
    model = a549_model(train, anchor_fraction=0.5, seed=0, contrastive=True)
    assert model.init_params_["dropout"] == A549_CONTRASTIVE_DROPOUT
    assert all(md.spec.n_pca == A549_CONTRASTIVE_PCA for md in model.mods.values())
    with warnings.catch_warnings():  # two epochs leave the modalities apart: expected
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        model.train(progress_bar=False, **{**A549_CONTRASTIVE_TRAIN, "max_epochs": 2})
    assert model.train_params_["anchor_distance"] == "contrastive"
    assert np.isfinite(model.history["train_anchor"]).all()
    res = evaluate_paired(model, test, source="rna", target="atac", labels_key="treatment_time")
    assert 0.0 <= res["foscttm"] <= 1.0


@needs_a549
def test_a549_validation_benchmark_applies_variants(tmp_path):
    """benchmarks/a549_validation.py scores a variant of the contrastive setting on held-out
    train cells: the replaced arguments reach the model, one JSON line per run."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "a549_validation.py"), "--fractions", "1",
         "--seeds", "0", "--train", '{"max_epochs": 1}', "--model", '{"n_latent": 4}',
         "--modality", "atac", '{"normalize": false}'],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1
    row = lines[0]
    assert row["model"] == {"n_latent": 4} and row["modality"] == {"atac": {"normalize": False}}
    assert 0.0 <= row["foscttm_validation"] <= 1.0 and 0.0 <= row["foscttm_train"] <= 1.0
    assert all(0.0 <= row[f"knn_acc_l1_{k}_validation"] <= 1.0 for k in (5, 50))


@needs_a549
def test_a549_model_overrides():
    from transmodal.workflows._demo import a549_model

    data = tm.datasets.scicar_a549()
    train = {k: a[:200].copy() for k, a in data.items()}
    mods = {"rna": tm.Modality("nb", n_pca=10), "atac": tm.Modality("nb", n_pca=10, normalize=False)}
    model = a549_model(train, contrastive=True, modalities=mods, n_latent=4, dropout=0.1)
    assert model.init_params_["n_latent"] == 4 and model.init_params_["dropout"] == 0.1
    assert model.mods["atac"].spec.normalize is False and model.mods["rna"].spec.n_pca == 10


def test_demo_without_data_creates_nothing(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError)):
        run_demo(tmp_path / "demo", data_path=tmp_path / "nowhere", max_epochs=1,
                 progress_bar=False, verbose=False)
    assert not (tmp_path / "demo").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        run_demo(tmp_path / "file", max_epochs=1, progress_bar=False, verbose=False)


def test_evaluate_unpaired_warns_when_scoring_the_labels_the_model_trained_on(
    trained_model, paired_data
):
    """Label transfer on cells whose labels trained the latent classifier measures how well
    it fits them: evaluate_unpaired says so, counting the training cells (not validation
    cells) by name and values; cells of another run named alike, and labels of another
    obs column, are not counted."""
    val = {n: trained_model.val_masks_[n] for n in paired_data}
    with pytest.warns(UserWarning, match="labels_key 'label' labels") as caught:
        evaluate_unpaired(trained_model, paired_data, source="rna", target="atac",
                          labels_key="label")
    text = next(str(w.message) for w in caught if "labels_key 'label' labels" in str(w.message))
    n = paired_data["rna"].n_obs
    assert (f"{int((~val['rna']).sum())} of the {n} 'rna' cells and "
            f"{int((~val['atac']).sum())} of the {n} 'atac' cells scored") in text, text
    other_cells = {k: v.copy() for k, v in paired_data.items()}
    other_cells["rna"].obs_names = [f"r{i}" for i in range(n)]  # not the training cells
    other_cells["atac"].X = other_cells["atac"].X + 1.0  # named as them, other values
    other_key = {k: v.copy() for k, v in paired_data.items()}
    for v in other_key.values():
        v.obs["other"] = v.obs["label"].to_numpy()
    for data, key in ((other_cells, "label"), (other_key, "other")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            evaluate_unpaired(trained_model, data, source="rna", target="atac", labels_key=key)
        assert not [w for w in caught if "was trained on the labels_key" in str(w.message)], key
