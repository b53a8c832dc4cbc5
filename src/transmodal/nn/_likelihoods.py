"""Reconstruction likelihoods, registered by name.

A likelihood owns the output head of a modality's decoder, its negative log-likelihood and
the mean of the distribution it predicts. Adding a data type is one subclass of
:class:`Likelihood` plus one call to :func:`register_likelihood`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import check_class, put

_EPS = 1e-8


class Likelihood:
    """Base class of a reconstruction likelihood.

    Class attributes
    ----------------
    name
        Registry name (``Modality(likelihood=name)``).
    counts
        Whether the data must be non-negative integer counts; count likelihoods scale their
        mean by each cell's library size.
    nonnegative
        Whether the data must be non-negative.
    unit_interval
        Whether the data must lie in ``[0, 1]``.
    image_keys
        Parameter names the likelihood needs per pixel when it models an image modality
        (``None``: not usable for images).
    missing
        Whether :meth:`nll` takes a ``mask`` of measured entries (``Modality(missing=True)``);
        declared by the class that defines :meth:`nll` (a subclass that overrides
        :meth:`nll` without declaring it does not inherit it: see :func:`skips_missing`).
    totals
        Whether every entry is a count of successes out of its own number of trials (e.g.
        methylated reads out of the reads covering a region), given by a second matrix
        (``Modality(total_layer=...)``): :meth:`nll` then takes the trials as ``total``,
        and the encoder sees the rates ``x / total`` (unmeasured where ``total`` is 0).
    defaults
        Default preprocessing of the encoder input (``normalize``, ``log1p``, ``scale``).
    preprocessed
        Whether the likelihood models the preprocessed data (``target`` in :meth:`nll`),
        so that its mean is mapped back through the inverse preprocessing (scaling, log1p)
        in translations; otherwise the mean is in the data's own units.
    units
        What a translation into the modality holds (``uns["transmodal"]["units"]``);
        default: ``"preprocessing inverted"`` (``preprocessed``), ``"counts"``
        (``counts``), else ``"the likelihood's mean"``.
    """

    name: ClassVar[str] = ""
    counts: ClassVar[bool] = False
    nonnegative: ClassVar[bool] = False
    unit_interval: ClassVar[bool] = False
    image_keys: ClassVar[tuple[str, ...] | None] = None
    missing: ClassVar[bool] = False
    totals: ClassVar[bool] = False
    defaults: ClassVar[dict[str, bool]] = {"normalize": False, "log1p": False, "scale": True}
    preprocessed: ClassVar[bool] = False
    units: ClassVar[str | None] = None

    @classmethod
    def units_of_mean(cls) -> str:
        """What a translation into a modality of this likelihood holds (see ``units``)."""
        if cls.units is not None:
            return cls.units
        if cls.preprocessed:
            return "preprocessing inverted"
        return "counts" if cls.counts else "the likelihood's mean"

    def head(self, n_hidden: int, n_vars: int) -> nn.Module:
        """Return the output head ``(h, library) -> dict of distribution parameters``."""
        raise NotImplementedError

    def nll(
        self,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        total: torch.Tensor | None = None,
    ):
        """Per-cell negative log-likelihood, averaged over features.

        Parameters
        ----------
        params
            Output of the head.
        x
            Raw data of the batch (counts for count likelihoods).
        target
            The preprocessed data (normalised / log1p / scaled), the target of Gaussian
            likelihoods.
        mask
            For likelihoods with ``missing = True``: ``True`` where an entry was measured.
            Unmeasured entries (finite placeholders in ``x`` and ``target``) add nothing;
            the sum over measured entries is divided by the number of features, so every
            measured entry weighs the same, whichever cell it is in.
        total
            For likelihoods with ``totals = True``: each entry's number of trials (``x`` is
            then the number of successes).
        """
        raise NotImplementedError

    def mean(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the predicted distribution, in the space the likelihood models."""
        raise NotImplementedError


