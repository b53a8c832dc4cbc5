"""Modalities with unmeasured entries (``Modality(missing=True)``: NaN = not measured),
e.g. single-cell methylation rates of regions without coverage."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

import transmodal as tm
from transmodal._utils import FeatureMoments
from transmodal.nn import get_likelihood


def _rates(n: int = 300, n_regions: int = 60, coverage: float = 0.8, seed: int = 0):
    """Paired RNA counts and methylation rates of one latent state; NaN where a region has
    no read in a cell. Returns the two AnnData and the true methylation probabilities."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3)) + 2.5 * rng.integers(0, 3, size=(n, 1))
    mu = np.exp(0.4 * z @ rng.normal(size=(3, 40)))
    rna = rng.poisson(mu).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(z - z.mean(0)) @ rng.normal(size=(3, n_regions))))
    reads = rng.poisson(coverage, size=p.shape)
    with np.errstate(invalid="ignore"):
        rate = (rng.binomial(reads, p) / reads).astype(np.float32)  # 0 / 0 = NaN
    names = [f"cell{i}" for i in range(n)]
    a, m = ad.AnnData(rna), ad.AnnData(rate)
    a.obs_names = m.obs_names = names
    m.var_names = [f"region{j}" for j in range(n_regions)]
    return a, m, p


SPECS = {"rna": tm.Modality("nb"), "met": tm.Modality("continuous_bernoulli", missing=True)}


def test_feature_moments_skip_nan_and_keep_complete_data_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, size=(200, 7))
    x[rng.random(x.shape) < 0.4] = np.nan
    x[0, 2] = np.nan  # the first row's gap: shifted by a later value
    x[:, 6] = np.nan  # never measured
    m = FeatureMoments()
    for block in np.array_split(x, 5):
        m.add(block)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        expect_mean, expect_var = np.nanmean(x, 0), np.nanvar(x, 0)
    np.testing.assert_allclose(m.mean()[:6], expect_mean[:6], rtol=1e-12)
    np.testing.assert_allclose(m.var()[:6], expect_var[:6], rtol=1e-10)
    assert np.isnan(m.mean()[6]) and m.counts[6] == 0
    assert m.n == 200 and (m.counts[:6] == (~np.isnan(x[:, :6])).sum(0)).all()
    # complete data: the sums of before (one count for every feature)
    full = rng.normal(1e4, 1.0, size=(100, 3))
    m = FeatureMoments()
    m.add(full[:40])
    m.add(full[40:])
    d = full - full[0]
    np.testing.assert_array_equal(m.mean(), full[0] + d.sum(0) / 100)


def test_nan_refused_without_missing_and_bad_combinations_named():
    a, m, _ = _rates(n=60)
    with pytest.raises(ValueError, match=r"modality 'met': X holds NaN values.*missing=True.*"
                       r"\(in a config file: missing: true\)"):
        tm.CrossModalAE({"rna": a, "met": m}, {**SPECS, "met": tm.Modality("continuous_bernoulli")})
    with pytest.raises(ValueError, match=r"'missing' needs a likelihood that can skip "
                       r"unmeasured entries \(bernoulli, continuous_bernoulli, gaussian.*library size"):
        tm.CrossModalAE({"rna": a, "met": m}, {**SPECS, "met": tm.Modality("nb", missing=True)})
    with pytest.raises(ValueError, match="'missing' and 'normalize' exclude each other"):
        tm.Modality("gaussian", missing=True, normalize=True).check("met")
    with pytest.raises(ValueError, match="field 'missing' must be true or false"):
        tm.Modality("gaussian", missing="yes").check("met")
    m.X[0, 0] = np.inf
    with pytest.raises(ValueError, match="modality 'met': X holds infinite values"):
        tm.CrossModalAE({"rna": a, "met": m}, SPECS)
    crops = ad.AnnData(np.zeros((60, 1)))
    crops.obs_names = a.obs_names
    crops.obsm["crops"] = np.random.default_rng(0).random((60, 1, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="'missing' is not supported for images"):
        tm.CrossModalAE(
            {"rna": a, "img": crops},
            {"rna": SPECS["rna"], "img": tm.Modality("gaussian", obsm_key="crops", missing=True)},
        )


def test_unmeasured_entries_enter_the_encoder_as_the_training_mean():
    a, m, _ = _rates(n=200)
    model = tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, seed=0)
    t = model.module.transforms["met"]
    train = ~model.val_masks_["met"]
    with np.errstate(all="ignore"):
        expect = np.nanmean(m.X[train], 0)
    np.testing.assert_allclose(t.fill.numpy(), expect, rtol=1e-5)
    with torch.no_grad():
        processed = t.process(torch.from_numpy(m.X))
    assert torch.isfinite(processed).all()
    # a cell's unmeasured entry embeds exactly like the fill value measured there
    gap = np.argwhere(np.isnan(m.X))[:5]
    filled = m.copy()
    for i, j in gap:
        filled.X[i, j] = t.fill[j].item()
    np.testing.assert_array_equal(
        model.get_latent_representation("met", m), model.get_latent_representation("met", filled)
    )
    # scaled gaussian features: unmeasured entries are 0 after scaling
    spec = tm.Modality("gaussian", missing=True)
    g = tm.CrossModalAE({"rna": a, "met": m}, {**SPECS, "met": spec}, n_latent=4, seed=0)
    tg = g.module.transforms["met"]
    np.testing.assert_allclose(tg.fill.numpy(), tg.mean.numpy())
    with torch.no_grad():
        out = tg.process(torch.from_numpy(m.X)).numpy()
    assert (out[np.isnan(m.X)] == 0).all()


