"""`python -m fruitres.bench throughput`: the project's training pipeline against the tutorial's plain
PyTorch loop.

Both run in this one process on the same data, batch size, image size, threads and device, one after
the other in every repeat (the order alternates), so that a machine busy with other work slows both
alike and their ratio stays meaningful. It prints a table (median [min–max] over the repeats) and
can write the same figures as JSON. `--help` lists the variants; docs/performance.md reads the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice, product
from pathlib import Path

import lightning as L
import psutil
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from fruitres.bench.tutorial import TutorialLoop, image_folder
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.files import write_text_whole
from fruitres.run.compose import compose_config
from fruitres.run.devices import cpu_model, uses_cuda
from fruitres.run.precision_probe import MEASURED, settle_precision

VARIANTS = {"full": 0, "frozen3": 3, "probe": 5}  # --variants name → model.frozen_stages
TUTORIAL = "tutorial loop (ImageFolder + ToTensor, fp32, NCHW)"
TUTORIAL_DATA = "tutorial: ImageFolder + ToTensor (decodes every JPEG)"
PROJECT_DATA = "project: uint8 batches from the image cache"
PROJECT_PREPARED = "project: + to device, normalise"
PROJECT_AUGMENTED = "project: + to device, augment (the config's), normalise"


# --- measuring -------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timeline:
    """The time after each of `total` steps; throughput is over the steps after the `warmup` first ones.

    Timing starts at the end of the last warm-up step. The device's queue is drained only there and at
    the end, so that the CPU may run ahead of the GPU as it does in a real run. The CPU time of this
    process is kept too: images per CPU-second change little when other programs share the machine.
    """

    def __init__(self, warmup: int, total: int, device: torch.device) -> None:
        if not 1 <= warmup < total:
            raise ValueError(
                f"cannot time {total - warmup} steps after {warmup} warm-up steps; need 1 or more of each"
            )
        self.warmup, self.total, self.device = warmup, total, device
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.images = 0
        self.start: float | None = None  # where the first step began, where known

    def warmup_seconds(self) -> float | None:
        """The warm-up steps' time (torch.compile compiles in the first), where the start is known."""
        return None if self.start is None else self.times[self.warmup - 1] - self.start

    def mark(self, size: int) -> None:
        step = len(self.times)
        if step in (self.warmup - 1, self.total - 1):
            synchronize(self.device)
        self.times.append(time.perf_counter())
        self.cpu_times.append(time.process_time())
        if step >= self.warmup:
            self.images += size

    def throughput(self) -> float:
        if len(self.times) != self.total:
            raise RuntimeError(f"only {len(self.times)} of {self.total} steps ran")
        return self.images / (self.times[-1] - self.times[self.warmup - 1])

    def cpu_throughput(self) -> float:
        """Images per CPU-second of this process (all its threads; not DataLoader workers)."""
        return self.images / (self.cpu_times[-1] - self.cpu_times[self.warmup - 1])


class StepTimer(Callback):
    """Marks the end of every training or validation batch of a real Trainer run on a `Timeline`."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.fit_start = self.train_start = 0.0
        self.setup_seconds = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.fit_start = time.perf_counter()  # before the model's own callbacks (the feature cache) set up

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start = time.perf_counter()
        self.setup_seconds = self.train_start - self.fit_start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.timeline.mark(len(batch[1]))

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self.timeline.mark(len(batch[1]))


@contextmanager
def peak_rss() -> Iterator[dict[str, int]]:
    """The peak resident memory of this process and its children (DataLoader workers), sampled."""
    peak = {"bytes": 0}
    stop = threading.Event()
    process = psutil.Process()

    def sample() -> None:
        while True:
            try:
                rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(True))
                peak["bytes"] = max(peak["bytes"], rss)
            except psutil.Error:  # a worker exited between listing and reading
                pass
            if stop.wait(0.02):
                return

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def endless(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def loader_throughput(
    loader: DataLoader, steps: int, warmup: int, device: torch.device, prepare: Callable = lambda batch: batch
) -> float:
    """Images per second of `steps` batches after `warmup`, each moved to `device` and prepared."""
    timeline = Timeline(warmup, warmup + steps, device)
    batches = endless(loader)
    for _ in range(warmup + steps):
        batch = prepare([tensor.to(device, non_blocking=True) for tensor in next(batches)])
        timeline.mark(len(batch[1]))
    return timeline.throughput()


# --- the tutorial's loop -----------------------------------------------------------------------------
def time_tutorial_training(tutorial: TutorialLoop, net: nn.Module, steps: int, warmup: int) -> Timeline:
    """The tutorial's training steps over its endless loader, timed."""
    timeline = Timeline(warmup, warmup + steps, tutorial.device)
    batches = islice(endless(tutorial.loader), warmup + steps)
    for size, _ in tutorial.train_steps(net, tutorial.optimizer(net), batches):
        timeline.mark(size)
    return timeline


