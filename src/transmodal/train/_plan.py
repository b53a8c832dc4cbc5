"""The training step: alternating discriminator / autoencoder updates (Lightning, manual
optimisation), loss bookkeeping and the per-epoch history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist

from ..data._source import sampled_blocks
from ..model._module import CrossModalModule
from ..nn._optim import adam


def _distributed(plan) -> bool:
    """Whether ``plan``'s fit runs in several processes: by its trainer, not by the process
    group, which Lightning keeps after a fit (a one-process training later in the same
    script must not average its losses and statistics with the other processes')."""
    trainer = getattr(plan, "_trainer", None)
    return (trainer is not None and trainer.world_size > 1 and dist.is_available()
            and dist.is_initialized())


class CrossModalPlan(pl.LightningModule):
    """Adversarial training of a :class:`~transmodal.model.CrossModalModule`.

    Every step first updates the latent discriminator on detached latent points, then the
    autoencoders on reconstruction + ``lam_adv`` * adversarial (+ ``lam_cls`` * classifier
    + ``lam_anchor`` * anchor) loss.

    Parameters
    ----------
    module
        The networks.
    lr, lr_disc, weight_decay
        Adam settings of the autoencoders and of the discriminator.
    lam_adv, lam_cls, lam_anchor
        Weights of the adversarial, latent-classifier and anchor-pair loss terms.
    lam_latent
        Weight of a Gaussian prior on latent points (mean squared latent coordinate); keeps
        the latent scale bounded so the encoders cannot escape the discriminator by
        drifting apart.
    n_disc_steps
        Discriminator updates per autoencoder update.
    lam_mmd
        Weight of the kernel MMD between the modalities' latent batches.
    lam_batch
        Weight of the kernel MMD between the batches (``batch_key``) within each modality.
    beta
        Weight of the KL term of variational encoders.
    anchor_distance
        ``"l1"`` (the paper's) or ``"l2"`` distance of the anchor loss, or
        ``"contrastive"`` (InfoNCE over the pairs of a batch).
    anchor_temperature
        Temperature of the contrastive anchor loss.
    anchor
        ``None`` for a learned prior; otherwise the name of the anchor modality, whose
        autoencoder is pre-trained alone for ``pretrain_epochs`` epochs and then frozen,
        and whose latent distribution the other modalities are aligned to.
    pretrain_epochs
        Epochs of anchor-only pre-training (anchor prior only).
    adv_warmup_epochs
        The adversarial weight rises linearly to ``lam_adv`` over these epochs (counted
        after pre-training): ``lam_adv * k / adv_warmup_epochs`` in the k-th of them.
    batches
        The training :class:`~transmodal.data.EpochBatches` (its epoch is advanced here).
    """

    def __init__(
        self,
        module: CrossModalModule,
        *,
        lr: float = 1e-3,
        lr_disc: float = 1e-3,
        weight_decay: float = 0.0,
        lam_adv: float = 1.0,
        lam_cls: float = 1.0,
        lam_anchor: float = 1.0,
        lam_latent: float = 0.0,
        n_disc_steps: int = 1,
        lam_mmd: float = 0.0,
        lam_batch: float = 0.0,
        beta: float = 1e-3,
        anchor_distance: str = "l1",
        anchor_temperature: float = 0.2,
        anchor: str | None = None,
        pretrain_epochs: int = 0,
        adv_warmup_epochs: int = 0,
        batches=None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.module = module
        self.lr, self.lr_disc, self.weight_decay = lr, lr_disc, weight_decay
        self.lam_adv, self.lam_cls, self.lam_anchor = lam_adv, lam_cls, lam_anchor
        self.lam_latent = lam_latent
        self.n_disc_steps = n_disc_steps
        self.lam_mmd = lam_mmd
        self.lam_batch = lam_batch
        self.beta = beta
        self.anchor_distance = anchor_distance
        self.anchor_temperature = anchor_temperature
        self.anchor = anchor
        self.pretrain_epochs = pretrain_epochs if anchor is not None else 0
        self.adv_warmup_epochs = adv_warmup_epochs
        self.batches = batches
        # whether the anchor was frozen in this fit: its latent statistics set exactly when
        # its pre-training ended, or kept from the fit that pre-trained it
        self.anchor_frozen = False
        self.history_rows: list[dict[str, float]] = []
        # the module's weights after the last epoch whose losses were finite (CPU copies)
        self._last_finite: dict[str, torch.Tensor] | None = None
        self.diverged = False  # set (with the weights put back) before FloatingPointError
        self._sums: dict[str, dict[str, torch.Tensor | float]] = {}
        self._counts: dict[str, dict[str, torch.Tensor | float]] = {}
        self._val_means: dict[str, float] = {}  # the last validation's, for the history

    # -- optimisers ------------------------------------------------------------------------
    def configure_optimizers(self):
        """Two Adam optimisers: the autoencoders with the latent classifier (``lr``,
        ``weight_decay``), and the discriminator (``lr_disc``)."""
        m = self.module
        ae = [p for n, p in m.named_parameters() if not n.startswith("discriminator.")]
        opt_ae = adam(ae, lr=self.lr, weight_decay=self.weight_decay)
        opt_d = adam(m.discriminator.parameters(), lr=self.lr_disc)
        return [opt_ae, opt_d]

    # -- phases ----------------------------------------------------------------------------
    @property
    def pretraining(self) -> bool:
        """Whether the anchor modality is still being pre-trained alone."""
        return self.current_epoch < self.pretrain_epochs

    def _adv_weight(self) -> float:
        if self.pretraining:
            return 0.0
        e = self.current_epoch - self.pretrain_epochs
        if self.adv_warmup_epochs <= 0:
            return self.lam_adv
        return self.lam_adv * min(1.0, (e + 1) / self.adv_warmup_epochs)

    def _settle_anchor(self, max_cells: int = 2**16) -> None:
        """Before the anchor modality is frozen: set its latent standardisation to the exact
        statistics of its training cells. The others align to the anchor as it embeds in
        eval mode, with running statistics that lag the weights by a few hundred steps
        (momentum 0.01): after a short pre-training its cloud sat shifted and shrunken
        (sd 0.4-0.6, mean 0.7-0.9 away) where batch-standardised encoders cannot follow."""
        if self.batches is None:
            return
        rows = self.batches.indices[self.anchor]
        rng = np.random.default_rng(self.batches.seed)
        blocks = sampled_blocks(
            self.batches.mods[self.anchor].source, rows, self.batches.batch_size, rng, max_cells
        )
        was_training = self.module.training
        try:
            self.module.settle_latent_statistics(self.anchor, blocks, self.device, self.batches.seed)
        finally:
            self.module.train(was_training)
        self._snapshot()  # weights put back after a divergence keep these statistics

    def _set_anchor_frozen(self, frozen: bool) -> None:
        """Freeze the anchor's networks; unfrozen, they stay as the caller left them (a
        body's own frozen layers too: ``train()`` restores every flag when it ends)."""
        if not frozen:
            return
        m = self.module
        for part in (m.encoders, m.decoders, m.heads):
            for p in part[self.anchor].parameters():
                p.requires_grad_(False)

    def _snapshot(self) -> None:
        self._last_finite = {
            k: v.detach().to("cpu", copy=True) for k, v in self.module.state_dict().items()
        }

    def on_train_start(self) -> None:  # noqa: D102
        self._snapshot()

    def on_train_epoch_start(self) -> None:  # noqa: D102
        if self.batches is not None:
            self.batches.set_epoch(self.current_epoch)
        if self.anchor is not None:
            frozen = not self.pretraining
            if frozen and not self.anchor_frozen:
                if self.pretrain_epochs > 0:  # pre-trained in this fit (else: already settled)
                    self._settle_anchor()
                self.anchor_frozen = True
            self._set_anchor_frozen(frozen)

    # -- bookkeeping -----------------------------------------------------------------------
    def _accumulate(
        self, split: str, terms: dict[str, torch.Tensor | None],
        weights: dict[str, torch.Tensor | int],
    ) -> None:
        """Add a step's loss terms to the epoch's sums, each weighted by what it is a mean
        over (``weights``: cells of a modality, labelled cells; 1 by default). A term that
        is ``None`` (one this fit computes, absent from this step) adds nothing. The sums
        stay on the terms' device (no host sync per step); a weight that is a plain number
        is added as one."""
        sums = self._sums.setdefault(split, {})
        counts = self._counts.setdefault(split, {})
        for k, v in terms.items():
            if k == "loss":  # (the epoch's is composed from its terms' means: _means)
                continue
            w = weights.get(k, 1) if v is not None else 0
            sums[k] = sums.get(k, 0.0) + (0.0 if v is None else v.detach().float() * w)
            counts[k] = counts.get(k, 0.0) + w

    def _means(self, split: str) -> dict[str, float]:
        """Epoch means of the accumulated terms (weighted: per cell where a term is a mean
        over cells), over every process under DDP (every process holds the same terms:
        those a step lacks are accumulated as ``None``); a term that nothing weighed is
        left out. ``loss`` is the objective of these means (:meth:`_objective`)."""
        counts = self._counts.pop(split, {})
        sums = self._sums.pop(split, {})
        keys = sorted(sums)
        if not keys:
            return {}
        both = torch.stack([torch.as_tensor(x, dtype=torch.float32, device=self.device)
                            for x in [*(sums[k] for k in keys), *(counts[k] for k in keys)]])
        if _distributed(self):
            dist.all_reduce(both)
        values = both.tolist()
        totals = dict(zip(keys, values[len(keys) :]))
        means = {k: v / totals[k] for k, v in zip(keys, values) if totals[k] > 0}
        means["loss"] = float(self._objective(means))
        return {f"{split}_{k}": v for k, v in means.items()}

    def _average_buffers(self) -> None:
        """Under DDP, average floating-point buffers (batch-norm statistics) over processes,
        so every rank ends with identical networks."""
        if not _distributed(self):
            return
        world = dist.get_world_size()
        for buf in self.module.buffers():
            if buf.is_floating_point():
                dist.all_reduce(buf)
                buf.div_(world)

    # -- steps -----------------------------------------------------------------------------
    def _losses(
        self, batch: dict, *, train: bool
    ) -> tuple[dict[str, torch.Tensor | None], dict[str, torch.Tensor | int]]:
        """The step's loss terms (``"loss"``: the autoencoders' objective; the
        discriminator is updated here when ``train``) and what each term is a mean over."""
        m = self.module
        cells, pairs = batch["cells"], batch.get("pairs", {})
        names = [self.anchor] if self.pretraining else m.names
        zs, terms = {}, {}
        weights: dict[str, torch.Tensor | int] = {}  # what each term is a mean over
        for name in names:
            if self.anchor == name and not self.pretraining:
                zs[name] = m.encode_frozen(name, cells[name]["x"])  # the pre-trained anchor
                continue
            z, nll, kl = m.reconstruction(
                name, cells[name]["x"], cells[name].get("b"), cells[name].get("n")
            )
            zs[name] = z
            terms[f"recon_{name}"] = nll.mean()
            weights[f"recon_{name}"] = weights[f"kl_{name}"] = len(z)
            if kl is not None:
                terms[f"kl_{name}"] = kl.mean()
        # the modalities this phase trains (not the frozen anchor): by name, so that the
        # validation losses (no gradients) hold the same terms as the training ones (their
        # values differ: validation standardises latents with the running statistics)
        training = [n for n in zs if n != self.anchor or self.pretraining]
        if self.lam_latent > 0:
            trained = [zs[n] for n in training]
            if trained:
                terms["latent_l2"] = torch.stack([z.pow(2).mean() for z in trained]).mean()

        ys = {n: cells[n]["y"] for n in zs if "y" in cells[n]}
        ms = {n: cells[n]["m"] for n in zs if "m" in cells[n]}
        # discriminator step on detached latents
        if not self.pretraining:
            if ms:  # unmeasured markers take the nearest measured cell's value
                ms = m.impute_markers(zs, ms)
            # (partial alignment's class probabilities, once for every alignment term)
            probs = m.class_probabilities(zs, ys) or {}
            d_loss, d_acc = m.discriminator_loss(
                {n: z.detach() for n, z in zs.items()}, ys, ms, probs)
            terms["disc"] = d_loss
            terms["disc_acc"] = d_acc
            if train:
                _, opt_d = self.optimizers()
                detached = {n: z.detach() for n, z in zs.items()}
                for k in range(self.n_disc_steps):
                    if k:
                        d_loss, _ = m.discriminator_loss(detached, ys, ms, probs)
                    opt_d.zero_grad(set_to_none=True)
                    self.manual_backward(d_loss)
                    opt_d.step()
            adv = [
                m.adversarial_loss(n, zs[n], self.anchor, ys.get(n), ms.get(n), probs.get(n))
                for n in names
                if n != self.anchor
            ]
            terms["adv"] = torch.stack(adv).mean()
            if self.lam_mmd > 0:
                terms["mmd"] = m.mmd_loss(zs, ys, probs)
        bs = {n: cells[n]["b"] for n in training if "b" in cells[n]}
        if bs and self.lam_batch > 0:
            # (None where no modality's step holds two cells each of two batches: counted
            # as absent in the epoch's mean)
            terms["batch_mmd"] = m.batch_mmd_loss(zs, bs)

        cls = m.classifier_loss(zs, ys) if ys else None
        if cls is not None:
            terms["cls"] = cls  # (a mean over the step's labelled cells: 0 without any)
            weights["cls"] = sum((y >= 0).sum() for y in ys.values())
        if pairs and not self.pretraining:
            terms["anchor"] = m.anchor_loss(
                pairs, self.anchor_distance, frozen=self.anchor, temperature=self.anchor_temperature
            )
        terms["loss"] = self._objective(terms)
        return terms, weights

    def _objective(self, terms: Mapping[str, Any]) -> Any:
        """The autoencoders' objective from its terms, each times its weight: the
        reconstructions (+ ``beta`` x KL), ``lam_latent``, the adversarial weight of the
        epoch, ``lam_mmd``, ``lam_batch``, ``lam_cls`` and ``lam_anchor``; a term absent
        (or ``None``) adds nothing. Of one step's terms (tensors: what is optimised), and
        of an epoch's means (numbers: its history's ``loss``, so that the history's loss
        is the weighted sum of the terms beside it; the mean of the steps' objectives
        would weigh a short last step as a full one, the terms by their cells)."""
        weight = {"latent_l2": self.lam_latent, "mmd": self.lam_mmd,
                  "batch_mmd": self.lam_batch, "cls": self.lam_cls, "anchor": self.lam_anchor}
        if "adv" in terms:
            weight["adv"] = self._adv_weight()
        parts = []
        for k, v in terms.items():
            if v is None:
                continue
            if k.startswith("recon_"):
                parts.append(v)
            elif k.startswith("kl_"):
                parts.append(self.beta * v)
            elif k in weight:
                parts.append(weight[k] * v)
        if not parts:
            return torch.zeros((), device=self.device)
        return sum(parts[1:], parts[0])

    def training_step(self, batch, batch_idx):
        """One step of the autoencoders on every loss term of ``batch`` (the discriminator's
        steps are taken inside the loss computation), the terms accumulated for the epoch's
        history row."""
        terms, weights = self._losses(batch, train=True)
        opt_ae, _ = self.optimizers()
        opt_ae.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        opt_ae.step()
        self._accumulate("train", terms, weights)

    def validation_step(self, batch, batch_idx):
        """The loss terms of a batch of validation cells, accumulated for the epoch's
        monitored validation loss (no update)."""
        self._accumulate("val", *self._losses(batch, train=False))

    def on_validation_epoch_end(self) -> None:
        """The epoch's validation means (for its history row) and the loss monitored for
        early stopping, from them: the reconstructions (+ ``lam_cls`` x classifier +
        ``lam_anchor`` x anchor loss), each a mean over its cells, labelled cells or pairs;
        not the KL, which in evaluation follows the latent batch norm's running statistics
        (they lag behind the weights: with a large beta that lag outweighed the
        reconstruction, and training stopped at epoch 31 of 100 while it still improved)."""
        means = self._means("val")
        if any(k.startswith("val_recon_") for k in means):
            means["val_monitor"] = (
                sum(v for k, v in means.items() if k.startswith("val_recon_"))
                + self.lam_cls * means.get("val_cls", 0.0)
                + self.lam_anchor * means.get("val_anchor", 0.0)
            )
        self._val_means = means
        # monitored for early stopping only once pre-training and the adversarial warm-up
        # are over: earlier losses are not comparable, and an early "no improvement" would
        # stay set in Lightning's EarlyStopping and stop the run at min_epochs
        settled = self.current_epoch >= self.pretrain_epochs + self.adv_warmup_epochs
        if "val_monitor" in means and settled:
            # (the same on every process: computed from the means over all of them)
            self.log("val_monitor", means["val_monitor"], prog_bar=True, logger=False,
                     sync_dist=True)

    def _finite_weights(self) -> bool:
        values = [t for t in self.module.state_dict().values() if t.is_floating_point()]
        return bool(torch.stack([torch.isfinite(t).all() for t in values]).all())

    def on_train_epoch_end(self) -> None:
        """The epoch's row of the training history (mean loss terms, discriminator accuracy,
        the validation loss); where a loss term or a weight is no longer finite, the last
        finite weights are restored and ``FloatingPointError`` raised."""
        self._average_buffers()
        row = {"epoch": float(self.current_epoch)}
        row.update(self._means("train"))
        row.update(self._val_means)  # (validation ran before this hook)
        self._val_means = {}
        # checked once per epoch, so there is no device sync per step; a last step that
        # made the weights NaN leaves this epoch's losses finite, hence the weights too
        bad = [k for k, v in row.items() if not math.isfinite(v)]
        if bad or not self._finite_weights():
            self.diverged = True
            what = f"loss term(s) {', '.join(bad)}" if bad else "the network weights"
            kept = (
                f"its weights after epoch {int(self.history_rows[-1]['epoch'])} of this "
                "training (the last with finite losses and weights)"
                if self.history_rows else "the weights it had before this training"
            )
            if self._last_finite is not None:  # NaN weights would make every output NaN
                self.module.load_state_dict(self._last_finite)
            raise FloatingPointError(
                f"training diverged in epoch {self.current_epoch}: {what} became NaN or "
                f"infinite; the model keeps {kept}. Lower lr, check the inputs of the "
                "modalities named (e.g. cells with zero counts, extreme values), or use a "
                "likelihood that matches the data."
            )
        self._snapshot()
        row["lam_adv_effective"] = self._adv_weight()
        self.history_rows.append(row)
