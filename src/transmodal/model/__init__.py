"""The cross-modal autoencoder: torch module (``CrossModalModule``), user class (``CrossModalAE``)
and several trained models used as one (``Ensemble``)."""

from ._ensemble import Ensemble
from ._model import CrossModalAE
from ._module import CrossModalModule, ModalityArch

__all__ = ["CrossModalAE", "Ensemble", "CrossModalModule", "ModalityArch"]
