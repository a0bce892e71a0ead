"""`trainer.max_time` as a budget to use: the run's length planned from the speed of its first steps.

Lightning's `max_time` only stops a run; with epochs sized for another machine, a fast one leaves the rest
of the budget idle and a slow one is cut mid-schedule. After `measure_steps` training steps (the first
`skip_steps` left out: caches warm up there) this callback plans how many optimizer steps fit in what is
left of the budget, counting the validations they bring and the test pass after fitting (both at the
evaluation speed the sanity check measured, else at the training speed, a bound), and ends fitting there.
The learning-rate schedule follows the plan (models/schedules.py, `ScheduleLength`). The plan is logged
once and kept in checkpoints, so a resumed run goes on with it. After each validation it is made again from
the epoch just timed (its steps, its validation pass, the checkpoints written): the first steps' speed is a
sample, and a plan made from it alone left two minutes of a 15-minute budget unused on the full dataset.

Which wins over `trainer.max_epochs`: the budget, unless `max_epochs` was given on the command line. The
recipe's `max_epochs` is a guess for someone else's machine; an explicit one is a ceiling the plan stays
under (it still plans fewer epochs where the budget is shorter).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.utilities.model_helpers import is_overridden

from fruitres.models.schedules import ScheduleLength
from fruitres.models.tta import VIEWS

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass
class BudgetPlan:
    """A plan and its basis, as logged and checkpointed."""

    planned_at: int  # the optimizer step it was made at
    total_steps: int  # where fitting ends
    steps_per_epoch: int
    images_per_second: float  # training, measured
    measured_steps: int
    seconds_left: float  # of the budget, when planned
    ceiling_epochs: int | None  # an explicit trainer.max_epochs
    replanned_at: int | None = None  # the optimizer step of the latest re-plan, after a validation
    fraction_at_replan: float = 0.0  # of the schedule after planned_at, done there

    @property
    def epochs(self) -> float:
        return self.total_steps / self.steps_per_epoch


def validations_after(start_step: int, end_step: int, steps_per_epoch: int, every_n_epochs: int) -> int:
    """Validation passes from `start_step` to `end_step`: one each `every_n_epochs` epochs, and one more
    where fitting stops between them (a stopped run is validated where it stops)."""
    period = steps_per_epoch * max(1, every_n_epochs)
    scheduled = end_step // period - start_step // period
    return scheduled + (0 if end_step % period == 0 else 1)


def budget_seconds(
    total: int,
    step_now: int,
    seconds_per_step: float,
    seconds_per_validation: float,
    seconds_for_test: float,
    steps_per_epoch: int,
    every_n_epochs: int = 1,
) -> float:
    """Seconds from `step_now` to the end of a run fitted to `total` steps: steps, validations, test."""
    validations = validations_after(step_now, total, steps_per_epoch, every_n_epochs)
    return (total - step_now) * seconds_per_step + validations * seconds_per_validation + seconds_for_test


def planned_total_steps(
    seconds_left: float,
    step_now: int,
    seconds_per_step: float,
    seconds_per_validation: float,
    seconds_for_test: float,
    steps_per_epoch: int,
    every_n_epochs: int = 1,
    max_steps: int | None = None,
) -> int:
    """The most steps whose training, validations and final test pass fit in `seconds_left`."""
    rates = (seconds_per_step, seconds_per_validation, seconds_for_test, steps_per_epoch, every_n_epochs)
    low = step_now  # nothing more fits: stop now
    high = step_now + math.ceil(max(0.0, seconds_left) / max(seconds_per_step, 1e-9))
    if max_steps is not None:
        high = max(low, min(high, max_steps))
    while low < high:  # the cost grows with the total: the largest total within budget
        middle = (low + high + 1) // 2
        fits = budget_seconds(middle, step_now, *rates) <= seconds_left
        low, high = (middle, high) if fits else (low, middle - 1)
    return low


def max_epochs_on_command_line() -> bool:
    """Whether `trainer.max_epochs` was given on the command line (Hydra's task overrides)."""
    if not HydraConfig.initialized():
        return False
    keys = (override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task)
    return "trainer.max_epochs" in keys


class TimeBudget(Callback):
    """Plans the run's length to fill `trainer.max_time`; inert without it. `clock` is injectable (tests)."""

    def __init__(
        self,
        measure_steps: int = 20,
        skip_steps: int = 2,
        max_epochs_is_ceiling: bool | None = None,
        test_pass: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        self.measure_steps, self.skip_steps = measure_steps, skip_steps
        self.test_pass = test_pass  # whether the run tests after fitting (`test=true`): its time is kept
        self.max_epochs_is_ceiling = max_epochs_is_ceiling  # None: whether the command line gave it
        self.clock = clock
        self.schedule_length = ScheduleLength()  # read by the schedules
        self.plan: BudgetPlan | None = None
        self._budget: float | None = None  # seconds left at the start of fitting; None: no budget
        self._started = 0.0
        self._eval_marks: list[tuple[float, int]] = []  # (clock, images) at each sanity-check batch's end
        self._window_start: float | None = None  # the clock where the timed batches start
        self._window_images = 0
        self._mark: tuple[float, int] | None = None  # (clock, optimizer step) where the next timing starts
        self._validation_started: float | None = None

    # --- what the sanity check tells of evaluation speed -------------------------------------------
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_marks = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if trainer.sanity_checking:
            self._eval_marks.append((self.clock(), _batch_size(batch)))

    # --- after each validation: the plan made again from the epoch just timed ----------------------
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validation_started = None if trainer.sanity_checking else self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        mark, started = self._mark, self._validation_started
        if self._budget is None or self.plan is None or mark is None or started is None:
            return
        now, step = self.clock(), trainer.global_step
        if mark[1] < step < self.plan.total_steps:
            seconds_per_validation = now - started
            rates = self._rates(
                trainer,
                seconds_per_step=(started - mark[0]) / (step - mark[1]),
                seconds_per_validation=seconds_per_validation,
                seconds_per_eval_image=seconds_per_validation / max(1, _validation_images(trainer)),
                steps_per_epoch=self.plan.steps_per_epoch,
            )
            self._replan(trainer, now, rates)
        self._mark = (now, step)

    def _replan(self, trainer: L.Trainer, now: float, rates: dict[str, float]) -> None:
        step, plan = trainer.global_step, self.plan
        seconds_left = self._budget - (now - self._started)
        ceiling = plan.ceiling_epochs * plan.steps_per_epoch if plan.ceiling_epochs else None
        total = _agreed_total(trainer, seconds_left, rates, ceiling)
        if total == plan.total_steps:
            return
        small = abs(total - plan.total_steps) < 0.01 * plan.total_steps  # logged only at debug level
        log.log(
            logging.DEBUG if small else logging.INFO,
            "Time budget re-planned at step %d: %.2f s a step and %.1f s a validation over the last epoch; "
            "%.1f epochs (%d steps) instead of %.1f, %.0f s of the budget left",
            step,
            rates["seconds_per_step"],
            rates["seconds_per_validation"],
            total / plan.steps_per_epoch,
            total,
            plan.epochs,
            seconds_left,
        )
        self.schedule_length.replan(step, total)
        plan.total_steps, plan.replanned_at = total, step
        plan.fraction_at_replan = self.schedule_length.anchor_fraction
        self._apply(trainer)
        if total <= step:
            trainer.should_stop = True

    def _seconds_per_eval_image(self) -> float | None:
        """From the sanity check's batches but the first (it warms up); None with fewer than two."""
        marks = self._eval_marks
        if len(marks) < 2:
            return None
        images = sum(count for _, count in marks[1:])
        return (marks[-1][0] - marks[0][0]) / max(1, images)

    # --- measuring the first steps, then planning --------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is None or trainer.fast_dev_run:
            self._budget = None
            return
        self._budget = remaining  # what a resumed run has left
        self._started = self.clock()
        if self.plan is not None:  # restored from a checkpoint
            self._apply(trainer)
            self._mark = (self._started, trainer.global_step)
        elif self._window_bounds(trainer)[0] == 0:
            self._window_start, self._window_images = self._started, 0

    def _window_bounds(self, trainer: L.Trainer) -> tuple[int, int]:
        """The batches of the first epoch to time: after `skip_steps`, `measure_steps` of them, as many as
        the epoch has."""
        end = min(self.skip_steps + self.measure_steps, trainer.num_training_batches)
        return min(self.skip_steps, end - 1), end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._budget is None:
            return
        if self.plan is None:
            self._measure(trainer, batch, batch_idx)
        if self.plan is not None and trainer.global_step >= self.plan.total_steps:
            trainer.should_stop = True  # validated and checkpointed where it stops, as by max_time

    def _measure(self, trainer: L.Trainer, batch: Any, batch_idx: int) -> None:
        """Times the window's batches, from the end of the batch before it; plans at its last."""
        start, end = self._window_bounds(trainer)
        if self._window_start is not None:
            self._window_images += _batch_size(batch)
            if batch_idx + 1 == end:
                self._make_plan(trainer)
        elif batch_idx + 1 == start:
            self._window_start, self._window_images = self.clock(), 0

    def _make_plan(self, trainer: L.Trainer) -> None:
        now = self.clock()
        start = self._window_start
        batches = self._window_bounds(trainer)[1] - self._window_bounds(trainer)[0]
        seconds_per_batch = (now - start) / batches
        seconds_per_image = (now - start) / max(1, self._window_images)
        eval_image = self._seconds_per_eval_image() or seconds_per_image
        accumulate = trainer.accumulate_grad_batches
        steps_per_epoch = max(1, math.ceil(trainer.num_training_batches / accumulate))
        ceiling = self._ceiling(trainer)
        seconds_left = self._budget - (now - self._started)
        rates = self._rates(
            trainer,
            seconds_per_step=seconds_per_batch * accumulate,
            seconds_per_validation=_validation_images(trainer) * eval_image,
            seconds_per_eval_image=eval_image,
            steps_per_epoch=steps_per_epoch,
        )
        max_steps = ceiling * steps_per_epoch if ceiling is not None else None
        total = _agreed_total(trainer, seconds_left, rates, max_steps)
        self.plan = BudgetPlan(
            planned_at=trainer.global_step,
            total_steps=total,
            steps_per_epoch=steps_per_epoch,
            images_per_second=1 / max(seconds_per_image, 1e-9),
            measured_steps=batches,
            seconds_left=seconds_left,
            ceiling_epochs=ceiling,
        )
        self._apply(trainer)
        self._mark = (now, trainer.global_step)
        self._log_plan(budget_seconds(total, self.plan.planned_at, **rates))

    def _rates(
        self,
        trainer: L.Trainer,
        seconds_per_step: float,
        seconds_per_validation: float,
        seconds_per_eval_image: float,
        steps_per_epoch: int,
    ) -> dict[str, float]:
        """What the plan's arithmetic needs (`planned_total_steps`' rates), the test pass included."""
        test_images = views_per_test_image(trainer) * _test_images(trainer) if self.test_pass else 0
        return {
            "seconds_per_step": seconds_per_step,
            "seconds_per_validation": seconds_per_validation,
            "seconds_for_test": test_images * seconds_per_eval_image,
            "steps_per_epoch": steps_per_epoch,
            "every_n_epochs": trainer.check_val_every_n_epoch or 1,
        }

    def _ceiling(self, trainer: L.Trainer) -> int | None:
        explicit = self.max_epochs_is_ceiling
        if explicit is None:
            explicit = max_epochs_on_command_line()
        max_epochs = trainer.max_epochs
        return max_epochs if explicit and max_epochs is not None and max_epochs >= 0 else None

    def _apply(self, trainer: L.Trainer) -> None:
        plan = self.plan
        length = self.schedule_length
        length.planned_at, length.planned_total = plan.planned_at, plan.total_steps
        length.anchor_step, length.anchor_fraction = plan.replanned_at, plan.fraction_at_replan
        trainer.fit_loop.max_epochs = max(1, math.ceil(plan.epochs))

    def _log_plan(self, seconds_to_end: float) -> None:
        plan = self.plan
        ceiling = f"max_epochs={plan.ceiling_epochs} a ceiling" if plan.ceiling_epochs else "no ceiling"
        end = datetime.now() + timedelta(seconds=seconds_to_end)
        log.info(
            "Time budget: %.0f images/s over %d steps; %.1f epochs planned (%d steps, %s); expected end "
            "%s%s, %.0f s of the budget's %.0f s left",
            plan.images_per_second,
            plan.measured_steps,
            plan.epochs,
            plan.total_steps,
            ceiling,
            end.strftime("%H:%M:%S"),
            " with the test pass" if self.test_pass else "",
            seconds_to_end,
            plan.seconds_left,
        )

    # --- kept in checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"plan": asdict(self.plan)} if self.plan is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("plan"):
            self.plan = BudgetPlan(**state_dict["plan"])


def _batch_size(batch: Any) -> int:
    images = batch[0] if isinstance(batch, list | tuple) else batch
    return len(images)


def _validation_images(trainer: L.Trainer) -> int:
    """Images in one validation pass, as the trainer's limits leave them (batches × batch size)."""
    loaders = trainer.val_dataloaders
    if loaders is None:
        return 0
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    return sum(
        min(len(loader.dataset), batches * (loader.batch_size or 1))
        for loader, batches in zip(loaders, trainer.num_val_batches, strict=False)
    )


def _agreed_total(trainer: L.Trainer, seconds_left: float, rates: dict, max_steps: int | None) -> int:
    """The planned last step, rank 0's on every process: they all stop at the same step."""
    total = planned_total_steps(seconds_left, trainer.global_step, **rates, max_steps=max_steps)
    return int(trainer.strategy.broadcast(total, src=0))


def views_per_test_image(trainer: L.Trainer) -> int:
    """Forward passes a test image takes: the views of the model's test-time augmentation, else one."""
    tta = getattr(trainer.lightning_module, "tta", None)
    return len(VIEWS[tta]) if tta else 1


def _test_images(trainer: L.Trainer) -> int:
    """Images of the test pass after fitting, as `limit_test_batches` leaves them; 0 without a test set."""
    datamodule = trainer.datamodule
    if datamodule is None or not is_overridden("test_dataloader", datamodule):
        return 0
    loader = datamodule.test_dataloader()
    batches, limit = len(loader), trainer.limit_test_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = math.ceil(batches * limit)
    return min(len(loader.dataset), batches * (loader.batch_size or 1))
