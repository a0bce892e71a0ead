"""Pretrained weights on a machine without internet: where torchvision reads them, and putting a file there.

torchvision's loader reads `$TORCH_HOME/hub/checkpoints/<file name of the weights' URL>` if it exists and
downloads only otherwise, so `model.weights=IMAGENET1K_V1` runs offline once that file is copied there:

    python -m fruitres.models.weights_cache resnet18 IMAGENET1K_V1            # prints the path
    python -m fruitres.models.weights_cache resnet18 IMAGENET1K_V1 --install resnet18-f37072fd.pth
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch
import torchvision

from fruitres.errors import FixableError, first_line
from fruitres.files import replaced_whole
from fruitres.models.backbone import TIMM_PREFIX, check_weights, torchvision_weights_file


def install_weights_file(arch: str, name: str, source: Path) -> Path:
    """Copy the state dict file `source` to where torchvision reads `arch`'s weights `name`; that path.

    The file must hold `arch`'s state dict: a wrong file there would be read, silently, by every run.
    """
    check_weights(arch, name)
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # a stranger's file: any unpickling failure is "not a state dict"
        reason = first_line(error)
        raise FixableError(f"{source}: not a readable state dict file ({reason})") from None
    expected = torchvision.models.get_model(arch, weights=None).state_dict()
    if not isinstance(state, dict) or set(state) != set(expected):
        raise FixableError(f"{source}: not a state dict of {arch}; give the file {name}'s URL serves")
    target = torchvision_weights_file(arch, name)
    with replaced_whole(target) as partial:
        shutil.copyfile(source, partial)
    return target


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m fruitres.models.weights_cache",
        description="Where torchvision reads pretrained weights (TORCH_HOME); --install puts a file there.",
    )
    parser.add_argument("arch", help="a torchvision model name, e.g. resnet18 (model.arch)")
    parser.add_argument("weights", help="its weights name, e.g. IMAGENET1K_V1 (model.weights)")
    parser.add_argument("--install", type=Path, metavar="FILE", help="copy this state dict file there")
    args = parser.parse_args(argv)
    try:
        if args.arch.startswith(TIMM_PREFIX):
            raise FixableError(
                "timm's weights live in the Hugging Face cache: run `huggingface-cli download timm/<name>` "
                "where there is internet and copy $HF_HOME, then set HF_HUB_OFFLINE=1"
            )
        check_weights(args.arch, args.weights)
        if args.install is None:
            print(torchvision_weights_file(args.arch, args.weights))
        else:
            print(f"installed {install_weights_file(args.arch, args.weights, args.install)}")
    except FixableError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
