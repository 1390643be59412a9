"""Top-down keypoint geometry: the affine crop and the heatmap codec round-trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hrnas_automl.data.heatmaps import decode_heatmaps, encode_heatmaps
from hrnas_automl.data.topdown import (BOX_PADDING, apply_affine, box_to_center_size, crop_image, crop_matrix,
                                       invert_affine)


def test_box_is_fixed_to_the_aspect_ratio_and_padded() -> None:
    center, size = box_to_center_size([10, 20, 30, 100], aspect=0.75)  # too narrow: widen to 75
    assert center.tolist() == [25.0, 70.0]
    assert size.tolist() == pytest.approx([75 * BOX_PADDING, 100 * BOX_PADDING])
    _, size = box_to_center_size([0, 0, 90, 60], aspect=0.75)  # too wide: heighten to 120
    assert size.tolist() == pytest.approx([90 * BOX_PADDING, 120 * BOX_PADDING])


def test_affine_points_round_trip_and_the_box_fills_the_crop() -> None:
    center, size = box_to_center_size([40, 30, 60, 80], aspect=48 / 64)
    matrix = crop_matrix(center, size, (64, 48))
    corners = np.array([center - size / 2, center + size / 2])
    assert apply_affine(matrix, corners) == pytest.approx(np.array([[0.0, 0.0], [48.0, 64.0]]))
    points = np.random.default_rng(0).uniform(0, 200, (10, 2))
    assert apply_affine(invert_affine(matrix), apply_affine(matrix, points)) == pytest.approx(points)


def test_cropped_image_puts_a_dot_where_the_matrix_maps_it() -> None:
    pixels = np.zeros((120, 160, 3), np.uint8)
    pixels[70:74, 90:94] = 255  # a 4x4 dot centred at (92, 72) in continuous coordinates
    center, size = box_to_center_size([60, 40, 60, 60], aspect=1.0)
    matrix = crop_matrix(center, size, (64, 64))
    crop = np.asarray(crop_image(Image.fromarray(pixels), matrix, (64, 64)), np.float64)[..., 0]
    ys, xs = np.mgrid[0:64, 0:64] + 0.5
    found = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()  # intensity centroid
    assert found == pytest.approx(apply_affine(matrix, np.array([92.0, 72.0])), abs=0.1)


def test_heatmap_encode_decode_round_trip_within_a_fraction_of_a_heatmap_pixel() -> None:
    rng = np.random.default_rng(0)
    points = torch.from_numpy(rng.uniform(8, 56, (17, 2)) * [0.75, 1.0])  # inside a 48x64 crop, off the border
    heatmaps, weights = encode_heatmaps(points, torch.full((17,), 2.0), (16, 12), stride=4, sigma=2.0)
    decoded, maxvals = decode_heatmaps(heatmaps[None], stride=4)
    error = (decoded[0] - points.float()).abs() / 4  # in heatmap pixels
    assert error.max() <= 0.25 + 1e-6  # argmax is within 0.5; the quarter shift halves that
    assert weights.tolist() == [1.0] * 17 and bool((maxvals > 0.8).all())


def test_quarter_offset_moves_towards_the_higher_neighbour() -> None:
    heatmaps = torch.zeros(1, 1, 5, 5)
    heatmaps[0, 0, 2, 2], heatmaps[0, 0, 2, 3], heatmaps[0, 0, 1, 2] = 1.0, 0.5, 0.2
    decoded, _ = decode_heatmaps(heatmaps, stride=1)
    assert decoded[0, 0].tolist() == [2.75, 2.25]  # pixel (2, 2) centre 2.5, +0.25 in x, -0.25 in y


def test_unlabelled_and_outside_keypoints_get_zero_weight_and_empty_maps() -> None:
    points = torch.tensor([[10.0, 10.0], [10.0, 10.0], [100.0, 10.0]])
    heatmaps, weights = encode_heatmaps(points, torch.tensor([1.0, 0.0, 2.0]), (16, 12), stride=4)
    assert weights.tolist() == [1.0, 0.0, 0.0]  # occluded but labelled counts; v=0 and outside do not
    assert heatmaps[0].max() > 0.5 and heatmaps[1:].abs().sum() == 0
