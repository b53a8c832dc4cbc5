"""Tests of the paired / GAN baselines: CCA, DCCA, CycleGAN and MAGAN on small simulations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from transmodal.baselines import Baseline
from transmodal.baselines._cca import CCA
from transmodal.baselines._dcca import DCCA, dcca_loss
from transmodal.baselines._gan import MAGAN, CycleGAN
from transmodal.metrics import foscttm

N_CELLS = 200
P, Q = 30, 20
# small networks and short schedules: the test machine is small and shared
DCCA_FAST = {"n_components": 5, "hidden": (64, 32), "max_epochs": 15, "batch_size": 64}
GAN_FAST = {"hidden_g": (64, 64), "hidden_d": (64,), "max_epochs": 25, "batch_size": 50}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def simulate(
    n: int = N_CELLS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired Poisson counts: 3 clusters in a 4-D latent space, two different maps.

    ``x`` ``(n, 30)``: log-linear map; ``y`` ``(n, 20)``: softplus of a tanh map.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    centers = rng.normal(0.0, 1.5, size=(3, 4))
    z = centers[labels] + 0.5 * rng.normal(size=(n, 4))
    x = rng.poisson(np.exp(1.0 + 0.4 * z @ rng.normal(size=(4, P)))).astype(float)
    y = rng.poisson(
        3.0 * np.logaddexp(0.0, 2.0 * np.tanh(0.5 * z @ rng.normal(size=(4, Q))))
    )
    return x, y.astype(float), labels


@pytest.fixture(scope="module")
def data():
    return simulate()


@pytest.fixture(scope="module")
def cca(data):
    x, y, _ = data
    return CCA(n_components=5).fit(sp.csr_matrix(x), y)


@pytest.fixture(scope="module")
def dcca(data):
    x, y, _ = data
    return DCCA(**DCCA_FAST).fit(x, y)


@pytest.fixture(scope="module")
def cyclegan(data):
    x, y, _ = data
    return CycleGAN(**GAN_FAST).fit(x, y)


@pytest.fixture(scope="module")
def magan_pairs(data):
    x, y, _ = data
    idx = np.arange(N_CELLS)
    return MAGAN(**GAN_FAST).fit(x, y, pairs=(idx, idx))


# --------------------------------------------------------------------------- CCA
def test_cca_aligns_paired_cells(cca):
    assert isinstance(cca, Baseline) and cca.paired
    ex, ey = cca.transform()
    assert ex.shape == ey.shape == (N_CELLS, 5)
    assert np.allclose(np.linalg.norm(ex, axis=1), 1.0)
    assert foscttm(ex, ey) < 0.2
    assert cca.correlations_[0] > 0.9
    assert np.all(np.diff(cca.correlations_) <= 1e-12)


def test_cca_new_cells_match_training(cca, data):
    x, y, _ = data
    assert np.allclose(cca.embed_x(x), cca.embed_x(), atol=1e-8)
    assert np.allclose(cca.embed_y(sp.csr_matrix(y)), cca.embed_y(), atol=1e-8)
    assert cca.embed_x(x[:7]).shape == (7, 5)


def test_cca_translation(cca, data):
    x, y, _ = data
    ty = cca.translate_x_to_y(x[:9])
    assert ty.shape == (9, Q) and (ty >= 0).all()
    assert cca.translate_y_to_x(y[:4], space="log").shape == (4, P)
    assert cca.translate_x_to_y(x[:3], space="features").shape == (3, Q)
    # translation is informative: better than predicting the mean
    pred = cca.translate_x_to_y(x, space="log")
    err = np.mean((pred - np.log1p(y)) ** 2)
    assert err < np.mean((np.log1p(y) - np.log1p(y).mean(0)) ** 2)
    with pytest.raises(ValueError, match="space"):
        cca.translate_x_to_y(x, space="counts")
    with pytest.raises(ValueError, match="features"):
        cca.embed_x(x[:, :5])


def test_cca_options(data):
    x, y, _ = data
    with pytest.warns(UserWarning, match="reduced"):
        m = CCA(n_components=50, l2_normalize=False).fit(x, y)
    assert m.n_components_ == Q
    with pytest.raises(ValueError, match="negative"):
        CCA().fit(x - 5, y)
    m = CCA(n_components=3, log1p=False, n_pca=10).fit(x - 5, y)
    assert m.x_features_.shape == (N_CELLS, 10) and m.embed_x().shape == (N_CELLS, 3)
    with pytest.raises(ValueError, match="y: the .* paired rows are all identical"):
        CCA().fit(x, np.ones_like(y))  # gave all-zero embeddings


@pytest.mark.parametrize("cls", [CCA, DCCA])
def test_paired_methods_reject_mismatched_rows(cls, data):
    x, y, _ = data
    with pytest.raises(ValueError, match="same number of rows"):
        cls().fit(x, y[:-1])


def _named(data, order=None):
    """The simulation as AnnData with cell and feature names (y's cells in ``order``)."""
    import anndata as ad
    import pandas as pd

    x, y, _ = data
    cells = np.array([f"c{i}" for i in range(len(x))])
    order = np.arange(len(x)) if order is None else order
    ax = ad.AnnData(x, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=[f"g{j}" for j in range(P)]))
    ay = ad.AnnData(y[order], obs=pd.DataFrame(index=cells[order]),
                    var=pd.DataFrame(index=[f"p{j}" for j in range(Q)]))
    return ax, ay


