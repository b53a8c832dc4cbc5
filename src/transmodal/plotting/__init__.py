"""Plots: the joint latent space and training curves."""

from ._embedding import history, latent

__all__ = ["history", "latent"]
