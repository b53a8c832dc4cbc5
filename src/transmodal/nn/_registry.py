"""What the registries of likelihoods and architectures share: the checks of a class to
register, its registration under its name, and the import of the user's modules that
register classes (the command line's ``--import``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._utils import user_stacklevel, with_article


def check_class(cls: Any, base: type, register: str, required: tuple[str, ...]) -> str:
    """The registry name of ``cls``; ``TypeError`` / ``ValueError`` naming the problem unless
    it is a subclass of ``base`` with a name (a non-empty string without surrounding
    spaces) that implements the ``required`` methods (``register``: the function's name,
    for the messages)."""
    kind = base.__name__
    if not (isinstance(cls, type) and issubclass(cls, base)):
        what = (f"an instance of {type(cls).__name__}; pass the class itself"
                if isinstance(cls, base) else repr(cls))
        raise TypeError(f"{register} takes {with_article(kind)} subclass, got {what}")
    name = cls.name
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(
            f"{kind.lower()} class {cls.__name__} needs a `name`: a non-empty string without "
            f"surrounding spaces, got {name!r}"
        )
    lacking = [m for m in required if getattr(cls, m) is getattr(base, m)]
    if lacking:
        raise TypeError(
            f"{kind.lower()} class {cls.__name__} ({name!r}) must implement "
            f"{', '.join(lacking)}"
        )
    return name


def put(registry: dict[str, Any], cls: type, register: str, kind: str) -> None:
    """Register an instance of ``cls`` under its name, replacing an earlier class of that
    name (a notebook cell run again) with a warning when that class had another name
    (``kind``: what the registry holds, for the messages)."""
    old = registry.get(cls.name)
    if old is not None and type(old) is not cls and type(old).__qualname__ != cls.__qualname__:
        warnings.warn(
            f"{register}: {cls.__name__} replaces {type(old).__name__} as "
            f"{kind} {cls.name!r}", UserWarning, stacklevel=user_stacklevel(),
        )
    try:
        instance = cls()
    except TypeError as err:
        raise TypeError(
            f"{register}: {cls.__name__}() failed ({err}); a registered class is built "
            "without arguments"
        ) from None
    registry[cls.name] = instance


def import_modules(names: Sequence[str], where: str = "--import") -> None:
    """Import the modules named by ``--import`` (module names, or paths of ``.py`` files),
    so that the likelihoods and architectures they register exist before a config is
    checked or a model loaded; a module that fails is a ``ValueError`` naming it (and
    ``where`` it was named: the option, or a config's section).

    A file is imported as Python runs a script: under its file name, with its folder on
    ``sys.path`` (so that it can import the modules beside it); a file named as a module
    imported already from elsewhere (``json.py``) is refused, and a failed import leaves
    ``sys.modules`` and ``sys.path`` as they were.
    """
    for name in names:
        try:
            if name.endswith(".py"):
                _import_file(Path(name).expanduser().resolve(), name)
            else:
                importlib.import_module(name)
        except Exception as err:  # the user's module: its error, with what was imported
            as_file = f"{name.replace('.', '/')}.py"
            hint = (" (not on the Python path; a file is given by its path, e.g. "
                    + (f"--import {as_file})" if where == "--import"
                       else f"import: [{as_file}], relative to the config)")
                    if isinstance(err, ModuleNotFoundError) and err.name is not None
                    and (name == err.name or name.startswith(err.name + "."))
                    else "")
            raise ValueError(f"{where} {name}: {type(err).__name__}: {err}{hint}") from err


def _import_file(path: Path, given: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {given}")
    module_name = path.stem
    old = sys.modules.get(module_name)
    if old is not None:
        if getattr(old, "__file__", None) and Path(old.__file__).resolve() == path:
            return  # (imported already: its registrations stand)
        raise ImportError(
            f"a module named {module_name!r} is imported already"
            + (f" (from {old.__file__})" if getattr(old, "__file__", None) else "")
            + "; rename the file"
        )
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # (dataclasses and others look the module up by name)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        if added and folder in sys.path:
            sys.path.remove(folder)
        raise
