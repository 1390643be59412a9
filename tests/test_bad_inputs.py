"""Bad input at every entry point gets a clear one-line error and exit status 2, never a traceback: one table of
(command line, files it reads, the pattern of the error line). Issue 17 extends this table."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from hrnas_automl.cli import main
from tests import EXAMPLES

# {tmp} in an argument is the test's temporary folder; FILES are written there first (bytes for a non-UTF-8 file)
FILES: dict[str, str | bytes] = {
    "latin1.yml": b"space: d\xe9tnas-small\n",
    "str_arch.json": '{"space": "detnas-small", "arch": "k3k3"}',
    "gpu99.yml": "space: detnas-small\nspace_args: {num_classes: 4}\ntask: classification\n"
                 "data: {kind: synthetic, train_size: 8, val_size: 4, image_size: 32}\ntrain: {device: 'cuda:99'}\n",
    "banana.yml": "space: detnas-small\ntask: classification\ndata: {kind: synthetic}\ntrain: {device: banana}\n",
    # data loading (issue 19): the loader settings of train:
    "workers.yml": "space: detnas-small\ntask: classification\ndata: {kind: synthetic}\ntrain: {num_workers: -1}\n",
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
    # several strategies side by side (MultiStrategyTuner, issue 18): a typo in one strategy entry
    "multi_typo.yml": "tuner: {className: hrnas_automl.nni.MultiStrategyTuner, codeDirectory: .,\n"
                      "        classArgs: {space: detnas-small, strategies: [{strategy: random},\n"
                      "                    {strategy: evolutoin}]}}\n",
    "multi_option.yml": "tuner: {className: hrnas_automl.nni.MultiStrategyTuner, codeDirectory: .,\n"
                        "        classArgs: {space: detnas-small, strategies: [{strategy: random},\n"
                        "                    {strategy: evolution, population: 4}]}}\n",
}
# --- devices (issue 19): every entry point that runs a network refuses a device this machine lacks, in one line ----
_SHAPES = "data: {kind: shapes, root: '{tmp}/shapes', train_size: 4, val_size: 2, image_size: 64}\n"
FILES.update({
    "cuda.yml": "space: detnas-small\ntask: classification\ndata: {kind: synthetic}\ntrain: {device: cuda}\n",
    "amp.yml": "space: detnas-small\ntask: classification\ndata: {kind: synthetic}\ntrain: {amp: fp8}\n",
    "prune_cuda.yml": "space: hrnas\nspace_args: {setting: tiny}\ntask: segmentation\ndata: {kind: shapes}\n"
                      "train: {device: cuda}\nprune: {lam: 1.0}\n",
    "supernet_cuda.yml": _SHAPES + "checkpoint: '{tmp}/supernet/s.pt'\ntrain: {device: cuda}\n",
    "search_cuda.yml": "supernet: '{tmp}/s.pt'\nstate: '{tmp}/search/state.json'\nruntime: {device: cuda}\n",
    "search_amp.yml": "supernet: '{tmp}/s.pt'\nstate: '{tmp}/search/state.json'\nruntime: {amp: half}\n",
})
_NO_CUDA = r"is 'cuda' but this machine has 0 CUDA device\(s\) for this torch build .*; set {}: auto \(or cpu\) or "
_DEVICE_CASES = [
    (("trial", "--config", "{tmp}/amp.yml"), r"train.amp must be off \| bf16 \| fp16, got 'fp8'"),
    (("oneshot", "search", "--config", "{tmp}/search_amp.yml"), r"runtime.amp must be off \| bf16 \| fp16, got 'half'"),
    *([] if torch.cuda.is_available() else [  # a CPU-only machine asked for CUDA
        (("trial", "--config", "{tmp}/cuda.yml"), r"train.device " + _NO_CUDA.format("train.device")),
        (("prune", "--config", "{tmp}/prune_cuda.yml"), r"train.device " + _NO_CUDA.format("train.device")),
        (("oneshot", "train", "--config", "{tmp}/supernet_cuda.yml"),
         r"train.device " + _NO_CUDA.format("train.device")),
        (("oneshot", "search", "--config", "{tmp}/search_cuda.yml"),
         r"runtime.device " + _NO_CUDA.format("runtime.device")),
    ]),
]
CASES = [
    *_DEVICE_CASES,
    (("describe", "detnas-small", "--space-arg", "nclasses=10"),
     r"space detnas-small takes no argument 'nclasses'; its arguments: head, num_classes, in_channels, dropout"),
    (("describe", "ranet", "--space-arg", "nclasses=10"), r"space ranet takes no argument 'nclasses'"),
    (("sample", "detnas-small", "--space-arg", "num_classes=-1"), r"num_classes must be a positive integer, got -1"),
    (("describe", "hrnas", "--space-arg", "bn_momentum=2"), r"bn_momentum must be a number in \[0, 1\], got 2"),
    (("describe", "detnas-small", "--space-arg", "dropout=1.5"), r"dropout must be a number in \[0, 1\], got 1.5"),
    (("describe", "hrnas", "--space-arg", "dense_channel=0"), r"dense_channel must be a positive integer, got 0"),
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
    (("trial", "--config", "{tmp}/gpu99.yml"), r"train.device is 'cuda:99' but this machine has \d+ CUDA device"),
    (("trial", "--config", "{tmp}/banana.yml"), r"train.device must be auto, cpu, cuda, cuda:N or mps, got 'banana'"),
    (("trial", "--config", "{tmp}/workers.yml"), r"train.num_workers must be >= 0, got -1"),
    (("export-space", "detnas-small", "-o", "{tmp}/banana.yml/space.json"),
     r"cannot write .*banana.yml/space.json \(Not a directory\); choose a writable path with -o"),
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
    (("search", "{tmp}/multi_typo.yml", "--timeout", "1"),
     r"tuner MultiStrategyTuner classArgs: unknown strategy 'evolutoin'; registered strategies: evolution, random"),
    (("search", "{tmp}/multi_option.yml", "--timeout", "1"),
     r"tuner MultiStrategyTuner classArgs: unknown classArgs key 'population': .* strategy evolution also takes "
     r"population_size"),
    (("search", "{tmp}/no_code_dir.yml", "--timeout", "1"),
     r"tuner hrnas_automl.nni.StrategyTuner needs codeDirectory \(the folder nnictl imports it from"),
]


# --- data (issue 17): datasets in {tmp}/data, each read by `trial --config` with a data block naming them ---------
# ({tmp} in a text file's content is the temporary folder too; nested paths are created)
def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    """A PNG of noise (RGB) or of zeros (a mask of class 0, mode L)."""
    out = io.BytesIO()
    (Image.effect_noise(size, 50).convert(mode) if mode == "RGB" else Image.new(mode, size)).save(out, "PNG")
    return out.getvalue()


_IMAGE = _png((16, 16))


def _coco(image: dict[str, Any] | None = None, annotation: dict[str, Any] | None = None) -> str:
    """A two-image COCO instances file (trainable in one batch of 2); ``image`` / ``annotation`` change (or, with
    None values, drop) keys of the first image / annotation."""
    def entries(first: dict[str, Any], change: dict[str, Any] | None) -> list[dict[str, Any]]:
        second = {**first, "id": 2, "file_name": "2.png"} if "file_name" in first else {**first, "id": 2, "image_id": 2}
        return [{k: v for k, v in (first | (change or {})).items() if v is not None}, second]
    return json.dumps({
        "images": entries({"id": 1, "file_name": "1.png", "height": 16, "width": 16}, image),
        "annotations": entries({"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 8, 8], "area": 64,
                                "iscrowd": 0}, annotation),
        "categories": [{"id": 1, "name": "square"}]})


def _trial(task: str, data: dict[str, Any], space: str = "detnas-small", **more: Any) -> str:
    return json.dumps({"space": space, "task": task, "data": data,
                       "train": {"epochs": 1, "batch_size": 2, "lr": 0.001}, **more})


def _detection(ann: str) -> str:
    return _trial("detection", {"kind": "coco", "train_ann": f"{{tmp}}/data/{ann}", "val_ann": "{tmp}/data/ok.json",
                                "train_images": "{tmp}/data/img", "val_images": "{tmp}/data/img", "image_size": 16})


_DATA_FILES: dict[str, str | bytes] = {
    "data/img/1.png": _IMAGE, "data/img/2.png": _IMAGE, "data/outside.png": _IMAGE, "data/ok.json": _coco(),
    "data/up.json": _coco({"file_name": "../outside.png"}),
    "data/abs.json": _coco({"file_name": "/etc/passwd"}),
    "data/nobbox.json": _coco(annotation={"bbox": None}),
    "data/cat99.json": _coco(annotation={"category_id": 99}),
    "data/image7.json": _coco(annotation={"image_id": 7}),
    "data/wide.json": _coco({"width": 32}),
    # 5 training images in batches of 2: the seed-0 epoch drops train/b/1.png (the drop_last remainder), so
    # before the build-time check this truncated file was never read and the trial scored a number
    **{f"data/cut/train/{name}.png": _IMAGE for name in ("a/1", "a/2", "b/2", "b/3")},
    "data/cut/train/b/1.png": _IMAGE[: len(_IMAGE) // 2], "data/cut/val/a/1.png": _IMAGE,
    "data/cut/val/b/1.png": _IMAGE,
    "data/cs/leftImg8bit/train/x/x_0_0_leftImg8bit.png": _IMAGE,
    "data/cs/gtFine/train/x/x_0_0_gtFine_labelTrainIds.png": _png((24, 16), "L"),
    "data/cs/leftImg8bit/train/x/x_0_2_leftImg8bit.png": _IMAGE,
    "data/cs/gtFine/train/x/x_0_2_gtFine_labelTrainIds.png": _png((16, 16), "L"),
    "data/cs/leftImg8bit/val/x/x_0_1_leftImg8bit.png": _IMAGE,
    "data/cs/gtFine/val/x/x_0_1_gtFine_labelTrainIds.png": _png((16, 16), "L"),
    **{f"det_{name}.yml": _detection(f"{name}.json") for name in ("up", "abs", "nobbox", "cat99", "image7", "wide")},
    "folder_cut.yml": _trial("classification", {"kind": "folder", "root": "{tmp}/data/cut", "image_size": 16}),
    "seg_mask.yml": _trial("segmentation", {"kind": "cityscapes", "root": "{tmp}/data/cs", "num_classes": 4,
                                            "image_size": 16}, "hrnas", space_args={"setting": "tiny"}),
}
_DATA_CASES = [
    (("trial", "--config", "{tmp}/det_up.yml"), r"up\.json has file_name '\.\./outside\.png', which leads "
                                                r"outside the image folder .*/data/img; give a path inside it"),
    (("trial", "--config", "{tmp}/det_abs.yml"), r"has file_name '/etc/passwd', which leads outside the image folder"),
    (("trial", "--config", "{tmp}/det_nobbox.yml"),
     r"annotations\[0\] \(id 1\) in .*nobbox\.json has no 'bbox'; add it or remove the annotation"),
    (("trial", "--config", "{tmp}/det_cat99.yml"), r"annotations\[0\] \(id 1\) in .*cat99\.json has category_id 99, "
                                                   r"which is not among its categories \[1\]"),
    (("trial", "--config", "{tmp}/det_image7.yml"), r"image7\.json refers to image id 7, which is not in its "
                                                    r"images list"),
    (("trial", "--config", "{tmp}/det_wide.yml"), r"image .*1\.png is 16x16 but .*wide\.json says 32x16"),
    (("trial", "--config", "{tmp}/folder_cut.yml"),
     r"cannot read image .*cut/train/b/1\.png \(.*\); replace or delete"),
    (("trial", "--config", "{tmp}/seg_mask.yml"), r"mask .*x_0_0_gtFine_labelTrainIds\.png is 24x16 but its image "
                                                  r".*x_0_0_leftImg8bit\.png is 16x16"),
]
FILES.update(_DATA_FILES)
CASES.extend(_DATA_CASES)


# --- prune, oneshot, make-data and budgets (issue 17): one number parser, no budget below the reachable cost ------
_BUDGET_FILES: dict[str, str | bytes] = {
    "prune_limit10.yml": "space: hrnas\nspace_args: {setting: tiny, transformer: false}\ntask: segmentation\n"
                         "data: {kind: shapes, image_size: 32, train_size: 16, val_size: 8}\n"
                         "train: {epochs: 2, batch_size: 8}\nlatency: {enabled: false}\n"
                         "prune: {lam: 10.0, max_macs: 10}\n",
    "prune_lam_abc.yml": "space: hrnas\nspace_args: {setting: tiny}\ntask: segmentation\ndata: {kind: shapes}\n"
                         "prune: {lam: abc}\n",
    "prune_warmup_half.yml": "space: hrnas\nspace_args: {setting: tiny}\ntask: segmentation\ndata: {kind: shapes}\n"
                             "prune: {warmup: 1.5}\n",
    "search_inf.yml": "supernet: none.pt\nstate: '{tmp}/state.json'\nmax_conv_macs: .inf\n",
    "search_true.yml": "supernet: none.pt\nstate: '{tmp}/state.json'\nmax_conv_macs: true\n",
    "bins_reversed.yml": "data: {kind: shapes}\ncheckpoint: '{tmp}/s.pt'\ntrain: {macs_bins: [[3.0e+8, 2.0e+8]]}\n",
    "bins_outside.yml": "data: {kind: shapes, root: '{tmp}/shapes', train_size: 8, val_size: 2, image_size: 32}\n"
                        "checkpoint: '{tmp}/s.pt'\ntrain: {macs_bins: [[1.0e+12, 2.0e+12]]}\n",
    "tune_inf.yml": "study_name: s\nstorage: 'sqlite:///{tmp}/s.db'\nn_trials: 1\nobjective: fine-grained\n"
                    "max_macs: .inf\n",
}
_BUDGET_CASES = [
    (("prune", "--config", "{tmp}/prune_limit10.yml"),
     r"max_macs 10 is below the smallest macs of hrnas at 3x32x32, every prunable unit at its smallest width "
     r"\(335296; the largest is .*\); raise the limit to at least 335296$"),
    (("prune", "--config", "{tmp}/prune_lam_abc.yml"),
     r"prune_lam_abc.yml: prune: fine-grained setting lam must be a number, got 'abc'"),
    (("prune", "--config", "{tmp}/prune_warmup_half.yml"),
     r"prune_warmup_half.yml: prune: fine-grained setting warmup must be an integer >= 0, got 1.5"),
    (("oneshot", "search", "--config", "{tmp}/search_inf.yml"), r"max_conv_macs must be a number, got inf"),
    (("oneshot", "search", "--config", "{tmp}/search_true.yml"), r"max_conv_macs must be a number, got True"),
    (("oneshot", "train", "--config", "{tmp}/bins_reversed.yml"),
     r"train.macs_bins must be \[\[low, high\], ...\] with low < high in every bin"),
    (("oneshot", "train", "--config", "{tmp}/bins_outside.yml"),
     r"train.macs_bins \[1e\+12, 2e\+12\) lies outside the backbone Conv2d MACs of detnas-small at 3x224x224 "
     r"\(2.37223e\+08 to 3.65473e\+08\); give bins within that range"),
    (("tune", "--config", "{tmp}/tune_inf.yml"), r"tune_inf.yml: max_macs: .*max_macs must be a number, got inf"),
    (("sample", "detnas-small", "--max-macs", "nan"), r"argument --max-macs: must be a finite number, got 'nan'"),
    (("make-data", "segmentation", "--out", "{tmp}/latin1.yml"), r"--out .*latin1.yml is a file; give a new or empty"),
]
FILES.update(_BUDGET_FILES)
CASES.extend(_BUDGET_CASES)


# --- tune storage (Optuna workers, issue 17): a tune config per bad `storage:` value ------------------------------
_TUNE = {"study_name": "s", "n_trials": 2, "objective": "network-slimming"}
_STORAGE_FILES: dict[str, str | bytes] = {f"tune_{name}.yml": json.dumps({**_TUNE, "storage": storage})
                                          for name, storage in {
    "storage_key": {"url": "sqlite:///x.db", "heartbeat": 5},
    "journal_folder": {"journal": "missing/study.log"},
    "url_and_journal": {"url": "sqlite:///x.db", "journal": "study.log"},
    "journal_heartbeat": {"journal": "study.log", "heartbeat_interval": 10},
    "grace_alone": {"url": "sqlite:///x.db", "grace_period": 10},
    "heartbeat_zero": {"url": "sqlite:///x.db", "heartbeat_interval": 0},
    "retry_negative": {"journal": "study.log", "max_retry": -1},
    "sqlite_folder": "sqlite:///missing/studies.db",
}.items()}
_STORAGE_CASES = [
    (("tune", "--config", "{tmp}/tune_storage_key.yml"),
     r"unknown key 'storage.heartbeat'; allowed keys here: url, journal, heartbeat_interval, grace_period, max_retry"),
    (("tune", "--config", "{tmp}/tune_journal_folder.yml"),
     r"storage.journal: folder .*/missing does not exist; create it or fix the path"),
    (("tune", "--config", "{tmp}/tune_url_and_journal.yml"),
     r"storage: .*give exactly one of url \(an RDB, e.g. sqlite:///studies.db\) and journal \(a file\)"),
    (("tune", "--config", "{tmp}/tune_journal_heartbeat.yml"), r"heartbeat_interval and grace_period need an RDB url"),
    (("tune", "--config", "{tmp}/tune_grace_alone.yml"), r"grace_period needs heartbeat_interval"),
    (("tune", "--config", "{tmp}/tune_heartbeat_zero.yml"),
     r"storage.heartbeat_interval: Input should be greater than or equal to 1 \(got 0\)"),
    (("tune", "--config", "{tmp}/tune_retry_negative.yml"),
     r"storage.max_retry: Input should be greater than or equal to 0 \(got -1\)"),
    (("tune", "--config", "{tmp}/tune_sqlite_folder.yml"),
     r"cannot open Optuna storage 'sqlite:///missing/studies.db': folder .*/missing does not exist; create it or fix "
     r"the path$"),
]
FILES.update(_STORAGE_FILES)
CASES.extend(_STORAGE_CASES)

# --- objectives (issue 17): objective_args are checked when the study starts, data included, not in trial 0 -----
_TUNE = (EXAMPLES / "hrnas" / "tune.yml").read_text()
FILES["tune_bad_data.yml"] = _TUNE.replace("train_size: 32", "train_size: abc") + "storage: {journal: studies.log}\n"
# a typo makes a required key missing too: the typo is named, with the key it resembles; a YAML error gives its line
FILES["tune_typo.yml"] = _TUNE.replace("n_trials:", "n_trial:")
FILES["tune_bad_yaml.yml"] = "study_name: s\nn_trials: 4\nranges: {lam: [1, 2}\n"
CASES.append((("tune", "--config", "{tmp}/tune_typo.yml"),
              r"tune_typo.yml: unknown key 'n_trial'; allowed keys here: .*; did you mean 'n_trials'\?$"))
CASES.append((("tune", "--config", "{tmp}/tune_bad_yaml.yml"),
              r"tune_bad_yaml.yml: not valid YAML: line 3, column 20: expected ',' or ']', but got '}'"))
FILES["tune_slim.yml"] = (EXAMPLES / "hrnas" / "tune_slimming.yml").read_text() + "storage: {journal: slim.log}\n"
CASES.append((("tune", "--config", "{tmp}/tune_slim.yml", "--plot", "{tmp}/latin1.yml/f.png"),
              r"--plot .*latin1.yml/f.png: cannot create its folder \(File exists\); choose another path"))
CASES.append((("front", "--config", "{tmp}/tune_slim.yml"),  # and front creates no empty journal there
              r"no study 'slimming-lambda': .*slim.log does not exist; run `hrnas-automl tune --config` first"))
CASES.append((("tune", "--config", "{tmp}/tune_bad_data.yml"),
              r"shapes data: option train_size='abc' is invalid; it must be an integer >= 1"))

# export (issue 20)
_EXPORT = ("export", "detnas-small", "--input", "3x32x32", "--no-latency", "-o", "{tmp}/export")
_FM = '{"space": "detnas-small", "arch": {"s1_b0": "k3"}, "metrics": {}, "prune": {}}'
FILES.update({"prune_no_weights/result.json": _FM, "prune_bad_weights/result.json": _FM,
              "prune_bad_weights/weights.pt": "not a torch file"})
CASES.extend([
    (("export", "nospace", "--arch", "preset:detnas-coco-fpn-300m", "-o", "{tmp}/export"),
     r"unknown space 'nospace'; registered spaces: .*detnas-small"),
    ((*_EXPORT, "--arch", "preset:nope"), r"unknown preset 'nope'; presets: .*detnas-coco-fpn-300m"),
    ((*_EXPORT, "--arch", "preset:lite-hrnet-18"),
     r"--arch preset:lite-hrnet-18 is an architecture of lite-hrnet, not detnas-small; export it as "
     r"`hrnas-automl export lite-hrnet"),
    (_EXPORT, r"give exactly one of --arch \(preset:NAME or a JSON file\) and --from"),
    ((*_EXPORT, "--from", "{tmp}/missing"), r"--from .*missing: no such file or folder; give a run folder"),
    ((*_EXPORT, "--from", "{tmp}"), r"--from .* holds no result.json \(prune / trial output\) and no oneshot search"),
    ((*_EXPORT, "--from", "nni:nope"), r"--from nni:nope: no NNI experiment 'nope' \(.*nope/db/nni.sqlite does not "
                                       r"exist\); `nnictl experiment list --all` lists the experiments"),
    ((*_EXPORT, "--from", "optuna:studies.db"), r"must look like optuna:STORAGE:STUDY:NUMBER"),
    ((*_EXPORT, "--from", "optuna:sqlite:///{tmp}/none.db:s:0"), r"the storage .*none.db does not exist"),
    ((*_EXPORT, "--from", "{tmp}/prune_no_weights"),
     r"prune result .*prune_no_weights has no weights.pt \(prune writes it beside result.json\)"),
    ((*_EXPORT, "--from", "{tmp}/prune_bad_weights"),
     r"prune_bad_weights/weights.pt is not a readable weights file \(UnpicklingError\)"),
    (("export", "ranet", "--arch", "preset:ranet-cifar", "--space-arg", "head=detector", "-o", "{tmp}/export"),
     r"space ranet has no backbone head for the detector \(its heads: exits\); use a DetNAS space"),
    (("export", "detnas-small", "--arch", "preset:detnas-coco-fpn-300m", "-o", "{tmp}/latin1.yml/out"),
     r"cannot use .*latin1.yml/out as the output folder \(.*\); choose a writable folder"),
    ((*_EXPORT, "--arch", "preset:detnas-coco-fpn-300m", "--tolerance", "0"),
     r"differs from the PyTorch network: max abs difference .* tolerance 0\); the export was not written"),
])


# latency backends (issue 20): a backend that does not exist, wherever a latency is measured or predicted (a network
# that does not export to ONNX: tests/cost/test_latency.py, as every space's networks export)
_TRIAL_ORT = {"space": "detnas-small", "space_args": {"num_classes": 4}, "task": "classification",
              "data": {"kind": "synthetic", "num_classes": 4, "train_size": 8, "val_size": 4, "image_size": 32}}
FILES.update({
    "latency_backend.yml": json.dumps({**_TRIAL_ORT, "latency": {"backend": "tensorrt"}}),
    "prune_backend.yml": "space: hrnas\nspace_args: {setting: tiny}\ntask: segmentation\ndata: {kind: shapes}\n"
                         "prune: {cost: latency, backend: tensorrt}\n",
    "tuner_backend.yml": "tuner: {className: hrnas_automl.nni.StrategyTuner, codeDirectory: .,\n"
                         "        classArgs: {space: detnas-small, max_latency_ms: 5, latency_backend: onnx}}\n",
})
CASES.extend([
    (("sample", "detnas-small", "--max-latency-ms", "5", "--backend", "tensorrt"),
     r"unknown latency backend 'tensorrt'; use one of: torch, onnxruntime$"),
    (("cost", "detnas-small", "--arch", "preset:detnas-coco-fpn-300m", "--input", "3x32x32", "--latency",
      "--backend", "ort"), r"unknown latency backend 'ort'; use one of: torch, onnxruntime$"),
    (("trial", "--config", "{tmp}/latency_backend.yml"),
     r"latency_backend.yml: latency.backend: Input should be 'torch' or 'onnxruntime'"),
    (("prune", "--config", "{tmp}/prune_backend.yml"),
     r"prune_backend.yml: prune: fine-grained setting backend must be 'torch' or 'onnxruntime', got 'tensorrt'$"),
    (("search", "{tmp}/tuner_backend.yml", "--timeout", "1"),
     r"tuner_backend.yml: tuner StrategyTuner classArgs: unknown latency backend 'onnx'; use one of: torch, "
     r"onnxruntime$"),
])

# --- the trial's ranked metric (issue 18 item 6) ---------------------------------------------------------------------
FILES.update({
    "prune_metric.yml": "space: hrnas\nspace_args: {setting: tiny}\ntask: segmentation\ndata: {kind: shapes}\n"
                        "metric: loss\nprune: {lam: 1.0}\n",
})
CASES.extend([
    (("prune", "--config", "{tmp}/prune_metric.yml"),
     r"prune_metric.yml: metric: the fine-grained search ranks the task's own metric; remove metric$"),
])


# report (issue 18): inputs that name no run, or a run without a scored trial
_REPORT = ("report", "-o", "{tmp}/report")
FILES.update({"report_inputs/empty_state.json": json.dumps({"kind": "hrnas-automl oneshot search", "evaluated": []}),
              "empty.db": b""})
CASES.extend([
    ((*_REPORT, "nni:nope"), r"no NNI experiment 'nope' \(.*nope/db/nni.sqlite does not exist\); `nnictl experiment "
                             r"list --all` lists the experiments"),
    ((*_REPORT, "{tmp}/missing"), r"missing: no such file or folder; give an NNI experiment id or folder"),
    ((*_REPORT, "{tmp}"), r"is neither an NNI experiment folder \(db/nni.sqlite\) nor a run folder \(result.json\)"),
    ((*_REPORT, "optuna:sqlite:///{tmp}/none.db:s"), r"the Optuna storage .*none.db does not exist"),
    ((*_REPORT, "optuna:sqlite:///{tmp}/empty.db:nostudy"),
     r"no Optuna study 'nostudy' in sqlite:///.*empty.db \(its studies: none\)"),
    ((*_REPORT, "optuna:studies.db"), r"optuna:studies.db must look like optuna:STORAGE:STUDY"),
    ((*_REPORT, "{tmp}/latin1.yml"), r"latin1.yml is not a readable JSON file \(UnicodeDecodeError\)"),
    ((*_REPORT, "{tmp}/str_arch.json"), r"str_arch.json is neither a oneshot search state nor the result.json"),
    ((*_REPORT, "{tmp}/report_inputs/empty_state.json"),  # in a folder of its own: export --from {tmp} finds no state
     r"empty_state.json has no scored trial \(no final metric yet\)"),
])

@pytest.mark.parametrize(("argv", "pattern"), CASES, ids=[" ".join(argv[:2]) + f" #{i}" for i, (argv, _) in
                                                          enumerate(CASES)])
def test_bad_input_is_one_clear_line(argv: tuple[str, ...], pattern: str, tmp_path: Path,
                                     capfd: pytest.CaptureFixture[str]) -> None:
    for name, content in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else
                                      content.replace("{tmp}", str(tmp_path)).encode())
    try:
        code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    except SystemExit as exc:  # argparse rejects a bad argument before the command runs
        code = exc.code
    err = capfd.readouterr().err  # the file descriptor: loggers bound to the real stderr (Optuna's) count too
    assert code == 2 and "Traceback" not in err
    message = [line for line in err.splitlines() if "error:" in line]
    assert len(message) == 1 and re.search(pattern, message[0]), err
