"""What the report of a scored run says, as plain data: the run's header, the rows flagged (exactly as
``filter`` would drop them), each score column's distribution and cut-off, the class counts, the table of
flagged rows and the explained validation errors.

:func:`report_content` gathers it (the one step that may run the model, for the explanations);
:func:`load_run_scores` and :func:`recorded_val_table` read what ``score`` saved in the run.
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tod_clean.config import INFLUENCE_METHODS, ScoreConfig
from tod_clean.errors import ConfigError, RunDirError, TodCleanError
from tod_clean.influence.base import unmasked_refusal
from tod_clean.instances import resolve_columns
from tod_clean.io.columns import label_key
from tod_clean.io.formats.hub import is_hub_ref
from tod_clean.io.images import ImageColumn
from tod_clean.io.inputs import read_table
from tod_clean.io.table import Table
from tod_clean.io.thumbnails import thumbnail_uris
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir, RunInfo
from tod_clean.runtime.progress import Progress
from tod_clean.selection import check_drop_options, filter_table, match_scores
from tod_clean.signals import LABEL_SIGNALS, SIGNALS, WORSE_WHEN_LOWER

log = logging.getLogger(__name__)

# Histograms drawn when the column exists (a scope 'none' run has only full_loss).
DISTRIBUTION_COLUMNS = ("influence", "self_influence", "hidden_loss", "full_loss")
# Score columns shown in the table of flagged rows, when present (and the ranking column in any case).
TABLE_SCORE_COLUMNS = ("influence", "self_influence", "hidden_loss", "full_loss")
# Misclassified validation images shown with their training images, at most (7 thumbnails each at the
# default --top of 3: the page stays small however many --max-explained asks for).
MAX_EXPLAINED_IMAGES = 8


@dataclass
class ReportConfig:
    """What the report flags and how much it shows; ranges are checked here, before any work."""

    by: str | None = field(
        default=None, metadata={"help": "score column to flag by (default: filter's default)"}
    )
    drop: float | None = field(
        default=None, metadata={"help": "fraction of rows flagged, as filter --drop (default 0.01)"}
    )
    drop_count: int | None = field(default=None, metadata={"help": "rows flagged, as filter --drop-count"})
    threshold: float | None = field(
        default=None, metadata={"help": "flag rows beyond this score, as filter --threshold"}
    )
    allow_empty_class: bool = field(
        default=False, metadata={"help": "allow flagging every row of a class, as filter --allow-empty-class"}
    )
    top: int = field(default=30, metadata={"help": "flagged rows listed in the table"})
    max_explained: int = field(default=10, metadata={"help": "misclassified validation rows explained"})
    explain_k: int = field(default=3, metadata={"help": "hurt and helped training rows per explained row"})
    influence_method: str | None = field(
        default=None,
        metadata={"help": "exact, linear or auto for the explanations (default: the method score used)"},
    )

    @property
    def criterion(self) -> str:
        """The flagging criterion as filter's options spell it."""
        if self.threshold is not None:
            return f"--threshold {self.threshold}"
        if self.drop_count is not None:
            return f"--drop-count {self.drop_count}"
        return f"--drop {self.drop}"

    def __post_init__(self) -> None:
        if self.influence_method is not None and self.influence_method not in INFLUENCE_METHODS:
            raise ConfigError(
                f"--influence {self.influence_method}: choose one of {', '.join(INFLUENCE_METHODS)}"
            )
        if self.by is not None and self.by not in SIGNALS:
            raise ConfigError(f"--by {self.by}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
        if self.drop is None and self.drop_count is None and self.threshold is None:
            self.drop = 0.01
        # the same checks and messages as filter's
        check_drop_options(by=self.by, fraction=self.drop, count=self.drop_count, threshold=self.threshold)
        if self.top < 1:
            raise ConfigError(f"--top must be a positive number of rows, got {self.top}")
        if self.max_explained < 0:
            raise ConfigError(f"--max-explained must be 0 or more, got {self.max_explained}")
        if self.explain_k < 1:
            raise ConfigError(f"explain_k must be a positive number of rows, got {self.explain_k}")


@dataclass
class Distribution:
    """The values ``[N]`` float64 of one score column; ``cutoff`` only for the column rows are flagged by."""

    column: str
    values: np.ndarray
    cutoff: float | None = None


@dataclass
class ClassCount:
    label: str
    rows: int
    flagged: int


@dataclass
class ReportContent:
    """Everything the page shows, as plain values (no figures yet).

    ``flagged`` is bool ``[N]`` in training-row order. ``top_rows`` has the display columns of the table of
    flagged rows (``text``, ``image`` and ``flagged`` are rendered specially). ``explanations`` is the frame
    of :func:`tod_clean.explain.explain_run` cut to the explained validation rows (with ``train_pred``, the
    training row's prediction from the scores), or None with ``explain_note`` saying why.

    For image runs (``images``), the thumbnails as ``data:image/png;base64,...`` URIs: ``top_thumbnails``
    one per row of ``top_rows`` (None where the image could not be read), ``train_thumbnails`` and
    ``val_thumbnails`` by ``train_row`` and ``val_row`` of ``explanations``.
    """

    header: list[tuple[str, str]]
    by: str
    drop: float | None
    flagged: np.ndarray
    distributions: list[Distribution]
    classes: list[ClassCount]
    top_rows: pd.DataFrame
    explanations: pd.DataFrame | None = None
    explain_summary: str | None = None
    explain_note: str | None = None
    notes: list[str] = field(default_factory=list)
    criterion: str | None = None  # as filter's options spell it; None: --drop DROP
    ranking_note: str | None = None  # which signal was ranked by and why, when none was chosen
    warnings: list[str] = field(default_factory=list)  # classes that lose a disproportionate share
    # the run's check (RUN/check/check.json): one row per estimator, and the sentence that sums it up
    check_rows: pd.DataFrame | None = None
    check_summary: str | None = None
    images: bool = False
    top_thumbnails: list[str | None] | None = None
    train_thumbnails: dict[int, str] = field(default_factory=dict)
    val_thumbnails: dict[int, str] = field(default_factory=dict)
    thumbnail_problems: list[str] = field(default_factory=list)  # images that could not be read

    @property
    def flagged_by(self) -> str:
        return self.criterion or f"--drop {self.drop}"

    @property
    def worse_when(self) -> str:
        return "lowest" if self.by in WORSE_WHEN_LOWER else "highest"

    @property
    def num_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def explained(self) -> int:
        return 0 if self.explanations is None else int(self.explanations["val_row"].nunique())


# ---- inputs -----------------------------------------------------------------------------------------


def load_run_scores(run: RunDir) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scores saved in the run directory by ``score``, with a message that says how to get them."""
    from tod_clean.run.scores import load_scores

    run.read_info()
    if not run.file(SCORES).is_file() or not run.file(SCORES_META).is_file():
        raise RunDirError(f"{run.path}: has no scores yet; run 'tod-clean score --run {run.path}' first")
    return load_scores(run)


def recorded_val_table(meta: dict[str, Any]) -> tuple[Table | None, str | None]:
    """The validation file ``score`` recorded in scores.json, or None and the reason it cannot be used."""
    path = meta.get("val_file")
    if not path:
        return (
            None,
            "the run was scored without a validation set; pass --val FILE to explain validation errors",
        )
    if path.startswith("<") or not (is_hub_ref(path) or Path(path).exists()):
        return None, f"the validation file the run was scored on ({path}) was not found; pass --val FILE"
    try:
        table = read_table(path, split=meta.get("val_split"))
    except TodCleanError as error:
        return None, f"cannot read the validation file the run was scored on: {error}"
    if meta.get("val_sha256") and table.sha256 != meta["val_sha256"]:
        log.warning("%s changed since the run was scored; explaining its current rows", path)
    return table, None


# ---- gathering --------------------------------------------------------------------------------------


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, cut at a word boundary (a long word is cut hard)."""
    flat = " ".join(str(text).split())
    if len(flat) <= width:
        return flat
    short = textwrap.shorten(flat, width=width, placeholder=" …")
    if short == "…" or len(short) < width // 2:  # one very long word: cut it rather than lose it
        short = flat[: width - 1] + "…"
    return short


def _texts(table: Table, info: RunInfo) -> list[str]:
    """Each training row as the report shows it: its text (and pair), or its image's name."""
    columns = info.train.columns
    if columns.images:
        images = _image_column(table, info)
        return [images.label(value) for value in images]
    texts = [str(value) for value in table.column(columns.text_col)]
    if columns.text_pair_col is not None and columns.text_pair_col in table.columns:
        pairs = table.column(columns.text_pair_col)
        texts = [f"{text} ‖ {pair}" for text, pair in zip(texts, pairs, strict=True)]
    return texts


def _cutoff(values: np.ndarray, order: np.ndarray, count: int) -> float | None:
    """Midway between the last flagged and the first kept value (None when nothing or everything is)."""
    if count <= 0 or count >= len(values):
        return None
    return float((values[order[count - 1]] + values[order[count]]) / 2)


def _shown_path(path: str) -> str:
    """A recorded (absolute) path as the reader knows it: relative to the current folder when inside it."""
    if is_hub_ref(path):
        return path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def _header(
    run: RunDir, info: RunInfo, meta: dict[str, Any], train_table: Table, config: ReportConfig, by: str
) -> list[tuple[str, str]]:
    final_loss = info.epochs[-1].get("train_loss") if info.epochs else None
    epochs = f"{len(info.epochs)} of {info.train.epochs}"
    if final_loss is not None:
        epochs += f" (final training loss {final_loss:.4f})"
    val_file = meta.get("val_file")
    scored = (
        f"{_shown_path(val_file)} ({meta.get('val_rows', '?')} rows)"
        + (f", {meta['influence_method']} influence" if meta.get("influence_method") else "")
        if val_file
        else "no validation set (self-scores only)"
    )
    rows = [
        ("run directory", str(run.path)),
        (
            "training file",
            _shown_path(info.train_file.path)
            if train_table.ref == info.train_file.path
            else f"{train_table.source} (trained on {_shown_path(info.train_file.path)})",
        ),
        (
            "rows",
            f"{len(train_table)} ({len(info.labels)} classes: {', '.join(map(str, info.labels))})",
        ),
        ("model", info.train.model),
        ("scope", str(info.scope)),
        ("keep_prob", f"{info.train.keep_prob}" + ("" if info.scope.masked else " (no instance masks)")),
        ("instance key", info.instance_key),
        ("epochs", epochs),
        ("scored on", scored),
        (
            "flagged by",
            f"the {'lowest' if by in WORSE_WHEN_LOWER else 'highest'} {by}"
            + (" within each class" if by in LABEL_SIGNALS and config.threshold is None else "")
            + f", {config.criterion}",
        ),
    ]
    return rows


def report_content(
    run: RunDir,
    config: ReportConfig,
    *,
    scores: pd.DataFrame,
    meta: dict[str, Any],
    train_table: Table | None = None,
    val_table: Table | None = None,
    val_note: str | None = None,
    val_explicit: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> ReportContent:
    """Gather the report of a scored run.

    Rows are flagged exactly as ``tod-clean filter --by config.by --drop config.drop`` would drop them.
    Misclassified rows of ``val_table`` are explained (the run's model is loaded for this) unless the run
    has no instance masks, no validation table is given (``val_note`` says why) or ``max_explained`` is 0.
    A validation table the user did not name (``val_explicit=False``) that cannot be explained becomes a
    note on the page rather than an error.
    """
    info = run.read_info()
    if train_table is None:
        train_table = read_table(info.train_source(), split=info.train_file.split)
    result = filter_table(
        train_table,
        scores,
        info,
        by=config.by,
        fraction=config.drop,
        count=config.drop_count,
        threshold=config.threshold,
        allow_empty_class=config.allow_empty_class,
        scores_source=str(run.file(SCORES)),
    )
    by = result.by
    aligned = match_scores(train_table, scores, info, source=str(run.file(SCORES)))
    flagged = np.zeros(len(train_table), dtype=bool)
    flagged[result.dropped] = True
    values = aligned[by].to_numpy(dtype=np.float64)
    order = result.order  # the ranking filter uses: within each class for label-error signals
    if config.threshold is not None:
        cutoff = config.threshold
    elif by in LABEL_SIGNALS:
        cutoff = None  # ranked within each class: no single value of the column separates the rows
    else:
        cutoff = _cutoff(values, order, len(result.dropped))

    columns = [name for name in DISTRIBUTION_COLUMNS if name in aligned.columns]
    if by not in columns:
        columns.append(by)
    distributions = [
        Distribution(
            name,
            aligned[name].to_numpy(dtype=np.float64),
            cutoff if name == by else None,
        )
        for name in columns
    ]

    label_keys = [label_key(value) for value in aligned["label"]]
    classes = []
    for label in info.labels:
        key = label_key(label)
        in_class = np.array([k == key for k in label_keys], dtype=bool)
        classes.append(ClassCount(str(label), int(in_class.sum()), int((in_class & flagged).sum())))

    texts = _texts(train_table, info)
    top = order[: config.top]
    shown: dict[str, Any] = {"#": np.arange(1, len(top) + 1), "row": aligned["row"].to_numpy()[top]}
    if "id" in aligned.columns:
        shown["id"] = aligned["id"].to_numpy()[top]
    images = info.train.columns.images
    if images:  # the picture first, then its labels and scores
        shown["image"] = [texts[i] for i in top]
    shown["label"] = aligned["label"].to_numpy()[top]
    pred = "hidden_pred" if "hidden_pred" in aligned.columns else "full_pred"
    shown[pred] = aligned[pred].to_numpy()[top]
    for name in (*TABLE_SCORE_COLUMNS, by):
        if name in aligned.columns and name not in shown:
            shown[name] = aligned[name].to_numpy()[top]
    shown["flagged"] = flagged[top]
    if not images:
        shown["text"] = [texts[i] for i in top]
    top_rows = pd.DataFrame(shown)

    content = ReportContent(
        header=_header(run, info, meta, train_table, config, by),
        by=by,
        drop=config.drop,
        flagged=flagged,
        distributions=distributions,
        classes=classes,
        top_rows=top_rows,
        criterion=config.criterion,
        ranking_note=result.note,
        warnings=list(result.warnings),
        images=images,
    )
    if images:
        uris, content.thumbnail_problems = thumbnail_uris(_image_column(train_table, info), top)
        content.top_thumbnails = [uris.get(int(i)) for i in top]
    content.notes += [f"Warning: {warning}." for warning in result.warnings]
    if len(result.dropped) == 0:
        content.notes.append(
            (
                f"--drop {config.drop} of {len(train_table)} rows rounds to 0 rows"
                if config.drop is not None
                else f"{config.criterion} flags no row"
            )
            + ": nothing is flagged; the table lists the rows closest to the cut."
        )
    _add_check(content, run)
    # Explanations use the method the scores were computed with, unless the report asks for another.
    method = config.influence_method or meta.get("influence_method") or "auto"
    _add_explanations(
        content, run, info, method, config, train_table, val_table, val_note, val_explicit, device, progress
    )
    if content.explanations is not None:
        content.explanations["train_pred"] = aligned[pred].to_numpy()[content.explanations["train_row"]]
    problems = list(dict.fromkeys(content.thumbnail_problems))
    if problems:
        content.notes.append(
            f"{len(problems)} image{'s' if len(problems) > 1 else ''} could not be shown: {problems[0]}"
        )
    return content


def _image_column(table: Table, info: RunInfo) -> ImageColumn:
    return ImageColumn(table, resolve_columns(table, info.train.columns).image_col or "")


def _add_explanations(
    content: ReportContent,
    run: RunDir,
    info: RunInfo,
    influence_method: str,
    config: ReportConfig,
    train_table: Table,
    val_table: Table | None,
    val_note: str | None,
    val_explicit: bool,
    device: str,
    progress: Progress | None,
) -> None:
    refusal = unmasked_refusal(info.scope, influence_method)
    if refusal is not None:
        content.explain_note = f"This run was {refusal}: no validation errors are explained."
        return
    if val_table is None:
        content.explain_note = val_note or "No validation file is known; pass --val FILE."
        return
    if config.max_explained == 0:
        content.explain_note = "Explanations were turned off (--max-explained 0)."
        return
    max_rows = config.max_explained
    if content.images:
        max_rows = min(max_rows, MAX_EXPLAINED_IMAGES)
    from tod_clean.explain import explain_run

    try:
        result = explain_run(
            run,
            train_table,
            val_table,
            k=config.explain_k,
            errors_only=True,
            max_rows=max_rows,
            config=ScoreConfig(influence_method=influence_method),
            device=device,
            progress=progress,
        )
    except TodCleanError as error:
        if val_explicit:
            raise
        content.explain_note = f"Validation errors could not be explained: {error}"
        log.warning("validation errors not explained: %s", error)
        return
    content.explain_summary = (
        f"{val_table.source}: the full network gets {result.misclassified} of {len(val_table)} "
        f"validation rows wrong (accuracy {result.accuracy:.3f})."
    )
    if result.explained == 0:
        content.explain_note = "No validation row is misclassified: nothing to explain."
        return
    first = list(dict.fromkeys(result.frame["val_row"]))[:max_rows]
    content.explanations = result.frame[result.frame["val_row"].isin(first)].reset_index(drop=True)
    if max_rows < config.max_explained and result.misclassified > len(first):
        content.explain_summary += (
            f" The first {len(first)} are shown with their training images (at most "
            f"{MAX_EXPLAINED_IMAGES} images, to keep the page small)."
        )
    elif result.explained > len(first):
        content.explain_summary += f" The first {len(first)} are explained (--max-explained)."
    if result.train_images is not None and result.val_images is not None:
        frame = content.explanations
        content.train_thumbnails, train_problems = thumbnail_uris(result.train_images, frame["train_row"])
        content.val_thumbnails, val_problems = thumbnail_uris(result.val_images, frame["val_row"])
        content.thumbnail_problems += train_problems + val_problems


def _add_check(content: ReportContent, run: RunDir) -> None:
    """The result of ``tod-clean check`` in the run's default check folder, when there is one."""
    from tod_clean.check import RANDOM, load_check

    saved = load_check(run.path / "check")
    if saved is None:
        return
    estimators = saved["estimators"]
    content.check_rows = pd.DataFrame(
        {
            "estimator": [e["name"] for e in estimators],
            "LDS": [e["lds"] for e in estimators],
            "95% low": [e["low"] for e in estimators],
            "95% high": [e["high"] for e in estimators],
            "vs highest": [e["difference"] for e in estimators],
            "beats random": [
                "-" if e["name"] == RANDOM else ("yes" if e["beats_random"] else "no") for e in estimators
            ],
        }
    )
    best = next((e for e in estimators if e.get("beats_random")), None)
    scope = f"{saved['halves']} {saved['truth_scope']} fine-tunes on random halves, {saved['val_rows']} validation rows"
    content.check_summary = (
        f"Measured by retraining ({scope}): rank by --influence {best['name']} (LDS {best['lds']:.3f})."
        if best is not None
        else f"Measured by retraining ({scope}): no estimator beats a random matrix on this data; do not rank "
        "by influence here."
    )
