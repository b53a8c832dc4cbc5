"""Chunked, memory-bounded nearest-neighbour and distance-rank helpers.

Every metric that needs pairwise distances goes through this module.  Distances are
never materialised as a full ``n x n`` matrix: query rows are processed in chunks of
``chunk_size`` rows against all reference rows, so peak memory is
``O(chunk_size * n_ref)``.

Exactness
---------
A fast block of *approximate* distances is computed with torch (squared Euclidean via
one matrix product of augmented, centred data, or ``torch.cdist`` for L1), together
with a certified per-row error bound.  Every comparison whose outcome the bound cannot
decide is redone with :meth:`_BlockDistance.exact`, a deterministic float64 routine
that evaluates each pair with the same sequence of operations.  All results are
therefore *as if* computed with the exact routine: pairs with bitwise-identical
difference vectors (e.g. duplicated rows) have exactly equal distances, so the
documented tie rules hold.  Euclidean comparisons use squared distances (same order).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import sparse

if TYPE_CHECKING:
    from typing import TypeAlias

    from anndata import AnnData
    from numpy.typing import ArrayLike

    #: What the metrics take as an embedding (:func:`as_embedding`): an array, a tensor,
    #: a numeric DataFrame, or an AnnData standing for its ``X``.
    EmbeddingLike: TypeAlias = ArrayLike | AnnData | pd.DataFrame | torch.Tensor

from .._utils import align_to_cells, is_missing_text, user_stacklevel

#: Target size in bytes of one ``chunk x n`` float64 block.
DEFAULT_BLOCK_BYTES = 64 * 2**20

_METRIC_ALIASES = {
    "euclidean": "euclidean",
    "l2": "euclidean",
    "l1": "l1",
    "manhattan": "l1",
    "cityblock": "l1",
}

_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- checks
def check_metric(metric: str) -> str:
    """Return the canonical metric name (``"euclidean"`` or ``"l1"``)."""
    if not isinstance(metric, str) or metric.lower() not in _METRIC_ALIASES:
        raise ValueError(
            f"metric must be one of {sorted(_METRIC_ALIASES)}; got {metric!r}"
        )
    return _METRIC_ALIASES[metric.lower()]


def unwrap_anndata(x: Any, name: str) -> Any:
    """An AnnData's ``X`` (read into memory if backed); anything else unchanged."""
    try:
        from anndata import AnnData
    except ImportError:  # pragma: no cover - anndata is a dependency
        return x
    if not isinstance(x, AnnData):
        return x
    if x.X is None:
        raise ValueError(
            f"{name} is an AnnData without X; pass the matrix itself (e.g. adata.obsm[...])"
        )
    X = x.X
    if hasattr(X, "to_memory"):  # backed sparse dataset
        return X.to_memory()
    if not isinstance(X, np.ndarray) and not sparse.issparse(X) and hasattr(X, "shape"):
        return X[()]  # backed dense h5py dataset
    return X


# beyond this, squared distances overflow float64 (1e308)
_HUGE = 1e150


