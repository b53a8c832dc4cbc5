"""Write large matrices to .h5ad block by block, and open .h5ad / .zarr stores lazily.

An .h5ad file is written in two steps: anndata writes everything except the big
matrices (``obs``, ``var``, ``uns``, small ``obsm`` entries), then the matrices are
created as HDF5 datasets with anndata's encoding attributes and filled block by block,
so memory holds one block at a time. The file is written under a temporary name in the
target's folder and renamed into place only when complete: an error leaves no
half-written file behind (and an existing file untouched).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._utils import atomic_file, user_stacklevel

_CHUNK_BYTES = 1 << 16  # HDF5 chunks of appendable datasets: small, for fast random row reads


def write_skeleton(
    path: Path, *, obs: pd.DataFrame, var: pd.DataFrame, uns: Mapping | None = None,
    obsm: Mapping[str, np.ndarray] | None = None,
) -> None:
    """An .h5ad without ``X`` (and with only small ``obsm`` entries), to be filled in.

    What anndata cannot write (e.g. an ``obs`` column mixing numbers and strings) is a
    ValueError naming the element, as anndata's own note names it."""
    try:
        AnnData(obs=obs, var=var, uns=dict(uns or {}), obsm=dict(obsm or {})).write_h5ad(path)
    except (TypeError, ValueError) as err:
        where = " ".join(getattr(err, "__notes__", []))  # "... while writing key 'x' ... /obs"
        # (a column's error names its element's path; an element's own error, e.g. a
        # reserved column name, the element as the key written to /)
        found = (re.search(r"to /(obs|var|uns|obsm)\b", where)
                 or re.search(r"key '(obs|var|uns|obsm)' of .* to /(?!\w)", where))
        element = found.group(1) if found else None
        what = {"obs": "the annotations of the cells (obs)",
                "var": "the features' annotations (var)",
                "uns": "the unstructured annotations (uns)", "obsm": "the cells' arrays (obsm)",
                None: "the annotations of the cells or features (obs / var)"}[element]
        mixed = element in ("obs", "var", None) and "implicitly convert" in str(err)
        fix = (f"; a column of mixed types in {element or 'obs / var'} can be made writable "
               "with .astype(str)" if mixed else "")
        raise ValueError(
            f"cannot write {what} ({err}{'; ' + where if where else ''}){fix}"
        ) from None


def _encode(obj, encoding: str, version: str) -> None:
    obj.attrs["encoding-type"] = encoding
    obj.attrs["encoding-version"] = version


class DenseRows:
    """A dense float32 ``(n_obs, *shape)`` array in an HDF5 file, filled block by block."""

    def __init__(self, h5, key: str, n_obs: int, shape: tuple[int, ...], dtype=np.float32) -> None:
        self.ds = h5.create_dataset(key, shape=(n_obs, *shape), dtype=dtype)
        _encode(self.ds, "array", "0.2.0")
        self.n_obs = n_obs
        self.filled = 0

    def write(self, block: np.ndarray) -> None:
        """Append the next ``len(block)`` rows."""
        stop = self.filled + block.shape[0]
        if stop > self.n_obs:
            raise ValueError(f"{stop} rows written to an array of {self.n_obs}")
        if block.shape[0]:
            self.ds[self.filled : stop] = block.reshape(block.shape[0], *self.ds.shape[1:])
        self.filled = stop

    def close(self) -> None:
        """Check that every row was written."""
        if self.filled != self.n_obs:
            raise ValueError(f"only {self.filled} of {self.n_obs} rows were written")


