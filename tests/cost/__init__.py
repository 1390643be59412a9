"""Tests of hrnas_automl.cost."""
