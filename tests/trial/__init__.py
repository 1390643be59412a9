"""Tests of hrnas_automl.trial."""
