"""Tests of hrnas_automl.tuning."""
