"""Modality specs, data validation, row sources, pairing, minibatches and preprocessing."""

from __future__ import annotations

import inspect
import json
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import transmodal as tm
from transmodal.data import (
    EpochBatches,
    MatrixSource,
    find_pairs,
    fit_preprocessing,
    setup_data,
)
from transmodal.data._source import all_integers, check_values, matrix_of
from transmodal.nn import InputTransform


# ------------------------------------------------------------------ Modality spec
@pytest.mark.parametrize(
    ("spec", "fields"),
    [
        (tm.Modality("no_such_likelihood"), ["likelihood", "no_such_likelihood"]),
        (tm.Modality("nb", layer="counts", obsm_key="X_pca"), ["layer", "obsm_key"]),
        (tm.Modality("nb", n_pca=0), ["n_pca"]),
        (tm.Modality("nb", n_pca=-3), ["n_pca"]),
        (tm.Modality("nb", n_pca=2.5), ["n_pca"]),
        (tm.Modality("nb", layer=""), ["layer"]),
        (tm.Modality("nb", hidden=()), ["hidden"]),
        (tm.Modality("nb", input_dropout=1.0), ["input_dropout"]),
        (tm.Modality("nb", scale="yes"), ["scale"]),
    ],
)
def test_modality_check_names_modality_and_field(spec, fields):
    with pytest.raises(ValueError) as info:
        spec.check("my_rna")
    msg = str(info.value)
    assert "my_rna" in msg
    for f in fields:
        assert f in msg


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"likelihood": "nb", "input_dropout": "0.1"}, "field 'input_dropout' must be a number in [0, 1), got '0.1'"),
        ({"likelihood": "nb", "hidden": 64}, "field 'hidden' must be a list of positive integers, got 64"),
        ({"likelihood": "nb", "hidden": "64"}, "field 'hidden' must be a list of positive integers, got '64'"),
        ({"likelihood": "nb", "hidden": [64.5]}, "field 'hidden' must be a list of positive integers"),
        ({"likelihood": "nb", "hidden": [True]}, "field 'hidden' must be a list of positive integers"),
        ({"likelihood": "nb", "n_pca": "5"}, "field 'n_pca' must be a positive integer, got '5'"),
        ({"likelihood": 3}, "field 'likelihood' must be a likelihood name"),
        ({"likelihood": "nb", "log1p": "yes"}, "field 'log1p' must be true or false, got 'yes'"),
    ],
)
def test_modality_field_types_are_checked(paired_data, spec, expected):
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, {"rna": spec, "atac": "poisson"})
    assert str(info.value).startswith("modality 'rna': " + expected)


def test_modality_numpy_booleans_are_plain_booleans():
    spec = tm.Modality("nb", normalize=np.False_, log1p=np.True_)
    spec.check("rna")
    assert spec.normalize is False and spec.log1p is True
    assert json.dumps(spec.to_dict())


def test_modality_hidden_accepts_integer_sequences():
    assert tm.Modality("nb", hidden=np.array([16, 8])).hidden == (16, 8)
    assert tm.Modality("nb", hidden=[np.int64(4)]).hidden == (4,)


def test_modality_valid_spec_passes_and_resolves_defaults():
    tm.Modality("nb", layer="counts", n_pca=5, hidden=[16, 8]).check("rna")
    counts = tm.Modality("nb").resolved()
    assert counts == {"normalize": True, "log1p": True, "scale": True, "n_pca": 0, "missing": False}
    gauss = tm.Modality("gaussian", n_pca=3).resolved()
    assert gauss == {"normalize": False, "log1p": False, "scale": True, "n_pca": 3, "missing": False}
    # rates with unmeasured entries: scaled unless told otherwise (unmeasured -> 0)
    rates = tm.Modality("continuous_bernoulli", missing=True)
    assert rates.resolved()["scale"] and not tm.Modality("continuous_bernoulli").resolved()["scale"]
    assert not tm.Modality("continuous_bernoulli", missing=True, scale=False).resolved()["scale"]
    explicit = tm.Modality("poisson", normalize=False, log1p=False, scale=False).resolved()
    assert explicit == {"normalize": False, "log1p": False, "scale": False, "n_pca": 0, "missing": False}


def test_modality_from_dict_unknown_key():
    with pytest.raises(ValueError) as info:
        tm.Modality.from_dict({"likelihood": "nb", "layr": "counts"}, name="rna")
    msg = str(info.value)
    assert "'rna'" in msg and "layr" in msg and "layr: did you mean 'layer'?" in msg
    with pytest.raises(ValueError, match=r"gene_likelihood: the likelihood is the field "
                       r"'likelihood' \(e.g. likelihood: nb\)"):  # (a mapping's, a config's keys)
        tm.Modality.from_dict({"gene_likelihood": "nb"}, name="rna")
    # the dataclass's own constructor: named, with the spelling, its fields unchanged
    with pytest.raises(TypeError, match=r"^Modality\(\): .*'layers'; did you mean layer=\?$"):
        tm.Modality("nb", layers="counts")
    assert tm.Modality("nb", layer="counts") == tm.Modality(likelihood="nb", layer="counts")
    assert list(inspect.signature(tm.Modality).parameters)[:2] == ["likelihood", "layer"]