@pytest.mark.parametrize("name", ["gaussian", "bernoulli", "continuous_bernoulli"])
def test_masked_nll_counts_only_measured_entries(name):
    lik = get_likelihood(name)
    rng = np.random.default_rng(0)
    key = "mean" if name == "gaussian" else "logits"
    params = {key: torch.from_numpy(rng.normal(size=(5, 8)).astype(np.float32))}
    x = torch.from_numpy(rng.random((5, 8)).astype(np.float32))
    mask = torch.from_numpy(rng.random((5, 8)) < 0.6)
    masked = lik.nll(params, x, x, mask)
    # the same entries with other placeholders give the same loss
    other = torch.where(mask, x, torch.full_like(x, 0.123))
    torch.testing.assert_close(lik.nll(params, other, other, mask), masked)
    # = the unmasked per-entry loss summed over measured entries, divided by all features
    per_entry = torch.stack([lik.nll({key: params[key][:, [j]]}, x[:, [j]], x[:, [j]])
                             for j in range(8)], dim=1)
    torch.testing.assert_close(masked, (per_entry * mask).sum(1) / 8)
    assert lik.missing


def test_training_with_unmeasured_entries_aligns_translates_and_round_trips(tmp_path):
    a, m, p = _rates(n=300)
    assert 0.3 < np.isnan(m.X).mean() < 0.6
    model = tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=8, anchor_fraction=1.0, seed=0)
    model.train(max_epochs=30, progress_bar=False)
    assert np.isfinite(model.history_.to_numpy()).all()
    za = model.get_latent_representation("rna", a)
    zm = model.get_latent_representation("met", m)
    assert np.isfinite(zm).all()
    assert tm.metrics.foscttm(za, zm) < 0.1
    pred = model.translate(a, source="rna", target="met")
    assert np.isfinite(pred.X).all() and (pred.X >= 0).all() and (pred.X <= 1).all()
    truth = np.mean([np.corrcoef(pred.X[i], p[i])[0, 1] for i in range(len(p))])
    assert truth > 0.5
    out = tm.workflows.evaluate_paired(model, {"rna": a, "met": m}, source="rna", target="met")
    assert out["translation_pearson_rna_to_met"] > out["baseline_pearson_rna_to_met"] + 0.2
    assert np.isfinite(out["translation_pearson_met_to_rna"])
    model.save(tmp_path / "run")
    loaded = tm.CrossModalAE.load(tmp_path / "run", {"rna": a, "met": m})
    assert loaded.mods["met"].spec.missing
    np.testing.assert_array_equal(loaded.get_latent_representation("met", m), zm)


