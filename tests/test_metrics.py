"""Tests for transmodal.metrics against slow brute-force references."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from scipy.spatial.distance import cdist
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import transmodal as tm
from transmodal.metrics import (
    cluster_accuracy,
    foscttm,
    knn_accuracy,
    knn_accuracy_and_chance,
    knn_accuracy_chance,
    label_transfer,
    label_transfer_both,
    mean_profile_baseline,
    mixing_accuracy,
    mixing_accuracy_multi,
    partner_in_top_k,
    translation_pearson,
    translation_pearson_summary,
)


# ----------------------------------------------------------------- brute force refs
def ref_partner_ranks(x, y):
    d = cdist(x, y, "sqeuclidean")
    diag = np.diag(d)
    rx = (d < diag[:, None]).sum(1)
    ry = (d < diag[None, :]).sum(0)
    return rx, ry


def ref_foscttm(x, y):
    n = x.shape[0]
    rx, ry = ref_partner_ranks(x, y)
    fx, fy = rx / (n - 1), ry / (n - 1)
    return 0.5 * (fx.mean() + fy.mean()), fx, fy


def ref_topk(x, y, ks):
    rx, ry = ref_partner_ranks(x, y)
    n = x.shape[0]
    return {k: 0.5 * (np.mean(rx < min(k, n)) + np.mean(ry < min(k, n))) for k in ks}


def ref_knn_dir(a, b, ks, metric):
    m = "cityblock" if metric == "l1" else "sqeuclidean"
    nn = np.argmin(cdist(b, a, m), axis=1)  # first occurrence = lowest index
    order = np.argsort(cdist(a, a, m), axis=1, kind="stable")
    return {k: float(np.mean([nn[i] in order[i, :k] for i in range(a.shape[0])])) for k in ks}


def ref_knn(x, y, ks, metric="l1"):
    x_to_y = ref_knn_dir(y, x, ks, metric)
    y_to_x = ref_knn_dir(x, y, ks, metric)
    return {"x_to_y": x_to_y, "y_to_x": y_to_x, "mean": {k: 0.5 * (x_to_y[k] + y_to_x[k]) for k in ks}}


def ref_cluster(x, y, lx, ly, metric="l1"):
    m = "cityblock" if metric == "l1" else "sqeuclidean"
    d = cdist(x, y, m)
    a = np.mean(ly[np.argmin(d, 1)] == lx)
    b = np.mean(lx[np.argmin(d.T, 1)] == ly)
    return {"x_to_y": a, "y_to_x": b, "mean": 0.5 * (a + b)}


def noisy_pair(rng, n=120, d=8, noise=0.5):
    x = rng.normal(size=(n, d))
    return x, x + noise * rng.normal(size=(n, d))


def tied_pair(rng, n=90, d=3):
    """Small-integer data with many exact ties and duplicated rows."""
    x = rng.integers(0, 3, size=(n, d)).astype(float)
    y = x + rng.integers(-1, 2, size=(n, d))
    x[10:20] = x[0]
    y[30:35] = y[5]
    y[40] = y[41]
    return x, y


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# --------------------------------------------------------------------------- foscttm
@pytest.mark.parametrize("chunk_size", [None, 7, 1000])
def test_foscttm_matches_bruteforce(rng, chunk_size):
    x, y = noisy_pair(rng, n=150)
    value, fx, fy = foscttm(x, y, chunk_size=chunk_size, return_per_cell=True)
    ref, rfx, rfy = ref_foscttm(x, y)
    assert value == pytest.approx(ref, abs=1e-12)
    np.testing.assert_allclose(fx, rfx)
    np.testing.assert_allclose(fy, rfy)


@pytest.mark.parametrize("chunk_size", [None, 11])
def test_foscttm_ties(rng, chunk_size):
    x, y = tied_pair(rng)
    value, fx, fy = foscttm(x, y, chunk_size=chunk_size, return_per_cell=True)
    ref, rfx, rfy = ref_foscttm(x, y)
    np.testing.assert_array_equal(fx, rfx)
    np.testing.assert_array_equal(fy, rfy)
    assert value == pytest.approx(ref)
    # all-identical rows: nothing strictly closer
    same = np.ones((20, 4))
    with pytest.warns(UserWarning, match="same coordinates"):  # a collapsed embedding: named
        assert foscttm(same, same + 1.0) == 0.0
    # (said by the matching metrics, whose ties it concerns: not by the others, to which
    # its words about ties do not apply)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*(same|share their) coordinates")
        tm.metrics.mixing_accuracy(same, same + 1.0)
        tm.metrics.label_transfer(same, np.array(["a", "b"] * 10), same,
                                  np.array(["a", "b"] * 10))
    # partly collapsed (all cells but one on one point): near-perfect by ties, named too
    part = np.zeros((200, 4))
    part[0] = 1.0
    with pytest.warns(UserWarning, match=r"x: 199 of 200 cells share their coordinates with "
                      r"another cell \(a partly collapsed embedding\?\)"):
        assert foscttm(part, part.copy()) < 0.01
    # a few duplicates (e.g. cells without a count, embedded alike): silent
    few = rng.normal(size=(200, 4))
    few[1:3] = few[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        foscttm(few, few + 0.1)


def test_foscttm_perfect_and_random(rng):
    x = rng.normal(size=(200, 10))
    assert foscttm(x, x.copy()) == 0.0
    assert foscttm(x, x, chunk_size=13) == 0.0
    y = rng.normal(size=(200, 10))
    assert foscttm(x, y) == pytest.approx(0.5, abs=0.05)


def test_foscttm_float32_and_offset(rng):
    x, y = noisy_pair(rng, n=80)
    ref = ref_foscttm(x, y)[0]
    assert foscttm(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(
        ref_foscttm(x.astype(np.float32).astype(float), y.astype(np.float32).astype(float))[0]
    )
    # far from the origin: centring keeps the ranking exact
    big = 1e6
    assert foscttm(x + big, y + big, chunk_size=9) == pytest.approx(
        ref_foscttm(x + big, y + big)[0]
    )
    assert foscttm(x, y) == pytest.approx(ref)


# -------------------------------------------------------------------- partner top-k
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_partner_top_k(rng, chunk_size):
    x, y = noisy_pair(rng, n=100, noise=1.0)
    ks = (1, 5, 10, 50, 500)
    got = partner_in_top_k(x, y, k=ks, chunk_size=chunk_size)
    assert got == pytest.approx(ref_topk(x, y, ks))
    assert got[500] == 1.0
    xt, yt = tied_pair(rng)
    assert partner_in_top_k(xt, yt, k=(1, 3, 10), chunk_size=chunk_size) == pytest.approx(
        ref_topk(xt, yt, (1, 3, 10))
    )
    assert partner_in_top_k(x, x, k=1) == {1: 1.0}


# ---------------------------------------------------------------------- knn accuracy
@pytest.mark.parametrize("metric", ["l1", "euclidean"])
@pytest.mark.parametrize("chunk_size", [None, 6])
def test_knn_accuracy_bruteforce(rng, metric, chunk_size):
    x, y = noisy_pair(rng, n=120, noise=0.7)
    got = knn_accuracy(x, y, k=(1, 5, 50), metric=metric, chunk_size=chunk_size)
    ref = ref_knn(x, y, (1, 5, 50), metric)
    for key in ("x_to_y", "y_to_x", "mean"):
        assert got[key] == pytest.approx(ref[key])


@pytest.mark.parametrize("metric", ["l1", "euclidean"])
def test_knn_accuracy_ties(rng, metric):
    x, y = tied_pair(rng)
    for chunk_size in (None, 4):
        got = knn_accuracy(x, y, k=(1, 2, 5, 20), metric=metric, chunk_size=chunk_size)
        ref = ref_knn(x, y, (1, 2, 5, 20), metric)
        for key in ("x_to_y", "y_to_x", "mean"):
            assert got[key] == pytest.approx(ref[key])


def test_knn_accuracy_matches_sklearn_paper_code(rng):
    """Without ties the result equals the NearestNeighbors(metric='l1') recipe."""
    x, y = noisy_pair(rng, n=150, noise=0.6)
    k = 10

    def paper(a, b):
        nbrs = NearestNeighbors(n_neighbors=k, metric="manhattan").fit(a)
        _, idx_a = nbrs.kneighbors(a)
        _, idx_b = nbrs.kneighbors(b, n_neighbors=1)
        return np.mean([idx_b[i, 0] in idx_a[i] for i in range(a.shape[0])])

    got = knn_accuracy(x, y, k=k)
    assert got["y_to_x"][k] == pytest.approx(paper(x, y))
    assert got["x_to_y"][k] == pytest.approx(paper(y, x))


def test_knn_accuracy_of_held_out_cells_as_the_paper_scores_them(rng):
    """score=: neighbours searched among every cell, the accuracy of the scored (held-out)
    cells alone, as the paper's code reports its test cells (its knn_accuracy over all
    1,874 cells, the TEST_SET's hits over its size); a mask and indices agree, and the
    chance level is averaged over the same cells."""
    x, y = noisy_pair(rng, n=150, noise=0.6)
    test = np.sort(rng.choice(150, 40, replace=False))
    k = 10

    def paper(a, b):
        nbrs = NearestNeighbors(n_neighbors=k, metric="manhattan").fit(a)
        _, idx_a = nbrs.kneighbors(a)
        _, idx_b = nbrs.kneighbors(b, n_neighbors=1)
        return np.mean([idx_b[i, 0] in idx_a[i] for i in test])

    got = knn_accuracy(x, y, k=k, score=test)
    assert got["y_to_x"][k] == pytest.approx(paper(x, y))
    assert got["x_to_y"][k] == pytest.approx(paper(y, x))
    mask = np.zeros(150, bool)
    mask[test] = True
    assert knn_accuracy(x, y, k=k, score=mask) == got
    # (not the accuracy of the held-out cells searched among themselves)
    assert knn_accuracy(x[test], y[test], k=k)["mean"][k] > got["mean"][k]
    level, alone = knn_accuracy_chance(x, y, k=k, score=test), knn_accuracy_chance(x, y, k=k)
    both = tm.metrics.knn_accuracy_and_chance(x, y, k=k, score=test)
    assert both == (got, level) and level != alone
    for bad, message in ((mask[:10], "a boolean mask of 10 entries for 150 cells"),
                         (np.array([0, 150]), r"in \[0, 150\)"), (np.zeros(0, int), "non-empty"),
                         (np.array([0.5]), "boolean mask or integer row indices")):
        with pytest.raises(ValueError, match=message):
            knn_accuracy(x, y, k=k, score=bad)


def test_knn_accuracy_perfect(rng):
    x = rng.normal(size=(60, 5))
    x[5] = x[3]  # duplicates still give a perfect score
    got = knn_accuracy(x, x.copy(), k=(1, 5))
    assert got["mean"] == {1: 1.0, 5: 1.0}


@pytest.mark.parametrize("metric", ["l1", "euclidean"])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_knn_accuracy_chance_is_the_random_pairing_average(rng, metric, chunk_size):
    """The chance level equals knn_accuracy averaged over every cyclic re-pairing (each
    x row meets each y row exactly once), i.e. over a uniformly random pairing."""
    x, y = noisy_pair(rng, n=60, noise=0.5)
    ks = (1, 5, 20)
    shifted = [knn_accuracy(np.roll(x, s, axis=0), y, k=ks, metric=metric) for s in range(60)]
    got = knn_accuracy_chance(x, y, k=ks, metric=metric, chunk_size=chunk_size)
    for key in ("x_to_y", "y_to_x", "mean"):
        for kk in ks:
            assert got[key][kk] == pytest.approx(np.mean([r[key][kk] for r in shifted]))


def test_knn_accuracy_chance_exposes_hubs(rng):
    """Queries shrunk towards the mean retrieve hubs: a high raw k-NN accuracy with no
    information about the pairing, which the chance level matches."""
    y = rng.normal(size=(300, 50))
    x = y.mean(axis=0) + 0.1 * rng.normal(size=y.shape)  # knows nothing about the pairs
    raw = knn_accuracy(x, y, k=30)["x_to_y"][30]
    chance = knn_accuracy_chance(x, y, k=30)["x_to_y"][30]
    assert raw > 2 * 30 / 300  # far above k / n ...
    assert raw == pytest.approx(chance, abs=0.06)  # ... yet at its chance level
    # an embedding that does know the pairs scores far above its own chance level
    close = y + 0.1 * rng.normal(size=y.shape)
    assert knn_accuracy(close, y, k=30)["x_to_y"][30] > 0.9
    assert knn_accuracy_chance(close, y, k=30)["x_to_y"][30] < 0.5


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_knn_accuracy_and_chance_equal_the_separate_functions(rng, chunk_size):
    x, y = noisy_pair(rng, n=80, noise=0.7)
    acc, chance = knn_accuracy_and_chance(x, y, k=(3, 10), chunk_size=chunk_size)
    assert acc == knn_accuracy(x, y, k=(3, 10), chunk_size=chunk_size)
    assert chance == knn_accuracy_chance(x, y, k=(3, 10), chunk_size=chunk_size)
    with pytest.raises(ValueError, match="larger than the number of cells"):
        knn_accuracy_and_chance(x, y, k=81)


@pytest.mark.parametrize("metric", ["l1", "euclidean"])
def test_knn_accuracy_chance_ranks_ties_as_the_accuracy(rng, metric):
    """Duplicated cells (exact ties): the chance level is the same for every chunk size and
    still the average of knn_accuracy over every re-pairing (the matrix-product distances
    had ranked equal distances by rounding, per block)."""
    base = rng.normal(size=(10, 32))
    x = base[rng.integers(0, 10, 40)]
    y = base[rng.integers(0, 10, 40)] + 0.01 * rng.normal(size=(40, 32))
    ks = (1, 5, 40)
    shifted = [knn_accuracy(np.roll(x, s, axis=0), y, k=ks, metric=metric) for s in range(40)]
    for chunk_size in (1, 8, None):
        got = knn_accuracy_chance(x, y, k=ks, metric=metric, chunk_size=chunk_size)
        for key in ("x_to_y", "y_to_x"):
            for kk in ks:
                assert got[key][kk] == pytest.approx(np.mean([r[key][kk] for r in shifted]))


def test_knn_accuracy_chance_errors(rng):
    x = rng.normal(size=(10, 3))
    with pytest.raises(ValueError, match="larger than the number of cells"):
        knn_accuracy_chance(x, x, k=11)
    with pytest.raises(ValueError, match="metric"):
        knn_accuracy_chance(x, x, metric="cosine")


# ------------------------------------------------------------------- cluster accuracy
@pytest.mark.parametrize("metric", ["l1", "euclidean"])
def test_cluster_accuracy(rng, metric):
    x = rng.normal(size=(70, 4))
    y = rng.normal(size=(95, 4))
    lx = rng.integers(0, 3, 70)
    ly = rng.integers(0, 3, 95)
    for chunk_size in (None, 8):
        got = cluster_accuracy(x, y, lx, ly, metric=metric, chunk_size=chunk_size)
        assert got == pytest.approx(ref_cluster(x, y, lx, ly, metric))
    xt, yt = tied_pair(rng)
    lxt = rng.integers(0, 4, len(xt)).astype(str)
    lyt = rng.integers(0, 4, len(yt)).astype(str)
    got = cluster_accuracy(xt, yt[:70], lxt, lyt[:70], metric=metric, chunk_size=5)
    assert got == pytest.approx(ref_cluster(xt, yt[:70], lxt, lyt[:70], metric))


# ------------------------------------------------------------------- label transfer
def test_label_transfer(rng):
    centers = np.array([[0, 0], [20, 0], [0, 20]], dtype=float)
    lx = rng.integers(0, 3, 90)
    ly = rng.integers(0, 3, 60)
    x = centers[lx] + rng.normal(size=(90, 2))
    y = centers[ly] + rng.normal(size=(60, 2))
    assert label_transfer(x, lx, y, ly) == 1.0
    both = label_transfer_both(x, lx, y, ly, k=3)
    assert both == {"x_to_y": 1.0, "y_to_x": 1.0, "mean": 1.0}
    # random labels: equals sklearn directly; classes restricts the query cells
    lr = rng.integers(0, 3, 60)
    clf = KNeighborsClassifier(n_neighbors=5).fit(x, lx)
    keep = np.isin(lr, [0, 1])
    assert label_transfer(x, lx, y, lr, classes=[0, 1]) == pytest.approx(
        np.mean(clf.predict(y[keep]) == lr[keep])
    )
    with pytest.raises(ValueError, match="classes"):
        label_transfer(x, lx, y, ly, classes=[7])
    with pytest.raises(ValueError, match="larger"):
        label_transfer(x[:3], lx[:3], y, ly, k=5)
    with pytest.raises(ValueError, match=r"^labels_ref: no reference cell has a label"):
        label_transfer(x, np.full(len(x), np.nan, dtype=object), y, ly)


# ------------------------------------------------------------------------- mixing
def test_mixing_accuracy(rng):
    a = rng.normal(size=(300, 5))
    b = rng.normal(size=(250, 5))
    assert mixing_accuracy(a, b) == pytest.approx(0.5, abs=0.1)
    assert mixing_accuracy(a, b + 5.0) > 0.98
    assert mixing_accuracy(a, b + 5.0, max_cells=50, cv=3) > 0.95
    c = rng.normal(size=(200, 5))
    assert mixing_accuracy_multi([a, b, c]) == pytest.approx(1 / 3, abs=0.1)
    assert mixing_accuracy_multi([a, b + 5, c - 5]) > 0.98
    with pytest.raises(ValueError, match="at least two"):
        mixing_accuracy_multi([a])
    with pytest.raises(ValueError, match="columns"):
        mixing_accuracy(a, b[:, :3])
    with pytest.raises(ValueError, match="fewer than cv"):
        mixing_accuracy(a, b[:3])


# --------------------------------------------------------------------- translation
def test_translation_pearson(rng):
    obs = rng.poisson(2.0, size=(50, 30)).astype(float)
    pred = obs + rng.normal(size=obs.shape)
    expected = np.array([np.corrcoef(pred[i], obs[i])[0, 1] for i in range(50)])
    np.testing.assert_allclose(translation_pearson(pred, obs), expected, atol=1e-12)
    np.testing.assert_allclose(
        translation_pearson(pred, sparse.csr_matrix(obs), chunk_size=7), expected, atol=1e-12
    )
    logged = np.array(
        [np.corrcoef(np.log1p(np.abs(pred[i])), np.log1p(obs[i]))[0, 1] for i in range(50)]
    )
    got = translation_pearson(np.abs(pred), sparse.csc_matrix(obs), transform=np.log1p, chunk_size=4)
    np.testing.assert_allclose(got, logged, atol=1e-12)
    # zero-variance rows -> NaN, ignored by the summary
    obs2 = obs.copy()
    obs2[3] = 0.0
    pred2 = pred.copy()
    pred2[7] = 0.1
    r = translation_pearson(pred2, obs2)
    assert np.isnan(r[3]) and np.isnan(r[7]) and np.isfinite(np.delete(r, [3, 7])).all()
    assert translation_pearson_summary(pred2, obs2) == pytest.approx(np.nanmean(r))
    # a modality modelled from a layer: layer= compares with it (X holds something else)
    adata = ad.AnnData(np.zeros_like(obs), layers={"rates": obs})
    adata.var_names = [f"f{j}" for j in range(30)]
    np.testing.assert_array_equal(translation_pearson(pred, adata, layer="rates"),
                                  translation_pearson(pred, obs))
    assert translation_pearson_summary(pred, adata, layer="rates") == pytest.approx(
        np.nanmean(expected))
    # (the layer keeps the AnnData's names: features reordered by them, as for X)
    named = ad.AnnData(pred[:, ::-1].copy(), var=pd.DataFrame(index=adata.var_names[::-1]))
    np.testing.assert_allclose(translation_pearson(named, adata, layer="rates"), expected,
                               atol=1e-12)
    with pytest.raises(ValueError, match=r"^obs: layer 'rate' not found; layers are \['rates'\]"):
        translation_pearson(pred, adata, layer="rate")
    with pytest.raises(ValueError, match=r"^obs: layer='rates' needs an AnnData, got ndarray"):
        translation_pearson(pred, obs, layer="rates")


def test_mean_profile_baseline(rng):
    train = rng.poisson(1.5, size=(40, 25)).astype(float)
    obs = rng.poisson(1.5, size=(30, 25)).astype(float)
    for tr, tf in ((train, None), (sparse.csr_matrix(train), np.log1p)):
        mu = (train if tf is None else np.log1p(train)).mean(0)
        o = obs if tf is None else np.log1p(obs)
        expected = np.array([np.corrcoef(mu, o[i])[0, 1] for i in range(30)])
        got = mean_profile_baseline(tr, sparse.csr_matrix(obs), transform=tf, chunk_size=6)
        np.testing.assert_allclose(got, expected, atol=1e-12)
    layered = [ad.AnnData(np.zeros_like(m), layers={"c": m}) for m in (train, obs)]
    np.testing.assert_array_equal(mean_profile_baseline(*layered, layer="c"),
                                  mean_profile_baseline(train, obs))


# --------------------------------------------------------------------------- errors
def test_errors(rng):
    x = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="same number of rows"):
        foscttm(x, x[:10])
    with pytest.raises(ValueError, match="same number of columns"):
        foscttm(x, x[:, :2])
    with pytest.raises(ValueError, match="2-D"):
        foscttm(x[:, 0], x[:, 0])
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        foscttm(x, bad)
    with pytest.raises(ValueError, match="at least 2"):
        foscttm(x[:1], x[:1])
    with pytest.raises(ValueError, match="chunk_size"):
        foscttm(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="larger than the number of cells"):
        knn_accuracy(x, x, k=(5, 50))
    with pytest.raises(ValueError, match="metric"):
        knn_accuracy(x, x, k=5, metric="cosine")
    with pytest.raises(ValueError, match=">= 1"):
        partner_in_top_k(x, x, k=0)
    with pytest.raises(ValueError, match="labels_y"):
        cluster_accuracy(x, x[:15], np.zeros(20), np.zeros(20))
    with pytest.raises(ValueError, match="same number of columns"):
        cluster_accuracy(x, x[:, :2], np.zeros(20), np.zeros(20))
    with pytest.raises(ValueError, match="same shape"):
        translation_pearson(x, x[:5])
    with pytest.raises(ValueError, match="NaN"):
        translation_pearson(bad, x)
    with pytest.raises(ValueError, match="features"):
        mean_profile_baseline(x, x[:, :2])


# ------------------------------------------------------ AnnData input, missing labels
def test_metrics_take_anndata_and_align_translated_features():
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    assert foscttm(ad.AnnData(x), ad.AnnData(y)) == foscttm(x, y)
    # named cells: the same names on other rows are refused, not paired by position
    cells30 = pd.DataFrame(index=[f"c{i}" for i in range(30)])
    ax, ay = ad.AnnData(x, obs=cells30), ad.AnnData(y, obs=cells30)
    assert foscttm(ax, ay) == foscttm(x, y)
    for metric in (foscttm, lambda a, b: knn_accuracy(a, b, k=3),
                   lambda a, b: partner_in_top_k(a, b, k=3)):
        with pytest.raises(ValueError, match=r"hold the same cells in another order \('c0' is "
                           r"row 0 of x and row 29 of y\)"):
            metric(ax, ay[::-1])
    # labels as a Series: aligned to an AnnData's obs_names by their index
    labels = pd.Series(np.repeat(["a", "b", "c"], 10), index=cells30.index)
    shuffled = labels.sample(frac=1, random_state=0)
    assert label_transfer(ax, shuffled, ay, labels, k=3) == label_transfer(x, labels.to_numpy(),
                                                                            y, labels.to_numpy(), k=3)
    with pytest.raises(ValueError, match="labels_ref is a Series whose index does not name every"):
        label_transfer(ax, shuffled.iloc[:-1].set_axis([f"z{i}" for i in range(29)]), ay, labels)
    # each modality's own names (no name in both) pair by position, as do partly shared ones
    # (AnnData's default "0".."n-1" of a subset against a new AnnData)
    ay_own = ad.AnnData(y, obs=pd.DataFrame(index=[f"c{i}_atac" for i in range(30)]))
    assert foscttm(ax, ay_own) == foscttm(x, y)
    full = ad.AnnData(np.vstack([x, x]))
    assert foscttm(full[10:40].copy(), ad.AnnData(y)) == foscttm(np.vstack([x, x])[10:40], y)
    # an embedded AnnData (sparse counts in X): the error points to its obsm
    import scipy.sparse as sp

    embedded = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, size=(30, 8)).astype(np.float32)))
    embedded.obsm["X_transmodal"] = x
    with pytest.raises(ValueError, match=r"pass adata.obsm\[key\] \(it holds \['X_transmodal'\]\)"):
        foscttm(embedded, y)

    pred, obs = rng.random((20, 6)), rng.random((20, 6))
    names = [f"g{i}" for i in range(6)]
    cells = [f"c{i}" for i in range(20)]
    a_pred = ad.AnnData(pred, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=names))
    order = names[::-1]  # the observed AnnData lists the same features in another order
    a_obs = ad.AnnData(obs[:, ::-1].copy(), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=order))
    np.testing.assert_allclose(translation_pearson(a_pred, a_obs), translation_pearson(pred, obs))
    with pytest.raises(ValueError, match="name different cells"):
        translation_pearson(a_pred, a_obs[::-1])
    with pytest.raises(ValueError, match="not among obs's features"):
        translation_pearson(a_pred, a_obs[:, :3])
    # DataFrames are aligned by their columns (and index) too
    d_pred = pd.DataFrame(pred, columns=names)
    d_obs = pd.DataFrame(obs[:, ::-1], columns=order)
    np.testing.assert_allclose(translation_pearson(d_pred, d_obs), translation_pearson(pred, obs))
    # the mean-profile baseline matches features by name (it used their positions)
    a_train = ad.AnnData(rng.random((15, 6)), var=pd.DataFrame(index=names))
    np.testing.assert_allclose(
        mean_profile_baseline(a_train, a_obs), mean_profile_baseline(a_train.X, obs)
    )
    with pytest.raises(ValueError, match="not among obs's features"):
        mean_profile_baseline(a_train, ad.AnnData(obs, var=pd.DataFrame(index=[f"x{i}" for i in range(6)])))


def test_label_metrics_leave_out_unlabelled_cells_and_reject_disjoint_label_types():
    import pandas as pd

    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = x + 0.1
    lx = pd.Categorical(["a", "a", "b", None])
    ly = np.array(["a", "a", "b", "b"], dtype=object)
    acc = cluster_accuracy(x, y, lx, ly)
    # x's unlabelled 4th cell is not scored; y's 4th cell finds it (no label) and misses
    assert acc["x_to_y"] == 1.0 and acc["y_to_x"] == 0.75
    lab_ref = np.array(["a", "a", "b", np.nan], dtype=object)
    assert label_transfer(x, lab_ref, y, ly, k=1) == 1.0
    with pytest.raises(ValueError, match="share no label"):
        cluster_accuracy(x, y, np.array([0, 0, 1, 1]), np.array(["0", "0", "1", "1"]))


def test_label_metrics_read_missing_label_strings_as_the_model_does():
    """``astype(str)`` turns NaN into "nan" (as predict_labels' docstring suggests for
    comparisons): such cells are unlabelled, as for labels_key, not a class of their own."""
    import pandas as pd

    x_ref = np.array([[0.0], [1.0], [10.0], [11.0]])
    x_q = np.array([[0.2], [10.2], [5.0], [0.1]])
    ref = pd.Series(["A", "A", "B", "B"])
    for missing in ("nan", "None", "<NA>", "", " "):
        q = pd.Series(["A", "B", missing, "A"])
        assert label_transfer(x_ref, ref, x_q, q, k=1) == 1.0
        assert cluster_accuracy(x_q, x_ref, q, ref)["x_to_y"] == 1.0
    q = pd.Series(["A", "B", np.nan, "A"]).astype(str)
    assert label_transfer(x_ref, ref, x_q, q, k=1) == 1.0
    # (a class named "NA" or "unknown" is a class, as for the model)
    assert label_transfer(x_ref, ref, x_q, pd.Series(["A", "B", "NA", "A"]), k=1) == 0.75


def test_metric_arguments_of_other_types():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    for k in (5.0, "5"):
        with pytest.raises(ValueError, match="k"):
            partner_in_top_k(x, y, k=k)
    assert knn_accuracy(x, y, k=np.array(5)) == knn_accuracy(x, y, k=5)
    # mixed-type labels are classes like any others
    mixed = np.array(["0"] * 5 + [1] * 5, dtype=object)
    assert label_transfer(x, mixed, x, mixed, k=1) == 1.0
    with pytest.raises(ValueError, match=r"labels_ref must be one label per cell.*obs key"):
        label_transfer(x, "ct", y, "ct")
    # runs are matched by modality name, whatever the key order
    from transmodal.metrics import seed_agreement

    a = seed_agreement([{"rna": x, "atac": y}, {"atac": y, "rna": x}], k=3)
    assert np.allclose(a["agreement"], 1.0)


def test_probe_findings_collapsed_embeddings_duplicate_names_class_strings_nan_agreement():
    import anndata as ad
    import pandas as pd


    rng = np.random.default_rng(0)
    z, y = np.zeros((50, 4)), rng.normal(size=(50, 4))
    with pytest.warns(UserWarning, match="x: all 50 cells have the same coordinates"):
        assert tm.metrics.foscttm(z, y) < 0.5  # ties count as not closer: why it warns
    pred = ad.AnnData(rng.random((5, 4)))
    pred.var_names = ["A", "X", "X", "B"]
    obs = ad.AnnData(rng.random((5, 4)))
    obs.var_names = ["B", "X", "A", "X"]
    with pytest.raises(ValueError, match="pred names some features twice \\(e.g. 'X'\\)"):
        tm.metrics.translation_pearson(pred, obs)
    labels = np.array(["T cell"] * 25 + ["B cell"] * 25)
    one = tm.metrics.label_transfer(y, labels, y, labels, classes="T cell")
    assert one == tm.metrics.label_transfer(y, labels, y, labels, classes=["T cell"])
    table = pd.DataFrame({"run_a": [0, 0, 1], "run_b": [1, 2, 2], "agreement": [np.nan, 0.5, 0.9]})
    with pytest.raises(ValueError, match="agreement holds 1 NaN"):
        tm.metrics.medoid_run(table)


def test_mixing_accuracy_is_balanced_for_unequal_sizes():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(900, 5)), rng.normal(size=(100, 5))  # one distribution
    assert mixing_accuracy(x, y) < 0.65  # plain accuracy would be about 0.9


def test_mixing_accuracy_knn_sees_clouds_the_linear_classifier_cannot():
    """Two clouds with the same mean and variance (as transmodal's standardised latents),
    clusters in other places: the linear classifier reads them as mixed, the k-NN one as
    apart; one distribution reads as mixed for both (also with unequal sizes)."""
    rng = np.random.default_rng(0)
    shift = np.zeros(4)
    shift[:2] = 2.0
    x = np.concatenate([rng.normal(-2, 0.3, (150, 4)), rng.normal(2, 0.3, (150, 4))])
    flip = shift * np.array([1, -1, 0, 0])
    y = np.concatenate([rng.normal(0, 0.3, (150, 4)) + flip, rng.normal(0, 0.3, (150, 4)) - flip])
    assert mixing_accuracy(x, y) < 0.6
    assert mixing_accuracy(x, y, classifier="knn") > 0.95
    same = rng.normal(size=(900, 4)), rng.normal(size=(100, 4))
    assert mixing_accuracy(*same, classifier="knn", n_neighbors=5) < 0.6
    assert mixing_accuracy(x[:6], y[:6], classifier="knn") >= 0.5  # k above a fold's cells


def test_mixing_accuracy_knn_takes_at_most_a_training_folds_cells_of_a_modality():
    """n_neighbors larger than a modality's cells in a training fold is capped at them, as
    documented: the same score as scikit-learn's k-NN with that k on the same folds."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(10, 2)) + 0.7
    got = mixing_accuracy(x, y, classifier="knn", n_neighbors=15, cv=5, seed=0)
    reference = cross_val_score(  # (8 of a modality's 10 cells in each training fold)
        KNeighborsClassifier(8), np.vstack([x, y]), np.repeat([0, 1], 10),
        cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="balanced_accuracy",
    ).mean()
    assert got == pytest.approx(reference)
    # a small modality apart from a large one is told apart (the large one's votes do not
    # outnumber it: as many cells of each)
    big, small = rng.normal(size=(2000, 4)), rng.normal(size=(30, 4)) + np.r_[4.0, 0, 0, 0]
    assert mixing_accuracy(big, small, classifier="knn") > 0.9
    assert mixing_accuracy(big, rng.normal(size=(30, 4)), classifier="knn") < 0.65
    with pytest.raises(ValueError, match="classifier must be 'linear' or 'knn'; got 'rf'"):
        mixing_accuracy(x, y, classifier="rf")
    with pytest.raises(ValueError, match="n_neighbors must be a positive integer; got 0"):
        mixing_accuracy(x, y, classifier="knn", n_neighbors=0)


def test_label_transfer_both_keeps_the_directions_apart():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [20, 0], [0, 20]], dtype=float)
    lx = rng.integers(0, 3, 90)
    x = centers[lx] + rng.normal(size=(90, 2))
    y = centers[rng.integers(0, 3, 60)] + rng.normal(size=(60, 2))
    ly = rng.integers(0, 3, 60)  # labels unrelated to the geometry: the directions differ
    both = label_transfer_both(x, lx, y, ly, k=5)
    assert both["x_to_y"] == pytest.approx(label_transfer(y, ly, x, lx, k=5))  # x from y
    assert both["y_to_x"] == pytest.approx(label_transfer(x, lx, y, ly, k=5))
    assert both["x_to_y"] != pytest.approx(both["y_to_x"])