def time_tutorial_evaluation(tutorial: TutorialLoop, net: nn.Module, steps: int, warmup: int) -> float:
    """Images per second of the tutorial's evaluation steps (over its training loader)."""
    timeline = Timeline(warmup, warmup + steps, tutorial.device)
    for size, _ in tutorial.eval_steps(net, islice(endless(tutorial.loader), warmup + steps)):
        timeline.mark(size)
    return timeline.throughput()


# --- the project -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectConfig:
    """One configuration of the project under test; None keeps the experiment config's value."""

    variant: str
    precision: str | None = None
    channels_last: bool | None = None
    compile: bool | None = None
    augment: bool = False
    optimizer: str | None = None  # an OPTIMIZER_IMPLEMENTATIONS key

    def overrides(self) -> list[str]:
        chosen = {
            "model.frozen_stages": VARIANTS[self.variant],
            "trainer.precision": self.precision,
            "model.channels_last": self.channels_last,
            "model.compile": self.compile,
        }
        overrides = [f"{key}={value}" for key, value in chosen.items() if value is not None]
        overrides += OPTIMIZER_IMPLEMENTATIONS.get(self.optimizer, [])
        return overrides if self.augment else [*overrides, "data.augment=null"]


# torch's optimizers update tensor by tensor on a CPU unless told (foreach: one kernel a group of tensors;
# fused: one kernel for the whole update)
OPTIMIZER_IMPLEMENTATIONS = {
    "for-loop": ["++model.optimizer.foreach=false", "++model.optimizer.fused=false"],
    "foreach": ["++model.optimizer.foreach=true", "++model.optimizer.fused=false"],
    "fused": ["++model.optimizer.foreach=false", "++model.optimizer.fused=true"],
}


def describe(variant: str, cfg: DictConfig) -> str:
    """A row label naming what the configuration actually ran with."""
    settings = [cfg.trainer.precision, "channels-last" if cfg.model.channels_last else "NCHW"]
    settings += ["compiled"] * bool(cfg.model.compile) + ["augment"] * bool(cfg.data.augment)
    implementation = [name for name in ("fused", "foreach") if cfg.model.optimizer.get(name)]
    settings += [f"{implementation[0]} optimizer"] if implementation else []
    return f"project {variant} ({', '.join(settings)})"


