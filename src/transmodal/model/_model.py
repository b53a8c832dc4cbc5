"""The user-facing cross-modal autoencoder: data in, training, embeddings and translations out."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import os
import re
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._utils import (
    argument_hints, check_parallel, check_path, is_global_zero, jsonable,
    lightning_accelerator, linked_groups, resolve_device, seeded, torch_defaults, user_stacklevel,
)
from ..data._batches import MIN_TRAINING_BATCH, EpochBatches
from ..data._h5ad import check_output_h5ad, write_rows_h5ad
from ..data._modality import Modality, as_widths, check_modality_name, is_number
from ..data._prefetch import Prefetcher
from ..data._preprocess import fit_preprocessing
from ..data._setup import (
    ModalityData,
    class_groups,
    features_differ,
    label_str,
    setup_data,
    target_batch_codes,
    warn_label_conflicts,
    warn_unnamed_columns,
)
from ..data._source import CHUNK_VALUES, MatrixSource, check_values, matrix_of, sampled_blocks
from ..geometry import geometric_pairs, transport_pairs
from ..images._radial import recorded_spacing
from ..nn._conv import DEFAULT_CHANNELS
from ..nn._likelihoods import get_likelihood
from ._module import CrossModalModule, ModalityArch
from ._split import choose_anchors, names_digest, validation_masks, warn_unused_pairs

# below this many training cells per modality the default shape-based pairs are skipped
_MIN_GEOMETRY_CELLS = 100
# sources of shape-based pseudo-pairs (``geometric_pairs=``): the Isomap overlay, landmark
# Gromov-Wasserstein transport, or both; ``True`` / ``None`` (when on) use the default,
# chosen on benchmarks/unpaired.py (README: both beat the overlay alone on every data set)
_GEOMETRY_METHODS = ("overlay", "transport", "overlay+transport")
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


SEPARABLE_ACCURACY = 0.8
DISC_SEPARABLE_ACCURACY = 0.9  # aligned runs measured 0.50-0.68, unaligned ones 1.00
MIN_DISC_CELLS = 20  # cells per modality below which the conditional check says nothing


def _check_number(
    name: str, value: Any, *, low: float = 0.0, strict: bool = False, integer: bool = False
) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite number (an integer
    with ``integer``) ``>= low`` (``> low`` with ``strict``)."""
    if is_number(value, integer=integer) and (value > low if strict else value >= low):
        return
    kind = "an integer" if integer else "a finite number"
    raise ValueError(f"{name} must be {kind} {'>' if strict else '>='} {low:g}, got {value!r}")


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# torch.manual_seed and numpy's generators take seeds in [0, 2**63)
_MAX_SEED = 2**63 - 1
# Lightning precisions the training supports (long forms first); half-precision weights
# ("16-true", "bf16-true") break the latent distance kernels (no float16 cdist)
_PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", 32, 64, 16, "32", "64", "16", "bf16")


def _check_seed(seed: Any) -> None:
    if not (is_number(seed, integer=True) and 0 <= seed <= _MAX_SEED):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")


def _check_prior(prior: str, names: Sequence[str]) -> str | None:
    if prior == "learned":
        return None
    if isinstance(prior, str) and prior.startswith("anchor:"):
        anchor = prior.split(":", 1)[1]
        if anchor not in names:
            raise ValueError(
                f"prior {prior!r}: anchor modality {anchor!r} is not one of {list(names)}"
            )
        return anchor
    raise ValueError(f"prior must be 'learned' or 'anchor:<modality>', got {prior!r}")


