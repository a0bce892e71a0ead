"""The GPU check that scripts/gpu_check.sh runs: placement, bf16 learning, throughput, time to accuracy,
loader throughput.

Each step's results are added to $OUT/gpu_bench.json as soon as the step ends, so a run cut short still
reports what it measured. Data come from the project's own generator (no dataset on a GPU machine).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch import Callback

from fruitres.bench import report as tta_report
from fruitres.bench import throughput as bench
from fruitres.bench import time_to_accuracy
from fruitres.data.embedded import write_embedded_dataset
from fruitres.train import train

OUT = Path(os.environ.get("OUT") or "/tmp")
REPORT = OUT / "gpu_bench.json"
ROOT = Path(os.environ.setdefault("FRUITRES_ROOT", tempfile.mkdtemp(prefix="fruitres-gpu-")))
DATA = ROOT / "generated-fruits"
NUM_CLASSES = 30
TRAINER = "gpu"  # the trainer config group the checks run with
TIMING = ["--accelerator", "gpu", "--steps", "30", "--warmup", "10"]  # bench options of every run
TIMING += ["--eval-steps", "10", "--data-steps", "10"]


def config(*overrides: str):
    """The real training config on the GPU (trainer=gpu) and the generated data, quiet."""
    settings = [
        "experiment=resnet18",
        f"trainer={TRAINER}",
        "model.weights=null",
        f"data.data_dir={DATA}",
        f"paths.output_dir={tempfile.mkdtemp(dir=ROOT)}",
        "callbacks.progress_bar=null",
    ]
    with initialize_config_dir(config_dir=str(bench.CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*settings, *overrides])


class Placement(Callback):
    """Records where the model and the batches are, and the dtype the forward pass computes in."""

    def __init__(self) -> None:
        self.seen: dict[str, object] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        images = batch[0]
        self.seen.update(
            parameters_on=sorted({p.device.type for p in pl_module.parameters()}),
            batch_on=images.device.type,
            batch_dtype=str(images.dtype),
            batch_channels_last=images.is_contiguous(memory_format=torch.channels_last),
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.seen["logits_dtype"] = str(outputs["logits"].dtype)


def check_placement() -> dict:
    cfg = config()
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    model = instantiate(cfg.model, num_classes=datamodule.num_classes, class_names=datamodule.class_names)
    placement = Placement()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[placement],
        logger=False,
        enable_checkpointing=False,
        max_steps=3,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=datamodule)
    seen = placement.seen | {
        "precision": trainer.precision,
        "pin_memory": trainer.train_dataloader.pin_memory,
        "num_workers": trainer.train_dataloader.num_workers,
        "model_channels_last": bool(cfg.model.channels_last),
    }
    seen["ok"] = (
        seen["parameters_on"] == ["cuda"]
        and seen["batch_on"] == "cuda"
        and seen["logits_dtype"] == "torch.bfloat16"
        and seen["pin_memory"]
    )
    return seen


def check_learning(precision: str, channels_last: bool, epochs: int = 4) -> dict:
    """A short real run (augmentation on, as configured): does it learn, and how fast?"""
    start = time.perf_counter()
    metrics = train(
        config(
            f"trainer.precision={precision}",
            f"model.channels_last={channels_last}",
            f"trainer.max_epochs={epochs}",
        )
    )
    chance = 1 / NUM_CLASSES
    return {
        "precision": precision,
        "channels_last": channels_last,
        "epochs": epochs,
        "val_acc_best": metrics["val/acc_best"],
        "test_acc": metrics["test/acc"],
        "seconds": time.perf_counter() - start,
        "ok": metrics["test/acc"] >= 3 * chance,
    }


def check_probe() -> dict:
    """A linear probe on the cached features of the frozen backbone, computed on the GPU."""
    start = time.perf_counter()
    metrics = train(config("model.frozen_stages=5", "data.augment=null", "trainer.max_epochs=5"))
    features = list((ROOT / "data" / "cache").glob("features-*.npy"))
    return {
        "feature_files": len(features),
        "test_acc": metrics["test/acc"],
        "seconds": time.perf_counter() - start,
        "ok": len(features) >= 1,
    }


def benchmark(*arguments: str) -> dict:
    args = bench.parse_args(["--data-dir", str(DATA), *TIMING, *arguments])
    report = bench.run(args)
    print(bench.format_table(report), flush=True)
    return report


def time_to_accuracy_check(budget_minutes: float = 3.0) -> dict:
    """`python -m fruitres.bench --to-accuracy 0.95` on the generated data, on the GPU: the source backbone
    trained on the first half of the classes, then the tutorial and the project's recipes on the other half.
    Its table, curves and JSON go to $OUT/tta."""
    names = sorted(path.name for path in (DATA / "Training").iterdir())
    classes_a, classes_b = ROOT / "classes_a.txt", ROOT / "classes_b.txt"
    classes_a.write_text("\n".join(names[: len(names) // 2]) + "\n")
    classes_b.write_text("\n".join(names[len(names) // 2 :]) + "\n")
    args = time_to_accuracy.parse_args(
        ["--to-accuracy", "0.95", "--data-dir", str(DATA), "--classes-a", str(classes_a),
         "--classes-b", str(classes_b), "--out", str(OUT / "tta"), "--budget-minutes", str(budget_minutes),
         "--cap-minutes", str(budget_minutes / 6), "--tutorial-cap-minutes", str(budget_minutes / 6)]
    )  # fmt: skip
    results = time_to_accuracy.run_all(args)
    print(tta_report.write(results, args.out), flush=True)
    outcomes = [tta_report.Outcome(**outcome) for outcome in results["outcomes"]]
    rows = [tta_report.row(outcome, outcomes, args.target) for outcome in outcomes]
    return {  # the whole table: $OUT/tta/tta.md and tta.json
        "seconds_to_target": {f"{r['start']}-{r['recipe']}": r["seconds_to_target"] or None for r in rows},
        "best_val_acc": {f"{r['start']}-{r['recipe']}": r["best_val_acc"] for r in rows},
        "seconds": results["settings"]["total_seconds"],
        "ok": any(r["reached"] for r in rows if r["recipe"] != tta_report.TUTORIAL),
    }


def loader_sweep() -> dict:
    """Data-loading throughput (bare; to the GPU and normalised; also augmented) and full bf16 training
    throughput, by number of loader workers: the evidence for data.num_workers on a GPU machine."""
    rows = {}
    for workers in (0, 2, 4, 8):
        project = bench.Project(
            bench.parse_args(["--data-dir", str(DATA), *TIMING, "--num-workers", str(workers)])
        )
        rows[workers] = {
            "loader_images_per_s": project.data_throughput(60, 5, prepare=False),
            "prepared_images_per_s": project.data_throughput(60, 5, prepare=True),
            "augmented_images_per_s": project.data_throughput(60, 5, prepare=True, augment=True),
            "train_full_images_per_s": project.train(project.compose(["data.augment=null"]), 30, 10)[
                0
            ].throughput(),
        }
        print(f"num_workers={workers}: {rows[workers]}", flush=True)
    return rows


def run_steps(steps: list[tuple[str, Callable[[], dict]]]) -> dict:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report = {"device": device, "torch": torch.__version__, "lightning": L.__version__}
    for name, step in steps:
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        try:
            report[name] = step()
        except Exception as error:  # report it and go on: the other steps still say something
            traceback.print_exc()
            report[name] = {"error": f"{type(error).__name__}: {error}", "ok": False}
        print(f"--- {name}: {time.perf_counter() - start:.0f} s", flush=True)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def summary(report: dict) -> str:
    lines = [f"GPU check on {report['device']} (torch {report['torch']}, lightning {report['lightning']})"]
    for name, result in report.items():
        if isinstance(result, dict) and "ok" in result:
            details = {k: v for k, v in result.items() if k != "ok"}
            lines.append(f"  {'PASS' if result['ok'] else 'FAIL'}  {name}: {details}")
    for name in ("throughput", "augment", "ablation", "compile"):
        if isinstance(report.get(name), dict) and "train" in report[name]:
            for label, row in report[name]["train"].items():
                speed, ratio = row["images_per_s"]["median"], row["x_tutorial"]["median"]
                lines.append(f"  {name:<10} {label:<58} {speed:>9.0f} images/s  {ratio:>6.1f}× tutorial")
    return "\n".join(lines)


def steps() -> list[tuple[str, Callable[[], dict]]]:
    """The checks, quickest and most telling first: a run cut short still has those."""
    return [
        ("placement", check_placement),
        ("learning_bf16", lambda: check_learning("bf16-mixed", channels_last=True)),
        ("learning_fp32", lambda: check_learning("32-true", channels_last=False)),
        ("probe", check_probe),
        ("throughput", lambda: benchmark("--variants", "full,frozen3,probe", "--repeats", "3")),
        ("time_to_accuracy", time_to_accuracy_check),
        ("loader", loader_sweep),
        ("augment", lambda: benchmark("--variants", "full", "--augment", "false,true", "--repeats", "2")),
        (
            "ablation",
            lambda: benchmark(
                "--variants",
                "full",
                "--precision",
                "32-true,bf16-mixed",
                "--channels-last",
                "false,true",
                "--repeats",
                "2",
            ),
        ),
        (
            "compile",
            lambda: benchmark(
                "--variants",
                "full",
                "--precision",
                "bf16-mixed",
                "--channels-last",
                "true",
                "--compile",
                "false,true",
                "--repeats",
                "2",
            ),
        ),
    ]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible to torch; run this on the GPU machine")
    bench.quiet()
    start = time.perf_counter()
    write_embedded_dataset(
        DATA, num_classes=NUM_CLASSES, train_per_class=150, test_per_class=40, image_size=100
    )
    print(f"generated data in {DATA} ({time.perf_counter() - start:.0f} s)", flush=True)
    report = run_steps(steps())
    print("\n" + summary(report))
    print(f"\nJSON: {REPORT}")


if __name__ == "__main__":
    main()
