"""Simulated paired / unpaired multi-modal single-cell data from a shared latent cell state.

Generative model
----------------
1. **Population.** A true cell state ``z`` (``n_latent`` dimensions) is drawn either from a
   Gaussian mixture (``shape="clusters"``: mildly unequal cluster proportions, centres with
   per-coordinate standard deviation ``cluster_separation``, unit within-cluster standard
   deviation) or along a branching curve (``shape="trajectory"``: a bent stem that splits
   into two bent branches, segment vectors with per-coordinate standard deviation
   ``cluster_separation``, plus a jitter of standard deviation 0.5).
2. **Shared signal.** Each modality has its own random nonlinear map of the standardised
   state, ``h = tanh(z @ W1 + b1) @ W2`` (hidden width 32), normalised so that feature
   ``j`` has mean 0 and a random signal strength (some features carry much, some little).
3. **Modality-specific noise.** ``noise`` times a private low-rank factor (2 dimensions,
   per cell, not shared with any other modality) plus ``noise`` times iid N(0, 1) noise.
4. **Batch effects** (``n_batches`` > 1 for a modality): each cell of the modality belongs to
   one of its batches (uniformly at random; a cell measured in several modalities with as
   many batches is in the same batch in each), and each batch adds its own per-feature shift
   of standard deviation ``batch_effect`` to ``h`` (a log fold change of counts, a logit
   shift of accessibility, a shift of Gaussian features). Batches hold the same mixture of
   cell states, so a batch-corrected latent space mixes them.
5. **Observation model.** ``"nb"``: rate ``softmax(h + gene baseline) * library`` with a
   log-normal library size, counts ~ Gamma-Poisson (negative binomial, dispersion
   ``theta = 10``); ``"bernoulli"``: ``p = sigmoid(h + peak offset + cell depth)`` with the
   offsets set so that mean accessibility is about 0.15; ``"gaussian"``: ``h`` itself;
   ``"methylation"`` (single-cell DNA methylation summarised per genomic region, as from
   scbs, MethSCAn or ALLCools): methylation probability ``p = sigmoid(h + region offset)``,
   the offsets bimodal like CpG methylation (70 % of regions with a target mean level drawn
   from Beta(8, 1.5), mean about 0.84; 30 % from Beta(1, 8), mean about 0.11; the logit
   corrected for the spread of ``h`` + noise as for ``"bernoulli"``); per (cell, region)
   coverage ~ Poisson(0.5 * cell depth * region factor), depth and factor log-normal with
   mean 1 and log standard deviation 0.5 (about 36 % of entries covered, from about 18 %
   to 60 % per cell), methylated reads ~ Binomial(coverage, p), observed rate =
   methylated / coverage, NaN where the coverage is 0 (the read counts kept too, for
   ``Modality("binomial", layer="methylated", total_layer="coverage")``).

Chunking and seeds
------------------
All randomness is drawn in fixed granules of ``_RNG_CHUNK`` cells, each with its own
generator spawned (:meth:`numpy.random.SeedSequence.spawn`) from a seed sequence keyed by the
main seed, the purpose (population, cell pool, measurement) and the modality name. Output
matrices are assembled block by block (``block_size`` cells, default 10,000), so memory stays
bounded by one dense block and the result does not depend on the block size. Because the
modality streams are keyed by name, a modality's data do not change when other modalities
are added (for a given pairing).
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy.special import expit

if TYPE_CHECKING:  # pragma: no cover
    from mudata import MuData

__all__ = ["synthetic", "true_pairs"]

KINDS = ("nb", "bernoulli", "gaussian", "methylation")
SHAPES = ("clusters", "trajectory")
_DEFAULT_FEATURES = {"nb": 500, "bernoulli": 1000, "gaussian": 50, "methylation": 500}
_VAR_PREFIX = {"nb": "gene", "bernoulli": "peak", "gaussian": "feat", "methylation": "region"}
_SIGNAL = {  # mean per-feature signal sd
    "nb": 1.0, "bernoulli": 1.5, "gaussian": 1.0, "methylation": 1.5
}
_SPARSE_KINDS = ("nb", "bernoulli")  # X stored as CSR; the others dense
_TRAJECTORY_LABELS = ("stem", "branch_a", "branch_b")

_RNG_CHUNK = (
    1000  # cells per random-number granule (fixed: changing it changes the data)
)
_BLOCK_SIZE = 10_000  # cells per assembled block (free: does not change the data)
_N_HIDDEN = 32
_N_PRIVATE = 2
_N_REFERENCE = 4096
_THETA = 10.0
_JITTER = 0.5
_ATAC_MEAN = 0.15
_ATAC_DEPTH_SD = 0.5
_DIRICHLET = 5.0
# methylation: bimodal region levels (a fraction _METH_HIGH from Beta(*_METH_HIGH_BETA),
# the rest from Beta(*_METH_LOW_BETA)); coverage ~ Poisson(_METH_COVERAGE * depth * factor)
_METH_HIGH = 0.7
_METH_HIGH_BETA = (8.0, 1.5)
_METH_LOW_BETA = (1.0, 8.0)
_METH_COVERAGE = 0.5
_METH_DEPTH_SD = 0.5  # log sd of the cell depth (mean 1)
_METH_REGION_SD = 0.5  # log sd of the region coverage factor (mean 1)
# layers of a methylation modality besides its rates (X), in the order measure() stacks them
_METH_LAYERS = ("coverage", "methylated")

# spawn-key purposes
_K_POPULATION, _K_REFERENCE, _K_PARAMS, _K_SHARED, _K_OWN, _K_MEASURE, _K_BATCH = range(7)


# --------------------------------------------------------------------------- seeds
def _seq(seed: int, *key: int) -> np.random.SeedSequence:
    """The seed sequence of one purpose (what ``SeedSequence(seed).spawn`` would give)."""
    return np.random.SeedSequence(seed, spawn_key=tuple(key))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(_seq(seed, *key))


def _granule_rngs(seed: int, n: int, *key: int) -> list[np.random.Generator]:
    """One generator per granule of ``_RNG_CHUNK`` cells, spawned from the purpose's seed."""
    n_granules = -(-n // _RNG_CHUNK)
    return [np.random.default_rng(s) for s in _seq(seed, *key).spawn(n_granules)]


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


# --------------------------------------------------------------------------- validation
def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")  # noqa: TRY004
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_float(value, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")  # noqa: TRY004
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(
            f"{name} must be {'> 0' if positive else '>= 0'} and finite, got {value}"
        )
    return value


def _resolve(
    n_cells,
    modalities,
    n_features,
    shape,
    n_clusters,
    n_latent,
    noise,
    cluster_separation,
    paired,
    library_size,
    seed,
    n_batches=1,
    batch_effect=1.0,
    methylation_coverage=_METH_COVERAGE,
) -> dict:
    n_cells = _check_int(n_cells, "n_cells", 2)
    if modalities is None:
        modalities = {"rna": "nb", "atac": "bernoulli"}
    if not isinstance(modalities, Mapping) or len(modalities) == 0:
        raise ValueError(
            f"modalities must be a non-empty mapping {{name: kind}}, got {modalities!r}"
        )
    mods: dict[str, str] = {}
    for name, kind in modalities.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"modality names must be non-empty strings, got {name!r}")
        if kind not in KINDS:
            raise ValueError(
                f"modality {name!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}"
            )
        mods[name] = str(kind)
    if len({_name_key(m) for m in mods}) < len(
        mods
    ):  # pragma: no cover - crc32 collision
        raise ValueError(
            f"modality names {list(mods)} collide in the seed derivation; rename one"
        )

    if n_features is None:
        n_features = {}
    if isinstance(n_features, Mapping):
        unknown = [m for m in n_features if m not in mods]
        if unknown:
            raise ValueError(
                f"n_features names unknown modalities {unknown}; modalities: {list(mods)}"
            )
        feats = {
            m: _check_int(
                n_features.get(m, _DEFAULT_FEATURES[k]), f"n_features[{m!r}]", 1
            )
            for m, k in mods.items()
        }
    else:
        n = _check_int(n_features, "n_features", 1)
        feats = {m: n for m in mods}

    if shape not in SHAPES:
        raise ValueError(
            f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}"
        )
    # (a trajectory has its own three labels: n_clusters is not used, nor recorded)
    n_clusters = None if shape == "trajectory" else _check_int(n_clusters, "n_clusters", 1)
    n_latent = _check_int(n_latent, "n_latent", 2 if shape == "trajectory" else 1)
    noise = _check_float(noise, "noise", positive=True)
    cluster_separation = _check_float(cluster_separation, "cluster_separation")

    if isinstance(paired, (bool, np.bool_)):
        fraction = 1.0 if paired else 0.0
        paired_out: bool | float = bool(paired)
    elif (
        isinstance(paired, numbers.Real)
        and math.isfinite(float(paired))
        and 0 <= paired <= 1
    ):
        fraction = float(paired)
        paired_out = fraction
    else:
        raise ValueError(
            f"paired must be True, False or a fraction of shared cells in [0, 1], got {paired!r}"
        )
    n_shared = round(fraction * n_cells)

    try:
        lib_mean, lib_sd = library_size
    except (TypeError, ValueError):
        raise ValueError(
            f"library_size must be (mean, sd) of the log library size, got {library_size!r}"
        ) from None
    if isinstance(lib_mean, bool) or not isinstance(lib_mean, numbers.Real):
        raise ValueError(f"library_size mean must be a number, got {lib_mean!r}")  # noqa: TRY004
    if not math.isfinite(float(lib_mean)):
        raise ValueError(f"library_size mean must be finite, got {lib_mean!r}")
    if not 0 <= lib_mean <= 20:  # exp(0) = 1 count, exp(20) ~ 5e8 counts per cell
        raise ValueError(
            f"library_size mean is the log of the library size, in [0, 20] (7.5: about "
            f"1,800 counts), got {lib_mean!r}; pass log(counts)"
        )
    lib_sd = _check_float(lib_sd, "library_size sd")
    seed = _check_int(seed, "seed", 0)
    if isinstance(n_batches, Mapping):
        unknown = [m for m in n_batches if m not in mods]
        if unknown:
            raise ValueError(
                f"n_batches names unknown modalities {unknown}; modalities: {list(mods)}"
            )
        batches = {m: _check_int(n_batches.get(m, 1), f"n_batches[{m!r}]", 1) for m in mods}
    else:
        k = _check_int(n_batches, "n_batches", 1)
        batches = {m: k for m in mods}
    batch_effect = _check_float(batch_effect, "batch_effect")
    methylation_coverage = _check_float(methylation_coverage, "methylation_coverage", positive=True)

    return {
        "n_cells": n_cells,
        "modalities": mods,
        "n_features": feats,
        "shape": shape,
        "n_clusters": n_clusters,
        "n_latent": n_latent,
        "noise": noise,
        "cluster_separation": cluster_separation,
        "paired": paired_out,
        "n_shared": n_shared,
        "library_size": [float(lib_mean), lib_sd],
        "seed": seed,
        "theta": _THETA,
        "n_batches": batches,
        "batch_effect": batch_effect,
        "methylation_coverage": methylation_coverage,
    }


