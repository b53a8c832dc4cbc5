"""Network architectures a user plugs in for a modality, registered by name.

The built-in networks are an MLP for matrices and a convolutional network for images
(:mod:`transmodal.nn._mlp`, :mod:`transmodal.nn._conv`). A modality whose data want another
shape of network (residual blocks, attention over tokens, a graph layer, a pretrained
body) names a registered :class:`Architecture` in ``Modality(architecture=...)``; the
library keeps what every encoder and decoder shares (input dropout, the variational split,
the latent standardisation, batch covariates, the likelihood's output head), so the
architecture gives only the two bodies. Saved models keep the name and the options (JSON)
and the weights (safetensors): loading one needs the same registration, never pickled code.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .._utils import user_stacklevel

#: names the built-in networks go by in messages, which no registered class may take
RESERVED = ("mlp", "conv", "cnn", "default")


class Architecture:
    """Base class of a modality's encoder and decoder bodies.

    Subclass it, give it a ``name`` and both methods, and register it with
    :func:`register_architecture`; ``Modality(architecture=name, architecture_options={...})``
    then builds the modality's networks with it. Every option in ``architecture_options`` is
    passed as a keyword to each method whose signature names it (or takes ``**kwargs``), so
    the two methods may share options (a width) or have their own; options must be JSON
    values, since a saved model records them.

    What the library adds around the bodies: input dropout (``Modality(input_dropout=)``)
    before the encoder body; after it, the split into mean and log-variance of a
    variational model and the per-modality standardisation of the latent point; the batch
    one-hot (``batch_key``) appended to the decoder's input; and the likelihood's head,
    which maps the decoder body's output to the distribution's parameters for every
    feature. The input is the modality's preprocessed matrix (after ``normalize`` /
    ``log1p`` / ``scale`` / ``n_pca``), one row per cell, float32.

    Class attributes
    ----------------
    name
        Registry name (``Modality(architecture=name)``).

    Examples
    --------
    >>> import torch.nn as nn
    >>> import transmodal as tm
    >>> @tm.nn.register_architecture
    ... class Residual(tm.nn.Architecture):
    ...     name = "residual"
    ...     def encoder(self, n_in, n_out, *, dropout, width=256):
    ...         return nn.Sequential(nn.Linear(n_in, width), nn.GELU(), nn.Linear(width, n_out))
    ...     def decoder(self, n_in, *, dropout, width=256):
    ...         return nn.Sequential(nn.Linear(n_in, width), nn.GELU()), width
    >>> tm.Modality("nb", architecture="residual", architecture_options={"width": 128})
    Modality(likelihood='nb', ...)
    """

    name: ClassVar[str] = ""

    def encoder(self, n_in: int, n_out: int, *, dropout: float, **options: Any) -> nn.Module:
        """The encoder body: a module mapping ``(cells, n_in)`` to ``(cells, n_out)``.

        Parameters
        ----------
        n_in
            Width of the encoder input (features, or ``n_pca`` components).
        n_out
            Width to return: the latent dimensions (shared plus private), doubled for a
            variational model (means and log-variances).
        dropout
            The model's ``dropout`` for hidden layers (use it or not).
        **options
            The modality's ``architecture_options`` that this method names.
        """
        raise NotImplementedError

    def decoder(self, n_in: int, *, dropout: float, **options: Any) -> tuple[nn.Module, int]:
        """The decoder body and the width of its output.

        Parameters
        ----------
        n_in
            Width of the decoder input: the latent dimensions (shared plus private) plus
            the modality's batches (one-hot).
        dropout
            The model's ``dropout`` for hidden layers.
        **options
            The modality's ``architecture_options`` that this method names.

        Returns
        -------
        ``(module, width)``: the module maps ``(cells, n_in)`` to ``(cells, width)``, which
        the likelihood's head maps to its parameters for every feature.
        """
        raise NotImplementedError


_REGISTRY: dict[str, Architecture] = {}


def _check_architecture_class(architecture: Any) -> None:
    """Refuse what :func:`register_architecture` cannot use, naming the problem."""
    if not (isinstance(architecture, type) and issubclass(architecture, Architecture)):
        what = (f"an instance of {type(architecture).__name__}; pass the class itself"
                if isinstance(architecture, Architecture) else repr(architecture))
        raise TypeError(f"register_architecture takes an Architecture subclass, got {what}")
    name = architecture.name
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(
            f"architecture class {architecture.__name__} needs a `name`: a non-empty string "
            f"without surrounding spaces, got {name!r}"
        )
    if name.lower() in RESERVED:
        raise ValueError(
            f"architecture name {name!r} is reserved for the built-in networks (leave "
            f"Modality(architecture=) unset for them); give {architecture.__name__} another name"
        )
    lacking = [m for m in ("encoder", "decoder")
               if getattr(architecture, m) is getattr(Architecture, m)]
    if lacking:
        raise TypeError(
            f"architecture class {architecture.__name__} ({name!r}) must implement "
            f"{' and '.join(lacking)}"
        )


def register_architecture(architecture: type[Architecture]) -> type[Architecture]:
    """Register an :class:`Architecture` subclass under its ``name`` (usable as a decorator).

    Registering a name again replaces the earlier class (a notebook cell run again), with a
    warning when the class has another name. A model saved with the architecture loads only
    where it is registered again (its weights must fit the networks it builds).

    Parameters
    ----------
    architecture
        The class (not an instance); ``Modality(architecture=architecture.name)`` then
        uses it.

    Returns
    -------
    The class itself, so that ``@register_architecture`` decorates a class definition.

    Raises
    ------
    TypeError
        For anything but an :class:`Architecture` subclass, or one that lacks ``encoder``
        or ``decoder``.
    ValueError
        For an empty name or one of the built-in networks' (``"mlp"``, ``"conv"``, ...).
    """
    _check_architecture_class(architecture)
    old = _REGISTRY.get(architecture.name)
    if old is not None and type(old).__qualname__ != architecture.__qualname__:
        warnings.warn(
            f"register_architecture: {architecture.__name__} replaces "
            f"{type(old).__name__} as architecture {architecture.name!r}", UserWarning,
            stacklevel=user_stacklevel(),
        )
    _REGISTRY[architecture.name] = architecture()
    return architecture


def available_architectures() -> list[str]:
    """Names of all registered architectures (the built-in networks are not among them)."""
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """Return the registered architecture called ``name``."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = available_architectures()
        raise ValueError(
            f"unknown architecture {name!r}; registered: {known or 'none'} (register a class "
            "with tm.register_architecture first, on the command line with --import MODULE; "
            "leave architecture unset for the built-in networks)"
        ) from None


