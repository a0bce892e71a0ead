"""Errors a user can fix: every entry point ends on one of them with its one-line message, no traceback."""


class FixableError(Exception):
    """A problem with the config, the data or a file, told in one line that names it and the fix."""


class ConfigError(FixableError, ValueError):
    """A config value that cannot run; the message names the key, the value and what is allowed."""
