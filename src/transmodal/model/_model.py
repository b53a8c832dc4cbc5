"""The user-facing cross-modal autoencoder: built here from data and modalities, trained
(:mod:`._training`), used (:mod:`._inference`) and saved (:mod:`._io`)."""

from __future__ import annotations

import abc
import dataclasses
import heapq
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._hints import AttributeHints, argument_hints, attribute_hint
from .._utils import (
    check_path,
    is_global_zero,
    jsonable,
    seeded,
    torch_defaults,
    user_stacklevel,
)
from ..data._modality import Modality, as_widths, check_modality_name, is_number
from ..data._preprocess import fit_preprocessing
from ..data._setup import ModalityData, row_sums, setup_data, warn_label_conflicts
from ..images._radial import recorded_spacing
from ..nn._conv import DEFAULT_CHANNELS
from ._checks import check_number, check_prior, check_seed
from ._inference import InferenceMixin
from ._module import CrossModalModule, ModalityArch
from ._priors import GEOMETRY_METHODS, PriorsMixin
from ._split import choose_anchors, names_digest, validation_masks, warn_unused_pairs
from ._training import TrainingMixin


class _NamesOtherToolsUse(abc.ABCMeta):
    """Metaclass: a class attribute of other tools' (``CrossModalAE.setup_anndata``)
    missing is told how transmodal does it. (An ``ABCMeta``, so that subclasses may also
    derive from ``abc.ABC``.)"""

    def __getattr__(cls, name: str) -> Any:
        # (name and obj kept: Python's 'Did you mean' for a misspelt one still works)
        raise AttributeError(attribute_hint(cls.__name__, name, of_class=True),
                             name=name, obj=cls)


