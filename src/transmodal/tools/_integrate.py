"""``tm.tl.integrate``: the scanpy-style one call (data in, embeddings written into it)."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping
from copy import deepcopy
from typing import Any

import numpy as np
from anndata import AnnData

from .._hints import _ARGUMENT_HINTS, argument_hints, known_name_hint, nearest_names
from .._utils import (
    MODEL_CONFIG, MODEL_WEIGHTS, check_output_directory, is_mudata, jsonable, no_mudata_notice,
    user_stacklevel,
)
from ..data import Modality
from ..data._setup import _as_dict, feature_types_hint
from ..model import CrossModalAE
from ..model._priors import construction_bars


def _parameters(func) -> list[str]:
    """The keyword arguments of ``func`` that ``integrate`` passes on."""
    return [p for p in inspect.signature(func).parameters if p not in ("self", "data", "modalities")]


def _check_kwargs(kwargs: Mapping[str, Any] | None, func, taken: set[str], what: str) -> dict:
    """``kwargs`` for ``func``, rejecting unknown names and names ``integrate`` sets itself
    (an argument of the other dict's function is told where it goes)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"{what} must be a dict of keyword arguments, got {type(kwargs).__name__}")
    allowed = _parameters(func)
    other, where = ((CrossModalAE.train, "train_kwargs") if what == "model_kwargs" else
                    (CrossModalAE.__init__, "model_kwargs"))
    for key in kwargs:
        if key in taken:
            raise ValueError(f"{what}: pass {key!r} as integrate({key}=...), not inside {what}")
        if key not in allowed:
            own = sorted(set(allowed) - taken)
            hint = (f"an argument of {'train()' if where == 'train_kwargs' else 'the model'}: "
                    f"pass it in {where}" if key in _parameters(other) else None)
            hint = hint or known_name_hint((f"integrate.{func.__name__}", func.__name__), key,
                                           own)
            near = None if hint else nearest_names(key, sorted(taken))  # (integrate's own)
            hint = hint or (near and f"did you mean integrate({near[0]}=)?")
            raise ValueError(f"{what}: unknown argument {key!r}{f' ({hint})' if hint else ''}; "
                             f"allowed: {own}")
    return dict(kwargs)


def _integrate_hints() -> dict[str, str]:
    """``integrate()``'s hints: a keyword of the model or of its training, given to
    integrate itself, goes in ``model_kwargs`` / ``train_kwargs``."""
    hints = {}
    for func, owner, what in ((CrossModalAE.train, "train()", "train_kwargs"),
                              (CrossModalAE.__init__, "CrossModalAE()", "model_kwargs")):
        for p in _parameters(func):
            hints[p] = f"{owner}'s {p}= goes in {what}={{{p!r}: ...}}"
    for other in ("integrate.train", "integrate.__init__"):  # (the device, the epochs)
        hints.update(_ARGUMENT_HINTS[other])
    hints["batch_key"] = ("batches are each modality's: integrate(data, {'rna': "
                          "Modality('nb', batch_key='batch'), ...})")
    return hints


# (made when a call fails: from the model's signatures as they are then)
_ARGUMENT_HINTS["integrate"] = _integrate_hints


def _adatas(data) -> dict[str, AnnData]:
    """The AnnData of each modality of a MuData or a dict."""
    return dict(data.mod) if is_mudata(data) else dict(data)


def _copy(data):
    """A deep in-memory copy of a MuData or a dict of AnnData."""
    lazy = (
        "copy=True needs data in memory; backed data are read batch by batch — pass "
        "copy=False to write the embeddings into the (in-memory) obsm of the backed objects"
    )
    adatas = _adatas(data).values()
    if getattr(data, "isbacked", False) or any(getattr(a, "isbacked", False) for a in adatas):
        raise ValueError(lazy)
    try:  # matrices read lazily (tm.datasets.read_backed) cannot be copied either
        if is_mudata(data):
            with no_mudata_notice():  # (the copy is updated: mudata 0.3's notice)
                return data.copy()
        return {name: adata.copy() for name, adata in data.items()}
    except (AttributeError, TypeError, NotImplementedError):
        raise ValueError(lazy) from None


def joint_embedding(data, latents: Mapping[str, np.ndarray]) -> np.ndarray:
    """One row per cell of a ``MuData``: the mean of its modalities' embeddings.

    A cell measured in several of the embedded modalities gets the mean of their latents;
    a cell measured in none of them gets NaN (as muon writes ``X_mofa`` for cells outside
    the model).

    Parameters
    ----------
    data
        The MuData.
    latents
        ``{modality: embedding}``: for modalities of ``data``, one row per cell of
        ``data.mod[modality]`` and the same number of columns for all.

    Returns
    -------
    ``(data.n_obs, n_latent)`` float32 array.
    """
    if not is_mudata(data):
        raise ValueError(f"data must be a MuData, got {type(data).__name__}")
    if not isinstance(latents, Mapping) or not latents:
        raise ValueError("latents must be a non-empty dict {modality: embedding}")
    widths = set()
    for name, z in latents.items():
        if name not in data.mod:
            raise ValueError(f"latents: {name!r} is not a modality of the MuData ({list(data.mod)})")
        shape = np.shape(z)
        if len(shape) != 2 or shape[0] != data.mod[name].n_obs:
            raise ValueError(
                f"latents[{name!r}] has shape {shape}; expected one row per cell of the "
                f"modality ({data.mod[name].n_obs}, n_latent)"
            )
        widths.add(shape[1])
    if len(widths) > 1:
        raise ValueError(f"latents differ in width {sorted(widths)}; they must share one space")
    _, keys = _as_dict(data, latents)
    total = np.zeros((data.n_obs, widths.pop()))
    count = np.zeros(data.n_obs)
    for name, z in latents.items():
        if keys is not None:
            rows = keys[name]
        else:  # no obsmap (a MuData that was never updated): match obs_names
            rows = data.obs_names.get_indexer(data.mod[name].obs_names)
            if (rows < 0).any():
                raise ValueError(f"modality {name!r}: cells missing from the MuData's obs_names")
        total[rows] += np.asarray(z, dtype=np.float64)
        count[rows] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / count[:, None]).astype(np.float32)