def test_translation_pearson_skips_unmeasured_entries():
    rng = np.random.default_rng(3)
    pred = rng.random((6, 10))
    obs = pred + 0.3 * rng.random((6, 10))
    obs[rng.random(obs.shape) < 0.3] = np.nan
    obs[5, :9] = np.nan  # one measured value: no correlation
    with pytest.raises(ValueError, match=r"obs contains NaN or infinite values \(rows 0:6\); if "
                       r"NaN marks unmeasured entries .* pass missing=True$"):  # (opt-in)
        tm.metrics.translation_pearson(pred, obs)
    r = tm.metrics.translation_pearson(pred, obs, missing=True)
    for i in range(5):
        keep = ~np.isnan(obs[i])
        assert r[i] == pytest.approx(np.corrcoef(pred[i, keep], obs[i, keep])[0, 1], rel=1e-12)
    assert np.isnan(r[5])
    train = rng.random((20, 10))
    train[:, 3] = np.nan  # unmeasured in every training cell: left out
    train[:10, 4] = np.nan
    base = tm.metrics.mean_profile_baseline(train, obs[:5], missing=True)
    profile = np.nanmean(train[:, [0, 1, 2, 4, 5, 6, 7, 8, 9]], 0)
    for i in range(5):
        o = obs[i, [0, 1, 2, 4, 5, 6, 7, 8, 9]]
        keep = ~np.isnan(o)
        assert base[i] == pytest.approx(np.corrcoef(profile[keep], o[keep])[0, 1], rel=1e-12)
    with pytest.raises(ValueError, match=r"pred contains NaN or infinite values \(rows 0:6\)$"):
        tm.metrics.translation_pearson(obs, pred, missing=True)
    # a row constant over its measured values has no correlation, whatever the chunking
    obs2 = obs[:3].copy()
    obs2[0] = 0.7
    obs2[0, [1, 4]] = np.nan
    obs2[2] = 0.3  # constant and fully measured, in a block with gaps
    for chunk in (1, 3):
        r = tm.metrics.translation_pearson(pred[:3], obs2, missing=True, chunk_size=chunk)
        assert np.isnan(r[0]) and np.isnan(r[2]) and np.isfinite(r[1])


def test_feature_unmeasured_in_every_training_cell_warns():
    a, m, _ = _rates(n=120)
    m.X[:, [3, 7]] = np.nan
    with pytest.warns(UserWarning, match=r"modality 'met': 2 of 60 feature\(s\) of X \(e.g. \[3, 7\]\) are unmeasured"):
        model = tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, seed=0)
    assert model.module.transforms["met"].fill[[3, 7]].tolist() == [0.0, 0.0]


def test_missing_round_trips_through_config_dicts():
    spec = tm.Modality.from_dict({"likelihood": "continuous_bernoulli", "missing": True}, name="met")
    spec.check("met")
    assert spec.missing and tm.Modality.from_dict(spec.to_dict()) == spec
    assert tm.Modality.from_dict({"likelihood": "gaussian"}).missing is False  # older configs
    # the default is not written: files stay readable by versions without the field
    assert "missing" not in tm.Modality("gaussian").to_dict()


def test_likelihood_overriding_nll_without_mask_does_not_inherit_missing():
    from transmodal.nn._likelihoods import Gaussian, skips_missing

    class Huber(Gaussian):
        name = "test_huber_missing"

        def nll(self, params, x, target):
            return torch.nn.functional.huber_loss(
                params["mean"], target, reduction="none").mean(-1)

    class Wider(Gaussian):  # inherits Gaussian's nll: may skip entries
        name = "test_wider_missing"

    tm.nn.register_likelihood(Huber)
    tm.nn.register_likelihood(Wider)
    assert not skips_missing(Huber()) and skips_missing(Wider())
    with pytest.raises(ValueError, match="its nll does not take a mask"):
        tm.Modality("test_huber_missing", missing=True).check("met")
    tm.Modality("test_wider_missing", missing=True).check("met")


def test_all_zero_modality_with_gaps_still_warns():
    a, m, _ = _rates(n=120)
    m.X = np.where(np.isnan(m.X), np.nan, 0.0).astype(np.float32)
    with pytest.warns(UserWarning, match="all zeros in every training cell"):
        tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, anchor_fraction=1.0, seed=0)
    # nothing measured at all, or some cells without any measured entry: said so
    m.X = np.full(m.shape, np.nan, np.float32)
    with pytest.warns(UserWarning, match="X is unmeasured in every training cell"):
        tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, anchor_fraction=1.0, seed=0)
    m = _rates(n=120)[1]
    m.X[:3] = np.nan
    with pytest.warns(UserWarning, match=r"3 training cell\(s\) have no measured entry in X; .*"
                      "embed at one point"):
        tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, anchor_fraction=1.0, seed=0,
                        validation_fraction=0)


def test_methylation_rates_from_read_counts():
    import scipy.sparse as sp

    data = tm.datasets.synthetic(
        200, modalities={"rna": "nb", "met": "methylation"}, n_features={"rna": 30, "met": 40},
        seed=0,
    )
    met = data["met"]
    cov = met.layers["coverage"]
    mc = np.where(cov > 0, np.rint(np.nan_to_num(met.X) * cov), 0.0).astype(np.float32)
    met.layers["mc"], met.layers["cov"] = sp.csr_matrix(mc), sp.csr_matrix(cov)
    out = tm.pp.methylation_rates(met, copy=True, chunk_size=64)
    assert "methylation_rate" not in met.layers  # copy: the input untouched
    rate = out.layers["methylation_rate"]
    assert rate.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(rate), cov == 0)
    np.testing.assert_allclose(rate, met.X, rtol=1e-6)  # the simulated rates, NaN-equal
    met.layers["mc"], met.layers["cov"] = mc, cov  # dense layers: the same; in place
    assert tm.pp.methylation_rates(met, min_coverage=2, key_added="r2") is None
    np.testing.assert_array_equal(np.isnan(met.layers["r2"]), cov < 2)
    # the layer is a modality's input as it is
    spec = tm.Modality("continuous_bernoulli", layer="r2", missing=True)
    model = tm.CrossModalAE(
        data, {"rna": tm.Modality("nb"), "met": spec}, n_latent=4, anchor_fraction=1.0, seed=0
    )
    assert np.isfinite(model.get_latent_representation("met")).all()


