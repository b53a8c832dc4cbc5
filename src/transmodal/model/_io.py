"""Safe model files: tensors in safetensors, everything else in JSON. Nothing is pickled."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .._utils import (
    ENSEMBLE_CONFIG,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    atomic_directory,
    jsonable,
    names_are_numbers,
    user_stacklevel,
)
from .._version import __version__
from ..data._modality import Modality
from ..data._setup import _as_dict, features_differ, row_sums, warn_unnamed_columns
from ..nn._architectures import (
    available_architectures,
    check_architecture_options,
    option_changes,
)
from ..nn._likelihoods import PREPROCESSING_OPTIONS, available_likelihoods
from ._var import decode_var, encode_var

if TYPE_CHECKING:
    from ._model import CrossModalAE

WEIGHTS = MODEL_WEIGHTS
CONFIG = MODEL_CONFIG
FORMAT_VERSION = 1
# init_params every saved model has held since format_version 1 (later ones have defaults)
_REQUIRED_INIT_PARAMS = (
    "n_latent", "hidden", "dropout", "prior", "labels_key", "anchor_fraction",
    "validation_fraction", "seed",
)
# pair sets saved with the model: tensor-name prefix -> (model attribute, name in messages)
_PAIRS = {
    "anchors": ("anchors_", "anchor pairs"),
    "geometric": ("geometric_pairs_", "shape-based pseudo-pairs"),
}


def save_model(model: CrossModalAE, path, *, overwrite: bool = False) -> None:
    """Write ``model`` to directory ``path`` atomically (see :meth:`CrossModalAE.save`)."""
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    # a model loaded without its data passes on the saved record of its training cells
    carried = model._training_record
    if carried is not None:
        tensors.update(carried[0])
    else:
        for prefix, (pairs, _) in _PAIRS.items():
            for key, (ia, ib) in getattr(model, pairs).items():
                tensors[f"{prefix}.{key}.a"] = torch.from_numpy(np.ascontiguousarray(ia, dtype=np.int64))
                tensors[f"{prefix}.{key}.b"] = torch.from_numpy(np.ascontiguousarray(ib, dtype=np.int64))
        for name, mask in model.val_masks_.items():
            tensors[f"validation.{name}"] = torch.from_numpy(mask.astype(np.uint8))
        for name, md in model.mods.items():  # to find the cells again in another order
            tensors[f"cells.{name}"] = torch.from_numpy(cell_hashes(md.obs_names))
    # feature annotations (gene symbols, peak coordinates), for translations of a model
    # loaded without the data
    var_meta = {}
    for name, md in model.mods.items():
        if md.spec.obsm_key is not None or not len(md.adata.var.columns):
            continue
        var = md.feature_annotations()
        if var is None:
            warnings.warn(
                f"modality {name!r}: its AnnData's var no longer lists the model's "
                f"{len(md.var_names)} features (filtered or renamed in place since the "
                "model was built); their annotations (var columns) are not saved",
                UserWarning, stacklevel=user_stacklevel(),
            )
            continue
        var_meta[name], var_tensors = encode_var(var, f"var.{name}")
        tensors.update(var_tensors)
    history = None
    if model.history_ is not None and len(model.history_):
        h = model.history_.reset_index()
        history = {c: [jsonable(float(v)) for v in h[c]] for c in h.columns}
    config = {
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "transmodal_version": __version__,
        "init_params": model.init_params_,
        "modalities": {n: md.spec.to_dict() for n, md in model.mods.items()},
        # the order the networks are built in (the discriminator's classes): kept where a
        # JSON tool re-saves the file with its keys sorted
        "modality_order": list(model.mods),
        # the preprocessing the weights were fitted under (a spec's unset options follow
        # its likelihood's defaults, which a registered class can change before load)
        "preprocessing": {
            n: {k: v for k, v in md.spec.resolved(image=md.source.image_shape is not None)
                .items() if k in PREPROCESSING_OPTIONS}
            for n, md in model.mods.items()
        },
        # the options a registered architecture built the networks with (its defaults too,
        # which the class can change before load)
        "architecture_options": {
            n: md.spec.resolved_architecture_options()
            for n, md in model.mods.items() if md.spec.architecture is not None
        },
        "n_vars": {n: int(md.source.n_vars) for n, md in model.mods.items()},
        "image_shape": {
            n: list(md.source.image_shape)
            for n, md in model.mods.items()
            if md.source.image_shape is not None
        },
        "var_names": {n: [str(v) for v in md.var_names] for n, md in model.mods.items()},
        "var": var_meta,
        # the name of each var index (e.g. "gene_ids"), which translations keep
        "var_index_name": {
            n: md.adata.var.index.name for n, md in model.mods.items()
            if md.spec.obsm_key is None and isinstance(md.adata.var.index.name, str)
        },
        "label_categories": model.label_categories_,
        "image_spacing": model.image_spacing_,
        "integer_input": model.integer_input_,
        "batch_categories": model.batch_categories_,
        "obs_digest": model._digests() if carried is None else carried[1],
        # what the training cells hold (told from other cells of the same names on load)
        "values_fingerprint": (
            carried[2] if carried is not None
            else getattr(model, "_trained_values", None) or model._values_fingerprint()),
        "train_params": model.train_params_,
        "is_trained": model.is_trained_,
        "mixing_accuracy": jsonable(model.mixing_accuracy_),
        "disc_accuracy": jsonable(model.disc_accuracy_),
        "history": history,
    }
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "transmodal"})
        config["weights_sha256"] = _sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))


def _as_trained(
    specs: dict[str, Modality], config: Mapping[str, Any], path: Path
) -> dict[str, Modality]:
    """The saved specs, their likelihoods and architectures registered, with the
    preprocessing and the architecture options recorded at save time where the classes'
    defaults now resolve otherwise (warned)."""
    registries = (("likelihood", available_likelihoods), ("architecture", available_architectures))
    for name, spec in specs.items():
        for field_, available in registries:
            value = getattr(spec, field_)
            if isinstance(value, str) and value not in available():
                raise ValueError(
                    f"{path}: modality {name!r} was saved with {field_} {value!r}, which is "
                    f"not registered in this process: register its class with "
                    f"tm.register_{field_} before loading, on the command line with --import "
                    f"MODULE (registered: {available() or 'none'})"
                )
        if isinstance(spec.architecture, str):  # (the class may have changed since)
            try:
                check_architecture_options(spec.architecture, spec.architecture_options)
            except ValueError as err:
                raise ValueError(
                    f"{path / CONFIG}: modality {name!r} was trained with the options "
                    f"{spec.architecture_options} of architecture {spec.architecture!r}, "
                    f"which the class registered now does not take ({err}): register the "
                    "class the model was trained with (an option renamed since: rename it "
                    f"in 'architecture_options' of {CONFIG})"
                ) from None
        try:  # (before the spec's options are resolved below)
            spec.check(name)
        except ValueError as err:
            raise ValueError(f"{path / CONFIG}: modalities: {err}") from None
    out = dict(specs)
    images = config.get("image_shape") or {}
    for name, opts in (config.get("preprocessing") or {}).items():
        if name not in specs:
            continue
        now = specs[name].resolved(image=name in images)
        differ = {k: v for k, v in opts.items() if k in now and now[k] != v}
        if differ:
            warnings.warn(
                f"{path}: modality {name!r}: likelihood {specs[name].likelihood!r} now "
                f"defaults to {({k: now[k] for k in differ})}, but the model was trained "
                f"with {differ}: the model keeps what it was trained with (the likelihood's "
                "class registered now differs from the one it was saved with)",
                UserWarning, stacklevel=user_stacklevel(),
            )
            # (not as fields: an image spec refuses explicit normalize / log1p)
            out[name] = dataclasses.replace(
                specs[name], _extra={**specs[name]._extra, "trained": differ}
            )
    for name, trained in (config.get("architecture_options") or {}).items():
        spec = out[name]
        if spec.architecture is None:
            continue
        changes = option_changes(spec.architecture, spec.architecture_options, trained)
        if changes:  # (the class registered now has other defaults, or the config was edited)
            warnings.warn(
                f"{path}: modality {name!r}: the options of architecture "
                f"{spec.architecture!r} differ from those the model was trained with: "
                + "; ".join(changes),
                UserWarning, stacklevel=user_stacklevel(),
            )
        out[name] = dataclasses.replace(
            spec, _extra={**spec._extra, "architecture_options": trained}
        )
    return out


def _identity(path: Path) -> tuple[int, int, int, int]:
    """Device, inode, size and modification time of a file: another file saved under its
    name (a model directory replaced whole) has another identity."""
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in blocks of 1 MiB."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_kind(value: Any) -> str | None:
    """The JSON type of ``value`` ("integer" for whole numbers; ``None`` for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    kinds = ((int, "integer"), (float, "number"), (str, "string"), ((list, tuple), "array"),
             (dict, "object"))
    return next((kind for types, kind in kinds if isinstance(value, types)), type(value).__name__)


def _is_number(v: Any) -> bool:
    return _json_kind(v) in ("integer", "number")


def _object_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, dict) and all(check(x) for x in v.values())


