"""PBMC scRNA-seq and scATAC-seq, unpaired, with partly shared cell types (Pamona's data)."""

from __future__ import annotations

import os

import anndata as ad
from anndata import AnnData

from ._paths import dataset_dir

# cell types measured in both modalities (PROVENANCE.md of the data set)
PBMC_SHARED_CLASSES = ("CD8Tex", "Monocytes", "NaiveCD4Tcells", "RestNK")


def pbmc_rna_atac_unpaired(path: str | os.PathLike | None = None) -> dict[str, AnnData]:
    """Load the unpaired PBMC RNA / ATAC embeddings of Pamona (Cao et al. 2022).

    1,985 RNA cells x 50 principal components and 1,919 ATAC cells x 50 LSI components
    (reduced features, not counts: use Gaussian likelihoods). No cell is paired. Four cell
    types are shared (:data:`PBMC_SHARED_CLASSES`); two exist only in ATAC (Tfh,
    MemoryBcells) and four only in RNA (CD8Tcells, RestMemCD4Tcells, RestpDCs,
    NaiveBcells).

    Parameters
    ----------
    path
        Data root (default ``$TRANSMODAL_DATA`` or ``../shared/data``).

    Returns
    -------
    ``{"rna": AnnData, "atac": AnnData}`` with ``obs["cell_type"]`` (categorical).
    """
    d = dataset_dir("pbmc_rna_atac_unpaired", path)
    return {"rna": ad.read_h5ad(d / "rna.h5ad"), "atac": ad.read_h5ad(d / "atac.h5ad")}