def test_paired_fits_read_the_cell_and_feature_names(data):
    """AnnData naming their cells in another order are not paired by row; new cells with
    the fitted features in another order are refused (both were silently wrong)."""
    perm = np.random.default_rng(1).permutation(N_CELLS)
    ax, ay = _named(data, perm)
    fast = {**DCCA_FAST, "max_epochs": 1}
    for fit in (lambda: CCA(5).fit(ax, ay), lambda: DCCA(**fast).fit(ax, ay),
                lambda: MAGAN(**{**GAN_FAST, "max_epochs": 1}).fit(ax, ay, pairs="all")):
        with pytest.raises(ValueError, match="same cells in another order"):
            fit()
    moved = ay.copy()  # one shared name at another row, the others renamed
    moved.obs_names = [f"d{i}" for i in range(N_CELLS)]
    names = moved.obs_names.to_numpy().copy()
    names[5] = "c7"
    moved.obs_names = names
    with pytest.raises(ValueError, match="cell 'c7' is row 7 of x and row 5 of y"):
        CCA(5).fit(ax, moved)
    ax, ay = _named(data)
    part = ay.copy()
    part.obs_names = [f"c{i}" if i < 50 else f"d{i}" for i in range(N_CELLS)]
    with pytest.warns(UserWarning, match="share 50 cell names at the same rows, but 150 rows"):
        CCA(5).fit(ax, part)
    numbers = ay[perm].copy()  # names that are row numbers say nothing: by position
    shuffled_x = ax[perm].copy()
    for a in (numbers, shuffled_x):
        a.obs_names = [str(i) for i in range(N_CELLS)]
    shuffled_x.obs_names = [str(i) for i in perm]
    with pytest.warns(UserWarning, match="names are numbers, the same in another order"):
        CCA(5).fit(shuffled_x, numbers)
    other = ay.copy()  # differently named modalities: paired by position, silently
    other.obs_names = [f"atac_{i}" for i in range(N_CELLS)]
    model = CCA(5).fit(ax, other)
    np.testing.assert_allclose(model.embed_x(ax), model.embed_x(), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"x: its features do not match .*same 30 features in "
                       r"another order.*var_names_\['x'\]"):
        model.embed_x(ax[:, ax.var_names[::-1]])
    with pytest.raises(ValueError, match="1 of the 30 fitted features missing, 0 others"):
        model.translate_x_to_y(ax[:, ax.var_names[1:]])
    model.embed_x(ax.X[:, ::-1])  # an array: by position (nothing to check)
    # fit_transform passes fit's arguments on
    idx = np.arange(N_CELLS)
    ex, ey = DCCA(**fast).fit_transform(ax.X, ay.X[:-1], pairs=(idx[:-1], idx[:-1]))
    assert ex.shape == (N_CELLS, 5) and ey.shape == (N_CELLS - 1, 5)


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        CCA().embed_x()


