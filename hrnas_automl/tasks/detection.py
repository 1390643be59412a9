"""Object detection on C2-C5 backbones: FPN + an anchor-free one-stage FCOS head, COCO mAP via pycocotools.

FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019,
https://arxiv.org/abs/1904.01355): every feature location inside a box (centre sampling, radius 1.5 strides)
whose largest box distance falls in its level's range regresses ``(l, t, r, b)``; losses are sigmoid focal loss
(alpha 0.25, gamma 2) for classes, GIoU for boxes (weighted by the centerness target) and BCE for centerness
(§3.1-3.3). Level ranges follow FCOS's ``[0, 64], [64, 128], ...`` for stride 8, i.e. ``(4s, 8s]`` per stride
``s`` (first level from 0, last level unbounded), so the C2 level (stride 4) takes boxes up to 32 px.
The detector wraps any backbone whose forward returns a list of feature maps (a space's ``backbone`` head).
"""
from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hrnas_automl.data.coco_detection import CocoDetection, DetectionData
from hrnas_automl.runtime.device import device_of
from hrnas_automl.tasks import EpochCallback, Task, training
from hrnas_automl.config import TrainSettings
from hrnas_automl.data.loading import IN_PROCESS, make_loader

__all__ = ["FPN", "FCOSHead", "Detector", "fcos_loss", "detect", "evaluate_map", "DetectionTask", "TASK"]

_FOCAL_ALPHA, _FOCAL_GAMMA = 0.25, 2.0  # FCOS §3.1 (from RetinaNet)
_CENTER_RADIUS = 1.5  # centre sampling radius in strides (FCOS improvements, "center sampling")
_PRIOR = 0.01  # classification bias prior (RetinaNet §4.1)


class FPN(nn.Module):
    """Feature pyramid: 1x1 laterals, top-down nearest upsampling and sum, 3x3 output convs."""

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(x) - 2, -1, -1):
            x[i] = x[i] + F.interpolate(x[i + 1], size=x[i].shape[-2:], mode="nearest")
        return [out(f) for out, f in zip(self.output, x)]


def _tower(channels: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(math.gcd(32, channels), channels),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Shared FCOS head: class logits, ``exp(scale * x) * stride`` box distances and centerness per level."""

    def __init__(self, channels: int, num_classes: int, num_levels: int, depth: int = 2) -> None:
        super().__init__()
        self.cls_tower, self.box_tower = _tower(channels, depth), _tower(channels, depth)
        self.cls = nn.Conv2d(channels, num_classes, 3, padding=1)
        self.box = nn.Conv2d(channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(channels, 1, 3, padding=1)  # on the box tower (FCOS improvements)
        self.scales = nn.Parameter(torch.ones(num_levels))
        for conv in (self.cls, self.box, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - _PRIOR) / _PRIOR))

    def forward(self, feats: Sequence[torch.Tensor], strides: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Flattened over levels: logits (B, N, K), distances (B, N, 4) in pixels, centerness logits (B, N)."""
        logits, boxes, ctr = [], [], []
        for i, (f, s) in enumerate(zip(feats, strides)):
            c, b = self.cls_tower(f), self.box_tower(f)
            logits.append(self.cls(c).flatten(2).transpose(1, 2))
            dist = torch.exp((self.scales[i] * self.box(b)).clamp(max=10.0)) * s
            boxes.append(dist.flatten(2).transpose(1, 2))
            ctr.append(self.centerness(b).flatten(1))
        return torch.cat(logits, 1), torch.cat(boxes, 1), torch.cat(ctr, 1)


class Detector(nn.Module):
    """Backbone (list of feature maps) -> FPN -> FCOS head. ``forward`` returns the raw head outputs
    plus the locations and their level ranges; :func:`fcos_loss` and :func:`detect` consume them."""

    def __init__(self, backbone: nn.Module, num_classes: int, input_shape: tuple[int, int, int], *,
                 fpn_channels: int = 64, head_depth: int = 2) -> None:
        super().__init__()
        self.backbone, self.num_classes = backbone, num_classes
        was_training = backbone.training
        with torch.no_grad():
            feats = backbone.eval()(torch.zeros(1, *input_shape))
        backbone.train(was_training)
        if not isinstance(feats, (list, tuple)):
            raise ValueError("the detector needs a backbone that returns a list of feature maps; build the space "
                             "with head='backbone'")
        self.strides = [input_shape[1] // f.shape[-2] for f in feats]
        self.fpn = FPN([f.shape[1] for f in feats], fpn_channels)
        self.head = FCOSHead(fpn_channels, num_classes, len(feats), head_depth)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.fpn(self.backbone(images))
        logits, dist, ctr = self.head(feats, self.strides)
        points, ranges = [], []
        for i, (f, s) in enumerate(zip(feats, self.strides)):
            h, w = f.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, device=f.device), torch.arange(w, device=f.device), indexing="ij")
            pts = torch.stack((xs.flatten(), ys.flatten()), 1).float() * s + s // 2
            lo = 0.0 if i == 0 else 4.0 * s
            hi = math.inf if i == len(feats) - 1 else 8.0 * s
            points.append(pts)
            ranges.append(torch.tensor([[lo, hi, s]], device=f.device).expand(len(pts), 3))
        return {"logits": logits, "dist": dist, "centerness": ctr, "points": torch.cat(points),
                "ranges": torch.cat(ranges)}