# --------------------------------------------------------------------------- population
class _Population:
    """Cluster means / trajectory curve, shared by every modality and every cell pool."""

    def __init__(self, cfg: dict):
        rng = _rng(cfg["seed"], _K_POPULATION)
        d, sep = cfg["n_latent"], cfg["cluster_separation"]
        self.shape = cfg["shape"]
        self.d = d
        if self.shape == "clusters":
            k = cfg["n_clusters"]
            self.weights = rng.dirichlet(np.full(k, _DIRICHLET))
            self.means = rng.standard_normal((k, d)) * sep
            self.categories = [f"cluster{i}" for i in range(k)]
        else:
            start = rng.standard_normal(d) * sep / 2
            vecs = rng.standard_normal((3, d)) * sep  # stem, branch a, branch b
            branch_point = start + vecs[0]
            self.starts = np.stack([start, branch_point, branch_point])
            self.vecs = vecs
            lengths = np.linalg.norm(vecs, axis=1, keepdims=True)
            self.bends = rng.standard_normal((3, d)) * 0.3 * lengths / math.sqrt(d)
            self.weights = np.full(3, 1 / 3)
            self.categories = list(_TRAJECTORY_LABELS)
        # standardisation of z for the modality maps, from a seeded reference sample
        ref, _, _ = self.sample(_rng(cfg["seed"], _K_REFERENCE), _N_REFERENCE)
        self.reference = ref
        self.center = ref.mean(0)
        self.scale = float(np.sqrt(ref.var(0).mean())) or 1.0

    def sample(self, rng: np.random.Generator, n: int):
        """``n`` cell states: ``(z, label codes, pseudotime or None)``."""
        codes = rng.choice(len(self.weights), size=n, p=self.weights)
        if self.shape == "clusters":
            z = self.means[codes] + rng.standard_normal((n, self.d))
            return z, codes, None
        s = rng.random(n)
        z = (
            self.starts[codes]
            + s[:, None] * self.vecs[codes]
            + np.sin(np.pi * s)[:, None] * self.bends[codes]
            + _JITTER * rng.standard_normal((n, self.d))
        )
        t_branch = 1 / 3
        pseudotime = np.where(codes == 0, s * t_branch, t_branch + s * (1 - t_branch))
        return z, codes, pseudotime

    def sample_pool(self, seed: int, n: int, *key: int):
        """``n`` cell states drawn granule by granule (independent of any block size)."""
        zs, codes, times = (
            [np.empty((0, self.d))],
            [np.empty(0, np.int64)],
            [np.empty(0)],
        )
        for g, rng in enumerate(_granule_rngs(seed, n, *key)):
            m = min(_RNG_CHUNK, n - g * _RNG_CHUNK)
            z, c, t = self.sample(rng, m)
            zs.append(z)
            codes.append(c)
            times.append(t if t is not None else np.zeros(m))
        return np.concatenate(zs), np.concatenate(codes), np.concatenate(times)


