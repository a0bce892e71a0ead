"""`python -m fruitres.bench peers`: Test accuracy against wall time, fruitres beside what users would
pick instead — fastai's `fine_tune` (as its documentation writes it, and with `to_bf16()`) and the
tutorial's loop — on a ladder of wall-clock budgets.

What every run shares (fairness rules, docs/performance.md#peers-fastai-and-the-tutorial):
- the data: the project's split of `--data-dir` (classes `--classes-b`; validation a stratified
  `data.val_fraction` of Training/, Test/ only for the final accuracy), handed to each peer as a file list;
- the starting weights: one ResNet-18 file in a temporary torch cache (TORCH_HOME) under the name of
  torchvision's ImageNet file, loaded by each peer through its own code (`experiment=resnet18`'s
  model.weights=IMAGENET1K_V1, fastai's `vision_learner(dls, resnet18)`, the tutorial's `resnet18(...)`),
  offline; by default a backbone this benchmark first trains on the other classes (`--classes-a`,
  `experiment=transfer_source`), or `--weights FILE`. Each run records the SHA-256 of the file it read
  and how many backbone tensors it started from unchanged;
- the image size (`--image-size`) and the clock: every run is its own process (`python -m
  fruitres.train`, `python -m fruitres.bench.fastai_peer`, `python -m fruitres.bench.tutorial_peer`),
  timed from its start to its exit, test included.

At each budget fruitres runs with `trainer.max_time` set to it; fastai runs the `fine_tune` epochs that
fit (its one frozen epoch included) and the tutorial the epochs that fit, estimated from the tool's
earlier runs (its first run: one epoch after the frozen one). The tools take turns at each point, in an
order that rotates, and every point is repeated `--repeats` times.
Writes peers.md, peers.csv, peers.json and peers.png (Test accuracy against wall time) into `--out`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import psutil
import torch
from hydra.errors import HydraException
from hydra.utils import instantiate
from lightning.pytorch import Callback

from fruitres.bench import peer_inputs, peers_report, time_to_accuracy
from fruitres.bench.peers_report import PeerRun
from fruitres.bench.throughput import comma_list, machine_name, quiet
from fruitres.data.datamodule import Fruits360DataModule
from fruitres.errors import FixableError
from fruitres.files import write_text_whole
from fruitres.run.installation import CONF_DIR
from fruitres.run_folders import read_record

FRUITRES, FASTAI, FASTAI_BF16, TUTORIAL = "fruitres", "fastai", "fastai_bf16", "tutorial"
TOOLS = (FRUITRES, FASTAI, FASTAI_BF16, TUTORIAL)
FASTAI_TOOLS = {FASTAI: [], FASTAI_BF16: ["--bf16"]}
FASTAI_FROZEN_EPOCHS = 1  # fine_tune's freeze_epochs
HYDRA_HINT = "HYDRA_FULL_ERROR"  # the last line of every failed Hydra job: not its error


@dataclass(frozen=True)
class Peer:
    tool: str  # one of TOOLS
    recipe: str = ""  # fruitres: the experiment= it runs

    @property
    def label(self) -> str:
        labels = {
            FRUITRES: f"fruitres experiment={self.recipe}",
            FASTAI: "fastai fine_tune",
            FASTAI_BF16: "fastai fine_tune + to_bf16()",
            TUTORIAL: "tutorial loop",
        }
        return labels[self.tool]


class PeerRecord(Callback):
    """In a `fruitres.train` run: the weights file its network loaded and how much of it (before the
    first step), its precision, and its fit time, into `path` (JSON) as the other peers' runners write."""

    def __init__(self, path: str) -> None:
        self.path, self.record, self.started = Path(path), {}, 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record = {**peer_inputs.loaded_weights(pl_module.net), "arithmetic": str(trainer.precision)}
        self.started = time.time()
        write_text_whole(self.path, json.dumps(self.record))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epochs = trainer.global_step / max(1, trainer.num_training_batches)  # max_time can end mid-epoch
        self.record |= {"fit_seconds": time.time() - self.started, "epochs": round(epochs, 2)}
        write_text_whole(self.path, json.dumps(self.record))


# --- the shared inputs ---------------------------------------------------------------------------------
def start_weights(args: argparse.Namespace) -> tuple[Path, str]:
    """(the file every peer loads, installed in the benchmark's torch cache; where it came from)."""
    if args.weights is not None:
        if not args.weights.is_file():
            raise FixableError(
                f"--weights {args.weights} is not a file; give a ResNet-18 state dict or .ckpt"
            )
        source, origin = args.weights, str(args.weights)
    else:
        tta_args = argparse.Namespace(
            source_ckpt=None,
            classes_a=args.classes_a,
            data_dir=args.data_dir,
            out=args.out,
            overrides=args.overrides,
        )
        source, seconds = time_to_accuracy.source_checkpoint(tta_args)
        origin = f"a transfer_source run on {args.classes_a.name}, {seconds:.0f} s"
    return peer_inputs.install_as_imagenet(source, torch_home(args)), origin


