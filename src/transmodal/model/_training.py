"""Training of :class:`~transmodal.CrossModalAE`: the arguments checked, the schedule and
the batches set, the Lightning run, and the checks and statistics after it."""

from __future__ import annotations

import copy
import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import torch

from .._interrupts import Terminated
from .._hints import argument_hints
from .._utils import (
    ENSEMBLE_CONFIG,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    check_output_directory,
    check_parallel,
    first_few,
    is_global_zero,
    jsonable,
    lightning_accelerator,
    process_state,
    resolve_device,
    user_stacklevel,
)
from ..data._batches import EpochBatches
from ..data._source import check_values, sampled_blocks
from ._checks import check_number, check_seed
from ._inference import RowSubset
from ._split import choose_anchors


SEPARABLE_ACCURACY = 0.8
DISC_SEPARABLE_ACCURACY = 0.9  # aligned runs measured 0.50-0.68, unaligned ones 1.00
MIN_DISC_CELLS = 20  # cells per modality below which the conditional check says nothing
# Lightning precisions the training supports (long forms first); half-precision weights
# ("16-true", "bf16-true") break the latent distance kernels (no float16 cdist)
_PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", 32, 64, 16, "32", "64", "16", "bf16")


def _stopped_by(interrupt: type[KeyboardInterrupt]) -> str:
    """How a stopped training is told in its message: SIGTERM or Ctrl+C."""
    return "terminated (SIGTERM)" if issubclass(interrupt, Terminated) else "interrupted"


