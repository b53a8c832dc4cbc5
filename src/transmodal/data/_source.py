"""Row access to a modality's matrix, wherever it lives (dense, sparse, backed h5ad).

Rows are read by sorted index blocks and densified per batch only.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._utils import FeatureMoments, user_stacklevel
from ..nn._likelihoods import Bernoulli, Likelihood, get_likelihood, skips_missing
from ._modality import Modality


def _is_sparse(m) -> bool:
    """scipy sparse matrices and anndata's backed sparse datasets."""
    if sp.issparse(m):
        return True
    return type(m).__name__.endswith("SparseDataset") or (
        hasattr(m, "format") and hasattr(m, "to_memory")
    )


def _runs(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start / stop of the runs of consecutive values of a sorted unique index array."""
    if len(idx) == 0:
        return idx, idx
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = idx[np.concatenate([[0], breaks])]
    stops = idx[np.concatenate([breaks - 1, [len(idx) - 1]])] + 1
    return starts, stops


def _gather(data, indices, indptr: np.ndarray, rows: np.ndarray, n_vars: int) -> sp.csr_matrix:
    """Rows ``rows`` (any order, repeats allowed) of in-memory CSR arrays as a CSR matrix.

    Vectorised over the selected entries only (scipy's own row indexing may copy the whole
    matrix, e.g. when ``indptr`` and ``indices`` have different integer types).
    """
    starts = indptr[rows]
    counts = indptr[rows + 1] - starts
    new_indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_indptr[1:])
    pos = np.arange(new_indptr[-1], dtype=np.int64) + np.repeat(starts - new_indptr[:-1], counts)
    return sp.csr_matrix((data[pos], indices[pos], new_indptr), shape=(len(rows), n_vars))


class _BackedCSR:
    """Rows of a CSR matrix stored in an HDF5 or zarr group (``data``, ``indices``,
    ``indptr``): ``indptr`` is cached, and every run of consecutive rows is one read of
    ``data`` and ``indices`` (zarr: one selection for all runs, each chunk decoded once).
    """

    def __init__(self, group, shape: tuple[int, int], zarr: bool) -> None:
        self.data = group["data"]
        self.indices = group["indices"]
        self.indptr = np.asarray(group["indptr"][...], dtype=np.int64)
        self.shape = shape
        self.zarr = zarr

    @classmethod
    def of(cls, m) -> _BackedCSR | None:
        """A reader for anndata's backed CSR datasets; ``None`` for anything else."""
        if getattr(m, "format", None) != "csr" or not hasattr(m, "group"):
            return None
        try:
            group = m.group
            zarr = getattr(m, "backend", "hdf5") == "zarr"
            return cls(group, (int(m.shape[0]), int(m.shape[1])), zarr)
        except (KeyError, AttributeError, TypeError):  # pragma: no cover - unknown layout
            return None

    def rows(self, uniq: np.ndarray) -> sp.csr_matrix:
        """Rows ``uniq`` (sorted, unique) as an in-memory CSR matrix."""
        starts, stops = _runs(uniq)
        lo, hi = self.indptr[starts], self.indptr[stops]
        if self.zarr:
            coords = np.concatenate([np.arange(a, b) for a, b in zip(lo, hi)] or [np.zeros(0, np.int64)])
            if len(coords) and coords[-1] - coords[0] + 1 == len(coords):
                data = self.data[int(coords[0]) : int(coords[-1]) + 1]
                indices = self.indices[int(coords[0]) : int(coords[-1]) + 1]
            elif len(coords):
                data = self.data.get_orthogonal_selection(coords)
                indices = self.indices.get_orthogonal_selection(coords)
            else:
                data = np.zeros(0, np.float32)
                indices = np.zeros(0, np.int64)
        else:
            data = np.concatenate(
                [self.data[a:b] for a, b in zip(lo, hi)] or [np.zeros(0, self.data.dtype)]
            )
            indices = np.concatenate(
                [self.indices[a:b] for a, b in zip(lo, hi)] or [np.zeros(0, np.int64)]
            )
        counts = self.indptr[uniq + 1] - self.indptr[uniq]
        indptr = np.concatenate([[0], np.cumsum(counts)])
        data = np.asarray(data)
        if data.dtype == np.float16:  # stored as half floats: scipy.sparse has no float16
            data = data.astype(np.float32)
        return sp.csr_matrix((data, np.asarray(indices), indptr), shape=(len(uniq), self.shape[1]))


# numbers in one dense block of rows read at a time (64 MiB of float32): a 150,000-peak
# matrix is read in blocks of 111 rows, not 4,096 (2.5 GB)
CHUNK_VALUES = 2**24


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
    rows, cols
        The positions in ``matrix`` of the rows and columns to read (any order), for a part
        of an on-disk matrix (a view of a backed AnnData, read from its file rather than
        loaded); default all, in order.
    """

    def __init__(self, matrix, *, name: str, where: str, rows: np.ndarray | None = None,
                 cols: np.ndarray | None = None) -> None:
        shape = getattr(matrix, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(
                f"modality {name!r}: {where} must be a 2-D matrix (cells x features), "
                f"got shape {shape}"
            )
        self._row_at = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._col_at = None if cols is None else np.asarray(cols, dtype=np.int64)
        shape = (shape[0] if rows is None else len(self._row_at),
                 shape[1] if cols is None else len(self._col_at))
        dtype = getattr(matrix, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind not in "biuf":
            raise ValueError(
                f"modality {name!r}: {where} holds {np.dtype(dtype)} values; expected real "
                "numbers (integers, floats or booleans)"
            )
        if sp.issparse(matrix) and not isinstance(matrix, (sp.csr_matrix, sp.csr_array)):
            matrix = sp.csr_matrix(matrix)
        elif not isinstance(matrix, np.ndarray) and getattr(matrix, "format", None) == "csc":
            raise ValueError(
                f"modality {name!r}: {where} is a CSC matrix read from a file, whose rows can "
                "only be read by reading the whole matrix, at every batch; store it as CSR "
                "(adata = anndata.read_h5ad(path); adata.X = adata.X.tocsr(); "
                "adata.write_h5ad(path), or read_zarr / write_zarr for a zarr store) or read "
                "it into memory"
            )
        self.matrix = matrix
        self.name = name
        self.where = where
        self.shape = (int(shape[0]), int(shape[1]))
        self.sparse = _is_sparse(matrix)
        self.image_shape: tuple[int, ...] | None = None  # (channels, *spatial) for images
        self.warned: set[str] = set()  # warnings of check_values already given about it
        self.totals: MatrixSource | None = None  # trials per entry (RateSource)
        self.hint = ""  # appended to check_values' advice on counts (e.g. where they are)
        self.stored: tuple | None = None  # what its AnnData held there (stored_matrices)

    @property
    def n_obs(self) -> int:  # noqa: D102
        return self.shape[0]

    @property
    def on_disk(self) -> bool:
        """Whether rows are read from a file (backed h5ad, zarr, h5py) rather than memory."""
        return not (isinstance(self.matrix, np.ndarray) or sp.issparse(self.matrix))

    @property
    def file(self) -> Path | None:
        """The file (or zarr store) the rows are read from; ``None`` for in-memory matrices."""
        if not self.on_disk:
            return None
        obj = getattr(self.matrix, "group", self.matrix)  # anndata's backed sparse datasets
        f = getattr(obj, "file", None)
        if getattr(f, "filename", None):  # h5py
            return Path(f.filename)
        store = getattr(obj, "store", None)
        for attr in ("root", "path", "dir_path"):  # zarr stores (v3 / v2)
            value = getattr(store, attr, None) if store is not None else None
            if value:
                return Path(str(value))
        return None

    @property
    def readable(self) -> bool:
        """Whether the file handles it reads through are still valid (``False`` once their
        h5py file was closed, also when it was opened again since)."""
        obj = getattr(self.matrix, "group", self.matrix)  # anndata's backed sparse datasets
        ident = getattr(obj, "id", None)
        return ident is None or not hasattr(ident, "valid") or bool(ident.valid)

    @property
    def n_vars(self) -> int:  # noqa: D102
        return self.shape[1]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dense float32 rows ``idx`` (any order, repeats allowed).

        In-memory matrices are indexed directly. Files are read in sorted order (one read
        per run of consecutive rows for backed CSR), the rows are put in the requested
        order while still sparse, and only the requested rows are densified.
        """
        idx = np.asarray(idx, dtype=np.int64)
        m = self.matrix
        if not self.part and isinstance(m, np.ndarray):
            return np.asarray(m[idx], dtype=np.float32)
        if not self.part and sp.issparse(m):  # CSR (converted on construction)
            block = _gather(m.data, m.indices, np.asarray(m.indptr), idx, self.n_vars)
            return np.asarray(block.toarray(), dtype=np.float32)
        block = self.block(idx)
        if sp.issparse(block):
            block = block.toarray()
        return np.asarray(block, dtype=np.float32)

    @property
    def part(self) -> bool:
        """Whether it reads some rows or columns of its matrix only (``rows`` / ``cols``)."""
        return self._row_at is not None or self._col_at is not None

    def block(self, idx: np.ndarray):
        """Rows ``idx`` (any order, repeats allowed) as they are read: CSR or dense, not
        yet float32."""
        idx = np.asarray(idx, dtype=np.int64)
        if self._row_at is not None:
            idx = self._row_at[idx]
        uniq = np.unique(idx)
        block = self._read_unique(uniq)
        if len(uniq) != len(idx) or (len(idx) > 1 and not np.all(idx[1:] > idx[:-1])):
            block = block[np.searchsorted(uniq, idx)]
        if self._col_at is not None:
            block = block[:, self._col_at]
        return block

    def _read_unique(self, uniq: np.ndarray):
        """Rows ``uniq`` (sorted, unique) of an on-disk matrix: CSR or dense."""
        reader = self._reader
        if reader is not None:
            return reader.rows(uniq)
        if len(uniq) and uniq[-1] - uniq[0] + 1 == len(uniq):  # one contiguous run
            block = self.matrix[int(uniq[0]) : int(uniq[-1]) + 1]
        else:
            block = self.matrix[uniq]
        return block if sp.issparse(block) else np.asarray(block)

    @property
    def _reader(self) -> _BackedCSR | None:
        """Fast row reader for a backed CSR matrix (built on first use)."""
        if not hasattr(self, "_reader_cache"):
            self._reader_cache = _BackedCSR.of(self.matrix)
        return self._reader_cache

    def chunk_rows(self, chunk_size: int = 4096, *, max_values: int = CHUNK_VALUES) -> int:
        """Rows per dense block: ``chunk_size``, fewer for wide matrices (at most
        ``max_values`` numbers per block; at least one row)."""
        return max(1, min(int(chunk_size), int(max_values) // max(self.n_vars, 1)))

    def chunks(self, idx: np.ndarray | None = None, chunk_size: int = 4096) -> Iterator[np.ndarray]:
        """Iterate over dense row blocks of ``idx`` (all rows by default), in order: blocks of
        ``chunk_size`` rows, fewer for wide matrices (:meth:`chunk_rows`), so that a block
        holds at most :data:`CHUNK_VALUES` numbers whatever the number of features."""
        if idx is None:
            idx = np.arange(self.n_obs)
        step = self.chunk_rows(chunk_size)
        for start in range(0, len(idx), step):
            yield self.rows(idx[start : start + step])


class RateSource(MatrixSource):
    """Successes out of trials per entry (e.g. methylated out of covering reads), read as
    rates: :meth:`rows` gives ``successes / trials``, NaN (unmeasured) where there are no
    trials; :meth:`rates_and_totals` also gives the trials (the binomial loss's weights).

    Parameters
    ----------
    successes, totals
        The two count matrices, of the same shape (any :class:`MatrixSource` input).
    name
        Modality name, for error messages.
    where, total_where
        Their locations (``"X"``, ``"layers['mc']"``, ``"layers['cov']"``).
    rows, cols
        As for :class:`MatrixSource`, of ``successes`` only (``totals`` are read whole).
    """

    def __init__(self, successes, totals, *, name: str, where: str, total_where: str,
                 rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> None:
        super().__init__(successes, name=name, where=where, rows=rows, cols=cols)
        self.totals = MatrixSource(totals, name=name, where=total_where)
        if self.totals.shape != self.shape:
            raise ValueError(
                f"modality {name!r}: {total_where} (trials) has shape {self.totals.shape}, "
                f"{where} (successes) {self.shape}; they must match entry by entry"
            )

    @property
    def on_disk(self) -> bool:  # noqa: D102
        return super().on_disk or self.totals.on_disk

    def chunk_rows(self, chunk_size: int = 4096, *, max_values: int = CHUNK_VALUES) -> int:
        """Rows per dense block (two matrices are read per block: half as many)."""
        return super().chunk_rows(chunk_size, max_values=max_values // 2)

    def counts(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Successes and trials of rows ``idx``, dense float32."""
        return super().rows(idx), self.totals.rows(idx)

    def rates_and_totals(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rates (NaN without trials) and trials of rows ``idx``, dense float32."""
        k, n = self.counts(idx)
        rate = np.full(k.shape, np.nan, dtype=np.float32)
        np.divide(k, n, out=rate, where=n > 0)
        return rate, n

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rates of rows ``idx`` (NaN where there are no trials)."""
        return self.rates_and_totals(idx)[0]


def sampled_blocks(
    src: MatrixSource, rows: np.ndarray, batch_size: int, rng: np.random.Generator,
    max_cells: int,
) -> Iterator[np.ndarray]:
    """Dense blocks of ``batch_size`` of ``rows`` (in order), of at most ``max_cells`` of
    them drawn with ``rng``."""
    if len(rows) > max_cells:
        rows = np.sort(rng.choice(rows, max_cells, replace=False))
    for start in range(0, len(rows), batch_size):
        yield src.rows(rows[start : start + batch_size])


def obsm_feature_names(obsm_key: str, n_vars: int) -> np.ndarray:
    """Names of the features of an ``obsm`` matrix without its own (an array, or a
    DataFrame with default integer columns): ``{obsm_key}_0``, ``{obsm_key}_1``, ..."""
    return np.array([f"{obsm_key}_{i}" for i in range(n_vars)], dtype=object)


def _numeric_frame(df: pd.DataFrame, where: str) -> np.ndarray:
    """The values of a DataFrame of numbers; nullable columns' missing values become NaN
    (which the value scan then names). Other columns (strings, categories) are refused."""
    bad = [  # by position: column names may repeat
        (str(c), str(dt)) for c, dt in zip(df.columns, df.dtypes)
        if not (pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt))
        or pd.api.types.is_complex_dtype(dt)
    ]
    if bad:
        raise ValueError(
            f"{where} has column(s) that are not numbers: {[c for c, _ in bad[:5]]} (dtypes "
            f"{[dt for _, dt in bad[:5]]})"
        )
    values = df.to_numpy()
    if values.dtype.kind not in "biuf":  # nullable (Int64, boolean) or mixed columns: objects
        values = df.to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def looks_channels_last(image_shape: tuple[int, ...]) -> bool:
    """Whether one image's shape (without the cell axis), read channels-first as
    ``(channels, [D,] H, W)``, looks channels-last instead: few "pixels" along the last
    axis (1, 3 or 4, as grey / RGB / RGBA) beside many rows, and many "channels" too for a
    2-D image (a z-stack of few slices, ``(D, H, W, 1)``, has few; a crop 1 pixel wide,
    or a z-stack 3 or 4 pixels wide, is no image); or another number of channels, at most
    16 (multiplexed immunofluorescence), a quarter or less of each axis before it (48 x 48
    x 5: "images" 48 x 5 pixels of 48 channels are none)."""
    last = image_shape[-1]
    if last in (1, 3, 4):
        if image_shape[-2] <= 4:
            return False
        return last == 1 or len(image_shape) == 4 or image_shape[0] > 4
    return 2 <= last <= 16 and all(s >= 4 * last for s in image_shape[:-1])


def matrix_of(adata: AnnData, spec: Modality, name: str) -> tuple[MatrixSource, np.ndarray]:
    """Locate a modality's matrix in ``adata`` following ``spec``.

    Returns
    -------
    The row source and the feature names.
    """
    if not isinstance(adata, AnnData):
        mod = (f" (a MuData: give its modality, mdata[{name!r}])"
               if name in getattr(getattr(adata, "mod", None), "keys", list)() else "")
        raise ValueError(
            f"modality {name!r}: expected an AnnData, got {type(adata).__name__}{mod}"
        )
    if spec.obsm_key is not None:
        if spec.obsm_key not in adata.obsm:
            raise ValueError(
                f"modality {name!r}: obsm key {spec.obsm_key!r} not found; "
                f"available: {sorted(adata.obsm.keys())}"
            )
        m = adata.obsm[spec.obsm_key]
        columns = getattr(m, "columns", None)  # a DataFrame's feature names (e.g. proteins)
        if isinstance(m, pd.DataFrame):
            m = _numeric_frame(m, f"modality {name!r}: obsm[{spec.obsm_key!r}]")
        elif hasattr(m, "to_numpy"):
            m = m.to_numpy()
        image_shape = None
        ndim = getattr(m, "ndim", 2)
        if ndim in (4, 5):  # images: (n, channels, H, W) or (n, channels, D, H, W)
            image_shape = tuple(int(s) for s in m.shape[1:])
            if looks_channels_last(image_shape):  # (n, [D,] H, W, 1|3|4)
                raise ValueError(
                    f"modality {name!r}: obsm[{spec.obsm_key!r}] has shape {tuple(m.shape)}, "
                    f"which looks channels-last (cells x [D x] H x W x channels, "
                    f"{image_shape[-1]} channel(s)); image crops must be channels-first "
                    "(cells x channels x [D x] H x W): store "
                    f"np.moveaxis(crops, -1, 1) in obsm[{spec.obsm_key!r}]"
                )
            if min(image_shape) < 1:
                raise ValueError(
                    f"modality {name!r}: obsm[{spec.obsm_key!r}] has an empty image shape "
                    f"{image_shape}"
                )
            # a view for C-contiguous arrays; the width is explicit so that 0 cells work too
            m = np.asarray(m).reshape(m.shape[0], int(np.prod(image_shape)))
        elif ndim != 2:
            grey = ("; grey images (cells x H x W) need their channel axis: "
                    f"obsm[{spec.obsm_key!r}] = x[:, None]" if ndim == 3 else "")
            raise ValueError(
                f"modality {name!r}: obsm[{spec.obsm_key!r}] has {ndim} dimensions; expected "
                f"a matrix (cells x features) or images (cells x channels x [D x] H x W){grey}"
            )
        src = MatrixSource(m, name=name, where=f"obsm[{spec.obsm_key!r}]")
        src.image_shape = image_shape
        src.stored = stored_matrices(adata, spec)
        if columns is not None and not isinstance(columns, pd.RangeIndex):
            var_names = np.asarray(columns.astype(str), dtype=object)
        else:
            var_names = obsm_feature_names(spec.obsm_key, src.n_vars)
        return src, var_names
    for key, field in ((spec.layer, "layer"), (spec.total_layer, "total_layer")):
        if key is not None and key not in adata.layers:
            raise ValueError(
                f"modality {name!r}: {field} {key!r} not found; "
                f"available: {sorted(adata.layers.keys())}"
            )
    part: dict[str, np.ndarray] = {}
    if spec.layer is not None:
        matrix, where = adata.layers[spec.layer], f"layers[{spec.layer!r}]"
    elif adata.isbacked and adata.is_view:
        # the view's rows and columns read from the file as needed (its X would read them
        # all into memory); the file's own cells and features are what the view selects
        parent = adata._adata_ref
        matrix, where = parent.X, "X"
        rows, cols = np.arange(parent.n_obs)[adata._oidx], np.arange(parent.n_vars)[adata._vidx]
        part = {"rows": rows,
                "cols": None if np.array_equal(cols, np.arange(parent.n_vars)) else cols}
    else:
        if adata.X is None:
            layers = sorted(adata.layers.keys())
            raise ValueError(
                f"modality {name!r}: adata.X is empty (None), and the modality reads X: put "
                "the data there"
                + (f" (e.g. adata.X = adata.layers[{layers[0]!r}]; layers: {layers})"
                   if layers else "")
                + ", or give the modality's 'layer' or 'obsm_key' when building the model"
            )
        matrix, where = adata.X, "X"
    if spec.total_layer is not None:
        src = RateSource(
            matrix, adata.layers[spec.total_layer], name=name, where=where,
            total_where=f"layers[{spec.total_layer!r}]", **part,
        )
    else:
        src = MatrixSource(matrix, name=name, where=where, **part)
    src.stored = stored_matrices(adata, spec)
    # (where the counts may be: layers named like counts first, then .raw; not transformed
    # ones, e.g. SingleCellExperiment's "logcounts", "normcounts")
    counts_like = [
        k for k in adata.layers if re.search("count|raw", str(k), re.IGNORECASE)
        and not re.search("log|(?<!un)norm|scal|cpm|tpm|fpkm|rpkm|tfidf|tf-idf", str(k),
                          re.IGNORECASE)
    ]
    if where == "X" and len(adata.layers):
        layer = repr(counts_like[0]) if counts_like else "NAME"
        listed = counts_like + [k for k in adata.layers if k not in counts_like]
        names = ", ".join(repr(k) for k in listed[:5]) + (", ..." if len(listed) > 5 else "")
        src.hint += (
            f"; the AnnData holds layers [{names}]: if one of them has the raw counts, read "
            f"it with Modality({spec.likelihood!r}, layer={layer})"
        )
    if where == "X" and _has_raw(adata) and not counts_like:
        src.hint += (
            "; .raw is not read: counts kept there can be given as a layer, "
            "adata.layers['counts'] = adata.raw[:, adata.var_names].X, then layer='counts'"
        )
    return src, np.asarray(adata.var_names, dtype=object)


_UNTRACKED = object()  # stands for a backed AnnData's X in stored_matrices


def stored_matrices(adata: AnnData, spec: Modality) -> tuple | None:
    """The objects ``adata`` holds where ``spec`` reads its data (the matrix, and a rate
    modality's trials; ``None`` for one no longer there), to tell by identity a matrix
    replaced since (``adata.X = ...``, a layer set again). ``None`` where identity cannot
    tell: a view gives a new object at every access (and cannot be assigned to without
    becoming another AnnData); so does a backed AnnData's ``X`` (read-only; its layers and
    ``obsm`` are held in memory and tracked)."""
    if adata.is_view:
        return None
    if spec.obsm_key is not None:
        return (adata.obsm[spec.obsm_key] if spec.obsm_key in adata.obsm else None,)

    def layer(key: str):
        return adata.layers[key] if key in adata.layers else None

    x = _UNTRACKED if adata.isbacked else adata.X
    trials = None if spec.total_layer is None else layer(spec.total_layer)
    return (x if spec.layer is None else layer(spec.layer), trials)


def values_digest(matrix: Any, n_obs: int, max_rows: int = 64) -> tuple | None:
    """A fingerprint of the values ``matrix`` holds (one of :func:`stored_matrices`, with
    ``n_obs`` rows): the sums of the values and of their squares, and the numbers of NaN and
    of entries, over a fixed sample of at most ``max_rows`` rows. It tells a matrix edited
    in place (``adata.X *= 100``, ``sc.pp.scale(adata)``: the same object, other values)
    from the one a model was built on; ``None`` where there is nothing to read (a backed
    ``X``, a missing matrix) or it cannot be read by rows."""
    if matrix is None or matrix is _UNTRACKED:
        return None
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(n_obs, min(n_obs, max_rows), replace=False))
    try:
        if sp.issparse(matrix):
            values = sp.csr_matrix(matrix[rows]).data
        elif isinstance(matrix, pd.DataFrame):
            values = matrix.iloc[rows].to_numpy()
        else:
            values = matrix[rows]
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError, IndexError, KeyError, OSError):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        return (float(np.nansum(values)), float(np.nansum(np.square(values))),
                int(np.isnan(values).sum()), int(values.size))


def _has_raw(adata: AnnData) -> bool:
    """Whether ``adata`` holds a ``.raw`` (scanpy's place for counts before normalising)."""
    try:
        return adata.raw is not None
    except (KeyError, OSError, TypeError, ValueError):  # an unreadable raw group of a file
        return False


_FLOAT32_MAX = float(np.finfo(np.float32).max)
# a feature whose standard deviation is below this fraction of its magnitude is (almost) one
# value in float32 (relative resolution 2**-23 = 1.2e-7)
FLOAT32_RESOLUTION = 1e-6


def check_trials(
    k: np.ndarray, n: np.ndarray, *, successes: str, trials: str, at, prefix: str = ""
) -> None:
    """``ValueError`` unless the dense blocks ``k`` (successes) and ``n`` (trials) hold
    finite non-negative integers with ``k <= n``. ``successes`` / ``trials`` name where they
    are; ``at(i, j)`` names the entry in row ``i``, column ``j`` of the blocks (e.g. "cell
    'c7', region 'r3'"), the first bad one in the message."""
    def first(bad: np.ndarray) -> str:
        i, j = np.argwhere(bad)[0]
        return at(int(i), int(j))

    for vals, where in ((k, successes), (n, trials)):
        finite = np.isfinite(vals)
        # successes given as rates (in [0, 1], NaN where unmeasured): the layer not named?
        measured = vals[finite] if vals is k and finite.any() else None
        if measured is not None and 0 <= measured.min() and measured.max() <= 1 \
                and not all_integers(measured):
            fraction = finite & (np.mod(np.where(finite, vals, 0.0), 1) != 0)
            raise ValueError(
                f"{prefix}{where} holds rates (values in [0, 1], e.g. {first(fraction)}: "
                f"{vals[fraction][0]:g}), not read counts: the successes are "
                f"the methylated (or otherwise counted) reads, out of {trials}; name their "
                "layer, e.g. Modality('binomial', layer='methylated', total_layer=...)"
            )
        if not finite.all():
            raise ValueError(
                f"{prefix}{where} holds NaN or infinite values (e.g. {first(~finite)}); an entry "
                f"without reads (trials) is unmeasured: 0 in {trials}"
            )
        bad = (vals < 0) | (np.mod(vals, 1) != 0)
        if bad.any():
            raise ValueError(
                f"{prefix}{where} holds negative or non-integer values (e.g. {first(bad)}: "
                f"{vals[bad][0]:g}); it needs read counts (e.g. methylated and covering reads, "
                "not rates)"
            )
    above = k > n
    if above.any():
        i, j = np.argwhere(above)[0]
        raise ValueError(
            f"{prefix}{int(above.sum())} entries of {successes} exceed {trials} (e.g. "
            f"{at(int(i), int(j))}: {k[i, j]:g} > {n[i, j]:g}); successes cannot outnumber "
            "trials (swapped layers?)"
        )


def _check_counts(src: RateSource, *, chunk_size: int) -> None:
    """Successes and trials of every row (:func:`check_trials`, in dense blocks of both)."""
    step = src.chunk_rows(chunk_size)
    for start in range(0, src.n_obs, step):
        k, n = src.counts(np.arange(start, min(start + step, src.n_obs)))
        check_trials(
            k, n, successes=src.where, trials=src.totals.where,
            prefix=f"modality {src.name!r}: ",
            at=lambda i, j, s=start: f"row {s + i}, column {j}",
        )


def _n_empty_rows(indptr: np.ndarray, vals: np.ndarray) -> int:
    """Rows of a CSR block (``indptr`` of its rows, ``vals`` their stored values) without a
    non-zero value (no stored entry, or only stored zeros)."""
    indptr = np.asarray(indptr, dtype=np.int64)
    indptr = indptr - indptr[0]
    stored = np.diff(indptr) > 0
    if not stored.any():
        return len(stored)
    nonzero = np.logical_or.reduceat(np.asarray(vals) != 0, indptr[:-1][stored])
    return int(len(stored) - nonzero.sum())


def all_integers(vals: np.ndarray, *, piece: int = 1 << 16) -> bool:
    """Whether every (finite) value of ``vals`` is an integer: compared with its rounding
    in pieces that stay in the CPU's cache (a seventh of ``np.mod``'s time), stopping at the
    first piece that holds another."""
    if vals.dtype.kind != "f":
        return True
    flat = vals.reshape(-1)
    rounded = np.empty(min(piece, flat.size), dtype=flat.dtype)
    for start in range(0, flat.size, piece):
        part = flat[start : start + piece]
        out = rounded[: len(part)]
        np.rint(part, out=out)
        if not np.array_equal(out, part):
            return False
    return True


# an unscaled Gaussian image holding values beyond this is in raw intensity units
_RAW_INTENSITY = 10.0
# the root mean square an unscaled Gaussian matrix may have (log-normalised values, principal
# components and fractions lie within; raw intensities of thousands, or 1e-6, do not)
_UNIT_SCALE = (1e-2, 1e2)


def check_values(
    src: MatrixSource, spec: Modality, *, chunk_size: int = 8192, new_cells: bool = False
) -> bool | None:
    """Scan the matrix once (in chunks) for values the modality's likelihood or its
    preprocessing cannot take. For successes out of trials (a :class:`RateSource`), only
    :func:`check_trials` runs: both matrices must be read counts.

    Parameters
    ----------
    src
        The matrix.
    spec
        Its modality spec (likelihood; ``normalize`` and ``log1p`` need non-negative values).
    chunk_size
        Rows scanned at a time.
    new_cells
        The cells are given to a built model (embedding, translation): errors advise to
        give the data as the model was trained on, not options that only a new model takes.

    Returns
    -------
    Whether every measured value is an integer (raw counts; not normalised, log-transformed
    or scaled values): what :func:`warn_other_units` compares between a model's training
    cells and new ones. ``None`` for likelihoods it does not check (:func:`units_told`),
    where no measured value is non-zero, where every one is an integer of at most 1 in
    magnitude (binary data: no units to tell), and for successes out of trials.

    Raises
    ------
    ValueError
        On infinite values, NaN values (unless ``spec.missing``: unmeasured entries), values
        beyond float32 (the networks' precision), negative values for non-negative
        likelihoods or preprocessing, or non-integers for count likelihoods. The message
        names the modality and field.

    Warns
    -----
    UserWarning
        For a ``'bernoulli'`` modality with values strictly between 0 and 1 (it models
        ``x > 0``, so they all become 1; non-integers above 1, normalised values such as
        TF-IDF: the counts are advised), and for features of a dense float64 matrix (not
        counts or binary data) whose spread is below float32's resolution at their
        magnitude (standard deviation < 1e-6 * |mean|): the model reads float32, so their
        variation is lost; and for a sparse matrix without NaN in a modality with
        ``missing=True`` (the entries it leaves out are zeros, all measured); for a new
        model's images, a ``'bernoulli'`` one with pixels above 1 of several values
        (intensities, all made 1) and an unscaled ``'gaussian'`` one in raw intensity units
        (non-negative, up to more than 10). Each warning
        is given once per source (``src.warned``). Duplicate entries of a sparse matrix are
        checked as the values they sum to.
    """
    if isinstance(src, RateSource):
        _check_counts(src, chunk_size=chunk_size)
        return None
    where = f"modality {src.name!r}: {src.where}"
    likelihood = get_likelihood(spec.likelihood)
    opts = spec.resolved(image=src.image_shape is not None)
    nonnegative_for = " and ".join(f"{k}=True" for k in ("normalize", "log1p") if opts[k]) or None
    # for cells given to a built model, whose modality options are fixed
    put = "raw counts there" if likelihood.counts else "values there, in the training data's units"
    as_trained = (
        f"; the model reads these cells' {src.where}, as in training: put their {put}"
        if new_cells else None
    )
    m = src.matrix
    reader = src._reader if src.on_disk else None
    dtype = getattr(m, "dtype", None)
    binary = isinstance(likelihood, Bernoulli)  # models x > 0
    n_fractions = 0  # values strictly between 0 and 1 of a 'bernoulli' modality
    n_scaled = 0  # non-integers above 1 of one (normalised values: TF-IDF, log-normalised)
    image = src.image_shape is not None
    # (advice on a new model's options: not for cells given to a built one)
    n_intensities = 0  # pixels above 1 of a 'bernoulli' image (intensities, all made 1) ...
    lit: set[float] = set()  # ... unless lit pixels take one value (a mask stored as 0 / 255)
    # the largest and smallest values of an unscaled Gaussian image (raw intensities, if
    # hardly negative: its decoder, starting near 0, takes very long to reach them; crops
    # standardised by the user are as negative as positive)
    peak = low = (0.0 if image and not new_cells and not opts["scale"]
                  and likelihood.name == "gaussian" else None)
    # the root mean square of an unstandardised Gaussian matrix (scale=False): far from the
    # likelihood's unit variance, its decoder cannot reach the values, or they drown in it
    unscaled = (likelihood.name == "gaussian" and not image and not new_cells
                and not opts["scale"])
    square_sum, n_entries = 0.0, 0
    # dense floats wider than float32 (float64): their per-feature spread, collected in the
    # same pass; not for counts (integers, exact in float32 up to 2**24) or binary data
    wide = dtype is not None and np.dtype(dtype).kind == "f" and np.dtype(dtype).itemsize > 4
    spread = (
        FeatureMoments() if wide and not src.sparse and not (likelihood.counts or binary) else None
    )
    canonical = not sp.issparse(m) or m.has_canonical_format  # (no duplicate entries)
    in_memory_csr = sp.issparse(m) and not src.part
    saw_nan = False
    # cells without a single non-zero value carry no signal in counts or binary data (their
    # normalised profile is all zeros), so they embed as one and the same average-looking cell
    count_empty = src.image_shape is None and (likelihood.counts or binary or opts["normalize"])
    n_empty = 0
    # for the units record (units_told): every measured value an integer, any non-zero, any
    # beyond +-1 (integers of at most 1 are binary data, in no telling units)
    told = units_told(likelihood)
    integers, nonzero, beyond_one = True, False, False
    # stored values of sparse rows are sliced without densifying; dense rows in bounded blocks
    step = chunk_size if src.sparse else src.chunk_rows(chunk_size)
    for start in range(0, src.n_obs, step):
        stop = min(start + step, src.n_obs)
        if in_memory_csr and not canonical:  # duplicate entries: the values they sum to
            block = m[start:stop]
            block.sum_duplicates()
            vals = block.data
            if count_empty:
                n_empty += _n_empty_rows(block.indptr, vals)
        elif in_memory_csr:  # CSR: the stored values of these rows, without copying indices
            vals = m.data[int(m.indptr[start]) : int(m.indptr[stop])]
            if count_empty:
                n_empty += _n_empty_rows(m.indptr[start : stop + 1], vals)
        elif reader is not None and not src.part:  # backed CSR: read only the values
            indptr = np.asarray(reader.indptr[start : stop + 1])
            vals = np.asarray(reader.data[int(indptr[0]) : int(indptr[-1])])
            if count_empty:
                n_empty += _n_empty_rows(indptr, vals)
        else:
            block = src.block(np.arange(start, stop)) if src.part else m[start:stop]
            if sp.issparse(block):
                block = sp.csr_matrix(block)
                vals = np.asarray(block.data)
                if count_empty:
                    n_empty += _n_empty_rows(block.indptr, vals)
            else:
                vals = np.asarray(block)
                if count_empty:
                    n_empty += int((~np.any(vals.reshape(len(vals), -1) != 0, axis=1)).sum())
        if vals.size == 0:
            continue
        spread_vals = vals
        if not np.all(np.isfinite(vals)):
            if np.isinf(vals).any():
                raise ValueError(f"{where} holds infinite values")
            if not spec.missing:
                hint = (
                    "; if NaN marks values that were not measured (e.g. regions without "
                    f"coverage), build the modality with Modality({spec.likelihood!r}, ..., "
                    "missing=True) (in a config file: missing: true)"
                    if skips_missing(likelihood) and src.image_shape is None else ""
                )
                if new_cells:  # (the model's options are fixed)
                    built = (
                        " was built without missing=True, so it" if skips_missing(likelihood)
                        and src.image_shape is None else ""
                    )
                    hint = (
                        f"; the model{built} reads no unmeasured (NaN) entries: give these "
                        "cells' values as in its training data"
                    )
                raise ValueError(f"{where} holds NaN values{hint}")
            saw_nan = True
            vals = vals[~np.isnan(vals)]  # the checks below: measured values
            if vals.size == 0:
                continue
        # float16 / integer values cannot exceed it (and float16 cannot hold the bound)
        if vals.dtype.kind == "f" and vals.dtype.itemsize > 4 and np.abs(vals).max() > _FLOAT32_MAX:
            raise ValueError(
                f"{where} holds values beyond float32 (|x| > {_FLOAT32_MAX:.3g}); rescale them"
            )
        if likelihood.nonnegative and vals.min() < 0:  # first: its advice is the one to take
            need = (
                "raw counts (use a 'layer' with counts, or likelihood='gaussian' for centred or "
                "scaled data)" + src.hint if likelihood.counts else "non-negative data"
            )
            if as_trained:
                need = "raw counts" if likelihood.counts else "non-negative data"
            raise ValueError(
                f"{where} holds negative values (min {vals.min():.3g}); the "
                f"{likelihood.name!r} likelihood needs {need}{as_trained or ''}"
            )
        if nonnegative_for is not None and vals.min() < 0:
            both = " and " in nonnegative_for
            fix = as_trained or (f" (set {'them' if both else 'it'} to False for centred or "
                                 "signed features)")
            raise ValueError(
                f"{where} holds negative values (min {vals.min():.3g}); {nonnegative_for} "
                f"{'need' if both else 'needs'} non-negative data{fix}"
            )
        if likelihood.unit_interval and vals.max() > 1:
            bits = ("; 8-bit images: divide by 255" if image and vals.dtype == np.uint8 else
                    f"; divide the images by their maximum, here at least {vals.max():.6g}"
                    if image and not new_cells else "")
            raise ValueError(
                f"{where} holds values above 1; the {likelihood.name!r} likelihood needs data "
                f"in [0, 1] (e.g. images normalised per nucleus{bits})"
            )
        if likelihood.counts and not all_integers(vals):
            fix = as_trained or (
                " (use a 'layer' with counts, or likelihood='gaussian')" + src.hint
            )
            raise ValueError(
                f"{where} holds non-integer values; the {likelihood.name!r} likelihood needs "
                f"raw counts{fix}"
            )
        if told:
            nonzero = nonzero or bool(np.any(vals))
            integers = integers and all_integers(vals)
            beyond_one = beyond_one or (integers and bool(np.any(np.abs(vals) > 1)))
        if binary and vals.dtype.kind == "f":
            n_fractions += int(np.count_nonzero((vals > 0) & (vals < 1)))
            if not n_scaled and not image:  # non-integers above 1: normalised values
                above = vals[vals > 1]  # (none in binary data: cheap)
                n_scaled = int(np.count_nonzero(np.mod(above, 1)))
        if binary and image and not new_cells:
            n_intensities += int(np.count_nonzero(vals > 1))
            if len(lit) < 2:
                lit.update(np.unique(vals[vals > 0])[:2].tolist())
        if peak is not None:
            peak, low = max(peak, float(vals.max())), min(low, float(vals.min()))
        if unscaled:  # (a sparse block's zeros are measured values too)
            square_sum += float(np.square(vals, dtype=np.float64).sum())
            n_entries += (stop - start) * src.n_vars if src.sparse else vals.size
        if spread is not None:
            spread.add(spread_vals)

    def warn(message: str) -> None:  # once per source: rescans (train, embed) repeat none
        if message not in src.warned:
            src.warned.add(message)
            warnings.warn(message, UserWarning, stacklevel=user_stacklevel())

    if n_empty:
        warn(
            f"{where}: {n_empty} of {src.n_obs} cell(s) hold no non-zero value (all-zero "
            "rows): they carry no signal, so each of them embeds and translates as the same "
            "average-looking cell. Remove them first (e.g. sc.pp.filter_cells(adata, "
            "min_counts=1)). Cells not measured in a modality belong out of its AnnData, not "
            "in it as rows of zeros: cells pair by name, so a padded row counts as measured"
        )
    if spec.missing and src.sparse and not saw_nan and src.n_obs:
        warn(
            f"{where} is a sparse matrix without NaN, and the modality has missing=True: "
            "entries a sparse matrix leaves out are zeros, so every entry counts as measured "
            "(absent ones as 0). Mark unmeasured entries with NaN in a dense matrix, or model "
            "read counts with likelihood='binomial' and total_layer= (coverage)"
        )
    if n_scaled:  # (non-integers above 1 are no counts, nor fractions: normalised values)
        warn(
            f"{where} holds non-integer values above 1: normalised values (e.g. TF-IDF, "
            "log-normalised counts)? The 'bernoulli' likelihood models whether a value is "
            "> 0, but the encoder reads the values themselves: "
            + (as_trained[2:] if as_trained else "give the modality its counts" + (
                src.hint or " (e.g. Modality('bernoulli', layer='counts'))"))
        )
    elif n_fractions:
        warn(
            f"{where} holds {n_fractions} value(s) strictly between 0 and 1; the 'bernoulli' "
            "likelihood models whether a value is > 0, so each of them counts as 1 (counts "
            "above 1 are binarised on purpose). For fractions or probabilities (e.g. "
            "methylation levels) use likelihood='continuous_bernoulli', which models values "
            "in [0, 1]"
        )
    if n_intensities and len(lit) > 1:
        warn(
            f"{where} holds {n_intensities} pixel(s) above 1; the 'bernoulli' likelihood "
            "models whether a pixel is > 0, so every lit pixel counts as 1 (the intensities "
            "are lost). For intensities use likelihood='continuous_bernoulli' on images "
            "scaled to [0, 1] (e.g. x / 255 for 8-bit ones)"
        )
    if peak is not None and peak > _RAW_INTENSITY and low > -0.1 * peak:
        warn(
            f"{where} holds intensities up to {peak:.4g}, and image modalities are not "
            "standardised by default: a Gaussian decoder, whose outputs start near 0, can "
            "take very long to reach values this large (translations then stay far too "
            "small). Pass scale=True (each pixel standardised) or divide the images by "
            "their maximum (e.g. x / 255 for 8-bit ones)"
        )
    rms = np.sqrt(square_sum / n_entries) if n_entries else None
    if rms is not None and not _UNIT_SCALE[0] <= rms <= _UNIT_SCALE[1]:
        fate = ("its decoder, whose outputs start near 0, can take very long to reach "
                "values this large (the reconstruction barely falls, translations stay far "
                "too small)" if rms > 1 else "values this small drown in that variance (the "
                "modality's embedding collapses)")
        warn(
            f"{where} holds values of root mean square {rms:.3g}, and the modality has "
            "scale=False: the 'gaussian' likelihood has unit variance on the values it is "
            f"given, so {fate}. Pass scale=True (each feature standardised; translations "
            "come back in the data's units) or rescale the values"
        )
    lost: np.ndarray = np.zeros(0, np.int64)
    if spread is not None and spread.n:  # features that vary, below float32's resolution
        mean, std = spread.mean(), np.sqrt(spread.var())
        lost = np.flatnonzero((std > 0) & (std < FLOAT32_RESOLUTION * np.abs(mean)))
    if len(lost):
        warn(
            f"{where}: {len(lost)} of {src.n_vars} feature(s) (columns {lost[:5].tolist()}"
            f"{', ...' if len(lost) > 5 else ''}) vary by less than float32's resolution at "
            f"their magnitude (standard deviation < {FLOAT32_RESOLUTION:g} * |mean|, e.g. "
            f"mean {mean[lost[0]]:.6g} in column {lost[0]}); the model reads {np.dtype(dtype)} values "
            "as float32, so their variation is lost. Subtract each feature's mean (in "
            f"{np.dtype(dtype)}, e.g. x - x.mean(0)) from {src.where} before building the "
            "model"
        )
    return None if not nonzero or (integers and not beyond_one) else integers


def units_told(likelihood: Likelihood) -> bool:
    """Whether new cells' units are checked against the training cells' for a modality of
    ``likelihood`` (:func:`warn_other_units`): not where the likelihood checks them itself
    (counts refuse non-integers, Bernoulli warns on normalised values) or its values lie in
    [0, 1]."""
    return not (likelihood.counts or isinstance(likelihood, Bernoulli)
                or likelihood.unit_interval)


def warn_other_units(
    src: MatrixSource, spec: Modality, integers: bool | None, trained: bool | None
) -> None:
    """Warn where cells given to a built model hold integers only and its training cells did
    not, or the other way round (what :func:`check_values` returns of each): raw counts
    given to a model trained on log-normalised values, or log-normalised values to one that
    normalises counts itself. The model reads the values as they are, so cells in other
    units embed and translate wrongly, without an error. Not for likelihoods that check
    this themselves (counts, binary data) or whose values lie in [0, 1]."""
    if integers is None or trained is None or integers == trained:
        return
    if not units_told(get_likelihood(spec.likelihood)):
        return
    if integers:
        given = "only integers (raw counts?)"
        trained_on = "non-integer values (e.g. log-normalised or scaled data)"
        fix = ("preprocess them as the training cells were (e.g. sc.pp.normalize_total, "
               "sc.pp.log1p)")
    else:
        opts = spec.resolved(image=src.image_shape is not None)
        own = [k for k in ("normalize", "log1p") if opts[k]]
        given = "non-integer values (normalised, log-transformed or scaled data?)"
        itself = f", which it transforms itself: {', '.join(f'{k}=True' for k in own)}"
        trained_on = f"integers only (e.g. raw counts{itself if own else ''})"
        fix = "give their raw values, as for the training cells"
    message = (
        f"modality {src.name!r}: {src.where} of the given cells holds {given}, but the "
        f"model was trained on {trained_on}. The encoder reads the values as they are, so "
        f"cells in other units embed and translate wrongly: {fix}"
    )
    if message not in src.warned:
        src.warned.add(message)
        warnings.warn(message, UserWarning, stacklevel=user_stacklevel())
