"""The GPU check that scripts/gpu_check.sh runs (`make bench-gpu`): every GPU path of the project, in one go.

Each step is a real process with a time limit of its own, its share (`Step.weight`) of the time left, so
that a slow step cannot eat the others' time and the whole check ends within `--seconds` (GPU_CHECK_TIMEOUT):

  gpu_tests         the suite's tests marked gpu (`pytest -m gpu`)
  train_bf16_mixed  `python -m fruitres.train experiment=resnet18` on generated data in bf16-mixed and
                    channels-last, its IMAGENET1K_V1 weights read offline from a filled cache ($TORCH_HOME)
  train_16_mixed    the same in 16-mixed
  ddp_1gpu          the same through DDP on one GPU (`trainer=ddp trainer.devices=1`)
  torch_compile     the same with `model.compile=true`
  throughput        `python -m fruitres.bench throughput`: NCHW against channels-last, and the tutorial's loop
  time_to_accuracy  `python -m fruitres.bench tta` on the generated classes split in halves

The cached weights are a random ResNet-18's state dict under torchvision's own file name: the check is about
the path (read from the cache, no network), not about ImageNet. After every step it rewrites
$OUT/gpu_check.json and $OUT/gpu_check.md (PASS, FAIL or skipped per step, and the device's name), so a run
cut short still says what it did; each step's output is in $OUT/logs/<step>.log.

`--cpu-dry-run` runs every step on the CPU with tiny sizes and skips the CUDA-only ones ("skipped: no
CUDA"): tests/test_gpu_check.py runs it so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torchvision

from fruitres.bench import report as tta_report
from fruitres.bench.throughput import machine_name
from fruitres.data.embedded import write_embedded_dataset
from fruitres.models.weights_cache import install_weights_file
from fruitres.run_folders import read_record

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = "skipped: no CUDA"
WEIGHTS_LOADED = re.compile(r"Loaded \d+ backbone tensors from IMAGENET1K_V1")
DDP_STARTED = "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/1"  # Lightning's line, one process
STOP_GRACE_S = 10  # after SIGTERM, before SIGKILL


@dataclass(frozen=True)
class Sizes:
    """How big the generated data and the runs are, and what a training run must reach to pass."""

    classes: int
    train_per_class: int
    test_per_class: int
    image_size: int
    batch_size: int
    epochs: int
    min_test_acc: float
    trainer: str  # the trainer config of one device
    ddp_trainer: str
    throughput: tuple[str, ...]  # options of `fruitres.bench throughput`
    tta: tuple[str, ...]  # options and overrides of `fruitres.bench tta`


# Whole batches in every split (validation: a tenth of Training/), so that a compiled model meets one batch
# shape per stage and compiles once for each.
ON_GPU = Sizes(
    classes=20, train_per_class=160, test_per_class=32, image_size=100, batch_size=64, epochs=3,
    min_test_acc=3 / 20, trainer="gpu", ddp_trainer="ddp",
    throughput=("--accelerator", "gpu", "--variants", "full", "--channels-last", "false,true",
                "--steps", "20", "--warmup", "5", "--eval-steps", "5", "--data-steps", "5", "--repeats", "2"),
    tta=("--target", "0.95", "--recipes", "probe,frozen3"),
)  # fmt: skip
ON_CPU = Sizes(
    classes=4, train_per_class=40, test_per_class=4, image_size=32, batch_size=16, epochs=1,
    min_test_acc=0.0, trainer="cpu", ddp_trainer="ddp_cpu",
    throughput=("--accelerator", "cpu", "--image-size", "32", "--batch-size", "16", "--variants", "full",
                "--channels-last", "false,true", "--steps", "1", "--warmup", "1", "--eval-steps", "1",
                "--data-steps", "1", "--repeats", "1", "data.num_workers=0"),
    tta=("--target", "0.05", "--recipes", "probe", "--tutorial-image-size", "32", "data.image_size=32",
         "data.batch_size=16", "data.num_workers=0", "trainer.max_epochs=2", "++trainer.max_steps=8",
         "++trainer.val_check_interval=4"),
)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """Where the check reads and writes, how big it runs, and whether CUDA is there."""

    out: Path
    root: Path  # FRUITRES_ROOT of every process: caches, runs, the weights cache
    sizes: Sizes
    cuda: bool

    @property
    def data(self) -> Path:
        return self.root / "generated-fruits"

    def env(self) -> dict[str, str]:
        """The processes' environment: the filled weights cache, no Hub downloads, this check's root."""
        offline = {"TORCH_HOME": str(self.root / "torch"), "HF_HUB_OFFLINE": "1"}
        cpu_only = {} if self.cuda else {"CUDA_VISIBLE_DEVICES": ""}
        return {**os.environ, **offline, **cpu_only, "FRUITRES_ROOT": str(self.root), "PYTHONUNBUFFERED": "1"}


# --- running a step's process ------------------------------------------------------------------------
def run_process(check: Check, name: str, command: list[str], limit_s: float) -> tuple[int | None, str]:
    """(`command`'s exit status, None when it ran past `limit_s` and was stopped; its output, also in
    $OUT/logs/<name>.log). It runs in a session of its own, so that stopping it stops its workers too."""
    log = check.out / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=check.env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            status = process.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            stop(process)
            status = None
    return status, log.read_text(errors="replace")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the process's group, SIGKILL if it is still there after STOP_GRACE_S."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def outcome(problems: list[str], summary: str, **details: object) -> dict:
    """A step's result: PASS when nothing went wrong, else FAIL with the problems."""
    status = "FAIL" if problems else "PASS"
    return {"status": status, "summary": "; ".join([*problems, summary]), **details}


