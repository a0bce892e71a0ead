"""`make bench-gpu` (scripts/gpu_check.sh → gpu_check.py): its CPU dry run as a real process reports every
step with a status in one JSON and one Markdown summary; a step past its time limit is stopped with its
workers."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = (
    "gpu_tests",
    "train_bf16_mixed",
    "train_16_mixed",
    "ddp_1gpu",
    "torch_compile",
    "throughput",
    "time_to_accuracy",
)
CUDA_ONLY = ("gpu_tests", "train_16_mixed")  # the GPU tests skip themselves without CUDA
TRAINING = ("train_bf16_mixed", "ddp_1gpu", "torch_compile")


@pytest.mark.slow
def test_cpu_dry_run_reports_every_step_with_its_status_and_the_device_in_json_and_markdown(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "FRUITRES_ROOT": str(tmp_path / "root"),
        "GPU_CHECK_TIMEOUT": "900",
    }
    command = ["bash", "scripts/gpu_check.sh", "--cpu-dry-run"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=960)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    summary = json.loads((out / "gpu_check.json").read_text())
    assert tuple(summary["steps"]) == STEPS
    assert summary["device"] and summary["mode"] == "cpu dry run"
    statuses = {name: step["status"] for name, step in summary["steps"].items()}
    assert statuses == {name: "skipped: no CUDA" if name in CUDA_ONLY else "PASS" for name in STEPS}
    for name in TRAINING:  # the experiment's IMAGENET1K_V1 weights, read from the filled cache
        assert "weights from the cache" in summary["steps"][name]["summary"]
    for name, step in summary["steps"].items():
        assert step["seconds"] <= step["limit_s"] + 1
        assert name == "train_16_mixed" or (out / step["log"]).is_file()  # every step that ran
    assert (out / "tta" / "tta.md").is_file() and (out / "throughput.json").is_file()

    markdown = (out / "gpu_check.md").read_text()
    assert markdown.startswith(f"# GPU check on {summary['device']} (cpu dry run)")
    for name, status in statuses.items():
        assert f"| {name} | {status} |" in markdown
    assert (out / "gpu_check.log").read_text().endswith(f"{out / 'gpu_check.md'}\n")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_step_past_its_time_limit_is_stopped_with_the_processes_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    gpu_check = importlib.import_module("gpu_check")
    check = gpu_check.Check(out=tmp_path, root=tmp_path, sizes=gpu_check.ON_CPU, cuda=False)
    worker_pid = tmp_path / "worker.pid"
    sleeper = "import time; time.sleep(120)"
    parent = (
        "import pathlib, subprocess, sys, time; "
        f"worker = subprocess.Popen([sys.executable, '-c', {sleeper!r}]); "
        f"pathlib.Path({str(worker_pid)!r}).write_text(str(worker.pid)); print('started', flush=True); "
        "time.sleep(120)"
    )
    started = time.time()
    status, output = gpu_check.run_process(check, "slow_step", [sys.executable, "-c", parent], limit_s=5)

    assert status is None and "started" in output
    assert time.time() - started < 5 + gpu_check.STOP_GRACE_S
    worker = int(worker_pid.read_text())
    deadline = time.time() + 5
    while alive(worker):
        assert time.time() < deadline, "the step's worker outlived its limit"
        time.sleep(0.1)
    assert gpu_check.exit_problems(status, 5) == ["stopped at its limit of 5 s"]
