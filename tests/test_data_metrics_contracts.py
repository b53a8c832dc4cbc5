"""What the matrix sources (data/_source.py), the chunked metrics (metrics/_chunked.py)
and evaluate_paired (workflows/_evaluate.py) do, pinned down. Found by mutation testing
(round 8): each test fails on a change of the code that the rest of the suite let pass."""

import warnings

import numpy as np
import pytest


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
