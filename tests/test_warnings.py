"""A normal run of every entry point on the embedded data prints no warning: each one a user sees is one
they can act on (fruitres/run/third_party_warnings.py names the library ones silenced, and why)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fruitres.run.task import CONFIG_TREE_FILE
from fruitres.run_folders import read_record

REPO = Path(__file__).resolve().parents[1]
# Python's and Lightning's warning formats ("<file>.py:<line>: ..."), and WARNING records of any logger.
WARNING_LINE = re.compile(r"^\S+\.py:\d+: |Warning: |\]\[WARNING\] - ")


def run_entry_point(verb: str, args: list[str], root: Path) -> str:
    """`python -m fruitres.<verb>` with every warning shown once (PYTHONWARNINGS=default, stricter than
    a user's shell, where library DeprecationWarnings are hidden); returns its output."""
    env = {**os.environ, "FRUITRES_ROOT": str(root), "PYTHONWARNINGS": "default", "COLUMNS": "120"}
    result = subprocess.run(
        [sys.executable, "-m", f"fruitres.{verb}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def unexpected_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines() if WARNING_LINE.search(line)]


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The main job on the embedded data, shortened to one epoch at 32 px: (root, its output)."""
    root = tmp_path_factory.mktemp("warnings-root")
    output = run_entry_point(
        "train", ["trainer.max_epochs=1", "data.image_size=32", "trainer.log_every_n_steps=1"], root
    )
    yield root, output
    shutil.rmtree(root, ignore_errors=True)  # a module's runs hold GBs of checkpoints: free the disk


def best_checkpoint(root: Path) -> Path:
    (checkpoint,) = (root / "logs" / "train" / "runs").glob("*/checkpoints/epoch_*.ckpt")
    return checkpoint


@pytest.mark.slow  # five real runs: about 2 minutes on 2 cores
def test_training_on_the_embedded_data_prints_no_warning(embedded_run: tuple[Path, str]) -> None:
    _, output = embedded_run
    assert unexpected_warnings(output) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("eval", []),
        ("predict", ["inputs={root}/data/embedded/Test"]),
        ("export", ["format=onnx"]),
        ("export", ["format=torchscript"]),
    ],
)
def test_eval_predict_and_export_print_no_warning_and_record_their_run(
    verb: str, args: list[str], embedded_run: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = embedded_run
    run_dir = tmp_path / verb
    checkpoint_args = [f"ckpt_path={best_checkpoint(root)}", *(arg.format(root=root) for arg in args)]
    output = run_entry_point(verb, [*checkpoint_args, f"hydra.run.dir={run_dir}"], root)
    assert unexpected_warnings(output) == []
    record = read_record(run_dir)
    assert record is not None and record["status"] == "ok" and record["metrics"], record
    assert (run_dir / CONFIG_TREE_FILE).is_file()


def test_the_warning_detector_sees_python_lightning_and_logging_warnings() -> None:
    output = "\n".join(
        [
            "/x/site-packages/lightning/pytorch/loops/fit_loop.py:321: The number of training batches",
            "/x/y.py:3: UserWarning: something",
            "[2026-01-01 10:00:00,000][fruitres.train][WARNING] - No best checkpoint was saved",
            "[2026-01-01 10:00:00,000][fruitres.data.cache][INFO] - Decoding 800 images",
        ]
    )
    assert len(unexpected_warnings(output)) == 3