def torch_home(args: argparse.Namespace) -> Path:
    return args.out / "torch_home"


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The data every fruitres run and the split file share (the seed seeds the split)."""
    classes = [f"data.classes={args.classes_b}"] if args.classes_b else []
    return [
        f"seed={args.seed}",
        f"data.data_dir={args.data_dir}",
        *classes,
        f"data.image_size={args.image_size}",
        f"data.cache_dir={args.out / 'cache'}",
    ]


def project_split(args: argparse.Namespace) -> tuple[Fruits360DataModule, Path]:
    """The project's splits of the data, set up (which fills the decoded-image cache every fruitres run
    reads), and the split file of the same images for the other peers."""
    overrides = [f"experiment={args.recipes[0]}", *data_overrides(args), f"paths.output_dir={args.out}"]
    cfg = time_to_accuracy.checked_config([*overrides, *args.overrides])
    datamodule: Fruits360DataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup()
    names = datamodule.class_names
    files = {
        split: [
            (path, names[label])
            for path, label in zip(
                datamodule.image_paths(split), datamodule.datasets[split].labels.tolist(), strict=True
            )
        ]
        for split in peer_inputs.SPLITS
    }
    path = args.out / "split.json"
    peer_inputs.write_split(path, args.data_dir, args.image_size, names, files)
    return datamodule, path


# --- one run -------------------------------------------------------------------------------------------
def epochs_that_fit(budget_minutes: float, seconds_per_epoch: float | None) -> int:
    """Whole epochs in the budget at the tool's measured pace; one when there is no measure yet."""
    if seconds_per_epoch is None:
        return 1
    return max(1, math.floor(budget_minutes * 60 / seconds_per_epoch))


def command(
    args: argparse.Namespace, peer: Peer, budget: float, pace: float | None, run_dir: Path, split: Path
) -> list[str]:
    """The process of one run of `peer` at `budget` minutes."""
    result = ["--result", str(run_dir / "result.json"), "--split", str(split), "--seed", str(args.seed)]
    if peer.tool in FASTAI_TOOLS:
        epochs = max(1, epochs_that_fit(budget, pace) - FASTAI_FROZEN_EPOCHS)
        module = "fruitres.bench.fastai_peer"
        return [sys.executable, "-m", module, "--epochs", str(epochs), *FASTAI_TOOLS[peer.tool], *result]
    if peer.tool == TUTORIAL:
        epochs = epochs_that_fit(budget, pace)
        return [sys.executable, "-m", "fruitres.bench.tutorial_peer", "--epochs", str(epochs), *result]
    witness = "+callbacks.peer_record"
    return [
        sys.executable,
        "-m",
        "fruitres.train",
        f"experiment={peer.recipe}",
        *data_overrides(args),
        f"hydra.run.dir={run_dir}",
        f"++trainer.max_time={time_to_accuracy.max_time(budget)}",
        f"{witness}._target_={PeerRecord.__module__}.{PeerRecord.__name__}",
        f"{witness}.path={run_dir / 'result.json'}",
        "callbacks.progress_bar=null",
        "callbacks.model_summary=null",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_model_summary=false",
        *args.overrides,
    ]


def run_once(
    args: argparse.Namespace, peer: Peer, budget: float, repeat: int, pace: float | None, split: Path
) -> PeerRun:
    """One run in its own process, timed from its start to its exit."""
    run_dir = (
        args.out / "runs" / f"{peer.tool}{'-' + peer.recipe if peer.recipe else ''}-{budget:g}min-{repeat}"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TORCH_HOME": str(torch_home(args)), "FRUITRES_ROOT": str(args.out)}
    log = run_dir / "output.log"
    started = time.time()
    with open(log, "w") as output:
        exit_status = subprocess.run(
            command(args, peer, budget, pace, run_dir, split),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        ).returncode
    wall = time.time() - started
    if exit_status != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip() and HYDRA_HINT not in line]
        last = lines[-1] if lines else ""
        raise FixableError(f"{peer.label} failed (exit status {exit_status}: {last}); its output: {log}")
    result = json.loads((run_dir / "result.json").read_text())
    if peer.tool == FRUITRES:
        record = read_record(run_dir)
        result["test_acc"] = record["metrics"].get("test/acc", math.nan)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # not kept: GBs over a ladder
    return PeerRun(
        tool=peer.label,
        budget_minutes=budget,
        repeat=repeat,
        epochs=result["epochs"],
        wall_seconds=round(wall, 1),
        fit_seconds=round(result["fit_seconds"], 1),
        test_acc=round(result["test_acc"], 4),
        weights_sha256=result["weights_sha256"],
        matching_tensors=result["matching_tensors"],
        backbone_tensors=result["backbone_tensors"],
        arithmetic=result["arithmetic"],
    )


# --- the ladder ----------------------------------------------------------------------------------------
def peers_of(args: argparse.Namespace) -> list[Peer]:
    return [
        peer
        for tool in args.tools
        for peer in (
            [Peer(FRUITRES, recipe) for recipe in args.recipes] if tool == FRUITRES else [Peer(tool)]
        )
    ]


def turns(peers: list[Peer], shift: int) -> list[Peer]:
    """`peers` in an order that rotates by `shift`: no tool always runs first on a warm or cold machine."""
    shift %= len(peers)
    return peers[shift:] + peers[:shift]


