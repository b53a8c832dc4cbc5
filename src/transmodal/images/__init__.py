"""Nuclear images as a modality: nuclei from microscopy images, radial chromatin profiles, clusters.

- :func:`read_nuclei` / :func:`dsb2018_nuclei`: image + instance-mask files (2-D or 3-D, PNG or
  TIFF) to one AnnData row per nucleus, with morphology in ``obs`` and fixed-size, masked,
  normalised crops in ``obsm["crops"]``.
- :func:`radial_profiles` / :func:`radial_profile`: mean intensity in shells from the nuclear
  centre to the periphery on 10 equal area (volume) fractions, the image features of Yang et al.
  (2021), named as the published T-cell profiles (``shell_0-10%`` ... ``shell_90-100%``).
- :func:`cluster_profiles` / :func:`cluster_stability`: the paper's hierarchical clustering
  (1 - Spearman, complete linkage), made deterministic, and its stability.
"""

from ._cluster import cluster_profiles, cluster_stability, spearman_distance
from ._radial import radial_profile, radial_profiles, shell_names
from ._read import dsb2018_nuclei, read_nuclei

__all__ = [
    "cluster_profiles",
    "cluster_stability",
    "dsb2018_nuclei",
    "radial_profile",
    "radial_profiles",
    "read_nuclei",
    "shell_names",
    "spearman_distance",
]
