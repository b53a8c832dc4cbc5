"""Shared fixtures: small seeded simulations of paired / partially paired modalities."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import transmodal as tm

N_CELLS = 150
N_RNA, N_ATAC, N_PROT = 40, 25, 10
N_CLUSTERS = 3
LATENT_DIM = 4


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """The test machine is small and shared: keep torch on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------- simulation
def _softmax_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.max(1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(1, keepdims=True)


def simulate(n_cells: int = N_CELLS, seed: int = 0) -> dict[str, np.ndarray]:
    """Shared latent state with 3 clusters and three measurements of every cell."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_cells) % N_CLUSTERS
    rng.shuffle(labels)
    centers = rng.normal(0.0, 2.0, size=(N_CLUSTERS, LATENT_DIM))
    z = centers[labels] + 0.3 * rng.normal(size=(n_cells, LATENT_DIM))

    # RNA: negative binomial counts (gamma-Poisson), varying library sizes
    w_rna = rng.normal(size=(LATENT_DIM, N_RNA))
    lib_rna = rng.integers(150, 400, size=n_cells)
    mu_rna = _softmax_rows(0.6 * z @ w_rna) * lib_rna[:, None]
    theta = 5.0
    rna = rng.poisson(rng.gamma(theta, mu_rna / theta)).astype(np.float32)

    # ATAC: Poisson counts
    w_atac = rng.normal(size=(LATENT_DIM, N_ATAC))
    lib_atac = rng.integers(40, 120, size=n_cells)
    atac = rng.poisson(_softmax_rows(0.6 * z @ w_atac) * lib_atac[:, None]).astype(np.float32)

    # protein: continuous (gaussian)
    w_prot = rng.normal(size=(LATENT_DIM, N_PROT))
    prot = (z @ w_prot + 0.2 * rng.normal(size=(n_cells, N_PROT))).astype(np.float32)
    return {"z": z, "labels": labels, "rna": rna, "atac": atac, "prot": prot}


def _obs(names, labels) -> pd.DataFrame:
    cats = [f"type{i}" for i in range(N_CLUSTERS)]
    return pd.DataFrame(
        {"label": pd.Categorical([cats[i] for i in labels], categories=cats)},
        index=pd.Index(names, dtype=object),
    )


def make_data(
    *,
    pairing: str = "full",
    n_mods: int = 2,
    sparse_rna: bool = True,
    seed: int = 0,
) -> dict[str, ad.AnnData]:
    """Build ``{"rna", "atac"[, "prot"]}`` AnnData objects.

    pairing
        ``"full"``: identical obs_names in every modality; ``"half"``: only the first half
        of the cells of atac (and prot) carry rna's names, the rest have their own names.
    """
    sim = simulate(seed=seed)
    n = N_CELLS
    names = np.array([f"cell{i}" for i in range(n)], dtype=object)
    labels = sim["labels"]

    x_rna = sp.csr_matrix(sim["rna"]) if sparse_rna else sim["rna"].copy()
    rna = ad.AnnData(
        X=x_rna,
        obs=_obs(names, labels),
        var=pd.DataFrame(index=pd.Index([f"gene{i}" for i in range(N_RNA)], dtype=object)),
    )
    rna.layers["counts"] = x_rna.copy()

    def other_names(prefix: str) -> np.ndarray:
        if pairing == "full":
            return names.copy()
        if pairing == "half":
            out = names.copy()
            out[n // 2 :] = [f"{prefix}{i}" for i in range(n // 2, n)]
            return out
        raise ValueError(pairing)

    atac = ad.AnnData(
        X=sim["atac"].copy(),
        obs=_obs(other_names("atac_only"), labels),
        var=pd.DataFrame(index=pd.Index([f"peak{i}" for i in range(N_ATAC)], dtype=object)),
    )
    data = {"rna": rna, "atac": atac}
    if n_mods >= 3:
        prot = ad.AnnData(obs=_obs(other_names("prot_only"), labels))
        prot.obsm["X_prot"] = sim["prot"].copy()
        data["prot"] = prot
    return data


def default_specs(n_mods: int = 2) -> dict[str, tm.Modality]:
    specs = {"rna": tm.Modality("nb", layer="counts"), "atac": tm.Modality("poisson")}
    if n_mods >= 3:
        specs["prot"] = tm.Modality("gaussian", obsm_key="X_prot")
    return specs


# ----------------------------------------------------------------------- fixtures
@pytest.fixture
def sim():
    return simulate()


@pytest.fixture
def paired_data():
    """rna (CSR counts, layer 'counts', obs 'label') + atac (dense counts), fully paired."""
    return make_data(pairing="full")


@pytest.fixture
def half_paired_data():
    """As ``paired_data`` but only half of atac's cells share rna's obs_names."""
    return make_data(pairing="half")


@pytest.fixture
def three_mod_data():
    """rna + atac + prot (gaussian, 10 features in obsm['X_prot']), fully paired."""
    return make_data(pairing="full", n_mods=3)


@pytest.fixture
def three_mod_half_data():
    return make_data(pairing="half", n_mods=3)


@pytest.fixture
def specs():
    return default_specs(2)


@pytest.fixture
def specs3():
    return default_specs(3)


SMALL = {"n_latent": 8, "hidden": (32,)}


@pytest.fixture
def make_model():
    """``make_model(data, specs=None, **kw)``: a small CrossModalAE."""

    def _make(data, specs=None, **kw):
        if specs is None:
            specs = default_specs(len(data))
        params = {**SMALL, **kw}
        return tm.CrossModalAE(data, specs, **params)

    return _make


@pytest.fixture
def train():
    """``train(model, **kw)``: quick training (2 epochs, batches of 32, no progress bar).

    The 'modalities remain separable' warning, possible after 2 epochs, is silenced unless
    ``quiet=False``.
    """

    def _train(model, *, quiet: bool = True, **kw):
        params = {"max_epochs": 2, "batch_size": 32, "progress_bar": False, **kw}
        with warnings.catch_warnings():
            if quiet:
                warnings.filterwarnings("ignore", message=".*separable.*", category=UserWarning)
            return model.train(**params)

    return _train


@pytest.fixture
def trained_model(paired_data, specs, make_model, train):
    """A small model trained for 2 epochs with labels and anchors."""
    model = make_model(paired_data, specs, labels_key="label", anchor_fraction=0.5, seed=0)
    return train(model)
