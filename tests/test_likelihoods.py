"""Reconstruction likelihoods against torch.distributions references; the registry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

import transmodal as tm
from transmodal.nn import Likelihood, available_likelihoods, get_likelihood, register_likelihood
from transmodal.nn import _likelihoods as lik_module

BUILTIN = ["bernoulli", "gaussian", "nb", "poisson", "zinb"]


@pytest.fixture
def counts():
    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.rand(6, 9, generator=g, dtype=torch.float64) * 6.0)
    x[0, :3] = 0.0
    x[1, 4] = 40.0
    mu = torch.rand(6, 9, generator=g, dtype=torch.float64) * 8.0 + 0.05
    theta = torch.rand(9, generator=g, dtype=torch.float64) * 4.0 + 0.2
    return x, mu, theta.expand_as(mu)


def test_builtin_registry():
    assert set(BUILTIN) <= set(available_likelihoods())
    for name in BUILTIN:
        lik = get_likelihood(name)
        assert lik.name == name
    assert get_likelihood("nb").counts and get_likelihood("nb").nonnegative
    assert get_likelihood("poisson").counts and get_likelihood("zinb").counts
    assert not get_likelihood("bernoulli").counts and get_likelihood("bernoulli").nonnegative
    assert not get_likelihood("gaussian").counts and not get_likelihood("gaussian").nonnegative
    with pytest.raises(ValueError, match="unknown likelihood 'nope'"):
        get_likelihood("nope")
    with pytest.raises(ValueError, match=r"unknown likelihood \['nb'\]; choose one of"):
        get_likelihood(["nb"])  # (not hashable: named, as get_architecture does)


def test_poisson_nll(counts):
    x, mu, _ = counts
    got = get_likelihood("poisson").nll({"mu": mu}, x, None)
    ref = -D.Poisson(mu).log_prob(x).mean(-1)
    assert got.shape == (6,)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_nb_nll(counts):
    x, mu, theta = counts
    got = get_likelihood("nb").nll({"mu": mu, "theta": theta}, x, None)
    ref = -D.NegativeBinomial(total_count=theta, logits=torch.log(mu / theta)).log_prob(x).mean(-1)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    # the reference is parametrised with mean mu
    torch.testing.assert_close(
        D.NegativeBinomial(total_count=theta, logits=torch.log(mu / theta)).mean, mu
    )


def test_nb_tends_to_poisson_for_large_theta(counts):
    x, mu, _ = counts
    big = torch.full_like(mu, 1e7)
    nb = get_likelihood("nb").nll({"mu": mu, "theta": big}, x, None)
    po = get_likelihood("poisson").nll({"mu": mu}, x, None)
    torch.testing.assert_close(nb, po, rtol=1e-4, atol=1e-4)


def test_zinb_reduces_to_nb(counts):
    x, mu, theta = counts
    pi = torch.full_like(mu, -60.0)
    zinb = get_likelihood("zinb").nll({"mu": mu, "theta": theta, "pi_logits": pi}, x, None)
    nb = get_likelihood("nb").nll({"mu": mu, "theta": theta}, x, None)
    torch.testing.assert_close(zinb, nb, rtol=1e-6, atol=1e-6)


def test_zinb_nll_reference(counts):
    x, mu, theta = counts
    g = torch.Generator().manual_seed(1)
    pi_logits = torch.randn(mu.shape, generator=g, dtype=torch.float64) * 2
    got = get_likelihood("zinb").nll({"mu": mu, "theta": theta, "pi_logits": pi_logits}, x, None)
    pi = torch.sigmoid(pi_logits)
    nb = D.NegativeBinomial(total_count=theta, logits=torch.log(mu / theta))
    p = (1 - pi) * nb.log_prob(x).exp() + pi * (x == 0).double()
    ref = -torch.log(p).mean(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def test_bernoulli_nll(counts):
    x, _, _ = counts
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(x.shape, generator=g, dtype=torch.float64) * 3
    got = get_likelihood("bernoulli").nll({"logits": logits}, x, None)
    ref = -D.Bernoulli(logits=logits).log_prob((x > 0).double()).mean(-1)
    torch.testing.assert_close(got, ref)
    bce = F.binary_cross_entropy(torch.sigmoid(logits), (x > 0).double(), reduction="none").mean(-1)
    torch.testing.assert_close(got, bce, rtol=1e-6, atol=1e-6)


def test_gaussian_nll_is_half_mse_on_processed_target():
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(5, 7, generator=g)
    target = torch.randn(5, 7, generator=g)
    raw = torch.full((5, 7), 1e6)  # the raw data must not be used
    got = get_likelihood("gaussian").nll({"mean": mean}, raw, target)
    torch.testing.assert_close(got, 0.5 * ((mean - target) ** 2).mean(-1))
    torch.testing.assert_close(
        got, -D.Normal(mean, 1.0).log_prob(target).mean(-1) - 0.5 * np.log(2 * np.pi)
    )


def test_means():
    g = torch.Generator().manual_seed(4)
    mu = torch.rand(3, 4, generator=g) + 0.1
    pi = torch.randn(3, 4, generator=g)
    logits = torch.randn(3, 4, generator=g)
    torch.testing.assert_close(get_likelihood("poisson").mean({"mu": mu}), mu)
    torch.testing.assert_close(get_likelihood("nb").mean({"mu": mu, "theta": mu}), mu)
    torch.testing.assert_close(
        get_likelihood("zinb").mean({"mu": mu, "theta": mu, "pi_logits": pi}),
        mu * (1 - torch.sigmoid(pi)),
    )
    torch.testing.assert_close(get_likelihood("bernoulli").mean({"logits": logits}), torch.sigmoid(logits))
    torch.testing.assert_close(get_likelihood("gaussian").mean({"mean": logits}), logits)


def test_continuous_bernoulli_exact_at_every_logit(monkeypatch):
    """Normaliser and mean from the logits, exact at every precision (torch's clamp of the
    probability by the dtype's epsilon set where the tails flattened: float32 |l| ~ 16,
    float64 ~ 36), the series near 0 joining the closed form; the library clips the logits
    at +-16 on purpose (checked below)."""
    cb = get_likelihood("continuous_bernoulli")
    monkeypatch.setattr(lik_module, "_CB_MAX_LOGIT", float("inf"))  # the formulas themselves
    logits = torch.tensor([-1000.0, -100.0, -20.0, -5.0, -0.6, -0.4, -0.011, -0.009, 0.0,
                           0.005, 0.3, 0.7, 5.0, 20.0, 100.0, 1000.0])
    ld = logits.double()
    exact_mean = torch.where(ld == 0, torch.full_like(ld, 0.5), 1 / -torch.expm1(-ld) - 1 / ld)
    torch.testing.assert_close(cb.mean({"logits": logits}).double(), exact_mean,
                               rtol=0, atol=2e-7)
    assert cb.mean({"logits": torch.tensor([-100.0])}).item() == pytest.approx(0.01, abs=1e-6)
    # log p(x) = x l - softplus(l) + log(l / tanh(l / 2)), for x in {0, 1/2, 1}
    safe = torch.where(ld == 0, torch.ones_like(ld), ld)
    log_norm = torch.where(ld == 0, torch.full_like(ld, np.log(2.0)),
                           torch.log(safe / torch.tanh(safe / 2)))
    for x in (0.0, 0.5, 1.0):
        xs = torch.full_like(logits, x)
        got = torch.stack([cb.nll({"logits": logits[i : i + 1, None]}, xs[i : i + 1, None], None)
                           for i in range(len(logits))]).ravel()
        ref = -(x * ld - F.softplus(ld) + log_norm)
        torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=2e-6)
    # equal to torch's own where its clamp does not act
    mid = torch.linspace(-8, 8, 41, dtype=torch.float64)
    x = torch.rand(41, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = D.ContinuousBernoulli(logits=mid, validate_args=False)
    torch.testing.assert_close(cb.nll({"logits": mid[None]}, x[None], None).item(),
                               -ref.log_prob(x).mean().item(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(cb.mean({"logits": mid}), ref.mean, rtol=1e-9, atol=1e-9)
    # gradients through both branches
    g = torch.tensor([-40.0, -0.3, -0.005, 0.0001, 0.02, 3.0], dtype=torch.float64,
                     requires_grad=True)
    xg = torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(lambda t: cb.nll({"logits": t[None]}, xg[None], None), (g,))
    assert torch.autograd.gradcheck(lambda t: cb.mean({"logits": t}), (g,))
    # half precision (mixed-precision training): finite gradients far out in the tails
    h = torch.tensor([-1000.0, -100.0, -0.3, 0.001, 300.0], dtype=torch.float16,
                     requires_grad=True)
    cb.nll({"logits": h[None]}, torch.tensor([[0.0, 0.0, 0.5, 1.0, 1.0]], dtype=torch.float16),
           None).sum().backward()
    assert torch.isfinite(h.grad).all()
    cb.mean({"logits": h}).sum().backward()
    assert torch.isfinite(h.grad).all()
    # the library's bound: the same values in float32 and float64, means in [1/16, 15/16]
    monkeypatch.undo()
    tails = torch.tensor([[-300.0, -16.0, 16.0, 300.0]])
    for dtype in (torch.float32, torch.float64):
        mean = cb.mean({"logits": tails.to(dtype)}).double()
        torch.testing.assert_close(mean, torch.tensor([[1 / 16, 1 / 16, 15 / 16, 15 / 16]],
                                                      dtype=torch.float64), rtol=0, atol=1e-6)
    x = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert cb.nll({"logits": tails}, x, None).item() == pytest.approx(
        cb.nll({"logits": torch.tensor([[-16.0, -16.0, 16.0, 16.0]])}, x, None).item())


def test_negative_binomial_precise_in_float32_for_large_theta():
    """Nearly Poisson features (theta 1e4-1e8): float32 lost nats per entry (theta 1e8,
    x = 12: 19.99 against 2.36); their entries are taken in float64, for a per-feature theta
    (the count heads') and an elementwise one, in the NB and the ZINB."""
    from scipy import stats

    thetas = torch.tensor([1e4, 1e6, 1e8, 5.0])
    mu = torch.tensor([[10.0, 0.001, 10.0, 3.0], [2.0, 7.0, 0.5, 1.0]])
    x = torch.tensor([[12.0, 1.0, 0.0, 3.0], [0.0, 9.0, 1.0, 0.0]])
    t64, m64 = thetas.double().numpy(), mu.double().numpy()
    ref = -stats.nbinom.logpmf(x.double().numpy(), t64, t64 / (t64 + m64))
    # per feature (expanded, as the count heads give it); elementwise; broadcast (1-D, 1 x G)
    for theta in (thetas.expand_as(mu), thetas.repeat(2, 1), thetas, thetas[None]):
        for name in ("nb", "zinb"):
            params = {"mu": mu, "theta": theta}
            if name == "zinb":
                params["pi_logits"] = torch.full_like(mu, -40.0)
            got = get_likelihood(name).nll(params, x, None)
            np.testing.assert_allclose(got.numpy(), ref.mean(1), rtol=2e-6, atol=2e-5)


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("gaussian", {"mean"}),
        ("bernoulli", {"logits"}),
        ("poisson", {"mu"}),
        ("nb", {"mu", "theta"}),
        ("zinb", {"mu", "theta", "pi_logits"}),
    ],
)
def test_heads(name, keys):
    torch.manual_seed(0)
    head = get_likelihood(name).head(6, 11)
    h = torch.randn(4, 6)
    library = torch.tensor([1.0, 10.0, 100.0, 55.5])
    out = head(h, library)
    assert set(out) == keys
    for v in out.values():
        assert v.shape == (4, 11)
    if "mu" in out:
        # count means are proportions times the library size
        assert (out["mu"] > 0).all()
        torch.testing.assert_close(out["mu"].sum(-1), library)
    if "theta" in out:
        assert (out["theta"] > 0).all()
        # per-feature dispersion: equal across cells
        torch.testing.assert_close(out["theta"][0], out["theta"][3])
    nll = get_likelihood(name).nll(out, torch.poisson(torch.ones(4, 11) * 3), torch.randn(4, 11))
    assert nll.shape == (4,) and torch.isfinite(nll).all()
    nll.sum().backward()  # differentiable w.r.t. the head's parameters
    assert all(p.grad is not None for p in head.parameters())


