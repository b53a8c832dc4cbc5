"""Prior knowledge a model sets up when it is built: shape-based pseudo-pairs between
modalities that no anchors tie (with the progress bar of their slow steps), the latent
classifier's classes per modality and the standardisation of shared markers."""

from __future__ import annotations

import contextlib
import contextvars
import re
import sys
import warnings
from collections.abc import Iterator
from itertools import combinations
from typing import Any

import numpy as np
import torch

from .._utils import is_global_zero, linked_groups, user_stacklevel
from ..data._batches import MIN_TRAINING_BATCH
from ..data._setup import class_groups
from ..geometry import geometric_pairs, transport_pairs

# below this many training cells per modality the default shape-based pairs are skipped
_MIN_GEOMETRY_CELLS = 100
# sources of shape-based pseudo-pairs (``geometric_pairs=``): the Isomap overlay, landmark
# Gromov-Wasserstein transport, or both; ``True`` / ``None`` (when on) use the default,
# chosen on benchmarks/unpaired.py (README: both beat the overlay alone on every data set)
GEOMETRY_METHODS = ("overlay", "transport", "overlay+transport")
_GEOMETRY_DEFAULT = "overlay+transport"


def _pseudo_pairs(
    xa: np.ndarray, xb: np.ndarray, sources: list[str], seed: int, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``xa`` / ``xb`` paired by each source in ``sources`` ("overlay", "transport"),
    concatenated. A transport that fails numerically is dropped with a warning (naming
    ``label``) when the overlay's pairs remain; alone it raises ``ValueError``."""
    rows_a, rows_b = [], []
    if "overlay" in sources:
        match = geometric_pairs(xa, xb, seed=seed)
        rows_a.append(match.rows_a)
        rows_b.append(match.rows_b)
    if "transport" in sources:
        try:
            ta, tb = transport_pairs(xa, xb, seed=seed)
        except RuntimeError as err:  # the solver failed even at its largest epsilon
            if not rows_a:
                raise ValueError(str(err)) from err
            warnings.warn(
                f"{label}: landmark transport failed ({err}); using the overlay's "
                "pseudo-pairs alone",
                UserWarning, stacklevel=user_stacklevel(),
            )
        else:
            rows_a.append(ta)
            rows_b.append(tb)
    return np.concatenate(rows_a), np.concatenate(rows_b)


# whether the construction's slow steps draw a progress bar (see construction_bars)
_STAGE_BARS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "transmodal_stage_bars", default=True
)


@contextlib.contextmanager
def construction_bars(show: bool) -> Iterator[None]:
    """Within this context (of this thread), models built draw no progress bar over slow
    construction steps when ``show`` is false: for the workflows that build and train in
    one call, which pass on their ``progress_bar``."""
    token = _STAGE_BARS.set(bool(show))
    try:
        yield
    finally:
        _STAGE_BARS.reset(token)


@contextlib.contextmanager
def _stage_bar(total: int, what: str, delay: float = 3.0, every: float = 2.0) -> Iterator[Any]:
    """A progress bar over ``total`` stages of a slow step of the model's construction, on
    stderr, drawn only once the step has run ``delay`` seconds (by the first process);
    redrawn every ``every`` seconds, so its clock runs while one stage takes a minute.
    ``TQDM_DISABLE=1`` in the environment turns it off (tqdm reads its settings there), as
    does :func:`construction_bars` (``False``)."""
    import threading
    import time

    from tqdm.auto import tqdm

    # (no remaining time: the stages are too unequal; "disable" only where it must be, so
    # that TQDM_DISABLE from the environment applies otherwise)
    shown = _STAGE_BARS.get() and is_global_zero(launcher=True)
    others = {} if shown else {"disable": True}
    bar = tqdm(total=total, desc=f"transmodal: {what}", unit="step", file=sys.stderr,
               delay=delay, leave=True, dynamic_ncols=True,
               bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}]{postfix}", **others)
    done = threading.Event()

    def redraw() -> None:
        if done.wait(delay):
            return
        while True:  # (marked as drawn, so that closing draws the end and a newline)
            bar.refresh()
            bar.last_print_t = time.time()  # (tqdm's clock)
            if done.wait(every):
                return

    clock = threading.Thread(target=redraw, daemon=True)
    if not bar.disable:
        clock.start()
    try:
        yield bar
    finally:
        done.set()
        if clock.is_alive():
            clock.join()
        bar.close()


