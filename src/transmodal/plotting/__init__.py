"""Plots: the joint latent space, training curves and downstream analysis results."""

from ._analysis import coassociation, de_scatter, lda, marker_overlap, roc
from ._embedding import history, latent

__all__ = ["coassociation", "de_scatter", "history", "latent", "lda", "marker_overlap", "roc"]
