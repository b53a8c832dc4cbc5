"""Differential expression between two groups of cells (real or translated) and its comparison."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse, stats

from .._utils import check_int, is_mudata, user_stacklevel
from ..data._modality import is_number
from ._inputs import get_labels, get_matrix
from ._stats import benjamini_hochberg, overlap_pvalue

#: Target size in bytes of one dense ``cells x features`` block read at a time.
BLOCK_BYTES = 64 * 2**20

DIRECTIONS = ("up", "down")


def _select(values: np.ndarray, spec: Any, name: str) -> np.ndarray:
    """Boolean mask of the cells whose label is ``spec`` (one label or a list of labels)."""
    wanted = list(spec) if isinstance(spec, (list, tuple, set, np.ndarray, pd.Index)) else [spec]
    present = set(values.tolist())
    # True == 1 in Python: a boolean matches only boolean labels, anything else only others
    is_bool = lambda v: isinstance(v, (bool, np.bool_))  # noqa: E731
    kinds = {is_bool(v) for v in present if not pd.isna(v)}
    absent = [w for w in wanted if w not in present or is_bool(w) not in kinds]
    if absent:
        shown = sorted(map(repr, present))[:20]
        hint = ""
        if {str(w) for w in absent} & {str(v) for v in present}:
            hint = " (the same names of another type: match the labels' type, e.g. 0 not '0')"
        raise ValueError(
            f"{name}: label(s) {absent} not found; labels are [{', '.join(shown)}]{hint}"
        )
    return pd.Series(values).isin(wanted).to_numpy()


def _column_blocks(X, rows: np.ndarray, block_bytes: int):
    """Yield ``(start, dense float64 block of X[rows, start:stop])`` over column chunks."""
    width = max(1, block_bytes // (8 * max(len(rows), 1)))
    if sparse.issparse(X):
        X = sparse.csc_matrix(X[rows])  # only these rows, column-sliceable
        rows = slice(None)
    for start in range(0, X.shape[1], width):
        block = X[rows, start : start + width]
        yield start, np.asarray(block.toarray() if sparse.issparse(block) else block, dtype=np.float64)


def _mean_var(X, rows: np.ndarray, block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and unbiased variance over ``rows``, read in column chunks; a
    feature with one value in every row gets that value and a variance of exactly 0 (the
    sums leave rounding noise: 0.1 in every cell averaged to a variance of 1e-33 and a
    difference of 1e-16 from another group of 0.1, which made it the top marker)."""
    mean = np.empty(X.shape[1])
    var = np.empty(X.shape[1])
    for start, block in _column_blocks(X, rows, block_bytes):
        stop = start + block.shape[1]
        m, v = block.mean(0), block.var(0, ddof=1)
        if len(block):
            const = (block == block[:1]).all(0)
            m[const], v[const] = block[0, const], 0.0
        mean[start:stop], var[start:stop] = m, v
    return mean, var