def test_label_and_embedding_types_from_pandas_and_torch():
    """Labels with pd.NA (a "string" / Int64 column with missing values), datetime labels,
    nullable-dtype DataFrames and bfloat16 tensors are read as documented, not refused or
    crashed on; values whose squared distances overflow are refused by name."""
    x = np.array([[0.0], [10.0]])
    y = np.array([[0.1], [10.1]])
    ly = pd.Series(["a", "b"], dtype="string")
    for lx in (pd.Series(["a", None], dtype="string"), np.array(["a", None], dtype=object)):
        # the unlabelled x cell is not scored, and the y cell whose nearest x cell it is
        # counts as wrong (pd.NA compared as a boolean failed)
        assert tm.metrics.cluster_accuracy(x, y, lx, ly) == {
            "x_to_y": 1.0, "y_to_x": 0.5, "mean": 0.75}
    ints = pd.Series([1, pd.NA], dtype="Int64")
    assert tm.metrics.cluster_accuracy(x, y, ints, pd.Series([1, 2], dtype="Int64"))["y_to_x"] == 0.5
    dates = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02"]))
    assert tm.metrics.cluster_accuracy(x, y, dates, dates)["mean"] == 1.0
    # (numpy.datetime64 objects, as a list of an array holds, against the array's
    # timestamps: their hashes agree on some numpy versions only, so they are made alike)
    from transmodal.metrics._chunked import _isin

    days = dates.to_numpy()
    assert _isin(days, list(days)).all() and _isin(days, set(days)).all()
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20, 3))
    w = z + rng.normal(scale=0.5, size=z.shape)
    expected = tm.metrics.foscttm(z, w)
    for frame in (pd.DataFrame(z).astype("Float64"), pd.DataFrame(z).convert_dtypes()):
        assert tm.metrics.foscttm(frame, w) == pytest.approx(expected)
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        tm.metrics.foscttm(pd.DataFrame(z).astype("Float64").mask(pd.DataFrame(z) > 1), w)
    t = torch.tensor(z, dtype=torch.bfloat16)
    assert tm.metrics.foscttm(t, t.float().numpy()) == 0.0
    with pytest.raises(ValueError, match=r"x has values beyond 1e\+150 in magnitude"):
        tm.metrics.foscttm(z * 1e160, w * 1e160)
    with pytest.raises(ValueError, match="x must be numeric; got dtype complex128"):
        tm.metrics.foscttm(pd.DataFrame(z + 5j), w)  # (not cast to its real part)


