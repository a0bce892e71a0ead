"""TensorBoard's Images tab for a run: what the network sees, and what it gets right and wrong."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from fruitres.reports.figures import (
    confusion_matrix_figure,
    denormalize,
    labelled_grid,
    per_class_bars,
    prediction_grid,
)


def per_class_metrics(num_classes: int) -> MetricCollection:
    """Confusion matrix, and precision/recall/F1 per class and macro-averaged (classes weigh the same)."""
    metrics = {"confusion_matrix": MulticlassConfusionMatrix(num_classes)}
    for name, metric in (
        ("precision", MulticlassPrecision),
        ("recall", MulticlassRecall),
        ("f1", MulticlassF1Score),
    ):
        metrics[name] = metric(num_classes, average=None)
        metrics[f"{name}_macro"] = metric(num_classes, average="macro")
    return MetricCollection(metrics)


class SplitPredictions:
    """One pass over a split: per-class metrics, and random samples of its images and of its mistakes."""

    def __init__(self, class_names: Sequence[str], max_images: int, device: torch.device) -> None:
        self.class_names = list(class_names)
        self.max_images = max_images
        self.metrics = per_class_metrics(len(self.class_names)).to(device)
        self.examples = _Sample(max_images)
        self.mistakes = _Sample(max_images)

    def update(self, images: torch.Tensor, targets: torch.Tensor, logits: torch.Tensor) -> None:
        probabilities = logits.float().softmax(dim=1)
        confidences, predictions = probabilities.max(dim=1)
        self.metrics.update(predictions, targets)
        self.examples.add(images, targets, predictions, confidences)
        wrong = predictions != targets
        self.mistakes.add(images[wrong], targets[wrong], predictions[wrong], confidences[wrong])

    def compute(self) -> dict[str, torch.Tensor]:
        """The metrics over the whole split (synchronised across processes under DDP)."""
        return {name: value.cpu() for name, value in self.metrics.compute().items()}

    def figures(self, split: str, mean: torch.Tensor, std: torch.Tensor, ncols: int = 8) -> dict[str, Figure]:
        """Confusion matrix, per-class accuracy, a grid of predictions and one of mistakes, by name."""
        results = self.compute()
        matrix = results["confusion_matrix"]
        accuracy = float(matrix.diag().sum() / matrix.sum().clamp(min=1))
        figures = {
            "confusion_matrix": confusion_matrix_figure(
                matrix, self.class_names, f"{split}: confusion matrix (accuracy {accuracy:.1%})"
            ),
            "per_class_accuracy": per_class_bars(
                results["recall"].tolist(),
                self.class_names,
                f"{split}: accuracy per class",
                "accuracy (recall)",
            ),
        }
        for name, examples in (("predictions", self.examples), ("misclassified", self.mistakes)):
            if len(examples):
                figures[name] = prediction_grid(
                    denormalize(examples.images(), mean, std),
                    [self.class_names[i] for i in examples.targets()],
                    [self.class_names[i] for i in examples.predictions()],
                    examples.confidences().tolist(),
                    ncols=ncols,
                )
        return figures


class _Sample:
    """A seeded uniform random sample of at most `size` of the rows seen, in the order they came, on the CPU.

    Test and validation loaders are sorted by class, so the first rows would all show the first classes.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = 0
        self.keys = torch.empty(0)
        self.arrival = torch.empty(0, dtype=torch.long)
        self.columns: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, *columns: torch.Tensor) -> None:
        count = len(columns[0])
        if count == 0 or self.size == 0:
            return
        new = [column.detach().cpu() for column in columns]
        merged = [torch.cat(pair) for pair in zip(self.columns, new, strict=True)] if self.columns else new
        keys = torch.cat([self.keys, torch.rand(count, generator=self.generator)])
        arrival = torch.cat([self.arrival, torch.arange(self.seen, self.seen + count)])
        self.seen += count
        keep = keys.topk(min(self.size, len(keys))).indices
        keep = keep[arrival[keep].argsort()]
        self.keys, self.arrival, self.columns = keys[keep], arrival[keep], [column[keep] for column in merged]

    def images(self) -> torch.Tensor:
        return self.columns[0]

    def targets(self) -> list[int]:
        return self.columns[1].tolist()

    def predictions(self) -> list[int]:
        return self.columns[2].tolist()

    def confidences(self) -> torch.Tensor:
        return self.columns[3]


class RunFigures(Callback):
    """Logs the pictures of a run to TensorBoard.

    The first training batch as the network receives it (augmented, de-normalised for display); at the
    end of fitting, the last validation epoch, and at the end of testing, the test set: confusion matrix,
    per-class accuracy, a grid of predictions (true vs predicted, wrong ones in red) and one of mistakes.
    It reads the logits that the module's validation and test steps return.
    """

    def __init__(self, max_images: int = 32, ncols: int = 8) -> None:
        self.max_images = max_images
        self.ncols = ncols
        self.predictions: dict[str, SplitPredictions] = {}
        self.logged_figures: dict[str, dict[str, Figure]] = {}  # by split, for eval to save as files too
        self._inputs_logged = False

    # --- sample inputs -----------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._inputs_logged = False

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self._inputs_logged or not trainer.is_global_zero or not _tensorboards(trainer):
            return
        self._inputs_logged = True
        images, labels = batch[0][: self.max_images], batch[1][: self.max_images].tolist()
        mean, std = _normalisation(trainer)
        names = pl_module.hparams.class_names
        figure = labelled_grid(denormalize(images, mean, std), [names[i] for i in labels], ncols=self.ncols)
        log_figure(trainer, "train/inputs", figure)

    # --- predictions of a split --------------------------------------------------------------
    def _start(self, split: str, pl_module: L.LightningModule) -> None:
        self.predictions[split] = SplitPredictions(
            pl_module.hparams.class_names, self.max_images, pl_module.device
        )

    def _collect(self, split: str, outputs, batch) -> None:
        self.predictions[split].update(batch[0], batch[1], outputs["logits"])

    def _log_split(self, trainer: L.Trainer, split: str) -> None:
        if split not in self.predictions or not _tensorboards(trainer):
            return
        predictions = self.predictions[split]
        predictions.compute()  # on every process: under DDP the metrics synchronise; the result is cached
        if trainer.is_global_zero:
            figures = predictions.figures(split, *_normalisation(trainer), ncols=self.ncols)
            for name, figure in figures.items():
                log_figure(trainer, f"{split}/{name}", figure)
            self.logged_figures[split] = figures

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("val", pl_module)

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect("val", outputs, batch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_split(trainer, "val")

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test", pl_module)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect("test", outputs, batch)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log_split(trainer, "test")


def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def _normalisation(trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    """The datamodule's mean and std, to show inputs as photos; identity without a datamodule."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "mean"):
        return torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    return datamodule.mean, datamodule.std


def log_figure(trainer: L.Trainer, tag: str, figure: Figure) -> None:
    """Send a figure to every TensorBoard logger, then release it from pyplot (it can still be saved)."""
    for logger in _tensorboards(trainer):
        logger.experiment.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    plt.close(figure)
