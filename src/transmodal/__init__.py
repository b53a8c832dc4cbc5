"""transmodal: cross-modal autoencoders that integrate and translate single-cell modalities.

One encoder / decoder per modality (RNA, ATAC, methylation, images, ...), one shared latent
space aligned adversarially, translation ``i -> j = D_j(E_i(x))`` (Yang et al., Nat. Commun.
12:31, 2021).

The subpackages (``tm.pl``, ``tm.metrics``, ...) and the classes are imported when first
used, so that ``import transmodal`` and the command line's ``--help`` do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names below resolve to, for type checkers and IDEs
    from . import (
        analysis, baselines, data, datasets, geometry, images, metrics, nn, plotting,
        preprocessing, tools, train, workflows,
    )
    from . import plotting as pl
    from . import preprocessing as pp
    from . import tools as tl
    from .data import Modality
    from .model import CrossModalAE, Ensemble
    from .nn import register_architecture, register_likelihood

from ._version import __version__

_SUBPACKAGES = {
    "analysis": "analysis", "baselines": "baselines", "datasets": "datasets",
    "images": "images", "metrics": "metrics", "plotting": "plotting", "pl": "plotting",
    "preprocessing": "preprocessing", "pp": "preprocessing", "tools": "tools", "tl": "tools",
    "workflows": "workflows", "data": "data", "geometry": "geometry", "nn": "nn",
    "train": "train",
    # (the internal ones, reachable as attributes as they were when all were imported)
    "cli": "cli", "model": "model",
}
_CLASSES = {
    "CrossModalAE": "model", "Ensemble": "model", "Modality": "data",
    "register_architecture": "nn", "register_likelihood": "nn",
}


def __getattr__(name: str) -> Any:
    """Import a subpackage or class on first use (PEP 562) and keep it as an attribute."""
    if name in _SUBPACKAGES:
        value = importlib.import_module(f".{_SUBPACKAGES[name]}", __name__)
    elif name in _CLASSES:
        value = getattr(importlib.import_module(f".{_CLASSES[name]}", __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CrossModalAE",
    "Ensemble",
    "Modality",
    "__version__",
    "analysis",
    "baselines",
    "data",
    "datasets",
    "geometry",
    "images",
    "metrics",
    "nn",
    "pl",
    "plotting",
    "pp",
    "preprocessing",
    "register_architecture",
    "register_likelihood",
    "tl",
    "tools",
    "train",
    "workflows",
]
