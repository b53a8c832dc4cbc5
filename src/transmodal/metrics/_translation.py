"""Translation quality: per-cell Pearson correlation of predicted vs observed profiles."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse

from ._chunked import axis_names, resolve_chunk_size, unwrap_anndata

Transform = Callable[[np.ndarray], np.ndarray]


def _as_matrix(a: Any, name: str) -> np.ndarray | sparse.csr_matrix:
    """Validate a 2-D dense or sparse matrix (or an AnnData's ``X``); sparse input becomes
    CSR (row slicing)."""
    a = unwrap_anndata(a, name)
    if sparse.issparse(a):
        if a.ndim != 2:
            raise ValueError(f"{name} must be 2-D; got shape {a.shape}")
        return sparse.csr_matrix(a)
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x features); got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr


def _dense_rows(
    a: np.ndarray | sparse.csr_matrix,
    start: int,
    stop: int,
    name: str,
    transform: Transform | None,
    *,
    missing: bool = False,
) -> np.ndarray:
    """Rows ``start:stop`` as a float64 dense block, validated and transformed (with
    ``missing``, NaN entries are unmeasured values and stay NaN)."""
    block = a[start:stop]
    block = block.toarray() if sparse.issparse(block) else block
    block = np.array(block, dtype=np.float64)  # private copy: transform may work in place
    nan = np.isnan(block) if missing else None
    if not np.isfinite(block[~nan] if missing else block).all():
        what = "infinite" if missing else "NaN or infinite"
        # (obs / train: where NaN marks unmeasured entries, missing=True skips them)
        hint = ("; if NaN marks unmeasured entries (e.g. regions without coverage), pass "
                "missing=True" if not missing and name != "pred" and np.isnan(block).any()
                else "")
        raise ValueError(f"{name} contains {what} values (rows {start}:{stop}){hint}")
    if transform is not None:
        out = np.asarray(transform(block), dtype=np.float64)
        if out.shape != block.shape:
            raise ValueError(
                f"transform must preserve the shape; got {out.shape} from {block.shape}"
            )
        if not np.isfinite(out[~nan] if missing else out).all():
            raise ValueError(f"transform produced NaN or infinite values on {name}")
        if missing:
            out[nan] = np.nan
        block = out
    return block


def _row_pearson(p: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Row-wise Pearson correlation of two equally shaped blocks (NaN if a row is constant).
    NaN entries of ``o`` (unmeasured values) are left out of their row's correlation."""
    unmeasured = np.isnan(o)
    if unmeasured.any():
        w = (~unmeasured).astype(np.float64)
        o = np.where(unmeasured, 0.0, o)
        n = w.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            pc = (p - (p * w).sum(axis=1, keepdims=True) / n) * w
            oc = (o - o.sum(axis=1, keepdims=True) / n) * w
        num = np.einsum("ij,ij->i", pc, oc)
        den = np.sqrt(np.einsum("ij,ij->i", pc, pc) * np.einsum("ij,ij->i", oc, oc))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.clip(num / den, -1.0, 1.0)
        lo, hi = np.where(unmeasured, np.inf, o).min(1), np.where(unmeasured, -np.inf, o).max(1)
        plo = np.where(unmeasured, np.inf, p).min(1)
        phi = np.where(unmeasured, -np.inf, p).max(1)
        # fewer than 2 measured values, or either row constant over them (exactly: the
        # centred values of a constant row are rounding errors, not zeros)
        r[~(den > 0) | (lo == hi) | (plo == phi)] = np.nan
        return r
    const = (p.max(axis=1) == p.min(axis=1)) | (o.max(axis=1) == o.min(axis=1))
    pc = p - p.mean(axis=1, keepdims=True)
    oc = o - o.mean(axis=1, keepdims=True)
    num = np.einsum("ij,ij->i", pc, oc)
    den = np.sqrt(np.einsum("ij,ij->i", pc, pc) * np.einsum("ij,ij->i", oc, oc))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r = np.clip(r, -1.0, 1.0)
    r[const | ~(den > 0)] = np.nan
    return r


def _check_features(n_features: int) -> None:
    if n_features < 2:
        raise ValueError(
            f"per-cell Pearson correlation needs at least 2 features; got {n_features}"
        )


def _with_layer(data: Any, layer: str | None, name: str) -> Any:
    """``data``, or for ``layer`` an AnnData of ``data.layers[layer]`` (``data``'s names)."""
    if layer is None:
        return data
    if not isinstance(data, AnnData):
        raise ValueError(f"{name}: layer={layer!r} needs an AnnData, got {type(data).__name__}")
    if layer not in data.layers:
        raise ValueError(f"{name}: layer {layer!r} not found; layers are {list(data.layers)}")
    return AnnData(data.layers[layer], obs=pd.DataFrame(index=data.obs_names),
                   var=pd.DataFrame(index=data.var_names))


def _align_features(ref: Any, other: Any, *, names: tuple[str, str], cells: bool) -> Any:
    """``other`` with ``ref``'s features in ``ref``'s order, where both name their features
    (AnnData ``var_names``, DataFrame columns); with ``cells``, their cells too must be the
    same rows where both name them."""
    ref_name, other_name = names
    if cells:
        a, b = axis_names(ref, "obs"), axis_names(other, "obs")
        if a is not None and b is not None and not a.equals(b):
            raise ValueError(
                f"{ref_name} and {other_name} name different cells (or the same in another "
                f"order): rows must be the same cells; reorder {other_name} to "
                f"{ref_name}'s obs_names / index"
            )
    a, b = axis_names(ref, "var"), axis_names(other, "var")
    if a is None or b is None or a.equals(b):
        return other
    for label, names_ in ((ref_name, a), (other_name, b)):
        if not names_.is_unique:  # reordering by name needs each name once
            raise ValueError(
                f"{label} names some features twice (e.g. {names_[names_.duplicated()][0]!r}) "
                f"and {ref_name} / {other_name} list them in different orders; make the names "
                "unique first (AnnData.var_names_make_unique())"
            )
    missing = a.difference(b)
    if len(missing):
        raise ValueError(
            f"{len(missing)} feature(s) of {ref_name} are not among {other_name}'s features "
            f"(e.g. {list(missing[:3])})"
        )
    return other[:, a] if hasattr(other, "var_names") else other.loc[:, a]


def translation_pearson(
    pred: Any,
    obs: Any,
    *,
    transform: Transform | None = None,
    chunk_size: int | None = None,
    missing: bool = False,
    layer: str | None = None,
) -> np.ndarray:
    """Per-cell Pearson correlation between translated and observed profiles.

    Parameters
    ----------
    pred
        Predicted profiles ``(n_cells, n_features)``, dense or scipy sparse, or an AnnData
        (e.g. the output of :meth:`~transmodal.CrossModalAE.translate`).
    obs
        Observed profiles of the same shape, dense or scipy sparse (densified one chunk
        at a time), an AnnData or a DataFrame. Where both name their features (AnnData
        ``var_names``, DataFrame columns), ``obs`` is reordered to ``pred``'s; where both
        name their cells, the names must be the same rows.
    transform
        Optional callable applied to both dense chunks before correlating (e.g.
        :func:`numpy.log1p`); it must act row-wise and preserve the shape.
    chunk_size
        Rows densified at once; ``None`` picks about 64 MiB per block.
    missing
        NaN entries of ``obs`` are unmeasured values (e.g. regions without coverage, a
        modality built with ``Modality(missing=True)``): each cell is correlated over its
        measured features. Without it NaN in ``obs`` is an error.
    layer
        ``obs`` given as an AnnData: compare with ``obs.layers[layer]`` instead of ``X``
        (the matrix the modality was modelled from, e.g. ``Modality(layer=...)``: a
        translation is in its units).

    Returns
    -------
    float64 array of length ``n_cells``; NaN where either row is constant (over the cell's
    measured features) or fewer than two features are measured.
    """
    obs = _with_layer(obs, layer, "obs")
    obs = _align_features(pred, obs, names=("pred", "obs"), cells=True)
    p = _as_matrix(pred, "pred")
    o = _as_matrix(obs, "obs")
    if p.shape != o.shape:
        raise ValueError(f"pred and obs must have the same shape; got {p.shape} and {o.shape}")
    n, g = p.shape
    _check_features(g)
    chunk = resolve_chunk_size(chunk_size, n, g)
    out = np.empty(n, dtype=np.float64)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        out[s:e] = _row_pearson(
            _dense_rows(p, s, e, "pred", transform),
            _dense_rows(o, s, e, "obs", transform, missing=missing),
        )
    return out


def translation_pearson_summary(
    pred: Any, obs: Any, *, transform: Transform | None = None, missing: bool = False,
    layer: str | None = None,
) -> float:
    """Mean per-cell Pearson correlation, ignoring NaN cells.

    Parameters
    ----------
    pred, obs
        As in :func:`translation_pearson`.
    transform
        Optional callable applied to both.
    missing
        NaN entries of ``obs`` are unmeasured values (see :func:`translation_pearson`).
    layer
        ``obs``'s layer compared (see :func:`translation_pearson`).

    Returns
    -------
    ``nanmean`` of :func:`translation_pearson` (NaN if every cell is NaN).
    """
    r = translation_pearson(pred, obs, transform=transform, missing=missing, layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(r))


def mean_profile_baseline(
    train: Any,
    obs: Any,
    *,
    transform: Transform | None = None,
    chunk_size: int | None = None,
    missing: bool = False,
    layer: str | None = None,
) -> np.ndarray:
    """Per-cell Pearson correlation of the mean training profile with each observed cell.

    The trivial "predict the average cell" baseline for :func:`translation_pearson`.

    Parameters
    ----------
    train
        Training profiles ``(n_train, n_features)``, dense or sparse, an AnnData or a
        DataFrame; the profile is the mean over rows after ``transform``.
    obs
        Observed profiles ``(n_cells, n_features)``, as ``train``. Where both name their
        features, ``obs`` is reordered to ``train``'s.
    transform
        Optional callable applied to ``train`` and ``obs`` chunks.
    chunk_size
        Rows densified at once; ``None`` picks about 64 MiB per block.
    missing
        NaN entries of ``train`` and ``obs`` are unmeasured values: the profile is each
        feature's mean over the rows that measure it, each cell is correlated over its
        measured features (as in :func:`translation_pearson`), and features unmeasured in
        every training row are left out. Without it NaN is an error.
    layer
        ``train`` and ``obs`` given as AnnData: their ``layers[layer]`` instead of ``X``
        (see :func:`translation_pearson`).

    Returns
    -------
    float64 array of length ``n_cells``; NaN where a row (or the mean profile) is
    constant.
    """
    train, obs = _with_layer(train, layer, "train"), _with_layer(obs, layer, "obs")
    obs = _align_features(train, obs, names=("train", "obs"), cells=False)
    t = _as_matrix(train, "train")
    o = _as_matrix(obs, "obs")
    if t.shape[1] != o.shape[1]:
        raise ValueError(
            f"train and obs must have the same number of features; got {t.shape[1]} "
            f"and {o.shape[1]}"
        )
    if t.shape[0] < 1:
        raise ValueError("train needs at least one row")
    g = t.shape[1]
    _check_features(g)
    chunk_t = resolve_chunk_size(chunk_size, t.shape[0], g)
    total = np.zeros(g, dtype=np.float64)
    measured = np.zeros(g, dtype=np.float64)
    for s in range(0, t.shape[0], chunk_t):
        e = min(s + chunk_t, t.shape[0])
        block = _dense_rows(t, s, e, "train", transform, missing=missing)
        total += np.nansum(block, axis=0)
        measured += (~np.isnan(block)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = total / measured
    unknown = np.isnan(profile)  # features unmeasured in every training row: left out
    profile[unknown] = 0.0
    n = o.shape[0]
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    chunk = resolve_chunk_size(chunk_size, n, g)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        ob = _dense_rows(o, s, e, "obs", transform, missing=missing)
        ob[:, unknown] = np.nan
        out[s:e] = _row_pearson(np.broadcast_to(profile, ob.shape), ob)
    return out
