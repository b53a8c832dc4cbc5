"""End-to-end workflows over the public API: evaluation on paired or labelled cells, the
A549 demo, the consensus or the ensemble of several seeds, and resuming a stopped training."""

from ._consensus import ConsensusRun, train_consensus, train_ensemble
from ._demo import format_table, run_demo
from ._evaluate import comparison_space, evaluate_paired, evaluate_unpaired
from ._resume import resume_training

__all__ = [
    "ConsensusRun",
    "comparison_space",
    "evaluate_paired",
    "evaluate_unpaired",
    "format_table",
    "resume_training",
    "run_demo",
    "train_consensus",
    "train_ensemble",
]
