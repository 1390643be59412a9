"""Tests of hrnas_automl.oneshot."""
