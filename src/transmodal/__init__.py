"""transmodal: cross-modal autoencoders that integrate and translate single-cell modalities.

One encoder / decoder per modality (RNA, ATAC, methylation, images, ...), one shared latent
space aligned adversarially, translation ``i -> j = D_j(E_i(x))`` (Yang et al., Nat. Commun.
12:31, 2021).
"""

from . import (
    analysis, baselines, datasets, images, metrics, plotting, preprocessing, tools, workflows,
)
from . import plotting as pl
from . import preprocessing as pp
from . import tools as tl
from .data import Modality
from .model import CrossModalAE, Ensemble
from .nn import register_likelihood

try:
    from importlib.metadata import version as _version

    __version__ = _version("transmodal")
except Exception:  # pragma: no cover
    __version__ = "unknown"

__all__ = [
    "CrossModalAE",
    "Ensemble",
    "Modality",
    "__version__",
    "analysis",
    "baselines",
    "datasets",
    "images",
    "metrics",
    "pl",
    "plotting",
    "pp",
    "preprocessing",
    "register_likelihood",
    "tl",
    "tools",
    "workflows",
]
