"""The real TensorBoard server on a loopback port serves what the runs of a finished sweep logged."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import TrainedSweep

from fruitres.reports.sweep_report import FIGURE_TAG, SUMMARY_RUN, TABLE_TAG
from fruitres.run.hparams import CURATED_KEYS, METRICS
from fruitres.run_folders import tensorboard_events_dir

PNG_MAGIC = b"\x89PNG"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def tensorboard_url(trained_sweep: TrainedSweep, tmp_path: Path) -> Iterator[str]:
    """`tensorboard --logdir <sweep dir>` on 127.0.0.1, once it has read both runs; stopped after."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "tensorboard.main",
        f"--logdir={trained_sweep.sweep_dir}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--reload_interval=1",
    ]
    with open(tmp_path / "tensorboard.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        expected = tensorboard_runs(trained_sweep)
        while not loaded(fetch_json(url, "/data/plugin/scalars/tags", missing={}), expected):
            assert server.poll() is None, (tmp_path / "tensorboard.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "TensorBoard did not load the runs in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def tensorboard_runs(trained_sweep: TrainedSweep) -> list[str]:
    """The sweep's runs as `tensorboard --logdir <sweep dir>` names them: their event folders' paths."""
    return [
        tensorboard_events_dir(run).relative_to(trained_sweep.sweep_dir).as_posix()
        for run in trained_sweep.runs
    ]


def loaded(scalar_tags: dict, runs: list[str]) -> bool:
    """Every run read up to its wall time, logged last (TensorBoard loads runs in the background)."""
    return all("time/wall_s" in scalar_tags.get(run, {}) for run in runs)


def fetch(url: str, path: str, **query: str) -> bytes:
    with urllib.request.urlopen(
        f"{url}{path}{'?' + urlencode(query) if query else ''}", timeout=30
    ) as response:
        return response.read()


def post_json(url: str, path: str, body: dict):
    request = urllib.request.Request(
        f"{url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def fetch_json(url: str, path: str, missing=None, **query: str):
    try:
        return json.loads(fetch(url, path, **query))
    except (urllib.error.URLError, ConnectionError):
        if missing is None:
            raise
        return missing


def test_tensorboard_serves_each_runs_scalars_and_figures_over_http(
    trained_sweep: TrainedSweep, tensorboard_url: str
) -> None:
    runs = tensorboard_runs(trained_sweep)
    assert sorted(fetch_json(tensorboard_url, "/data/runs")) == sorted([*runs, SUMMARY_RUN])

    scalar_tags = fetch_json(tensorboard_url, "/data/plugin/scalars/tags")
    image_tags = fetch_json(tensorboard_url, "/data/plugin/images/tags")
    for run in runs:
        assert {"train/loss_epoch", "val/acc", "val/acc_best", "test/acc", "test/acc_ci_low"} <= scalar_tags[
            run
        ].keys()
        assert not [tag for tag in scalar_tags[run] if tag.startswith("hp/")]  # no flat lines from step 0
        assert {
            "train/inputs",
            "val/confusion_matrix",
            "test/confusion_matrix",
            "test/predictions",
        } <= image_tags[run].keys()

    ((_, step, test_acc),) = fetch_json(
        tensorboard_url, "/data/plugin/scalars/scalars", run=runs[0], tag="test/acc"
    )
    assert 0 <= test_acc <= 1 and step > 0
    (image,) = fetch_json(
        tensorboard_url, "/data/plugin/images/images", run=runs[0], tag="test/confusion_matrix"
    )
    png = fetch(tensorboard_url, f"/data/plugin/images/individualImage?{image['query']}")
    assert png.startswith(PNG_MAGIC) and len(png) > 5_000


def test_the_sweep_summary_run_serves_the_table_and_the_figure(
    trained_sweep: TrainedSweep, tensorboard_url: str
) -> None:
    deadline = time.monotonic() + 60  # the summary is written after the jobs' runs: it may load last
    while SUMMARY_RUN not in fetch_json(tensorboard_url, "/data/plugin/images/tags"):
        assert time.monotonic() < deadline, "TensorBoard did not load the sweep_summary run in 60 s"
        time.sleep(0.5)
    (image,) = fetch_json(tensorboard_url, "/data/plugin/images/images", run=SUMMARY_RUN, tag=FIGURE_TAG)
    assert fetch(tensorboard_url, f"/data/plugin/images/individualImage?{image['query']}").startswith(
        PNG_MAGIC
    )
    (text,) = fetch_json(
        tensorboard_url, "/data/plugin/text/text", run=SUMMARY_RUN, tag=f"{TABLE_TAG}/text_summary"
    )
    assert "model.optimizer.lr" in text["text"] and "test/acc" in text["text"]


def test_hparams_tab_shows_the_swept_key_first_runs_named_by_their_values_and_the_metrics(
    trained_sweep: TrainedSweep, tensorboard_url: str
) -> None:
    experiment = post_json(tensorboard_url, "/data/plugin/hparams/experiment", {"experimentName": ""})
    columns = [info["name"] for info in experiment["hparamInfos"]]
    assert columns[0] == "model.optimizer.lr"  # the key the sweep varies
    assert set(CURATED_KEYS) <= set(columns) and len(columns) < 20
    assert not [name for name in columns if "_target_" in name or "provenance" in name or "_convert_" in name]
    assert [info["name"]["tag"] for info in experiment["metricInfos"]] == list(METRICS)

    groups = post_json(
        tensorboard_url,
        "/data/plugin/hparams/session_groups",
        {"experimentName": "", "startIndex": 0, "sliceSize": 100, "allowedStatuses": ["STATUS_UNKNOWN"]},
    )["sessionGroups"]
    assert sorted(group["name"] for group in groups) == ["lr=0.0005", "lr=0.002"]  # the Trial IDs
    for group in groups:
        assert group["name"] == f"lr={group['hparams']['model.optimizer.lr']}"
        metrics = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
        assert set(METRICS) <= metrics.keys()
        assert 0 <= metrics["test/acc_ci_low"] <= metrics["test/acc"] <= metrics["test/acc_ci_high"] <= 1
        assert metrics["time/wall_s"] > 0
    served = fetch_json(tensorboard_url, "/data/runs")
    assert all(run == SUMMARY_RUN or run.split("/")[-1].startswith("lr=") for run in served)
