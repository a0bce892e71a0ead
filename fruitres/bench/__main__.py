"""`python -m fruitres.bench MODE`: throughput or tta (time to accuracy); `--help` lists them."""

from __future__ import annotations

import sys

from fruitres.bench.cli import main

if __name__ == "__main__":
    main(sys.argv[1:])