def _feature_mean(ll: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-cell mean over features of elementwise values, unmeasured entries (``mask``
    False) counted as 0."""
    if mask is None:
        return ll.mean(-1)
    return torch.where(mask, ll, torch.zeros_like(ll)).sum(-1) / ll.shape[-1]


class _Linear(nn.Module):
    def __init__(self, n_hidden: int, n_vars: int, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.keys = keys
        self.layers = nn.ModuleDict({k: nn.Linear(n_hidden, n_vars) for k in keys})

    def forward(self, h, library=None):
        return {k: self.layers[k](h) for k in self.keys}


class Gaussian(Likelihood):
    """Gaussian with unit variance on the preprocessed data (mean squared error)."""

    name = "gaussian"
    image_keys = ("mean",)
    missing = True
    preprocessed = True

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _Linear(n_hidden, n_vars, ("mean",))

    def nll(self, params, x, target, mask=None):  # noqa: D102
        return _feature_mean(0.5 * (params["mean"] - target) ** 2, mask)

    def mean(self, params):  # noqa: D102
        return params["mean"]


class _CountHead(nn.Module):
    """Softmax proportions times library size, plus optional per-feature / per-cell terms."""

    def __init__(self, n_hidden: int, n_vars: int, *, dispersion: bool, dropout: bool) -> None:
        super().__init__()
        self.scale = nn.Linear(n_hidden, n_vars)
        self.log_theta = nn.Parameter(torch.zeros(n_vars)) if dispersion else None
        self.dropout = nn.Linear(n_hidden, n_vars) if dropout else None

    def forward(self, h, library):
        out = {"mu": F.softmax(self.scale(h), dim=-1) * library.unsqueeze(-1)}
        if self.log_theta is not None:
            out["theta"] = self.log_theta.exp().expand_as(out["mu"])
        if self.dropout is not None:
            out["pi_logits"] = self.dropout(h)
        return out


# above this inverse dispersion (nearly Poisson counts), the negative binomial's terms of
# size theta * log(theta), which cancel, are taken in float64 (and theta's own term as
# log1p): in float32 they left errors of nats per entry from theta ~ 1e5 (0.0055 per entry
# at 1e4, 4e-4 at 1e3); float64's lgamma keeps them below 1e-3 up to theta ~ 1e10
_NB_WIDE_THETA = 1e3


def _nb_log_prob(x, mu, theta):
    """Negative binomial log-probability of counts ``x`` (mean ``mu``, inverse dispersion
    ``theta``), elementwise. The terms of ``theta`` alone are computed once per feature
    where ``theta`` is one vector broadcast over the cells (the count heads' per-feature
    dispersion), rather than once per entry: lgamma and its gradient are costly. Entries
    of ``theta`` above ``_NB_WIDE_THETA`` are computed in float64 (see there)."""
    log_theta_mu = torch.log(theta + mu + _EPS)
    t = theta
    per_feature = t.dim() > 1 and t.numel() and all(s == 0 for s in t.stride()[:-1])
    if per_feature:  # (expanded)
        t = t[(0,) * (t.dim() - 1)]
    own = (t * torch.log(t + _EPS) - torch.lgamma(t)).expand_as(theta)
    out = (
        own
        - theta * log_theta_mu
        + x * (torch.log(mu + _EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(x + 1)
    )
    wide = t > _NB_WIDE_THETA
    if not bool(wide.any()):
        return out
    if per_feature:  # the wide features' columns only
        cols = wide.nonzero().squeeze(-1)
        pick = (lambda v: v.index_select(-1, cols))
    else:  # (a theta that broadcasts: (features,), (1, features), or one per entry)
        wide = wide.expand_as(out)
        pick = (lambda v: v[wide])
    xs, ms, ts = (pick(v.expand_as(out)).double() for v in (x, mu, theta))
    exact = (
        torch.lgamma(xs + ts) - torch.lgamma(ts) - torch.lgamma(xs + 1)
        - ts * torch.log1p(ms / ts) + xs * (torch.log(ms + _EPS) - torch.log(ts + ms))
    ).to(out.dtype)
    out = out.clone()
    if per_feature:
        out[..., cols] = exact
    else:
        out[wide] = exact
    return out


def _nb_log_zero(mu, theta):
    """``log NB(0) = -theta * log(1 + mu / theta)`` (its float32 form cancels for large
    ``theta``, as in :func:`_nb_log_prob`; below ``_NB_WIDE_THETA`` the form of before)."""
    plain = theta * (torch.log(theta + _EPS) - torch.log(theta + mu + _EPS))
    wide = theta > _NB_WIDE_THETA
    if not bool(wide.any()):
        return plain
    safe = torch.where(wide, theta, torch.ones_like(theta))
    return torch.where(wide, -safe * torch.log1p(mu / safe), plain)


class Poisson(Likelihood):
    """Poisson counts with mean ``library * softmax(decoder)``."""

    name = "poisson"
    counts = True
    nonnegative = True
    defaults = {"normalize": True, "log1p": True, "scale": True}

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _CountHead(n_hidden, n_vars, dispersion=False, dropout=False)

    def nll(self, params, x, target, mask=None):  # noqa: D102
        mu = params["mu"]
        return -(x * torch.log(mu + _EPS) - mu - torch.lgamma(x + 1)).mean(-1)

    def mean(self, params):  # noqa: D102
        return params["mu"]


class NegativeBinomial(Poisson):
    """Negative binomial counts with a learned per-feature inverse dispersion."""

    name = "nb"

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _CountHead(n_hidden, n_vars, dispersion=True, dropout=False)

    def nll(self, params, x, target, mask=None):  # noqa: D102
        return -_nb_log_prob(x, params["mu"], params["theta"]).mean(-1)


class ZeroInflatedNegativeBinomial(Poisson):
    """Zero-inflated negative binomial (per-cell, per-feature dropout logits)."""

    name = "zinb"

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _CountHead(n_hidden, n_vars, dispersion=True, dropout=True)

    def nll(self, params, x, target, mask=None):  # noqa: D102
        mu, theta, pi = params["mu"], params["theta"], params["pi_logits"]
        nb = _nb_log_prob(x, mu, theta)
        log_nb_zero = _nb_log_zero(mu, theta)
        zero = F.softplus(-pi + log_nb_zero) - F.softplus(-pi)  # log(pi + (1-pi) NB(0))
        nonzero = -pi - F.softplus(-pi) + nb  # log((1-pi) NB(x))
        ll = torch.where(x < 0.5, zero, nonzero)
        return -ll.mean(-1)

    def mean(self, params):  # noqa: D102
        return params["mu"] * torch.sigmoid(-params["pi_logits"])


class Bernoulli(Likelihood):
    """Bernoulli on whether a feature is non-zero (e.g. peak accessibility)."""

    name = "bernoulli"
    nonnegative = True
    image_keys = ("logits",)
    missing = True
    units = "probability"

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _Linear(n_hidden, n_vars, ("logits",))

    def nll(self, params, x, target, mask=None):  # noqa: D102
        return _feature_mean(F.binary_cross_entropy_with_logits(
            params["logits"], (x > 0).to(params["logits"].dtype), reduction="none"
        ), mask)

    def mean(self, params):  # noqa: D102
        return torch.sigmoid(params["logits"])


# below this |logit|, the continuous Bernoulli's log normaliser and mean by their series at 0
# (the closed forms cancel there: the mean's by ~eps / |l|)
_CB_SERIES = 0.5
# the continuous Bernoulli's logits are clipped to +-_CB_MAX_LOGIT, so means lie within
# [0.0625, 0.9375] (see ContinuousBernoulli; about where torch's float32 clamp left them)
_CB_MAX_LOGIT = 16.0


def _cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """Log normaliser of the continuous Bernoulli, ``log(l / tanh(l / 2))``, from the logits
    ``l`` directly: exact for every logit (torch's own clamps the probability to
    ``[eps, 1 - eps]``, which flattens it beyond |l| ~ 16 in float32), by its series
    ``log 2 + l^2/12 - 7 l^4/1440 + 31 l^6/90720 - 127 l^8/4838400`` near 0."""
    a = logits.abs()
    small = a < _CB_SERIES
    a_safe = torch.where(small, torch.ones_like(a), a)
    # log|l| - log|tanh(l/2)|, with |tanh(l/2)| = (1 - e^-|l|) / (1 + e^-|l|)
    direct = a_safe.log() - torch.log(-torch.expm1(-a_safe)) + torch.log1p(torch.exp(-a_safe))
    near = torch.where(small, logits, torch.zeros_like(logits))  # (no overflow, e.g. fp16)
    sq = near * near
    series = math.log(2.0) + sq * (
        1 / 12 - sq * (7 / 1440 - sq * (31 / 90720 - sq * 127 / 4838400))
    )
    return torch.where(small, series, direct)


def _cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """Mean of the continuous Bernoulli, ``1 / (1 - e^-l) - 1 / l``, from the logits (it
    reaches 0 and 1 only in the limit: 0.01 at l = -100); near 0 by its series
    ``1/2 + l/12 - l^3/720 + l^5/30240 - l^7/1209600``."""
    small = logits.abs() < _CB_SERIES
    pos = logits > 0
    up = torch.where(pos & ~small, logits, torch.ones_like(logits))
    down = torch.where(~pos & ~small, logits, -torch.ones_like(logits))
    # 1 / (1 - e^-l), in the form without overflow (nor infinite gradients) on either side
    share = torch.where(pos, -1.0 / torch.expm1(-up), torch.exp(down) / torch.expm1(down))
    direct = share - 1.0 / torch.where(small, torch.ones_like(logits), logits)
    near = torch.where(small, logits, torch.zeros_like(logits))
    sq = near * near
    series = 0.5 + near * (1 / 12 - sq * (1 / 720 - sq * (1 / 30240 - sq / 1209600)))
    return torch.where(small, series, direct)


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli on data in ``[0, 1]`` (e.g. normalised image intensities).

    The properly normalised likelihood of Loaiza-Ganem & Cunningham (NeurIPS 2019),
    ``log p(x) = x l - softplus(l) + log C(l)`` with ``C(l) = l / tanh(l / 2)``, computed from
    the logits ``l`` (exact at every precision; torch's version clamps the probability by
    the dtype's epsilon); its mean is the distribution's mean, ``1 / (1 - e^-l) - 1 / l``,
    not the logistic of the logits. The logits are clipped to +-16 (beyond, an entry gives
    no gradient), so means lie within about ``[0.0625, 0.9375]``: values of exactly 0 or 1
    (single-read methylation rates, an image's background) would otherwise push them
    without bound, and on the methylation benchmark the clip translated region-level
    variation best on every seed (README: against no bound, a bound on the normaliser only
    as torch's, and a smooth ``16 tanh(l / 16)``), at equal alignment. Decoded values thus
    stay off an exact 0 or 1 (a black background decodes as 0.0625 at least);
    ``"gaussian"`` has no such bound.
    """

    name = "continuous_bernoulli"
    nonnegative = True
    unit_interval = True
    image_keys = ("logits",)
    missing = True
    units = "mean in [0, 1] (a rate, e.g. methylation, or an intensity)"
    defaults = {"normalize": False, "log1p": False, "scale": False}

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _Linear(n_hidden, n_vars, ("logits",))

    def nll(self, params, x, target, mask=None):  # noqa: D102
        logits = params["logits"].clamp(-_CB_MAX_LOGIT, _CB_MAX_LOGIT)
        x = x.clamp(0.0, 1.0)
        if mask is not None:  # unmeasured entries (NaN, masked out) as 0: finite, unused
            x = torch.where(mask, x, torch.zeros_like(x))
        ll = x * logits - F.softplus(logits) + _cb_log_norm(logits)
        return -_feature_mean(ll, mask)

    def mean(self, params):  # noqa: D102
        return _cb_mean(params["logits"].clamp(-_CB_MAX_LOGIT, _CB_MAX_LOGIT))


def _log_choose(n: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``log(n choose k)``, elementwise."""
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


class _LogitsDispersion(nn.Module):
    """Logits of the success probability plus a learned per-feature concentration."""

    def __init__(self, n_hidden: int, n_vars: int, log_theta: float) -> None:
        super().__init__()
        self.logits = nn.Linear(n_hidden, n_vars)
        self.log_theta = nn.Parameter(torch.full((n_vars,), float(log_theta)))

    def forward(self, h, library=None):
        logits = self.logits(h)
        return {"logits": logits, "theta": self.log_theta.exp().expand_as(logits)}


class Binomial(Likelihood):
    """Successes out of a known number of trials per entry, e.g. methylated reads out of
    the reads covering a region (``Modality("binomial", layer=..., total_layer=...)``).

    Entries with 0 trials are unmeasured and add nothing; every other entry weighs by its
    number of trials, so a region covered by 20 reads counts 20 times one covered by one.
    The mean is the success probability (a methylation level in [0, 1]).
    """

    name = "binomial"
    nonnegative = True
    missing = True
    totals = True
    units = "success probability (rate)"
    defaults = {"normalize": False, "log1p": False, "scale": True}

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _Linear(n_hidden, n_vars, ("logits",))

    def _trials(self, total: torch.Tensor | None) -> torch.Tensor:
        if total is None:
            raise ValueError(f"the {self.name!r} likelihood needs each entry's number of trials")
        return total

    def nll(self, params, x, target, mask=None, total=None):  # noqa: D102
        total = self._trials(total)
        logits = params["logits"]
        ll = (
            x * F.logsigmoid(logits) + (total - x) * F.logsigmoid(-logits)
            + _log_choose(total, x)
        )
        return -_feature_mean(ll, mask)

    def mean(self, params):  # noqa: D102
        return torch.sigmoid(params["logits"])


class BetaBinomial(Binomial):
    """Beta-binomial: a binomial whose success probability varies between the trials'
    sources (e.g. the two alleles of a cell at a region), with a learned per-feature
    concentration ``theta`` (``alpha = p * theta``, ``beta = (1 - p) * theta``; variance
    above the binomial's, the more so the smaller ``theta``), as MethylVI's default.
    """

    name = "betabinomial"
    missing = True

    def head(self, n_hidden, n_vars):  # noqa: D102
        return _LogitsDispersion(n_hidden, n_vars, log_theta=2.0)

    def nll(self, params, x, target, mask=None, total=None):  # noqa: D102
        total = self._trials(total)
        # float64: the log-gamma terms of a large concentration cancel (lgamma(1e4) ~ 8e4,
        # float32 resolution there ~ 0.01)
        logits, theta = params["logits"].double(), params["theta"].double()
        x, total = x.double(), total.double()
        p = torch.sigmoid(logits).clamp(_EPS, 1.0 - _EPS)
        a, b = p * theta, (1.0 - p) * theta
        ll = (
            _log_choose(total, x)
            + torch.lgamma(x + a) + torch.lgamma(total - x + b) - torch.lgamma(total + theta)
            - torch.lgamma(a) - torch.lgamma(b) + torch.lgamma(theta)
        )
        return -_feature_mean(ll, mask).to(params["logits"].dtype)


def skips_missing(likelihood: Likelihood) -> bool:
    """Whether ``likelihood`` can leave unmeasured entries out of its loss: its ``missing``
    attribute is true on the class that defines its ``nll`` (so that a subclass overriding
    ``nll`` without a ``mask`` is not taken to support it)."""
    owner = next(c for c in type(likelihood).__mro__ if "nll" in c.__dict__)
    return bool(owner.__dict__.get("missing", False))


_REGISTRY: dict[str, Likelihood] = {}
_BUILT_IN: set[str] = set()  # (filled below, once the built-in classes are registered)
PREPROCESSING_OPTIONS = ("normalize", "log1p", "scale")


def register_likelihood(likelihood: type[Likelihood]) -> type[Likelihood]:
    """Register a :class:`Likelihood` subclass under its ``name`` (usable as a decorator).

    The class must implement :meth:`~Likelihood.head`, :meth:`~Likelihood.nll` and
    :meth:`~Likelihood.mean` and give all three ``defaults``. A built-in name cannot be
    taken (models saved with the built-in would load with another likelihood); registering
    a name again replaces the earlier class (e.g. a notebook cell run again), with a warning
    when the class has another name.

    Parameters
    ----------
    likelihood
        The class (not an instance); ``Modality(likelihood=likelihood.name)`` then uses it.

    Returns
    -------
    The class itself, so that ``@register_likelihood`` decorates a class definition.

    Raises
    ------
    TypeError
        For anything but a :class:`Likelihood` subclass, or one that lacks ``head``,
        ``nll`` or ``mean``.
    ValueError
        For an empty ``name``, a built-in one, or incomplete ``defaults``.
    """
    name = check_class(likelihood, Likelihood, "register_likelihood", ("head", "nll", "mean"))
    d = likelihood.defaults
    if (not isinstance(d, Mapping) or set(d) != set(PREPROCESSING_OPTIONS)
            or not all(isinstance(v, bool) for v in d.values())):
        raise ValueError(
            f"likelihood class {likelihood.__name__} ({name!r}): defaults must give each of "
            f"{list(PREPROCESSING_OPTIONS)} as True / False (e.g. {Likelihood.defaults}); "
            f"got {d!r}"
        )
    old = _REGISTRY.get(name)
    if old is not None and type(old) is not likelihood and name in _BUILT_IN:
        raise ValueError(
            f"likelihood {name!r} is built in; give {likelihood.__name__} another name"
        )
    put(_REGISTRY, likelihood, "register_likelihood", "likelihood")
    return likelihood


def get_likelihood(name: str) -> Likelihood:
    """Return the registered likelihood called ``name``.

    Parameters
    ----------
    name
        The likelihood's name, e.g. ``"nb"``, ``"bernoulli"`` or ``"gaussian"`` (see
        :func:`available_likelihoods`).

    Returns
    -------
    The registered instance of the likelihood class.

    Raises
    ------
    ValueError
        If no likelihood of that name is registered.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):  # (TypeError: an unhashable name, e.g. a list)
        hint = (
            " (an image modality is one whose obsm_key holds crops, cells x channels x [D x] "
            "H x W, with e.g. likelihood 'gaussian' or 'continuous_bernoulli')"
            if isinstance(name, str) and name.lower() in ("image", "images", "img", "conv") else ""
        )
        raise ValueError(
            f"unknown likelihood {name!r}; choose one of {sorted(_REGISTRY)}{hint}"
        ) from None


def available_likelihoods() -> list[str]:
    """Names of all registered likelihoods.

    Returns
    -------
    The registered names, built-in and user-registered, sorted.
    """
    return sorted(_REGISTRY)


for _cls in (
    Gaussian,
    Poisson,
    NegativeBinomial,
    ZeroInflatedNegativeBinomial,
    Bernoulli,
    ContinuousBernoulli,
    Binomial,
    BetaBinomial,
):
    register_likelihood(_cls)
_BUILT_IN.update(_REGISTRY)

__all__ = [
    "Likelihood",
    "register_likelihood",
    "get_likelihood",
    "available_likelihoods",
]