def test_one_anndata_for_two_modalities_is_told_how():
    """totalVI's habit (RNA in X, proteins in obsm of one AnnData): the refusal says how to
    name the same AnnData once per modality."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(2, (30, 10)).astype(np.float32))
    with pytest.raises(ValueError, match=r"got AnnData \(one AnnData holding .*\{'rna': adata, "
                                         r"'protein': adata\} with Modality\(\.\.\., obsm_key="):
        tm.CrossModalAE(adata, {"rna": tm.Modality("nb"), "protein": tm.Modality("nb")})


def test_duplicate_obsm_columns_warn_as_duplicate_var_names_do():
    """A DataFrame in obsm names the features by its columns: repeated names warn (they
    match features and name translations), as repeated var_names do."""
    rng = np.random.default_rng(0)
    adata = ad.AnnData(rng.poisson(2, (40, 10)).astype(np.float32))
    adata.obs_names = [f"cell{i}" for i in range(40)]
    adata.obsm["prot"] = pd.DataFrame(rng.poisson(3, (40, 4)).astype(np.float32),
                                      index=adata.obs_names, columns=["CD3", "CD4", "CD3", "CD8"])
    specs = {"rna": tm.Modality("nb"), "prot": tm.Modality("nb", obsm_key="prot")}
    with pytest.warns(UserWarning, match=r"modality 'prot': the columns of obsm\['prot'\] are "
                                         r"not unique \(e.g. 'CD3'\).*make_index_unique"):
        tm.CrossModalAE({"rna": adata, "prot": adata}, specs, n_latent=4, hidden=(8,),
                        anchor_fraction=1.0)
    adata.obsm["prot"].columns = ["CD3", "CD4", "CD5", "CD8"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tm.CrossModalAE({"rna": adata, "prot": adata}, specs, n_latent=4, hidden=(8,),
                        anchor_fraction=1.0)


def test_modality_dict_round_trip():
    spec = tm.Modality("zinb", layer="counts", n_pca=4, hidden=(32, 16), input_dropout=0.2)
    d = spec.to_dict()
    assert d["hidden"] == [32, 16]
    assert tm.Modality.from_dict(d, name="x") == spec
    assert tm.Modality.from_dict("bernoulli", name="x") == tm.Modality("bernoulli")
    with pytest.raises(ValueError, match="'x'"):
        tm.Modality.from_dict(3, name="x")


def test_setup_data_converts_dict_and_string_specs(paired_data):
    mods, cats = setup_data(paired_data, {"rna": {"likelihood": "nb", "layer": "counts"}, "atac": "poisson"})
    assert mods["rna"].spec == tm.Modality("nb", layer="counts")
    assert mods["atac"].spec == tm.Modality("poisson")
    assert cats is None
    assert list(mods) == ["rna", "atac"]


def test_setup_data_spec_error_names_modality(paired_data):
    with pytest.raises(ValueError, match="'atac'.*likelihood"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": tm.Modality("nope")})
    with pytest.raises(ValueError, match="'atac'.*unknown field"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": {"likelihood": "nb", "foo": 1}})


# ------------------------------------------------------------------ setup_data errors
def test_missing_layer(paired_data, specs):
    specs["rna"] = tm.Modality("nb", layer="raw_counts")
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs)
    msg = str(info.value)
    assert "'rna'" in msg and "raw_counts" in msg


def test_missing_obsm_key(three_mod_data, specs3):
    specs3["prot"] = tm.Modality("gaussian", obsm_key="X_adt")
    with pytest.raises(ValueError) as info:
        setup_data(three_mod_data, specs3)
    msg = str(info.value)
    assert "'prot'" in msg and "X_adt" in msg and "X_prot" in msg


def test_layer_is_used_instead_of_X(paired_data, specs):
    # X holds normalised (non-integer) values, the layer the counts
    rna = paired_data["rna"]
    rna.X = sp.csr_matrix(rna.layers["counts"].multiply(1.0 / 7.0))
    mods, _ = setup_data(paired_data, specs)
    np.testing.assert_array_equal(
        mods["rna"].source.rows(np.arange(5)), rna.layers["counts"][:5].toarray()
    )
    with pytest.raises(ValueError, match="non-integer") as info:
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": specs["atac"]})
    assert ".raw" not in str(info.value)  # (no .raw to point at)
    # the layers it holds are named, with the spec that reads one
    assert "the AnnData holds layers ['counts']: if one of them has the raw counts, read it " \
        "with Modality('nb', layer='counts')" in str(info.value)
    # SingleCellExperiment's names (zellkonverter): logcounts is no count layer to read
    rna.layers["logcounts"] = rna.X.copy()
    layers = {k: rna.layers.pop(k) for k in list(rna.layers)}
    for key in ("logcounts", "counts"):
        rna.layers[key] = layers[key]
    with pytest.raises(ValueError, match=r"layers \['counts', 'logcounts'\]: if one of them has "
                       r"the raw counts, read it with Modality\('nb', layer='counts'\)"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": specs["atac"]})
    del rna.layers["logcounts"]
    rna.layers["counts_unnormalized"] = rna.layers.pop("counts")  # ("un-normalised" counts)
    with pytest.raises(ValueError, match=r"layer='counts_unnormalized'\)"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": specs["atac"]})
    rna.layers["counts"] = rna.layers.pop("counts_unnormalized")
    # scanpy keeps counts in .raw: the error says it is not read and how to give them
    # (where no layer is named like counts, which it names instead)
    rna.raw = ad.AnnData(rna.layers["counts"], obs=rna.obs, var=rna.var)
    with pytest.raises(ValueError, match=r"layer='counts'\)$"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": specs["atac"]})
    rna.layers["lognorm"] = rna.layers.pop("counts")
    with pytest.raises(ValueError, match=r"layers \['lognorm'\]: .*layer=NAME\); \.raw is not "
                       r"read: .*adata\.raw\[:, adata\.var_names\]"):
        setup_data(paired_data, {"rna": tm.Modality("nb"), "atac": specs["atac"]})


def test_duplicate_sparse_entries_are_checked_as_their_sum(paired_data, specs):
    """A CSR matrix may hold an entry twice (scipy sums them): 0.5 + 0.5 is a count of 1."""
    counts = sp.csr_matrix(paired_data["rna"].layers["counts"])
    dup = sp.csr_matrix(
        (np.repeat(counts.data / 2, 2), np.repeat(counts.indices, 2), 2 * counts.indptr),
        shape=counts.shape,
    )
    assert not dup.has_canonical_format and (dup != counts).nnz == 0
    paired_data["rna"].layers["counts"] = dup
    mods, _ = setup_data(paired_data, specs)
    np.testing.assert_array_equal(mods["rna"].source.rows(np.arange(5)), counts[:5].toarray())
    dup.data[0] = 0.25  # now an entry sums to a fraction
    with pytest.raises(ValueError, match="non-integer"):
        setup_data(paired_data, specs)


@pytest.mark.parametrize("sparse", [False, True])
def test_negative_values_rejected_for_nb(paired_data, specs, sparse):
    x = paired_data["rna"].layers["counts"].toarray()
    x[3, 5] = -1.0
    paired_data["rna"].layers["counts"] = sp.csr_matrix(x) if sparse else x
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs)
    msg = str(info.value)
    assert "negative" in msg and "'rna'" in msg and "counts" in msg
    # the likelihood's advice, not normalize / log1p's (which would lead to a second error)
    assert "'nb' likelihood needs raw counts" in msg and "set it to False" not in msg


@pytest.mark.parametrize("sparse", [False, True])
def test_non_integer_rejected_for_nb(paired_data, specs, sparse):
    x = paired_data["rna"].layers["counts"].toarray()
    x[7, 2] = 2.5
    paired_data["rna"].layers["counts"] = sp.csr_matrix(x) if sparse else x
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs)
    assert "non-integer" in str(info.value) and "'rna'" in str(info.value)


def test_non_integer_and_negative_allowed_for_gaussian(paired_data):
    paired_data["atac"].X = paired_data["atac"].X - 0.5
    mods, _ = setup_data(paired_data, {"rna": tm.Modality("nb", layer="counts"), "atac": "gaussian"})
    assert mods["atac"].source.rows(np.array([0])).min() < 0


def test_gaussian_preprocessing_that_needs_nonnegative_values(paired_data):
    paired_data["atac"].X = paired_data["atac"].X - 0.5
    rna = tm.Modality("nb", layer="counts")
    with pytest.raises(ValueError, match=r"'atac'.*negative values.*log1p=True needs non-negative"):
        setup_data(paired_data, {"rna": rna, "atac": tm.Modality("gaussian", log1p=True)})


def test_values_beyond_float32_rejected(paired_data):
    paired_data["atac"].X = paired_data["atac"].X.astype(np.float64)
    paired_data["atac"].X[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"'atac'.*beyond float32"):
        setup_data(paired_data, {"rna": tm.Modality("nb", layer="counts"), "atac": "gaussian"})


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_rejected(paired_data, likelihood, bad):
    paired_data["atac"].X[10, 3] = bad
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, {"rna": tm.Modality("nb", layer="counts"), "atac": likelihood})
    assert ("NaN" if np.isnan(bad) else "infinite") in str(info.value)
    assert "'atac'" in str(info.value)
    # NaN as unmeasured is suggested where the likelihood can skip entries
    assert ("missing=True" in str(info.value)) == (np.isnan(bad) and likelihood == "gaussian")


def test_nan_in_sparse_rejected(paired_data, specs):
    x = paired_data["rna"].layers["counts"].toarray()
    x[0, 0] = np.nan
    paired_data["rna"].layers["counts"] = sp.csr_matrix(x)
    with pytest.raises(ValueError, match="NaN"):
        setup_data(paired_data, specs)


def test_check_data_false_skips_value_scan(paired_data, specs):
    paired_data["atac"].X[0, 0] = -4.0
    mods, _ = setup_data(paired_data, specs, check_data=False)
    assert mods["atac"].source.rows(np.array([0]))[0, 0] == -4.0


def test_negative_values_rejected_for_bernoulli(paired_data, specs):
    paired_data["atac"].X[0, 0] = -1.0
    with pytest.raises(ValueError, match="negative"):
        setup_data(paired_data, {"rna": specs["rna"], "atac": "bernoulli"})


@pytest.mark.parametrize("sparse", [False, True])
def test_fractions_warn_for_bernoulli(paired_data, specs, sparse):
    counts = np.asarray(paired_data["atac"].X, dtype=np.float32)
    x = (paired_data["atac"].X > 0).astype(np.float32)
    x[:3, :2] = 0.25  # e.g. methylation levels: bernoulli would read them as 1
    paired_data["atac"].X = sp.csr_matrix(x) if sparse else x
    with pytest.warns(
        UserWarning,
        match=r"'atac': X holds 6 value\(s\) strictly between 0 and 1; the 'bernoulli' "
        r"likelihood models whether a value is > 0, so each of them counts as 1.*"
        r"'continuous_bernoulli', which models values in \[0, 1\]",
    ):
        setup_data(paired_data, {"rna": specs["rna"], "atac": "bernoulli"})
    # fractions beside non-integers above 1: normalised values (TF-IDF), the counts advised
    paired_data["atac"].layers["counts"] = counts
    tfidf = counts / np.maximum(counts.sum(1, keepdims=True), 1) * np.log1p(
        len(counts) / np.maximum((counts > 0).sum(0), 1)) * 10
    paired_data["atac"].X = sp.csr_matrix(tfidf) if sparse else tfidf
    assert ((tfidf > 0) & (tfidf < 1)).any() and (tfidf > 1).any()
    told = (r"'atac': X holds non-integer values above 1: normalised values \(e.g. TF-IDF.*"
            r"give the modality its counts; the AnnData holds layers \['counts'\]: .*"
            r"Modality\('bernoulli', layer='counts'\)")
    with pytest.warns(UserWarning, match=told) as record:
        setup_data(paired_data, {"rna": specs["rna"], "atac": "bernoulli"})
    assert not [w for w in record if "strictly between" in str(w.message)]
    # none below 1 (e.g. counts scaled up to 1e4 per cell): the same
    scaled = counts / np.maximum(counts.sum(1, keepdims=True), 1) * 1e4
    paired_data["atac"].X = sp.csr_matrix(scaled) if sparse else scaled
    with pytest.warns(UserWarning, match=told):
        setup_data(paired_data, {"rna": specs["rna"], "atac": "bernoulli"})
    # cells given to a trained model (whose Modality is fixed): put counts where it reads
    from transmodal.data._source import check_values, matrix_of
    spec = tm.Modality("bernoulli")
    with pytest.warns(UserWarning, match=r"normalised values .*but the encoder reads the values "
                      r"themselves: the model reads these cells' X, as in training: put their "
                      r"values there, in the training data's units$"):
        check_values(matrix_of(paired_data["atac"], spec, "atac")[0], spec, new_cells=True)
    with warnings.catch_warnings():  # (the advice, followed: silent)
        warnings.simplefilter("error")
        setup_data(paired_data, {"rna": specs["rna"],
                                 "atac": tm.Modality("bernoulli", layer="counts")})


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("binary", [True, False])
def test_binary_values_and_counts_are_silent_for_bernoulli(paired_data, specs, sparse, binary):
    x = paired_data["atac"].X  # counts up to ~10: binarised on purpose
    assert x.max() > 1
    x = (x > 0).astype(np.float32) if binary else x
    paired_data["atac"].X = sp.csr_matrix(x) if sparse else x
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_data(paired_data, {"rna": specs["rna"], "atac": "bernoulli"})


def test_float64_features_below_float32_resolution_warn(paired_data, specs):
    rng = np.random.default_rng(0)
    x = paired_data["atac"].X.astype(np.float64)
    x[:, 3] = 1e7 + 0.01 * rng.normal(size=len(x))  # one float32 value: all variation lost
    x[:, 4] = 1e7  # constant: nothing to lose
    paired_data["atac"].X = x
    assert len(np.unique(x[:, 3].astype(np.float32))) == 1
    with pytest.warns(
        UserWarning,
        match=r"'atac': X: 1 of 25 feature\(s\) \(columns \[3\]\) vary by less than float32's "
        r"resolution.*mean 1e\+07 in column 3.*Subtract each feature's mean",
    ) as record:
        model = tm.CrossModalAE(paired_data, {"rna": specs["rna"], "atac": "gaussian"})
    assert sum("float32's resolution" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():  # the same source is not warned about twice
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*untrained model")
        model.get_latent_representation("atac")
    # centred in float64, the same features keep their variation: no warning
    paired_data["atac"].X = x - x.mean(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_data(paired_data, {"rna": specs["rna"], "atac": "gaussian"})


def test_duplicated_obs_names(paired_data, specs):
    names = list(paired_data["atac"].obs_names)
    names[5] = names[4]
    paired_data["atac"].obs_names = names
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs)
    msg = str(info.value)
    assert "'atac'" in msg and "unique" in msg and names[4] in msg


def test_duplicated_var_names_warn(paired_data, specs):
    names = list(paired_data["atac"].var_names)
    names[3] = names[2]
    paired_data["atac"].var_names = names
    with pytest.warns(UserWarning, match=f"'atac': var_names are not unique \\(e.g. '{names[2]}'\\)"):
        setup_data(paired_data, specs)


def test_unused_feature_selection_warns(paired_data, specs):
    """scanpy's var['highly_variable'] selects nothing (the model reads every feature): a
    new model says so, once per modality that marks a strict subset; a trained model's
    data, an all-True column or a column of another length stay silent."""
    n = paired_data["rna"].n_vars
    paired_data["rna"].var["highly_variable"] = np.arange(n) < 10
    with pytest.warns(UserWarning, match=rf"'rna': var\['highly_variable'\] marks 10 of {n} "
                      r"features, but the model reads every feature.*adata\[:, adata\.var"):
        mods, _ = setup_data(paired_data, specs)
    assert mods["rna"].source.n_vars == n
    # a categorical of booleans (as an .h5ad file may give the column back) and nullable
    # booleans are counted alike (the categorical failed to sum: no model could be built)
    for column in (pd.Categorical(np.arange(n) < 10),
                   pd.array(np.where(np.arange(n) < 12, True, None), dtype="boolean")):
        paired_data["rna"].var["highly_variable"] = column
        with pytest.warns(UserWarning, match=r"marks 1[02] of"):
            setup_data(paired_data, specs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_data(paired_data, specs, trained=True)
        paired_data["rna"].var["highly_variable"] = True
        setup_data(paired_data, specs)


def test_labels_key_missing_in_obs(paired_data, specs):
    del paired_data["atac"].obs["label"]  # the modality labels are transferred to
    mods, cats = setup_data(paired_data, specs, labels_key="label")
    assert cats == ["type0", "type1", "type2"] and (mods["atac"].labels == -1).all()
    del paired_data["rna"].obs["label"]
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs, labels_key="label")
    msg = str(info.value)
    assert "not an obs column of any modality" in msg and "'label'" in msg


def test_labels_codes_with_missing_values(paired_data, specs):
    paired_data["atac"].obs.loc[paired_data["atac"].obs_names[:10], "label"] = np.nan
    mods, cats = setup_data(paired_data, specs, labels_key="label")
    assert cats == ["type0", "type1", "type2"]
    assert (mods["atac"].labels[:10] == -1).all()
    assert (mods["atac"].labels[10:] >= 0).all()
    expected = paired_data["rna"].obs["label"].cat.codes.to_numpy()
    np.testing.assert_array_equal(mods["rna"].labels, expected)


def test_numeric_labels_with_a_missing_value_share_classes(paired_data, specs):
    codes = paired_data["rna"].obs["label"].cat.codes.to_numpy()
    paired_data["atac"].obs["num"] = codes  # integers
    rna_num = codes.astype(float)
    rna_num[0] = np.nan  # one missing value makes the column float
    paired_data["rna"].obs["num"] = rna_num
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the classes are shared: no warning
        mods, cats = setup_data(paired_data, specs, labels_key="num")
    assert cats == ["0", "1", "2"]
    assert mods["rna"].labels[0] == -1
    np.testing.assert_array_equal(mods["rna"].labels[1:], codes[1:])
    np.testing.assert_array_equal(mods["atac"].labels, codes)


def test_string_nan_and_unused_categories_are_not_classes(paired_data, specs):
    obs = paired_data["rna"].obs
    obs["label"] = obs["label"].cat.add_categories(["unused"])
    atac = paired_data["atac"].obs
    atac["label"] = atac["label"].astype(str)
    atac.loc[atac.index[:5], "label"] = "nan"
    mods, cats = setup_data(paired_data, specs, labels_key="label")
    assert cats == ["type0", "type1", "type2"]
    assert (mods["atac"].labels[:5] == -1).all() and (mods["atac"].labels[5:] >= 0).all()


def test_numeric_classes_sort_by_value_and_none_strings_are_missing(paired_data, specs):
    values = np.array([2, 10, 1] * 50)
    paired_data["rna"].obs["num"] = values
    atac = values.astype(object)
    atac[:4] = ["None", "", "<NA>", None]  # what astype(str) and empty cells leave
    paired_data["atac"].obs["num"] = atac
    mods, cats = setup_data(paired_data, specs, labels_key="num")
    assert cats == ["1", "2", "10"]
    assert (mods["atac"].labels[:4] == -1).all()
    np.testing.assert_array_equal(mods["rna"].labels[:3], [1, 2, 0])


def test_class_named_like_unlabelled_cells_warns(paired_data, specs):
    """scANVI's "Unknown" marks unlabelled cells; here it would be a class: warned (as is
    "NA" left a string)."""
    atac = paired_data["atac"].obs
    atac["label"] = atac["label"].astype(str)
    atac.loc[atac.index[:5], "label"] = "Unknown"
    atac.loc[atac.index[5:7], "label"] = "NA"
    with pytest.warns(UserWarning, match=r"'label': 'NA', 'Unknown' are trained as classes.*"
                      r"set those to NaN first \(obs\[key\] = obs\[key\]\.mask\(obs\[key\]"
                      r"\.isin\(\['NA', 'Unknown'\]\)\)\)"):
        _, cats = setup_data(paired_data, specs, labels_key="label")
    assert {"NA", "Unknown"} <= set(cats)
    with warnings.catch_warnings():  # a trained model's categories: not again
        warnings.simplefilter("error")
        setup_data(paired_data, specs, labels_key="label", label_categories=cats)


def test_labels_sharing_no_class_warn(paired_data, specs):
    atac = paired_data["atac"].obs
    atac["label"] = "x_" + atac["label"].astype(str)
    with pytest.warns(UserWarning, match="'label'.*share no label class.*'rna'.*'atac'"):
        setup_data(paired_data, specs, labels_key="label")


def test_classes_differing_in_case_or_whitespace_warn(paired_data, specs):
    """"B cell" and "B cell " are separate classes: warned, naming where each is used, also
    while other classes are shared (the no-shared-class warning then stays silent)."""
    rna, atac = paired_data["rna"].obs, paired_data["atac"].obs
    rna["label"] = rna["label"].astype(str).replace({"type0": "B cell"})
    atac["label"] = atac["label"].astype(str).replace({"type0": "B cell ", "type1": "TYPE1"})
    with pytest.warns(UserWarning, match=r"differ only in case or whitespace.*"
                      r"'B cell' \('rna'\) / 'B cell ' \('atac'\); 'TYPE1' \('atac'\) / "
                      r"'type1' \('rna'\)") as rec:
        setup_data(paired_data, specs, labels_key="label")
    assert not any("share no label class" in str(w.message) for w in rec)
    atac["label"] = atac["label"].replace({"B cell ": "B cell", "TYPE1": "type1"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_data(paired_data, specs, labels_key="label")


def test_unknown_label_against_known_categories(paired_data, specs):
    with pytest.raises(ValueError, match="not one of"):
        setup_data(paired_data, specs, labels_key="label", label_categories=["type0", "type1"])


def test_fewer_than_two_modalities(paired_data, specs):
    with pytest.raises(ValueError, match="at least two"):
        setup_data(paired_data, {"rna": specs["rna"]})
    with pytest.raises(ValueError):
        setup_data(paired_data, {})


def test_spec_without_data(paired_data, specs):
    specs["prot"] = tm.Modality("gaussian")
    with pytest.raises(ValueError) as info:
        setup_data(paired_data, specs)
    assert "'prot'" in str(info.value) and "no data" in str(info.value)


def test_bad_data_container(specs):
    with pytest.raises(ValueError, match="dict of AnnData"):
        setup_data([1, 2], specs)
    with pytest.raises(ValueError, match="'atac'.*AnnData"):
        setup_data({"rna": ad.AnnData(np.ones((3, 2))), "atac": np.ones((3, 2))}, {"rna": "gaussian", "atac": "gaussian"})
    # a MuData where one modality's cells are read (a model's translate(mdata, ...))
    import mudata

    from transmodal.data._source import matrix_of
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = mudata.MuData({"rna": ad.AnnData(np.ones((3, 2)))})
    with pytest.raises(ValueError, match=r"modality 'rna': expected an AnnData, got MuData \(a "
                       r"MuData: give its modality, mdata\['rna'\]\)"):
        matrix_of(mdata, tm.Modality("gaussian"), "rna")
    mdata.var["feature_types"] = ["Gene Expression", "Peaks"]  # (not one matrix read twice)
    with pytest.raises(ValueError, match=r"expected an AnnData, got MuData \(a MuData: give "):
        setup_data({"rna": mdata, "atac": mdata}, {"rna": "gaussian", "atac": "gaussian"})


def test_a_combined_10x_matrix_is_split_into_its_feature_types(paired_data):
    """10x's Multiome matrix read as one AnnData (var['feature_types'] 'Gene Expression' and
    'Peaks'): given alone, given for both modalities, or as one modality, the advice is
    mudata.MuData(adata), which splits it; a modality read twice is refused."""
    import mudata

    rna, atac = paired_data["rna"], paired_data["atac"]
    both = ad.concat([rna, atac], axis=1, merge="first")
    both.var["feature_types"] = ["Gene Expression"] * rna.n_vars + ["Peaks"] * atac.n_vars
    specs = {"rna": "nb", "atac": "poisson"}
    split = r"var\['feature_types'\] holds 'Gene Expression', 'Peaks'.*mudata.MuData\(adata\)"
    with pytest.raises(ValueError, match=r"data must be a dict of AnnData .* got AnnData "
                       r"\(its " + split):
        setup_data(both, specs)
    with pytest.raises(ValueError, match=r"modalities 'rna' and 'atac' read the same matrix of "
                       r"the same AnnData; .*" + split):
        setup_data({"rna": both, "atac": both}, specs)
    with pytest.warns(UserWarning, match=r"modality 'rna': the model reads every feature of "
                      r"its matrix as one modality \(its " + split):
        setup_data({"rna": both, "atac": atac}, specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # (mudata 0.3's notice)
        mdata = mudata.MuData(both)  # the advice: one modality per type
    assert sorted(mdata.mod) == ["atac", "rna"] and mdata["rna"].n_vars == rna.n_vars
    mods, _ = setup_data(mdata, specs)
    assert mods["atac"].source.n_vars == atac.n_vars
    # one type and missing values (an outer concat): nothing to split
    rna.var["feature_types"] = ["Gene Expression"] * (rna.n_vars - 1) + [np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        setup_data({"rna": rna, "atac": atac}, specs)
    # one AnnData read twice, from different places, is no repetition
    rna.layers["counts"] = rna.X.copy()
    setup_data({"rna": rna, "atac": rna}, {"rna": "nb", "atac": tm.Modality("nb", layer="counts")})


def test_n_pca_not_smaller_than_features(paired_data, specs):
    specs["atac"] = tm.Modality("poisson", n_pca=25)
    with pytest.raises(ValueError, match="'atac'.*n_pca"):
        setup_data(paired_data, specs)


def test_obsm_modality_feature_names(three_mod_data, specs3):
    mods, _ = setup_data(three_mod_data, specs3)
    assert list(mods["prot"].var_names) == [f"X_prot_{i}" for i in range(10)]
    np.testing.assert_array_equal(
        mods["prot"].source.rows(np.arange(150)), three_mod_data["prot"].obsm["X_prot"]
    )


# ------------------------------------------------------------------ MatrixSource
@pytest.fixture
def dense_and_sparse():
    rng = np.random.default_rng(3)
    x = rng.poisson(0.7, size=(30, 12)).astype(np.float32)
    return x, sp.csr_matrix(x)


IDX_CASES = [
    np.arange(30),
    np.array([29, 3, 17, 3, 0, 3, 29, 5]),  # unsorted with duplicates
    np.array([7]),
    np.array([5, 4, 3, 2, 1, 0]),
]


@pytest.mark.parametrize("idx", IDX_CASES)
def test_matrix_source_dense_equals_sparse(dense_and_sparse, idx):
    x, xs = dense_and_sparse
    d = MatrixSource(x, name="m", where="X").rows(idx)
    s = MatrixSource(xs, name="m", where="X").rows(idx)
    assert d.dtype == np.float32 and s.dtype == np.float32
    np.testing.assert_array_equal(d, x[idx])
    np.testing.assert_array_equal(s, x[idx])


@pytest.mark.parametrize("fmt", ["csc", "coo", "csr_array"])
def test_matrix_source_other_sparse_formats(dense_and_sparse, fmt):
    x, _ = dense_and_sparse
    m = sp.csr_array(x) if fmt == "csr_array" else getattr(sp, f"{fmt}_matrix")(x)
    src = MatrixSource(m, name="m", where="X")
    assert src.sparse and src.shape == (30, 12)
    idx = IDX_CASES[1]
    np.testing.assert_array_equal(src.rows(idx), x[idx])


def test_matrix_source_csr_with_unsorted_and_duplicate_column_indices():
    # row 0: columns 3, 1, 3 (duplicate entries are summed), row 1: columns 2, 0 (unsorted)
    data = np.array([1.0, 2.0, 4.0, 5.0, 6.0], dtype=np.float32)
    indices = np.array([3, 1, 3, 2, 0])
    indptr = np.array([0, 3, 5, 5])
    m = sp.csr_matrix((data, indices, indptr), shape=(3, 4))
    assert not m.has_canonical_format
    dense = np.array([[0, 2, 0, 5], [6, 0, 5, 0], [0, 0, 0, 0]], dtype=np.float32)
    src = MatrixSource(m, name="m", where="X")
    idx = np.array([2, 0, 1, 0])
    np.testing.assert_array_equal(src.rows(idx), dense[idx])
    np.testing.assert_array_equal(MatrixSource(dense, name="m", where="X").rows(idx), dense[idx])


def test_matrix_source_chunks_and_shape_errors(dense_and_sparse):
    x, xs = dense_and_sparse
    src = MatrixSource(xs, name="m", where="X")
    idx = np.arange(3, 30, 2)
    chunks = list(src.chunks(idx, chunk_size=4))
    assert [c.shape[0] for c in chunks] == [4, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(chunks), x[idx])
    with pytest.raises(ValueError, match="'bad'.*2-D"):
        MatrixSource(np.zeros(5), name="bad", where="X")
    # wide matrices come in blocks of at most CHUNK_VALUES numbers, whatever chunk_size says
    wide = MatrixSource(sp.csr_matrix((10, 3 * 2**20), dtype=np.float32), name="w", where="X")
    assert wide.chunk_rows(4096) == 5 and [len(c) for c in wide.chunks(chunk_size=4096)] == [5, 5]


def test_matrix_source_refuses_non_numbers_and_backed_csc(tmp_path, paired_data):
    for values, dtype in [(np.ones((3, 2)) + 1j, "complex128"), (np.full((3, 2), "a"), "<U1"),
                          (np.ones((3, 2), dtype=object), "object")]:
        with pytest.raises(ValueError, match=f"'m': X holds {dtype} values; expected real"):
            MatrixSource(values, name="m", where="X")
    rna = paired_data["rna"]
    rna.X = sp.csc_matrix(rna.X)
    rna.write_h5ad(tmp_path / "csc.h5ad")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(ValueError, match="'rna': X is a CSC matrix read from a file.*as CSR"):
        tm.CrossModalAE({"rna": backed, "atac": paired_data["atac"]},
                        {"rna": tm.Modality("nb"), "atac": tm.Modality("poisson")})


def test_obsm_dataframe_columns_must_be_numbers(paired_data):
    rna, n = paired_data["rna"], paired_data["rna"].n_obs
    specs = {"rna": tm.Modality("gaussian", obsm_key="prot"), "atac": tm.Modality("poisson")}
    for column, message in [
        (pd.Categorical(["a", "b"] * (n // 2)), r"column\(s\) that are not numbers: \['C1'\]"),
        (np.array(["x"] * n, dtype=object), r"not numbers: \['C1'\] \(dtypes \['object'\]\)"),
        (pd.array([1, None] * (n // 2), dtype="Int64"), r"obsm\['prot'\] holds NaN"),
    ]:
        rna.obsm["prot"] = pd.DataFrame({"C1": column, "C2": np.arange(n, dtype=float)},
                                        index=rna.obs_names)
        with pytest.raises(ValueError, match="modality 'rna': obsm\\['prot'\\].*") as info:
            tm.CrossModalAE(paired_data, specs)
        assert info.match(message)
    # nullable integers without missing values and booleans mixed with floats are numbers
    rna.obsm["prot"] = pd.DataFrame({"C1": pd.array([1, 2] * (n // 2), dtype="Int64"),
                                     "C2": [True, False] * (n // 2)}, index=rna.obs_names)
    model = tm.CrossModalAE(paired_data, specs, n_latent=4, hidden=(8,))
    assert model.mods["rna"].source.rows(np.arange(2)).tolist() == [[1.0, 1.0], [2.0, 0.0]]


# ------------------------------------------------------------------ pairing
def test_find_pairs_full(paired_data, specs):
    mods, _ = setup_data(paired_data, specs)
    ia, ib = find_pairs(mods["rna"], mods["atac"])
    np.testing.assert_array_equal(ia, np.arange(150))
    np.testing.assert_array_equal(ib, np.arange(150))


def test_find_pairs_partial_overlap(half_paired_data, specs):
    # shuffle atac's rows so that pairs are not aligned by position
    atac = half_paired_data["atac"]
    perm = np.random.default_rng(0).permutation(atac.n_obs)
    half_paired_data["atac"] = atac[perm].copy()
    mods, _ = setup_data(half_paired_data, specs)
    ia, ib = find_pairs(mods["rna"], mods["atac"])
    assert len(ia) == len(ib) == 75
    rna_names = np.asarray(half_paired_data["rna"].obs_names)
    atac_names = np.asarray(half_paired_data["atac"].obs_names)
    np.testing.assert_array_equal(rna_names[ia], atac_names[ib])
    assert set(rna_names[ia]) == set(rna_names) & set(atac_names)
    # reversed direction gives the same pairs
    jb, ja = find_pairs(mods["atac"], mods["rna"])
    assert set(zip(ia, ib)) == set(zip(ja, jb))


def test_find_pairs_no_overlap(paired_data, specs):
    paired_data["atac"].obs_names = [f"other{i}" for i in range(150)]
    mods, _ = setup_data(paired_data, specs)
    ia, ib = find_pairs(mods["rna"], mods["atac"])
    assert len(ia) == 0 and len(ib) == 0


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("pairing", ["full", "half"])
def test_mudata_gives_same_pairs_as_dict(pairing, specs):
    import mudata

    from conftest import make_data

    data = make_data(pairing=pairing)
    mods_d, _ = setup_data(data, specs)
    mdata = mudata.MuData({"rna": data["rna"], "atac": data["atac"]})
    mods_m, _ = setup_data(mdata, specs)
    pd_ = find_pairs(mods_d["rna"], mods_d["atac"])
    pm = find_pairs(mods_m["rna"], mods_m["atac"])
    assert len(pd_[0]) == (150 if pairing == "full" else 75)
    np.testing.assert_array_equal(pd_[0], pm[0])
    np.testing.assert_array_equal(pd_[1], pm[1])
    np.testing.assert_array_equal(
        mods_d["rna"].source.rows(np.arange(150)), mods_m["rna"].source.rows(np.arange(150))
    )


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("change", ["subset", "reorder", "rename"])
def test_mudata_stale_obsmap_refused(change, specs):
    import mudata

    from conftest import make_data

    data = make_data(pairing="full")
    mdata = mudata.MuData({"rna": data["rna"], "atac": data["atac"]})
    atac = mdata.mod["atac"]
    order = np.arange(100) if change == "subset" else np.random.default_rng(0).permutation(150)
    if change == "rename":  # (a suffix set right in place: mdata.update() cannot follow)
        order = np.arange(150)
        mdata.mod["rna"].obs_names = mdata.mod["rna"].obs_names + "-1"
        mdata.mod["atac"].obs_names = mdata.mod["atac"].obs_names + "-1"
    else:
        mdata.mod["atac"] = atac[order].copy()  # no mdata.update(): obsmap is stale
    with pytest.raises(ValueError, match=r"obsmap\['(rna|atac)'\].*mdata.update\(\) first, or, "
                       r"for renamed cells, build the MuData anew: mdata = "
                       r"mudata.MuData\(dict\(mdata.mod\)\)"):
        setup_data(mdata, specs)
    if change == "rename":
        mdata = mudata.MuData(dict(mdata.mod))
    else:
        mdata.update()
    mods, _ = setup_data(mdata, specs)
    ia, ib = find_pairs(mods["rna"], mods["atac"])
    assert len(ia) == len(order)
    np.testing.assert_array_equal(mods["rna"].obs_names[ia], mods["atac"].obs_names[ib])
    # a modality the model does not use is not checked: its stale map pairs nothing used
    mdata = mudata.MuData({"rna": data["rna"], "atac": data["atac"], "prot": data["atac"].copy()})
    mdata.mod["prot"] = mdata.mod["prot"][order].copy()
    mods, _ = setup_data(mdata, specs)
    assert list(mods) == ["rna", "atac"] and mods["atac"].n_obs == 150


# ------------------------------------------------------------------ EpochBatches
def _id_data(n_big: int, n_small: int, n_shared: int):
    """Two gaussian modalities whose column 0 is the row number (to identify rows)."""
    big = np.zeros((n_big, 3), dtype=np.float32)
    big[:, 0] = np.arange(n_big)
    small = np.zeros((n_small, 3), dtype=np.float32)
    small[:, 0] = np.arange(n_small)
    big_names = [f"c{i}" for i in range(n_big)]
    small_names = [f"c{i}" for i in range(n_shared)] + [f"s{i}" for i in range(n_small - n_shared)]
    data = {
        "big": ad.AnnData(big, obs=pd.DataFrame(index=big_names)),
        "small": ad.AnnData(small, obs=pd.DataFrame(index=small_names)),
    }
    mods, _ = setup_data(data, {"big": "gaussian", "small": "gaussian"})
    return mods


def _collect(batches):
    seen = {name: [] for name in batches.mods}
    pairs = []
    for s in range(len(batches)):
        b = batches[s]
        sizes = {b["cells"][n]["x"].shape[0] for n in batches.mods}
        if batches.shuffle:  # every modality gets the same number of cells per training step
            assert len(sizes) == 1
        for n in batches.mods:
            seen[n].append(b["cells"][n]["x"][:, 0].numpy().astype(int))
        if "pairs" in b:
            pairs.append({k: (v["a"][:, 0].numpy().astype(int), v["b"][:, 0].numpy().astype(int)) for k, v in b["pairs"].items()})
    return {n: np.concatenate(v) for n, v in seen.items()}, pairs


@pytest.mark.parametrize("batch_size", [7, 16, 200])
def test_epoch_visits_every_cell(batch_size):
    mods = _id_data(50, 13, 10)
    idx = {"big": np.arange(50), "small": np.arange(13)}
    batches = EpochBatches(mods, idx, batch_size=batch_size, seed=4)
    # 50 = 7 * 7 + 1: the lone last cell is folded into the previous batch
    assert len(batches) == int(np.ceil(50 / batch_size)) - (50 % batch_size == 1)
    for epoch in range(3):
        batches.set_epoch(epoch)
        seen, _ = _collect(batches)
        # largest modality: every cell exactly once
        assert len(seen["big"]) == 50
        np.testing.assert_array_equal(np.sort(seen["big"]), np.arange(50))
        # smaller modality cycles: every cell at least once, nothing beyond its rows
        assert len(seen["small"]) == 50
        counts = np.bincount(seen["small"], minlength=13)
        assert counts.min() >= 1 and len(counts) == 13
        assert counts.max() - counts.min() <= 1  # whole permutations, then a partial one


@pytest.mark.parametrize(("n", "batch_size", "sizes"), [(50, 7, [7] * 6 + [8]), (50, 49, [50]), (3, 2, [3])])
def test_epoch_never_yields_a_batch_of_one_cell(n, batch_size, sizes):
    mods = _id_data(n, 3, 3)
    batches = EpochBatches(mods, {"big": np.arange(n), "small": np.arange(3)}, batch_size=batch_size)
    assert [batches[s]["cells"]["big"]["x"].shape[0] for s in range(len(batches))] == sizes
    assert [batches[s]["cells"]["small"]["x"].shape[0] for s in range(len(batches))] == sizes


def test_epoch_batches_skip_a_single_training_pair():
    mods = _id_data(20, 8, 8)
    idx = {"big": np.arange(20), "small": np.arange(8)}
    one = {"big|small": (np.array([0]), np.array([0]))}
    with pytest.warns(UserWarning, match="'big' and 'small': only 1 training pair"):
        train = EpochBatches(mods, idx, batch_size=6, pairs=one)
    assert "pairs" not in train[0]
    val = EpochBatches(mods, idx, batch_size=6, pairs=one, shuffle=False)  # eval: one is fine
    assert val[0]["pairs"]["big|small"]["a"].shape[0] == 1


def test_epoch_respects_split_indices():
    mods = _id_data(40, 20, 20)
    idx = {"big": np.arange(0, 40, 2), "small": np.array([1, 5, 9])}
    batches = EpochBatches(mods, idx, batch_size=6, seed=0)
    seen, _ = _collect(batches)
    np.testing.assert_array_equal(np.sort(seen["big"]), np.arange(0, 40, 2))
    assert set(seen["small"]) == {1, 5, 9}


def test_epoch_batches_deterministic_and_vary_between_epochs():
    mods = _id_data(60, 25, 20)
    idx = {"big": np.arange(60), "small": np.arange(25)}
    a = EpochBatches(mods, idx, batch_size=8, seed=11)
    b = EpochBatches(mods, idx, batch_size=8, seed=11)
    a.set_epoch(3)
    b.set_epoch(3)
    sa, _ = _collect(a)
    sb, _ = _collect(b)
    for n in sa:
        np.testing.assert_array_equal(sa[n], sb[n])
    a.set_epoch(4)
    s4, _ = _collect(a)
    assert not np.array_equal(s4["big"], sa["big"])
    a.set_epoch(3)  # going back reproduces the epoch
    s3, _ = _collect(a)
    np.testing.assert_array_equal(s3["big"], sa["big"])
    np.testing.assert_array_equal(s3["small"], sa["small"])
    c = EpochBatches(mods, idx, batch_size=8, seed=12)
    c.set_epoch(3)
    sc, _ = _collect(c)
    assert not np.array_equal(sc["big"], sa["big"])


def test_epoch_batches_without_shuffle_walk_in_order():
    mods = _id_data(20, 8, 8)
    batches = EpochBatches(
        mods, {"big": np.arange(20), "small": np.arange(8)}, batch_size=6, shuffle=False
    )
    seen, _ = _collect(batches)
    # every validation cell once (a smaller modality is not cycled: its cells would weigh
    # unequally in the validation loss), in parts that differ by at most one cell (not 6 /
    # 6 / 6 / 2: the last two cells would weigh as much as the twelve before them)
    np.testing.assert_array_equal(seen["big"], np.arange(20))
    np.testing.assert_array_equal(seen["small"], np.arange(8))
    assert [len(batches[s]["cells"]["big"]["x"]) for s in range(len(batches))] == [5] * 4
    assert [len(batches[s]["cells"]["small"]["x"]) for s in range(len(batches))] == [2] * 4
    # fewer cells than steps: all of them, as often each; pairs as in training (as many
    # per step as batch_size allows: a contrastive loss over one pair is 0)
    few = EpochBatches(mods, {"big": np.arange(20), "small": np.arange(3)}, batch_size=6,
                       pairs={"big|small": (np.array([0, 1]), np.array([0, 1]))}, shuffle=False)
    seen, pairs = _collect(few)
    np.testing.assert_array_equal(seen["small"], [0, 1, 2, 0, 1, 2])
    assert [p["big|small"][0].tolist() for p in pairs] == [[0, 1]] * 4


def test_epoch_batches_pairs_stream():
    mods = _id_data(50, 30, 20)
    ia, ib = find_pairs(mods["big"], mods["small"])
    assert len(ia) == 20
    batches = EpochBatches(
        mods,
        {"big": np.arange(50), "small": np.arange(30)},
        batch_size=8,
        pairs={"big|small": (ia, ib), "big|empty": (np.array([], dtype=int), np.array([], dtype=int))},
        seed=1,
    )
    _, pairs = _collect(batches)
    assert len(pairs) == len(batches)
    all_a = []
    for p in pairs:
        assert set(p) == {"big|small"}  # empty pair sets are dropped
        a, b = p["big|small"]
        assert len(a) == 8
        np.testing.assert_array_equal(a, b)  # the paired rows are the same cells c0..c19
        all_a.append(a)
    assert set(np.concatenate(all_a)) == set(range(20))


def test_epoch_batches_labels(paired_data, specs):
    mods, _ = setup_data(paired_data, specs, labels_key="label")
    batches = EpochBatches(mods, {"rna": np.arange(150), "atac": np.arange(150)}, batch_size=32)
    b = batches[0]
    assert b["cells"]["rna"]["x"].dtype == torch.float32
    assert b["cells"]["rna"]["y"].dtype == torch.int64 and b["cells"]["rna"]["y"].shape == (32,)
    assert set(b["cells"]["rna"]["y"].tolist()) <= {0, 1, 2}


# ------------------------------------------------------------------ preprocessing
def _fit(x, *, likelihood="poisson", idx=None, **kw):
    spec = tm.Modality(likelihood, **kw)
    opts = spec.resolved()
    t = InputTransform(x.shape[1], **opts)
    src = MatrixSource(x, name="m", where="X")
    idx = np.arange(x.shape[0]) if idx is None else idx
    fit_preprocessing(t, src, idx, seed=0, chunk_size=17)
    return t, src


@pytest.mark.parametrize("sparse", [False, True])
def test_scaling_standardises_training_rows(sim, sparse):
    x = sim["rna"]
    t, src = _fit(sp.csr_matrix(x) if sparse else x)
    with torch.no_grad():
        p = t.process(torch.from_numpy(src.rows(np.arange(x.shape[0])))).double().numpy()
    np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(p.std(0), 1.0, atol=1e-3)


def test_pca_of_data_too_wide_to_hold_is_incremental(sim):
    """Past max_pca_values the PCA is fitted block by block (IncrementalPCA); it finds the
    same leading subspace as the randomized PCA of the whole matrix."""
    x = sim["rna"]
    fitted = {}
    for max_values in (2**27, 40 * 30):  # all in memory / incremental, blocks of 6 rows
        spec = tm.Modality("nb", n_pca=3)
        t = InputTransform(x.shape[1], **spec.resolved())
        fit_preprocessing(t, MatrixSource(x, name="m", where="X"), np.arange(150),
                          max_pca_values=max_values)
        fitted[max_values] = t.pca_components.double().numpy()
    overlap = np.linalg.svd(fitted[2**27] @ fitted[40 * 30].T, compute_uv=False)
    assert overlap.min() > 0.97  # cosines of the principal angles between the subspaces


def test_scaling_uses_only_training_rows(sim):
    x = sim["atac"]
    train = np.arange(0, 150, 3)
    t, src = _fit(x, idx=train)
    with torch.no_grad():
        p = t.process(torch.from_numpy(src.rows(train))).double().numpy()
    np.testing.assert_allclose(p.mean(0), 0.0, atol=1e-4)
    varies = x[train].std(0) > 0
    assert 0 < (~varies).sum() < 5  # features without signal in the subset stay at 0
    np.testing.assert_allclose(p.std(0)[varies], 1.0, atol=1e-3)
    np.testing.assert_allclose(p[:, ~varies], 0.0, atol=1e-6)
    # the statistics are not those of all cells
    with torch.no_grad():
        q = t.process(torch.from_numpy(x)).double().numpy()
    assert np.abs(q.mean(0)).max() > 1e-2


def test_constant_feature_does_not_divide_by_zero(sim):
    x = sim["prot"].copy()
    x[:, 2] = 3.0
    t, src = _fit(x, likelihood="gaussian")
    assert float(t.std[2]) == 1.0
    with torch.no_grad():
        p = t.process(torch.from_numpy(x)).numpy()
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p[:, 2], 0.0, atol=1e-5)


def test_gaussian_no_normalisation_by_default(sim):
    x = sim["prot"]
    t, _ = _fit(x, likelihood="gaussian", scale=False)
    with torch.no_grad():
        p = t.process(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(p, x)


def test_library_size_uses_median_of_training_rows(sim):
    x = sim["rna"]
    train = np.arange(1, 150, 2)
    t, src = _fit(x, idx=train, log1p=False, scale=False)
    median = np.median(x[train].sum(1))
    assert float(t.library_size) == pytest.approx(median, rel=1e-6)
    assert float(t.target_sum) == pytest.approx(median, rel=1e-6)
    assert median != pytest.approx(np.median(x.sum(1)))  # the subset matters
    with torch.no_grad():
        p = t.process(torch.from_numpy(x[:10])).numpy()
    np.testing.assert_allclose(p.sum(1), median, rtol=1e-5)
    np.testing.assert_allclose(p, x[:10] / x[:10].sum(1, keepdims=True) * median, rtol=1e-5)


def test_normalise_log1p_pipeline(sim):
    x = sim["atac"]
    t, _ = _fit(x, scale=False)
    med = np.median(x.sum(1))
    with torch.no_grad():
        p = t.process(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(p, np.log1p(x / x.sum(1, keepdims=True) * med), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        back = t.inverse(torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(back, x / x.sum(1, keepdims=True) * med, rtol=1e-4, atol=1e-4)


def test_pca_gives_n_pca_inputs(sim):
    x = sim["rna"]
    t, src = _fit(x, n_pca=5)
    assert t.n_input == 5
    assert tuple(t.pca_components.shape) == (5, 40)
    with torch.no_grad():
        enc = t.encoder_input(t.process(torch.from_numpy(x))).numpy()
    assert enc.shape == (150, 5)
    # principal components are centred and ordered by variance
    np.testing.assert_allclose(enc.mean(0), 0.0, atol=1e-4)
    var = enc.var(0)
    assert np.all(np.diff(var) <= 1e-6)
    comp = t.pca_components.numpy()
    np.testing.assert_allclose(comp @ comp.T, np.eye(5), atol=1e-4)


def test_pca_too_many_components_for_training_cells(sim):
    with pytest.raises(ValueError, match="n_pca"):
        _fit(sim["rna"], idx=np.arange(4), n_pca=5)


def test_pca_width_in_model(paired_data, make_model):
    specs = {"rna": tm.Modality("nb", layer="counts", n_pca=6), "atac": tm.Modality("poisson")}
    model = make_model(paired_data, specs)
    assert model.module.transforms["rna"].n_input == 6
    first = model.module.encoders["rna"].net[0]
    assert first.in_features == 6
    assert model.module.encoders["atac"].net[0].in_features == 25
    # decoders still reconstruct every feature
    z = model.get_latent_representation("rna")
    assert z.shape == (150, 8)
    out = model.translate(source="atac", target="rna")
    assert out.shape == (150, 40)


def test_fit_preprocessing_requires_training_cells(sim):
    t = InputTransform(40, normalize=True, log1p=True, scale=True)
    with pytest.raises(ValueError, match="no training cells"):
        fit_preprocessing(t, MatrixSource(sim["rna"], name="rna", where="X"), np.array([], dtype=int))


def test_marker_values_beyond_float32_are_named(paired_data):
    from transmodal.data._setup import marker_values

    adata = paired_data["rna"]
    adata.obs["m"] = np.linspace(0, 1e39, adata.n_obs)
    with pytest.raises(ValueError, match="'rna': marker_key 'm' holds values beyond float32"):
        marker_values(adata, "m", "rna")
    adata.obs["m"] = np.nan  # all missing is fine here (the model checks where it is measured)
    assert np.isnan(marker_values(adata, "m", "rna")).all()


# ------------------------------------------------------------------ probe findings (MuData, labels)
def _tiny(names, labels=None, seed=0) -> ad.AnnData:
    """A small gaussian modality with cells ``names`` and optional obs['label']."""
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(
        X=rng.normal(size=(len(names), 5)).astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(list(names), dtype=object)),
        var=pd.DataFrame(index=[f"m{seed}_{j}" for j in range(5)]),
    )
    if labels is not None:
        adata.obs["label"] = pd.Categorical(labels)
    return adata


TINY_SPECS = {"a": "gaussian", "b": "gaussian"}


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_mudata_repeated_obs_name_is_named_like_dict():
    import mudata

    names = [f"c{i}" for i in range(12)]
    data = {"a": _tiny(names), "b": _tiny(names[:-1] + ["c0"], seed=1)}  # 'c0' twice in b
    expected = (r"modality 'b': obs_names are not unique \(e.g. 'c0', .*prefixed with the "
                r"sample: when the samples are concatenated, anndata.concat\(samples, "
                r"index_unique='_'\) .*obs_names_make_unique\(\) numbers the repeats in file "
                r"order")  # (no batch_key: no column to name)
    with pytest.raises(ValueError, match=expected):
        setup_data(data, TINY_SPECS)
    mdata = mudata.MuData(data)
    for _ in range(2):  # mdata.update() does not change the answer
        with pytest.raises(ValueError, match=expected) as err:
            setup_data(mdata, TINY_SPECS)
        assert "obsmap" not in str(err.value)
        mdata.update()


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("as_mudata", [False, True])
def test_paired_cells_with_different_labels_warn(as_mudata):
    import mudata

    from transmodal.data._setup import label_conflicts

    names = [f"c{i}" for i in range(12)]
    la = ["T"] * 6 + ["B"] * 6
    lb = ["T"] * 6 + ["B"] * 6
    lb[1] = lb[2] = "B"  # c1, c2 differ
    la[3], lb[3] = np.nan, "B"  # unlabelled on one side: no conflict
    # b holds 8 of a's cells and 4 of its own (c8..c11 of a are unpaired, labelled 'X' in b)
    b_names = names[:8] + [f"b_only{i}" for i in range(4)]
    lb[8:] = ["X"] * 4
    data = {"a": _tiny(names, la), "b": _tiny(b_names, lb, seed=1)}
    if as_mudata:
        data = mudata.MuData(data)
    kw = dict(labels_key="label", validation_fraction=0.0, n_latent=2, hidden=(4,))
    with pytest.warns(UserWarning) as record:
        tm.CrossModalAE(data, TINY_SPECS, anchor_fraction=1.0, **kw)
    msgs = [str(w.message) for w in record if "different labels" in str(w.message)]
    assert len(msgs) == 1 and record[0].filename == __file__
    assert "labels_key 'label'" in msgs[0] and "modalities 'a' and 'b': 2 paired cell(s)" in msgs[0]
    assert "'c1': 'T' in 'a', 'B' in 'b'" in msgs[0]
    mods, cats = setup_data(data, TINY_SPECS, labels_key="label")
    assert label_conflicts(mods, cats) == [("a", "b", 2, ("c1", "T", "B"))]
    # unpaired data (anchor_fraction=0): shared names need not be the same cell
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        tm.CrossModalAE(data, TINY_SPECS, anchor_fraction=0.0, **kw)
    assert not [w for w in record if "different labels" in str(w.message)]

    # labels that agree (one side missing is fine): no conflict
    data = {"a": _tiny(names, la), "b": _tiny(names, la, seed=1)}
    data["b"].obs.loc["c5", "label"] = np.nan
    mods, cats = setup_data(data, TINY_SPECS, labels_key="label")
    assert label_conflicts(mods, cats) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_column_only_in_mudata_global_obs_suggests_push_obs():
    import mudata

    names = [f"c{i}" for i in range(12)]
    mdata = mudata.MuData({"a": _tiny(names), "b": _tiny(names[:8], seed=1)})
    for key in ("celltype", "batch", "m"):
        mdata.obs[key] = np.arange(mdata.n_obs) % 2
    hint = r"MuData's global \.obs holds '{}'.*mdata\.push_obs\(\['{}'\]"
    with pytest.raises(ValueError, match="not an obs column of any modality.*"
                       + hint.format("celltype", "celltype")):
        setup_data(mdata, TINY_SPECS, labels_key="celltype")
    with pytest.raises(ValueError, match="modality 'a': marker_key 'm' not found in obs.*"
                       + hint.format("m", "m")):
        setup_data(mdata, TINY_SPECS, marker_key="m")
    specs = {"a": tm.Modality("gaussian", batch_key="batch"), "b": "gaussian"}
    with pytest.raises(ValueError, match="modality 'a': batch_key 'batch' not found in obs.*"
                       + hint.format("batch", "batch") + r", mods=\['a'\]\)"):
        setup_data(mdata, specs)
    # a dict of AnnData has no global obs: no hint
    with pytest.raises(ValueError, match="not an obs column of any modality") as err:
        setup_data(dict(mdata.mod), TINY_SPECS, labels_key="celltype")
    assert "push_obs" not in str(err.value)
    # following the hint works
    mdata.push_obs(["celltype", "batch", "m"])
    mods, cats = setup_data(mdata, specs, labels_key="celltype", marker_key="m")
    assert cats == ["0", "1"] and mods["a"].batches is not None
    # a modality's column pulled into the global obs carries mudata's prefix: pushing it back
    # strips the prefix, so the hint names the modality's own column instead
    mdata.mod["a"].obs["cluster"] = np.arange(12) % 3
    mdata.pull_obs(["cluster"])
    assert "a:cluster" in mdata.obs
    with pytest.raises(ValueError, match=r"holds 'a:cluster', the column 'cluster' of modality "
                       r"'a' under mudata's prefix.*pass 'cluster' instead") as err:
        setup_data(mdata, TINY_SPECS, labels_key="a:cluster")
    assert "push_obs" not in str(err.value)
    # the prefixed column of one modality given for another: copied there, as the hint says
    specs = {"a": "gaussian", "b": tm.Modality("gaussian", batch_key="a:cluster")}
    with pytest.raises(ValueError, match=r"modality 'b': batch_key 'a:cluster' not found in obs"
                       r".*pass 'cluster', and copy the column into \['b'\], e.g. "
                       r"mdata\['b'\].obs\['cluster'\] = mdata.obs.loc\[mdata\['b'\]."
                       r"obs_names, 'a:cluster'\]$"):
        setup_data(mdata, specs)
    mdata["b"].obs["cluster"] = mdata.obs.loc[mdata["b"].obs_names, "a:cluster"]
    mods, _ = setup_data(mdata, {"a": "gaussian", "b": tm.Modality("gaussian",
                                                                   batch_key="cluster")})
    np.testing.assert_array_equal(mods["b"].batches, np.arange(8) % 3)  # (b: c0-c7)


def test_feature_moments_match_numpy_in_blocks_and_keep_large_offsets():
    from transmodal._utils import FeatureMoments

    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3)) * [1.0, 1e-3, 5.0] + [0.0, 1e7, -3.0]
    moments = FeatureMoments()
    for block in np.array_split(x, 7):  # blocks of any size, one empty
        moments.add(block)
    moments.add(x[:0])
    assert moments.n == 1000
    np.testing.assert_allclose(moments.mean(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(moments.var(), x.var(0), rtol=1e-9)  # sd 1e-3 beside 1e7
    np.testing.assert_allclose(moments.var(ddof=1), x.var(0, ddof=1), rtol=1e-9)


def test_feature_scaling_does_not_depend_on_units():
    """Features whose spread is tiny in absolute terms (values ~1e-7) are standardised like
    any other; only features constant up to float32 rounding keep a unit scale."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    x[:, 1] *= 1e-7  # other units
    x[:, 2] = 1e-7  # constant
    x[:, 3] = 1000.0 + np.float32(rng.normal(size=200)) * 1e-5  # 1000 in float32 (rounding)
    t = InputTransform(4, **tm.Modality("gaussian").resolved())
    fit_preprocessing(t, MatrixSource(x, name="prot", where="X"), np.arange(200))
    std = t.std.numpy()
    np.testing.assert_allclose(std[:2], x[:, :2].std(0), rtol=1e-3)
    assert std[2] == 1.0 and std[3] == 1.0
    z = t.process(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z[:, 1].std(), 1.0, rtol=1e-3)


