"""Loaders of the public data sets used by demos, benchmarks and tests."""

from ..data._h5ad import read_backed
from ._paths import data_dir, dataset_dir
from ._pbmc import PBMC_SHARED_CLASSES, pbmc_rna_atac_unpaired
from ._scicar import scicar_a549
from ._synthetic import synthetic, true_pairs

__all__ = [
    "PBMC_SHARED_CLASSES",
    "data_dir",
    "dataset_dir",
    "pbmc_rna_atac_unpaired",
    "read_backed",
    "scicar_a549",
    "synthetic",
    "true_pairs",
]
