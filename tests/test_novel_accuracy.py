"""`test/acc_novel`: test accuracy on the test images without a near twin in training (novel_accuracy.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from conftest import compose_config, tiny_train_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.data.check import check_dataset
from fruitres.data.embedded import write_embedded_dataset
from fruitres.eval import evaluate
from fruitres.run_folders import tensorboard_events_dir
from fruitres.train import train


def dataset_with_twins(root: Path) -> Path:
    """A tiny dataset whose Test/ also holds exact copies of two Training frames of each class."""
    data = write_embedded_dataset(root, num_classes=3, train_per_class=24, test_per_class=8, image_size=32)
    for class_dir in sorted((data / "Training").iterdir()):
        for frame in sorted(class_dir.iterdir())[:2]:
            shutil.copy(frame, data / "Test" / class_dir.name / f"copy_{frame.name}")
    return data


@pytest.mark.slow  # a training run and an eval
def test_the_run_and_eval_report_accuracy_on_the_test_images_without_a_near_twin(tmp_path: Path) -> None:
    data = dataset_with_twins(tmp_path / "data")
    near = check_dataset(data, near_distance=4)["near_duplicates"]
    novel_count = near["test_images"] - near["with_near_twin"]
    assert 0 < novel_count <= near["test_images"] - 6  # the copies are twins

    run_dir = tmp_path / "run"
    cfg = compose_config(
        "train", [*tiny_train_overrides(data, run_dir), "callbacks.figures=null", "data.augment=null"]
    )
    metrics = train(cfg)  # what run_record.json records
    assert metrics["test/novel_images"] == novel_count
    assert (
        metrics["test/acc_novel_ci95_low"] <= metrics["test/acc_novel"] <= metrics["test/acc_novel_ci95_high"]
    )
    events = EventAccumulator(str(tensorboard_events_dir(run_dir)), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("test/acc_novel")[-1].value == pytest.approx(metrics["test/acc_novel"])
    assert (run_dir / "data" / "cache" / "perceptual_hashes.json").is_file()  # hashed once, beside the images

    (checkpoint,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    out = tmp_path / "eval"
    evaluated = evaluate(
        compose_config(
            "eval",
            [
                f"ckpt_path={checkpoint}",
                f"paths.root_dir={out}",
                f"paths.output_dir={out}",
                "trainer.accelerator=cpu",
                "data.num_workers=0",
            ],
        )
    )
    twins = {pair["test"] for pair in near["pairs"]}
    with open(out / "predictions.csv", newline="") as file:
        rows = [row for row in csv.DictReader(file) if not any(row["path"].endswith(t) for t in twins)]
    assert len(rows) == novel_count == evaluated["test/novel_images"]
    correct = sum(row["true"] == row["predicted"] for row in rows)
    assert evaluated["test/acc_novel"] == pytest.approx(correct / novel_count)
    report = json.loads((out / "metrics.json").read_text())
    low, high = report["test_acc_novel_ci95"]
    assert low <= report["metrics"]["test/acc_novel"] <= high
