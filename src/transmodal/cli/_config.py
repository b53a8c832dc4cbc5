"""Run-config files of ``transmodal train``: reading (YAML or JSON) and validation.

Everything here is checked before any data is read or any network is built, so a typo in
a config costs seconds, not a training run. Every problem is raised as :class:`ConfigError`
with one line naming the file, the section and the key.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._hints import known_name_hint

TOP_LEVEL_KEYS = (
    "import", "data", "mudata", "modalities", "reference", "model", "train", "runs", "out",
    "subset",
)
SUBSET_KEYS = ("obs_key", "value")
REFERENCE_KEYS = ("path", "anchor")
_NAME_ANCHOR = "reference: {path: ..., anchor: <name>}"  # (how a config names the anchor)
RUNS_KEYS = ("seeds", "combine", "k")
COMBINE = ("consensus", "ensemble")


class ConfigError(ValueError):
    """A problem with a run-config file (reported as one line, exit code 2)."""


# ----------------------------------------------------------------------------- reading
class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a float, reads only true / false as
    booleans and rejects duplicate keys."""


# booleans as in YAML 1.2: yes / no / on / off (YAML 1.1 booleans) stay strings, so that
# e.g. ``subset: {obs_key: qc, value: yes}`` selects the cells whose value is "yes"; and
# integers in plain decimal only: YAML 1.1's octal (010 -> 8), sexagesimal (1:30 -> 90),
# hexadecimal and digit-separated (1_2 -> 12) forms stay strings, as do numbers with
# leading zeros (IDs such as donor "010", which YAML 1.2 would read as 10)
_BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float"))
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)

# floats as in YAML 1.2 too: "1e-3" (YAML 1.1 needs a dot, "1.0e-3"), without YAML 1.1's
# sexagesimal form (1:30.5 -> 90.5) or digit separators (1_2.5)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+[eE][-+]?[0-9]+
        |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper whose output :class:`_Loader` reads back as it was: a string that
    it (``"1e5"``, ``"-.5"``) or YAML 1.1 (``"yes"``, ``"010"``) would read as another
    type is quoted."""


_Dumper.yaml_implicit_resolvers = {
    first: [*resolvers] for first, resolvers in yaml.SafeDumper.yaml_implicit_resolvers.items()
}
for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    _Dumper.yaml_implicit_resolvers.setdefault(_first, []).extend(_resolvers)


def dump_config(data: Mapping[str, Any]) -> str:
    """``data`` as YAML that :func:`load_config` reads back as it is (keys in order)."""
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key: let PyYAML report it
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return problem


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a repeated key are refused (json keeps the last silently; the YAML
    loader refuses them too)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a YAML (or, by ``.json`` suffix, JSON) file into a dict."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"config {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.object[err.start]:#x} at position {err.start}); "
            "save the config as UTF-8"
        ) from None
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"{path}: invalid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
            ) from None
        except ValueError as err:  # a repeated key
            raise ConfigError(f"{path}: invalid JSON: {err}") from None
    else:
        try:
            raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {_yaml_problem(err)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config is empty")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping of sections ({', '.join(TOP_LEVEL_KEYS)}), "
            f"got {type(raw).__name__}"
        )
    return raw


# -------------------------------------------------------------------------- type checks
def _split_union(annotation: str) -> list[str]:
    """Split ``"int | list[int | str] | None"`` at top-level ``|`` only."""
    parts, depth, cur = [], 0, ""
    for ch in annotation:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_SCALARS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", _is_int),
    "float": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "None": ("null", lambda v: v is None),
}
_INT_LIST = re.compile(r"^(?:[\w.]*Sequence|list|tuple|List|Tuple)\[int(?:, \.\.\.)?\]$")


def _annotation_text(annotation: Any) -> str | None:
    if annotation is inspect.Parameter.empty:
        return None
    if isinstance(annotation, str):
        return annotation
    return inspect.formatannotation(annotation)


def expected_type(annotation: Any) -> tuple[str, Any] | None:
    """``(description, check)`` for simple annotations; ``None`` when we cannot tell."""
    text = _annotation_text(annotation)
    if text is None:
        return None
    checks, names = [], []
    for part in _split_union(text):
        if part in _SCALARS:
            desc, fn = _SCALARS[part]
        elif _INT_LIST.match(part):
            desc = "a list of integers"

            def fn(v):
                return isinstance(v, (list, tuple)) and all(_is_int(x) for x in v)

        else:
            return None  # an annotation we do not understand: do not guess
        names.append(desc)
        checks.append(fn)
    if not checks:
        return None
    if len(names) > 1:
        desc = ", ".join(names[:-1]) + " or " + names[-1]
    else:
        desc = names[0]
    return desc, (lambda v: any(fn(v) for fn in checks))


def signature_params(func, skip: tuple[str, ...] = ("self",)) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``func`` (by name), without ``skip`` and ``*args``/``**kwargs``."""
    out = {}
    for name, p in inspect.signature(func).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[name] = p
    return out