# -------------------------------------------------------------------------- DCCA
def test_dcca_loss_is_minus_total_correlation():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(500, 3, generator=g)
    assert float(dcca_loss(h, 2 * h + 1)) == pytest.approx(-3.0, abs=1e-2)
    assert abs(float(dcca_loss(h, torch.randn(500, 3, generator=g)))) < 0.5


def test_dcca_trains_and_aligns(dcca, data):
    x, y, _ = data
    loss = dcca.history_["loss"]
    assert len(loss) == DCCA_FAST["max_epochs"]
    assert loss[-1] < loss[0] - 0.5
    ex, ey = dcca.transform()
    assert ex.shape == ey.shape == (N_CELLS, 5)
    assert foscttm(ex, ey) < 0.4
    assert np.allclose(dcca.embed_x(x), ex, atol=1e-5)
    assert np.allclose(dcca.embed_y(y), ey, atol=1e-5)
    told = r"^DCCA cannot translate between modalities: it learns two encoders .* no decoder"
    with pytest.raises(NotImplementedError, match=told):
        dcca.translate_x_to_y(x)
    with pytest.raises(NotImplementedError, match=told):
        dcca.translate_y_to_x(y)


def test_dcca_trains_only_on_pairs(data):
    """Permuting the x rows outside the pairs changes nothing for the paired cells."""
    x, y, _ = data
    k = 120
    pairs = (np.arange(k), np.arange(k))
    kw = {**DCCA_FAST, "max_epochs": 5}
    a = DCCA(**kw).fit(x, y, pairs=pairs)
    perm = np.random.default_rng(1).permutation(np.arange(k, N_CELLS))
    x2 = x.copy()
    x2[k:] = x[perm]
    b = DCCA(**kw).fit(x2, y, pairs=pairs)
    assert np.allclose(a.embed_x()[:k], b.embed_x()[:k], atol=1e-4)
    assert np.allclose(a.embed_x()[perm], b.embed_x()[k:], atol=1e-4)
    assert len(a.pairs_[0]) == k
    # unequal row counts are fine with pairs; the (k, 2) layout is accepted too
    c = DCCA(**kw).fit(x, y[:150], pairs=np.stack(pairs, axis=1))
    assert c.embed_x().shape == (N_CELLS, 5) and c.embed_y().shape == (150, 5)
    with pytest.raises(ValueError, match="outside"):
        DCCA(**kw).fit(x, y[:100], pairs=pairs)
    with pytest.raises(ValueError, match="more than"):
        DCCA(**kw).fit(x, y, pairs=(np.arange(4), np.arange(4)))
    for two_pairs in (((0, 5), (1, 7)), [[0, 5], [1, 7]]):  # pairs or (ix, iy)? refused
        with pytest.raises(ValueError, match="two pairs or as"):
            DCCA(**kw).fit(x, y, pairs=two_pairs)


def test_dcca_rejects_constant_pairs_and_reports_linalg_failure(data, monkeypatch):
    x, y, _ = data
    kw = {**DCCA_FAST, "hidden": (8,), "max_epochs": 1}
    with pytest.raises(ValueError, match="x: the 60 paired rows are all identical"):
        DCCA(**kw).fit(np.ones((60, P)), y[:60])
    with pytest.raises(ValueError, match="y: the 10 paired rows"):
        DCCA(**kw).fit(x, y, pairs=(np.arange(10), np.zeros(10, int)))

    def broken(*args, **kwargs):
        return torch.linalg.eigh(torch.full((3, 3), float("nan"), dtype=torch.float64))

    monkeypatch.setattr("transmodal.baselines._dcca.dcca_loss", broken)
    with pytest.raises(RuntimeError, match="loss became NaN at epoch 1.*r1 / r2"):
        DCCA(**kw).fit(x, y)


def test_dcca_deterministic_without_leaking_rng(data):
    x, y, _ = data
    kw = {**DCCA_FAST, "max_epochs": 3}
    state = torch.get_rng_state()
    a = DCCA(**kw, seed=3).fit(x, y).embed_x()
    assert torch.equal(state, torch.get_rng_state())
    b = DCCA(**kw, seed=3).fit(x, y).embed_x()
    c = DCCA(**kw, seed=4).fit(x, y).embed_x()
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