# --------------------------------------------------------------------------- modalities
class _ModalityMap:
    """A modality's random nonlinear map of z and its observation model."""

    def __init__(self, cfg: dict, pop: _Population, name: str, kind: str):
        rng = _rng(cfg["seed"], _K_PARAMS, _name_key(name))
        d, f = cfg["n_latent"], cfg["n_features"][name]
        self.kind, self.noise, self.pop = kind, cfg["noise"], pop
        self.lib_mean, self.lib_sd = cfg["library_size"]
        self.coverage = cfg["methylation_coverage"]
        self.w1 = rng.standard_normal((d, _N_HIDDEN)) * (1.5 / math.sqrt(d))
        self.b1 = rng.normal(0.0, 0.5, _N_HIDDEN)
        w2 = rng.standard_normal((_N_HIDDEN, f))
        strength = rng.gamma(
            2.0, _SIGNAL[kind] / 2.0, f
        )  # per-feature signal sd, mean _SIGNAL
        self.private = (
            rng.standard_normal((_N_PRIVATE, f)) / math.sqrt(_N_PRIVATE)
        ).astype(np.float32)
        # normalise the shared signal per feature on the population reference sample
        h_ref = self._hidden(pop.reference) @ w2
        sd = h_ref.std(0)
        sd[sd == 0] = 1.0
        self.w2 = (w2 * (strength / sd)).astype(np.float32)
        offset = -h_ref.mean(0) * strength / sd
        if kind == "nb":
            offset = offset + rng.normal(0.0, 1.0, f)  # gene baseline (log scale)
        elif kind == "bernoulli":
            # per-peak target accessibility (mean _ATAC_MEAN); probit-style correction of the
            # logit offset for the spread of h + noise + depth, E[sigmoid(x)] ~ sigmoid(mu/k)
            target = np.clip(
                rng.beta(1.5, 1.5 * (1 - _ATAC_MEAN) / _ATAC_MEAN, f), 1e-3, 0.9
            )
            var = strength**2 + 2 * self.noise**2 + _ATAC_DEPTH_SD**2
            offset = offset + np.log(target / (1 - target)) * np.sqrt(
                1 + np.pi * var / 8
            )
        elif kind == "methylation":
            # per-region target methylation level, bimodal (mostly methylated / mostly
            # unmethylated regions); same probit-style logit correction (no depth term)
            high = rng.random(f) < _METH_HIGH
            level_high = rng.beta(*_METH_HIGH_BETA, f)
            level_low = rng.beta(*_METH_LOW_BETA, f)
            target = np.clip(np.where(high, level_high, level_low), 0.01, 0.99)
            var = strength**2 + 2 * self.noise**2
            offset = offset + np.log(target / (1 - target)) * np.sqrt(
                1 + np.pi * var / 8
            )
            # per-region coverage factor (log-normal, mean 1)
            self.region_factor = np.exp(
                rng.normal(-_METH_REGION_SD**2 / 2, _METH_REGION_SD, f)
            ).astype(np.float32)
        self.offset = offset.astype(np.float32)
        # per-batch feature shifts (own stream: data without batches are unchanged)
        k = cfg["n_batches"][name]
        self.batch_shift = None
        if k > 1:
            shift = _rng(cfg["seed"], _K_BATCH, 1, _name_key(name)).standard_normal((k, f))
            self.batch_shift = (shift * cfg["batch_effect"]).astype(np.float32)
        self.cell_batches: np.ndarray | None = None  # the cells' batch codes, set per draw

    def _hidden(self, z: np.ndarray) -> np.ndarray:
        zs = (z - self.pop.center) / self.pop.scale
        return np.tanh(zs @ self.w1 + self.b1)

    def measure(
        self, z: np.ndarray, rng: np.random.Generator, batches: np.ndarray | None = None
    ) -> np.ndarray:
        """Dense float32 observations of one granule of cells (fixed order of draws;
        ``batches``: the cells' batch codes). ``"methylation"``: ``(n, 3, f)``, the rates
        (NaN where not covered), the coverage and the methylated read counts."""
        n, f = len(z), self.w2.shape[1]
        h = self._hidden(z).astype(np.float32) @ self.w2 + self.offset
        if self.batch_shift is not None:
            h += self.batch_shift[batches]
        u = rng.standard_normal((n, _N_PRIVATE), dtype=np.float32)
        eps = rng.standard_normal((n, f), dtype=np.float32)
        h += np.float32(self.noise) * (u @ self.private + eps)
        if self.kind == "gaussian":
            return h
        if self.kind == "nb":
            library = np.exp(rng.normal(self.lib_mean, self.lib_sd, n)).astype(
                np.float32
            )
            h -= h.max(1, keepdims=True)
            rate = np.exp(h)
            rate *= (library / rate.sum(1))[:, None]
            rate *= rng.standard_gamma(
                _THETA, size=(n, f), dtype=np.float32
            ) / np.float32(_THETA)
            return rng.poisson(rate).astype(np.float32)
        if self.kind == "methylation":
            depth = np.exp(
                rng.normal(-_METH_DEPTH_SD**2 / 2, _METH_DEPTH_SD, n)
            ).astype(np.float32)
            coverage = rng.poisson(
                np.float32(self.coverage) * depth[:, None] * self.region_factor
            )
            methylated = rng.binomial(coverage, expit(h))
            cov = coverage.astype(np.float32)
            rate = np.full((n, f), np.nan, dtype=np.float32)
            np.divide(methylated.astype(np.float32), cov, out=rate, where=coverage > 0)
            return np.stack([rate, cov, methylated.astype(np.float32)], axis=1)
        depth = rng.normal(0.0, _ATAC_DEPTH_SD, n).astype(np.float32)
        p = expit(h + depth[:, None])
        return (rng.random((n, f), dtype=np.float32) < p).astype(np.float32)


