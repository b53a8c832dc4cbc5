"""Common interface of the alignment baselines and shared input validation."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from .._utils import check_int  # noqa: F401 - re-exported for the baselines
from ..metrics._chunked import as_dense_matrix  # noqa: F401 - re-exported for the baselines


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
        """Embedding of the fitted ``x`` cells in the common space, ``(n_x, d)``."""

    @abc.abstractmethod
    def embed_y(self) -> np.ndarray:
        """Embedding of the fitted ``y`` cells in the common space, ``(n_y, d)``."""

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

    def fit_transform(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`fit` then :meth:`transform`.

        Parameters
        ----------
        x, y
            The two modalities, see :meth:`fit`.

        Returns
        -------
        ``(x_aligned, y_aligned)`` of shapes ``(n_x, d)`` and ``(n_y, d)``.
        """
        return self.fit(x, y).transform()
