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
      metrics.json        test metrics of every model, and the options used; rewritten after each step,
                          so a later step's failure leaves what was measured (with the failed step named)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tod_clean.config import ScoreConfig, TrainConfig
from tod_clean.errors import ConfigError, RunDirError, spelled
from tod_clean.evaluate import Evaluation, evaluate_run
from tod_clean.influence.base import unmasked_refusal
from tod_clean.instances import for_table, instances_from_table, training_labels
from tod_clean.io import STDIN
from tod_clean.io.columns import label_codes
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT, is_dataset_dir
from tod_clean.io.frames import frame_bytes
from tod_clean.io.images import IMAGE_FOLDER_FORMAT, check_paths_resolve_in
from tod_clean.io.inputs import read_table
from tod_clean.io.manifest import MANIFEST_SUFFIX
from tod_clean.io.paths import check_destination, check_distinct_outputs
from tod_clean.io.table import Table
from tod_clean.io.writers import deliver, write_subset
from tod_clean.run.rundir import RunDir, stdin_copy_name
from tod_clean.runtime.progress import NamedProgress, Progress
from tod_clean.score import save_scores, score_run
from tod_clean.selection import check_drop_options, filter_table
from tod_clean.signals import SIGNALS
from tod_clean.training.loop import train


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
    note: str | None = None  # which signal was ranked by and why, when none was chosen
    warnings: list[str] = dataclasses.field(default_factory=list)  # the filter's class warnings


# The score columns of a run without instance masks (scope none, lora-plain).
UNMASKED_SIGNALS = ("full_loss", "full_prob")


def check_signals(
    config: TrainConfig, by: str | None, val_table: Table | None, influence_method: str = "auto"
) -> None:
    """Refuse, before any training, a --by or --val the scoring run cannot serve."""
    scope = config.parsed_scope
    if not scope.masked:
        refusal = unmasked_refusal(scope, influence_method)
        if val_table is not None and refusal is not None:
            raise ConfigError(f"--val: a --scope {scope} run is {refusal}")
        servable = UNMASKED_SIGNALS + (("influence",) if val_table is not None else ())
        if by is not None and by in SIGNALS and by not in servable:
            raise ConfigError(
                f"--by {by}: a --scope {scope} run scores only {', '.join(servable)}; choose one of "
                "them, or a masked scope (head, lora, layers:K, ffn:K, channels)"
            )
    if by == "influence" and val_table is None:
        raise ConfigError("--by influence: influence is measured on a validation set; pass --val FILE")


def check_test_labels(test_table: Table, train_table: Table, kept: np.ndarray, label_col: str) -> None:
    """Refuse to retrain when a label of the test set has no training row left (the filtered model
    could not be evaluated on it)."""
    train_labels = label_codes(train_table, label_col)
    left = {train_labels.keys[code] for code in np.unique(train_labels.codes[kept])}
    missing = [key for key in label_codes(test_table, label_col).keys if key not in left]
    if missing:
        raise ConfigError(
            f"{test_table.source}: label {missing[0]!r} has no training row left after filtering "
            f"({len(missing)} test label{'s' if len(missing) > 1 else ''} in all): the filtered model could "
            "not be evaluated; drop fewer rows, or leave out --allow-empty-class"
        )


def random_rows_to_keep(
    train_table: Table, label_col: str, count: int, seed: int, *, allow_empty_class: bool
) -> np.ndarray:
    """Sorted rows left after removing ``count`` random rows; each class keeps a (random) row unless
    ``allow_empty_class``, as the filter's class floor does."""
    rng = np.random.default_rng([seed, 2020])
    rows = np.arange(len(train_table))
    if allow_empty_class:
        dropped = rng.choice(len(train_table), size=count, replace=False)
    else:
        codes = label_codes(train_table, label_col).codes
        order = rng.permutation(len(train_table))
        _, first = np.unique(codes[order], return_index=True)  # one random row of each class is kept
        candidates = np.delete(order, first)
        dropped = candidates[:count]  # the filter dropped as many, so there are enough
    return np.setdiff1d(rows, dropped)


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
    named = None if progress is None else NamedProgress(progress, f"run-{name} ({ARM_ROWS[name]})")
    train(plain, rows, run, train_path=data_path, overwrite=True, progress=named)
    evaluation = evaluate_run(
        run, test_table, columns=dataclasses.replace(config.columns, id_col=None), progress=named
    )
    return ArmResult(name, len(kept), len(table) - len(kept), evaluation)


ARMS = ("before", "filtered", "random")
# What each retrained model trains on, for its progress lines.
ARM_ROWS = {"before": "all rows", "filtered": "kept rows", "random": "random rows removed"}


