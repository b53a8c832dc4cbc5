"""Methylation rates from methylated / covering read counts."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from anndata.abc import CSCDataset, CSRDataset

from .._utils import check_int
from ..data._source import check_trials
from ..metrics._chunked import resolve_chunk_size


def _layer(adata: AnnData, key: str, what: str):
    """``adata.layers[key]``, or an error naming it: a dense or scipy sparse matrix, or a
    sparse matrix in a file (read by row blocks)."""
    if key not in adata.layers:
        raise ValueError(
            f"layers[{key!r}] ({what}) not found; available: {sorted(adata.layers.keys())}"
        )
    m = adata.layers[key]
    if not (sp.issparse(m) or isinstance(m, (np.ndarray, CSRDataset, CSCDataset))):
        m = np.asarray(m)  # e.g. a dense dataset of a file read into memory
    return m


def _rows(m: np.ndarray | sp.spmatrix, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``m`` as a dense float64 block."""
    block = m[start:stop]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def methylation_rates(
    adata: AnnData,
    *,
    methylated: str = "mc",
    coverage: str = "cov",
    min_coverage: int = 1,
    key_added: str = "methylation_rate",
    chunk_size: int | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Methylation rate per cell and region, NaN where the region is not (enough) covered.

    Single-cell methylation is often stored as two count matrices per region (scvi-tools'
    MethylVI and ALLCools use ``mc`` / ``cov`` layers): reads showing the region methylated,
    and reads covering it. This writes their ratio, the input of
    ``Modality("continuous_bernoulli", layer=key_added, missing=True)``. (The counts can
    also be modelled as they are: ``Modality("binomial", layer=methylated,
    total_layer=coverage)``.)

    Parameters
    ----------
    adata
        Cells x regions, with both count layers (dense or scipy sparse; in a sparse
        coverage matrix an absent entry is no coverage).
    methylated, coverage
        ``layers`` keys of the methylated and the covering read counts.
    min_coverage
        Regions covered by fewer reads in a cell are NaN (unmeasured) there.
    key_added
        The rates go to ``adata.layers[key_added]`` (dense float32: most entries of sparse
        methylation data are NaN, which a sparse matrix cannot leave out).
    chunk_size
        Rows computed at a time (memory of a few dense blocks besides the output); ``None``
        picks blocks of about 64 MiB of float64 values.
    copy
        Return a copy with the new layer instead of writing into ``adata``.

    Returns
    -------
    With ``copy``, the new AnnData; else ``None`` (``adata.layers[key_added]`` is set).

    Raises
    ------
    ValueError
        When a layer is missing, the shapes differ, counts are negative or non-integer, a
        region shows more methylated than covering reads (naming the first such cell), or
        ``key_added`` names the layer of the reads.

    Examples
    --------
    >>> tm.pp.methylation_rates(met, methylated="mc", coverage="cov")          # doctest: +SKIP
    >>> spec = tm.Modality("continuous_bernoulli", layer="methylation_rate", missing=True)
    """
    if not isinstance(adata, AnnData):
        raise ValueError(f"expected an AnnData, got {type(adata).__name__}")
    check_int(min_coverage, "min_coverage", minimum=1)
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise ValueError(f"key_added must be a non-empty string without '/', got {key_added!r}")
    if key_added in (methylated, coverage):  # (the rates would replace the read counts)
        raise ValueError(
            f"key_added={key_added!r} is the layer of the "
            + ("methylated" if key_added == methylated else "covering")
            + " reads; the rates go to a layer of their own (e.g. 'methylation_rate')"
        )
    mc = _layer(adata, methylated, "methylated reads")
    cov = _layer(adata, coverage, "covering reads")
    if mc.shape != cov.shape:
        raise ValueError(
            f"layers[{methylated!r}] {mc.shape} and layers[{coverage!r}] {cov.shape} differ "
            "in shape"
        )
    chunk_size = resolve_chunk_size(chunk_size, adata.n_obs, adata.n_vars)
    out = np.empty(adata.shape, dtype=np.float32)
    for start in range(0, adata.n_obs, chunk_size):
        stop = min(start + chunk_size, adata.n_obs)
        m, c = _rows(mc, start, stop), _rows(cov, start, stop)
        check_trials(
            m, c, successes=f"layers[{methylated!r}]", trials=f"layers[{coverage!r}]",
            at=lambda i, j, s=start: (
                f"cell {adata.obs_names[s + i]!r}, region {adata.var_names[j]!r}"
            ),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = m / c
        rate[c < min_coverage] = np.nan
        out[start:stop] = rate
    if copy:
        adata = adata.copy()
        adata.layers[key_added] = out
        return adata
    adata.layers[key_added] = out
    return None
