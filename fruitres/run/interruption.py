"""A run stopped by a signal is a state of its own, neither a success nor a crash.

SIGTERM (a scheduler's pre-emption) and Ctrl-C end a run with the status a shell gives a process killed by
that signal (143 and 130), after its record says `interrupted` (fruitres/run/record.py). During fitting
Lightning's own SIGTERM handler runs and the run stops at the end of the batch, saving `interrupted.ckpt`
(fruitres/callbacks/safety.py); anywhere else SIGTERM raises `Terminated` at once, which unwinds like Ctrl-C:
files being written (an image cache) are removed on the way out.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

SIGTERM, CTRL_C = "SIGTERM", "Ctrl-C"
EXIT_STATUS = {SIGTERM: 128 + signal.SIGTERM, CTRL_C: 128 + signal.SIGINT}  # as the shell reports a kill


class Terminated(SystemExit):
    """SIGTERM outside fitting: a BaseException, so no `except Exception` of a data loader swallows it."""


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated (or, during fitting, stops at the end of the batch)."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    if signal.getsignal(signal.SIGTERM) is not _raise_terminated:
        return  # called by Lightning's handler, during fitting: the loop stops at the end of the batch
    raise Terminated(EXIT_STATUS[SIGTERM])


def stopped_by(error: BaseException) -> str | None:
    """The signal that stopped the run, when `error` is its way out (SIGTERM or Ctrl-C); None otherwise."""
    if isinstance(error, Terminated | SIGTERMException):
        return SIGTERM
    if isinstance(error, KeyboardInterrupt):
        return CTRL_C
    # Lightning ends a fit stopped by Ctrl-C with sys.exit(1), raised while handling the KeyboardInterrupt
    if isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt):
        return CTRL_C
    return None
