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

import copy
import inspect
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ._registry import check_class, put

#: names the built-in networks go by in messages, which no registered class may take
RESERVED = ("mlp", "conv", "cnn", "default")


class Architecture:
    """Base class of a modality's encoder and decoder bodies.

    Subclass it, give it a ``name`` and both methods, and register it with
    :func:`register_architecture`; ``Modality(architecture=name, architecture_options={...})``
    then builds the modality's networks with it. Each method takes its sizes by position
    and ``dropout`` by keyword. Every option in ``architecture_options`` is passed as a
    keyword to each method whose signature names it (or takes ``**kwargs``), so the two
    methods may share options (a width) or have their own. A saved model records every
    option each body was built with, its defaults included, so options and defaults must be
    JSON values (numbers, strings, booleans, lists, mappings, ``None``), and the options
    given arrive as JSON gives them back (a list; a tuple where the option's default is
    one). Layers a body freezes (``requires_grad_(False)``) stay frozen in training.

    What the library adds around the bodies: input dropout (``Modality(input_dropout=)``)
    before the encoder body; after it, the split into mean and log-variance of a
    variational model and the per-modality standardisation of the latent point; the batch
    one-hot (``batch_key``) appended to the decoder's input; and the likelihood's head,
    which maps the decoder body's output to the distribution's parameters for every
    feature. The input is the modality's preprocessed matrix (after ``normalize`` /
    ``log1p`` / ``scale`` / ``n_pca``), one row per cell, float32.

    Attributes
    ----------
    name
        Registry name (``Modality(architecture=name)``), a class attribute.

    Examples
    --------
    The built-in MLP, written as an architecture (at the model's defaults it trains bit for
    bit as the built-in one). An architecture gets the model's ``dropout``
    (``CrossModalAE(dropout=0.1)``) but not its ``hidden``: widths are the architecture's
    own options (here ``hidden``, defaulting to the model's default (256, 128)), set
    through ``architecture_options``:

    >>> import transmodal as tm
    >>> @tm.register_architecture
    ... class MLP(tm.nn.Architecture):
    ...     name = "my_mlp"
    ...     def encoder(self, n_in, n_out, *, dropout, hidden=(256, 128)):
    ...         return tm.nn.mlp(n_in, hidden, n_out, dropout=dropout)
    ...     def decoder(self, n_in, *, dropout, hidden=(256, 128)):
    ...         return tm.nn.mlp(n_in, hidden[::-1], None, dropout=dropout), hidden[0]
    >>> tm.Modality("nb", architecture="my_mlp", architecture_options={"hidden": [512, 64]})
    Modality(likelihood='nb', ...)

    ``benchmarks/plugins/residual.py`` (in the repository) is a residual one.
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


#: the positional sizes each method takes first, before ``dropout`` and the options
_N_SIZES = {"encoder": 2, "decoder": 1}


def _signature(method: Any, n_sizes: int) -> tuple[list[inspect.Parameter], bool]:
    """The option parameters of an architecture's bound ``method`` (those after its
    ``n_sizes`` positional sizes, but ``dropout``) and whether it takes ``**kwargs``."""
    params = list(inspect.signature(method).parameters.values())
    options = [p for p in params[n_sizes:]
               if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "dropout"]
    return options, any(p.kind is p.VAR_KEYWORD for p in params)


def _check_signatures(architecture: type[Architecture], name: str) -> None:
    """``TypeError`` unless each method takes its sizes by position and ``dropout`` by
    keyword; ``ValueError`` for a default that a saved model could not record."""
    bare = architecture.__new__(architecture)  # (bound methods, without running __init__)
    for method, n_sizes in _N_SIZES.items():
        fn = getattr(bare, method)
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params[:n_sizes]
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        keywords = {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        options, var_kw = _signature(fn, n_sizes)
        if len(positional) < n_sizes or not ("dropout" in keywords or var_kw):
            wanted = "n_in, n_out" if n_sizes == 2 else "n_in"
            raise TypeError(
                f"architecture class {architecture.__name__} ({name!r}): {method} must take "
                f"({wanted}, *, dropout, **options): the sizes by position, dropout by keyword"
            )
        for p in options:
            if p.default is p.empty:
                continue
            try:
                json_options({p.name: p.default})
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"architecture class {architecture.__name__} ({name!r}): the default of "
                    f"{method} option {p.name!r} ({p.default!r}) cannot be recorded in a saved "
                    f"model ({err}): give a JSON value (a number, string, boolean, list, "
                    "mapping or None), e.g. the name of an activation rather than its class"
                ) from None


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
        For anything but an :class:`Architecture` subclass, one that lacks ``encoder`` or
        ``decoder``, or whose methods do not take their sizes by position and ``dropout``
        by keyword.
    ValueError
        For an empty name, one of the built-in networks' (``"mlp"``, ``"conv"``, ...), or an
        option's default that JSON cannot hold (a saved model records every option).
    """
    name = check_class(architecture, Architecture, "register_architecture",
                       ("encoder", "decoder"))
    if name.lower() in RESERVED:
        raise ValueError(
            f"architecture name {name!r} is reserved for the built-in networks (leave "
            f"Modality(architecture=) unset for them); give {architecture.__name__} another name"
        )
    _check_signatures(architecture, name)
    put(_REGISTRY, architecture, "register_architecture", "architecture")
    return architecture