def as_embedding(
    x: Any, name: str, *, min_rows: int = 1, columns: str = "dimensions", ties: bool = False
) -> np.ndarray:
    """Validate an embedding and return it as a C-contiguous float64 array.

    Parameters
    ----------
    x
        Array-like (numpy array, torch tensor, ...) of shape ``(n_cells, n_dims)``, or an
        AnnData whose ``X`` it is.
    name
        Argument name used in error messages.
    min_rows
        Minimum number of rows required.
    columns
        What the columns are, for the error messages (``"dimensions"``, ``"features"``).
    ties
        The caller is a matching metric, which counts a tie as not closer: warn where all,
        or more than half, of the cells share their coordinates (a collapsed embedding
        scores near-perfect by ties).

    Returns
    -------
    The validated ``float64`` array.
    """
    hint = ""
    if type(x).__name__ == "AnnData":
        obsm = list(getattr(x, "obsm", {}).keys())
        hint = (f"; an AnnData stands for its X - to compare embeddings pass "
                f"adata.obsm[key] (it holds {obsm})" if obsm else "")
    x = unwrap_anndata(x, name)
    if sparse.issparse(x):
        raise ValueError(f"{name} must be a dense 2-D array, got a sparse matrix{hint}")
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = (x.double() if x.is_floating_point() else x).numpy()  # (bfloat16 has no numpy)
    if isinstance(x, pd.DataFrame) and len(x.columns) and all(
            pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_complex_dtype(t)
            for t in x.dtypes):
        x = x.to_numpy(dtype=np.float64, na_value=np.nan)  # (nullable Float64 / Int64 columns)
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (cells x {columns}); got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    if arr.shape[0] < min_rows:
        raise ValueError(
            f"{name} needs at least {min_rows} row(s); got {arr.shape[0]}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has zero columns ({columns})")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if arr.size and max(arr.max(), -arr.min()) > _HUGE:  # (no copy of a large array)
        raise ValueError(
            f"{name} has values beyond {_HUGE:.0e} in magnitude: squared distances between "
            "them overflow (every distance would tie); rescale it"
        )
    if ties and len(arr) > 1 and not np.ptp(arr, axis=0).any():
        warnings.warn(
            f"{name}: all {len(arr)} cells have the same coordinates (a collapsed embedding, "
            "e.g. an untrained or dead network); distances tie everywhere, and the matching "
            "metrics, which count a tie as not closer, score such ties as matches",
            UserWarning, stacklevel=user_stacklevel(),
        )
    elif ties and len(arr) > 3:
        shared = shared_coordinates(arr)  # (partly collapsed: most cells on a few points)
        if 2 * shared > len(arr):
            warnings.warn(
                f"{name}: {shared} of {len(arr)} cells share their coordinates with another "
                "cell (a partly collapsed embedding?); distances tie among them, and the "
                "matching metrics (FOSCTTM, partner-in-top-k), which count a tie as not "
                "closer, score such ties as matches",
                UserWarning, stacklevel=user_stacklevel(),
            )
    return arr


def shared_coordinates(arr: np.ndarray) -> int:
    """How many rows of ``arr`` equal another row (hashed rows, O(n))."""
    return int(pd.DataFrame(arr).duplicated(keep=False).sum())


def as_dense_matrix(a: Any, name: str, *, min_rows: int = 1) -> np.ndarray:
    """Validate a ``(cells, features)`` matrix and return it as dense C-contiguous float64.

    Parameters
    ----------
    a
        Dense array-like or scipy sparse matrix of shape ``(n_cells, n_features)``, or an
        AnnData whose ``X`` it is (read into memory if backed).  Sparse input (also a
        sparse ``X``) is densified.
    name
        Argument name used in error messages.
    min_rows
        Minimum number of rows (cells) required.

    Returns
    -------
    The validated ``float64`` array.

    Raises
    ------
    ValueError
        If ``a`` is not 2-D or not numeric, has too few rows, no columns, or contains
        NaN / infinite values, or is an AnnData without ``X``.
    """
    a = unwrap_anndata(a, name)  # first, so that a sparse X is densified like a matrix
    if sparse.issparse(a):
        a = a.toarray()
    return as_embedding(a, name, min_rows=min_rows, columns="features")


def check_same_dims(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> None:
    """Raise if two embeddings do not live in the same space (column count)."""
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of columns "
            f"(a shared latent space); got {x.shape[1]} and {y.shape[1]}"
        )


