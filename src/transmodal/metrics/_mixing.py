"""Modality mixing: how well can a classifier tell the modalities apart in the latent space?"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .._utils import check_int
from ._chunked import as_embedding

if TYPE_CHECKING:
    from ._chunked import EmbeddingLike


def mixing_accuracy_multi(
    embeddings: Sequence[EmbeddingLike],
    *,
    cv: int = 5,
    seed: int | None = 0,
    max_cells: int | None = None,
    classifier: str = "linear",
    n_neighbors: int = 15,
) -> float:
    """Cross-validated balanced accuracy of predicting the modality from the embedding.

    A ``StandardScaler -> LogisticRegression`` pipeline (``classifier="linear"``) or a
    ``n_neighbors``-nearest-neighbour classifier (``"knn"``; on as many cells of every
    modality, the smallest one's number drawn with ``seed`` from the others, so that the
    larger modality does not win every vote, and with at most that many neighbours per
    training fold) is evaluated with stratified ``cv``-fold cross-validation (shuffled with
    ``seed``).  Chance level is
    ``1 / len(embeddings)`` (perfect mixing); 1 means fully separable modalities.

    The linear classifier sees where the modalities' clouds lie as a whole. transmodal's
    encoders standardise each modality's latent (the same mean and variance), so for its
    embeddings it reads near chance also for modalities that were never aligned (two
    standardised clouds side by side in other directions, or folded differently); the
    k-NN classifier asks whether each cell's neighbourhood holds the other modality's cells,
    which alignment must achieve (on A549 trained without any alignment term: linear 0.48,
    k-NN 0.97; aligned: 0.47 and 0.53). Cell types only one modality holds keep the k-NN
    figure above chance also for a good alignment. Paired cells embedded close to their
    partners read *below* chance (a held-out cell's partner, of the other modality, is in
    the training folds, next to it: identical embeddings of both modalities score about
    0.33 with k-NN): read any value at or below chance as mixed.

    Parameters
    ----------
    embeddings
        Two or more embeddings ``(n_m, n_dims)`` with the same number of columns; row
        counts may differ.
    cv
        Number of folds (``>= 2``).
    seed
        Seed for the subsampling and the fold shuffling (below 2**32; ``None``: a random
        draw, as scikit-learn's ``random_state``).
    max_cells
        If given, randomly subsample each modality to at most this many rows.
    classifier
        ``"linear"`` (the figure the model stores and the README reports) or ``"knn"``.
    n_neighbors
        Neighbours of the ``"knn"`` classifier (Euclidean, uniform weights).

    Returns
    -------
    The mean balanced accuracy over folds.
    """
    if classifier not in ("linear", "knn"):
        raise ValueError(f"classifier must be 'linear' or 'knn'; got {classifier!r}")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) \
            or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive integer; got {n_neighbors!r}")
    if isinstance(embeddings, np.ndarray) or not hasattr(embeddings, "__len__") \
            or len(embeddings) < 2:  # (a generator too)
        raise ValueError("embeddings must be a list of at least two 2-D arrays")
    check_int(seed, "seed", minimum=0, allow_none=True)  # (None: random folds, as sklearn's)
    if seed is not None and seed >= 2**32:
        raise ValueError(f"seed must be below 2**32 (scikit-learn's folds), got {seed!r}")
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"cv must be an integer >= 2; got {cv!r}")
    if max_cells is not None and (
        isinstance(max_cells, bool) or not isinstance(max_cells, (int, np.integer)) or max_cells < 1
    ):
        raise ValueError(f"max_cells must be a positive integer or None; got {max_cells!r}")
    rng = np.random.default_rng(seed)
    parts = []
    for m, emb in enumerate(embeddings):
        arr = as_embedding(emb, f"embeddings[{m}]")
        if max_cells is not None and arr.shape[0] > max_cells:
            arr = arr[np.sort(rng.choice(arr.shape[0], size=max_cells, replace=False))]
        if arr.shape[0] < cv:
            raise ValueError(
                f"embeddings[{m}] has {arr.shape[0]} rows, fewer than cv={cv} folds"
            )
        if parts and arr.shape[1] != parts[0].shape[1]:
            raise ValueError(
                f"all embeddings must have the same number of columns; embeddings[0] "
                f"has {parts[0].shape[1]}, embeddings[{m}] has {arr.shape[1]}"
            )
        parts.append(arr)
    if classifier == "knn":  # the same number of cells of every modality: the larger one
        n = min(p.shape[0] for p in parts)  # would win every vote where they overlap
        parts = [p if p.shape[0] == n else p[np.sort(rng.choice(p.shape[0], n, replace=False))]
                 for p in parts]
    features = np.concatenate(parts, axis=0)
    target = np.concatenate([np.full(p.shape[0], m) for m, p in enumerate(parts)])
    if classifier == "knn":
        per_class = n + (-n // int(cv))  # (a modality's cells in the smallest training fold)
        model = KNeighborsClassifier(min(int(n_neighbors), per_class))
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=seed)
    scores = cross_val_score(model, features, target, cv=folds, scoring="balanced_accuracy")
    return float(np.mean(scores))


def mixing_accuracy(
    x: EmbeddingLike,
    y: EmbeddingLike,
    *,
    cv: int = 5,
    seed: int | None = 0,
    max_cells: int | None = None,
    classifier: str = "linear",
    n_neighbors: int = 15,
) -> float:
    """Balanced accuracy of a classifier predicting modality ``x`` vs ``y``.

    See :func:`mixing_accuracy_multi`.  0.5 = perfectly mixed (paired cells on their
    partners read below it), 1.0 = separable. For
    transmodal's embeddings, whose modalities are standardised alike, the default linear
    classifier reads near 0.5 also without any alignment: ``classifier="knn"`` tells.

    Parameters
    ----------
    x, y
        Embeddings ``(n_x, n_dims)`` and ``(n_y, n_dims)``; ``n_x`` may differ from
        ``n_y``.
    cv
        Number of stratified folds.
    seed
        Seed for subsampling and fold shuffling (see :func:`mixing_accuracy_multi`).
    max_cells
        Optional per-modality subsample size.
    classifier, n_neighbors
        ``"linear"`` (logistic regression) or ``"knn"`` (``n_neighbors`` nearest
        neighbours).

    Returns
    -------
    The cross-validated balanced accuracy.
    """
    return mixing_accuracy_multi(
        [x, y], cv=cv, seed=seed, max_cells=max_cells, classifier=classifier,
        n_neighbors=n_neighbors,
    )