def available_architectures() -> list[str]:
    """Names of all registered architectures (the built-in networks are not among them).

    Returns
    -------
    The registered names, sorted.
    """
    return sorted(_REGISTRY)


def get_architecture(name: str) -> Architecture:
    """Return the registered architecture called ``name``.

    Parameters
    ----------
    name
        The name the architecture was registered under (its class's ``name``).

    Returns
    -------
    The registered instance of the architecture class.

    Raises
    ------
    ValueError
        If no architecture of that name is registered.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = available_architectures()
        raise ValueError(
            f"unknown architecture {name!r}; registered: {known or 'none'} (register a class "
            "with tm.register_architecture first; on the command line, --import MODULE or a "
            "config's import: section; leave architecture unset for the built-in networks)"
        ) from None


def _accepts(arch: Architecture, method: str) -> tuple[set[str], bool]:
    """The option names ``method`` of ``arch`` takes, and whether it takes ``**kwargs``."""
    options, var_kw = _signature(getattr(arch, method), _N_SIZES[method])
    return {p.name for p in options}, var_kw


def _as_default_type(arch: Architecture, method: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a list given for an option whose default is a tuple as a tuple
    (JSON, which a saved model records, has only lists)."""
    defaults = {p.name: p.default for p in _signature(getattr(arch, method), _N_SIZES[method])[0]}
    return {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in options.items()}


