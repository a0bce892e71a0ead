#!/usr/bin/env bash
# The GPU check (`make bench-gpu`), from the repo root of a fresh GPU machine with torch installed: within
# GPU_CHECK_TIMEOUT seconds (default 470, under 8 minutes) including the install, it runs the suite's GPU tests,
# bf16-mixed and 16-mixed training of experiment=resnet18 with cached weights, DDP on 1 GPU, torch.compile,
# channels-last, throughput and time to accuracy (scripts/gpu_check.py: the steps and their time limits), and
# writes ${OUT:-/tmp}/gpu_check.json and gpu_check.md (PASS/FAIL per step, the device), the steps' logs in
# $OUT/logs, and its own output in $OUT/gpu_check.log. `bash scripts/gpu_check.sh --cpu-dry-run` tries every
# step on the CPU, tiny.
#
# Python: $PYTHON, else .venv/bin/python, else python3. The package's dependencies (pyproject.toml, with the
# dev extra for pytest) are installed when missing, into that venv or else into .venv-gpu over that Python,
# keeping the machine's own torch and torchvision (pinned, so its CUDA build stays): from the wheels in .whl/
# when that folder holds any, with no network, else from the package registry. To carry the wheels to a machine without the registry, prepare them on one that has
# it, with the same Python version and CPU architecture, in a venv made by `make install`:
#   .venv/bin/pip freeze --all --exclude-editable \
#     | grep -Eiv '^(torch|torchvision|triton|nvidia-[a-z0-9-]*|cuda-[a-z0-9-]*)==' >/tmp/requirements.txt
#   .venv/bin/pip wheel --no-deps --wheel-dir .whl -r /tmp/requirements.txt
# and copy .whl/ with the repo (torch and its CUDA libraries are left out: the GPU machine has its own).
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${GPU_CHECK_TIMEOUT:-470}
OUT=${OUT:-/tmp}
mkdir -p "$OUT"
export OUT PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "torch is missing from $PY: installing the package into .venv-gpu"
  python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e ".[dev]"
  PY=.venv-gpu/bin/python
fi
if ! "$PY" -c "import fruitres.train, pytest, pytest_timeout" 2>/dev/null; then
  if "$PY" -c "import sys; sys.exit(sys.prefix != sys.base_prefix)"; then
    # not a venv: install into a venv that sees its packages, so the machine's own Python is left as it is
    # (it may be read-only or externally managed)
    "$PY" -m venv --system-site-packages .venv-gpu
    PY=.venv-gpu/bin/python
  fi
  constraints=$(mktemp)
  "$PY" -c "
import importlib.metadata as metadata
for name in ('torch', 'torchvision'):
    try:
        print(f'{name}=={metadata.version(name)}')
    except metadata.PackageNotFoundError:
        pass" >"$constraints"
  wheels=()
  if compgen -G ".whl/*.whl" >/dev/null; then wheels=(--no-index --find-links .whl); fi
  echo "installing the package's dependencies ${wheels[*]:-from the registry}, keeping $(tr '\n' ' ' <"$constraints")"
  "$PY" -m pip install -q "${wheels[@]}" -e ".[dev]" -c "$constraints"
fi

left=$((budget - SECONDS))
echo "dependencies ready in ${SECONDS} s; the check has ${left} s"
timeout --kill-after=10 "$left" "$PY" scripts/gpu_check.py --seconds "$((left - 15))" "$@" 2>&1 | tee "$OUT/gpu_check.log"
