"""Training on encrypted data: the integer SGD plan, its composable circuit, and the
``fit_encrypted`` behaviour of the SGD estimators."""

from .plan import TrainingPlan

__all__ = ["TrainingPlan"]
