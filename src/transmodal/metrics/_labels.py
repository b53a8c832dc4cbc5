"""Label-based metrics: nearest-cell cluster accuracy and k-NN label transfer.

Direction keys follow one convention throughout :mod:`transmodal.metrics`:
``"x_to_y"`` means the cells of ``x`` are the queries, matched into (and labelled
from) ``y``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.neighbors import KNeighborsClassifier

from ._chunked import (
    Searches,
    _isin,
    as_embedding,
    axis_names,
    check_labels,
    check_metric,
    check_same_dims,
    check_shared_labels,
    labelled,
)

if TYPE_CHECKING:
    from ._chunked import EmbeddingLike


def cluster_accuracy(
    x: EmbeddingLike,
    y: EmbeddingLike,
    labels_x: Any,
    labels_y: Any,
    *,
    metric: str = "l1",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Accuracy of labelling each cell with the label of its nearest other-modality cell.

    ``x`` and ``y`` need not be paired (their row counts may differ).  Among equally
    distant cells the lowest row index wins.

    Parameters
    ----------
    x, y
        Embeddings of shape ``(n_x, n_dims)`` and ``(n_y, n_dims)``.
    labels_x, labels_y
        Label vectors of length ``n_x`` and ``n_y`` (any comparable dtype; a pandas Series
        is aligned by its index to an AnnData embedding's obs_names, else taken by
        position). Cells without a label (None / NaN, or the strings "nan" / "None" /
        "<NA>" / blank that ``astype(str)`` makes of them) are not scored; a cell whose
        nearest other-modality cell has no label counts as wrong.
    metric
        ``"l1"`` (manhattan, default) or ``"euclidean"``.
    chunk_size
        Query rows processed at once; ``None`` picks about 64 MiB per block.

    Returns
    -------
    ``{"x_to_y": acc, "y_to_x": acc, "mean": acc}``; ``"x_to_y"`` is the fraction of
    ``x`` cells whose nearest ``y`` cell has the same label.
    """
    met = check_metric(metric)
    xa = as_embedding(x, "x")
    ya = as_embedding(y, "y")
    check_same_dims(xa, ya, ("x", "y"))
    return cluster_accuracy_of(Searches(xa, ya, chunk_size), met, labels_x, labels_y,
                               cells=(axis_names(x), axis_names(y)))


def cluster_accuracy_of(
    searches: Searches, metric: str, labels_x: Any, labels_y: Any, *,
    cells: tuple[Any, Any] = (None, None),
) -> dict[str, float]:
    """:func:`cluster_accuracy` of the embeddings of ``searches`` (``metric`` canonical;
    ``cells``: the names a label Series is aligned to, as there)."""
    lx = check_labels(labels_x, searches.x.shape[0], "labels_x", cells[0])
    ly = check_labels(labels_y, searches.y.shape[0], "labels_y", cells[1])
    check_shared_labels(lx, ly, ("labels_x", "labels_y"))
    kx, ky = labelled(lx), labelled(ly)
    if not kx.any() or not ky.any():
        raise ValueError("cluster_accuracy needs labelled cells in both labels_x and labels_y")
    nn_x, nn_y = searches.nearest(metric)
    # labels compared as codes of one factorisation (pd.NA == x is no boolean), a
    # neighbour without a label never matching
    codes = pd.factorize(pd.Series(np.concatenate([lx, ly]), dtype=object))[0]
    cx, cy = codes[: len(lx)], codes[len(lx):]
    x_to_y = float(np.mean((cy[nn_x] == cx)[kx] & ky[nn_x][kx]))
    y_to_x = float(np.mean((cx[nn_y] == cy)[ky] & kx[nn_y][ky]))
    return {"x_to_y": x_to_y, "y_to_x": y_to_x, "mean": 0.5 * (x_to_y + y_to_x)}


