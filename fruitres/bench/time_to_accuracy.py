"""`python -m fruitres.bench tta --target 0.95`: how soon each recipe reaches a validation accuracy.

Every run trains on the same data (the target classes B, validated on a seeded split of Training/; Test/
only for the final figure) from the same starting weights, one after the other in this process, on a
clock that starts before the run builds anything:

- two starting points: the backbone of a source run that the project trained on the other classes (A),
  given as `--source-ckpt` or trained here first (`experiment=transfer_source`), and random init;
- from each, the tutorial's recipe and loop (tutorial.py: SGD 1e-4, ToTensor, float32, 100 px) for its
  5 epochs (`--tutorial-epochs`), capped only by `--tutorial-cap-minutes`: its final accuracy is the
  reference the other runs are timed against, so it is not cut short to fit the budget;
- then the project's recipes through the real `fruitres.train` job: from the source backbone each recipe
  of `--recipes` as the transfer study runs it (`experiment=transfer_target recipe=<name>`: 120 steps),
  from random init the recipe the source itself was trained with (`experiment=transfer_source
  recipe=scratch`: 12 epochs).

A project run stops at its target, at the end of its recipe's schedule, or at its time cap:
`--cap-minutes`, or less when the runs left would otherwise take the whole command past
`--budget-minutes`. The project's runs aim at the target or at the tutorial's final accuracy from the
same start (its last validation), whichever is higher, so that the table can say how much sooner they
reach what the tutorial ends with.
Writes tta.md, tta.csv, tta_curves.csv, tta.json and tta.png (validation accuracy against wall time)
into `--out`.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import psutil
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig

from fruitres.bench import report, tutorial
from fruitres.bench.clock import ValidationClock
from fruitres.bench.report import Outcome
from fruitres.bench.throughput import comma_list, machine_name, quiet
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.data.splits import resolve_split_folders
from fruitres.errors import FixableError
from fruitres.models.backbone import build_backbone
from fruitres.reports.transfer_report import RECIPES as RECIPE_LABELS
from fruitres.reports.transfer_report import SCRATCH
from fruitres.run.compose import compose_config
from fruitres.run.config_checks import validate_config
from fruitres.run.installation import CONF_DIR
from fruitres.train import train

SOURCE, RANDOM = "source", "random"  # the two starting points
TUTORIAL = report.TUTORIAL
RANDOM_INIT_RECIPE = SCRATCH
RECIPES = tuple(name for name in RECIPE_LABELS if name != SCRATCH)  # conf/recipe/, from the source backbone


@dataclass(frozen=True)
class Run:
    start: str  # SOURCE or RANDOM
    recipe: str  # TUTORIAL or a conf/recipe/ name

    def experiment(self, args: argparse.Namespace) -> str:
        return args.experiment if self.start == SOURCE else args.scratch_experiment


# --- configs -----------------------------------------------------------------------------------------
def checked_config(overrides: list[str]) -> DictConfig:
    """The training config with `overrides`, checked as `python -m fruitres.train` checks it."""
    cfg = compose_config("train", overrides)
    validate_config(cfg)
    return cfg


def common_overrides(args: argparse.Namespace, name: str) -> list[str]:
    """Data, caches and output folder of run `name`; quiet; then the user's overrides."""
    return [
        f"data.data_dir={args.data_dir}",
        f"data.cache_dir={args.out / 'cache'}",  # this benchmark's own caches: every figure pays for its own
        f"paths.output_dir={args.out / 'runs' / name}",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        *args.overrides,
    ]


def project_overrides(
    args: argparse.Namespace, run: Run, source: Path | None, stop_at: float, cap_minutes: float
) -> list[str]:
    """`experiment=... recipe=<run.recipe>` on classes B: capped, timed, stopped at `stop_at`."""
    name = f"{run.start}-{run.recipe}"
    clock = "+callbacks.validation_clock"
    weights = [f"model.weights_path={source}"] if run.start == SOURCE else []
    return [
        f"experiment={run.experiment(args)}",
        f"recipe={run.recipe}",
        f"data.classes={args.classes_b}",
        *weights,
        f"trainer.max_time={max_time(cap_minutes)}",
        "callbacks.time_budget=null",  # the cap stops a run; it is not a budget to stretch the recipe into
        f"{clock}._target_={ValidationClock.__module__}.{ValidationClock.__name__}",
        f"{clock}.path={args.out / 'runs' / name / 'clock.json'}",
        f"{clock}.start={time.time()}",
        f"{clock}.stop_at={stop_at}",
        *common_overrides(args, name),
    ]


