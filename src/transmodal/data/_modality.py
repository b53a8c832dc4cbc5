"""The per-modality specification: where the matrix is, its likelihood, its preprocessing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from torch.nn import ModuleDict

from .._hints import argument_hints, known_name_hint
from .._utils import jsonable, with_article
from ..nn._architectures import (
    build_options,
    built_options,
    check_architecture_options,
    get_architecture,
    json_options,
)
from ..nn._likelihoods import available_likelihoods, get_likelihood, skips_missing


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


def check_modality_name(name: Any, *, new: bool = True) -> None:
    """``ValueError`` unless ``name`` can name a modality: a non-empty string without '|'
    (it joins the keys of modality pairs), '.' (not allowed in the networks' names) or, for
    a ``new`` model, '/' (a modality's name becomes a file name and an HDF5 key; models
    saved before that rule still load), and not a name that torch's module containers
    already use (``"train"``, ``"eval"``, ``"keys"``, ...)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"modality names must be non-empty strings, got {name!r}")
    if any(c in name for c in ("|./" if new else "|.")):
        raise ValueError(
            f"modality {name!r}: names may not contain '.', '/' or '|' (they name the "
            "networks, files and the modality pairs); rename it, e.g. "
            f"{name.replace('|', '_').replace('.', '_').replace('/', '_')!r}"
        )
    if hasattr(ModuleDict(), name):
        raise ValueError(
            f"modality {name!r}: the name is taken by torch's module containers (an "
            f"attribute of torch.nn.ModuleDict), which hold the networks by modality; "
            f"rename it, e.g. {name + '_data'!r}"
        )


