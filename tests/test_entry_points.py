"""Every entry point composes with every trainer config, and its resolvers are registered on import."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import CONF_DIR, compose_config
from omegaconf import OmegaConf

ENTRY_POINTS = ("train", "eval", "predict", "export")
TRAINERS = sorted(path.stem for path in (CONF_DIR / "trainer").glob("*.yaml") if path.stem != "default")
REQUIRED = {
    "eval": ["ckpt_path=x.ckpt"],
    "predict": ["ckpt_path=x.ckpt", "inputs=x"],
    "export": ["ckpt_path=x.ckpt"],
}


def test_every_trainer_config_is_covered() -> None:
    assert {"auto", "cpu", "gpu", "ddp", "ddp_cpu"} <= set(TRAINERS)


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_entry_point_composes_and_resolves_with_every_trainer(
    entry_point: str, trainer: str, tmp_path: Path
) -> None:
    overrides = [f"trainer={trainer}", f"paths.output_dir={tmp_path}", *REQUIRED.get(entry_point, [])]
    cfg = compose_config(entry_point, overrides)
    resolved = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert resolved["_target_"] == "lightning.pytorch.Trainer"
    assert resolved["precision"] in ("32-true", "bf16-mixed", "16-mixed")


def cfg_job(entry_point: str, trainer: str, cwd: Path) -> subprocess.CompletedProcess:
    overrides = [f"trainer={trainer}", *REQUIRED.get(entry_point, [])]
    command = [sys.executable, "-m", f"fruitres.{entry_point}", *overrides, "--cfg", "job", "--resolve"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # 20 interpreter starts (torch, Lightning): about 3 minutes on 2 cores
def test_cfg_job_prints_the_resolved_config_of_every_entry_point_and_trainer(tmp_path: Path) -> None:
    """`python -m fruitres.<verb> trainer=<t> --cfg job --resolve`, run from outside the repository."""
    pairs = [(entry_point, trainer) for entry_point in ENTRY_POINTS for trainer in TRAINERS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda pair: cfg_job(*pair, tmp_path), pairs))
    for (entry_point, trainer), result in zip(pairs, results, strict=True):
        assert result.returncode == 0, f"{entry_point} trainer={trainer}: {result.stderr[-2000:]}"
        printed = OmegaConf.create(result.stdout)
        assert printed.task_name == entry_point
        assert printed.trainer.precision in ("32-true", "bf16-mixed", "16-mixed"), (entry_point, trainer)


# case: (entry point, arguments ({tmp} = a folder with the planted files), text of the one error line)
BAD_INVOCATIONS = {
    "eval_without_checkpoint": ("eval", [], "ckpt_path is required; pass a .ckpt of a training run"),
    "eval_empty_checkpoint": ("eval", ["ckpt_path={tmp}/empty.ckpt"], "empty.ckpt is truncated or not a"),
    "predict_missing_checkpoint": (
        "predict",
        ["ckpt_path={tmp}/gone.ckpt", "inputs={tmp}"],
        "gone.ckpt is not allowed; use an existing .ckpt file",
    ),
    "predict_glob_matching_nothing": (
        "predict",
        ["ckpt_path={tmp}/empty.ckpt", "inputs={tmp}/*.png"],
        "*.png matches no file; give an image, a folder or a glob",
    ),
    "export_garbage_checkpoint": ("export", ["ckpt_path={tmp}/garbage.ckpt"], "garbage.ckpt is truncated"),
    "export_unknown_format": (
        "export",
        ["ckpt_path={tmp}/empty.ckpt", "format=tflite"],
        "format=tflite is not allowed; use onnx or torchscript",
    ),
}


@pytest.fixture(scope="module")
def bad_invocations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("bad-invocations")
    (tmp / "empty.ckpt").write_bytes(b"")
    (tmp / "garbage.ckpt").write_bytes(b"\x00not a torch file")

    def run(case: str) -> subprocess.CompletedProcess:
        entry_point, args, _ = BAD_INVOCATIONS[case]
        command = [sys.executable, "-m", f"fruitres.{entry_point}", *(a.format(tmp=tmp) for a in args)]
        env = {**os.environ, "FRUITRES_ROOT": str(tmp / case)}
        return subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(BAD_INVOCATIONS, pool.map(run, BAD_INVOCATIONS), strict=True))


@pytest.mark.parametrize("case", BAD_INVOCATIONS)
def test_fixable_errors_of_every_entry_point_end_with_one_line(case: str, bad_invocations) -> None:
    result = bad_invocations[case]
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    assert [line for line in output.splitlines() if BAD_INVOCATIONS[case][2] in line], output[-2000:]
