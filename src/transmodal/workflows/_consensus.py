"""Train several seeds: keep the run the others agree with, or combine them all."""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import pandas as pd

from .. import metrics
from .._utils import check_int, process_state, user_stacklevel
from ..model import CrossModalAE, Ensemble
from ..model._priors import construction_bars


@dataclass(frozen=True)
class ConsensusRun:
    """Result of :func:`train_consensus`.

    Attributes
    ----------
    model
        The trained model of the chosen seed.
    seed
        Its seed.
    agreement
        :func:`~transmodal.metrics.seed_agreement` of all runs, with ``seed_a`` and
        ``seed_b`` next to the run indices.
    """

    model: CrossModalAE
    seed: int
    agreement: pd.DataFrame


def _train_runs(
    build: Callable[[int], CrossModalAE],
    seeds: Sequence[int],
    train_kwargs: dict[str, Any],
    caller: str,
) -> tuple[list[int], list[CrossModalAE]]:
    """Check ``seeds`` and ``build``, then train one model per seed."""
    try:
        seeds = list(seeds)
    except TypeError:
        raise ValueError(f"seeds must be at least two integers; got {seeds!r}") from None
    if len(seeds) < 2 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in seeds
    ):
        raise ValueError(f"seeds must be at least two integers; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct; got {seeds!r}")
    if not callable(build):
        raise TypeError(f"build must be a callable seed -> CrossModalAE; got {type(build).__name__}")
    if "seed" in train_kwargs:
        raise ValueError(f"{caller} sets each run's seed: do not pass seed=")
    if train_kwargs.get("checkpoint_dir") is not None:
        raise ValueError(
            f"{caller} trains several models: checkpoint_dir= saves one model's training "
            "(every run would write it)"
        )
    models: list[CrossModalAE] = []
    # each run's warnings pass on once, at the caller's line: Python shows a warning once per
    # line, but train() sets warning filters, which clears that record, so N runs showed
    # every warning N times. Recorded under the caller's filters: an "error" one still
    # raises at once, in the run that warns
    runs: dict[tuple[type, str], set[int]] = {}
    started = 0
    try:
        for i, s in enumerate(seeds):
            started = i + 1
            caught: list[warnings.WarningMessage] = []
            try:
                # the process's state, warning filters included, held for the whole run (a
                # record of build()'s warnings taken beside another thread's training mixed
                # the two threads' filters; so build() must build in this thread)
                with process_state(), warnings.catch_warnings(record=True) as caught:
                    with construction_bars(train_kwargs.get("progress_bar", True)):
                        model = _built(build, int(s), seeds, models)
                    models.append(model.train(**train_kwargs))
            except BaseException as err:  # say which run it was; keep the finished ones
                kept = ""
                if models:
                    with contextlib.suppress(AttributeError, TypeError):
                        err.runs = list(models)  # type: ignore[attr-defined]
                        kept = "; the finished runs' models are the exception's .runs (" + (
                            "e.g. tm.Ensemble(err.runs)" if len(models) > 1 else "err.runs[0]"
                        ) + "; in a notebook sys.last_value.runs)"
                if hasattr(err, "add_note"):  # (Python >= 3.11)
                    err.add_note(
                        f"{caller}: raised by the run of seed {s}, after {i} of the "
                        f"{len(seeds)} runs had finished{kept}"
                    )
                raise
            finally:
                for w in caught:
                    runs.setdefault((w.category, str(w.message)), set()).add(i)
    except BaseException:  # the runs' warnings, then the failure itself
        with contextlib.suppress(Warning):
            _pass_on_once(runs, seeds[:started])  # (of the runs that ran)
        raise
    _pass_on_once(runs, seeds)
    return seeds, models


def _pass_on_once(runs: dict[tuple[type, str], set[int]], seeds: list[int]) -> None:
    """Issue each distinct warning once, pointing at the user's line, with the runs that
    gave it (``runs``: the indices of the runs per category and message)."""
    for (category, message), which in runs.items():
        named = ", ".join(str(seeds[i]) for i in sorted(which))
        plural = "s" if len(which) > 1 else ""
        where = (
            f" [all {len(seeds)} runs]" if len(which) == len(seeds)
            else f" [{len(which)} of the {len(seeds)} runs: seed{plural} {named}]"
        )
        warnings.warn(message + where, category, stacklevel=user_stacklevel())


