"""What the matrix sources (data/_source.py), the likelihoods (nn/_likelihoods.py), the
chunked metrics (metrics/_chunked.py), evaluate_paired / evaluate_unpaired
(workflows/_evaluate.py) and the separability check after training do, pinned down. Found
by mutation testing (round 8): each test fails on a change of the code that the rest of the
suite let pass."""

import warnings

import anndata as ad
import numpy as np
import pytest
import torch

import transmodal as tm


# metrics/_chunked.py: nearest() resolves a 2-way near-tie exactly (lowest index wins)
def test_cluster_accuracy_exact_two_way_tie_goes_to_the_lower_index():
    from transmodal.metrics import cluster_accuracy

    a, b, c = 0.36159505490948474, 1.3040000451301372, 0.9470809631292422
    x = np.array([[c, c]])
    # rows 0 and 1 are exactly as far from x (mirror images); the fast approximate scores
    # of this configuration rank row 1 first
    y = np.array([[a, b], [b, a], [-3.51867618, -6.32710736]])
    res = cluster_accuracy(x, y, ["A"], ["A", "B", "C"], metric="euclidean")
    assert res["x_to_y"] == 1.0


# data/_source.py: zarr-backed CSR rows with a gap of one stored value between them
def test_zarr_rows_skipping_a_single_stored_value(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from transmodal.data import MatrixSource
    from transmodal.datasets import read_backed

    x = np.array([[1, 2, 0, 3], [0, 4, 0, 0], [5, 0, 6, 7], [0, 0, 8, 0]], np.float32)
    path = tmp_path / "gap.zarr"
    fmt = getattr(ad.settings, "zarr_write_format", None)
    try:
        if fmt is not None:
            ad.settings.zarr_write_format = 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ad.AnnData(X=sp.csr_matrix(x)).write_zarr(path)
    finally:
        if fmt is not None:
            ad.settings.zarr_write_format = fmt
    src = MatrixSource(read_backed(path).X, name="m", where="X")
    assert src.on_disk
    # row 1 holds exactly one stored value: rows 0 and 2 are not one run of values
    np.testing.assert_array_equal(src.rows(np.array([0, 2])), x[[0, 2]])
    np.testing.assert_array_equal(src.rows(np.array([1, 3])), x[[1, 3]])


# data/_source.py: two rows of a backed file asked for in decreasing order
def test_backed_rows_two_in_decreasing_order(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    from transmodal.data import MatrixSource

    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    ad.AnnData(X=sp.csr_matrix(x)).write_h5ad(tmp_path / "s.h5ad")
    ad.AnnData(X=x).write_h5ad(tmp_path / "d.h5ad")
    for name in ("s.h5ad", "d.h5ad"):
        src = MatrixSource(ad.read_h5ad(tmp_path / name, backed="r").X, name="m", where="X")
        np.testing.assert_array_equal(src.rows(np.array([5, 3])), x[[5, 3]])


# metrics/_chunked.py: a collapsed embedding of just two cells is warned about
def test_two_cells_with_the_same_coordinates_warn():
    from transmodal.metrics import foscttm

    x = np.array([[1.0, 2.0], [1.0, 2.0]])
    y = np.array([[0.0, 0.0], [1.0, 1.0]])
    with pytest.warns(UserWarning, match="same coordinates"):
        foscttm(x, y)


# metrics/_chunked.py: huge negative coordinates are refused like huge positive ones
def test_huge_negative_coordinates_are_refused():
    from transmodal.metrics import foscttm

    x = np.array([[-1e200, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="beyond"):
        foscttm(x, y)


# metrics/_chunked.py: labels partly shared between the modalities are no error
def test_partly_shared_labels_are_scored_not_refused():
    from transmodal.metrics import cluster_accuracy

    x = np.array([[0.0, 0.0], [5.0, 5.0]])
    y = np.array([[0.1, 0.0], [5.0, 5.1]])
    res = cluster_accuracy(x, y, ["A", "B"], ["A", "C"])
    assert res["x_to_y"] == 0.5 and res["y_to_x"] == 0.5


# metrics/_chunked.py: a boolean k is refused (True is no neighbourhood size)
def test_boolean_k_is_refused():
    from transmodal.metrics import partner_in_top_k

    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="integers"):
        partner_in_top_k(x, x + 0.1, k=[True])


# data/_source.py: chunk_rows gives at least one row, however wide the matrix
def test_chunk_rows_is_at_least_one_row_for_a_very_wide_matrix():
    from transmodal.data import MatrixSource

    src = MatrixSource(np.ones((3, 10), np.float32), name="m", where="X")
    assert src.chunk_rows(4096, max_values=4) == 1
    assert src.chunk_rows(4096, max_values=25) == 2


# data/_source.py: a rate source reads two matrices per block: half as many rows
def test_rate_source_blocks_hold_half_as_many_rows():
    from transmodal.data._source import MatrixSource, RateSource

    k = np.zeros((50, 5), np.float32)
    src = RateSource(k, k + 2, name="m", where="X", total_where="layers['cov']")
    plain = MatrixSource(k, name="m", where="X")
    assert plain.chunk_rows(4096, max_values=40) == 8
    assert src.chunk_rows(4096, max_values=40) == 4


# workflows/_evaluate.py: the units in which translations are compared with observations
@pytest.fixture(scope="module")
def _space_model():
    import transmodal as tm

    d = tm.datasets.synthetic(40, n_features={"rna": 12, "atac": 10}, seed=0)
    d["prot"] = d["rna"].copy()
    d["prot"].X = d["rna"].X.toarray() if hasattr(d["rna"].X, "toarray") else d["rna"].X
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(
            d, modalities={"rna": tm.Modality("nb", normalize=False),
                           "atac": tm.Modality("bernoulli"),
                           "prot": tm.Modality("gaussian", log1p=True)},
            n_latent=2, hidden=(8,), seed=0,
        )
    model._data = d
    return model


def test_comparison_space_of_counts_presence_and_log1p(_space_model):
    from transmodal.workflows._evaluate import comparison_space

    m = _space_model
    lib = float(m.module.transforms["rna"].library_size)
    # counts (also without normalize=True): scaled to the median training library, log1p
    to_units, compare = comparison_space(m, "rna")
    x = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    units = to_units(x)
    np.testing.assert_allclose(units, [[0.25 * lib, 0.75 * lib, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(compare(units), np.log1p(units))
    np.testing.assert_allclose(compare(np.array([[-0.5, 1.0]])), [[0.0, np.log(2.0)]])
    # bernoulli: presence, unmeasured entries stay NaN, compared as they are
    to_units, compare = comparison_space(m, "atac")
    got = to_units(np.array([[0.0, 2.0, np.nan, 0.5]]))
    np.testing.assert_array_equal(got, [[0.0, 1.0, np.nan, 1.0]])
    np.testing.assert_array_equal(compare(got), got)
    # other data: raw values, compared after log1p where the modality takes it
    to_units, compare = comparison_space(m, "prot")
    v = np.array([[0.0, 2.0, 5.0]])
    np.testing.assert_array_equal(to_units(v), v)
    np.testing.assert_allclose(compare(v), np.log1p(v))


# data/_source.py: sampled_blocks draws at most max_cells rows, kept in order
def test_sampled_blocks_draw_at_most_max_cells_in_order():
    from transmodal.data._source import MatrixSource, sampled_blocks

    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    src = MatrixSource(x, name="m", where="X")
    rows = np.arange(40)[::-1][:11]  # 11 rows, one more than allowed
    got = np.concatenate(list(sampled_blocks(src, np.sort(rows), 100,
                                                  np.random.default_rng(0), 10)))[:, 0]
    assert len(got) == 10 and len(set(got)) == 10 and set(got) <= set(rows.tolist())
    assert (np.diff(got) > 0).all()  # in order
    got = np.concatenate(list(sampled_blocks(src, np.arange(40), 7,
                                                  np.random.default_rng(1), 30)))[:, 0]
    assert len(got) == 30 and (np.diff(got) > 0).all()


# workflows/_evaluate.py: which metrics evaluate_paired gives at the smallest cell counts
def test_evaluate_paired_metrics_at_five_cells_and_refusal_below_two(_space_model):
    from transmodal.workflows import evaluate_paired

    m, d = _space_model, _space_model._data
    five = {k: d[k][:5].copy() for k in ("rna", "atac")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_paired(m, five, source="rna", target="atac", labels_key="label")
    assert res["n_cells"] == 5
    assert "partner_top1" in res and "partner_top5" not in res  # k < n only
    assert "knn_acc_l1_5" in res and "knn_chance_l1_5" in res and "knn_acc_l1_50" not in res
    assert "mixing_accuracy" in res  # 5 folds: 5 cells are enough
    assert "label_transfer" in res  # 5 labelled cells each
    one = {k: d[k][:1].copy() for k in ("rna", "atac")}
    with pytest.raises(ValueError, match="cells present in both"):
        evaluate_paired(m, one, source="rna", target="atac")


# data/_source.py: all-zero rows are counted in every block of a sparse matrix, not the first
def test_empty_rows_counted_in_a_later_block_of_a_sparse_matrix():
    import scipy.sparse as sp

    import transmodal as tm
    from transmodal.data._source import MatrixSource, check_values

    x = np.array([[1, 0], [2, 3], [0, 1], [4, 0], [0, 0], [5, 6]], np.float32)
    src = MatrixSource(sp.csr_matrix(x), name="m", where="X")
    with pytest.warns(UserWarning, match="1 of 6 cell"):
        check_values(src, tm.Modality("nb"), chunk_size=2)


# data/_source.py: missing=True on a sparse matrix without NaN is warned about (not with NaN)
def test_missing_on_a_sparse_matrix_warns_only_without_nan():
    import scipy.sparse as sp

    import transmodal as tm
    from transmodal.data._source import MatrixSource, check_values

    x = np.array([[1.0, 0.0], [2.0, 3.0], [0.5, 1.0]], np.float32)
    spec = tm.Modality("gaussian", missing=True)
    with pytest.warns(UserWarning, match="sparse matrix without NaN"):
        check_values(MatrixSource(sp.csr_matrix(x), name="m", where="X"), spec)
    x[0, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_values(MatrixSource(sp.csr_matrix(x), name="m", where="X"), spec)


# --- transmodal.nn._likelihoods: BetaBinomial clamps p away from 0 and 1 ---------------
def test_betabinomial_loss_stays_finite_at_saturated_logits():
    """BetaBinomial.nll clamps sigmoid(logits) into [eps, 1 - eps]: a decoder whose logits
    saturate (|logit| = 40, sigmoid exactly 1 in float64) still gets a finite loss and
    finite gradients for a success count below the trials, not inf / NaN."""
    from transmodal.nn._likelihoods import BetaBinomial

    lik = BetaBinomial()
    for lg in (40.0, 100.0, -40.0, -100.0):
        logits = torch.full((2, 3), lg, requires_grad=True)
        theta = torch.full((2, 3), 7.0)
        x = torch.tensor([[3.0, 0.0, 5.0], [1.0, 2.0, 0.0]])
        total = torch.full((2, 3), 5.0)
        loss = lik.nll({"logits": logits, "theta": theta}, x, None, total=total)
        assert torch.isfinite(loss).all(), (lg, loss)
        loss.sum().backward()
        assert torch.isfinite(logits.grad).all(), lg


# --- transmodal.data._source: raw-intensity advice for unscaled Gaussian images --------
def _f_spots(patches, seed=0):
    rng = np.random.default_rng(seed)
    spots = ad.AnnData(rng.poisson(3.0, (len(patches), 12)).astype(np.float32))
    spots.obs_names = [f"spot{i}" for i in range(len(patches))]
    spots.obsm["patch"] = patches
    return spots


def _f_build_image(spots, image):
    return tm.CrossModalAE({"rna": spots, "img": spots},
                           {"rna": tm.Modality("nb"), "img": image},
                           n_latent=4, hidden=(8,), anchor_fraction=1.0)


def test_signed_images_reaching_a_fifth_of_their_peak_get_no_raw_intensity_advice():
    """Images up to 100 whose lowest pixel is -30 (below -0.1 x peak: signed, e.g.
    standardised data, not background-subtracted raw intensities) draw no "intensities up
    to" warning under an unscaled Gaussian; at -5 (above -0.1 x peak) they do."""
    rng = np.random.default_rng(0)
    base = (rng.random((40, 1, 8, 8)) * 100.0).astype(np.float32)
    base[0, 0, 0, 0] = 100.0
    signed = base.copy()
    signed[:, 0, 0, 1] = -30.0
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        _f_build_image(_f_spots(signed), tm.Modality("gaussian", obsm_key="patch"))
    assert not [w for w in told if "intensities up to" in str(w.message)]
    raw = base.copy()
    raw[:, 0, 0, 1] = -5.0
    with pytest.warns(UserWarning, match="intensities up to 100"):
        _f_build_image(_f_spots(raw), tm.Modality("gaussian", obsm_key="patch"))


@pytest.mark.parametrize("factor, told", [(1000.0, "can take very long to reach values "
                                               "this large"),
                                              (1e-6, "values this small drown"), (1.0, None)])
@pytest.mark.parametrize("as_sparse", [False, True])
def test_unscaled_gaussian_matrix_far_from_unit_scale_warns(factor, told, as_sparse):
    """A Gaussian matrix with scale=False holding raw intensities (x1000, about 5,000) or
    values of 1e-6 trained silently into a collapsed modality (reconstruction flat at
    1.3e7, FOSCTTM at chance): warned, sparse or dense; unit-scale values are not."""
    from scipy import sparse

    d = tm.datasets.synthetic(60, modalities={"rna": "nb", "prot": "gaussian"},
                              n_features={"rna": 20, "prot": 10}, seed=0)
    x = (np.asarray(d["prot"].X, dtype=np.float64) + 5.0) * factor
    x[:, 0] = 0.0  # (zeros a sparse matrix leaves out count as values)
    d["prot"].X = sparse.csr_matrix(x) if as_sparse else x.astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tm.CrossModalAE(d, {"rna": "nb", "prot": tm.Modality("gaussian", scale=False)},
                        n_latent=4, hidden=(8,), anchor_fraction=1.0)
        tm.CrossModalAE(d, {"rna": "nb", "prot": tm.Modality("gaussian")},  # (scale=True)
                        n_latent=4, hidden=(8,), anchor_fraction=1.0)
    said = [str(w.message) for w in caught if "root mean square" in str(w.message)]
    if told is None:
        assert said == []
    else:
        assert len(said) == 1 and told in said[0] and "Pass scale=True" in said[0], said
        assert said[0].startswith("modality 'prot'")


# --- transmodal.workflows._evaluate: which evaluated cells are anchor pairs ------------
@pytest.fixture(scope="module")
def _f_shuffled_anchor_model():
    """An (untrained) model whose 'atac' cells are stored in another order than the 'rna'
    ones, with half the pairs as anchors."""
    d = tm.datasets.synthetic(40, n_features={"rna": 12, "atac": 10}, seed=0)
    perm = np.random.default_rng(1).permutation(40)
    d["atac"] = d["atac"][perm].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(
            d, modalities={"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")},
            n_latent=2, hidden=(8,), seed=0, anchor_fraction=0.5)
    return model, d


def test_anchor_cells_are_found_by_the_source_rows_of_each_pair(_f_shuffled_anchor_model):
    """_anchor_cells names as anchors exactly the cells whose row in the *source* modality
    belongs to an anchor pair, also when the two modalities store their cells in different
    orders (the pair's target row points at another cell of the source)."""
    from transmodal.workflows._evaluate import _anchor_cells

    model, d = _f_shuffled_anchor_model
    (key, rows), = model.anchors_.items()
    names = key.split("|")
    for source, target in (("rna", "atac"), ("atac", "rna")):
        trained = set(model.mods[source].obs_names[rows[names.index(source)]])
        assert 0 < len(trained) < 40
        got = _anchor_cells(model, source, target, d[source])
        assert set(d[source].obs_names[got]) == trained


def test_anchor_cells_with_other_feature_names_are_not_anchors(_f_shuffled_anchor_model):
    """Cells named like the training cells and holding their values, but under other feature
    names (another panel), are not taken for the model's anchor pairs."""
    from transmodal.workflows._evaluate import _anchor_cells

    model, d = _f_shuffled_anchor_model
    assert _anchor_cells(model, "rna", "atac", d["rna"]).any()
    other = d["rna"].copy()
    other.var_names = [f"other{i}" for i in range(other.n_vars)]
    assert not _anchor_cells(model, "rna", "atac", other).any()


def test_evaluate_unpaired_mixing_accuracy_from_five_cells_each(_f_shuffled_anchor_model):
    """evaluate_unpaired reports mixing_accuracy when both modalities hold at least 5 cells
    (its 5 cross-validation folds) and leaves it out with 4 in one of them."""
    from transmodal.workflows import evaluate_unpaired

    model, d = _f_shuffled_anchor_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        five = evaluate_unpaired(model, {"rna": d["rna"][:5].copy(), "atac": d["atac"][5:10].copy()},
                                 source="rna", target="atac", labels_key="label", k=3)
        four = evaluate_unpaired(model, {"rna": d["rna"][:6].copy(), "atac": d["atac"][5:9].copy()},
                                 source="rna", target="atac", labels_key="label", k=3)
    assert five["n_cells_rna"] == 5 and five["n_cells_atac"] == 5
    assert "mixing_accuracy" in five and 0.0 <= five["mixing_accuracy"] <= 1.0
    assert "mixing_accuracy" not in four


# --- transmodal.model._training: the post-training separability check -----------------
@pytest.fixture(scope="module")
def _f_sep_model():
    """An untrained 120-cell paired model (all pairs anchors: no pseudo-pairing)."""
    d = tm.datasets.synthetic(120, n_features={"rna": 12, "atac": 10}, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(
            d, modalities={"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")},
            n_latent=2, hidden=(8,), seed=0, anchor_fraction=1.0)
    return model


def _f_separability(model, monkeypatch, acc, disc):
    """Run _warn_if_separable with the linear probe's and the discriminator's balanced
    accuracies fixed; returns (the 'separable' warnings, the numbers of cells per modality
    handed to the linear probe)."""
    import transmodal.metrics as tm_metrics

    sizes = []

    def probe(embs, **kwargs):
        sizes.append([len(e) for e in embs])
        return acc

    monkeypatch.setattr(tm_metrics, "mixing_accuracy_multi", probe)
    monkeypatch.setattr(model, "_disc_accuracy", lambda embs, rows: disc)
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        model._warn_if_separable()
    return [str(w.message) for w in told if "remain separable" in str(w.message)], sizes[0]


def test_a_collapsed_modality_is_named_after_training(_f_sep_model, monkeypatch):
    """A modality all of whose cells embed at one point is warned of by its name (the
    linear probe's metric said 'embeddings[1]: ... the matching metrics ... score such ties
    as matches', of metrics the user never called)."""
    model = _f_sep_model
    real = model.module.encode
    monkeypatch.setattr(model.module, "encode",
                        lambda n, x, *a, **kw: real(n, x, *a, **kw) * (n != "atac"))
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        model._warn_if_separable()
    said = [str(w.message) for w in told]
    assert any(m.startswith("modality 'atac': all ") and "cells embed at one point after "
               "training" in m for m in said), said
    assert not any("embeddings[" in m or "modality 'rna'" in m for m in said), said


def test_separability_probe_holds_the_process_state(_f_sep_model, monkeypatch):
    """The linear probe after training (scikit-learn, whose workers save and rebuild the
    warning filters) runs holding the process-state lock, so that two trainings in two
    threads cannot restore each other's filters (one thread's list was left in place)."""
    import threading

    import transmodal.metrics as tm_metrics
    from transmodal import _utils

    free = []

    def probe(embs, **kwargs):
        def other():  # another thread cannot take the lock while the probe runs
            got = _utils._PROCESS_STATE.acquire(blocking=False)
            free.append(got)
            if got:
                _utils._PROCESS_STATE.release()
        t = threading.Thread(target=other)
        t.start()
        t.join()
        return 0.5

    monkeypatch.setattr(tm_metrics, "mixing_accuracy_multi", probe)
    _f_sep_model._warn_if_separable()
    assert free == [False]


def test_separability_warns_above_linear_accuracy_0_8_and_discriminator_0_9(
        _f_sep_model, monkeypatch):
    """Two modalities: the warning comes when the linear probe's balanced accuracy exceeds
    0.8 (SEPARABLE_ACCURACY; chance + 0.3 is also 0.8) or the discriminator's exceeds 0.9
    (DISC_SEPARABLE_ACCURACY), strictly; the accuracies are stored on the model."""
    model = _f_sep_model
    assert _f_separability(model, monkeypatch, 0.8, 0.9)[0] == []
    assert (model.mixing_accuracy_, model.disc_accuracy_) == (0.8, 0.9)
    told, _ = _f_separability(model, monkeypatch, 0.9, 0.5)
    assert len(told) == 1 and "linear classifier" in told[0] and "discriminator" not in told[0]
    told, _ = _f_separability(model, monkeypatch, 0.5, 0.95)
    assert len(told) == 1 and "discriminator tells them apart" in told[0]
    assert "linear classifier" not in told[0]


def test_separability_probe_uses_validation_cells_from_fifty_on(_f_sep_model, monkeypatch):
    """The linear probe reads a modality's validation cells when it has at least 50 of
    them, else all of its cells."""
    model = _f_sep_model
    saved = dict(model.val_masks_)
    try:
        for n_val, expected in ((50, 50), (49, 120), (10, 120)):
            for name in ("rna", "atac"):
                mask = np.zeros(120, dtype=bool)
                mask[:n_val] = True
                model.val_masks_[name] = mask
            _, sizes = _f_separability(model, monkeypatch, 0.5, 0.5)
            assert sizes == [expected, expected], (n_val, sizes)
    finally:
        model.val_masks_.clear()
        model.val_masks_.update(saved)


# --- transmodal.data._source: all-zero cells under a normalising Gaussian modality -------
def test_all_zero_cells_warned_for_gaussian_data_with_normalize():
    """A Gaussian modality with normalize=True scales each cell to a library size, so a
    cell of only zeros carries no signal there either: warned, as for counts (without
    normalize, zeros are ordinary values of centred data: no warning)."""
    from transmodal.data import setup_data

    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, (30, 8)).astype(np.float32)
    x[:3] = 0
    a = ad.AnnData(x)
    a.obs_names = [f"c{i}" for i in range(30)]
    b = ad.AnnData(rng.poisson(2.0, (30, 6)).astype(np.float32))
    b.obs_names = a.obs_names.copy()
    with pytest.warns(UserWarning, match=r"'rna'.*: 3 of 30 cell\(s\) hold no non-zero value"):
        setup_data({"rna": a, "atac": b},
                   {"rna": tm.Modality("gaussian", normalize=True), "atac": tm.Modality("poisson")})


# --- transmodal.data._source: values_digest tells edits that keep the sum --------------
def test_values_digest_tells_an_edit_that_keeps_the_sum_of_the_values():
    """values_digest fingerprints the sums of the values *and of their squares*: moving one
    unit from one entry to another (same sum) still changes it, so a matrix edited that way
    in place is read anew."""
    from transmodal.data._source import values_digest

    x = np.full((10, 4), 2.0, dtype=np.float32)
    y = x.copy()
    y[0, 0] += 1.0
    y[0, 1] -= 1.0
    dx, dy = values_digest(x, 10), values_digest(y, 10)
    assert dx[0] == dy[0]
    assert dx != dy
    assert dx == (80.0, 160.0, 0, 40)


# --- transmodal.data._source: which crop shapes look channels-last ----------------------
def test_channels_last_up_to_sixteen_channels_a_quarter_of_each_axis():
    """looks_channels_last: a last axis of 2-16 "pixels" beside axes at least four times as
    long is taken for channels (multiplexed immunofluorescence: 12 or 16 channels of 64 x 64
    crops); 17 is none, nor an axis shorter than four times the channels."""
    from transmodal.data._source import looks_channels_last

    assert looks_channels_last((48, 48, 12))
    assert looks_channels_last((64, 64, 16))
    assert looks_channels_last((20, 20, 5))
    assert not looks_channels_last((19, 20, 5))  # 19 < 4 x 5
    assert not looks_channels_last((68, 68, 17))
    assert not looks_channels_last((64, 64, 1 + 16 * 4))


# --- transmodal.nn._likelihoods: BetaBinomial's initial concentration ------------------
def test_betabinomial_head_starts_at_concentration_e_squared_per_feature():
    """The beta-binomial head learns one concentration theta per feature, starting at
    exp(2) ~ 7.4 (moderate over-dispersion; the NB's starts at exp(0) = 1), the same for
    every cell; its logits come from the hidden layer."""
    from transmodal.nn._likelihoods import BetaBinomial

    torch.manual_seed(0)
    head = BetaBinomial().head(5, 3)
    out = head(torch.randn(4, 5))
    assert out["logits"].shape == (4, 3) and out["theta"].shape == (4, 3)
    torch.testing.assert_close(out["theta"], torch.full((4, 3), float(np.exp(2.0))))
    assert sum(p.numel() for p in head.parameters() if p is not head.logits.weight
               and p is not head.logits.bias) == 3


# --- transmodal.workflows._evaluate: translation scores per cell, over blocks of cells ---
def _f_eval_paired(model, data):
    from transmodal.workflows import evaluate_paired

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_paired(model, data, source="rna", target="atac")


def test_evaluate_paired_translation_scores_do_not_depend_on_the_block_size(
        _f_shuffled_anchor_model, monkeypatch):
    """Each cell's translation is compared with its own partner's observed profile however
    the partners are read in blocks: blocks of 7 cells give the scores of one block."""
    from transmodal.data._source import MatrixSource

    model, d = _f_shuffled_anchor_model
    data = {"rna": d["rna"], "atac": d["atac"]}
    whole = _f_eval_paired(model, data)
    monkeypatch.setattr(MatrixSource, "chunk_rows", lambda self, chunk_size=4096, **kw: 7)
    blocks = _f_eval_paired(model, data)
    for key in ("translation_pearson_rna_to_atac", "translation_pearson_atac_to_rna",
                "baseline_pearson_rna_to_atac", "baseline_pearson_atac_to_rna"):
        assert blocks[key] == pytest.approx(whole[key], rel=1e-5, abs=1e-6), key


def test_evaluate_paired_leaves_out_cells_with_a_constant_observed_profile(
        _f_shuffled_anchor_model):
    """A partner whose observed profile is constant (no accessible region at all) has no
    Pearson correlation: it is left out of the mean translation score, not made NaN."""
    model, d = _f_shuffled_anchor_model
    atac = d["atac"].copy()
    x = atac.X.toarray() if hasattr(atac.X, "toarray") else np.array(atac.X)
    x[0] = 0
    atac.X = x
    res = _f_eval_paired(model, {"rna": d["rna"], "atac": atac})
    assert np.isfinite(res["translation_pearson_rna_to_atac"])
    assert np.isfinite(res["baseline_pearson_rna_to_atac"])


def test_evaluate_paired_baseline_averages_only_measured_entries():
    """With unmeasured (NaN) entries in the target, the baseline's mean training profile is
    each feature's mean over the training cells that measured it (not a sum divided by all
    cells), compared as the translations are."""
    from transmodal import metrics
    from transmodal.workflows import comparison_space, evaluate_paired

    rng = np.random.default_rng(0)
    n = 60
    a = ad.AnnData(rng.poisson(3.0, (n, 10)).astype(np.float32))
    a.obs_names = [f"c{i}" for i in range(n)]
    met = rng.uniform(0.05, 0.95, (n, 8)).astype(np.float32)
    met[rng.random((n, 8)) < 0.4] = np.nan
    met[:, 0] = np.where(np.arange(n) % 2 == 0, np.nan, met[:, 0])
    m = ad.AnnData(met)
    m.obs_names = a.obs_names.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(
            {"rna": a, "met": m},
            {"rna": tm.Modality("nb"), "met": tm.Modality("continuous_bernoulli", missing=True)},
            n_latent=2, hidden=(8,), seed=0)
        res = evaluate_paired(model, {"rna": a, "met": m}, source="rna", target="met")
    to_units, compare = comparison_space(model, "met")
    train = ~model.val_masks_["met"]
    with np.errstate(all="ignore"):
        mean = compare(np.nanmean(to_units(met[train]), 0)[None, :])
    observed = compare(to_units(met))
    expected = np.nanmean(metrics.mean_profile_baseline(mean, observed, missing=True))
    assert res["baseline_pearson_rna_to_met"] == pytest.approx(expected, rel=1e-5)


def test_evaluate_paired_partners_without_the_batch_column_are_averaged_over_batches():
    """Translating into a modality decoded per batch, partner cells whose AnnData lacks the
    batch column are translated as the mean over the batches (no KeyError), as when their
    batches are unknown."""
    from transmodal.workflows import evaluate_paired

    d = tm.datasets.synthetic(40, n_features={"rna": 12, "atac": 10}, seed=0)
    d["rna"].obs["batch"] = np.where(np.arange(40) % 2 == 0, "b1", "b2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tm.CrossModalAE(
            d, modalities={"rna": tm.Modality("nb", batch_key="batch"),
                           "atac": tm.Modality("bernoulli")},
            n_latent=2, hidden=(8,), seed=0, anchor_fraction=1.0)
        rna = d["rna"].copy()
        del rna.obs["batch"]
        res = evaluate_paired(model, {"rna": rna, "atac": d["atac"]}, source="rna",
                              target="atac")
        averaged = model.translate(d["atac"], source="atac", target="rna").X
    assert np.isfinite(res["translation_pearson_atac_to_rna"])
    from transmodal.workflows import comparison_space
    from transmodal import metrics

    to_units, compare = comparison_space(model, "rna")
    x = rna.X.toarray() if hasattr(rna.X, "toarray") else np.asarray(rna.X)
    r = metrics.translation_pearson(compare(np.asarray(averaged)), compare(to_units(x)))
    assert res["translation_pearson_atac_to_rna"] == pytest.approx(float(np.nanmean(r)), rel=1e-5)
