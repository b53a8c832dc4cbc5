"""Tests of transmodal.baselines: SCOT-style Gromov-Wasserstein OT on small unpaired data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

pytest.importorskip("ot")

from transmodal.baselines import Baseline, GromovWassersteinOT
from transmodal.metrics import foscttm, label_transfer

N_CELLS = 150
SIZES = (25, 50, 75)  # unequal cluster sizes break the clusters' permutation symmetry
# small neighbourhoods and a moderate epsilon keep the solver fast on the test machine
FAST = {"n_neighbors": 10, "epsilon": 1e-2}


def simulate_unpaired(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three clusters in a 2-D latent space, measured by two different maps.

    Row ``i`` of ``x`` and ``y`` is the same cell (the truth for FOSCTTM), which the
    method is not told.  ``x``: linear map to 20 dims; ``y``: tanh of a linear map to 15.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), SIZES)
    centers = np.array([[0.0, 0.0], [6.0, 0.0], [2.0, 7.0]])
    spread = np.array([0.5, 0.8, 1.1])
    z = centers[labels] + spread[labels, None] * rng.normal(size=(N_CELLS, 2))
    x = z @ rng.normal(size=(2, 20)) + 0.1 * rng.normal(size=(N_CELLS, 20))
    y = np.tanh(0.3 * z @ rng.normal(size=(2, 15))) + 0.05 * rng.normal(
        size=(N_CELLS, 15)
    )
    return x, y, labels


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    """Multi-threaded BLAS on tiny matrices is much slower on a small shared machine."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return simulate_unpaired(0)


@pytest.fixture(scope="module")
def fitted(data) -> GromovWassersteinOT:
    x, y, _ = data
    return GromovWassersteinOT(**FAST).fit(x, y)


def test_is_baseline(fitted):
    assert isinstance(fitted, Baseline)
    assert fitted.is_fitted and not fitted.paired
    assert "GromovWassersteinOT" in repr(fitted)


def test_coupling_shape_and_marginals(fitted, data):
    x, y, _ = data
    t = fitted.coupling_
    assert t.shape == (x.shape[0], y.shape[0])
    assert np.all(np.isfinite(t)) and np.all(t >= 0)
    np.testing.assert_allclose(t.sum(), 1.0, atol=1e-6)
    np.testing.assert_allclose(t.sum(axis=1), 1.0 / x.shape[0], rtol=1e-2)
    np.testing.assert_allclose(t.sum(axis=0), 1.0 / y.shape[0], rtol=1e-2)
    assert fitted.epsilon_ == pytest.approx(1e-2)
    assert np.isfinite(fitted.gw_distance_)


def test_embeddings_share_a_space(fitted, data):
    x, y, _ = data
    xa, ya = fitted.transform()
    assert xa.shape[0] == x.shape[0] and ya.shape[0] == y.shape[0]
    assert xa.shape[1] == ya.shape[1] == fitted.y_features_.shape[1]
    # y is the reference: its embedding is its own preprocessed features
    np.testing.assert_array_equal(ya, fitted.y_features_)
    np.testing.assert_array_equal(xa, fitted.embed_x())
    # barycentric projection
    t = fitted.coupling_
    np.testing.assert_allclose(xa, (t / t.sum(1, keepdims=True)) @ fitted.y_features_)


def test_alignment_quality(fitted, data):
    _, _, labels = data
    xa, ya = fitted.transform()
    assert foscttm(xa, ya) < 0.3  # random is about 0.5
    assert label_transfer(ya, labels, xa, labels, k=5) > 0.8
    assert label_transfer(xa, labels, ya, labels, k=5) > 0.8


def test_deterministic_and_fit_transform(fitted, data):
    x, y, _ = data
    xa, ya = GromovWassersteinOT(**FAST).fit_transform(x, y)
    np.testing.assert_array_equal(xa, fitted.x_aligned_)
    np.testing.assert_array_equal(ya, fitted.y_aligned_)


