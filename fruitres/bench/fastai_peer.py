"""`python -m fruitres.bench.fastai_peer`: one fastai `fine_tune` run for the peers benchmark.

Its own process, so that fastai's imports and global settings never reach the benchmark's, and its wall
time is measured as every peer's is. The recipe is the one fastai's documentation writes:

    dls = ImageDataLoaders.from_df(df, path, item_tfms=Resize(size), batch_tfms=aug_transforms())
    learn = vision_learner(dls, resnet18, metrics=accuracy)
    learn.fine_tune(epochs)

with the benchmark's split (the data frame's `is_valid` column: the project's own validation images), and
`learn.to_bf16()` with `--bf16`. `resnet18` loads torchvision's ImageNet file from the torch cache the
benchmark fills (TORCH_HOME). The final weights are tested on the split's test images (`learn.validate`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from fruitres.bench import peer_inputs

EXTRA = 'pip install -e ".[peers]"'


def fastai_vision():
    """fastai's vision API, or one line naming the extra that installs it."""
    try:
        import fastai.vision.all as vision
    except ImportError as error:
        sys.exit(f"error: the peers benchmark needs fastai ({error}); install it with {EXTRA}")
    return vision


def frame(split: dict, names: tuple[str, ...]):
    """A data frame of the split's `names` lists: file (relative to data_dir), label, is_valid."""
    import pandas as pd

    rows = [
        {"name": path, "label": label, "is_valid": name == "val"}
        for name in names
        for path, label in split[name]
    ]
    return pd.DataFrame(rows, columns=["name", "label", "is_valid"])


def output_dtype_recorder(vision, seen: list[str]):
    """A callback that notes the dtype of the network's output on the first training batch: whether
    `to_bf16()` changed the arithmetic on this device."""

    class OutputDtype(vision.Callback):
        def after_pred(self) -> None:
            if self.training and not seen:
                seen.append(str(self.pred.dtype).removeprefix("torch."))

    return OutputDtype()


def run(split: dict, epochs: int, bf16: bool, seed: int) -> dict:
    """fine_tune(`epochs`) and test; what the benchmark records of the run."""
    vision = fastai_vision()
    vision.set_seed(seed, reproducible=False)
    size = split["image_size"]
    dls = vision.ImageDataLoaders.from_df(
        frame(split, ("train", "val")),
        path=split["data_dir"],
        fn_col="name",
        label_col="label",
        valid_col="is_valid",
        item_tfms=vision.Resize(size),
        batch_tfms=vision.aug_transforms(),
    )
    learn = vision.vision_learner(dls, vision.resnet18, metrics=vision.accuracy)
    if bf16:
        learn = learn.to_bf16()
    weights = peer_inputs.loaded_weights(learn.model[0])  # the body: the network without its head
    seen: list[str] = []
    started = time.time()
    learn.fine_tune(epochs, cbs=[output_dtype_recorder(vision, seen)])
    fit_seconds = time.time() - started
    test = learn.dls.test_dl(frame(split, ("test",)), with_labels=True)
    _, test_acc = learn.validate(dl=test)
    return {
        "epochs": epochs + 1,  # fine_tune's one frozen epoch, then `epochs` unfrozen
        "fit_seconds": fit_seconds,
        "test_acc": float(test_acc),
        "arithmetic": f"{dls.device.type}, output {seen[0] if seen else '?'}",
        **weights,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m fruitres.bench.fastai_peer", description=__doc__)
    parser.add_argument("--split", type=Path, required=True, help="the benchmark's split file (JSON)")
    parser.add_argument("--epochs", type=int, required=True, help="fine_tune's epochs (after the frozen one)")
    parser.add_argument("--bf16", action="store_true", help="learn.to_bf16() before fine_tune")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--result", type=Path, required=True, help="where to write the run's record (JSON)")
    args = parser.parse_args(argv)
    result = run(peer_inputs.read_split(args.split), args.epochs, args.bf16, args.seed)
    peer_inputs.write_result(args.result, result)


if __name__ == "__main__":
    main(sys.argv[1:])
