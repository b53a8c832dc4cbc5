"""A new model in a trained model's latent space (:meth:`CrossModalAE.from_reference`): the
reference's networks of the modalities the new data hold are copied, one of them frozen as
the anchor (``prior="anchor:<name>"``), and the new modalities are trained to embed into its
latent space."""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .._hints import nearest_names
from .._utils import ENSEMBLE_CONFIG, first_few, user_stacklevel
from ..data._modality import Modality
from ..data._setup import _as_dict

if TYPE_CHECKING:
    from ._model import CrossModalAE

# the reference's sizes that its networks were built with: taken from it, and the same
# value or none may be given
_FIXED = ("n_latent", "variational", "n_private")
# the reference's settings taken unless given (the widths of new modalities' networks)
_INHERITED = ("hidden", "dropout")


def refuse_ensemble(path: Any) -> None:
    """``ValueError`` if directory ``path`` holds an ensemble (said before loading it as a
    model fails with advice that does not fit here)."""
    if (Path(path) / ENSEMBLE_CONFIG).is_file():
        raise ValueError(
            f"{path} holds an ensemble, which has no single latent space to join: give one "
            "member's directory (member0, ...), or train the reference with one seed or by "
            "consensus"
        )


def check_reference_record(path: Any, is_trained: bool, train_params: Mapping[str, Any]) -> None:
    """``ValueError`` unless a reference (saved at ``path``, if any) is trained, and not
    stopped in its anchor's pre-training."""
    who = "reference" if path is None else f"reference {path}"
    if not is_trained:
        raise ValueError(f"{who} is an untrained model (random weights): train it first")
    left = train_params.get("pretrain_left")
    if left:
        raise ValueError(
            f"{who} stopped while it pre-trained its anchor modality ({left} epoch(s) left): "
            "its other modalities' networks are untrained; finish its training first"
        )


def _reference_model(cls: type[CrossModalAE], reference: Any) -> CrossModalAE:
    """``reference`` as a trained model (a path: loaded without its data)."""
    path = reference if isinstance(reference, (str, os.PathLike)) else None
    if path is not None:
        refuse_ensemble(path)
        reference = cls.load(path)
    from ._model import CrossModalAE

    if not isinstance(reference, CrossModalAE):
        member = ("; an Ensemble's members are models: pass one of them, e.g. "
                  "ensemble.models[0]" if type(reference).__name__ == "Ensemble" else "")
        raise TypeError(
            f"reference must be a trained CrossModalAE or the path of a saved one, got "
            f"{type(reference).__name__}{member}"
        )
    check_reference_record(path, reference.is_trained_, reference.train_params_)
    return reference


def explicit_specs(
    specs: Mapping[str, Modality], hidden: Any, images: Collection[str]
) -> dict[str, Modality]:
    """A reference's modality specs with the hidden widths its networks were built with
    (``hidden``: the reference's default) made explicit, so that a new model's ``hidden``
    sizes only its new modalities (``images``: modalities whose default is their own; a
    registered architecture's sizes are its options)."""
    return {
        name: dataclasses.replace(spec, hidden=tuple(hidden))
        if spec.hidden is None and spec.architecture is None and name not in images else spec
        for name, spec in specs.items()
    }