def check_paired(
    x: Any, y: Any, *, names: tuple[str, str] = ("x", "y"), min_rows: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two paired embeddings (same cells in the same row order). Where both name
    the same cells (AnnData ``obs_names``, a DataFrame's index: the same set of unique
    names), they must be in the same order; other names (each modality's own, e.g. with a
    suffix) pair by position."""
    check_same_rows(axis_names(x), axis_names(y), names)
    xa = as_embedding(x, names[0], min_rows=min_rows, ties=True)
    ya = as_embedding(y, names[1], min_rows=min_rows, ties=True)
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must be paired (same number of rows, row i = "
            f"the same cell); got {xa.shape[0]} and {ya.shape[0]} rows"
        )
    check_same_dims(xa, ya, names)
    return xa, ya


def axis_names(x: Any, axis: str = "obs") -> Any:
    """The cell (``"obs"``) or feature (``"var"``) names of an AnnData or a DataFrame; ``None``
    for arrays and for a DataFrame's default RangeIndex (positions, not names)."""
    from anndata import AnnData

    if isinstance(x, AnnData):
        return x.obs_names if axis == "obs" else x.var_names
    if isinstance(x, pd.DataFrame):
        names = x.index if axis == "obs" else x.columns
        return None if isinstance(names, pd.RangeIndex) else names
    return None


def check_same_rows(a: Any, b: Any, names: tuple[str, str]) -> None:
    """``ValueError`` if ``a`` and ``b`` name the same cells (each name once, the same set)
    in another order."""
    if a is None or b is None or len(a) != len(b) or a.equals(b):
        return
    if not (a.is_unique and b.is_unique) or set(a) != set(b):
        return  # partly shared or repeated names (e.g. AnnData's default "0".."n-1"): positions
    i = int(np.flatnonzero(np.asarray(a, dtype=object) != np.asarray(b, dtype=object))[0])
    j = int(b.get_loc(a[i]))
    raise ValueError(
        f"{names[0]} and {names[1]} hold the same cells in another order ({a[i]!r} is row {i} "
        f"of {names[0]} and row {j} of {names[1]}): rows must be the same cells; reorder "
        f"{names[1]} to {names[0]}'s cells ({names[1]}[{names[0]}.obs_names] for AnnData, "
        f"{names[1]}.loc[{names[0]}.index] for DataFrames)"
    )


def check_labels(labels: Any, n: int, name: str, cells: Any = None) -> np.ndarray:
    """Validate a 1-D label vector of length ``n``; a pandas Series is aligned by its index
    to ``cells`` (the embedding's obs_names, when it is an AnnData), else taken by position."""
    if cells is not None:
        labels = align_to_cells(labels, cells, name)
    if isinstance(labels, str):
        raise ValueError(
            f"{name} must be one label per cell (e.g. adata.obs[{labels!r}]), not an obs key"
        )
    if hasattr(labels, "to_numpy") and hasattr(labels, "dtype"):  # pandas: NaN stays NaN
        labels = labels.to_numpy(dtype=object) if str(labels.dtype) == "category" else labels.to_numpy()
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(
            f"{name} has {lab.shape[0]} entries but the embedding has {n} rows"
        )
    return lab


def labelled(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the entries that carry a label: not None / NaN / pd.NA, nor a string
    that stands for one ("nan", "None", "<NA>", blank: what ``astype(str)`` leaves of them),
    as the model reads ``labels_key``."""
    if labels.dtype.kind in "biufcmM":  # numbers: only NaN / NaT are missing
        return ~np.asarray(pd.isna(labels), dtype=bool).reshape(labels.shape)
    # strings and objects: each distinct value judged once
    codes, uniques = pd.factorize(labels.ravel(), use_na_sentinel=True)
    missing_u = np.array(
        [pd.isna(v) or (isinstance(v, str) and is_missing_text(v)) for v in uniques], dtype=bool
    )
    missing = codes < 0  # (NaN, None, pd.NA)
    if len(uniques):
        missing |= missing_u[np.maximum(codes, 0)]
    return ~missing.reshape(labels.shape)


def _isin(values: np.ndarray, among: Any) -> np.ndarray:
    """``np.isin`` by hashing, for labels of mixed types (``"0"`` and ``1``) too (both sides
    made objects alike: datetimes as timestamps, also ``numpy.datetime64`` objects, whose
    hashes match timestamps' on some numpy versions only)."""
    def objects(v: Any) -> pd.Series:
        s = pd.Series(v if isinstance(v, np.ndarray) else list(v), dtype=object)
        return s.infer_objects().astype(object)

    return objects(values).isin(objects(among)).to_numpy()


def check_shared_labels(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    """Raise when two label vectors have no value in common (e.g. ``0`` against ``"0"``),
    which would score every cell as wrong."""
    va, vb = a[labelled(a)], b[labelled(b)]
    if len(va) and len(vb) and not _isin(va, vb).any():
        raise ValueError(
            f"{names[0]} and {names[1]} share no label (e.g. {va[0]!r} against {vb[0]!r}); "
            "check that both use the same names and types for the classes"
        )


def check_ks(k: int | Iterable[int], name: str = "k") -> tuple[int, ...]:
    """Normalise ``k`` (an int or an iterable of ints) to a tuple of positive ints."""
    if isinstance(k, np.ndarray) and k.ndim == 0:
        k = k.item()
    if isinstance(k, (int, np.integer)):
        ks: tuple = (k,)
    elif isinstance(k, (str, bytes)) or not hasattr(k, "__iter__"):
        raise ValueError(f"{name} must be an integer or a list of integers; got {k!r}")
    else:
        ks = tuple(k)
    if not ks:
        raise ValueError(f"{name} must contain at least one value")
    out = []
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} values must be integers; got {v!r}")
        if v < 1:
            raise ValueError(f"{name} values must be >= 1; got {v}")
        out.append(int(v))
    return tuple(out)


def resolve_chunk_size(chunk_size: int | None, n_query: int, row_width: int) -> int:
    """Number of query rows per chunk.

    ``None`` picks the largest chunk such that ``chunk * row_width`` float64 values take
    about :data:`DEFAULT_BLOCK_BYTES` (64 MiB).
    """
    if chunk_size is None:
        chunk = max(1, DEFAULT_BLOCK_BYTES // (8 * max(int(row_width), 1)))
    else:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
            raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
        chunk = int(chunk_size)
    return max(1, min(chunk, n_query))


# ------------------------------------------------------------------------ distances
class _BlockDistance:
    """Approximate distance blocks with certified error bounds, plus exact pairs.

    Distances are squared Euclidean (``"euclidean"``) or L1 (``"l1"``).  Blocks are
    returned as *scores* ``S`` (higher = closer) with ``D ~= offset[r] - S[r, j]``:
    for Euclidean ``S = 2 q.r - |r|^2`` (one matrix product of augmented, centred
    data) and ``offset = |q|^2``; for L1 ``S = -D`` and ``offset = 0``.

    Parameters
    ----------
    query, ref
        Validated float64 arrays with the same number of columns (may be the same
        object).
    metric
        Canonical metric name.
    """

    def __init__(self, query: np.ndarray, ref: np.ndarray, metric: str) -> None:
        self.metric = metric
        self.query = query
        self.ref = ref
        same = ref is query
        n_dims = query.shape[1]
        if same:
            center = query.mean(axis=0)
        else:
            center = (query.sum(0) + ref.sum(0)) / (query.shape[0] + ref.shape[0])
        qc = query - center
        rc = qc if same else ref - center
        if metric == "euclidean":
            q_scale = np.einsum("ij,ij->i", qc, qc)
            r_scale = q_scale if same else np.einsum("ij,ij->i", rc, rc)
            self._qaug = np.concatenate([2.0 * qc, -np.ones((qc.shape[0], 1))], axis=1)
            raug_t = np.empty((n_dims + 1, rc.shape[0]))
            raug_t[:n_dims] = rc.T
            raug_t[n_dims] = r_scale
            self._raug_t = torch.from_numpy(raug_t)
            self._offset = q_scale
        else:
            q_scale = np.abs(qc).sum(1)
            r_scale = q_scale if same else np.abs(rc).sum(1)
            self._qt = torch.from_numpy(qc)
            self._rt = self._qt if same else torch.from_numpy(rc)
            self._offset = np.zeros(qc.shape[0])
        # Generous bound on |approx - exact| (float64 rounding of the matrix product,
        # of the centring, of the threshold arithmetic and of the exact routine),
        # relative to the centred norms; valid for every entry of a query row.
        rel = 32.0 * (n_dims + 4) * _EPS
        self._tol = rel * (q_scale + r_scale.max()) + np.finfo(np.float64).tiny
        self._pair_batch = max(1, DEFAULT_BLOCK_BYTES // (16 * n_dims))

    @property
    def n_query(self) -> int:
        return self.query.shape[0]

    @property
    def n_ref(self) -> int:
        return self.ref.shape[0]

    def make_buffer(self, chunk: int) -> np.ndarray | None:
        """Reusable output buffer for :meth:`scores` (avoids page faults per chunk)."""
        if self.metric == "euclidean":
            return np.empty((chunk, self.n_ref), dtype=np.float64)
        return None

    def scores(self, start: int, stop: int, out: np.ndarray | None) -> np.ndarray:
        """Scores of query rows ``start:stop`` against all reference rows."""
        if self.metric == "euclidean":
            assert out is not None
            res = out[: stop - start]
            torch.mm(
                torch.from_numpy(self._qaug[start:stop]), self._raug_t, out=torch.from_numpy(res)
            )
            return res
        res = torch.cdist(self._qt[start:stop], self._rt, p=1.0).numpy()
        np.negative(res, out=res)
        return res

    def offset(self, start: int, stop: int) -> np.ndarray:
        """Per-row offsets: ``D ~= offset[:, None] - S``."""
        return self._offset[start:stop]

    def tol(self, start: int, stop: int) -> np.ndarray:
        """Per-row bound on ``|approx - exact|`` valid for every entry of the row."""
        return self._tol[start:stop]

    def exact(self, qi: np.ndarray, rj: np.ndarray) -> np.ndarray:
        """Exact (deterministic) distances of the pairs ``(query[qi], ref[rj])``.

        Each pair is evaluated with the same sequence of float64 operations on the
        original (uncentred) data, so identical difference vectors give
        bitwise-identical distances, and ``d(a, b) == d(b, a)``.
        """
        qi = np.asarray(qi, dtype=np.int64)
        rj = np.asarray(rj, dtype=np.int64)
        out = np.empty(qi.shape[0], dtype=np.float64)
        step = self._pair_batch
        for s in range(0, qi.shape[0], step):
            diff = self.query[qi[s : s + step]] - self.ref[rj[s : s + step]]
            if self.metric == "euclidean":
                np.multiply(diff, diff, out=diff)
            else:
                np.abs(diff, out=diff)
            acc = diff[:, 0].copy()
            for c in range(1, diff.shape[1]):
                acc += diff[:, c]
            out[s : s + step] = acc
        return out


def blocks(
    dist: _BlockDistance, chunk_size: int | None
) -> Iterable[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(start, stop, scores, mask)`` of the query rows ``start:stop``: their scores
    against every reference row, and a boolean array of the same shape to work in, chunk
    by chunk. The mask, and the scores where the distance has a buffer
    (:meth:`_BlockDistance.make_buffer`), are reused: a block is valid until the next is
    drawn (no page faults per chunk)."""
    nq = dist.n_query
    chunk = resolve_chunk_size(chunk_size, nq, dist.n_ref)
    buf = dist.make_buffer(chunk)
    mask_buf = np.empty((chunk, dist.n_ref), dtype=bool)
    for s in range(0, nq, chunk):
        e = min(s + chunk, nq)
        yield s, e, dist.scores(s, e, buf), mask_buf[: e - s]


def nearest(dist: _BlockDistance, chunk_size: int | None) -> np.ndarray:
    """Index of the nearest reference row of every query row.

    Among exactly equidistant reference rows the lowest index wins.

    Parameters
    ----------
    dist
        Distance object.
    chunk_size
        Query rows per chunk (``None``: automatic).

    Returns
    -------
    int64 indices into the reference rows.
    """
    idx = np.empty(dist.n_query, dtype=np.int64)
    for s, e, scores, mask in blocks(dist, chunk_size):
        _nearest_block(dist, s, e, scores, mask, idx)
    return idx


def nearest_both(dist: _BlockDistance, chunk_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest` of the query rows among the reference rows, and of the reference rows
    among the query rows, from one pass over the blocks.

    The second comes from the blocks' columns: each column's two smallest approximate
    distances are kept; where they differ by more than twice the largest error bound of any
    entry, the smaller is the nearest query row (no other can be as near); the other
    columns (equidistant rows, duplicated cells) are searched again as :func:`nearest`
    searches, so the lowest index wins among exactly equidistant rows.
    """
    n_ref = dist.n_ref
    idx = np.empty(dist.n_query, dtype=np.int64)
    best = np.full(n_ref, np.inf)
    second = np.full(n_ref, np.inf)
    back = np.zeros(n_ref, dtype=np.int64)
    cols = np.arange(n_ref)
    for s, e, scores, mask in blocks(dist, chunk_size):
        approx = dist.offset(s, e)[:, None] - scores  # (a new array: D ~= offset - S)
        _nearest_block(dist, s, e, scores, mask, idx)
        rows = approx.argmin(axis=0)
        low = approx[rows, cols]
        approx[rows, cols] = np.inf
        next_low = approx.min(axis=0)
        second = np.minimum(np.minimum(second, next_low), np.maximum(best, low))
        better = low < best
        back[better] = s + rows[better]
        best = np.minimum(best, low)
    close = np.flatnonzero(second - best <= 2.0 * dist.tol(0, dist.n_query).max())
    if close.size:
        back[close] = nearest(_BlockDistance(dist.ref[close], dist.query, dist.metric),
                              chunk_size)
    return idx, back


def _nearest_block(
    dist: _BlockDistance, s: int, e: int, scores: np.ndarray, mask: np.ndarray,
    out: np.ndarray,
) -> None:
    """:func:`nearest` of the query rows ``s:e`` from their block of ``scores`` (``mask``: a
    boolean work array of its shape), written to ``out[s:e]``."""
    out[s:e] = scores.argmax(axis=1)
    # exact_j <= exact_min  =>  S_j >= S_max - 2 tol: the candidates
    floor = (scores.max(axis=1) - 2.0 * dist.tol(s, e))[:, None]
    np.greater_equal(scores, floor, out=mask)
    multi = np.flatnonzero(np.count_nonzero(mask, axis=1) > 1)
    if multi.size == 0:
        return
    r_idx, c_idx = np.nonzero(scores[multi] >= floor[multi])
    ex = dist.exact(s + multi[r_idx], c_idx)
    order = np.lexsort((c_idx, ex, r_idx))
    r_sorted = r_idx[order]
    first = np.ones(r_sorted.shape[0], dtype=bool)
    first[1:] = r_sorted[1:] != r_sorted[:-1]
    out[s + multi[r_sorted[first]]] = c_idx[order][first]


def count_before(
    dist: _BlockDistance,
    thresholds: np.ndarray,
    *,
    tie_before: np.ndarray | None,
    exclude: np.ndarray | None,
    chunk_size: int | None,
) -> np.ndarray:
    """Rank-type counts of every query row against the reference.

    For query row ``r`` returns ``#{j : d(q_r, R_j) < t_r} + #{j < tie_before_r :
    d(q_r, R_j) == t_r}`` where ``t_r = thresholds[r]`` must be an *exact* distance
    (from :meth:`_BlockDistance.exact`).  Column ``exclude_r`` (if given) is skipped; it
    must be a column whose distance equals ``t_r`` and that is not counted by the rule
    above (i.e. ``exclude_r >= tie_before_r``).

    Returns
    -------
    int64 counts, one per query row.
    """
    counts = np.zeros(dist.n_query, dtype=np.int64)
    for s, e, scores, mask in blocks(dist, chunk_size):
        count_block(dist, s, e, scores, mask, thresholds, tie_before=tie_before,
                    exclude=exclude, out=counts)
    return counts


def count_block(
    dist: _BlockDistance,
    s: int,
    e: int,
    scores: np.ndarray,
    mask: np.ndarray,
    thresholds: np.ndarray,
    *,
    tie_before: np.ndarray | None,
    exclude: np.ndarray | None,
    out: np.ndarray,
) -> None:
    """:func:`count_before` of the query rows ``s:e`` from their block of ``scores`` (its
    ``exclude`` entries are overwritten; ``mask``: a boolean work array of its shape),
    written to ``out[s:e]``."""
    m = e - s
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if exclude is not None:
        scores[np.arange(m), exclude[s:e]] = -np.inf
    # D < t  <=>  S > offset - t ; certain above hi, undecided in [lo, hi]
    base = dist.offset(s, e) - thresholds[s:e]
    tol = dist.tol(s, e)
    hi = (base + tol)[:, None]
    lo = (base - tol)[:, None]
    n_sure = np.count_nonzero(np.greater(scores, hi, out=mask), axis=1)
    n_maybe = np.count_nonzero(np.greater_equal(scores, lo, out=mask), axis=1)
    out[s:e] = n_sure
    amb = np.flatnonzero(n_maybe != n_sure)
    if amb.size == 0:
        return
    sub = scores[amb]
    r_idx, c_idx = np.nonzero((sub >= lo[amb]) & (sub <= hi[amb]))
    rows = s + amb[r_idx]
    ex = dist.exact(rows, c_idx)
    tr = thresholds[rows]
    hit = ex < tr
    if tie_before is not None:
        hit |= (ex == tr) & (c_idx < tie_before[rows])
    out[s:e] += np.bincount(amb[r_idx[hit]], minlength=m)


def _partner_ranks(q: np.ndarray, r: np.ndarray, chunk_size: int | None) -> np.ndarray:
    """For every row i: number of rows of ``r`` strictly closer (Euclidean) to ``q_i``
    than its partner ``r_i``."""
    dist = _BlockDistance(q, r, "euclidean")
    diag = np.arange(q.shape[0], dtype=np.int64)
    thr = dist.exact(diag, diag)
    return count_before(dist, thr, tie_before=None, exclude=diag, chunk_size=chunk_size)


class Searches:
    """The neighbour searches between two embeddings that several metrics share, each run
    once, when first asked for (its results take memory ``O(n)``): a caller scoring one
    embedding with several metrics (:func:`~transmodal.workflows.evaluate_paired`) passes
    one object to each.

    Parameters
    ----------
    x, y
        Checked float64 embeddings (:func:`as_embedding`) with the same columns.
    chunk_size
        Query rows per block (``None``: about 64 MiB per block).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, chunk_size: int | None = None) -> None:
        self.x, self.y, self.chunk_size = x, y, chunk_size
        self._ranks: tuple[np.ndarray, np.ndarray] | None = None
        self._nearest: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def partner_ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """Of paired rows: for each row of ``x``, the rows of ``y`` strictly closer
        (Euclidean) than its partner, and the same for ``y`` against ``x``."""
        if self._ranks is None:
            self._ranks = (_partner_ranks(self.x, self.y, self.chunk_size),
                           _partner_ranks(self.y, self.x, self.chunk_size))
        return self._ranks

    def nearest(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """The nearest row of ``y`` to each row of ``x``, and of ``x`` to each of ``y``
        (:func:`nearest_both`; ``metric`` canonical)."""
        if metric not in self._nearest:
            self._nearest[metric] = nearest_both(_BlockDistance(self.x, self.y, metric),
                                                 self.chunk_size)
        return self._nearest[metric]
