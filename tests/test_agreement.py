"""Seed agreement between training runs, and the PBMC loader."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import transmodal as tm


def runs(rng, n=300):
    a = rng.normal(size=(n, 5))
    b = a + 0.1 * rng.normal(size=a.shape)
    return a, b


def test_identical_runs_agree_and_unrelated_runs_do_not(rng=np.random.default_rng(0)):
    a, b = runs(rng)
    same = tm.metrics.seed_agreement([{"x": a, "y": b}, {"x": a + 1e-3, "y": b}], k=10)
    assert list(same.columns) == ["run_a", "run_b", "agreement"]
    assert same["agreement"].iloc[0] > 0.95
    swapped = {"x": a, "y": b[rng.permutation(len(b))]}  # y cells matched to the wrong x cells
    with pytest.warns(UserWarning, match="runs 0 and 1 disagree"):
        table = tm.metrics.seed_agreement([{"x": a, "y": b}, swapped, {"x": a, "y": b}], k=10)
    assert len(table) == 3
    assert abs(table["agreement"].iloc[0]) < 0.05 and table["agreement"].iloc[1] > 0.95
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.metrics.seed_agreement([{"x": a, "y": b}, swapped], k=10, warn_below=None)


def test_swapped_clusters_are_caught():
    """Two runs that match clusters differently agree only by chance."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 5, size=(4, 3))
    lab = np.repeat(np.arange(4), 50)
    x = centres[lab] + rng.normal(size=(200, 3))
    y = centres[lab] + rng.normal(size=(200, 3))
    y_swapped = centres[np.array([1, 0, 3, 2])[lab]] + rng.normal(size=(200, 3))
    table = tm.metrics.seed_agreement([{"x": x, "y": y}, {"x": x, "y": y_swapped}], warn_below=None)
    assert table["agreement"].iloc[0] < 0.1


def test_seed_agreement_of_models(paired_data, make_model, train):
    """Trained models are accepted; equal seeds train identical models (agreement 1)."""
    models = [train(make_model(paired_data, seed=s)) for s in (0, 0, 1)]
    table = tm.metrics.seed_agreement(models, k=10, warn_below=None)
    assert table.shape == (3, 3)
    assert table["agreement"].iloc[0] == pytest.approx(1.0)
    assert table["agreement"].iloc[1:].max() < 1.0
    # an Ensemble stands for its members
    ens = tm.Ensemble(models[1:])
    pd.testing.assert_frame_equal(
        tm.metrics.seed_agreement(ens, k=10, warn_below=None),
        tm.metrics.seed_agreement(models[1:], k=10, warn_below=None),
    )


def test_seed_agreement_errors(rng=np.random.default_rng(2)):
    a, b = runs(rng, 50)
    with pytest.raises(ValueError, match="at least two runs"):
        tm.metrics.seed_agreement([{"x": a, "y": b}])
    with pytest.raises(ValueError, match=r"runs\[1\] has modalities"):
        tm.metrics.seed_agreement([{"x": a, "y": b}, {"x": a, "z": b}])
    with pytest.raises(ValueError, match=r"runs\[1\]\['y'\] has 40 cells"):
        tm.metrics.seed_agreement([{"x": a, "y": b}, {"x": a, "y": b[:40]}])
    with pytest.raises(TypeError, match="CrossModalAE"):
        tm.metrics.seed_agreement([a, b])
    with pytest.raises(ValueError, match="runs must be a list"):
        tm.metrics.seed_agreement(5)
    for k in (0, 2.5, True):
        with pytest.raises(ValueError, match="k must be an integer >= 1"):
            tm.metrics.seed_agreement([{"x": a, "y": b}, {"x": a, "y": b}], k=k)


def _has(name):
    try:
        tm.datasets.dataset_dir(name)
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _has("pbmc_rna_atac_unpaired"), reason="PBMC data missing")
def test_pbmc_loader():
    d = tm.datasets.pbmc_rna_atac_unpaired()
    assert d["rna"].shape == (1985, 50) and d["atac"].shape == (1919, 50)
    for a in d.values():
        assert set(tm.datasets.PBMC_SHARED_CLASSES) <= set(a.obs["cell_type"].astype(str))
    assert not set(d["rna"].obs_names) & set(d["atac"].obs_names)


def test_medoid_run_is_the_majority():
    """Runs 0, 2 and 3 found the same alignment, run 1 another: the medoid is one of the
    majority (the most central one), never the odd one out."""
    agree = {(0, 1): 0.0, (0, 2): 0.9, (0, 3): 0.8, (1, 2): 0.05, (1, 3): 0.0, (2, 3): 0.85}
    table = pd.DataFrame([{"run_a": a, "run_b": b, "agreement": v} for (a, b), v in agree.items()])
    assert tm.metrics.medoid_run(table) == 2
    two = pd.DataFrame([{"run_a": 0, "run_b": 1, "agreement": 0.3}])
    assert tm.metrics.medoid_run(two) == 0  # a tie: the lower index
    with pytest.raises(ValueError, match="missing columns"):
        tm.metrics.medoid_run(table.drop(columns="agreement"))
    with pytest.raises(ValueError, match="at least two runs"):
        tm.metrics.medoid_run(table.iloc[:0])


