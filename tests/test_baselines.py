"""Tests of transmodal.baselines: SCOT-style Gromov-Wasserstein OT on small unpaired data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

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


def test_transport_refuses_new_cells_with_a_message(fitted, data):
    x, y, _ = data
    np.testing.assert_array_equal(fitted.embed_x(), fitted.x_aligned_)
    for embed, cells, which in ((fitted.embed_x, x, "x"), (fitted.embed_y, y, "y")):
        with pytest.raises(NotImplementedError, match=rf"cannot embed new {which} cells: "
                           "transport aligns the cells it was fitted on only"):
            embed(cells)
    # nor translates them: the base class's refusal, as DCCA's
    for translate, cells in ((fitted.translate_x_to_y, x), (fitted.translate_y_to_x, y)):
        with pytest.raises(NotImplementedError, match=r"^GromovWassersteinOT cannot translate "
                           r"between modalities: it couples the fitted cells .* Use CCA, "
                           r"CycleGAN or MAGAN \(or CrossModalAE\) for translation.$"):
            translate(cells)


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
    from transmodal.baselines import _ot

    real = _ot.entropic_gw
    tried = []

    def flaky(c1, c2, epsilon, **kwargs):
        tried.append(epsilon)
        t, gw = real(c1, c2, epsilon, **kwargs)
        if epsilon < 0.02:  # pretend the small values fail numerically
            t = np.full_like(t, np.nan)
        return t, gw

    monkeypatch.setattr(_ot, "entropic_gw", flaky)
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


# ------------------------------------------- AnnData input, DCCA batches, MAGAN checks
@pytest.fixture
def _torch_single_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def poisson_pair(n: int = 100, p: int = 30, q: int = 20, seed: int = 0):
    """Paired Poisson counts ``(n, p)`` and ``(n, q)`` sharing a 3-D latent space."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    x = rng.poisson(np.exp(1.0 + 0.4 * z @ rng.normal(size=(3, p)))).astype(float)
    y = rng.poisson(np.exp(0.5 + 0.4 * z @ rng.normal(size=(3, q)))).astype(float)
    return x, y


def test_anndata_with_sparse_x_is_densified_like_a_matrix(_torch_single_thread):
    """An AnnData is unwrapped before the sparse check: a sparse ``X`` is accepted."""
    import anndata as ad

    from transmodal.baselines import CCA, DCCA
    from transmodal.baselines._base import as_dense_matrix

    x, y = poisson_pair()
    xs, ys = sp.csr_matrix(x), sp.csr_matrix(y)
    ax, ay = ad.AnnData(xs), ad.AnnData(ys)
    np.testing.assert_array_equal(as_dense_matrix(ax, "x"), x)
    with pytest.raises(ValueError, match="x is an AnnData without X"):
        as_dense_matrix(ad.AnnData(obs={"a": np.arange(3)}), "x")

    ref = CCA(5).fit(xs, ys)
    m = CCA(5).fit(ax, ay)
    np.testing.assert_allclose(m.embed_x(), ref.embed_x())
    np.testing.assert_allclose(m.embed_y(ad.AnnData(ys[:7])), ref.embed_y()[:7], atol=1e-10)

    kw = {"n_components": 3, "hidden": (8,), "max_epochs": 2, "batch_size": 32}
    ref = DCCA(**kw).fit(xs, ys)
    m = DCCA(**kw).fit(ax, ay)
    np.testing.assert_allclose(m.embed_x(), ref.embed_x())
    np.testing.assert_allclose(m.embed_x(ad.AnnData(xs[:7])), ref.embed_x()[:7], atol=1e-6)


@pytest.mark.parametrize(("n_components", "batch_size"), [(10, 4), (20, 16), (10, 10)])
def test_dcca_refuses_batch_size_not_above_n_components(n_components, batch_size):
    """Minibatches of at most ``n_components`` cells were skipped: no training, loss 0.0."""
    from transmodal.baselines import DCCA

    match = f"batch_size must be larger than n_components={n_components}"
    with pytest.raises(ValueError, match=match):
        DCCA(n_components=n_components, batch_size=batch_size)
    # also when the attribute is changed after construction
    m = DCCA(n_components=n_components, batch_size=n_components + 1, hidden=(8,))
    m.batch_size = batch_size
    x, y = poisson_pair()
    with pytest.raises(ValueError, match="batch_size must be larger"):
        m.fit(x, y)
    assert not m.is_fitted


def test_dcca_trains_with_batch_size_just_above_n_components(_torch_single_thread):
    from transmodal.baselines import DCCA

    x, y = poisson_pair()
    m0 = DCCA(n_components=10, batch_size=11, hidden=(16,), max_epochs=1).fit(x, y)
    m = DCCA(n_components=10, batch_size=11, hidden=(16,), max_epochs=5).fit(x, y)
    loss = m.history_["loss"]
    assert len(loss) == 5 and all(v < -1.0 for v in loss)  # real correlations, not 0.0
    assert loss[-1] < loss[0]
    changed = max(
        (a - b).abs().max().item()
        for a, b in zip(m0.net_x_.parameters(), m.net_x_.parameters())
    )
    assert changed > 1e-4
    # too few cells to train on at all
    with pytest.raises(ValueError, match="more than n_components=10 pairs; got 10"):
        DCCA(n_components=10, batch_size=16, hidden=(8,), max_epochs=1).fit(x[:10], y[:10])