def max_time(minutes: float) -> str:
    """Lightning's DD:HH:MM:SS."""
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --- the source backbone -----------------------------------------------------------------------------
def source_checkpoint(args: argparse.Namespace) -> tuple[Path, float]:
    """(the source run's best checkpoint, seconds spent training it here: 0 when given)."""
    if args.source_ckpt is not None:
        check_source(args.source_ckpt)
        return args.source_ckpt, 0.0
    print("training the source backbone on classes A (experiment=transfer_source)", flush=True)
    started = time.time()
    overrides = ["experiment=transfer_source", f"data.classes={args.classes_a}"]
    train(checked_config([*overrides, *common_overrides(args, "source")]))
    (best,) = (args.out / "runs" / "source" / "checkpoints").glob("epoch_*.ckpt")
    return best, time.time() - started


def check_source(path: Path) -> None:
    """A file holding a ResNet-18 backbone, or one line saying what to pass."""
    if not path.is_file():
        raise FixableError(
            f"--source-ckpt {path} is not a file; pass the best checkpoint of a transfer_source run "
            "(<run dir>/checkpoints/epoch_*.ckpt), or leave --source-ckpt out to train one first"
        )
    build_backbone("resnet18", num_classes=2, weights_path=str(path))  # one-line error if not ResNet-18


# --- the runs ----------------------------------------------------------------------------------------
def target_data(args: argparse.Namespace) -> Fruits360DataModule:
    """The project's splits of classes B (what every project run validates on), set up."""
    cfgs = [
        checked_config(
            [f"experiment={name}", f"data.classes={args.classes_b}", *common_overrides(args, "data")]
        )
        for name in (args.experiment, args.scratch_experiment)
    ]
    splits = {(cfg.data.val_fraction, cfg.data.split_seed) for cfg in cfgs}
    if len(splits) > 1:
        raise FixableError(
            f"experiment={args.experiment} and {args.scratch_experiment} validate on different splits "
            f"(data.val_fraction, data.split_seed: {sorted(splits)}); pass the same as overrides"
        )
    datamodule: Fruits360DataModule = instantiate(cfgs[0].data)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def image_list(datamodule: Fruits360DataModule, split: str, image_size: int) -> tutorial.ImageList:
    """The files of the project's `split` (train, val or test), loaded the tutorial's way."""
    labels = datamodule.datasets[split].labels.tolist()
    return tutorial.ImageList(datamodule.image_paths(split), labels, image_size)


def run_tutorial(
    args: argparse.Namespace,
    start: str,
    source: Path | None,
    datamodule: Fruits360DataModule,
    cap_minutes: float,
) -> Outcome:
    """The tutorial's loop for its epochs, validating after each; the best epoch's weights are tested."""
    outcome = Outcome(start, TUTORIAL, args.tutorial_image_size, args.target)
    started, deadline = time.time(), time.time() + cap_minutes * 60
    L.seed_everything(args.seed, verbose=False)
    loop = tutorial.TutorialLoop(
        image_list(datamodule, "train", args.tutorial_image_size),
        tutorial.BATCH_SIZE,
        datamodule.num_classes,
        device(),
    )
    val = tutorial.loader(image_list(datamodule, "val", args.tutorial_image_size), shuffle=False)
    net = loop.new_net(source if start == SOURCE else None)
    optimizer, best_accuracy, best_state = loop.optimizer(net), -1.0, None
    for epoch in range(args.tutorial_epochs):
        trained = list(cut_at(loop.train_steps(net, optimizer, loop.loader), deadline))
        accuracy = loop.accuracy(net, val)
        epochs = epoch + len(trained) / len(loop.loader)
        train_acc = sum(correct for _, correct in trained) / sum(size for size, _ in trained)
        point = {"seconds": time.time() - started, "epochs": epochs, "train_acc": train_acc}
        outcome.points.append({**point, "val_acc": accuracy})
        if accuracy > best_accuracy:  # the tutorial keeps its best epoch's weights too
            best_accuracy, best_state = accuracy, copy.deepcopy(net.state_dict())
        outcome.stopped = stop_reason(accuracy, args.target, time.time() >= deadline)
        if outcome.stopped:
            break
    outcome.stopped = outcome.stopped or f"{args.tutorial_epochs} epochs"
    outcome.fit_seconds = time.time() - started
    net.load_state_dict(best_state)
    outcome.test_acc = loop.accuracy(net, tutorial.loader(image_list(datamodule, "test", outcome.image_size)))
    return outcome


