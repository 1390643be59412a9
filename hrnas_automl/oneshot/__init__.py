"""DetNAS-style one-shot search: path-wise supernet training on detection, then evolution on the shared weights.

``config``: the two YAML files (supernet training, search); ``supernet``: the weight-sharing detector, its
backbone MACs table, path sampling and resumable training; ``search``: BatchNorm re-statistics, candidate
fitness (supernet mAP) and the resumable search loop.
"""
