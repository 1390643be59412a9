"""Tests of hrnas_automl.strategies."""
