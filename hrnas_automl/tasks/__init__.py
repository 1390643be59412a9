"""Tasks: train and evaluate a frozen network, report per-epoch and final metrics."""
from hrnas_automl.tasks.classification import TrainSettings, evaluate_classifier, train_classifier

__all__ = ["TrainSettings", "train_classifier", "evaluate_classifier"]
