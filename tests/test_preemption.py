"""Pre-emption is a state, not a success: a run stopped by SIGTERM (as SLURM sends it) saves what it can,
records itself as interrupted with the command that resumes it, and exits with 143 as a killed process
would; a sweep shows the job as interrupted; a SIGTERM during the image cache build leaves no partial file."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from cli import TINY_CLI, start_train
from conftest import TINY_IMAGE_SIZE

from fruitres.data.embedded import write_embedded_dataset
from fruitres.files import check_checkpoint_file
from fruitres.run_folders import RECORD_FILE, read_record

SIGTERM_STATUS = 143
SHORT = [
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def sigterm_when(process, ready) -> str:
    """Send SIGTERM to `process` once `ready()` holds; its output once it has ended."""
    while not ready() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=600)
    return output


@pytest.mark.slow
def test_sigterm_during_fit_records_an_interrupted_run_exits_143_and_resumes(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_CLI, f"data.data_dir={tiny_dataset}", *SHORT, f"hydra.run.dir={run_dir}"]
    process = start_train(args, tmp_path)
    output = sigterm_when(process, lambda: (run_dir / "checkpoints" / "last.ckpt").is_file())

    assert process.returncode == SIGTERM_STATUS, output[-3000:]
    assert "Traceback" not in output
    record = read_record(run_dir)
    assert record["status"] == "interrupted" and record["error"] == "stopped by SIGTERM"
    assert record["resume"] == f"python -m fruitres.train resume={run_dir}"
    check_checkpoint_file(run_dir / "checkpoints" / "interrupted.ckpt")
    assert output.strip().splitlines()[-1] == (
        f"Stopped by SIGTERM: {run_dir / RECORD_FILE} says interrupted; continue with: {record['resume']}"
    )

    resumed = start_train([f"resume={run_dir}"], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert read_record(run_dir)["status"] == "ok"


@pytest.mark.slow
def test_a_sweep_job_stopped_by_sigterm_shows_as_interrupted_in_the_sweep_table(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    args = ["-m", *TINY_CLI, f"data.data_dir={tiny_dataset}", *SHORT, "seed=1,2"]
    process = start_train([*args, f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    output = sigterm_when(process, lambda: (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file())

    assert process.returncode == SIGTERM_STATUS, output[-3000:]
    assert read_record(sweep_dir / "0")["status"] == "interrupted"
    assert not (sweep_dir / "1").exists()  # the sweep stops with its job: the scheduler asked it to
    table = (sweep_dir / "sweep_results.csv").read_text()
    assert "interrupted" in table and "stopped by SIGTERM" in table


@pytest.mark.slow
def test_sigterm_during_the_image_cache_build_is_an_interrupted_run_with_no_partial_file(
    tmp_path: Path,
) -> None:
    data_dir = write_embedded_dataset(
        tmp_path / "fruits", num_classes=5, train_per_class=300, test_per_class=2, image_size=TINY_IMAGE_SIZE
    )
    run_dir, cache_dir = tmp_path / "run", tmp_path / "cache"
    args = [arg for arg in TINY_CLI if not arg.startswith("data.image_size=")]
    args += ["data.image_size=192", f"data.data_dir={data_dir}", f"data.cache_dir={cache_dir}"]
    process = start_train([*args, f"hydra.run.dir={run_dir}"], tmp_path)  # 1500 upscaled images: seconds
    output = sigterm_when(process, lambda: any(cache_dir.glob(".images-*")))

    assert process.returncode == SIGTERM_STATUS, output[-3000:]
    assert "Traceback" not in output
    assert read_record(run_dir)["status"] == "interrupted"
    assert sorted(path.name for path in cache_dir.iterdir()) == []  # no partial, no half cache
    assert json.loads((run_dir / RECORD_FILE).read_text())["epochs"] is None
