"""The tutorial's recipe and loop ("Transfer Learning with ResNet in PyTorch"), as people copy it.

Images through `ToTensor` only (no normalisation), a shuffled `DataLoader` without workers, a torchvision
ResNet-18 with a new linear head, CrossEntropyLoss, SGD(lr=1e-4, momentum=0.9), float32, NCHW, batch 128,
5 epochs, the per-step `.item()` calls of its running loss and accuracy, evaluation under
`torch.no_grad()`. Two things differ from its text, both in its favour: the head has one output per class
(it has 128 for 120 classes), and the optimizer is built after the head is replaced, so that the head
trains (the text builds it before, which leaves the new head at its random initialisation).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fruitres.models.backbone import build_backbone

LEARNING_RATE = 1e-4
MOMENTUM = 0.9
BATCH_SIZE = 128
EPOCHS = 5
IMAGE_SIZE = 100  # Fruits-360's own size: the tutorial resizes nothing


def to_tensor(image_size: int, first_image: Path) -> torchvision.transforms.Compose:
    """ToTensor alone, as in the tutorial; a Resize first only when the files are not `image_size` square."""
    with Image.open(first_image) as image:
        resize = image.size != (image_size, image_size)
    steps = [torchvision.transforms.Resize((image_size, image_size))] * resize
    return torchvision.transforms.Compose([*steps, torchvision.transforms.ToTensor()])


def image_folder(split_dir: Path, image_size: int) -> torchvision.datasets.ImageFolder:
    """The tutorial's dataset: every class folder of `split_dir`."""
    transform = to_tensor(image_size, next(split_dir.glob("*/*.jpg")))
    return torchvision.datasets.ImageFolder(str(split_dir), transform=transform)


class ImageList(Dataset):
    """ImageFolder's loading (PIL, RGB) and the tutorial's transform over a given list of labelled files."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], image_size: int) -> None:
        self.paths, self.labels = list(paths), list(labels)
        self.transform = to_tensor(image_size, self.paths[0])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(torchvision.datasets.folder.default_loader(self.paths[index])), self.labels[
            index
        ]


def loader(dataset: Dataset, batch_size: int = BATCH_SIZE, shuffle: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


class TutorialLoop:
    """The tutorial's training and evaluation steps on `dataset`, for a network with `num_classes` outputs."""

    def __init__(self, dataset: Dataset, batch_size: int, num_classes: int, device: torch.device) -> None:
        self.loader = loader(dataset, batch_size)
        self.num_classes = num_classes
        self.device = device

    def new_net(self, weights_path: str | Path | None = None) -> nn.Module:
        """torchvision's ResNet-18 with a `num_classes` head; its backbone from `weights_path` if given."""
        net = build_backbone(
            "resnet18", self.num_classes, weights_path=str(weights_path) if weights_path else None
        )
        return net.to(self.device)

    @staticmethod
    def optimizer(net: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(net.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)

    def train_steps(
        self, net: nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable
    ) -> Iterator[tuple[int, int]]:
        """One training step per batch, as the tutorial writes it; yields (batch size, correct answers)."""
        criterion = nn.CrossEntropyLoss()
        net.train()
        running_loss, correct = 0.0, 0
        for batch in batches:
            data, target = (tensor.to(self.device) for tensor in batch)
            optimizer.zero_grad()
            outputs = net(data)
            loss = criterion(outputs, target)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            batch_correct = torch.sum(outputs.argmax(dim=1) == target).item()
            correct += batch_correct
            yield len(target), batch_correct

    @torch.no_grad()
    def eval_steps(self, net: nn.Module, batches: Iterable) -> Iterator[tuple[int, int]]:
        """(batch size, correct predictions) of each batch, as train_steps, in eval mode without gradients."""
        net.eval()
        for batch in batches:
            data, target = (tensor.to(self.device) for tensor in batch)
            yield len(target), torch.sum(net(data).argmax(dim=1) == target).item()

    def accuracy(self, net: nn.Module, batches: Iterable) -> float:
        counts = list(self.eval_steps(net, batches))
        return sum(correct for _, correct in counts) / max(1, sum(size for size, _ in counts))