def exit_problems(status: int | None, limit_s: float) -> list[str]:
    if status is None:
        return [f"stopped at its limit of {limit_s:.0f} s"]
    return [] if status == 0 else [f"exit status {status}"]


# --- the steps: each (check, its name, its time limit) -> its result ----------------------------------
def gpu_tests(check: Check, name: str, limit_s: float) -> dict:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    status, output = run_process(check, name, command, limit_s)
    counts = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|errors?).*?)\s*=*$", output, re.M)
    summary = counts[-1] if counts else "no pytest summary"
    if status == 0 and not check.cuda and " passed" not in summary:
        return {"status": NO_CUDA, "summary": summary}
    problems = exit_problems(status, limit_s)
    if status == 0 and " passed" not in summary:
        problems.append("no GPU test ran")
    return outcome(problems, summary)


def training_run(
    check: Check,
    name: str,
    limit_s: float,
    trainer: str,
    *overrides: str,
    precision: str | None = None,
    in_output: str | None = None,
) -> dict:
    """`python -m fruitres.train experiment=resnet18` on `trainer` with the cached weights: it must read them,
    finish, test at `min_test_acc` or better, train in `precision` and print `in_output` if given."""
    sizes, run_dir = check.sizes, check.root / "runs" / name
    command = [
        sys.executable, "-m", "fruitres.train", "experiment=resnet18", f"trainer={trainer}",
        f"data.data_dir={check.data}", f"data.image_size={sizes.image_size}",
        f"data.batch_size={sizes.batch_size}", f"trainer.max_epochs={sizes.epochs}",
        f"hydra.run.dir={run_dir}", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
        *overrides,
    ]  # fmt: skip
    status, output = run_process(check, name, command, limit_s)
    record = read_record(run_dir) or {}
    hardware = record.get("provenance", {}).get("hardware", {})
    test_acc = record.get("metrics", {}).get("test/acc", float("nan"))
    loaded = WEIGHTS_LOADED.search(output)
    problems = exit_problems(status, limit_s)
    if not loaded:
        problems.append("the IMAGENET1K_V1 weights were not read from the cache")
    if not test_acc >= sizes.min_test_acc:
        problems.append(f"test/acc {test_acc:.3f} < {sizes.min_test_acc:.3f}")
    if precision is not None and hardware.get("precision") != precision:
        problems.append(f"ran in {hardware.get('precision')}, not {precision}")
    if in_output is not None and in_output not in output:
        problems.append(f"no {in_output!r} in its output")
    summary = f"test/acc {test_acc:.3f}, {hardware.get('precision')}" + ", weights from the cache" * bool(
        loaded
    )
    return outcome(
        problems,
        summary,
        test_acc=test_acc,
        precision=hardware.get("precision"),
        device=hardware.get("gpu") or hardware.get("cpu"),
        wall_time_s=record.get("wall_time_s"),
        run_dir=str(run_dir),
    )


def train_bf16_mixed(check: Check, name: str, limit_s: float) -> dict:
    precision = "bf16-mixed"
    return training_run(
        check, name, limit_s, check.sizes.trainer, f"trainer.precision={precision}", precision=precision
    )


def train_16_mixed(check: Check, name: str, limit_s: float) -> dict:
    precision = "16-mixed"
    return training_run(
        check, name, limit_s, check.sizes.trainer, f"trainer.precision={precision}", precision=precision
    )


