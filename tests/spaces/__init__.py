"""Tests of hrnas_automl.spaces."""
