"""`python -m fruitres.bench MODE [options]`: one command line, a subcommand per benchmark.

Each mode's options live in its module (`add_arguments`); this builds the parser from them and runs the
chosen mode. Without a mode the throughput benchmark runs, as `python -m fruitres.bench` always did.
"""

from __future__ import annotations

import argparse

from fruitres.bench import peers, throughput, time_to_accuracy

PROG = "python -m fruitres.bench"
MODES = {"throughput": throughput, "tta": time_to_accuracy, "peers": peers}
DEFAULT_MODE = "throughput"


def parser() -> argparse.ArgumentParser:
    """The top-level parser, listing each mode with its one-line summary; a subparser per mode."""
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Benchmarks of the project against the tutorial's loop and fastai (docs/performance.md).",
        epilog=f"Without a mode, {DEFAULT_MODE} runs. `{PROG} tta --help` lists that mode's options.",
    )
    modes = top.add_subparsers(title="modes", dest="mode")
    for name, module in MODES.items():
        module.add_arguments(modes.add_parser(name, help=module.SUMMARY))
    return top


def parse_args(argv: list[str]) -> argparse.Namespace:
    """`argv` as the command line reads it; `args.argv` keeps it, with the mode, for the reports."""
    if not argv or argv[0] not in {*MODES, "-h", "--help"}:
        argv = [DEFAULT_MODE, *argv]
    args = parser().parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    MODES[args.mode].run_command(args)
