"""Preprocessing of a modality's raw matrix as a torch module with fitted buffers.

The fitted statistics (library-size target, per-feature mean / standard deviation, PCA
loadings) are buffers, so they are saved with the model weights and applied identically
at training, embedding and translation time.
"""

from __future__ import annotations

import torch
from torch import nn


class InputTransform(nn.Module):
    """Library-size normalisation, log1p, per-feature scaling and optional PCA.

    Parameters
    ----------
    n_vars
        Number of raw features.
    normalize
        Divide each cell by its library size and multiply by ``target_sum``.
    log1p
        Apply ``log1p`` after normalisation.
    scale
        Standardise each feature with the fitted mean and standard deviation.
    n_pca
        If > 0, the encoder sees this many principal components of the processed data.
    missing
        NaN entries are unmeasured: they are replaced by the feature's fitted mean of the
        (log1p) data (buffer ``fill``) before scaling, so they enter the encoder as the
        average cell's value (0 after scaling).
    """

    def __init__(
        self,
        n_vars: int,
        *,
        normalize: bool,
        log1p: bool,
        scale: bool,
        n_pca: int = 0,
        missing: bool = False,
    ) -> None:
        super().__init__()
        self.n_vars = n_vars
        self.normalize = normalize
        self.log1p = log1p
        self.scale = scale
        self.n_pca = n_pca
        self.missing = missing
        if missing:  # only then: the weights of models without it keep their keys
            self.register_buffer("fill", torch.zeros(n_vars))
        self.register_buffer("target_sum", torch.tensor(1.0))
        self.register_buffer("library_size", torch.tensor(1.0))
        self.register_buffer("mean", torch.zeros(n_vars))
        self.register_buffer("std", torch.ones(n_vars))
        self.register_buffer("pca_components", torch.zeros(n_pca, n_vars))
        self.register_buffer("pca_mean", torch.zeros(n_vars if n_pca else 0))

    @property
    def n_input(self) -> int:
        """Width of the encoder input."""
        return self.n_pca if self.n_pca else self.n_vars

    def library(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell library size (row sums of the raw data; unmeasured entries count 0)."""
        return x.nansum(-1) if self.missing else x.sum(-1)

    def process(self, x: torch.Tensor) -> torch.Tensor:
        """Raw data -> normalised / log1p / scaled features (before PCA)."""
        if self.normalize:
            x = x / self.library(x).clamp_min(1.0).unsqueeze(-1) * self.target_sum
        if self.log1p:
            x = torch.log1p(x)
        if self.missing:
            x = torch.where(torch.isnan(x), self.fill, x)
        if self.scale:
            x = (x - self.mean) / self.std
        return x

    def encoder_input(self, processed: torch.Tensor) -> torch.Tensor:
        """Processed features -> encoder input (PCA projection if configured)."""
        if self.n_pca:
            return (processed - self.pca_mean) @ self.pca_components.T
        return processed

    def inverse(self, processed: torch.Tensor) -> torch.Tensor:
        """Undo scaling and log1p (normalised units when ``normalize`` is set)."""
        x = processed
        if self.scale:
            x = x * self.std + self.mean
        if self.log1p:
            x = torch.expm1(x).clamp_min(0.0)
        return x

    def load_fitted(self, stats: dict[str, torch.Tensor]) -> None:
        """Copy fitted statistics (from :func:`transmodal.data.fit_preprocessing`)."""
        for name, value in stats.items():
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))
