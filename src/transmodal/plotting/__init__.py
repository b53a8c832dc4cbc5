"""Plots: the joint latent space, training curves, image galleries and analysis results."""

from ._analysis import coassociation, de_scatter, lda, marker_overlap, roc
from ._embedding import embedding, history, latent
from ._gallery import gallery

__all__ = [
    "coassociation",
    "de_scatter",
    "embedding",
    "gallery",
    "history",
    "latent",
    "lda",
    "marker_overlap",
    "roc",
]