# ------------------------------------------------------------------ registering a likelihood
@pytest.fixture
def clean_registry():
    before = dict(lik_module._REGISTRY)
    yield
    lik_module._REGISTRY.clear()
    lik_module._REGISTRY.update(before)


def test_register_likelihood_usable_in_modality(clean_registry, paired_data):
    class Laplace(Likelihood):
        name = "test_laplace"
        preprocessed = True  # models the processed data: translations are mapped back

        def head(self, n_hidden, n_vars):
            return lik_module._Linear(n_hidden, n_vars, ("mean",))

        def nll(self, params, x, target):
            return (params["mean"] - target).abs().mean(-1)

        def mean(self, params):
            return params["mean"]

    assert "test_laplace" not in available_likelihoods()
    with pytest.raises(ValueError, match="'atac'.*likelihood"):
        tm.Modality("test_laplace").check("atac")
    returned = register_likelihood(Laplace)
    assert returned is Laplace  # usable as a decorator
    assert "test_laplace" in available_likelihoods()
    assert isinstance(get_likelihood("test_laplace"), Laplace)
    spec = tm.Modality("test_laplace")
    spec.check("atac")
    assert spec.resolved() == {"normalize": False, "log1p": False, "scale": True, "n_pca": 0,
                               "missing": False}

    # a model with the new likelihood builds and trains
    paired_data["atac"].X = np.log1p(paired_data["atac"].X)
    model = tm.CrossModalAE(
        paired_data,
        {"rna": tm.Modality("nb", layer="counts"), "atac": spec},
        n_latent=4,
        hidden=(16,),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, batch_size=64, progress_bar=False)
    assert np.isfinite(model.history["train_recon_atac"]).all()
    # its translations are in the data's units (scaling undone), and say so
    out = model.translate(source="atac", target="atac")
    assert out.uns["transmodal"]["units"] == "preprocessing inverted"
    x = np.asarray(paired_data["atac"].X.todense() if hasattr(paired_data["atac"].X, "todense")
                   else paired_data["atac"].X)
    assert abs(float(out.X.mean()) - float(x.mean())) < 0.5 * float(x.std())


