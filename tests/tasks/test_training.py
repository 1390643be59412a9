"""The one trainer: run length in epochs or steps, the hooks and their order, a replaced optimizer keeping the
schedule, the schedules' values, seeding, BN recalibration and the thread-count context."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from hrnas_automl.config import TrainSettings
from hrnas_automl.tasks import training


def data(n: int = 40) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


def net(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 3))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_epochs_or_steps_set_the_run_length_and_the_hooks_run_in_order() -> None:
    events: list[tuple] = []
    settings = TrainSettings(epochs=9, steps=7, batch_size=10)  # 4 batches per epoch: steps win, 2 epochs
    model = net()
    final = training.fit(model, training.train_loader(data(), settings), settings,
                         lambda epoch, m: events.append(("on_epoch", epoch, sorted(m))),
                         start_epoch=lambda epoch: events.append(("start", epoch)),
                         after_step=lambda opt: events.append(("step", opt.param_groups[0]["lr"])),
                         end_epoch=lambda epoch, opt: events.append(("end", epoch)),
                         evaluate=lambda m: {"val": 1.0})
    names = [e[0] for e in events]
    assert names == ["start"] + ["step"] * 4 + ["end", "on_epoch", "start"] + ["step"] * 3 + ["end", "on_epoch"]
    assert events[-1] == ("on_epoch", 1, ["train_loss", "val"]) and set(final) == {"train_loss", "val"}
    lrs = [e[1] for e in events if e[0] == "step"]  # after_step sees the LR of its own step: cosine over 7 steps
    assert lrs[0] == settings.lr and lrs == sorted(lrs, reverse=True) and 0 < lrs[-1] < settings.lr / 10
    assert training.run_length(TrainSettings(epochs=3), 4) == (3, 12)
    assert training.run_length(TrainSettings(epochs=3, steps=5), 4) == (2, 5)
    with pytest.raises(ValueError, match="no batch"):
        training.run_length(TrainSettings(), 0)


@pytest.mark.parametrize("schedule", [training.cosine, training.cosine_closed_form])
def test_an_optimizer_replaced_after_an_epoch_keeps_the_schedule_and_the_momentum(schedule) -> None:
    settings = TrainSettings(epochs=3, batch_size=8, lr=0.1)
    plain, swapped = net(), net()
    training.fit(plain, training.train_loader(data(), settings), settings, schedule=schedule)
    replaced: list[torch.optim.Optimizer] = []

    def rebuild(_epoch: int, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        replaced.append(training.sgd(swapped, settings, state=optimizer.state))
        return replaced[-1]

    training.fit(swapped, training.train_loader(data(), settings), settings, end_epoch=rebuild, schedule=schedule)
    assert len(replaced) == 3 and all(torch.equal(a, b) for a, b in zip(weights(plain), weights(swapped)))


def test_the_schedules_values() -> None:
    param = nn.Parameter(torch.zeros(1))
    for schedule, expected in ((training.cosine_closed_form, lambda s: 0.5 * (1 + math.cos(math.pi * s / 10))),
                               (training.linear_decay, lambda s: max(0.0, 1 - s / 10)),
                               (training.cosine, lambda s: 0.5 * (1 + math.cos(math.pi * s / 10)))):
        optimizer = torch.optim.SGD([param], lr=0.2)
        scheduler = schedule(optimizer, 10)
        for step in range(11):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(0.2 * expected(step), abs=1e-12)
            optimizer.step()
            scheduler.step()


def test_sgd_spares_1d_parameters_from_weight_decay_on_request() -> None:
    settings = TrainSettings(weight_decay=1e-3, momentum=0.8)
    groups = training.sgd(net(), settings, decay_1d=False).param_groups
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0] and all(g["momentum"] == 0.8 for g in groups)
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])


def test_seeding_makes_a_run_independent_of_the_callers_stream_unless_told_otherwise() -> None:
    settings = TrainSettings(epochs=1, batch_size=8)

    def run(stream: int, seed_torch: bool) -> list[torch.Tensor]:
        model = net(dropout=0.5)
        torch.manual_seed(stream)
        training.fit(model, training.train_loader(data(), settings), settings, seed_torch=seed_torch)
        return weights(model)

    same = [torch.equal(a, b) for a, b in zip(run(1, True), run(2, True))]
    kept = [torch.equal(a, b) for a, b in zip(run(1, False), run(2, False))]
    assert all(same) and not all(kept)  # dropout draws from torch's stream: seeded by fit, or the caller's


def test_train_loader_drops_only_a_last_batch_of_one_and_is_seeded() -> None:
    settings = TrainSettings(batch_size=8)
    assert len(training.train_loader(data(17), settings)) == 2 and len(training.train_loader(data(18), settings)) == 3
    order = [torch.cat([y for _, y in training.train_loader(data(), settings)]) for _ in range(2)]
    assert torch.equal(order[0], order[1])
    with pytest.raises(ValueError, match="cannot train on an empty dataset"):
        training.train_loader(data(0), settings)


def test_recalibrate_bn_restores_the_momenta_and_eval_mode_even_when_a_batch_fails() -> None:
    model = net()
    bn = model[1]
    good = torch.randn(4, 6)
    training.recalibrate_bn(model, [good, good * 2])
    mean = bn.running_mean.clone()
    assert not model.training and bn.momentum == 0.1 and bn.num_batches_tracked == 2
    training.recalibrate_bn(model, [good, good * 2])  # a cumulative average: the same again
    assert torch.equal(bn.running_mean, mean)
    with pytest.raises(RuntimeError):
        training.recalibrate_bn(model.train(), [good, torch.randn(4, 5)])
    assert not model.training and bn.momentum == 0.1


def test_torch_threads_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    with pytest.raises(KeyboardInterrupt), training.torch_threads(1):
        assert torch.get_num_threads() == 1
        raise KeyboardInterrupt
    assert torch.get_num_threads() == before


def test_a_diverging_run_raises_instead_of_scoring_and_skips_the_diverged_step() -> None:
    """Issue 17: an LR of 1e6 sends the loss to inf/NaN within a few steps; fit raises, it never returns metrics."""
    settings = TrainSettings(epochs=20, batch_size=10, lr=1e6, momentum=0.0, weight_decay=0.0)
    model = net()
    seen: list[list[torch.Tensor]] = []
    with pytest.raises(training.DivergedError, match="lower train.lr"):
        training.fit(model, training.train_loader(data(), settings), settings,
                     after_step=lambda opt: seen.append(weights(model)), schedule=None)
    assert seen, "at least one step ran before the loss diverged"
    for now, last in zip(weights(model), seen[-1]):
        assert torch.equal(now, last)  # the diverged step was not applied