class CSRRows:
    """A CSR matrix in an HDF5 file (anndata's ``csr_matrix`` encoding), appended block by
    block; ``data`` and ``indices`` grow in 64 KiB chunks (random rows read fast), ``indptr``
    is int64."""

    def __init__(self, h5, key: str, n_obs: int, n_vars: int, dtype=np.float32) -> None:
        self.group = h5.create_group(key)
        _encode(self.group, "csr_matrix", "0.1.0")
        self.group.attrs["shape"] = np.array([n_obs, n_vars], dtype=np.int64)
        self.n_obs, self.n_vars = n_obs, n_vars
        idx_dtype = np.int32 if n_vars <= np.iinfo(np.int32).max else np.int64
        self.data = self._appendable("data", np.dtype(dtype))
        self.indices = self._appendable("indices", np.dtype(idx_dtype))
        self.indptr = self.group.create_dataset("indptr", shape=(n_obs + 1,), dtype=np.int64)
        self.indptr[0] = 0
        self.filled = 0
        self.nnz = 0

    def _appendable(self, name: str, dtype: np.dtype):
        chunk = max(1, _CHUNK_BYTES // dtype.itemsize)
        return self.group.create_dataset(
            name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=dtype
        )

    def write(self, block) -> None:
        """Append the next rows (a dense array or any scipy sparse matrix)."""
        csr = sp.csr_matrix(block)
        if csr.shape[1] != self.n_vars:
            raise ValueError(f"block has {csr.shape[1]} columns, expected {self.n_vars}")
        stop = self.filled + csr.shape[0]
        if stop > self.n_obs:
            raise ValueError(f"{stop} rows written to a matrix of {self.n_obs}")
        nnz = self.nnz + csr.nnz
        if csr.nnz:
            self.data.resize((nnz,))
            self.indices.resize((nnz,))
            self.data[self.nnz : nnz] = csr.data.astype(self.data.dtype, copy=False)
            self.indices[self.nnz : nnz] = csr.indices.astype(self.indices.dtype, copy=False)
        if csr.shape[0]:
            self.indptr[self.filled + 1 : stop + 1] = csr.indptr[1:].astype(np.int64) + self.nnz
        self.filled, self.nnz = stop, nnz

    def close(self) -> None:
        """Check that every row was written."""
        if self.filled != self.n_obs:
            raise ValueError(f"only {self.filled} of {self.n_obs} rows were written")


def check_output_h5ad(out: str | os.PathLike, read_from) -> None:
    """``ValueError`` unless ``out`` names an .h5ad file, none of the files in ``read_from``
    (paths, or ``None`` for cells held in memory) that the rows to write are read from."""
    if Path(out).suffix.lower() != ".h5ad":
        raise ValueError(f"out must be an .h5ad file path, got {os.fspath(out)!r}")
    if Path(out).resolve() in {Path(p).resolve() for p in read_from if p is not None}:
        raise ValueError(
            f"out {os.fspath(out)!r} is the file the cells are read from; write elsewhere"
        )


def write_rows_h5ad(
    path: str | os.PathLike,
    blocks: Iterator[np.ndarray],
    *,
    n_obs: int,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    uns: Mapping | None = None,
    images: Mapping[str, tuple[int, ...]] | None = None,
    overwrite: bool = False,
) -> None:
    """Write an AnnData whose dense ``X`` arrives as row blocks, never all in memory.

    Parameters
    ----------
    path
        The .h5ad file (written atomically).
    blocks
        Consecutive row blocks of ``X``, ``n_obs`` rows and ``len(var)`` columns in all.
    n_obs, obs, var, uns
        Rows, cell and feature annotations, unstructured metadata.
    images
        ``{obsm_key: shape}``: also store ``X``'s rows reshaped to ``shape`` in ``obsm``.
    overwrite
        Replace an existing file (only once the new one is complete).
    """
    import h5py

    if len(obs) != n_obs:
        raise ValueError(f"obs has {len(obs)} rows, expected {n_obs}")

    failed = []  # the blocks' own error (the model's computation), passed on as it is

    def rows() -> Iterator[np.ndarray]:
        it = iter(blocks)
        while True:
            try:
                block = next(it)
            except StopIteration:
                return
            except BaseException:
                failed.append(True)
                raise
            yield block

    try:
        with atomic_file(path, overwrite=overwrite) as tmp:
            try:
                write_skeleton(tmp, obs=obs, var=var, uns=uns)
                with h5py.File(tmp, "r+") as f:
                    writers = [DenseRows(f, "X", n_obs, (len(var),))]
                    for key, shape in (images or {}).items():
                        writers.append(DenseRows(f, f"obsm/{key}", n_obs, tuple(shape)))
                    for block in rows():
                        for w in writers:
                            w.write(block)
                    for w in writers:
                        w.close()
            except (OSError, RuntimeError) as err:  # (h5py's words for a full disk)
                if failed:
                    raise
                raise OSError(
                    f"writing {path} failed: {err} - is the disk full, or a file-size limit "
                    "reached? (nothing was written at the path)"
                ) from err
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:  # a generator's clean-up runs now, not at garbage collection
            close()


def read_backed(path: str | os.PathLike) -> AnnData:
    """Open an .h5ad file or a .zarr store without loading its matrices.

    ``obs``, ``var``, ``obsm``, ``varm``, ``obsp``, ``varp`` and ``uns`` are read into
    memory; ``X`` and every layer stay on disk (sparse matrices as anndata's backed sparse
    datasets, dense ones as HDF5 / zarr arrays) and are read per batch by training,
    embedding and translation. Unlike ``anndata.read_h5ad(path, backed="r")``, which keeps
    only ``X`` on disk, layers are not loaded either. ``.raw`` is not read (a warning says
    so: ``anndata.read_h5ad`` reads it), and files written by anndata before 0.7 are refused
    (re-save them with anndata). The file stays open as long as the returned object is in
    use.

    Parameters
    ----------
    path
        An ``.h5ad`` file, or a ``.zarr`` store (a directory).

    Returns
    -------
    An AnnData whose ``X`` and layers are read from ``path`` on demand.
    """
    p = Path(path)
    if p.is_dir():
        import zarr

        g = zarr.open(str(p), mode="r")
    else:
        import h5py

        g = h5py.File(p, "r")
    try:
        return _read_open(p, g)
    except BaseException:
        if hasattr(g, "close"):  # (an error leaves no file open)
            g.close()
        raise


def _read_open(p: Path, g) -> AnnData:
    """:func:`read_backed` of the open file or store ``g``."""
    try:
        from anndata.io import read_elem, sparse_dataset
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata.experimental import read_elem, sparse_dataset

    if "mod" in g:
        zarr = p.is_dir()
        raise ValueError(
            f"{p} holds a MuData (modalities under 'mod/'); open it with "
            + ("mudata.read_zarr(path), or one modality lazily with "
               f"tm.datasets.read_backed('{p}/mod/<name>')" if zarr else
               "mudata.read_h5mu(path, backed=True), or read one modality's .h5ad")
        )

    def lazy(elem):
        if elem.attrs.get("encoding-type") in ("csr_matrix", "csc_matrix"):
            return sparse_dataset(elem)
        return elem

    def read(key, default):
        return read_elem(g[key]) if key in g else default

    for key in ("obs", "var"):
        if key in g and g[key].attrs.get("encoding-type") != "dataframe":
            raise ValueError(
                f"{p}: {key} is stored in the layout of anndata < 0.7, which read_backed does "
                "not read; re-save the file with anndata (anndata.read_h5ad(path)"
                ".write_h5ad(new_path))"
            )
    if "raw" in g and "X" in g["raw"]:  # (zarr stores hold an empty raw group without one)
        warnings.warn(
            f"{p}: its .raw (a second matrix, e.g. counts before normalisation) is not read "
            "by read_backed, and a copy written from the result lacks it; anndata.read_h5ad "
            "reads it (into memory)",
            UserWarning, stacklevel=user_stacklevel(),
        )
    X = lazy(g["X"]) if "X" in g else None
    layers = {k: lazy(g["layers"][k]) for k in g["layers"]} if "layers" in g else {}
    return AnnData(
        X=X,
        obs=read("obs", None),
        var=read("var", None),
        uns=read("uns", {}),
        obsm=read("obsm", {}),
        varm=read("varm", {}),
        obsp=read("obsp", {}),
        varp=read("varp", {}),
        layers=layers,
    )


__all__ = ["CSRRows", "DenseRows", "read_backed", "write_rows_h5ad", "write_skeleton"]
