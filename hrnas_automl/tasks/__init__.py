"""Tasks: train and evaluate a frozen network, report per-epoch and final metrics."""
