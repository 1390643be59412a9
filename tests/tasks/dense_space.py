"""A tiny NNI model space with the dense heads, registered by the dense-task tests (not a shipped space)."""
from __future__ import annotations

from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from hrnas_automl.registry import SpaceSpec


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyDenseSpace(ModelSpace):
    """Stem to 1/4, one searchable 3x3/5x5 block, a 1x1 head: (N, classes or keypoints, H/4, W/4)."""

    def __init__(self, *, head: str = "segmentation", num_classes: int = 4, num_keypoints: int = 17,
                 in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        if head not in ("segmentation", "keypoints"):
            raise ValueError(f"head must be 'segmentation' or 'keypoints', got {head!r}")
        self.stem = nn.Sequential(_conv(in_channels, width, 3, 2), _conv(width, width, 3, 2))
        self.block = LayerChoice({"k3": _conv(width, width, 3), "k5": _conv(width, width, 5)}, label="block")
        self.head = nn.Conv2d(width, num_classes if head == "segmentation" else num_keypoints, 1)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


SPEC = SpaceSpec(name="tiny-dense", factory=TinyDenseSpace, description="test-only dense space",
                 default_input=(3, 64, 64), heads=("segmentation", "keypoints"))