def welch_ttest(m1, v1, n1: int, m2, v2, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Welch's t-test from group means, unbiased variances and sizes.

    The same statistic and p-value as ``scipy.stats.ttest_ind(a, b, equal_var=False)``
    (Welch-Satterthwaite degrees of freedom), except for features constant in both groups:
    ``t = 0, p = 1`` when the means are equal and ``t = +-inf, p = 0`` when they differ
    (scipy returns NaN for the former).

    Parameters
    ----------
    m1
        Means of group 1 (a number or an array, e.g. one per feature).
    v1
        Unbiased variances (``ddof=1``) of group 1, finite and >= 0.
    n1
        Number of cells in group 1 (>= 2).
    m2, v2, n2
        The same for group 2.

    Returns
    -------
    ``(t, pval)`` arrays: the t statistics (group 1 minus group 2) and two-sided p-values.

    Raises
    ------
    ValueError
        If a group has fewer than 2 cells (no variance, no degrees of freedom).
    """
    for name, n in (("n1", n1), ("n2", n2)):
        if not (is_number(n) and n >= 2):
            raise ValueError(f"{name} must be a group size >= 2 (Welch's test needs a variance), got {n!r}")
    for name, v in (("v1", v1), ("v2", v2)):
        v = np.asarray(v, dtype=np.float64)
        if not (np.isfinite(v) & (v >= 0)).all():
            raise ValueError(f"{name}: variances must be finite and >= 0")
    a, b = np.asarray(v1) / n1, np.asarray(v2) / n2
    se2 = a + b
    diff = np.asarray(m1) - np.asarray(m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / np.sqrt(se2)
        dof = se2**2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    const = se2 == 0
    t = np.where(const, np.where(diff == 0, 0.0, np.copysign(np.inf, diff)), t)
    dof = np.where(const, n1 + n2 - 2, dof)
    p = 2.0 * stats.t.sf(np.abs(t), dof)
    return t, np.clip(p, 0.0, 1.0)


def _significance_order(de: pd.DataFrame) -> np.ndarray:
    """Positions sorted by p-value, ties (e.g. underflow to 0) by decreasing ``|t|``."""
    return np.lexsort((-np.abs(de["t"].to_numpy()), de["pval"].to_numpy()))


def _whole_numbers(X, rows: np.ndarray, max_rows: int = 500) -> bool:
    """Whether the non-zero values of up to ``max_rows`` of the ``rows`` (a mask) are all
    whole numbers, and there are some: raw counts rather than log-normalised values."""
    idx = np.flatnonzero(rows)[:max_rows]
    block = X[idx]
    values = block.data if sparse.issparse(block) else np.asarray(block).ravel()
    values = values[values != 0]
    return bool(values.size) and bool(np.all(values == np.round(values)))


def differential_expression(
    adata: AnnData,
    groupby: str | Any,
    group: Any,
    reference: Any = "rest",
    *,
    layer: str | None = None,
    n_top: int = 50,
    alpha: float = 0.05,
    log1p: bool = True,
    pseudocount: float = 1.0,
    block_bytes: int = BLOCK_BYTES,
) -> pd.DataFrame:
    """Two-sided Welch's t-test per feature between two groups of cells, BH-adjusted.

    Works on any AnnData, real or translated (``model.translate(...)``), with a dense or
    sparse matrix; the matrix is read in column chunks of about ``block_bytes``, so only
    the selected rows of a sparse matrix and one dense chunk are held at a time.

    Parameters
    ----------
    adata
        Cells x features.
    groupby
        ``obs`` key of the grouping, or labels per cell. Unlabelled cells (NaN) are in
        neither group (nor in ``"rest"``).
    group
        The label (or list of labels) of the first group.
    reference
        The label (or list of labels) of the second group, or ``"rest"`` for all other cells.
    layer
        Read ``adata.layers[layer]`` instead of ``X``.
    n_top, alpha
        The ``marker`` column flags the ``n_top`` most significant features per direction
        with adjusted p-value below ``alpha`` (the paper: top 50, 0.05).
    log1p
        Whether the values are log-transformed, ``log(1 + x)`` of normalised counts (the usual
        input).  It only changes ``log2fc``: with ``log1p=True``,
        ``log2fc = log2((expm1(mean_group) + pseudocount) / (expm1(mean_reference) +
        pseudocount))``, which for the default pseudocount 1 is ``mean_diff / ln 2`` (the
        mean difference in log2 units); with ``log1p=False`` (linear values such as
        translated counts), ``log2fc = log2((mean_group + pseudocount) / (mean_reference +
        pseudocount))``. Either way NaN where a shifted mean is not positive (e.g. a mean of 0
        with ``pseudocount=0``; scanpy's 1e-9 gives a large finite value there).
    pseudocount
        Added to the linear-scale means before the ratio (default 1).
    block_bytes
        Size of one dense chunk.

    Returns
    -------
    DataFrame indexed by feature name, sorted by p-value (ties by ``|t|``), with columns
    ``mean_group``, ``mean_reference``, ``mean_diff`` (group - reference, in the units of
    the data), ``log2fc``, ``t``, ``pval``, ``pval_adj`` (Benjamini-Hochberg over all
    features), ``direction`` (``"up"`` when higher in the group, ``"down"`` when lower,
    ``"none"``) and ``marker``.  ``attrs`` records the settings and group sizes;
    :func:`top_markers` reads the markers back.

    Warns
    -----
    UserWarning
        With ``log1p=True``, when the data look like linear values (counts): a group mean
        above 30 (log1p values of normalised counts stay far below that), a translation
        whose ``X`` is linear (``uns["transmodal"]["linear"]``: counts, probabilities,
        rates, or a Gaussian's values with log1p undone), or whole numbers only (in up to
        500 cells of the two groups).

    Raises
    ------
    ValueError
        For repeated feature names (the result is indexed by name: call
        ``adata.var_names_make_unique()``), invalid settings, or a group or reference
        without cells.
    """
    if not isinstance(adata, AnnData):
        if is_mudata(adata):
            get_matrix(adata, layer, "adata")  # says which modality to pass
        raise ValueError(f"adata must be an AnnData, got {type(adata).__name__}")
    check_int(n_top, "n_top", minimum=1)
    if not (is_number(alpha) and 0 < alpha <= 1):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    if not (is_number(pseudocount) and pseudocount >= 0):
        raise ValueError(f"pseudocount must be a number >= 0, got {pseudocount!r}")
    check_int(block_bytes, "block_bytes", minimum=1)
    X, names = get_matrix(adata, layer, "adata")
    # the table is indexed, and markers flagged, by name
    _check_unique_names(pd.Index(names), "adata", "adata.var_names_make_unique() first")
    labels = get_labels(adata, groupby, X.shape[0], "groupby", allow_missing=True)
    in_group = _select(labels, group, "group")
    if isinstance(reference, str) and reference == "rest":
        in_ref = ~in_group & ~pd.isna(labels)  # unlabelled cells are in neither group
    else:
        in_ref = _select(labels, reference, "reference")
        if np.any(in_group & in_ref):
            raise ValueError(f"group {group!r} and reference {reference!r} share cells")
    n1, n2 = int(in_group.sum()), int(in_ref.sum())
    if n1 < 2 or n2 < 2:
        raise ValueError(f"each group needs at least 2 cells; group has {n1}, reference {n2}")

    m1, v1 = _mean_var(X, np.flatnonzero(in_group), block_bytes)
    m2, v2 = _mean_var(X, np.flatnonzero(in_ref), block_bytes)
    bad = ~np.isfinite(np.stack([m1, v1, m2, v2])).all(axis=0)
    if bad.any():  # a NaN / inf value makes its feature's mean or variance non-finite
        first = names[np.flatnonzero(bad)[0]] if names is not None else int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"adata: {int(bad.sum())} feature(s) hold NaN or infinite values (e.g. {first!r})"
        )
    t, p = welch_ttest(m1, v1, n1, m2, v2, n2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if log1p:  # log(expm1(m) + c) = m + log1p((c - 1) e^-m): no overflow for large m
            top = float(max(m1.max(initial=0.0), m2.max(initial=0.0)))
            # a translation's units describe its X (not a layer), unless scanpy's log1p has
            # run on it since
            info = {} if "log1p" in adata.uns or layer is not None else (
                adata.uns.get("transmodal") or {}
            )
            units = info.get("units")
            # (translations written before the flag: only counts were known to be linear)
            linear = bool(info.get("linear", units == "counts")) and isinstance(units, str)
            reason = (
                f"group means up to {top:.3g} (log1p values of normalised counts stay far "
                "below 30)" if top > 30
                else f"the translation's values are {units} (uns['transmodal']['units'])"
                if linear
                else "every value is a whole number" if _whole_numbers(X, in_group | in_ref)
                else None
            )
            if reason is not None:
                counts = not linear or units == "counts"
                advice = (
                    "normalise and log1p them first (sc.pp.normalize_total, sc.pp.log1p), or "
                    "pass log1p=False for a fold change of the values themselves (binary 0 / 1 "
                    "data too)" if counts else "pass log1p=False for a fold change of the "
                    "values themselves"
                )
                warnings.warn(
                    f"differential_expression: log1p=True, but these look like linear values"
                    f"{' (counts)' if counts else ''}: {reason}; log2fc would be far off - "
                    f"{advice}",
                    UserWarning, stacklevel=user_stacklevel(),
                )
            ln1 = m1 + np.log1p((pseudocount - 1.0) * np.exp(-m1))
            ln2 = m2 + np.log1p((pseudocount - 1.0) * np.exp(-m2))
            lfc = np.where(np.isfinite(ln1) & np.isfinite(ln2), (ln1 - ln2) / np.log(2.0), np.nan)
        else:
            num, den = m1 + pseudocount, m2 + pseudocount
            lfc = np.where((num > 0) & (den > 0), np.log2(num / den), np.nan)
    diff = m1 - m2
    de = pd.DataFrame(
        {
            "mean_group": m1,
            "mean_reference": m2,
            "mean_diff": diff,
            "log2fc": lfc,
            "t": t,
            "pval": p,
            "pval_adj": benjamini_hochberg(p),
            "direction": np.where(diff > 0, "up", np.where(diff < 0, "down", "none")),
        },
        index=pd.Index(names, name="feature"),
    )
    de = de.iloc[_significance_order(de)]
    markers = top_markers(de, n_top=n_top, alpha=alpha)
    de["marker"] = de.index.isin(markers["up"] + markers["down"])
    de.attrs.update(
        groupby=groupby if isinstance(groupby, str) else None,
        group=group,
        reference=reference,
        n_group=n1,
        n_reference=n2,
        log1p=log1p,
        pseudocount=pseudocount,
        n_top=n_top,
        alpha=alpha,
    )
    return de


def top_markers(
    de: pd.DataFrame, *, n_top: int | None = None, alpha: float | None = None
) -> dict[str, list[str]]:
    """The most significant features per direction with adjusted p-value below ``alpha``.

    Parameters
    ----------
    de
        Output of :func:`differential_expression` (or any subset of its rows).
    n_top, alpha
        Default: the values ``de`` was made with (else 50 and 0.05).

    Returns
    -------
    ``{"up": [...], "down": [...]}``, each ordered by significance; ``"up"`` are higher in
    the group than in the reference.
    """
    missing = {"t", "pval", "pval_adj", "direction"} - set(de.columns)
    if missing:
        raise ValueError(f"de lacks the column(s) {sorted(missing)}; pass differential_expression's output")
    n_top = de.attrs.get("n_top", 50) if n_top is None else n_top
    alpha = de.attrs.get("alpha", 0.05) if alpha is None else alpha
    check_int(n_top, "n_top", minimum=1)
    if not (is_number(alpha) and 0 < alpha <= 1):
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    ordered = de.iloc[_significance_order(de)]
    sig = ordered[ordered["pval_adj"].to_numpy() < alpha]
    return {d: sig.index[sig["direction"].to_numpy() == d][:n_top].tolist() for d in DIRECTIONS}


@dataclass(repr=False)
class DEComparison:
    """Result of :func:`compare_differential`.

    Attributes
    ----------
    n_common
        Features in both tables (the universe of the overlap test).
    pearson, spearman
        Correlations of the predicted and observed ``column`` (default ``mean_diff``)
        over the common features.
    overlap
        One row per direction (``"up"``, ``"down"``): ``n_pred``, ``n_obs`` (markers in
        each), ``n_overlap``, ``expected`` (overlap of random lists of those sizes),
        ``jaccard`` and ``pval`` (one-sided hypergeometric test of at least that overlap).
    markers
        ``{"pred": {"up": [...], "down": [...]}, "obs": {...}}`` among the common features.
    """

    n_common: int
    pearson: float
    spearman: float
    overlap: pd.DataFrame
    markers: dict[str, dict[str, list[str]]]

    def __repr__(self) -> str:  # (the marker lists, hundreds of names, by their sizes)
        sizes = {k: {d: len(v) for d, v in m.items()} for k, m in self.markers.items()}
        return (f"DEComparison(n_common={self.n_common}, pearson={self.pearson:.3f}, "
                f"spearman={self.spearman:.3f}, markers={sizes})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (no marker lists).

        Returns
        -------
        ``{"n_common", "pearson", "spearman", "overlap"}``: the number of common
        features, the correlations of the predicted and observed effects, and the marker
        overlap per direction (``{direction: {column: value}}``), as plain Python numbers.
        """
        return {
            "n_common": self.n_common,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "overlap": {d: {k: (int(v) if k.startswith("n_") else float(v)) for k, v in row.items()}
                        for d, row in self.overlap.iterrows()},
        }


def effect_correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlations over the features finite in both (NaN if < 3 or constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])


def _label_set(value) -> frozenset[str]:
    """A group (one label or a list of them) as a set of label strings, so that
    ``np.str_("A")``, ``"A"`` and ``["A"]`` name the same group."""
    return frozenset(str(v) for v in np.atleast_1d(np.asarray(value, dtype=object)).tolist())


def _shared_setting(key: str, given, pred: pd.DataFrame, obs: pd.DataFrame, default):
    """``given``, else the setting ``key`` that both DE results were made with (their
    ``attrs``), else ``default``; ``ValueError`` when they were made with different ones."""
    if given is not None:
        return given

    def cast(v):  # np.float32(0.05) and 0.05 are one setting
        return int(v) if key == "n_top" else round(float(v), 6)

    made = {cast(de.attrs[key]) for de in (pred, obs) if key in de.attrs}
    if len(made) > 1:
        raise ValueError(
            f"pred and obs were made with different {key} ({sorted(made)}); pass {key}= to say "
            "which to compare"
        )
    return made.pop() if made else default


def check_de_pair(pred: Any, obs: Any, column: str) -> None:
    """``ValueError`` unless ``pred`` and ``obs`` are differential_expression DataFrames
    with ``column`` and unique feature names (features are matched by name)."""
    for name, de in (("pred", pred), ("obs", obs)):
        if not isinstance(de, pd.DataFrame) or column not in de:
            raise ValueError(f"{name} must be a differential_expression DataFrame with column {column!r}")
        _check_unique_names(de.index, name,
                            "var_names_make_unique() before differential_expression")


def _check_unique_names(names: pd.Index, where: str, advice: str) -> None:
    """``ValueError`` naming a repeated feature name of ``where`` (features are matched and
    results indexed by name), with ``advice`` on what to call."""
    if not names.is_unique:
        raise ValueError(
            f"{where}: feature names are not unique (e.g. {names[names.duplicated()][0]!r}); "
            f"features are matched by name: call {advice}"
        )


def shared_markers(
    pred: pd.DataFrame, obs: pd.DataFrame, *, n_top: int | None = None,
    alpha: float | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Each result's markers chosen among the features of both (:func:`top_markers` of
    their common rows; ``n_top`` / ``alpha``: given, else those both were made with, else 50
    and 0.05), as :func:`compare_differential` counts them:
    ``{"pred": {"up": [...], "down": [...]}, "obs": {...}}``."""
    n_top = _shared_setting("n_top", n_top, pred, obs, 50)
    alpha = _shared_setting("alpha", alpha, pred, obs, 0.05)
    common = pred.index.intersection(obs.index, sort=False)
    return {"pred": top_markers(pred.loc[common], n_top=n_top, alpha=alpha),
            "obs": top_markers(obs.loc[common], n_top=n_top, alpha=alpha)}


def compare_differential(
    pred: pd.DataFrame,
    obs: pd.DataFrame,
    *,
    n_top: int | None = None,
    alpha: float | None = None,
    column: str = "mean_diff",
) -> DEComparison:
    """Agreement of two differential-expression results, e.g. on translated vs real data.

    Parameters
    ----------
    pred, obs
        Outputs of :func:`differential_expression` for the same comparison, e.g. on data
        translated into a modality (``pred``) and on that modality's real data for the
        same cells (``obs``).  Only features in both are used.
    n_top, alpha
        Markers: the ``n_top`` most significant features per direction with adjusted
        p-value below ``alpha``, chosen among the common features. Default: the values both
        results were made with (``attrs``; else the paper's 50 and 0.05).
    column
        The effect compared by correlation (``"mean_diff"``, ``"log2fc"`` or ``"t"``).

    Returns
    -------
    :class:`DEComparison`: Pearson and Spearman correlations of the effects and, per
    direction, the marker overlap (counts, Jaccard index, hypergeometric p-value with the
    common features as universe).

    Raises
    ------
    ValueError
        When ``pred`` or ``obs`` is no :func:`differential_expression` table with
        ``column`` (or repeats a feature name), they were made with different ``n_top`` or
        ``alpha`` and neither is given, or they share fewer than 3 features.
    """
    if column not in ("mean_diff", "log2fc", "t"):
        raise ValueError(f"column must be 'mean_diff', 'log2fc' or 't', got {column!r}")
    check_de_pair(pred, obs, column)
    n_top = _shared_setting("n_top", n_top, pred, obs, 50)
    alpha = _shared_setting("alpha", alpha, pred, obs, 0.05)
    sides = [(de.attrs.get("group"), de.attrs.get("reference")) for de in (pred, obs)]
    if None not in sides[0] + sides[1] and [_label_set(v) for v in sides[0]] != [
        _label_set(v) for v in sides[1]
    ]:
        warnings.warn(
            f"compare_differential: pred compares {sides[0][0]!r} with {sides[0][1]!r}, obs "
            f"{sides[1][0]!r} with {sides[1][1]!r}; compare the same groups",
            UserWarning, stacklevel=user_stacklevel(),
        )
    scales = [de.attrs.get("log1p") for de in (pred, obs)]
    if None not in scales and scales[0] != scales[1]:
        warnings.warn(
            f"compare_differential: pred was computed with log1p={scales[0]}, obs with "
            f"log1p={scales[1]}: their effects and tests are on different scales; bring both data "
            "to the same units (e.g. normalise and log1p the translation) and use the same "
            "log1p",
            UserWarning, stacklevel=user_stacklevel(),
        )
    common = pred.index.intersection(obs.index, sort=False)
    if len(common) < 3:
        raise ValueError(f"pred and obs share {len(common)} features; need at least 3")
    p, o = pred.loc[common], obs.loc[common]
    pearson, spearman = effect_correlations(p[column].to_numpy(float), o[column].to_numpy(float))
    markers = shared_markers(pred, obs, n_top=n_top, alpha=alpha)
    rows = {}
    for d in DIRECTIONS:
        a, b = set(markers["pred"][d]), set(markers["obs"][d])
        k, union = len(a & b), len(a | b)
        rows[d] = {
            "n_pred": len(a),
            "n_obs": len(b),
            "n_overlap": k,
            "expected": len(a) * len(b) / len(common),
            "jaccard": k / union if union else float("nan"),
            "pval": overlap_pvalue(k, len(common), len(a), len(b)),
        }
    overlap = pd.DataFrame.from_dict(rows, orient="index")
    overlap.index.name = "direction"
    return DEComparison(len(common), pearson, spearman, overlap, markers)
