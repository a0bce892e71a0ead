"""`fruitres.eval` on a checkpoint of a real sweep: the run's accuracy again, and a full report on disk."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TrainedSweep, compose_config, tiny_train_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.data.folders import DatasetLayoutError
from fruitres.eval import evaluate
from fruitres.run_folders import tensorboard_events_dir
from fruitres.train import train

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG"


def reported_scalar(run_dir: Path, tag: str) -> float:
    """The last value of a scalar the run logged to TensorBoard."""
    events = EventAccumulator(str(tensorboard_events_dir(run_dir)), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars(tag)[-1].value


def eval_config(checkpoint: Path, out: Path, *overrides: str):
    return compose_config(
        "eval",
        [
            f"ckpt_path={checkpoint}",
            f"paths.root_dir={out}",
            f"paths.output_dir={out}",
            "trainer.accelerator=cpu",
            "data.num_workers=0",
            "callbacks.figures.max_images=16",
            *overrides,
        ],
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_eval_reproduces_the_runs_test_accuracy_and_writes_the_report(
    trained_sweep: TrainedSweep, tmp_path: Path
) -> None:
    metrics = evaluate(eval_config(trained_sweep.checkpoint, tmp_path))  # on the data it was trained with

    assert metrics["test/acc"] == pytest.approx(reported_scalar(trained_sweep.run_dir, "test/acc"), abs=1e-6)
    assert metrics["test/acc_top5"] == pytest.approx(reported_scalar(trained_sweep.run_dir, "test/acc_top5"))
    assert {"test/precision_macro", "test/recall_macro", "test/f1_macro"} <= metrics.keys()

    rows = read_csv(tmp_path / "per_class.csv")
    assert len(rows) == 5 and sum(int(row["support"]) for row in rows) == 50
    f1 = [float(row["f1"]) for row in rows]
    assert f1 == sorted(f1), "per_class.csv must list the worst F1 first"
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["metrics"]["test/acc"] == metrics["test/acc"] and summary["num_images"] == 50
    wrong = round((1 - metrics["test/acc"]) * 50)
    assert sum(int(pair["count"]) for pair in read_csv(tmp_path / "confused_pairs.csv")) <= wrong
    if wrong:
        assert (tmp_path / "misclassified.png").read_bytes().startswith(PNG_MAGIC)
    for name in ("confusion_matrix", "per_class_accuracy", "predictions"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name

    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"test/confusion_matrix", "test/per_class_accuracy"} <= set(events.Tags()["images"])


def partial_test_set(tiny_dataset: Path, root: Path, classes: list[str], extra: str | None = None) -> Path:
    """A Test/-only folder holding some of the tiny dataset's classes, and optionally an unknown one."""
    for name in classes:
        shutil.copytree(tiny_dataset / "Test" / name, root / "Test" / name)
    if extra:
        shutil.copytree(tiny_dataset / "Test" / classes[0], root / "Test" / extra)
    return root


def test_eval_names_test_classes_the_checkpoint_was_not_trained_on(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    known = sorted(p.name for p in (tiny_dataset / "Test").iterdir())[:2]
    data = partial_test_set(tiny_dataset, tmp_path / "data", known, extra="Mango Unknown")
    with pytest.raises(DatasetLayoutError, match="Mango Unknown") as error:
        evaluate(eval_config(trained_sweep.checkpoint, tmp_path / "out", f"data.data_dir={data}"))
    assert "not trained on" in str(error.value)


def test_eval_on_a_test_set_lacking_classes_reports_them_with_no_support(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    names = sorted(p.name for p in (tiny_dataset / "Test").iterdir())
    data = partial_test_set(tiny_dataset, tmp_path / "data", names[:2])
    out = tmp_path / "out"
    evaluate(eval_config(trained_sweep.checkpoint, out, f'data.data_dir="{data}"'))

    support = {row["class"]: int(row["support"]) for row in read_csv(out / "per_class.csv")}
    assert support == {name: (10 if name in names[:2] else 0) for name in names}
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["classes_without_test_images"]) == set(names[2:])
    assert summary["num_images"] == 20


@pytest.mark.slow
def test_eval_command_writes_its_report_in_a_run_dir(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "fruitres.eval",
        f"ckpt_path={trained_sweep.checkpoint}",
        f"data.data_dir={tiny_dataset}",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "logs" / "eval" / "runs").iterdir()
    assert {"metrics.json", "per_class.csv", "confused_pairs.csv", "confusion_matrix.png"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert "Per class, worst F1 first" in result.stdout


def test_a_training_run_with_tta_tests_as_eval_does_with_it(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    cfg = compose_config(
        "train", [*tiny_train_overrides(tiny_dataset, run_dir), "tta=flip", "callbacks.figures=null"]
    )
    with caplog.at_level(logging.INFO, logger="fruitres.train"):
        metrics = train(cfg)
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    flipped = evaluate(eval_config(best, tmp_path / "flip", "tta=flip"))
    plain = evaluate(eval_config(best, tmp_path / "plain"))
    # the loss of the averaged softmax is the trace of the views: the same as eval's with them, not without
    assert metrics["test/loss"] == pytest.approx(flipped["test/loss"], abs=1e-5)
    assert metrics["test/loss"] != pytest.approx(plain["test/loss"], abs=1e-5)
    assert metrics["test/acc"] == pytest.approx(flipped["test/acc"], abs=1e-6)
    (result,) = [
        record.getMessage() for record in caplog.records if record.getMessage().startswith("Result:")
    ]
    assert f"test accuracy with tta=flip {metrics['test/acc']:.4f}" in result