def device() -> torch.device:
    """The tutorial's device, picked as its text does: the GPU when there is one (the project's runs get
    it too, from `trainer: auto`)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cut_at(steps: Iterator, deadline: float) -> Iterator:
    """The steps of `steps` until the clock passes `deadline`."""
    for step in steps:
        yield step
        if time.time() >= deadline:
            return


def stop_reason(accuracy: float, stop_at: float, out_of_time: bool) -> str:
    if accuracy >= stop_at:
        return "target"
    return "time cap" if out_of_time else ""


def run_project(
    args: argparse.Namespace, run: Run, source: Path | None, stop_at: float, cap_minutes: float
) -> Outcome:
    """One recipe through `fruitres.train`'s job; the clock callback records its validations."""
    cfg = checked_config(project_overrides(args, run, source, stop_at, cap_minutes))
    outcome = Outcome(run.start, run.recipe, cfg.data.image_size, stop_at)
    started = cfg.callbacks.validation_clock.start
    metrics = train(cfg)
    clock = Path(cfg.callbacks.validation_clock.path)
    outcome.points = json.loads(clock.read_text()) if clock.exists() else []
    last = outcome.points[-1] if outcome.points else {"seconds": time.time() - started, "val_acc": 0.0}
    outcome.fit_seconds = last["seconds"]
    outcome.test_acc = metrics.get("test/acc", float("nan"))
    schedule, done = schedule_length(cfg), last.get("steps", 0)
    out_of_time = done < schedule[0] if schedule[1] == "steps" else last.get("epochs", 0) < schedule[0]
    outcome.stopped = stop_reason(last["val_acc"], stop_at, out_of_time) or f"{schedule[0]} {schedule[1]}"
    shutil.rmtree(Path(cfg.paths.output_dir) / "checkpoints", ignore_errors=True)  # not kept
    return outcome


def schedule_length(cfg: DictConfig) -> tuple[int, str]:
    """(how long the recipe trains, in "steps" or "epochs"): Lightning's max_steps when set, else epochs."""
    if cfg.trainer.get("max_steps", -1) > 0:
        return cfg.trainer.max_steps, "steps"
    return cfg.trainer.max_epochs, "epochs"


def plan(args: argparse.Namespace) -> list[Run]:
    """From the source backbone: the tutorial, then each recipe; from random init: the tutorial, scratch."""
    runs = {
        SOURCE: [Run(SOURCE, TUTORIAL), *(Run(SOURCE, recipe) for recipe in args.recipes)],
        RANDOM: [Run(RANDOM, TUTORIAL), Run(RANDOM, RANDOM_INIT_RECIPE)],
    }
    return [run for start in args.starts for run in runs[start]]


def run_cap(args: argparse.Namespace, began: float, runs: list[Run], tutorial_minutes: float) -> float:
    """Minutes for the next of `runs`: the tutorial's own cap; for a project run `--cap-minutes`, less
    when the project runs left, after the tutorials still to come (`tutorial_minutes` each), would
    overrun `--budget-minutes`."""
    if runs[0].recipe == TUTORIAL:
        return args.tutorial_cap_minutes
    tutorials_left = sum(run.recipe == TUTORIAL for run in runs)
    left = args.budget_minutes - (time.time() - began) / 60 - tutorials_left * tutorial_minutes
    return max(0.1, min(args.cap_minutes, left / (len(runs) - tutorials_left)))


def run_all(args: argparse.Namespace) -> dict:
    began, load_before = time.time(), psutil.getloadavg()[0]
    torch.set_num_threads(args.threads)
    source, source_seconds = source_checkpoint(args) if SOURCE in args.starts else (None, 0.0)
    datamodule = target_data(args)
    outcomes: list[Outcome] = []
    runs = plan(args)
    for index, run in enumerate(runs):
        tutorials = [o.fit_seconds / 60 for o in outcomes if o.recipe == TUTORIAL]  # the last: an estimate
        cap = run_cap(args, began, runs[index:], tutorials[-1] if tutorials else args.tutorial_cap_minutes)
        print(f"{run.start} · {run.recipe} (at most {cap:.1f} min)", flush=True)
        if run.recipe == TUTORIAL:
            outcomes.append(run_tutorial(args, run.start, source, datamodule, cap))
        else:
            tutorial_final = report.final_point(report.tutorial_of(outcomes, run.start)) or {"val_acc": 0.0}
            outcomes.append(run_project(args, run, source, max(args.target, tutorial_final["val_acc"]), cap))
        outcomes[-1].cap_minutes = cap
        print(report.one_line(outcomes[-1], args.target), flush=True)
    settings = {
        "command": "python -m fruitres.bench " + " ".join(args.argv),
        "machine": ", ".join(dict.fromkeys([machine_name(torch.device("cpu")), machine_name(device())])),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": [round(load_before, 2), round(psutil.getloadavg()[0], 2)],
        "data_dir": str(args.data_dir),
        "classes": datamodule.num_classes,
        "images": {split: len(images) for split, images in datamodule.datasets.items()},
        "target": args.target,
        "cap_minutes": args.cap_minutes,
        "tutorial_epochs": args.tutorial_epochs,
        "tutorial_cap_minutes": args.tutorial_cap_minutes,
        "budget_minutes": args.budget_minutes,
        "source_ckpt": str(source) if source else "",
        "source_seconds": round(source_seconds, 1),
        "total_seconds": round(time.time() - began, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began)),
    }
    return {"settings": settings, "outcomes": [asdict(outcome) for outcome in outcomes]}


