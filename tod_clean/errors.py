"""User-facing error types.

Everything a user can get wrong (a missing file, a bad column, a value out of range, a run directory that
is not one) raises a :class:`TodCleanError`. The CLI prints it as one red line and exits non-zero; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar


class TodCleanError(Exception):
    """A mistake in the user's input or options, with a message that says how to fix it."""


class InputError(TodCleanError):
    """A data file that cannot be read or holds an invalid value."""


class ConfigError(TodCleanError):
    """An option or combination of options that is out of range or inconsistent."""


class RunDirError(TodCleanError):
    """A run directory that is missing, incomplete, or does not match the data it is used with."""


class OptionError(ConfigError):
    """A bad value of one option, named by its keyword (``learning_rate``); ``spelled`` names it, and the
    options its message mentions as ``{keyword}`` fields, as another caller spells them (``--lr``)."""

    def __init__(self, name: str, problem: str, *, mentions: tuple[str, ...] = ()) -> None:
        self.name = name
        self.problem = problem
        self.mentions = mentions
        super().__init__(self._text(lambda keyword: keyword))

    def _text(self, spell: Callable[[str], str]) -> str:
        return f"{spell(self.name)} " + self.problem.format(**{m: spell(m) for m in self.mentions})

    def spelled(self, spell: Callable[[str], str]) -> ConfigError:
        """The same error with every option named by ``spell(keyword)``."""
        return ConfigError(self._text(spell))


# True while the Python API's entry points run: errors then name options by their keywords.
_KEYWORDS: ContextVar[bool] = ContextVar("tod_clean_keywords", default=False)


@contextmanager
def keywords() -> Iterator[None]:
    """Name options by their Python keywords (``drop_count``) in the errors raised inside; the Python API's
    entry points run in it (a decorator too: ``@keywords()``). Outside, errors name command-line flags."""
    token = _KEYWORDS.set(True)
    try:
        yield
    finally:
        _KEYWORDS.reset(token)


def spelled(name: str, value: str | None = None, *, flag: str | None = None) -> str:
    """The option ``name`` (a keyword: ``drop_count``) as its caller spells it, for messages: the
    command-line flag (``--drop-count``; ``flag`` where it is not ``--`` and the dashed keyword), or the
    keyword inside ``keywords()``. With ``value``: the option given it (``--train FILE``, ``train=FILE``)."""
    if _KEYWORDS.get():
        return name if value is None else f"{name}={value}"
    spelling = flag or "--" + name.replace("_", "-")
    return spelling if value is None else f"{spelling} {value}"


def switched_on(name: str) -> str:
    """The switch ``name`` turned on, as its caller spells it: ``--overwrite``, or ``overwrite=True``."""
    return spelled(name, "True") if _KEYWORDS.get() else spelled(name)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (other libraries' messages run over many lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
