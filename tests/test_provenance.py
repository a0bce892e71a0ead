"""What a run records about what produced it: code, command, versions, data, hardware, checkpoint."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch
from conftest import TrainedSweep, expected_cpu_precision
from test_sweeps import logged_hparams, logged_provenance

from fruitres.data.cache import CACHE_PREFIX
from fruitres.run.provenance import CHECKPOINT_KEY, PACKAGES, git_state
from fruitres.run_folders import read_record

REPO = Path(__file__).resolve().parents[1]


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout


def test_git_state_flags_a_dirty_tree_with_a_hash_of_its_diff(tmp_path: Path) -> None:
    assert git_state(tmp_path) == {"commit": None, "dirty": None, "diff_sha256": None}  # not a checkout

    git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("lr = 1e-3\n")
    git(tmp_path, "add", "code.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "HEAD").strip()
    assert git_state(tmp_path) == {"commit": commit, "dirty": False, "diff_sha256": None}

    (tmp_path / "code.py").write_text("lr = 3e-3\n")
    dirty = git_state(tmp_path)
    diff = git(tmp_path, "diff", "HEAD", "--no-color", "--no-ext-diff")
    assert dirty == {
        "commit": commit,
        "dirty": True,
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest(),
    }
    (tmp_path / "code.py").write_text("lr = 1e-2\n")
    assert git_state(tmp_path)["diff_sha256"] != dirty["diff_sha256"]  # another edit, another hash


def test_a_training_run_records_its_provenance_and_its_checkpoints_carry_it(
    trained_sweep: TrainedSweep, tiny_dataset: Path
) -> None:
    provenance = read_record(trained_sweep.run_dir)["provenance"]

    code = provenance["git"]  # the checkout may have moved on since: the commit is in its history
    git(REPO, "merge-base", "--is-ancestor", code["commit"], "HEAD")
    assert isinstance(code["dirty"], bool) and (len(code["diff_sha256"] or "") == 64) == code["dirty"]
    assert provenance["command"].startswith(f"{Path(sys.executable).name} -m fruitres.train -m ")
    assert set(provenance["versions"]) == {"python", *PACKAGES} and all(provenance["versions"].values())
    assert provenance["versions"]["torch"] == torch.__version__.split("+")[0]

    data = provenance["data"]
    assert data["root"] == str(tiny_dataset.resolve()) and data["num_classes"] == 5
    assert {split: (s["images"], s["classes"]) for split, s in data["splits"].items()} == {
        "train": (180, 5),
        "val": (20, 5),
        "test": (50, 5),
    }
    cache_dir = trained_sweep.sweep_dir.parents[3] / "data" / "cache"  # <root>/logs/train/multiruns/<time>
    for split in data["splits"].values():  # the fingerprint is the image cache's key
        assert (cache_dir / f"{CACHE_PREFIX}{split['fingerprint']}.npy").is_file()

    hardware = provenance["hardware"]
    assert hardware["precision"] == expected_cpu_precision() and hardware["devices"] == 1  # embedded: fastest
    assert hardware["cpu_cores"] == os.cpu_count() and hardware["cpu"]
    assert hardware["gpu_count"] == torch.cuda.device_count()

    stored = torch.load(trained_sweep.checkpoint, map_location="cpu", weights_only=True)[CHECKPOINT_KEY]
    assert stored["git"] == provenance["git"] and stored["data"]["splits"]["train"] == data["splits"]["train"]
    assert data["splits"]["test"]["tested"] == 50  # written after testing, so only in the record

    shown = logged_provenance(trained_sweep.run_dir)  # TensorBoard's Text tab
    assert f"| git.commit | {provenance['git']['commit']} |" in shown
    assert f"| data.splits.test.fingerprint | {data['splits']['test']['fingerprint']} |" in shown
    assert not [name for name in logged_hparams(trained_sweep.run_dir) if name.startswith("provenance")]


def test_eval_records_the_checkpoints_own_provenance(trained_sweep: TrainedSweep, tmp_path: Path) -> None:
    overrides = [f"ckpt_path={trained_sweep.checkpoint}", "trainer.accelerator=cpu", "data.num_workers=0"]
    command = [sys.executable, "-m", "fruitres.eval", *overrides, f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "FRUITRES_ROOT": str(trained_sweep.sweep_dir.parents[3])}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    provenance = read_record(tmp_path)["provenance"]
    trained = read_record(trained_sweep.run_dir)["provenance"]
    assert provenance["command"].startswith(f"{Path(sys.executable).name} -m fruitres.eval ")
    assert provenance["checkpoint"]["path"] == str(trained_sweep.checkpoint)
    assert provenance["checkpoint"]["provenance"]["command"] == trained["command"]
    tested, trained_test = provenance["data"]["splits"]["test"], trained["data"]["splits"]["test"]
    assert (tested["fingerprint"], tested["images"]) == (trained_test["fingerprint"], trained_test["images"])
    assert provenance["hardware"]["precision"] == expected_cpu_precision()  # trainer/default.yaml's