def ddp_1gpu(check: Check, name: str, limit_s: float) -> dict:
    trainer = check.sizes.ddp_trainer
    return training_run(check, name, limit_s, trainer, "trainer.devices=1", in_output=DDP_STARTED)


def torch_compile(check: Check, name: str, limit_s: float) -> dict:
    return training_run(check, name, limit_s, check.sizes.trainer, "model.compile=true")


def throughput(check: Check, name: str, limit_s: float) -> dict:
    """Images/s of the project, NCHW and channels-last, and of the tutorial's loop beside it."""
    report_file = check.out / "throughput.json"
    command = [sys.executable, "-m", "fruitres.bench", "throughput", "--data-dir", str(check.data)]
    command += ["--json", str(report_file), *check.sizes.throughput]
    status, _ = run_process(check, name, command, limit_s)
    problems = exit_problems(status, limit_s)
    if status != 0 or not report_file.is_file():
        return outcome(problems or ["no throughput.json"], "no figures")
    rows = {
        label: {"images_per_s": row["images_per_s"]["median"], "x_tutorial": row["x_tutorial"]["median"]}
        for label, row in json.loads(report_file.read_text())["train"].items()
    }
    summary = ", ".join(f"{label}: {row['images_per_s']:.0f} images/s" for label, row in rows.items())
    return outcome(problems, summary, rows=rows)


