"""Errors a user can fix: every entry point ends on one of them with its one-line message, no traceback."""


class FixableError(Exception):
    """A problem with the config, the data or a file, told in one line that names it and the fix."""


class ConfigError(FixableError, ValueError):
    """A config value that cannot run; the message names the key, the value and what is allowed."""


class CheckpointError(FixableError, ValueError):
    """A checkpoint cannot be used (missing, truncated, not a fruitres checkpoint); the message names it."""


def innermost(error: BaseException) -> BaseException:
    """The error at the end of `error`'s chain of causes (Hydra wraps errors raised while instantiating)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def fixable_cause(error: BaseException) -> FixableError | None:
    """The first FixableError along `error`'s chain of causes, `error` included; None if there is none."""
    while error is not None and not isinstance(error, FixableError):
        error = error.__cause__
    return error


def first_line(error: BaseException) -> str:
    """The first line of `error`'s message, or its type's name when it has none: a reason to quote."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
