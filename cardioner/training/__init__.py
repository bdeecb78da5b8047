"""Training: the Accelerate loop, optimiser groups and schedules, checkpoints."""

from cardioner.training.run import run_training
from cardioner.training.trainer import ModelTrainer, TrainResult

__all__ = ["ModelTrainer", "TrainResult", "run_training"]
