"""The Python API: ``train``, ``Run`` (``.score``, ``.predict``, ``.info``, ``.scores``) and ``filter``.

The same work as the command line, from a notebook, through the same implementation
(``tod_clean.pipelines``): data may be a path (a data file, a ``save_to_disk`` folder, an ``hf:NAME[/CONFIG]``
dataset in the local Hugging Face cache), a ``pandas.DataFrame`` or a ``datasets.Dataset``; options are the fields of ``TrainConfig`` and ``ScoreConfig``, validated there;
mistakes raise the ``TodCleanError`` family with the CLI's messages, naming options by their keywords
(``drop_count``, not ``--drop-count``).

In-memory training data is kept in the run as ``train.jsonl`` (the file a run also keeps for data read
from standard input): its canonical JSON Lines form (see ``tod_clean.io.inputs.to_table``), whose sha256 is
the run's training-file fingerprint. Scoring or filtering later accepts the same rows again as a
DataFrame or Dataset (equal rows serialise to equal bytes), the run's copy, or, for a run trained with an
``id_col``, any data whose rows match by id.

Each method spells out its keywords (``val_text_col``, ``text_col``, ``split``, ``device``...) although
several methods share them: they are the public surface, and written out ``help()``, editors and mypy show
every option with its type and default, where a shared ``**options`` (or a ``TypedDict`` with ``Unpack``)
would hide them. Their checking and defaults live once, in ``TrainConfig``/``ScoreConfig`` and the pipelines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from tod_clean.config import ColumnChoice, ScoreConfig
from tod_clean.errors import ConfigError, keywords
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT
from tod_clean.io.inputs import is_dataset
from tod_clean.pipelines import check as checking
from tod_clean.pipelines import filter as filtering
from tod_clean.pipelines import score as scoring
from tod_clean.pipelines import train as training
from tod_clean.pipelines.inputs import Data, known_options
from tod_clean.run.rundir import SCORES, RunDir, RunInfo
from tod_clean.run.scores import load_scores
from tod_clean.selection import read_scores

if TYPE_CHECKING:
    from tod_clean.check import CheckResult

D = TypeVar("D")

# DataFrame.attrs key naming the run whose scores a frame holds, so ``filter(data, scores)`` finds it.
RUN_PATH = "tod_clean_run"


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
    @keywords()
    def info(self) -> RunInfo:
        """The run's ``config.json``: options (``info.train``), labels, training file, epochs' metrics."""
        return self._dir.read_info()

    @keywords()
    def score(
        self,
        val: Data | None = None,
        *,
        train: Data | None = None,
        val_text_col: str | None = None,
        val_text_pair_col: str | None = None,
        val_label_col: str | None = None,
        val_split: str | None = None,
        out: str | os.PathLike[str] | None = None,
        pred_probs: str | os.PathLike[str] | None = None,
        device: str = "auto",
        overwrite: bool = False,
        **options: Any,
    ) -> pd.DataFrame:
        """Score every training row, as ``tod-clean score`` does; the scores are also saved in the run
        (replacing saved influence on another validation set only with ``overwrite=True``).

        ``val``: validation data (path, DataFrame or Dataset); with it the frame has an ``influence``
        column (float64, the mean influence of the row on ``val``; negative = harmful). ``train``: the
        training data, when the run's recorded file moved (it must hold the same rows). Paths may be data
        files, ``save_to_disk`` folders or ``hf:NAME[/CONFIG]`` datasets in the local Hugging Face cache.
        ``out``: also write the scores there, as ``tod-clean score --out`` does (a file by extension, or a
        ``save_to_disk`` folder for a name without one). ``pred_probs``: also write the hidden
        sub-networks' class probabilities there (``[N, K]`` float32 ``.npy``).
        ``options``: fields of ``ScoreConfig`` (``batch_size``, ``influence_method``, ...).

        Returns one row per training row: ``row``, ``id`` (with an ``id_col``), ``label``, the score columns
        (float64) and ``rank`` (int64, 1 = the first row to drop).
        """
        result = scoring.score(
            self._dir,
            train=train,
            val=val,
            val_split=val_split,
            val_columns=ColumnChoice(val_text_col, val_text_pair_col, val_label_col),
            config=ScoreConfig(**known_options(ScoreConfig, options)),
            device=device,
            out=None if out is None else os.fspath(out),
            pred_probs=None if pred_probs is None else os.fspath(pred_probs),
            overwrite=overwrite,
        )
        frame = result.frame
        frame.attrs[RUN_PATH] = str(self.path.resolve())
        return frame

    @keywords()
    def check(
        self,
        val: Data,
        *,
        halves: int = 20,
        methods: list[str] | None = None,
        train: Data | None = None,
        val_text_col: str | None = None,
        val_text_pair_col: str | None = None,
        val_label_col: str | None = None,
        val_split: str | None = None,
        out: str | os.PathLike[str] | None = None,
        seed: int = 0,
        shard: str | None = None,
        overwrite: bool = False,
        device: str = "auto",
    ) -> CheckResult:
        """Measure how well each influence estimator predicts retraining on this data, as ``tod-clean
        check`` does: ``halves`` ordinary models retrained on random halves of the training rows, each
        estimator's LDS on ``val`` with its 95% bootstrap interval. ``methods``: the estimators (default:
        every one that applies to the run). The check's folder is ``out`` (default ``RUN/check``); a rerun
        resumes from the halves measured there. ``result.best`` is the estimator to rank by (None when
        none beats a random matrix); ``result.to_dict()`` holds every figure.
        """
        return checking.check(
            self._dir,
            val=val,
            train=train,
            val_split=val_split,
            val_columns=ColumnChoice(val_text_col, val_text_pair_col, val_label_col),
            out=None if out is None else os.fspath(out),
            halves=halves,
            seed=seed,
            methods=methods,
            shard=shard,
            overwrite=overwrite,
            device=device,
        )

    @keywords()
    def predict(
        self,
        data: Data,
        *,
        text_col: str | None = None,
        text_pair_col: str | None = None,
        label_col: str | None = None,
        id_col: str | None = None,
        labels: bool | None = None,
        split: str | None = None,
        out: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        device: str = "auto",
    ) -> pd.DataFrame:
        """Predict every row of ``data`` with the run's full network (no instance mask), as
        ``tod-clean predict`` does.

        ``data``: a path (a data file, a ``save_to_disk`` folder, an ``hf:NAME[/CONFIG]`` dataset), a
        DataFrame or a Dataset. Columns default to training's (its label and id columns when present);
        ``labels``: read the label column (True: it must be there; False: ignore it; None: if present).
        ``out``: also write the frame there (by extension; a ``save_to_disk`` folder for a name without
        one). A label the training data did not have raises an InputError naming its row and value.

        Returns one row per input row: ``row`` (int64), ``id`` (with an id column), ``prob_<label>`` per
        class (float64, summing to 1), ``predicted_label`` and, for labeled rows, ``label`` and ``loss``
        (float64, ``-log`` of the label's probability).
        """
        from tod_clean.pipelines import predict as predicting

        return predicting.predict(
            self._dir,
            data,
            split=split,
            columns=ColumnChoice(text_col, text_pair_col, label_col, id_col),
            labels=labels,
            out=out,
            batch_size=batch_size,
            device=device,
        )

    @property
    @keywords()
    def scores(self) -> pd.DataFrame:
        """The scores saved by the run's last ``score`` (a RunDirError if it has none)."""
        frame = load_scores(self._dir)[0]
        frame.attrs[RUN_PATH] = str(self.path.resolve())
        return frame


@keywords()
def train(
    data: Data,
    *,
    run: str | os.PathLike[str] = "tod-run",
    split: str | None = None,
    overwrite: bool = False,
    **options: Any,
) -> Run:
    """Fine-tune a classifier with turn-over dropout on ``data``, as ``tod-clean train`` does.

    ``data``: a data file path, a ``save_to_disk`` folder or an ``hf:NAME[/CONFIG]`` dataset in the local
    Hugging Face cache (``split`` chooses the split), a ``pandas.DataFrame`` or a ``datasets.Dataset``
    (in-memory rows are kept in the run as ``train.jsonl``). ``options``: the columns (``text_col``,
    ``text_pair_col``, ``label_col``, ``id_col``) and any field of ``TrainConfig`` by its name (``model``,
    ``scope``, ``epochs``, ``keep_prob``, ``batch_size``, ``learning_rate``, ``seed``, ``lora_rank``,
    ``device``, ...), with ``TrainConfig``'s defaults.
    Returns the finished run.
    """
    config = training.train_config(**options)
    training.train(config, data, RunDir(Path(run)), split=split, overwrite=overwrite)
    return Run(run)


@keywords()
def filter(  # noqa: A001 - the verb of the CLI command, on purpose
    data: D,
    scores: Run | pd.DataFrame | str | os.PathLike[str],
    *,
    run: Run | str | os.PathLike[str] | None = None,
    drop: float | None = None,
    drop_count: int | None = None,
    threshold: float | None = None,
    by: str | None = None,
    allow_empty_class: bool = False,
    out: str | os.PathLike[str] | None = None,
) -> D | pd.DataFrame | Path:
    """The rows of ``data`` that survive dropping the worst ones, as ``tod-clean filter`` chooses them.

    ``scores``: a ``Run`` (its saved scores), a frame returned by ``Run.score`` (which names its run), or
    scores written by ``tod-clean score --out``, a file or a dataset folder (then pass ``run``). Give at
    most one of ``drop`` (a fraction; 0.01 when none is given), ``drop_count`` or ``threshold``; ``by``
    is the score column to rank by (default: ``influence`` when the scores have it, i.e. were scored with
    a validation set, else ``full_loss``); label-error signals are ranked within each class, and every
    class keeps a row unless ``allow_empty_class``.

    Returns the kept rows in ``data``'s kind and order: a DataFrame's rows (``data.iloc``, index kept),
    a Dataset's (``data.select``), a Dataset for a ``save_to_disk`` folder, or a DataFrame of a data
    file's rows. With ``out``, a file's kept rows are written there unchanged, in its format (a dataset
    folder's or an ``hf:`` dataset's as a ``save_to_disk`` folder), and ``Path(out)`` is returned.
    """
    given: pd.DataFrame | str
    if isinstance(scores, Run):
        run_dir, given, source = scores._dir, scores.scores, str(scores._dir.file(SCORES))
    else:
        given = scores if isinstance(scores, pd.DataFrame) else os.fspath(scores)
        source = "scores" if isinstance(given, pd.DataFrame) else given
        if run is None:  # a scores file may name its run too: Run.score's frame saved with to_parquet
            run = (given if isinstance(given, pd.DataFrame) else read_scores(given)).attrs.get(RUN_PATH)
        if run is None:
            raise ConfigError(
                "these scores do not name their run: pass run= (the run directory they were scored in)"
            )
        run_dir = RunDir(os.fspath(run))
    filtered = filtering.filter(
        run_dir,
        data,
        scores=given,
        scores_source=source,
        by=by,
        drop=drop,
        drop_count=drop_count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
        out=out,
    )
    kept = filtered.result.kept.tolist()
    if isinstance(data, pd.DataFrame):
        return data.iloc[kept]
    if is_dataset(data):
        return data.select(kept)  # type: ignore[attr-defined]
    if out is not None:
        return Path(out)
    table = filtered.table
    if table.format == DATASET_FORMAT:
        return table.dataset.select(kept)
    return table.frame_at(filtered.result.kept)  # to_frame().iloc[kept], reading only the kept rows
