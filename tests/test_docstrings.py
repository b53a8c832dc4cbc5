"""The numpydoc "Parameters" sections of the public API match the signatures.

Without numpydoc (not a dependency): for every public function and method in scope, each
parameter of the signature (but ``self`` / ``cls``; ``*args`` / ``**kwargs`` only where the
docstring explains them) is named in the docstring's "Parameters" section, and no name
documented there is missing from the signature (but the keywords a class forwards through
its ``**kwargs``); the documented parameters come in the signature's order. Dataclass
result types are skipped: they document their fields as "Attributes".
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re

import pytest

#: Subpackages whose ``__all__`` is checked, every callable in it.
MODULES = (
    "metrics",
    "analysis",
    "images",
    "plotting",
    "baselines",
    "workflows",
    "datasets",
    "preprocessing",
    "tools",
    "geometry",
)
#: The public methods of the baselines (with the class docstring for ``__init__``).
BASELINE_METHODS = ("fit", "embed_x", "embed_y", "translate_x_to_y", "translate_y_to_x")
#: The public methods of the models (those present), with their constructors.
MODEL_METHODS = (
    "get_latent_representation",
    "translate",
    "predict_labels",
    "save",
    "load",
    "train",
    "from_reference",
)

#: Qualified names whose docstring does not yet match (files edited elsewhere):
#: ``{name: reason}``, checked with ``xfail(strict=True)`` so that a fix is noticed.
KNOWN_EXCEPTIONS: dict[str, str] = {}

_VAR_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_HEADER_RULE = re.compile(r"^\s*-{3,}\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def documented_parameters(doc: str | None) -> list[str]:
    """The names in the "Parameters" (and "Other Parameters") sections of ``doc``, in order;
    ``*args`` / ``**kwargs`` keep their stars. numpydoc allows several names on one line
    (``x, y : type``): the names are those before the first colon (or the end of the line)
    of the lines at the section's base indentation."""
    if not doc:
        return []
    lines = inspect.cleandoc(doc).splitlines()
    # a header is a non-blank line followed by a dashed underline
    headers = [
        i for i in range(len(lines) - 1)
        if lines[i].strip() and _HEADER_RULE.match(lines[i + 1])
    ]
    names: list[str] = []
    for k, start in enumerate(headers):
        if lines[start].strip() not in ("Parameters", "Other Parameters"):
            continue
        base = _indent(lines[start])
        stop = headers[k + 1] if k + 1 < len(headers) else len(lines)
        for line in lines[start + 2 : stop]:
            if line.strip() and _indent(line) == base:
                names += [n.strip() for n in line.split(":", 1)[0].split(",") if n.strip()]
    return names


def _signature_parameters(obj) -> list[inspect.Parameter]:
    """The parameters of ``obj``'s signature (a class: its constructor's), less
    ``self`` / ``cls`` (``inspect.signature`` follows ``__wrapped__``)."""
    params = inspect.signature(obj).parameters.values()
    return [p for p in params if p.name not in ("self", "cls")]


def _constructor_doc(cls: type) -> str | None:
    """The docstring that documents ``cls``'s constructor parameters: the class docstring,
    else ``__init__``'s where only that one has a "Parameters" section."""
    if documented_parameters(cls.__doc__) or not documented_parameters(cls.__init__.__doc__):
        return cls.__doc__
    return cls.__init__.__doc__


def _entries() -> list[tuple[str, object, str | None, bool]]:
    """``(qualified name, callable, docstring, forwards)`` of everything in scope;
    ``forwards``: a constructor that passes its ``**kwargs`` on (documented names it does
    not take itself are allowed)."""
    import transmodal as tm

    entries = []

    def add_class(qual: str, cls: type, methods) -> None:
        var_kw = any(p.kind is p.VAR_KEYWORD for p in _signature_parameters(cls))
        entries.append((qual, cls, _constructor_doc(cls), var_kw))
        for meth in methods:
            if hasattr(cls, meth):
                fn = getattr(cls, meth)
                entries.append((f"{qual}.{meth}", fn, fn.__doc__, False))

    for mod_name in MODULES:
        mod = importlib.import_module(f"transmodal.{mod_name}")
        for name in mod.__all__:
            obj = getattr(mod, name)
            qual = f"transmodal.{mod_name}.{name}"
            if inspect.isclass(obj):
                if dataclasses.is_dataclass(obj):  # result types: fields as Attributes
                    continue
                add_class(qual, obj, BASELINE_METHODS if mod_name == "baselines" else ())
            elif callable(obj):
                entries.append((qual, obj, obj.__doc__, False))
    for name in ("CrossModalAE", "Ensemble"):
        add_class(f"transmodal.{name}", getattr(tm, name), MODEL_METHODS)
    return entries


ENTRIES = _entries()


def _param(entry):
    qual = entry[0]
    marks = ()
    if qual in KNOWN_EXCEPTIONS:
        marks = pytest.mark.xfail(reason=KNOWN_EXCEPTIONS[qual], strict=True)
    return pytest.param(entry, id=qual, marks=marks)


def test_parser_reads_numpydoc_sections():
    doc = """Summary.

    Parameters
    ----------
    x, y : array
        Two names on one line, with a type.
    flag
        A description that mentions: a colon.

        And a second paragraph.
    **kwargs
        Passed on.

    Returns
    -------
    out
        Not a parameter.

    Other Parameters
    ----------------
    extra
        Rarely used.
    """
    assert documented_parameters(doc) == ["x", "y", "flag", "**kwargs", "extra"]
    assert documented_parameters("One line only.") == []
    assert documented_parameters(None) == []


def test_scope_is_found():
    names = {e[0] for e in ENTRIES}
    for expected in (
        "transmodal.metrics.foscttm",
        "transmodal.baselines.CCA",
        "transmodal.baselines.MAGAN.translate_y_to_x",
        "transmodal.datasets.synthetic",
        "transmodal.CrossModalAE.from_reference",
        "transmodal.Ensemble.load",
    ):
        assert expected in names
    assert not any(n.endswith((".ClusterRobustness", ".ROCResult")) for n in names)


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES])
def test_parameters_documented(entry):
    qual, obj, doc, forwards = entry
    params = _signature_parameters(obj)
    documented = documented_parameters(doc)
    bare = [name.lstrip("*") for name in documented]
    missing = [
        p.name for p in params if p.kind not in _VAR_KINDS and p.name not in bare
    ]
    assert not missing, f"{qual}: parameters not in the docstring's Parameters: {missing}"
    in_signature = {p.name: p for p in params}
    extra = []
    for name, plain in zip(documented, bare):
        p = in_signature.get(plain)
        starred = name.startswith("*")
        if p is None or starred != (p.kind in _VAR_KINDS):
            extra.append(name)
    if forwards:  # a class passes the names it does not take on through **kwargs
        extra = [n for n in extra if n.startswith("*")]
    assert not extra, f"{qual}: documented but not in the signature: {extra}"


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES])
def test_parameters_in_signature_order(entry):
    qual, obj, doc, _ = entry
    signature = [p.name for p in _signature_parameters(obj)]
    documented = [n.lstrip("*") for n in documented_parameters(doc)]
    documented = [n for n in documented if n in signature]  # (forwarded names aside)
    assert documented == [n for n in signature if n in documented], (
        f"{qual}: Parameters in another order than the signature: {documented}"
    )