def test_fractional_labels_warn_and_point_to_marker_key(paired_data, specs):
    paired_data["rna"].obs["time"] = np.linspace(0, 1, paired_data["rna"].n_obs)
    with pytest.warns(UserWarning, match=r"'rna': labels_key 'time' holds non-integer.*marker_key"):
        setup_data({"rna": paired_data["rna"], "atac": paired_data["atac"]}, specs,
                   labels_key="time")
    paired_data["rna"].obs["time"] = np.arange(paired_data["rna"].n_obs) % 3 * 1.0  # 0., 1., 2.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        setup_data({"rna": paired_data["rna"], "atac": paired_data["atac"]}, specs,
                   labels_key="time")


def test_float16_values_scan_without_numpy_warnings(paired_data):
    adata = paired_data["atac"].copy()
    adata.X = np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X, np.float16)
    src, _ = matrix_of(adata, tm.Modality("poisson"), "atac")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_values(src, tm.Modality("poisson"))


def _csr_with_zeros_stored(x: np.ndarray, cells: list[int], repeat: int) -> sp.csr_matrix:
    """CSR of ``x`` where each of ``cells`` stores ``repeat`` explicit zeros in column 0
    (``repeat`` > 1: duplicate entries, which sum to zero)."""
    rows = [sp.csr_matrix(x[i : i + 1]) for i in range(len(x))]
    data, indices, indptr = [], [], [0]
    for i, r in enumerate(rows):
        d, c = list(r.data), list(r.indices)
        if i in cells:
            d, c = [0.0] * repeat, [0] * repeat
        data += d
        indices += c
        indptr.append(len(data))
    m = sp.csr_matrix((np.asarray(data, np.float32), np.asarray(indices), np.asarray(indptr)),
                      shape=x.shape)
    m.has_canonical_format = repeat == 1
    return m


