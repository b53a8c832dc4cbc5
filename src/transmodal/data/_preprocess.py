"""Fit a modality's preprocessing (library size, scaling, PCA) on the training cells."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._utils import FeatureMoments, user_stacklevel
from ..nn._transform import InputTransform
from ._source import FLOAT32_RESOLUTION, MatrixSource


def fit_preprocessing(
    transform: InputTransform,
    src: MatrixSource,
    idx: np.ndarray,
    *,
    seed: int = 0,
    max_pca_cells: int = 50_000,
    max_pca_values: int = 2**27,
    chunk_size: int = 4096,
) -> None:
    """Fit ``transform``'s buffers on rows ``idx`` of ``src``, streaming in chunks.

    The same torch code that preprocesses training batches is used here, so fitted
    statistics and later transforms agree exactly.

    Parameters
    ----------
    transform
        The modality's :class:`~transmodal.nn.InputTransform` (updated in place).
    src
        Row source of the raw matrix.
    idx
        Training rows.
    seed
        Seed of the PCA subsample and the randomized SVD.
    max_pca_cells
        PCA is fitted on at most this many randomly chosen training cells.
    max_pca_values
        Those cells' processed rows are held in memory for a randomized PCA when they are at
        most this many numbers (512 MiB of float32); wider data are fitted by incremental
        PCA over blocks of rows instead (memory of one block).
    chunk_size
        Rows per chunk (fewer for wide matrices: a chunk holds at most
        :data:`~transmodal.data._source.CHUNK_VALUES` numbers).
    """
    if len(idx) == 0:
        raise ValueError(f"modality {src.name!r}: no training cells to fit preprocessing on")
    libs, nonzero, measured, empty_cells = [], False, False, 0
    first, constant = None, True  # (every training cell the same row)
    for c in src.chunks(idx, chunk_size):
        if len(c) and constant:
            first = c[0].copy() if first is None else first
            same = c == first
            if c.dtype.kind == "f":  # (unmeasured entries: NaN in both)
                same |= np.isnan(c) & np.isnan(first)
            constant = constant and bool(same.all())
        libs.append(np.nansum(c, 1) if transform.missing else c.sum(1))
        nonzero = nonzero or bool(np.any(np.nan_to_num(c) if transform.missing else c))
        if transform.missing:
            unmeasured = np.isnan(c).all(1)
            empty_cells += int(unmeasured.sum())
            measured = measured or not unmeasured.all()
    if transform.missing and not measured:
        warnings.warn(
            f"modality {src.name!r}: {src.where} is unmeasured in every training cell; the "
            "modality carries no information (a wrong layer, or no coverage?)",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif not nonzero:
        warnings.warn(
            f"modality {src.name!r}: {src.where} is all zeros in every training cell; the "
            "modality carries no information (a wrong layer or obsm key?)",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif constant and len(idx) > 1:
        warnings.warn(
            f"modality {src.name!r}: {src.where} is the same in every training cell; the "
            "modality carries no information, and all its cells embed at one point (a wrong "
            "layer or obsm key?)",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif transform.normalize and src.n_vars == 1:
        warnings.warn(
            f"modality {src.name!r} has one feature: normalize=True divides every cell by "
            "its own total, which leaves 0 or one value and loses the counts; build it with "
            "normalize=False",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif empty_cells:
        # (successes out of trials: unmeasured where the trials are 0)
        where = (f"{src.where} (no reads in {src.totals.where})" if src.totals is not None
                 else src.where)
        warnings.warn(
            f"modality {src.name!r}: {empty_cells} training cell(s) have no measured entry in "
            f"{where}; the encoder sees only the fill values for them, so they all embed at "
            "one point - filter them out (e.g. by coverage) before training",
            UserWarning, stacklevel=user_stacklevel(),
        )
    libs = np.concatenate(libs)
    median = float(np.median(libs))
    if not np.isfinite(median) or median <= 0:
        median = float(max(libs.mean(), 1.0))
    stats: dict[str, torch.Tensor] = {
        "library_size": torch.tensor(median),
        "target_sum": torch.tensor(median),
    }
    transform.load_fitted(stats)

    if transform.scale or transform.missing:
        # moments of the processed values, unmeasured (NaN) entries skipped
        moments = FeatureMoments()
        scale, missing = transform.scale, transform.missing
        transform.scale = transform.missing = False
        try:
            with torch.no_grad():
                for c in src.chunks(idx, chunk_size):
                    moments.add(transform.process(torch.from_numpy(c)).numpy())
        finally:
            transform.scale, transform.missing = scale, missing
        mean = moments.mean()
        if missing:
            never = np.flatnonzero(np.isnan(mean))
            if len(never):
                warnings.warn(
                    f"modality {src.name!r}: {len(never)} of {src.n_vars} feature(s) of "
                    f"{src.where} (e.g. {never[:5].tolist()}) are unmeasured in every training "
                    "cell; they carry nothing: the encoder sees 0 for them, and no loss reaches "
                    "their outputs, so their translations come from untrained weights - leave "
                    "them out of translated results (or of the data)",
                    UserWarning, stacklevel=user_stacklevel(),
                )
            mean = np.nan_to_num(mean, nan=0.0)
            transform.load_fitted({"fill": torch.from_numpy(mean)})
        if scale:
            std = np.sqrt(moments.var())
            # constant (up to float32 rounding of its values), or fewer than two measured
            # values; relative to the magnitude, as scikit-learn's StandardScaler judges
            # constancy, so that a feature's units do not decide (x * 1e-7 is scaled)
            floor = np.maximum(FLOAT32_RESOLUTION * np.abs(mean), 1e-30)
            std[~(std > floor)] = 1.0
            transform.load_fitted({"mean": torch.from_numpy(mean), "std": torch.from_numpy(std)})

    if transform.n_pca:
        from sklearn.decomposition import PCA

        n_max = min(len(idx), src.n_vars)
        if transform.n_pca > n_max:
            raise ValueError(
                f"modality {src.name!r}: field 'n_pca' = {transform.n_pca} exceeds "
                f"min(n_train_cells, n_features) = {n_max}"
            )
        rng = np.random.default_rng(seed)
        sub = idx if len(idx) <= max_pca_cells else rng.choice(idx, max_pca_cells, replace=False)
        sub = np.sort(sub)
        if len(sub) * src.n_vars <= max_pca_values:
            with torch.no_grad():
                data = np.concatenate(
                    [transform.process(torch.from_numpy(c)).numpy() for c in src.chunks(sub)]
                )
            pca = PCA(transform.n_pca, svd_solver="randomized", random_state=seed).fit(data)
        else:  # too wide to hold densely: incremental PCA, one block of rows at a time
            from sklearn.decomposition import IncrementalPCA

            pca = IncrementalPCA(transform.n_pca)
            # blocks of 2 * n_pca rows: each update is an SVD of (n_pca + block) rows, so the
            # cost per cell, (n_pca + block)^2 / block, is near its minimum (block = n_pca),
            # and sklearn's ~11 copies of a block stay small
            step = max(transform.n_pca, min(2 * transform.n_pca, src.chunk_rows()))
            with torch.no_grad():
                for block in np.array_split(sub, max(1, len(sub) // step)):
                    rows = transform.process(torch.from_numpy(src.rows(block)))
                    pca.partial_fit(rows.numpy())
        transform.load_fitted(
            {
                "pca_components": torch.from_numpy(pca.components_),
                "pca_mean": torch.from_numpy(pca.mean_),
            }
        )