def time_to_accuracy(check: Check, name: str, limit_s: float) -> dict:
    """The tta benchmark, its budget the step's limit less a process's start; its table, CSVs, JSON and
    curves copied to $OUT/tta (its caches and source checkpoint stay under the check's root)."""
    names = sorted(path.name for path in (check.data / "Training").iterdir())
    classes_a, classes_b = check.root / "classes_a.txt", check.root / "classes_b.txt"
    classes_a.write_text("\n".join(names[: len(names) // 2]) + "\n")
    classes_b.write_text("\n".join(names[len(names) // 2 :]) + "\n")
    budget = max(0.5, (limit_s - 30) / 60)  # minutes
    out = check.root / "tta"
    command = [
        sys.executable, "-m", "fruitres.bench", "tta", "--data-dir", str(check.data),
        "--classes-a", str(classes_a), "--classes-b", str(classes_b), "--out", str(out),
        "--budget-minutes", f"{budget:.2f}", "--cap-minutes", f"{budget / 5:.2f}",
        "--tutorial-cap-minutes", f"{budget / 6:.2f}", *check.sizes.tta,
    ]  # fmt: skip
    status, _ = run_process(check, name, command, limit_s)
    problems = exit_problems(status, limit_s)
    if status != 0 or not (out / "tta.json").is_file():
        return outcome(problems or ["no tta.json"], "no table")
    (check.out / "tta").mkdir(exist_ok=True)
    for report_file in out.glob("tta*.*"):
        shutil.copy2(report_file, check.out / "tta" / report_file.name)
    results = json.loads((out / "tta.json").read_text())
    target = results["settings"]["target"]
    outcomes = [tta_report.Outcome(**item) for item in results["outcomes"]]
    rows = [tta_report.row(item, outcomes, target) for item in outcomes]
    reached = {f"{r['start']}-{r['recipe']}": r["seconds_to_target"] or None for r in rows}
    if not any(r["reached"] for r in rows if r["recipe"] != tta_report.TUTORIAL):
        problems.append(f"no project run reached {target}")
    summary = ", ".join(f"{run} {seconds} s" for run, seconds in reached.items() if seconds)
    return outcome(problems, f"time to {target}: {summary or 'none reached'}", seconds_to_target=reached)


# --- the check ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Check, str, float], dict]
    weight: float  # its share of the time left; about what it takes on an H100, with room
    needs_cuda: bool = False


STEPS = [
    Step("gpu_tests", gpu_tests, 45),
    Step("train_bf16_mixed", train_bf16_mixed, 40),
    Step("train_16_mixed", train_16_mixed, 40, needs_cuda=True),
    Step("ddp_1gpu", ddp_1gpu, 45),
    Step("torch_compile", torch_compile, 110),
    Step("throughput", throughput, 70),
    Step("time_to_accuracy", time_to_accuracy, 100),
]


def prepare(check: Check) -> None:
    """The generated data, and the weights cache filled with a ResNet-18 state dict as IMAGENET1K_V1."""
    sizes = check.sizes
    write_embedded_dataset(
        check.data,
        num_classes=sizes.classes,
        train_per_class=sizes.train_per_class,
        test_per_class=sizes.test_per_class,
        image_size=sizes.image_size,
    )
    state_file = check.root / "resnet18-state.pth"
    torch.save(torchvision.models.resnet18().state_dict(), state_file)
    os.environ["TORCH_HOME"] = check.env()["TORCH_HOME"]  # install_weights_file writes under it
    install_weights_file("resnet18", "IMAGENET1K_V1", state_file)


def device_name(cuda: bool) -> str:
    return machine_name(torch.device("cuda", 0) if cuda else torch.device("cpu"))


def run_steps(check: Check, seconds: float, started: float) -> dict:
    """Every step in turn, each within its share of the time left; the summary rewritten after each."""
    summary = {
        "device": device_name(check.cuda),
        "mode": "gpu" if check.cuda else "cpu dry run",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "lightning": L.__version__,
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "budget_s": round(seconds),
        "steps": {},
    }
    deadline = started + seconds
    for index, step in enumerate(STEPS):
        weights_left = sum(later.weight for later in STEPS[index:])
        limit_s = (deadline - time.time()) * step.weight / weights_left
        print(f"=== {step.name} (at most {limit_s:.0f} s)", flush=True)
        begun = time.time()
        if step.needs_cuda and not check.cuda:
            result = {"status": NO_CUDA, "summary": ""}
        elif limit_s < 1:
            result = {"status": "FAIL", "summary": "no time left"}
        else:
            result = step.run(check, step.name, limit_s) | {"log": f"logs/{step.name}.log"}
        result |= {"seconds": round(time.time() - begun, 1), "limit_s": round(limit_s)}
        summary["steps"][step.name] = result
        summary["seconds"] = round(time.time() - started, 1)
        print(
            f"--- {step.name}: {result['status']} in {result['seconds']:.0f} s  {result['summary']}",
            flush=True,
        )
        write_summary(check.out, summary)
    return summary


def markdown(summary: dict) -> str:
    versions = summary["versions"]
    lines = [
        f"# GPU check on {summary['device']} ({summary['mode']})",
        "",
        f"{summary['date']}; {summary['seconds']:.0f} s of a {summary['budget_s']} s budget; python "
        f"{versions['python']}, torch {versions['torch']} (CUDA {versions['cuda']}), lightning "
        f"{versions['lightning']}. Each step's output: `logs/<step>.log`.",
        "",
        "| step | status | seconds | limit s | summary |",
        "|---|---|---:|---:|---|",
    ]
    for name, step in summary["steps"].items():
        cell = step["summary"].replace("|", "\\|")
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.0f} | {step['limit_s']} | {cell} |")
    rows = summary["steps"].get("throughput", {}).get("rows", {})
    if rows:
        lines += ["", "| throughput (training) | images/s | × tutorial |", "|---|---:|---:|"]
        lines += [
            f"| {label} | {r['images_per_s']:.0f} | {r['x_tutorial']:.2f} |" for label, r in rows.items()
        ]
    if "seconds_to_target" in summary["steps"].get("time_to_accuracy", {}):
        lines += ["", "Time to accuracy: the table, curves and settings are in `tta/` (tta.md, tta.png)."]
    return "\n".join(lines) + "\n"


def write_summary(out: Path, summary: dict) -> None:
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(summary))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("GPU_CHECK_TIMEOUT", 470)),
        help="the whole check's time (default GPU_CHECK_TIMEOUT, else 470)",
    )
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp"))
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="every step on the CPU, tiny; CUDA-only ones skipped"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    started = time.time()
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu_dry_run
    if not cuda and not args.cpu_dry_run:
        sys.exit(
            "error: no CUDA device is visible to torch; run this on the GPU machine, or pass --cpu-dry-run "
            "to try every step on the CPU"
        )
    root = Path(os.environ.get("FRUITRES_ROOT") or tempfile.mkdtemp(prefix="fruitres-gpu-"))
    check = Check(out=args.out.resolve(), root=root.resolve(), sizes=ON_GPU if cuda else ON_CPU, cuda=cuda)
    check.out.mkdir(parents=True, exist_ok=True)
    prepare(check)
    print(f"data and weights cache ready in {time.time() - started:.0f} s under {check.root}", flush=True)
    summary = run_steps(check, args.seconds, started)
    print("\n" + markdown(summary))
    print(f"written: {check.out / 'gpu_check.json'}, {check.out / 'gpu_check.md'}")
    sys.exit(0 if all(step["status"] != "FAIL" for step in summary["steps"].values()) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