@pytest.mark.parametrize("storage", ["dense", "csr", "csr_stored_zeros", "csr_duplicates", "csc"])
def test_all_zero_cells_warned_once_by_count(paired_data, specs, storage):
    """Cells without a single non-zero value carry no signal (they all embed as the same
    cell): counted in every storage, explicit stored zeros and duplicate entries summing to
    zero included."""
    x = np.asarray(paired_data["rna"].layers["counts"].todense(), dtype=np.float32)
    x[x.sum(1) == 0, 0] = 1  # (the fixture's own empty cells, if any, filled)
    x[[2, 5, 7]] = 0
    m = {
        "dense": lambda: x,
        "csr": lambda: sp.csr_matrix(x),
        "csr_stored_zeros": lambda: _csr_with_zeros_stored(x, [2, 5, 7], 1),
        "csr_duplicates": lambda: _csr_with_zeros_stored(x, [2, 5, 7], 2),
        "csc": lambda: sp.csc_matrix(x),
    }[storage]()
    paired_data["rna"].layers["counts"] = m
    with pytest.warns(UserWarning, match=r"'rna': layers\['counts'\]: 3 of 150 cell\(s\) hold no "
                      r"non-zero value \(all-zero rows\).*sc.pp.filter_cells") as rec:
        setup_data(paired_data, specs)
    assert sum("no non-zero value" in str(w.message) for w in rec) == 1


