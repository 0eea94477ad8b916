"""One-command cleansing: train with turn-over dropout, score, filter, retrain, and compare on a test set.

Layout of the output folder::

    out/
      tod-run/            the turn-over-dropout run (scores.parquet inside)
      scores.csv          its scores
      train.filtered.*    the kept rows (input's format; a save_to_disk folder train.filtered/ for a dataset);
                          removed.csv: the dropped rows with scores
      run-before/         an ordinary fine-tune on all rows (same recipe and seed)
      run-filtered/       an ordinary fine-tune on the kept rows
      run-random/         with --random-baseline: an ordinary fine-tune after removing as many random rows
      metrics.json        test metrics of every model, and the options used
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tod_clean.config import ScoreConfig, TrainConfig
from tod_clean.data import (
    DATASET_FORMAT,
    STDIN,
    Table,
    check_destination,
    check_distinct_outputs,
    deliver,
    frame_bytes,
    is_dataset_dir,
    read_table,
    write_subset,
)
from tod_clean.errors import RunDirError
from tod_clean.evaluate import Evaluation, evaluate_run
from tod_clean.filter import check_drop_options, filter_table
from tod_clean.instances import instances_from_table, training_labels
from tod_clean.progress import Progress
from tod_clean.rundir import RunDir
from tod_clean.score import save_scores, score_run
from tod_clean.train import train


@dataclass
class ArmResult:
    """One model of the comparison: what it was trained on and how it did on the test set."""

    name: str
    train_rows: int
    removed: int
    evaluation: Evaluation

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "train_rows": self.train_rows,
            "removed": self.removed,
            **self.evaluation.to_dict(),
        }


@dataclass
class CleanseResult:
    arms: list[ArmResult]
    by: str
    out_dir: Path


def _retrain(
    name: str,
    config: TrainConfig,
    table: Table,
    full_path: str,
    kept: np.ndarray,
    out_dir: Path,
    test_table: Table,
    progress: Progress | None,
) -> ArmResult:
    """An ordinary fine-tune (no masks) on the rows ``kept`` of ``table``, evaluated on the test table."""
    if len(kept) == len(table):
        data_path, rows = full_path, table
    else:
        data_path = str(out_dir / subset_name(name, table.format))
        write_subset(table, kept, data_path)  # a dataset's rows as a save_to_disk folder; a file streamed
        rows = read_table(data_path)
    plain = dataclasses.replace(config, scope="none", freeze="none", mask_groups=0)  # no masks: no groups
    run = RunDir(out_dir / f"run-{name}")
    train(plain, rows, run, train_path=data_path, overwrite=True, progress=progress)
    evaluation = evaluate_run(
        run, test_table, columns=dataclasses.replace(config.columns, id_col=None), progress=progress
    )
    return ArmResult(name, len(kept), len(table) - len(kept), evaluation)


ARMS = ("before", "filtered", "random")


def subset_name(arm: str, train_format: str) -> str:
    """The file (a ``save_to_disk`` folder for a dataset) holding the rows an arm trains on."""
    return f"train.{arm}" if train_format == DATASET_FORMAT else f"train.{arm}.{train_format}"


def check_out_dir(
    out_dir: Path,
    train_path: str,
    train_format: str,
    tables: tuple[Table | None, ...],
    *,
    overwrite: bool,
) -> None:
    """Refuse, before any training, an output folder cleanse must not write into.

    A new or empty folder is fine. With --overwrite, a folder an earlier cleanse wrote (its ``tod-run/``
    is a tod-clean run) is replaced file by file; anything else is refused, and no input may be among
    the files cleanse writes there.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise RunDirError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"{out_dir}: is not empty; pass --overwrite to replace what is there")
        if not RunDir(out_dir / "tod-run").is_run():
            raise RunDirError(
                f"{out_dir}: is not empty and was not written by 'tod-clean cleanse' (no tod-run/ run "
                "inside); choose a new or empty --out-dir"
            )
    runs = [RunDir(out_dir / "tod-run"), *(RunDir(out_dir / f"run-{arm}") for arm in ARMS)]
    for run in runs:
        run.check_target(overwrite=True, stdin_copy=run is runs[0] and train_path == STDIN)
    subsets = [out_dir / subset_name(arm, train_format) for arm in ARMS]
    files = [out_dir / name for name in ("scores.csv", "removed.csv", "metrics.json")]
    if out_dir.is_dir():
        for path in files if train_format == DATASET_FORMAT else files + subsets:
            check_destination(path)
        for path in subsets if train_format == DATASET_FORMAT else []:
            if path.exists() and not is_dataset_dir(path):
                raise RunDirError(
                    f"{path}: exists and is not a dataset folder; cleanse writes kept rows there"
                )
    files += subsets
    inputs = {"the training file": train_path}
    for table in tables:
        if table is not None and table.ref is not None:
            inputs[table.source] = table.ref
    outputs = {f"cleanse's {path.name}": path for path in (*files, *(run.path for run in runs))}
    check_distinct_outputs(inputs, outputs)