def _unknown_key(where: str, key: Any, known: list[str], takes: str = "") -> ConfigError:
    """An unknown ``key`` of a config section; ``takes``: the method whose arguments the
    section holds (``"train"``, ``"__init__"``), for the names other tools use."""
    hint = known_name_hint(takes, str(key), known, loose=True)
    return ConfigError(
        f"{where}: unknown key {key!r}{f' ({hint})' if hint else ''}; known keys: "
        f"{', '.join(known)}"
    )


def check_kwargs(
    section: dict[str, Any], params: dict[str, inspect.Parameter], where: str, takes: str = ""
) -> dict[str, Any]:
    """Check a section's keys against a signature (of ``takes``, see :func:`_unknown_key`)
    and its values against the annotations."""
    known = list(params)
    for key, value in section.items():
        if key not in params:
            raise _unknown_key(where, key, known, takes)
        exp = expected_type(params[key].annotation)
        if exp is not None and not exp[1](value):
            raise ConfigError(
                f"{where}: key {key!r} must be {exp[0]}, got {value!r} ({type(value).__name__})"
            )
    return dict(section)


# ----------------------------------------------------------------------------- the config
@dataclass
class RunConfig:
    """A validated ``transmodal train`` config (paths resolved, modalities built)."""

    path: Path
    modalities: dict[str, Any]
    data: dict[str, Path] | None = None
    mudata: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    subset: dict[str, Any] | None = None
    runs: dict[str, Any] | None = None
    # ``model`` as a model saves it (``init_params_``), defaults included (not written out)
    model_params: dict[str, Any] = field(default_factory=dict)
    # a trained model the new one joins (CrossModalAE.from_reference): ``path``, ``anchor``
    # (the config's, or as chosen from the data) and ``specs``, its modalities' specs as
    # the new model takes them (:func:`transmodal.model._reference.explicit_specs`)
    reference: dict[str, Any] | None = None
    # modules imported before the rest was checked (they register likelihoods or
    # architectures): module names, and .py files by absolute path
    imports: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain representation (absolute paths) for writing next to the trained model."""
        d: dict[str, Any] = {}
        if self.imports:
            d["import"] = list(self.imports)
        if self.data is not None:
            d["data"] = {k: str(v) for k, v in self.data.items()}
        if self.mudata is not None:
            d["mudata"] = str(self.mudata)
        d["modalities"] = {k: v.to_dict() for k, v in self.modalities.items()}
        d["model"] = dict(self.model)
        d["train"] = dict(self.train)
        if self.reference is not None:
            d["reference"] = {"path": str(self.reference["path"]),
                              "anchor": self.reference["anchor"]}
        if self.runs is not None:
            d["runs"] = dict(self.runs)
        if self.subset is not None:
            d["subset"] = dict(self.subset)
        if self.out is not None:
            d["out"] = str(self.out)
        return d


def _section(raw: dict, key: str, where: str, known: tuple[str, ...] | None = None) -> dict:
    """Section ``key`` of the config (``{}`` if absent), its keys checked against ``known``."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: section {key!r} must be a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(f"{where}: {key}: keys must be strings, got {k!r}")
        if known is not None and k not in known:
            raise _unknown_key(f"{where}: {key}", k, list(known))
    return value