def _built(
    build: Callable[[int], CrossModalAE], s: int, seeds: list[int], models: list[CrossModalAE]
) -> CrossModalAE:
    """The model of seed ``s``, checked against the ``models`` built before."""
    model = build(s)
    if not isinstance(model, CrossModalAE):
        raise TypeError(f"build({s}) returned {type(model).__name__}, not a CrossModalAE")
    if any(model is m for m in models):
        raise ValueError(
            f"build({s}) returned a model it returned before: build must create a new "
            "model for every seed"
        )
    if model.init_params_["seed"] != s:
        # the seed sets the split, the anchors and the initial weights: ignoring it
        # would train near-identical runs and hide the seed dependence
        raise ValueError(
            f"build({s}) returned a model with seed={model.init_params_['seed']}: build "
            "must pass its argument on, e.g. lambda s: tm.CrossModalAE(..., seed=s)"
        )
    if models and model.modality_names != models[0].modality_names:
        raise ValueError(
            f"build({s}) has modalities {model.modality_names}; build({seeds[0]}) has "
            f"{models[0].modality_names}"
        )
    return model


# known pairs that fix an alignment: at least this many (or every training cell of the
# smaller modality) between every two modalities
_TYING_PAIRS = 50


def _anchored(model: CrossModalAE) -> bool:
    """Whether the model's anchor loss (on: ``lam_anchor`` > 0) ties every two of its
    modalities by enough known pairs to fix their alignment."""
    if not model.train_params_.get("lam_anchor"):
        return False
    cells = {n: int((~model.val_masks_[n]).sum()) for n in model.modality_names}
    for a, b in combinations(model.modality_names, 2):
        pairs = model.anchors_.get(f"{a}|{b}")
        if pairs is None or len(pairs[0]) < min(_TYING_PAIRS, cells[a], cells[b]):
            return False
    return True


