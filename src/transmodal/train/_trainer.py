"""Run a training plan with PyTorch Lightning (devices, early stopping, progress bar, seeds)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping

from .._interrupts import Terminated
from .._utils import (
    check_parallel, is_global_zero, parse_devices, process_state, seeded, torch_defaults,
)
from ..data._prefetch import PrefetchLoader
from ._plan import CrossModalPlan
from ._progress import EpochProgressBar


_DDP = ("ddp",)


def _several(devices, num_nodes) -> bool:
    """Whether ``devices`` / ``num_nodes`` (Lightning's forms: 2, [0, 1], "2", "0,1", -1,
    "-1") ask for more than one process (``"auto"``, one process on a CPU, is left to
    Lightning)."""
    if num_nodes != 1:
        return True
    parsed = parse_devices(devices)
    if isinstance(parsed, list):
        return len(parsed) > 1
    return isinstance(parsed, int) and (parsed > 1 or parsed == -1)


def resolve_strategy(strategy, devices=1, num_nodes=1):
    """Lightning strategy for our manual optimisation.

    Each step runs two backward passes (discriminator, then autoencoders), and each touches
    only part of the parameters, so DDP must look for unused parameters: ``"ddp"`` - and
    ``"auto"`` with several devices or nodes, which Lightning would make plain DDP - become
    ``"ddp_find_unused_parameters_true"``. Strategies that train in child processes
    (``ddp_spawn``, ``ddp_fork``, ``ddp_notebook``) are refused (:func:`check_parallel`):
    the history would stay in the children. Strategy objects are passed through unchanged.
    """
    if isinstance(strategy, str):
        check_parallel({"strategy": strategy})
        name = strategy.lower()
        if name in _DDP or (name == "auto" and _several(devices, num_nodes)):
            return "ddp_find_unused_parameters_true"
    return strategy


def default_max_epochs(n_obs: int, *, cap: int = 400, decay_at: int = 20_000) -> int:
    """Size-aware default number of epochs (as scvi-tools' heuristic).

    ``cap`` epochs up to ``decay_at`` cells, then proportionally fewer, at least 10 —
    the number of optimiser steps stays roughly constant for large data.
    """
    return int(max(10, min(cap, round(cap * decay_at / max(n_obs, 1)))))


#: Lightning's known-harmless warnings, ignored while a model trains.
_LIGHTNING_NOISE = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*The number of training batches.*",
    ".*LeafSpec.*",
    ".*defined a `validation_step` but have no `val_dataloader`.*",
)


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's informational logging and known-harmless warnings, then restore.

    The warnings' filters are added to the process's filter list and taken out again one by
    one, not by ``warnings.catch_warnings``: that would hold a copy of the process-wide list
    and ``showwarning`` for the whole training and put them back at its end, over what
    other threads' ``catch_warnings`` blocks opened or closed meanwhile (a block's recorded
    warnings lost, or kept recording after it closed)."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    added = []
    try:
        for msg in _LIGHTNING_NOISE:
            before = len(warnings.filters)
            warnings.filterwarnings("ignore", message=msg)
            if len(warnings.filters) > before:  # (not the caller's own filter, moved first)
                added.append(warnings.filters[0])
        yield
    finally:
        for entry in added:  # (an ignore filter: no warning registry holds its decisions)
            with contextlib.suppress(ValueError):  # (gone with another block's list)
                warnings.filters.remove(entry)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _process_state_restored() -> Iterator[None]:
    """Give the caller back what a Lightning run changes process-wide: torch's deterministic
    mode (``Trainer(deterministic=True)``), cuDNN's benchmark flag, the
    ``CUBLAS_WORKSPACE_CONFIG`` variable, and the Ctrl+C handler (on an interrupt Lightning
    ignores SIGINT from then on, which would leave a notebook kernel deaf to Ctrl+C)."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
        if main_thread and sigint is not None:
            signal.signal(signal.SIGINT, sigint)


def run_training(
    plan: CrossModalPlan,
    train_batches,
    val_batches=None,
    *,
    max_epochs: int,
    accelerator: str = "cpu",
    devices: int | str | list[int] = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
    precision: str | int = "32-true",
    progress_bar: bool = True,
    early_stopping: bool = True,
    patience: int = 30,
    min_epochs: int = 0,
    seed: int = 0,
    callbacks: list | None = None,
    prefetch: int | None = None,
) -> pd.DataFrame:
    """Fit ``plan`` with a Lightning ``Trainer`` and return the per-epoch history.

    Randomness (dropout, weight updates) is seeded with ``seed`` inside a forked RNG state,
    so global random state is left untouched and equal seeds give equal runs on one machine.
    Torch's process-wide flags are restored afterwards, and Ctrl+C raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt`` holding the history of the epochs
    completed; Lightning itself would exit the process with ``SystemExit``).

    Batches are read ``prefetch`` steps ahead by a background thread (0 = read on demand;
    ``None``: 2 when a modality is read from a file or the model trains on a GPU, else 0),
    so the model does not wait on reads from backed files, or the GPU on the host; batches
    come in the same order either way and reading draws no random numbers, so the result
    does not change.
    """
    last = _LastException()  # (which interrupt stopped it: Ctrl+C or SIGTERM)
    cbs = [*(callbacks or []), last]
    if progress_bar:  # one bar over the epochs instead of Lightning's per-step bars
        cbs.append(EpochProgressBar())
    if early_stopping and val_batches is not None:
        cbs.append(
            EarlyStopping(monitor="val_monitor", patience=patience, mode="min", strict=False)
        )
    with process_state(), _quiet_lightning(), _process_state_restored(), torch_defaults():
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            min_epochs=min_epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=resolve_strategy(strategy, devices, num_nodes),
            num_nodes=num_nodes,
            precision=precision,
            logger=False,
            # (a callback of the model's own checkpoints: Lightning refuses them otherwise;
            # with none, it adds no checkpoint of its own either way)
            enable_checkpointing=any(isinstance(cb, Checkpoint) for cb in cbs),
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            callbacks=cbs,
            deterministic=True,
        )
        if num_nodes > 1 and is_global_zero(launcher=True):  # (Lightning's own note is hidden)
            print(
                f"transmodal: training in {trainer.world_size} processes on {num_nodes} nodes; "
                "waiting until every process has started (srun / torchrun on each node)",
                file=sys.stderr, flush=True,
            )
        on_gpu = trainer.strategy.root_device.type == "cuda"
        if prefetch is None:
            on_disk = any(getattr(b, "on_disk", False) for b in (train_batches, val_batches))
            prefetch = 2 if on_disk or on_gpu else 0
        loader = {"batch_size": None, "shuffle": False, "num_workers": 0, "prefetch": prefetch}
        train_dl = PrefetchLoader(train_batches, **loader)
        val_dl = PrefetchLoader(val_batches, **loader) if val_batches is not None else None
        if val_dl is None:
            trainer.limit_val_batches = 0
        try:
            with seeded(seed, trainer.strategy.root_device):
                trainer.fit(plan, train_dataloaders=train_dl, val_dataloaders=val_dl)
            if trainer.interrupted:  # Lightning < 2.4 returned from fit after Ctrl+C
                raise TrainingInterrupted(_history(plan), last.exception, trainer.received_sigterm)
        except SystemExit:  # Lightning's answer to Ctrl+C: sys.exit(1) after its teardown;
            if trainer.interrupted:  # its SIGTERMException; the caller's own SystemExit
                raise TrainingInterrupted(
                    _history(plan), last.exception, trainer.received_sigterm
                ) from None
            raise
        except FloatingPointError as err:
            if plan.diverged:  # the plan's check of the epoch (weights put back)
                raise TrainingDiverged(str(err), _history(plan)) from None
            raise
        finally:  # however it ended: no reader thread left holding the data
            for dl in (train_dl, val_dl):
                if dl is not None:
                    dl.close()
    return _history(plan)


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite during :func:`run_training`; the plan has put back the
    weights of the last epoch with finite losses, and ``history`` holds the epochs up to it."""

    def __init__(self, message: str, history: pd.DataFrame) -> None:
        super().__init__(message)
        self.history = history


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C during :func:`run_training`; ``history`` holds the epochs completed before it,
    ``kind`` the class to raise again: for SIGTERM (the command line's, or Lightning's in
    a script) :class:`~transmodal.train.Terminated`, else ``KeyboardInterrupt``;
    ``exit`` a ``SystemExit`` of the caller's that stopped it (e.g. raised by its own SIGTERM
    handler), to raise again as it is."""

    def __init__(
        self, history: pd.DataFrame, cause: BaseException | None = None, sigterm: bool = False
    ) -> None:
        super().__init__(f"training interrupted after {len(history)} complete epoch(s)")
        self.history = history
        self.kind: type[KeyboardInterrupt] = (
            Terminated if sigterm or isinstance(cause, Terminated) or _lightning_sigterm(cause)
            else KeyboardInterrupt
        )
        # a SystemExit of the caller's (its own SIGTERM handler's, sys.exit in a callback):
        # raised again once the epochs done are kept
        self.exit = cause if isinstance(cause, SystemExit) and not _lightning_sigterm(cause) \
            else None


def _lightning_sigterm(cause: BaseException | None) -> bool:
    """Whether ``cause`` is Lightning's own answer to SIGTERM (outside the command line,
    whose handler raises :class:`~transmodal.train.Terminated`; Lightning >= 2.4)."""
    try:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError:  # (older Lightning: SIGTERM is not told apart)
        return False
    return isinstance(cause, SIGTERMException)


class _LastException(Callback):
    """Keeps the exception that ended ``fit`` (Lightning calls ``on_exception`` in every
    version, also where ``fit`` returns after Ctrl+C instead of exiting)."""

    exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:  # noqa: D102
        self.exception = exception


def _history(plan: CrossModalPlan) -> pd.DataFrame:
    """The plan's per-epoch rows as a DataFrame indexed by epoch."""
    return history_frame(plan.history_rows)


def history_frame(rows: list[dict[str, float]]) -> pd.DataFrame:
    """Per-epoch rows (with an ``"epoch"`` entry) as a DataFrame indexed by epoch."""
    history = pd.DataFrame(rows)
    if len(history):
        history["epoch"] = history["epoch"].astype(int)
        history = history.set_index("epoch")
    return history


__all__ = ["run_training", "default_max_epochs", "TrainingInterrupted", "TrainingDiverged"]
