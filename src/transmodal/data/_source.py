"""Row access to a modality's matrix, wherever it lives (dense, sparse, backed h5ad).

Rows are read by sorted index blocks and densified per batch only.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._modality import Modality


def _is_sparse(m) -> bool:
    """scipy sparse matrices and anndata's backed sparse datasets."""
    if sp.issparse(m):
        return True
    return type(m).__name__.endswith("SparseDataset") or (
        hasattr(m, "format") and hasattr(m, "to_memory")
    )


class MatrixSource:
    """Read rows of a 2-D matrix as dense float32 arrays.

    Parameters
    ----------
    matrix
        ``numpy.ndarray``, ``scipy.sparse`` matrix, h5py dataset or anndata backed sparse
        dataset of shape ``(n_obs, n_vars)``.
    name
        Modality name, for error messages.
    where
        Human-readable location of the matrix (``"X"``, ``"layers['counts']"``, ...).
    """

    def __init__(self, matrix, *, name: str, where: str) -> None:
        shape = getattr(matrix, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(
                f"modality {name!r}: {where} must be a 2-D matrix (cells x features), "
                f"got shape {shape}"
            )
        if sp.issparse(matrix) and not isinstance(matrix, (sp.csr_matrix, sp.csr_array)):
            matrix = sp.csr_matrix(matrix)
        self.matrix = matrix
        self.name = name
        self.where = where
        self.shape = (int(shape[0]), int(shape[1]))
        self.sparse = _is_sparse(matrix)
        self.image_shape: tuple[int, ...] | None = None  # (channels, *spatial) for images

    @property
    def n_obs(self) -> int:  # noqa: D102
        return self.shape[0]

    @property
    def n_vars(self) -> int:  # noqa: D102
        return self.shape[1]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dense float32 rows ``idx`` (any order; read in sorted order)."""
        idx = np.asarray(idx, dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        block = self._read_sorted(sorted_idx)
        out = np.empty_like(block)
        out[order] = block
        return out

    def _read_sorted(self, idx: np.ndarray) -> np.ndarray:
        m = self.matrix
        if isinstance(m, np.ndarray):
            block = m[idx]
        else:
            # h5py and backed datasets need unique increasing indices
            uniq, inverse = np.unique(idx, return_inverse=True)
            block = m[uniq]
            if sp.issparse(block):
                block = block.toarray()
            block = np.asarray(block)[inverse]
        return np.asarray(block, dtype=np.float32)

    def chunks(self, idx: np.ndarray | None = None, chunk_size: int = 4096) -> Iterator[np.ndarray]:
        """Iterate over dense row blocks of ``idx`` (all rows by default), in order."""
        if idx is None:
            idx = np.arange(self.n_obs)
        for start in range(0, len(idx), chunk_size):
            yield self.rows(idx[start : start + chunk_size])


def matrix_of(adata: AnnData, spec: Modality, name: str) -> tuple[MatrixSource, np.ndarray]:
    """Locate a modality's matrix in ``adata`` following ``spec``.

    Returns
    -------
    The row source and the feature names.
    """
    if not isinstance(adata, AnnData):
        raise ValueError(f"modality {name!r}: expected an AnnData, got {type(adata).__name__}")
    if spec.obsm_key is not None:
        if spec.obsm_key not in adata.obsm:
            raise ValueError(
                f"modality {name!r}: obsm key {spec.obsm_key!r} not found; "
                f"available: {sorted(adata.obsm.keys())}"
            )
        m = adata.obsm[spec.obsm_key]
        if hasattr(m, "to_numpy"):
            m = m.to_numpy()
        image_shape = None
        ndim = getattr(m, "ndim", 2)
        if ndim in (4, 5):  # images: (n, channels, H, W) or (n, channels, D, H, W)
            image_shape = tuple(int(s) for s in m.shape[1:])
            if min(image_shape) < 1:
                raise ValueError(
                    f"modality {name!r}: obsm[{spec.obsm_key!r}] has an empty image shape "
                    f"{image_shape}"
                )
            m = np.asarray(m).reshape(m.shape[0], -1)  # a view for C-contiguous arrays
        elif ndim != 2:
            raise ValueError(
                f"modality {name!r}: obsm[{spec.obsm_key!r}] has {ndim} dimensions; expected "
                "a matrix (cells x features) or images (cells x channels x [D x] H x W)"
            )
        src = MatrixSource(m, name=name, where=f"obsm[{spec.obsm_key!r}]")
        src.image_shape = image_shape
        var_names = np.array([f"{spec.obsm_key}_{i}" for i in range(src.n_vars)], dtype=object)
        return src, var_names
    if spec.layer is not None:
        if spec.layer not in adata.layers:
            raise ValueError(
                f"modality {name!r}: layer {spec.layer!r} not found; "
                f"available: {sorted(adata.layers.keys())}"
            )
        src = MatrixSource(adata.layers[spec.layer], name=name, where=f"layers[{spec.layer!r}]")
    else:
        if adata.X is None:
            raise ValueError(f"modality {name!r}: adata.X is empty; set 'layer' or 'obsm_key'")
        src = MatrixSource(adata.X, name=name, where="X")
    return src, np.asarray(adata.var_names, dtype=object)


def check_values(src: MatrixSource, likelihood, *, chunk_size: int = 8192) -> None:
    """Scan the matrix once (in chunks) for values the likelihood cannot model.

    Raises
    ------
    ValueError
        On NaN / infinite values, negative values for non-negative likelihoods, or
        non-integers for count likelihoods. The message names the modality and field.
    """
    where = f"modality {src.name!r}: {src.where}"
    for start in range(0, src.n_obs, chunk_size):
        stop = min(start + chunk_size, src.n_obs)
        m = src.matrix
        if src.sparse:
            block = m[start:stop]
            vals = np.asarray(block.data if sp.issparse(block) else block)
        else:
            vals = np.asarray(m[start:stop])
        if vals.size == 0:
            continue
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"{where} holds NaN or infinite values")
        if likelihood.nonnegative and vals.min() < 0:
            raise ValueError(
                f"{where} holds negative values; the {likelihood.name!r} likelihood needs "
                "non-negative data"
            )
        if likelihood.unit_interval and vals.max() > 1:
            raise ValueError(
                f"{where} holds values above 1; the {likelihood.name!r} likelihood needs data "
                "in [0, 1] (e.g. images normalised per nucleus)"
            )
        if likelihood.counts and not np.all(np.mod(vals, 1) == 0):
            raise ValueError(
                f"{where} holds non-integer values; the {likelihood.name!r} likelihood needs "
                "raw counts (use a 'layer' with counts, or likelihood='gaussian')"
            )
