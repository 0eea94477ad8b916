"""What the pipelines take as data: a path or rows in memory, a run's training rows, and options by name."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tod_clean.errors import ConfigError, spelled
from tod_clean.io.inputs import to_table
from tod_clean.io.table import Table
from tod_clean.run.rundir import RunInfo

Data = Any  # a path (str or os.PathLike), a pandas.DataFrame or a datasets.Dataset


def is_path(data: Data) -> bool:
    """Whether ``data`` names data (a file, ``-``, a folder, ``hf:...``) rather than holding rows."""
    return isinstance(data, (str, os.PathLike))


def path_of(data: Data | None) -> str | None:
    """The path ``data`` names, or None for rows in memory."""
    return os.fspath(data) if data is not None and is_path(data) else None


def known_options(config: type, options: dict[str, Any], *, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """``options`` as keyword arguments of the ``config`` dataclass; an unknown name is a ConfigError."""
    known = {f.name for f in dataclasses.fields(config)} - set(reserved)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(known))}")
    return options


def run_data(
    info: RunInfo, data: Data | None, stdin_format: str | None = None, *, instead: str | None = None
) -> Table:
    """The run's training rows: ``data`` when given (a path read with the run's split, stdin in
    ``stdin_format``), else its file (a copy of stdin is read by its extension: train.csv is CSV;
    ``instead`` says how to give the rows when that file was a pipe: see ``RunInfo.train_source``)."""
    if data is None:
        return to_table(
            info.train_source(instead=instead or f"pass {spelled('train', 'FILE')}"),
            split=info.train_file.split,
        )
    split = info.train_file.split if is_path(data) else None
    return to_table(data, split=split, stdin_format=stdin_format)
