"""Linear canonical correlation analysis between paired modalities (Seurat v3 style).

Also holds the small helpers shared by the paired / GAN baselines (:mod:`._dcca`,
:mod:`._gan`): argument checks, the per-modality preprocessing (log1p, standardisation,
PCA) fitted on the training cells, anchor-pair parsing and a ridge-regularised linear CCA.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from .._utils import user_stacklevel
from ._base import (
    Baseline,
    as_dense_matrix,
    axis_names,
    check_features,
    check_float,
    check_int,
    check_row_pairs,
)

_SPACES = ("features", "log", "input")


# ------------------------------------------------------------------------- checks
def _check_same_rows(xa: np.ndarray, ya: np.ndarray, who: str) -> None:
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(
            f"{who} needs paired cells: x and y must have the same number of rows "
            f"(row i of both = the same cell); got {xa.shape[0]} and {ya.shape[0]}"
        )


def _check_space(space: str) -> None:
    if space not in _SPACES:
        raise ValueError(f"space must be one of {list(_SPACES)}; got {space!r}")


def check_varies(x: np.ndarray, y: np.ndarray, ix: np.ndarray, iy: np.ndarray, method: str) -> None:
    """Refuse paired rows of ``x`` or ``y`` that are all identical: nothing to correlate."""
    for name, a, idx in (("x", x, ix), ("y", y, iy)):
        if (a[idx] == a[idx[0]]).all():
            raise ValueError(
                f"{name}: the {idx.size} paired rows are all identical (constant "
                f"input), so {method} has nothing to correlate; check the data and pairs"
            )


def _parse_pairs(pairs: Any, n_x: int, n_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse anchor pairs into two equal-length integer index arrays ``(ix, iy)``.

    ``pairs`` may be ``"all"`` (row ``i`` of ``x`` with row ``i`` of ``y``; needs
    ``n_x == n_y``), a tuple ``(ix, iy)`` of 1-D index arrays, or an integer array (or
    list) of shape ``(2, k)`` or ``(k, 2)``; a ``(2, 2)`` one, which could be read either
    way, is refused (pass the tuple of numpy arrays), and so is a tuple of two 2-element
    lists or tuples.
    """
    if isinstance(pairs, str):
        if pairs != "all":
            raise ValueError(
                f"pairs must be 'all', (ix, iy) or an index array; got {pairs!r}"
            )
        if n_x != n_y:
            raise ValueError(
                f"pairs='all' needs x and y with the same number of rows; got {n_x} and {n_y}"
            )
        idx = np.arange(n_x)
        return idx, idx.copy()
    ambiguous = ValueError(
        "pairs of shape (2, 2) can be read as two pairs or as (ix, iy); pass a tuple "
        "(ix, iy) of index arrays, e.g. (np.array([0, 1]), np.array([5, 7])) for the "
        "pairs (0, 5) and (1, 7)"
    )
    if isinstance(pairs, tuple) and len(pairs) == 2:
        # ((0, 5), (1, 7)) reads as two pairs as well as (ix, iy): only arrays say which
        if not any(isinstance(p, np.ndarray) for p in pairs) and np.shape(pairs) == (2, 2):
            raise ambiguous
        ix, iy = np.asarray(pairs[0]), np.asarray(pairs[1])
    else:
        arr = np.asarray(pairs)
        if arr.shape == (2, 2):
            raise ambiguous
        if arr.ndim != 2 or 2 not in arr.shape:
            raise ValueError(
                "pairs must be (ix, iy) or an index array of shape (2, k) or (k, 2); "
                f"got shape {arr.shape}"
            )
        ix, iy = (arr[0], arr[1]) if arr.shape[0] == 2 else (arr[:, 0], arr[:, 1])
    if ix.ndim != 1 or iy.ndim != 1 or ix.shape != iy.shape:
        raise ValueError(
            f"pairs: ix and iy must be 1-D of equal length; got shapes {ix.shape}, {iy.shape}"
        )
    if ix.size == 0:
        raise ValueError("pairs is empty")
    for name, idx, n in (("ix", ix, n_x), ("iy", iy, n_y)):
        if idx.dtype.kind not in "iu":
            raise ValueError(
                f"pairs: {name} must hold integer row indices; got {idx.dtype}"
            )
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"pairs: {name} has indices outside [0, {n})")
    return ix.astype(np.int64), iy.astype(np.int64)