def test_project_x_and_sparse_input(data):
    x, y, _ = data
    kw = {**FAST, "max_iter": 20, "n_components": 10}
    dense = GromovWassersteinOT(project="x", **kw).fit(x, y)
    xa, ya = dense.transform()
    assert xa.shape == (x.shape[0], 10) and ya.shape == (y.shape[0], 10)  # PCA 20 -> 10
    np.testing.assert_array_equal(xa, dense.x_features_)
    t = dense.coupling_
    np.testing.assert_allclose(ya, (t / t.sum(0, keepdims=True)).T @ dense.x_features_)
    sparse = GromovWassersteinOT(project="x", **kw).fit(
        sp.csr_matrix(x), sp.csc_matrix(y)
    )
    np.testing.assert_allclose(
        sparse.coupling_, dense.coupling_, rtol=1e-10, atol=1e-14
    )


def test_unequal_cell_numbers(data):
    x, y, _ = data
    model = GromovWassersteinOT(mode="distance", max_iter=20, **FAST).fit(x[:90], y)
    assert model.coupling_.shape == (90, N_CELLS)
    np.testing.assert_allclose(model.coupling_.sum(axis=1), 1.0 / 90, rtol=1e-2)
    assert model.embed_x().shape == (90, model.embed_y().shape[1])


def test_epsilon_fallback(data, monkeypatch):
    import ot

    real = ot.gromov.entropic_gromov_wasserstein
    tried = []

    def flaky(c1, c2, p, q, *args, epsilon, **kwargs):
        tried.append(epsilon)
        t, log = real(c1, c2, p, q, *args, epsilon=epsilon, **kwargs)
        if epsilon < 0.02:  # pretend the small values fail numerically
            t = np.full_like(t, np.nan)
        return t, log

    monkeypatch.setattr(ot.gromov, "entropic_gromov_wasserstein", flaky)
    x, y, _ = data
    model = GromovWassersteinOT(n_neighbors=10, epsilon=6e-3, max_iter=5).fit(x, y)
    assert tried == pytest.approx([6e-3, 1.2e-2, 2.4e-2])
    assert model.epsilon_ == pytest.approx(2.4e-2)
    assert np.isfinite(model.coupling_).all()

    tried.clear()
    with pytest.raises(RuntimeError, match="failed numerically"):
        GromovWassersteinOT(n_neighbors=10, epsilon=1e-3, n_retries=1, max_iter=5).fit(
            x, y
        )
    assert tried == pytest.approx([1e-3, 2e-3])


def test_real_underflow_triggers_fallback(data):
    x, y, _ = data
    model = GromovWassersteinOT(
        n_neighbors=10, epsilon=1e-5, n_retries=12, max_iter=3
    ).fit(x, y)
    assert model.epsilon_ > 1e-5
    np.testing.assert_allclose(model.coupling_.sum(), 1.0, atol=1e-3)


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        GromovWassersteinOT().embed_x()


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros(20), np.zeros((20, 3)), "2-D"),
        (np.zeros((20, 3, 1)), np.zeros((20, 3)), "2-D"),
        (np.full((20, 3), np.nan), np.zeros((20, 3)), "NaN"),
        (np.zeros((20, 3)), np.full((20, 3), np.inf), "NaN or infinite"),
        (np.zeros((20, 3)), np.array([["a"] * 3] * 20), "numeric"),
        (np.zeros((20, 0)), np.zeros((20, 3)), "zero columns"),
        (np.zeros((5, 3)), np.zeros((20, 3)), "n_neighbors"),
        (np.zeros((20, 3)), np.zeros((10, 3)), "n_neighbors"),
    ],
)
def test_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        GromovWassersteinOT(n_neighbors=10).fit(x, y)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_neighbors": 0},
        {"n_neighbors": 2.5},
        {"n_components": 0},
        {"epsilon": 0.0},
        {"epsilon": float("nan")},
        {"max_iter": 0},
        {"tol": -1.0},
        {"mode": "weights"},
        {"project": "z"},
        {"n_retries": -1},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        GromovWassersteinOT(**kwargs)


def test_metric_must_be_a_string():
    with pytest.raises(TypeError, match="metric"):
        GromovWassersteinOT(metric=None)


def test_correlation_metric_refuses_constant_feature_rows(data):
    x, y, _ = data
    x = x.copy()
    x[3] = np.delete(x, 3, axis=0).mean(axis=0)  # the mean cell: zero after centring
    with pytest.raises(ValueError, match=r"x: 1 cell\(s\) \(e.g. row 3\) have constant features"):
        GromovWassersteinOT(metric="correlation", **FAST).fit(x, y)
