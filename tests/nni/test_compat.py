"""The NNI compatibility layer: NNI's model-space API imported without pytorch-lightning, NNI's names unchanged, the
strategy tag of a multi-strategy trial."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_spaces_import_nni_nas_without_pytorch_lightning() -> None:
    """Building a space imports NNI's model-space API only; NNI's shortcut names (nni.nas.evaluator.Lightning,
    nni.nas.nn.ModelSpace) still resolve afterwards, importing lightning then."""
    script = ("import sys\nfrom hrnas_automl.arch import resolve_space\nresolve_space('ranet').build()\n"
              "before = 'pytorch_lightning' in sys.modules\n"
              "from nni.nas.evaluator import Lightning\nfrom nni.nas.nn import ModelSpace\n"
              "print(before, 'pytorch_lightning' in sys.modules, Lightning.__name__, ModelSpace.__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "Lightning", "ModelSpace"]


def test_a_trial_takes_the_strategy_tag_out_of_its_parameters_and_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import nni

    from hrnas_automl.nni import compat

    monkeypatch.setattr(compat, "_tag", {})
    monkeypatch.setattr(nni, "get_next_parameter", lambda: {"s1_b0": "k3", compat.STRATEGY_KEY: "evolution"})
    reported: list[dict] = []
    monkeypatch.setattr(nni, "report_final_result", reported.append)
    assert compat.next_parameter() == {"s1_b0": "k3"}  # what the trial builds: no tag
    compat.report_final({"default": 0.5})
    assert reported == [{"default": 0.5, "strategy": "evolution"}]
    monkeypatch.setattr(compat, "_tag", {})
    monkeypatch.setattr(nni, "get_next_parameter", lambda: {"s1_b0": "k3"})
    assert compat.next_parameter() == {"s1_b0": "k3"}
    compat.report_final({"default": 0.5})
    assert reported[-1] == {"default": 0.5}  # an untagged trial reports what it measured only