def _center_batches(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``x`` with each batch's mean feature vector subtracted (a batch effect that shifts
    the features moves whole batches apart, which the shape matching would otherwise
    take for structure). In place: ``x`` is a fresh array of the caller's."""
    for code in np.unique(codes):
        rows = codes == code
        x[rows] -= x[rows].mean(axis=0, dtype=np.float64).astype(x.dtype)
    return x


class PriorsMixin:
    """Set-up of prior knowledge for :class:`~transmodal.CrossModalAE` (pseudo-pairs, label
    classes, markers), run by its constructor."""

    def _use_geometry(self, p: dict[str, Any]) -> bool:
        """Shape-based pseudo-pairs: on by default only without any other prior knowledge."""
        if p["geometric_pairs"] is not None:
            return p["geometric_pairs"] is not False
        few = min(int((~m).sum()) for m in self.val_masks_.values()) < _MIN_GEOMETRY_CELLS
        # labels tie the modalities together only through classes that every modality's
        # training cells hold (labels on one modality alone left the other unanchored: PBMC
        # label transfer to the unlabelled ATAC 0.22 without the pseudo-pairs, 0.50 with them)
        classes = [
            set() if md.labels is None
            else set(np.unique(md.labels[~self.val_masks_[n] & (md.labels >= 0)]).tolist())
            for n, md in self.mods.items()
        ]
        # (and only with two classes or more: one class for every cell tells nothing)
        labels_tie = (p["labels_key"] is not None and bool(set.intersection(*classes))
                      and len(set.union(*classes)) > 1)
        # anchors tie the modalities they chain together; a modality outside the chain
        # (e.g. a third one measured on other cells) is tied by nothing
        no_prior = (not labels_tie and p["marker_key"] is None
                    and len(self._anchor_groups()) > 1)
        return no_prior and not few

    def _anchor_groups(self) -> list[list[str]]:
        """The modalities grouped by chains of usable anchor pairs."""
        usable = self._usable_anchors()
        return linked_groups(list(self.mods), lambda a, b: f"{a}|{b}" in usable)

    def _usable_anchors(self) -> set[str]:
        """The modality pairs (``"a|b"``) whose anchor pairs the anchor loss uses (as many
        as a training batch needs: :class:`~transmodal.data.EpochBatches` skips fewer)."""
        return {k for k, (ia, _) in self.anchors_.items() if len(ia) >= MIN_TRAINING_BATCH}

    def _geometric_pairs(
        self,
        train: dict[str, np.ndarray],
        seed: int,
        max_cells: int = 20_000,
        max_values: int = 50_000_000,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Shape-based pseudo-pairs between every two modalities without anchor pairs: the
        overlay of :func:`~transmodal.geometry.geometric_pairs` and / or the landmark
        transport of :func:`~transmodal.geometry.transport_pairs` (``geometric_pairs=``), on
        at most ``max_cells`` seeded training cells of each (fewer for wide inputs such as
        images: at most ``max_values`` numbers per modality in memory)."""
        chosen = self.init_params_["geometric_pairs"]
        sources = (chosen if isinstance(chosen, str) else _GEOMETRY_DEFAULT).split("+")
        rng = np.random.default_rng([seed, 13])
        usable = self._usable_anchors()
        pairs = [(a, b) for a, b in combinations(self.mods, 2) if f"{a}|{b}" not in usable]
        if chosen is None:  # by default only between modalities that no anchors chain
            group = {n: i for i, g in enumerate(self._anchor_groups()) for n in g}
            pairs = [(a, b) for a, b in pairs if group[a] != group[b]]
        if not pairs:  # (asked for explicitly: the default is off beside usable anchors)
            warnings.warn(
                f"geometric_pairs={chosen!r} has no effect: every pair of modalities has "
                "anchor pairs, which take the place of shape-based pseudo-pairs",
                UserWarning, stacklevel=user_stacklevel(),
            )
            return {}
        with _stage_bar(len(self.mods) + len(pairs), "shape-based pseudo-pairs") as bar:
            feats = self._pair_features(train, rng, bar, max_cells, max_values)
            return self._pairs_of(feats, pairs, sources, seed, bar)

    def _pair_features(
        self, train: dict[str, np.ndarray], rng: np.random.Generator, bar: Any,
        max_cells: int, max_values: int,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{name: (cells, features)}``: the rows each modality's pseudo-pairs are computed
        on (see :meth:`_geometric_pairs`)."""
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, md in self.mods.items():
            bar.set_postfix_str(f"features of {name!r}", refresh=False)
            idx = np.flatnonzero(train[name])
            n_max = max(_MIN_GEOMETRY_CELLS, min(max_cells, max_values // md.source.n_vars))
            if len(idx) > n_max:
                idx = np.sort(rng.choice(idx, n_max, replace=False))
            transform = self.module.transforms[name]
            with torch.no_grad():
                x = [transform.process(torch.from_numpy(c)).numpy() for c in md.source.chunks(idx)]
            x = np.concatenate(x)
            if md.batches is not None:
                # (cells of no batch of the model, -1: a frozen anchor's new ones, one group)
                codes = np.unique(md.batches[idx], return_inverse=True)[1].ravel()
                alone = int((np.bincount(codes)[codes] < 2).sum())
                if 2 * alone > len(codes):  # centring would erase most cells
                    raise ValueError(
                        f"modality {name!r}: {alone} of the {len(codes)} cells the shape-based "
                        f"pseudo-pairs use are the only cell of their batch (batch_key "
                        f"{md.spec.batch_key!r}); they are matched on features centred within "
                        "each batch, which leaves such cells at zero. Give a batch_key whose "
                        "batches hold several cells (samples, donors, plates), or prior "
                        "knowledge (labels_key on every modality, anchor pairs) with "
                        "geometric_pairs=False"
                    )
                x = _center_batches(x, codes)
            feats[name] = (idx, x)
            bar.update()
        return feats

    @staticmethod
    def _pairs_of(
        feats: dict[str, tuple[np.ndarray, np.ndarray]], pairs: list[tuple[str, str]],
        sources: list[str], seed: int, bar: Any,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The pseudo-pairs of each two modalities in ``pairs``, as rows of their data."""
        out = {}
        for a, b in pairs:
            key = f"{a}|{b}"
            bar.set_postfix_str(f"{a!r} and {b!r}: {' + '.join(sources)}", refresh=False)
            label = f"geometric_pairs between {a!r} and {b!r}"
            try:
                rows_a, rows_b = _pseudo_pairs(feats[a][1], feats[b][1], sources, seed, label)
            except ValueError as err:
                # the geometry's advice to lower n_neighbors names no argument of the model
                reason = re.sub(r" \(lower n_neighbors[^)]*\)", "", str(err))
                raise ValueError(
                    f"{label}: {reason}; pass geometric_pairs=False (with other prior "
                    "knowledge: labels_key on every modality, anchor pairs)"
                ) from err
            out[key] = (feats[a][0][rows_a], feats[b][0][rows_b])
            bar.update()
        return out

    def _set_marker_scale(self, train: dict[str, np.ndarray]) -> None:
        """Standardise markers with the mean / sd of all measured training values.

        Every marker must be measured in some training cell of every modality: the
        discriminator sees which cells carry a measurement, and a marker measured in one
        modality only would tell the modalities apart by itself (``ValueError``). (In
        training, a cell without a measurement takes the value of the nearest measured cell
        of its step, so unequal shares measured do not give a modality away.) Mean and
        sd are computed in float64 (float32 squares overflow from about 1e19).
        """
        if not self.module.n_markers:
            return
        keys = self.init_params_["marker_key"]
        keys = [keys] if isinstance(keys, str) else list(keys)
        per_mod = {n: md.markers[train[n]] for n, md in self.mods.items()}
        measured = {n: ~np.isnan(v).all(axis=0) for n, v in per_mod.items()}
        for j, key in enumerate(keys):
            if not any(m[j] for m in measured.values()):
                raise ValueError(f"marker_key {key!r}: not measured in any training cell")
            for name, m in measured.items():
                if not m[j]:
                    raise ValueError(
                        f"marker_key {key!r}: not measured in any training cell of modality "
                        f"{name!r}; the discriminator would tell the modalities apart by it "
                        "\u2014 conditioning needs the marker measured in every modality"
                    )
        values = np.concatenate(list(per_mod.values())).astype(np.float64)
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        std[~(std > 0)] = 1.0
        mean32, std32 = mean.astype(np.float32), std.astype(np.float32)
        std32[std32 == 0] = 1.0  # an sd below float32's range
        bad = ~(np.isfinite(mean32) & np.isfinite(std32))
        if bad.any():
            key = keys[int(np.flatnonzero(bad)[0])]
            raise ValueError(
                f"marker_key {key!r}: the mean / sd of its training values is not a finite "
                "float32 number; rescale the marker"
            )
        self.module.marker_mean.copy_(torch.from_numpy(mean32))
        self.module.marker_std.copy_(torch.from_numpy(std32))

    def _set_class_mask(self, train: dict[str, np.ndarray]) -> None:
        """Record which label classes each modality's training cells carry (a modality
        without any label keeps "all classes": with ``disc_conditional=True`` its cells are
        conditioned on the classifier's predictions, as any unlabelled cell is), and, with
        ``partial_alignment``, which classes the alignment terms act on (see
        :meth:`_set_held_classes`)."""
        if not self.label_categories_:
            return
        mask = self.module.class_mask
        trained = np.zeros(len(self.label_categories_), dtype=bool)
        for k, (name, md) in enumerate(self.mods.items()):
            seen = np.unique(md.labels[train[name] & (md.labels >= 0)])
            trained[seen] = True
            if len(seen):  # a modality without any label keeps "all classes"
                mask[k] = False
                mask[k, torch.from_numpy(seen)] = True
        untrained = [self.label_categories_[i] for i in np.flatnonzero(~trained)]
        key = self.init_params_["labels_key"]
        if not trained.any():  # (labelled cells there are: setup_data refuses none)
            warnings.warn(
                f"labels_key {key!r}: no labelled cell is a training cell (all are validation "
                "cells): the labels act on nothing, the classifier learns nothing and "
                "predict_labels scores with untrained weights. Label more cells, or give a "
                "smaller validation_fraction",
                UserWarning, stacklevel=user_stacklevel(),
            )
        elif untrained:
            warnings.warn(
                f"labels_key {key!r}: class(es) {untrained[:5]}"
                f"{' ...' if len(untrained) > 5 else ''} have no training cell in any modality "
                "(all their cells are validation cells): the classifier never learns them, "
                "yet predict_labels scores them unless classes= leaves them out. Give them "
                "more cells, or a smaller validation_fraction",
                UserWarning, stacklevel=user_stacklevel(),
            )
        if self.init_params_.get("disc_conditional"):
            self._check_classes_connect(train)
        if self.init_params_.get("partial_alignment"):
            self._set_held_classes(train)

    def _classes_held(self, train: dict[str, np.ndarray]) -> dict[str, set[int] | None]:
        """The label classes (codes) each modality holds: those of its labelled training
        cells; ``None`` (any class) for a modality with at least half its training cells
        (or all: none) unlabelled, whose cell types are mostly unknown."""
        mask = self.module.class_mask.cpu().numpy()
        held: dict[str, set[int] | None] = {}
        for k, (n, md) in enumerate(self.mods.items()):
            labels = md.labels[train[n]]
            mostly_unlabelled = not labels.size or (labels < 0).mean() >= 0.5
            held[n] = None if mostly_unlabelled else set(np.flatnonzero(mask[k]).tolist())
        return held

    def _set_held_classes(self, train: dict[str, np.ndarray]) -> None:
        """Partial alignment: record the classes each modality holds
        (:meth:`_classes_held`), so that the alignment terms act on each class among the
        modalities that hold it; a class of one modality only is left out. Where no class
        is held by two modalities, every class stays aligned: leaving them all out would
        align nothing."""
        if len(self.mods) < 2:
            return
        held = np.ones((len(self.mods), len(self.label_categories_)), dtype=bool)
        for k, classes in enumerate(self._classes_held(train).values()):
            if classes is not None:
                held[k] = False
                held[k, sorted(classes)] = True
        if not (held.sum(0) >= 2).any():  # (said at setup: they share no label class)
            return
        self.module.set_held_classes(torch.from_numpy(held))

    def _check_classes_connect(self, train: dict[str, np.ndarray]) -> None:
        """With a conditional discriminator, modalities are aligned class by class: refuse
        modalities that no chain of shared classes links (each group would be told apart
        by its labels alone). A modality with at least half its training cells unlabelled
        links to every other: those cells are conditioned on the classifier's predictions."""
        groups = class_groups(self._classes_held(train))
        if len(groups) > 1:
            raise ValueError(
                f"disc_conditional=True: the modalities {' / '.join(map(str, groups))} share "
                f"no label class between the groups (labels_key "
                f"{self.init_params_['labels_key']!r}, most training cells labelled); the "
                "discriminator would tell the groups apart by their labels alone, so nothing "
                "would align them. Check that the modalities name their classes alike, or use "
                "disc_conditional=False"
            )
