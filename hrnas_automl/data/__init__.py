"""Datasets the tasks train on: generated, bundled (scikit-learn digits) and a user's image folder."""
