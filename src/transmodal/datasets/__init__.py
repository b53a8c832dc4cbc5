"""Loaders of the public data sets used by demos, benchmarks and tests."""

from ._paths import data_dir, dataset_dir
from ._scicar import scicar_a549
from ._synthetic import synthetic, true_pairs

__all__ = ["data_dir", "dataset_dir", "scicar_a549", "synthetic", "true_pairs"]