def test_register_likelihood_needs_name(clean_registry):
    class Nameless(Likelihood):
        pass

    with pytest.raises(ValueError, match="name"):
        register_likelihood(Nameless)


def test_register_likelihood_refuses_what_it_cannot_use(clean_registry):
    from transmodal.nn._likelihoods import Gaussian

    class NotALikelihood:
        name = "test_not"

    class NoMean(Gaussian):
        name = "test_no_mean"
        mean = Likelihood.mean

    class PartialDefaults(Gaussian):
        name = "test_partial"
        defaults = {"log1p": True}

    class MyPoisson(Gaussian):
        name = "poisson"

    with pytest.raises(TypeError, match="takes a Likelihood subclass"):
        register_likelihood(NotALikelihood)
    with pytest.raises(TypeError, match="an instance of Gaussian; pass the class itself"):
        register_likelihood(Gaussian())
    with pytest.raises(TypeError, match="NoMean .* must implement mean"):
        register_likelihood(NoMean)
    with pytest.raises(ValueError, match=r"defaults must give each of \['normalize', 'log1p', "
                       r"'scale'\]"):
        register_likelihood(PartialDefaults)
    # a built-in name would change what models saved with the built-in load with
    with pytest.raises(ValueError, match="'poisson' is built in; give MyPoisson another name"):
        register_likelihood(MyPoisson)
    assert type(get_likelihood("poisson")).__name__ == "Poisson"
    register_likelihood(Gaussian)  # the registered class itself again: nothing changes

    class First(Gaussian):
        name = "test_twice"

    class Second(Gaussian):
        name = "test_twice"

    register_likelihood(First)
    with pytest.warns(UserWarning, match="Second replaces First as likelihood 'test_twice'"):
        register_likelihood(Second)
    assert isinstance(get_likelihood("test_twice"), Second)