def cleanse(
    config: TrainConfig,
    train_table: Table,
    train_path: str,
    test_table: Table,
    out_dir: Path,
    *,
    val_table: Table | None = None,
    by: str | None = None,
    fraction: float | None = None,
    count: int | None = None,
    threshold: float | None = None,
    random_baseline: bool = False,
    overwrite: bool = False,
    score_config: ScoreConfig | None = None,
    progress: Progress | None = None,
) -> CleanseResult:
    """Train -> score -> filter -> retrain on the kept rows -> evaluate before/after on ``test_table``."""
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    labels = training_labels(train_table, config.columns.label_col)
    evaluated = dataclasses.replace(config.columns, id_col=None)
    for table in (test_table, val_table):
        if table is not None:  # refuse bad labels or columns now, not after hours of training
            instances_from_table(table, evaluated, labels, with_keys=False)
    check_out_dir(out_dir, train_path, train_table.format, (test_table, val_table), overwrite=overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    tod_run = RunDir(out_dir / "tod-run")
    trained = train(config, train_table, tod_run, train_path=train_path, overwrite=True, progress=progress)
    scored = score_run(tod_run, train_table, val_table=val_table, config=score_config, progress=progress)
    save_scores(tod_run, scored)
    deliver(str(out_dir / "scores.csv"), frame_bytes(scored.frame, "csv"))
    chosen = filter_table(
        train_table, scored.frame, trained.info, by=by, fraction=fraction, count=count, threshold=threshold
    )
    deliver(str(out_dir / "removed.csv"), frame_bytes(chosen.removed, "csv"))
    full_path = trained.info.train_file.path  # the saved copy when the data came from stdin
    arms = [
        _retrain(
            "before",
            config,
            train_table,
            full_path,
            np.arange(len(train_table)),
            out_dir,
            test_table,
            progress,
        ),
        _retrain("filtered", config, train_table, full_path, chosen.kept, out_dir, test_table, progress),
    ]
    if random_baseline:
        rng = np.random.default_rng([config.seed, 2020])
        dropped = rng.choice(len(train_table), size=len(chosen.dropped), replace=False)
        kept = np.setdiff1d(np.arange(len(train_table)), dropped)
        arms.append(_retrain("random", config, train_table, full_path, kept, out_dir, test_table, progress))
    summary = {
        "by": chosen.by,
        "fraction": fraction,
        "count": count,
        "threshold": threshold,
        "train_file": train_table.source,
        "val_file": None if val_table is None else val_table.source,
        "test_file": test_table.source,
        "influence_method": scored.meta["influence_method"],
        "train": config.to_dict(),
        "arms": [arm.to_dict() for arm in arms],
    }
    deliver(
        str(out_dir / "metrics.json"), (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8")
    )
    return CleanseResult(arms, chosen.by, out_dir)