def _split_options(arch: Architecture, options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``options`` by the method that takes them (``encoder`` / ``decoder``); ``ValueError``
    naming an option that neither takes, or one named as what the library passes."""
    out: dict[str, dict[str, Any]] = {}
    for method in _N_SIZES:
        names, var_kw = _accepts(arch, method)
        params = list(inspect.signature(getattr(arch, method)).parameters)
        passed = {"dropout", *params[:_N_SIZES[method]]}
        clash = [k for k in options if k in passed]
        if clash:
            raise ValueError(
                f"option {clash[0]!r} of architecture {arch.name!r} is one the library passes "
                f"its {method} itself (the sizes and the model's dropout)"
            )
        out[method] = {k: v for k, v in options.items() if var_kw or k in names}
    unknown = [k for k in options if k not in out["encoder"] and k not in out["decoder"]]
    if unknown:
        named = sorted(_accepts(arch, "encoder")[0] | _accepts(arch, "decoder")[0])
        raise ValueError(
            f"architecture {arch.name!r} takes no option {unknown[0]!r} (neither its encoder "
            f"nor its decoder names it; options: {named or 'none'})"
        )
    return out


def resolve_options(name: str, options: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Every option architecture ``name`` builds each body with, ``{"encoder": {...},
    "decoder": {...}}``: those of ``options`` that the method takes and the defaults of the
    others it names (as JSON values): what a saved model records, to be rebuilt alike where
    the class's defaults change later."""
    arch = get_architecture(name)
    out = _split_options(arch, options or {})
    for method in _N_SIZES:
        for p in _signature(getattr(arch, method), _N_SIZES[method])[0]:
            if p.name not in out[method] and p.default is not p.empty:
                out[method][p.name] = json_options({p.name: p.default})[p.name]
    return out


def build_options(
    name: str, options: Mapping[str, Any] | None,
    trained: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """What each body of architecture ``name`` is built with: the ``options`` given, by the
    method that takes them (the class's defaults stay the method's own); for a model
    trained with other defaults (``trained``: its recorded :func:`resolve_options`), the
    recorded value of each default that differs now and that the method still takes. A
    list for an option whose default is a tuple is passed as a tuple."""
    arch = get_architecture(name)
    out = _split_options(arch, options or {})
    if trained:
        now = resolve_options(name, options)
        for method, recorded in trained.items():
            var_kw = _accepts(arch, method)[1]
            for k, v in recorded.items():
                if k in out[method]:  # (given)
                    continue
                if k in now[method]:  # a default, maybe another now
                    if now[method][k] != v:
                        out[method][k] = v
                elif var_kw:  # (a default no longer named, which **kwargs may read)
                    out[method][k] = v
    return {method: _as_default_type(arch, method, o) for method, o in out.items()}


def built_options(
    name: str, options: Mapping[str, Any] | None,
    trained: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every option each body of architecture ``name`` is built with, as a saved model
    records it: what :func:`build_options` passes and the defaults of the other options the
    method names (equal to :func:`resolve_options` for a new model)."""
    now = resolve_options(name, options)
    passed = build_options(name, options, trained)
    return {m: {**now[m], **json_options(passed[m])} for m in _N_SIZES}


def option_changes(
    name: str, options: Mapping[str, Any] | None, trained: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """How the options architecture ``name`` resolves to now differ from those a model
    was ``trained`` with (its recorded :func:`resolve_options`), one phrase per option."""
    arch = get_architecture(name)
    now, given = resolve_options(name, options), _split_options(arch, options or {})
    out = []
    for method in _N_SIZES:
        recorded, current = trained.get(method) or {}, now[method]
        var_kw = _accepts(arch, method)[1]
        for k in sorted(set(recorded) | set(current)):
            if k in given[method] and k in recorded and given[method][k] != recorded[k]:
                out.append(f"{method} option {k!r} is {given[method][k]!r} in the spec but "
                           f"was {recorded[k]!r} when trained: built with "
                           f"{given[method][k]!r}")
            elif k not in current and not var_kw:
                out.append(f"{method} option {k!r} (trained: {recorded[k]!r}) is no longer "
                           "taken by the class: left out")
            elif k not in recorded:
                out.append(f"{method} option {k!r} was not recorded (added to the class "
                           f"since?): built with the class's default {current[k]!r}")
            elif k in current and current[k] != recorded[k]:
                out.append(f"{method} option {k!r} defaults to {current[k]!r} now: built "
                           f"with {recorded[k]!r}, as trained")
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
        options = {}
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
    for method in _N_SIZES:
        missing = [p.name for p in _signature(getattr(arch, method), _N_SIZES[method])[0]
                   if p.default is p.empty and p.name not in options]
        if missing:
            raise ValueError(
                f"architecture {arch.name!r}: its {method} needs option {missing[0]!r} (no "
                "default)"
            )


def _dry_run(module: nn.Module, n_in: int, width: int, what: str) -> None:
    """Pass two zero rows through a copy of a freshly built body (in eval mode, the random
    state untouched: nothing the body sets on its first input, nor any counter, is moved)
    and check the output's shape; nothing is checked on the meta device."""
    if torch.empty(0).is_meta:
        return
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = copy.deepcopy(module).eval()(torch.zeros(2, n_in))
    except Exception as err:  # the user's code: its message, with where it ran
        raise ValueError(
            f"{what} failed on an input of shape (2, {n_in}): {type(err).__name__}: {err}"
        ) from err
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != (2, width) or out.dtype != torch.float32:
        got = (f"a {type(out).__name__}" if shape is None
               else f"shape {shape}" + ("" if out.dtype == torch.float32 else f" of {out.dtype}"))
        hint = ("; return one tensor (the library splits a variational encoder's output into "
                "mean and log-variance)" if isinstance(out, (tuple, list)) else "")
        raise ValueError(
            f"{what} maps (2, {n_in}) to {got}, expected a float32 tensor of shape "
            f"(2, {width}){hint}"
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
    seen: dict[Any, str] = {}
    for k, v in module.state_dict(keep_vars=True).items():
        keys = [("tensor", id(v))]
        if not v.is_meta and v.numel() > 0:  # (tensors sharing memory, e.g. tied .data)
            keys.append(("memory", v.untyped_storage().data_ptr()))
        for key in keys:
            if key in seen:
                raise ValueError(
                    f"the networks hold one tensor under two names, {seen[key]!r} and {k!r} "
                    "(a module placed twice, or parameters sharing memory: tied weights, or "
                    "one module returned for two modalities), which a saved model cannot "
                    "store; place each module once (a module may be called twice in "
                    "forward())"
                )
            seen[key] = k


def build_bodies(
    name: str, options: Mapping[str, Mapping[str, Any]], *, n_in: int, n_out: int,
    n_latent_in: int, dropout: float, modality: str,
) -> tuple[nn.Module, nn.Module, int]:
    """The encoder body, the decoder body and its output width of architecture ``name`` for
    ``modality`` (``options``: each method's keywords, as :func:`build_options` gives them), each
    checked on two rows; errors name the modality and the architecture."""
    arch = get_architecture(name)
    where = f"modality {modality!r}: architecture {name!r}"
    split = {method: dict(options.get(method) or {}) for method in ("encoder", "decoder")}
    built = []
    for method, args in (("encoder", (n_in, n_out)), ("decoder", (n_latent_in,))):
        try:
            try:
                value = getattr(arch, method)(*args, dropout=dropout, **split[method])
            except Exception:
                if not torch.empty(0).is_meta:
                    raise
                # the meta device (a saved model's networks, checked before they are
                # allocated) holds no values, which a body may read while it is built
                with torch.device("cpu"):
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
        raise ValueError(f"{where}: its decoder must return (nn.Module, output width: a "
                         f"positive int), got {dec!r:.200}")
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
