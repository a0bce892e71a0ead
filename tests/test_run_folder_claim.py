"""A run folder belongs to one process: two launches into one folder give one run and one refusal, and
eval, predict and export never write into a folder that holds another run's files (resume= still can)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli import REPO, TINY_CLI, start_train

from fruitres.run.folder_claim import RunFolderError, run_folder_claimed
from fruitres.run_folders import CLAIM_FILE, read_record, saved_overrides

HOLD = """
import sys, time
from fruitres.run.folder_claim import run_folder_claimed
with run_folder_claimed(sys.argv[1], "hydra.run.dir"):
    print("held", flush=True)
    time.sleep(600)
"""


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_module(verb: str, args: list[str], root: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", f"fruitres.{verb}", "trainer.accelerator=cpu", *args]
    env = {"FRUITRES_ROOT": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_a_folder_held_by_a_live_process_is_refused_and_taken_over_once_it_is_killed(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        in_use = rf"hydra.run.dir={tmp_path} is in use by process {holder.pid} on "
        with pytest.raises(RunFolderError, match=in_use), run_folder_claimed(tmp_path, "hydra.run.dir"):
            pass
        with monkeypatch.context() as ddp_rank_1:  # a DDP rank > 0 re-runs the command in rank 0's folder
            ddp_rank_1.setenv("LOCAL_RANK", "1")
            with run_folder_claimed(tmp_path, "hydra.run.dir"):
                pass
    finally:
        holder.kill()  # SIGKILL: no chance to release the claim
        holder.wait()
    assert (tmp_path / CLAIM_FILE).is_file()

    with caplog.at_level(logging.WARNING), run_folder_claimed(tmp_path, "hydra.run.dir"):
        assert f'"pid": {os.getpid()}' in (tmp_path / CLAIM_FILE).read_text()
    assert f"held by process {holder.pid}" in caplog.text and "taking it over" in caplog.text
    assert not (tmp_path / CLAIM_FILE).exists()


@pytest.mark.slow
def test_two_launches_into_one_folder_give_one_run_and_one_refusal_and_others_never_write_there(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_CLI, f"data.data_dir={tiny_dataset}", "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    launches = {seed: start_train([*args, f"seed={seed}"], tmp_path) for seed in (1, 2)}
    outputs = {seed: process.communicate(timeout=600)[0] for seed, process in launches.items()}

    statuses = {seed: process.returncode for seed, process in launches.items()}
    assert sorted(statuses.values()) == [0, 1], outputs
    (winner,) = [seed for seed, status in statuses.items() if status == 0]
    (loser,) = [seed for seed, status in statuses.items() if status == 1]
    (refusal,) = outputs[loser].strip().splitlines()
    assert refusal.startswith(f"hydra.run.dir={run_dir} ") and "give a" in refusal
    assert (
        f"seed={winner}" in saved_overrides(run_dir) and f"seed={winner}" in read_record(run_dir)["overrides"]
    )
    assert read_record(run_dir)["status"] == "ok"
    assert not (run_dir / CLAIM_FILE).exists()

    # predict into the finished training run's folder is refused and leaves it as it was
    checkpoint = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    trained = file_hashes(run_dir)
    refused = run_module(
        "predict",
        [f"ckpt_path={checkpoint}", f"inputs={tiny_dataset}/Test", f"hydra.run.dir={run_dir}"],
        tmp_path,
    )
    assert refused.returncode == 1 and "already holds a run" in refused.stderr, refused.stderr[-3000:]
    assert file_hashes(run_dir) == trained

    # a second export, or an eval, into an export's folder is refused and leaves the first model as it was
    export_dir = tmp_path / "export"
    exported = run_module("export", [f"ckpt_path={checkpoint}", f"hydra.run.dir={export_dir}"], tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    first = file_hashes(export_dir)
    for verb, extra in (("export", ["format=torchscript"]), ("eval", [])):
        again = run_module(verb, [f"ckpt_path={checkpoint}", *extra, f"hydra.run.dir={export_dir}"], tmp_path)
        assert again.returncode == 1, again.stderr[-3000:]
        (line,) = again.stderr.strip().splitlines()
        assert line.startswith(f"hydra.run.dir={export_dir} already holds a run")
        assert file_hashes(export_dir) == first

    # resume= still continues the training run in its own folder
    resumed = start_train([f"resume={run_dir}"], tmp_path)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-3000:]
    assert read_record(run_dir)["status"] == "ok"
