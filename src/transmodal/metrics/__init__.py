"""Evaluation metrics for cross-modal integration and translation.

Alignment of paired cells (row ``i`` of ``x`` and ``y`` is the same cell):

- :func:`foscttm` -- fraction of samples closer than the true match (0 = perfect).
- :func:`partner_in_top_k` -- fraction of cells whose partner is among the k nearest.
- :func:`knn_accuracy` -- k-NN accuracy of Yang et al. (2021), L1 by default;
  :func:`knn_accuracy_chance` -- its level under a random pairing (hubness);
  :func:`knn_accuracy_and_chance` -- both in one pass.

Labels (paired or not):

- :func:`cluster_accuracy` -- label of the nearest other-modality cell.
- :func:`label_transfer`, :func:`label_transfer_both` -- k-NN classifier transfer.

Mixing of modalities:

- :func:`mixing_accuracy`, :func:`mixing_accuracy_multi` -- cross-validated balanced
  accuracy of a logistic regression predicting the modality (chance = perfect mixing).

Stability across training runs:

- :func:`seed_agreement` -- chance-corrected overlap of cross-modal neighbourhoods between
  runs (seeds); warns when the runs disagree. :func:`medoid_run` -- the run that agrees
  most with the others.

Translation:

- :func:`translation_pearson`, :func:`translation_pearson_summary` -- per-cell Pearson
  correlation of translated vs observed profiles.
- :func:`mean_profile_baseline` -- the same for the mean training profile.

Conventions: direction keys ``"x_to_y"`` mean that the cells of ``x`` are queried
against (and labelled from) ``y``.  Distance-based metrics process query rows in chunks
(``chunk_size``; default about 64 MiB per ``chunk x n`` block) and never build an
``n x n`` matrix.  Ties are exact: distances are compared as computed by one
deterministic float64 routine, so duplicated rows are exactly equidistant; "strictly
closer" excludes ties (FOSCTTM, partner-in-top-k: a tie counts in the cell's favour, as
the definitions read; an embedding whose cells mostly coincide is warned of), and neighbour
lists order equal distances by row index, but :func:`label_transfer`'s, which
scikit-learn's classifier breaks as it finds them.
"""

from __future__ import annotations

from ._agreement import SEED_AGREEMENT_WARNING, medoid_run, seed_agreement
from ._labels import cluster_accuracy, label_transfer, label_transfer_both
from ._matching import (
    foscttm,
    knn_accuracy,
    knn_accuracy_and_chance,
    knn_accuracy_chance,
    partner_in_top_k,
)
from ._mixing import mixing_accuracy, mixing_accuracy_multi
from ._translation import mean_profile_baseline, translation_pearson, translation_pearson_summary

__all__ = [
    "cluster_accuracy",
    "foscttm",
    "knn_accuracy",
    "knn_accuracy_and_chance",
    "knn_accuracy_chance",
    "label_transfer",
    "label_transfer_both",
    "mean_profile_baseline",
    "medoid_run",
    "mixing_accuracy",
    "mixing_accuracy_multi",
    "partner_in_top_k",
    "seed_agreement",
    "translation_pearson",
    "translation_pearson_summary",
]
