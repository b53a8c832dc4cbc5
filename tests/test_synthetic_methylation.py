"""The ``"methylation"`` kind of ``transmodal.datasets._synthetic``: per-region DNA
methylation rates of single cells, NaN where a region is not covered."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from transmodal.datasets._synthetic import synthetic

METH = {"meth": "methylation"}
N, F = 300, 100


def _meth(n=N, f=F, **kw):
    kw = {"modalities": METH, "n_features": f, "seed": 0, **kw}
    return synthetic(n, **kw)["meth"]


@pytest.fixture(scope="module")
def meth():
    return _meth()


# ------------------------------------------------------------------ values and coverage
def test_dense_rates_in_unit_interval_or_nan(meth):
    x, cov = meth.X, meth.layers["coverage"]
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (N, F)
    assert isinstance(cov, np.ndarray) and cov.dtype == np.float32 and cov.shape == (N, F)
    finite = ~np.isnan(x)
    assert not np.isinf(x).any()
    assert ((x[finite] >= 0) & (x[finite] <= 1)).all()
    # NaN exactly where there is no coverage; rates are methylated / covered reads
    assert (cov >= 0).all() and np.array_equal(cov, np.round(cov))
    np.testing.assert_array_equal(finite, cov > 0)
    meth_reads = x[finite] * cov[finite]
    np.testing.assert_allclose(meth_reads, np.round(meth_reads), atol=1e-4)
    assert meth.var_names[0] == "region0" and meth.var_names.is_unique
    assert meth.obsm["X_true"].shape == (N, 8)
    assert meth.uns["synthetic"]["kind"] == "methylation"


def test_default_features():
    assert synthetic(20, modalities=METH)["meth"].n_vars == 500


def test_nan_fraction_sensible_and_varies_between_cells(meth):
    missing = np.isnan(meth.X)
    assert 0.5 <= missing.mean() <= 0.75  # about 36 % of entries covered
    per_cell = 1 - missing.mean(1)
    assert per_cell.min() > 0
    # cells differ in depth: far more spread than binomial sampling alone would give
    p = per_cell.mean()
    assert per_cell.std() > 2 * np.sqrt(p * (1 - p) / F)
    assert np.percentile(per_cell, 90) - np.percentile(per_cell, 10) > 0.15
    # regions differ in coverage too
    assert (1 - missing.mean(0)).std() > 3 * np.sqrt(p * (1 - p) / N)


def test_covered_fraction_follows_depth(meth):
    cov = meth.layers["coverage"]
    covered = (cov > 0).mean(1)
    # the same cell depth drives both: deeper cells cover more regions, more reads each
    reads_per_covered = cov.sum(1) / np.maximum((cov > 0).sum(1), 1)
    assert np.corrcoef(covered, cov.sum(1))[0, 1] > 0.9
    assert np.corrcoef(covered, reads_per_covered)[0, 1] > 0.3
    # a deeper experiment covers more entries, by more reads each
    deep = _meth(methylation_coverage=2.0)
    assert (~np.isnan(deep.X)).mean() > (~np.isnan(meth.X)).mean() + 0.25
    assert deep.layers["coverage"].mean() > 3 * cov.mean()
    np.testing.assert_array_equal(  # the default is the documented 0.5
        _meth(methylation_coverage=0.5).layers["coverage"], cov
    )
    # the read counts behind the rates
    k = meth.layers["methylated"]
    assert np.all(k <= cov) and np.all(k == np.round(k))
    np.testing.assert_allclose(np.where(cov > 0, k / np.maximum(cov, 1), np.nan), meth.X,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="methylation_coverage must be > 0"):
        _meth(methylation_coverage=0)


def test_regions_bimodal(meth):
    region_mean = np.nanmean(_meth(n=1000).X, 0)
    high, low = (region_mean > 0.6).mean(), (region_mean < 0.4).mean()
    assert 0.5 <= high <= 0.85 and 0.15 <= low <= 0.45
    assert ((region_mean >= 0.4) & (region_mean <= 0.6)).mean() < 0.2


# ------------------------------------------------------------------ biological signal
def test_rates_follow_the_cell_state(meth):
    x = meth.X
    labels = meth.obs["label"].cat.codes.to_numpy()
    # cell pairs: mean |difference| over the regions both cells cover
    cov = ~np.isnan(x)
    x0 = np.nan_to_num(x)
    both = cov[:, None, :] & cov[None, :, :]
    diff = np.abs(x0[:, None, :] - x0[None, :, :]) * both
    dist = diff.sum(2) / np.maximum(both.sum(2), 1)
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(N, dtype=bool)
    assert dist[same & off_diag].mean() < 0.92 * dist[~same].mean()
    rng_labels = np.random.default_rng(1).permutation(labels)
    same_shuffled = rng_labels[:, None] == rng_labels[None, :]
    assert abs(dist[same_shuffled & off_diag].mean() / dist[~same_shuffled].mean() - 1) < 0.03

    # per-cluster mean profiles from two halves of the cells match cluster by cluster
    rng = np.random.default_rng(0)
    half = rng.random(N) < 0.5
    ks = np.unique(labels)

    def profiles(mask):
        return np.stack([np.nanmean(x[mask & (labels == k)], 0) for k in ks])

    a, b = profiles(half), profiles(~half)
    d = np.abs(a[:, None, :] - b[None, :, :]).mean(2)
    assert (d.argmin(1) == np.arange(len(ks))).all()


def test_batches_shift_the_logit():
    kw = {"modalities": METH, "n_features": F, "seed": 1}
    plain = synthetic(N, **kw)["meth"]
    batched = synthetic(N, n_batches=3, batch_effect=2.0, **kw)["meth"]
    assert list(batched.obs["batch"].cat.categories) == ["batch0", "batch1", "batch2"]
    np.testing.assert_array_equal(np.isnan(plain.X), np.isnan(batched.X))  # same coverage
    finite = ~np.isnan(batched.X)
    assert ((batched.X[finite] >= 0) & (batched.X[finite] <= 1)).all()
    codes = batched.obs["batch"].cat.codes.to_numpy()
    means = np.stack([np.nanmean(batched.X[codes == k], 0) for k in range(3)])
    plain_means = np.stack([np.nanmean(plain.X[codes == k], 0) for k in range(3)])
    assert np.abs(means - means.mean(0)).mean() > 2 * np.abs(
        plain_means - plain_means.mean(0)
    ).mean()


# ------------------------------------------------------------------ determinism
def test_seeded_and_deterministic(meth):
    again = _meth()
    np.testing.assert_array_equal(again.X, meth.X)  # NaNs compare equal
    np.testing.assert_array_equal(again.layers["coverage"], meth.layers["coverage"])
    other = _meth(seed=1)
    assert not np.array_equal(np.isnan(other.X), np.isnan(meth.X))


def test_unchanged_by_other_modalities(meth):
    data = synthetic(
        N,
        modalities={"rna": "nb", **METH, "atac": "bernoulli"},
        n_features={"meth": F, "rna": 50, "atac": 60},
        seed=0,
    )
    np.testing.assert_array_equal(data["meth"].X, meth.X)
    np.testing.assert_array_equal(data["meth"].layers["coverage"], meth.layers["coverage"])
    # and the methylation modality does not change the others
    rna = synthetic(N, modalities={"rna": "nb"}, n_features=50, seed=0)["rna"]
    np.testing.assert_array_equal(data["rna"].X.toarray(), rna.X.toarray())
    assert sp.issparse(data["atac"].X)


def test_independent_of_block_size():
    kw = {"modalities": METH, "n_features": 40, "paired": 0.4, "seed": 3}
    a = synthetic(2300, block_size=700, **kw)["meth"]
    b = synthetic(2300, block_size=10_000, **kw)["meth"]
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.layers["coverage"], b.layers["coverage"])
    assert a.obs.equals(b.obs)


def test_out_h5ad_equals_in_memory(tmp_path):
    import anndata as ad

    kw = {"modalities": {**METH, "rna": "nb"}, "n_features": {"meth": F, "rna": 30},
          "paired": 0.5, "n_batches": 2, "seed": 4}
    mem = synthetic(1300, block_size=400, **kw)["meth"]
    disk = synthetic(1300, block_size=500, out=tmp_path, **kw)["meth"]
    assert np.isnan(mem.X).any()
    np.testing.assert_array_equal(np.asarray(disk.X[()]), mem.X)
    np.testing.assert_array_equal(np.asarray(disk.layers["coverage"][()]),
                                  mem.layers["coverage"])
    assert disk.obs.equals(mem.obs) and (disk.var_names == mem.var_names).all()
    back = ad.read_h5ad(tmp_path / "meth.h5ad")
    assert back.X.dtype == np.float32
    np.testing.assert_array_equal(back.X, mem.X)
    np.testing.assert_array_equal(back.layers["coverage"], mem.layers["coverage"])


def test_mudata_and_trajectory():
    pytest.importorskip("mudata")
    md = synthetic(200, modalities={"rna": "nb", **METH}, n_features=20, seed=5,
                   shape="trajectory", return_mudata=True)
    x = md.mod["meth"].X
    assert x.shape == (200, 20) and np.isnan(x).any()
    assert "pseudotime" in md.mod["meth"].obs