class Project:
    """The project's real path: its DataModule, LightningModule and Trainer, built from the config."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = tempfile.mkdtemp(prefix="fruitres-bench-")
        self.device = _device_of(self.compose([]))
        self.datamodules: dict[str, Fruits360DataModule] = {}

    def compose(self, overrides: list[str]) -> DictConfig:
        """The training config of `--experiment` with the benchmark's settings, then `overrides`."""
        args = self.args
        settings = [
            f"experiment={args.experiment}",
            f"paths.output_dir={self.run_dir}",
            "model.weights=null",  # the speed of pretrained weights, without a download
            f"data.batch_size={args.batch_size}",
            f"data.image_size={args.image_size}",
            *([f"data.data_dir={args.data_dir}"] if args.data_dir else []),
            *([f"data.num_workers={args.num_workers}"] if args.num_workers is not None else []),
            *([f"trainer.accelerator={args.accelerator}"] if args.accelerator else []),
        ]
        return compose_config("train", [*settings, *args.overrides, *overrides])

    def datamodule(self, cfg: DictConfig) -> Fruits360DataModule:
        """The set-up data module of `cfg.data`, one per distinct data config (with/without augmentation)."""
        key = OmegaConf.to_yaml(cfg.data)
        if key not in self.datamodules:
            datamodule = instantiate(cfg.data)
            datamodule.prepare_data()
            datamodule.setup("fit")
            self.datamodules[key] = datamodule
        return self.datamodules[key]

    def model(self, cfg: DictConfig) -> L.LightningModule:
        datamodule = self.datamodule(cfg)
        return instantiate(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names)

    def settle_precision(self, cfg: DictConfig) -> None:
        """`trainer.precision=fastest` (the experiment's) timed once, so the row names what it ran in."""
        if cfg.trainer.precision == MEASURED:
            settle_precision(cfg.trainer, self.model(cfg), self.datamodule(cfg))

    def trainer(self, cfg: DictConfig, timer: StepTimer, **limits) -> L.Trainer:
        feature_cache = cfg.callbacks.get("linear_probe_cache")  # the probe variant's cached features
        return instantiate(
            cfg.trainer,
            callbacks=[timer, *([instantiate(feature_cache)] if feature_cache else [])],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            min_epochs=None,
            **limits,
        )

    def train(self, cfg: DictConfig, steps: int, warmup: int) -> tuple[Timeline, float, L.LightningModule]:
        """(the steps' timeline, seconds from fit set-up to the first batch, the trained model)."""
        datamodule = self.datamodule(cfg)
        L.seed_everything(cfg.seed, verbose=False)  # the same initial weights in every repeat
        model = self.model(cfg)
        timer = StepTimer(Timeline(warmup, warmup + steps, self.device))
        trainer = self.trainer(cfg, timer, max_steps=warmup + steps, max_epochs=-1, limit_val_batches=0)
        trainer.fit(model, datamodule=datamodule)
        timer.timeline.start = timer.train_start
        return timer.timeline, timer.setup_seconds, model

    def evaluate(self, cfg: DictConfig, model: L.LightningModule, steps: int, warmup: int) -> float:
        """Forward passes without gradients through `Trainer.validate`, over the training images (the
        largest split, so that the embedded data has enough batches)."""
        datamodule = self.datamodule(cfg)
        datasets = datamodule.datasets
        validation = datasets["val"]
        datasets["val"] = datasets["train"]
        try:
            steps = min(steps, len(datamodule.val_dataloader()) - warmup)
            timer = StepTimer(Timeline(warmup, warmup + steps, self.device))
            trainer = self.trainer(cfg, timer, limit_val_batches=warmup + steps)
            trainer.validate(model, datamodule=datamodule, verbose=False)
        finally:
            datasets["val"] = validation
        return timer.timeline.throughput()

    def data_throughput(self, steps: int, warmup: int, prepare: bool, augment: bool = False) -> float:
        """The training loader alone, or with the transfer, normalisation (and augmentation) of a fit."""
        datamodule = self.datamodule(self.compose([] if augment else ["data.augment=null"]))
        loader = datamodule.train_dataloader()
        if not prepare:
            return loader_throughput(loader, steps, warmup, torch.device("cpu"))
        datamodule.augment.to(self.device)
        datamodule.trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        datamodule.trainer.training = True  # the training augmentation runs, as in fit
        try:
            return loader_throughput(
                loader, steps, warmup, self.device, lambda batch: datamodule.on_after_batch_transfer(batch, 0)
            )
        finally:
            datamodule.trainer = None


def _device_of(cfg: DictConfig) -> torch.device:
    return torch.device("cuda", 0) if uses_cuda(cfg.trainer.accelerator) else torch.device("cpu")


