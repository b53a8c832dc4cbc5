"""Common interface of the alignment baselines and shared input validation."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

import warnings

from .._utils import check_int, names_are_numbers, user_stacklevel  # noqa: F401
from ..metrics._chunked import as_dense_matrix, axis_names, check_same_rows  # noqa: F401


def refuse_constant(xa: np.ndarray, ya: np.ndarray, consequence: str) -> None:
    """``ValueError`` if every cell of ``xa`` or of ``ya`` is the same (constant input);
    ``consequence`` says what that leaves the method."""
    for name, a in (("x", xa), ("y", ya)):
        if (a == a[0]).all():
            raise ValueError(
                f"{name}: all {a.shape[0]} cells are identical (constant input), so "
                f"{consequence}; check the data"
            )


def check_row_pairs(x: Any, y: Any, method: str, takes_pairs: bool = True) -> None:
    """For a fit that takes row ``i`` of ``x`` and of ``y`` as one cell: refuse AnnData /
    DataFrames whose cell names say otherwise (the same cells in another order, or a name
    of both at different rows), and warn where they share some names but differ at other
    rows (partly paired data). Differently named modalities (no name in common), names
    that are numbers (AnnData's default row numbers, which say nothing about the cells) and
    arrays pair by position. ``takes_pairs``: the method's fit has a ``pairs=`` argument
    (advised in the errors)."""
    a, b = axis_names(x), axis_names(y)
    if a is None or b is None or len(a) != len(b) or a.equals(b):
        return
    if names_are_numbers(a) and names_are_numbers(b):  # maybe row numbers: by position
        if a.is_unique and b.is_unique and set(a) == set(b):
            warnings.warn(
                f"{method} pairs row i of x with row i of y; their cell names are numbers, "
                "the same in another order: if they are AnnData's row numbers, this is "
                "right; if they name the cells (y was reordered), reorder y to x's cells "
                "(y[x.obs_names])",
                UserWarning, stacklevel=user_stacklevel(),
            )
        return
    check_same_rows(a, b, ("x", "y"))
    if not (a.is_unique and b.is_unique):
        return
    shared = a.intersection(b)
    if not len(shared):
        return
    rows_a, rows_b = a.get_indexer(shared), b.get_indexer(shared)
    moved = np.flatnonzero(rows_a != rows_b)
    if len(moved):
        i = moved[0]
        raise ValueError(
            f"{method} pairs row i of x with row i of y, but cell {shared[i]!r} is row "
            f"{rows_a[i]} of x and row {rows_b[i]} of y: give the paired cells in the same "
            "order (y[x.obs_names] for AnnData)"
            + (" or pass pairs=(ix, iy)" if takes_pairs else "")
        )
    differ = int((np.asarray(a, dtype=object) != np.asarray(b, dtype=object)).sum())
    warnings.warn(
        f"{method} pairs row i of x with row i of y: they share {len(shared)} cell names at "
        f"the same rows, but {differ} rows name different cells, which are paired too; "
        "subset both to the shared cells (or pass pairs=) if those are not pairs",
        UserWarning, stacklevel=user_stacklevel(),
    )


def check_features(fitted: Any, cells: Any, name: str, side: str) -> None:
    """Refuse new cells whose feature names (AnnData var_names, DataFrame columns) differ
    from the ``fitted`` ones (``None``: the fit had no names; arrays: by position)."""
    given = axis_names(cells, "var")
    if fitted is None or given is None or list(map(str, given)) == fitted:
        return
    if sorted(map(str, given)) == sorted(fitted):
        why = f"the same {len(fitted)} features in another order"
    else:
        names = set(map(str, given))
        missing, extra = len(set(fitted) - names), len(names - set(fitted))
        why = f"{missing} of the {len(fitted)} fitted features missing, {extra} others"
    raise ValueError(
        f"{name}: its features do not match those the baseline was fitted on ({why}); "
        f"select them in the fitted order, adata[:, baseline.var_names_[{side!r}]]"
    )


def check_float(value: Any, name: str, *, positive: bool) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a finite (positive) number."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    ok = ok and bool(np.isfinite(value)) and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")


class Baseline(abc.ABC):
    """Abstract base of the alignment baselines (OT, CCA, DCCA, CycleGAN, MAGAN, ...).

    A baseline is fitted on the cells of two modalities, ``x`` ``(n_x, p)`` and ``y``
    ``(n_y, q)``, and then provides embeddings of those cells in one common space.
    Whether the rows of ``x`` and ``y`` must be paired is up to the subclass (see its
    ``paired`` class attribute).

    Subclasses implement :meth:`fit`, :meth:`embed_x` and :meth:`embed_y`;
    :meth:`transform` and :meth:`fit_transform` are provided.
    """

    #: Whether row ``i`` of ``x`` and ``y`` must be the same cell.
    paired: bool = False
    #: Why the method cannot translate (subclasses that translate override the
    #: ``translate_*`` methods).
    cannot_translate: str = "it aligns embeddings but has no decoder back to features"

    @abc.abstractmethod
    def fit(self, x: Any, y: Any) -> Baseline:
        """Fit on the cells of both modalities and return ``self``.

        Parameters
        ----------
        x
            Modality 1, ``(n_x, p)``: dense array, scipy sparse matrix, or an AnnData
            whose ``X`` it is.
        y
            Modality 2, ``(n_y, q)``, likewise.

        Returns
        -------
        The fitted estimator.
        """

    @abc.abstractmethod
    def embed_x(self) -> np.ndarray:
        """Embedding of the fitted ``x`` cells in the common space, ``(n_x, d)``.

        Returns
        -------
        The ``(n_x, d)`` embedding.
        """

    @abc.abstractmethod
    def embed_y(self) -> np.ndarray:
        """Embedding of the fitted ``y`` cells in the common space, ``(n_y, d)``.

        Returns
        -------
        The ``(n_y, d)`` embedding.
        """

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has completed."""
        return getattr(self, "_fitted", False)

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted yet; call fit(x, y) first"
            )

    def transform(self) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the fitted cells, ``(embed_x(), embed_y())``.

        Returns
        -------
        ``(x_aligned, y_aligned)`` of shapes ``(n_x, d)`` and ``(n_y, d)``.
        """
        return self.embed_x(), self.embed_y()

    def translate_x_to_y(self, x_new: Any, **kwargs: Any) -> np.ndarray:
        """Translate ``x`` cells into ``y``'s features: CCA, CycleGAN and MAGAN do; the
        others raise ``NotImplementedError`` saying why.

        Parameters
        ----------
        x_new
            Cells of modality 1, ``(m, p)``, with the features of the fitted ``x``.
        **kwargs
            Options of the subclass's translation (e.g. ``space=``).

        Returns
        -------
        The ``(m, q)`` translation of the cells into ``y``'s features.

        Raises
        ------
        NotImplementedError
            If the baseline cannot translate.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot translate between modalities: "
            f"{self.cannot_translate}. Use CCA, CycleGAN or MAGAN (or CrossModalAE) for "
            "translation."
        )

    def translate_y_to_x(self, y_new: Any, **kwargs: Any) -> np.ndarray:
        """Translate ``y`` cells into ``x``'s features (see :meth:`translate_x_to_y`).

        Parameters
        ----------
        y_new
            Cells of modality 2, ``(m, q)``, with the features of the fitted ``y``.
        **kwargs
            Options of the subclass's translation (e.g. ``space=``).

        Returns
        -------
        The ``(m, p)`` translation of the cells into ``x``'s features.

        Raises
        ------
        NotImplementedError
            If the baseline cannot translate.
        """
        return Baseline.translate_x_to_y(self, y_new, **kwargs)

    def fit_transform(self, x: Any, y: Any, **fit_kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fit` then :meth:`transform`.

        Parameters
        ----------
        x, y
            The two modalities, see :meth:`fit`.
        **fit_kwargs
            Further arguments of the subclass's :meth:`fit` (e.g. ``pairs=``).

        Returns
        -------
        ``(x_aligned, y_aligned)`` of shapes ``(n_x, d)`` and ``(n_y, d)``.
        """
        return self.fit(x, y, **fit_kwargs).transform()
