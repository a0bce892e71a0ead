"""`python -m fruitres.bench MODE`: throughput, tta (time to accuracy) or peers; `--help` lists them."""

from __future__ import annotations

import sys

from fruitres.bench.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
