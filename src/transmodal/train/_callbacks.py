"""Lightning callbacks of the training: periodic checkpoints in the model's own format."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from lightning.pytorch.callbacks import Checkpoint

from .._utils import user_stacklevel


class SaveEvery(Checkpoint):
    """Every ``every`` epochs, once the epoch's history row is written, call ``save`` with the
    rows of the epochs run so far (on the first process only). A save that fails warns and
    ends the periodic checkpoints, not the training (``error`` keeps why).

    A ``Checkpoint`` subclass, so that Lightning calls it after the training plan's
    ``on_train_epoch_end`` (which writes the row, or raises where the epoch diverged); the
    saving itself is the model's (its safetensors + JSON format, written atomically), as
    scvi-tools' ``SaveCheckpoint`` calls ``model.save``.
    """

    def __init__(self, save: Callable[[list[dict[str, float]]], None], every: int) -> None:
        self.save = save
        self.every = int(every)
        self.error: Exception | None = None  # (of a save that failed: none follows)

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        rows = pl_module.history_rows
        if self.every and rows and len(rows) % self.every == 0 and trainer.is_global_zero:
            try:
                self.save(list(rows))
            except Exception as err:  # (the directory unwritable, another run's now, ...)
                self.every, self.error = 0, err
                taken = isinstance(err, FileExistsError)  # (another run's directory now)
                warnings.warn(
                    f"the checkpoint after epoch {len(rows)} could not be written ({err}); "
                    "the training goes on without " + ("checkpoints" if taken else
                    "periodic checkpoints (the last one is tried when it ends or stops)"),
                    UserWarning, stacklevel=user_stacklevel(),
                )
