#!/usr/bin/env bash
# The GPU check of issue 19: every task trains 2 epochs on generated data on the device with AMP, the DetNAS
# supernet trains under `torchrun --nproc-per-node <gpus>`, the one-shot and fine-grained searches run, latency is
# timed with CUDA events. One line per check with its figure; exit status non-zero if any check failed.
#
#   bench/gpu_check.sh                  # on cuda (a few minutes on one GPU)
#   bench/gpu_check.sh --device cpu     # the CPU fallback (under 10 minutes on 2 cores)
#   bench/gpu_check.sh --gpus 2 --amp fp16 --out
#
# Options go to bench/gpu_check.py (--help). Uses the checkout's .venv when there is one, else $PYTHON or python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
[[ -x "$root/.venv/bin/python" ]] && python="$root/.venv/bin/python"
cd "$root"
exec "$python" bench/gpu_check.py "$@"
