"""The cross-modal autoencoder: torch module (``CrossModalModule``) and user class (``CrossModalAE``)."""

from ._model import CrossModalAE
from ._module import CrossModalModule, ModalityArch

__all__ = ["CrossModalAE", "CrossModalModule", "ModalityArch"]
