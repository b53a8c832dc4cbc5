"""Agreement between training runs: do different seeds match the same cells?"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from .._utils import check_int, names_are_numbers, user_stacklevel
from ._chunked import as_embedding, axis_names, check_same_dims

if TYPE_CHECKING:
    from ..model import Ensemble

# below this chance-corrected agreement, seeds are reported as disagreeing (chosen on the
# unpaired benchmark: see benchmarks/unpaired.py and the README)
SEED_AGREEMENT_WARNING = 0.2


def _embeddings(run: Any, i: int) -> tuple[dict[str, np.ndarray], dict[str, pd.Index] | None]:
    """A run's embedding per modality, and (for a model) its cells' names per modality."""
    if hasattr(run, "get_latent_representation") and hasattr(run, "modality_names"):
        try:
            embs = {n: run.get_latent_representation(n) for n in run.modality_names}
        except ValueError as err:  # e.g. a model loaded without its data
            raise ValueError(f"runs[{i}]: {err}") from None
        members = getattr(run, "models", None)  # an Ensemble: its members' cells
        mods = getattr(run, "mods", None) if members is None else getattr(members[0], "mods", None)
        if mods is None:
            return embs, None
        return embs, {n: pd.Index(mods[n].obs_names) for n in run.modality_names}
    if isinstance(run, Mapping):  # (DataFrames, AnnData: their cells' names too, if unique)
        names = {str(n): axis_names(z) for n, z in run.items()}
        return ({str(n): as_embedding(z, f"runs[{i}][{n!r}]") for n, z in run.items()},
                {n: pd.Index(v) for n, v in names.items()
                 if v is not None and pd.Index(v).is_unique})
    raise TypeError(
        f"runs[{i}] must be a trained CrossModalAE or a {{modality: embedding}} mapping; "
        f"got {type(run).__name__}"
    )


def _cross_neighbours(zq: np.ndarray, zr: np.ndarray, k: int) -> np.ndarray:
    return NearestNeighbors(n_neighbors=k).fit(zr).kneighbors(zq, return_distance=False)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean fraction of shared entries between the rows of two neighbour-index arrays."""
    k = a.shape[1]
    both = np.sort(np.concatenate([a, b], axis=1), axis=1)
    return float((both[:, 1:] == both[:, :-1]).sum(1).mean() / k)


