"""`python -m fruitres.train` in real subprocesses, shrunk to the tiny dataset, for the robustness tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import TINY_IMAGE_SIZE

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TINY_CLI = [
    f"data.image_size={TINY_IMAGE_SIZE}",
    "data.batch_size=16",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "callbacks.figures=null",
]


def start_train(args: list[str], root: Path, **env: str) -> subprocess.Popen:
    """Start a training process writing under `root` (FRUITRES_ROOT); this folder is importable in it."""
    return subprocess.Popen(
        [sys.executable, "-m", "fruitres.train", *args],
        cwd=REPO,
        env={**os.environ, "FRUITRES_ROOT": str(root), "PYTHONPATH": str(TESTS), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run_train(args: list[str], root: Path, **env: str) -> tuple[int, str]:
    """Run a training process to its end: (exit status, stdout and stderr together)."""
    process = start_train(args, root, **env)
    output, _ = process.communicate(timeout=900)
    return process.returncode, output


def only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "logs" / "train" / "runs").iterdir()
    return run_dir
