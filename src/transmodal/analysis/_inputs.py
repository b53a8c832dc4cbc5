"""Input helpers shared by the analysis functions: matrices and labels from AnnData or arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._utils import align_to_cells, is_mudata


def get_matrix(data: Any, layer: str | None, name: str):
    """``(matrix, feature_names)`` from an AnnData (``X`` or ``layers[layer]``) or an array.

    Sparse matrices stay sparse (a backed one is read into memory); dense input becomes a
    2-D numpy array.  ``feature_names`` is ``None`` for arrays.
    """
    if is_mudata(data):
        raise ValueError(
            f"{name}: a MuData holds one matrix per modality; pass one of them, e.g. "
            f"mdata[{next(iter(data.mod), 'rna')!r}]"
        )
    if isinstance(data, AnnData):
        if layer is None:
            X = data.X
        elif layer in data.layers:
            X = data.layers[layer]
        else:
            raise ValueError(f"{name}: layer {layer!r} not found; layers are {list(data.layers)}")
        if X is None:
            raise ValueError(f"{name}: the AnnData has no X")
        names = np.asarray(data.var_names.astype(str))
    else:
        if layer is not None:
            raise ValueError(f"{name}: layer={layer!r} needs an AnnData, got {type(data).__name__}")
        X, names = data, None
    if hasattr(X, "to_memory"):  # a backed sparse matrix (anndata's CSR / CSC dataset)
        X = X.to_memory()
    if not sparse.issparse(X):
        X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (cells x features) matrix, got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name}: the matrix is empty (shape {X.shape})")
    return X, names


def get_labels(
    data: Any, labels: Any, n: int, name: str, *, allow_missing: bool = False
) -> np.ndarray:
    """Labels per cell: an ``obs`` column of ``data`` (when ``labels`` is a string and
    ``data`` an AnnData) or an array-like of length ``n``; missing values are refused
    unless ``allow_missing``."""
    annotated = isinstance(data, AnnData) or is_mudata(data)
    if isinstance(labels, str) and annotated:
        if labels not in data.obs:
            hint = (
                " (a MuData's global obs: columns of its modalities appear there as "
                "'<modality>:<column>' after mdata.pull_obs())" if is_mudata(data) else ""
            )
            raise ValueError(
                f"{name}: obs key {labels!r} not found; obs columns are {list(data.obs)}{hint}"
            )
        values = data.obs[labels].to_numpy()
    else:
        if isinstance(labels, str):
            raise ValueError(f"{name}: {labels!r} is an obs key, but the data is not an AnnData")
        if annotated:
            labels = align_to_cells(labels, data.obs_names, name)
        values = np.asarray(labels)
        if values.ndim != 1:
            raise ValueError(f"{name}: labels must be 1-D, got shape {values.shape}")
    if len(values) != n:
        raise ValueError(f"{name}: {len(values)} labels for {n} cells")
    missing = pd.isna(values)
    if missing.any() and not allow_missing:
        raise ValueError(f"{name}: {int(missing.sum())} cells have no label")
    return np.asarray(values, dtype=object)


def get_latent(data: Any, use_rep: str | None, name: str) -> np.ndarray:
    """Latent coordinates as a finite float64 array: ``data.obsm[use_rep]`` (``X`` when
    ``use_rep`` is ``None``) for an AnnData, ``data.obsm[use_rep]`` for a MuData (the joint
    embedding of :func:`~transmodal.tools.integrate`), else ``data`` itself."""
    if is_mudata(data):
        if use_rep is None or use_rep not in data.obsm:
            raise ValueError(
                f"{name}: a MuData's latent is an obsm entry (use_rep=, e.g. 'X_transmodal' "
                f"of tm.tl.integrate); its obsm keys are {list(data.obsm)} - or pass one "
                "modality, e.g. mdata['rna']"
            )
        z = data.obsm[use_rep]
    elif isinstance(data, AnnData):
        if use_rep is None:
            z = data.X
        elif use_rep in data.obsm:
            z = data.obsm[use_rep]
        else:
            raise ValueError(f"{name}: obsm key {use_rep!r} not found; obsm keys are {list(data.obsm)}")
    else:
        z = data
    z = z.toarray() if sparse.issparse(z) else np.asarray(z)
    if z.dtype.kind not in "biuf":
        raise ValueError(
            f"{name}: expected numeric (cells x dims) latent coordinates (an AnnData's obsm "
            f"entry, a MuData's or an array), got values of dtype {z.dtype} from a "
            f"{type(data).__name__}"
        )
    if z.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (cells x dims) latent, got shape {z.shape}")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise ValueError(f"{name}: the latent holds NaN or infinite values")
    return z
