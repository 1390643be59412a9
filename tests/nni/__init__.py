"""Tests of hrnas_automl.nni."""
