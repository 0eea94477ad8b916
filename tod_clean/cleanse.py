"""One-command cleansing: train with turn-over dropout, score, filter, retrain, and compare on a test set.

Layout of the output folder::

    out/
      tod-run/            the turn-over-dropout run (scores.parquet inside)
      scores.csv          its scores
      train.filtered.*    the kept rows (input's format);  removed.csv: the dropped rows with scores
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

from tod_clean.config import TrainConfig
from tod_clean.data import Table, deliver, frame_bytes, read_table, subset_bytes
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
    full_path: Path,
    kept: np.ndarray,
    out_dir: Path,
    test_table: Table,
    progress: Progress | None,
) -> ArmResult:
    """An ordinary fine-tune (no masks) on the rows ``kept`` of ``table``, evaluated on the test table."""
    if len(kept) == len(table):
        data_path, rows = full_path, table
    else:
        data_path = out_dir / f"train.{name}.{table.format}"
        deliver(str(data_path), subset_bytes(table, kept.tolist()))
        rows = read_table(str(data_path))
    plain = dataclasses.replace(config, scope="none", freeze="none")
    run = RunDir(out_dir / f"run-{name}")
    train(plain, rows, run, train_path=str(data_path), overwrite=True, progress=progress)
    evaluation = evaluate_run(
        run, test_table, columns=dataclasses.replace(config.columns, id_col=None), progress=progress
    )
    return ArmResult(name, len(kept), len(table) - len(kept), evaluation)


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
    progress: Progress | None = None,
) -> CleanseResult:
    """Train -> score -> filter -> retrain on the kept rows -> evaluate before/after on ``test_table``."""
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    labels = training_labels(train_table, config.columns.label_col)
    evaluated = dataclasses.replace(config.columns, id_col=None)
    for table in (test_table, val_table):
        if table is not None:  # refuse bad labels or columns now, not after hours of training
            instances_from_table(table, evaluated, labels, with_keys=False)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RunDirError(f"{out_dir}: is not empty; pass --overwrite to replace what is there")
    out_dir.mkdir(parents=True, exist_ok=True)
    tod_run = RunDir(out_dir / "tod-run")
    trained = train(config, train_table, tod_run, train_path=train_path, overwrite=True, progress=progress)
    scored = score_run(tod_run, train_table, val_table=val_table, progress=progress)
    save_scores(tod_run, scored)
    deliver(str(out_dir / "scores.csv"), frame_bytes(scored.frame, "csv"))
    chosen = filter_table(
        train_table, scored.frame, trained.info, by=by, fraction=fraction, count=count, threshold=threshold
    )
    deliver(str(out_dir / "removed.csv"), frame_bytes(chosen.removed, "csv"))
    full_path = Path(trained.info.train_file.path)  # the saved copy when the data came from stdin
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
        "train": config.to_dict(),
        "arms": [arm.to_dict() for arm in arms],
    }
    deliver(
        str(out_dir / "metrics.json"), (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8")
    )
    return CleanseResult(arms, chosen.by, out_dir)
