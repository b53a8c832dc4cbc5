"""Tests for transmodal.analysis (and its plots) on small simulated data with known answers."""

from __future__ import annotations

import warnings
from pathlib import Path

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import sparse, stats  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

import transmodal as tm  # noqa: E402
from transmodal.analysis import (  # noqa: E402
    benjamini_hochberg,
    cluster_robustness,
    compare_differential,
    differential_expression,
    enrichment,
    read_gmt,
    top_markers,
    translated_classifier_roc,
    welch_ttest,
)

N_PER_GROUP, N_FEATURES = 60, 200
UP, DOWN = np.arange(10), np.arange(10, 20)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------- data
def de_data(seed: int = 0, up=UP, down=DOWN, shift: float = 3.0, sparse_x: bool = False) -> ad.AnnData:
    """Two groups of log-like values; features ``up`` (``down``) are higher (lower) in "A"."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 0.5, size=(2 * N_PER_GROUP, N_FEATURES))
    x[:N_PER_GROUP, up] += shift
    x[N_PER_GROUP:, down] += shift
    x[rng.random(x.shape) < 0.2] = 0.0  # dropouts, so a sparse matrix is sparse
    group = np.array(["A"] * N_PER_GROUP + ["B"] * N_PER_GROUP)
    obs = pd.DataFrame({"group": pd.Categorical(group)}, index=[f"c{i}" for i in range(len(group))])
    var = pd.DataFrame(index=[f"g{j}" for j in range(N_FEATURES)])
    return ad.AnnData(X=sparse.csr_matrix(x) if sparse_x else x, obs=obs, var=var)


def names(idx) -> set[str]:
    return {f"g{j}" for j in idx}


def blobs(n_per: int = 50, seed: int = 0, dims: int = 2, sep: float = 8.0):
    rng = np.random.default_rng(seed)
    centers = sep * np.eye(3, dims)
    labels = np.repeat(np.arange(3), n_per)
    return centers[labels] + rng.normal(size=(3 * n_per, dims)), labels


def de_frame(up: list[str], down: list[str], universe: list[str]) -> pd.DataFrame:
    """A minimal differential_expression-like table with the given significant markers."""
    rows = {}
    for i, g in enumerate(universe):
        sign = 1 if g in up else -1 if g in down else 0
        sig = sign != 0
        rows[g] = {
            "mean_diff": sign * (2.0 - i / 1000),
            "t": sign * (10.0 - i / 100) if sig else 0.1,
            "pval": 1e-6 * (1 + i) if sig else 0.5,
            "pval_adj": 1e-4 if sig else 0.9,
            "direction": "up" if sign > 0 else "down" if sign < 0 else "none",
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------- statistics
def test_benjamini_hochberg_hand_example():
    # sorted p: .005 .01 .03 .04 .5 -> m p / rank: .025 .025 .05 .05 .5 (already monotone)
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    np.testing.assert_allclose(benjamini_hochberg(p), [0.025, 0.05, 0.05, 0.025, 0.5])
    # the running minimum from the largest p down: 3 * .02 / 2 = .03 > 3 * .03 / 3 = .03
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.02, 0.03]), [0.03, 0.03, 0.03])
    np.testing.assert_allclose(benjamini_hochberg([0.9, 0.8]), [0.9, 0.9])
    out = benjamini_hochberg([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])


def test_benjamini_hochberg_matches_scipy_and_validates():
    p = np.random.default_rng(1).random(300) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p, method="bh"))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.5, 1.2])


def test_welch_ttest_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(0.0, 1.0, size=(12, 30))
    b = rng.normal(0.4, 2.5, size=(31, 30))
    t, p = welch_ttest(a.mean(0), a.var(0, ddof=1), 12, b.mean(0), b.var(0, ddof=1), 31)
    ref = stats.ttest_ind(a, b, equal_var=False)
    np.testing.assert_allclose(t, ref.statistic, rtol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=1e-10)
    # constant features: equal means -> p = 1, different means -> p = 0
    t, p = welch_ttest(np.array([1.0, 1.0]), np.zeros(2), 5, np.array([1.0, 2.0]), np.zeros(2), 5)
    assert p.tolist() == [1.0, 0.0] and t[0] == 0 and t[1] == -np.inf


# -------------------------------------------------------------------------- DE
@pytest.mark.parametrize("sparse_x", [False, True])
def test_differential_expression_matches_scipy_and_finds_shifted_features(sparse_x):
    adata = de_data(sparse_x=sparse_x)
    # a tiny block forces many column chunks
    de = differential_expression(adata, "group", "A", "B", block_bytes=8 * N_PER_GROUP * 7)
    assert list(de.columns) == [
        "mean_group", "mean_reference", "mean_diff", "log2fc", "t", "pval", "pval_adj", "direction", "marker",
    ]
    x = adata.X.toarray() if sparse_x else adata.X
    ref = stats.ttest_ind(x[:N_PER_GROUP], x[N_PER_GROUP:], equal_var=False)
    d = de.loc[adata.var_names]
    np.testing.assert_allclose(d["t"], ref.statistic, rtol=1e-9)
    np.testing.assert_allclose(d["pval"], ref.pvalue, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(d["pval_adj"], stats.false_discovery_control(ref.pvalue), rtol=1e-9)
    np.testing.assert_allclose(d["mean_diff"], x[:N_PER_GROUP].mean(0) - x[N_PER_GROUP:].mean(0))
    assert np.all(np.diff(de["pval"].to_numpy()) >= 0)  # sorted by significance

    markers = top_markers(de)
    for direction, truth in (("up", UP), ("down", DOWN)):
        assert set(markers[direction][:10]) == names(truth)  # the shifted features come first
        assert len(markers[direction]) <= 11  # BH at 5 %: at most a stray null feature
    assert set(de.index[de["marker"]]) == set(markers["up"]) | set(markers["down"])
    assert de.attrs["n_group"] == de.attrs["n_reference"] == N_PER_GROUP


def test_differential_expression_sparse_equals_dense_and_rest():
    dense = differential_expression(de_data(), "group", "A")
    sp = differential_expression(de_data(sparse_x=True), "group", "A", "rest")
    pd.testing.assert_frame_equal(dense, sp, check_exact=False, rtol=1e-10)
    swapped = differential_expression(de_data(), "group", "B", "A")
    np.testing.assert_allclose(swapped.loc[dense.index, "mean_diff"], -dense["mean_diff"])


@pytest.mark.parametrize("sparse_x", [False, True])
def test_differential_expression_and_roc_read_backed_files(tmp_path, sparse_x):
    """A backed AnnData (sparse: anndata's CSR dataset, not an array) gives the in-memory
    results."""
    adata = de_data(sparse_x=sparse_x)
    adata.write_h5ad(tmp_path / "x.h5ad")
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")
    pd.testing.assert_frame_equal(differential_expression(backed, "group", "A", "B"),
                                  differential_expression(adata, "group", "A", "B"))
    roc = translated_classifier_roc(backed, "group", adata, "group")
    assert roc.auc == translated_classifier_roc(adata, "group", adata, "group").auc


def test_differential_expression_leaves_unlabelled_cells_out():
    adata = de_data()
    labels = adata.obs["group"].astype(object).to_numpy()
    unlabelled = adata.copy()
    unlabelled.obs["group"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 7 == 0, None, labels))
    keep = ~pd.isna(unlabelled.obs["group"]).to_numpy()
    for reference in ("B", "rest"):
        got = differential_expression(unlabelled, "group", "A", reference)
        want = differential_expression(adata[keep].copy(), "group", "A", reference)
        pd.testing.assert_frame_equal(got, want)


def test_log2_fold_change_definitions():
    adata = de_data()
    de = differential_expression(adata, "group", "A", "B")
    np.testing.assert_allclose(de["log2fc"], de["mean_diff"] / np.log(2))  # log1p, pseudocount 1
    lin = differential_expression(adata, "group", "A", "B", log1p=False, pseudocount=0.5)
    expected = np.log2((lin["mean_group"] + 0.5) / (lin["mean_reference"] + 0.5))
    np.testing.assert_allclose(lin["log2fc"], expected)
    np.testing.assert_allclose(lin["t"], de["t"])  # the test itself does not change


def test_top_markers_limits_and_layer():
    adata = de_data()
    adata.layers["raw"] = adata.X * 2
    de = differential_expression(adata, "group", "A", "B", layer="raw", n_top=3)
    assert de["marker"].sum() == 6
    m = top_markers(de)
    assert len(m["up"]) == 3 and set(m["up"]) <= names(UP)
    ordered = de.loc[m["up"], "pval"].to_numpy()
    assert np.all(np.diff(ordered) >= 0)
    assert top_markers(de, n_top=50, alpha=1e-300) == {"up": [], "down": []}
    # "below alpha": an adjusted p-value equal to alpha is no marker (alpha=1 leaves out
    # the features whose adjusted p-value is 1)
    at = de["pval_adj"].sort_values().iloc[2]
    below = set(de.index[de["pval_adj"] < at])
    assert set(sum(top_markers(de, n_top=50, alpha=at).values(), [])) == below
    everything = top_markers(de, n_top=10**6, alpha=1.0)
    assert set(sum(everything.values(), [])) == set(de.index[de["pval_adj"] < 1.0])
    labels = adata.obs["group"].to_numpy()
    by_array = differential_expression(adata, labels, ["A"], ["B"], layer="raw")
    pd.testing.assert_series_equal(by_array["t"], de["t"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groupby": "nope", "group": "A"}, "obs key 'nope'"),
        ({"groupby": "group", "group": "C"}, r"group: label\(s\) \['C'\] not found"),
        ({"groupby": "group", "group": "A", "reference": "A"}, "share cells"),
        ({"groupby": "group", "group": "A", "layer": "counts"}, "layer 'counts' not found"),
        ({"groupby": "group", "group": "A", "alpha": 0}, "alpha"),
        ({"groupby": "group", "group": "A", "n_top": 0}, "n_top"),
    ],
)
def test_differential_expression_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        differential_expression(de_data(), **kwargs)


def test_differential_expression_names_a_label_of_the_wrong_type():
    adata = de_data()
    adata.obs["num"] = (np.arange(adata.n_obs) % 2).astype(int)
    with pytest.raises(ValueError, match=r"\['0'\] not found; labels are \[0, 1\].*another type"):
        differential_expression(adata, "num", "0")


def test_differential_expression_needs_two_cells_per_group():
    adata = de_data()
    adata.obs["one"] = ["solo"] + ["other"] * (adata.n_obs - 1)
    with pytest.raises(ValueError, match="at least 2 cells"):
        differential_expression(adata, "one", "solo")


# -------------------------------------------------------------- comparison
@pytest.mark.parametrize("as_sparse", [False, True])
def test_de_of_a_feature_with_one_value_everywhere_is_no_marker(as_sparse):
    """float64 0.1 (or 0.7) in every cell: its group means differed by 1e-16 and its
    variances were 1e-33 - t = 9.4, p = 7e-15, the top marker (scipy's ttest_ind gives the
    same); now t = 0, p = 1 as documented, stored densely or sparsely. A feature with one
    value per group that differs between them is the documented infinite t."""
    adata = de_data()
    x = np.asarray(adata.X, dtype=np.float64)
    x[:, 0], x[:, 1] = 0.1, 0.7
    x[:N_PER_GROUP, 2], x[N_PER_GROUP:, 2] = 0.3, 0.1
    adata = ad.AnnData(sparse.csr_matrix(x) if as_sparse else x, obs=adata.obs, var=adata.var)
    de = differential_expression(adata, "group", "A", log1p=False)
    for g in ("g0", "g1"):
        assert (de.loc[g, "t"], de.loc[g, "pval"], de.loc[g, "mean_diff"]) == (0.0, 1.0, 0.0)
        assert not de.loc[g, "marker"] and de.loc[g, "direction"] == "none"
    assert de.loc["g2", "t"] == np.inf and de.loc["g2", "pval"] == 0.0


def test_de_scatter_colours_the_markers_compare_differential_counts():
    """pred covers 90 % of obs's features: the scatter coloured each table's own markers
    (chosen among all of its features), compare_differential and marker_overlap those
    chosen among the common ones (12 against 14 observed markers)."""
    obs = differential_expression(de_data(seed=1, up=range(30), down=range(30, 60)), "group",
                                  "A", n_top=20)
    pred = differential_expression(de_data(seed=2, up=range(30), down=range(30, 60)),
                                   "group", "A", n_top=20)
    pred = pred.drop(index=[f"g{j}" for j in range(0, 60, 4)])  # (markers only obs has)
    res = compare_differential(pred, obs)
    ax = tm.pl.de_scatter(pred, obs)
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    observed = sum(drawn.get(k, 0) for k in ("marker: observed only", "marker: both",
                                              "marker: both, opposite directions"))
    predicted = sum(drawn.get(k, 0) for k in ("marker: predicted only", "marker: both",
                                               "marker: both, opposite directions"))
    assert observed == res.overlap["n_obs"].sum() and predicted == res.overlap["n_pred"].sum()
    assert drawn["marker: both"] == res.overlap["n_overlap"].sum()
    # (the tables' own marker columns would have coloured another count)
    assert obs.loc[pred.index, "marker"].sum() != res.overlap["n_obs"].sum()
    # tables made with different n_top: their own marker columns (no comparison to follow)
    other = pred.copy()
    other.attrs["n_top"] = 10
    ax = tm.pl.de_scatter(other, obs)
    drawn = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    observed = sum(drawn.get(k, 0) for k in ("marker: observed only", "marker: both",
                                              "marker: both, opposite directions"))
    assert observed == obs.loc[pred.index, "marker"].sum()


def test_marker_overlap_says_no_markers_rather_than_a_nan_jaccard():
    universe = [f"g{i}" for i in range(100)]
    res = compare_differential(de_frame(universe[:10], [], universe),
                               de_frame(universe[:5], [], universe))
    ax = tm.pl.marker_overlap(res)
    texts = [t.get_text() for t in ax.texts]
    assert "no markers" in texts and not any("nan" in t for t in texts)


def test_compare_differential_overlap_against_hypergeometric():
    universe = [f"g{i}" for i in range(100)]
    pred = de_frame(universe[:10], universe[50:55], universe)
    obs = de_frame(universe[:5] + universe[10:15], universe[60:65], universe)
    res = compare_differential(pred, obs)
    up, down = res.overlap.loc["up"], res.overlap.loc["down"]
    assert (up["n_pred"], up["n_obs"], up["n_overlap"]) == (10, 10, 5)
    assert up["jaccard"] == pytest.approx(5 / 15)
    assert up["expected"] == pytest.approx(1.0)
    assert up["pval"] == pytest.approx(stats.hypergeom.sf(4, 100, 10, 10))
    assert up["pval"] < 1e-3
    assert down["n_overlap"] == 0 and down["pval"] == 1.0 and down["jaccard"] == 0
    assert res.n_common == 100
    assert res.to_dict()["overlap"]["up"]["n_overlap"] == 5
    assert repr(res) == (  # (the marker lists by their sizes, not hundreds of names)
        f"DEComparison(n_common=100, pearson={res.pearson:.3f}, spearman={res.spearman:.3f}, "
        "markers={'pred': {'up': 10, 'down': 5}, 'obs': {'up': 10, 'down': 5}})")


def test_compare_differential_takes_the_results_settings_and_checks_their_groups():
    obs = differential_expression(de_data(seed=0), "group", "A", "B", n_top=2)
    pred = differential_expression(de_data(seed=1), "group", "A", "B", n_top=2)
    res = compare_differential(pred, obs)  # the n_top both were made with
    assert res.overlap.loc["up", "n_pred"] <= 2 and res.overlap.loc["up", "n_obs"] <= 2
    assert res.overlap.loc["up", "n_pred"] == pred["marker"][pred["direction"] == "up"].sum()
    wide = differential_expression(de_data(seed=1), "group", "A", "B", n_top=5)
    with pytest.raises(ValueError, match=r"made with different n_top \(\[2, 5\]\); pass n_top="):
        compare_differential(wide, obs)
    assert compare_differential(wide, obs, n_top=2).overlap.equals(res.overlap)
    other = differential_expression(de_data(seed=1), "group", "B", "A", n_top=2)
    with pytest.warns(UserWarning, match="pred compares 'B' with 'A', obs 'A' with 'B'"):
        compare_differential(other, obs)
    # the same groups spelt otherwise (numpy strings, a list), the same alpha as float32
    same = differential_expression(de_data(seed=1), "group", np.str_("A"), ["B"], n_top=2,
                                   alpha=np.float32(0.05))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compare_differential(same, obs)
    linear = differential_expression(de_data(seed=1), "group", "A", "B", n_top=2, log1p=False)
    with pytest.warns(UserWarning, match=r"pred was computed with log1p=False, obs with "
                      r"log1p=True: their effects and tests are on different scales"):
        compare_differential(linear, obs)


def test_compare_differential_on_replicates_and_disjoint_effects():
    obs = differential_expression(de_data(seed=0), "group", "A", "B")
    pred = differential_expression(de_data(seed=1), "group", "A", "B")
    same = compare_differential(pred, obs)
    assert same.pearson > 0.9 and same.spearman > 0.15  # 180 null features dilute Spearman
    assert (same.overlap["n_overlap"] >= 10).all()
    assert (same.overlap["pval"] < 1e-6).all()

    other = differential_expression(de_data(seed=1, up=np.arange(100, 110), down=np.arange(110, 120)),
                                    "group", "A", "B")
    diff = compare_differential(other, obs)
    assert (diff.overlap["n_overlap"] == 0).all() and (diff.overlap["pval"] == 1.0).all()
    assert abs(diff.pearson) < 0.3

    # only common features count
    sub = compare_differential(pred.iloc[::2], obs)
    assert sub.n_common == N_FEATURES // 2
    with pytest.raises(ValueError, match="share 0 features"):
        compare_differential(pred.rename(index=lambda g: "x" + g), obs)


# -------------------------------------------------------------------- ROC
def roc_data(seed: int, n: int = 120, separation: float = 3.0, n_classes: int = 2):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    x = rng.normal(size=(n, 8))
    x[:, :n_classes] += separation * np.eye(n_classes)[y]
    return x, np.array([f"t{c}" for c in y])


def test_roc_separable_and_random():
    x, y = roc_data(0)
    xt, yt = roc_data(1)
    res = translated_classifier_roc(x, y, xt, yt)
    assert res.positive == "t1" and list(res.curves) == ["t1"]
    assert res.auc > 0.95
    curve = res.curves["t1"]
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1 and len(curve.fpr) == len(curve.thresholds)
    assert (res.n_train, res.n_test) == (120, 120)

    shuffled = np.random.default_rng(2).permutation(yt)
    rand = translated_classifier_roc(x, y, xt, shuffled)
    assert abs(rand.auc - 0.5) < 0.15

    flipped = translated_classifier_roc(x, y, xt, yt, positive="t0")
    assert flipped.auc == pytest.approx(res.auc)


def test_roc_multiclass_anndata_and_feature_order():
    x, y = roc_data(0, n_classes=3)
    xt, yt = roc_data(1, n_classes=3)
    var = pd.DataFrame(index=[f"f{j}" for j in range(8)])
    real = ad.AnnData(x, obs=pd.DataFrame({"cl": y}, index=[f"r{i}" for i in range(len(y))]), var=var)
    trans = ad.AnnData(xt, obs=pd.DataFrame({"cl": yt}, index=[f"t{i}" for i in range(len(yt))]), var=var)
    res = translated_classifier_roc(real, "cl", trans, "cl", classifier=LogisticRegression())
    assert res.positive is None and set(res.curves) == {"t0", "t1", "t2"}
    assert res.auc == pytest.approx(np.mean(list(res.auc_per_class.values())))
    assert res.auc > 0.95
    reordered = trans[:, trans.var_names[::-1]].copy()
    again = translated_classifier_roc(real, "cl", reordered, "cl", classifier=LogisticRegression())
    assert again.auc == pytest.approx(res.auc)
    twice = real.copy()  # a duplicated name cannot be matched: refused, not scored on it twice
    twice.var_names = ["f1"] + list(real.var_names[1:])
    with pytest.raises(ValueError, match="real names feature 'f1' twice"):
        translated_classifier_roc(twice, "cl", trans, "cl", classifier=LogisticRegression())
    # default random forest, sparse input
    rf = translated_classifier_roc(sparse.csr_matrix(x), y, sparse.csr_matrix(xt), yt, seed=3)
    assert rf.auc > 0.9


def test_roc_errors():
    x, y = roc_data(0)
    xt, yt = roc_data(1)
    with pytest.raises(ValueError, match=r"never saw: \['t9'\]"):
        translated_classifier_roc(x, y, xt, np.where(yt == "t0", "t9", yt))
    with pytest.raises(ValueError, match="all have label"):
        translated_classifier_roc(x, y, xt, np.full(len(yt), "t0"))
    with pytest.raises(ValueError, match="positive="):
        translated_classifier_roc(x, y, xt, yt, positive="t7")
    with pytest.raises(ValueError, match="features"):
        translated_classifier_roc(x, y, xt[:, :5], yt)
    with pytest.raises(ValueError, match="120 cells"):
        translated_classifier_roc(x, y[:10], xt, yt)


# ------------------------------------------------------------- enrichment
def gene_sets(seed: int = 0):
    rng = np.random.default_rng(seed)
    universe = [f"G{i}" for i in range(1000)]
    sets = {f"set{k}": rng.choice(universe, 30, replace=False).tolist() for k in range(20)}
    planted = sets["set7"][:15]
    others = [g for g in rng.permutation(universe) if g not in sets["set7"]][:5]
    return universe, sets, planted + others


def test_enrichment_ranks_planted_set_first():
    universe, sets, markers = gene_sets()
    res = enrichment(markers, sets, universe=universe)
    assert list(res.columns) == [
        "set", "size", "overlap", "expected", "fold_enrichment", "pval", "pval_adj", "genes",
    ]
    top = res.iloc[0]
    assert top["set"] == "set7" and top["overlap"] >= 15 and top["pval_adj"] < 1e-10
    assert set(sets["set7"][:15]) <= set(top["genes"])
    assert top["pval"] == pytest.approx(stats.hypergeom.sf(top["overlap"] - 1, 1000, 30, 20))
    assert (res["pval_adj"].iloc[1:] > 0.05).all()
    np.testing.assert_allclose(res["pval_adj"], stats.false_discovery_control(res["pval"]))
    assert res.attrs["n_universe"] == 1000 and res.attrs["n_markers"] == 20


def test_enrichment_ties_of_underflowed_p_values_go_by_the_larger_overlap():
    """Sets whose p-values both underflow to 0 rank by overlap, the larger first."""
    universe = [f"G{i}" for i in range(10_000)]
    sets = {"small": universe[:1000], "large": universe[:1500]}
    res = enrichment(universe[:2000], sets, universe=universe)
    assert (res["pval"] == 0).all()
    assert res["set"].tolist() == ["large", "small"]


def test_read_gmt_and_enrichment_from_file(tmp_path):
    _, sets, markers = gene_sets()
    path = tmp_path / "sets.gmt"
    path.write_text("".join(f"{k}\tdescription {k}\t" + "\t".join(v) + "\n" for k, v in sets.items()) + "\n")
    assert read_gmt(path) == sets
    res = enrichment(markers, str(path), min_size=5, max_size=100)  # universe: annotated genes
    assert res.iloc[0]["set"] == "set7"
    assert res.attrs["n_universe"] == len(set().union(*map(set, sets.values())))

    bad = tmp_path / "bad.gmt"
    bad.write_text("only_a_name\n")
    with pytest.raises(ValueError, match="bad.gmt:1"):
        read_gmt(bad)
    bad.write_text("a\td\tx\na\td\ty\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_gmt(bad)
    with pytest.raises(ValueError, match="none of the markers"):
        enrichment(["nope"], sets)
    with pytest.raises(ValueError, match="list of gene names"):
        enrichment({"up": markers}, sets)


# ------------------------------------------------------------- robustness
def test_cluster_robustness_three_blobs():
    x, labels = blobs()
    res = cluster_robustness(x, n_init=3, seed=0)
    assert res.suggested_k == res.silhouette_k == res.bic_k == 3
    assert list(res.silhouette.index) == list(range(2, 9))
    assert list(res.bic.index) == [1, 2, 3, 4, 5]
    c = res.coassociation
    assert c.shape == (150, 150) and np.allclose(c, c.T) and np.allclose(np.diag(c), 1)
    same = labels[:, None] == labels[None, :]
    assert c[same].mean() > 0.6 and c[~same].mean() < 0.15
    # 3 methods x 7 k, spectral on 4 k-NN graphs: 7 + 7 + 4 * 7
    assert res.partitions.shape == (150, 42)
    assert pd.crosstab(res.labels, labels).gt(0).sum(1).eq(1).all()  # consensus = truth
    assert res.to_dict()["suggested_k"] == 3
    # a MuData: its joint embedding (tl.integrate's obsm), or a clear error; never np.asarray
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData({"rna": ad.AnnData(x), "atac": ad.AnnData(x.copy())})
    mdata.obsm["X_transmodal"] = np.vstack([x, x])[: mdata.n_obs]
    assert cluster_robustness(mdata, n_init=3, seed=0).suggested_k == 3
    with pytest.raises(ValueError, match="a MuData's latent is an obsm entry"):
        cluster_robustness(mdata, use_rep="X_other")
    with pytest.raises(ValueError, match=r"a MuData holds one matrix per modality; pass one of "
                       r"them, e.g. mdata\['rna'\]"):
        differential_expression(mdata, "group", "A", "B")


def test_cluster_robustness_suggests_one_cluster_without_structure():
    z = np.random.default_rng(0).normal(size=(400, 16))
    res = cluster_robustness(z, n_init=2, knn=(10, 50))
    assert res.suggested_k == 1 and res.bic_k == 1
    assert res.lifetimes.idxmax() == 1 and list(res.lifetimes.index) == list(range(1, 9))
    assert set(res.labels) == {0}


def test_cluster_robustness_subsample_fixed_k_and_anndata():
    x, _ = blobs()
    adata = ad.AnnData(np.zeros((len(x), 1)), obsm={"X_transmodal": x})
    res = cluster_robustness(adata, n_clusters=3, max_cells=60, knn=(10, 100), n_init=2)
    assert len(res.indices) == 60 and np.all(np.diff(res.indices) > 0)
    assert res.coassociation.shape == (60, 60)
    # knn = 100 >= 60 cells is skipped
    assert list(res.partitions.columns) == ["kmeans_k3", "gmm_k3", "spectral_knn10_k3"]
    assert res.suggested_k == 3


def test_cluster_robustness_does_not_depend_on_the_cells_order():
    """The same cells in another order (e.g. after a concat) give the same numbers, the
    per-cell results reordered with them, also when a subsample is analysed."""
    from scipy.cluster.hierarchy import cophenet
    from scipy.spatial.distance import squareform

    z = np.random.default_rng(1).normal(size=(240, 6))  # (no structure: initialisations matter)
    perm = np.random.default_rng(2).permutation(len(z))
    kw = {"n_init": 2, "knn": (10, 30), "k_range": range(2, 6)}
    for extra in ({}, {"max_cells": 100}):
        res, other = (cluster_robustness(x, **kw, **extra) for x in (z, z[perm]))
        assert (res.suggested_k, res.silhouette_k, res.bic_k) == (
            other.suggested_k, other.silhouette_k, other.bic_k)
        pd.testing.assert_frame_equal(res.silhouette, other.silhouette)
        pd.testing.assert_frame_equal(res.bic, other.bic)
        pd.testing.assert_series_equal(res.lifetimes, other.lifetimes)
        # the same cells, and each one's results
        cells = perm[other.indices]
        assert sorted(cells) == list(res.indices)
        at = np.searchsorted(res.indices, cells)  # (row of res of each row of other)
        np.testing.assert_array_equal(other.labels, res.labels[at])
        np.testing.assert_array_equal(other.coassociation, res.coassociation[np.ix_(at, at)])
        pd.testing.assert_frame_equal(
            other.partitions, res.partitions.iloc[at].reset_index(drop=True))
        np.testing.assert_allclose(
            squareform(cophenet(other.linkage)), squareform(cophenet(res.linkage))[np.ix_(at, at)])
    assert len(res.indices) == 100 and np.all(np.diff(res.indices) > 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ("kmeans", "dbscan")}, "methods"),
        ({"k_range": [1, 500]}, "k_range has no number"),
        ({"n_clusters": 1}, "n_clusters"),
        ({"use_rep": "X_pca"}, "obsm key 'X_pca'"),
    ],
)
def test_cluster_robustness_errors(kwargs, match):
    x, _ = blobs(n_per=10)
    data = ad.AnnData(np.zeros((len(x), 1)), obsm={"X_transmodal": x}) if "use_rep" in kwargs else x
    with pytest.raises(ValueError, match=match):
        cluster_robustness(data, n_init=1, **kwargs)


# ------------------------------------------------------------------- plots
def test_analysis_plots_return_axes():
    from matplotlib.axes import Axes

    x, y = roc_data(0)
    xt, yt = roc_data(1)
    assert isinstance(tm.pl.roc(translated_classifier_roc(x, y, xt, yt)), Axes)
    x3, y3 = roc_data(0, n_classes=3)
    assert isinstance(tm.pl.roc(translated_classifier_roc(x3, y3, x3, y3)), Axes)

    obs = differential_expression(de_data(seed=0), "group", "A", "B")
    pred = differential_expression(de_data(seed=1), "group", "A", "B")
    fig, axes = plt.subplots(1, 2)
    assert tm.pl.de_scatter(pred, obs, ax=axes[0]) is axes[0]
    assert tm.pl.marker_overlap(compare_differential(pred, obs), ax=axes[1]) is axes[1]
    assert isinstance(tm.pl.de_scatter(pred, obs, column="mean_diff", highlight=False), Axes)

    xb, _ = blobs(n_per=20)
    assert isinstance(tm.pl.coassociation(cluster_robustness(xb, n_init=1, knn=(10,))), Axes)


def test_lda_plot():
    from matplotlib.axes import Axes

    z, labels = blobs(dims=6)
    half = len(z) // 2
    rna = ad.AnnData(np.zeros((half, 1)), obsm={"X_transmodal": z[:half]})
    rna.obs["cl"] = labels[:half].astype(str)
    img = z[half:]
    ax = tm.pl.lda({"rna": rna, "image": img}, {"rna": "cl", "image": labels[half:]}, title="LDA")
    assert isinstance(ax, Axes) and ax.get_xlabel() == "LD1" and ax.get_ylabel() == "LD2"
    assert len(ax.collections) >= 2  # one scatter per modality

    two = labels < 2  # two clusters: one discriminant, modalities as rows
    mod = np.where(np.arange(len(z)) < half, "rna", "image")[two]
    ax = tm.pl.lda(z[two], labels[two], modality=mod)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["rna", "image"]
    with pytest.raises(ValueError, match="at least 2 clusters"):
        tm.pl.lda(z, np.zeros(len(z)))
    with pytest.raises(ValueError, match="no entry for modality 'image'"):
        tm.pl.lda({"rna": rna, "image": img}, {"rna": "cl"})


def test_latent_and_history_validate_inputs_before_drawing(tmp_path, monkeypatch):
    z, labels = blobs(dims=4)
    emb = {"rna": z[:60], "image": z[60:]}
    lab = {"rna": labels[:60], "image": labels[60:]}
    n_open = len(plt.get_fignums())
    cases = [
        (({"rna": z[:60], "image": z[60:]}, {"rna": labels[:60]}), "no entry for modality 'image'"),
        ((emb, {"rna": labels[:3], "image": labels[60:]}), r"labels\['rna'\]: 3 label"),
        ((emb, {**lab, "atac": labels}), r"\['atac'\] are not in embeddings"),
        (({"rna": z[:60], "image": z[60:, :3]},), "differ in latent dimensions"),
        (({"rna": np.full((5, 4), np.nan)},), r"embeddings\['rna'\] contains NaN"),
        (({"rna": z[:, :1]},), r"embeddings\['rna'\]: 1 latent dimension"),
        (({"rna": z[:, 0]},), r"embeddings\['rna'\] must be a 2-D array"),
        (({},), "embeddings: empty"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            tm.pl.latent(*args, path=tmp_path / "lat.png")
    with pytest.raises(ValueError, match="folder .* does not exist"):
        tm.pl.latent(emb, lab, path=tmp_path / "no_such_dir" / "lat.png")
    with pytest.raises(ValueError, match="unsupported file type 'xyz'"):
        tm.pl.latent(emb, path=tmp_path / "lat.xyz")

    history = pd.DataFrame({"train_loss": [3.0, 2.0], "val_loss": [3.5, 2.5]})
    with pytest.raises(ValueError, match="model_history: no 'train_\\*'"):
        tm.pl.history(pd.DataFrame(), path=tmp_path / "h.png")
    with pytest.raises(ValueError, match="model_history: no 'train_\\*'"):
        tm.pl.history(pd.DataFrame({"epoch": [1, 2]}), path=tmp_path / "h.png")
    with pytest.raises(ValueError, match="has the model been trained"):
        tm.pl.history(None)
    with pytest.raises(ValueError, match="folder .* does not exist"):
        tm.pl.history(history, path=tmp_path / "no_such_dir" / "h.png")
    assert not list(tmp_path.iterdir()) and len(plt.get_fignums()) == n_open

    tm.pl.history({"train_loss": [3.0, 2.0]}, path=tmp_path / "h.png")  # a mapping of columns
    tm.pl.latent(emb, lab, path=tmp_path / "lat.png")
    assert (tmp_path / "h.png").stat().st_size > 0 and (tmp_path / "lat.png").stat().st_size > 0
    assert len(plt.get_fignums()) == n_open

    # a failure while writing closes the figure too
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        tm.pl.latent(emb, lab, path=tmp_path / "lat2.png")
    with pytest.raises(OSError, match="disk full"):
        tm.pl.history(history, path=tmp_path / "h2.png")
    assert len(plt.get_fignums()) == n_open


# ------------------------------------------------- fourth round of input checks
def test_labels_series_are_aligned_by_index():
    adata = de_data()
    labels = adata.obs["group"]
    shuffled = labels.sample(frac=1, random_state=0)
    a = differential_expression(adata, labels, "A")
    b = differential_expression(adata, shuffled, "A")
    pd.testing.assert_frame_equal(a, b)
    foreign = labels.copy()
    foreign.index = [f"x{i}" for i in range(len(foreign))]
    with pytest.raises(ValueError, match="groupby is a Series whose index does not name every cell"):
        differential_expression(adata, foreign, "A")


def test_non_finite_values_are_refused():
    adata = de_data()
    adata.X[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"adata: 1 feature\(s\) hold NaN or infinite values \(e.g. 'g1'\)"):
        differential_expression(adata, "group", "A")
    x, y = roc_data(0)
    xt, yt = roc_data(1)
    xt = np.array(xt, dtype=float)
    xt[3, 0] = np.inf
    with pytest.raises(ValueError, match="translated holds NaN or infinite values"):
        translated_classifier_roc(x, y, xt, yt)


def test_marker_arguments_are_checked():
    adata = de_data()
    de = differential_expression(adata, "group", "A")
    for bad in (-1, 0, True, 2.5):
        with pytest.raises(ValueError, match="n_top must be an integer >= 1"):
            top_markers(de, n_top=bad)
    with pytest.raises(ValueError, match="n_top must be an integer >= 1"):
        differential_expression(adata, "group", "A", n_top=True)
    with pytest.raises(ValueError, match="alpha must lie in"):
        differential_expression(adata, "group", "A", alpha="0.1")
    dup = de.copy()
    dup.index = ["g0"] + list(dup.index[1:-1]) + ["g0"]
    with pytest.raises(ValueError, match="pred: feature names are not unique"):
        compare_differential(dup, de)
    # repeated names (raw gene symbols): one significant "g0" flagged both as markers
    repeated = adata.copy()
    repeated.var_names = ["g0"] + list(adata.var_names[1:-1]) + ["g0"]
    with pytest.raises(ValueError, match="adata: feature names are not unique .*'g0'.*make_unique"):
        differential_expression(repeated, "group", "A")
    with pytest.raises(ValueError, match="column must be"):
        compare_differential(de, de, column="direction")
    universe, sets, markers = gene_sets()
    with pytest.raises(ValueError, match="gene set 'S' must be a collection of gene names"):
        enrichment(markers, {"S": "G1"}, universe=universe)


def test_two_anchor_pairs_must_be_given_unambiguously():
    from transmodal.baselines._cca import _parse_pairs

    with pytest.raises(ValueError, match=r"shape \(2, 2\) can be read as two pairs"):
        _parse_pairs([(0, 5), (1, 7)], 10, 10)
    ix, iy = _parse_pairs((np.array([0, 1]), np.array([5, 7])), 10, 10)
    assert ix.tolist() == [0, 1] and iy.tolist() == [5, 7]
    ix, iy = _parse_pairs([(0, 5), (1, 7), (2, 9)], 10, 10)  # (k, 2): one pair per row
    assert ix.tolist() == [0, 1, 2] and iy.tolist() == [5, 7, 9]


def test_one_cell_groups_constant_ot_input_and_gmt_byte_order_mark(tmp_path):
    with pytest.raises(ValueError, match="n1 must be a group size >= 2"):
        welch_ttest([1.0], [0.0], 1, [0.0], [1.0], 5)
    with pytest.raises(ValueError, match="x: all 40 cells are identical"):
        tm.baselines.GromovWassersteinOT(n_neighbors=5).fit(np.ones((40, 3)), np.random.rand(40, 3))
    gmt = tmp_path / "bom.gmt"
    gmt.write_bytes("S1\tdesc\tG1\tG2\n".encode("utf-8-sig"))
    assert list(read_gmt(gmt)) == ["S1"]


def test_plot_file_replaced_in_one_step(tmp_path, monkeypatch):
    """A failing write leaves an existing figure as it was and no temporary file behind."""
    from matplotlib.figure import Figure

    z, labels = blobs(dims=4)
    target = tmp_path / "lat.png"
    target.write_bytes(b"old figure")

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"half")
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(Figure, "savefig", broken)
        with pytest.raises(OSError, match="disk full"):
            tm.pl.latent({"rna": z}, path=target)
    assert target.read_bytes() == b"old figure" and [p.name for p in tmp_path.iterdir()] == ["lat.png"]
    tm.pl.latent({"rna": z}, path=target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tm.pl.latent({"rna": z}, path=tmp_path / "no_suffix")  # matplotlib's default format
    assert (tmp_path / "no_suffix").read_bytes()[:4] == b"\x89PNG"


def test_analysis_arguments_are_checked_by_name():
    z = np.random.default_rng(0).normal(size=(60, 4))
    one = cluster_robustness(z, k_range=3, knn=10, gmm_components=2, max_cells=None, n_init=1)
    assert len(one.indices) == 60
    for kwargs, match in [
        ({"max_cells": 50.0}, "max_cells must be an integer"),
        ({"n_clusters": "2"}, "n_clusters must be an integer"),
        ({"n_init": 2.5}, "n_init must be an integer"),
        ({"k_range": [2.7, 3.2]}, "k_range values must be integers"),
        ({"knn": "10"}, "knn must be an integer or a list"),
    ]:
        with pytest.raises(ValueError, match=match):
            cluster_robustness(z, **kwargs)
    with pytest.raises(ValueError, match="v2: variances must be finite and >= 0"):
        welch_ttest(np.ones(2), np.ones(2), 5, np.zeros(2), np.array([0.5, -0.5]), 5)
    with pytest.raises(ValueError, match="block_bytes must be an integer"):
        differential_expression(de_data(), "group", "A", block_bytes=1e3)


def test_de_fold_change_of_large_log_means_and_boolean_groups():
    rng = np.random.default_rng(0)
    x = np.log1p(rng.poisson(5, size=(20, 4)).astype(float))
    x[:10, 0] += 1
    a = ad.AnnData(x)
    a.obs["g"] = ["x"] * 10 + ["y"] * 10
    m1, m2 = x[:10].mean(0), x[10:].mean(0)
    for pc in (1.0, 0.5, 2.0):  # the same numbers as the linear-scale formula
        de = tm.analysis.differential_expression(a, "g", group="x", reference="y", pseudocount=pc)
        expect = np.log2((np.expm1(m1) + pc) / (np.expm1(m2) + pc))
        np.testing.assert_allclose(de.loc[a.var_names, "log2fc"], expect, rtol=1e-10)
    counts = ad.AnnData(rng.poisson(900, size=(20, 3)).astype(float))  # raw counts
    counts.obs["g"] = a.obs["g"].to_numpy()
    with pytest.warns(UserWarning, match="pass log1p=False"):
        de = tm.analysis.differential_expression(counts, "g", group="x", reference="y")
    assert np.isfinite(de["log2fc"]).all()  # expm1(900) overflowed to NaN before
    # shallow counts (means far below 30): whole numbers, or a translation's units, warn too
    shallow = ad.AnnData(rng.poisson(2, size=(20, 3)).astype(np.float32))
    shallow.obs["g"] = a.obs["g"].to_numpy()
    with pytest.warns(UserWarning, match=r"look like linear values \(counts\): every value is a "
                      r"whole number"):
        tm.analysis.differential_expression(shallow, "g", group="x", reference="y")
    translated = ad.AnnData(rng.gamma(2.0, size=(20, 3)))
    translated.obs["g"] = a.obs["g"].to_numpy()
    translated.uns["transmodal"] = {"units": "counts"}
    with pytest.warns(UserWarning, match=r"the translation's values are counts"):
        tm.analysis.differential_expression(translated, "g", group="x", reference="y")
    translated.layers["lognorm"] = np.log1p(translated.X)  # the units describe X, not a layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.analysis.differential_expression(translated, "g", group="x", reference="y",
                                            layer="lognorm")
    translated.uns["transmodal"] = {"units": "probability", "linear": True}  # (rates too)
    with pytest.warns(UserWarning, match=r"linear values: the translation's values are "
                      r"probability .* pass log1p=False") as rec:
        tm.analysis.differential_expression(translated, "g", group="x", reference="y")
    assert "normalize_total" not in str(rec[0].message)  # (no library sizes to normalise)
    # a Gaussian target with log1p: inverted into linear values too; without log1p not
    gauss = "preprocessing inverted (log1p undone: linear values)"
    translated.uns["transmodal"] = {"units": gauss, "linear": True}
    with pytest.warns(UserWarning, match=r"log1p undone: linear values"):
        tm.analysis.differential_expression(translated, "g", group="x", reference="y")
    translated.uns["transmodal"] = {"units": "preprocessing inverted", "linear": False}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.analysis.differential_expression(translated, "g", group="x", reference="y")
    translated.uns["log1p"] = {"base": None}  # scanpy's log1p ran on it since: not counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tm.analysis.differential_expression(translated, "g", group="x", reference="y")
        tm.analysis.differential_expression(shallow, "g", group="x", reference="y", log1p=False)
        tm.analysis.differential_expression(a, "g", group="x", reference="y")
    a.obs["g"] = [1] * 10 + [2] * 10  # True == 1 in Python: not a label here
    with pytest.raises(ValueError, match=r"label\(s\) \[True\] not found"):
        tm.analysis.differential_expression(a, "g", group=True, reference=2)
