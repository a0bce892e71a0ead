"""Errors a user can fix end the run with their one-line message instead of a traceback.

Hydra prints a CompactHydraException as its message alone (plus its HYDRA_FULL_ERROR hint) and exits
with status 1; with ``HYDRA_FULL_ERROR=1`` the full traceback, original error included, is shown.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import CompactHydraException, InstantiationException

from fruitres.callbacks.safety import NonFiniteLossError
from fruitres.checkpoint_io import CorruptCheckpointError
from fruitres.data.folders import DatasetLayoutError
from fruitres.models.backbone import WeightsUnavailableError
from fruitres.validation import ConfigError

FIXABLE_ERRORS = (
    ConfigError,
    CorruptCheckpointError,
    DatasetLayoutError,
    NonFiniteLossError,
    WeightsUnavailableError,
)
INTERRUPTED_EXIT_STATUS = 130  # the shell's status for a process stopped by Ctrl-C

T = TypeVar("T")


class FixableError(CompactHydraException):
    """A problem with the config, the data or a file, told in one line that names it and the fix."""


def one_line_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task: fixable errors become FixableError; Ctrl-C outside fitting exits quietly."""

    @functools.wraps(task)
    def wrapper(*args, **kwargs) -> T:
        try:
            return task(*args, **kwargs)
        except FIXABLE_ERRORS as error:
            raise FixableError(str(error)) from error
        except InstantiationException as error:  # raised while building a config node
            if isinstance(error.__cause__, FIXABLE_ERRORS):
                raise FixableError(str(error.__cause__)) from error
            raise
        except KeyboardInterrupt:  # during fitting, Lightning handles it (checkpoint, exit status 1)
            print("Interrupted (Ctrl-C) outside training: nothing to save", file=sys.stderr)
            raise SystemExit(INTERRUPTED_EXIT_STATUS) from None

    return wrapper
