"""Any list of image files as a prediction set, decoded as the training cache decodes them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from fruitres.data.datamodule import Fruits360DataModule, default_num_workers
from fruitres.data.images import decode_image


class ImageFiles(Dataset):
    """(uint8 CHW image, index, error) per file; an unreadable file gives a black image and its error."""

    def __init__(self, paths: Sequence[Path], image_size: int, interpolation: str = "bilinear") -> None:
        self.paths = list(paths)
        self.image_size = image_size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            pixels = torch.from_numpy(
                decode_image(self.paths[index], self.image_size, self.interpolation).copy()
            )
            return pixels.permute(2, 0, 1), index, ""
        except Exception as error:  # PIL raises many types for unreadable files; each is reported, not fatal
            blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
            return blank, index, f"{type(error).__name__}: {error}"


class ImageFilesDataModule(LightningDataModule):
    """`trainer.predict` input: the files, preprocessed as the checkpoint's datamodule preprocessed Test/."""

    def __init__(
        self,
        paths: Sequence[Path],
        trained_on: Fruits360DataModule,
        batch_size: int = 64,
        num_workers: int | None = None,
    ) -> None:
        super().__init__()
        self.files = ImageFiles(paths, int(trained_on.hparams.image_size), trained_on.hparams.interpolation)
        self.trained_on = trained_on
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.files, batch_size=self.batch_size, num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, indices, errors = batch
        return self.trained_on.normalize(images), indices, errors