def _targets(points: torch.Tensor, ranges: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class index (-1 = background) and (l, t, r, b) target of every location for one image."""
    gt = target[target[:, 0] >= 0]
    n = len(points)
    if len(gt) == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device), points.new_zeros(n, 4)
    x, y = points[:, 0:1], points[:, 1:2]
    box = gt[:, 1:]
    ltrb = torch.stack((x - box[:, 0], y - box[:, 1], box[:, 2] - x, box[:, 3] - y), dim=2)  # (N, G, 4)
    cx, cy = (box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2
    radius = ranges[:, 2:3] * _CENTER_RADIUS
    in_center = ((x - cx).abs() < radius) & ((y - cy).abs() < radius)
    inside = (ltrb.min(dim=2).values > 0) & in_center
    reach = ltrb.max(dim=2).values
    in_range = (reach > ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
    area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).expand(n, -1)
    area = torch.where(inside & in_range, area, torch.full_like(area, math.inf))
    best_area, best = area.min(dim=1)
    labels = gt[best, 0].long()
    labels[best_area == math.inf] = -1
    return labels, ltrb[torch.arange(n), best]


def _giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Generalized IoU loss between (l, t, r, b) distances sharing their anchor point."""
    pa = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    ta = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    inter = ((torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 2], target[:, 2]))
             * (torch.min(pred[:, 1], target[:, 1]) + torch.min(pred[:, 3], target[:, 3])))
    enclose = ((torch.max(pred[:, 0], target[:, 0]) + torch.max(pred[:, 2], target[:, 2]))
               * (torch.max(pred[:, 1], target[:, 1]) + torch.max(pred[:, 3], target[:, 3])))
    union = pa + ta - inter
    giou = inter / union.clamp(min=1e-6) - (enclose - union) / enclose.clamp(min=1e-6)
    return 1 - giou


