"""Tests of hrnas_automl.tasks."""