def subset_name(arm: str, train_format: str) -> str:
    """The file (a ``save_to_disk`` folder for a dataset, a CSV manifest for an image folder) holding the
    rows an arm trains on."""
    if train_format == DATASET_FORMAT:
        return f"train.{arm}"
    return (
        f"train.{arm}.{MANIFEST_SUFFIX.lstrip('.') if train_format == IMAGE_FOLDER_FORMAT else train_format}"
    )


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
        from_stdin = run is runs[0] and train_path == STDIN
        run.check_target(overwrite=True, stdin_copy=stdin_copy_name(train_format) if from_stdin else None)
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
    allow_empty_class: bool = False,
    random_baseline: bool = False,
    overwrite: bool = False,
    score_config: ScoreConfig | None = None,
    progress: Progress | None = None,
) -> CleanseResult:
    """Train -> score -> filter -> retrain on the kept rows -> evaluate before/after on ``test_table``.

    Every option, input and output is checked before any training: the drop criterion, a --by or --val
    the scope cannot score, the test set's labels and columns, the output folder. The kept rows are
    checked to cover every test label before retraining (with the class floor they always do).
    ``metrics.json`` is rewritten after each step; when a step fails it names the step and its error
    and keeps what was measured before it.
    """
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    config = for_table(config, train_table)  # images: the image column found, the default image model
    check_signals(config, by, val_table, (score_config or ScoreConfig()).influence_method)
    labels = training_labels(train_table, config.columns.label_col)
    evaluated = dataclasses.replace(config.columns, id_col=None)
    for table in (test_table, val_table):
        if table is not None:  # refuse bad labels or columns now, not after hours of training
            instances_from_table(table, evaluated, labels, with_keys=False)
    check_out_dir(out_dir, train_path, train_table.format, (test_table, val_table), overwrite=overwrite)
    what = f"{spelled('out_dir', str(out_dir))} (each arm's rows are written there)"
    check_paths_resolve_in(train_table, config.columns.image_col, out_dir, what)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "complete": False,
        "by": by,
        "fraction": fraction,
        "count": count,
        "threshold": threshold,
        "allow_empty_class": allow_empty_class,
        "train_file": train_table.source,
        "val_file": None if val_table is None else val_table.source,
        "test_file": test_table.source,
        "influence_method": None,
        "train": config.to_dict(),
        "arms": [],
    }
    state = {"step": "train tod-run"}
    try:
        return _cleanse_steps(
            config,
            train_table,
            train_path,
            test_table,
            out_dir,
            summary,
            val_table=val_table,
            by=by,
            fraction=fraction,
            count=count,
            threshold=threshold,
            allow_empty_class=allow_empty_class,
            random_baseline=random_baseline,
            score_config=score_config,
            progress=progress,
            on_step=lambda name: state.update(step=name),
        )
    except BaseException as error:  # an interruption too: what was measured is kept
        summary["failed_step"] = state["step"]
        summary["error"] = str(error) or type(error).__name__
        _write_metrics(out_dir, summary)
        raise


def _write_metrics(out_dir: Path, summary: dict[str, Any]) -> None:
    deliver(
        str(out_dir / "metrics.json"), (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8")
    )


def _cleanse_steps(
    config: TrainConfig,
    train_table: Table,
    train_path: str,
    test_table: Table,
    out_dir: Path,
    summary: dict[str, Any],
    *,
    val_table: Table | None,
    by: str | None,
    fraction: float | None,
    count: int | None,
    threshold: float | None,
    allow_empty_class: bool,
    random_baseline: bool,
    score_config: ScoreConfig | None,
    progress: Progress | None,
    on_step: Callable[[str], None],
) -> CleanseResult:
    """The steps of ``cleanse``, each recorded in ``summary`` (and metrics.json) once done."""
    on_step("train tod-run")
    tod_run = RunDir(out_dir / "tod-run")
    named = None if progress is None else NamedProgress(progress, "tod-run (turn-over dropout)")
    trained = train(config, train_table, tod_run, train_path=train_path, overwrite=True, progress=named)
    on_step("score")
    scored = score_run(tod_run, train_table, val_table=val_table, config=score_config, progress=named)
    save_scores(tod_run, scored)
    deliver(str(out_dir / "scores.csv"), frame_bytes(scored.frame, "csv"))
    summary["influence_method"] = scored.meta["influence_method"]
    on_step("filter")
    chosen = filter_table(
        train_table,
        scored.frame,
        trained.info,
        by=by,
        fraction=fraction,
        count=count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
    )
    deliver(str(out_dir / "removed.csv"), frame_bytes(chosen.removed, "csv"))
    summary["by"] = chosen.by
    summary["removed"] = len(chosen.dropped)
    summary["warnings"] = chosen.warnings
    check_test_labels(test_table, train_table, chosen.kept, config.columns.label_col)
    _write_metrics(out_dir, summary)
    full_path = trained.info.train_file.path  # the saved copy when the data came from stdin
    arms: list[ArmResult] = []
    plan = [("before", np.arange(len(train_table))), ("filtered", chosen.kept)]
    if random_baseline:
        kept = random_rows_to_keep(
            train_table,
            config.columns.label_col,
            len(chosen.dropped),
            config.seed,
            allow_empty_class=allow_empty_class,
        )
        plan.append(("random", kept))
    for name, kept in plan:
        on_step(f"train and evaluate run-{name}")
        arms.append(_retrain(name, config, train_table, full_path, kept, out_dir, test_table, progress))
        summary["arms"] = [arm.to_dict() for arm in arms]
        _write_metrics(out_dir, summary)
    summary["complete"] = True
    _write_metrics(out_dir, summary)
    return CleanseResult(arms, chosen.by, out_dir, chosen.note, chosen.warnings)