@argument_hints
def integrate(
    data,
    modalities: Mapping[str, Modality | dict | str],
    *,
    key_added: str = "transmodal",
    copy: bool = False,
    max_epochs: int | None = None,
    accelerator: str = "cpu",
    seed: int = 0,
    model_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    model_kwargs: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
) -> Any:
    """Train a cross-modal autoencoder and write every cell's shared embedding into ``data``.

    The scanpy-style counterpart of :class:`~transmodal.CrossModalAE` (``sc.tl.umap``-like):
    builds the model, trains it and writes

    - ``adata.obsm["X_<key_added>"]`` for every modality's AnnData;
    - for a ``MuData`` also ``mdata.obsm["X_<key_added>"]``: per cell the mean of its
      modalities' embeddings (paired cells: the mean of both; NaN for cells of a modality
      outside ``modalities``);
    - ``.uns[key_added]`` (each modality's, and the MuData's) with ``"params"`` (the model's
      and the training's arguments, the modality specs and their order, in
      ``"modality_order"``, where the model was saved) and
      ``"mixing_accuracy"`` (how well a linear classifier tells the modalities apart in
      the latent; 0.5 for two modalities = mixed. Every modality's latent is standardised
      alike, so it also reads near 0.5 where the alignment failed: see
      :func:`transmodal.metrics.mixing_accuracy` with ``classifier="knn"``; the model's
      discriminator check warns after training); each modality's also with
      ``"modality"``, its name in the model.

    Use the class directly for translation and label transfer, or pass ``model_dir`` and
    load the saved model later with :meth:`CrossModalAE.load`.

    Parameters
    ----------
    data
        A ``MuData`` or ``{name: AnnData}`` (paired cells share ``obs_names``).
    modalities
        ``{name: Modality(...)}`` as for :class:`~transmodal.CrossModalAE` (a likelihood name
        or a dict is converted).
    key_added
        Name under which results are written: ``obsm["X_<key_added>"]``, ``uns[key_added]``.
    copy
        Work on a copy of ``data`` and return it, leaving ``data`` untouched; otherwise
        write into ``data`` and return ``None``.
    max_epochs
        Training epochs; ``None`` picks the size-aware default with early stopping.
    accelerator
        ``"cpu"`` (default), ``"gpu"`` or ``"auto"``.
    seed
        Seeds the networks, the validation split, the anchors and the training.
    model_dir
        Save the trained model here (``model.safetensors`` + ``config.json``); its path is
        recorded in ``uns[key_added]["params"]["model_dir"]``.
    overwrite
        Replace an existing ``model_dir``.
    model_kwargs
        Further arguments of :class:`~transmodal.CrossModalAE` (e.g. ``n_latent``,
        ``labels_key``, ``anchor_fraction``).
    train_kwargs
        Further arguments of :meth:`CrossModalAE.train` (e.g. ``batch_size``, ``lr``);
        ``progress_bar=False`` also hides the bar of the model's slow construction steps
        (the shape-based pseudo-pairs).

    Returns
    -------
    ``None``, or with ``copy=True`` the copy of ``data`` with the results written.

    Examples
    --------
    >>> tm.tl.integrate(mdata, {"rna": tm.Modality("nb"), "atac": tm.Modality("bernoulli")},
    ...                 model_kwargs={"labels_key": "cell_type"})
    >>> sc.pp.neighbors(mdata["rna"], use_rep="X_transmodal"); sc.tl.umap(mdata["rna"])
    """
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(
            f"key_added must be a non-empty string without '/' (h5ad and zarr would read it "
            f"as a path), got {key_added!r}"
        )
    if not (is_mudata(data) or isinstance(data, Mapping)):
        raise ValueError(
            f"data must be a MuData or a dict of AnnData (one per modality), got {type(data).__name__}"
        )
    init_kw = _check_kwargs(model_kwargs, CrossModalAE.__init__, {"seed"}, "model_kwargs")
    train_kw = _check_kwargs(
        train_kwargs, CrossModalAE.train, {"max_epochs", "accelerator", "seed"}, "train_kwargs"
    )
    if isinstance(data, Mapping) and isinstance(modalities, Mapping):
        seen: dict[int, str] = {}
        for name in modalities:
            adata = data.get(name)
            if adata is not None and id(adata) in seen:
                raise ValueError(
                    f"modalities {seen[id(adata)]!r} and {name!r} are the same AnnData object; "
                    f"integrate writes each modality's obsm['X_{key_added}'] and "
                    f"uns[{key_added!r}], so one would overwrite the other - pass a copy, or "
                    "use tm.CrossModalAE directly" + feature_types_hint(adata)
                )
            seen.setdefault(id(adata), name)
    for name, adata in _adatas(data).items():
        if isinstance(adata, AnnData) and adata.is_view and adata.isbacked:
            # its obsm could not take the embedding after training
            raise ValueError(
                f"modality {name!r} is a view of a backed AnnData, whose obsm cannot be "
                "written; pass the whole backed object, or adata[mask].to_memory()"
            )
    if model_dir is not None:  # before training: an unusable path fails fast
        check_output_directory(model_dir, overwrite=overwrite, names=(MODEL_CONFIG, MODEL_WEIGHTS))
    if copy:
        data = _copy(data)
    with construction_bars(train_kw.get("progress_bar", True)):
        model = CrossModalAE(data, modalities, seed=seed, **init_kw)
    model.train(max_epochs=max_epochs, accelerator=accelerator, seed=seed, **train_kw)
    if model_dir is not None:
        model.save(model_dir, overwrite=overwrite)

    params = jsonable(
        {
            **model.init_params_,
            "modalities": {n: md.spec.to_dict() for n, md in model.mods.items()},
            # their order is part of the setting (README), and .h5ad / .h5mu files keep a
            # dict's keys sorted
            "modality_order": list(model.mods),
            "train": model.train_params_,
            "model_dir": None if model_dir is None else os.fspath(model_dir),
        }
    )
    uns = {"params": params, "mixing_accuracy": jsonable(model.mixing_accuracy_)}
    obsm_key = f"X_{key_added}"
    latents = {}
    # each object gets its own copy: editing one's uns (e.g. params["model_dir"]) must not
    # change the others'
    for name, md in model.mods.items():
        adata: AnnData = md.adata
        latents[name] = model.get_latent_representation(name)
        adata.obsm[obsm_key] = latents[name]
        adata.uns[key_added] = {**deepcopy(uns), "modality": name}
    if is_mudata(data):
        data.obsm[obsm_key] = joint_embedding(data, latents)
        data.uns[key_added] = deepcopy(uns)
    written = {id(md.adata) for md in model.mods.values()}
    stale = [n for n, a in _adatas(data).items() if n not in model.mods and id(a) not in
             written and isinstance(a, AnnData) and obsm_key in a.obsm]
    if stale:  # (another model's latent space, which no plot or neighbour graph should mix)
        warnings.warn(
            f"modality {stale[0]!r}" + (f" (and {len(stale) - 1} more)" if len(stale) > 1
                                        else "")
            + f" is not integrated by this call but keeps obsm[{obsm_key!r}] of an earlier "
            f"one: another model's latent space, which tm.pl.embedding would draw beside "
            f"this call's; delete it (del adata.obsm[{obsm_key!r}]) or use another "
            "key_added",
            UserWarning, stacklevel=user_stacklevel(),
        )
    return data if copy else None