def _device_of(accelerator: str) -> torch.device:
    """The one device that Lightning's ``accelerator`` trains on in this process."""
    if accelerator == "cuda" or (accelerator in ("gpu", "auto") and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return resolve_device(accelerator if accelerator in ("mps", "auto", "gpu") else "cpu")


def _collect(blocks: Iterator[np.ndarray], n: int) -> np.ndarray:
    """The row blocks of ``n`` rows in all as one array, filled in place (concatenating the
    list of blocks held them and the result at once: twice the output's memory)."""
    out, pos = None, 0
    for block in blocks:
        if out is None:
            out = np.empty((n, *block.shape[1:]), dtype=block.dtype)
        out[pos : pos + len(block)] = block
        pos += len(block)
    return out


class _Rows:
    """A subset of rows of a :class:`MatrixSource` with the same ``rows`` interface."""

    def __init__(self, src: MatrixSource, rows: np.ndarray) -> None:
        self.src, self.idx = src, np.asarray(rows)
        self.n_obs = len(self.idx)
        self.n_vars = src.n_vars
        self.on_disk = src.on_disk

    def rows(self, idx: np.ndarray) -> np.ndarray:  # noqa: D102
        return self.src.rows(self.idx[idx])

    def chunk_rows(self, chunk_size: int) -> int:  # noqa: D102
        return self.src.chunk_rows(chunk_size)


class CrossModalAE:
    """Cross-modal autoencoder (Yang et al., Nat. Commun. 2021) for any number of modalities.

    Each modality gets its own encoder / decoder; all encoders map into one shared latent
    space whose modality distributions are aligned by an adversarial latent discriminator.
    Optional prior knowledge: a latent classifier on shared labels and an anchor loss (L1
    as in the paper, L2 or contrastive: ``train(anchor_distance=)``) on a seeded fraction of
    the cells known to be paired.

    Parameters
    ----------
    data
        ``{name: AnnData}`` or a ``MuData``. Cells are paired between modalities by equal
        ``obs_names`` (for a ``MuData``: by its per-modality membership maps); any fraction
        of pairing, including none, is allowed. Modality names may not contain '.' or '|'.
    modalities
        ``{name: Modality(...)}``: where each matrix is, its likelihood and preprocessing.
    n_latent
        Dimension of the shared latent space.
    hidden
        Default hidden layer widths of encoders (decoders mirror them).
    dropout
        Dropout rate of hidden layers (of an image encoder: before its last, linear layer;
        image decoders, which are convolutional, take none).
    disc_noise
        Gaussian instance noise on the discriminator's inputs during training.
    disc_conditional
        Condition the latent discriminator on ``labels_key`` (one-hot; unlabelled cells get
        the latent classifier's prediction, so that a modality with fewer labels is not
        given away by them), aligning the modalities class by class.
    variational
        VAE variant: Gaussian posteriors, a KL term weighted by ``beta`` in :meth:`train`;
        embeddings are posterior means and translation can sample.
    n_private
        Modality-private latent dimensions (the paper's proposed extension): used only by
        the modality's own decoder; the embedding is the shared part.
    prior
        ``"learned"``: all autoencoders are aligned to each other; ``"anchor:<name>"``:
        modality ``name`` is pre-trained alone and the others are aligned to its latent.
    labels_key
        ``obs`` column of shared labels for the latent classifier (missing values allowed;
        a modality without the column, e.g. the one labels are transferred to, is
        unlabelled).
    marker_key
        Numeric ``obs`` column(s) of a shared continuous marker (e.g. a protein ratio) on
        which the latent discriminator is conditioned (NaN = not measured: in training,
        such a cell takes the value of the nearest cell of its step, in the latent space,
        where the marker was measured).
    anchor_fraction
        Fraction (0-1) of the paired training cells whose pairing is used by the anchor
        loss (rounded, at least one pair), drawn for every two modalities on its own (with
        three modalities measured on the same cells, 0.25 uses the pairing of more than a
        quarter of the cells: about 58 %); the seeded choice is saved with the model. Above
        0 it needs two modalities that share cells (a ``ValueError`` otherwise). ``None``
        (default): 0, the paper's unpaired setting, with a warning where modalities share
        training cells (their pairs would go unused); pass 0 to keep that silently.
    geometric_pairs
        Pseudo-pairs from the shapes of the data (:func:`transmodal.geometry.geometric_pairs`:
        landmark Isomap of each modality, overlaid by Wasserstein-Procrustes, each cell
        matched to its nearest partner), added to the anchor loss for modality pairs
        without known anchors. ``None`` (default): on only when no ``marker_key``, no
        ``labels_key`` class that the training cells of every modality hold and no chain
        of anchor pairs ties every modality to the others, i.e. when nothing else can tell
        which alignment of the latent distributions is the right one (and every modality
        has at least 100 training cells), and then only between modalities that no anchors
        chain together (e.g. a third modality measured on other cells than two paired
        ones); where they cannot be computed, the model warns and trains without them.
        ``True`` / ``False``: always on / off. A source of the pairs (on): ``"overlay"``
        (the Isomap overlay above), ``"transport"``
        (:func:`transmodal.geometry.transport_pairs`: entropic Gromov-Wasserstein transport
        between at most 2,000 landmark cells per modality) or ``"overlay+transport"`` (both
        sets of pairs, what ``True`` and ``None`` use: on the unpaired benchmarks it matched
        better than either alone, README).
    validation_fraction
        Fraction of cells held out for validation and early stopping (split over pairing
        keys, so both measurements of a cell land on the same side; a small unpaired
        modality that this draw leaves with fewer than 2 validation cells draws its own
        share from its cells).
    seed
        Seeds the weight initialisation, the validation split and the anchor choice. The
        networks are built, and the training batches drawn, in the order of
        ``modalities``: the same seed with the modalities in another order (also in a
        config file) trains another model (the split and the anchors stay the same).
    check_data
        Scan every matrix for values its likelihood rejects before building networks;
        :meth:`train` and the methods reading the model's own cells (``adata=None``) scan
        them again (values edited in place since, e.g. by ``sc.pp.log1p``, would otherwise
        go unnoticed; one more pass over the matrix). ``False`` skips all these scans;
        cells passed as ``adata`` are always scanned.

    Examples
    --------
    >>> model = tm.CrossModalAE({"rna": rna, "atac": atac},
    ...     modalities={"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")})
    >>> model.train(max_epochs=50)
    >>> rna.obsm["X_transmodal"] = model.get_latent_representation("rna")
    >>> atac_from_rna = model.translate(rna, source="rna", target="atac")
    """

    @argument_hints
    def __init__(
        self,
        data: Mapping[str, AnnData] | Any,
        modalities: Mapping[str, Modality | dict | str],
        *,
        n_latent: int = 32,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        disc_noise: float = 0.0,
        disc_conditional: bool = False,
        variational: bool = False,
        n_private: int = 0,
        prior: str = "learned",
        labels_key: str | None = None,
        marker_key: str | list[str] | None = None,
        anchor_fraction: float | None = None,
        geometric_pairs: bool | str | None = None,
        validation_fraction: float = 0.1,
        seed: int = 0,
        check_data: bool = True,
    ) -> None:
        params = {
            "n_latent": n_latent,
            "hidden": list(as_widths(hidden) or ()) or hidden,
            "dropout": dropout,
            "disc_noise": disc_noise,
            "disc_conditional": disc_conditional,
            "variational": variational,
            "n_private": n_private,
            "prior": prior,
            "labels_key": labels_key,
            "marker_key": marker_key,
            "anchor_fraction": 0.0 if anchor_fraction is None else anchor_fraction,
            "geometric_pairs": geometric_pairs,
            "validation_fraction": validation_fraction,
            "seed": seed,
        }
        params = self._check_params(params)
        for name in modalities if isinstance(modalities, Mapping) else ():
            check_modality_name(name)
        self._setup(data, modalities, params, label_categories=None, check_data=check_data)
        seed = params["seed"]
        masks = validation_masks(self.mods, params["validation_fraction"], seed)
        self.val_masks_ = masks
        train = {n: ~m for n, m in masks.items()}
        self.anchors_ = choose_anchors(self.mods, train, params["anchor_fraction"], seed)
        if anchor_fraction is None:
            warn_unused_pairs(self.mods, train)
        if self.anchors_ and self.label_categories_:
            warn_label_conflicts(self.mods, self.label_categories_, params["labels_key"])
        self._set_class_mask(train)
        self._set_marker_scale(train)
        for name, md in self.mods.items():
            fit_preprocessing(
                self.module.transforms[name], md.source, np.flatnonzero(train[name]), seed=seed
            )
        self.geometric_pairs_: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self._use_geometry(params):
            try:
                self.geometric_pairs_ = self._geometric_pairs(train, seed)
            except ValueError as err:
                if params["geometric_pairs"] is not None:  # asked for: an error
                    raise
                warnings.warn(  # on by default: the model trains without them
                    f"the shape-based pseudo-pairs, on by default here, cannot be computed "
                    f"({err}); training goes on without them",
                    UserWarning, stacklevel=user_stacklevel(),
                )

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
        labels_tie = p["labels_key"] is not None and bool(set.intersection(*classes))
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
                codes = md.batches[idx]
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

    # -- construction ----------------------------------------------------------------------
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
        """Record which label classes each modality's training cells carry.

        With ``disc_conditional=True`` every modality needs a labelled training cell: the
        discriminator sees the labels' one-hot (zeros when unlabelled), which would tell
        a modality without labels apart by itself (``ValueError``).
        """
        if not self.label_categories_:
            return
        mask = self.module.class_mask
        trained = np.zeros(len(self.label_categories_), dtype=bool)
        for k, (name, md) in enumerate(self.mods.items()):
            seen = np.unique(md.labels[train[name] & (md.labels >= 0)])
            trained[seen] = True
            if not len(seen) and self.init_params_.get("disc_conditional"):
                raise ValueError(
                    f"disc_conditional=True: modality {name!r} has no labelled training cell "
                    f"(labels_key {self.init_params_['labels_key']!r}); the discriminator would "
                    "tell the modalities apart by the missing labels \u2014 conditioning needs "
                    "labels in every modality"
                )
            if len(seen):  # a modality without any label keeps "all classes"
                mask[k] = False
                mask[k, torch.from_numpy(seen)] = True
        untrained = [self.label_categories_[i] for i in np.flatnonzero(~trained)]
        if untrained and trained.any():
            warnings.warn(
                f"labels_key {self.init_params_['labels_key']!r}: class(es) {untrained[:5]}"
                f"{' ...' if len(untrained) > 5 else ''} have no training cell in any modality "
                "(all their cells are validation cells): the classifier never learns them, "
                "yet predict_labels scores them unless classes= leaves them out. Give them "
                "more cells, or a smaller validation_fraction",
                UserWarning, stacklevel=user_stacklevel(),
            )
        if self.init_params_.get("disc_conditional"):
            self._check_classes_connect(train)

    def _check_classes_connect(self, train: dict[str, np.ndarray]) -> None:
        """With a conditional discriminator, modalities are aligned class by class: refuse
        modalities that no chain of shared classes links (each group would be told apart
        by its labels alone). A modality with at least half its training cells unlabelled
        links to every other: those cells are conditioned on the classifier's predictions."""
        mask = self.module.class_mask.cpu().numpy()
        groups = class_groups({
            n: None if (md.labels[train[n]] < 0).mean() >= 0.5
            else set(np.flatnonzero(mask[k]).tolist())
            for k, (n, md) in enumerate(self.mods.items())
        })
        if len(groups) > 1:
            raise ValueError(
                f"disc_conditional=True: the modalities {' / '.join(map(str, groups))} share "
                f"no label class between the groups (labels_key "
                f"{self.init_params_['labels_key']!r}, most training cells labelled); the "
                "discriminator would tell the groups apart by their labels alone, so nothing "
                "would align them. Check that the modalities name their classes alike, or use "
                "disc_conditional=False"
            )

    @staticmethod
    def _check_params(p: dict[str, Any]) -> dict[str, Any]:
        """Check the constructor's arguments; return them as plain Python values (numpy
        scalars converted), as they are saved."""
        _check_number("n_latent", p["n_latent"], low=1, integer=True)
        _check_number("n_private", p.get("n_private", 0), integer=True)
        if as_widths(p["hidden"]) is None:
            raise ValueError(
                f"hidden must be a non-empty list of positive integers, got {p['hidden']!r}"
            )
        geometry = p.get("geometric_pairs")
        if not (geometry is None or isinstance(geometry, (bool, np.bool_))
                or (isinstance(geometry, str) and geometry in _GEOMETRY_METHODS)):
            raise ValueError(
                f"geometric_pairs must be None, True, False or one of {list(_GEOMETRY_METHODS)}, "
                f"got {p['geometric_pairs']!r}"
            )
        for key in ("disc_conditional", "variational"):
            if key in p and not isinstance(p[key], (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {p[key]!r}")
        for key, high, closed in (
            ("dropout", 1, False), ("anchor_fraction", 1, True), ("validation_fraction", 1, False)
        ):
            value = p[key]
            if key == "anchor_fraction" and value is None:  # the default: 0, warning of pairs
                continue
            if not (is_number(value) and 0 <= value and (value <= high if closed else value < high)):
                interval = f"[0, {high}]" if closed else f"[0, {high})"
                raise ValueError(f"{key} must be a number in {interval}, got {value!r}")
        _check_number("disc_noise", p.get("disc_noise", 0.0))
        _check_seed(p["seed"])
        labels_key = p.get("labels_key")
        if labels_key is not None and not isinstance(labels_key, str):
            raise ValueError(f"labels_key must be an obs column name or None, got {labels_key!r}")
        if p.get("disc_conditional") and labels_key is None:
            raise ValueError("disc_conditional=True needs a labels_key to condition on")
        markers = p.get("marker_key")
        if markers is not None and not isinstance(markers, str) and not (
            isinstance(markers, (list, tuple)) and markers
            and all(isinstance(k, str) for k in markers)
        ):
            raise ValueError(
                f"marker_key must be a column name or a non-empty list of names, got {markers!r}"
            )
        return jsonable(p)

    def _setup(
        self, data, modalities, params, *, label_categories, check_data, labels_optional=False,
        allow_empty: tuple[str, ...] = (), batch_categories: Mapping[str, list[str]] | None = None,
        trained: bool = False,
    ) -> None:
        """Validate data, then build the networks (seeded); shared by ``__init__`` and ``load``."""
        self._check_data = bool(check_data)  # also when the model's own cells are read again
        for name in modalities if isinstance(modalities, Mapping) else ():
            check_modality_name(name, new=False)  # (a new model's: checked in __init__)
        mods, categories = setup_data(
            data,
            modalities,
            labels_key=params["labels_key"],
            label_categories=label_categories,
            check_data=check_data,
            labels_optional=labels_optional,
            marker_key=params.get("marker_key"),
            allow_empty=allow_empty,
            batch_categories=batch_categories,
            trained=trained,
        )
        self.anchor_modality_ = _check_prior(params["prior"], list(mods))
        self.init_params_ = params
        self.mods: dict[str, ModalityData] = mods
        self.label_categories_ = categories
        self.batch_categories_: dict[str, list[str]] = {
            n: list(md.batch_categories)
            for n, md in mods.items()
            if md.batch_categories is not None
        }
        # image modalities: the pixel (voxel) spacing read_nuclei recorded, passed on to
        # translations so that their radial profiles measure as the real crops' do
        self.image_spacing_: dict[str, list[float]] = {}
        for n, md in mods.items():
            if md.source.image_shape is None:
                continue
            try:  # (a recorded value that is no spacing is not passed on)
                spacing = recorded_spacing(md.adata, len(md.source.image_shape) - 1)
            except ValueError:
                continue
            if spacing is not None:
                self.image_spacing_[n] = list(spacing)
        archs = {}
        for name, md in mods.items():
            image = md.source.image_shape
            opts = md.spec.resolved(image=image is not None)
            default_hidden = DEFAULT_CHANNELS if image is not None else tuple(params["hidden"])
            archs[name] = ModalityArch(
                n_vars=md.source.n_vars,
                likelihood=md.spec.likelihood,
                hidden=md.spec.hidden or default_hidden,
                input_dropout=md.spec.input_dropout,
                image_shape=image,
                augment=bool(md.spec.augment and image is not None),
                n_batches=len(self.batch_categories_.get(name, ())),
                **opts,
            )
        with torch_defaults(), seeded(params["seed"]):
            self.module = CrossModalModule(
                archs,
                n_latent=params["n_latent"],
                dropout=params["dropout"],
                disc_noise=params.get("disc_noise", 0.0),
                disc_conditional=params.get("disc_conditional", False),
                variational=params.get("variational", False),
                n_private=params.get("n_private", 0),
                n_markers=0 if params.get("marker_key") is None else len(
                    [params["marker_key"]] if isinstance(params["marker_key"], str) else params["marker_key"]
                ),
                n_labels=len(categories) if categories else 0,
            )
        self.history_: pd.DataFrame | None = None
        self.train_params_: dict[str, Any] = {}
        self.is_trained_ = False
        self.mixing_accuracy_: float | None = None
        self.disc_accuracy_: float | None = None
        self._split_dropped = False  # load() had to drop the saved validation split
        # (saved pair and validation tensors, obs digests) of a model loaded without its
        # data, passed on when it is saved again
        self._training_record: tuple[dict, dict] | None = None

    @property
    def modality_names(self) -> list[str]:
        """Names of the modalities, in model order."""
        return list(self.mods)

    @property
    def classes_seen(self) -> dict[str, list[str]]:
        """The label classes carried by each modality's training cells (``labels_key``); a
        modality with no labelled cell lists every class of the model, since its cells may
        belong to any of them (the latent classifier does not restrict it)."""
        if not self.label_categories_:
            return {}
        cats = list(self.label_categories_)
        mask = self.module.class_mask.cpu().numpy()
        return {n: [c for c, seen in zip(cats, mask[k]) if seen] for k, n in enumerate(self.mods)}

    @property
    def history(self) -> pd.DataFrame | None:
        """Per-epoch loss terms and discriminator accuracy (train and validation)."""
        return self.history_

    def __repr__(self) -> str:
        parts = [
            f"{n}: {md.n_obs} x {md.source.n_vars} ({md.spec.likelihood}"
            + (f", {len(self.batch_categories_[n])} batches" if n in self.batch_categories_ else "")
            + ")"
            for n, md in self.mods.items()
        ]
        n_params = sum(p.numel() for p in self.module.parameters())
        anchors = sum(len(v[0]) for v in self.anchors_.values())
        geometric = sum(len(v[0]) for v in self.geometric_pairs_.values())
        return (
            f"CrossModalAE(n_latent={self.init_params_['n_latent']}, prior="
            f"{self.init_params_['prior']!r}, {n_params:,} parameters, {anchors} anchor pairs, "
            f"{geometric} geometric pairs, trained={self.is_trained_})\n  " + "\n  ".join(parts)
        )

    def __deepcopy__(self, memo: dict) -> CrossModalAE:
        """``copy.deepcopy(model)``: its own networks, settings and history (training the
        copy leaves the model as it was); the cells are shared, not copied, as with a second
        model built on them: their AnnData objects and the matrices read from them (also
        from backed files, which cannot be copied)."""
        import copy

        for md in self.mods.values():
            for shared in (md.adata, md.source, md.source.totals):
                if shared is not None:
                    memo.setdefault(id(shared), shared)
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __copy__(self) -> CrossModalAE:
        """``copy.copy(model)``: a model sharing the networks (training one changes the
        other's weights, but not its ``history`` or ``is_trained_``): for a model of its
        own, ``copy.deepcopy``."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        return new

    def __getstate__(self) -> dict[str, Any]:
        """Pickling is Python's business, not a model file (:meth:`save` writes one that is
        safe to open); refused with a pointer to :meth:`save` for cells read from a file."""
        for name, md in self.mods.items():
            if md.source.on_disk or md.adata.isbacked:
                where = md.source.file or md.adata.filename
                raise TypeError(
                    f"CrossModalAE cannot be pickled: modality {name!r} is read from a file "
                    f"({where}); save the model with model.save(path) and open it "
                    "with CrossModalAE.load(path, data) (copy.deepcopy(model) shares the cells)"
                )
        return self.__dict__

    # -- training --------------------------------------------------------------------------
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
            ("lr", dict(strict=True)),
            ("lr_disc", dict(strict=True)),  # None: lr
            ("anchor_temperature", dict(strict=True)),
            *((k, {}) for k in ("weight_decay", "lam_adv", "lam_cls", "lam_anchor",
                                "lam_latent", "lam_mmd", "lam_batch", "beta")),
        )
        nullable = ("max_epochs", "pretrain_epochs", "adv_warmup_epochs", "patience", "lr_disc")
        for key, kw in checks:  # None of a nullable one: its default
            if key in p and not (key in nullable and p[key] is None):
                _check_number(key, p[key], **kw)
        if p.get("seed") is not None:  # None: the model's seed
            _check_seed(p["seed"])
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
        accelerator: str = "cpu",
        devices: int | str | list[int] = 1,
        strategy: str = "auto",
        num_nodes: int = 1,
        precision: str | int = "32-true",
        progress_bar: bool = True,
        seed: int | None = None,
    ) -> CrossModalAE:
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
            Weights of the adversarial alignment, latent classifier and anchor loss.
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
            one widens them towards 1, as wide as the spread of the means. Early stopping
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
            that nothing in the model reads (``beta`` without ``variational``, ``lam_cls``
            without ``labels_key``, anchor options without pairs) warn that they have no
            effect.
        pretrain_epochs
            Anchor prior only: epochs (an integer >= 0, at most ``max_epochs``) of
            pre-training the anchor autoencoder alone (default: a quarter of
            ``max_epochs``, and 0 when the model is already trained, except that a call
            interrupted during pre-training leaves its remaining epochs to the next call's
            default); ignored, with a warning, by the learned prior. The anchor autoencoder
            is frozen after it, so an untrained model needs at least 1.
        adv_warmup_epochs
            Linear warm-up (integer >= 0 epochs) of the adversarial weight (default: a
            tenth of ``max_epochs``).
        early_stopping, patience
            Stop when the validation reconstruction (+ classifier + anchor) loss has not
            improved for ``patience`` (integer >= 0) epochs (default: a fifth of
            ``max_epochs``, >= 10). Needs validation cells in every modality
            (``validation_fraction`` > 0); without them it is off, with a warning. The
            model keeps the weights of the last epoch run (the monitored loss leaves out
            the alignment, so its best epoch need not be the best aligned one).
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
        stops training with ``KeyboardInterrupt``; the model keeps the
        weights trained so far and the history of the epochs completed. Any other error
        raised while training (e.g. a file that cannot be read) leaves the model as it was
        before this call, weights included.
        """
        self._check_train_params(locals())
        # Lightning (about 2 s to import) is loaded only to train: embedding, translating
        # and loading models do without it
        from ..train import (
            CrossModalPlan, TrainingDiverged, TrainingInterrupted, default_max_epochs, run_training,
        )

        accelerator = lightning_accelerator(accelerator)
        for name, mask in self.val_masks_.items():
            n_train = int((~mask).sum())
            if self.mods[name].n_obs == 0:
                raise ValueError(
                    f"modality {name!r} has no cells (a model loaded without its data?); "
                    "to train further, load it with data for every modality"
                )
            self.mods[name].check_current()
            if self._check_data:  # values edited in place since (e.g. sc.pp.log1p)
                check_values(self.mods[name].source, self.mods[name].spec,
                             new_cells=self.is_trained_)
            if n_train < 2:
                raise ValueError(
                    f"modality {name!r} has {n_train} training cell(s); training needs at "
                    "least 2 per modality (batch normalisation)"
                )
            batches = self.mods[name].batches
            if batches is not None and (batches < 0).any():  # (validation cells are decoded too)
                key = self.mods[name].spec.batch_key
                n_val = int((batches[mask] < 0).sum())
                raise ValueError(
                    f"modality {name!r}: {int((batches < 0).sum())} cell(s) "
                    + (f"({n_val} of them validation cells) " if n_val else "")
                    + f"have no batch of the model (obs[{key!r}] missing, empty or holding a "
                    f"batch other than {self.batch_categories_[name]}); the decoder needs "
                    "each training and validation cell's batch"
                )
        if is_global_zero(launcher=True):
            self._warn_batches(lam_batch)
            self._warn_unknown_labels()
        seed = self.init_params_["seed"] if seed is None else seed
        n_max = max(md.n_obs for md in self.mods.values())
        max_epochs = default_max_epochs(n_max) if max_epochs is None else int(max_epochs)
        anchor = self.anchor_modality_
        if anchor is None and pretrain_epochs:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs} is ignored: only prior='anchor:<modality>' "
                f"pre-trains a modality (this model's prior is "
                f"{self.init_params_['prior']!r})",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
            pretrain_epochs = 0  # nor does it delay early stopping (min_epochs)
        # options set (away from their default) that nothing in this model reads
        given = {"beta": beta, "lam_cls": lam_cls, "lam_anchor": lam_anchor,
                 "anchor_distance": anchor_distance, "anchor_temperature": anchor_temperature}
        defaults = {k: p.default for k, p in inspect.signature(type(self).train).parameters.items()}
        idle = {
            "beta": "the model is not variational (variational=True)"
            if not self.init_params_.get("variational") else None,
            "lam_cls": "the model has no latent classifier (labels_key)"
            if self.module.classifier is None else None,
            **dict.fromkeys(
                ("lam_anchor", "anchor_distance", "anchor_temperature"),
                "the model has no anchor pairs or pseudo-pairs"
                if not (self.anchors_ or self.geometric_pairs_) else None,
            ),
        }
        if idle["anchor_temperature"] is None and anchor_distance != "contrastive":
            idle["anchor_temperature"] = (
                f"only anchor_distance='contrastive' has a temperature (not {anchor_distance!r})"
            )
        if anchor_distance == "contrastive" and self.module.n_latent < 2 and lam_anchor and (
            self.anchors_ or self.geometric_pairs_
        ):
            raise ValueError(
                "anchor_distance='contrastive' needs n_latent >= 2: it compares directions "
                "(cosine similarity), and in one dimension every cell points one of two ways, "
                "so the pairs would teach nothing; use anchor_distance='l1' or 'l2'"
            )
        for name, why in idle.items():
            value = given[name]
            if why and value not in (defaults[name], 0) and is_global_zero(launcher=True):
                warnings.warn(f"{name}={value!r} has no effect: {why}", UserWarning,
                              stacklevel=user_stacklevel())
        # pre-training epochs an interrupted call left undone (the anchor is not frozen yet)
        pretrain_left = int(self.train_params_.get("pretrain_left", 0)) if anchor else 0
        pretrain_owed = pretrain_epochs  # (what remains owed is counted against this)
        if pretrain_epochs is None:  # a trained anchor autoencoder is not pre-trained again
            pretrain_epochs = (
                max(1, max_epochs // 4) if anchor is not None and not self.is_trained_
                else min(pretrain_left, max_epochs)
            )
            pretrain_owed = max(pretrain_epochs, pretrain_left)
        elif pretrain_left and pretrain_epochs < pretrain_left:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs}: the anchor modality {anchor!r} is "
                f"{pretrain_left} epoch(s) short of the pre-training an interrupted call "
                "asked for, and is frozen after this call's pre-training (by default the "
                "call finishes it)", UserWarning, stacklevel=user_stacklevel(),
            )
        if anchor is not None and pretrain_epochs == 0 and not self.is_trained_:
            raise ValueError(
                f"pretrain_epochs=0 with prior {self.init_params_['prior']!r} on an untrained "
                f"model: the anchor modality {anchor!r} is frozen after pre-training, so it "
                "would keep its random weights; pre-train it (pretrain_epochs >= 1) or use "
                "prior='learned'"
            )
        if anchor is not None and pretrain_epochs > max_epochs:
            raise ValueError(
                f"pretrain_epochs={pretrain_epochs} > max_epochs={max_epochs} (prior "
                f"{self.init_params_['prior']!r}): pre-training the anchor modality {anchor!r} "
                "leaves no epoch to train the other modalities"
            )
        if anchor is not None and pretrain_epochs == max_epochs:
            warnings.warn(
                f"pretrain_epochs={pretrain_epochs} = max_epochs (prior "
                f"{self.init_params_['prior']!r}): only the anchor modality {anchor!r} is "
                "trained; no epoch is left to train the other modalities",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
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
        val_batches = None
        if all(len(v) for v in val_idx.values()):
            # the same share of the validation cells' pairs as of the training cells' (all
            # of them would tell early stopping more pairs than the model may know)
            val_pairs = choose_anchors(
                self.mods, self.val_masks_, self.init_params_["anchor_fraction"], seed,
                warn=False,  # (warned about, if at all, for the training pairs)
            ) if self.anchors_ else None
            val_batches = EpochBatches(
                self.mods, val_idx, batch_size=batch_size, pairs=val_pairs, shuffle=False
            )
        elif early_stopping and is_global_zero(launcher=True):
            lacking = [n for n, v in val_idx.items() if not len(v)]
            fraction = self.init_params_["validation_fraction"]
            small = {n: md.n_obs for n, md in self.mods.items()
                     if fraction > 0 and int(round(fraction * md.n_obs)) < 2}
            fewest = min(small.values(), default=0)
            advice = (
                f"validation_fraction={math.ceil(200 / fewest) / 100:g} or more would give "
                "it 2 (more where its cells are paired: a cell's measurements share a side)"
                if fewest >= 4 else "no fraction leaves 2 validation and 2 training cells "
                "in a modality of fewer than 4"
            )
            why = (
                "load() dropped the saved validation split, since the cells given to it are "
                "not the training cells in their order (its former validation cells now "
                "train too; to keep the split, load with the training cells as they were)"
                if self._split_dropped else
                f"validation_fraction={fraction}: the split needs 2 validation and 2 training "
                "cells in every modality, and "
                + ", ".join(f"{n!r} ({k} cells)" for n, k in small.items())
                + f" {'holds' if len(small) == 1 else 'hold'} too few for that; {advice}"
                if small else f"validation_fraction={fraction}"
            )
            warnings.warn(
                f"early_stopping=True is off: no validation cells in "
                f"{'modality' if len(lacking) == 1 else 'modalities'} "
                f"{', '.join(map(repr, lacking))} ({why}); all {max_epochs} epochs run",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        plan = CrossModalPlan(
            self.module,
            lr=lr,
            lr_disc=lr if lr_disc is None else lr_disc,
            weight_decay=weight_decay,
            lam_adv=lam_adv,
            lam_cls=lam_cls if self.module.classifier is not None else 0.0,
            lam_anchor=lam_anchor,
            lam_latent=lam_latent,
            n_disc_steps=n_disc_steps,
            lam_mmd=lam_mmd,
            lam_batch=lam_batch,
            beta=beta,
            anchor_distance=anchor_distance,
            anchor_temperature=anchor_temperature,
            anchor=anchor,
            pretrain_epochs=pretrain_epochs,
            adv_warmup_epochs=adv_warmup_epochs,
            batches=train_batches,
        )
        # an interrupt within the first epoch restores these: the model stays as it was
        before = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        self.module.train()
        interrupted, diverged = False, None
        try:
            history = run_training(
                plan,
                train_batches,
                val_batches,
                max_epochs=max_epochs,
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                num_nodes=num_nodes,
                precision=precision,
                progress_bar=progress_bar,
                early_stopping=early_stopping,
                patience=patience,
                min_epochs=pretrain_epochs + adv_warmup_epochs,
                seed=seed,
            )
        except TrainingInterrupted as err:  # Ctrl+C: record the epochs run, then re-raise
            history, interrupted = err.history, True
        except TrainingDiverged as err:  # the last finite epoch's weights are back: record
            history, diverged = err.history, err  # the epochs up to it, then re-raise
        except BaseException:  # any other error: the model stays as it was (its history and
            self.module.load_state_dict(before)  # flags tell of the weights before the call)
            raise
        finally:  # also after a failure or an interrupt: float32 weights on the CPU,
            # trainable (the anchor was frozen), in evaluation mode
            self.module.float().cpu().eval()
            for p in self.module.parameters():
                p.requires_grad_(True)
        epochs_run = int(len(history))
        if interrupted and not epochs_run:  # part of an epoch: the model stays as it was
            self.module.load_state_dict(before)
            raise KeyboardInterrupt(
                f"training interrupted within its first epoch (of {max_epochs}); the model "
                "keeps the weights it had before this train() call"
            )
        del before
        if epochs_run and self.history_ is not None and len(self.history_):  # continue count
            history.index = history.index + int(self.history_.index.max()) + 1
            history = pd.concat([self.history_, history])
        if epochs_run:  # (an interrupt within the first epoch adds nothing)
            self.history_ = history
        self.train_params_ = jsonable({
            # (any call's) classifier loss with a weight: predict_labels is no guess
            "classifier_trained": bool(classifier_trained or (lam_cls > 0 and epochs_run)),
            "max_epochs": max_epochs,
            "epochs_run": epochs_run,  # by this call; history holds every call's
            "epochs_total": 0 if self.history_ is None else int(len(self.history_)),
            "batch_size": batch_size,
            "lr": lr,
            "lr_disc": lr if lr_disc is None else lr_disc,
            "weight_decay": weight_decay,
            "lam_adv": lam_adv,
            "lam_cls": lam_cls,
            "lam_anchor": lam_anchor,
            "lam_latent": lam_latent,
            "n_disc_steps": n_disc_steps,
            "lam_mmd": lam_mmd,
            "lam_batch": lam_batch,
            "beta": beta,
            "anchor_distance": anchor_distance,
            "anchor_temperature": anchor_temperature,
            "pretrain_epochs": pretrain_epochs,
            # (cut short by an interrupt: the next call's default finishes it)
            "pretrain_left": max(0, pretrain_owed - epochs_run) if anchor else 0,
            "adv_warmup_epochs": adv_warmup_epochs,
            "early_stopping": early_stopping,
            "patience": patience,
            "seed": seed,
        })
        self.is_trained_ = self.is_trained_ or epochs_run > 0
        if epochs_run:  # the anchor, once frozen, keeps the statistics set then
            self._recalibrate_latent_norm(
                frozen=anchor if plan.anchor_frozen else None, batch_size=batch_size,
                device=_device_of(accelerator), seed=seed,
            )
        if diverged is not None:
            raise diverged
        if interrupted:
            raise KeyboardInterrupt(
                f"training interrupted after {epochs_run} complete epoch(s) of {max_epochs}; "
                "the model keeps the weights trained so far (history_ lists those epochs)"
            )
        if is_global_zero(launcher=True):  # (under DDP every process holds the same model)
            self._warn_if_separable()
        return self

    def _recalibrate_latent_norm(
        self, *, frozen: str | None, batch_size: int, device: torch.device, seed: int,
        max_cells: int = 2**16,
    ) -> None:
        """Set each trained encoder's latent standardisation (batch norm) to the mean and
        variance of its input over the training cells (at most ``max_cells`` per modality,
        drawn with ``seed``) with the final weights, dropout as in training
        (:meth:`~transmodal.nn._mlp.LatentEncoder.exact_statistics`; no image augmentation).
        Training keeps an exponential average that lags behind the weights, so after few
        steps the modalities' embeddings came out shifted against each other (300 synthetic
        cells, 5 epochs: their mean embeddings 0.90 apart, in units of the latent's spread).
        The ``frozen`` anchor modality keeps the statistics the others were aligned to (set
        the same way when it was frozen; a fit that only pre-trains it recalibrates it).
        """
        rng = np.random.default_rng(seed)
        self.module.to(device).eval()
        try:
            for name, md in self.mods.items():
                rows = np.flatnonzero(~self.val_masks_[name])
                if name == frozen:
                    continue
                self.module.settle_latent_statistics(
                    name, sampled_blocks(md.source, rows, batch_size, rng, max_cells), device, seed
                )
        finally:
            self.module.cpu().eval()

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

    def _warn_batches(self, lam_batch: float) -> None:
        """Warn about batches without training cells (their decoder input is never trained)
        and about a ``lam_batch`` that cannot act (no modality with two batches)."""
        acts = False
        for name, batches in self.batch_categories_.items():
            codes = self.mods[name].batches  # (-1: unknown, refused for training cells)
            counts = np.bincount(codes[~self.val_masks_[name]], minlength=len(batches))
            held = np.bincount(codes[codes >= 0], minlength=len(batches))
            idle = [b for b, k in zip(batches, counts) if k == 0]
            absent = [b for b, k in zip(batches, held) if k == 0]
            if absent:  # e.g. a loaded model trained further on cells of some batches
                warnings.warn(
                    f"modality {name!r}: batch(es) {absent[:3]} of the model hold no cell of "
                    "these data; this training does not update what the decoder learnt of "
                    "them, yet the default translation (the mean over the batches) includes "
                    "them", UserWarning, stacklevel=user_stacklevel(),
                )
            if len(idle) > len(absent):
                warnings.warn(
                    f"modality {name!r}: batch(es) {[b for b in idle if b not in absent][:3]} "
                    "hold no training cell (only validation cells); the decoder does not learn "
                    "them, yet the default translation (the mean over the batches) includes them",
                    UserWarning, stacklevel=user_stacklevel(),
                )
            acts = acts or int((counts >= 2).sum()) >= 2
        if lam_batch > 0 and not acts:
            warnings.warn(
                f"lam_batch={lam_batch} has no effect: no modality has two batches "
                "(Modality(batch_key=...)) with at least 2 training cells each",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _warn_if_separable(self, *, max_cells: int = 1000) -> None:
        """Measure how separable the modalities are after training and warn if they are.

        A cross-validated logistic regression predicts the modality from the latent points
        of up to ``max_cells`` cells per modality (validation cells when there are enough);
        its balanced accuracy is stored in ``self.mixing_accuracy_``. Every encoder
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
                _Rows(md.source, rows),
                lambda x, n=name: self.module.encode(n, x),
                batch_size=1024,
                device=None,
            )
        try:
            acc = float(mixing_accuracy_multi(list(embs.values()), cv=3, seed=0))
        except ValueError:  # too few cells to cross-validate
            acc = None
        self.mixing_accuracy_ = acc
        chance = 1.0 / len(self.mods)
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
        :data:`MIN_DISC_CELLS` such cells in a modality."""
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

    # -- inference -------------------------------------------------------------------------
    def _check_name(self, modality: str, what: str = "modality") -> None:
        """A modality name of this model (``what`` names the argument in the error)."""
        if not isinstance(modality, str):
            raise TypeError(
                f"{what} must be a modality name (one of {self.modality_names}), got a "
                f"{type(modality).__name__}; pass the cells as adata"
            )
        if modality not in self.mods:
            raise ValueError(f"unknown {what} {modality!r}; the model has {self.modality_names}")

    def _warn_untrained(self, what: str) -> None:
        """Warn that ``what`` come from random weights (``train()`` never ran)."""
        if not self.is_trained_:
            warnings.warn(
                f"{what} come from an untrained model (random weights): call model.train() "
                "first, or load a trained model with CrossModalAE.load",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _source_for(self, modality: str, adata: AnnData | None, *, check: bool = True) -> MatrixSource:
        self._check_name(modality)
        md = self.mods[modality]
        if adata is None:
            if md.n_obs == 0:
                raise ValueError(
                    f"modality {modality!r}: the model holds no cells of it (loaded without its "
                    "data?); pass the cells as adata"
                )
            md.check_current()
            if check and self._check_data:  # values edited in place since (sc.pp.log1p)
                check_values(md.source, md.spec, new_cells=self.is_trained_)
            return md.source
        src, var_names = matrix_of(adata, md.spec, modality)
        if src.image_shape != md.source.image_shape:
            raise ValueError(
                f"modality {modality!r}: obsm[{md.spec.obsm_key!r}] holds images of shape "
                f"{src.image_shape}; the model was built for {md.source.image_shape}"
            )
        differ = features_differ(var_names, md.var_names, md.spec)
        warn_unnamed_columns(var_names, md.var_names, md.spec, modality)
        if src.n_vars != md.source.n_vars or differ:
            detail = differ or f"{src.n_vars} features given, {md.source.n_vars} expected"
            raise ValueError(
                f"modality {modality!r}: the features of the given data do not match the "
                f"model's var_names ({detail})"
            )
        if check:
            check_values(src, md.spec, new_cells=True)
        return src

    def _iter_apply(
        self, src: MatrixSource, fn, *, batch_size: int, device, what: str | None = None,
        out_width: int = 0,
    ) -> Iterator[np.ndarray]:
        """``fn`` applied to consecutive row blocks of ``src``, block by block.

        Blocks hold ``batch_size`` rows, fewer where the rows read or the ``out_width``
        values computed per row would make a block of more than :data:`CHUNK_VALUES`
        numbers (wide peak matrices: 111 rows at 150,000 features). For sources on disk
        the next blocks are read by a background thread while the model runs on the
        current one. An empty source still runs the network once (to give the
        width). ``batch_size`` and ``device`` are checked at once, before any block is asked
        for (and before an output file is begun). With ``what`` (the outputs, as named in
        the message), cells whose outputs hold NaN or infinite values are counted and warned
        about once all blocks are done.
        """
        _check_number("batch_size", batch_size, low=1, integer=True)
        rows = min(src.chunk_rows(int(batch_size)), max(1, CHUNK_VALUES // max(out_width, 1)))
        return self._blocks(src, fn, batch_size=rows, dev=resolve_device(device), what=what)

    def _blocks(
        self, src: MatrixSource, fn, *, batch_size: int, dev, what: str | None
    ) -> Iterator[np.ndarray]:
        """The generator of :meth:`_iter_apply`."""
        self.module.to(dev).eval()
        n = src.n_obs
        reads = (src.rows(np.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size))
        if getattr(src, "on_disk", False):
            reads = Prefetcher(reads, depth=2)

        def run(x: torch.Tensor) -> np.ndarray:
            with torch.no_grad():  # not held across the yields
                return fn(x.to(dev)).float().cpu().numpy()

        bad = 0
        try:
            if n == 0:
                yield run(torch.zeros((0, src.n_vars)))
            for x in reads:
                out = run(torch.from_numpy(x))
                if what is not None:
                    bad += int((~np.isfinite(out.reshape(len(out), -1))).any(axis=1).sum())
                yield out
        finally:
            reads.close()
            self.module.cpu()
        if bad:
            warnings.warn(
                f"{what}: {bad} of {n} cell(s) gave NaN or infinite values; their inputs lie far "
                "outside the range of the training data (check them for extreme values)",
                UserWarning, stacklevel=user_stacklevel(),
            )

    def _apply(
        self, src: MatrixSource, fn, *, batch_size: int, device, what: str | None = None
    ) -> np.ndarray:
        blocks = self._iter_apply(src, fn, batch_size=batch_size, device=device, what=what)
        return _collect(blocks, src.n_obs)

    def _output(
        self, src: MatrixSource, fn, *, batch_size: int, device, cells: AnnData,
        var_names, uns: dict, images: dict[str, tuple[int, ...]], out, overwrite: bool,
        var_annotations: pd.DataFrame | None = None, what: str | None = None,
    ) -> AnnData:
        """``fn`` over every row of ``src`` (the matrix of ``cells``) as an AnnData with
        ``cells.obs`` (and ``var_annotations``' columns, one row per feature): in memory, or
        (``out``) written block by block to an .h5ad file and returned opened read-only
        (``backed="r"``)."""
        obs = cells.obs.copy()
        index = pd.Index(np.asarray(var_names).astype(str))
        if var_annotations is not None:
            var = var_annotations.copy()
            var.index = index
        else:
            var = pd.DataFrame(index=index)
        if out is not None:
            check_output_h5ad(out, (src.file, cells.filename if cells.isbacked else None))
        blocks = self._iter_apply(src, fn, batch_size=batch_size, device=device, what=what,
                                  out_width=len(index))
        if out is not None:
            import anndata as ad

            write_rows_h5ad(
                out, blocks, n_obs=src.n_obs, obs=obs, var=var, uns=uns, images=images,
                overwrite=overwrite,
            )
            return ad.read_h5ad(out, backed="r")
        X = _collect(blocks, src.n_obs)
        result = AnnData(X=X, obs=obs, var=var)
        for key, shape in images.items():  # images also in their own shape
            result.obsm[key] = X.reshape(X.shape[0], *shape)
        result.uns.update(uns)
        return result

    @argument_hints
    def get_latent_representation(
        self,
        modality: str,
        adata: AnnData | None = None,
        *,
        batch_size: int = 1024,
        device: str | None = None,
        out: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> np.ndarray | AnnData:
        """Embed cells of one modality into the shared latent space.

        Parameters
        ----------
        modality
            Which modality (encoder) the cells come from.
        adata
            Cells to embed; default: the modality's training data. Backed (``.h5ad``
            opened with ``backed="r"``) and zarr data are read batch by batch.
        batch_size
            Cells per forward pass (fewer for wide data: at most 2^24 values read, or
            computed, per pass).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training) or ``"auto"``.
        out
            Write the embedding to this .h5ad file instead (``X`` = latent coordinates,
            ``var_names`` ``latent0...``, the cells' ``obs``), batch by batch, so memory
            holds one batch; the file appears only once complete. (In a multi-process run
            every process that calls this writes: give each its own file, or call it on one
            rank.)
        overwrite
            Replace an existing ``out``.

        Returns
        -------
        ``(n_cells, n_latent)`` float32 array (store it in ``adata.obsm["X_transmodal"]``),
        or with ``out`` the written AnnData opened read-only (``backed="r"``).
        """
        src = self._source_for(modality, adata)
        self._warn_untrained("Embeddings")

        def fn(x):
            return self.module.encode(modality, x)

        what = f"modality {modality!r}: the embeddings"
        if out is None:
            return self._apply(src, fn, batch_size=batch_size, device=device, what=what)
        return self._output(
            src, fn, batch_size=batch_size, device=device,
            cells=self.mods[modality].adata if adata is None else adata,
            var_names=[f"latent{i}" for i in range(self.module.n_latent)],
            uns={"transmodal": {"modality": modality, "units": "latent"}}, images={},
            out=out, overwrite=overwrite, what=what,
        )

    @argument_hints
    def translate(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str,
        batch_size: int = 1024,
        library_size: float | None = None,
        sample: bool = False,
        seed: int = 0,
        target_batch: str | Sequence[str] | np.ndarray | pd.Series | None = None,
        device: str | None = None,
        out: str | os.PathLike | None = None,
        overwrite: bool = False,
    ) -> AnnData:
        """Translate cells of ``source`` into modality ``target``: ``D_target(E_source(x))``.

        Parameters
        ----------
        adata
            Cells of the source modality; default: its training data. Backed (``.h5ad``
            opened with ``backed="r"``) and zarr data are read batch by batch.
        source, target
            Modality names.
        batch_size
            Cells per forward pass (fewer for wide data: at most 2^24 values read, or
            computed, per pass).
        library_size
            Count likelihoods: library size of the translated profiles, a finite number
            > 0 (default: the median library size of the target's training cells).
        sample
            Variational models: decode a draw from each cell's posterior instead of its
            mean (seeded with ``seed``; the draws depend on the cells per pass too:
            ``batch_size``, fewer for wide data, see ``batch_size``).
        seed
            Seed of the posterior draws (an integer >= 0).
        target_batch
            A target with a ``batch_key``: decode every cell as if measured in this batch
            (one of ``model.batch_categories_[target]``), or each cell in its own (one batch
            per cell, e.g. the ``obs`` column of the cells' partners in the target; a pandas
            Series is aligned to the cells by its index, one with a default RangeIndex or an
            array is taken by position); default: the mean of the decodings in every batch.
            Also for ``source == target`` (reconstruction: pass the cells' own batches).
        device
            ``"cpu"`` (default), ``"cuda"`` (or ``"gpu"``, as for training) or ``"auto"``.
        out
            Write the result to this .h5ad file instead of memory, batch by batch (memory
            holds one batch); the file appears only once complete, and the result equals
            the in-memory one. (In a multi-process run every process that calls this writes:
            give each its own file, or call it on one rank.)
        overwrite
            Replace an existing ``out``.

        Returns
        -------
        AnnData with the source cells' ``obs`` and the target's ``var_names`` (and ``var``
        columns, for a target held in ``X`` or a layer); ``X`` is in the
        target's original units (expected counts at ``library_size`` for count likelihoods
        - for ``"zinb"`` the negative binomial mean times the chance of no dropout, so a
        profile sums to less than ``library_size`` by its expected dropouts -, probabilities
        for Bernoulli, rates (e.g. methylation levels) for binomial and beta-binomial,
        inverse-transformed values for Gaussian - scaling and log1p undone, and with
        ``normalize=True`` in the units of cells normalised to the median training library
        size (``expm1`` of a predicted mean of log values: a profile sums to less than that
        size, as the geometric mean lies below the mean); ``uns
        ["transmodal"]["units"]`` says which, and for count likelihoods ``uns["transmodal"]
        ["library_size"]`` the library size). For an image
        target, ``X`` holds the flattened pixels and ``obsm[<the target's obsm_key>]`` the
        images, ``(cells, channels, [D,] H, W)``. With ``out``: the written file, opened
        read-only (``backed="r"``).
        """
        self._check_name(target, "target")
        if library_size is not None:
            _check_number("library_size", library_size, strict=True)
            if float(library_size) > _FLOAT32_MAX:
                raise ValueError(
                    f"library_size must be at most {_FLOAT32_MAX:.3g} (translations "
                    f"are float32), got {library_size!r}"
                )
            if not get_likelihood(self.mods[target].spec.likelihood).counts:
                warnings.warn(
                    f"library_size={library_size} has no effect: target {target!r} has the "
                    f"{self.mods[target].spec.likelihood!r} likelihood, not a count one "
                    "('nb', 'zinb', 'poisson')", UserWarning, stacklevel=user_stacklevel(),
                )
        _check_seed(seed)
        if sample and not self.init_params_.get("variational"):
            warnings.warn(
                "sample=True has no effect: the model is not variational (variational=True); "
                "the translation is the decoder's mean", UserWarning, stacklevel=user_stacklevel(),
            )
        src = self._source_for(source, adata)
        self._warn_untrained("Translations")
        cells = self.mods[source].adata if adata is None else adata
        batch_code = target_batch_codes(
            self.batch_categories_.get(target), target, target_batch, cells.obs_names
        )
        lib = None if library_size is None else float(library_size)
        done = [0]  # rows translated so far (blocks come in order)
        # posterior draws from a generator of this call's own: seeded, and independent of
        # torch's global one (which other threads, and the caller, draw from)
        generator = (
            torch.Generator(device=resolve_device(device)).manual_seed(int(seed))
            if sample and self.init_params_.get("variational") else None
        )

        def fn(x):
            library = None if lib is None else torch.full((x.shape[0],), lib, device=x.device)
            code = batch_code
            if isinstance(code, np.ndarray):
                code = torch.from_numpy(code[done[0] : done[0] + x.shape[0]]).to(x.device)
                done[0] += x.shape[0]
            return self.module.translate(
                x, source, target, library, sample=sample, target_batch=code,
                generator=generator,
            )

        tmd = self.mods[target]
        # the target's feature annotations (gene symbols, peak coordinates) where its
        # features are the var of its AnnData
        same = tmd.spec.obsm_key is None and np.array_equal(
            np.asarray(tmd.adata.var_names, dtype=object).astype(str),
            np.asarray(tmd.var_names).astype(str),
        )
        target_var = tmd.adata.var if same else None
        images = {}
        if tmd.source.image_shape is not None:
            images[tmd.spec.obsm_key] = tuple(tmd.source.image_shape)
        likelihood = get_likelihood(tmd.spec.likelihood)
        units, linear = likelihood.units_of_mean(), not likelihood.preprocessed
        if likelihood.preprocessed:
            opts = tmd.spec.resolved(image=bool(images))
            linear = bool(opts["log1p"])  # (the inverse undoes it)
            notes = ["log1p undone: linear values"] if linear else []
            if opts["normalize"]:
                notes.append(
                    "in units of cells normalised to the median training library size; with "
                    "log1p undone on a mean of log values, a profile sums to less than it"
                    if linear else "of cells normalised to the median training library size"
                )
            units += f" ({'; '.join(notes)})" if notes else ""
        # (linear: counts, probabilities, rates, exponentiated values; read by
        # tm.analysis.differential_expression)
        uns = {"transmodal": {"source": source, "target": target, "units": units,
                              "linear": linear}}
        if likelihood.counts:  # the library size the counts are expected at
            uns["transmodal"]["library_size"] = float(
                self.module.transforms[target].library_size if lib is None else lib
            )
        if images and target in self.image_spacing_:  # (read by radial_profiles)
            uns["crops"] = {"spacing": list(self.image_spacing_[target])}
        if target in self.batch_categories_:
            uns["transmodal"]["target_batch"] = (
                "mean over batches" if batch_code is None
                else "per cell" if isinstance(batch_code, np.ndarray)
                else self.batch_categories_[target][batch_code]
            )
        return self._output(
            src, fn, batch_size=batch_size, device=device, cells=cells,
            var_names=tmd.var_names, uns=uns, images=images, out=out, overwrite=overwrite,
            var_annotations=target_var, what=f"translation {source!r} -> {target!r}",
        )

    @argument_hints
    def predict_labels(
        self,
        modality: str,
        adata: AnnData | None = None,
        *,
        classes: Sequence[str] | None = None,
        return_proba: bool = False,
        batch_size: int = 1024,
        device: str | None = None,
    ) -> np.ndarray | pd.DataFrame:
        """Transfer labels with the latent classifier (needs ``labels_key``).

        Parameters
        ----------
        modality
            Which encoder the cells come from.
        adata
            Cells to label; default: the modality's training data.
        classes
            Restrict predictions to these classes (e.g. the classes shared between
            modalities); default: every class the model knows, so that an unlabelled or
            partly labelled modality can receive the other modalities' classes. For cells of
            a modality whose labels name all its cell types, ``classes=
            model.classes_seen[modality]`` keeps them off the other modalities' private
            classes (where alignment has laid two private classes on top of each other, the
            default can confuse them). Numbers name classes as they do in ``labels_key``
            (``[0, 1]`` for the classes ``"0"``, ``"1"``).
        return_proba
            Return a DataFrame of class probabilities (cells x classes) instead of labels.
        batch_size, device
            As in :meth:`get_latent_representation`.

        Returns
        -------
        The predicted label per cell, or the class probabilities. Labels are the model's
        class names (:attr:`label_categories_`, strings as in scanpy's cluster columns):
        numeric or boolean training labels come back as ``"3"``, ``"True"`` (``"3"`` also
        for a float column's 3.0, e.g. one with a missing value): compare numeric labels as
        numbers (``pd.to_numeric(pred) == adata.obs[key]``), others with
        ``adata.obs[key].astype(str)``.
        """
        if self.module.classifier is None:
            raise ValueError("predict_labels needs a model trained with labels_key")
        cats = list(self.label_categories_)
        keep = np.arange(len(cats))
        if classes is not None:
            if isinstance(classes, str):
                classes = [classes]
            # each class once, in the order given; numbers and booleans as class names
            classes = list(dict.fromkeys(
                c if isinstance(c, str) else label_str(c) for c in classes
            ))
            if not classes:
                raise ValueError("classes must name at least one of the model's labels")
            unknown = [c for c in classes if c not in cats]
            if unknown:
                raise ValueError(f"classes {unknown} are not among the model's labels {cats}")
            keep = np.array([cats.index(c) for c in classes], dtype=np.int64)
        src = self._source_for(modality, adata)
        self._warn_untrained("Label predictions")
        if self.is_trained_ and not self.train_params_.get("classifier_trained", True):
            warnings.warn(
                "label predictions come from an untrained latent classifier (every train() "
                "ran with lam_cls=0): its weights are random; train with lam_cls > 0",
                UserWarning, stacklevel=user_stacklevel(),
            )
        cols = torch.from_numpy(keep)

        def fn(x):
            logits = self.module.classifier(self.module.encode(modality, x))
            return torch.softmax(logits[:, cols.to(x.device)], dim=-1)

        proba = self._apply(
            src, fn, batch_size=batch_size, device=device,
            what=f"modality {modality!r}: the label probabilities",
        )
        names = (self.mods[modality].adata if adata is None else adata).obs_names
        if return_proba:
            return pd.DataFrame(proba, index=names, columns=[cats[i] for i in keep])
        return np.asarray([cats[i] for i in keep], dtype=object)[proba.argmax(1)]

    # -- persistence -----------------------------------------------------------------------
    @argument_hints
    def save(self, path, *, overwrite: bool = False) -> None:
        """Save to a directory: ``model.safetensors`` (tensors) + ``config.json``.

        The directory is written to a temporary sibling and renamed into place, so an
        interrupted save never leaves a half-written model. In a multi-process
        (``torch.distributed``) run only rank 0 writes; every rank holds the same weights.

        Parameters
        ----------
        path
            The directory to write (created; it must not exist unless ``overwrite``).
        overwrite
            Replace ``path`` if it holds a saved model (and nothing else); any other
            existing directory or file is refused, never deleted.

        Raises
        ------
        TypeError
            If ``path`` is not a str or os.PathLike (on every process).
        FileExistsError
            If ``path`` exists and may not be replaced.
        """
        check_path(path)
        if not is_global_zero():
            return
        from ._io import save_model

        save_model(self, path, overwrite=overwrite)

    @classmethod
    @argument_hints
    def load(cls, path, data=None, *, check_data: bool = True) -> CrossModalAE:
        """Load a model saved with :meth:`save`, re-validating ``data`` against it.

        Parameters
        ----------
        path
            The directory written by :meth:`save`.
        data
            ``{name: AnnData}`` or ``MuData`` with the model's ``var_names``. Modalities it
            lacks (all of them with ``None``) stand in without cells: the model then embeds
            and translates new cells passed as ``adata=`` (everything it needs is saved
            with it), but cannot train further.
        check_data
            Scan the matrices for values the likelihoods reject.
        """
        from ._io import load_model

        return load_model(cls, path, data, check_data=check_data)

    def _digests(self) -> dict[str, str]:
        return {n: names_digest(md.obs_names) for n, md in self.mods.items()}