def _array_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _or_null(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _positive_number(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v) and v > 0


def _trained_options(v: Any) -> bool:
    """An object of preprocessing options (``normalize``, ``log1p``, ``scale``), each true or
    false, as :func:`save_model` records them."""
    return isinstance(v, dict) and all(
        k in PREPROCESSING_OPTIONS and isinstance(x, bool) for k, x in v.items()
    )


def _distinct_strings(v: Any) -> bool:
    return _array_of(lambda x: isinstance(x, str))(v) and len(set(v)) == len(v)


# config.json fields: name -> (required, check, what the check wants)
_CONFIG_FIELDS: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "class": (True, lambda v: isinstance(v, str), "a string"),
    "init_params": (True, lambda v: isinstance(v, dict), "an object"),
    "modalities": (True, lambda v: isinstance(v, dict) and bool(v), "a non-empty object"),
    "modality_order": (False, _distinct_strings, "a list of distinct strings"),
    "n_vars": (True, _object_of(lambda v: _json_kind(v) == "integer"), "an object of integers"),
    "var_names": (
        True, _object_of(_array_of(lambda v: isinstance(v, str))), "an object of lists of strings"
    ),
    "label_categories": (
        True, _or_null(_distinct_strings), "null or a list of distinct strings"
    ),
    "batch_categories": (
        False, _object_of(_array_of(lambda v: isinstance(v, str))),
        "an object of lists of strings",
    ),
    "image_shape": (
        False, _object_of(_array_of(lambda v: _json_kind(v) == "integer")),
        "an object of lists of integers",
    ),
    "var": (False, _object_of(_array_of(lambda v: isinstance(v, dict))),
            "an object of lists of column descriptions"),
    "var_index_name": (False, _object_of(lambda v: isinstance(v, str)), "an object of strings"),
    "preprocessing": (
        False, _object_of(_trained_options),
        f"an object of objects of options {list(PREPROCESSING_OPTIONS)}, each true or false",
    ),
    "architecture_options": (
        False, _object_of(lambda v: isinstance(v, dict) and set(v) == {"encoder", "decoder"}
                          and all(isinstance(o, dict) for o in v.values())),
        "an object of {encoder: {...}, decoder: {...}} option objects",
    ),
    "image_spacing": (
        False, _or_null(_object_of(_array_of(_positive_number))),
        "null or an object of lists of positive numbers",
    ),
    "train_params": (False, _or_null(lambda v: isinstance(v, dict)), "null or an object"),
    "is_trained": (False, lambda v: isinstance(v, bool), "true or false"),
    "mixing_accuracy": (False, _or_null(_is_number), "null or a number"),
    "disc_accuracy": (False, _or_null(_is_number), "null or a number"),
    "history": (
        False, _or_null(_object_of(_array_of(_or_null(_is_number)))),
        "null or an object of lists of numbers",
    ),
    "weights_sha256": (
        False, lambda v: isinstance(v, str) and len(v) == 64, "a SHA-256 hex digest",
    ),
}


