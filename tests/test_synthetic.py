"""The simulated multi-modal data generator ``transmodal.datasets._synthetic``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from transmodal.datasets._synthetic import synthetic, true_pairs

THREE = {"rna": "nb", "atac": "bernoulli", "prot": "gaussian"}


def _assert_same(d1, d2):
    assert list(d1) == list(d2)
    for name in d1:
        a, b = d1[name], d2[name]
        assert type(a.X) is type(b.X)
        xa = a.X.toarray() if sp.issparse(a.X) else a.X
        xb = b.X.toarray() if sp.issparse(b.X) else b.X
        np.testing.assert_array_equal(xa, xb)
        assert a.obs.equals(b.obs)
        assert (a.var_names == b.var_names).all()
        np.testing.assert_array_equal(a.obsm["X_true"], b.obsm["X_true"])


def _knn_accuracy(adata) -> float:
    x = adata.X.toarray()
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    y = adata.obs["label"].cat.codes.to_numpy()
    return cross_val_score(KNeighborsClassifier(15), x, y, cv=3).mean()


# ------------------------------------------------------------------ determinism
def test_seeded_and_deterministic():
    kw = {"modalities": THREE, "paired": 0.5}
    _assert_same(synthetic(300, seed=3, **kw), synthetic(300, seed=3, **kw))
    other = synthetic(300, seed=4, **kw)
    assert (synthetic(300, seed=3, **kw)["rna"].X != other["rna"].X).nnz > 0


@pytest.mark.parametrize("shape", ["clusters", "trajectory"])
def test_independent_of_block_size(shape):
    kw = {"modalities": THREE, "paired": 0.3, "shape": shape, "seed": 1}
    _assert_same(
        synthetic(2500, block_size=700, **kw),
        synthetic(2500, block_size=10_000, **kw),
    )


def test_modality_unchanged_by_other_modalities():
    alone = synthetic(200, modalities={"rna": "nb"}, seed=2)["rna"]
    with_others = synthetic(200, modalities=THREE, seed=2)["rna"]
    np.testing.assert_array_equal(alone.X.toarray(), with_others.X.toarray())


# ------------------------------------------------------------------ shapes and dtypes
def test_shapes_and_dtypes_per_kind():
    data = synthetic(300, modalities=THREE, seed=0)
    rna, atac, prot = data["rna"], data["atac"], data["prot"]
    assert (
        rna.shape == (300, 500)
        and atac.shape == (300, 1000)
        and prot.shape == (300, 50)
    )

    assert sp.isspmatrix_csr(rna.X) and rna.X.dtype == np.float32
    counts = rna.X.data
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))
    assert sp.isspmatrix_csr(rna.layers["counts"])
    np.testing.assert_array_equal(rna.layers["counts"].toarray(), rna.X.toarray())
    assert rna.layers["counts"] is not rna.X

    assert sp.isspmatrix_csr(atac.X) and atac.X.dtype == np.float32
    assert set(np.unique(atac.X.toarray())) <= {0.0, 1.0}
    assert 0.1 <= atac.X.mean() <= 0.2

    assert isinstance(prot.X, np.ndarray) and prot.X.dtype == np.float32

    for prefix, ad in (("gene", rna), ("peak", atac), ("feat", prot)):
        assert ad.var_names[0] == f"{prefix}0" and ad.var_names.is_unique
        assert ad.obsm["X_true"].shape == (300, 8)
        assert ad.obs["label"].dtype == "category"
        params = ad.uns["synthetic"]
        json.dumps(params)
        assert params["seed"] == 0 and params["n_features"] == {
            "rna": 500,
            "atac": 1000,
            "prot": 50,
        }


def test_n_features_int_and_mapping():
    data = synthetic(50, n_features=7)
    assert data["rna"].n_vars == data["atac"].n_vars == 7
    data = synthetic(50, n_features={"atac": 20})
    assert data["rna"].n_vars == 500 and data["atac"].n_vars == 20


# ------------------------------------------------------------------ pairing
def test_fully_paired():
    data = synthetic(200, seed=0)
    assert (data["rna"].obs_names == data["atac"].obs_names).all()
    assert data["rna"].obs_names[0] == "cell0"
    rows_a, rows_b = true_pairs(data, "rna", "atac")
    np.testing.assert_array_equal(rows_a, np.arange(200))
    np.testing.assert_array_equal(rows_b, np.arange(200))
    np.testing.assert_array_equal(
        data["rna"].obsm["X_true"], data["atac"].obsm["X_true"]
    )
    assert (data["rna"].obs["label"] == data["atac"].obs["label"]).all()


def test_unpaired():
    data = synthetic(200, paired=False, seed=0)
    rna, atac = data["rna"], data["atac"]
    assert rna.obs_names[0] == "rna_cell0" and atac.obs_names[0] == "atac_cell0"
    assert len(set(rna.obs_names) & set(atac.obs_names)) == 0
    rows_a, rows_b = true_pairs(data, "rna", "atac")
    assert len(rows_a) == len(rows_b) == 0
    # same population: similar label proportions, different cells
    assert not np.allclose(rna.obsm["X_true"], atac.obsm["X_true"])
    p_rna = rna.obs["label"].value_counts(normalize=True).sort_index()
    p_atac = atac.obs["label"].value_counts(normalize=True).sort_index()
    assert np.abs(p_rna - p_atac).max() < 0.15


def test_partly_paired():
    data = synthetic(1000, paired=0.3, seed=0)
    rna, atac = data["rna"], data["atac"]
    shared = set(rna.obs_names) & set(atac.obs_names)
    assert len(shared) == 300
    rows_a, rows_b = true_pairs(data, "rna", "atac")
    assert len(rows_a) == 300
    np.testing.assert_array_equal(rna.obs_names[rows_a], atac.obs_names[rows_b])
    np.testing.assert_array_equal(
        rna.obsm["X_true"][rows_a], atac.obsm["X_true"][rows_b]
    )
    assert set(rna.obs_names[rows_a]) == shared
    assert rna.obs["true_cell"].is_unique and atac.obs["true_cell"].is_unique


# ------------------------------------------------------------------ labels
def test_cluster_labels():
    data = synthetic(300, n_clusters=5, seed=0)
    labels = data["rna"].obs["label"]
    assert list(labels.cat.categories) == [f"cluster{i}" for i in range(5)]
    assert labels.nunique() == 5
    assert "pseudotime" not in data["rna"].obs


def test_trajectory_labels_and_pseudotime():
    data = synthetic(300, shape="trajectory", seed=0)
    obs = data["rna"].obs
    assert list(obs["label"].cat.categories) == ["stem", "branch_a", "branch_b"]
    assert obs["label"].nunique() == 3
    t = obs["pseudotime"].to_numpy()
    assert t.min() >= 0 and t.max() <= 1
    stem = (obs["label"] == "stem").to_numpy()
    assert t[stem].max() <= t[~stem].min()
    np.testing.assert_array_equal(t, data["atac"].obs["pseudotime"].to_numpy())


def test_clusters_recoverable_and_noise_makes_it_harder():
    kw = {"modalities": {"rna": "nb"}, "seed": 0}
    easy = _knn_accuracy(synthetic(600, **kw)["rna"])
    hard = _knn_accuracy(synthetic(600, noise=4.0, **kw)["rna"])
    assert easy > 0.8
    assert hard < easy - 0.2


# ------------------------------------------------------------------ output forms
def test_mudata_matches_dict():
    kw = {"paired": 0.5, "seed": 5, "n_features": 30}
    mdata = synthetic(100, return_mudata=True, **kw)
    data = synthetic(100, **kw)
    assert set(mdata.mod) == set(data)
    _assert_same({k: mdata.mod[k] for k in data}, data)
    rows = true_pairs(mdata, "rna", "atac")
    np.testing.assert_array_equal(rows[0], true_pairs(data, "rna", "atac")[0])


def test_default_call_scales():
    data = synthetic(3000)
    assert data["rna"].n_obs == data["atac"].n_obs == 3000


def test_writes_h5ad(tmp_path):
    import anndata as ad

    rna = synthetic(50, shape="trajectory", paired=0.5)["rna"]
    rna.write_h5ad(tmp_path / "rna.h5ad")
    back = ad.read_h5ad(tmp_path / "rna.h5ad")
    assert back.uns["synthetic"]["shape"] == "trajectory"
    np.testing.assert_array_equal(back.X.toarray(), rna.X.toarray())


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"modalities": {"rna": "nb", "prot": "poisson"}}, "'prot'.*poisson"),
        ({"n_cells": 1}, "n_cells"),
        ({"paired": 1.5}, "paired"),
        ({"paired": -0.1}, "paired"),
        ({"shape": "tree"}, "shape"),
        ({"noise": 0.0}, "noise"),
        ({"noise": -1.0}, "noise"),
        ({"n_features": 0}, "n_features"),
        ({"n_features": {"rna": -5}}, "n_features"),
        ({"n_features": {"protein": 5}}, "protein"),
        ({"modalities": {}}, "modalities"),
        ({"seed": -1}, "seed"),
        ({"library_size": (7.0,)}, "library_size"),
        ({"library_size": (50.0, 0.1)}, "log of the library size"),
        ({"library_size": (-5.0, 0.4)}, "log of the library size, in \\[0, 20\\]"),
    ],
)
def test_invalid_arguments(kwargs, match):
    kwargs = {"n_cells": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        synthetic(**kwargs)


def test_true_pairs_errors():
    data = synthetic(20)
    with pytest.raises(ValueError, match="prot"):
        true_pairs(data, "rna", "prot")
