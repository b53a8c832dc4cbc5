"""Downstream analysis of real and translated data (Yang et al. 2021, Figs. 4-5).

Classifier on translated data:

- :func:`translated_classifier_roc` -- a classifier fitted on a modality's real cells,
  scored on cells translated into it; AUC and ROC curves (:class:`ROCResult`).

Differential expression:

- :func:`differential_expression` -- Welch's t-test per feature between two groups of an
  AnnData, Benjamini-Hochberg adjusted, mean difference and log2 fold change.
- :func:`top_markers` -- the most significant features per direction.
- :func:`compare_differential` -- predicted (e.g. translated) vs observed DE: correlation
  of the effects and marker overlap with a hypergeometric test (:class:`DEComparison`).
- :func:`benjamini_hochberg`, :func:`welch_ttest` -- the underlying statistics.

Gene sets:

- :func:`enrichment` -- over-representation of gene sets among markers (hypergeometric,
  BH-adjusted); :func:`read_gmt` reads gene sets from a GMT file.

Clusters:

- :func:`cluster_robustness` -- silhouette, Gaussian-mixture BIC and a co-association
  matrix over k-means / Gaussian-mixture / spectral clusterings, with a suggested number
  of clusters (:class:`ClusterRobustness`).

Plots of these results are in :mod:`transmodal.plotting` (``roc``, ``de_scatter``,
``marker_overlap``, ``coassociation``, ``lda``).
"""

from __future__ import annotations

from ._de import DEComparison, compare_differential, differential_expression, top_markers, welch_ttest
from ._enrichment import enrichment, read_gmt
from ._robustness import ClusterRobustness, cluster_robustness
from ._roc import ROCCurve, ROCResult, translated_classifier_roc
from ._stats import benjamini_hochberg

__all__ = [
    "ClusterRobustness",
    "DEComparison",
    "ROCCurve",
    "ROCResult",
    "benjamini_hochberg",
    "cluster_robustness",
    "compare_differential",
    "differential_expression",
    "enrichment",
    "read_gmt",
    "top_markers",
    "translated_classifier_roc",
    "welch_ttest",
]
