"""The ``tod-clean`` command line: a thin Typer layer over the core functions.

Commands parse options, build a config, call the core and render results with rich. Progress and messages
go to standard error, so standard output carries only data (CSV scores, filtered rows) for pipelines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from tod_clean.errors import TodCleanError
from tod_clean.runtime.processes import MainProcessError, is_main_process, launched_count
from tod_clean.runtime.progress import NullProgress
from tod_clean.runtime.progress import Progress as ProgressSink
from tod_clean.version import __version__

# No emoji codes: a path such as hf:x or a text like :smile: is printed as written, not as an emoji.
# soft_wrap: message lines are not broken at the console's width (80 columns when stderr is a log file,
# which split summaries such as "... -> PATH" in two); a terminal wraps them itself.
console = Console(stderr=True, emoji=False, soft_wrap=True)
app = typer.Typer(
    name="tod-clean",
    help="Find harmful and mislabeled training rows with turn-over dropout (Kobayashi et al., 2020).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: they quote user syntax such as hf:NAME[/CONFIG], which Rich markup would
    # take for a closing tag (and crash on). click's plain help also starts faster.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> typer.Exit:
    console.print(
        f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True, emoji=False
    )
    return typer.Exit(1)


def handle_errors(command: F) -> F:
    """Print user mistakes as one red line and exit 1; leave tracebacks to real bugs."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_as_interrupt():
                return command(*args, **kwargs)
        except MainProcessError:
            raise typer.Exit(1) from None  # the main process prints the error: one line, not one per process
        except TodCleanError as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted") from None
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): not an error of ours.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return wrapper  # type: ignore[return-value]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM (``kill``, a job scheduler's time limit) like Ctrl-C, so that temporary files are
    removed and a run is left resumable or removed, as after an interruption."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers: main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def setup(quiet: bool) -> bool:
    """Quiet third-party chatter; route the core's log to stderr unless --quiet. Returns whether this
    process is quiet: with --quiet, and in every process of an ``accelerate launch`` but the main one."""
    quiet = quiet or not is_main_process()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    root = logging.getLogger("tod_clean")
    root.handlers[:] = []
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    root.addHandler(RichHandler(console=console, show_path=False, show_time=False, markup=False))
    root.propagate = False
    return quiet


class RichProgress:
    """The core's progress interface rendered as a rich bar on stderr (fields such as loss shown)."""

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        self.finish()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")

    def advance(self, steps: int = 1, **fields: float) -> None:
        if self._bar is None:
            return
        info = "  ".join(f"{name.replace('_per_s', '/s')} {value:.4g}" for name, value in fields.items())
        self._bar.update(self._task, advance=steps, info=info)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class LogProgress:
    """Progress as plain lines for a log (stderr not a terminal: nohup, SLURM, a pipe): a rich bar would
    show nothing until the task ends. One line when a task starts, then one every ``interval`` seconds,
    and one when it ends."""

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._description = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last_line = 0.0
        self._fields: dict[str, float] = {}
        self._active = False

    def start(self, description: str, total: int) -> None:
        self.finish()
        self._description, self._total, self._done, self._fields = description, total, 0, {}
        self._started = self._last_line = self._clock()
        self._active = True
        self._line(f"{description}: started ({total:,} steps)")

    def advance(self, steps: int = 1, **fields: float) -> None:
        if not self._active:
            return
        self._done += steps
        self._fields.update(fields)
        now = self._clock()
        if now - self._last_line >= self.interval and self._done < self._total:
            self._last_line = now
            self._line(self._status(now))

    def finish(self) -> None:
        if self._active:
            self._active = False
            self._line(self._status(self._clock()) + " done")

    def _status(self, now: float) -> str:
        elapsed = now - self._started
        share = self._done / self._total if self._total else 1.0
        text = f"{self._description}: {self._done:,}/{self._total:,} ({share:.0%}), {elapsed:.0f} s"
        if 0 < self._done < self._total:
            text += f", eta {elapsed * (self._total - self._done) / self._done:.0f} s"
        info = "  ".join(
            f"{name.replace('_per_s', '/s')} {value:.4g}" for name, value in self._fields.items()
        )
        return text + (f"  {info}" if info else "")

    def _line(self, text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)


def progress_for(quiet: bool) -> ProgressSink:
    """No progress with --quiet; a rich bar on a terminal; plain lines at intervals in a log."""
    if quiet:
        return NullProgress()
    return RichProgress() if console.is_terminal else LogProgress()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tod-clean {__version__}")
        raise typer.Exit()


# Commands that split their work over the processes of ``accelerate launch``; the others would run whole
# in every process, each writing the same outputs.
SEVERAL_PROCESSES = ("train", "score", "explain")


@app.callback()
def _root(
    context: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Turn-over dropout data cleansing for Hugging Face text classifiers."""
    count = launched_count()
    if count > 1 and context.invoked_subcommand not in SEVERAL_PROCESSES:
        if is_main_process():
            raise fail(
                f"'{context.invoked_subcommand}' runs in one process; of the commands only "
                f"{', '.join(SEVERAL_PROCESSES)} split their work over the {count} processes of "
                "accelerate launch: run it without the launcher"
            )
        raise typer.Exit(1)


def main() -> None:
    app()


# Each subcommand lives in its own module and registers itself on ``app``.
from tod_clean.cli import check, cleanse, evaluate, explain, filter, merge, predict, report, score, train  # noqa: E402, F401, A004

# ``--help`` lists the commands in the order of the workflow, not alphabetically; others follow.
WORKFLOW = (
    "train",
    "score",
    "filter",
    "explain",
    "check",
    "predict",
    "evaluate",
    "report",
    "cleanse",
    "merge",
)
app.registered_commands.sort(
    key=lambda info: WORKFLOW.index(info.name) if info.name in WORKFLOW else len(WORKFLOW)
)
