"""End-to-end workflows over the public API: evaluation on paired or labelled cells, the
A549 demo and the consensus or the ensemble of several seeds."""

from ._consensus import ConsensusRun, train_consensus, train_ensemble
from ._demo import format_table, run_demo
from ._evaluate import comparison_space, evaluate_paired, evaluate_unpaired

__all__ = [
    "ConsensusRun",
    "comparison_space",
    "evaluate_paired",
    "evaluate_unpaired",
    "format_table",
    "run_demo",
    "train_consensus",
    "train_ensemble",
]