def fcos_loss(outputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Focal + GIoU + centerness loss of a batch; ``targets`` are the datasets' padded ``(B, M, 5)`` rows."""
    labels, boxes = zip(*(_targets(outputs["points"], outputs["ranges"], t) for t in targets))
    labels_t, boxes_t = torch.stack(labels), torch.stack(boxes)
    logits = outputs["logits"]
    onehot = torch.zeros_like(logits)
    pos = labels_t >= 0
    onehot[pos, labels_t[pos]] = 1.0
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    alpha = _FOCAL_ALPHA * onehot + (1 - _FOCAL_ALPHA) * (1 - onehot)
    num_pos = max(1.0, float(pos.sum()))
    cls_loss = (alpha * ce * (1 - p_t) ** _FOCAL_GAMMA).sum() / num_pos
    if not pos.any():
        return cls_loss + 0 * (outputs["dist"].sum() + outputs["centerness"].sum())
    t = boxes_t[pos]
    ctr_target = torch.sqrt((torch.min(t[:, 0], t[:, 2]) / torch.max(t[:, 0], t[:, 2]))
                            * (torch.min(t[:, 1], t[:, 3]) / torch.max(t[:, 1], t[:, 3])))
    box_loss = (_giou_loss(outputs["dist"][pos], t) * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
    ctr_loss = F.binary_cross_entropy_with_logits(outputs["centerness"][pos], ctr_target, reduction="sum") / num_pos
    return cls_loss + box_loss + ctr_loss


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float, max_keep: int) -> torch.Tensor:
    """Greedy non-maximum suppression over a precomputed IoU matrix; at most ``max_keep`` indices, best first."""
    order = scores.argsort(descending=True)
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter = (torch.min(b[:, None, 2:], b[None, :, 2:]) - torch.max(b[:, None, :2], b[None, :, :2])).clamp(min=0).prod(2)
    overlap = (inter / (area[:, None] + area[None, :] - inter).clamp(min=1e-6) > iou).numpy()
    keep, remaining = [], np.arange(len(b))
    while remaining.size and len(keep) < max_keep:
        i, remaining = remaining[0], remaining[1:]
        keep.append(int(i))
        remaining = remaining[~overlap[i, remaining]]
    return order[torch.tensor(keep, dtype=torch.long)]


@torch.no_grad()
def detect(outputs: Mapping[str, torch.Tensor], *, score_thresh: float = 0.05, nms_iou: float = 0.6,
           max_per_image: int = 100, pre_nms: int = 1000) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image: boxes (x1, y1, x2, y2), scores sqrt(class x centerness) and class indices after class-wise NMS."""
    results = []
    scores_all = torch.sqrt(torch.sigmoid(outputs["logits"]) * torch.sigmoid(outputs["centerness"])[..., None])
    pts = outputs["points"]
    for scores, dist in zip(scores_all, outputs["dist"]):
        flat = scores.flatten()
        cand = (flat > score_thresh).nonzero().squeeze(1)
        cand = cand[flat[cand].argsort(descending=True)[:pre_nms]]
        loc, cls = cand // scores.shape[1], cand % scores.shape[1]
        d = dist[loc]
        boxes = torch.cat((pts[loc] - d[:, :2], pts[loc] + d[:, 2:]), 1)
        offset = cls.to(boxes.dtype)[:, None] * (boxes.max() + 1 if len(boxes) else 0)
        keep = _nms(boxes + offset, flat[cand], nms_iou, max_per_image)
        results.append((boxes[keep], flat[cand][keep], cls[keep]))
    return results


@torch.no_grad()
def evaluate_map(model: nn.Module, dataset: CocoDetection, *, batch_size: int = 16,
                 loading: TrainSettings = IN_PROCESS) -> dict[str, float]:
    """COCO bbox ``map`` (AP@[.5:.95]) and ``map50`` of ``model`` (eval mode) on ``dataset`` (loaded as ``loading``
    says), by pycocotools COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    model.eval()
    device = device_of(model)
    detections: list[dict[str, Any]] = []
    index = 0
    for images, _ in make_loader(dataset, loading, batch_size=batch_size):
        for boxes, scores, classes in detect(model(images.to(device))):
            h, w = dataset.sizes[index]
            scale = boxes.new_tensor([w, h, w, h]) / dataset.image_size
            for (x1, y1, x2, y2), score, cls in zip((boxes * scale).tolist(), scores.tolist(), classes.tolist()):
                detections.append({"image_id": dataset.image_ids[index], "category_id": dataset.category_ids[cls],
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
            index += 1
    if not detections:
        return {"map": 0.0, "map50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(dataset.ann_file))
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": max(0.0, float(ev.stats[0])), "map50": max(0.0, float(ev.stats[1]))}


def check_detector_options(options: Mapping[str, Any]) -> dict[str, int]:
    """Validate the detector's ``fpn_channels`` / ``head_depth`` options (one-line ``ValueError``)."""
    allowed = {"fpn_channels": 64, "head_depth": 2}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown detector option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    out = {**allowed, **options}
    for key, value in out.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"detector option {key} must be an int >= 1, got {value!r}")
    return out


class DetectionTask(Task):
    """COCO-format detection (``shapes`` generated data or a real ``coco`` download); ``default`` = bbox mAP.

    ``task_args``: ``fpn_channels`` (64) and ``head_depth`` (2) of the FPN + FCOS detector. The trial's
    ``macs``, ``params`` and ``latency_ms`` are the whole detector's (:meth:`deployed`); the backbone's (the network
    the search chooses, whose MACs DetNAS constrains) are ``backbone_macs``, ``backbone_params`` and
    ``backbone_latency_ms``.
    """

    name = "detection"
    head = "backbone"
    metric = "map"
    def model_args(self, data: DetectionData) -> dict[str, Any]:
        return {"in_channels": data.input_shape[0]}

    def check_options(self, options: Mapping[str, Any]) -> None:
        check_detector_options(options)

    def deployed(self, model: nn.Module, data: DetectionData, options: Mapping[str, Any]) -> Detector:
        """The detector around the backbone ``model``: FPN + FCOS head built with ``options`` (fresh weights)."""
        return Detector(model, data.num_classes, data.input_shape, **check_detector_options(options))

    def fit(self, model: nn.Module, data: DetectionData, settings: TrainSettings, options: Mapping[str, Any],
            on_epoch: EpochCallback) -> dict[str, Any]:
        detector = self.deployed(model, data, options)
        return training.fit(detector, training.train_loader(data.train, settings), settings, on_epoch, loss=fcos_loss,
                            evaluate=lambda m: evaluate_map(m, data.val, batch_size=settings.batch_size,
                                                            loading=settings))


TASK = DetectionTask()
