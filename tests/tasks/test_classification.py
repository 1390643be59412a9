"""The classification task: a tiny CNN learns the synthetic set through the trainer, runs are reproducible,
settings are checked."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hrnas_automl.data import build_classification_data
from hrnas_automl.tasks.classification import TASK, evaluate_classifier
from hrnas_automl.config import TrainSettings


def fit_classifier(model: nn.Module, data, settings: TrainSettings, on_epoch=lambda epoch, metrics: None) -> dict:
    return TASK.fit(model, data, settings, {}, on_epoch)


def tiny_cnn(in_channels: int = 3, num_classes: int = 10, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


SETTINGS = TrainSettings(epochs=3, batch_size=32, lr=0.1, seed=0)


@pytest.fixture(scope="module")
def synthetic():
    return build_classification_data("synthetic", num_classes=10, image_size=32, train_size=512, val_size=256)


@pytest.fixture(scope="module")
def trained(synthetic):
    """One 3-epoch run: (model, final metrics, per-epoch calls)."""
    calls: list[tuple[int, dict[str, float]]] = []
    model = tiny_cnn()
    final = fit_classifier(model, synthetic, SETTINGS, on_epoch=lambda i, m: calls.append((i, m)))
    return model, final, calls


def test_tiny_cnn_learns_synthetic_well_above_chance(trained):
    _, final, calls = trained
    # Chance is 0.10. Measured with this recipe: 0.98 (seed 0), 0.65-0.80 for data/init seeds 1-4.
    assert final["accuracy"] >= 0.4
    assert calls[-1][1]["train_loss"] < calls[0][1]["train_loss"]
    assert final["loss"] < 2.0  # untrained: ~ln(10) = 2.30


def test_metrics_are_well_formed(trained):
    _, final, _ = trained
    assert set(final) == {"accuracy", "loss", "train_loss"}
    assert 0.0 <= final["accuracy"] <= 1.0
    assert all(isinstance(v, float) for v in final.values())


def test_on_epoch_called_once_per_epoch_in_order(trained):
    _, final, calls = trained
    assert [i for i, _ in calls] == [0, 1, 2]
    assert calls[-1][1] == final


def test_returned_accuracy_matches_a_fresh_evaluation(trained, synthetic):
    model, final, _ = trained
    again = evaluate_classifier(model, synthetic.val, batch_size=100)
    assert again["accuracy"] == pytest.approx(final["accuracy"])
    assert again["loss"] == pytest.approx(final["loss"], rel=1e-5)
    assert not model.training


def test_same_seed_same_init_identical_results(synthetic):
    settings = TrainSettings(epochs=1, batch_size=64, lr=0.1, seed=7)
    first = fit_classifier(tiny_cnn(seed=1), synthetic, settings)
    second = fit_classifier(tiny_cnn(seed=1), synthetic, settings)
    assert first == second
    other_seed = fit_classifier(tiny_cnn(seed=1), synthetic, TrainSettings(epochs=1, batch_size=64, lr=0.1, seed=8))
    assert other_seed["train_loss"] != first["train_loss"]  # the seed reaches the shuffling


def test_evaluate_counts_correct_predictions():
    class Fixed(nn.Module):
        """Predicts class 1 for every image."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 1.0]).expand(x.shape[0], 2)

    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([1, 1, 1, 0]))
    metrics = evaluate_classifier(Fixed(), dataset, batch_size=3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    expected = nn.functional.cross_entropy(torch.tensor([[0.0, 1.0]] * 4), torch.tensor([1, 1, 1, 0]))
    assert metrics["loss"] == pytest.approx(expected.item())


def test_evaluate_rejects_an_empty_dataset():
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64))
    with pytest.raises(ValueError, match="cannot evaluate on an empty dataset"):
        evaluate_classifier(nn.Identity(), empty)


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("steps", 0), ("batch_size", 0), ("lr", 0.0), ("lr", -0.1), ("momentum", -1.0),
    ("weight_decay", -1e-4), ("label_smoothing", 1.0),
])
def test_bad_settings_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"train\.{field} must be"):
        TrainSettings(**{field: value})


def test_a_last_batch_of_one_image_is_dropped():
    # 65 images in batches of 64 would leave a batch of one, which BatchNorm1d rejects in train mode.
    data = build_classification_data("synthetic", image_size=8, train_size=65, val_size=8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    metrics = fit_classifier(model, data, TrainSettings(epochs=1, batch_size=64))
    assert 0.0 <= metrics["accuracy"] <= 1.0
