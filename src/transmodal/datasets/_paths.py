"""Where the public data sets live: ``$TRANSMODAL_DATA`` (default ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "TRANSMODAL_DATA"
DEFAULT = "../shared/data"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data root: ``path`` if given, else ``$TRANSMODAL_DATA``, else ``../shared/data``.

    Parameters
    ----------
    path
        The data root to use; ``None`` takes ``$TRANSMODAL_DATA``, else
        ``../shared/data`` (relative to the working directory).

    Returns
    -------
    The data root (not checked for existence).
    """
    return Path(path if path is not None else os.environ.get(ENV_VAR, DEFAULT))


def dataset_dir(name: str, path: str | os.PathLike | None = None) -> Path:
    """Folder of data set ``name`` under the data root, with a clear error if it is missing.

    Parameters
    ----------
    name
        Name of the data set: its folder under the data root.
    path
        The data root, as in :func:`data_dir` (``None``: ``$TRANSMODAL_DATA``, else
        ``../shared/data``).

    Returns
    -------
    The existing folder ``<data root>/<name>``.

    Raises
    ------
    FileNotFoundError
        If that folder does not exist.
    """
    d = data_dir(path) / name
    if not d.is_dir() and path is not None:
        raise FileNotFoundError(f"data set {name!r} not found at {d} (under path={os.fspath(path)!r})")
    if not d.is_dir():
        raise FileNotFoundError(
            f"data set {name!r} not found at {d}; set ${ENV_VAR} to the folder that holds it "
            f"(currently {os.environ.get(ENV_VAR, 'unset, default ' + DEFAULT)})"
        )
    return d