def _agreement(
    models: list[CrossModalAE], seeds: list[int], k: int,
    advice: Callable[[pd.DataFrame], str] | None,
) -> pd.DataFrame:
    """:func:`~transmodal.metrics.seed_agreement` of the runs (named by their seeds); its
    warnings are passed on to the workflow's caller with ``advice(table)`` appended
    (``None``: not passed on)."""
    with process_state(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = metrics.seed_agreement(models, k=k, run_names=[f"seed {s}" for s in seeds])
    for w in caught if advice is not None else ():
        warnings.warn(f"{w.message} {advice(table)}", w.category, stacklevel=user_stacklevel())
    return table


def train_consensus(
    build: Callable[[int], CrossModalAE],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    k: int = 50,
    **train_kwargs: Any,
) -> ConsensusRun:
    """Train one model per seed and keep the medoid: the run the others agree with most.

    Without known pairs or labels the alignment can depend on the seed (two similar
    clusters swapped, a branch flipped). Runs that found the same alignment match the
    same cells across modalities; :func:`~transmodal.metrics.medoid_run` picks the run
    with the highest mean :func:`~transmodal.metrics.seed_agreement` with the others, i.e.
    the majority's alignment. Costs ``len(seeds)`` trainings; only the chosen model is
    kept. Measured on the unpaired benchmark (README): with three seeds, FOSCTTM 0.273 ±
    0.013 instead of 0.347 ± 0.135 for one run on separated clusters; no gain where the
    runs have no majority.

    Parameters
    ----------
    build
        ``seed -> CrossModalAE``: a new, untrained model of the data with that seed, e.g.
        ``lambda s: tm.CrossModalAE(mdata, {"rna": "nb", "atac": "bernoulli"}, seed=s)``,
        built in the calling thread (runs hold the process-wide state: README, Threads).
    seeds
        Distinct seeds, at least three for a medoid (of two runs, which agree with each
        other equally, the first is kept, with a warning).
    k
        Neighbours per cell of :func:`~transmodal.metrics.seed_agreement` (a positive
        integer, checked before any training).
    **train_kwargs
        Passed to :meth:`CrossModalAE.train` of every run (``seed`` is the run's own).

    Returns
    -------
    ConsensusRun
        The chosen model, its seed and the agreement table. Warns (as
        :func:`~transmodal.metrics.seed_agreement` does) when runs disagree, also those
        outside the majority, unless every run's anchor loss ties every two modalities by
        at least 50 known pairs (as :func:`train_ensemble`). If a run raises (Ctrl+C
        too), the exception names its seed and holds the finished runs' models as
        ``.runs``.

    Examples
    --------
    >>> run = tm.workflows.train_consensus(
    ...     lambda s: tm.CrossModalAE(mdata, {"rna": "nb", "atac": "bernoulli"}, seed=s),
    ...     seeds=(0, 1, 2), max_epochs=100)
    >>> z = run.model.get_latent_representation("rna")
    """
    check_int(k, "k", minimum=1)
    seeds, models = _train_runs(build, seeds, train_kwargs, "train_consensus")
    if len(seeds) == 2:
        warnings.warn(
            f"train_consensus with two seeds: two runs agree with each other equally, so "
            f"there is no medoid and the first, seed {seeds[0]}, is kept; give three or more "
            "seeds for the majority's run",
            UserWarning, stacklevel=user_stacklevel(),
        )
    # runs tied by enough known pairs share their alignment: their low agreement is the
    # noise of near neighbours, not another alignment (not warned of, as train_ensemble)
    table = _agreement(
        models, seeds, k, None if all(_anchored(m) for m in models) else lambda t: (
            f"train_consensus kept seed {seeds[metrics.medoid_run(t)]}, the run that agrees "
            "most with the others." if len(seeds) > 2 else
            f"train_consensus kept the first seed, {seeds[0]} (two runs have no medoid)."
        )
    )
    chosen = metrics.medoid_run(table)
    table.insert(2, "seed_a", [seeds[i] for i in table["run_a"]])
    table.insert(3, "seed_b", [seeds[i] for i in table["run_b"]])
    return ConsensusRun(models[chosen], int(seeds[chosen]), table)


def train_ensemble(
    build: Callable[[int], CrossModalAE],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    k: int = 50,
    **train_kwargs: Any,
) -> Ensemble:
    """Train one model per seed and combine them all into an :class:`~transmodal.Ensemble`.

    The members' errors partly cancel: on the paper's A549 test cells (README), three
    seeds reach FOSCTTM 0.334 instead of 0.347 for one model without anchor pairs, and
    0.351 instead of 0.369 with 25 % anchors (five seeds: 0.340). Costs ``len(seeds)``
    trainings.

    The runs' :func:`~transmodal.metrics.seed_agreement` is checked, and a low agreement
    is warned about. If the runs found different alignments (swapped clusters, a flipped
    branch: typical without pairs or labels), averaging them blurs the match and
    :func:`train_consensus`, which keeps the majority's run, is the better choice. Where
    the match of single cells is just noisy it still helps: on A549 the runs agree at only
    0.05-0.2 (every anchor fraction) and the ensemble improves FOSCTTM at every one. Runs
    whose anchor loss ties every two modalities by at least 50 known pairs (or every
    training cell of the smaller one) are therefore not checked: their pairs fix the
    alignment, so a low agreement there means noisy single-cell matches, which the average
    reduces, not different alignments.

    Parameters
    ----------
    build
        ``seed -> CrossModalAE``: a new, untrained model of the data with that seed,
        built in the calling thread.
    seeds
        At least two distinct seeds.
    k
        Neighbours per cell of the agreement check (a positive integer, checked before
        any training).
    **train_kwargs
        Passed to :meth:`CrossModalAE.train` of every run.

    Returns
    -------
    Ensemble
        The trained members, in the order of ``seeds``. If a run raises (Ctrl+C too), the
        exception names its seed and holds the finished runs' models as ``.runs``.

    Examples
    --------
    >>> ens = tm.workflows.train_ensemble(
    ...     lambda s: tm.CrossModalAE(mdata, {"rna": "nb", "atac": "bernoulli"},
    ...                               anchor_fraction=0.25, seed=s), seeds=(0, 1, 2))
    >>> mdata["rna"].obsm["X_transmodal"] = ens.get_latent_representation("rna")
    """
    check_int(k, "k", minimum=1)
    seeds, models = _train_runs(build, seeds, train_kwargs, "train_ensemble")
    if all(_anchored(m) for m in models):  # the pairs fix the alignment: nothing to check
        return Ensemble(models)
    _agreement(
        models, seeds, k, lambda t: "train_ensemble averages these runs: if they found different "
        "alignments (swapped clusters, a flipped branch), prefer train_consensus, which keeps "
        "the majority's run."
    )
    return Ensemble(models)
