"""Baseline methods for aligning two single-cell modalities, for comparison.

These are reference methods that :class:`transmodal.CrossModalAE` should beat; they share
the small interface of :class:`Baseline`: ``fit(x, y)`` on the cells of two modalities
(``x`` ``(n_x, p)``, ``y`` ``(n_y, q)``, dense or scipy sparse), then ``embed_x()``,
``embed_y()`` or ``transform()`` for the embeddings of those cells in one common space,
or ``fit_transform(x, y) -> (x_aligned, y_aligned)`` in one call.

- :class:`GromovWassersteinOT` -- unpaired alignment by entropic Gromov-Wasserstein
  optimal transport between k-NN geodesic distances, with barycentric projection
  (SCOT, Demetci et al. 2022).  Needs the ``pot`` package.  Dense ``O(n^2)`` memory:
  for small and medium data sets only.
"""

from __future__ import annotations

from ._base import Baseline
from ._ot import GromovWassersteinOT

__all__ = ["Baseline", "GromovWassersteinOT"]
