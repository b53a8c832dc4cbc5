"""Safe model files: tensors in safetensors, everything else in JSON. Nothing is pickled."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from .._utils import atomic_directory, jsonable
from ..data._modality import Modality

if TYPE_CHECKING:
    from ._model import CrossModalAE

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT_VERSION = 1
# pair sets saved with the model: tensor-name prefix -> (model attribute, name in messages)
_PAIRS = {
    "anchors": ("anchors_", "anchor pairs"),
    "geometric": ("geometric_pairs_", "shape-based pseudo-pairs"),
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("transmodal")
    except Exception:  # pragma: no cover - running from a source tree
        return "unknown"


def save_model(model: CrossModalAE, path, *, overwrite: bool = False) -> None:
    """Write ``model`` to directory ``path`` atomically (see :meth:`CrossModalAE.save`)."""
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in model.module.state_dict().items()}
    for prefix, (pairs, _) in _PAIRS.items():
        for key, (ia, ib) in getattr(model, pairs).items():
            tensors[f"{prefix}.{key}.a"] = torch.from_numpy(np.ascontiguousarray(ia, dtype=np.int64))
            tensors[f"{prefix}.{key}.b"] = torch.from_numpy(np.ascontiguousarray(ib, dtype=np.int64))
    for name, mask in model.val_masks_.items():
        tensors[f"validation.{name}"] = torch.from_numpy(mask.astype(np.uint8))
    history = None
    if model.history_ is not None:
        h = model.history_.reset_index()
        history = {c: [jsonable(float(v)) for v in h[c]] for c in h.columns}
    config = {
        "format_version": FORMAT_VERSION,
        "class": type(model).__name__,
        "transmodal_version": _version(),
        "init_params": model.init_params_,
        "modalities": {n: md.spec.to_dict() for n, md in model.mods.items()},
        "n_vars": {n: int(md.source.n_vars) for n, md in model.mods.items()},
        "image_shape": {
            n: list(md.source.image_shape)
            for n, md in model.mods.items()
            if md.source.image_shape is not None
        },
        "var_names": {n: [str(v) for v in md.var_names] for n, md in model.mods.items()},
        "label_categories": model.label_categories_,
        "obs_digest": model._digests(),
        "train_params": model.train_params_,
        "is_trained": model.is_trained_,
        "history": history,
    }
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "transmodal"})
        (tmp / CONFIG).write_text(json.dumps(config, indent=1))


def read_config(path) -> dict:
    """Read and check a saved model's ``config.json``."""
    path = Path(path)
    cfg_path, weights = path / CONFIG, path / WEIGHTS
    if not cfg_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{path} is not a saved transmodal model ({CONFIG} and {WEIGHTS} needed)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path} is not valid JSON: {err}") from None
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path}: unsupported format_version {config.get('format_version')!r} "
            f"(this transmodal reads {FORMAT_VERSION})"
        )
    return config


def load_model(cls, path, data, *, check_data: bool = True) -> CrossModalAE:
    """Rebuild a model from ``path`` around ``data`` (see :meth:`CrossModalAE.load`)."""
    path = Path(path)
    config = read_config(path)
    if config.get("class") != cls.__name__:
        raise ValueError(f"{path} holds a {config.get('class')!r} model, not a {cls.__name__!r}")
    specs = {n: Modality.from_dict(d, name=n) for n, d in config["modalities"].items()}
    model = cls.__new__(cls)
    model._setup(
        data,
        specs,
        config["init_params"],
        label_categories=config["label_categories"],
        check_data=check_data,
        labels_optional=True,
    )
    for name, md in model.mods.items():
        saved_shape = config.get("image_shape", {}).get(name)
        given_shape = None if md.source.image_shape is None else list(md.source.image_shape)
        if saved_shape != given_shape:
            raise ValueError(
                f"modality {name!r}: the model was saved for images of shape {saved_shape}; "
                f"the given data hold {given_shape}"
            )
        expected = config["var_names"][name]
        if md.source.n_vars != config["n_vars"][name] or (
            md.spec.obsm_key is None and [str(v) for v in md.var_names] != expected
        ):
            raise ValueError(
                f"modality {name!r}: var_names of the given data do not match the saved model "
                f"({md.source.n_vars} features given, {config['n_vars'][name]} saved)"
            )
    tensors = load_file(str(path / WEIGHTS))
    state = {k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")}
    missing, unexpected = model.module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path / WEIGHTS} does not match the architecture in {CONFIG} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.module.eval()
    same_data = model._digests() == config.get("obs_digest")
    model.anchors_, model.geometric_pairs_, model.val_masks_ = {}, {}, {}
    if same_data:
        for prefix, (pairs, _) in _PAIRS.items():
            for key in {k.split(".")[1] for k in tensors if k.startswith(f"{prefix}.")}:
                getattr(model, pairs)[key] = (
                    tensors[f"{prefix}.{key}.a"].numpy(),
                    tensors[f"{prefix}.{key}.b"].numpy(),
                )
        for name in model.mods:
            model.val_masks_[name] = tensors[f"validation.{name}"].numpy().astype(bool)
    else:
        dropped = [
            what
            for prefix, (_, what) in _PAIRS.items()
            if any(k.startswith(f"{prefix}.") for k in tensors)
        ]
        if dropped:
            warnings.warn(
                "the data given to load() are not the cells the model was trained on; the saved "
                f"{' and '.join(dropped)} are dropped (further training uses no anchor loss)",
                UserWarning,
                stacklevel=3,
            )
        model.val_masks_ = {n: np.zeros(md.n_obs, dtype=bool) for n, md in model.mods.items()}
    model.train_params_ = config.get("train_params") or {}
    model.is_trained_ = bool(config.get("is_trained"))
    if config.get("history"):
        history = pd.DataFrame(config["history"])
        history["epoch"] = history["epoch"].astype(int)
        model.history_ = history.set_index("epoch")
    return model