# ------------------------------------------------------------------ preprocessing
class _Preprocessor:
    """``log1p`` -> standardise -> PCA -> one global rescaling, fitted on training cells.

    The final rescaling divides all output features by one constant so that their mean
    variance is 1 (it keeps the geometry of the PCA scores, but puts them on the unit
    scale that neural networks like).  Every step is kept so that new cells get the same
    transformation (:meth:`transform`) and features can be mapped back
    (:meth:`inverse_transform`).
    """

    def __init__(
        self, *, log1p: bool, scale: bool, n_pca: int | None, seed: int
    ) -> None:
        self.log1p = bool(log1p)
        self.scale = bool(scale)
        self.n_pca = n_pca
        self.seed = int(seed)

    def _log(self, a: np.ndarray, name: str) -> np.ndarray:
        if not self.log1p:
            return a
        if a.min() < 0:
            raise ValueError(
                f"{name} has negative values: log1p=True expects counts; pass log1p=False"
            )
        return np.log1p(a)

    def fit_transform(self, a: np.ndarray, name: str) -> np.ndarray:
        a = self._log(a, name)
        self.n_features_in_ = a.shape[1]
        self.mean_ = a.mean(axis=0)
        a = a - self.mean_
        sd = a.std(axis=0) if self.scale else np.ones(a.shape[1])
        sd[sd == 0] = 1.0
        self.sd_ = sd
        a = a / sd
        self.pca_ = None
        n, p = a.shape
        if self.n_pca is not None and p > self.n_pca and n > 1:
            from sklearn.decomposition import PCA

            self.pca_ = PCA(n_components=min(self.n_pca, n - 1), random_state=self.seed)
            a = self.pca_.fit_transform(a)
        rms = float(np.sqrt(np.mean(a.var(axis=0))))
        self.rescale_ = rms if rms > 0 else 1.0
        return np.ascontiguousarray(a / self.rescale_)

    def transform(self, a: np.ndarray, name: str) -> np.ndarray:
        if a.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {a.shape[1]} features; the model was fitted on "
                f"{self.n_features_in_}"
            )
        a = (self._log(a, name) - self.mean_) / self.sd_
        if self.pca_ is not None:
            a = self.pca_.transform(a)
        return np.ascontiguousarray(a / self.rescale_)

    def inverse_transform(self, f: np.ndarray, space: str) -> np.ndarray:
        """Map preprocessed features back: ``"features"`` (as is), ``"log"`` (undo the
        rescaling, PCA and standardisation: log1p scale if ``log1p``) or ``"input"`` (also
        ``expm1``, clipped at 0)."""
        if space == "features":
            return f
        a = f * self.rescale_
        if self.pca_ is not None:
            a = self.pca_.inverse_transform(a)
        a = a * self.sd_ + self.mean_
        if space == "input" and self.log1p:
            a = np.expm1(np.maximum(a, 0.0))
        return a


