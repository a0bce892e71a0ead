"""The LightningModule: a torchvision or timm backbone fine-tuned to classify fruit photos."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from fruitres.models.backbone import (
    Stage,
    backbone_features,
    backbone_head,
    backbone_stages,
    build_backbone,
    check_frozen_stages,
    head_parameters,
    no_weight_decay_patterns,
)
from fruitres.models.schedules import max_time_fraction, planned_length
from fruitres.models.tta import tta_log_probs

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.AdamW", "lr": 1e-3, "weight_decay": 0.05}


def _plain(config: Mapping | None) -> dict | None:
    """Config nodes are kept as plain dicts so checkpoints load with `weights_only=True`."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config) if config is not None else None


def accuracy_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 accuracy, and top-5 where there are at least five classes."""
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if num_classes >= 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics, prefix=prefix)


def name_matches(name: str, patterns: Collection[str]) -> bool:
    """Whether a parameter's name, or a module's name above it, matches a name or fnmatch pattern (timm's)."""
    return any(fnmatchcase(name, pattern) or fnmatchcase(name, f"{pattern}.*") for pattern in patterns)


def batchnorm_layers(module: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers inside `module` (any dimension, SyncBatchNorm and timm's BatchNormAct too)."""
    return [m for m in module.modules() if isinstance(m, _BatchNorm)]


def backbone_is_fixed(frozen_stages: int, num_stages: int, train_bn: bool) -> bool:
    """Whether training leaves the backbone as it is: every stage frozen, BatchNorm too (no `train_bn`)."""
    return frozen_stages == num_stages and not train_bn


class FruitClassifier(LightningModule):
    """A backbone (models/backbone.py) with a new `num_classes` head; its first `frozen_stages` can be frozen.

    A ResNet's stages are stem, layer1, ..., layer4 (5 = linear probe). A frozen stage keeps its
    BatchNorm layers in eval mode, whoever froze it (this module, or a fine-tuning callback that unfreezes
    stages later), and runs without autograd. With `train_bn` its BatchNorm layers still train, as
    fastai's and Lightning's `train_bn`: their weights and biases join the optimizer and their running
    statistics follow the data.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        arch: str = "resnet18",
        weights: str | None = None,
        weights_path: str | None = None,
        image_size: int | None = None,
        frozen_stages: int = 0,
        backbone_lr_mult: float = 1.0,
        layer_lr_decay: float = 1.0,
        decay_norm_and_bias: bool = False,
        train_bn: bool = False,
        label_smoothing: float = 0.0,
        mix: Mapping | None = None,
        channels_last: bool = False,
        compile: bool = False,
        optimizer: Mapping | None = None,
        scheduler: Mapping | None = None,
    ) -> None:
        super().__init__()
        optimizer = _plain(optimizer) or DEFAULT_OPTIMIZER
        scheduler = _plain(scheduler)
        mix = _plain(mix)
        class_names = list(class_names) if class_names is not None else None
        self.save_hyperparameters(logger=False)  # loggers get the run's curated set (run/hparams.py)
        self.net = build_backbone(arch, num_classes, weights, weights_path, image_size)
        self.stages: list[Stage] = backbone_stages(self.net)  # a plain list: views, not submodules
        check_frozen_stages(arch, frozen_stages, [stage.name for stage in self.stages])
        self.mix = instantiate(mix, num_classes=num_classes) if mix else None  # Mixup/CutMix, training only
        self.tta: str | None = None  # test-time augmentation of test and predict steps (fruitres.eval tta=)
        for stage in self.stages[:frozen_stages]:
            for parameter in self.freezable_parameters(stage):
                parameter.requires_grad_(False)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.train_metrics = accuracy_metrics(num_classes, "train/")
        self.val_metrics = accuracy_metrics(num_classes, "val/")
        self.test_metrics = accuracy_metrics(num_classes, "test/")
        self.val_acc_best = MaxMetric()
        # Batch-size weighted mean losses synced by torchmetrics: exact under DDP with uneven evaluation
        # shards (Lightning's sync_dist mean truncates the averaged sample count to an integer).
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints: a resumed run remembers the best so far
        if compile:
            self.compile()  # torch.compile of the forward pass; parameter names and checkpoints unchanged

    # --- the network -------------------------------------------------------------------------
    def freezable_parameters(self, stage: Stage) -> list[nn.Parameter]:
        """What freezing `stage` freezes: all its parameters, or with `train_bn` all but its BatchNorm's."""
        if not self.hparams.train_bn:
            return list(stage.parameters())
        kept = {id(p) for bn in batchnorm_layers(stage) for p in bn.parameters()}
        return [p for p in stage.parameters() if id(p) not in kept]

    def frozen_prefix(self) -> int:
        """How many leading stages are frozen (with `train_bn`, all but their BatchNorm layers)."""
        for index, stage in enumerate(self.stages):
            if any(p.requires_grad for p in self.freezable_parameters(stage)):
                return index
        return len(self.stages)

    def backbone_is_fixed(self) -> bool:
        """Whether training leaves the backbone as it is: every stage frozen, BatchNorm too (no `train_bn`).

        What features cached once need (callbacks/feature_cache.py); the config key alone decides, even
        for a backbone without BatchNorm, so that config checks can tell from the config.
        """
        return backbone_is_fixed(self.frozen_prefix(), len(self.stages), self.hparams.train_bn)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (timm's name).

        Autograd records nothing through the frozen prefix: neither its input nor its parameters need
        gradients (with `train_bn`, only up to its first BatchNorm layer).
        """
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return backbone_features(self.net, images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, or with `tta` set the log of the softmax averaged over its views."""
        return self(images) if self.tta is None else tta_log_probs(self, images, self.tta)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from pooled features: what a linear probe on cached features trains."""
        return backbone_head(self.net, features)

    def train(self, mode: bool = True) -> FruitClassifier:
        """Train mode but for the frozen prefix, whose BatchNorm statistics stay fixed (unless `train_bn`)."""
        super().train(mode)
        for stage in self.stages[: self.frozen_prefix()]:
            stage.eval()
            if self.hparams.train_bn:
                for bn in batchnorm_layers(stage):
                    bn.train(mode)
        return self

    def parameter_counts(self) -> dict[str, int]:
        total = sum(p.numel() for p in self.net.parameters())
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        return {"params/total": total, "params/trainable": trainable, "params/frozen": total - trainable}

    # --- steps -------------------------------------------------------------------------------
    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> dict[str, torch.Tensor]:
        """Loss and metrics of a batch; the logits go to callbacks (TensorBoard figures, eval reports)."""
        images, labels, *cached_features = batch  # features: see callbacks/feature_cache.py
        targets = labels
        if stage == "train" and self.mix is not None and not cached_features:
            images, targets = self.mix(images, labels)  # soft targets; accuracy counts the dominant label
            labels = targets.argmax(dim=1)
        if cached_features:
            logits = self.forward_head(cached_features[0])
        else:
            logits = self.classify(images) if stage == "test" else self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing)
        metrics: MetricCollection = getattr(self, f"{stage}_metrics")
        if stage == "train":
            metrics(logits.detach(), labels)  # forward(): updates and keeps the batch value for the step log
        else:
            metrics.update(logits.detach(), labels)
        on_step = stage == "train"
        mean_loss: MeanMetric = getattr(self, f"{stage}_loss")
        mean_loss(loss.detach(), len(labels))
        self.log(f"{stage}/loss", mean_loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log_dict(metrics, on_step=on_step, on_epoch=True, prog_bar=True)
        return {"loss": loss, "logits": logits.detach()}

    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._step(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self.classify(images).float().softmax(dim=1)  # float32: bf16 autocast would round them

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is None:  # a resumed run keeps the best value its checkpoint holds
            self.val_acc_best.reset()  # the sanity check's validation must not count as the best epoch

    def on_train_epoch_start(self) -> None:
        # Lightning (>= 2.2) never calls train() itself; this sets the modes for the stages frozen now,
        # after any fine-tuning callback (whose hooks run first) has unfrozen some.
        self.train()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    # --- optimisation ------------------------------------------------------------------------
    def stage_lr(self, stage: int) -> float:
        """Stage `stage`'s lr: head lr × `backbone_lr_mult` × `layer_lr_decay` ^ (distance from the head)."""
        distance = len(self.stages) - stage  # the last stage is 1 from the head
        hparams = self.hparams
        return hparams.optimizer["lr"] * hparams.backbone_lr_mult * hparams.layer_lr_decay**distance

    def _weight_decay_exempt_ids(self) -> set[int]:
        """The ids of the parameters weight decay leaves alone, as timm's optimizer factory chooses them.

        Those the model names (`no_weight_decay()`: position embeddings, class tokens), which decay would
        pull towards zero; and, unless `decay_norm_and_bias`, every parameter of at most one dimension, a
        bias or a normalisation scale (timm's `filter_bias_and_bn`). That switch leaves the model's own
        list exempt: it is about norms and biases, and the model's list is what its recipe trains with.
        """
        patterns = no_weight_decay_patterns(self.net)
        exempt_small = not self.hparams.decay_norm_and_bias
        return {
            id(p)
            for name, p in self.net.named_parameters()
            if name_matches(name, patterns) or (exempt_small and p.ndim <= 1)
        }

    def _groups(self, name: str, params: Any, lr: float) -> list[dict[str, Any]]:
        """The trainable `params` at `lr`; those exempt from weight decay apart, in `<name>/no_decay`."""
        params = [p for p in params if p.requires_grad]
        exempt_ids = self._weight_decay_exempt_ids()
        decayed = [p for p in params if id(p) not in exempt_ids]
        exempt = [p for p in params if id(p) in exempt_ids]
        groups = [{"name": name, "params": decayed, "lr": lr}] if decayed else []
        if exempt:
            groups.append({"name": f"{name}/no_decay", "params": exempt, "lr": lr, "weight_decay": 0.0})
        return groups

    def stage_param_groups(self, stage: int) -> list[dict[str, Any]]:
        """The optimizer groups of one backbone stage's trainable parameters.

        A frozen stage has none, or with `train_bn` its BatchNorm layers' as `<stage>/bn`: named apart
        from the groups gradual unfreezing adds when it unfreezes the rest of the stage.
        """
        name = self.stages[stage].name
        if stage < self.frozen_prefix():
            name = f"{name}/bn"
        return self._groups(name, self.stages[stage].parameters(), self.stage_lr(stage))

    def param_groups(self) -> list[dict[str, Any]]:
        """The head at the optimizer's lr first, then each trainable stage from the top at `stage_lr`."""
        groups = self._groups("head", head_parameters(self.net), self.hparams.optimizer["lr"])
        for stage in reversed(range(len(self.stages))):
            groups.extend(self.stage_param_groups(stage))
        return groups

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = instantiate(self.hparams.optimizer, _partial_=True)(self.param_groups())
        if self.hparams.scheduler is None:
            return {"optimizer": optimizer}
        make_scheduler = instantiate(self.hparams.scheduler, _partial_=True)
        clock = (
            {"time_fraction": max_time_fraction(self.trainer)}
            if self.hparams.scheduler.get("fit_to_max_time")
            else {}
        )
        length = planned_length(self.trainer)  # the time budget's plan (callbacks/time_budget.py)
        plan = {"length": length} if length is not None else {}
        total_steps = self.trainer.estimated_stepping_batches
        scheduler = make_scheduler(optimizer, total_steps=total_steps, **clock, **plan)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
