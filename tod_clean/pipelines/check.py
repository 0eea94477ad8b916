"""The ``check`` pipeline: a run's influence estimators measured against retraining on the user's data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tod_clean.config import AS_TRAINED, ColumnChoice, ScoreConfig
from tod_clean.errors import ConfigError, spelled
from tod_clean.io.inputs import to_table
from tod_clean.io.paths import check_distinct_outputs
from tod_clean.pipelines.inputs import Data, path_of, run_data
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.progress import Progress
from tod_clean.runtime.shard import Shard

if TYPE_CHECKING:  # check trains models: imported when a check runs, so `import tod_clean` stays light
    from tod_clean.check import CheckResult

CHECK_FOLDER = "check"


def check(
    run: RunDir,
    *,
    val: Data,
    train: Data | None = None,
    val_split: str | None = None,
    val_columns: ColumnChoice = AS_TRAINED,
    out: str | Path | None = None,
    halves: int = 20,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    config: ScoreConfig | None = None,
    shard: str | None = None,
    overwrite: bool = False,
    stdin_format: str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> CheckResult:
    """Retrain ``halves`` ordinary models on random halves of the run's training rows and measure every
    estimator's LDS on ``val`` (see ``tod_clean.check``); the check folder is ``out`` (default RUN/check).

    With ``shard`` (``K/N``) only that shard's halves are trained (several machines or processes share the
    work in one folder); a later call without it computes the estimators once every half is measured.
    """
    from tod_clean.check import check_run

    info = run.read_complete_info()
    if val is None:
        raise ConfigError(
            f"check needs {spelled('val')}: the validation rows whose losses the halves are measured on"
        )
    folder = Path(out) if out is not None else run.path / CHECK_FOLDER
    check_distinct_outputs(
        {
            "the training file": info.train_file.path if train is None else path_of(train),
            "--val": path_of(val),
        },
        {spelled("out"): str(folder)},
    )
    part = Shard.parse(shard) if shard is not None else None
    train_table = run_data(info, train, stdin_format)
    val_table = to_table(val, split=val_split, stdin_format=stdin_format)
    return check_run(
        run,
        train_table,
        val_table,
        folder=folder,
        val_columns=val_columns.like(info.train.columns),
        halves=halves,
        seed=seed,
        methods=methods,
        score_config=config,
        device=device,
        shard=part,
        overwrite=overwrite,
        progress=progress,
    )