def seed_agreement(
    runs: Sequence[Any] | Ensemble,
    *,
    k: int = 50,
    warn_below: float | None = SEED_AGREEMENT_WARNING,
    run_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """How consistently several training runs (seeds) match cells across modalities.

    For every run, every ordered pair of modalities ``(a, b)`` and every cell of ``a``,
    take its ``k`` nearest cells of ``b`` in the run's latent space. Two runs agree on a
    cell by the fraction of these neighbours they share; the score is that fraction
    averaged over cells and modality pairs, corrected for chance
    (``(overlap - k / n_b) / (1 - k / n_b)``: 0 = unrelated matchings, 1 = identical).
    Without known pairs, a low agreement means that the alignment is not determined by
    the data (e.g. seeds that swap similar clusters) and no single run should be trusted.

    Parameters
    ----------
    runs
        At least two trained :class:`~transmodal.CrossModalAE` models of the same data
        (embeddings of their training cells are used, matched by the cells' names, so
        the same cells stored in another order are the same), an :class:`~transmodal.Ensemble`
        (its members), or ``{modality: embedding}`` mappings with the same modalities and
        cells: DataFrames (or AnnData) indexed by the cells' names are matched by them, as
        models are; arrays by their order.
    k
        Neighbours per cell (capped at the size of the smaller modality minus one).
    warn_below
        Emit a ``UserWarning`` when any pair of runs agrees less than this; ``None`` never
        warns.
    run_names
        What the warning calls the runs (e.g. ``["seed 5", "seed 9"]``); default: their
        positions in ``runs``.

    Returns
    -------
    DataFrame with one row per pair of runs: ``run_a``, ``run_b``, ``agreement``.

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer, there are fewer than two runs, or the runs
        do not embed the same modalities and cells.
    """
    check_int(k, "k", minimum=1)
    k = int(k)
    if isinstance(getattr(runs, "models", None), list):  # an Ensemble: its members' runs
        runs = runs.models
    if isinstance(runs, (str, bytes)) or not hasattr(runs, "__len__"):
        raise ValueError(
            f"runs must be a list of trained models (or of {{modality: embedding}} mappings) "
            f"or an Ensemble; got {type(runs).__name__}"
        )
    if len(runs) < 2:
        raise ValueError(f"seed_agreement needs at least two runs; got {len(runs)}")
    if run_names is not None and len(run_names) != len(runs):
        raise ValueError(f"run_names names {len(run_names)} runs; there are {len(runs)}")
    embs, cells = zip(*(_embeddings(r, i) for i, r in enumerate(runs)))
    embs = list(embs)
    names = list(embs[0])
    if len(names) < 2:
        raise ValueError("seed_agreement needs runs with at least two modalities")
    for i, e in enumerate(embs[1:], start=1):
        if set(e) != set(names):  # matched by name, in any order
            raise ValueError(f"runs[{i}] has modalities {sorted(e)}; runs[0] has {sorted(names)}")
        for n in names:
            if e[n].shape[0] != embs[0][n].shape[0]:
                raise ValueError(
                    f"runs[{i}][{n!r}] has {e[n].shape[0]} cells; runs[0] has "
                    f"{embs[0][n].shape[0]} (the runs must embed the same cells)"
                )
            named = cells[i] is not None and cells[0] is not None and n in cells[i] \
                and n in cells[0]  # cells matched by name (models, named frames) ...
            if named and not set(cells[i][n]) == set(cells[0][n]) and (
                    names_are_numbers(cells[i][n]) or names_are_numbers(cells[0][n])):
                named = False  # ... but numbers of other sets (AnnData's default row names
                # beside real names) are positions
            if named:
                order = cells[i][n].get_indexer(cells[0][n])
                if (order < 0).any():
                    raise ValueError(
                        f"runs[{i}][{n!r}] embeds other cells than runs[0] (obs_names "
                        "differ); the runs must be trained on the same cells"
                    )
                e[n] = e[n][order]
    for e in embs:
        for a, b in combinations(names, 2):
            check_same_dims(e[a], e[b], (a, b))
    n_min = min(embs[0][n].shape[0] for n in names)
    k = min(k, n_min - 1)
    if k < 1:
        raise ValueError(
            f"seed_agreement needs at least two cells per modality; got {n_min}"
        )
    pairs = [(a, b) for a in names for b in names if a != b]
    neigh = [{(a, b): _cross_neighbours(e[a], e[b], k) for a, b in pairs} for e in embs]
    rows = []
    for i, j in combinations(range(len(runs)), 2):
        scores = []
        for a, b in pairs:
            chance = k / embs[0][b].shape[0]
            raw = _overlap(neigh[i][(a, b)], neigh[j][(a, b)])
            scores.append((raw - chance) / (1.0 - chance) if chance < 1 else 1.0)
        rows.append({"run_a": i, "run_b": j, "agreement": float(np.mean(scores))})
    table = pd.DataFrame(rows)
    worst = table.loc[table["agreement"].idxmin()]
    if warn_below is not None and worst["agreement"] < warn_below:
        ia, ib = int(worst["run_a"]), int(worst["run_b"])
        who = f"runs {ia} and {ib}" if run_names is None else (
            f"the runs of {run_names[ia]} and {run_names[ib]}"
        )
        warnings.warn(
            f"{who} disagree on which cells "
            f"match across modalities (chance-corrected agreement {worst['agreement']:.2f} < "
            f"{warn_below}; mean over run pairs {table['agreement'].mean():.2f}): the data do "
            "not determine which cells match. Without prior knowledge, add it (labels_key, "
            "anchor pairs, marker_key); with it, compare the runs before trusting any one "
            "(tm.workflows.train_consensus keeps the run the others agree with most).",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return table


def medoid_run(agreement: pd.DataFrame) -> int:
    """The run that agrees most with the others: the medoid of a :func:`seed_agreement`
    table.

    Runs that found the same alignment agree with each other, and a run that swapped
    clusters or flipped a branch agrees with few; the medoid is therefore the majority's
    alignment. On the unpaired benchmark (one synthetic draw per shape, five seeds, see the
    README) the medoid of three runs reached FOSCTTM 0.273 ± 0.013 on separated clusters and
    0.132 ± 0.003 on unequal feature counts, against 0.347 ± 0.135 and 0.161 ± 0.056 for a
    single run; it does not help where no majority exists (noise: 0.437 against 0.427),
    and where all runs agree little (every pair below about 0.2) the choice rests on a weak
    signal.

    Parameters
    ----------
    agreement
        The table of :func:`seed_agreement` (``run_a``, ``run_b``, ``agreement``).

    Returns
    -------
    Index of the run with the highest mean agreement with all others (the lowest index
    among ties).
    """
    missing = {"run_a", "run_b", "agreement"} - set(agreement.columns)
    if missing:
        raise ValueError(f"agreement must be a seed_agreement table; missing columns {sorted(missing)}")
    if agreement.empty:
        raise ValueError("agreement is empty: medoid_run needs at least two runs")
    values = agreement["agreement"].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():  # argmax would pick the first NaN's run
        raise ValueError(
            f"agreement holds {int((~np.isfinite(values)).sum())} NaN / infinite value(s); "
            "medoid_run needs every pair's agreement"
        )
    a = agreement["run_a"].to_numpy(dtype=np.int64)
    b = agreement["run_b"].to_numpy(dtype=np.int64)
    total = np.bincount(a, agreement["agreement"], minlength=max(a.max(), b.max()) + 1)
    total += np.bincount(b, agreement["agreement"], minlength=len(total))
    runs = np.union1d(a, b)
    return int(runs[np.argmax(total[runs])])
