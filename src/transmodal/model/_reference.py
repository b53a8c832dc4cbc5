"""A new model in a trained model's latent space (:meth:`CrossModalAE.from_reference`): the
reference's networks of the modalities the new data hold are copied, one of them frozen as
the anchor (``prior="anchor:<name>"``), and the new modalities are trained to embed into its
latent space."""

from __future__ import annotations

import dataclasses
import inspect
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from .._hints import nearest_names
from .._utils import user_stacklevel
from ..data._modality import Modality
from ..data._setup import _as_dict

if TYPE_CHECKING:
    from ._model import CrossModalAE

# the reference's sizes that its networks were built with: taken from it, and the same
# value or none may be given
_FIXED = ("n_latent", "variational", "n_private")
# the reference's settings taken unless given (the widths of new modalities' networks)
_INHERITED = ("hidden", "dropout")


def _reference_model(cls: type[CrossModalAE], reference: Any) -> CrossModalAE:
    """``reference`` as a trained model (a path: loaded without its data)."""
    if isinstance(reference, (str, os.PathLike)):
        reference = cls.load(reference)
    from ._model import CrossModalAE

    if not isinstance(reference, CrossModalAE):
        raise TypeError(
            f"reference must be a trained CrossModalAE or the path of a saved one, got a "
            f"{type(reference).__name__}"
        )
    if not reference.is_trained_:
        raise ValueError("reference is an untrained model (random weights): train it first")
    left = reference.train_params_.get("pretrain_left")
    if left:
        raise ValueError(
            f"reference stopped while it pre-trained its anchor modality "
            f"{reference.anchor_modality_!r} ({left} epoch(s) left): its other modalities' "
            "networks are untrained; finish its training first"
        )
    return reference


def explicit_spec(spec: Modality, hidden: Any, image: bool) -> Modality:
    """A reference modality's spec with the hidden widths its networks were built with
    (``hidden``: the reference's default) made explicit, so that a new model's ``hidden``
    sizes only its new modalities (an image modality's default is its own)."""
    if spec.hidden is None and not image:
        return dataclasses.replace(spec, hidden=tuple(hidden))
    return spec


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
    the reference's specs (:func:`explicit_spec`), then the given ones it lacks."""
    given = {} if modalities is None else modalities
    if not isinstance(given, Mapping):
        raise ValueError(
            "modalities must be a dict {name: Modality(...)} of the modalities the reference "
            f"lacks, got a {type(given).__name__}"
        )
    specs: dict[str, Modality] = {}
    for name in [n for n in reference.mods if n in names]:
        md = reference.mods[name]
        spec = explicit_spec(md.spec, reference.init_params_["hidden"],
                             md.source.image_shape is not None)
        check_reference_spec(name, given.get(name), md.spec, spec)
        specs[name] = spec
    for name, spec in given.items():
        if name not in specs:
            specs[name] = spec
    return specs


def reference_params(
    cls: type[CrossModalAE], init_params: Mapping[str, Any], anchor: str | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    """The constructor's keywords for a model on a reference built with ``init_params``:
    its defaults, the reference's network sizes, ``params``, and the prior that freezes
    ``anchor`` (``None``: not known yet, no prior)."""
    sig = inspect.signature(cls.__init__)
    allowed = [k for k, p in sig.parameters.items()
               if p.kind is p.KEYWORD_ONLY and k != "prior"]
    for key, value in params.items():
        if key == "prior":
            raise ValueError(
                "prior is 'anchor:<name>' for a model built on a reference"
                + (f" (here 'anchor:{anchor}')" if anchor else "")
                + ": choose the reference modality it keeps with anchor="
            )
        if key not in allowed:
            near = nearest_names(key, allowed)
            raise TypeError(
                f"CrossModalAE.from_reference() got an unexpected keyword argument {key!r}"
                + (f"; did you mean {near[0]}=?" if near else "")
                + f" (it takes the constructor's keywords: {allowed})"
            )
        if key in _FIXED and value != init_params[key]:
            raise ValueError(
                f"{key}={value!r}: the reference's networks were built with "
                f"{key}={init_params[key]!r}, which the new model shares"
            )
    defaults = {k: sig.parameters[k].default for k in allowed}
    inherited = {k: init_params[k] for k in (*_FIXED, *_INHERITED)}
    prior = {} if anchor is None else {"prior": f"anchor:{anchor}"}
    return {**defaults, **inherited, **params, **prior}


def choose_anchor(
    anchor: str | None, shared: list[str], modalities: list[str], own: str | None
) -> str:
    """The reference modality that stays frozen: ``anchor`` if given (one of ``shared``,
    the reference's ``modalities`` that the data hold), else the reference's own anchor
    ``own`` or the only shared modality."""
    if anchor is None:
        if own in shared:
            return own
        if len(shared) == 1:
            return shared[0]
        raise ValueError(
            f"data hold the reference's modalities {shared}: choose the one whose networks "
            "stay frozen with anchor="
        )
    if anchor not in shared:
        where = "data" if anchor in modalities else "the reference"
        raise ValueError(
            f"anchor={anchor!r} is not in {where}: the anchor is one of the reference's "
            f"modalities that the data hold ({shared})"
        )
    return anchor


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
    )
    copied = (model.module.classifier is not None and reference.module.classifier is not None
              and model.label_categories_ == reference.label_categories_)
    if model.module.classifier is not None and reference.module.classifier is not None \
            and not copied:
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
        "anchor_trained": True, "reference_modalities": shared,
        "classifier_trained": bool(
            copied and reference.train_params_.get("classifier_trained", True)),
    }
    return model
