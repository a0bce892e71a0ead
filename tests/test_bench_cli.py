"""`python -m fruitres.bench`: one command line, a subcommand per benchmark, each mode found from --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fruitres.bench import cli, peers, throughput, time_to_accuracy

REPO = Path(__file__).resolve().parents[1]


def bench_help(*arguments: str) -> str:
    """The help a real `python -m fruitres.bench ... --help` process prints, unwrapped (wide terminal)."""
    command = [sys.executable, "-m", "fruitres.bench", *arguments, "--help"]
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_top_level_help_lists_throughput_tta_and_peers_each_with_its_summary() -> None:
    lines = [line.split(maxsplit=1) for line in bench_help().splitlines()]
    summaries = {words[0]: words[1] for words in lines if len(words) == 2 and words[0] in cli.MODES}
    assert summaries == {
        "throughput": throughput.SUMMARY,
        "tta": time_to_accuracy.SUMMARY,
        "peers": peers.SUMMARY,
    }


def test_tta_help_lists_its_own_options_not_throughputs() -> None:
    text = bench_help("tta")
    options = ("--target", "--to-accuracy", "--data-dir", "--source-ckpt", "--recipes", "--budget-minutes")
    assert all(option in text for option in options)
    assert "--variants" not in text  # a throughput option


def test_without_a_mode_the_throughput_benchmark_runs() -> None:
    args = cli.parse_args(["--steps", "1", "data.num_workers=0"])
    assert args.mode == "throughput" and args.steps == 1 and args.overrides == ["data.num_workers=0"]
    assert args.argv == ["throughput", "--steps", "1", "data.num_workers=0"]  # the command its report records
    assert cli.parse_args([]).mode == "throughput"


def test_tta_target_defaults_to_0_95_and_to_accuracy_sets_it_too(tiny_dataset: Path) -> None:
    data = ["--data-dir", str(tiny_dataset)]
    assert cli.parse_args(["tta", *data]).target == 0.95
    assert cli.parse_args(["tta", *data, "--target", "0.9"]).target == 0.9
    assert cli.parse_args(["tta", *data, "--to-accuracy", "0.8"]).target == 0.8
