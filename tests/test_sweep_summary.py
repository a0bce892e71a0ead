"""The sweep's own summary: its table and a figure of the optimized metric against each swept key,
written into the sweep folder and into a TensorBoard run `sweep_summary` beside the jobs' runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TrainedSweep
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fruitres.reports.sweep_figure import sweep_figure
from fruitres.reports.sweep_report import (
    FIGURE_FILE,
    FIGURE_TAG,
    MARKDOWN_FILE,
    SUMMARY_RUN,
    TABLE_TAG,
)

PNG_MAGIC = b"\x89PNG"


def summary_events(sweep_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(sweep_dir / SUMMARY_RUN), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    return events


def test_a_finished_sweep_has_its_table_and_figure_in_a_tensorboard_run_of_its_own(
    trained_sweep: TrainedSweep,
) -> None:
    sweep_dir = trained_sweep.sweep_dir
    figure = (sweep_dir / FIGURE_FILE).read_bytes()
    assert figure.startswith(PNG_MAGIC)
    events = summary_events(sweep_dir)
    (text,) = events.Tensors(f"{TABLE_TAG}/text_summary")
    assert text.tensor_proto.string_val[0].decode() == (sweep_dir / MARKDOWN_FILE).read_text()
    (image,) = events.Images(FIGURE_TAG)
    assert image.encoded_image_string.startswith(PNG_MAGIC)
    assert text.step == image.step == len(trained_sweep.runs)  # drawn from this many finished jobs


def test_rebuilding_the_report_replaces_the_summary_run_rather_than_adding_to_it(
    trained_sweep: TrainedSweep,
) -> None:
    sweep_dir = trained_sweep.sweep_dir
    (sweep_dir / FIGURE_FILE).unlink()
    for _ in range(2):
        subprocess.run([sys.executable, "-m", "fruitres.reports.sweep_report", str(sweep_dir)], check=True)
    assert (sweep_dir / FIGURE_FILE).read_bytes().startswith(PNG_MAGIC)
    assert len(list((sweep_dir / SUMMARY_RUN).glob("events.out.tfevents.*"))) == 1
    assert len(summary_events(sweep_dir).Images(FIGURE_TAG)) == 1


def test_the_figure_puts_lr_on_a_log_axis_frozen_stages_in_categories_and_averages_seeds() -> None:
    points = [
        ({"model.optimizer.lr": lr, "model.frozen_stages": frozen, "seed": seed}, score)
        for lr, frozen, seed, score in [
            ("1e-3", "0", "0", 0.6),
            ("1e-3", "0", "1", 0.8),
            ("1e-2", "0", "0", 0.5),
            ("1e-3", "5", "0", 0.3),
            ("1e-2", "5", "0", 0.4),
        ]
    ]
    figure = sweep_figure(points, "val/acc_best", "a sweep")
    lr_axis, frozen_axis = figure.axes
    assert lr_axis.get_xlabel() == "model.optimizer.lr" and lr_axis.get_xscale() == "log"
    assert frozen_axis.get_xscale() == "linear"
    assert [label.get_text() for label in frozen_axis.get_xticklabels()] == ["0", "5"]
    legend = [text.get_text() for text in lr_axis.get_legend().get_texts()]
    assert legend == ["frozen_stages=0", "frozen_stages=5"]  # one line per value of the other key
    assert [text.get_text() for text in frozen_axis.get_legend().get_texts()] == ["lr=1e-3", "lr=1e-2"]
    seeds_line, *_ = lr_axis.containers[0]  # frozen_stages=0: two seeds at lr=1e-3, averaged
    assert list(seeds_line.get_xdata()) == [1e-3, 1e-2]
    assert list(seeds_line.get_ydata()) == pytest.approx([0.7, 0.5])


def test_a_sweep_of_seeds_alone_has_no_figure() -> None:
    assert sweep_figure([({"seed": "0"}, 0.5), ({"seed": "1"}, 0.6)], "val/acc_best", "seeds") is None