def _adt_gauss(log1p: bool):
    """The same class defined again with other defaults (an edited notebook cell)."""
    from transmodal.nn._likelihoods import Gaussian

    class ADTGauss(Gaussian):
        name = "test_adt_gauss"
        defaults = {"normalize": False, "log1p": log1p, "scale": True}

    return ADTGauss


def test_saved_model_keeps_the_preprocessing_it_was_trained_with(clean_registry, paired_data,
                                                                  tmp_path):
    register_likelihood(_adt_gauss(True))
    model = tm.CrossModalAE(
        paired_data, {"rna": tm.Modality("nb", layer="counts"), "atac": "test_adt_gauss"},
        n_latent=4, hidden=(16,), anchor_fraction=1.0, seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, batch_size=64, progress_bar=False)
    want = model.translate(source="rna", target="atac").X
    model.save(tmp_path / "m")
    register_likelihood(_adt_gauss(False))  # no warning: the same class name
    with pytest.warns(UserWarning, match=r"'atac': likelihood 'test_adt_gauss' now defaults "
                      r"to \{'log1p': False\}, but the model was trained with \{'log1p': True\}"):
        loaded = tm.CrossModalAE.load(tmp_path / "m", paired_data)
    np.testing.assert_allclose(loaded.translate(source="rna", target="atac").X, want,
                               rtol=1e-5, atol=1e-5)
    # image modalities too (their spec refuses explicit normalize / log1p)
    from test_image_modality import fit, nuclei

    register_likelihood(_adt_gauss(True))
    img, feat = nuclei(n=40)
    image = fit(tm.CrossModalAE(
        {"img": img, "feat": feat},
        {"img": tm.Modality("test_adt_gauss", obsm_key="crops", hidden=(8, 16)),
         "feat": tm.Modality("gaussian")}, n_latent=4, seed=0), max_epochs=1)
    want_img = image.translate(source="feat", target="img").X
    image.save(tmp_path / "img")
    register_likelihood(_adt_gauss(False))
    with pytest.warns(UserWarning, match="'img': likelihood 'test_adt_gauss' now defaults"):
        loaded = tm.CrossModalAE.load(tmp_path / "img", {"img": img, "feat": feat})
    np.testing.assert_allclose(loaded.translate(source="feat", target="img").X, want_img,
                               rtol=1e-5, atol=1e-5)
    # a likelihood not registered in this process is named as such
    del lik_module._REGISTRY["test_adt_gauss"]
    with pytest.raises(ValueError, match="'atac' was saved with likelihood 'test_adt_gauss', "
                       "which is not registered in this process: register its class"):
        tm.CrossModalAE.load(tmp_path / "m", paired_data)


