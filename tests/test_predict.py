"""`fruitres.predict`: top-k per file, JSON and CSV, and a corrupt file does not stop the others."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TrainedSweep, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.errors import ConfigError
from fruitres.predict import expand_inputs, predict
from fruitres.reports.multi_fruit import fruits_named
from fruitres.run_folders import tensorboard_events_dir

REPO = Path(__file__).resolve().parents[1]


def predict_config(checkpoint: Path, out: Path, inputs: str, *overrides: str):
    return compose_config(
        "predict",
        [f"ckpt_path={checkpoint}", f"inputs={inputs}", f"paths.output_dir={out}", "trainer=cpu", *overrides],
    )


@pytest.fixture
def mixed_folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    """Good images in nested folders, a corrupt .jpg, a truncated .jpg and a text note."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    classes = sorted(p for p in (tiny_dataset / "Test").iterdir())
    for index, class_dir in enumerate(classes[:3]):
        shutil.copy(class_dir / "0000.jpg", folder / f"good {index}.jpg")
    shutil.copy(classes[3] / "0001.jpg", folder / "more" / "good 3.jpg")
    (folder / "corrupt.jpg").write_bytes(b"this is not a JPEG at all")
    (folder / "truncated.jpg").write_bytes((classes[4] / "0000.jpg").read_bytes()[:300])
    (folder / "notes.txt").write_text("not an image; folders only yield image files")
    return folder


