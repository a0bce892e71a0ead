"""The DataModule: labels, splits, the image cache and the batch transforms."""

from __future__ import annotations

import shutil
from pathlib import Path

import kornia.augmentation as K
import lightning as L
import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from hydra.utils import instantiate
from PIL import Image

from fruitres.data.cache import build_image_cache
from fruitres.data.datamodule import Fruits360DataModule, stratified_split
from fruitres.data.folders import DatasetLayoutError
from fruitres.data.images import decode_image


def make_datamodule(root: Path, tmp_path: Path, **overrides) -> Fruits360DataModule:
    kwargs = dict(
        data_dir=str(root), cache_dir=str(tmp_path / "cache"), image_size=32, batch_size=8, num_workers=0
    )
    return Fruits360DataModule(**(kwargs | overrides))


def test_class_names_come_from_training_and_keep_their_spaces(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = make_datamodule(tiny_dataset, tmp_path)
    names = sorted(p.name for p in (tiny_dataset / "Training").iterdir() if p.is_dir())
    assert datamodule.class_names == names
    assert datamodule.num_classes == 5
    assert all(" " in name for name in names)


def test_labels_stay_right_when_test_lacks_a_class(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    first_class = sorted(p.name for p in (root / "Test").iterdir())[0]
    shutil.rmtree(root / "Test" / first_class)

    datamodule = make_datamodule(root, tmp_path)
    datamodule.setup()
    test = datamodule.datasets["test"]
    assert datamodule.num_classes == 5
    assert 0 not in set(test.labels.tolist())
    expected = {name: index for index, name in enumerate(datamodule.class_names)}
    names = sorted(p.name for p in (root / "Test").iterdir())
    counts = [len(list((root / "Test" / n).iterdir())) for n in names]
    assert test.labels.tolist() == [expected[n] for n, c in zip(names, counts, strict=True) for _ in range(c)]


def test_a_test_class_unknown_to_training_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset, root)
    (root / "Test" / "Kiwi Golden").mkdir()
    Image.new("RGB", (32, 32), "green").save(root / "Test" / "Kiwi Golden" / "0.jpg")
    with pytest.raises(DatasetLayoutError, match="Kiwi Golden"):
        make_datamodule(root, tmp_path).setup()


def test_missing_data_folder_names_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match=r"data\.data_dir=.*nowhere is not a folder; pass the"):
        make_datamodule(tmp_path / "nowhere", tmp_path).prepare_data()


def test_validation_split_is_stratified_seeded_and_disjoint() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    train, val = stratified_split(labels, val_fraction=0.1, seed=7)
    assert set(train).isdisjoint(val)
    assert len(train) + len(val) == len(labels)
    assert np.bincount(labels[val]).tolist() == [1, 2, 3, 4]
    again_train, again_val = stratified_split(labels, val_fraction=0.1, seed=7)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    _, other_val = stratified_split(labels, val_fraction=0.1, seed=8)
    assert not np.array_equal(val, other_val)


