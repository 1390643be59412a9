"""Keypoint heatmaps: Gaussian encoding at 1/stride of the crop, argmax decoding with sub-pixel refinement.

Encoding puts an unnormalised Gaussian (peak 1, ``sigma`` heatmap pixels; HRNet uses sigma 2 at 64x48,
experiments/coco/hrnet/*.yaml) at the keypoint's exact sub-pixel position, pixel centres at ``j + 0.5``
(the continuous convention of :mod:`hrnas_automl.data.topdown`). Decoding takes the argmax and moves it a
quarter pixel towards the higher neighbour in x and in y, as HRNet's ``get_final_preds`` does
(HRNet/deep-high-resolution-net.pytorch, lib/core/inference.py: ``coords += np.sign(diff) * .25``).
"""
from __future__ import annotations

import torch

__all__ = ["encode_heatmaps", "decode_heatmaps"]


def encode_heatmaps(points: torch.Tensor, visible: torch.Tensor, size: tuple[int, int], *, stride: float = 4.0,
                    sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps ``(K, H, W)`` and target weights ``(K,)`` of keypoints ``points`` (K, 2) in crop pixels.

    A keypoint has weight 1 when it is labelled (``visible`` > 0: COCO's v=1 occluded and v=2 visible,
    as HRNet's ``target_weight``) and falls inside the heatmap; otherwise weight 0 and an empty map.
    """
    height, width = size
    centre = points.float() / stride  # heatmap coordinates
    inside = (centre[:, 0] >= 0) & (centre[:, 0] < width) & (centre[:, 1] >= 0) & (centre[:, 1] < height)
    weights = ((visible > 0) & inside).float()
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    dx2 = (xs[None, :] - centre[:, 0:1]) ** 2  # (K, W)
    dy2 = (ys[None, :] - centre[:, 1:2]) ** 2  # (K, H)
    maps = torch.exp(-(dy2[:, :, None] + dx2[:, None, :]) / (2 * sigma**2))
    return maps * weights[:, None, None], weights


def decode_heatmaps(heatmaps: torch.Tensor, *, stride: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints ``(N, K, 2)`` in crop pixels and their peak values ``(N, K)`` from heatmaps ``(N, K, H, W)``."""
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    maxvals, index = flat.max(dim=2)
    px, py = index % width, torch.div(index, width, rounding_mode="floor")
    coords = torch.stack([px, py], dim=-1).float()

    def neighbour(dx: int, dy: int) -> torch.Tensor:
        x = (px + dx).clamp(0, width - 1)
        y = (py + dy).clamp(0, height - 1)
        return flat.gather(2, (y * width + x).unsqueeze(2)).squeeze(2)

    # HRNet's quarter-pixel shift towards the higher neighbour, where both neighbours exist.
    has_x = (px > 0) & (px < width - 1)
    has_y = (py > 0) & (py < height - 1)
    coords[..., 0] += torch.where(has_x, 0.25 * torch.sign(neighbour(1, 0) - neighbour(-1, 0)), 0.0)
    coords[..., 1] += torch.where(has_y, 0.25 * torch.sign(neighbour(0, 1) - neighbour(0, -1)), 0.0)
    return (coords + 0.5) * stride, maxvals
