"""Error analysis of `fruitres.eval`: every test image's outcome in predictions.csv, the worst in a figure."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from conftest import TrainedSweep
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_eval import eval_config

from fruitres.eval import evaluate
from fruitres.reports.error_analysis import PREDICTION_FIELDS


def test_eval_writes_every_test_image_with_its_loss_highest_first(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    metrics = evaluate(eval_config(trained_sweep.checkpoint, tmp_path, "top_losses=6"))

    with open(tmp_path / "predictions.csv", newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
    assert tuple(reader.fieldnames) == PREDICTION_FIELDS
    test_images = sorted(str(path) for path in (tiny_dataset / "Test").rglob("*.jpg"))
    assert sorted(row["path"] for row in rows) == test_images  # each test image once
    for row in rows:
        assert Path(row["path"]).parent.name == row["true"]  # the folder is the true class
        probability, loss = float(row["probability"]), float(row["loss"])
        assert 0 < probability <= 1 and loss >= 0
        if row["predicted"] == row["true"]:  # the loss is -log of the true class's probability
            assert loss == pytest.approx(-math.log(probability), abs=1e-4)
        else:
            assert loss >= -math.log(probability) - 1e-4
    losses = [float(row["loss"]) for row in rows]
    assert losses == sorted(losses, reverse=True)
    right = sum(row["predicted"] == row["true"] for row in rows)
    assert right / len(rows) == pytest.approx(metrics["test/acc"], abs=1e-6)

    assert (tmp_path / "top_losses.png").read_bytes().startswith(b"\x89PNG")
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "test/top_losses" in events.Tags()["images"]