# ---------------------------------------------------------------------- GAN-based
@pytest.mark.parametrize("name", ["cyclegan", "magan_pairs"])
def test_gan_shapes_and_translation(name, request, data):
    x, y, _ = data
    m = request.getfixturevalue(name)
    assert not m.paired
    d_y = m.y_features_.shape[1]
    ex, ey = m.transform()
    assert ex.shape == ey.shape == (N_CELLS, d_y)
    assert np.allclose(m.embed_x(x), ex, atol=1e-5)
    assert np.allclose(m.embed_y(y), ey)
    assert np.allclose(m.translate_x_to_y(x[:6], space="features"), ex[:6], atol=1e-5)
    assert m.translate_x_to_y(x[:6]).shape == (6, Q)
    assert m.translate_y_to_x(y[:6]).shape == (6, P)
    assert (m.translate_y_to_x(y[:6]) >= 0).all()
    assert m.translate_y_to_x(y[:6], space="log").shape == (6, P)
    assert all(len(v) == GAN_FAST["max_epochs"] for v in m.history_.values())
    assert m.history_["cycle"][-1] < m.history_["cycle"][0]


def test_magan_pairs_help(cyclegan, magan_pairs):
    sup = magan_pairs.history_["supervised"]
    assert sup[-1] < 0.8 * sup[0]
    f_magan = foscttm(*magan_pairs.transform())
    f_cycle = foscttm(*cyclegan.transform())
    assert f_magan < f_cycle
    assert f_magan < 0.3


def test_gan_unpaired_rows_and_determinism(data):
    x, y, _ = data
    kw = {**GAN_FAST, "max_epochs": 2}
    state = torch.get_rng_state()
    a = CycleGAN(**kw, seed=1).fit(x, y[:150])
    assert torch.equal(state, torch.get_rng_state())
    assert a.embed_x().shape == (N_CELLS, Q) and a.embed_y().shape == (150, Q)
    b = CycleGAN(**kw, seed=1).fit(x, y[:150])
    assert np.array_equal(a.embed_x(), b.embed_x())
    c = MAGAN(**kw, seed=1).fit(x, y[:150])  # no pairs, no correspondence: = CycleGAN
    assert np.allclose(a.embed_x(), c.embed_x(), atol=1e-6)
    d = MAGAN(**kw, seed=1).fit(x, y[:150], pairs=(np.arange(20), np.arange(20)))
    assert "supervised" in d.history_ and len(d.pairs_[0]) == 20


def test_gan_validation(data):
    x, y, _ = data
    kw = {**GAN_FAST, "max_epochs": 1}
    with pytest.raises(ValueError, match="correspondence"):
        MAGAN(**kw, correspondence="mse").fit(x, y)
    m = MAGAN(**kw, correspondence="cosine", log1p=False).fit(x[:, :Q], y)
    assert "correspondence" in m.history_
    with pytest.raises(ValueError, match="pairs"):
        MAGAN(**kw).fit(x, y, pairs=(np.arange(5), np.arange(4)))
    with pytest.raises(ValueError, match="gan_loss"):
        CycleGAN(gan_loss="wgan")
    with pytest.raises(ValueError, match="device"):
        CycleGAN(device="tpu")
    for method in (CycleGAN, MAGAN):  # (as CCA, DCCA and transport refuse it)
        with pytest.raises(ValueError, match=rf"^x: all {len(x)} cells are identical \(constant "
                           rf"input\), so {method.__name__} has no distribution to match"):
            method(**kw).fit(np.ones_like(x), y)


@pytest.mark.parametrize("n", [300, 600, 700, 256, 257])
def test_dcca_minibatches_cover_every_cell_once(n):
    from transmodal.baselines._dcca import _batches

    chunks = _batches(np.arange(n), 256, 128)
    assert np.array_equal(np.sort(np.concatenate(chunks)), np.arange(n))
    assert all(len(c) >= 128 for c in chunks) or len(chunks) == 1
