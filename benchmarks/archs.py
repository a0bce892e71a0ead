"""`python benchmarks/archs.py --data-dir DIR`: backbones compared at an equal wall-clock training budget.

Each arch trains from scratch (random init, `experiment=resnet18_scratch` with its `model.arch`) through
the real `fruitres.train` job for `--seconds` of fitting (Lightning's `max_time`; at least one epoch), is
tested on its best checkpoint (on val/acc), and is timed on the test split in eval mode. The table gives
parameters, training images/s (time inside training steps), eval images/s and test accuracy; it is
printed and written as archs.md and archs.json in `--out`. Extra arguments are Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import lightning as L
import psutil
import torch
from lightning.pytorch import Callback

from fruitres.checkpoints.loading import load_checkpoint
from fruitres.files import write_text_whole
from fruitres.run.compose import compose_config
from fruitres.run.devices import cpu_model
from fruitres.train import train

ARCHS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf", "timm/convnext_atto")
EVAL_BATCH = 64


class TrainingThroughput(Callback):
    """Images and seconds inside training steps (forward, backward, optimizer), written at the end of fit."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.images, self.seconds, self.started = 0, 0.0, 0.0

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seconds += time.perf_counter() - self.started
        self.images += len(batch[1])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        write_text_whole(self.path, json.dumps({"images": self.images, "seconds": self.seconds}))


@torch.no_grad()
def eval_images_per_second(checkpoint: Path) -> float:
    """Test-split images per second through the checkpoint's model in eval mode (batch of 64)."""
    loaded = load_checkpoint(checkpoint)
    datamodule = loaded.datamodule
    datamodule.setup()
    images = datamodule.datasets["test"]
    count, seconds = 0, 0.0
    for start in range(0, len(images), EVAL_BATCH):
        batch, _ = images.__getitems__(list(range(start, min(start + EVAL_BATCH, len(images)))))
        started = time.perf_counter()
        loaded.model(datamodule.normalize(batch))
        seconds += time.perf_counter() - started
        count += len(batch)
    return count / seconds


def run_arch(arch: str, args: argparse.Namespace, run_dir: Path) -> dict[str, float | str]:
    throughput_file = run_dir / "throughput.json"
    overrides = [
        "experiment=resnet18_scratch",  # its recipe: one-cycle fitted to max_time, light augmentation
        f"model.arch={arch}",
        f"data.data_dir={Path(args.data_dir).resolve()}",
        f"paths.output_dir={run_dir}",
        f"trainer.max_time=00:00:{args.seconds // 60:02d}:{args.seconds % 60:02d}",
        "trainer.max_epochs=1000",
        "callbacks.progress_bar=null",
        f"+callbacks.throughput._target_={TrainingThroughput.__module__}.TrainingThroughput",
        f"+callbacks.throughput.path={throughput_file}",
        *args.overrides,
    ]
    cfg = compose_config("train", overrides)
    metrics = train(cfg)
    (best,) = (run_dir / "checkpoints").glob("epoch_*.ckpt")
    trained = json.loads(throughput_file.read_text())
    params = sum(p.numel() for p in load_checkpoint(best).model.net.parameters())
    return {
        "arch": arch,
        "params_m": round(params / 1e6, 2),
        "train_img_s": round(trained["images"] / trained["seconds"], 1),
        "images_trained": trained["images"],
        "eval_img_s": round(eval_images_per_second(best), 1),
        "test_acc": round(float(metrics["test/acc"]), 4),
    }


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| arch | params (M) | train img/s | eval img/s | images trained | test acc |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['params_m']} | {r['train_img_s']} | {r['eval_img_s']} | "
            f"{r['images_trained']} | {r['test_acc']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, help="the data folder (docs/data.md#folder-layouts)")
    parser.add_argument("--archs", nargs="+", default=ARCHS, help="model.arch values")
    parser.add_argument("--seconds", type=int, default=120, help="fitting budget per arch")
    parser.add_argument("--out", default=f"logs/archs/{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for every run")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for arch in args.archs:
        rows.append(run_arch(arch, args, out / arch.replace("/", "-")))
        print(json.dumps(rows[-1]), flush=True)
    cpu = cpu_model()
    header = (
        f"From scratch (experiment=resnet18_scratch; overrides: {' '.join(args.overrides) or 'none'}), "
        f"{args.seconds} s of fitting each, {torch.get_num_threads()} threads, {psutil.cpu_count()} CPUs "
        f"({cpu}), load average at the end {psutil.getloadavg()[0]:.1f}; command: {' '.join(sys.argv)}"
    )
    table = markdown(rows, header)
    write_text_whole(out / "archs.md", table)
    write_text_whole(out / "archs.json", json.dumps({"header": header, "rows": rows}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
