#!/usr/bin/env bash
# The GPU check (`make bench-gpu`), from the repo root of a GPU machine, in under 9 minutes:
#   1. placement: model and batches on cuda, bf16 autocast, pinned memory (a few steps of the real Trainer)
#   2. learning: short real runs on generated data, bf16-mixed + channels-last and fp32 (same seed)
#   3. linear probe with the backbone features cached on the GPU
#   4. throughput, project vs the tutorial's loop (python -m fruitres.bench): full/frozen3/probe in bf16-mixed
#      channels-last; then time to 0.95 accuracy (python -m fruitres.bench --to-accuracy, 3-minute budget,
#      into $OUT/tta); data loading by num_workers; fp32/bf16 × NCHW/channels-last; torch.compile off/on
# Prints a table per step and a summary; writes ${OUT:-/tmp}/gpu_bench.json (after every step) and gpu_check.log.
#
# Python: $PYTHON, else .venv/bin/python, else python3. When torch is missing, a venv .venv-gpu gets the
# package (`pip install -e .`, needs a registry). When torch is there but the package's other dependencies
# are not (a CUDA image), they come from the wheels in .whl/ if that folder is there, else from the registry
# by `pip install -e .` with the installed torch and torchvision pinned, so the CUDA build stays.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "torch is missing from $PY: installing the package into .venv-gpu"
  python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e .
  PY=.venv-gpu/bin/python
fi
if ! "$PY" -c "import fruitres.train" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl | tr '\n' ' ')into /tmp/fruitres-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/fruitres-site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/fruitres-site"
  else
    # pyproject.toml's dependencies from the registry, keeping the machine's own CUDA build of torch
    constraints=$(mktemp)
    "$PY" -c "
import importlib.metadata as metadata
for name in ('torch', 'torchvision'):
    try:
        print(f'{name}=={metadata.version(name)}')
    except metadata.PackageNotFoundError:
        pass" >"$constraints"
    echo "installing the package's dependencies with pip, keeping $(tr '\n' ' ' <"$constraints")"
    "$PY" -m pip install -q -e . -c "$constraints"
  fi
fi

nvidia-smi -L || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-540}" "$PY" scripts/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
