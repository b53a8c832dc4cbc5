"""Shape-based alignment of unpaired modalities (no pairs, labels or shared features).

- :func:`landmark_isomap`: k-NN-graph geodesic distances embedded in a few dimensions.
- :func:`wasserstein_procrustes`: the rotation that overlays two unpaired point clouds.
- :func:`geometric_pairs`: both combined into cross-modal pseudo-pairs, used by
  :class:`transmodal.CrossModalAE` when it is given neither pairs nor labels.
- :func:`transport_pairs`: pseudo-pairs of landmark cells from Gromov-Wasserstein transport.
"""

from ._isomap import knn_graph, landmark_isomap
from ._pairs import GeometricMatch, geometric_pairs, transport_pairs
from ._procrustes import wasserstein_procrustes

__all__ = [
    "GeometricMatch",
    "geometric_pairs",
    "knn_graph",
    "landmark_isomap",
    "transport_pairs",
    "wasserstein_procrustes",
]
