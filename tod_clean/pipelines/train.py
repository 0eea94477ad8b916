"""The ``train`` pipeline: a ``TrainConfig`` from options by name, a new run trained on data, an
interrupted run resumed."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tod_clean.config import DataColumns, TrainConfig, comma_list
from tod_clean.errors import ConfigError
from tod_clean.instances import for_table
from tod_clean.io import STDIN
from tod_clean.io.inputs import to_table
from tod_clean.pipelines.inputs import Data, is_path, known_options, run_data
from tod_clean.run.rundir import RunDir, RunInfo
from tod_clean.runtime.progress import Progress

if TYPE_CHECKING:
    from tod_clean.training.loop import TrainResult


def train_config(
    *,
    text_col: str = "text",
    text_pair_col: str | None = None,
    label_col: str = "label",
    id_col: str | None = None,
    image_col: str | None = None,
    **options: Any,
) -> TrainConfig:
    """A ``TrainConfig`` from the column names and any other of its fields by name (``lora_targets`` may be
    comma-separated text); ranges are checked by ``TrainConfig`` itself."""
    options = known_options(TrainConfig, options, reserved=("columns", "mask_scheme"))
    columns = DataColumns(
        text_col=text_col,
        text_pair_col=text_pair_col,
        label_col=label_col,
        id_col=id_col,
        image_col=image_col,
    )
    return TrainConfig(columns=columns, **options)


def train(
    config: TrainConfig,
    data: Data,
    run: RunDir,
    *,
    split: str | None = None,
    stdin_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a new run on ``data`` (in-memory rows are kept in the run as ``train.jsonl``; rows from stdin,
    read in ``stdin_format``, as ``train.<format>``)."""
    table = to_table(data, split=split, stdin_format=stdin_format)
    # An image column found by itself is recorded in the run's config; a missing column is reported
    # before training's imports (transformers, peft: seconds) load.
    config = for_table(config, table)
    columns = config.columns
    table.require_columns(
        [columns.image_col if columns.images else columns.text_col, columns.text_pair_col]
        + [columns.label_col, columns.id_col]
    )
    from tod_clean.training.loop import train as train_run

    train_path = os.fspath(data) if is_path(data) else STDIN
    return train_run(config, table, run, train_path=train_path, overwrite=overwrite, progress=progress)


def resume(
    run: RunDir,
    data: Data | None = None,
    *,
    options: dict[str, Any] | None = None,
    spell: Callable[[str], str] = str,
    stdin_format: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Continue an interrupted run on its training data (``data`` when it moved: the same rows).

    ``options``: training options the caller gave (by field name, ``lora_targets`` may be comma-separated
    text), refused where they differ from the run's saved ones (``spell`` names them as the caller does).
    Applying a change instead would not be coherent: even the epochs reshape the learning-rate schedule.
    """
    info = run.read_info()
    _refuse_changed_options(info, options or {}, spell)
    from tod_clean.training.loop import resume as resume_run

    instead = "give the same rows as a file: tod-clean train FILE --resume"
    return resume_run(run_data(info, data, stdin_format, instead=instead), run, progress=progress)


def _refuse_changed_options(info: RunInfo, given: dict[str, Any], spell: Callable[[str], str]) -> None:
    """Refuse ``given`` options whose values differ from the run's saved ones (equal values are accepted)."""
    columns = {f.name for f in dataclasses.fields(DataColumns)}
    changed = []
    for name, value in given.items():
        saved = getattr(info.train.columns if name in columns else info.train, name)
        compared = comma_list(value) if isinstance(saved, list) and isinstance(value, str) else value
        if compared != saved:
            changed.append(f"{spell(name)} {value} (the run's: {saved})")
    if changed:
        raise ConfigError(
            f"--resume continues {info.train_file.path} with the run's own options; these differ: "
            f"{'; '.join(changed)}. Drop them, or train a new run"
        )