def _takes(method: Any) -> tuple[set[str], bool]:
    """The keyword names ``method`` takes after its positional sizes, and whether it takes
    ``**kwargs``."""
    params = inspect.signature(method).parameters.values()
    names = {p.name for p in params
             if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


#: what the library passes to the methods itself (no option may take these names)
_SIZES = ("n_in", "n_out", "dropout")


def _split_options(arch: Architecture, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``options`` by the method that takes them (``encoder`` / ``decoder``); ``ValueError``
    naming an option that neither takes."""
    sizes = [k for k in options if k in _SIZES]
    if sizes:
        raise ValueError(
            f"option {sizes[0]!r} of architecture {arch.name!r} is one the library passes "
            f"itself ({', '.join(_SIZES)}: the sizes and the model's dropout)"
        )
    out: dict[str, dict[str, Any]] = {}
    for method in ("encoder", "decoder"):
        names, var = _takes(getattr(arch, method))
        out[method] = {k: v for k, v in options.items() if var or k in names}
    unknown = [k for k in options if k not in out["encoder"] and k not in out["decoder"]]
    if unknown:
        raise ValueError(
            f"architecture {arch.name!r} takes no option {unknown[0]!r} (neither its encoder "
            f"nor its decoder names it; options: {_option_names(arch) or 'none'})"
        )
    return out


def _option_names(arch: Architecture) -> list[str]:
    """The keyword options the architecture's methods name (not the sizes)."""
    names = _takes(arch.encoder)[0] | _takes(arch.decoder)[0]
    return sorted(names - {"self", *_SIZES})


def resolve_options(name: str, options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The keyword options architecture ``name`` builds each body with, ``{"encoder": {...},
    "decoder": {...}}``: those of ``options`` that the method names, and the defaults of
    the other options it names (JSON values only), so that a saved model records them and
    is rebuilt alike where the class's defaults change later."""
    arch = get_architecture(name)
    out = _split_options(arch, options or {})
    for method in ("encoder", "decoder"):
        for p in inspect.signature(getattr(arch, method)).parameters.values():
            if (p.name in out[method] or p.name in _SIZES or p.default is p.empty
                    or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)):
                continue
            try:
                out[method][p.name] = json_options({p.name: p.default})[p.name]
            except (TypeError, ValueError):  # (a default JSON cannot hold: not recorded)
                continue
    return out


def _numpy_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a {type(value).__name__} is not a JSON value")


def _string_keys(value: Any) -> None:
    """``TypeError`` for a mapping key (at any depth) that is not a string (JSON would
    turn ``1`` into ``"1"`` and ``None`` into ``"null"``)."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"key {k!r} is not a string")
            _string_keys(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _string_keys(v)


def json_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a saved model records and reloads them (numpy scalars as numbers,
    tuples as lists, mappings as dicts), so that a new model's architecture gets what a
    loaded one will; ``TypeError`` / ``ValueError`` for values JSON cannot hold."""
    _string_keys(options)

    def plain(value: Any) -> Any:
        if isinstance(value, Mapping):  # (a MappingProxyType, a UserDict, an OmegaConf dict)
            return dict(value)
        return _numpy_scalar(value)

    return json.loads(json.dumps(dict(options), allow_nan=False, default=plain))


def check_architecture_options(name: str, options: Any) -> None:
    """``ValueError`` unless ``options`` suit the registered architecture ``name``: a mapping
    of JSON values, with string keys that its encoder or decoder takes."""
    arch = get_architecture(name)
    if options is None:
        return
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(
            f"architecture_options must be a mapping of option names (strings) to values, "
            f"got {options!r}"
        )
    try:
        json_options(options)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"architecture_options must hold JSON values (numbers, strings, booleans, lists, "
            f"mappings), since a saved model records them: {err}"
        ) from None
    _split_options(arch, options)


def _dry_run(module: nn.Module, n_in: int, width: int, what: str) -> None:
    """Pass two zero rows through a freshly built body (in eval mode, the random state
    untouched) and check the output's shape; nothing is checked on the meta device."""
    if torch.empty(0).is_meta:
        return
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = module(torch.zeros(2, n_in))
    except Exception as err:  # the user's code: its message, with where it ran
        raise ValueError(
            f"{what} failed on an input of shape (2, {n_in}): {type(err).__name__}: {err}"
        ) from err
    finally:
        module.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (2, width) or out.dtype != torch.float32:
        got = (f"a {type(out).__name__}" if shape is None
               else f"shape {shape}" + ("" if out.dtype == torch.float32 else f" of {out.dtype}"))
        raise ValueError(
            f"{what} maps (2, {n_in}) to {got}, expected a float32 tensor of shape (2, {width})"
        )


def _check_parameters(module: nn.Module, what: str) -> None:
    """``ValueError`` for parameters whose shape is left to the first input (lazy
    modules: a saved model's networks are built, and checked, before any input) or whose
    precision is not float32 (the model's; mixed precision is the trainer's)."""
    state = module.state_dict(keep_vars=True)
    lazy = [k for k, v in state.items() if nn.parameter.is_lazy(v)]
    if lazy:
        raise ValueError(
            f"{what} has parameters of a lazy module ({lazy[0]!r}): give the layer its input "
            "size (n_in is passed to the method), e.g. nn.Linear(n_in, width)"
        )
    other = [(k, v.dtype) for k, v in state.items()
             if v.is_floating_point() and v.dtype != torch.float32]
    if other:
        raise ValueError(
            f"{what} has {other[0][1]} tensors ({other[0][0]!r}): build them in float32, "
            "the model's precision (train(precision='bf16-mixed') trains in lower precision)"
        )


def check_unshared(module: nn.Module) -> None:
    """``ValueError`` naming a tensor that ``module`` holds under two names (a module
    placed twice: tied weights, or one module returned for two modalities), which a saved
    model cannot store (safetensors holds each tensor once)."""
    seen: dict[int, str] = {}
    for k, v in module.state_dict(keep_vars=True).items():
        if id(v) in seen:
            raise ValueError(
                f"the networks hold one tensor under two names, {seen[id(v)]!r} and {k!r} (a "
                "module placed twice: tied weights, or one module returned for two "
                "modalities), which a saved model cannot store; place each module once "
                "(a module may be called twice in forward())"
            )
        seen[id(v)] = k


def build_bodies(
    name: str, options: Mapping[str, Mapping[str, Any]], *, n_in: int, n_out: int,
    n_latent_in: int, dropout: float, modality: str,
) -> tuple[nn.Module, nn.Module, int]:
    """The encoder body, the decoder body and its output width of architecture ``name`` for
    ``modality`` (``options``: each method's, as :func:`resolve_options` gives them), each
    checked on two rows; errors name the modality and the architecture."""
    arch = get_architecture(name)
    where = f"modality {modality!r}: architecture {name!r}"
    split = {method: dict(options.get(method) or {}) for method in ("encoder", "decoder")}
    built = []
    for method, args in (("encoder", (n_in, n_out)), ("decoder", (n_latent_in,))):
        try:
            value = getattr(arch, method)(*args, dropout=dropout, **split[method])
        except Exception as err:
            call = ", ".join([*map(str, args), f"dropout={dropout}",
                              *(f"{k}={v!r}" for k, v in split[method].items())])
            raise ValueError(
                f"{where}: its {method}({call}) raised {type(err).__name__}: {err}"
            ) from err
        built.append(value)
    encoder, dec = built
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{where}: its encoder returned {type(encoder).__name__}, not a torch "
                         "nn.Module")
    if (not isinstance(dec, tuple) or len(dec) != 2 or not isinstance(dec[0], nn.Module)
            or not isinstance(dec[1], int) or isinstance(dec[1], bool) or dec[1] < 1):
        raise ValueError(f"{where}: its decoder must return (nn.Module, output width), got "
                         f"{dec!r:.200}")
    decoder, width = dec
    for module, n, w, which in ((encoder, n_in, n_out, "encoder"),
                                (decoder, n_latent_in, width, "decoder")):
        _check_parameters(module, f"{where}: its {which}")
        _dry_run(module, n, w, f"{where}: its {which}")
    return encoder, decoder, width


__all__ = [
    "Architecture",
    "available_architectures",
    "get_architecture",
    "register_architecture",
]