class _PreprocessedBaseline(Baseline):
    """A baseline whose modalities each go through their own :class:`_Preprocessor`
    (``prep_x_``, ``prep_y_``), configured by the subclass's ``log1p``, ``scale``,
    ``n_pca`` and ``seed``."""

    log1p: bool
    scale: bool
    n_pca: int | None
    seed: int

    def _fit_preprocessing(
        self, xa: np.ndarray, ya: np.ndarray, x: Any = None, y: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fit ``prep_x_`` / ``prep_y_`` on the training cells; their preprocessed features.
        The feature names of ``x`` / ``y`` (AnnData, DataFrame; else ``None``) are kept in
        ``var_names_`` and checked on new cells."""
        kw = {"log1p": self.log1p, "scale": self.scale, "n_pca": self.n_pca, "seed": self.seed}
        self.prep_x_, self.prep_y_ = _Preprocessor(**kw), _Preprocessor(**kw)
        names = {side: axis_names(a, "var") for side, a in (("x", x), ("y", y))}
        self.var_names_ = {
            side: None if v is None else [str(n) for n in v] for side, v in names.items()
        }
        return self.prep_x_.fit_transform(xa, "x"), self.prep_y_.fit_transform(ya, "y")

    def _features(self, cells: Any, side: str, name: str | None = None) -> np.ndarray:
        """New cells of modality ``side`` (``"x"`` / ``"y"``), validated and put through
        that modality's fitted preprocessing; errors name the argument ``name``
        (default ``side``)."""
        self._check_fitted()
        name = side if name is None else name
        prep = self.prep_x_ if side == "x" else self.prep_y_
        check_features(getattr(self, "var_names_", {}).get(side), cells, name, side)
        return prep.transform(as_dense_matrix(cells, name), name)


# --------------------------------------------------------------------- linear CCA
def _inv_sqrt(c: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    w = np.maximum(w, eps)
    return (v / np.sqrt(w)) @ v.T


def _linear_cca(
    x: np.ndarray, y: np.ndarray, k: int, reg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ridge CCA by SVD of ``Cxx^-1/2 Cxy Cyy^-1/2``.

    Returns ``(mean_x, mean_y, A, B, rho)``: canonical directions ``A`` ``(p, k)``,
    ``B`` ``(q, k)`` (projections have unit variance up to the ridge) and the canonical
    correlations ``rho`` ``(k,)`` in decreasing order.  Signs are fixed so that the
    largest-magnitude entry of each column of ``A`` is positive.
    """
    n = x.shape[0]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    denom = max(n - 1, 1)
    cxx = xc.T @ xc / denom + reg * np.eye(x.shape[1])
    cyy = yc.T @ yc / denom + reg * np.eye(y.shape[1])
    cxy = xc.T @ yc / denom
    wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
    u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
    a = wx @ u[:, :k]
    b = wy @ vt[:k].T
    flip = np.sign(a[np.abs(a).argmax(axis=0), np.arange(k)])
    flip[flip == 0] = 1.0
    return mx, my, a * flip, b * flip, s[:k].copy()


def _l2_rows(a: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return a / norm


# ---------------------------------------------------------------------------- CCA
class CCA(_PreprocessedBaseline):
    """Linear canonical correlation analysis of paired cells (Seurat v3 style).

    Both modalities are preprocessed separately -- ``log1p`` (optional), standardised
    features, PCA to ``n_pca`` components when there are more features (all fitted on the
    training cells and re-applied to new cells) -- and then ``n_components`` pairs of
    canonical directions are found by the SVD of the whitened cross-covariance
    ``(Cxx + reg I)^-1/2 Cxy (Cyy + reg I)^-1/2``.  The common embedding of a cell is its
    projection onto its modality's canonical directions (unit-variance canonical
    variates), L2-normalised per cell as Seurat does when ``l2_normalize``.

    Translation (:meth:`translate_x_to_y`, :meth:`translate_y_to_x`) is a least-squares
    regression, fitted on the training cells, of the other modality's preprocessed
    features on a cell's (un-normalised) canonical variates.

    Parameters
    ----------
    n_components
        Canonical dimensions; clipped (with a warning) to the smaller preprocessed
        feature count and ``n_cells - 1``.
    reg
        Ridge added to the diagonal of both covariance matrices (the features have mean
        variance 1).
    l2_normalize
        L2-normalise each cell's embedding.
    log1p
        Apply ``log1p`` to the inputs first (counts; negative inputs raise).
    scale
        Standardise each feature (constant features are only centred).
    n_pca
        Principal components kept per modality when it has more features; ``None``
        disables PCA.
    seed
        ``random_state`` of the PCA.

    Attributes
    ----------
    correlations_
        Canonical correlations of the training cells, ``(n_components_,)``, decreasing.
    n_components_
        The number of canonical dimensions actually used.
    x_features_, y_features_
        The preprocessed training features.
    """

    paired = True

    def __init__(
        self,
        n_components: int = 20,
        *,
        reg: float = 1e-3,
        l2_normalize: bool = True,
        log1p: bool = True,
        scale: bool = True,
        n_pca: int | None = 100,
        seed: int = 0,
    ) -> None:
        check_int(n_components, "n_components", minimum=1)
        check_float(reg, "reg", positive=False)
        check_int(n_pca, "n_pca", minimum=1, allow_none=True)
        check_int(seed, "seed", minimum=0)
        self.n_components = int(n_components)
        self.reg = float(reg)
        self.l2_normalize = bool(l2_normalize)
        self.log1p = bool(log1p)
        self.scale = bool(scale)
        self.n_pca = n_pca
        self.seed = int(seed)

    def __repr__(self) -> str:
        return (
            f"CCA(n_components={self.n_components}, reg={self.reg}, "
            f"l2_normalize={self.l2_normalize}, log1p={self.log1p}, n_pca={self.n_pca})"
        )

    def fit(self, x: Any, y: Any) -> CCA:
        """Fit the canonical directions on paired cells.

        Parameters
        ----------
        x
            Modality 1, ``(n, p)``: dense array, scipy sparse matrix or AnnData.
        y
            Modality 2, ``(n, q)``; row ``i`` must be the same cell as row ``i`` of ``x``
            (AnnData whose obs_names say otherwise are refused).

        Returns
        -------
        ``self``.

        Raises
        ------
        ValueError
            If the inputs are invalid, their row counts differ or a modality is constant.
        """
        xa = as_dense_matrix(x, "x", min_rows=2)
        ya = as_dense_matrix(y, "y", min_rows=2)
        _check_same_rows(xa, ya, "CCA")
        check_row_pairs(x, y, "CCA", takes_pairs=False)
        rows = np.arange(xa.shape[0])
        check_varies(xa, ya, rows, rows, "CCA")
        self._fitted = False
        fx, fy = self._fit_preprocessing(xa, ya, x, y)
        k = min(self.n_components, fx.shape[1], fy.shape[1], xa.shape[0] - 1)
        if k < self.n_components:
            warnings.warn(
                f"CCA: n_components={self.n_components} reduced to {k} (preprocessed "
                f"features: {fx.shape[1]} and {fy.shape[1]}, cells: {xa.shape[0]})",
                UserWarning,
                stacklevel=user_stacklevel(),
            )
        self.n_components_ = k
        (
            self.mean_x_,
            self.mean_y_,
            self.x_weights_,
            self.y_weights_,
            self.correlations_,
        ) = _linear_cca(fx, fy, k, self.reg)
        self.x_features_, self.y_features_ = fx, fy
        ux, uy = self._scores_x(fx), self._scores_y(fy)
        # least-squares maps from canonical variates to the other modality's features
        self.coef_x_to_y_ = self._lstsq(ux, fy)
        self.coef_y_to_x_ = self._lstsq(uy, fx)
        self._x_emb, self._y_emb = self._finish(ux), self._finish(uy)
        self._fitted = True
        return self

    @staticmethod
    def _lstsq(u: np.ndarray, f: np.ndarray) -> np.ndarray:
        design = np.hstack([u, np.ones((u.shape[0], 1))])
        return np.linalg.lstsq(design, f, rcond=None)[0]

    def _scores_x(self, fx: np.ndarray) -> np.ndarray:
        return (fx - self.mean_x_) @ self.x_weights_

    def _scores_y(self, fy: np.ndarray) -> np.ndarray:
        return (fy - self.mean_y_) @ self.y_weights_

    def _finish(self, u: np.ndarray) -> np.ndarray:
        return _l2_rows(u) if self.l2_normalize else u

    def embed_x(self, x: Any = None) -> np.ndarray:
        """Common-space embedding of ``x`` cells, ``(n, n_components_)``.

        Parameters
        ----------
        x
            New cells of modality 1 (same features as in :meth:`fit`); ``None`` returns
            the embedding of the training cells.

        Returns
        -------
        The ``(n, n_components_)`` embedding (L2-normalised per cell when
        ``l2_normalize``).
        """
        self._check_fitted()
        if x is None:
            return self._x_emb.copy()
        return self._finish(self._scores_x(self._features(x, "x")))

    def embed_y(self, y: Any = None) -> np.ndarray:
        """Common-space embedding of ``y`` cells, ``(n, n_components_)``.

        Parameters
        ----------
        y
            New cells of modality 2 (same features as in :meth:`fit`); ``None`` returns
            the embedding of the training cells.

        Returns
        -------
        The ``(n, n_components_)`` embedding (L2-normalised per cell when
        ``l2_normalize``).
        """
        self._check_fitted()
        if y is None:
            return self._y_emb.copy()
        return self._finish(self._scores_y(self._features(y, "y")))

    def translate_x_to_y(
        self, x_new: Any, *, space: Literal["features", "log", "input"] = "input"
    ) -> np.ndarray:
        """Predict modality ``y`` of cells measured in ``x``.

        Parameters
        ----------
        x_new
            Cells of modality 1, ``(m, p)``.
        space
            Output space: ``"features"`` -- ``y``'s preprocessed features (after log1p,
            standardisation, PCA, rescaling); ``"log"`` -- ``y``'s original features on
            the log1p scale (PCA reconstruction, so only the top-``n_pca`` variation);
            ``"input"`` -- ``y``'s input units (``"log"`` then ``expm1``, clipped at 0;
            same as ``"log"`` when ``log1p=False``).

        Returns
        -------
        The predicted ``y`` features, ``(m, q)`` (or ``(m, d_y)`` for ``"features"``).
        """
        self._check_fitted()
        _check_space(space)
        u = self._scores_x(self._features(x_new, "x", "x_new"))
        f = np.hstack([u, np.ones((u.shape[0], 1))]) @ self.coef_x_to_y_
        return self.prep_y_.inverse_transform(f, space)

    def translate_y_to_x(
        self, y_new: Any, *, space: Literal["features", "log", "input"] = "input"
    ) -> np.ndarray:
        """Predict modality ``x`` of cells measured in ``y``.

        Parameters
        ----------
        y_new
            Cells of modality 2, ``(m, q)``.
        space
            Output space, as in :meth:`translate_x_to_y` with the roles of ``x`` and ``y``
            swapped: ``"features"`` (``x``'s preprocessed features), ``"log"`` (``x``'s
            original features on the log1p scale) or ``"input"`` (``x``'s input units).

        Returns
        -------
        The predicted ``x`` features, ``(m, p)`` (or ``(m, d_x)`` for ``"features"``).
        """
        self._check_fitted()
        _check_space(space)
        u = self._scores_y(self._features(y_new, "y", "y_new"))
        f = np.hstack([u, np.ones((u.shape[0], 1))]) @ self.coef_y_to_x_
        return self.prep_x_.inverse_transform(f, space)
