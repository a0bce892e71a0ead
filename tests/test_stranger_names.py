"""Class and file names come from a stranger's dataset: every CSV fruitres writes keeps them from starting a
formula (OWASP's CSV-injection rule), and the console shows them literally, never as Rich markup."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli import TINY_CLI, run_train
from conftest import TINY_IMAGE_SIZE

from fruitres.data.check import check_dataset
from fruitres.data.embedded import write_embedded_dataset
from fruitres.files import write_csv_whole
from fruitres.reports.eval_report import confused_pairs, per_class_rows, print_report
from fruitres.reports.predictions import Prediction, print_predictions

REPO = Path(__file__).resolve().parents[1]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Folder names (no "/"): formulas a spreadsheet would run, Rich markup, and a class that is a plain number.
HOSTILE_CLASSES = ["=1+2", "+SUM(1,1)", "-2+3", "@cmd", "[bold]x", "-2"]
ESCAPED = {"=1+2": "'=1+2", "+SUM(1,1)": "'+SUM(1,1)", "-2+3": "'-2+3", "@cmd": "'@cmd"}
# Markup a printed name must not turn into styles or links (these need not be valid folder names).
MARKUP_NAMES = ["[bold red]x[/]", "[link=https://example.org]y[/link]", "trailing\\", "a\\[b]c"]


def read_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.reader(file))


def is_plain_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return cell.lstrip("+-")[:1] in set("0123456789.")


def formula_cells(path: Path) -> list[str]:
    """The cells of a CSV a spreadsheet would run as a formula."""
    cells = [cell for row in read_cells(path) for cell in row]
    return [cell for cell in cells if cell.startswith(FORMULA_STARTS) and not is_plain_number(cell)]


# --- the rule, on one writer ---------------------------------------------------------------------------


def test_csv_cells_that_would_start_a_formula_get_a_quote_and_numbers_stay_numbers(tmp_path: Path) -> None:
    rows = [
        {"name": "=1+2", "value": -0.5},
        {"name": "+SUM(1,1)", "value": "-0.25"},
        {"name": "-2+3", "value": -3},
        {"name": "@cmd", "value": "+1e-3"},
        {"name": "\t=1", "value": "-inf"},
        {"name": "\r=1", "value": None},
        {"name": "-2", "value": Path("=path")},
        {"name": "Apple '=x", "value": "'=already quoted"},
    ]
    write_csv_whole(tmp_path / "table.csv", rows, ["name", "value", "=header"])

    assert read_cells(tmp_path / "table.csv") == [
        ["name", "value", "'=header"],
        ["'=1+2", "-0.5", ""],
        ["'+SUM(1,1)", "-0.25", ""],
        ["'-2+3", "-3", ""],
        ["'@cmd", "+1e-3", ""],
        ["'\t=1", "'-inf", ""],
        ["'\r=1", "", ""],
        ["-2", "'=path", ""],
        ["Apple '=x", "'=already quoted", ""],
    ]
    assert formula_cells(tmp_path / "table.csv") == []


# --- the rule, on the console ----------------------------------------------------------------------------


def test_eval_report_and_predictions_print_markup_in_names_literally(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # one line per row: names are not wrapped
    names = MARKUP_NAMES
    matrix = torch.tensor([[3, 1, 0, 0], [0, 4, 0, 0], [0, 2, 2, 0], [0, 0, 0, 4]])
    results = {
        "confusion_matrix": matrix,
        "precision": torch.tensor([1.0, 0.5, 1.0, 1.0]),
        "recall": torch.tensor([0.75, 1.0, 0.5, 1.0]),
        "f1": torch.tensor([0.86, 0.67, 0.67, 1.0]),
    }
    pairs = confused_pairs(matrix, names, top=5)
    print_report({"test/acc": 0.8125}, per_class_rows(results, names), pairs, show=10, num_images=16)
    report = capsys.readouterr().out
    predictions = [Prediction(f"/photos/{name}.jpg", names, [0.4, 0.3, 0.2, 0.1]) for name in names]
    predictions.append(Prediction("/photos/[red]bad[/red].jpg", error="cannot identify [bold]image[/bold]"))
    print_predictions(predictions, max_rows=10)
    table = capsys.readouterr().out

    for name, share in zip(names, ("40.0%", "30.0%", "20.0%", "10.0%"), strict=True):
        assert f"│ {name} " in report and f"{name} {share}" in table
    for prediction in predictions:  # paths as Path spells them ("//" is one "/")
        assert f"│ {Path(prediction.path).relative_to('/photos')} " in table
    assert "[red]bad[/red].jpg" in table and "unreadable: cannot identify [bold]image[/bold]" in table


def test_data_check_prints_markup_in_class_names_literally(tmp_path: Path) -> None:
    root = write_embedded_dataset(
        tmp_path / "fruits", num_classes=2, train_per_class=2, test_per_class=1, image_size=TINY_IMAGE_SIZE
    )
    for split in ("Training", "Test"):
        (root / split / sorted(os.listdir(root / split))[0]).rename(root / split / "[bold]x")
    shutil.copytree(root / "Training" / "[bold]x", root / "Training" / "[red]only here")

    result = subprocess.run(
        [sys.executable, "-m", "fruitres.data.check", str(root), "--per-class"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "│ [bold]x " in result.stdout and "│ [red]only here " in result.stdout  # the per-class table
    assert "[red]only here" in result.stdout.split("Classes only in Training/:")[1]
    assert check_dataset(root)["only_in_training"] == ["[red]only here"]


# --- end to end: train, eval and predict on a dataset of hostile class names -------------------------------


@pytest.fixture
def hostile_dataset(tmp_path: Path) -> Path:
    """A generated dataset whose class folders are named after formulas, markup and a negative number."""
    root = write_embedded_dataset(
        tmp_path / "fruits",
        num_classes=len(HOSTILE_CLASSES),
        train_per_class=12,
        test_per_class=4,
        image_size=TINY_IMAGE_SIZE,
        seed=0,
    )
    for split in ("Training", "Test"):
        for folder, name in zip(sorted((root / split).iterdir()), HOSTILE_CLASSES, strict=True):
            folder.rename(root / split / name)
    return root


def run_module(module: str, args: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FRUITRES_ROOT": str(root), "COLUMNS": "300"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_class_names_that_are_formulas_or_markup_are_escaped_in_every_csv_and_printed_literally(
    hostile_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_CLI, f"data.data_dir={hostile_dataset}", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    status, output = run_train(args, tmp_path)
    assert status == 0, output[-3000:]
    (checkpoint,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    eval_dir, predict_dir = tmp_path / "eval", tmp_path / "predict"
    common = [f"ckpt_path={checkpoint}", "trainer.accelerator=cpu", "data.num_workers=0"]

    evaluated = run_module("fruitres.eval", [*common, f"hydra.run.dir={eval_dir}"], tmp_path)
    predicted = run_module(
        "fruitres.predict",
        [
            *common,
            f"inputs={hostile_dataset / 'Test'}",
            f"top_k={len(HOSTILE_CLASSES)}",
            f"hydra.run.dir={predict_dir}",
        ],
        tmp_path,
    )

    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    written = sorted([*eval_dir.glob("*.csv"), *predict_dir.glob("*.csv")])
    assert {path.name for path in written} >= {"per_class.csv", "confused_pairs.csv", "predictions.csv"}
    assert len(written) == 4  # eval's three and predict's one
    for path in written:
        assert formula_cells(path) == [], path
    per_class = {row[0] for row in read_cells(eval_dir / "per_class.csv")[1:]}
    assert per_class == {ESCAPED.get(name, name) for name in HOSTILE_CLASSES}  # "-2" is a number: as it is
    for name in HOSTILE_CLASSES:  # the eval report's per-class table and predict's table, literally
        assert f"│ {name} " in evaluated.stdout, name
        assert name in predicted.stdout.split("Predictions for")[1], name