def pace(runs: list[PeerRun], peer: Peer) -> float | None:
    """Seconds per epoch of `peer`'s runs so far (fit time over epochs), None before the first."""
    own = [run for run in runs if run.tool == peer.label and run.epochs]
    return sum(run.fit_seconds for run in own) / sum(run.epochs for run in own) if own else None


def check_fastai(tools: list[str]) -> None:
    if any(tool in FASTAI_TOOLS for tool in tools) and importlib.util.find_spec("fastai") is None:
        raise FixableError(
            f'--tools {",".join(tools)} needs fastai; install it with pip install -e ".[peers]", '
            f"or leave {FASTAI} and {FASTAI_BF16} out of --tools"
        )


def run_all(args: argparse.Namespace) -> dict:
    began, load_before = time.time(), psutil.getloadavg()[0]
    check_fastai(args.tools)
    args.out.mkdir(parents=True, exist_ok=True)
    weights, origin = start_weights(args)
    datamodule, split = project_split(args)
    peers, runs = peers_of(args), []
    for repeat in range(args.repeats):
        for index, budget in enumerate(args.budgets_minutes):
            for peer in turns(peers, repeat + index):
                print(f"{peer.label} · {budget:g} min · repeat {repeat + 1}", flush=True)
                runs.append(run_once(args, peer, budget, repeat, pace(runs, peer), split))
                print(peers_report.one_line(runs[-1]), flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = {
        "command": "python -m fruitres.bench " + " ".join(args.argv),
        "machine": ", ".join(dict.fromkeys([machine_name(torch.device("cpu")), machine_name(device)])),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fastai": fastai_version(),
        "load_average": [round(load_before, 2), round(psutil.getloadavg()[0], 2)],
        "data_dir": str(args.data_dir),
        "classes": datamodule.num_classes,
        "images": {split: len(images) for split, images in datamodule.datasets.items()},
        "image_size": args.image_size,
        "val_fraction": datamodule.hparams.val_fraction,
        "budgets_minutes": args.budgets_minutes,
        "repeats": args.repeats,
        "weights_origin": origin,
        "weights_sha256": peer_inputs.sha256(weights),
        "total_seconds": round(time.time() - began, 1),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(began)),
    }
    return {"settings": settings, "runs": [asdict(run) for run in runs]}


def fastai_version() -> str:
    try:
        return importlib.metadata.version("fastai")
    except importlib.metadata.PackageNotFoundError:
        return ""


# --- the command line ----------------------------------------------------------------------------------
SUMMARY = "Test accuracy vs wall time beside fastai's fine_tune and the tutorial (make bench-peers)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This mode's description and options, on its `python -m fruitres.bench peers` parser."""
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--data-dir",
        type=time_to_accuracy.data_folder,
        required=True,
        help="a folder with Training/ and Test/",
    )
    parser.add_argument(
        "--weights",
        type=lambda text: Path(text).resolve(),
        help="a ResNet-18 state dict or .ckpt every peer starts from (default: train one on --classes-a)",
    )
    parser.add_argument(
        "--classes-a",
        type=Path,
        default=CONF_DIR / "classes" / "fruits360_a.txt",
        help="the classes the default backbone is trained on, without --weights",
    )
    parser.add_argument(
        "--classes-b",
        type=Path,
        default=CONF_DIR / "classes" / "fruits360_b.txt",
        help="the classes every peer trains on (a file, one name per line)",
    )
    parser.add_argument(
        "--budgets-minutes",
        type=comma_list(float),
        default=[1.0, 2.0, 4.0],
        help="the ladder of wall-clock budgets (default 1,2,4)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each tool at each budget")
    parser.add_argument(
        "--tools",
        type=comma_list(str, TOOLS),
        default=list(TOOLS),
        help=f"of {','.join(TOOLS)} (default all)",
    )
    parser.add_argument(
        "--recipes",
        type=comma_list(str),
        default=["resnet18"],
        help="fruitres experiment= names, e.g. resnet18,resnet18_gradual,resnet18_scratch (default resnet18)",
    )
    parser.add_argument("--image-size", type=int, default=100, help="every peer's (default 100)")
    parser.add_argument("--seed", type=int, default=42, help="of the split and of every run")
    parser.add_argument(
        "--out",
        type=lambda text: Path(text).resolve(),
        default=f"logs/bench_peers/{time.strftime('%Y-%m-%d_%H-%M-%S')}",
        help="the folder of the table, CSV, JSON and figure (default logs/bench_peers/<time>)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides of every fruitres run and the backbone's, e.g. data.batch_size=32",
    )


def run_command(args: argparse.Namespace) -> None:
    """Run `python -m fruitres.bench peers`'s `args`, print the table and write its files."""
    quiet()
    try:
        results = run_all(args)
    except (FixableError, HydraException) as error:  # a bad file, data folder, override or failed run
        sys.exit(f"error: {error}")
    table = peers_report.write(results, args.out)
    print(f"\n{table}\nwritten to {args.out}: peers.md, peers.csv, peers.json, peers.png")
