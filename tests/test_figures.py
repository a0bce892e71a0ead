"""The pictures of a run: built from real predictions, readable, and in TensorBoard's event files."""

from __future__ import annotations

import io

import torch
from conftest import TrainedSweep
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.callbacks.figures import SplitPredictions
from fruitres.reports.figures import confusion_matrix_figure, per_class_bars, prediction_grid
from fruitres.run_folders import tensorboard_events_dir

NAMES = ["Apple", "Banana", "Cherry"]


def test_a_training_run_logs_inputs_and_val_and_test_figures_to_tensorboard(
    trained_sweep: TrainedSweep,
) -> None:
    events = EventAccumulator(str(tensorboard_events_dir(trained_sweep.run_dir)), size_guidance={"images": 0})
    events.Reload()
    expected = {"train/inputs"} | {
        f"{split}/{name}"
        for split in ("val", "test")
        for name in ("confusion_matrix", "per_class_accuracy", "predictions")
    }
    assert expected <= set(events.Tags()["images"])
    for tag in expected:
        (image,) = events.Images(tag)
        assert Image.open(io.BytesIO(image.encoded_image_string)).size == (image.width, image.height)


def test_split_predictions_sample_the_whole_split_and_keep_only_mistakes_as_mistakes() -> None:
    labels = torch.arange(5).repeat_interleave(20)  # sorted by class, as the test loader serves them
    logits = torch.nn.functional.one_hot(labels, 5).float() * 5
    logits[labels == 4] = torch.tensor([5.0, 0, 0, 0, 0])  # every class-4 image is taken for class 0
    predictions = SplitPredictions(
        [f"class {i}" for i in range(5)], max_images=10, device=torch.device("cpu")
    )
    for start in range(0, 100, 16):
        batch = slice(start, start + 16)
        predictions.update(torch.zeros(len(labels[batch]), 3, 4, 4), labels[batch], logits[batch])

    results = predictions.compute()
    assert results["confusion_matrix"][4, 0] == 20 and results["confusion_matrix"].sum() == 100
    assert results["recall"].tolist() == [1, 1, 1, 1, 0]
    assert len(set(predictions.examples.targets())) >= 3, "the sample must not be only the first classes"
    assert len(predictions.mistakes) == 10 and set(predictions.mistakes.targets()) == {4}
    assert set(predictions.mistakes.predictions()) == {0}


def test_confusion_matrix_figure_names_both_axes_and_writes_the_counts() -> None:
    matrix = torch.tensor([[5, 1, 0], [0, 6, 0], [2, 0, 3]])
    axis = confusion_matrix_figure(matrix, NAMES, "test").axes[0]
    assert [t.get_text() for t in axis.get_xticklabels()] == NAMES
    assert [t.get_text() for t in axis.get_yticklabels()] == NAMES
    assert sorted(t.get_text() for t in axis.texts) == sorted(["5", "1", "6", "2", "3"])


def test_per_class_bars_put_the_worst_class_on_top() -> None:
    axis = per_class_bars([0.9, 0.2, 0.6], NAMES, "accuracy", "recall").axes[0]
    screen_height = {
        t.get_text(): axis.transData.transform(t.get_position())[1] for t in axis.get_yticklabels()
    }
    labels_top_down = sorted(screen_height, key=screen_height.get, reverse=True)
    assert labels_top_down == ["Banana", "Cherry", "Apple"]


def test_prediction_grid_marks_wrong_predictions_in_red() -> None:
    figure = prediction_grid(torch.rand(3, 3, 8, 8), NAMES, ["Apple", "Cherry", "Cherry"], [0.9, 0.6, 0.8])
    titles = [axis.title for axis in figure.axes[:3]]
    assert [t.get_color() for t in titles] == ["green", "red", "green"]
    assert titles[1].get_text().startswith("✗ Cherry") and "true: Banana" in titles[1].get_text()
