"""Training: the adversarial training plan and the Lightning runner."""

from .._interrupts import Terminated
from ._plan import CrossModalPlan
from ._trainer import TrainingDiverged, TrainingInterrupted, default_max_epochs, run_training

__all__ = [
    "CrossModalPlan",
    "Terminated",
    "TrainingDiverged",
    "TrainingInterrupted",
    "default_max_epochs",
    "run_training",
]
