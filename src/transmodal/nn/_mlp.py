"""Fully connected building blocks shared by encoders, decoders and latent heads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from .._utils import FeatureMoments


def mlp(
    n_in: int,
    hidden: Sequence[int],
    n_out: int | None = None,
    *,
    dropout: float = 0.0,
    norm: bool = True,
    activation: type[nn.Module] = nn.LeakyReLU,
) -> nn.Sequential:
    """Build ``Linear -> [LayerNorm] -> activation -> [Dropout]`` blocks.

    Parameters
    ----------
    n_in
        Input width.
    hidden
        Widths of the hidden layers (may be empty).
    n_out
        If given, a final linear layer to this width (no activation).
    dropout
        Dropout rate after each hidden activation.
    norm
        Add a ``LayerNorm`` after every hidden linear layer (batch-size independent, so
        results do not depend on how a data set is cut into batches).
    activation
        Activation class.

    Returns
    -------
    The network as an ``nn.Sequential``.
    """
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if norm:
            layers.append(nn.LayerNorm(h))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    if n_out is not None:
        layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class LatentEncoder(nn.Module):
    """Output handling shared by every encoder: a network body, then the latent point.

    Parameters
    ----------
    net
        Body mapping the (flattened) input to ``n_latent`` values, or ``2 * n_latent``
        (mean and log-variance) when ``variational``.
    n_latent
        Dimension of the latent code.
    input_dropout
        Dropout applied to the input features (a denoising autoencoder).
    standardize
        End with a per-modality batch normalisation without affine parameters: every
        modality's latent distribution has mean 0 and unit variance per dimension, so the
        adversarial alignment only has to match the shapes (no drift or collapse of scale).
    variational
        The body also outputs a per-dimension log-variance (a VAE encoder); ``forward``
        returns the mean, :meth:`distribution` both.
    """

    #: below this many cells, cells encoded "like the batch" take the batch's statistics
    MIN_OWN_STATISTICS = 32

    def __init__(
        self,
        net: nn.Module,
        n_latent: int,
        *,
        input_dropout: float = 0.0,
        standardize: bool = True,
        variational: bool = False,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        self.variational = variational
        self.net = net
        self.standardize = (
            nn.BatchNorm1d(n_latent, affine=False, momentum=0.01) if standardize else nn.Identity()
        )
        # mean and (biased) variance of the last training batch before its standardisation
        # (detached): few cells encoded "like the batch" (the anchor loss's pairs) use them;
        # dropped when the encoder leaves training mode
        self.batch_moments: tuple[torch.Tensor, torch.Tensor] | None = None

    def train(self, mode: bool = True):  # noqa: D102
        if not mode:
            self.batch_moments = None
        return super().train(mode)

    @contextlib.contextmanager
    def exact_statistics(self) -> Iterator[bool]:
        """Recompute the running statistics of the latent standardisation exactly.

        Within the block the encoder is in evaluation mode, as it embeds (no dropout; its
        batch norms, the latent's and any in the body, use their statistics and keep them),
        the latent's only recording its inputs: their mean and variance over every cell
        passed, whatever the batches (sums in float64), replace the running statistics on
        leaving. Those are otherwise an exponential average (momentum 0.01) that lags behind
        the weights by a few hundred steps, and was taken with dropout on: dropout changes
        the spread of what it feeds (Li et al., CVPR 2019, "variance shift"), so embeddings,
        computed without it, came out shrunk and the modalities shifted apart (dropout 0.5:
        latent sd 0.60, the modalities' means 0.65 of it apart, a linear classifier told them
        apart at 0.64; dropout 0.1: sd 0.93, 0.16 apart). Yields whether there is a
        standardisation to recalibrate; with fewer than two cells seen (or an error) the
        statistics are kept.
        """
        bn = self.standardize
        if not isinstance(bn, nn.BatchNorm1d):
            yield False
            return
        moments = FeatureMoments()

        def record(module, inputs):
            moments.add(inputs[0].detach().to("cpu", torch.float64).numpy())  # (MPS: no f64)

        was_training, moments_before = self.training, self.batch_moments
        # (the latent's batch norm normalises with the old statistics, which nothing reads;
        # a registered architecture's body may hold batch norms: used as at inference, their
        # statistics left as training set them)
        self.eval()
        hook = bn.register_forward_pre_hook(record)
        try:
            yield True
        finally:
            hook.remove()
            self.train(was_training)
            self.batch_moments = moments_before
        if moments.n >= 2:  # unbiased variance, as torch's running_var
            bn.running_mean.copy_(torch.from_numpy(moments.mean()))
            bn.running_var.copy_(torch.from_numpy(moments.var(ddof=1)))

    def forward(self, x):
        """Latent point (the posterior mean for a variational encoder)."""
        return self.distribution(x)[0]

    def distribution(self, x, like_batch: bool = False):
        """``(mean, log_variance)``; the log-variance is ``None`` unless variational.

        ``like_batch``: in training, fewer than :attr:`MIN_OWN_STATISTICS` cells are
        standardised with the statistics of the last batch encoded without it
        (:attr:`batch_moments`) rather than their own: batch normalisation over 2 anchor
        pairs sets every coordinate to +-1, and the anchor loss had no gradient (2-16
        pairs: partners 1.9-9.5 apart in L1 after 8 epochs, 1.2-1.3 with the batch's
        statistics). More cells keep their own statistics, taken over the same cells in
        both modalities of a pair (about 67 pairs, 32 per step: partners 1.2 apart, 1.6-2.4
        with the batch's, whose cells differ between the modalities).
        """
        h = self.net(self.input_dropout(x))
        logvar = None
        if self.variational:
            h, logvar = h.chunk(2, dim=-1)
            logvar = logvar.clamp(-10.0, 6.0)
        return self._standardized(h, like_batch), logvar

    def _standardized(self, h: torch.Tensor, like_batch: bool) -> torch.Tensor:
        bn = self.standardize
        if not (isinstance(bn, nn.BatchNorm1d) and bn.training):  # running statistics
            return bn(h)
        if like_batch:
            if h.shape[0] < self.MIN_OWN_STATISTICS and self.batch_moments is not None:
                mean, var = self.batch_moments
                return (h - mean) / torch.sqrt(var + bn.eps)
            return bn(h)
        if h.shape[0] > 1:
            self.batch_moments = (h.mean(0).detach(), h.var(0, unbiased=False).detach())
        return bn(h)


class MLPEncoder(LatentEncoder):
    """Map a (preprocessed) feature vector to a point of the shared latent space.

    Parameters
    ----------
    n_in
        Number of input features.
    n_latent
        Dimension of the shared latent space.
    hidden
        Hidden layer widths.
    dropout
        Dropout rate of hidden layers.
    input_dropout, standardize, variational
        As in :class:`LatentEncoder`.
    """

    def __init__(
        self,
        n_in: int,
        n_latent: int,
        hidden: Sequence[int],
        *,
        dropout: float = 0.1,
        input_dropout: float = 0.0,
        standardize: bool = True,
        variational: bool = False,
    ) -> None:
        net = mlp(n_in, hidden, n_latent * (2 if variational else 1), dropout=dropout)
        super().__init__(
            net,
            n_latent,
            input_dropout=input_dropout,
            standardize=standardize,
            variational=variational,
        )


class DecoderBody(nn.Module):
    """A decoder: a network mapping a latent point (and batch covariates) to the hidden
    representation of width ``n_out`` that a likelihood head consumes.

    Parameters
    ----------
    net
        The network.
    n_out
        Width of its output.
    """

    def __init__(self, net: nn.Module, n_out: int) -> None:
        super().__init__()
        self.net = net
        self.n_out = n_out

    def forward(self, z):  # noqa: D102
        return self.net(z)


class MLPDecoder(DecoderBody):
    """Map a latent point to the hidden representation consumed by a likelihood head.

    Parameters
    ----------
    n_latent
        Dimension of the shared latent space.
    hidden
        Hidden layer widths (the last one is the width handed to the head).
    dropout
        Dropout rate of hidden layers.
    """

    def __init__(self, n_latent: int, hidden: Sequence[int], *, dropout: float = 0.1) -> None:
        super().__init__(
            mlp(n_latent, hidden, None, dropout=dropout), hidden[-1] if len(hidden) else n_latent
        )
