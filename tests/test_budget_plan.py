"""`trainer.max_time` as a budget: the run's length planned from its first steps (time_budget.py)."""

from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config, tiny_train_overrides
from lightning.pytorch import Callback

from fruitres.callbacks.time_budget import (
    BudgetPlan,
    TimeBudget,
    planned_total_steps,
    validations_after,
    views_per_test_image,
)
from fruitres.models.classifier import FruitClassifier
from fruitres.models.schedules import ScheduleLength, cosine_with_warmup, one_cycle
from fruitres.models.tta import VIEWS
from fruitres.train import train

# --- the plan's arithmetic --------------------------------------------------------------------------


def test_validations_are_counted_at_epoch_ends_and_where_fitting_stops() -> None:
    assert validations_after(0, 30, steps_per_epoch=10, every_n_epochs=1) == 3
    assert validations_after(0, 35, steps_per_epoch=10, every_n_epochs=1) == 4  # stopped mid-epoch: one more
    assert validations_after(5, 40, steps_per_epoch=10, every_n_epochs=2) == 2  # after epochs 2 and 4
    assert validations_after(20, 20, steps_per_epoch=10, every_n_epochs=1) == 0


@pytest.mark.parametrize("seconds_per_step", [0.05, 0.5, 5.0])  # fast, middling, slow machines
def test_the_plan_is_the_longest_run_whose_steps_validations_and_test_fit_the_budget(
    seconds_per_step,
) -> None:
    budget = dict(
        seconds_left=600.0,
        step_now=22,
        seconds_per_step=seconds_per_step,
        seconds_per_validation=3.0,
        seconds_for_test=8.0,
        steps_per_epoch=100,
    )

    def cost(total: int) -> float:
        validations = validations_after(22, total, 100, 1)
        return (total - 22) * seconds_per_step + 3.0 * validations + 8.0

    total = planned_total_steps(**budget)
    assert cost(total) <= 600 < cost(total + 1)


def test_a_fast_machine_plans_more_epochs_than_configured_and_a_slow_one_fewer() -> None:
    common = dict(seconds_left=600.0, step_now=20, seconds_per_validation=2.0, seconds_for_test=5.0)
    configured_epochs, steps_per_epoch = 12, 50
    fast = planned_total_steps(seconds_per_step=0.2, steps_per_epoch=steps_per_epoch, **common)
    slow = planned_total_steps(seconds_per_step=2.0, steps_per_epoch=steps_per_epoch, **common)
    assert fast / steps_per_epoch > configured_epochs > slow / steps_per_epoch
    ceiling = configured_epochs * steps_per_epoch  # an explicit max_epochs
    capped = planned_total_steps(seconds_per_step=0.2, steps_per_epoch=50, max_steps=ceiling, **common)
    assert capped == ceiling
    assert planned_total_steps(seconds_per_step=2.0, steps_per_epoch=50, max_steps=ceiling, **common) == slow


def test_a_spent_budget_plans_no_more_steps() -> None:
    spent = planned_total_steps(
        seconds_left=1.0,
        step_now=40,
        seconds_per_step=2.0,
        seconds_per_validation=1.0,
        seconds_for_test=5.0,
        steps_per_epoch=10,
    )
    assert spent == 40


# --- the schedules follow the plan ------------------------------------------------------------------


@pytest.mark.parametrize("schedule", [one_cycle, cosine_with_warmup])
@pytest.mark.parametrize("planned_total", [400, 60])  # a fast machine's plan, a slow one's
def test_a_schedule_ends_at_the_planned_step(schedule, planned_total: int) -> None:
    length = ScheduleLength()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = schedule(optimizer, 100, length=length)
    rates = []
    for step in range(1, planned_total + 1):
        if step == 10:
            length.planned_at, length.planned_total = 10, planned_total
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates[-1] < 0.011  # the schedule's end, where the plan ends
    assert rates[round(0.8 * planned_total)] > 0.05  # not long before
    jumps = [abs(later - earlier) for earlier, later in itertools.pairwise(rates)]
    assert max(jumps) < 0.25  # no jump where the plan is made


