"""Where the public data sets live: ``$TRANSMODAL_DATA`` (default ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TRANSMODAL_DATA"
DEFAULT = "../shared/data"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$TRANSMODAL_DATA``, else ``../shared/data``."""
    return Path(path if path is not None else os.environ.get(ENV_VAR, DEFAULT))


def dataset_dir(name: str, path: str | os.PathLike | None = None) -> Path:
    """Folder of data set ``name`` under the data root, with a clear error if it is missing."""
    d = data_dir(path) / name
    if not d.is_dir() and path is not None:
        raise FileNotFoundError(f"data set {name!r} not found at {d} (under path={os.fspath(path)!r})")
    if not d.is_dir():
        raise FileNotFoundError(
            f"data set {name!r} not found at {d}; set ${ENV_VAR} to the folder that holds it "
            f"(currently {os.environ.get(ENV_VAR, 'unset, default ' + DEFAULT)})"
        )
    return d