def _blocks(
    mod: _ModalityMap, z: np.ndarray, rngs: list[np.random.Generator], block_size: int
) -> Iterator[np.ndarray]:
    """Dense float32 observations of consecutive blocks of ``block_size`` cells (as
    :meth:`_ModalityMap.measure` gives them: ``(cells, 3, features)`` for methylation)."""
    n = len(z)
    cache: tuple[int, np.ndarray] | None = None  # the granule straddling two blocks
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        parts = []
        for g in range(start // _RNG_CHUNK, (stop - 1) // _RNG_CHUNK + 1):
            g0 = g * _RNG_CHUNK
            if cache is not None and cache[0] == g:
                x = cache[1]
            else:
                g1 = min(g0 + _RNG_CHUNK, n)
                b = None if mod.cell_batches is None else mod.cell_batches[g0:g1]
                x = mod.measure(z[g0:g1], rngs[g], b)
                cache = (g, x)
            parts.append(x[max(start - g0, 0) : stop - g0])
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def _assemble(
    mod: _ModalityMap, z: np.ndarray, rngs: list[np.random.Generator], block_size: int
) -> tuple[np.ndarray | sp.csr_matrix, dict[str, np.ndarray]]:
    """Observations of all cells, granule-generated and assembled block by block:
    ``(X, layers)`` (layers: :data:`_METH_LAYERS` for methylation, else empty)."""
    n, f = len(z), mod.w2.shape[1]
    sparse = mod.kind in _SPARSE_KINDS
    meth = mod.kind == "methylation"
    dense_out = None if sparse else np.empty((n, f), dtype=np.float32)
    layers = {k: np.empty((n, f), dtype=np.float32) for k in _METH_LAYERS} if meth else {}
    data, indices, indptr = [], [], [np.zeros(1, np.int64)]
    nnz = 0
    start = 0
    for block in _blocks(mod, z, rngs, block_size):
        stop = start + block.shape[0]
        if meth:
            dense_out[start:stop] = block[:, 0]
            for i, out in enumerate(layers.values(), start=1):
                out[start:stop] = block[:, i]
            start = stop
            continue
        if not sparse:
            dense_out[start:stop] = block
            start = stop
            continue
        start = stop
        csr = sp.csr_matrix(block)
        data.append(csr.data)
        indices.append(csr.indices)
        indptr.append(csr.indptr[1:].astype(np.int64) + nnz)
        nnz += csr.nnz
    if meth:
        return dense_out, layers
    if not sparse:
        return dense_out, {}
    idx_dtype = np.int32 if nnz <= np.iinfo(np.int32).max else np.int64
    return sp.csr_matrix(
        (
            np.concatenate(data).astype(np.float32, copy=False),
            np.concatenate(indices).astype(idx_dtype, copy=False),
            np.concatenate(indptr).astype(idx_dtype, copy=False),
        ),
        shape=(n, f),
    ), {}


def _write_modality(
    path: Path, mod: _ModalityMap, z: np.ndarray, rngs, block_size: int, *,
    obs: pd.DataFrame, var: pd.DataFrame, uns: dict, overwrite: bool,
) -> None:
    """One modality's AnnData as .h5ad, observations written block by block.

    Sparse kinds: ``X`` is CSR; for ``"nb"`` ``layers["counts"]`` is an HDF5 hard link to
    the same data (read as an equal copy, stored once). ``"methylation"``: dense ``X``
    (rates, NaN where not covered) and dense ``layers["coverage"]`` / ``["methylated"]``.
    """
    import h5py

    from .._utils import atomic_file
    from ..data._h5ad import CSRRows, DenseRows, write_skeleton

    n, f = len(z), mod.w2.shape[1]
    with atomic_file(path, overwrite=overwrite) as tmp:
        write_skeleton(tmp, obs=obs, var=var, uns=uns, obsm={"X_true": z.astype(np.float32)})
        with h5py.File(tmp, "r+") as h5:
            if mod.kind in _SPARSE_KINDS:
                w = CSRRows(h5, "X", n, f)
            else:
                w = DenseRows(h5, "X", n, (f,))
            extra = [  # the methylation counts' layers
                DenseRows(h5["layers"], key, n, (f,))
                for key in (_METH_LAYERS if mod.kind == "methylation" else ())
            ]
            for block in _blocks(mod, z, rngs, block_size):
                if not extra:
                    w.write(block)
                    continue
                w.write(block[:, 0])
                for i, wl in enumerate(extra, start=1):
                    wl.write(block[:, i])
            for wl in (w, *extra):
                wl.close()
            if mod.kind == "nb":
                h5["layers"]["counts"] = h5["X"]  # hard link


def _names(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(start, stop)]


# --------------------------------------------------------------------------- public API
def synthetic(
    n_cells: int = 1000,
    *,
    modalities: Mapping[str, str] | None = None,
    n_features: Mapping[str, int] | int | None = None,
    shape: Literal["clusters", "trajectory"] = "clusters",
    n_clusters: int = 4,
    n_latent: int = 8,
    noise: float = 0.5,
    cluster_separation: float = 3.0,
    paired: bool | float = True,
    library_size: tuple[float, float] = (7.5, 0.4),
    n_batches: int | Mapping[str, int] = 1,
    batch_effect: float = 1.0,
    methylation_coverage: float = _METH_COVERAGE,
    seed: int = 0,
    return_mudata: bool = False,
    block_size: int = _BLOCK_SIZE,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, AnnData] | MuData:
    """Simulate multi-modal single-cell data from a shared latent cell state.

    Every modality measures cells of one population (same clusters / trajectory): each cell
    has a true state ``z``; each modality maps it through its own random nonlinear function,
    adds modality-specific noise and samples observations (see the module docstring for the
    full model). The true state, label and cell identity are recorded, so pairs are known even
    when the modalities are unpaired or their ``obs_names`` are changed.

    Parameters
    ----------
    n_cells
        Cells per modality (>= 2).
    modalities
        ``{name: kind}`` with kinds ``"nb"`` (counts, negative binomial), ``"bernoulli"``
        (binary accessibility), ``"gaussian"`` (continuous features) or ``"methylation"``
        (DNA methylation rate per genomic region, NaN where a region is not covered in a
        cell; about 36 % of entries covered). Default ``{"rna": "nb", "atac": "bernoulli"}``.
    n_features
        Features per modality, as one number for all or ``{name: n}`` (modalities not named
        keep their default). Defaults by kind: nb 500, bernoulli 1000, gaussian 50,
        methylation 500.
    shape
        ``"clusters"``: a Gaussian mixture of ``n_clusters`` clusters (labels ``cluster0``,
        ...). ``"trajectory"``: a stem that splits into two branches (labels ``stem``,
        ``branch_a``, ``branch_b``; ``obs["pseudotime"]`` in [0, 1], the branch point at
        1/3); ``n_clusters`` is then ignored.
    n_clusters
        Number of clusters (``shape="clusters"``).
    n_latent
        Dimension of the true shared cell state (>= 2 for trajectories).
    noise
        Scale (> 0) of the modality-specific noise: a private 2-dimensional factor per cell
        plus iid feature noise, both not shared between modalities. Higher is harder.
    cluster_separation
        Per-coordinate standard deviation of the cluster centres (or of the trajectory
        segments) in units of the within-cluster standard deviation (>= 0).
    paired
        ``True``: every cell is measured in every modality (identical ``obs_names``
        ``cell0``, ...). ``False``: each modality measures its own, disjoint cells drawn from
        the same population (``obs_names`` prefixed by the modality, e.g. ``rna_cell0``). A
        fraction in [0, 1]: the first ``round(paired * n_cells)`` cells of every modality are
        shared (same ``obs_names`` and ``true_cell``), the rest are the modality's own.
    library_size
        Mean (0-20) and standard deviation of the log library size of ``"nb"`` modalities
        (log-normal; default median about 1,800 counts); the coverage of ``"methylation"``
        modalities does not depend on it.
    n_batches
        Batches per modality, as one number for all or ``{name: n}`` (others: 1). With more
        than one, cells are spread uniformly over the batches (``obs["batch"]``,
        ``batch0``, ...) and each batch shifts every feature (see ``batch_effect``).
    batch_effect
        Standard deviation (>= 0) of the per-batch, per-feature shift of the modality's
        signal (log scale for counts, logit for accessibility and methylation). Batches
        do not change the cell states, so a good integration mixes them.
    methylation_coverage
        Mean reads per cell and region of ``"methylation"`` modalities (> 0; times a
        log-normal cell depth and region factor, each of mean 1): 0.5 covers about 36 %
        of the entries, most by one read; 5 about 94 %, by 1 to 14 reads (5th to 95th
        percentile).
    seed
        Seed (>= 0). The same arguments and seed give the same data; a modality's data are
        keyed by its name, so adding modalities does not change the others.
    return_mudata
        Return a :class:`mudata.MuData` instead of a dict.
    block_size
        Cells assembled per block (memory only: the data do not depend on it).
    out
        A directory: write each modality to ``<out>/<name>.h5ad`` block by block
        (``block_size`` cells at a time, sparse matrices as CSR on disk) and return the
        files opened lazily (:func:`~transmodal.datasets.read_backed`: matrices and layers
        stay on disk), so that data larger than memory can be made: memory holds one
        block plus the per-cell annotations. Each file is written under a temporary name
        and renamed once complete. The contents equal the in-memory result
        (``layers["counts"]`` is stored once, as an HDF5 link to ``X``; note that
        ``anndata.read_h5ad(..., backed="r")`` would load layers into memory).
    overwrite
        With ``out``: replace existing files.

    Returns
    -------
    ``{name: AnnData}`` (or a MuData with these as ``mod``; with ``out``: AnnData objects
    whose matrices stay on disk). Each AnnData has

    - ``X``: CSR float32 counts (``"nb"``, also in ``layers["counts"]``) or 0/1 values
      (``"bernoulli"``); dense float32 (``"gaussian"``); dense float32 methylation rates
      in [0, 1] (methylated / covered reads), NaN where the region has no coverage in
      the cell (``"methylation"``, the covering and the methylated read counts in
      ``layers["coverage"]`` and ``layers["methylated"]``, dense float32);
    - ``obs["label"]`` (categorical cluster / branch), ``obs["true_cell"]`` (id of the
      underlying cell state: equal across modalities exactly for the same cell),
      ``obs["pseudotime"]`` for trajectories, ``obs["batch"]`` with batches;
    - ``obsm["X_true"]``: the true latent state ``z`` (float32);
    - ``var_names`` ``gene0...`` / ``peak0...`` / ``feat0...`` / ``region0...`` (prefixed
      with the modality name when several modalities share a kind);
    - ``uns["synthetic"]``: the parameters (JSON-able).

    Raises
    ------
    ValueError
        For an unknown kind (naming the modality) or shape, ``n_cells < 2``, a pairing
        fraction outside [0, 1], non-positive ``noise`` or feature counts, and other
        invalid arguments.

    Examples
    --------
    >>> data = tm.datasets.synthetic(500, paired=0.3, seed=1)
    >>> rows_rna, rows_atac = tm.datasets.true_pairs(data, "rna", "atac")
    >>> len(rows_rna)
    150
    """
    cfg = _resolve(
        n_cells,
        modalities,
        n_features,
        shape,
        n_clusters,
        n_latent,
        noise,
        cluster_separation,
        paired,
        library_size,
        seed,
        n_batches,
        batch_effect,
        methylation_coverage,
    )
    block_size = _check_int(block_size, "block_size", 1)
    if out is not None:
        if return_mudata:
            raise ValueError("return_mudata=True cannot be combined with out= (files are "
                             "returned as backed AnnData objects)")
        existing = [str(Path(out) / f"{m}.h5ad") for m in cfg["modalities"]
                    if (Path(out) / f"{m}.h5ad").exists()]
        if existing and not overwrite:
            raise FileExistsError(f"{existing[0]} exists; pass overwrite=True to replace it")
    pop = _Population(cfg)
    n, n_shared, seed = cfg["n_cells"], cfg["n_shared"], cfg["seed"]
    shared = pop.sample_pool(seed, n_shared, _K_SHARED)
    shared_names = _names("cell", 0, n_shared)
    # batch draws: one uniform per cell, shared cells' from a common stream
    shared_u = _rng(seed, _K_BATCH, 0).random(n_shared)

    kinds = list(cfg["modalities"].values())
    params = _jsonable(cfg)
    result: dict[str, AnnData] = {}
    for name, kind in cfg["modalities"].items():
        own = pop.sample_pool(seed, n - n_shared, _K_OWN, _name_key(name))
        z = np.concatenate([shared[0], own[0]])
        codes = np.concatenate([shared[1], own[1]])
        obs_names = shared_names + _names(f"{name}_cell", n_shared, n)
        mod = _ModalityMap(cfg, pop, name, kind)
        rngs = _granule_rngs(seed, n, _K_MEASURE, _name_key(name))
        k = cfg["n_batches"][name]
        if k > 1:
            own_u = _rng(seed, _K_BATCH, 2, _name_key(name)).random(n - n_shared)
            mod.cell_batches = np.minimum(
                (np.concatenate([shared_u, own_u]) * k).astype(np.int64), k - 1
            )

        obs = pd.DataFrame(
            {
                "label": pd.Categorical.from_codes(codes, categories=pop.categories),
                "true_cell": pd.Series(obs_names, dtype=object).to_numpy(),
            },
            index=pd.Index(obs_names, dtype=object),
        )
        if cfg["shape"] == "trajectory":
            obs["pseudotime"] = np.concatenate([shared[2], own[2]])
        if mod.cell_batches is not None:
            obs["batch"] = pd.Categorical.from_codes(
                mod.cell_batches, categories=[f"batch{i}" for i in range(k)]
            )
        prefix = (
            _VAR_PREFIX[kind]
            if kinds.count(kind) == 1
            else f"{name}_{_VAR_PREFIX[kind]}"
        )
        n_vars = cfg["n_features"][name]
        var = pd.DataFrame(index=pd.Index(_names(prefix, 0, n_vars), dtype=object))
        # (a record of its own: nested settings shared between modalities would be edited
        # together)
        uns = {"synthetic": {"modality": name, "kind": kind, **copy.deepcopy(params)}}
        if out is not None:
            path = Path(out) / f"{name}.h5ad"
            _write_modality(
                path, mod, z, rngs, block_size, obs=obs, var=var, uns=uns, overwrite=overwrite
            )
            continue
        x, layers = _assemble(mod, z, rngs, block_size)
        adata = AnnData(X=x, obs=obs, var=var, layers=layers)
        if kind == "nb":
            adata.layers["counts"] = x.copy()
        adata.obsm["X_true"] = z.astype(np.float32)
        adata.uns.update(uns)
        result[name] = adata

    if out is not None:
        from ..data._h5ad import read_backed

        return {name: read_backed(Path(out) / f"{name}.h5ad") for name in cfg["modalities"]}
    if return_mudata:
        from mudata import MuData

        from .._utils import no_mudata_notice

        with no_mudata_notice():
            return MuData(result)
    return result


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out[k] = dict(v)
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        else:
            out[k] = v
    return out




def true_pairs(
    adatas: Mapping[str, AnnData] | MuData, a: str, b: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the cells of modalities ``a`` and ``b`` that are the same cell.

    Parameters
    ----------
    adatas
        ``{name: AnnData}`` or a MuData, as returned by :func:`synthetic` (every modality
        needs ``obs["true_cell"]``).
    a, b
        Modality names.

    Returns
    -------
    ``(rows_a, rows_b)``: integer arrays with ``adatas[a].obs["true_cell"][rows_a] ==
    adatas[b].obs["true_cell"][rows_b]``, ordered by ``rows_a``; empty when no cell is shared.
    """
    mods = adatas.mod if hasattr(adatas, "mod") else adatas
    ids = []
    for name in (a, b):
        if name not in mods:
            raise ValueError(f"no modality {name!r}; available: {list(mods)}")
        if "true_cell" not in mods[name].obs:
            raise ValueError(
                f"modality {name!r} has no obs['true_cell'] (not from synthetic()?)"
            )
        ids.append(pd.Index(np.asarray(mods[name].obs["true_cell"]).astype(str)))
    if not ids[1].is_unique:
        raise ValueError(f"obs['true_cell'] of modality {b!r} is not unique")
    rows_b = ids[1].get_indexer(ids[0])
    rows_a = np.flatnonzero(rows_b >= 0)
    return rows_a.astype(np.int64), rows_b[rows_a].astype(np.int64)
