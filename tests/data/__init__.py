"""Tests of hrnas_automl.data."""
