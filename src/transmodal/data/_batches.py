"""Minibatches drawn from every modality in step.

One epoch walks once through the largest modality; smaller modalities cycle through fresh
permutations, so no modality is truncated. Paired (anchor) cells are drawn as a third,
cycling stream. Rows are read per batch (sorted reads) and densified per batch only.
No training batch holds a single cell (batch normalisation needs two): a last batch of one
cell is folded into the previous one, and anchor pairs with fewer than two training pairs
are skipped.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from .._utils import user_stacklevel
from ._setup import ModalityData


class _Cycler:
    """Endless stream of indices: concatenated permutations (or ``arange`` without shuffle)."""

    def __init__(self, n: int, rng: np.random.Generator | None) -> None:
        self.n = n
        self.rng = rng

    def take(self, total: int) -> np.ndarray:
        reps = math.ceil(total / self.n)
        if self.rng is None:
            order = np.tile(np.arange(self.n), reps)
        else:
            order = np.concatenate([self.rng.permutation(self.n) for _ in range(reps)])
        return order[:total]


# a training batch of one cell breaks batch normalisation (evaluation does not): so do a
# pair set's batches of one pair
MIN_TRAINING_BATCH = 2

class EpochBatches(Dataset):
    """Map-style dataset whose item ``s`` is the whole minibatch of step ``s``:
    ``{"cells": {name: {"x": rows, ...}}, "pairs": {"a|b": {"a": rows, "b": rows}}}`` (the
    modalities' rows, with labels ``"y"``, markers ``"m"``, batch codes ``"b"`` and trials
    ``"n"`` where the modality has them; ``"pairs"`` only with anchor pairs).

    Parameters
    ----------
    mods
        Validated modality data by name.
    indices
        Rows of each modality that belong to this split.
    batch_size
        Cells per modality per step (the last step may hold one more, never a lone cell).
    pairs
        ``{"a|b": (rows_a, rows_b)}`` of paired cells used by the anchor loss.
    shuffle
        Draw random permutations (training: each step holds ``batch_size`` cells of every
        modality, a smaller modality cycling through its cells), or walk in order
        (validation: every cell once, each modality's cells spread over the steps in parts
        that differ by at most one; anchor pairs as in training, ``batch_size`` or all of
        them per step, cycling).
    seed
        Base seed; epoch ``e`` uses ``np.random.default_rng([seed, e])``.
    """

    def __init__(
        self,
        mods: dict[str, ModalityData],
        indices: dict[str, np.ndarray],
        *,
        batch_size: int,
        pairs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        self.mods = mods
        self.indices = {k: np.asarray(v, dtype=np.int64) for k, v in indices.items()}
        self.batch_size = int(batch_size)
        min_cells = MIN_TRAINING_BATCH if shuffle else 1
        self.pairs = {}
        for key, v in (pairs or {}).items():
            if len(v[0]) >= min_cells:
                self.pairs[key] = v
            elif len(v[0]):
                a, b = key.split("|")
                warnings.warn(
                    f"anchor pairs between {a!r} and {b!r}: only {len(v[0])} training pair; "
                    "a batch needs at least 2 cells, so the anchor loss skips this pair",
                    UserWarning, stacklevel=user_stacklevel(),
                )
        self.shuffle = shuffle
        self.seed = seed
        self.n_max = max(len(v) for v in self.indices.values())
        self.steps = max(1, math.ceil(self.n_max / self.batch_size))
        last = self.n_max - (self.steps - 1) * self.batch_size
        if last < min_cells and self.steps > 1:  # fold a last batch of one cell into the previous
            self.steps -= 1
        self._epoch: int | None = None
        self.set_epoch(0)

    def __len__(self) -> int:
        return self.steps

    @property
    def on_disk(self) -> bool:
        """Whether any modality's rows are read from a file (worth prefetching)."""
        return any(getattr(md.source, "on_disk", False) for md in self.mods.values())

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's orders (deterministic given ``seed`` and ``epoch``)."""
        if epoch == self._epoch:
            return
        self._epoch = epoch
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        if self.shuffle:
            sizes = [self.batch_size] * (self.steps - 1)
            sizes.append(self.n_max - sum(sizes))  # the last batch may hold batch_size + 1 cells
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            total = int(bounds[-1])
            self._orders = {
                name: idx[_Cycler(len(idx), rng).take(total)] for name, idx in self.indices.items()
            }
            self._bounds = dict.fromkeys(self.indices, bounds)
        else:
            # evaluation: every cell once, in order, spread over the steps in parts that
            # differ by at most one cell, so that the mean over the steps weighs every cell
            # alike (a modality with fewer cells than steps: all of them, as often each)
            self._orders, self._bounds = {}, {}
            for name, idx in self.indices.items():
                n = len(idx) * math.ceil(self.steps / len(idx)) if len(idx) < self.steps \
                    else len(idx)
                self._orders[name] = idx[_Cycler(len(idx), None).take(n)]
                self._bounds[name] = np.arange(self.steps + 1) * n // self.steps
        # pairs: the same number in every step, cycling (the contrastive loss of a step
        # contrasts its pairs: the validation's as many as the training's)
        self._pair_orders = {}
        for key, (ia, ib) in self.pairs.items():
            per_step = min(self.batch_size, len(ia))
            sel = _Cycler(len(ia), rng).take(per_step * self.steps)
            self._pair_orders[key] = (ia[sel], ib[sel], np.arange(self.steps + 1) * per_step)

    def _rows(self, name: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        md = self.mods[name]
        if md.source.totals is not None:  # rates, and the trials that weigh the loss
            x, n = md.source.rates_and_totals(rows)
            out = {"x": torch.from_numpy(x), "n": torch.from_numpy(n)}
        else:
            out = {"x": torch.from_numpy(md.source.rows(rows))}
        if md.labels is not None:
            out["y"] = torch.from_numpy(md.labels[rows])
        if md.markers is not None:
            out["m"] = torch.from_numpy(md.markers[rows])
        if md.batches is not None:
            out["b"] = torch.from_numpy(md.batches[rows])
        return out

    def __getitem__(self, step: int) -> dict:
        cells = {
            name: self._rows(name, order[self._bounds[name][step] : self._bounds[name][step + 1]])
            for name, order in self._orders.items()
        }
        batch: dict = {"cells": cells}
        if self._pair_orders:
            batch["pairs"] = {}
            for key, (ra, rb, bounds) in self._pair_orders.items():
                a, b = key.split("|")
                lo, hi = bounds[step], bounds[step + 1]
                batch["pairs"][key] = {
                    "a": torch.from_numpy(self.mods[a].source.rows(ra[lo:hi])),
                    "b": torch.from_numpy(self.mods[b].source.rows(rb[lo:hi])),
                }
        return batch