def _check_config(config: Any, cfg_path: Path) -> None:
    """Check the structure of a parsed ``config.json``: the fields a model is rebuilt from are
    present and of the right JSON type, with an entry for every modality."""
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got a JSON {_json_kind(config)}")
    version = config.get("format_version")
    if version != FORMAT_VERSION or _json_kind(version) != "integer":  # (not true, 1.0)
        raise ValueError(
            f"{cfg_path}: unsupported format_version {config.get('format_version')!r} "
            f"(this transmodal reads {FORMAT_VERSION})"
        )
    for field, (required, check, wanted) in _CONFIG_FIELDS.items():
        if field not in config:
            if required:
                raise ValueError(f"{cfg_path}: missing field {field!r}")
        elif not check(config[field]):
            raise ValueError(
                f"{cfg_path}: field {field!r} must be {wanted}, got {config[field]!r:.80}"
            )
    order = config.get("modality_order")
    if order is not None and sorted(order) != sorted(config["modalities"]):
        raise ValueError(
            f"{cfg_path}: field 'modality_order' {order} does not list the modalities "
            f"{sorted(config['modalities'])}"
        )
    for field in ("n_vars", "var_names"):
        missing = [n for n in config["modalities"] if n not in config[field]]
        if missing:
            raise ValueError(
                f"{cfg_path}: field {field!r} has no entry for modality {missing[0]!r}"
            )
    for name in config["modalities"]:  # (the sizes the networks are built from)
        n_vars, names = config["n_vars"][name], config["var_names"][name]
        if n_vars != len(names):
            raise ValueError(
                f"{cfg_path}: modality {name!r}: n_vars is {n_vars} but var_names lists "
                f"{len(names)} features"
            )
    for field in ("image_shape", "image_spacing", "preprocessing", "batch_categories", "var",
                  "var_index_name", "architecture_options"):
        unknown = [n for n in config.get(field) or {} if n not in config["modalities"]]
        if unknown:
            raise ValueError(
                f"{cfg_path}: field {field!r} has an entry for {unknown[0]!r}, which is not "
                f"a modality of the model ({list(config['modalities'])})"
            )
    batches = config.get("batch_categories") or {}
    for name, spec in config["modalities"].items():
        if isinstance(spec, dict) and spec.get("batch_key") is not None and name not in batches:
            raise ValueError(
                f"{cfg_path}: field 'batch_categories' has no entry for modality {name!r} "
                f"(its batch_key is {spec['batch_key']!r})"
            )
    for name, cats in batches.items():
        if not cats or len(set(cats)) != len(cats):
            raise ValueError(
                f"{cfg_path}: field 'batch_categories' of modality {name!r} must list distinct "
                f"batches, got {cats!r:.80}"
            )
    history = config.get("history")
    if history:
        epochs = history.get("epoch")
        if epochs is None or not all(_is_number(e) and float(e).is_integer() for e in epochs):
            raise ValueError(f"{cfg_path}: field 'history' needs an 'epoch' list of whole numbers")
        lengths = {k: len(v) for k, v in history.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"{cfg_path}: the lists in field 'history' differ in length ({lengths})"
            )