def test_all_zero_cells_not_warned_for_gaussian_data(paired_data, specs):
    """Zeros are ordinary values of centred or scaled data."""
    x = np.asarray(paired_data["rna"].layers["counts"].todense(), dtype=np.float32)
    x[:4] = 0
    paired_data["rna"].X = x
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        setup_data(paired_data, {"rna": tm.Modality("gaussian", layer=None), "atac": specs["atac"]})
    assert not [w for w in rec
                if "no non-zero value" in str(w.message) and "'rna'" in str(w.message)]


def test_r_converted_data_missing_integers_and_decorated_names():
    """What R converters leave: NA_integer_ passed on as -2**31 in an integer obs column is
    missing (it was a class, a batch, a marker value of -2.1e9), with a warning; paired cells
    named with another suffix / a sample prefix ('X-1' against 'S1#X_1') are told as such
    (they were aligned as unpaired without a word)."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(rng.poisson(2, (80, 10)).astype(np.float32))
    a.obs_names = [f"AAAC{i:04d}-1" for i in range(80)]
    b = ad.AnnData(rng.poisson(1, (80, 12)).astype(np.float32))
    b.obs_names = [f"S1#AAAC{i:04d}_1" for i in range(80)]
    hours = np.tile(np.array([0, 1, 3, -(2**31)], dtype=np.int32), 20)
    for x in (a, b):
        x.obs["hours"] = hours
    specs = {"rna": tm.Modality("nb"), "atac": tm.Modality("poisson")}
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        model = tm.CrossModalAE({"rna": a, "atac": b}, specs, labels_key="hours",
                                n_latent=4, hidden=(8,))
    said = [str(w.message) for w in told if "NA_integer_" in str(w.message)]
    assert len(said) == 2 and "labels_key 'hours' holds -2147483648 in 20 cell(s)" in said[0]
    # (once per modality: the column is read twice, for the classes and for the codes)
    assert model.label_categories_ == ["0", "1", "3"]
    assert (model.mods["rna"].labels[hours == -(2**31)] == -1).all()
    with pytest.warns(UserWarning, match=r"marker_key 'hours' holds -2147483648"):
        marked = tm.CrossModalAE({"rna": a, "atac": b}, specs, marker_key="hours",
                                 n_latent=4, hidden=(8,))
    assert np.isnan(marked.mods["rna"].markers[hours == -(2**31)]).all()
    with pytest.warns(UserWarning, match=r"cells named differently: 'rna' and 'atac' share no "
                      r"cell name, but 80 of their cells match .* e\.g\. 'AAAC0000-1' and "
                      r"'S1#AAAC0000_1'"):
        tm.CrossModalAE({"rna": a, "atac": b}, specs, n_latent=4, hidden=(8,))
    with pytest.raises(ValueError, match=r"share a cell: .* \('rna' and 'atac' share no cell "
                       r"name, but 80 of their cells match"):
        tm.CrossModalAE({"rna": a, "atac": b}, specs, anchor_fraction=1.0)
    # a MuData of them (its rows pair the modalities): the same advice, and how to rebuild
    import mudata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # (mudata 0.3's notice)
        mdata = mudata.MuData({"rna": a.copy(), "atac": b.copy()})
    with pytest.warns(UserWarning, match=r"cells named differently: 'rna' and 'atac' share no "
                      r"cell name, but 80 of their cells match .*in mdata\[name\] of both, then "
                      r"build it anew: mdata = mudata.MuData\(dict\(mdata.mod\)\)"):
        tm.CrossModalAE(mdata, specs, n_latent=4, hidden=(8,))
    # the advice, followed in both modalities, pairs them
    for x in (a, b):
        x.obs_names = x.obs_names.str.replace(r"^.*#", "", regex=True).str.replace(
            r"[-_.]\d+$", "", regex=True)
    paired = tm.CrossModalAE({"rna": a, "atac": b}, specs, anchor_fraction=1.0, n_latent=4,
                             hidden=(8,))
    assert len(paired.anchors_["rna|atac"][0]) > 60
    b.obs_names = [f"other{i}" for i in range(80)]  # (unrelated names: nothing to say)
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        tm.CrossModalAE({"rna": a, "atac": b}, specs, n_latent=4, hidden=(8,))
    assert not [w for w in told if "named differently" in str(w.message)]


def test_all_integers_matches_np_mod_across_pieces():
    """The count check's integer test, by rounding in pieces: the same answer as np.mod,
    wherever the one non-integer lies (first, last, across a piece's end) and for values
    that only look like integers at float32 (1e30), negatives and other dtypes."""
    rng = np.random.default_rng(0)
    base = np.ceil(rng.random(1000) * 50).astype(np.float32)
    assert all_integers(base, piece=64)
    for at in (0, 63, 64, 999):
        vals = base.copy()
        vals[at] += 0.5
        assert not all_integers(vals, piece=64)
    for vals in (np.array([-3.0, -0.0, 1e30], np.float32), np.arange(5),
                 np.array([2.0, 7.0], np.float16), np.zeros(0, np.float64)):
        assert all_integers(vals) == bool(np.all(np.mod(vals, 1) == 0))
    assert not all_integers(np.array([[1.0, -2.5]]))  # (2-D blocks too)
