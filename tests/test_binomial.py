"""Successes out of trials per entry: the binomial / beta-binomial likelihoods on read
counts (``Modality("binomial", layer=..., total_layer=...)``)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy import stats

import transmodal as tm
from transmodal.data._source import MatrixSource, RateSource, check_values, matrix_of
from transmodal.nn import get_likelihood

SPECS = {
    "rna": tm.Modality("nb"),
    "met": tm.Modality("binomial", layer="methylated", total_layer="coverage"),
}


@pytest.fixture(scope="module")
def paired():
    return tm.datasets.synthetic(
        300, modalities={"rna": "nb", "met": "methylation"},
        n_features={"rna": 60, "met": 80}, seed=0,
    )


def _counts(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = rng.poisson(3.0, (5, 7)).astype(np.float32)
    k = rng.binomial(n.astype(int), 0.4).astype(np.float32)
    logits = torch.from_numpy(rng.normal(size=(5, 7)).astype(np.float32))
    return torch.from_numpy(k), torch.from_numpy(n), logits


# ------------------------------------------------------------------------- likelihoods
def test_binomial_nll_is_the_binomial_log_pmf_and_skips_entries_without_trials():
    k, n, logits = _counts()
    assert (n == 0).any()  # some entries unmeasured
    p = torch.sigmoid(logits).double().numpy()
    nll = get_likelihood("binomial").nll({"logits": logits}, k, None, n > 0, total=n)
    ref = -np.where(n > 0, stats.binom.logpmf(k.numpy(), n.numpy(), p), 0.0).sum(1) / 7
    np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-5)
    # an entry with 0 trials adds exactly nothing, masked or not
    unmasked = get_likelihood("binomial").nll({"logits": logits}, k, None, None, total=n)
    torch.testing.assert_close(unmasked, nll)


def test_betabinomial_nll_matches_scipy_and_tends_to_the_binomial():
    k, n, logits = _counts(1)
    p = torch.sigmoid(logits).double().numpy()
    lik = get_likelihood("betabinomial")
    theta = torch.full_like(logits, 3.0)
    nll = lik.nll({"logits": logits, "theta": theta}, k, None, n > 0, total=n)
    ref = -np.where(
        n > 0, stats.betabinom.logpmf(k.numpy(), n.numpy(), 3.0 * p, 3.0 * (1 - p)), 0.0
    ).sum(1) / 7
    np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-4)
    big = lik.nll({"logits": logits, "theta": torch.full_like(logits, 1e6)}, k, None, n > 0, total=n)
    binom = get_likelihood("binomial").nll({"logits": logits}, k, None, n > 0, total=n)
    torch.testing.assert_close(big, binom, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("name", "keys"), [("binomial", {"logits"}),
                                            ("betabinomial", {"logits", "theta"})])
def test_heads_are_differentiable_and_the_mean_is_a_rate(name, keys):
    torch.manual_seed(0)
    lik = get_likelihood(name)
    assert lik.totals and lik.missing and not lik.counts
    head = lik.head(6, 11)
    out = head(torch.randn(4, 6))
    assert set(out) == keys
    n = torch.poisson(torch.full((4, 11), 4.0))
    k = torch.minimum(torch.poisson(torch.full((4, 11), 2.0)), n)
    nll = lik.nll(out, k, None, n > 0, total=n)
    assert nll.shape == (4,) and torch.isfinite(nll).all()
    nll.sum().backward()
    assert all(p.grad is not None for p in head.parameters())
    mean = lik.mean(out)
    assert ((mean > 0) & (mean < 1)).all()
    with pytest.raises(ValueError, match="number of trials"):
        lik.nll(out, k, None)


# ------------------------------------------------------------------------- the spec
def test_spec_errors_name_the_field():
    def check(**kw):
        tm.Modality(**kw).check("met")

    with pytest.raises(ValueError, match="'met'.*needs field 'total_layer'"):
        check(likelihood="binomial", layer="mc")
    with pytest.raises(ValueError, match="'total_layer' is for likelihoods.*not 'nb'"):
        check(likelihood="nb", total_layer="cov")
    with pytest.raises(ValueError, match="not 'obsm_key'"):
        check(likelihood="binomial", obsm_key="X_pca", total_layer="cov")
    with pytest.raises(ValueError, match="'layer' and 'total_layer' are both 'cov'"):
        check(likelihood="binomial", layer="cov", total_layer="cov")
    with pytest.raises(ValueError, match="likelihood 'binomial' and field 'normalize'"):
        check(likelihood="binomial", total_layer="cov", normalize=True)
    with pytest.raises(ValueError, match="'total_layer' must be a non-empty string"):
        check(likelihood="binomial", total_layer="")
    spec = tm.Modality("betabinomial", layer="mc", total_layer="cov")
    spec.check("met")
    assert spec.resolved()["missing"] and spec.resolved()["scale"]
    d = spec.to_dict()
    assert d["total_layer"] == "cov" and "missing" not in d
    assert tm.Modality.from_dict(d) == spec
    assert "total_layer" not in tm.Modality("nb").to_dict()  # older files stay readable


def test_source_reads_rates_and_check_values_names_bad_counts():
    k = np.array([[0, 1, 2], [3, 0, 0]], dtype=np.float32)
    n = np.array([[1, 2, 2], [4, 0, 5]], dtype=np.float32)
    adata = ad.AnnData(sp.csr_matrix(k), layers={"cov": sp.csr_matrix(n)})
    spec = tm.Modality("binomial", total_layer="cov")
    src, _ = matrix_of(adata, spec, "met")
    assert isinstance(src, RateSource)
    np.testing.assert_array_equal(src.rows(np.array([1, 0])),
                                  [[0.75, np.nan, 0.0], [0.0, 0.5, 1.0]])
    check_values(src, spec)
    with pytest.raises(ValueError, match="total_layer 'nope' not found"):
        matrix_of(adata, tm.Modality("binomial", total_layer="nope"), "met")
    swapped = ad.AnnData(n, layers={"cov": k})
    src, _ = matrix_of(swapped, spec, "met")
    with pytest.raises(ValueError, match=r"'met': 4 entries of X exceed layers\['cov'\] \(e.g. row 0, column 0: 1 > 0\).*swapped"):
        check_values(src, spec)
    rates = ad.AnnData(np.where(n > 0, k / np.maximum(n, 1), 0), layers={"cov": n})
    src, _ = matrix_of(rates, spec, "met")
    told = (r"^modality 'met': X holds rates \(values in \[0, 1\], e.g. row 0, column 1: 0.5\), "
            r"not read counts: .* out of layers\['cov'\]; name their layer, e.g. "
            r"Modality\('binomial', layer='methylated', total_layer=...\)$")
    with pytest.raises(ValueError, match=told):
        check_values(src, spec)
    rates.X = np.where(n > 0, rates.X, np.nan)  # (NaN where unmeasured, as rates are kept)
    src, _ = matrix_of(rates, spec, "met")
    with pytest.raises(ValueError, match=told):
        check_values(src, spec)
    above = ad.AnnData(np.where(n > 0, k + 0.5, 0), layers={"cov": n})  # (no rates: as before)
    src, _ = matrix_of(above, spec, "met")
    with pytest.raises(ValueError, match=r"'met': X holds negative or non-integer.*not rates"):
        check_values(src, spec)
    nan = ad.AnnData(k, layers={"cov": np.where(n > 0, n, np.nan)})
    src, _ = matrix_of(nan, spec, "met")
    with pytest.raises(ValueError, match=r"'met': layers\['cov'\] holds NaN.*0 in layers"):
        check_values(src, spec)


# ------------------------------------------------------------------------- training
def test_reconstruction_loss_weighs_entries_by_their_trials(paired):
    model = tm.CrossModalAE(paired, SPECS, n_latent=4, seed=0)
    src = model.mods["met"].source
    rows = np.arange(16)
    x, n = (torch.from_numpy(a) for a in src.rates_and_totals(rows))
    module = model.module.eval()
    _, nll, _ = module.reconstruction("met", x, total=n)
    params = module.decode("met", module.encode("met", x))
    k = torch.from_numpy(paired["met"].layers["methylated"][rows])
    ref = -torch.where(
        n > 0, torch.distributions.Binomial(n, logits=params["logits"]).log_prob(k), 0.0
    ).mean(1)
    torch.testing.assert_close(nll, ref, rtol=1e-4, atol=1e-5)


def test_training_on_read_counts_aligns_translates_and_round_trips(paired, tmp_path):
    model = tm.CrossModalAE(paired, SPECS, n_latent=8, anchor_fraction=1.0, seed=0)
    model.train(max_epochs=30, progress_bar=False)
    assert np.isfinite(model.history_.to_numpy()).all()
    zr = model.get_latent_representation("rna")
    zm = model.get_latent_representation("met")
    assert tm.metrics.foscttm(zr, zm) < 0.15
    pred = model.translate(paired["rna"], source="rna", target="met").X
    assert np.isfinite(pred).all() and (pred > 0).all() and (pred < 1).all()
    out = tm.workflows.evaluate_paired(model, paired, source="rna", target="met")
    assert out["translation_pearson_rna_to_met"] > out["baseline_pearson_rna_to_met"]
    model.save(tmp_path / "run")
    loaded = tm.CrossModalAE.load(tmp_path / "run", paired)
    assert loaded.mods["met"].spec.total_layer == "coverage"
    np.testing.assert_array_equal(loaded.get_latent_representation("met"), zm)
    alone = tm.CrossModalAE.load(tmp_path / "run")  # without data: read counts of new cells
    np.testing.assert_array_equal(alone.get_latent_representation("met", paired["met"]), zm)
    np.testing.assert_allclose(
        alone.translate(paired["rna"], source="rna", target="met").X, pred, rtol=1e-5
    )


def test_read_counts_from_files_and_sparse_layers(tmp_path):
    data = tm.datasets.synthetic(
        200, modalities={"rna": "nb", "met": "methylation"},
        n_features={"rna": 40, "met": 50}, seed=1, out=tmp_path,
    )
    model = tm.CrossModalAE(data, SPECS, n_latent=4, seed=0)
    assert model.mods["met"].source.on_disk
    model.train(max_epochs=2, progress_bar=False)
    z = model.get_latent_representation("met")
    met = data["met"].to_memory()
    for key in ("methylated", "coverage"):
        met.layers[key] = sp.csr_matrix(np.asarray(met.layers[key]))
    np.testing.assert_allclose(model.get_latent_representation("met", met), z, atol=1e-5)


def test_trials_layer_set_again_is_named_and_read_anew():
    data = tm.datasets.synthetic(
        120, modalities={"rna": "nb", "met": "methylation"}, n_features={"rna": 30, "met": 40},
        seed=0,
    )
    model = tm.CrossModalAE(data, SPECS, n_latent=4, hidden=(16,), seed=0)
    coverage = data["met"].layers["coverage"]
    data["met"].layers["coverage"] = coverage * 2  # only the trials set again
    with pytest.warns(UserWarning, match=r"modality 'met': its AnnData's "
                      r"layers\['coverage'\] was replaced"):
        model.get_latent_representation("met")
    assert model.mods["met"].source.totals.matrix is data["met"].layers["coverage"]


def test_continuous_bernoulli_refuses_values_just_above_one():
    x = np.full((5, 3), 0.5)
    x[0, 0] = 1.5
    with pytest.raises(ValueError, match="above 1"):
        check_values(MatrixSource(x, name="img", where="X"), tm.Modality("continuous_bernoulli"))
    x[0, 0] = 1.0  # the bound itself is fine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_values(MatrixSource(x, name="img", where="X"), tm.Modality("continuous_bernoulli"))


def test_rate_source_refuses_trials_of_another_shape():
    for totals in (np.full((6, 3), 2.0), np.full((5, 4), 2.0)):
        with pytest.raises(ValueError, match=r"\(trials\) has shape .* must match"):
            RateSource(np.ones((5, 3)), totals, name="mc", where="X",
                       total_where="layers['cov']")


def test_cells_without_reads_are_named_by_their_coverage(paired):
    """Cells whose coverage is 0 everywhere: the warning names the coverage layer too."""
    data = {k: v.copy() for k, v in paired.items()}
    for layer in ("coverage", "methylated"):
        data["met"].layers[layer][:4] = 0
    with pytest.warns(UserWarning, match=r"'met': \d training cell\(s\) have no measured entry "
                      r"in layers\['methylated'\] \(no reads in layers\['coverage'\]\)"):
        tm.CrossModalAE(data, SPECS, n_latent=8, geometric_pairs=False)
