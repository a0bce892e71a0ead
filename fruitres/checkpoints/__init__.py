"""Checkpoint files (names, atomic writes, integrity) and weights-only loading for eval, predict, export."""
