"""The per-modality specification: where the matrix is, its likelihood, its preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..nn._likelihoods import get_likelihood


@dataclass(frozen=True)
class Modality:
    """How to read, preprocess and model one modality.

    Parameters
    ----------
    likelihood
        Reconstruction likelihood: ``"gaussian"``, ``"nb"``, ``"zinb"``, ``"poisson"``,
        ``"bernoulli"`` (or any name added with :func:`transmodal.nn.register_likelihood`).
    layer
        Read the matrix from ``adata.layers[layer]`` instead of ``adata.X``.
    obsm_key
        Read the matrix from ``adata.obsm[obsm_key]`` (e.g. a precomputed embedding);
        feature names are then ``f"{obsm_key}_{i}"``. An array of images,
        ``(cells, channels, H, W)`` or ``(cells, channels, D, H, W)`` (e.g. the nucleus
        crops of :func:`transmodal.images.read_nuclei`), makes this an *image modality*
        with a convolutional encoder / decoder built from the image shape.
    normalize
        Library-size normalisation of the encoder input (divide by each cell's total,
        multiply by the median training total). Default: on for count likelihoods.
    log1p
        ``log1p`` of the encoder input. Default: on for count likelihoods.
    scale
        Standardise every feature with the mean / standard deviation of the training cells.
        Default: on, except for image modalities and likelihoods of data in ``[0, 1]``.
    n_pca
        If set, the encoder sees this many principal components of the processed matrix
        (fitted on training cells); decoders still reconstruct every feature.
    hidden
        Hidden layer widths of this modality's encoder (the decoder mirrors them). ``None``
        uses the model's default. For an image modality: the channels of the stride-2
        convolution stages (default ``(32, 64, 128)``).
    input_dropout
        Dropout on the encoder input (denoising), in [0, 1).
    augment
        Image modalities: random flips and 90-degree rotations of every training image
        (nuclei have no orientation). Ignored for other modalities.

    Examples
    --------
    >>> import transmodal as tm
    >>> tm.Modality("nb", layer="counts")
    Modality(likelihood='nb', layer='counts', ...)
    """

    likelihood: str = "gaussian"
    layer: str | None = None
    obsm_key: str | None = None
    normalize: bool | None = None
    log1p: bool | None = None
    scale: bool | None = None
    n_pca: int | None = None
    hidden: tuple[int, ...] | None = None
    input_dropout: float = 0.0
    augment: bool = True
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.hidden is not None:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    # -- resolved options ---------------------------------------------------------------
    def resolved(self, *, image: bool = False) -> dict[str, Any]:
        """Options with defaults filled in from the likelihood (and the data's kind)."""
        lik = get_likelihood(self.likelihood)
        scale = (not image and lik.defaults["scale"]) if self.scale is None else self.scale
        return {
            "normalize": lik.defaults["normalize"] if self.normalize is None else self.normalize,
            "log1p": lik.defaults["log1p"] if self.log1p is None else self.log1p,
            "scale": scale,
            "n_pca": int(self.n_pca or 0),
        }

    def check(self, name: str) -> None:
        """Validate the spec itself (not the data); errors name the modality and field."""
        try:
            get_likelihood(self.likelihood)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: field 'likelihood': {err}") from None
        if self.layer is not None and self.obsm_key is not None:
            raise ValueError(
                f"modality {name!r}: give either 'layer' or 'obsm_key', not both"
            )
        for key in ("layer", "obsm_key"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"modality {name!r}: field {key!r} must be a non-empty string")
        for key in ("normalize", "log1p", "scale", "augment"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"modality {name!r}: field {key!r} must be true or false")
        if self.n_pca is not None and (
            isinstance(self.n_pca, bool) or not isinstance(self.n_pca, (int, np.integer)) or self.n_pca < 1
        ):
            raise ValueError(f"modality {name!r}: field 'n_pca' must be a positive integer")
        if self.hidden is not None and (
            len(self.hidden) == 0 or any(h < 1 for h in self.hidden)
        ):
            raise ValueError(
                f"modality {name!r}: field 'hidden' must be a non-empty list of positive widths"
            )
        if not 0.0 <= float(self.input_dropout) < 1.0:
            raise ValueError(f"modality {name!r}: field 'input_dropout' must be in [0, 1)")

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation."""
        d = asdict(self)
        d.pop("_extra")
        if d["hidden"] is not None:
            d["hidden"] = list(d["hidden"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, name: str = "?") -> Modality:
        """Build from :meth:`to_dict` output (or a config file), rejecting unknown keys."""
        if isinstance(d, str):
            d = {"likelihood": d}
        if not isinstance(d, dict):
            raise ValueError(f"modality {name!r}: spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"modality {name!r}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)
