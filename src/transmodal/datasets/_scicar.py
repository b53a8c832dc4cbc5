"""sci-CAR A549 paired RNA + ATAC (Cao et al. 2018), as selected by Yang et al. 2021."""

from __future__ import annotations

import os

import anndata as ad
from anndata import AnnData

from ._paths import dataset_dir


def scicar_a549(path: str | os.PathLike | None = None) -> dict[str, AnnData]:
    """Load the paired sci-CAR A549 data (1,874 cells; 2,613 genes, 815 ATAC regions).

    Parameters
    ----------
    path
        Data root (default ``$TRANSMODAL_DATA`` or ``../shared/data``).

    Returns
    -------
    ``{"rna": AnnData, "atac": AnnData}`` with raw counts in ``X`` (CSR), identical
    ``obs_names`` (fully paired), and ``obs`` columns ``treatment_time`` (0h / 1h / 3h) and
    ``yang2021_split`` (the paper's ``train`` / ``test`` split).
    """
    d = dataset_dir("scicar_a549", path)
    return {"rna": ad.read_h5ad(d / "rna.h5ad"), "atac": ad.read_h5ad(d / "atac.h5ad")}
