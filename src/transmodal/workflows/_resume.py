"""Going on with a training from the last checkpoint that ``train(checkpoint_dir=)`` wrote."""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Any

from .._hints import argument_hints, known_name_hint
from .._utils import is_global_zero, lightning_accelerator, user_stacklevel
from ..model import CrossModalAE
from ..model._training import _device_of

# train() settings a checkpoint records that the resumed call does not take as they are:
# its epochs, pre-training and warm-up are what is left of them
_NOT_RESUMED = ("max_epochs", "pretrain_epochs", "adv_warmup_epochs")


@argument_hints
def resume_training(
    checkpoint_dir: str | os.PathLike,
    data: Any,
    *,
    max_epochs: int | None = None,
    check_data: bool = True,
    **train_kwargs: Any,
) -> CrossModalAE:
    """Go on with a training from the last checkpoint it wrote (``train(checkpoint_dir=)``).

    The checkpoint is loaded around ``data`` (the training cells, as for
    :meth:`CrossModalAE.load`) and trained for the epochs it has left, with the settings it
    was trained with (the learning rates, loss weights, batch size, seed, early stopping;
    any of them given in ``train_kwargs`` instead), the pre-training of an anchor prior
    that was left and what was left of the adversarial warm-up, writing its checkpoints
    to ``checkpoint_dir`` again. It is a new call of :meth:`CrossModalAE.train`: its
    optimisers start afresh, and its epochs draw their batches as the stopped call's
    first epochs did (the same seed; pass ``seed=`` for others), so it does not repeat an
    unstopped run bit for bit.

    Parameters
    ----------
    checkpoint_dir
        The directory the stopped training wrote its checkpoints to.
    data
        ``{name: AnnData}`` or ``MuData``: the cells it trained on.
    max_epochs
        The epochs of the whole training, those done included (default: what the stopped
        training was asked for; more than that goes on with a training that ended).
    check_data
        Scan the matrices for values the likelihoods reject.
    **train_kwargs
        Further arguments of :meth:`CrossModalAE.train` (e.g. ``accelerator``,
        ``progress_bar``).

    Returns
    -------
    The model, trained. A checkpoint of a training that ended (all its epochs, or early
    stopping) is returned as it is loaded, with a warning.

    Raises
    ------
    ValueError
        If ``checkpoint_dir`` holds a saved model rather than a checkpoint, or ``data`` are
        not the cells its training ran on (another run's checkpoint, e.g. of a job array's
        task on other cells).
    """
    if "pretrain_epochs" in train_kwargs:  # (checkpoint_dir is the first argument)
        raise ValueError("resume_training sets pretrain_epochs= itself (from the checkpoint)")
    parameters = inspect.signature(CrossModalAE.train).parameters
    unknown = sorted(set(train_kwargs) - set(parameters))
    if unknown:
        hint = known_name_hint(("resume_training", "train"), unknown[0],
                               [p for p in parameters if p != "self"])
        raise TypeError(f"resume_training(): unknown argument(s) of train(): {unknown}"
                        + (f"; {unknown[0]}: {hint}" if hint else ""))
    with warnings.catch_warnings(record=True) as told:  # (kept until the cells are checked)
        warnings.simplefilter("always")
        model = CrossModalAE.load(checkpoint_dir, data, check_data=check_data)
    done = 0 if model.history is None else len(model.history)
    record = model.train_params_
    if "checkpoint_every" not in record or "epochs_target" not in record:
        raise ValueError(
            f"{checkpoint_dir} holds a saved model, not a checkpoint of a training "
            "(train(checkpoint_dir=...)); train it further with model.train()"
        )
    lacking = [n for n, md in model.mods.items() if md.n_obs == 0]  # (load's stand-ins)
    if lacking:
        raise ValueError(
            f"{checkpoint_dir}: the data lack modality {lacking[0]!r} (or hold none of its "
            f"cells), which training needs: resume with every modality's cells "
            f"({model.modality_names})"
        )
    if not getattr(model, "_training_cells", True):  # (load's warnings: of no use then)
        raise ValueError(
            f"{checkpoint_dir}: the data given are not the cells its training ran on (other "
            "cells, a subset of them, or other values under their names): another run's "
            "checkpoint? Resume it with the data it was trained on"
        )
    for w in told:
        warnings.warn(w.message, w.category, stacklevel=user_stacklevel())
    target = record["epochs_target"] if max_epochs is None else max_epochs
    if target < done:
        warnings.warn(
            f"{checkpoint_dir}: max_epochs={target} is below the {done} epochs done; the "
            "training is finished as it stands (its record keeps the epochs it was asked "
            f"for, {record['epochs_target']})",
            UserWarning, stacklevel=user_stacklevel(),
        )
    # settings given otherwise than those trained with: the epochs left use them, and the
    # record (train_params_) lists them alone, so say so
    other = {k: (record[k], v) for k, v in train_kwargs.items()
             if k in record and k not in (*_NOT_RESUMED, "checkpoint_every") and record[k] != v}
    if other:
        listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(other.items()))
        warnings.warn(
            f"{checkpoint_dir}: the epochs left train with other settings than the "
            f"{done} done ({listed}); the model's train_params_ will list the new ones",
            UserWarning, stacklevel=user_stacklevel(),
        )
    if record.get("finished") and target == record["epochs_target"]:
        warnings.warn(
            f"{checkpoint_dir}: the training ended ({done} epochs"
            + (", stopped early" if done < target else "") + "); nothing to resume",
            UserWarning, stacklevel=user_stacklevel(),
        )
        return model
    left = int(target) - done
    settings = {k: v for k, v in record.items() if k in parameters and k not in _NOT_RESUMED}
    if record.get("lr_disc") == record.get("lr"):  # (it followed lr: it follows a new one)
        settings.pop("lr_disc", None)
    settings.update(train_kwargs)
    pretrained_until = record.get("epochs_before", 0) + record.get("pretrain_epochs", 0)
    if left < 1:  # every epoch done, stopped before the end of training: finish it
        CrossModalAE._check_train_params(settings)  # (as train() would)
        accelerator = lightning_accelerator(settings.get("accelerator", "cpu"))
        # the anchor was frozen, its statistics set, once its pre-training was over
        frozen = model.anchor_modality_ if done > pretrained_until or not record.get(
            "pretrain_epochs") else None
        model._recalibrate_latent_norm(
            frozen=frozen, batch_size=settings["batch_size"], seed=settings["seed"],
            device=_device_of(accelerator),
        )
        model.train_params_ = {**record, "finished": True}
        if is_global_zero(launcher=True):
            model._warn_if_separable()
        model.save(checkpoint_dir, overwrite=True)
        return model
    # what is left of the warm-up, which starts once the pre-training is over
    warm_end = pretrained_until + record.get("adv_warmup_epochs", 0)
    settings.setdefault("adv_warmup_epochs", max(0, warm_end - max(done, pretrained_until)))
    return model.train(max_epochs=left, checkpoint_dir=checkpoint_dir, **settings)