def _check_init_params(cls, params: dict[str, Any], cfg_path: Path) -> None:
    """Check saved ``init_params`` against ``cls``'s constructor: no unknown key, no missing
    required key, each value of the JSON type of the parameter's default, then the model's
    own parameter checks."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name != "check_data"
    }
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"{cfg_path}: unknown init_params key(s) {unknown} (known: {sorted(defaults)})"
        )
    missing = [k for k in _REQUIRED_INIT_PARAMS if k not in params]
    if missing:
        raise ValueError(f"{cfg_path}: init_params is missing key(s) {missing}")
    for key, value in params.items():
        wanted, got = _json_kind(defaults[key]), _json_kind(value)
        if wanted is not None and got != wanted and not (wanted == "number" and got == "integer"):
            raise ValueError(
                f"{cfg_path}: init_params.{key} must be a JSON {wanted}, got {value!r}"
            )
    try:
        cls._check_params(params)
    except ValueError as err:
        raise ValueError(f"{cfg_path}: init_params: {err}") from None


def read_config(path) -> dict:
    """Read and check a saved model's ``config.json`` (its structure; the values are checked
    when the model is rebuilt)."""
    path = Path(path)
    cfg_path, weights = path / CONFIG, path / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        hint = (
            f"; it holds an ensemble ({ENSEMBLE_CONFIG}): load it with tm.Ensemble.load"
            if (path / ENSEMBLE_CONFIG).is_file() else ""
        )
        raise FileNotFoundError(
            f"{path} is not a saved transmodal model ({CONFIG} and {WEIGHTS} needed){hint}"
        )
    config = read_json(cfg_path)
    _check_config(config, cfg_path)
    order = config.get("modality_order")  # (else, in files saved before it, the keys' order)
    if order is not None:
        config["modalities"] = {n: config["modalities"][n] for n in order}
    return config


def read_json(path: Path) -> Any:
    """The JSON value of a UTF-8 file; ``ValueError`` naming it where it is not JSON (also
    nested too deeply for Python's parser, or with an integer beyond its digit limit)."""
    try:
        # (utf-8-sig: a byte-order mark, as some Windows editors write, is read past)
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except RecursionError:
        raise ValueError(f"{path}: its JSON is nested too deeply for a config") from None
    except (ValueError, UnicodeDecodeError) as err:  # (JSONDecodeError; a long integer)
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _read_weights(weights: Path, checksum: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors in ``weights``; a file safetensors cannot read, or one whose SHA-256 is not
    the ``checksum`` recorded when it was saved, raises a ValueError naming it. Weights with
    NaN or infinite values (a training that diverged) load with a warning."""
    # (read twice, the second time from the page cache: reading the bytes once and parsing
    # them would hold the file twice in memory; the file must be the same both times)
    replaced = (
        "; or it was replaced while being read (another process saving a model there?): "
        "load it again"
    )
    try:
        before = _identity(weights)
        if checksum is not None and _sha256(weights) != checksum:
            raise ValueError(
                f"{weights} does not match the checksum recorded in {CONFIG} when it was "
                "saved: the file was changed or damaged since (save the model again or "
                f"restore the file){replaced}"
            )
        tensors = load_file(str(weights))
        if _identity(weights) != before:
            raise ValueError(f"{weights} was replaced while being read (another process "
                             "saving a model there?): load it again")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from None
    bad = [  # the networks' weights (saved var annotations may hold NaN: missing values)
        k for k, v in tensors.items()
        if k.startswith("module.") and v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        warnings.warn(
            f"{weights}: {len(bad)} tensor(s) hold NaN or infinite weights (e.g. {bad[0]!r}); "
            "the model's outputs will not be finite - it diverged while training (lower the "
            "learning rate) or was saved so",
            UserWarning, stacklevel=user_stacklevel(),
        )
    return tensors


def _stand_in(
    spec: Modality, var_names: list[str], image_shape: list[int] | None,
    var: pd.DataFrame | None = None, index_name: str | None = None,
) -> AnnData:
    """A cell-less AnnData shaped like a modality's data (``var``: its saved feature
    annotations, ``index_name`` its index's name), for a model loaded without them."""
    obs = pd.DataFrame(index=pd.Index([], dtype=object))
    if spec.obsm_key is not None:
        adata = AnnData(obs=obs)
        if image_shape:
            adata.obsm[spec.obsm_key] = np.zeros((0, *image_shape), dtype=np.float32)
        else:  # named columns, so translations into it and new cells' columns use the names
            adata.obsm[spec.obsm_key] = pd.DataFrame(
                np.zeros((0, len(var_names)), dtype=np.float32), index=obs.index,
                columns=pd.Index(var_names, dtype=object),
            )
        return adata
    if var is None:
        var = pd.DataFrame(index=pd.Index(var_names, dtype=object))
    var.index.name = index_name
    empty = sparse.csr_matrix((0, len(var_names)), dtype=np.float32)
    adata = AnnData(X=empty if spec.layer is None else None, obs=obs, var=var)
    for layer in (spec.layer, spec.total_layer):  # total_layer: the trials of binomial data
        if layer is not None:
            adata.layers[layer] = empty
    return adata


def _check_sizes(
    config: dict, specs: dict[str, Modality], tensors: dict[str, torch.Tensor], cfg_path: Path
) -> None:
    """Check the sizes in ``config.json`` that the networks are built from against the
    weights, before anything is built: every layer width appears as a dimension of a saved
    tensor, so none can exceed the largest one, and an image modality's features are its
    pixels. (An edited size would otherwise fail inside torch's allocator, or not at all
    until memory runs out.)"""
    largest = max(
        (max(t.shape, default=1) for k, t in tensors.items() if k.startswith("module.")),
        default=0,
    )
    params = config["init_params"]
    images = config.get("image_shape") or {}
    widths = {"init_params.n_latent": [params.get("n_latent")],
              "init_params.n_private": [params.get("n_private", 0)]}
    for name, spec in specs.items():
        if spec.hidden:
            widths[f"modalities.{name}.hidden"] = list(spec.hidden)
        elif name not in images and spec.architecture is None:
            # (image modalities' default is their own channels; an architecture's sizes are
            # its options)
            widths["init_params.hidden"] = params.get("hidden") or []
    for field, values in widths.items():
        bad = [v for v in values if isinstance(v, int) and v > largest]
        if bad:
            raise ValueError(
                f"{cfg_path}: {field} = {bad[0]} is larger than any dimension of the saved "
                f"weights ({largest}); the config was edited or belongs to other weights"
            )
    for name, shape in images.items():
        if not shape or min(shape) < 1 or math.prod(shape) != config["n_vars"].get(name):
            raise ValueError(
                f"{cfg_path}: image_shape[{name!r}] = {shape} does not give its n_vars "
                f"({config['n_vars'].get(name)}) pixels of positive size"
            )


def check_given_data(model: CrossModalAE, config: dict, what: str = "the saved model") -> None:
    """``ValueError`` unless the data given to :func:`load_model` (set up in ``model.mods``)
    have the saved images' shape and features (those of the modalities ``config`` names:
    a reference model's for :meth:`CrossModalAE.from_reference`)."""
    for name, md in model.mods.items():
        if name not in config["n_vars"]:
            continue
        saved_shape = config.get("image_shape", {}).get(name)
        given_shape = None if md.source.image_shape is None else list(md.source.image_shape)
        if saved_shape != given_shape:
            raise ValueError(
                f"modality {name!r}: {what} was trained on images of shape {saved_shape}; "
                f"the given data hold {given_shape}"
            )
        saved_n = config["n_vars"][name]
        differ = features_differ(md.var_names, config["var_names"][name], md.spec)
        warn_unnamed_columns(md.var_names, config["var_names"][name], md.spec, name)
        if md.source.n_vars != saved_n or differ:
            detail = differ or f"{md.source.n_vars} features given, {saved_n} saved"
            raise ValueError(
                f"modality {name!r}: var_names of the given data do not match {what} "
                f"({detail})"
            )


def _module_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The saved tensors of the networks, named as in the module's ``state_dict``."""
    return {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}


def _check_architecture(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                        path: Path, saved_version: Any = None,
                        custom: Mapping[str, str] | None = None) -> None:
    """``ValueError`` unless the saved network tensors are those of ``module`` (built from
    the config on the meta device, which allocates nothing), by name and shape: an edited
    size in the config would otherwise allocate its networks (gigabytes from a few edited
    numbers) before the weights were found not to fit. Buffers added since format_version 1
    that a file saved before them lacks are added to ``tensors`` with the value it meant:
    no markers' statistics, every class open to and held by every modality. ``custom``:
    the registered architecture of each modality built with one (its class may have
    changed since)."""
    expected = module.state_dict()
    for key, built in expected.items():
        if f"module.{key}" in tensors:
            continue
        if key in ("marker_mean", "marker_std") and built.numel() == 0:
            tensors[f"module.{key}"] = torch.zeros(0, device="cpu")  # (not the build's meta)
        elif key in ("class_mask", "held_classes"):
            tensors[f"module.{key}"] = torch.ones(built.shape, dtype=torch.bool, device="cpu")
    state = _module_state(tensors)
    shapes = [
        f"{k}: {tuple(v.shape)} saved, {tuple(expected[k].shape)} built"
        for k, v in state.items() if k in expected and v.shape != expected[k].shape
    ]
    kinds = [  # (a float saved for an integer counter, or integers for weights)
        f"{k}: {v.dtype} saved, {expected[k].dtype} built"
        for k, v in state.items()
        if k in expected and v.is_floating_point() != expected[k].is_floating_point()
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if not (shapes or kinds or missing or unexpected):
        return
    # e.g. a hand-edited config (hidden widths, batches), or networks built differently
    changed = [n for n in custom or {}
               if any(k.split(".")[1:2] == [n] for k in shapes + kinds + missing + unexpected)]
    why = (
        f"modality {changed[0]!r} was built by architecture {custom[changed[0]]!r} as "
        "registered in this process, whose networks differ from those saved: register the "
        "class (and code) the model was trained with"
        if changed else
        f"the model was saved by transmodal {saved_version} (this is {__version__}), whose "
        "networks differ, or its config was edited"
        if saved_version is not None and saved_version != __version__ else
        f"its config was edited, or it was saved by a development version of transmodal "
        f"{__version__} whose networks differed"
    )
    detail = (f"tensor shapes differ: {'; '.join(shapes[:2])}" if shapes
              else f"tensor types differ: {'; '.join(kinds[:2])}" if kinds
              else f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    raise ValueError(
        f"{path / WEIGHTS} does not match the architecture in {CONFIG} ({detail}): {why}"
    )


def _with_stand_ins(
    data, specs: dict[str, Modality], config: dict, tensors: dict[str, torch.Tensor],
    cfg_path: Path,
) -> tuple[Any, tuple[str, ...]]:
    """``data`` completed with cell-less stand-ins for the modalities it lacks (``None`` =
    all; a dict's entry ``None`` = that one); returns the data and the names of the
    stand-ins."""
    if isinstance(data, Mapping) and any(v is None for v in data.values()):
        data = {k: v for k, v in data.items() if v is not None or k not in specs}
    adatas, _ = _as_dict({} if data is None else data, specs)
    unknown = [n for n in adatas if n not in specs]
    missing = tuple(n for n in specs if n not in adatas)
    # other modalities beside all of the model's are ignored, as by the constructor (a
    # MuData may hold any); beside a lacking one, a dict's may be it misspelt
    if unknown and missing and isinstance(data, Mapping):
        raise ValueError(
            f"data holds modality {unknown[0]!r}, which the model does not have, and lacks "
            f"its modality {missing[0]!r} (the model's modalities: {list(specs)}); pass the "
            "model's modalities by their names"
        )
    if not missing:
        return data, ()
    # a MuData's pairing maps only matter for training, which needs every modality's cells
    out = dict(adatas)
    for name in missing:
        var_names = config["var_names"][name]
        columns = (config.get("var") or {}).get(name)
        out[name] = _stand_in(
            specs[name], var_names, config.get("image_shape", {}).get(name),
            None if columns is None else decode_var(
                columns, tensors, f"var.{name}", var_names, f"{cfg_path}: var[{name!r}]"
            ),
            (config.get("var_index_name") or {}).get(name),
        )
    return out, missing


def _saved_pairs(
    tensors: dict[str, torch.Tensor], prefix: str, key: str, n_obs: dict[str, int], path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The saved row pairs ``{prefix}.{key}.a/.b``, checked against the cells they index."""
    names = key.split("|")
    where = f"{path / WEIGHTS}: {prefix}.{key}"
    if len(names) != 2 or any(n not in n_obs for n in names):
        raise ValueError(f"{where}: not a pair of this model's modalities {list(n_obs)}")
    rows = []
    for side, name in zip("ab", names):
        t = tensors.get(f"{prefix}.{key}.{side}")
        if t is None or t.ndim != 1 or t.dtype != torch.int64:
            raise ValueError(f"{where}.{side}: missing or not a 1-d int64 tensor")
        r = t.numpy()
        if len(r) and (r.min() < 0 or r.max() >= n_obs[name]):
            raise ValueError(f"{where}.{side}: rows outside modality {name!r}'s {n_obs[name]} cells")
        rows.append(r)
    if len(rows[0]) != len(rows[1]):
        raise ValueError(f"{where}: .a and .b differ in length ({len(rows[0])}, {len(rows[1])})")
    return rows[0], rows[1]


def cell_hashes(names) -> np.ndarray:
    """A 64-bit hash of each cell name (pandas' stable hash), as int64."""
    return pd.util.hash_array(np.asarray(names, dtype=object)).view(np.int64)


def _reordering(
    model: CrossModalAE, tensors: dict[str, torch.Tensor]
) -> dict[str, np.ndarray] | None:
    """Where each saved training cell is among the given cells, per modality, when the
    given cells are the training cells in another order (the same names, each once);
    ``None`` otherwise (or for files saved without the cells' hashes)."""
    where = {}
    for name, md in model.mods.items():
        saved = tensors.get(f"cells.{name}")
        if saved is None or saved.ndim != 1 or len(saved) != md.n_obs:
            return None
        given = pd.Index(cell_hashes(md.obs_names))
        if not given.is_unique:
            return None
        pos = given.get_indexer(saved.numpy())
        if (pos < 0).any():
            return None
        where[name] = pos
    return where


def _saved_mask(tensors: dict[str, torch.Tensor], name: str, n: int, path: Path) -> np.ndarray:
    """The saved validation mask of modality ``name``, checked to cover its ``n`` cells."""
    t = tensors.get(f"validation.{name}")
    if t is None or tuple(t.shape) != (n,) or t.dtype != torch.uint8 or bool((t > 1).any()):
        raise ValueError(
            f"{path / WEIGHTS}: validation.{name} is missing or does not hold one 0 / 1 (uint8) "
            f"value per cell ({n})"
        )
    return t.numpy().astype(bool)


def _other_values(model: CrossModalAE, saved: Any) -> str | None:
    """The first modality whose cells of the saved fingerprint's names hold other values
    than those recorded (:meth:`CrossModalAE._values_fingerprint`), else ``None``."""
    if not isinstance(saved, Mapping):
        return None
    for name, record in saved.items():
        md = model.mods.get(name)
        if md is None or not md.n_obs or not isinstance(record, Mapping):
            continue
        sums = row_sums(md, [str(v) for v in record.get("names") or []])
        expected = record.get("sums")
        if sums is None or expected is None or np.shape(sums) != np.shape(expected):
            return name
        if not np.allclose(sums, np.asarray(expected, dtype=np.float64), rtol=1e-6,
                           atol=1e-9, equal_nan=True):
            return name
    return None


def load_model(cls, path, data=None, *, check_data: bool = True) -> CrossModalAE:
    """Rebuild a model from ``path`` around ``data`` (see :meth:`CrossModalAE.load`)."""
    path = Path(path)
    config = read_config(path)
    if config["class"] != cls.__name__:
        raise ValueError(f"{path} holds a {config['class']!r} model, not a {cls.__name__!r}")
    _check_init_params(cls, config["init_params"], path / CONFIG)
    try:
        specs = {n: Modality.from_dict(d, name=n) for n, d in config["modalities"].items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG}: modalities: {err}") from None
    specs = _as_trained(specs, config, path)
    tensors = _read_weights(path / WEIGHTS, config.get("weights_sha256"))
    _check_sizes(config, specs, tensors, path / CONFIG)
    data, stand_ins = _with_stand_ins(data, specs, config, tensors, path / CONFIG)
    model = cls.__new__(cls)

    def check_module(module: torch.nn.Module) -> None:  # (model.mods is set by then)
        check_given_data(model, config)
        _check_architecture(module, tensors, path, config.get("transmodal_version"),
                            {n: sp.architecture for n, sp in specs.items() if sp.architecture})

    model._setup(
        data,
        specs,
        config["init_params"],
        label_categories=config["label_categories"],
        check_data=check_data,
        labels_optional=True,
        allow_empty=stand_ins,
        batch_categories=config.get("batch_categories") or {},
        trained=True,
        check_module=check_module,
    )
    model.module.load_state_dict(_module_state(tensors))  # (shapes checked before it was built)
    model.module.eval()
    # the training cells' units (integers or not), against which the cells given here and
    # later are checked (files saved before it was recorded: no check)
    model.integer_input_ = {
        n: bool(v) for n, v in (config.get("integer_input") or {}).items() if n in model.mods
    }
    for md in model.mods.values():
        model._warn_other_units(md.source, md.integers)
    same_data = model._digests() == config.get("obs_digest")
    # the training cells in another order (e.g. sorted by a label): the saved pairs and
    # split, stored by row, are moved to where each cell now is
    moved = None if same_data or stand_ins else _reordering(model, tensors)
    same_data = same_data or moved is not None
    # ... unless other values carry the training cells' names (another draw, another run's
    # data; files saved before the fingerprint: the names decide)
    other_values = same_data and not stand_ins and _other_values(
        model, config.get("values_fingerprint"))
    if other_values:
        same_data, moved = False, None
    elif same_data and not stand_ins:  # (the cells as trained, whatever is edited later)
        model._trained_values = config.get("values_fingerprint")
    record = {
        k: v for k, v in tensors.items() if k.split(".")[0] in (*_PAIRS, "validation", "cells")
    }
    if stand_ins:  # not trainable: a save passes on what the file says of the training cells
        model._training_record = (record, config.get("obs_digest"),
                                  config.get("values_fingerprint"))
    elif (
        same_data
        and any(names_are_numbers(md.obs_names) for md in model.mods.values())
        and any(v.numel() and (not k.startswith("validation.") or bool(v.any()))
                for k, v in record.items() if not k.startswith("cells."))
    ):
        warnings.warn(
            "the cells given to load() are named by numbers, as AnnData's default row numbers "
            "'0', '1', ...: whether they are the cells the model was trained on cannot be told "
            "from their names, so the saved anchor pairs, pseudo-pairs and validation split "
            "are taken for them as saved; if these are other cells, set real cell names "
            "(e.g. barcodes) as obs_names before training further",
            UserWarning, stacklevel=user_stacklevel(),
        )
    model.anchors_, model.geometric_pairs_, model.val_masks_ = {}, {}, {}
    if same_data:
        n_obs = {n: md.n_obs for n, md in model.mods.items()}
        for prefix, (pairs, _) in _PAIRS.items():
            saved = {k.split(".")[1] for k in tensors if k.startswith(f"{prefix}.")}
            # in the constructor's order (it sets the training batches' draws)
            order = [f"{a}|{b}" for a, b in combinations(model.mods, 2)]
            for key in [k for k in order if k in saved] + sorted(saved - set(order)):
                ia, ib = _saved_pairs(tensors, prefix, key, n_obs, path)
                if moved is not None:
                    a, b = key.split("|")
                    ia, ib = moved[a][ia], moved[b][ib]
                getattr(model, pairs)[key] = (ia, ib)
        for name in model.mods:
            mask = _saved_mask(tensors, name, n_obs[name], path)
            if moved is not None:
                placed = np.zeros_like(mask)
                placed[moved[name]] = mask
                mask = placed
            model.val_masks_[name] = mask
    else:
        dropped = [
            what
            for prefix, (_, what) in _PAIRS.items()
            if any(k.startswith(f"{prefix}.") for k in tensors)
        ]
        if dropped and not stand_ins:  # without every modality there is no training anyway
            unrecorded = ("" if any(k.startswith("cells.") for k in tensors) else
                          " (this file, saved before the cells' names were recorded, knows its "
                          "cells only by their order: if they are the training cells in another "
                          "order, give them in the order they were trained in)")
            if other_values:
                unrecorded = (f" (modality {other_values!r}: its cells carry the training "
                              "cells' names but hold other values)")
            warnings.warn(
                "the data given to load() are not the cells the model was trained on; the saved "
                f"{' and '.join(dropped)} are dropped (further training uses no anchor loss)"
                f"{unrecorded}",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        model.val_masks_ = {n: np.zeros(md.n_obs, dtype=bool) for n, md in model.mods.items()}
        # named if this model trains further (it then has no validation cells)
        model._split_dropped = any(
            bool(v.any()) for k, v in tensors.items() if k.startswith("validation.")
        )
    model.train_params_ = config.get("train_params") or {}
    model.is_trained_ = bool(config.get("is_trained"))
    if config.get("image_spacing") is not None:  # (what it was trained with)
        model.image_spacing_ = {n: list(v) for n, v in config["image_spacing"].items()
                                if n in model.mods}
    for key in ("mixing_accuracy", "disc_accuracy"):
        if config.get(key) is not None:
            setattr(model, f"{key}_", float(config[key]))
    if config.get("history"):
        history = pd.DataFrame(config["history"])
        history["epoch"] = history["epoch"].astype(int)
        model.history_ = history.set_index("epoch")
    # (the weights' checksum: an ensemble's manifest lists those of its members; whether
    # the data are the cells it was trained on: a checkpoint resumes on them only)
    model._weights_sha256 = config.get("weights_sha256")
    model._training_cells = bool(same_data) and not stand_ins
    return model
