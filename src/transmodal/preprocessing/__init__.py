"""Preprocessing (``tm.pp``): turn common data layouts into matrices a modality reads."""

from ._methylation import methylation_rates

__all__ = ["methylation_rates"]
