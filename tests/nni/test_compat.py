"""The NNI compatibility layer: NNI's model-space API imported without pytorch-lightning, NNI's names unchanged."""
from __future__ import annotations

import subprocess
import sys


def test_the_spaces_import_nni_nas_without_pytorch_lightning() -> None:
    """Building a space imports NNI's model-space API only; NNI's shortcut names (nni.nas.evaluator.Lightning,
    nni.nas.nn.ModelSpace) still resolve afterwards, importing lightning then."""
    script = ("import sys\nfrom hrnas_automl.arch import resolve_space\nresolve_space('ranet').build()\n"
              "before = 'pytorch_lightning' in sys.modules\n"
              "from nni.nas.evaluator import Lightning\nfrom nni.nas.nn import ModelSpace\n"
              "print(before, 'pytorch_lightning' in sys.modules, Lightning.__name__, ModelSpace.__name__)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "Lightning", "ModelSpace"]