def label_transfer(
    x_ref: EmbeddingLike,
    labels_ref: Any,
    x_query: EmbeddingLike,
    labels_query: Any,
    *,
    k: int = 5,
    classes: Iterable[Any] | None = None,
) -> float:
    """Accuracy of a k-NN classifier fitted on a reference embedding, on a query.

    Uses :class:`sklearn.neighbors.KNeighborsClassifier` (Euclidean, uniform weights),
    which works in bounded memory; among equidistant neighbours (duplicated rows) it
    picks as its search finds them, not by row index as the other metrics do.

    Parameters
    ----------
    x_ref
        Reference embedding ``(n_ref, n_dims)``.
    labels_ref
        Reference labels (length ``n_ref``; a pandas Series is aligned by its index to an
        AnnData embedding's obs_names, else taken by position).
    x_query
        Query embedding ``(n_query, n_dims)``.
    labels_query
        True query labels (length ``n_query``). Cells without a label (None / NaN, or the
        strings "nan" / "None" / "<NA>" / blank that ``astype(str)`` makes of them) are
        left out: reference cells are not fitted, query cells not scored.
    k
        Number of neighbours (``1 <= k <= n_ref``).
    classes
        If given, only query cells whose true label is in ``classes`` are evaluated
        (useful when the two data sets share only part of their cell types).

    Returns
    -------
    The fraction of evaluated query cells predicted correctly.
    """
    xr = as_embedding(x_ref, "x_ref")
    xq = as_embedding(x_query, "x_query")
    check_same_dims(xr, xq, ("x_ref", "x_query"))
    lr = check_labels(labels_ref, xr.shape[0], "labels_ref", axis_names(x_ref))
    lq = check_labels(labels_query, xq.shape[0], "labels_query", axis_names(x_query))
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    check_shared_labels(lr, lq, ("labels_ref", "labels_query"))
    keep_ref = labelled(lr)
    xr, lr = xr[keep_ref], lr[keep_ref]
    if xr.shape[0] == 0:
        raise ValueError(
            "labels_ref: no reference cell has a label (all missing); label transfer needs "
            "labelled reference cells"
        )
    if k > xr.shape[0]:
        raise ValueError(
            f"k={k} is larger than the number of labelled reference cells ({xr.shape[0]})"
        )
    keep = labelled(lq)
    if isinstance(classes, str):  # one class name (list("T cell") would be its letters)
        classes = [classes]
    if classes is not None:
        keep &= _isin(lq, classes)
        if not keep.any():
            raise ValueError("no query cell has a label in `classes`")
    if not keep.any():
        raise ValueError("no query cell has a label")
    xq, lq = xq[keep], lq[keep]
    # classes as codes: sklearn sorts labels, which fails for mixed types ("0" and 1); sorted
    # codes where the labels can be sorted keep sklearn's tie-breaking (the smallest class)
    both = np.concatenate([lr.astype(object), lq.astype(object)])
    try:
        codes, _ = pd.factorize(both, sort=True)
    except TypeError:
        codes, _ = pd.factorize(both)
    clf = KNeighborsClassifier(n_neighbors=int(k)).fit(xr, codes[: len(lr)])
    return float(np.mean(clf.predict(xq) == codes[len(lr):]))


def label_transfer_both(
    x: EmbeddingLike,
    labels_x: Any,
    y: EmbeddingLike,
    labels_y: Any,
    *,
    k: int = 5,
    classes: Iterable[Any] | None = None,
) -> dict[str, float]:
    """:func:`label_transfer` in both directions.

    Parameters
    ----------
    x, labels_x
        Embedding ``(n_x, n_dims)`` of one set of cells, and their labels.
    y, labels_y
        Embedding ``(n_y, n_dims)`` of the other (unpaired allowed), and their labels.
    k
        Number of neighbours.
    classes
        Optional restriction of the evaluated query cells to these labels.

    Returns
    -------
    ``{"x_to_y": acc, "y_to_x": acc, "mean": acc}``; ``"x_to_y"`` classifies the ``x``
    cells with a classifier fitted on ``y`` (same convention as
    :func:`cluster_accuracy`).
    """
    if classes is not None and not isinstance(classes, str):  # (label_transfer takes a str)
        classes = list(classes)  # an iterator: read once, used twice
    x_to_y = label_transfer(y, labels_y, x, labels_x, k=k, classes=classes)
    y_to_x = label_transfer(x, labels_x, y, labels_y, k=k, classes=classes)
    return {"x_to_y": x_to_y, "y_to_x": y_to_x, "mean": 0.5 * (x_to_y + y_to_x)}
