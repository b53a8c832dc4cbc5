"""The per-modality specification: where the matrix is, its likelihood, its preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .._utils import jsonable
from ..nn._likelihoods import get_likelihood


def is_number(value: Any, *, integer: bool = False) -> bool:
    """Whether ``value`` is a finite real number (an integer with ``integer``), not a bool
    or a string."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if not isinstance(value, kinds) or isinstance(value, (bool, np.bool_)):
        return False
    return isinstance(value, (int, np.integer)) or bool(np.isfinite(value))  # ints: any size


def as_widths(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of layer widths, or ``None`` unless it is a non-empty list,
    tuple or 1-d array of positive integers."""
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else None
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        return None
    if not all(is_number(h, integer=True) and h >= 1 for h in value):
        return None
    return tuple(int(h) for h in value)


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
    batch_key
        ``obs`` column of this modality's batches (samples, donors, plates). The decoder
        takes the batch as a covariate (one-hot, as scVI's), so the shared latent space
        need not encode batch effects; the encoder does not see it, so embedding new
        cells needs no batch column. Translations into this modality are decoded in a
        chosen batch or averaged over all (``translate(target_batch=...)``).

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
    batch_key: str | None = None
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # normalise valid widths; invalid values are kept for :meth:`check` to name
        widths = as_widths(self.hidden)
        if widths is not None:
            object.__setattr__(self, "hidden", widths)
        for key in ("normalize", "log1p", "scale", "augment"):  # numpy booleans: plain
            if isinstance(getattr(self, key), np.bool_):
                object.__setattr__(self, key, bool(getattr(self, key)))

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
        if not isinstance(self.likelihood, str):
            raise ValueError(
                f"modality {name!r}: field 'likelihood' must be a likelihood name (a string), "
                f"got {self.likelihood!r}"
            )
        try:
            get_likelihood(self.likelihood)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: field 'likelihood': {err}") from None
        if self.layer is not None and self.obsm_key is not None:
            raise ValueError(
                f"modality {name!r}: give either 'layer' or 'obsm_key', not both"
            )
        for key in ("layer", "obsm_key", "batch_key"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"modality {name!r}: field {key!r} must be a non-empty string, got {value!r}"
                )
        for key in ("normalize", "log1p", "scale", "augment"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, bool):
                raise ValueError(
                    f"modality {name!r}: field {key!r} must be true or false, got {value!r}"
                )
        if self.n_pca is not None and not (is_number(self.n_pca, integer=True) and self.n_pca >= 1):
            raise ValueError(
                f"modality {name!r}: field 'n_pca' must be a positive integer, got {self.n_pca!r}"
            )
        if self.hidden is not None and as_widths(self.hidden) is None:
            raise ValueError(
                f"modality {name!r}: field 'hidden' must be a list of positive integers, "
                f"got {self.hidden!r}"
            )
        if not (is_number(self.input_dropout) and 0.0 <= self.input_dropout < 1.0):
            raise ValueError(
                f"modality {name!r}: field 'input_dropout' must be a number in [0, 1), "
                f"got {self.input_dropout!r}"
            )

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation."""
        d = asdict(self)
        d.pop("_extra")
        return jsonable(d)  # numpy scalars (n_pca=np.int64(50)) as Python numbers

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
