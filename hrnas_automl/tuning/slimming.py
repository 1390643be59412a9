"""``network-slimming``: a real, cheap tuning objective (seconds per trial) for trying ``hrnas-automl tune``.

Network slimming (Liu et al., ICCV 2017, https://arxiv.org/abs/1708.06519): a small CNN trains on the
generated Gabor data with an L1 penalty λ·Σ|γ| on its BatchNorm scales γ (initialised to 0.5, §4 of the
paper); λ ramps linearly from 0 over ``warmup`` epochs (as HR-NAS's ρ schedule, REFERENCE §1.3); after
every epoch channels with |γ| <= threshold are pruned for good and the metric (val accuracy) and the
MACs of the shrunk network (ptflops) are reported. Training is the package's trainer
(:func:`hrnas_automl.tasks.training.fit`) at a constant LR, with the penalty, the pruning and the report plugged
in. The HR-NAS search registers as ``fine-grained``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hrnas_automl.config import TrainSettings, train_with_defaults
from hrnas_automl.data.synthetic import build_synthetic
from hrnas_automl.tasks import training
from hrnas_automl.tuning.objectives import Report, TuneParams, TuneResult

__all__ = ["SlimNet", "DEFAULT_TRAIN", "SlimmingObjective", "tuning_objective"]

_GAMMA_INIT = 0.5  # Liu et al. 2017, §4: scaling factors initialised to 0.5
DEFAULT_TRAIN = TrainSettings(epochs=6, batch_size=32, lr=0.05, weight_decay=0.0)  # what train: leaves out


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


class _Shuffled:
    """In-memory images and labels in batches of a fresh seeded permutation per pass (the last batch may be short)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in torch.randperm(len(self.labels), generator=self.generator).split(self.batch_size):
            yield self.images[batch], self.labels[batch]


@dataclass(frozen=True)
class SlimmingObjective:
    """Trains and slims one :class:`SlimNet` per call; every field is an ``objective_args`` key (``train`` the
    training settings, its keys over :data:`DEFAULT_TRAIN`; ``threads`` torch's thread count)."""

    widths: tuple[int, ...] = (16, 32)
    num_classes: int = 4
    image_size: int = 16
    train_size: int = 512
    val_size: int = 128
    noise: float = 0.1
    train: TrainSettings = DEFAULT_TRAIN
    threads: int = 1

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")

    def macs(self, widths: Sequence[int]) -> float:
        """MACs (ptflops) of the network with these channel counts at this objective's input size."""
        from hrnas_automl.cost import count_cost

        return float(count_cost(SlimNet(widths, self.num_classes), (3, self.image_size, self.image_size)).macs)

    def __call__(self, params: TuneParams, report: Report) -> TuneResult:
        lam, threshold, warmup = float(params["lam"]), float(params["threshold"]), int(params["warmup"])
        seed = self.train.seed
        with training.torch_threads(self.threads):
            data = build_synthetic(num_classes=self.num_classes, image_size=self.image_size, seed=seed,
                                   train_size=self.train_size, val_size=self.val_size, noise=self.noise)
            torch.manual_seed(seed)
            net = SlimNet(self.widths, self.num_classes)
            for bn in net.norms:
                nn.init.constant_(bn.weight, _GAMMA_INIT)
            keep = [torch.ones(len(bn.weight), dtype=torch.bool) for bn in net.norms]
            weight = 0.0  # λ of the current epoch

            def start_epoch(epoch: int) -> None:
                nonlocal weight
                weight = lam * min(1.0, epoch / warmup) if warmup > 0 else lam

            def loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                task = nn.functional.cross_entropy(outputs, labels, label_smoothing=self.train.label_smoothing)
                return task + weight * sum(bn.weight.abs().sum() for bn in net.norms)

            def end_epoch(_epoch: int, _optimizer: torch.optim.Optimizer) -> None:
                nonlocal keep
                keep = self._prune(net, keep, threshold)

            metrics = training.fit(
                net, _Shuffled(data.train.images, data.train.labels, self.train.batch_size, seed), self.train,
                lambda epoch, m: report(epoch, m["accuracy"], m["macs"]), loss=loss, start_epoch=start_epoch,
                after_step=lambda _optimizer: self._apply(net, keep), end_epoch=end_epoch, schedule=None,
                seed_torch=False,
                evaluate=lambda _net: {"accuracy": self._accuracy(net, data.val.images, data.val.labels),
                                       "macs": self.macs([int(k.sum()) for k in keep])})
            return TuneResult(metrics["accuracy"], metrics["macs"])

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
    """The registered factory: ``objective_args`` become :class:`SlimmingObjective` fields (``train`` a mapping of
    :class:`~hrnas_automl.config.TrainSettings` keys over :data:`DEFAULT_TRAIN`)."""
    if "widths" in options:
        options["widths"] = tuple(options["widths"])  # type: ignore[arg-type]
    if isinstance(options.get("train"), Mapping):
        options["train"] = TrainSettings(**train_with_defaults(options["train"], DEFAULT_TRAIN))
    return SlimmingObjective(**options)  # type: ignore[arg-type]