def test_a_replan_moves_the_end_without_a_jump_in_the_rate() -> None:
    length = ScheduleLength()
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = one_cycle(optimizer, 100, length=length)
    rates = []
    for step in range(1, 301):
        if step == 10:
            length.planned_at, length.planned_total = 10, 200
        if step == 120:  # the epoch just timed was faster than the first steps: 100 more steps fit
            done = length.fraction_done(120)
            length.replan(120, 300)
            assert length.fraction_done(120) == pytest.approx(done)
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    jumps = [abs(later - earlier) for earlier, later in itertools.pairwise(rates)]
    assert max(jumps[100:140]) < 0.05  # one step of the 100-step schedule at most, through the re-plan
    assert rates[199] > 0.1 and rates[-1] < 1e-3  # the old end passes at a high rate; the new one anneals


# --- a real run on a fake clock -----------------------------------------------------------------------
FAKE_NOW = {"seconds": 0.0}


class FakeClock:
    """The time of the fake machine below, for `callbacks.time_budget.clock`."""

    def __call__(self) -> float:
        return FAKE_NOW["seconds"]


class FakeMachine(Callback):
    """Every training batch takes `train_seconds` and every validation batch `eval_seconds` on the fake
    clock; records the learning rate of each step."""

    def __init__(self, train_seconds: float, eval_seconds: float) -> None:
        self.train_seconds, self.eval_seconds = train_seconds, eval_seconds

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        FAKE_NOW["seconds"] += self.train_seconds

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        FAKE_NOW["seconds"] += self.eval_seconds

    def on_train_start(self, trainer, pl_module) -> None:
        FAKE_NOW["train_start"] = FAKE_NOW["seconds"]

    def on_train_end(self, trainer, pl_module) -> None:
        FAKE_NOW["train_end"] = FAKE_NOW["seconds"]


def fake_machine_run(data_dir: Path, run_dir: Path, train_seconds: float, extra: list[str]) -> dict:
    """A real run of 2 batches an epoch on a 5-minute budget, timed by the fake clock; its last checkpoint."""
    FAKE_NOW["seconds"] = 0.0
    cfg = compose_config(
        "train",
        [
            *tiny_train_overrides(data_dir, run_dir),
            "++trainer.limit_train_batches=2",
            "++trainer.limit_val_batches=2",
            "++trainer.max_time=00:00:05:00",
            "data.augment=null",
            "model/scheduler=cosine",
            "callbacks.figures=null",
            "test=false",
            "callbacks.time_budget.skip_steps=1",
            "callbacks.time_budget.measure_steps=1",
            "callbacks.epoch_log.when=always",
            "+callbacks.time_budget.clock._target_=test_budget_plan.FakeClock",
            "+callbacks.fake_machine._target_=test_budget_plan.FakeMachine",
            f"+callbacks.fake_machine.train_seconds={train_seconds}",
            "+callbacks.fake_machine.eval_seconds=2.0",
            *extra,
        ],
    )
    train(cfg)
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def expected_plan(train_seconds: float, max_steps: int | None = None) -> int:
    """The plan for the fake machine: 2 steps timed at `train_seconds`; validation, of 20 images, at the
    sanity check's second batch's speed (2 s for its 4 images); no test pass (test=false)."""
    return planned_total_steps(
        seconds_left=300 - 2 * train_seconds,
        step_now=2,
        seconds_per_step=train_seconds,
        seconds_per_validation=20 * 2.0 / 4,
        seconds_for_test=0.0,
        steps_per_epoch=2,
        max_steps=max_steps,
    )


def budget_state(checkpoint: dict) -> dict:
    return next(state for key, state in checkpoint["callbacks"].items() if "TimeBudget" in key)["plan"]


