"""The spaces drop into an existing NNI pipeline: NNI's own NasExperiment with its Random and
RegularizedEvolution strategies (sequential engine, in-process)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nni
import pytest
import torch
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.experiment import NasExperiment, NasExperimentConfig
import nni.nas.strategy as nni_strategy

from hrnas_automl.arch import choices_of
from hrnas_automl.spaces import DetNASSpace


def evaluate(model: torch.nn.Module) -> None:
    """A frozen DetNAS network must run; report how many blocks use a 7x7 op as its score."""
    out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    k7 = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (7, 7) and m.groups > 1 for m in model.modules())
    nni.report_final_result(float(k7))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [lambda: nni_strategy.Random(dedup=True),
                                      lambda: nni_strategy.RegularizedEvolution(population_size=3, sample_size=2)],
                         ids=["Random", "RegularizedEvolution"])
def test_nni_strategies_search_a_detnas_space(strategy) -> None:
    config = NasExperimentConfig("sequential", "raw")
    config.max_trial_number = 4
    exp = NasExperiment(DetNASSpace("small", num_classes=10), FunctionalEvaluator(evaluate), strategy(), config)
    try:
        exp.run()
        top = exp.export_top_models(top_k=4, formatter="dict")
    finally:
        exp.stop()
    assert len(top) >= 3
    labels = choices_of("detnas-small")
    assert all(set(arch) == set(labels) and all(arch[k] in labels[k] for k in arch) for arch in top)
    registry = Path(os.environ["HOME"]) / "nni-experiments" / ".experiment"  # isolated by conftest
    assert exp.id in json.loads(registry.read_text())
