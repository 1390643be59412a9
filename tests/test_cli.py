"""The console script: each subcommand's output, and one-line errors with exit status 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrnas_automl.arch import choices_of, freeze
from hrnas_automl.cli import main
from hrnas_automl.cost import arch_cost


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_lists_sizes_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "spaces", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["detnas-large"]["size"] == 4 ** 40 and rows["detnas-small"]["size"] == 4 ** 20
    assert "detnas-coco-fpn-1.3g" in rows["detnas-large"]["presets"]
    _, text, _ = run(capsys, "spaces")
    assert "4^40 = 1.21e+24" in text
    assert "17^268 = 5.76e+329" in text  # hrnas: beyond a float's range


def test_describe_json_matches_space(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "describe", "detnas-small", "--json")
    assert code == 0
    assert json.loads(out)["choices"] == choices_of("detnas-small")


def test_sample_is_seeded_and_respects_max_macs(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("sample", "detnas-small", "--seed", "3", "--max-macs", "6.6e6", "--input", "3x32x32",
            "--space-arg", "num_classes=10")
    _, first, _ = run(capsys, *args)
    _, second, _ = run(capsys, *args)
    _, other, _ = run(capsys, "sample", "detnas-small", "--seed", "4")
    arch = json.loads(first)
    assert first == second and first != other
    assert arch_cost("detnas-small", arch, (3, 32, 32), num_classes=10).macs <= 6.6e6


def test_sample_with_impossible_limit_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "sample", "detnas-small", "--max-macs", "1e3", "--input", "3x32x32",
                       "--max-attempts", "5")
    assert code == 2 and err.startswith("hrnas-automl: error:") and len(err.strip().splitlines()) == 1


def test_cost_of_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "cost", "detnas-small", "--arch", "preset:detnas-coco-fpn-300m", "--json")
    data = json.loads(out)
    assert code == 0 and data["params"] == 3_533_112 and data["input"] == [3, 224, 224]
    assert 300e6 < data["macs"] < 360e6  # ImageNet-head figure of the "300M" net (REFERENCE §5.11: 321.2M conv+fc)


def test_cost_rejects_preset_of_other_space(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "cost", "detnas-large", "--arch", "preset:detnas-coco-fpn-300m")
    assert code == 2 and "architecture of detnas-small, not detnas-large" in err


def test_export_space_round_trips(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "ss.json"
    assert run(capsys, "export-space", "detnas-small", "-o", str(target))[0] == 0
    exported = json.loads(target.read_text())
    assert all(spec["_type"] == "choice" for spec in exported.values())
    back = {label: spec["_value"] for label, spec in exported.items()}
    assert back == choices_of("detnas-small")
    arch = {label: values[-1] for label, values in back.items()}  # a sample read from the JSON freezes
    assert sum(p.numel() for p in freeze("detnas-small", arch).parameters()) > 0


@pytest.mark.parametrize(("argv", "message"), [
    (("describe", "nope"), "unknown space 'nope'; registered spaces: detnas-large, detnas-small"),
    (("cost", "detnas-small", "--arch", "missing.json"), "architecture file missing.json does not exist"),
    (("cost", "detnas-small", "--arch", "preset:x"), "unknown preset 'x'"),
    (("sample", "detnas-small", "--space-arg", "oops"), "must look like KEY=VALUE"),
    (("cost", "detnas-small", "--arch", "preset:detnas-coco-fpn-300m", "--input", "224"), "must look like CxHxW"),
])
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
