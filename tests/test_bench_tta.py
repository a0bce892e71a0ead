"""`python -m fruitres.bench tta`: real runs on generated data write the table, CSVs and figure,
and say truthfully which runs reached the target (shape and consistency, never speed)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fruitres.bench import cli, report, time_to_accuracy, tutorial
from fruitres.bench.report import Outcome

REPO = Path(__file__).resolve().parents[1]


def bench(*arguments: str, root: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "fruitres.bench", "tta", *arguments]
    env = {**os.environ, "FRUITRES_ROOT": str(root)}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def class_lists(data_dir: Path, folder: Path) -> tuple[Path, Path]:
    """Two disjoint class lists of the generated data: A (2 classes) for the source, B (3) for the runs."""
    names = sorted(path.name for path in (data_dir / "Training").iterdir())
    lists = folder / "a.txt", folder / "b.txt"
    lists[0].write_text("\n".join(names[:2]) + "\n")
    lists[1].write_text("\n".join(names[2:]) + "\n")
    return lists


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.slow
def test_time_to_accuracy_trains_the_source_then_each_run_and_writes_table_csv_and_curves(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    classes_a, classes_b = class_lists(tiny_dataset, tmp_path)
    out = tmp_path / "tta"
    result = bench(
        "--target", "0.05", "--data-dir", str(tiny_dataset), "--classes-a", str(classes_a),
        "--classes-b", str(classes_b), "--recipes", "probe", "--cap-minutes", "1",
        "--tutorial-image-size", "32", "--out", str(out),
        "data.image_size=32", "data.batch_size=16", "data.num_workers=0",
        "trainer.max_epochs=2", "++trainer.max_steps=8", "++trainer.val_check_interval=4",  # A: 4 batches
        root=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    rows = read_csv(out / "tta.csv")
    assert [(r["start"], r["recipe"]) for r in rows] == [
        ("source", "tutorial"),
        ("source", "probe"),
        ("random", "tutorial"),
        ("random", "scratch"),
    ]
    curves = read_csv(out / "tta_curves.csv")
    for r in rows:
        points = [p for p in curves if (p["start"], p["recipe"]) == (r["start"], r["recipe"])]
        assert points, f"{r['recipe']} from {r['start']} has no validation on its curve"
        first = next((p for p in points if float(p["val_acc"]) >= 0.05), None)
        assert (r["reached"] == "True") == (first is not None)
        if first is not None:
            assert float(r["seconds_to_target"]) == pytest.approx(float(first["seconds"]), abs=0.05)
        assert 0.0 <= float(r["test_acc"]) <= 1.0
    tutorials = [r for r in rows if r["recipe"] == "tutorial"]
    # the tutorial runs stop at their first validation that reaches the low target, the first epoch's
    assert all(r["stopped"] == "target" and float(r["epochs_to_target"]) == 1.0 for r in tutorials)

    assert (out / "tta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "tta.md").read_text()
    assert "| source backbone (classes A) | tutorial | 32 |" in table
    assert "| random init | scratch | 32 |" in table
    assert table in result.stdout
    settings = json.loads((out / "tta.json").read_text())["settings"]
    assert settings["source_seconds"] > 0  # no --source-ckpt: the source was trained by this command
    assert Path(settings["source_ckpt"]).is_file()
    assert not (out / "runs" / "source-probe" / "checkpoints").exists()  # the runs' checkpoints are freed


def outcome(recipe: str, start: str, accuracies: list[float], stopped: str) -> Outcome:
    points = [{"seconds": 10.0 * (i + 1), "epochs": i + 1, "val_acc": a} for i, a in enumerate(accuracies)]
    return Outcome(start, recipe, 64, 0.95, points, points[-1]["seconds"], 0.9, stopped, cap_minutes=2.5)


def test_table_says_when_and_how_much_sooner_a_run_reached_the_target_or_that_it_did_not(
    tmp_path: Path,
) -> None:
    outcomes = [
        outcome("tutorial", "source", [0.5, 0.85, 0.8], "3 epochs"),  # its final accuracy: 0.8, at 30 s
        outcome("probe", "source", [0.9, 0.96], "target"),  # 0.8 at 10 s: 3× sooner; 0.95 at 20 s
        outcome("tutorial", "random", [0.1, 0.2], "time cap"),
        outcome("scratch", "random", [0.3, 0.6, 0.94], "time cap"),  # never 0.95
    ]
    rows = {(r["start"], r["recipe"]): r for r in (report.row(o, outcomes, 0.95) for o in outcomes)}

    probe = rows["source", "probe"]
    assert probe["reached"] and probe["seconds_to_target"] == 20.0 and probe["epochs_to_target"] == 2
    assert probe["seconds_to_tutorial_acc"] == 10.0 and probe["x_sooner"] == 3.0
    scratch = rows["random", "scratch"]
    assert not scratch["reached"] and scratch["seconds_to_target"] == "" and scratch["best_val_acc"] == 0.94
    assert scratch["seconds_to_tutorial_acc"] == 10.0 and scratch["x_sooner"] == 2.0  # 0.2: 20 s → 10 s
    tutorial = rows["source", "tutorial"]
    assert (
        not tutorial["reached"]
        and tutorial["seconds_to_tutorial_acc"] == 30.0
        and tutorial["x_sooner"] == 1.0
    )

    results = {
        "settings": {
            "target": 0.95, "data_dir": "d", "classes": 3, "images": {"train": 9}, "machine": "m",
            "threads": 2, "torch": "t", "load_average": [1.0, 2.0], "date": "now", "cap_minutes": 4,
            "budget_minutes": 30, "tutorial_epochs": 5, "tutorial_cap_minutes": 10,
            "source_ckpt": "s.ckpt", "source_seconds": 0.0, "total_seconds": 60.0, "command": "c",
        },
        "outcomes": [o.__dict__ for o in outcomes],
    }  # fmt: skip
    table = report.write(results, tmp_path)
    assert "the tutorial 5 epochs, at most 10 min; each project run at most 4 min" in table
    lines = table.splitlines()
    assert "| random init | scratch | 64 | not reached | — | 0.940 |" in table
    assert any(line.startswith("| source backbone (classes A) | probe | 64 | 20 s | 2 |") for line in lines)
    assert any(line.endswith("| target | 10 s | 3.0× |") for line in lines)
    assert "| time cap (2.5 min) | 10 s | 2.0× |" in table
    assert (tmp_path / "tta.png").stat().st_size > 0
    assert len(read_csv(tmp_path / "tta_curves.csv")) == 10


def test_the_tutorial_runs_its_whole_recipe_and_project_runs_share_what_the_budget_leaves(
    tiny_dataset: Path,
) -> None:
    """The tutorial's final accuracy is what the project runs are timed against: the budget never cuts it."""
    budget = ["--budget-minutes", "30", "--tutorial-cap-minutes", "12"]
    args = cli.parse_args(["tta", "--data-dir", str(tiny_dataset), *budget])
    assert args.tutorial_epochs == tutorial.EPOCHS == 5
    runs = time_to_accuracy.plan(args)  # source: tutorial + 5 recipes; random: tutorial + scratch
    began = time.time() - 20 * 60  # 20 of the 30 minutes spent
    assert time_to_accuracy.run_cap(args, began, runs, tutorial_minutes=5) == 12
    # after the source's tutorial, 6 project runs (5 recipes, scratch) share the 10 minutes left less the
    # random init tutorial's 5
    assert time_to_accuracy.run_cap(args, began, runs[1:], 5) == pytest.approx(5 / 6, abs=0.01)
    # once no tutorial is left to come, the last run has the rest, up to --cap-minutes
    assert time_to_accuracy.run_cap(args, began, runs[-1:], tutorial_minutes=5) == pytest.approx(4.0)
    assert time_to_accuracy.run_cap(args, time.time() - 40 * 60, runs[1:], 5) == 0.1  # overrun: the floor


