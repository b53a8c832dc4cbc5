"""Modality specs, validation, pairing and minibatches from AnnData / MuData."""

from ._batches import EpochBatches
from ._modality import Modality
from ._preprocess import fit_preprocessing
from ._setup import ModalityData, find_pairs, setup_data
from ._source import MatrixSource, check_values, matrix_of

__all__ = [
    "EpochBatches",
    "MatrixSource",
    "Modality",
    "ModalityData",
    "check_values",
    "find_pairs",
    "fit_preprocessing",
    "matrix_of",
    "setup_data",
]
