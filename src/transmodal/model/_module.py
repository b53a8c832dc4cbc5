"""The cross-modal autoencoder as a pure torch module: networks, forward passes, named losses.

No AnnData and no training loop here: :mod:`transmodal.train` drives it, and
:class:`transmodal.CrossModalAE` is the user-facing class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import seeded
from ..nn._architectures import build_bodies, check_unshared
from ..nn._conv import ConvDecoder, ConvEncoder, ImageHead, random_dihedral
from ..nn._likelihoods import get_likelihood
from ..nn._mlp import DecoderBody, LatentEncoder, MLPDecoder, MLPEncoder, mlp
from ..nn._transform import InputTransform


@dataclass
class ModalityArch:
    """Architecture of one modality's autoencoder (resolved from its :class:`Modality`)."""

    n_vars: int
    likelihood: str
    normalize: bool
    log1p: bool
    scale: bool
    n_pca: int
    hidden: tuple[int, ...]
    input_dropout: float = 0.0
    image_shape: tuple[int, ...] | None = None  # (channels, *spatial): convolutional
    augment: bool = False  # random flips / rotations of training images
    n_batches: int = 0  # categories of the modality's batch_key (0 = none): decoder covariate
    missing: bool = False  # NaN entries are unmeasured (skipped by the reconstruction loss)
    architecture: str | None = None  # a registered Architecture's name (None: built-in MLP)
    architecture_options: dict[str, dict[str, Any]] | None = None  # each body's keywords


_EPS = 1e-6


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values`` weighed by ``weights`` (``None``: the plain mean; 0 where
    every weight is 0)."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(_EPS)


def _refresh_every_class_aligned(module: CrossModalModule, *_: Any) -> None:
    """Record on the host whether every modality of ``module`` holds every class, so that
    partial alignment has nothing to leave out (also a state-dict post hook: a loaded
    model's buffer says which classes each modality holds)."""
    module._every_class_aligned = bool(module.held_classes.all())