@dataclass(frozen=True)
class Modality:
    """How to read, preprocess and model one modality.

    Parameters
    ----------
    likelihood
        Reconstruction likelihood: ``"gaussian"``, ``"nb"``, ``"zinb"``, ``"poisson"``,
        ``"bernoulli"``, ``"continuous_bernoulli"`` (data in [0, 1], e.g. methylation rates
        or images), ``"binomial"`` / ``"betabinomial"`` (successes out of a number of trials
        per entry, e.g. methylated out of covering reads; needs ``total_layer``) or any name
        added with :func:`transmodal.nn.register_likelihood`.
    layer
        Read the matrix from ``adata.layers[layer]`` instead of ``adata.X``.
    total_layer
        For ``"binomial"`` / ``"betabinomial"``: ``adata.layers`` key of each entry's
        number of trials (e.g. the reads covering a region; MethylVI's and ALLCools'
        ``cov``), the matrix (``layer`` or ``X``) holding the successes (``mc``). The
        encoder sees the rates, entries without trials as unmeasured (as ``missing``); the
        loss weighs every entry by its trials. Translations into the modality are rates.
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
        Default: the likelihood's: on, except for image modalities and
        ``"continuous_bernoulli"``, whose rates in ``[0, 1]`` enter as they are (there on
        with ``missing``: unmeasured entries then enter the encoder as 0 and measured ones
        as z-scores, which the methylation benchmark found far better for sparse coverage).
    n_pca
        If set, the encoder sees this many principal components of the processed matrix
        (fitted on training cells); decoders still reconstruct every feature.
    hidden
        Hidden layer widths of this modality's encoder (the decoder mirrors them). ``None``
        uses the model's default. For an image modality: the channels of the stride-2
        convolution stages (default ``(32, 64, 128)``). Not with ``architecture``.
    architecture
        Name of a network architecture registered with
        :func:`transmodal.nn.register_architecture` (a subclass of
        :class:`transmodal.nn.Architecture` giving the encoder and decoder bodies), instead
        of the built-in MLP. For matrix modalities (images use the built-in convolutional
        networks).
    architecture_options
        Keyword options of ``architecture`` (JSON values, recorded in saved models), e.g.
        ``{"width": 512}``.
    input_dropout
        Dropout on the encoder input (denoising), in [0, 1).
    augment
        Image modalities: random flips and 90-degree rotations of every training image
        (nuclei have no orientation). Ignored for other modalities.
    missing
        NaN entries of the matrix are values that were not measured (e.g. genomic regions
        without coverage in a cell's methylation rates, proteins not detected), not errors.
        The encoder sees them as the feature's training mean (0 after the scaling that is
        then on by default), and the reconstruction loss counts only measured entries. For
        likelihoods without a library size (``"gaussian"``, ``"continuous_bernoulli"``,
        ``"bernoulli"``); not for images. ``"binomial"`` / ``"betabinomial"`` always treat
        entries without trials as unmeasured (``missing=True`` is implied).
        Without it NaN values are refused.
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
    missing: bool = False
    total_layer: str | None = None
    architecture: str | None = None
    architecture_options: dict[str, Any] | None = field(default=None, hash=False)
    _extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # normalise valid widths; invalid values are kept for :meth:`check` to name
        widths = as_widths(self.hidden)
        if widths is not None:
            object.__setattr__(self, "hidden", widths)
        for key in ("normalize", "log1p", "scale", "augment", "missing"):  # numpy bools: plain
            if isinstance(getattr(self, key), np.bool_):
                object.__setattr__(self, key, bool(getattr(self, key)))
        options = self.architecture_options
        if isinstance(options, Mapping):
            try:  # as a saved model reloads them (a copy: the caller's dict may change)
                options = json_options(options)
            except (TypeError, ValueError):  # (named by check)
                options = dict(options)
            object.__setattr__(self, "architecture_options", options)

    # -- resolved options ---------------------------------------------------------------
    def resolved(self, *, image: bool = False) -> dict[str, Any]:
        """Options with defaults filled in from the likelihood (and the data's kind)."""
        lik = get_likelihood(self.likelihood)
        if self.scale is None:  # with unmeasured entries: filled ones are 0, measured z-scores
            scale = not image and (lik.defaults["scale"] or bool(self.missing))
        else:
            scale = self.scale
        return {
            "normalize": lik.defaults["normalize"] if self.normalize is None else self.normalize,
            "log1p": lik.defaults["log1p"] if self.log1p is None else self.log1p,
            "scale": scale,
            "n_pca": int(self.n_pca or 0),
            # entries without trials are unmeasured
            "missing": bool(self.missing) or lik.totals,
            # a loaded model's preprocessing where the likelihood's defaults changed since
            **self._extra.get("trained", {}),
        }

    def resolved_architecture_options(self) -> dict[str, dict[str, Any]] | None:
        """Every option ``architecture`` builds each body with, ``{"encoder": {...},
        "decoder": {...}}``, its methods' defaults included (a loaded model's: the values it
        was trained with where the class still takes them), as a saved model records them;
        ``None`` for the built-in networks."""
        if self.architecture is None:
            return None
        return built_options(self.architecture, self.architecture_options,
                             self._extra.get("architecture_options"))

    def architecture_build_options(self) -> dict[str, dict[str, Any]] | None:
        """The keyword options passed to each body's method (see
        :func:`transmodal.nn._architectures.build_options`); ``None`` for the built-in
        networks."""
        if self.architecture is None:
            return None
        return build_options(self.architecture, self.architecture_options,
                             self._extra.get("architecture_options"))

    def check(self, name: str) -> None:
        """Validate the spec itself (not the data); errors name the modality and field."""
        self._check_registered(name, "likelihood", get_likelihood)
        if self.layer is not None and self.obsm_key is not None:
            raise ValueError(
                f"modality {name!r}: give either 'layer' or 'obsm_key', not both"
            )
        for key in ("layer", "obsm_key", "batch_key", "total_layer"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"modality {name!r}: field {key!r} must be a non-empty string, got {value!r}"
                )
        for key in ("normalize", "log1p", "scale", "augment", "missing"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, bool):
                raise ValueError(
                    f"modality {name!r}: field {key!r} must be true or false, got {value!r}"
                )
        if self.missing is None:
            raise ValueError(f"modality {name!r}: field 'missing' must be true or false, got None")
        lik = get_likelihood(self.likelihood)
        if lik.totals and self.total_layer is None:
            raise ValueError(
                f"modality {name!r}: likelihood {self.likelihood!r} needs field 'total_layer', "
                "the layers key of each entry's number of trials (e.g. total_layer='cov' for "
                "reads covering each region, with the methylated reads in 'layer')"
            )
        if self.total_layer is not None and not lik.totals:
            able = [n for n in available_likelihoods() if get_likelihood(n).totals]
            raise ValueError(
                f"modality {name!r}: field 'total_layer' is for likelihoods of successes out of "
                f"a number of trials ({', '.join(able)}), not {self.likelihood!r}"
            )
        if self.total_layer is not None and self.obsm_key is not None:
            raise ValueError(
                f"modality {name!r}: field 'total_layer' goes with counts in 'layer' or X, "
                "not 'obsm_key'"
            )
        if self.total_layer is not None and self.total_layer == self.layer:
            raise ValueError(
                f"modality {name!r}: fields 'layer' and 'total_layer' are both "
                f"{self.layer!r}; the successes and the trials are two matrices"
            )
        if self.missing and not skips_missing(get_likelihood(self.likelihood)):
            able = [  # (the likelihoods of trials skip entries without any by themselves)
                n for n in available_likelihoods()
                if skips_missing(get_likelihood(n)) and not get_likelihood(n).totals
            ]
            why = (
                "a cell's library size is unknown when some of its counts are"
                if get_likelihood(self.likelihood).counts
                else "its nll does not take a mask of measured entries"
            )
            raise ValueError(
                f"modality {name!r}: field 'missing' needs a likelihood that can skip "
                f"unmeasured entries ({', '.join(able)}), not {self.likelihood!r}: {why}; "
                "for rates with unmeasured entries (e.g. methylation levels) use "
                "'continuous_bernoulli', or 'binomial' on the read counts (total_layer=)"
            )
        if (self.missing or lik.totals) and self.normalize:
            which = (
                "fields 'missing' and 'normalize'" if self.missing
                else f"likelihood {self.likelihood!r} and field 'normalize'"
            )
            raise ValueError(
                f"modality {name!r}: {which} exclude each other (a "
                "cell's library size is unknown when some of its values are)"
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
        self._check_architecture_fields(name)

    def _check_registered(self, name: str, field_: str, lookup: Any) -> None:
        """``ValueError`` naming modality ``name`` and field ``field_`` unless its value is
        a name that ``lookup`` (``get_likelihood``, ``get_architecture``) finds."""
        value = getattr(self, field_)
        if not isinstance(value, str):
            raise ValueError(
                f"modality {name!r}: field {field_!r} must be {with_article(field_)} name (a "
                f"string), got {value!r}"
            )
        try:
            lookup(value)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: field {field_!r}: {err}") from None

    def _check_architecture_fields(self, name: str) -> None:
        if self.architecture is None:
            if self.architecture_options is not None:
                raise ValueError(
                    f"modality {name!r}: field 'architecture_options' needs 'architecture' "
                    "(the built-in networks take 'hidden')"
                )
            return
        self._check_registered(name, "architecture", get_architecture)
        if self.hidden is not None:
            raise ValueError(
                f"modality {name!r}: field 'hidden' sets the built-in networks' widths; "
                f"architecture {self.architecture!r} takes its sizes in 'architecture_options'"
            )
        try:
            check_architecture_options(self.architecture, self.architecture_options)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: field 'architecture_options': {err}") from None

    # -- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON representation."""
        d = asdict(self)
        d.pop("_extra")
        # the defaults: files stay readable by versions without the fields
        if not d["missing"]:
            d.pop("missing")
        for key in ("total_layer", "architecture", "architecture_options"):
            if d[key] is None:
                d.pop(key)
        return jsonable(d)  # numpy scalars (n_pca=np.int64(50)) as Python numbers

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str, *, name: str = "?") -> Modality:
        """Build from :meth:`to_dict` output (or a config file), or from a likelihood name
        alone, rejecting unknown keys."""
        if isinstance(d, str):
            d = {"likelihood": d}
        if not isinstance(d, dict):
            raise ValueError(
                f"modality {name!r}: spec must be a likelihood name such as 'nb' or a mapping "
                f"of Modality fields (in Python also a tm.Modality), got {type(d).__name__}"
            )
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = set(d) - known
        if unknown:
            hints = [f"{k}: {h}" for k in sorted(unknown)
                     if (h := known_name_hint("Modality fields", k, sorted(known), loose=True))]
            raise ValueError(
                f"modality {name!r}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}"
                + "".join(f"; {h}" for h in hints)
            )
        return cls(**d)


# a bare TypeError for Modality(gene_likelihood=...) otherwise (the dataclass's own __init__)
Modality.__init__ = argument_hints(Modality.__init__)  # type: ignore[method-assign]