def check_reference_spec(name: str, given: Any, trained: Modality, explicit: Modality) -> None:
    """``ValueError`` unless ``given`` (a spec of modality ``name`` passed with a reference)
    is ``None`` or the spec the reference trained its networks with (``trained``, or
    ``explicit``: the same with its hidden widths written out)."""
    if given is None:
        return
    mine = given if isinstance(given, Modality) else Modality.from_dict(given, name=name)
    if mine != trained and mine != explicit:
        a, b = mine.to_dict(), (trained if mine.hidden is None else explicit).to_dict()
        differ = ", ".join(f"{k}={a.get(k)!r} (reference: {b.get(k)!r})"
                           for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise ValueError(
            f"modality {name!r} is the reference's, whose networks were trained with another "
            f"spec ({differ}); leave it out of modalities (it is taken from the reference), "
            "or give a new modality another name"
        )


def _specs(
    reference: CrossModalAE, names: list[str], modalities: Mapping[str, Any] | None
) -> dict[str, Modality]:
    """The new model's modalities: the reference's ones among ``names`` (the data's) with
    the reference's specs (:func:`explicit_specs`), then the given ones it lacks."""
    given = {} if modalities is None else modalities
    if not isinstance(given, Mapping):
        raise ValueError(
            "modalities must be a dict {name: Modality(...)} of the modalities the reference "
            f"lacks, got {type(given).__name__}"
        )
    mods = {n: md for n, md in reference.mods.items() if n in names}
    specs = explicit_specs(
        {n: md.spec for n, md in mods.items()}, reference.init_params_["hidden"],
        [n for n, md in mods.items() if md.source.image_shape is not None],
    )
    for name, spec in specs.items():
        check_reference_spec(name, given.get(name), mods[name].spec, spec)
    for name, spec in given.items():
        if name not in specs:
            specs[name] = spec
    return specs


def reference_params(
    cls: type[CrossModalAE], init_params: Mapping[str, Any], anchor: str,
    params: Mapping[str, Any], how: str = "anchor=",
) -> dict[str, Any]:
    """The constructor's keywords for a model on a reference built with ``init_params``:
    its defaults, the reference's network sizes (a size a file saved before it existed
    lacks: the default), ``params``, and the prior that freezes ``anchor`` (``how``: where
    the user names it, for the errors)."""
    sig = inspect.signature(cls.__init__)
    allowed = [k for k, p in sig.parameters.items()
               if p.kind is p.KEYWORD_ONLY and k != "prior"]
    init = {k: init_params.get(k, sig.parameters[k].default) for k in (*_FIXED, *_INHERITED)}
    for key, value in params.items():
        if key == "prior":
            raise ValueError(
                f"prior is 'anchor:<name>' for a model built on a reference (here "
                f"'anchor:{anchor}'): choose the reference modality it keeps with {how}"
            )
        if key not in allowed:
            near = nearest_names(key, allowed)
            raise TypeError(
                f"CrossModalAE.from_reference() got an unexpected keyword argument {key!r}"
                + (f"; did you mean {near[0]}=?" if near else "")
                + f" (it takes the constructor's keywords: {allowed})"
            )
        if key in _FIXED and value != init[key]:
            raise ValueError(
                f"{key}={value!r}: the reference's networks were built with "
                f"{key}={init[key]!r}, which the new model shares"
            )
    defaults = {k: sig.parameters[k].default for k in allowed}
    return {**defaults, **init, **params, "prior": f"anchor:{anchor}"}


def choose_anchor(
    anchor: str | None, shared: list[str], modalities: list[str], own: str | None,
    how: str = "anchor=",
) -> str:
    """The reference modality that stays frozen: ``anchor`` if given (one of ``shared``,
    the reference's ``modalities`` that the data hold), else the reference's own anchor
    ``own`` or the only shared modality (``how``: where the user names it)."""
    if anchor is None:
        if own in shared:
            return own
        if len(shared) == 1:
            return shared[0]
        raise ValueError(
            f"data hold the reference's modalities {shared}: choose the one whose networks "
            f"stay frozen with {how}"
        )
    if anchor not in shared:
        where = "data" if anchor in modalities else "the reference"
        raise ValueError(
            f"anchor={anchor!r} is not in {where}: the anchor is one of the reference's "
            f"modalities that the data hold ({shared})"
        )
    return anchor


def _warn_new_anchor_batches(model: CrossModalAE, anchor: str) -> None:
    """Warn of the frozen anchor's cells of batches the reference lacks (code -1): its
    encoder reads no batch, so they embed as they are, with their batch's effects."""
    md = model.mods[anchor]
    if md.batches is None or not (md.batches < 0).any():
        return
    key = md.spec.batch_key
    unknown = (sorted({str(v) for v in md.adata.obs[key][md.batches < 0]})
               if key in md.adata.obs else None)
    which = (f"of batches the reference lacks ({first_few(unknown, 5)}; the reference's: "
             f"{md.batch_categories})" if unknown else f"without obs[{key!r}]")
    warnings.warn(
        f"modality {anchor!r} (the frozen anchor): {int((md.batches < 0).sum())} of its "
        f"{md.n_obs} cells are {which}: its encoder reads no batch, so they embed as they "
        "are (what their batch changes stays in their embeddings). Translations into "
        f"{anchor!r} are decoded in the reference's batches (their mean, or target_batch=), "
        "and training the anchor again (pretrain_epochs > 0) is refused",
        UserWarning, stacklevel=user_stacklevel(),
    )


def model_from_reference(
    cls: type[CrossModalAE], reference: Any, data: Any,
    modalities: Mapping[str, Any] | None, anchor: str | None, params: dict[str, Any],
) -> CrossModalAE:
    """See :meth:`CrossModalAE.from_reference`."""
    reference = _reference_model(cls, reference)
    adatas, _ = _as_dict(data, ())  # (the names only: no MuData pairing maps read)
    shared = [n for n in reference.mods if n in adatas]
    given = modalities if isinstance(modalities, Mapping) else {}
    unspecified = [n for n in adatas if n not in reference.mods and n not in given]
    if unspecified and isinstance(data, Mapping):  # (a MuData may hold others, unused)
        raise ValueError(
            f"data hold modality {unspecified[0]!r}, which the reference lacks and modalities "
            f"does not specify: pass modalities={{{unspecified[0]!r}: Modality(...)}} (the "
            f"reference's modalities are {reference.modality_names})"
        )
    if not shared:
        raise ValueError(
            f"data hold none of the reference's modalities {reference.modality_names} (data: "
            f"{list(adatas)}); the new model keeps the networks of at least one of them"
        )
    anchor = choose_anchor(anchor, shared, list(reference.mods), reference.anchor_modality_)
    specs = _specs(reference, list(adatas), modalities)
    kwargs = reference_params(cls, reference.init_params_, anchor, params)
    check_data = kwargs.pop("check_data")
    warn_unused = kwargs["anchor_fraction"] is None
    model = cls.__new__(cls)
    config = {  # what load_model checks given data against, for the reference's modalities
        "n_vars": {n: int(reference.mods[n].source.n_vars) for n in shared},
        "var_names": {n: [str(v) for v in reference.mods[n].var_names] for n in shared},
        "image_shape": {n: list(reference.mods[n].source.image_shape) for n in shared
                        if reference.mods[n].source.image_shape is not None},
    }
    from ._io import check_given_data

    model._build(
        data, specs, cls._check_params(kwargs), check_data=check_data, warn_unused=warn_unused,
        batch_categories={n: c for n, c in reference.batch_categories_.items() if n in shared},
        check_module=lambda _: check_given_data(model, config, "the reference model"),
        fitted={n: reference.module.transforms[n].state_dict() for n in shared},
        # the frozen anchor's encoder reads no batch: cells of new batches embed as they are
        batches_optional=(anchor,),
    )
    _warn_new_anchor_batches(model, anchor)
    for name in shared:  # the copied preprocessing and encoders read the reference's units
        if name in reference.integer_input_:
            model.integer_input_[name] = reference.integer_input_[name]
            model._warn_other_units(model.mods[name].source, model.mods[name].integers)
    both = model.module.classifier is not None and reference.module.classifier is not None
    copied = both and model.label_categories_ == reference.label_categories_
    if both and not copied:
        warnings.warn(
            f"the reference's latent classifier (classes {reference.label_categories_}) is not "
            f"copied: the labels of the data name other classes ({model.label_categories_}); "
            "the new model's classifier starts from random weights",
            UserWarning, stacklevel=user_stacklevel(),
        )
    with torch.no_grad():
        for name in shared:
            for part in ("encoders", "decoders", "heads"):
                getattr(model.module, part)[name].load_state_dict(
                    getattr(reference.module, part)[name].state_dict()
                )
        if copied:
            model.module.classifier.load_state_dict(reference.module.classifier.state_dict())
    # the anchor is trained: not pre-trained again (TrainingMixin._pretraining); the copied
    # networks answer as the reference's before any training (no warning of random weights)
    model.train_params_ = {
        "reference_modalities": shared,
        "classifier_trained": bool(
            copied and reference.train_params_.get("classifier_trained", True)),
    }
    return model
