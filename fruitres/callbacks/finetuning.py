"""Gradual unfreezing: train on a frozen backbone first, then unfreeze its stages from the top down."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


class GradualUnfreezing(BaseFinetuning):
    """Unfreeze the stages `model.frozen_stages` froze, the top one first, at the epochs of `unfreeze_epochs`.

    With frozen_stages=5 and unfreeze_epochs=[2, 4], the head trains alone for epochs 0-1, layer4 joins at
    epoch 2 and layer3 at epoch 4; stem..layer2 stay frozen. Each stage joins the optimizer as its own
    parameter groups (named after it, its biases and BatchNorm weights apart) at the model's `stage_lr`
    (`backbone_lr_mult` and `layer_lr_decay` applied to the head's learning rate), and the
    learning-rate schedule drives it like the head from then on. With `model.train_bn` a frozen stage's
    BatchNorm layers train from the start in groups of their own, and unfreezing adds the rest. A run
    resumed from a checkpoint gets back the groups (BaseFinetuning stores them) and the unfrozen stages
    of the interrupted run.
    """

    def __init__(self, unfreeze_epochs: Sequence[int]) -> None:
        super().__init__()
        epochs = [int(epoch) for epoch in unfreeze_epochs]
        if epochs != sorted(epochs) or any(epoch < 1 for epoch in epochs):
            raise ValueError(
                f"callbacks.gradual_unfreezing.unfreeze_epochs={epochs} must be increasing epochs >= 1 "
                "(the top frozen stage first), e.g. [2, 4]"
            )
        self.unfreeze_epochs = epochs

    def unfreeze_schedule(self, pl_module: L.LightningModule) -> dict[int, int]:
        """Stage index → the epoch it starts training at, counting down from the top frozen stage."""
        frozen = pl_module.hparams.frozen_stages
        if len(self.unfreeze_epochs) > frozen:
            raise ValueError(
                f"callbacks.gradual_unfreezing.unfreeze_epochs={self.unfreeze_epochs} unfreezes "
                f"{len(self.unfreeze_epochs)} stages but model.frozen_stages={frozen} freezes only {frozen}; "
                "list at most that many epochs or freeze more stages"
            )
        return {frozen - 1 - i: epoch for i, epoch in enumerate(self.unfreeze_epochs)}

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        """The model froze its first `frozen_stages` stages itself; only check that the schedule fits them."""
        self.unfreeze_schedule(pl_module)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Unfreeze every stage that is due, adding to the optimizer only the parameters it lacks.

        A resumed run already optimizes the stages it had unfrozen, and with `model.train_bn` the
        optimizer holds every stage's BatchNorm layers from the start.
        """
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for stage, start_epoch in sorted(self.unfreeze_schedule(pl_module).items(), reverse=True):
            if epoch < start_epoch:
                continue
            self.make_trainable([pl_module.stages[stage]])  # a resumed run has its groups back, not the flags
            for group in pl_module.stage_param_groups(stage):
                group["params"] = [p for p in group["params"] if id(p) not in in_optimizer]
                if group["params"]:
                    optimizer.add_param_group(group)
        for config in pl_module.trainer.lr_scheduler_configs:
            follow_added_param_groups(config.scheduler)


def follow_added_param_groups(scheduler: LRScheduler) -> None:
    """Make `scheduler` drive the parameter groups added after it was built, in proportion to the first.

    A new group's learning rate is its peak/base rate; it is set at once to the point the schedule has
    reached, so the first step after unfreezing is already on schedule.
    """
    groups = scheduler.optimizer.param_groups
    first = groups[0]
    if isinstance(scheduler, LambdaLR):  # one base lr and one factor per group; the project uses one factor
        factor = scheduler.lr_lambdas[0]
        scheduler.lr_lambdas.extend([factor] * (len(groups) - len(scheduler.lr_lambdas)))
        for group in groups[len(scheduler.base_lrs) :]:
            group.setdefault("initial_lr", group["lr"])
            scheduler.base_lrs.append(group["initial_lr"])
            group["lr"] = group["initial_lr"] * factor(scheduler.last_epoch)
    elif isinstance(scheduler, OneCycleLR):  # the cycle lives in each group's own keys
        for group in groups:
            if "max_lr" in group:
                continue
            scale = group["lr"] / first["max_lr"]
            for key in ("initial_lr", "max_lr", "min_lr", "lr"):
                group[key] = first[key] * scale
            for key in ("max_momentum", "base_momentum", "momentum", "betas"):
                if key in first:
                    group[key] = first[key]
    elif len(groups) > len(scheduler.base_lrs):
        raise TypeError(
            f"{type(scheduler).__name__} cannot drive the parameter groups gradual unfreezing adds; "
            "use model/scheduler=cosine or model/scheduler=onecycle"
        )
