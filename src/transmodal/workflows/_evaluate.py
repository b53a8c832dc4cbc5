"""Evaluate a trained model: on cells measured in two modalities (paired test cells), or on
labelled cells of two modalities measured apart (unpaired)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import metrics
from .._utils import check_unique_obs_names, passes_warnings_once, user_stacklevel
from ..data._setup import label_str
from ..metrics._chunked import Searches, check_paired
from ..metrics._labels import cluster_accuracy_of
from ..metrics._matching import foscttm_of, knn_scores_of, partner_in_top_k_of
from ..model import CrossModalAE, Ensemble
from ..nn._likelihoods import Bernoulli, get_likelihood


def comparison_space(model: CrossModalAE, modality: str, library_size: float | None = None):
    """How translations into ``modality`` are compared with observed profiles.

    Parameters
    ----------
    model
        The trained model.
    modality
        The target modality of the translations.
    library_size
        Library size that observed count rows are scaled to: a translation's
        ``uns["transmodal"]["library_size"]`` (e.g. an ensemble's, the mean of its
        members'); ``None``: the modality's median training library of ``model``.

    Returns
    -------
    ``(to_units, compare)``: ``to_units`` maps raw observed rows into the units of
    :meth:`CrossModalAE.translate` (counts scaled to the modality's median training library,
    or ``library_size``, for count data or normalised input, presence
    for Bernoulli, raw values otherwise), and
    ``compare`` maps those units into the space where Pearson correlations are taken
    (``log1p`` for count data and library-normalised input, whether or not the modality
    takes ``log1p`` of its input, and for other data where it does; raw values otherwise).
    """
    md = model.mods[modality]
    opts = md.spec.resolved()
    lib = float(model.module.transforms[modality].library_size if library_size is None
                else library_size)
    ident = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    log = lambda v: np.log1p(np.maximum(np.asarray(v, dtype=np.float64), 0.0))  # noqa: E731
    likelihood = get_likelihood(md.spec.likelihood)
    if isinstance(likelihood, Bernoulli):  # presence; unmeasured entries stay NaN

        def presence(x):
            x = np.asarray(x, dtype=np.float64)
            return np.where(np.isnan(x), np.nan, x > 0)

        return presence, ident
    if opts["normalize"] or likelihood.counts:

        def to_units(x):
            x = np.asarray(x, dtype=np.float64)
            return x / np.maximum(x.sum(1, keepdims=True), 1.0) * lib

        return to_units, log
    return ident, (log if opts["log1p"] else ident)


def _partner_batches(model: CrossModalAE, target: str, adata: AnnData) -> np.ndarray | None:
    """The batches of the partner cells ``adata`` of ``target``, when the model decodes
    ``target`` per batch and every partner's batch is one of the model's (else ``None``:
    translations are averaged over the batches)."""
    key = model.mods[target].spec.batch_key
    known = model.batch_categories_.get(target)
    if key is None or known is None:
        return None
    if key not in adata.obs:
        warnings.warn(
            f"modality {target!r}: the partner cells have no obs[{key!r}] column (the "
            f"model decodes {target!r} per batch: {known}); every cell is translated as the "
            "mean over the batches",
            UserWarning, stacklevel=user_stacklevel(),
        )
        return None
    values = np.array([label_str(v) for v in adata.obs[key].astype(object)], dtype=object)
    unknown = [v for v in values if v not in known]
    if unknown:
        warnings.warn(
            f"modality {target!r}: {len(unknown)} partner cell(s) have no batch of the model in "
            f"obs[{key!r}] (e.g. {unknown[0]!r}; its batches: {known}); every cell is "
            "translated as the mean over the batches",
            UserWarning, stacklevel=user_stacklevel(),
        )
        return None
    return values


def _check_arguments(
    model: CrossModalAE | Ensemble,
    data: Mapping[str, AnnData],
    source: str,
    target: str,
    labels_key: str | None,
) -> None:
    """The checks both evaluations share: two distinct modalities of the model, each with
    data, holding ``labels_key`` when it is given."""
    if source == target:
        raise ValueError(f"source and target must differ, both are {source!r}")
    for role, name in (("source", source), ("target", target)):
        if name not in model.modality_names:
            raise ValueError(
                f"{role} {name!r} is not a modality of the model ({model.modality_names})"
            )
        if name not in data:
            raise ValueError(f"{role} {name!r}: no data given for it (data holds {list(data)})")
        if labels_key is not None and labels_key not in data[name].obs:
            raise ValueError(
                f"modality {name!r}: labels_key {labels_key!r} not found in obs; available "
                f"columns: {list(data[name].obs.columns)}"
            )
    check_unique_obs_names(data[source], source)
    check_unique_obs_names(data[target], target)


def _trained_cells(model: CrossModalAE | Ensemble, name: str, cells: AnnData,
                   rows_of: Callable[[CrossModalAE], list[np.ndarray]]) -> np.ndarray:
    """Which of the ``name`` cells ``cells`` a member of ``model`` was trained on as one of
    its rows ``rows_of(member)``: named as one and holding its values (up to 20 of them
    compared; cells of another run named alike, as barcodes repeat, are not). None found
    for a model loaded without its data."""
    from ..data._source import matrix_of

    names = pd.Index(cells.obs_names)
    found = np.zeros(len(names), dtype=bool)
    for member in getattr(model, "models", [model]):
        md = member.mods[name]
        if md.n_obs == 0:
            continue
        for rows in rows_of(member):
            hit = names.isin(md.obs_names[rows])
            if not hit.any():
                continue
            sample = np.flatnonzero(hit)[:20]
            at = pd.Index(md.obs_names).get_indexer(names[sample])
            try:
                given, var_names = matrix_of(cells[sample], md.spec, name)
                same = list(var_names) == list(md.var_names) and np.allclose(
                    given.rows(np.arange(len(sample))), md.source.rows(at), equal_nan=True)
            except Exception:  # noqa: BLE001 - not comparable (other features, a closed file)
                same = False
            if same:
                found |= hit
    return found


def _anchor_cells(model: CrossModalAE | Ensemble, source: str, target: str,
                  cells: AnnData) -> np.ndarray:
    """Which of the ``source`` cells ``cells`` the model was trained to match with their
    ``target`` measurement as anchor pairs (:func:`_trained_cells`)."""
    def rows_of(member: CrossModalAE) -> list[np.ndarray]:
        return [rows[key.split("|").index(source)]
                for key, rows in (getattr(member, "anchors_", None) or {}).items()
                if set(key.split("|")) == {source, target}]

    return _trained_cells(model, source, cells, rows_of)


def _labelled_cells(model: CrossModalAE | Ensemble, name: str, cells: AnnData,
                    labels_key: str) -> np.ndarray:
    """Which of the ``name`` cells ``cells`` the model was trained on with their
    ``labels_key`` label (not a validation cell): its latent classifier (or its
    label-conditioned discriminator) was fitted to it (:func:`_trained_cells`)."""
    def rows_of(member: CrossModalAE) -> list[np.ndarray]:
        params = member.init_params_
        labels = member.mods[name].labels
        lam_cls = (getattr(member, "train_params_", None) or {}).get("lam_cls", 1.0)
        if params.get("labels_key") != labels_key or labels is None or not (
                lam_cls > 0 or params.get("disc_conditional")):
            return []
        validation = member.val_masks_.get(name, np.zeros(len(labels), dtype=bool))
        return [np.flatnonzero((labels >= 0) & ~validation)]

    return _trained_cells(model, name, cells, rows_of)


def _labels(adata: AnnData, key: str) -> np.ndarray:
    """Class names as the model reads them; missing labels stay missing (not scored)."""
    return np.array([label_str(v) for v in adata.obs[key].astype(object)], dtype=object)


@passes_warnings_once  # (each modality's cells are checked by more than one step)
def evaluate_unpaired(
    model: CrossModalAE | Ensemble,
    data: Mapping[str, AnnData],
    *,
    source: str,
    target: str,
    labels_key: str,
    k: int = 5,
    mixing_seed: int = 0,
) -> dict[str, Any]:
    """Label-based metrics of an alignment of ``source`` and ``target`` cells measured apart.

    Without paired cells the labels are the truth: cells of a class should lie among the
    other modality's cells of the same class. Only classes that both modalities hold are
    scored (a class measured in one modality alone has no right answer in the other); a
    cell whose nearest other-modality cell is of a class the other modality alone holds
    counts as wrong. Scored on cells whose labels the model trained on (same
    ``labels_key``), the label metrics measure how well its latent classifier fits them,
    not a transfer, and a warning says so: hide (set missing) the labels of the cells to
    score when training.

    Parameters
    ----------
    model
        A trained :class:`~transmodal.CrossModalAE` or :class:`~transmodal.Ensemble`.
    data
        ``{name: AnnData}`` with at least ``source`` and ``target`` (any cells; shared
        ``obs_names`` are not needed and not used).
    source, target
        Modality names ("x" and "y" of the metrics).
    labels_key
        ``obs`` column of both modalities holding the cell types (missing values allowed:
        those cells are not scored).
    k
        Neighbours of the label transfer's k-NN classifier.
    mixing_seed
        Seed of the mixing classifier's folds.

    Returns
    -------
    Flat dict: ``label_transfer`` (k-NN classifier fitted on one modality, scored on the
    other's cells of the shared classes; mean of both directions, plus
    ``label_transfer_{a}_to_{b}``: cells of ``a`` labelled from ``b``), ``cluster_accuracy``
    (+ directions; the label of the nearest other-modality cell, L1), ``mixing_accuracy``
    (balanced accuracy of a linear classifier telling the modalities apart; 0.5 is perfect
    mixing as far as it sees: see :func:`transmodal.metrics.mixing_accuracy`),
    ``shared_classes`` (their number) and ``n_cells_{a}`` / ``n_cells_{b}``.

    See Also
    --------
    evaluate_paired : the metrics on cells measured in both modalities.
    """
    _check_arguments(model, data, source, target, labels_key)
    a, b = data[source], data[target]
    la, lb = _labels(a, labels_key), _labels(b, labels_key)
    shared = set(la[la != None].tolist()) & set(lb[lb != None].tolist())  # noqa: E711
    if not shared:
        raise ValueError(
            f"obs[{labels_key!r}]: {source!r} and {target!r} share no class, so no cell has a "
            f"right answer in the other modality (classes of {source!r}: "
            f"{sorted(set(la[la != None].tolist()))[:10]}, of {target!r}: "  # noqa: E711
            f"{sorted(set(lb[lb != None].tolist()))[:10]})"
        )
    fitted = {n: _labelled_cells(model, n, data[n], labels_key) for n in (source, target)}
    if any(m.any() for m in fitted.values()):
        warnings.warn(
            f"evaluate_unpaired: the model was trained on the labels_key {labels_key!r} labels "
            "of " + " and ".join(f"{int(m.sum())} of the {len(m)} {n!r} cells"
                                 for n, m in fitted.items() if m.any())
            + " scored (its latent classifier was fitted to them), so label transfer and "
            "cluster accuracy measure how well it fits them, not a transfer; to measure a "
            "transfer, score cells whose labels were hidden (missing) in training",
            UserWarning, stacklevel=user_stacklevel(),
        )
    za = model.get_latent_representation(source, a)
    zb = model.get_latent_representation(target, b)
    out: dict[str, Any] = {
        f"n_cells_{source}": int(a.n_obs), f"n_cells_{target}": int(b.n_obs),
        "shared_classes": len(shared),
    }
    lt = metrics.label_transfer_both(za, la, zb, lb, k=k, classes=sorted(shared))
    out["label_transfer"] = float(lt["mean"])
    out[f"label_transfer_{source}_to_{target}"] = float(lt["x_to_y"])
    out[f"label_transfer_{target}_to_{source}"] = float(lt["y_to_x"])
    # private classes: not scored as queries, wrong as the nearest cell of a query
    only = lambda v: np.where(np.isin(v, list(shared)), v, None)  # noqa: E731
    ca = metrics.cluster_accuracy(za, zb, only(la), only(lb), metric="l1")
    out["cluster_accuracy"] = float(ca["mean"])
    out[f"cluster_accuracy_{source}_to_{target}"] = float(ca["x_to_y"])
    out[f"cluster_accuracy_{target}_to_{source}"] = float(ca["y_to_x"])
    if min(a.n_obs, b.n_obs) >= 5:  # its 5 cross-validation folds
        out["mixing_accuracy"] = float(metrics.mixing_accuracy(za, zb, seed=mixing_seed))
    return out


@passes_warnings_once
def evaluate_paired(
    model: CrossModalAE | Ensemble,
    data: Mapping[str, AnnData],
    *,
    source: str,
    target: str,
    labels_key: str | None = None,
    mixing_seed: int = 0,
) -> dict[str, Any]:
    """The matching, label, mixing and translation metrics of :mod:`transmodal.metrics` on
    cells measured in both ``source`` and ``target`` (the classifier-on-translated-data ROC
    of the paper's Fig. 4c is :func:`transmodal.analysis.translated_classifier_roc`). Its
    k-NN accuracy searches among the cells given; the paper's code scores held-out cells
    among all cells (:func:`transmodal.metrics.knn_accuracy` with ``score=``).

    Parameters
    ----------
    model
        A trained :class:`~transmodal.CrossModalAE` or :class:`~transmodal.Ensemble`.
    data
        ``{name: AnnData}`` with at least ``source`` and ``target``; cells are paired by
        equal ``obs_names`` (only cells present in both are used).
    source, target
        Modality names ("x" and "y" of the metrics).
    labels_key
        ``obs`` column of labels for cluster accuracy and label transfer.
    mixing_seed
        Seed of the mixing classifier's folds.

    Returns
    -------
    Flat dict of metrics: ``foscttm``, ``partner_top{k}``, ``knn_acc_l1_{k}`` (mean of both
    directions, plus per direction) and its level under a random pairing
    ``knn_chance_l1_{k}`` (:func:`~transmodal.metrics.knn_accuracy_chance`),
    ``cluster_accuracy`` and ``label_transfer`` (+ directions, ``{a}_to_{b}``: cells of
    ``a`` labelled from ``b``), ``mixing_accuracy`` (linear, as in
    :func:`evaluate_unpaired`), ``translation_pearson_{a}_to_{b}`` and
    ``baseline_pearson_{a}_to_{b}`` for both directions, ``n_cells``. The baseline is the
    mean profile of the target's training cells (not its validation cells; the evaluated
    cells' own for a model loaded without its data) in the translations' units - the mean
    of the profiles, then ``log1p`` where the profiles are compared in log space, as a
    translation is a mean - correlated with each observed cell:
    :func:`~transmodal.metrics.mean_profile_baseline` of that one profile (the function's
    own ``transform=`` would average the logs instead).
    With fewer than 5 cells the k-NN accuracies and the mixing accuracy are left out, and
    the label transfer with fewer than 5 labelled cells in either modality.
    Into a target with batches (``batch_key``) each cell is translated in its partner's
    batch when the partners carry known batches, else averaged over the batches.

    The neighbour metrics compare every cell with every other (memory stays per block,
    time grows as ``n^2``; each search is done once for all the metrics that need it): on
    one CPU thread 26-37 s at 20,000 cells and 4 minutes at 60,000
    (``benchmarks/scale.py --parts evaluate``); evaluate a random subset of the cells for a
    quicker answer.
    """
    _check_arguments(model, data, source, target, labels_key)
    a, b = data[source], data[target]
    common = a.obs_names.intersection(b.obs_names, sort=False)
    if len(common) < 2:
        raise ValueError(
            f"need at least 2 cells present in both {source!r} and {target!r} (equal obs_names), "
            f"found {len(common)}; for cells measured apart, evaluate_unpaired scores the "
            "alignment by their labels"
        )
    a, b = a[common], b[common]
    za = model.get_latent_representation(source, a)
    zb = model.get_latent_representation(target, b)
    out: dict[str, Any] = {"n_cells": int(len(common))}
    # (each neighbour search done once, for every metric that needs it)
    searches = Searches(*check_paired(za, zb, min_rows=2))
    out["foscttm"] = float(foscttm_of(searches))
    anchors = _anchor_cells(model, source, target, a)
    if anchors.any():  # pairs the model was trained to match: memorised, not predicted
        scores = [f"FOSCTTM {float(metrics.foscttm(za[m], zb[m])):.3f} on {what}"
                  for m, what in ((anchors, "them"), (~anchors, f"the other {(~anchors).sum()}"))
                  if m.sum() >= 2]
        warnings.warn(
            f"evaluate_paired: {int(anchors.sum())} of the {len(common)} pairs evaluated are "
            "anchor pairs of the model (trained to lie together"
            + "".join(f"; {t}" for t in scores) + "), so the metrics are optimistic; "
            "evaluate cells held out from training", UserWarning, stacklevel=user_stacklevel(),
        )
    tops = tuple(k for k in (1, 5, 10, 50) if k < len(common))  # (k >= n: 1 by definition)
    for k, v in partner_in_top_k_of(searches, tops).items():
        out[f"partner_top{k}"] = float(v)
    ks = tuple(k for k in (5, 50) if k <= len(common))  # none below 5 cells
    knn, chance = (knn_scores_of(searches, ks, "l1", accuracy=True, chance=True) if ks
                   else ({}, {}))
    for k in ks:
        out[f"knn_acc_l1_{k}"] = float(knn["mean"][k])
        out[f"knn_chance_l1_{k}"] = float(chance["mean"][k])
        out[f"knn_acc_l1_{k}_{source}_to_{target}"] = float(knn["x_to_y"][k])
        out[f"knn_acc_l1_{k}_{target}_to_{source}"] = float(knn["y_to_x"][k])
    if labels_key is not None:
        la, lb = _labels(a, labels_key), _labels(b, labels_key)
        ca = cluster_accuracy_of(searches, "l1", la, lb)
        # "{a}_to_{b}": cells of a are queried against (get the label of their nearest) b
        out["cluster_accuracy"] = float(ca["mean"])
        out[f"cluster_accuracy_{source}_to_{target}"] = float(ca["x_to_y"])
        out[f"cluster_accuracy_{target}_to_{source}"] = float(ca["y_to_x"])
        if min(np.sum(la != None), np.sum(lb != None)) >= 5:  # noqa: E711 - its 5 neighbours
            lt = metrics.label_transfer_both(za, la, zb, lb, k=5)
            out["label_transfer"] = float(lt["mean"])
            out[f"label_transfer_{source}_to_{target}"] = float(lt["x_to_y"])
            out[f"label_transfer_{target}_to_{source}"] = float(lt["y_to_x"])
    if len(common) >= 5:  # its 5 cross-validation folds
        out["mixing_accuracy"] = float(metrics.mixing_accuracy(za, zb, seed=mixing_seed))

    data_model = model.models[0] if isinstance(model, Ensemble) else model  # same data in all
    for s, t, adata_s, adata_t in ((source, target, a, b), (target, source, b, a)):
        translated = model.translate(adata_s, source=s, target=t,
                                     target_batch=_partner_batches(data_model, t, adata_t))
        pred = translated.X
        # (the observed profiles in the translation's units: an ensemble's library size is
        # its members' mean)
        to_units, compare = comparison_space(
            data_model, t, translated.uns["transmodal"].get("library_size"))
        partners = data_model._source_for(t, adata_t, check=False)
        # baseline: the mean training profile, in the same units, compared the same way
        # (the evaluated cells' mean for a model loaded without its training data)
        md, rows = data_model.mods[t], None
        if md.n_obs == 0:
            src = data_model._source_for(t, adata_t, check=False)
        else:
            src = md.source_now()  # (a matrix replaced in its AnnData since: read anew)
            if t in data_model.val_masks_:
                rows = np.flatnonzero(~data_model.val_masks_[t])
        total, measured = 0.0, 0  # O(chunk) memory; unmeasured (NaN) entries left out
        for chunk in src.chunks(rows):
            units = to_units(chunk)
            total = total + np.nansum(units, 0)
            measured = measured + (~np.isnan(units)).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_profile = compare((total / measured)[None, :])
        # per-cell correlations over blocks of the partners (the observed profiles are never
        # held whole: dense float64, they were 2.6x the float32 translation)
        missing = md.spec.resolved()["missing"]
        r_pred, r_base, start = [], [], 0
        for chunk in partners.chunks():
            observed = compare(to_units(chunk))
            block = compare(pred[start : start + len(chunk)])
            r_pred.append(metrics.translation_pearson(block, observed, missing=missing))
            r_base.append(
                metrics.mean_profile_baseline(mean_profile, observed, missing=missing)
            )
            start += len(chunk)
        out[f"translation_pearson_{s}_to_{t}"] = float(np.nanmean(np.concatenate(r_pred)))
        out[f"baseline_pearson_{s}_to_{t}"] = float(np.nanmean(np.concatenate(r_base)))
    return out
