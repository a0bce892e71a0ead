"""Training on a folder with problems, and bad configuration: one clear line and exit status 1, no traceback
wall, or the documented skip of unreadable images."""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cli import TINY_CLI, run_train
from conftest import TINY_IMAGE_SIZE, compose_config, tiny_train_overrides
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from fruitres.data.folders import DatasetLayoutError
from fruitres.errors import ConfigError
from fruitres.run.config_checks import validate_config
from fruitres.train import train

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(path.stem for path in (REPO / "conf" / "experiment").glob("*.yaml"))


def first_class(split: Path) -> Path:
    return min(p for p in split.iterdir() if p.is_dir())


def add_problem_files(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Plant every kind of file a real folder holds in Training/<first class>.

    Returns (files that must be ignored, images that must be converted, files that cannot be read).
    """
    folder = first_class(root / "Training")
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    photo = Image.fromarray(pixels)
    convertible = {
        "grey.jpg": photo.convert("L"),
        "alpha.png": photo.convert("RGBA"),
        "palette.png": photo.convert("P"),
        "cmyk.jpg": photo.convert("CMYK"),
        "bilevel.png": photo.convert("1"),
        "odd size.jpg": photo.resize((57, 23)),
    }
    for name, image in convertible.items():
        image.save(folder / name)
    good_jpeg = (folder / "grey.jpg").read_bytes()
    unreadable = {
        "corrupt.jpg": os.urandom(2000),
        "empty.jpg": b"",
        "cut off.jpg": good_jpeg[: len(good_jpeg) // 2],
    }
    ignored = {
        ".DS_Store": os.urandom(100),
        "Thumbs.db": os.urandom(100),
        "notes.txt": b"picked 2019",
        "._x.jpg": b"x",
    }
    for name, data in (unreadable | ignored).items():
        (folder / name).write_bytes(data)
    (root / "Training" / ".DS_Store").write_bytes(os.urandom(100))
    (root / "Training" / "README.txt").write_text("not a class")
    (root / "Training" / ".ipynb_checkpoints").mkdir()
    return (
        [folder / name for name in ignored],
        [folder / name for name in convertible],
        [folder / name for name in unreadable],
    )


@pytest.fixture
def problem_tree(tiny_dataset: Path, tmp_path: Path) -> tuple[Path, list[Path], list[Path], list[Path]]:
    root = tmp_path / "fruits"
    shutil.copytree(tiny_dataset, root)
    return root, *add_problem_files(root)


def test_problem_folder_is_read_with_one_warning_listing_the_unreadable_images(
    problem_tree, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, ignored, convertible, unreadable = problem_tree
    cfg = compose_config("train", tiny_train_overrides(root, tmp_path))
    datamodule = instantiate(cfg.data)
    with caplog.at_level(logging.WARNING):
        datamodule.setup("fit")

    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all(str(path) in warning for path in unreadable), warning
    assert not any(path.name in warning for path in ignored + convertible)
    train_val = len(datamodule.datasets["train"]) + len(datamodule.datasets["val"])
    assert train_val == 5 * 40 + len(convertible)
    images, _ = next(iter(datamodule.train_dataloader()))
    assert images.shape[1:] == (3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)


def test_problem_folder_trains_end_to_end(problem_tree, tmp_path: Path) -> None:
    root, *_ = problem_tree
    cfg = compose_config("train", tiny_train_overrides(root, tmp_path))
    with open_dict(cfg):
        cfg.trainer.fast_dev_run = True
    assert "test/acc" in train(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", "data.val_fraction=1.5 is not allowed; use a number > 0 and < 1"),
        ("data.val_fraction=0", "data.val_fraction=0 is not allowed; use a number > 0 and < 1, e.g. 0.1"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed; use an integer ≥ 1"),
        ("model.frozen_stages=-1", "model.frozen_stages=-1 is not allowed; use an integer 0..5"),
        ("model.frozen_stages=two", "model.frozen_stages=two is not allowed; use an integer 0..5"),
        ("data.on_bad_image=ignore", "data.on_bad_image=ignore is not allowed; use skip or error"),
        (
            "model.arch=resnet99",
            "model.arch=resnet99 is not allowed; use a torchvision classification model of the families",
        ),
        (
            "model.weights=IMAGENET1K_V9",
            "model.weights=IMAGENET1K_V9 is not allowed for resnet18; use null or one of",
        ),
        ("model.optimizer.lr=0", "model.optimizer.lr=0 is not allowed; use a number > 0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 is not allowed; use an integer ≥ 1, or -1"),
        ("ckpt_path=/no/such.ckpt", "ckpt_path=/no/such.ckpt is not allowed; use an existing .ckpt file"),
        ("data.train_per_class=0", "data.train_per_class=0 is not allowed; use null (all) or an integer ≥ 1"),
        ("data.image_size=8", "data.image_size=8 is not allowed; use an integer ≥ 16"),
        (
            "data.interpolation=cubic",
            "data.interpolation=cubic is not allowed; use null (the backbone's own) or one of nearest,",
        ),
        (
            "data.mean=[0.5,0.5]",
            "data.mean=[0.5, 0.5] is not allowed; use null (the backbone's own) or three",
        ),
        (
            "data.std=[0.5,0,0.5]",
            "data.std=[0.5, 0, 0.5] is not allowed; use null (the backbone's own) or three",
        ),
        ("seed=-1", "seed=-1 is not allowed; use an integer 0..4294967295"),
        ("model.optimizer.lr=inf", "model.optimizer.lr=inf is not allowed; use a number > 0"),
        ("data.classes=[Apple]", "data.classes=['Apple'] is not allowed; use null (every class), a text"),
        (
            "trainer.devices=3",
            "trainer.devices=3 is not allowed; use 1 on the CPU; several CPU processes are DDP",
        ),
        ("+data.batchsize=8", "data.batchsize is not a setting of data; did you mean data.batch_size=...?"),
    ],
)
def test_out_of_range_value_names_the_key_the_value_and_what_is_allowed(override: str, message: str) -> None:
    cfg = compose_config("train", [override])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_fastest_precision_passes_where_it_is_timed_and_is_one_line_elsewhere(tmp_path: Path) -> None:
    for task in ("train", "lr_find"):
        validate_config(compose_config(task, ["trainer.precision=fastest"]))
    checkpoint = tmp_path / "a.ckpt"
    checkpoint.write_bytes(b"")  # the precision is checked before any checkpoint is read
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}", "trainer.precision=fastest"])
    with pytest.raises(ConfigError) as error:
        validate_config(cfg)
    assert str(error.value).startswith("trainer.precision=fastest is not allowed; use one of ")
    assert "fastest" not in str(error.value).partition("use one of")[2] and "\n" not in str(error.value)


def test_several_cpu_processes_pass_when_ddp_is_asked_for_by_name() -> None:
    validate_config(compose_config("train", ["trainer=ddp_cpu", "trainer.devices=3"]))


def test_more_data_workers_than_cores_are_cut_to_the_cores_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = compose_config("train", ["data.num_workers=4096"])
    with caplog.at_level(logging.WARNING, logger="fruitres.run.config_checks"):
        validate_config(cfg)
    assert cfg.data.num_workers == len(os.sched_getaffinity(0))
    (record,) = caplog.records
    assert record.getMessage().startswith("data.num_workers=4096 is more than the")


def test_unreachable_mlflow_server_is_refused_at_once_naming_the_key() -> None:
    cfg = compose_config("train", ["logger=mlflow", "logger.mlflow.tracking_uri=http://127.0.0.1:9"])
    with pytest.raises(ConfigError, match=r"^logger.mlflow.tracking_uri=http://127.0.0.1:9 does not answer"):
        validate_config(cfg)


def test_weights_path_that_is_a_text_file_is_refused_without_torchs_unpickling_advice(tmp_path: Path) -> None:
    notes = tmp_path / "weights.pth"
    notes.write_text("these are not weights")
    cfg = compose_config("train", [f"model.weights_path={notes}"])
    with pytest.raises(ConfigError, match=r"weights.pth is not a weights file torch.save wrote") as error:
        validate_config(cfg)
    assert "weights_only" not in str(error.value)


def test_weights_path_of_another_architecture_is_refused_naming_both(tmp_path: Path) -> None:
    checkpoint = tmp_path / "resnet18.ckpt"
    torch.save({"hyper_parameters": {"arch": "resnet18"}, "state_dict": {}}, checkpoint)
    cfg = compose_config("train", [f"model.weights_path={checkpoint}", "model.arch=resnet34"])
    with pytest.raises(
        ConfigError, match=r"holds resnet18 weights, not model.arch=resnet34's; use model.arch"
    ):
        validate_config(cfg)


def test_preprocessing_set_by_hand_or_left_to_the_backbone_passes_the_checks() -> None:
    for given in (["data.mean=[0.5,0.5,0.5]", "data.std=[0.5,0.5,0.5]", "data.interpolation=bicubic"], []):
        validate_config(compose_config("train", [*given, "data.image_size=null"]))


def test_mixing_a_linear_probe_on_cached_features_is_refused_naming_both_keys_and_the_fix() -> None:
    probe = ["experiment=resnet18_linear_probe", "model.weights=null", "model/mix=mixup_cutmix"]
    with pytest.raises(ConfigError) as error:
        validate_config(compose_config("train", probe))
    assert str(error.value) == (
        "model.mix=MixupCutmix is not allowed; use null with callbacks.linear_probe_cache on a linear probe: "
        "its head trains on cached features, which are never mixed; drop model/mix, or set "
        "callbacks.linear_probe_cache=null to mix the images"
    )
    validate_config(
        compose_config("train", [*probe, "callbacks.linear_probe_cache=null"])
    )  # the live backbone
    validate_config(compose_config("train", [*probe, "model.frozen_stages=4"]))  # layer4 trains: no cache
    validate_config(compose_config("train", [*probe, "+data/augment=random_erasing"]))  # augmented: no cache


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_experiment_passes_validation(experiment: str) -> None:
    validate_config(compose_config("train", [f"experiment={experiment}"]))


def test_unknown_key_is_refused_by_hydra_with_a_hint() -> None:
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data.bogus'"):
        compose_config("train", ["data.bogus=1"])


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(MissingConfigException, match=r"Could not find 'model/resnet99'") as error:
        compose_config("train", ["model=resnet99"])
    assert "resnet18" in str(error.value)


# --- the same through the command line, in real processes ----------------------------------------------


def planted(tiny_dataset: Path, root: Path, plant) -> Path:
    data = root / "fruits"
    shutil.copytree(tiny_dataset, data)
    plant(data)
    return data


def empty_class(data: Path) -> None:
    (data / "Training" / "Plum Empty").mkdir()


def only_test(data: Path) -> None:
    shutil.rmtree(data / "Training")


def unknown_test_class(data: Path) -> None:
    (data / "Test" / "Kiwi Golden").mkdir()
    Image.new("RGB", (32, 32), "green").save(data / "Test" / "Kiwi Golden" / "0.jpg")


def corrupt_image(data: Path) -> None:
    (first_class(data / "Training") / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (only_test, r"fruits has no training folder \(Training/ or train/\); name it: data\.splits\.train="),
        (unknown_test_class, r"Test has classes that the training folder lacks: Kiwi Golden; add them to"),
    ],
)
def test_data_layout_problem_stops_the_run_at_its_start_naming_the_path(
    plant, message: str, tiny_dataset: Path, tmp_path: Path
) -> None:
    data = planted(tiny_dataset, tmp_path, plant)
    with pytest.raises(DatasetLayoutError, match=message):
        train(compose_config("train", tiny_train_overrides(data, tmp_path)))


# case: (overrides, plant into a copy of the tiny dataset or None, text the one error line holds)
CLI_CASES = {
    "frozen_stages": (
        ["model.frozen_stages=9"],
        None,
        "model.frozen_stages=9 is not allowed; use an integer 0..5",
    ),
    "unknown_experiment": (["experiment=nope"], None, "Could not find 'experiment/nope'"),
    "missing_data_dir": (
        ["data.data_dir={root}/nowhere"],
        None,
        "nowhere is not a folder; pass the folder",
    ),
    "empty_class": ([], empty_class, "Plum Empty holds no images; add images or delete the empty folder"),
    "corrupt_image_error": (
        ["data.on_bad_image=error"],
        corrupt_image,
        "broken.jpg; remove them or set data.",
    ),
}


@pytest.fixture(scope="module")
def cli_runs(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """Every bad command line, a few at a time (they spend most of their time importing): status, output."""
    commands = {}
    for case, (overrides, plant, _) in CLI_CASES.items():
        root = tmp_path_factory.mktemp(case)
        data = [f"data.data_dir={planted(tiny_dataset, root, plant)}"] if plant else []
        commands[case] = ([*TINY_CLI, *data, *(o.format(root=root) for o in overrides)], root, {})
    root = tmp_path_factory.mktemp("full_error")
    commands["full_error"] = ([*TINY_CLI, "model.frozen_stages=9"], root, {"HYDRA_FULL_ERROR": "1"})
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case: pool.submit(run_train, args, root, **env) for case, (args, root, env) in commands.items()
        }
        return {case: future.result() for case, future in futures.items()}


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_command_line_stops_with_one_line_and_no_traceback(case: str, cli_runs) -> None:
    status, output = cli_runs[case]
    assert status == 1, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if CLI_CASES[case][2] in line]
    assert len(lines) == 1, output[-3000:]


def test_full_traceback_stays_available_with_hydra_full_error(cli_runs) -> None:
    status, output = cli_runs["full_error"]
    assert status == 1
    assert "Traceback" in output and "ConfigError: model.frozen_stages=9 is not allowed" in output
