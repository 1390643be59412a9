"""Bad input at every entry point gets a clear one-line error and exit status 2, never a traceback: one table of
(command line, files it reads, the pattern of the error line). Issue 17 extends this table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hrnas_automl.cli import main
from tests import EXAMPLES

# {tmp} in an argument is the test's temporary folder; FILES are written there first (bytes for a non-UTF-8 file)
FILES: dict[str, str | bytes] = {
    "latin1.yml": b"space: d\xe9tnas-small\n",
    "str_arch.json": '{"space": "detnas-small", "arch": "k3k3"}',
    # nnictl experiments (search): tuner classArgs typos, found by building the tuner before nnictl starts
    "tuner_typo.yml": "trialCommand: 'true'\ntrialConcurrency: 1\ntrainingService: {platform: local}\n"
                      "tuner: {className: hrnas_automl.nni.StrategyTuner, codeDirectory: .,\n"
                      "        classArgs: {space: detnas-small, sed: 0}}\n",
    "strategy_typo.yml": "tuner: {className: hrnas_automl.nni.StrategyTuner, codeDirectory: .,\n"
                         "        classArgs: {space: detnas-small, strategy: evolution, populaton_size: 4}}\n",
    "optuna_typo.yml": "tuner: {className: hrnas_automl.nni.optuna_tuner.OptunaTuner, codeDirectory: .,\n"
                       "        classArgs: {objective: metric}}\n",
    "builtin_typo.yml": "tuner: {name: TPE, classArgs: {optimise_mode: maximize}}\n",
    "no_code_dir.yml": "tuner: {className: hrnas_automl.nni.StrategyTuner, classArgs: {space: detnas-small}}\n",
}
CASES = [
    (("describe", "detnas-small", "--space-arg", "nclasses=10"),
     r"space detnas-small takes no argument 'nclasses'; its arguments: head, num_classes, in_channels, dropout"),
    (("describe", "ranet", "--space-arg", "nclasses=10"), r"space ranet takes no argument 'nclasses'"),
    (("sample", "detnas-small", "--space-arg", "num_classes=-1"), r"num_classes must be a positive integer, got -1"),
    (("cost", "ranet", "--arch", "preset:ranet-cifar", "--input", "3x8x8"),
     r"the network does not run at input 3x8x8 \(.*too small\); give a larger input"),
    (("sample", "detnas-small", "--threads", "0"), r"argument --threads: must be an integer >= 1, got '0'"),
    (("tune", "--config", str(EXAMPLES / "hrnas" / "tune_slimming.yml"), "--n-trials", "-3"),
     r"argument --n-trials: must be an integer >= 1, got '-3'"),
    (("make-data", "segmentation", "--out", "{tmp}/data", "--train-size", "0"),
     r"argument --train-size: must be an integer >= 1, got '0'"),
    (("trial", "--config", "{tmp}"), r"trial config .* is a directory; pass the YAML file itself with --config"),
    (("trial", "--config", "{tmp}/latin1.yml"), r"latin1.yml: not UTF-8 text \(byte 8\); save the YAML file as UTF-8"),
    (("cost", "detnas-small", "--arch", "{tmp}/str_arch.json"),
     r"str_arch.json: 'arch' must be a \{label: value\} mapping, got str 'k3k3'"),
    # search: a tuner classArgs typo is refused before nnictl starts (it killed the dispatcher, and `search` waited
    # --timeout with 0 trials); --timeout 1 makes a run that starts anyway end fast, with another line
    (("search", "{tmp}/tuner_typo.yml", "--timeout", "1"),
     r"tuner_typo.yml: tuner StrategyTuner classArgs: unknown classArgs key 'sed': StrategyTuner takes space, "
     r"strategy, seed, .*; strategy random also takes dedup, max_attempts"),
    (("search", "{tmp}/strategy_typo.yml", "--timeout", "1"),
     r"unknown classArgs key 'populaton_size': .* strategy evolution also takes population_size, select_num"),
    (("search", "{tmp}/optuna_typo.yml", "--timeout", "1"),
     r"tuner OptunaTuner classArgs: got an unexpected keyword argument 'objective'; it takes study_name, storage, "
     r"objectives, sampler"),
    (("search", "{tmp}/builtin_typo.yml", "--timeout", "1"),
     r"tuner TpeTuner classArgs: got an unexpected keyword argument 'optimise_mode'; it takes optimize_mode"),
    (("search", "{tmp}/no_code_dir.yml", "--timeout", "1"),
     r"tuner hrnas_automl.nni.StrategyTuner needs codeDirectory \(the folder nnictl imports it from"),
]


@pytest.mark.parametrize(("argv", "pattern"), CASES, ids=[" ".join(argv[:2]) + f" #{i}" for i, (argv, _) in
                                                          enumerate(CASES)])
def test_bad_input_is_one_clear_line(argv: tuple[str, ...], pattern: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # argparse rejects a bad argument before the command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and re.search(pattern, message[0]), err
