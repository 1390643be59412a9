"""The device helper on a CPU machine (CI has no GPU): ``auto`` is the CPU here, CUDA is refused in one line, AMP
and channels_last run end to end through the trainer, and no module but runtime/device.py names CUDA."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import hrnas_automl
from hrnas_automl.config import DeviceSettings, TrainSettings
from hrnas_automl.runtime import distributed
from hrnas_automl.runtime.device import Runtime, resolve_device, runtime_of
from hrnas_automl.tasks import training

ROOT = Path(hrnas_automl.__file__).resolve().parent.parent
# A device chosen in code: `.cuda(`, `device="cuda..."`, `torch.device("cuda...")`. Comparisons such as
# `device.type == "cuda"` only read the device the helper chose.
CUDA_LITERAL = re.compile(r"""\.cuda\(|device\s*=\s*["']cuda|torch\.device\(\s*["']cuda""")


def test_only_the_device_helper_names_a_cuda_device() -> None:
    sources = [p for folder in ("hrnas_automl", "spaces", "strategies", "bench")
               for p in (ROOT / folder).rglob("*.py")]
    assert len(sources) > 50  # the grep sees the package
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sources if p != ROOT / "hrnas_automl/runtime/device.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if CUDA_LITERAL.search(line)]
    assert offenders == []
    assert CUDA_LITERAL.search((ROOT / "hrnas_automl/runtime/device.py").read_text())  # the pattern does match


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU-only machine's answers")
def test_auto_is_the_cpu_here_and_cuda_fails_in_one_line() -> None:
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    assert TrainSettings().device == "auto" and runtime_of(TrainSettings()).device == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=rf"^train.device is '{name}' but this machine has 0 CUDA device\(s\) .*"
                                             r"set train.device: auto \(or cpu\) or install a CUDA torch$"):
            resolve_device(name)
    with pytest.raises(ValueError, match=r"^runtime.device is 'cuda'"):
        runtime_of(DeviceSettings(device="cuda"), "runtime.device")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("device", "gpu", r"train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("amp", "fp8", r"train.amp must be off \| bf16 \| fp16, got 'fp8'"),
    ("channels_last", "yes", r"train.channels_last must be true or false, got 'yes'"),
    ("sync_bn", 1, r"train.sync_bn must be true or false, got 1"),
])
def test_bad_device_settings_name_the_key(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        TrainSettings(**{field: value})


def test_amp_modes_and_channels_last() -> None:
    cpu = torch.device("cpu")
    assert Runtime(cpu).grad_scaler() is None and Runtime(cpu, "bf16").grad_scaler() is None
    assert isinstance(Runtime(cpu, "fp16").grad_scaler(), torch.amp.GradScaler)
    linear = nn.Linear(4, 4)
    with Runtime(cpu, "bf16").autocast():
        assert linear(torch.ones(1, 4)).dtype == torch.bfloat16
    with Runtime(cpu).autocast():
        assert linear(torch.ones(1, 4)).dtype == torch.float32
    conv = Runtime(cpu, channels_last=True).place(nn.Conv2d(3, 4, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert Runtime(cpu, channels_last=True).inputs(torch.ones(2, 3, 5, 5)).is_contiguous(
        memory_format=torch.channels_last)
    times: list[float] = []
    with Runtime(cpu).timed(times):
        pass
    assert len(times) == 1 and times[0] >= 0


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_the_trainer_trains_under_amp_and_channels_last(amp: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    images, labels = torch.randn(16, 3, 8, 8), torch.arange(16) % 2
    settings = TrainSettings(epochs=2, batch_size=8, lr=0.1, amp=amp, channels_last=True)
    dataset = torch.utils.data.TensorDataset(images, labels)
    metrics = training.fit(model, training.train_loader(dataset, settings), settings,
                           evaluate=lambda net: {"logit_dtype": str(net(images[:2]).dtype)})
    assert 0 < metrics["train_loss"] < 10
    assert metrics["logit_dtype"] == f"torch.{ {'bf16': 'bfloat16', 'fp16': 'float16'}[amp] }"  # evaluated under it
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_outside_torchrun_everything_is_one_process() -> None:
    assert not distributed.launched() and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    assert distributed.wrap_ddp(model, torch.device("cpu")) is model
    bn = model[1]
    distributed.convert_sync_bn(model)
    assert model[1] is bn and isinstance(bn, distributed.SyncBatchNorm)  # in place: references stay valid
    x = torch.randn(4, 2, 3, 3)
    plain = nn.BatchNorm2d(2)
    assert torch.equal(bn(x), plain(x))  # one process: a plain BatchNorm


def test_a_global_batch_that_does_not_divide_among_the_ranks_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sharded loader and the supernet's batches refuse 2 ranks sharing 3 images, naming the setting to fix."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ValueError, match=r"^train.batch_size 3 is the global batch of 2 processes .* multiple of 2$"):
        distributed.check_global_batch(3)
    with pytest.raises(ValueError, match="train.batch_size 3 is the global batch of 2"):
        distributed.shard([0, 1, 2])
    assert distributed.shard([0, 1, 2, 3]) == [0, 2]  # rank 0's share