def test_dcca_history_averages_only_steps_that_ran(monkeypatch, _torch_single_thread):
    """A minibatch of at most ``n_components`` cells is skipped and not averaged in; an
    epoch without any step raises instead of recording a loss of 0.0."""
    from transmodal.baselines import DCCA
    from transmodal.baselines import _dcca

    x, y = poisson_pair(60)
    seen: list[tuple[int, float]] = []
    real_loss = _dcca.dcca_loss

    def recording_loss(h1, h2, *args):
        out = real_loss(h1, h2, *args)
        seen.append((h1.shape[0], out.item()))
        return out

    monkeypatch.setattr(_dcca, "dcca_loss", recording_loss)
    # a too-small first batch (3 <= n_components) that the default schedule never makes
    monkeypatch.setattr(_dcca, "_batches", lambda order, bs, ml: [order[:3], order[3:]])
    m = DCCA(n_components=5, batch_size=64, hidden=(8,), max_epochs=2).fit(x, y)
    assert [s for s, _ in seen] == [57, 57]
    np.testing.assert_allclose(m.history_["loss"], [v for _, v in seen])

    monkeypatch.setattr(_dcca, "_batches", lambda order, bs, ml: [order[:5], order[5:10]])
    with pytest.raises(RuntimeError, match="no training step in epoch 1"):
        DCCA(n_components=5, batch_size=64, hidden=(8,), max_epochs=2).fit(x, y)


def test_magan_correspondence_refuses_per_modality_pca(_torch_single_thread):
    """Same features but more than ``n_pca`` of them: equal widths, unrelated PCA axes."""
    from transmodal.baselines import MAGAN

    x, y = poisson_pair(80, 30, 30)
    kw = {"hidden_g": (8,), "hidden_d": (8,), "max_epochs": 1, "batch_size": 40}
    for corr in ("mse", "cosine"):
        with pytest.raises(ValueError, match=r"x \(30 features\) and y \(30 features\) by a PCA"):
            MAGAN(**kw, correspondence=corr, n_pca=10).fit(x, y)
    # only one side reduced to the other's width is refused too
    with pytest.raises(ValueError, match=r"n_pca=10 reduced x \(30 features\) by a PCA"):
        MAGAN(**kw, correspondence="mse", n_pca=10).fit(x, y[:, :10])
    for n_pca in (None, 30):  # no PCA: the features correspond one to one
        m = MAGAN(**kw, correspondence="mse", n_pca=n_pca).fit(x, y)
        assert "correspondence" in m.history_ and m.prep_x_.pca_ is None
    # without correspondence, per-modality PCA is fine
    assert MAGAN(**kw, n_pca=10).fit(x, y).y_features_.shape == (80, 10)


def test_ot_metric_typo_is_refused_at_construction():
    with pytest.raises(ValueError, match="metric='euclidian' is not a distance"):
        GromovWassersteinOT(metric="euclidian")


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_warm_started_solver_reaches_pots_plan_with_fewer_sinkhorn_iterations(data, monkeypatch):
    """entropic_gw follows POT's entropic Gromov-Wasserstein iterations to the same plan
    and loss, and its warm-started Sinkhorn projections need fewer iterations in all."""
    import ot

    from transmodal.baselines._ot import entropic_gw

    x, y, _ = data
    m = GromovWassersteinOT(**FAST)
    cx, cy = m._geodesic(m._features(x)), m._geodesic(m._features(y))
    p, q = np.full(len(cx), 1 / len(cx)), np.full(len(cy), 1 / len(cy))
    iterations = []
    sinkhorn = ot.sinkhorn

    def counted(*args, **kw):
        log = kw.pop("log", False)
        plan, info = sinkhorn(*args, log=True, **kw)
        iterations.append(info["niter"])
        return (plan, info) if log else plan

    monkeypatch.setattr(ot, "sinkhorn", counted)
    monkeypatch.setattr(ot.gromov._bregman, "sinkhorn", counted)
    ref, log = ot.gromov.entropic_gromov_wasserstein(
        cx, cy, p, q, loss_fun="square_loss", epsilon=FAST["epsilon"], symmetric=True,
        max_iter=1000, tol=1e-9, log=True)
    cold = sum(iterations)
    iterations.clear()
    plan, gw = entropic_gw(cx, cy, FAST["epsilon"], max_iter=1000, tol=1e-9)
    warm = sum(iterations)
    assert np.abs(plan - ref).sum() < 1e-6
    assert gw == pytest.approx(log["gw_dist"], rel=1e-6)
    np.testing.assert_array_equal(plan.argmax(axis=1), ref.argmax(axis=1))
    assert warm < 0.8 * cold, (warm, cold)