@pytest.mark.parametrize(
    ("train_seconds", "max_epochs"),
    [
        (25.0, 2),
        pytest.param(70.0, 10, marks=pytest.mark.slow),
    ],  # fast: more epochs than 2; slow: fewer than 10
)
def test_a_run_on_a_fake_clock_trains_for_the_planned_steps_and_the_schedule_ends_there(
    tiny_dataset: Path, tmp_path: Path, train_seconds: float, max_epochs: int, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="fruitres.callbacks.epoch_log"):
        checkpoint = fake_machine_run(
            tiny_dataset, tmp_path, train_seconds, [f"trainer.max_epochs={max_epochs}"]
        )
    first_plan = expected_plan(train_seconds)
    plan = budget_state(checkpoint)
    planned = plan["total_steps"]
    assert plan["planned_at"] == 2 and plan["images_per_second"] == pytest.approx(16 / train_seconds)
    # the sanity check's speed made validation look 2.5× slower than it is (10 s, not 4): re-planned after
    # validations from the epochs timed, the run goes on until the budget is used to within a step
    assert planned >= first_plan
    if train_seconds == 25.0:  # 12 validations fit: enough for the 6 s each saved to add a step
        assert planned > first_plan and plan["replanned_at"] is not None
    fitted = FAKE_NOW["train_end"] - FAKE_NOW["train_start"]
    assert 300 - (train_seconds + 4.0) < fitted <= 300
    assert checkpoint["global_step"] == planned
    assert (checkpoint["epoch"] + 1 > max_epochs) == (train_seconds == 25.0)
    assert checkpoint["epoch"] + 1 == math.ceil(planned / 2)
    (schedule,) = checkpoint["lr_schedulers"]
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert schedule["_last_lr"][0] == pytest.approx(0.01 * lr["initial_lr"], rel=0.05)  # the cosine's end
    # the epoch lines count towards the plan's epochs, not the recipe's max_epochs
    last_line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Epoch ")][-1]
    assert last_line.startswith(f"Epoch {checkpoint['epoch'] + 1}/{round(planned / 2, 1):g} step {planned}:")


@pytest.mark.slow
def test_an_explicit_max_epochs_is_a_ceiling(tiny_dataset: Path, tmp_path: Path) -> None:
    checkpoint = fake_machine_run(
        tiny_dataset,
        tmp_path,
        25.0,
        ["trainer.max_epochs=3", "callbacks.time_budget.max_epochs_is_ceiling=true"],
    )
    assert budget_state(checkpoint)["total_steps"] == expected_plan(25.0, max_steps=6) == 6
    assert checkpoint["epoch"] == 2


# --- a real run on the real clock ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_short_budget_is_used_and_the_plan_logged_once(
    tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    budget = 30
    cfg = compose_config(
        "train",
        [
            *tiny_train_overrides(tiny_dataset, tmp_path),
            f"++trainer.max_time=00:00:00:{budget}",
            "trainer.min_epochs=0",  # the plan may end within the first epoch on a slow machine
            "callbacks.time_budget.skip_steps=1",  # planned after three steps, also on a shared CPU
            "callbacks.time_budget.measure_steps=2",
            "callbacks.figures=null",
        ],
    )
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="fruitres.callbacks.time_budget"):
        train(cfg)
    seconds = time.monotonic() - started
    messages = [record.getMessage() for record in caplog.records]
    plans = [message for message in messages if message.startswith("Time budget:")]  # not re-plans
    assert len(plans) == 1, plans
    assert "epochs planned" in plans[0] and "images/s over" in plans[0]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    plan = budget_state(checkpoint)
    # where the plan said, or sooner where a shared CPU slowed down after it and max_time stopped the run
    assert checkpoint["global_step"] <= plan["total_steps"]
    assert checkpoint["epoch"] + 1 <= max(1, math.ceil(plan["total_steps"] / plan["steps_per_epoch"]))
    assert 0 < plan["seconds_left"] < budget and plan["measured_steps"] == 2
    assert seconds < budget + 60  # generous: set-up and a shared CPU; the plan's arithmetic is tested above


def test_a_plan_is_kept_in_checkpoints_and_a_resumed_run_follows_it() -> None:
    planner = TimeBudget()
    planner.plan = BudgetPlan(
        planned_at=20,
        total_steps=900,
        steps_per_epoch=100,
        images_per_second=410.0,
        measured_steps=20,
        seconds_left=580.0,
        ceiling_epochs=None,
    )
    resumed = TimeBudget()
    resumed.load_state_dict(planner.state_dict())
    assert resumed.plan == planner.plan and resumed.plan.epochs == 9
    assert TimeBudget().state_dict() == {}  # no plan yet: nothing to keep


def test_a_test_pass_with_tta_is_planned_at_one_forward_pass_per_view() -> None:
    model = FruitClassifier(num_classes=3, weights=None)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    assert views_per_test_image(trainer) == 1
    for name, views in VIEWS.items():
        model.tta = name
        assert views_per_test_image(trainer) == len(views)
