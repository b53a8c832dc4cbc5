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
- :class:`CCA` -- linear canonical correlation analysis on paired cells (Seurat v3 style).
- :class:`DCCA` -- deep CCA: two MLPs maximising canonical correlation on (a fraction of)
  paired cells.
- :class:`CycleGAN` -- direct generators between the modalities with a cycle loss
  (unpaired).
- :class:`MAGAN` -- CycleGAN plus a correspondence loss on known pairs.

The paired-data baselines embed new cells (``embed_x(x_new)``) with the preprocessing fitted
on the training cells; CCA, CycleGAN and MAGAN also translate.
"""

from __future__ import annotations

from ._base import Baseline
from ._cca import CCA
from ._dcca import DCCA
from ._gan import MAGAN, CycleGAN
from ._ot import GromovWassersteinOT

__all__ = ["CCA", "DCCA", "MAGAN", "Baseline", "CycleGAN", "GromovWassersteinOT"]
