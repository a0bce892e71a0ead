"""`python -m fruitres.bench`: throughput (default) or, with `--to-accuracy`, time to accuracy."""

from __future__ import annotations

import sys

from fruitres.bench import throughput, time_to_accuracy


def main(argv: list[str]) -> None:
    if any(arg == "--to-accuracy" or arg.startswith("--to-accuracy=") for arg in argv):
        time_to_accuracy.main(argv)
    else:
        throughput.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
