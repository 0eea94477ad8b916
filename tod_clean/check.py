"""``check``: which influence ranking to trust on the user's own data, measured by retraining.

A finished run is the model whose influence is in question. ``check`` retrains M ordinary models (the
run's recipe without instance masks: ``none``, or ``lora-plain`` for a ``lora`` run) on random halves of
its training rows, measures each one's loss on every validation row, and reports the linear datamodeling
score (``tod_clean.lds``) of every influence estimator that applies to the run, each computed once on the
run's trained network, with a 95% bootstrap interval over the halves and the paired difference to the
best one. A random matrix is the floor.

Everything lives in one folder that ``check`` owns (default ``RUN/check``):

- ``plan.json``: what the halves depend on (training and validation files, recipe, M, seed);
- ``half-NNN.json``: half m's measured validation losses, written when its model is trained and measured
  (the model itself and the half's rows are removed then): an interrupted check resumes from them, and
  ``--shard K/N`` trains only the halves ``m`` with ``m % N == K``, so several machines share the work;
- ``check.json``: the result, once every half is measured.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tod_clean.config import DataColumns, ScoreConfig
from tod_clean.errors import ConfigError, RunDirError, spelled, switched_on
from tod_clean.evaluate import evaluate_run
from tod_clean.influence.base import ESTIMATORS
from tod_clean.instances import instances_from_table
from tod_clean.io.images import check_paths_resolve_in
from tod_clean.io.inputs import read_table
from tod_clean.io.paths import atomic_output
from tod_clean.io.table import Table
from tod_clean.io.writers import write_subset
from tod_clean.lds import bootstrap_lds, interval, lds, random_halves
from tod_clean.run.rundir import RunDir, RunInfo
from tod_clean.run.scores import check_train_file
from tod_clean.runtime.progress import NullProgress, Progress
from tod_clean.runtime.shard import Shard
from tod_clean.score import score_run
from tod_clean.training.loop import train

PLAN = "plan.json"
RESULT = "check.json"
RANDOM = "random"
DEFAULT_HALVES = 20
MIN_HALVES = 5
# one suffix per table format, for the half's rows written in the training file's own format
_SUFFIX = {
    "jsonl": ".jsonl",
    "json": ".json",
    "csv": ".csv",
    "tsv": ".tsv",
    "parquet": ".parquet",
    "dataset": "",
    "imagefolder": ".csv",  # a manifest of the half's images (paths relative to it), as filter writes
}


@dataclass
class EstimatorCheck:
    """One estimator's LDS on the user's data: mean over validation rows with its standard error, the
    95% bootstrap interval over the halves, the paired difference to the best estimator with its interval
    (0 for the best), and the seconds its matrix took."""

    name: str
    lds: float
    se: float
    low: float
    high: float
    difference: float
    difference_low: float
    difference_high: float
    over_random_low: float
    seconds: float

    @property
    def beats_random(self) -> bool:
        """Whether the paired 95% interval of its LDS minus the random matrix's lies above 0."""
        return self.name != RANDOM and self.over_random_low > 0

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "beats_random": self.beats_random}


@dataclass
class CheckResult:
    """What ``check`` measured. ``estimators`` by LDS, highest first (``random`` among them);
    ``pending`` lists halves still to train (non-empty only for a shard, or an unfinished check)."""

    halves: int
    measured: int
    train_rows: int
    val_rows: int
    truth_scope: str
    estimators: list[EstimatorCheck] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    truth_seconds: float = 0.0
    folder: str = ""

    @property
    def best(self) -> EstimatorCheck | None:
        """The estimator with the highest LDS among those that beat random (None: none does)."""
        return next((e for e in self.estimators if e.beats_random), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "halves": self.halves,
            "measured": self.measured,
            "train_rows": self.train_rows,
            "val_rows": self.val_rows,
            "truth_scope": self.truth_scope,
            "truth_seconds": self.truth_seconds,
            "folder": self.folder,
            "pending": self.pending,
            "estimators": [e.to_dict() for e in self.estimators],
        }


def truth_scope(scope: str) -> str:
    """The ordinary model class a run's influence is checked against: what a user retrains."""
    return "lora-plain" if scope in ("lora", "lora-plain") else "none"


def applicable_estimators(info: RunInfo) -> list[str]:
    """Every registered estimator that can score this run, ``auto`` and ``turn-over`` standing for what
    they resolve to."""
    names = []
    for name, estimator in ESTIMATORS.items():
        if name in ("auto", "turn-over") or not estimator.applies_to(info.scope) or not estimator.available():
            continue  # (an estimator whose optional dependency is not installed is left out)
        if name == "exact" and info.scope.kind not in ("head",):
            continue  # forward passes over every pair: hours beyond the head scope (BENCHMARKS section 6)
        names.append(name)
    for name in ("turn-over", "auto"):  # what each resolves to, first
        estimator = ESTIMATORS[name]
        if estimator.applies_to(info.scope) and estimator.available():
            resolved = estimator.resolve(info.scope, info.keep_prob).name
            if resolved in names:
                names.remove(resolved)
            names.insert(0, resolved)
    return names