def _resolve(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path (a non-empty string), got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (base / p)


def _existing_file(p: Path, where: str, config: Path | None = None) -> Path:
    if not p.exists():
        hint = ""
        if config is not None and config.is_symlink():  # read beside the link, not its file
            hint = (f" (relative paths are read from the folder of the config as given, "
                    f"{Path(os.path.abspath(config)).parent}; {config} is a link to "
                    f"{config.resolve()})")
        raise ConfigError(f"{where}: file not found: {p}{hint}")
    if not p.is_file():
        raise ConfigError(f"{where}: {p} is not a file")
    return p


def _reference_section(raw: dict, base: Path, f: str) -> dict[str, Any] | None:
    """Section ``reference`` (a path, or ``{path, anchor}``): the trained model's directory,
    its saved config read and checked (``saved``), the anchor named."""
    from ..data._modality import Modality
    from ..model._io import read_config
    from ..model._reference import check_reference_record, explicit_specs, refuse_ensemble

    value = raw.get("reference")
    if value is None:
        return None
    sec = {"path": value} if isinstance(value, str) else _section(
        raw, "reference", f, known=REFERENCE_KEYS)
    if "path" not in sec:
        raise ConfigError(
            f"{f}: reference: missing key 'path' (the directory of a trained model, e.g. "
            "reference: {path: run/, anchor: rna})"
        )
    ref = _resolve(base, sec["path"], f"{f}: reference: path")
    try:
        refuse_ensemble(ref)
        saved = read_config(ref)
        specs = {n: Modality.from_dict(d, name=n) for n, d in saved["modalities"].items()}
        check_reference_record(ref, bool(saved.get("is_trained")),
                               saved.get("train_params") or {})
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{f}: reference: {err}") from None
    anchor = sec.get("anchor")
    if anchor is not None and not isinstance(anchor, str):
        raise ConfigError(
            f"{f}: reference: key 'anchor' must be a modality name (a string), got {anchor!r}"
        )
    if anchor is not None and anchor not in specs:
        raise ConfigError(
            f"{f}: reference: anchor {anchor!r} is not a modality of the reference "
            f"({', '.join(specs)})"
        )
    return {
        "path": ref, "anchor": anchor, "saved": saved, "trained": specs,
        "specs": explicit_specs(specs, saved["init_params"].get("hidden"),
                                list(saved.get("image_shape") or {})),
    }


def h5mu_modalities(path: Path, where: str) -> list[str]:
    """The names of the modalities the .h5mu file ``path`` holds, read from its index alone
    (not its matrices); ``ValueError`` (prefixed ``where``) for a file that is no MuData."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            held = list(f["mod"].keys()) if isinstance(f.get("mod"), h5py.Group) else None
    except OSError as err:
        raise ValueError(f"{where}: cannot read {path} as .h5mu: {err}") from None
    if held is None:
        raise ValueError(f"{where}: {path} is not a MuData file (it has no 'mod' group)")
    return held


def _model_names(
    ref_specs: Mapping[str, Any], held: Any, modalities: Mapping[str, Any]
) -> list[str]:
    """The new model's modalities, as it orders them: a reference's that the data hold
    (``held``: their names) first, then the others given in ``modalities``."""
    return [n for n in ref_specs if n in held] + [n for n in modalities if n not in ref_specs]


def _reference_data(reference: dict[str, Any], names: list[str], f: str, where: str) -> None:
    """Check the modalities ``names`` of the new model (the reference's that the data hold,
    then the new ones) and set the reference's anchor, as ``from_reference`` would."""
    from ..model._checks import check_prior
    from ..model._reference import choose_anchor

    ref_specs = reference["specs"]
    shared = [n for n in names if n in ref_specs]
    if not shared:
        raise ConfigError(
            f"{f}: {where}: none of the reference's modalities ({', '.join(ref_specs)}); "
            "the new model keeps the networks of at least one of them"
        )
    if len(names) < 2:
        raise ConfigError(f"{f}: {where}: need at least two modalities, got {names}")
    try:
        own = check_prior(reference["saved"]["init_params"].get("prior", "learned"),
                          list(ref_specs))
        reference["anchor"] = choose_anchor(reference["anchor"], shared, list(ref_specs), own,
                                            how=_NAME_ANCHOR)
    except ValueError as err:
        raise ConfigError(f"{f}: reference: {err}") from None


def validate_config(raw: dict[str, Any], path: str | os.PathLike) -> RunConfig:
    """Validate a parsed config; relative paths are relative to the config file's folder."""
    from ..data._modality import Modality, check_modality_name
    from ..model._checks import check_prior
    from ..model._model import CrossModalAE
    from ..model._reference import check_reference_spec, reference_params

    path = Path(path)
    # the folder the config was given in, a link's own (pipelines stage configs as links)
    base = Path(os.path.abspath(path)).parent
    f = str(path)

    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown_key(f"{f}: top level", key, list(TOP_LEVEL_KEYS))

    # import: modules that register likelihoods / architectures, before they are named ------
    imports = _imports(raw.get("import"), base, f)

    # reference: a trained model whose latent space the new one joins ---------------------
    reference = _reference_section(raw, base, f)
    ref_specs = {} if reference is None else reference["specs"]

    # modalities (with a reference: those it lacks) -----------------------------------------
    if reference is None and ("modalities" not in raw or raw["modalities"] is None):
        raise ConfigError(
            f"{f}: missing section 'modalities' (e.g. modalities: {{rna: {{likelihood: nb}}}})"
        )
    mods_raw = _section(raw, "modalities", f)
    if not mods_raw and reference is None:
        raise ConfigError(f"{f}: section 'modalities' is empty")
    modalities: dict[str, Modality] = {}
    for name, spec in mods_raw.items():
        if spec is None and name in ref_specs:  # (taken from the reference)
            continue
        try:
            check_modality_name(name)
            mod = Modality.from_dict(spec if spec is not None else {}, name=name)
            mod.check(name)
            if name in ref_specs:
                check_reference_spec(name, mod, reference["trained"][name], ref_specs[name])
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{f}: modalities: {err}") from None
        modalities[name] = mod
    if len(modalities) < 2 and reference is None:
        raise ConfigError(
            f"{f}: modalities: need at least two modalities, got {list(modalities)}"
        )

    # data ----------------------------------------------------------------------------------
    has_data, has_mudata = raw.get("data") is not None, raw.get("mudata") is not None
    if has_data and has_mudata:
        raise ConfigError(f"{f}: give either 'data' (one .h5ad per modality) or 'mudata', not both")
    if not has_data and not has_mudata:
        raise ConfigError(
            f"{f}: missing section 'data' ({{modality: path.h5ad}}) or key 'mudata' (path.h5mu)"
        )
    data = mudata = None
    if has_data:
        data_raw = _section(raw, "data", f)
        for name in modalities:
            if name not in data_raw:
                raise ConfigError(
                    f"{f}: modalities: modality {name!r} has no data path in section 'data' "
                    f"(data has: {', '.join(data_raw) or 'nothing'})"
                )
        for name in data_raw:
            if name not in modalities and name not in ref_specs:
                raise ConfigError(
                    f"{f}: data: {name!r} has no spec in section 'modalities' "
                    f"(modalities: {', '.join(modalities)}"
                    + (f"; the reference's: {', '.join(ref_specs)}" if reference else "") + ")"
                )
        names = _model_names(ref_specs, data_raw, modalities)
        if reference is not None:
            _reference_data(reference, names, f, "data")
        data = {
            name: _existing_file(
                _resolve(base, data_raw[name], f"{f}: data: {name!r}"), f"{f}: data: {name!r}",
                path,
            )
            for name in names
        }
    else:
        mudata = _existing_file(
            _resolve(base, raw["mudata"], f"{f}: mudata"), f"{f}: mudata", path
        )
        if reference is not None:  # (the modalities the file holds: its index alone)
            try:
                held = h5mu_modalities(mudata, f"{f}: mudata")
            except ValueError as err:
                raise ConfigError(str(err)) from None
            _reference_data(reference, _model_names(ref_specs, held, modalities), f,
                            f"mudata ({mudata})")

    # model / train ------------------------------------------------------------------------
    model_params = signature_params(CrossModalAE.__init__, ("self", "data", "modalities"))
    model = check_kwargs(_section(raw, "model", f), model_params, f"{f}: model", "__init__")
    train_params = signature_params(CrossModalAE.train)
    train = check_kwargs(_section(raw, "train", f), train_params, f"{f}: train", "train")

    # value checks the model does itself, but only after reading the data
    try:
        if reference is None:
            merged = {k: p.default for k, p in model_params.items()}
            merged.update(model)
        else:  # (the reference's network sizes)
            merged = reference_params(CrossModalAE, reference["saved"]["init_params"],
                                      reference["anchor"], model, how=_NAME_ANCHOR)
        model_saved = CrossModalAE._check_params(merged)
        check_prior(merged["prior"], [*ref_specs, *modalities])
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{f}: model: {err}") from None
    try:
        CrossModalAE._check_train_params(train)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{f}: train: {err}") from None
    if train.get("checkpoint_dir") is not None:  # (relative to the config, like out)
        train["checkpoint_dir"] = str(
            _resolve(base, train["checkpoint_dir"], f"{f}: train: checkpoint_dir")
        )

    # runs: several seeds, one kept (consensus) or all combined (ensemble) ------------------
    runs = None
    if raw.get("runs") is not None:
        sec = _section(raw, "runs", f, known=RUNS_KEYS)
        seeds = sec.get("seeds")
        if (
            not isinstance(seeds, list) or len(seeds) < 2
            or not all(_is_int(v) and 0 <= v < 2**63 for v in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise ConfigError(
                f"{f}: runs: key 'seeds' must be a list of at least two distinct integers in "
                f"[0, 2**63), got {seeds!r}"
            )
        combine = sec.get("combine", COMBINE[0])
        if combine not in COMBINE:
            raise ConfigError(
                f"{f}: runs: key 'combine' must be one of {', '.join(COMBINE)}, got {combine!r}"
            )
        k = sec.get("k", 50)
        if not _is_int(k) or k < 1:
            raise ConfigError(f"{f}: runs: key 'k' must be a positive integer, got {k!r}")
        if train.get("checkpoint_dir") is not None:
            raise ConfigError(
                f"{f}: train: checkpoint_dir saves one model's training; with section 'runs' "
                "every run would write it"
            )
        for section, params in (("model", model), ("train", train)):
            if "seed" in params:
                raise ConfigError(
                    f"{f}: {section}: key 'seed' conflicts with section 'runs' (each run "
                    "gets its seed from runs: seeds)"
                )
        runs = {"seeds": list(seeds), "combine": combine, "k": k}

    # out / subset -------------------------------------------------------------------------
    out = None
    if raw.get("out") is not None:
        out = _resolve(base, raw["out"], f"{f}: out")
    subset = None
    if raw.get("subset") is not None:
        sub = _section(raw, "subset", f, known=SUBSET_KEYS)
        for key in SUBSET_KEYS:
            if key not in sub:
                raise ConfigError(
                    f"{f}: subset: missing key {key!r} (e.g. subset: {{obs_key: split, value: train}})"
                )
        if not isinstance(sub["obs_key"], str) or not sub["obs_key"]:
            raise ConfigError(f"{f}: subset: key 'obs_key' must be an obs column name (a string)")
        values = sub["value"] if isinstance(sub["value"], list) else [sub["value"]]
        if not values or any(isinstance(v, (dict, list)) or v is None for v in values):
            raise ConfigError(
                f"{f}: subset: key 'value' must be a value or a list of values, got {sub['value']!r}"
            )
        subset = {"obs_key": sub["obs_key"], "value": sub["value"]}

    return RunConfig(
        path=path,
        modalities=modalities,
        data=data,
        mudata=mudata,
        model=model,
        train=train,
        out=out,
        subset=subset,
        runs=runs,
        model_params=model_saved,
        reference=None if reference is None else {
            k: reference[k] for k in ("path", "anchor", "specs")},
        imports=imports,
    )


def _imports(value: Any, base: Path, f: str) -> list[str]:
    """Import the modules of a config's ``import`` (a name or a list of names; ``.py``
    files relative to the config's folder); returns them as ``run_config.yaml`` records
    them (files by absolute path)."""
    from ..nn._registry import import_modules

    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(
            f"{f}: import must be a module name or .py file, or a list of them, got {value!r}"
        )
    resolved = [str(_resolve(base, n, f"{f}: import")) if n.endswith(".py") else n
                for n in names]
    import_modules(resolved, where=f"{f}: import:")
    return resolved


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a run config (no data are touched beyond checking files exist)."""
    return validate_config(read_config_file(path), path)