def test_methylation_rates_of_sparse_layers_in_a_file(tmp_path):
    """Layers kept sparse in a file (read_backed) are read by row blocks."""
    import scipy.sparse as sp

    met = tm.datasets.synthetic(
        100, modalities={"rna": "nb", "met": "methylation"}, n_features={"met": 30}, seed=0
    )["met"]
    cov = met.layers["coverage"]
    mc = np.where(cov > 0, np.rint(np.nan_to_num(met.X) * cov), 0.0).astype(np.float32)
    met.layers["mc"], met.layers["cov"] = sp.csr_matrix(mc), sp.csr_matrix(cov)
    want = tm.pp.methylation_rates(met, copy=True).layers["methylation_rate"]
    met.write_h5ad(tmp_path / "met.h5ad")
    lazy = tm.datasets.read_backed(tmp_path / "met.h5ad")
    tm.pp.methylation_rates(lazy, chunk_size=16)
    np.testing.assert_array_equal(np.asarray(lazy.layers["methylation_rate"]), want)


def test_sparse_matrix_without_nan_warns_that_nothing_is_missing():
    """A sparse matrix leaves zeros out, not unmeasured entries: with missing=True and no
    stored NaN, every absent entry would count as a measured 0."""
    import scipy.sparse as sp

    rna, met, _ = _rates()
    met.X = sp.csr_matrix(np.nan_to_num(met.X, nan=0.0))
    specs = {"rna": tm.Modality("nb"), "met": tm.Modality("continuous_bernoulli", missing=True)}
    with pytest.warns(UserWarning, match="sparse matrix without NaN, and the modality has "
                      "missing=True"):
        tm.CrossModalAE({"rna": rna, "met": met}, specs, n_latent=4, geometric_pairs=False)


def test_methylation_rates_name_bad_layers():
    x = ad.AnnData(np.zeros((3, 2), np.float32))
    x.obs_names, x.var_names = ["a", "b", "c"], ["r0", "r1"]
    x.layers["mc"] = np.array([[1, 0], [0, 3], [0, 0]], np.float32)
    x.layers["cov"] = np.array([[1, 0], [2, 3], [0, 1]], np.float32)
    with pytest.raises(ValueError, match=r"layers\['coverage'\] \(covering reads\) not found"):
        tm.pp.methylation_rates(x, coverage="coverage")
    x.layers["cov"][1, 1] = 2
    with pytest.raises(ValueError, match=r"1 entries of layers\['mc'\] exceed layers\['cov'\] "
                       r"\(e.g. cell 'b', region 'r1': 3 > 2\).*swapped"):
        tm.pp.methylation_rates(x)
    x.layers["cov"][1, 1] = 3.5
    with pytest.raises(ValueError, match=r"layers\['cov'\] holds negative or non-integer values"):
        tm.pp.methylation_rates(x)
    with pytest.raises(ValueError, match="min_coverage must be an integer >= 1"):
        tm.pp.methylation_rates(x, min_coverage=0)


def test_unmeasured_entries_give_no_gradient_to_their_feature():
    """The model passes the NaN mask into the reconstruction: a feature unmeasured in every
    cell of a batch gets no gradient (treated as 0 it would)."""
    a, m, _ = _rates(n=120)
    model = tm.CrossModalAE({"rna": a, "met": m}, SPECS, n_latent=4, seed=0)
    mod = model.module.eval()
    x = torch.from_numpy(m.X[:64].copy())
    j = 5
    x[:, j] = float("nan")
    mod.zero_grad()
    _, nll, _ = mod.reconstruction("met", x)
    nll.sum().backward()
    rows = [p.grad for p in mod.heads["met"].parameters()
            if p.grad is not None and p.shape[0] == m.n_vars]
    assert rows, "no per-feature output parameters found"
    for g in rows:
        assert torch.all(g[j] == 0), "an unmeasured entry contributed to the loss"
        assert torch.any(g[j + 1] != 0)