def test_a_missing_source_checkpoint_or_data_folder_is_one_line_naming_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.ckpt"
    result = bench("--data-dir", str(tiny_dataset), "--source-ckpt", str(missing),
                   "--out", str(tmp_path / "out"), root=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --source-ckpt {missing} is not a file; pass the best checkpoint of a transfer_source run "
        "(<run dir>/checkpoints/epoch_*.ckpt), or leave --source-ckpt out to train one first"
    )
    assert not (tmp_path / "out").exists()  # nothing ran

    result = bench("--data-dir", str(tmp_path / "no-data"), root=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        f"argument --data-dir: data.data_dir={tmp_path / 'no-data'} is not a folder; "
        "pass the folder holding the data"
    )

    result = bench("--data-dir", str(tiny_dataset), "--starts", "imagenet", root=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "argument --starts: 'imagenet': choose from source, random"
    )

    result = bench("--data-dir", str(tiny_dataset), "--to-accuracy", "95", root=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(
        "argument --target/--to-accuracy: 95: give a fraction in (0, 1], e.g. 0.95"
    )


class AlwaysClassZero(nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0]).expand(len(images), 2)


def test_tutorial_accuracy_counts_correct_answers_over_images() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])  # batches of 2, 2 and 1: a short last batch
    batches = [(torch.zeros(len(chunk), 3, 4, 4), chunk) for chunk in labels.split(2)]
    loop = tutorial.TutorialLoop(
        [(torch.zeros(3, 4, 4), 0)], batch_size=2, num_classes=2, device=torch.device("cpu")
    )
    assert loop.accuracy(AlwaysClassZero(), batches) == pytest.approx(3 / 5)