def test_mixing_arguments_and_paired_cells_below_chance():
    """A generator of embeddings and a bad seed are refused by name; identical embeddings of
    paired cells read below chance with k-NN, as documented (their partners are in the
    training folds)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    with pytest.raises(ValueError, match="embeddings must be a list of at least two"):
        tm.metrics.mixing_accuracy_multi(e for e in (z, z))
    with pytest.raises(ValueError, match="seed must be an integer"):
        tm.metrics.mixing_accuracy(z, z, seed="a")
    with pytest.raises(ValueError, match=r"seed must be below 2\*\*32"):
        tm.metrics.mixing_accuracy(z, z, seed=2**32)
    assert 0 <= tm.metrics.mixing_accuracy(z, z, seed=None) <= 1  # (random folds)
    assert tm.metrics.mixing_accuracy(z, z, classifier="knn") < 0.4
    assert 0.4 < tm.metrics.mixing_accuracy(z, rng.normal(size=(300, 4)), classifier="knn") < 0.6


@pytest.mark.parametrize("metric", ["l1", "euclidean"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_nearest_both_directions_from_one_pass_as_two_searches(rng, metric, chunk_size):
    """The columns of one pass give each reference row's nearest query row as a search of
    its own does, the lowest index among exactly equidistant rows (duplicated rows, a
    grid of ties) included."""
    from transmodal.metrics._chunked import _BlockDistance, nearest, nearest_both

    x = rng.integers(0, 3, size=(60, 2)).astype(float)
    y = np.concatenate([rng.normal(size=(30, 2)), rng.integers(0, 3, size=(25, 2))])
    y[40:45] = y[0]
    for a, b in ((x, y), (y, x), (x, x)):
        fwd, back = nearest_both(_BlockDistance(a, b, metric), chunk_size)
        np.testing.assert_array_equal(fwd, nearest(_BlockDistance(a, b, metric), chunk_size))
        np.testing.assert_array_equal(back, nearest(_BlockDistance(b, a, metric), chunk_size))
