"""The Python API: ``train``, ``Run`` (``.score``, ``.info``, ``.scores``) and ``filter``.

The same work as the command line, from a notebook: data may be a file path, a ``pandas.DataFrame`` or
a ``datasets.Dataset``; options are the fields of ``TrainConfig`` and ``ScoreConfig``, validated there;
mistakes raise the ``TodCleanError`` family with the CLI's messages.

In-memory training data is kept in the run as ``train.jsonl`` (the file a run also keeps for data read
from standard input): its canonical JSON Lines form (see ``tod_clean.data.to_table``), whose sha256 is
the run's training-file fingerprint. Scoring or filtering later accepts the same rows again as a
DataFrame or Dataset (equal rows serialise to equal bytes), the run's copy, or, for a run trained with an
``id_col``, any data whose rows match by id.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from tod_clean.config import DEFAULT_MODEL, DataColumns, ScoreConfig, TrainConfig
from tod_clean.data import (
    DATASET_FORMAT,
    STDIN,
    check_subset_destination,
    is_dataset,
    save_npy,
    to_table,
    write_subset,
)
from tod_clean.errors import ConfigError
from tod_clean.filter import filter_table, read_scores
from tod_clean.processes import is_main_process
from tod_clean.rundir import SCORES, RunDir, RunInfo

# ``tod_clean.score`` and ``tod_clean.train`` are imported as modules: the package exports functions
# named ``train`` and ``filter`` that shadow the submodules of those names on ``tod_clean``.
from tod_clean.score import load_scores, save_scores, score_run
from tod_clean.train import train as train_run

Data = Any  # a path (str or os.PathLike), a pandas.DataFrame or a datasets.Dataset
D = TypeVar("D")

# DataFrame.attrs key naming the run whose scores a frame holds, so ``filter(data, scores)`` finds it.
RUN_PATH = "tod_clean_run"


def _options(config: type, options: dict[str, Any], *, reserved: tuple[str, ...]) -> dict[str, Any]:
    """``options`` as keyword arguments of the ``config`` dataclass; an unknown name is a ConfigError."""
    known = {f.name for f in dataclasses.fields(config)} - set(reserved)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(known))}")
    return options


class Run:
    """A run directory written by ``train`` (or ``tod-clean train``).

    ``Run(path)`` opens an existing run; nothing is read until an attribute or method needs it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._dir = RunDir(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def info(self) -> RunInfo:
        """The run's ``config.json``: options (``info.train``), labels, training file, epochs' metrics."""
        return self._dir.read_info()

    def score(
        self,
        val: Data | None = None,
        *,
        train: Data | None = None,
        val_text_col: str | None = None,
        val_text_pair_col: str | None = None,
        val_label_col: str | None = None,
        val_split: str | None = None,
        pred_probs: str | os.PathLike[str] | None = None,
        device: str = "auto",
        **options: Any,
    ) -> pd.DataFrame:
        """Score every training row, as ``tod-clean score`` does; the scores are also saved in the run.

        ``val``: validation data (path, DataFrame or Dataset); with it the frame has an ``influence``
        column (float64, the mean influence of the row on ``val``; negative = harmful). ``train``: the
        training data, when the run's recorded file moved (it must hold the same rows). ``pred_probs``:
        also write the hidden sub-networks' class probabilities there (``[N, K]`` float32 ``.npy``).
        ``options``: fields of ``ScoreConfig`` (``batch_size``, ``influence_method``, ...).

        Returns one row per training row: ``row``, ``id`` (with an ``id_col``), ``label``, the score columns
        (float64) and ``rank`` (int64, 1 = the first row to drop).
        """
        config = ScoreConfig(**_options(ScoreConfig, options, reserved=()))
        info = self._dir.read_complete_info()
        if pred_probs is not None and not info.scope.masked:
            raise ConfigError(
                f"{self.path}: trained with scope '{info.scope}', so it has no hidden sub-networks for pred_probs"
            )
        train_table = to_table(
            train if train is not None else info.train_file.path,
            split=info.train_file.split if isinstance(train, (str, os.PathLike)) or train is None else None,
        )
        val_table = to_table(val, split=val_split) if val is not None else None
        base = info.train.columns
        val_columns = DataColumns(
            text_col=val_text_col or base.text_col,
            text_pair_col=val_text_pair_col if val_text_pair_col is not None else base.text_pair_col,
            label_col=val_label_col or base.label_col,
        )
        result = score_run(
            self._dir, train_table, val_table=val_table, val_columns=val_columns, config=config, device=device
        )
        if is_main_process():  # under accelerate launch every process has the scores; one writes them
            if pred_probs is not None:
                assert result.self_scores.hidden_probs is not None
                save_npy(pred_probs, result.self_scores.hidden_probs)
            save_scores(self._dir, result)
        frame = result.frame
        frame.attrs[RUN_PATH] = str(self.path.resolve())
        return frame

    @property
    def scores(self) -> pd.DataFrame:
        """The scores saved by the run's last ``score`` (a RunDirError if it has none)."""
        frame = load_scores(self._dir)[0]
        frame.attrs[RUN_PATH] = str(self.path.resolve())
        return frame


def train(
    data: Data,
    *,
    run: str | os.PathLike[str] = "tod-run",
    text_col: str = "text",
    text_pair_col: str | None = None,
    label_col: str = "label",
    id_col: str | None = None,
    split: str | None = None,
    model: str = DEFAULT_MODEL,
    scope: str = "head",
    epochs: int = 2,
    overwrite: bool = False,
    **options: Any,
) -> Run:
    """Fine-tune a classifier with turn-over dropout on ``data``, as ``tod-clean train`` does.

    ``data``: a data file path, a ``pandas.DataFrame`` or a ``datasets.Dataset`` (in-memory rows are
    kept in the run as ``train.jsonl``). ``options``: any other field of ``TrainConfig`` by its name
    (``keep_prob``, ``batch_size``, ``learning_rate``, ``seed``, ``lora_rank``, ``device``, ...).
    Returns the finished run.
    """
    options = _options(TrainConfig, options, reserved=("columns", "model", "scope", "epochs", "mask_scheme"))
    if isinstance(options.get("lora_targets"), str):
        options["lora_targets"] = options["lora_targets"].split(",")
    config = TrainConfig(
        model=model,
        columns=DataColumns(
            text_col=text_col, text_pair_col=text_pair_col, label_col=label_col, id_col=id_col
        ),
        scope=scope,
        epochs=epochs,
        **options,
    )
    in_memory = not isinstance(data, (str, os.PathLike))
    table = to_table(data, split=split)
    run_dir = RunDir(run)
    train_run(config, table, run_dir, train_path=STDIN if in_memory else os.fspath(data), overwrite=overwrite)
    return Run(run)


def filter(  # noqa: A001 - the verb of the CLI command, on purpose
    data: D,
    scores: Run | pd.DataFrame | str | os.PathLike[str],
    *,
    run: Run | str | os.PathLike[str] | None = None,
    drop: float | None = None,
    drop_count: int | None = None,
    threshold: float | None = None,
    by: str | None = None,
    out: str | os.PathLike[str] | None = None,
) -> D | pd.DataFrame | Path:
    """The rows of ``data`` that survive dropping the worst ones, as ``tod-clean filter`` chooses them.

    ``scores``: a ``Run`` (its saved scores), a frame returned by ``Run.score`` (which names its run), or
    a scores file written by ``tod-clean score --out`` (then pass ``run``). Give at most one of ``drop``
    (a fraction; 0.01 when none is given), ``drop_count`` or ``threshold``; ``by`` is the score column
    to rank by (default: ``influence`` when scored, else ``full_loss``).

    Returns the kept rows in ``data``'s kind and order: a DataFrame's rows (``data.iloc``, index kept),
    a Dataset's (``data.select``), a Dataset for a ``save_to_disk`` folder, or a DataFrame of a data
    file's rows. With ``out``, a file's kept rows are written there unchanged, in its format (a folder's
    as a ``save_to_disk`` folder), and ``Path(out)`` is returned.
    """
    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    if isinstance(scores, Run):
        run_dir, frame, source = scores._dir, scores.scores, str(scores._dir.file(SCORES))
    else:
        frame = scores if isinstance(scores, pd.DataFrame) else read_scores(os.fspath(scores))
        source = "scores" if isinstance(scores, pd.DataFrame) else os.fspath(scores)
        named = run if run is not None else frame.attrs.get(RUN_PATH)
        if named is None:
            raise ConfigError(
                "these scores do not name their run: pass run= (the run directory they were scored in)"
            )
        run_dir = RunDir(os.fspath(named))
    is_file = isinstance(data, (str, os.PathLike))
    if out is not None and not is_file:
        raise ConfigError("out= writes a data file's kept rows; in-memory data is returned, not written")
    info = run_dir.read_info()
    table = to_table(data, split=info.train_file.split if is_file else None)
    if out is not None:
        check_subset_destination(table, os.fspath(out))
    result = filter_table(
        table,
        frame,
        info,
        by=by,
        fraction=drop,
        count=drop_count,
        threshold=threshold,
        scores_source=source,
    )
    kept = result.kept.tolist()
    if isinstance(data, pd.DataFrame):
        return data.iloc[kept]
    if is_dataset(data):
        return data.select(kept)  # type: ignore[attr-defined]
    if out is not None:
        write_subset(table, kept, os.fspath(out))
        return Path(out)
    if table.format == DATASET_FORMAT:
        return table.dataset.select(kept)
    return table.to_frame().iloc[kept].reset_index(drop=True)