class CrossModalModule(nn.Module):
    """Per-modality encoders / decoders around one shared latent space.

    Parameters
    ----------
    archs
        Architecture of every modality, by name (any number >= 2).
    n_latent
        Dimension of the shared latent space.
    dropout
        Dropout of hidden layers (none in the convolutional image decoders).
    n_labels
        Number of label classes for the latent classifier (0 = no classifier).
    disc_hidden
        Hidden widths of the latent discriminator.
    disc_noise
        Standard deviation of Gaussian instance noise added to the discriminator's inputs
        during training.
    disc_conditional
        Condition the discriminator on the one-hot label (the classifier's prediction for
        unlabelled cells), so that alignment matches the modalities class by class (the
        paper's conditional alignment). Needs ``n_labels > 0``.
    variational
        VAE variant: encoders output a Gaussian posterior; training decodes samples and
        adds a KL term to the standard normal prior; embeddings are posterior means.
    n_private
        Modality-private latent dimensions: every encoder outputs ``n_latent`` shared plus
        ``n_private`` private coordinates; only the shared part is aligned, classified and
        returned as the embedding, and each decoder also reads its own private part
        (zeros, the prior mean, when translating from another modality).
    n_markers
        Number of continuous markers the discriminator is conditioned on (the paper's
        conditional alignment with e.g. a protein ratio); each enters standardised, with
        an indicator of whether it was measured.
    """

    def __init__(
        self,
        archs: dict[str, ModalityArch],
        *,
        n_latent: int = 32,
        dropout: float = 0.1,
        n_labels: int = 0,
        disc_hidden: tuple[int, ...] = (128, 128),
        disc_noise: float = 0.0,
        disc_conditional: bool = False,
        variational: bool = False,
        n_private: int = 0,
        n_markers: int = 0,
    ) -> None:
        super().__init__()
        self.names = list(archs)
        self.archs = archs
        self.n_latent = n_latent
        self.n_private = n_private
        n_code = n_latent + n_private
        self.likelihoods = {n: get_likelihood(a.likelihood) for n, a in archs.items()}
        self.transforms = nn.ModuleDict()
        self.encoders = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        self.heads = nn.ModuleDict()
        for name, a in archs.items():
            t = InputTransform(
                a.n_vars, normalize=a.normalize, log1p=a.log1p, scale=a.scale, n_pca=a.n_pca,
                missing=a.missing,
            )
            self.transforms[name] = t
            if a.image_shape is not None:
                keys = self.likelihoods[name].image_keys
                if keys is None:
                    raise ValueError(
                        f"modality {name!r}: likelihood {a.likelihood!r} cannot model images"
                    )
                self.encoders[name] = ConvEncoder(
                    a.image_shape, n_code, a.hidden, dropout=dropout,
                    input_dropout=a.input_dropout, variational=variational,
                )
                self.decoders[name] = ConvDecoder(
                    n_code + a.n_batches, a.image_shape, a.hidden,
                    n_out_channels=len(keys) * a.image_shape[0],
                )
                self.heads[name] = ImageHead(keys, a.image_shape[0])
                continue
            if a.architecture is not None:
                n_out = n_code * (2 if variational else 1)
                body, dec_body, width = build_bodies(
                    a.architecture, a.architecture_options, n_in=t.n_input, n_out=n_out,
                    n_latent_in=n_code + a.n_batches, dropout=dropout, modality=name,
                )
                self.encoders[name] = LatentEncoder(
                    body, n_code, input_dropout=a.input_dropout, variational=variational
                )
                self.decoders[name] = DecoderBody(dec_body, width)
                self.heads[name] = self.likelihoods[name].head(width, a.n_vars)
                continue
            self.encoders[name] = MLPEncoder(
                t.n_input,
                n_code,
                a.hidden,
                dropout=dropout,
                input_dropout=a.input_dropout,
                variational=variational,
            )
            dec = MLPDecoder(n_code + a.n_batches, tuple(reversed(a.hidden)), dropout=dropout)
            self.decoders[name] = dec
            self.heads[name] = self.likelihoods[name].head(dec.n_out, a.n_vars)
        self.disc_noise = disc_noise
        self.variational = variational
        if disc_conditional and n_labels < 1:
            raise ValueError("a conditional discriminator needs labels (labels_key)")
        self.n_labels = n_labels
        self.disc_conditional = disc_conditional
        self.n_markers = n_markers
        self.register_buffer("marker_mean", torch.zeros(n_markers))
        self.register_buffer("marker_std", torch.ones(n_markers))
        n_cond = (n_labels if disc_conditional else 0) + 2 * n_markers
        self.discriminator = mlp(
            n_latent + n_cond, disc_hidden, len(archs), dropout=0.0, norm=False
        )
        self.classifier = nn.Linear(n_latent, n_labels) if n_labels > 0 else None
        # classes seen in each modality's training labels, and the classes each modality
        # holds for partial alignment (both set by the model class; all: every class)
        self.register_buffer("class_mask", torch.ones(len(archs), max(n_labels, 1), dtype=torch.bool))
        self.register_buffer("held_classes", torch.ones_like(self.class_mask))
        # (said by the buffer; kept on the host so that a training step does not wait for
        # the device to read it, and refreshed whenever a state dict is loaded)
        self._every_class_aligned = True
        self.register_load_state_dict_post_hook(_refresh_every_class_aligned)
        if any(a.architecture is not None for a in archs.values()):  # (the user's networks)
            check_unshared(self)

    # -- forward pieces --------------------------------------------------------------------
    def encode(self, name: str, x: torch.Tensor, like_batch: bool = False) -> torch.Tensor:
        """Raw data of modality ``name`` -> latent points (``like_batch``: standardised as
        the modality's last training batch, see
        :meth:`~transmodal.nn._mlp.LatentEncoder.distribution`)."""
        t = self.transforms[name]
        z, _ = self.encoders[name].distribution(t.encoder_input(t.process(x)), like_batch)
        return z[..., : self.n_latent]

    def decode(
        self,
        name: str,
        z: torch.Tensor,
        library: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Latent points -> distribution parameters of modality ``name``.

        ``library`` (per-cell totals) scales count likelihoods; by default the median
        training library size of the modality. ``batch``: for a modality with a
        ``batch_key``, the batch code of every cell (the decoder's covariate, one-hot);
        needed there.
        """
        if library is None:
            library = self.transforms[name].library_size.expand(z.shape[0])
        if self.n_private and z.shape[-1] == self.n_latent:  # no private part: its prior mean
            z = torch.cat([z, z.new_zeros(z.shape[0], self.n_private)], dim=-1)
        n_batches = self.archs[name].n_batches
        if n_batches:
            if batch is None:
                raise ValueError(f"modality {name!r} decodes per batch: pass its batch codes")
            z = torch.cat([z, F.one_hot(batch.long(), n_batches).to(z.dtype)], dim=-1)
        return self.heads[name](self.decoders[name](z), library)

    def output(self, name: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Distribution mean in the modality's original units (preprocessing inverted).

        Count likelihoods give counts at the library size used to decode, Bernoulli gives
        probabilities, Gaussian gives the processed features with scaling and log1p undone.
        """
        likelihood = self.likelihoods[name]
        mean = likelihood.mean(params)
        width = self.archs[name].n_vars
        if not isinstance(mean, torch.Tensor) or mean.ndim != 2 or mean.shape[1] != width:
            got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
            raise ValueError(
                f"modality {name!r}: likelihood {likelihood.name!r} "
                f"({type(likelihood).__name__}.mean) returned {got}; expected (cells, "
                f"{width}), one value per cell and feature"
            )
        if likelihood.preprocessed:  # e.g. Gaussian: of the processed features
            mean = self.transforms[name].inverse(mean)
        return mean

    def translate(
        self,
        x: torch.Tensor,
        source: str,
        target: str,
        library: torch.Tensor | None = None,
        *,
        sample: bool = False,
        target_batch: int | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``D_target(E_source(x))`` in the target's original units.

        With ``sample=True`` (variational models) the latent point is drawn from the
        source's posterior instead of taking its mean (with ``generator``, on the device of
        ``x``; else torch's global generator). With ``source == target`` this is the
        modality's reconstruction and keeps its private latent part; across modalities the
        target's private part is unknown and set to its prior mean (zeros). A target with
        batches (``batch_key``) is decoded as batch ``target_batch`` (a code, or a tensor of
        one code per cell), or, with ``None``, as the mean of its decodings in every batch.
        """
        t = self.transforms[source]
        mean, logvar = self.encoders[source].distribution(t.encoder_input(t.process(x)))
        z = mean
        if sample and self.variational:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                dtype=mean.dtype)
            z = mean + noise * (0.5 * logvar).exp()
        if source != target:
            z = z[..., : self.n_latent]
        n_batches = self.archs[target].n_batches
        if not n_batches:
            return self.output(target, self.decode(target, z, library))
        if isinstance(target_batch, torch.Tensor):
            return self.output(target, self.decode(target, z, library, target_batch))
        codes = range(n_batches) if target_batch is None else [target_batch]
        total = None  # a running sum: memory of one decoding, whatever the number of batches
        for b in codes:
            codes_b = z.new_full((len(z),), b).long()
            out = self.output(target, self.decode(target, z, library, codes_b))
            total = out if total is None else total + out
        return total / len(codes)

    def reconstruction(
        self,
        name: str,
        x: torch.Tensor,
        batch: torch.Tensor | None = None,
        total: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Encode and decode a batch (``batch``: the cells' batch codes, for a modality
        with a ``batch_key``; ``total``: the trials per entry of a binomial modality, whose
        ``x`` are then the rates, NaN without trials).

        Returns the shared latent points (posterior samples in training mode for a
        variational model), the per-cell NLL and the per-cell KL divergence to N(0, I) (``None`` for a
        deterministic autoencoder).
        """
        arch = self.archs[name]
        if self.training and arch.augment and arch.image_shape is not None:
            x = random_dihedral(x, arch.image_shape)
        t = self.transforms[name]
        processed = t.process(x)
        mean, logvar = self.encoders[name].distribution(t.encoder_input(processed))
        kl = None
        z = mean
        if logvar is not None:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
            if self.training:
                z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        params = self.decode(name, z, t.library(x), batch)
        lik = self.likelihoods[name]
        if lik.totals:  # successes out of trials; entries without trials add nothing
            if total is None:
                raise ValueError(f"modality {name!r}: the {lik.name!r} loss needs the trials")
            successes = torch.round(torch.nan_to_num(x) * total)
            nll = lik.nll(params, successes, processed, total > 0, total=total)
        elif arch.missing:  # unmeasured entries: finite placeholders, masked out of the loss
            mask = ~torch.isnan(x)
            nll = lik.nll(params, torch.nan_to_num(x), processed, mask)
        else:
            nll = lik.nll(params, x, processed)
        return z[..., : self.n_latent], nll, kl

    def condition_labels(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The labels a conditional discriminator is given: ``y`` (label codes, -1 =
        unlabelled; ``None`` = all unlabelled), an unlabelled cell the latent classifier's
        prediction from ``z`` (without gradient, no device sync)."""
        with torch.no_grad():
            predicted = self.classifier(z).argmax(-1)
        if y is None:
            return predicted
        y = y.to(device=z.device, dtype=torch.long)
        return torch.where(y >= 0, y, predicted)

    def discriminate(
        self, z: torch.Tensor, y: torch.Tensor | None = None, m: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Discriminator logits; in training mode with Gaussian instance noise on ``z``.

        With a conditional discriminator, ``y`` (label codes, -1 = unlabelled) is appended
        one-hot; an unlabelled cell gets the one-hot of the latent classifier's prediction
        (without gradient), so that missing labels look like given ones (zeros gave away
        the modality with fewer labels). With markers, ``m`` (NaN = not measured) is
        appended standardised together with a measured-indicator.
        """
        if self.disc_conditional:
            onehot = F.one_hot(self.condition_labels(z, y), self.n_labels).to(z.dtype)
        if self.training and self.disc_noise > 0:
            z = z + self.disc_noise * torch.randn_like(z)
        if self.disc_conditional:
            z = torch.cat([z, onehot], dim=-1)
        if self.n_markers:
            if m is None:
                m = torch.full((z.shape[0], self.n_markers), float("nan"), device=z.device)
            seen = ~torch.isnan(m)
            value = torch.where(seen, (m - self.marker_mean) / self.marker_std, torch.zeros_like(m))
            z = torch.cat([z, value.to(z.dtype), seen.to(z.dtype)], dim=-1)
        return self.discriminator(z)

    @staticmethod
    def impute_markers(
        zs: dict[str, torch.Tensor], ms: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Markers of a step with each unmeasured value (NaN) replaced by that of the nearest
        cell (in the latent, any modality of the step) where it was measured; without any
        measured cell a value stays NaN. Conditioning the discriminator on imputed values
        keeps the cells without a measurement from giving their modality away."""
        names = [n for n in ms if n in zs]
        if not names:
            return ms
        m_all = torch.cat([ms[n].to(zs[n].device) for n in names])
        missing = torch.isnan(m_all)
        if not missing.any():
            return ms
        z_all = torch.cat([zs[n].detach().float() for n in names])
        out = m_all.clone()
        for j in range(m_all.shape[1]):
            seen = ~missing[:, j]
            if seen.any() and not seen.all():
                nearest = torch.cdist(z_all[~seen], z_all[seen]).argmin(1)
                out[~seen, j] = m_all[seen, j][nearest]
        return dict(zip(names, out.split([len(ms[n]) for n in names])))

    @staticmethod
    def _mmd(
        x: torch.Tensor, y: torch.Tensor,
        wx: torch.Tensor | None = None, wy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Multi-bandwidth Gaussian-kernel MMD between two sets of latent points, each
        point weighed by ``wx`` / ``wy`` (``None``: equally; the MMD of the two weighted
        empirical distributions; a side whose weights are all 0 leaves the other side's own
        kernel mean, so :meth:`mmd_loss` leaves such a pair out)."""
        k = CrossModalModule._kernel(torch.cat([x, y]))
        n = x.shape[0]
        if wx is None and wy is None:
            return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()
        a, b = (
            (torch.ones(len(v), dtype=k.dtype, device=k.device) if w is None else w.to(k.dtype))
            for v, w in ((x, wx), (y, wy))
        )
        a = a / a.sum().clamp_min(_EPS)
        b = b / b.sum().clamp_min(_EPS)
        return a @ k[:n, :n] @ a + b @ k[n:, n:] @ b - 2 * a @ k[:n, n:] @ b

    @staticmethod
    def _kernel(z: torch.Tensor) -> torch.Tensor:
        """The multi-bandwidth Gaussian kernel between every two rows of ``z``."""
        d2 = torch.cdist(z, z).pow(2)
        return sum(torch.exp(-d2 / (2.0 * s * s)) for s in (0.5, 1.0, 2.0, 4.0, 8.0))

    def mmd_loss(
        self, zs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor] | None = None,
        probs: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Multi-bandwidth Gaussian-kernel MMD between every pair of modalities' latents,
        each cell weighed by :meth:`alignment_weights` for that pair (``ys``: label codes,
        -1 = unlabelled; ``probs``: the step's :meth:`class_probabilities`, computed here
        if not given), averaged over the pairs where both sides have weight."""
        names = list(zs)
        ys = ys or {}
        probs = probs or self.class_probabilities(zs, ys) or {}
        out, valid = [], []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                wa = self.alignment_weights(a, zs[a], ys.get(a), other=b, probs=probs.get(a))
                wb = self.alignment_weights(b, zs[b], ys.get(b), other=a, probs=probs.get(b))
                value = self._mmd(zs[a], zs[b], wa, wb)
                if wa is None:
                    out.append(value)
                    valid.append(torch.ones((), device=value.device))
                else:  # a pair without a class in common adds nothing (no host sync)
                    has = (wa.sum() > 0) & (wb.sum() > 0)
                    out.append(torch.where(has, value, torch.zeros_like(value)))
                    valid.append(has.to(value.dtype))
        return torch.stack(out).sum() / torch.stack(valid).sum().clamp_min(1.0)

    def batch_mmd_loss(
        self, zs: dict[str, torch.Tensor], bs: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Within each modality with batches, the MMD between every two of its batches'
        latent points in the step (batches with fewer than 2 cells are skipped); ``None``
        when no step batch holds two batches. One kernel over the step's cells serves every
        pair: the mean kernel between batches g and h is ``(O^T K O)[g, h] / (n_g n_h)``
        (``O`` one-hot), so many batches (samples of an atlas) cost one matrix product. In
        at least float32, also under mixed precision (sums of many kernel values)."""
        out = []
        for name, codes in bs.items():
            _, group, counts = torch.unique(codes, return_inverse=True, return_counts=True)
            kept = counts >= 2
            if int(kept.sum()) < 2:
                continue
            cells = kept[group]
            z = zs[name][cells]
            with torch.autocast(z.device.type, enabled=False):
                z = z.to(torch.promote_types(z.dtype, torch.float32))
                # one-hot columns divided by the batch sizes: each entry a mean kernel
                weights = F.one_hot(group[cells], len(counts))[:, kept].to(z.dtype)
                weights = weights / counts[kept].to(z.dtype)
                mean = weights.T @ self._kernel(z) @ weights
                within = torch.diagonal(mean)
                i, j = torch.triu_indices(len(within), len(within), 1, device=mean.device)
                out.append(within[i] + within[j] - 2 * mean[i, j])
        return torch.cat(out).mean() if out else None

    # -- losses ----------------------------------------------------------------------------
    def discriminator_loss(
        self,
        zs: dict[str, torch.Tensor],
        ys: dict[str, torch.Tensor] | None = None,
        ms: dict[str, torch.Tensor] | None = None,
        probs: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the discriminator telling the modalities apart (each weighted
        equally) and its balanced accuracy; within a modality each cell weighed by
        :meth:`alignment_weights` (``probs``: the step's :meth:`class_probabilities`,
        computed here if not given), and a modality without weight (every cell of a class
        it alone holds) left out of both means (0 without any).
        """
        probs = probs or self.class_probabilities(zs, ys) or {}
        losses, accs, valid = [], [], []
        for k, name in enumerate(self.names):
            y = (ys or {}).get(name)
            logits = self.discriminate(zs[name], y, (ms or {}).get(name))
            target = torch.full((logits.shape[0],), k, dtype=torch.long, device=logits.device)
            w = self.alignment_weights(name, zs[name], y, probs=probs.get(name))
            losses.append(_weighted_mean(F.cross_entropy(logits, target, reduction="none"), w))
            accs.append(_weighted_mean((logits.argmax(-1) == target).float(), w))
            if w is not None:
                valid.append((w.sum() > 0).to(losses[-1].dtype))
        if not valid:  # (every class aligned: the plain means)
            return torch.stack(losses).mean(), torch.stack(accs).mean()
        v = torch.stack(valid)
        n = v.sum().clamp_min(1.0)
        return (torch.stack(losses) * v).sum() / n, (torch.stack(accs) * v).sum() / n

    def adversarial_loss(
        self,
        name: str,
        z: torch.Tensor,
        anchor: str | None,
        y: torch.Tensor | None = None,
        m: torch.Tensor | None = None,
        probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encoder loss for fooling the discriminator (a mean over the cells, each weighed
        by :meth:`alignment_weights`; ``probs``: the cells' :meth:`class_probabilities`,
        computed here if not given).

        With a learned prior every encoder pushes the discriminator's output towards the
        uniform distribution over modalities (maximal confusion; unlike flipped labels this
        does not make two modalities chase each other's position); with partial alignment
        the uniform distribution over the modalities that hold the cell's class (expected
        over the class probabilities of an unlabelled cell). With an anchor modality the
        target is the anchor's label (the non-saturating GAN loss), a cell weighed by the
        probability that the anchor holds its class.
        """
        logits = self.discriminate(z, y, m)
        n = len(self.names)
        log_q = F.log_softmax(logits, -1)
        if anchor is not None:
            target = torch.zeros(n, device=z.device)
            target[self.names.index(anchor)] = 1.0
            w = self.alignment_weights(name, z, y, other=anchor, probs=probs)
            return _weighted_mean(-(log_q * target).sum(-1), w)
        if self.classifier is None or self._every_class_aligned:
            return -(log_q * torch.full((n,), 1.0 / n, device=z.device)).sum(-1).mean()
        # each cell's target: its class probabilities over the classes its modality holds
        # with another, times the uniform distribution over the modalities holding each
        # (rows sum to the cell's weight)
        held = self.held_classes.to(device=z.device, dtype=torch.float32)
        if probs is None:
            probs = self._class_probabilities(z, y)
        shared = self._classes_aligned(name, device=z.device)
        target = (probs * shared) @ (held / held.sum(0).clamp_min(1.0)).T
        target = target.to(log_q.dtype)
        return -(log_q * target).sum() / target.sum().clamp_min(_EPS)

    @property
    def aligned_classes(self) -> torch.Tensor:
        """The classes that two or more modalities hold (``held_classes``): the classes
        whose cells the alignment terms act on."""
        return self.held_classes.sum(0) >= 2

    def _classes_aligned(
        self, name: str, other: str | None = None, *, device: torch.device | None = None
    ) -> torch.Tensor:
        """The classes (a boolean mask) on which modality ``name`` is aligned: those it
        holds with ``other``, or (``None``) with any other modality."""
        held = self.held_classes.to(device)
        mine = held[self.names.index(name)]
        if other is None:
            return mine & (held.sum(0) >= 2)
        return mine & held[self.names.index(other)]

    def _class_probabilities(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """Each cell's class probabilities (cells x classes, float32, without gradient): a
        labelled cell's (``y`` >= 0) one-hot, an unlabelled one's latent classifier's."""
        with torch.no_grad():
            p = self.classifier(z).float().softmax(-1)
            if y is not None:
                y = y.to(device=z.device, dtype=torch.long)
                onehot = F.one_hot(y.clamp_min(0), p.shape[-1]).to(p.dtype)
                p = torch.where((y >= 0)[:, None], onehot, p)
        return p

    def class_probabilities(
        self, zs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor] | None:
        """Each modality's :meth:`_class_probabilities`, computed once for a step's terms;
        ``None`` where partial alignment has nothing to weigh (no classifier, or every
        modality holds every class)."""
        if self.classifier is None or self._every_class_aligned:
            return None
        return {n: self._class_probabilities(z, (ys or {}).get(n)) for n, z in zs.items()}

    def alignment_weights(
        self, name: str, z: torch.Tensor, y: torch.Tensor | None = None,
        other: str | None = None, *, probs: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """Each cell's weight in the alignment terms (discriminator, adversarial, MMD) of
        modality ``name``: the probability that its class is one that ``name`` and another
        modality hold (``other``: that modality; default any), from
        :meth:`_class_probabilities` (1 or 0 for a labelled cell). Partial alignment: a
        class that only one modality holds has no counterpart to be aligned with, and
        aligning it anyway lays it onto another modality's private class (``probs``: the
        cells' class probabilities if already computed). ``None`` (every cell weighs 1)
        without a classifier or where every modality holds every class."""
        if self.classifier is None or self._every_class_aligned:
            return None
        if probs is None:
            probs = self._class_probabilities(z, y)
        classes = self._classes_aligned(name, other, device=z.device)
        return (probs * classes).sum(-1).to(z.dtype)

    def set_held_classes(self, held: torch.Tensor) -> None:
        """Set the classes each modality holds (modalities x classes; see
        :meth:`alignment_weights`)."""
        self.held_classes.copy_(held)
        _refresh_every_class_aligned(self)

    def classifier_loss(
        self, zs: dict[str, torch.Tensor], ys: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Cross-entropy of the latent classifier over all labelled cells (label >= 0).

        Every labelled cell is classified over all classes of the model: a cell is pulled
        only towards its own class and pushed away from every other class, including the
        classes that exist only in another modality. Unlabelled cells (-1) add nothing, so
        no cell is pulled onto a class it is not labelled with. (Restricting each
        modality's softmax to its own classes was measured to be worse on PBMC RNA / ATAC
        with partly shared cell types: it lets the private classes of the two modalities
        overlap, and up to 51 % of the RNA-only cells were then classified as ATAC-only
        types, against 3 % with the full softmax (``benchmarks/pbmc_shared_classes.py``).
        The push holds the labelled cells only: where the alignment of two distributions
        with different class mixtures lays the private classes onto each other, cells of
        those classes whose labels were not given overlap all the same, hence partial
        alignment, :meth:`alignment_weights`.)
        """
        if self.classifier is None:
            return None
        losses, weights = [], []
        for name, y in ys.items():
            logits = self.classifier(zs[name])
            ce = F.cross_entropy(logits, y.clamp_min(0), reduction="none")
            w = (y >= 0).to(ce.dtype)
            losses.append((ce * w).sum())
            weights.append(w.sum())
        return torch.stack(losses).sum() / torch.stack(weights).sum().clamp_min(1.0)

    def settle_latent_statistics(
        self, name: str, blocks: Iterable[np.ndarray], device: torch.device, seed: int
    ) -> None:
        """Set modality ``name``'s latent standardisation (batch norm) to the exact mean and
        variance of its encoder's output over the rows of ``blocks`` (raw data, read only if
        there is a standardisation), the encoder as it embeds (no dropout; a registered
        body's randomness, if any, drawn with RNG ``seed``, the global RNG untouched)
        (:meth:`~transmodal.nn._mlp.LatentEncoder.exact_statistics`)."""
        encoder = self.encoders[name]
        with encoder.exact_statistics() as active, seeded(seed, device):
            for x in blocks if active else ():
                with torch.no_grad():
                    self.encode(name, torch.from_numpy(x).to(device))

    def encode_frozen(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Encode with a frozen encoder: no gradients, no dropout, no update of its
        batch-norm statistics (the pre-trained anchor of ``prior="anchor:<name>"``)."""
        encoder = self.encoders[name]
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                return self.encode(name, x)
        finally:
            encoder.train(was_training)

    def anchor_loss(
        self,
        pairs: dict[str, dict[str, torch.Tensor]],
        distance: str = "l1",
        frozen: str | None = None,
        temperature: float = 0.2,
    ) -> torch.Tensor | None:
        """Anchor loss of the known pairs of a batch.

        ``distance="l1"`` (the paper's) or ``"l2"``: mean distance (L1, or Euclidean norm of
        the difference) between the latent points of paired cells. ``"contrastive"``:
        symmetric InfoNCE over the batch's pairs, as in CLIP — the cosine similarities of
        every cell of one modality to every paired cell of the other, divided by
        ``temperature``, are scored by cross-entropy against the true partner, in both
        directions; it pulls partners together *and* pushes the other cells' partners away.
        Modality ``frozen`` (the pre-trained anchor) is encoded by :meth:`encode_frozen`.
        """
        if not pairs:
            return None

        def enc(name: str, x: torch.Tensor) -> torch.Tensor:  # pairs: standardised as batches
            return self.encode_frozen(name, x) if name == frozen else self.encode(name, x, True)

        losses = []
        for key, p in pairs.items():
            a, b = key.split("|")
            za, zb = enc(a, p["a"]), enc(b, p["b"])
            if distance == "contrastive":
                logits = F.normalize(za, dim=-1) @ F.normalize(zb, dim=-1).T / temperature
                target = torch.arange(len(za), device=za.device)
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            else:
                diff = za - zb
                dist = diff.abs().sum(-1) if distance == "l1" else diff.pow(2).sum(-1).add(1e-12).sqrt()
                loss = dist.mean()
            losses.append(loss)
        return torch.stack(losses).mean()