def _device_of(accelerator: str) -> torch.device:
    """The one device that Lightning's ``accelerator`` trains on in this process."""
    if accelerator == "cuda" or (accelerator in ("gpu", "auto") and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return resolve_device(accelerator if accelerator in ("mps", "auto", "gpu") else "cpu")

class TrainingMixin:
    """Training of :class:`~transmodal.CrossModalAE` (:meth:`train` and what it runs)."""

    @staticmethod
    def _check_train_params(p: Mapping[str, Any]) -> None:
        """Check the arguments of :meth:`train` (those in ``p``; the CLI checks a config's
        ``train`` section with it before any data are read)."""
        if "accelerator" in p:
            lightning_accelerator(p["accelerator"])
        check_parallel(p)
        checks = (
            # batch normalisation of the latent codes needs at least 2 cells per batch
            ("batch_size", dict(low=2, integer=True)),
            ("n_disc_steps", dict(low=1, integer=True)),
            ("max_epochs", dict(low=1, integer=True)),  # None: the size-aware default
            ("pretrain_epochs", dict(integer=True)),
            ("adv_warmup_epochs", dict(integer=True)),
            ("patience", dict(integer=True)),
            ("checkpoint_every", dict(low=1, integer=True)),
            ("lr", dict(strict=True)),
            ("lr_disc", dict(strict=True)),  # None: lr
            ("anchor_temperature", dict(strict=True)),
            *((k, {}) for k in ("weight_decay", "lam_adv", "lam_cls", "lam_anchor",
                                "lam_latent", "lam_mmd", "lam_batch", "beta")),
        )
        nullable = ("max_epochs", "pretrain_epochs", "adv_warmup_epochs", "patience", "lr_disc")
        for key, kw in checks:  # None of a nullable one: its default
            if key in p and not (key in nullable and p[key] is None):
                check_number(key, p[key], **kw)
        if p.get("seed") is not None:  # None: the model's seed
            check_seed(p["seed"])
        for key in ("early_stopping", "progress_bar"):
            if key in p and not isinstance(p[key], (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {p[key]!r}")
        if p.get("anchor_distance", "l1") not in ("l1", "l2", "contrastive"):
            raise ValueError(
                "anchor_distance must be 'l1', 'l2' or 'contrastive', got "
                f"{p['anchor_distance']!r}"
            )
        precision = p.get("precision", "32-true")
        if precision is not None and (  # None: Lightning's default, 32-true
            isinstance(precision, (bool, float)) or precision not in _PRECISIONS
        ):
            raise ValueError(
                f"precision must be one of {list(_PRECISIONS[:4])} (or Lightning's short forms "
                f"32, 64, 16, 'bf16'), got {precision!r}; half-precision weights ('16-true', "
                "'bf16-true') are not supported (the latent distance kernels need float32)"
            )

    @argument_hints
    def train(
        self,
        max_epochs: int | None = None,
        *,
        batch_size: int = 128,
        lr: float = 1e-3,
        lr_disc: float | None = None,
        weight_decay: float = 0.0,
        lam_adv: float = 1.0,
        lam_cls: float = 1.0,
        lam_anchor: float = 1.0,
        lam_latent: float = 1.0,
        n_disc_steps: int = 1,
        lam_mmd: float = 1.0,
        lam_batch: float = 0.0,
        beta: float = 1e-3,
        anchor_distance: str = "l1",
        anchor_temperature: float = 0.2,
        pretrain_epochs: int | None = None,
        adv_warmup_epochs: int | None = None,
        early_stopping: bool = True,
        patience: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 10,
        accelerator: str = "cpu",
        devices: int | str | list[int] = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        precision: str | int = "32-true",
        progress_bar: bool = True,
        seed: int | None = None,
    ) -> Self:
        """Train all autoencoders, the discriminator and the optional heads.

        Parameters
        ----------
        max_epochs
            Epochs over the largest modality; ``None`` picks a size-aware default.
        batch_size
            Cells per modality per step (at least 2: batch normalisation; a lone last
            cell of an epoch joins the previous batch).
        lr, lr_disc, weight_decay
            Adam settings: ``lr`` and ``weight_decay`` of the autoencoders and the latent
            classifier, ``lr_disc`` of the discriminator (defaults to ``lr``; the
            discriminator is not weight-decayed).
        lam_adv, lam_cls, lam_anchor
            Weights of the adversarial alignment, latent classifier and anchor loss, each
            against a reconstruction weight of 1 per modality. The adversarial term is the
            mean over the aligned modalities of their terms (the anchor loss: over pairs
            and pairs of modalities), so a weight does not grow with the number of
            modalities (the design's sum of per-modality losses would weigh it by their
            number).
        lam_latent
            Weight of a Gaussian prior on latent coordinates (the mean square of the batch's
            latent points). The latent standardisation already fixes a batch's mean square
            at 1, so it only acts in a variational model (on the sampled points, i.e. the
            posterior spread); a deterministic model is practically unaffected by it.
        n_disc_steps
            Discriminator updates per autoencoder update.
        lam_mmd
            Weight of a multi-bandwidth Gaussian-kernel MMD between the modalities' latent
            batches, a non-adversarial alignment term that stabilises the adversarial game
            (0 = the paper's purely adversarial alignment).
        lam_batch
            Modalities with a ``batch_key``: weight of the same kernel MMD between the
            latent points of the batches of each modality (within a step), which removes
            what batch effect the batch-conditioned decoder leaves in the latent space. Off
            by default: it assumes every batch holds the same cell types in the same
            proportions, and where they do not it merges distinct cells (README,
            ``benchmarks/batches.py``).
        beta
            Weight of the KL divergence of variational encoders (``variational=True``). The
            posterior means are standardised per modality like every embedding (unit
            variance per dimension), so the KL's mean term stays near ``(n_latent +
            n_private) / 2`` per cell and ``beta`` acts on the posterior variances: a large
            one widens them towards 1, as wide as the spread of the means. The
            reconstruction is a mean over the modality's features and the KL a sum over
            latent dimensions, so the ELBO's weighting is ``beta = 1 / n_features`` (the
            default 1e-3 is twice it for 2,000 genes, a twentieth of it for 50 features);
            a small ``beta`` keeps the latent space close to a deterministic one. Early stopping
            follows the validation loss without the KL (computed in evaluation, it follows
            the batch norm's running statistics, which lag behind the weights).
        anchor_distance
            Anchor loss of known pairs: the ``"l1"`` (the paper's) or ``"l2"`` distance
            between paired latent points, or ``"contrastive"``: InfoNCE over the pairs of
            each batch (every cell must be more similar to its partner than to the other
            cells' partners; CLIP's loss). It ranks held-out partners better, but
            overfits fast: on A549 (README) it lowered the test FOSCTTM at 5-100 %
            anchors with encoders on 50 principal components (``Modality(n_pca=50)``),
            ``dropout=0.5`` and 25 epochs, and raised it with full-feature encoders
            trained for 100+ epochs.
        anchor_temperature
            Temperature of the contrastive anchor loss (cosine similarities are divided
            by it); ignored, with a warning, by the distances. The contrastive loss needs
            ``n_latent >= 2`` (it compares directions; ``ValueError`` otherwise). Options
            that nothing in the model reads (``beta`` or ``lam_latent`` without
            ``variational``, ``lam_cls`` without ``labels_key``, anchor options without
            pairs) warn that they have no effect.
        pretrain_epochs
            Anchor prior only: epochs (an integer >= 0, at most ``max_epochs``) of
            pre-training the anchor autoencoder alone (default: a quarter of
            ``max_epochs``, and 0 when the model is already trained, except that a call
            interrupted during pre-training leaves its remaining epochs to the next call's
            default); ignored, with a warning, by the learned prior. The anchor autoencoder
            is frozen after it, so an untrained model needs at least 1.
        adv_warmup_epochs
            Linear warm-up (integer >= 0 epochs) of the adversarial weight (default: a
            tenth of ``max_epochs``): ``lam_adv * k / adv_warmup_epochs`` in the k-th epoch
            after pre-training (the history's ``lam_adv_effective``).
        early_stopping, patience
            Stop when the validation reconstruction (+ classifier + anchor) loss, each a
            mean over the validation cells (labelled cells, pairs), has not
            improved for ``patience`` (integer >= 0) epochs (default: a fifth of
            ``max_epochs``, >= 10). Needs validation cells in every modality
            (``validation_fraction`` > 0); without them it is off, with a warning. The
            model keeps the weights of the last epoch run (the monitored loss leaves out
            the alignment, so its best epoch need not be the best aligned one).
        checkpoint_dir, checkpoint_every
            Save the model to the directory ``checkpoint_dir`` every ``checkpoint_every``
            epochs (an integer >= 1), when training ends, and when it stops early (Ctrl+C,
            SIGTERM, a divergence: the epochs done), as :meth:`save` does (safetensors +
            JSON, each checkpoint replacing the last one in one step; under DDP by the
            first process). The checkpoint is the latest epoch's model, not the best one
            by the validation loss (scvi-tools' ``SaveCheckpoint`` keeps the best; here
            early stopping ends the training), with its latent statistics set as at
            the end of a training, so that it can also be loaded and used as it is. A
            run that stops (a job pre-empted, a machine lost) goes on from its last
            checkpoint with
            :func:`transmodal.workflows.resume_training` (CLI: ``transmodal train
            --resume``). The directory must be new, empty or hold a checkpoint of this
            model's training (refused otherwise, before training; checked again before
            each checkpoint: one that finds another run's checkpoint there warns and the
            training goes on without checkpoints, leaving that one; one that cannot be
            written warns, and only the last one is tried again when the training ends or
            stops); ``None``
            (default): no checkpoints.
        accelerator, devices, strategy, num_nodes, precision
            Passed to the Lightning ``Trainer`` (CPU by default; ``precision`` one of
            ``"32-true"``, ``"64-true"``, ``"16-mixed"``, ``"bf16-mixed"``). Several GPUs / nodes:
            ``devices=4, strategy="ddp"`` (launched with ``torchrun`` or SLURM ``srun``, or
            started by Lightning itself from a script); each process draws different step
            batches (no modality is truncated), gradients and batch-norm statistics are
            averaged over processes, the history holds the means over all processes, and
            only rank 0 warns while training and :meth:`save` s (``devices`` x ``num_nodes``
            must match the processes of a ``torchrun`` launch). ``strategy="auto"`` with
            several devices is this DDP too; ``ddp_spawn`` / ``ddp_fork`` / ``ddp_notebook`` are refused (the
            history would stay in their child processes). ``precision="16-mixed"`` /
            ``"bf16-mixed"`` enables mixed precision.
        progress_bar
            Show a progress bar.
        seed
            Seed of shuffling and dropout (default: the model's ``seed``).

        Returns
        -------
        The model itself (its ``history`` holds the per-epoch losses).

        Notes
        -----
        Calling ``train`` again continues from the current weights with new optimisers
        (Adam's moments start afresh) and appends to the history; with the same ``seed`` the
        batches come in the same order as in the first call (pass another ``seed`` for
        others); the adversarial weight rises again over ``adv_warmup_epochs`` (pass 0 to
        continue at full weight), while a trained anchor is not pre-trained again. Ctrl+C
        stops training with ``KeyboardInterrupt`` (SIGTERM: its subclass
        :class:`transmodal.train.Terminated`; a ``SystemExit`` the caller's own code raises
        meanwhile, e.g. its SIGTERM handler's, is raised again as it is); the model keeps
        the weights trained so far and the history of the epochs completed (with
        ``checkpoint_dir``, saved there). Any other error raised while training (e.g. a file
        that cannot be read) leaves the model as it was before this call, weights included.
        """
        self._check_train_params(locals())
        # Lightning (about 2 s to import) is loaded only to train: embedding, translating
        # and loading models do without it
        from ..train import CrossModalPlan, default_max_epochs
        from ..train._callbacks import SaveEvery

        accelerator = lightning_accelerator(accelerator)
        if checkpoint_dir is not None:  # (before training: not refused after it)
            self._check_checkpoint_dir(checkpoint_dir)
        elif checkpoint_every != 10:
            warnings.warn(f"checkpoint_every={checkpoint_every!r} has no effect: no "
                          "checkpoint_dir", UserWarning, stacklevel=user_stacklevel())
        # (the anchor's batches: checked below, where this call trains it)
        self._check_training_cells(frozen=self.anchor_modality_)
        if is_global_zero(launcher=True):
            self._warn_unknown_labels()
        seed = self.init_params_["seed"] if seed is None else seed
        n_max = max(md.n_obs for md in self.mods.values())
        max_epochs = default_max_epochs(n_max) if max_epochs is None else int(max_epochs)
        losses = {
            "lr": lr, "lr_disc": lr if lr_disc is None else lr_disc,
            "weight_decay": weight_decay, "lam_adv": lam_adv, "lam_cls": lam_cls,
            "lam_anchor": lam_anchor, "lam_latent": lam_latent, "n_disc_steps": n_disc_steps,
            "lam_mmd": lam_mmd, "lam_batch": lam_batch, "beta": beta,
            "anchor_distance": anchor_distance, "anchor_temperature": anchor_temperature,
        }
        self._check_options_used(losses)
        pretrain_epochs, pretrain_owed = self._pretraining(pretrain_epochs, max_epochs)
        # the anchor modality trains only while it is pre-trained (then it is frozen)
        frozen = self.anchor_modality_ if pretrain_epochs == 0 else None
        if self.anchor_modality_ is not None and frozen is None:
            self._refuse_unknown_batches(self.anchor_modality_)
        batch_loss_acts = False  # (whether lam_batch can act: warned about if not)
        if is_global_zero(launcher=True):
            batch_loss_acts = self._warn_batches(lam_batch, frozen)
        if adv_warmup_epochs is None:
            adv_warmup_epochs = max_epochs // 10
        if (lam_adv > 0 and adv_warmup_epochs > 0 and pretrain_epochs < max_epochs
                and pretrain_epochs + adv_warmup_epochs > max_epochs):  # (reached at =)
            warnings.warn(
                f"adv_warmup_epochs={adv_warmup_epochs} (after {pretrain_epochs} pre-training "
                f"epochs) reaches max_epochs={max_epochs}: the adversarial weight never "
                f"reaches lam_adv={lam_adv}"
                + (", and early stopping, which starts after the warm-up, never acts"
                   if early_stopping else "")
                + "; lower adv_warmup_epochs or raise max_epochs",
                UserWarning, stacklevel=user_stacklevel(),
            )
        classifier_trained = self.train_params_.get("classifier_trained", self.is_trained_)
        if self.module.classifier is not None and lam_cls == 0 and not classifier_trained:
            warnings.warn(
                f"lam_cls=0 leaves the latent classifier of labels_key "
                f"{self.init_params_['labels_key']!r} untrained: predict_labels would answer "
                "from its random weights"
                + (", and disc_conditional conditions unlabelled cells on those predictions"
                   if self.init_params_["disc_conditional"] else ""),
                UserWarning, stacklevel=user_stacklevel(),
            )
        if patience is None:
            patience = max(10, max_epochs // 5)
        train_batches, val_batches = self._epoch_batches(
            batch_size, seed, warn_no_validation=early_stopping, max_epochs=max_epochs
        )
        plan = CrossModalPlan(
            self.module,
            **{**losses, "lam_cls": lam_cls if self.module.classifier is not None else 0.0},
            anchor=self.anchor_modality_,
            pretrain_epochs=pretrain_epochs,
            adv_warmup_epochs=adv_warmup_epochs,
            batches=train_batches,
        )
        anchor = self.anchor_modality_

        done_before = 0 if self.history_ is None else int(len(self.history_))
        # (a model from_reference: the modalities whose networks came trained, kept)
        copied = self.train_params_.get("reference_modalities")

        def record(epochs_run: int, finished: bool = False) -> dict[str, Any]:
            """``train_params_`` once this call has run ``epochs_run`` epochs (``finished``:
            and ended, by its last epoch or early stopping)."""
            return jsonable({
                # (any call's) classifier loss with a weight: predict_labels is no guess
                "classifier_trained": bool(classifier_trained or (lam_cls > 0 and epochs_run)),
                "max_epochs": max_epochs,
                "epochs_run": epochs_run,  # by this call; history holds every call's
                "epochs_total": done_before + epochs_run,
                # the epochs in all that this call trains towards, and whether it ended (a
                # checkpoint's: what tm.workflows.resume_training continues)
                "epochs_target": done_before + max_epochs,
                "finished": finished,
                "epochs_before": done_before,
                "batch_size": batch_size,
                **losses,
                "pretrain_epochs": pretrain_epochs,
                # (cut short by an interrupt: the next call's default finishes it)
                "pretrain_left": max(0, pretrain_owed - epochs_run) if anchor else 0,
                "adv_warmup_epochs": adv_warmup_epochs,
                "early_stopping": early_stopping,
                "patience": patience,
                "seed": seed,
                **({"checkpoint_every": checkpoint_every} if checkpoint_dir is not None else {}),
                **({"reference_modalities": copied} if copied else {}),
            })

        callbacks = []
        if checkpoint_dir is not None:
            saving = SaveEvery(
                lambda rows: self._save_checkpoint(
                    checkpoint_dir, rows, record, frozen=anchor if plan.anchor_frozen else None,
                    batch_size=batch_size, seed=seed,
                ),
                checkpoint_every,
            )
            callbacks.append(saving)
        # what the cells trained on hold (saved with the model: a later load tells them
        # from other cells of the same names, also once the AnnData is edited in place)
        self._trained_values = self._values_fingerprint()
        history, interrupted, diverged = self._fit(
            plan, train_batches, val_batches, max_epochs=max_epochs, accelerator=accelerator,
            devices=devices, strategy=strategy, num_nodes=num_nodes, precision=precision,
            progress_bar=progress_bar, early_stopping=early_stopping, patience=patience,
            min_epochs=pretrain_epochs + adv_warmup_epochs, seed=seed, callbacks=callbacks,
        )
        epochs_run = int(len(history))
        if batch_loss_acts and epochs_run and "train_batch_mmd" not in history.columns:
            warnings.warn(
                f"lam_batch={lam_batch} had no effect: no training step held 2 cells each of "
                "two batches of a modality (its batches are small against the cells per "
                f"step); raise batch_size (now {batch_size})",
                UserWarning, stacklevel=user_stacklevel(),
            )
        self.train_params_ = record(epochs_run, finished=not interrupted and diverged is None)
        if epochs_run:  # (an interrupt within the first epoch adds nothing)
            self.history_ = self._history_with(history)
        self.is_trained_ = self.is_trained_ or epochs_run > 0
        if checkpoint_dir is not None and isinstance(saving.error, FileExistsError):
            checkpoint_dir = None  # (another run's directory now, kept: warned)
        stopped = checkpoint_dir is not None and epochs_run and (interrupted or diverged)
        if stopped:
            # the epochs done, at once (a pre-empted job has seconds left after SIGTERM):
            # the last finite ones after a divergence
            self._save_last_checkpoint(checkpoint_dir)
        if epochs_run:  # the anchor, once frozen, keeps the statistics set then
            self._recalibrate_latent_norm(
                frozen=anchor if plan.anchor_frozen else None, batch_size=batch_size,
                device=_device_of(accelerator), seed=seed,
            )
        if interrupted or diverged is not None:  # (not measured on these weights)
            self.mixing_accuracy_ = self.disc_accuracy_ = None
        if stopped:  # again, as the model now is (its latent statistics set)
            self._save_last_checkpoint(checkpoint_dir)
        if diverged is not None:
            raise diverged
        if isinstance(interrupted, SystemExit):  # (the caller's own: as it is)
            raise interrupted
        if interrupted:  # (Ctrl+C, or SIGTERM: raised as it came)
            saved = (f"; they are saved in {checkpoint_dir} (go on with "
                     "tm.workflows.resume_training, or the command line's --resume)"
                     if stopped else "")
            raise interrupted(
                f"training {_stopped_by(interrupted)} after {epochs_run} complete epoch(s) of "
                f"{max_epochs}; the model keeps the weights trained so far (history_ lists "
                f"those epochs){saved}"
            )
        if is_global_zero(launcher=True):  # (under DDP every process holds the same model)
            self._warn_if_separable()
        if checkpoint_dir is not None:  # the trained model, as the last checkpoint
            self._save_last_checkpoint(checkpoint_dir, ended=True)
        return self

    def _save_last_checkpoint(self, path: str | os.PathLike, *, ended: bool = False) -> None:
        """Save the model to ``path`` after a training that ended (``ended``) or stopped
        early (interrupted or diverged), warning instead of raising if that fails (the model
        in memory is trained; a stop's own error follows)."""
        if not is_global_zero():  # (the first process writes it; the others, reading the
            return  # directory while it is swapped, could warn for nothing)
        try:
            self._check_checkpoint_dir(path, history=self.history_)
            self.save(path, overwrite=True)
        except Exception as err:  # (any: the interrupt or divergence is what is raised)
            what = "the final checkpoint" if ended else "the checkpoint of the epochs done"
            warnings.warn(f"{what} could not be written to {path}: {err}", UserWarning,
                          stacklevel=user_stacklevel())

    def _check_checkpoint_dir(
        self, path: str | os.PathLike, history: pd.DataFrame | None = None
    ) -> None:
        """Refuse a ``checkpoint_dir`` that holds anything but checkpoints of this model's
        training: other files, an ensemble, or a saved model whose history this model's
        (or ``history``, that of the checkpoint about to be written) does not begin with
        (another run's checkpoint, a model saved there), which the checkpoint would
        replace. Checked before training and before each checkpoint (another run may write
        there meanwhile)."""
        from ._io import read_config

        check_output_directory(path, overwrite=True, names=(MODEL_CONFIG, MODEL_WEIGHTS))
        folder = Path(path)
        if (folder / ENSEMBLE_CONFIG).exists():
            raise FileExistsError(
                f"checkpoint_dir {path} holds a saved ensemble; choose another directory"
            )
        if not (folder / MODEL_CONFIG).is_file():
            return
        saved = read_config(folder).get("history") or {}
        epochs = len(saved.get("epoch", []))
        mine = history if history is not None else self.history_
        mine = mine if mine is not None else pd.DataFrame()
        loss = np.asarray(saved.get("train_loss", []), dtype=float)
        ours = len(mine) >= epochs and (not epochs or (
            "train_loss" in mine and np.allclose(mine["train_loss"].to_numpy()[:epochs], loss,
                                                 rtol=1e-6, equal_nan=True)))
        if not ours and history is not None:  # (written there since the training began)
            raise FileExistsError(
                f"checkpoint_dir {path} now holds a saved model ({epochs} epochs) of another "
                "training (another run writing there, or a model saved there since this "
                "training began), which is kept"
            )
        if not ours:
            raise FileExistsError(
                f"checkpoint_dir {path} holds a saved model ({epochs} epochs) whose training "
                "this one does not continue (another run's checkpoint, or a model saved "
                "there), which the first checkpoint would replace: resume it with "
                f"tm.workflows.resume_training({str(path)!r}, data), or choose another "
                "directory"
            )

    def _history_with(self, history: pd.DataFrame) -> pd.DataFrame:
        """The history so far followed by ``history`` (a call's epochs, numbered on)."""
        if self.history_ is None or not len(self.history_):
            return history
        history = history.copy()
        history.index = history.index + int(self.history_.index.max()) + 1
        return pd.concat([self.history_, history])

    def _save_checkpoint(
        self, path: str | os.PathLike, rows: list[dict[str, float]],
        record: Callable[[int], dict[str, Any]], *, frozen: str | None, batch_size: int,
        seed: int,
    ) -> None:
        """Save the model as it is after this call's epochs ``rows`` (their history, and
        ``record(len(rows))`` as its ``train_params_``) to ``path``, as :meth:`save` does,
        during training: with the latent statistics set as when training ends
        (:meth:`_recalibrate_latent_norm`, where the networks are), so that a checkpoint
        loaded as it is embeds as a finished model does; the training goes on with its
        running averages, restored after the save (it trains as without checkpoints)."""
        from ..train._trainer import history_frame
        from ._io import save_model

        snapshot = copy.copy(self)  # (the networks shared: their weights now)
        snapshot.history_ = self._history_with(history_frame(rows))
        snapshot.train_params_ = record(len(rows))
        snapshot.is_trained_ = True
        # (measured when a training ends, on its weights: not these)
        snapshot.mixing_accuracy_ = snapshot.disc_accuracy_ = None
        self._check_checkpoint_dir(path, snapshot.history_)
        norms = [
            e.standardize for e in self.module.encoders.values()
            if isinstance(getattr(e, "standardize", None), torch.nn.BatchNorm1d)
        ]
        running = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in norms]
        try:
            self._settle_latent_norm(
                frozen=frozen, batch_size=batch_size, seed=seed,
                device=next(self.module.parameters()).device,
            )
            save_model(snapshot, path, overwrite=True)
        finally:
            for bn, (mean, var) in zip(norms, running):
                bn.running_mean.copy_(mean)
                bn.running_var.copy_(var)

    def _check_training_cells(self, frozen: str | None = None) -> None:
        """Refuse to train on modalities without cells, with fewer than 2 training cells,
        with cells of no batch of the model (but ``frozen``, an anchor whose networks this
        call does not train: see :meth:`_refuse_unknown_batches`) or whose batch / label /
        marker columns were edited since the model was built; scan values edited in place
        since (``check_data``)."""
        for name, mask in self.val_masks_.items():
            md = self.mods[name]
            if md.n_obs == 0:
                raise ValueError(
                    f"modality {name!r} has no cells (a model loaded without its data?); "
                    "to train further, load it with data for every modality"
                )
            md.check_current()
            changed = md.obs_columns_changed(
                self.init_params_["labels_key"], self.label_categories_,
                self.init_params_.get("marker_key"),
            )
            if changed:  # (the decoders' batches, the classes are fixed when it is built)
                raise ValueError(
                    f"modality {name!r}: {', '.join(changed)} changed since the model was "
                    "built; it trains on the batches, labels and markers it read then. To "
                    "train on the new values build the model again (a saved one loaded with "
                    "CrossModalAE.load(path, data) reads them anew, but only within its "
                    "batches and label classes), or restore the column"
                )
            if self._check_data:  # values edited in place since (e.g. sc.pp.log1p)
                self._warn_other_units(md.source, check_values(
                    md.source, md.spec, new_cells=self.is_trained_))
            n_train = int((~mask).sum())
            if n_train < 2:
                raise ValueError(
                    f"modality {name!r} has {n_train} training cell(s); training needs at "
                    "least 2 per modality (batch normalisation)"
                )
            if name != frozen:
                self._refuse_unknown_batches(name)

        labels_key = self.init_params_["labels_key"]
        if labels_key is not None and not any(
                md.labels is not None and (md.labels >= 0).any() for md in self.mods.values()):
            raise ValueError(
                f"labels_key {labels_key!r}: no cell of the data holds a label (obs"
                f"[{labels_key!r}] missing or empty in every modality), and the model, built "
                "with a latent classifier on these labels, would train further without it; "
                "give the data with the column (NaN for cells without a label)"
            )

    def _refuse_unknown_batches(self, name: str) -> None:
        """``ValueError`` if cells of modality ``name`` have no batch of the model: its
        decoder, trained, needs each training and validation cell's batch."""
        md, mask = self.mods[name], self.val_masks_[name]
        batches = md.batches
        if batches is not None and (batches < 0).any():  # (validation cells are decoded too)
            n_val = int((batches[mask] < 0).sum())
            raise ValueError(
                f"modality {name!r}: {int((batches < 0).sum())} cell(s) "
                + (f"({n_val} of them validation cells) " if n_val else "")
                + f"have no batch of the model (obs[{md.spec.batch_key!r}] missing, empty "
                f"or holding a batch other than {self.batch_categories_[name]}); the "
                "decoder needs each training and validation cell's batch"
            )

    def _check_options_used(self, given: Mapping[str, Any]) -> None:
        """Warn about options of :meth:`train` in ``given``, set away from their default,
        that nothing in this model reads; refuse the contrastive anchor loss in one latent
        dimension."""
        has_pairs = bool(self.anchors_ or self.geometric_pairs_)
        if (given["anchor_distance"] == "contrastive" and self.module.n_latent < 2
                and given["lam_anchor"] and has_pairs):
            raise ValueError(
                "anchor_distance='contrastive' needs n_latent >= 2: it compares directions "
                "(cosine similarity), and in one dimension every cell points one of two ways, "
                "so the pairs would teach nothing; use anchor_distance='l1' or 'l2'"
            )
        no_pairs = None if has_pairs else "the model has no anchor pairs or pseudo-pairs"
        idle = {
            "beta": None if self.init_params_.get("variational")
            else "the model is not variational (variational=True)",
            "lam_latent": None if self.init_params_.get("variational")
            else "the latent standardisation fixes the latent points' mean square in a "
                 "model that is not variational (variational=True)",
            "lam_cls": None if self.module.classifier is not None
            else "the model has no latent classifier (labels_key)",
            **dict.fromkeys(("lam_anchor", "anchor_distance", "anchor_temperature"), no_pairs),
        }
        if idle["anchor_temperature"] is None and given["anchor_distance"] != "contrastive":
            idle["anchor_temperature"] = (
                "only anchor_distance='contrastive' has a temperature (not "
                f"{given['anchor_distance']!r})"
            )
        defaults = inspect.signature(type(self).train).parameters
        for name, why in idle.items():
            value = given[name]
            if why and value not in (defaults[name].default, 0) and is_global_zero(launcher=True):
                warnings.warn(f"{name}={value!r} has no effect: {why}", UserWarning,
                              stacklevel=user_stacklevel())

    def _pretraining(self, pretrain_epochs: int | None, max_epochs: int) -> tuple[int, int]:
        """The epochs this call pre-trains the anchor modality (``prior="anchor:..."``) and
        those it owes, counting what an interrupted call left undone (the anchor is frozen
        after pre-training, so an untrained one needs at least one epoch)."""
        anchor, prior = self.anchor_modality_, self.init_params_["prior"]
        if anchor is None:
            if pretrain_epochs:
                warnings.warn(
                    f"pretrain_epochs={pretrain_epochs} is ignored: only "
                    f"prior='anchor:<modality>' pre-trains a modality (this model's prior is "
                    f"{prior!r})", UserWarning, stacklevel=user_stacklevel(),
                )
            return 0, 0  # nor does it delay early stopping (min_epochs)
        # pre-training epochs an interrupted call left undone (the anchor is not frozen yet)
        left = int(self.train_params_.get("pretrain_left", 0))
        owed = given = pretrain_epochs  # (given: by the caller)
        # a trained anchor autoencoder (also one from_reference copied) is not pre-trained again
        from_reference = anchor in (self.train_params_.get("reference_modalities") or ())
        trained = self.is_trained_ or from_reference
        if pretrain_epochs is None:
            pretrain_epochs = max(1, max_epochs // 4) if not trained else min(left, max_epochs)
            owed = max(pretrain_epochs, left)
        elif left and pretrain_epochs < left:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs}: the anchor modality {anchor!r} is "
                f"{left} epoch(s) short of the pre-training an interrupted call asked for, "
                "and is frozen after this call's pre-training (by default the call finishes "
                "it)", UserWarning, stacklevel=user_stacklevel(),
            )
        if given and from_reference:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs} trains the anchor modality {anchor!r} again, "
                "whose networks came from the reference (CrossModalAE.from_reference): its "
                "embeddings will no longer be the reference's; leave pretrain_epochs out to "
                "keep it frozen", UserWarning, stacklevel=user_stacklevel(),
            )
        if pretrain_epochs == 0 and not trained:
            raise ValueError(
                f"pretrain_epochs=0 with prior {prior!r} on an untrained model: the anchor "
                f"modality {anchor!r} is frozen after pre-training, so it would keep its "
                "random weights; pre-train it (pretrain_epochs >= 1) or use prior='learned'"
            )
        if pretrain_epochs > max_epochs:
            raise ValueError(
                f"pretrain_epochs={pretrain_epochs} > max_epochs={max_epochs} (prior "
                f"{prior!r}): pre-training the anchor modality {anchor!r} leaves no epoch to "
                "train the other modalities"
            )
        if pretrain_epochs == max_epochs:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs} = max_epochs (prior {prior!r}): only the "
                f"anchor modality {anchor!r} is trained; no epoch is left to train the other "
                "modalities", UserWarning, stacklevel=user_stacklevel(),
            )
        return pretrain_epochs, owed

    def _epoch_batches(
        self, batch_size: int, seed: int, *, warn_no_validation: bool, max_epochs: int
    ) -> tuple[EpochBatches, EpochBatches | None]:
        """The training batches (with the anchor pairs and pseudo-pairs) and the validation
        batches (``None`` without validation cells in every modality: a warning with
        ``warn_no_validation``, since early stopping is then off)."""
        train_idx = {n: np.flatnonzero(~m) for n, m in self.val_masks_.items()}
        val_idx = {n: np.flatnonzero(m) for n, m in self.val_masks_.items()}
        # pseudo-pairs first, then anchors (the order sets the batches' draws); a pair of
        # modalities with too few anchors to use keeps its pseudo-pairs
        pairs = dict(self.geometric_pairs_)
        usable = self._usable_anchors()
        for key, value in self.anchors_.items():
            if key in usable or key not in pairs:
                pairs[key] = value
            elif is_global_zero(launcher=True):
                a, b = key.split("|")
                warnings.warn(
                    f"anchor pairs between {a!r} and {b!r}: only {len(value[0])} training "
                    "pair, too few for the anchor loss; the shape-based pseudo-pairs take "
                    "their place", UserWarning, stacklevel=user_stacklevel(),
                )
        train_batches = EpochBatches(
            self.mods, train_idx, batch_size=batch_size, pairs=pairs, seed=seed,
        )
        if not all(len(v) for v in val_idx.values()):
            if warn_no_validation and is_global_zero(launcher=True):
                self._warn_no_validation([n for n, v in val_idx.items() if not len(v)],
                                         max_epochs)
            return train_batches, None
        # the same share of the validation cells' pairs as of the training cells' (all of
        # them would tell early stopping more pairs than the model may know)
        val_pairs = choose_anchors(
            self.mods, self.val_masks_, self.init_params_["anchor_fraction"], seed,
            warn=False,  # (warned about, if at all, for the training pairs)
        ) if self.anchors_ else None
        val_batches = EpochBatches(
            self.mods, val_idx, batch_size=batch_size, pairs=val_pairs, shuffle=False
        )
        return train_batches, val_batches

    def _warn_no_validation(self, lacking: list[str], max_epochs: int) -> None:
        """Warn that early stopping is off: the modalities ``lacking`` have no validation
        cells (and why: a modality of fewer than 4 cells, a fraction leaving too few)."""
        fraction = self.init_params_["validation_fraction"]
        # (a modality of 4 cells or more draws 2 validation cells at any fraction, as a rule)
        small = {n: md.n_obs for n, md in self.mods.items() if fraction > 0 and md.n_obs < 4}
        needs = "the split needs 2 validation and 2 training cells in every modality"
        why = (
            "load() dropped the saved validation split, since the cells given to it are "
            "not the training cells in their order (its former validation cells now "
            "train too; to keep the split, load with the training cells as they were)"
            if self._split_dropped else
            f"validation_fraction={fraction}: {needs}, and "
            + ", ".join(f"{n!r} ({k} cells)" for n, k in small.items())
            + f" {'holds' if len(small) == 1 else 'hold'} fewer than 4"
            if small else f"validation_fraction={fraction}"
            + (f": {needs}" if fraction > 0 else "")
        )
        warnings.warn(
            f"early_stopping=True is off: no validation cells in "
            f"{'modality' if len(lacking) == 1 else 'modalities'} "
            f"{', '.join(map(repr, lacking))} ({why}); all {max_epochs} epochs run",
            UserWarning,
            stacklevel=user_stacklevel(),
        )

    def _fit(
        self, plan: Any, train_batches: EpochBatches, val_batches: EpochBatches | None,
        *, max_epochs: int, **trainer: Any,
    ) -> tuple[pd.DataFrame, type[KeyboardInterrupt] | SystemExit | None, BaseException | None]:
        """Run ``plan`` with Lightning; return the history of the epochs run, the class of
        the interrupt that stopped it (``KeyboardInterrupt`` for Ctrl+C, ``Terminated`` for
        SIGTERM, or the caller's own ``SystemExit`` itself, e.g. of its SIGTERM handler;
        ``None`` if none did) and the divergence error it ended with (the weights are those
        of the last finite epoch). Any other error, or an interrupt within the first epoch,
        leaves the weights as they were before; afterwards the module is float32 on the
        CPU, each parameter trainable as before the call (the anchor was frozen in it) and in
        evaluation mode."""
        from ..train import TrainingDiverged, TrainingInterrupted, run_training

        # an interrupt within the first epoch restores these: the model stays as it was
        before = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        trainable = [p.requires_grad for p in self.module.parameters()]  # (the caller's)
        self.module.train()
        interrupted: type[KeyboardInterrupt] | SystemExit | None = None
        diverged = None
        try:
            history = run_training(plan, train_batches, val_batches, max_epochs=max_epochs,
                                   **trainer)
        except TrainingInterrupted as err:  # Ctrl+C: record the epochs run, then re-raise
            history = err.history  # (as what it was: SIGTERM too, a caller's SystemExit)
            interrupted = err.exit if err.exit is not None else err.kind
        except TrainingDiverged as err:  # the last finite epoch's weights are back: record
            history, diverged = err.history, err  # the epochs up to it, then re-raise
        except BaseException:  # any other error: the model stays as it was (its history and
            self.module.load_state_dict(before)  # flags tell of the weights before the call)
            raise
        finally:  # also after a failure or an interrupt: float32 weights on the CPU,
            # trainable as they were before (the anchor was frozen; a registered
            # architecture's body may hold layers its author froze), in evaluation mode
            self.module.float().cpu().eval()
            for p, was in zip(self.module.parameters(), trainable):
                p.requires_grad_(was)
        if interrupted and not len(history):  # part of an epoch: the model stays as it was
            self.module.load_state_dict(before)
            if isinstance(interrupted, SystemExit):
                raise interrupted
            raise interrupted(
                f"training {_stopped_by(interrupted)} within its first epoch (of {max_epochs}); "
                "the model keeps the weights it had before this train() call"
            )
        return history, interrupted, diverged

    def _recalibrate_latent_norm(
        self, *, frozen: str | None, batch_size: int, device: torch.device, seed: int,
        max_cells: int = 2**16,
    ) -> None:
        """Set each trained encoder's latent standardisation (batch norm) to the mean and
        variance of its input over the training cells (at most ``max_cells`` per modality,
        drawn with ``seed``) with the final weights, the encoder as it embeds (no dropout)
        (:meth:`~transmodal.nn._mlp.LatentEncoder.exact_statistics`; no image augmentation).
        Training keeps an exponential average that lags behind the weights, so after few
        steps the modalities' embeddings came out shifted against each other (300 synthetic
        cells, 5 epochs: their mean embeddings 0.90 apart, in units of the latent's spread).
        The ``frozen`` anchor modality keeps the statistics the others were aligned to (set
        the same way when it was frozen; a fit that only pre-trains it recalibrates it).
        """
        self.module.to(device).eval()
        try:
            self._settle_latent_norm(frozen=frozen, batch_size=batch_size, device=device,
                                     seed=seed, max_cells=max_cells)
        finally:
            self.module.cpu().eval()

    def _settle_latent_norm(
        self, *, frozen: str | None, batch_size: int, device: torch.device, seed: int,
        max_cells: int = 2**16,
    ) -> None:
        """:meth:`_recalibrate_latent_norm` of the networks on ``device``, where they are."""
        rng = np.random.default_rng(seed)
        for name, md in self.mods.items():
            if name == frozen:
                continue
            rows = np.flatnonzero(~self.val_masks_[name])
            self.module.settle_latent_statistics(
                name, sampled_blocks(md.source, rows, batch_size, rng, max_cells), device, seed
            )

    def _warn_unknown_labels(self) -> None:
        """Warn about cells whose label is not a class of the model (new data given to
        :meth:`load`): they train as unlabelled, since a model's classes are fixed."""
        for name, md in self.mods.items():
            if md.unknown_labels:
                labels = sorted(md.unknown_labels, key=md.unknown_labels.get, reverse=True)
                warnings.warn(
                    f"modality {name!r}: {sum(md.unknown_labels.values())} cell(s) carry labels "
                    f"that are not classes of the model ({labels[:5]}); they train as "
                    f"unlabelled (the model's classes: {self.label_categories_[:10]}); to "
                    "learn new classes, build a new model",
                    UserWarning, stacklevel=user_stacklevel(),
                )

    def _warn_batches(self, lam_batch: float, frozen: str | None) -> bool:
        """Warn about batches without training cells (their decoder input is never trained)
        and about a ``lam_batch`` that cannot act (no modality that this training updates,
        i.e. other than a ``frozen`` anchor, with two batches); return whether ``lam_batch``
        (> 0) can act."""
        acts = only_frozen = False
        for name, batches in self.batch_categories_.items():
            # (-1: unknown; refused for training cells but a frozen anchor's, whose
            # decoder this training leaves as it is: nothing to warn of)
            codes = self.mods[name].batches
            training = codes[~self.val_masks_[name]]
            counts = np.bincount(training[training >= 0], minlength=len(batches))
            held = np.bincount(codes[codes >= 0], minlength=len(batches))
            idle = [b for b, k in zip(batches, counts) if k == 0] if name != frozen else []
            absent = [b for b, k in zip(batches, held) if k == 0] if name != frozen else []
            if absent:  # e.g. a loaded model trained further on cells of some batches
                warnings.warn(
                    f"modality {name!r}: batch(es) {first_few(absent)} of the model hold no "
                    "cell of these data; this training does not update what the decoder learnt of "
                    "them, yet the default translation (the mean over the batches) includes "
                    "them", UserWarning, stacklevel=user_stacklevel(),
                )
            if len(idle) > len(absent):
                lacking = first_few([b for b in idle if b not in absent])
                warnings.warn(
                    f"modality {name!r}: batch(es) {lacking} "
                    "hold no training cell (only validation cells); the decoder does not learn "
                    "them, yet the default translation (the mean over the batches) includes them",
                    UserWarning, stacklevel=user_stacklevel(),
                )
            two = int((counts >= 2).sum()) >= 2
            acts = acts or (two and name != frozen)
            only_frozen = only_frozen or (two and name == frozen)
        if lam_batch > 0 and not acts:
            warnings.warn(
                f"lam_batch={lam_batch} has no effect: no modality has two batches "
                "(Modality(batch_key=...)) with at least 2 training cells each"
                + (f", but the anchor modality {frozen!r}, which this training leaves as "
                   "it is (frozen after its pre-training)" if only_frozen else ""),
                UserWarning, stacklevel=user_stacklevel(),
            )
        return lam_batch > 0 and acts

    def _warn_if_separable(self, *, max_cells: int = 1000) -> None:
        """Measure how separable the modalities are after training and warn if they are.

        A cross-validated logistic regression predicts the modality from the latent points
        of up to ``max_cells`` cells per modality (validation cells when there are enough);
        its balanced accuracy is stored in ``self.mixing_accuracy_`` (with partial
        alignment on the cells of the aligned classes, :meth:`_aligned_points`). Every encoder
        standardises its latent per modality (equal mean and variance on the training cells),
        so this check sees only differences beyond those and can stay silent for modalities
        trained without any alignment term (two equally standardised clouds overlap). So it
        also warns when the trained latent discriminator (a nonlinear classifier) tells the
        same latent points apart with balanced accuracy above 0.9 (stored in
        ``self.disc_accuracy_``; a conditional discriminator is given the cells' labels, as
        in training, and scored on the classes every modality holds, see
        :meth:`_disc_accuracy`; not with markers, which it also reads). The points are
        embedded as the model embeds them now, after the latent statistics are set: during training the
        validation accuracy is measured with running statistics that lag behind the weights
        (0.90-0.98 after 2-3 epochs, where the final latents give 0.52-0.68). The
        discriminator alone is not enough either: an oscillating adversarial game can fool
        it while the modalities stay linearly separable.
        """
        from ..metrics import mixing_accuracy_multi
        from ..metrics._chunked import shared_coordinates

        rng = np.random.default_rng(self.init_params_["seed"])
        embs, chosen = {}, {}
        for name, md in self.mods.items():
            rows = np.flatnonzero(self.val_masks_[name]) if name in self.val_masks_ else []
            if len(rows) < 50:
                rows = np.arange(md.n_obs)
            if len(rows) > max_cells:
                rows = np.sort(rng.choice(rows, max_cells, replace=False))
            chosen[name] = rows
            embs[name] = self._apply(
                RowSubset(md.source, rows),
                lambda x, n=name: self.module.encode(n, x),
                batch_size=1024,
                device=None,
            )
        for name, z in embs.items():  # (said here by name, not by the metric's list index)
            shared = shared_coordinates(z) if len(z) > 3 else 0
            if 2 * shared > len(z):
                where = (f"all {len(z)} cells embed at one point" if shared == len(z) else
                         f"{shared} of {len(z)} cells share their point with another cell")
                warnings.warn(
                    f"modality {name!r}: {where} after training (a collapsed embedding): its "
                    "encoder found nothing that tells them apart. "
                    "Check the modality's data (a layer or column that does not vary, values "
                    "far from unit scale with scale=False) or its training (lr, epochs)",
                    UserWarning, stacklevel=user_stacklevel(),
                )
        aligned = self._aligned_points(embs, chosen)
        try:
            with process_state():  # (scikit-learn's workers save and rebuild the warning
                # filters: two threads' doing so at once left one's list in place)
                acc = float(mixing_accuracy_multi(list(aligned.values()), cv=3, seed=0))
        except ValueError:  # too few cells to cross-validate
            acc = None
        self.mixing_accuracy_ = acc
        chance = 1.0 / len(aligned)
        found = []
        if acc is not None and acc > max(SEPARABLE_ACCURACY, chance + 0.3):
            found.append(
                f"a linear classifier tells them apart with balanced accuracy {acc:.2f} "
                f"(chance {chance:.2f})"
            )
        disc = self._disc_accuracy(embs, chosen)
        self.disc_accuracy_ = disc
        if disc is not None and disc > max(DISC_SEPARABLE_ACCURACY, chance + 0.3):
            found.append(
                f"the latent discriminator tells them apart with balanced accuracy {disc:.2f}"
            )
        if found:
            missing = [
                what for what, given in (
                    ("labels_key", self.init_params_["labels_key"] is not None),
                    ("anchor pairs", bool(self.anchors_)),
                ) if not given
            ]
            add = f"add {' or '.join(missing)}, " if missing else ""
            warnings.warn(
                f"the modalities remain separable in the latent space: {'; '.join(found)}. "
                f"Train longer, raise lam_adv / lam_mmd, {add}or check that the modalities "
                "measure the same cell population.",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    def _aligned_points(
        self, embs: dict[str, np.ndarray], rows: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """With partial alignment, each modality's latent points ``embs`` (of its ``rows``)
        whose alignment weight is at least 1/2 (the cells of the classes the model aligns,
        :meth:`~transmodal.model._module.CrossModalModule.alignment_weights`): a private
        cell type tells its modality by itself. A modality with fewer than
        :data:`MIN_DISC_CELLS` such points is left out; all points of every modality
        without partial alignment, or where fewer than two modalities would remain."""
        kept = {}
        for name, z in embs.items():
            y = self.mods[name].labels
            y = None if y is None else torch.from_numpy(y[rows[name]])
            with torch.no_grad():
                w = self.module.alignment_weights(
                    name, torch.from_numpy(np.ascontiguousarray(z)), y)
            if w is None:  # (every class aligned, or no classifier)
                return embs
            kept[name] = w.numpy() >= 0.5
        enough = {n: k for n, k in kept.items() if int(k.sum()) >= MIN_DISC_CELLS}
        if len(enough) < 2:
            return embs
        return {n: embs[n][k] for n, k in enough.items()}

    def _disc_accuracy(
        self, embs: dict[str, np.ndarray], rows: dict[str, np.ndarray]
    ) -> float | None:
        """Balanced accuracy of the trained latent discriminator on the latent points
        ``embs`` of each modality's ``rows``, as the model embeds them now; ``None`` with
        markers, which it also reads, or without points. A conditional discriminator is
        given the cells' labels as in training (an unlabelled cell the latent classifier's
        prediction) and scored on the cells of the classes that every modality holds only:
        a class of one modality tells the modality by itself (with partly shared cell types
        it read 0.95 for a good alignment); ``None`` with fewer than
        :data:`MIN_DISC_CELLS` such cells in a modality. With partial alignment each cell
        counts with its alignment weight, as in training."""
        if self.module.n_markers or not all(len(z) for z in embs.values()):
            return None
        zs = {n: torch.from_numpy(np.ascontiguousarray(z)) for n, z in embs.items()}
        ys = {
            n: torch.from_numpy(md.labels[rows[n]]) for n, md in self.mods.items()
            if md.labels is not None
        }
        if self.module.disc_conditional:
            seen = {n: self.module.condition_labels(z, ys.get(n)) for n, z in zs.items()}
            shared = set.intersection(*(set(y.tolist()) for y in seen.values()))
            keep = {n: np.isin(y.numpy(), sorted(shared)) for n, y in seen.items()}
            if min(int(k.sum()) for k in keep.values()) < MIN_DISC_CELLS:
                return None
            zs = {n: z[torch.from_numpy(keep[n])] for n, z in zs.items()}
            ys = {n: seen[n][torch.from_numpy(keep[n])] for n in zs}
        with torch.no_grad():
            return float(self.module.discriminator_loss(zs, ys)[1])
