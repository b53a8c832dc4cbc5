"""Training: the adversarial training plan and the Lightning runner."""

from ._plan import CrossModalPlan
from ._trainer import TrainingInterrupted, default_max_epochs, run_training

__all__ = ["CrossModalPlan", "TrainingInterrupted", "default_max_epochs", "run_training"]