def test_custom_likelihoods_are_handled_by_what_they_are_not_by_name(clean_registry,
                                                                      paired_data):
    """A count (or Bernoulli) subclass under another name is evaluated as the built-in is;
    a mean of the wrong width is named at translation."""
    from transmodal.nn._likelihoods import Bernoulli, NegativeBinomial

    @register_likelihood
    class MyNB(NegativeBinomial):
        name = "test_my_nb"

    @register_likelihood
    class MyBernoulli(Bernoulli):
        name = "test_my_bernoulli"

    @register_likelihood
    class Short(NegativeBinomial):
        name = "test_short"

        def mean(self, params):
            return super().mean(params)[:, :-1]

    x = paired_data["rna"].layers["counts"][:5]
    x = np.asarray(x.todense() if hasattr(x, "todense") else x)
    spaces = {}
    for rna, atac in (("nb", "bernoulli"), ("test_my_nb", "test_my_bernoulli")):
        model = tm.CrossModalAE(
            paired_data, {"rna": tm.Modality(rna, layer="counts", normalize=False),
                          "atac": atac}, n_latent=4, hidden=(16,), anchor_fraction=1.0, seed=0,
        )
        spaces[rna] = [tm.workflows.comparison_space(model, m)[0](v) for m, v in
                       (("rna", x), ("atac", np.array([[0.0, 2.0], [np.nan, 0.0]])))]
    for a, b in zip(spaces["nb"], spaces["test_my_nb"]):
        np.testing.assert_array_equal(a, b)
    model = tm.CrossModalAE(
        paired_data, {"rna": tm.Modality("test_short", layer="counts"), "atac": "bernoulli"},
        n_latent=4, hidden=(16,), anchor_fraction=1.0, seed=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=r"modality 'rna': likelihood 'test_short' "
                           r"\(Short.mean\) returned \(\d+, \d+\); expected \(cells, \d+\)"):
            model.translate(source="atac", target="rna")


def test_bernoulli_counts_fractions_and_counts_as_ones():
    # 'bernoulli' models x > 0: 0.5 and 3 are both "1" (check_values' warning says so)
    lik = get_likelihood("bernoulli")
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    ones = lik.nll({"logits": logits}, torch.ones(1, 3), None)
    for x in ([[0.5, 0.5, 0.5]], [[0.01, 3.0, 0.999]]):
        torch.testing.assert_close(lik.nll({"logits": logits}, torch.tensor(x), None), ones)
