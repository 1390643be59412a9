"""Tests of hrnas_automl.export: ONNX conversion, the inference form, every space's export, the sources, and the
NNI-free loader."""