# --- the command line --------------------------------------------------------------------------------
SUMMARY = "time to a target accuracy vs the tutorial (make bench-tta)"


def fraction(text: str) -> float:
    """An accuracy to reach: a number in (0, 1]."""
    error = argparse.ArgumentTypeError(f"{text}: give a fraction in (0, 1], e.g. 0.95")
    try:
        value = float(text)
    except ValueError:
        raise error from None
    if not 0 < value <= 1:
        raise error
    return value


def data_folder(text: str) -> Path:
    """A data folder whose split folders training finds (fruitres/data/splits.py), as an absolute path."""
    path = Path(text).resolve()
    try:
        resolve_split_folders(path, None)
    except FixableError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This mode's description and options, on its `python -m fruitres.bench tta` parser."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--target",
        "--to-accuracy",
        type=fraction,
        default=0.95,
        help="the validation accuracy to reach (default 0.95)",
    )
    parser.add_argument(
        "--data-dir", type=data_folder, required=True, help="a data folder (docs/data.md#folder-layouts)"
    )
    parser.add_argument("--source-ckpt", type=Path, help="a transfer_source run's best checkpoint")
    parser.add_argument("--classes-a", type=Path, default=CONF_DIR / "classes" / "fruits360_a.txt")
    parser.add_argument("--classes-b", type=Path, default=CONF_DIR / "classes" / "fruits360_b.txt")
    parser.add_argument(
        "--experiment",
        default="transfer_target",
        help="of the runs from the source (default transfer_target)",
    )
    parser.add_argument(
        "--scratch-experiment",
        default="transfer_source",
        help="of scratch from random init (transfer_source)",
    )
    parser.add_argument(
        "--recipes",
        type=comma_list(str),
        default=list(RECIPES),
        help=f"conf/recipe/ names, from the source (default {','.join(RECIPES)})",
    )
    parser.add_argument(
        "--starts",
        type=comma_list(str, (SOURCE, RANDOM)),
        default=[SOURCE, RANDOM],
        help="source, random or both (default)",
    )
    parser.add_argument("--cap-minutes", type=float, default=4.0, help="wall-time limit of a project run")
    parser.add_argument(
        "--tutorial-epochs", type=int, default=tutorial.EPOCHS, help="its 5, or more for a long run"
    )
    parser.add_argument(
        "--tutorial-cap-minutes", type=float, default=10.0, help="wall-time limit of a tutorial run"
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=30.0,
        help="all of it, source included: project runs' caps shrink to fit it",
    )
    parser.add_argument("--tutorial-image-size", type=int, default=tutorial.IMAGE_SIZE)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=42, help="the tutorial's (the project's: seed=)")
    parser.add_argument(
        "--out",
        type=lambda text: Path(text).resolve(),
        default=f"logs/bench_tta/{time.strftime('%Y-%m-%d_%H-%M-%S')}",
        help="the folder of the table, CSVs and curves (default logs/bench_tta/<time>)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of every project run, e.g. seed=1")


def run_command(args: argparse.Namespace) -> None:
    """Run `python -m fruitres.bench tta`'s `args`, print the table and write its files."""
    quiet()
    try:
        results = run_all(args)
    except (FixableError, HydraException) as error:  # a bad file, data folder or override: one line
        sys.exit(f"error: {error}")
    table = report.write(results, args.out)
    print(f"\n{table}\nwritten to {args.out}: tta.md, tta.csv, tta_curves.csv, tta.json, tta.png")
