"""``network-slimming``: a real, cheap tuning objective (seconds per trial) for trying ``hrnas-automl tune``.

Network slimming (Liu et al., ICCV 2017, https://arxiv.org/abs/1708.06519): a small CNN trains on the
generated Gabor data with an L1 penalty λ·Σ|γ| on its BatchNorm scales γ (initialised to 0.5, §4 of the
paper); λ ramps linearly from 0 over ``warmup`` epochs (as HR-NAS's ρ schedule, REFERENCE §1.3); after
every epoch channels with |γ| <= threshold are pruned for good and the metric (val accuracy) and the
MACs of the shrunk network (ptflops) are reported. The HR-NAS search registers as ``fine-grained``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hrnas_automl.data.synthetic import build_synthetic
from hrnas_automl.tuning.objectives import Report, TuneParams, TuneResult

__all__ = ["SlimNet", "SlimmingObjective", "tuning_objective"]

_GAMMA_INIT = 0.5  # Liu et al. 2017, §4: scaling factors initialised to 0.5


class SlimNet(nn.Module):
    """conv3x3-BN-ReLU (stride 1) -> conv3x3-BN-ReLU (stride 2) -> average pool -> linear."""

    def __init__(self, widths: Sequence[int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            prev = layers[-3].out_channels if layers else in_channels
            layers += [nn.Conv2d(prev, width, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(widths[-1], num_classes)

    @property
    def norms(self) -> list[nn.BatchNorm2d]:
        return [m for m in self.features if isinstance(m, nn.BatchNorm2d)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


@dataclass(frozen=True)
class SlimmingObjective:
    """Trains and slims one :class:`SlimNet` per call; every field is an ``objective_args`` key."""

    widths: tuple[int, ...] = (16, 32)
    num_classes: int = 4
    image_size: int = 16
    train_size: int = 512
    val_size: int = 128
    noise: float = 0.1
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.05
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")

    def macs(self, widths: Sequence[int]) -> float:
        """MACs (ptflops) of the network with these channel counts at this objective's input size."""
        from hrnas_automl.cost import count_cost

        return float(count_cost(SlimNet(widths, self.num_classes), (3, self.image_size, self.image_size)).macs)

    def __call__(self, params: TuneParams, report: Report) -> TuneResult:
        lam, threshold, warmup = float(params["lam"]), float(params["threshold"]), int(params["warmup"])
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            data = build_synthetic(num_classes=self.num_classes, image_size=self.image_size, seed=self.seed,
                                   train_size=self.train_size, val_size=self.val_size, noise=self.noise)
            torch.manual_seed(self.seed)
            net = SlimNet(self.widths, self.num_classes)
            for bn in net.norms:
                nn.init.constant_(bn.weight, _GAMMA_INIT)
            keep = [torch.ones(len(bn.weight), dtype=torch.bool) for bn in net.norms]
            images, labels = data.train.images, data.train.labels
            optimizer = torch.optim.SGD(net.parameters(), lr=self.lr, momentum=0.9)
            generator = torch.Generator().manual_seed(self.seed)
            result = TuneResult(0.0, 0.0)
            for epoch in range(self.epochs):
                weight = lam * min(1.0, epoch / warmup) if warmup > 0 else lam
                net.train()
                for batch in torch.randperm(len(labels), generator=generator).split(self.batch_size):
                    loss = nn.functional.cross_entropy(net(images[batch]), labels[batch])
                    loss = loss + weight * sum(bn.weight.abs().sum() for bn in net.norms)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    self._apply(net, keep)
                keep = self._prune(net, keep, threshold)
                result = TuneResult(self._accuracy(net, data.val.images, data.val.labels),
                                    self.macs([int(k.sum()) for k in keep]))
                report(epoch, result.metric, result.macs)
            return result
        finally:
            torch.set_num_threads(previous_threads)

    @staticmethod
    @torch.no_grad()
    def _apply(net: SlimNet, keep: list[torch.Tensor]) -> None:
        """A pruned channel outputs exactly 0 (γ = β = 0 before ReLU): the shrunk network computes the same."""
        for bn, k in zip(net.norms, keep):
            bn.weight[~k] = 0
            bn.bias[~k] = 0

    def _prune(self, net: SlimNet, keep: list[torch.Tensor], threshold: float) -> list[torch.Tensor]:
        """Drop channels with |γ| <= threshold for good; each layer keeps at least its largest |γ|."""
        new = []
        for bn, k in zip(net.norms, keep):
            gamma = bn.weight.detach().abs()
            alive = k & (gamma > threshold)
            if not alive.any():
                alive[int(torch.where(k, gamma, -1).argmax())] = True
            new.append(alive)
        self._apply(net, new)
        return new

    @staticmethod
    @torch.no_grad()
    def _accuracy(net: SlimNet, images: torch.Tensor, labels: torch.Tensor) -> float:
        net.eval()
        return float((net(images).argmax(1) == labels).float().mean())


def tuning_objective(**options: object) -> SlimmingObjective:
    """The registered factory: ``objective_args`` become :class:`SlimmingObjective` fields."""
    if "widths" in options:
        options["widths"] = tuple(options["widths"])  # type: ignore[arg-type]
    return SlimmingObjective(**options)  # type: ignore[arg-type]
