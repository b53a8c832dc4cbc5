"""One progress bar over the epochs of a training (Lightning's own draws a bar per epoch and
one per validation run, with step counts and no losses)."""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ProgressBar


class EpochProgressBar(ProgressBar):
    """``Training: 12/400 [...] loss=..., val=..., disc_acc=...``: advanced once per epoch
    (after its validation) with the epoch's mean training loss, the validation loss that
    early stopping monitors (from the end of the warm-up) and the discriminator's training
    accuracy. Drawn by the first process only."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar = None
        self._rows_before = 0

    def disable(self) -> None:  # noqa: D102 - Lightning's interface
        self._enabled = False

    def enable(self) -> None:  # noqa: D102
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: D102
        if not (self._enabled and trainer.is_global_zero):
            return
        from tqdm.auto import tqdm

        self._rows_before = len(pl_module.history_rows)
        self._bar = tqdm(
            total=trainer.max_epochs, desc="Training", unit="epoch", file=sys.stderr,
            dynamic_ncols=True, leave=True,
        )

    # the plan adds an epoch's row in its own on_train_epoch_end, which Lightning calls after
    # the callbacks' one: the bar reads a row when the next epoch starts, or training ends
    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: D102
        self._advance(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: D102
        self._advance(pl_module)
        if self._bar is not None and self._bar.n < self._bar.total:
            self._bar.set_description("Training (stopped early)", refresh=False)
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:  # noqa: D102
        self._close()

    def _advance(self, pl_module) -> None:
        if self._bar is None:
            return
        rows = pl_module.history_rows[self._rows_before :]
        if len(rows) <= self._bar.n:
            return
        self._bar.set_postfix(_summary(rows[-1]), refresh=False)
        self._bar.update(len(rows) - self._bar.n)  # one write per epoch

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _summary(row: dict[str, float]) -> dict[str, str]:
    """The figures shown beside the bar, from one history row."""
    out = {}
    if "train_loss" in row:
        out["loss"] = f"{row['train_loss']:.4g}"
    if "val_monitor" in row:
        out["val"] = f"{row['val_monitor']:.4g}"
    if "train_disc_acc" in row:
        out["disc_acc"] = f"{row['train_disc_acc']:.2f}"
    return out


__all__ = ["EpochProgressBar"]
