"""`python -m fruitres.bench.tutorial_peer`: one run of the tutorial's loop for the peers benchmark.

Its own process, as every peer's run is, so that its wall time is measured as theirs are. The network is
the tutorial's `resnet18(weights=IMAGENET1K_V1)` from the torch cache the benchmark fills (TORCH_HOME),
with a new head; it trains `--epochs` epochs on the split file's training images with the tutorial's loop
(tutorial.py) and tests its final weights on the split's test images, as the tutorial does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from fruitres.bench import peer_inputs, tutorial


def image_list(split: dict, name: str) -> tutorial.ImageList:
    """The split's `name` files with their class indices, loaded the tutorial's way."""
    index = {class_name: position for position, class_name in enumerate(split["classes"])}
    root = Path(split["data_dir"])
    files = split[name]
    return tutorial.ImageList(
        [root / path for path, _ in files], [index[label] for _, label in files], split["image_size"]
    )


def run(split: dict, epochs: int, seed: int) -> dict:
    """Train `epochs` epochs, test; what the benchmark records of the run."""
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loop = tutorial.TutorialLoop(
        image_list(split, "train"), tutorial.BATCH_SIZE, len(split["classes"]), device
    )
    net = peer_inputs.tutorial_net(len(split["classes"]))
    weights = peer_inputs.loaded_weights(net)
    net = net.to(device)
    optimizer = loop.optimizer(net)
    started = time.time()
    for _ in range(epochs):
        for _ in loop.train_steps(net, optimizer, loop.loader):
            pass
    fit_seconds = time.time() - started
    test = tutorial.loader(image_list(split, "test"), shuffle=False)
    return {
        "epochs": epochs,
        "fit_seconds": fit_seconds,
        "test_acc": loop.accuracy(net, test),
        **weights,
        "arithmetic": f"{device.type}, float32",
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m fruitres.bench.tutorial_peer", description=__doc__)
    parser.add_argument("--split", type=Path, required=True, help="the benchmark's split file (JSON)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--result", type=Path, required=True, help="where to write the run's record (JSON)")
    args = parser.parse_args(argv)
    peer_inputs.write_result(args.result, run(peer_inputs.read_split(args.split), args.epochs, args.seed))


if __name__ == "__main__":
    main(sys.argv[1:])