def test_train_consensus(paired_data, make_model):
    """Every seed is trained; the kept model is the medoid of the agreement table."""
    built = []

    def build(seed):
        built.append(seed)
        return make_model(paired_data, seed=seed)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*disagree.*", category=UserWarning)
        run = tm.workflows.train_consensus(build, seeds=(3, 5, 7), k=10, max_epochs=2,
                                           batch_size=32, progress_bar=False)
    assert built == [3, 5, 7]
    assert run.seed in (3, 5, 7) and run.model.is_trained_
    table = run.agreement
    assert list(table.columns) == ["run_a", "run_b", "seed_a", "seed_b", "agreement"]
    assert run.seed == (3, 5, 7)[tm.metrics.medoid_run(table)]
    # the kept model is the one trained with that seed (training is deterministic)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        again = make_model(paired_data, seed=run.seed).train(max_epochs=2, batch_size=32,
                                                             progress_bar=False)
    np.testing.assert_allclose(run.model.get_latent_representation("rna"),
                               again.get_latent_representation("rna"), rtol=1e-5, atol=1e-6)


def test_train_consensus_names_the_kept_seed_when_runs_disagree(paired_data, make_model,
                                                                monkeypatch):
    """A disagreement warning is passed on with the seed that was kept."""
    def disagreeing(runs, k, run_names=None):
        warnings.warn("runs 0 and 1 disagree", UserWarning, stacklevel=2)
        return pd.DataFrame({"run_a": [0, 0, 1], "run_b": [1, 2, 2],
                             "agreement": [0.1, 0.0, 0.8]})

    monkeypatch.setattr(tm.metrics, "seed_agreement", disagreeing)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
        with pytest.warns(UserWarning, match="disagree.*kept seed 9"):
            run = tm.workflows.train_consensus(lambda s: make_model(paired_data, seed=s),
                                               seeds=(4, 9, 2), max_epochs=1, batch_size=32,
                                               progress_bar=False)
    assert run.seed == 9  # run 1: agreement 0.1 + 0.8, the highest
    # runs tied by known pairs (every cell an anchor): the medoid is kept, without the
    # warning, whose advice (add prior knowledge) they have followed
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        run = tm.workflows.train_consensus(
            lambda s: make_model(paired_data, seed=s, anchor_fraction=1.0), seeds=(4, 9, 2),
            max_epochs=1, batch_size=32, progress_bar=False)
    assert run.seed == 9 and not [w for w in got if "disagree" in str(w.message)]


def test_train_consensus_errors(paired_data, make_model):
    build = lambda s: make_model(paired_data, seed=s)  # noqa: E731
    with pytest.raises(ValueError, match="at least two integers"):
        tm.workflows.train_consensus(build, seeds=(0,))
    with pytest.raises(ValueError, match="distinct"):
        tm.workflows.train_consensus(build, seeds=(1, 1))
    with pytest.raises(ValueError, match="do not pass seed"):
        tm.workflows.train_consensus(build, seeds=(0, 1), seed=3)
    with pytest.raises(TypeError, match="not a CrossModalAE"):
        tm.workflows.train_consensus(lambda s: "model", seeds=(0, 1))
    # a build that ignores its seed would train near-identical runs silently
    with pytest.raises(ValueError, match=r"build\(1\) returned a model with seed=0"):
        tm.workflows.train_ensemble(lambda s: make_model(paired_data), seeds=(0, 1))
    model = make_model(paired_data, seed=0)
    with pytest.raises(ValueError, match="returned before"):
        tm.workflows.train_consensus(lambda s: model, seeds=(0, 2), max_epochs=1)


def test_workflows_check_k_before_training():
    def build(seed):
        raise AssertionError("k must be checked before any run is built")

    for train in (tm.workflows.train_consensus, tm.workflows.train_ensemble):
        with pytest.raises(ValueError, match="k must be an integer >= 1; got 0"):
            train(build, seeds=(0, 1), k=0)


def test_named_frames_are_matched_by_their_cells_names():
    """Runs given as DataFrames indexed by the cells' names are matched by those names, as
    models are (the same run with its rows shuffled read 0.07 and warned that the data do
    not determine the match); arrays are matched by position; other names are refused."""
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(60)]
    run = {m: pd.DataFrame(rng.normal(size=(60, 4)), index=names) for m in ("rna", "atac")}
    perm = rng.permutation(60)
    shuffled = {m: z.iloc[perm] for m, z in run.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = tm.metrics.seed_agreement([run, shuffled], k=5)
    assert table["agreement"].iloc[0] == pytest.approx(1.0)
    as_arrays = {m: z.to_numpy() for m, z in shuffled.items()}  # (positions: other cells)
    assert tm.metrics.seed_agreement([run, as_arrays], k=5, warn_below=None)[
        "agreement"].iloc[0] < 0.5
    # AnnData's default row names (numbers) are positions, not names: matched by order
    numbered = {m: ad.AnnData(z.to_numpy()) for m, z in run.items()}
    assert tm.metrics.seed_agreement([run, numbered], k=5)["agreement"].iloc[0] == 1.0
    # ... unless both runs number the same cells: then the numbers name them
    reordered = {m: a[perm] for m, a in numbered.items()}
    assert tm.metrics.seed_agreement([numbered, reordered], k=5)["agreement"].iloc[0] == 1.0
    renamed = {m: z.set_axis([f"d{i}" for i in range(60)]) for m, z in run.items()}
    with pytest.raises(ValueError, match=r"runs\[1\]\['rna'\] embeds other cells than runs\[0\]"):
        tm.metrics.seed_agreement([run, renamed], k=5)