class CrossModalAE(PriorsMixin, TrainingMixin, InferenceMixin, AttributeHints,
                   metaclass=_NamesOtherToolsUse):
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
    partial_alignment
        With ``labels_key``, leave the cells of a class that only one modality holds (a
        private cell type) out of the alignment terms (discriminator, adversarial, MMD):
        each cell weighs the probability that its class is one that two or more modalities
        hold (a labelled cell 1 or 0, an unlabelled one the latent classifier's probability).
        Aligning whole distributions whose cell-type mixtures differ lays the modalities'
        private types onto each other: on PBMC RNA / ATAC with partly shared types, 51 % /
        72 % (ATAC / RNA) of the cells of a private type whose labels were hidden in
        training were classified as the other modality's private types; with partial
        alignment 1 % / 5 % (``benchmarks/pbmc_shared_classes.py --holdout 0.2``; the
        weights are Cao et al.'s partial domain adaptation). A modality whose training
        cells are mostly unlabelled counts as holding every class (its cell types are
        unknown), so with one labelled and one unlabelled modality every cell is aligned.
        With three or more modalities each class is aligned among those that hold it (the
        adversary's target for a cell is the modalities that hold its class, and the MMD of
        two modalities weighs the classes both hold). ``False``: every cell weighs 1 (no
        effect without private classes).
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
        quarter of the cells: about 58 %); the seeded choice is saved with the model (it
        is drawn in the row order of the first of the two modalities, so the same cells
        listed in another order draw other pairs; the validation split is drawn by name). Above
        0 it needs two modalities that share cells (a ``ValueError`` otherwise). ``None``
        (default): 0, the paper's unpaired setting, with a warning where modalities share
        training cells (their pairs would go unused); pass 0 to keep that silently.
    geometric_pairs
        Pseudo-pairs from the shapes of the data (:func:`transmodal.geometry.geometric_pairs`:
        landmark Isomap of each modality, overlaid by Wasserstein-Procrustes, each cell
        matched to its nearest partner), added to the anchor loss for modality pairs
        without known anchors. ``None`` (default): on only when no ``marker_key``, no
        ``labels_key`` class that the training cells of every modality hold (of two
        classes or more: a column of one value for every cell is warned of) and no chain
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
        keys, so both measurements of a cell land on the same side; a small modality
        that this draw leaves with fewer than 2 validation cells draws its own share, at
        least 2 cells, from its cells: unpaired ones first, then paired ones with their
        partners). None when a modality would keep fewer than 2 validation or training
        cells (a modality of fewer than 4 cells).
    seed
        Seeds the weight initialisation, the validation split and the anchor choice. The
        networks are built, and the training batches drawn, in the order of
        ``modalities``: the same seed with the modalities in another order (also in a
        config file) trains another model (the validation split stays the same; the anchor
        pairs, drawn pair of modalities by pair in that order, can differ).
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
        partial_alignment: bool = True,
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
            "hidden": hidden,
            "dropout": dropout,
            "disc_noise": disc_noise,
            "disc_conditional": disc_conditional,
            "partial_alignment": partial_alignment,
            "variational": variational,
            "n_private": n_private,
            "prior": prior,
            "labels_key": labels_key,
            "marker_key": marker_key,
            "anchor_fraction": anchor_fraction,
            "geometric_pairs": geometric_pairs,
            "validation_fraction": validation_fraction,
            "seed": seed,
        }
        self._build(data, modalities, self._check_params(params), check_data=check_data,
                    warn_unused=anchor_fraction is None)

    def _build(
        self, data, modalities, params: dict[str, Any], *, check_data: bool,
        warn_unused: bool, batch_categories: Mapping[str, list[str]] | None = None,
        check_module: Callable[[CrossModalModule], None] | None = None,
        fitted: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        batches_optional: tuple[str, ...] = (),
    ) -> None:
        """A new model's networks, preprocessing, split, anchor pairs and pseudo-pairs from
        checked ``params`` (shared by ``__init__`` and :meth:`from_reference`, which passes
        the reference's batches, a check of its modalities' features and their fitted
        preprocessing statistics: a ``state_dict`` of each one's input transform)."""
        for name in modalities if isinstance(modalities, Mapping) else ():
            check_modality_name(name)
        self._setup(data, modalities, params, label_categories=None, check_data=check_data,
                    batch_categories=batch_categories, check_module=check_module,
                    batches_optional=batches_optional)
        seed = params["seed"]
        masks = validation_masks(self.mods, params["validation_fraction"], seed)
        self.val_masks_ = masks
        train = {n: ~m for n, m in masks.items()}
        self.anchors_ = choose_anchors(self.mods, train, params["anchor_fraction"], seed)
        if warn_unused:
            warn_unused_pairs(self.mods, train)
        if self.anchors_ and self.label_categories_:
            warn_label_conflicts(self.mods, self.label_categories_, params["labels_key"])
        self._set_class_mask(train)
        self._set_marker_scale(train)
        for name, md in self.mods.items():
            if fitted is not None and name in fitted:  # (before the pseudo-pairs use them)
                self.module.transforms[name].load_state_dict(fitted[name])
                continue
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

    @staticmethod
    def _check_params(p: dict[str, Any]) -> dict[str, Any]:
        """Check the constructor's arguments; return them as plain Python values (numpy
        scalars converted, ``hidden`` a list, the default ``anchor_fraction`` 0), as they
        are saved (``init_params_``)."""
        p = {**p, "hidden": list(as_widths(p["hidden"]) or ()) or p["hidden"]}
        if p.get("anchor_fraction", 0.0) is None:  # the default: 0, warning of pairs
            p["anchor_fraction"] = 0.0
        check_number("n_latent", p["n_latent"], low=1, integer=True)
        check_number("n_private", p.get("n_private", 0), integer=True)
        if as_widths(p["hidden"]) is None:
            raise ValueError(
                f"hidden must be a non-empty list of positive integers, got {p['hidden']!r}"
            )
        geometry = p.get("geometric_pairs")
        if not (geometry is None or isinstance(geometry, (bool, np.bool_))
                or (isinstance(geometry, str) and geometry in GEOMETRY_METHODS)):
            raise ValueError(
                f"geometric_pairs must be None, True, False or one of {list(GEOMETRY_METHODS)}, "
                f"got {p['geometric_pairs']!r}"
            )
        for key in ("disc_conditional", "partial_alignment", "variational"):
            if key in p and not isinstance(p[key], (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {p[key]!r}")
        for key, high, closed in (
            ("dropout", 1, False), ("anchor_fraction", 1, True), ("validation_fraction", 1, False)
        ):
            value = p[key]
            if not (is_number(value) and 0 <= value and (value <= high if closed else value < high)):
                interval = f"[0, {high}]" if closed else f"[0, {high})"
                raise ValueError(f"{key} must be a number in {interval}, got {value!r}")
        check_number("disc_noise", p.get("disc_noise", 0.0))
        check_seed(p["seed"])
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
        trained: bool = False, check_module: Callable[[CrossModalModule], None] | None = None,
        batches_optional: tuple[str, ...] = (),
    ) -> None:
        """Validate data, then build the networks (seeded); shared by ``__init__`` and ``load``
        (whose ``check_module`` is given the networks built on the meta device first: their
        shapes without memory)."""
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
            batches_optional=batches_optional,
        )
        self.anchor_modality_ = check_prior(params["prior"], list(mods))
        self.init_params_ = params
        self.mods: dict[str, ModalityData] = mods
        self.label_categories_ = categories
        self.batch_categories_: dict[str, list[str]] = {
            n: list(md.batch_categories)
            for n, md in mods.items()
            if md.batch_categories is not None
        }
        # whether each modality's training values were integers only (raw counts) or not
        # (normalised, log-transformed, scaled): new cells in other units are warned of
        # (load() puts the saved record in its place)
        self.integer_input_: dict[str, bool] = {
            n: md.integers for n, md in mods.items() if md.integers is not None
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
            custom = md.spec.architecture is not None  # (its sizes are its options)
            if custom:  # every option the bodies are built with: what a save records
                md.spec = dataclasses.replace(md.spec, _extra={
                    **md.spec._extra,
                    "architecture_options": md.spec.resolved_architecture_options()})
            archs[name] = ModalityArch(
                n_vars=md.source.n_vars,
                likelihood=md.spec.likelihood,
                hidden=() if custom else md.spec.hidden or default_hidden,
                architecture=md.spec.architecture,
                architecture_options=md.spec.architecture_build_options(),
                input_dropout=md.spec.input_dropout,
                image_shape=image,
                augment=bool(md.spec.augment and image is not None),
                n_batches=len(self.batch_categories_.get(name, ())),
                **opts,
            )
        markers = params.get("marker_key")
        markers = [] if markers is None else [markers] if isinstance(markers, str) else markers
        sizes = dict(
            n_latent=params["n_latent"],
            dropout=params["dropout"],
            disc_noise=params.get("disc_noise", 0.0),
            disc_conditional=params.get("disc_conditional", False),
            variational=params.get("variational", False),
            n_private=params.get("n_private", 0),
            n_markers=len(markers),
            n_labels=len(categories) if categories else 0,
        )
        if check_module is not None:
            with torch_defaults(), seeded(params["seed"]), torch.device("meta"):
                check_module(CrossModalModule(archs, **sizes))
        with torch_defaults(), seeded(params["seed"]):
            self.module = CrossModalModule(archs, **sizes)
        self.history_: pd.DataFrame | None = None
        self.train_params_: dict[str, Any] = {}
        self.is_trained_ = False
        self.mixing_accuracy_: float | None = None
        self.disc_accuracy_: float | None = None
        self._split_dropped = False  # load() had to drop the saved validation split
        # (saved pair and validation tensors, obs digests, values fingerprint) of a model
        # loaded without its data, passed on when it is saved again
        self._training_record: tuple[dict, dict, dict | None] | None = None
        # the values fingerprint (_values_fingerprint) of the cells as last trained on, or
        # as saved (a model loaded with its training cells); None: not trained here
        self._trained_values: dict[str, dict[str, list]] | None = None

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
        """Per-epoch loss terms and discriminator accuracy (train and validation): each
        term's mean over what it averages (cells, labelled cells, pairs, steps), and
        ``train_loss`` / ``val_loss`` the objective of those means (their weighted sum,
        the adversarial term weighed by the epoch's ``lam_adv_effective``)."""
        return self.history_

    def __repr__(self) -> str:
        parts = [
            f"{n}: {md.n_obs} x {md.source.n_vars} ({md.spec.likelihood}"
            + (f", architecture {md.spec.architecture!r}" if md.spec.architecture else "")
            + (f", {len(self.batch_categories_[n])} batches" if n in self.batch_categories_ else "")
            + ")"
            for n, md in self.mods.items()
        ]
        n_params = sum(p.numel() for p in self.module.parameters())
        anchors = sum(len(v[0]) for v in self.anchors_.values())
        geometric = sum(len(v[0]) for v in self.geometric_pairs_.values())
        missing = [n for n, md in self.mods.items() if md.n_obs == 0]
        pairs = (f"{anchors} anchor pairs, {geometric} geometric pairs" if not missing else
                 f"pairs not loaded (no cells of {', '.join(map(repr, missing))})")
        return (
            f"CrossModalAE(n_latent={self.init_params_['n_latent']}, prior="
            f"{self.init_params_['prior']!r}, {n_params:,} parameters, {pairs}, "
            f"trained={self.is_trained_})\n  " + "\n  ".join(parts)
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

    @argument_hints
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
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
    def load(
        cls, path: str | os.PathLike, data: Mapping[str, AnnData] | Any = None, *,
        check_data: bool = True,
    ) -> CrossModalAE:
        """Load a model saved with :meth:`save`, re-validating ``data`` against it.

        Parameters
        ----------
        path
            The directory written by :meth:`save`.
        data
            ``{name: AnnData}`` or ``MuData`` with the model's ``var_names``. Modalities it
            lacks (all of them with ``data=None``; one left out, or given as ``None`` in the
            dict) stand in without cells: the model then embeds
            and translates new cells passed as ``adata=`` (everything it needs is saved
            with it), but cannot train further.
        check_data
            Scan the matrices for values the likelihoods reject.

        Returns
        -------
        The trained model, with the weights, preprocessing and history it was saved with.
        """
        from ._io import load_model

        return load_model(cls, path, data, check_data=check_data)

    @classmethod
    def from_reference(
        cls, reference: CrossModalAE | str | os.PathLike, data: Mapping[str, AnnData] | Any,
        modalities: Mapping[str, Modality | dict | str] | None = None, *,
        anchor: str | None = None, **params: Any,
    ) -> CrossModalAE:
        """A new model in the latent space of a trained one, to add modalities to it.

        The networks (preprocessing, encoder, decoder) of the reference's modalities that
        ``data`` hold are copied from it; modality ``anchor`` among them stays frozen
        (``prior="anchor:<anchor>"``, not pre-trained again), so it embeds its cells, the
        reference's and new ones, exactly as the reference does. :meth:`train` aligns the
        new modalities to its latent space and fine-tunes the reference's other ones from
        their copied weights: the paper's pre-trained anchor autoencoder, reused instead of
        trained again (``train(pretrain_epochs=k)`` would train the anchor again, warned).
        Embeddings and cell types computed with the reference (clusters, UMAPs, classifiers
        on its latent space) stay valid for the anchor's cells and extend to the new
        modalities' cells.

        Parameters
        ----------
        reference
            A trained :class:`CrossModalAE`, or the directory of a saved one (loaded
            without its data).
        data
            ``{name: AnnData}`` or a ``MuData`` holding the anchor modality (the reference's
            cells or others, with the reference's features) and the new modalities.
        modalities
            ``{name: Modality(...)}`` of the modalities the reference lacks (one in a dict
            ``data`` without a spec is refused). Those it has are taken from it (their
            networks were trained with its specs: one given otherwise is refused).
        anchor
            The reference modality kept frozen. Default: the reference's own anchor (a
            reference trained with ``prior="anchor:<name>"``) or the only reference
            modality the data hold.
        **params
            The constructor's other keywords (``labels_key``, ``anchor_fraction``,
            ``geometric_pairs``, ``validation_fraction``, ``seed``, ...). ``hidden``
            defaults to the reference's and sizes only the new modalities' networks;
            ``dropout`` defaults to the reference's and applies to every network that
            trains (the frozen anchor runs without it). The latent space's ``n_latent``,
            ``variational`` and ``n_private`` are the reference's; ``prior`` is
            ``"anchor:<anchor>"``. With a ``labels_key`` whose classes in the data are the
            reference's, the reference's latent classifier is copied too (and trained
            further); with other classes, a new one is trained (warned).

        Returns
        -------
        An untrained model, whose reference modalities carry the reference's weights;
        call :meth:`train`.

        Raises
        ------
        TypeError
            If ``reference`` is no model (nor a path; an :class:`~transmodal.Ensemble`
            object included), or a keyword is not the constructor's.
        ValueError
            If the reference is untrained (or the path of a saved ensemble), ``data`` hold
            none of its modalities, a reference modality's features, image shape or batches
            differ from the reference's (the frozen anchor's cells may carry batches the
            reference lacks: warned of, as its encoder reads no batch), or a parameter
            contradicts the reference's latent space.

        Examples
        --------
        >>> reference = tm.CrossModalAE.load("rna_atac_model")
        >>> model = tm.CrossModalAE.from_reference(reference, {"rna": rna, "image": nuclei},
        ...     {"image": tm.Modality("continuous_bernoulli", obsm_key="crops")}, anchor="rna")
        >>> model.train()
        >>> nuclei.obsm["X_transmodal"] = model.get_latent_representation("image")
        """
        from ._reference import model_from_reference

        return model_from_reference(cls, reference, data, modalities, anchor, params)

    def _digests(self) -> dict[str, str]:
        return {n: names_digest(md.obs_names) for n, md in self.mods.items()}

    def _values_fingerprint(self, k: int = 32) -> dict[str, dict[str, list]]:
        """Per modality, the row sums and sums of squares of the ``k`` cells first in the
        order of their names: what the cells hold, whatever the matrix's storage (dense,
        sparse, backed) or the cells' order. ``load`` compares it to tell the training
        cells from other cells of the same names (by their names alone for a modality
        whose file was closed since)."""
        out = {}
        for name, md in self.mods.items():
            # (a file closed since: left out, as for files saved before the fingerprint)
            if md.n_obs and md.source.readable:
                names = heapq.nsmallest(k, (str(v) for v in md.obs_names))
                out[name] = {"names": names, "sums": row_sums(md, names)}
        return out