def check_plan(info: RunInfo, train_table: Table, val_table: Table, halves: int, seed: int) -> dict[str, Any]:
    """What the measured halves depend on; a saved half is reused only under the same plan."""
    return {
        "train_sha256": train_table.sha256,
        "train_rows": len(train_table),
        "val_sha256": val_table.sha256,
        "val_split": val_table.split,
        "val_rows": len(val_table),
        "recipe": truth_config(info, 0).to_dict(),
        "seed": seed,
        "halves": halves,
    }


def truth_config(info: RunInfo, half: int) -> Any:
    """The ordinary fine-tune trained on half ``half``: the run's recipe, no instance masks, its own seed."""
    return replace(
        info.train,
        scope=truth_scope(str(info.scope)),
        keep_prob=None,
        mask_groups=0,
        mask_seed=None,
        freeze="none",
        seed=info.train.seed + 1 + half,
    )


def _write_json(path: Path, value: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1, default=float) + "\n", encoding="utf-8")


def _open_folder(folder: Path, plan: dict[str, Any], overwrite: bool) -> None:
    """Create ``folder`` or reuse the check in it; another plan's halves are replaced only on request."""
    plan_path = folder / PLAN
    if plan_path.is_file():
        try:
            saved = json.loads(plan_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved == plan:
            return
        same_data = saved is not None and {k: v for k, v in saved.items() if k != "halves"} == {
            k: v for k, v in plan.items() if k != "halves"
        }
        if same_data:  # more (or fewer) halves of the same data: half m does not depend on M
            _write_json(plan_path, plan)
            return
        if not overwrite:
            raise RunDirError(
                f"{folder}: holds a check of other data or another recipe; pass {switched_on('overwrite')} to "
                f"replace it, or {spelled('out')} another folder"
            )
        for path in folder.glob("half-*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        (folder / RESULT).unlink(missing_ok=True)
    elif folder.exists() and any(folder.iterdir()):
        raise RunDirError(
            f"{folder}: exists and is not a check folder; give {spelled('out')} an empty or new folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(plan_path, plan)


def _measured(folder: Path, half: int, rows: np.ndarray) -> dict[str, Any] | None:
    path = folder / f"half-{half:03d}.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("rows") == rows.tolist() else None


def _val_losses(run: RunDir, val_table: Table, val_columns: DataColumns, device: str) -> np.ndarray:
    """float64 ``[V]``: each validation row's cross-entropy under a run's full network."""
    evaluation = evaluate_run(run, val_table, columns=val_columns, device=device)
    labels = instances_from_table(val_table, val_columns, evaluation.labels, with_keys=False).labels
    picked = evaluation.probs[np.arange(len(labels)), labels].astype(np.float64)
    return -np.log(np.clip(picked, 1e-12, 1.0))


def _train_half(
    info: RunInfo,
    train_table: Table,
    val_table: Table,
    val_columns: DataColumns,
    folder: Path,
    half: int,
    rows: np.ndarray,
    device: str,
) -> dict[str, Any]:
    """Train the model of one half, measure it on the validation rows, keep only the measurement."""
    work = folder / f"half-{half:03d}"
    if work.exists():
        shutil.rmtree(work)  # an interrupted half of this check: its own files
    work.mkdir()
    try:
        data = str(work / f"train{_SUFFIX.get(train_table.format, '.jsonl')}")
        write_subset(train_table, rows, data)
        run = RunDir(work / "run")
        config = replace(truth_config(info, half), device=device)
        started = time.perf_counter()
        train(config, read_table(data, split=train_table.split), run, train_path=data, overwrite=True)
        losses = _val_losses(run, val_table, val_columns, device)
        measured = {
            "rows": rows.tolist(),
            "losses": losses.tolist(),
            "seconds": time.perf_counter() - started,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_json(folder / f"half-{half:03d}.json", measured)
    return measured


def check_run(
    run: RunDir,
    train_table: Table,
    val_table: Table,
    *,
    folder: Path,
    val_columns: DataColumns | None = None,
    halves: int = DEFAULT_HALVES,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    score_config: ScoreConfig | None = None,
    device: str = "auto",
    shard: Shard | None = None,
    overwrite: bool = False,
    bootstrap: int = 1000,
    progress: Progress | None = None,
) -> CheckResult:
    """Measure the LDS of ``methods`` (default: every estimator that applies to the run) on ``halves``
    retrained halves of ``train_table`` (the run's training rows) against ``val_table``; results and the
    measured halves in ``folder``. With ``shard``, train only that shard's halves and compute nothing else.
    """
    progress = progress or NullProgress()
    info = run.read_complete_info()
    check_train_file(train_table, info)
    if halves < MIN_HALVES:
        raise ConfigError(
            f"{spelled('halves', str(halves))}: the LDS needs at least {MIN_HALVES} retrained halves (20 or more "
            "for a useful interval)"
        )
    available = applicable_estimators(info)
    chosen = list(methods) if methods else available
    for name in chosen:
        if name not in ESTIMATORS and name != RANDOM:
            raise ConfigError(
                f"{spelled('methods', name, flag='--influence')}: choose from {', '.join([*available, RANDOM])}"
            )
        if name in ESTIMATORS and not ESTIMATORS[name].applies_to(info.scope):
            raise ConfigError(
                f"{spelled('methods', name, flag='--influence')} does not apply to a run of scope '{info.scope}'"
            )
    columns = val_columns or info.train.columns
    # the labels must be the run's: a half model that never saw a class could not be measured on it
    instances_from_table(val_table, columns, info.labels, with_keys=False)
    plan = check_plan(info, train_table, val_table, halves, seed)
    what = f"{folder} (each half's rows are written into it)"
    check_paths_resolve_in(train_table, info.train.columns.image_col, folder / "half-000", what)
    _open_folder(folder, plan, overwrite)

    subsets = random_halves(len(train_table), halves, seed)
    mine = [m for m in range(halves) if shard is None or m % shard.count == shard.index]
    losses = np.full((halves, len(val_table)), np.nan)
    seconds = np.zeros(halves)
    todo = []
    for m in range(halves):
        saved = _measured(folder, m, np.flatnonzero(subsets[m]))
        if saved is not None:
            losses[m], seconds[m] = saved["losses"], saved["seconds"]
        elif m in mine:
            todo.append(m)
    progress.start("check: retraining halves", len(todo))
    for m in todo:
        measured = _train_half(
            info, train_table, val_table, columns, folder, m, np.flatnonzero(subsets[m]), device
        )
        losses[m], seconds[m] = measured["losses"], measured["seconds"]
        progress.advance(1)
    progress.finish()
    pending = [m for m in range(halves) if np.isnan(losses[m]).any()]
    result = CheckResult(
        halves=halves,
        measured=halves - len(pending),
        train_rows=len(train_table),
        val_rows=len(val_table),
        truth_scope=truth_scope(str(info.scope)),
        pending=pending,
        truth_seconds=float(seconds.sum()),
        folder=str(folder),
    )
    if pending or shard is not None:
        return result

    matrices: dict[str, np.ndarray] = {}
    matrix_seconds: dict[str, float] = {}
    for name in chosen:
        started = time.perf_counter()
        if name == RANDOM:
            matrices[name] = np.random.default_rng([seed, 17]).standard_normal(
                (len(train_table), len(val_table))
            )
        else:
            path = folder / f"matrix-{name}.npy"
            options = {**(score_config.__dict__ if score_config else {}), "influence_method": name}
            score_run(
                run,
                train_table,
                val_table=val_table,
                val_columns=columns,
                config=ScoreConfig(**options),
                device=device,
                matrix_path=path,
            )
            matrices[name] = np.load(path).astype(np.float64)
            path.unlink()
        matrix_seconds[name] = time.perf_counter() - started
    if RANDOM not in matrices:
        matrices[RANDOM] = np.random.default_rng([seed, 17]).standard_normal(
            (len(train_table), len(val_table))
        )
        matrix_seconds[RANDOM] = 0.0
    samples = bootstrap_lds(matrices, subsets, losses, samples=bootstrap, seed=seed)
    means = {name: lds(matrix, subsets, losses) for name, matrix in matrices.items()}
    order = sorted(matrices, key=lambda name: -means[name][0])
    best = order[0]
    for name in order:
        difference = samples[name] - samples[best]
        low, high = interval(samples[name])
        d_low, d_high = interval(difference)
        over_random_low = interval(samples[name] - samples[RANDOM])[0]
        result.estimators.append(
            EstimatorCheck(
                name=name,
                lds=means[name][0],
                se=means[name][1],
                low=low,
                high=high,
                difference=means[name][0] - means[best][0],
                difference_low=d_low,
                difference_high=d_high,
                over_random_low=over_random_low,
                seconds=matrix_seconds[name],
            )
        )
    _write_json(folder / RESULT, {"plan": plan, **result.to_dict()})
    return result


def load_check(folder: Path) -> dict[str, Any] | None:
    """The saved result of a finished check in ``folder`` (None if there is none)."""
    path = folder / RESULT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
