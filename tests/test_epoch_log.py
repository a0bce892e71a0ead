"""A run with stdout going to a file (no terminal, no progress bar) logs one line per epoch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fruitres.callbacks.epoch_log import EpochLog
from fruitres.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(
    r"Epoch (?P<epoch>\d+)/2 step (?P<step>\d+): train loss \d+\.\d{4} acc \d\.\d{4} \| "
    r"val loss \d+\.\d{4} acc \d\.\d{4} \| \d+ images/s \| elapsed \d+:\d\d:\d\d, left ~\d+:\d\d:\d\d"
)

RESULT_LINE = re.compile(
    r"Result: 2\.00 epochs in \d+\.\d min; test accuracy \d\.\d{4} \[\d\.\d{4}, \d\.\d{4}\] on 16 images"
)


def test_run_without_a_terminal_logs_a_line_per_epoch_to_stdout_and_train_log(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "fruitres.train",
        f"data.data_dir={tiny_dataset}",
        "data.image_size=32",
        "data.batch_size=16",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.accelerator=cpu",
        "callbacks.figures=null",
    ]
    stdout_file = tmp_path / "stdout.txt"
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    with stdout_file.open("w") as stdout:
        done = subprocess.run(
            command, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.STDOUT, timeout=300
        )
    printed = stdout_file.read_text()
    assert done.returncode == 0, printed[-3000:]

    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    for text in (printed, (run_dir / "train.log").read_text()):
        lines = [match.groupdict() for match in EPOCH_LINE.finditer(text)]
        assert lines == [{"epoch": "1", "step": "3"}, {"epoch": "2", "step": "6"}], text[-3000:]
        # the last word: epochs, time and the test accuracy with its interval, on as many images as tested
        assert RESULT_LINE.search(text), text[-3000:]


def test_unknown_when_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.epoch_log\.when='tty'"):
        EpochLog(when="tty")
