"""`python -m fruitres.bench throughput`: a tiny real run checks the table and JSON (shape, not speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fruitres.bench.throughput import (
    PROJECT_AUGMENTED,
    PROJECT_DATA,
    PROJECT_PREPARED,
    TUTORIAL,
    TUTORIAL_DATA,
)

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_prints_the_table_and_writes_json_for_each_variant(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    report_file = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "fruitres.bench", "throughput", "--data-dir", str(tiny_dataset),
        "--image-size", "32", "--batch-size", "16", "--variants", "full,probe",
        "--optimizer", "for-loop,fused", "--steps", "1", "--warmup", "1", "--repeats", "2",
        "--eval-steps", "1", "--data-steps", "1",
        "--json", str(report_file), "data.num_workers=0",
    ]  # fmt: skip
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    report = json.loads(report_file.read_text())
    projects = [label for label in report["train"] if label != TUTORIAL]
    assert [label.split(" (")[0] for label in projects] == ["project full"] * 2 + ["project probe"] * 2
    assert [label.endswith("fused optimizer)") for label in projects] == [False, True] * 2
    for label in projects:  # the warm-up steps' time: where torch.compile's compile time shows
        assert report["train"][label]["warmup_s"]["median"] > 0
    for label in (TUTORIAL, *projects):
        row = report["train"][label]
        assert len(row["images_per_s"]["values"]) == 2  # one per repeat
        assert row["images_per_s"]["min"] <= row["images_per_s"]["median"] <= row["images_per_s"]["max"]
        assert {"x_tutorial", "images_per_cpu_s", "peak_rss_mib"} <= row.keys()
        assert len(report["eval"][label]["images_per_s"]["values"]) == 2
    assert report["train"][TUTORIAL]["x_tutorial"]["values"] == [1.0, 1.0]
    tutorial_speeds = report["train"][TUTORIAL]["images_per_s"]["values"]
    for label in projects:  # each repeat's training speed over the tutorial's training speed in that repeat
        speeds = report["train"][label]["images_per_s"]["values"]
        ratios = [speed / tutorial for speed, tutorial in zip(speeds, tutorial_speeds, strict=True)]
        assert report["train"][label]["x_tutorial"]["values"] == pytest.approx(ratios)
    assert list(report["data"]) == [TUTORIAL_DATA, PROJECT_DATA, PROJECT_PREPARED, PROJECT_AUGMENTED]
    assert report["settings"]["train_images"] == 5 * 36 and report["settings"]["batch_size"] == 16
    assert (tmp_path / "data" / "cache").is_dir()  # caches under FRUITRES_ROOT, not in the data folder

    for heading in (
        "training",
        "evaluation (no gradients)",
        "data loading only (no model)",
        *report["train"],
    ):
        assert heading in result.stdout
