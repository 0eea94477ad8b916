"""User-facing error types.

Everything a user can get wrong (a missing file, a bad column, a value out of range, a run directory that
is not one) raises a :class:`TodCleanError`. The CLI prints it as one red line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class TodCleanError(Exception):
    """A mistake in the user's input or options, with a message that says how to fix it."""


class InputError(TodCleanError):
    """A data file that cannot be read or holds an invalid value."""


class ConfigError(TodCleanError):
    """An option or combination of options that is out of range or inconsistent."""


class RunDirError(TodCleanError):
    """A run directory that is missing, incomplete, or does not match the data it is used with."""