# --- running -----------------------------------------------------------------------------------------
class Results:
    """Every measurement by section, row and quantity, each a list over the repeats."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, dict[str, list[float]]]] = {}

    def add(self, section: str, row: str, quantity: str, value: float) -> None:
        self.rows.setdefault(section, {}).setdefault(row, {}).setdefault(quantity, []).append(value)

    def summary(self) -> dict:
        """Median, min, max and the values of every quantity."""
        return {
            section: {
                row: {
                    quantity: {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}
                    for quantity, v in quantities.items()
                }
                for row, quantities in rows.items()
            }
            for section, rows in self.rows.items()
        }


def project_configs(args: argparse.Namespace) -> list[ProjectConfig]:
    """Every combination of the listed variants, precisions, layouts, compile and augment settings."""
    combinations = product(
        args.variants, args.precision, args.channels_last, args.compile, args.augment, args.optimizer
    )
    return [ProjectConfig(*combination) for combination in combinations]


def run(args: argparse.Namespace) -> dict:
    """Every repeat: the tutorial loop and each project configuration, in alternating order."""
    torch.set_num_threads(args.threads)
    project = Project(args)
    jobs: list[tuple[str, DictConfig | None]] = [(TUTORIAL, None)]
    for config in project_configs(args):
        cfg = project.compose(config.overrides())
        project.settle_precision(cfg)
        jobs.append((describe(config.variant, cfg), cfg))
    datamodule = project.datamodule(jobs[1][1])
    images = image_folder(datamodule.root / "Training", args.image_size)  # every class, as the tutorial
    tutorial = TutorialLoop(images, args.batch_size, len(images.classes), project.device)
    results = Results()
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}/{args.repeats}", flush=True)
        speeds = {
            label: measure(label, cfg, project, tutorial, results, args)
            for label, cfg in _alternate(jobs, repeat)
        }
        for label, speed in speeds.items():
            results.add("train", label, "x_tutorial", speed / speeds[TUTORIAL])
        measure_data(project, tutorial, results, args)
    return {"settings": settings(args, datamodule, project.device), **results.summary()}


def _alternate(jobs: list, repeat: int) -> list:
    """The jobs in order on even repeats and reversed on odd ones, so that no job always goes first."""
    return jobs if repeat % 2 == 0 else jobs[::-1]


def measure(
    label: str, cfg: DictConfig | None, project: Project, tutorial: TutorialLoop, results: Results, args
) -> float:
    """Training throughput, peak memory and evaluation throughput of one job; returns the training one."""
    with peak_rss() as peak:
        if cfg is None:
            net = tutorial.new_net()
            timeline = time_tutorial_training(tutorial, net, args.steps, args.warmup)
        else:
            timeline, setup_seconds, model = project.train(cfg, args.steps, args.warmup)
    speed = timeline.throughput()
    results.add("train", label, "images_per_s", speed)
    results.add("train", label, "images_per_cpu_s", timeline.cpu_throughput())
    results.add("train", label, "peak_rss_mib", peak["bytes"] / 2**20)
    if cfg is None:
        evaluation = time_tutorial_evaluation(tutorial, net, args.eval_steps, args.warmup)
        results.add("eval", label, "images_per_s", evaluation)
    else:
        results.add("train", label, "setup_s", setup_seconds)
        results.add("train", label, "warmup_s", timeline.warmup_seconds())
        results.add("eval", label, "images_per_s", project.evaluate(cfg, model, args.eval_steps, args.warmup))
    return speed


def measure_data(project: Project, tutorial: TutorialLoop, results: Results, args) -> None:
    """Data loading alone (no model): the tutorial's loader, then the project's, bare and prepared."""
    warmup, steps = args.warmup, args.data_steps
    speeds = {
        TUTORIAL_DATA: loader_throughput(tutorial.loader, steps, warmup, project.device),
        PROJECT_DATA: project.data_throughput(steps * 4, warmup, prepare=False),
        PROJECT_PREPARED: project.data_throughput(steps * 4, warmup, prepare=True),
        PROJECT_AUGMENTED: project.data_throughput(steps * 4, warmup, prepare=True, augment=True),
    }
    for label, speed in speeds.items():
        results.add("data", label, "images_per_s", speed)


def settings(args: argparse.Namespace, datamodule: Fruits360DataModule, device: torch.device) -> dict:
    """What was measured, and on what."""
    return {
        "command": "python -m fruitres.bench " + " ".join(args.argv),
        "machine": machine_name(device),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "data_dir": str(datamodule.root),
        "train_images": len(datamodule.datasets["train"]),
        "num_classes": datamodule.num_classes,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": datamodule.num_workers,
        "augment": args.augment,
        "experiment": args.experiment,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "repeats": args.repeats,
    }


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({psutil.cpu_count()} cores)"


# --- reporting ---------------------------------------------------------------------------------------
def _spread(stats: dict, digits: int = 0) -> str:
    return f"{stats['median']:.{digits}f} [{stats['min']:.{digits}f}–{stats['max']:.{digits}f}]"


def format_table(report: dict) -> str:
    """The report as text: settings, then training, evaluation and data-loading rows."""
    s = report["settings"]
    lines = [
        f"fruitres benchmark: ResNet-18 on {s['data_dir']} ({s['train_images']} training images, "
        f"{s['num_classes']} classes), {s['image_size']}×{s['image_size']}, batch {s['batch_size']}",
        f"machine: {s['machine']}, device {s['device']}, {s['threads']} threads, torch {s['torch']}; "
        f"project loader workers: {s['num_workers']}",
        f"each figure: median [min–max] of {s['repeats']} repeats of {s['timed_steps']} timed steps after "
        f"{s['warmup_steps']} warm-up steps; tutorial and project alternate within every repeat",
        "× tutorial: ratio to the tutorial loop run beside it in the same repeat; img/CPU-s: images per "
        "CPU-second of this process (steadier when other programs share the machine); RSS: peak MiB",
        "",
        f"{'training':<58} {'images/s':>18} {'× tutorial':>18} {'img/CPU-s':>10} {'RSS':>6}",
    ]
    for label, row in report["train"].items():
        speed, ratio = _spread(row["images_per_s"]), _spread(row["x_tutorial"], 2)
        per_cpu, memory = row["images_per_cpu_s"]["median"], row["peak_rss_mib"]["median"]
        lines.append(f"{label:<58} {speed:>18} {ratio:>18} {per_cpu:>10.0f} {memory:>6.0f}")
    for section, title in (("eval", "evaluation (no gradients)"), ("data", "data loading only (no model)")):
        lines += ["", f"{title:<58} {'images/s':>18}"]
        lines += [f"{label:<58} {_spread(row['images_per_s']):>18}" for label, row in report[section].items()]
    setups = {label: row["setup_s"] for label, row in report["train"].items() if "setup_s" in row}
    if any(stats["max"] > 1 for stats in setups.values()):
        lines += [
            "",
            "seconds from fit set-up to the first step (a linear probe computes its features here, once):",
        ]
        lines += [f"{label:<58} {_spread(stats, 1):>18}" for label, stats in setups.items()]
    warmups = {label: row["warmup_s"] for label, row in report["train"].items() if "warmup_s" in row}
    lines += ["", f"seconds of the {s['warmup_steps']} warm-up steps (torch.compile compiles in the first):"]
    lines += [f"{label:<58} {_spread(stats, 1):>18}" for label, stats in warmups.items()]
    return "\n".join(lines)


# --- the command line --------------------------------------------------------------------------------
SUMMARY = "images per second vs the tutorial's loop (make bench)"


def comma_list(kind: Callable, allowed: tuple | None = None) -> Callable[[str], list]:
    """A comma-separated list argument of at least one item, each converted by `kind`."""

    def parse(text: str) -> list:
        items = [kind(item.strip()) for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
        if allowed is not None and not set(items) <= set(allowed):
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(map(str, allowed))}")
        return items

    return parse


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This mode's description and options, on its `python -m fruitres.bench throughput` parser."""
    parser.description = "Training throughput of the project's pipeline against the tutorial's plain loop."
    parser.epilog = (
        "Lists (a,b) make one project row per combination. Unset precision/channels-last/compile "
        "keep the experiment config's values. Extra key=value arguments are Hydra overrides."
    )
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the training config, e.g. data.num_workers=1"
    )
    parser.add_argument("--data-dir", help="a data folder (default: the embedded data)")
    parser.add_argument("--experiment", default="resnet18", help="the experiment config (default resnet18)")
    parser.add_argument(
        "--variants",
        type=comma_list(str, tuple(VARIANTS)),
        default=["full", "frozen3", "probe"],
        help="full (fine-tune all), frozen3 (frozen_stages=3), probe (frozen_stages=5)",
    )
    parser.add_argument("--precision", type=comma_list(str), default=[None], help="e.g. 32-true,bf16-mixed")
    parser.add_argument(
        "--channels-last", type=comma_list(_boolean), default=[None], help="true, false or both"
    )
    parser.add_argument(
        "--compile", type=comma_list(_boolean), default=[None], help="torch.compile: true/false"
    )
    parser.add_argument(
        "--optimizer",
        type=comma_list(str, tuple(OPTIMIZER_IMPLEMENTATIONS)),
        default=[None],
        help="the optimizer's update: for-loop, foreach, fused, or a list (default: the config's)",
    )
    parser.add_argument(
        "--augment",
        type=comma_list(_boolean),
        default=[False],
        help="the config's training augmentation: false (default: the tutorial does none), true or both",
    )
    parser.add_argument("--accelerator", help="cpu or gpu (default: the config's, a GPU when there is one)")
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, help="project loader workers (default: the config's)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for both")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing starts")
    parser.add_argument("--eval-steps", type=int, default=3, help="timed evaluation batches per repeat")
    parser.add_argument("--data-steps", type=int, default=5, help="timed batches of the tutorial's loader")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")


def quiet() -> None:
    """Keep Lightning's notices (GPU available, tips, warnings about short runs) out of the table."""
    warnings.filterwarnings("ignore", module="lightning")
    for name in ("lightning.pytorch", "lightning.fabric", "fruitres"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_command(args: argparse.Namespace) -> None:
    """Measure, print the table and write the JSON of `python -m fruitres.bench throughput`'s `args`."""
    quiet()
    report = run(args)
    print()
    print(format_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text_whole(args.json, json.dumps(report, indent=2) + "\n")
        print(f"\nJSON: {args.json}")