def test_datamodule_splits_are_disjoint_and_cover_training(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = make_datamodule(tiny_dataset, tmp_path, val_fraction=0.25)
    datamodule.setup()
    train_rows = set(datamodule.datasets["train"].rows.tolist())
    val_rows = set(datamodule.datasets["val"].rows.tolist())
    assert train_rows.isdisjoint(val_rows)
    assert len(train_rows | val_rows) == 5 * 40
    assert np.bincount(datamodule.datasets["val"].labels.numpy()).tolist() == [10] * 5


def test_image_cache_returns_the_same_pixels_as_decoding(tiny_dataset: Path, tmp_path: Path) -> None:
    paths = sorted((tiny_dataset / "Test").glob("*/*.jpg"))
    array_path, unreadable = build_image_cache(paths, 32, tmp_path)
    cached = np.load(array_path, mmap_mode="r")
    assert unreadable == []
    for index in (0, len(paths) // 2, len(paths) - 1):
        assert np.array_equal(cached[index], decode_image(paths[index], 32))


def test_image_cache_is_rebuilt_when_a_file_changes(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_dataset / "Test", root)
    paths = sorted(root.glob("*/*.jpg"))
    first, _ = build_image_cache(paths, 32, tmp_path / "cache")
    Image.new("RGB", (32, 32), "red").save(paths[0])
    second, _ = build_image_cache(paths, 32, tmp_path / "cache")
    assert first != second
    assert np.array_equal(np.load(second)[0], decode_image(paths[0], 32))
    assert not np.array_equal(np.load(first)[0], np.load(second)[0])


def test_batches_are_normalised_and_augmented_only_in_training(tiny_dataset: Path, tmp_path: Path) -> None:
    datamodule = make_datamodule(tiny_dataset, tmp_path, augment={"hflip": K.RandomHorizontalFlip(p=1.0)})
    datamodule.setup()
    images, labels = next(iter(datamodule.val_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 32, 32)
    normalised, same_labels = datamodule.on_after_batch_transfer((images, labels), 0)
    expected = (images.float() / 255 - datamodule.mean) / datamodule.std
    torch.testing.assert_close(normalised, expected)
    assert torch.equal(same_labels, labels)

    datamodule.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    datamodule.trainer.training = True
    augmented, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    torch.testing.assert_close(augmented, expected.flip(-1))


def test_image_cache_resizes_with_the_interpolation_it_is_keyed_by(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    paths = sorted((tiny_dataset / "Test").glob("*/*.jpg"))[:4]  # 32 px, resized to 24
    bilinear, _ = build_image_cache(paths, 24, tmp_path, "bilinear")
    bicubic, _ = build_image_cache(paths, 24, tmp_path, "bicubic")
    assert bilinear != bicubic  # a cache built with one filter is never read for the other
    assert np.array_equal(np.load(bicubic)[0], decode_image(paths[0], 24, "bicubic"))
    assert not np.array_equal(np.load(bilinear)[0], np.load(bicubic)[0])


def composed_datamodule(tmp_path: Path, tiny_dataset: Path, *overrides: str) -> Fruits360DataModule:
    """The data module the real train config builds: its null preprocessing filled by model.arch's own."""
    cfg = compose_config("train", [*tiny_train_overrides(tiny_dataset, tmp_path), *overrides])
    return instantiate(cfg.data)


def test_null_preprocessing_is_the_backbones_own_and_a_given_value_wins(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    pytest.importorskip("timm")
    vit = ("model.arch=timm/test_vit3", "model.weights=null")
    own = composed_datamodule(tmp_path, tiny_dataset, *vit, "data.image_size=null")
    assert (own.hparams.image_size, own.hparams.interpolation) == (160, "bicubic")  # timm's pretrained cfg
    assert own.hparams.mean == own.hparams.std == [0.5, 0.5, 0.5]
    assert own.normalize(torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)).eq(1.0).all()  # (1 - 0.5) / 0.5

    given = composed_datamodule(
        tmp_path, tiny_dataset, *vit, "data.mean=[0.2,0.3,0.4]", "data.interpolation=nearest"
    )
    assert (given.hparams.image_size, given.hparams.interpolation) == (32, "nearest")
    assert (given.hparams.mean, given.hparams.std) == ([0.2, 0.3, 0.4], [0.5, 0.5, 0.5])

    torchvision_weights = composed_datamodule(tmp_path, tiny_dataset, "model.arch=efficientnet_b0")
    assert torchvision_weights.hparams.interpolation == "bicubic"  # EfficientNet_B0_Weights' transforms
    assert torchvision_weights.hparams.mean == [0.485, 0.456, 0.406]
    without_backbone = make_datamodule(tiny_dataset, tmp_path)  # as checkpoints from before these keys
    assert (without_backbone.hparams.interpolation, without_backbone.hparams.std) == (
        "bilinear",
        [0.229, 0.224, 0.225],
    )


def test_images_of_any_size_and_aspect_ratio_are_centre_cropped_never_stretched(tmp_path: Path) -> None:
    """Mixed sizes: each image's shorter side is resized to image_size and the longer one centre-cropped, so
    a wide image's outer thirds (red, green) are cut off and its middle (blue) fills the input."""
    root = tmp_path / "data"
    for split in ("Training", "Test"):
        for name in ("Wide", "Tall"):
            (root / split / name).mkdir(parents=True)
    thirds = Image.new("RGB", (300, 100), (255, 0, 0))
    thirds.paste((0, 0, 255), (100, 0, 200, 100))
    thirds.paste((0, 255, 0), (200, 0, 300, 100))
    for i, size in enumerate([(300, 100), (150, 50), (60, 20), (33, 11)]):
        thirds.resize(size, Image.Resampling.NEAREST).save(root / "Training" / "Wide" / f"{i}.png")
        thirds.rotate(90, expand=True).resize(size[::-1], Image.Resampling.NEAREST).save(
            root / "Training" / "Tall" / f"{i}.png"
        )
    shutil.copy(root / "Training/Wide/0.png", root / "Test/Wide/0.png")
    shutil.copy(root / "Training/Tall/1.png", root / "Test/Tall/0.png")
    datamodule = make_datamodule(root, tmp_path, image_size=24, val_fraction=0.25)
    datamodule.setup()
    images = torch.stack([datamodule.datasets["test"][i][0] for i in range(2)])
    assert images.shape == (2, 3, 24, 24)
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    blue = (pixels[:, 2] > 200) & (pixels[:, 0] < 40) & (pixels[:, 1] < 40)
    assert blue.float().mean() > 0.9
    for path in sorted(root.glob("Training/*/*.png")):
        assert decode_image(path, 24).shape == (24, 24, 3)