def test_predict_survives_corrupt_files_among_good_ones(
    trained_sweep: TrainedSweep, mixed_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    predictions = predict(predict_config(trained_sweep.checkpoint, out, f'"{mixed_folder}"', "top_k=3"))

    by_name = {Path(p.path).name: p for p in predictions}
    assert set(by_name) == {
        "good 0.jpg",
        "good 1.jpg",
        "good 2.jpg",
        "good 3.jpg",
        "corrupt.jpg",
        "truncated.jpg",
    }
    for name in ("corrupt.jpg", "truncated.jpg"):
        assert by_name[name].error and not by_name[name].classes
    for name in ("good 0.jpg", "good 1.jpg", "good 2.jpg", "good 3.jpg"):
        good = by_name[name]
        assert good.error is None and len(good.classes) == 3
        assert (
            good.probabilities == sorted(good.probabilities, reverse=True)
            and sum(good.probabilities) <= 1 + 1e-5
        )

    records = json.loads((out / "predictions.json").read_text())
    assert [r["path"] for r in records] == [p.path for p in predictions]
    with open(out / "predictions.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [row["path"] for row in rows] == [p.path for p in predictions]
    assert {Path(r["path"]).name for r in rows if r["error"]} == {"corrupt.jpg", "truncated.jpg"}
    assert all(row["class_1"] and float(row["probability_1"]) > 0 for row in rows if not row["error"])


def test_predict_agrees_with_the_runs_test_accuracy(
    trained_sweep: TrainedSweep, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Same images, same preprocessing and class order as in training: the top-1 hits match test/acc."""
    predictions = predict(
        predict_config(trained_sweep.checkpoint, tmp_path, f"{tiny_dataset}/Test", "data.batch_size=7")
    )

    hits = [Path(p.path).parent.name == p.classes[0] for p in predictions]
    events = EventAccumulator(
        str(tensorboard_events_dir(trained_sweep.run_dir)), size_guidance={"scalars": 0}
    )
    events.Reload()
    assert len(hits) == 50
    assert sum(hits) / len(hits) == pytest.approx(events.Scalars("test/acc")[-1].value, abs=1e-6)


def test_inputs_expand_folders_globs_and_lists_and_keep_named_non_images(mixed_folder: Path) -> None:
    from_folder = expand_inputs(str(mixed_folder))
    assert {p.name for p in from_folder} == {
        "good 0.jpg",
        "good 1.jpg",
        "good 2.jpg",
        "good 3.jpg",
        "corrupt.jpg",
        "truncated.jpg",
    }
    from_glob = expand_inputs(str(mixed_folder / "good *.jpg"))
    assert [p.name for p in from_glob] == ["good 0.jpg", "good 1.jpg", "good 2.jpg"]
    listed = expand_inputs(
        [str(mixed_folder / "notes.txt"), str(mixed_folder / "good 0.jpg"), str(mixed_folder)]
    )
    assert listed[0].name == "notes.txt" and len(listed) == 7, "a file named twice is predicted once"
    with pytest.raises(ConfigError, match="nothing-here"):
        expand_inputs(str(mixed_folder / "nothing-here*.png"))


@pytest.mark.slow
def test_predict_command_prints_a_table_and_writes_json_and_csv(
    trained_sweep: TrainedSweep, mixed_folder: Path, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "fruitres.predict",
        f"ckpt_path={trained_sweep.checkpoint}",
        f"inputs=[{mixed_folder / 'more'},{mixed_folder / 'corrupt.jpg'}]",
        "top_k=2",
    ]
    env = {**os.environ, "FRUITRES_ROOT": str(tmp_path / "root"), "COLUMNS": "200"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "good 3.jpg" in result.stdout and "unreadable" in result.stdout
    (run_dir,) = (tmp_path / "root" / "logs" / "predict" / "runs").iterdir()
    assert len(json.loads((run_dir / "predictions.json").read_text())) == 2
    assert (run_dir / "predictions.csv").is_file()


@pytest.fixture
def multi_fruit_folder(tiny_dataset: Path, tmp_path: Path) -> Path:
    """Photos of several fruits side by side, the fruits named in the file name as in Fruits-360's
    test-multiple_fruits/ (the tiny dataset's fruits: apple, pear, plum)."""
    from PIL import Image

    folder = tmp_path / "test-multiple_fruits"
    folder.mkdir()
    test = tiny_dataset / "Test"
    by_fruit = {
        "apple": test / "Apple Smooth Red",
        "pear": test / "Pear Speckled Yellow",
        "plum": test / "Plum Smooth Red",
    }
    for name, fruits in {
        "apple_pear.jpg": ["apple", "pear"],
        "Plums(lots)_1.jpg": ["plum", "plum"],
        "apples_Pears_plums.jpg": ["apple", "pear", "plum"],
        "photo 7.jpg": ["pear"],
    }.items():
        tiles = [Image.open(by_fruit[fruit] / f"000{i}.jpg").convert("RGB") for i, fruit in enumerate(fruits)]
        photo = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
        for i, tile in enumerate(tiles):
            photo.paste(tile, (i * tile.width, 0))
        photo.save(folder / name)
    return folder


@pytest.mark.parametrize("top_k", [5, 1])
def test_predict_counts_the_fruits_a_file_name_lists_that_are_in_the_top_k(
    trained_sweep: TrainedSweep, multi_fruit_folder: Path, tmp_path: Path, caplog, top_k: int
) -> None:
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="fruitres.predict"):
        predictions = predict(
            predict_config(trained_sweep.checkpoint, out, f'"{multi_fruit_folder}"', f"top_k={top_k}")
        )

    with open(out / "predictions.csv", newline="") as file:
        rows = {Path(row["path"]).name: row for row in csv.DictReader(file)}
    named = {name: row["fruits_named"] for name, row in rows.items()}
    assert named == {
        "apple_pear.jpg": "apple pear",
        "Plums(lots)_1.jpg": "plum",
        "apples_Pears_plums.jpg": "apple pear plum",
        "photo 7.jpg": "",
    }
    by_name = {Path(p.path).name: p for p in predictions}
    for name, row in rows.items():
        top_fruits = {c.split()[0].lower() for c in by_name[name].classes}
        expected = sum(fruit in top_fruits for fruit in row["fruits_named"].split())
        assert row["fruits_in_top_k"] == (str(expected) if row["fruits_named"] else "")
    if top_k == 5:  # every class is in the top-5: every named fruit is found
        found = {name: row["fruits_in_top_k"] for name, row in rows.items()}
        assert found == {
            "apple_pear.jpg": "2",
            "Plums(lots)_1.jpg": "1",
            "apples_Pears_plums.jpg": "3",
            "photo 7.jpg": "",
        }
    hits = sum(int(row["fruits_in_top_k"] or 0) for row in rows.values())
    summary = f"{hits} of 6 fruits named in 3 file name(s) are in the top-{top_k}"
    assert summary in caplog.text
    records = json.loads((out / "predictions.json").read_text())
    assert {Path(r["path"]).name: r["fruits_in_top_k"] for r in records}["photo 7.jpg"] is None
    assert (out / "multi_fruit.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("file_name", "fruits"),
    [
        ("apple_banana_orange.jpg", ["apple", "banana", "orange"]),
        ("Apples(lots)_1.jpg", ["apple"]),
        ("cherries_TOMATOES-limes 2.png", ["cherry", "tomato", "lime"]),
        ("peaches_peach.jpg", ["peach"]),
        ("r_123_100.jpg", []),
    ],
)
def test_file_name_words_match_class_fruits_in_any_case_and_number(file_name: str, fruits: list[str]) -> None:
    classes = ["Apple Red 1", "Banana", "Cherry 1", "Limes", "Orange", "Peach", "Tomato 1"]
    assert fruits_named(file_name, classes) == fruits
