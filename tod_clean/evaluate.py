"""Predictions and metrics of a run's full network (no instance mask) on any labeled file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tod_clean.config import DataColumns
from tod_clean.instances import instances_from_table
from tod_clean.io.table import Table
from tod_clean.run.loaded import LoadedRun
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.device import pick_device
from tod_clean.runtime.progress import Progress


@dataclass
class ClassMetrics:
    """Precision, recall and F1 of one class (0 where undefined), and its ``support``: rows labeled with it."""

    label: Any
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Evaluation:
    """Metrics of predictions against labels; ``confusion[true, predicted]`` counts rows."""

    labels: list[Any]
    rows: int
    accuracy: float
    macro_f1: float
    loss: float
    confusion: np.ndarray
    probs: np.ndarray
    per_class: list[ClassMetrics] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "loss": self.loss,
            "labels": self.labels,
            "confusion": self.confusion.tolist(),
            "per_class": [asdict(metrics) for metrics in self.per_class],
        }


def metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[Any]) -> Evaluation:
    """Accuracy, macro-F1 (over the classes present in labels or predictions), mean cross-entropy, and
    per class (every class of ``label_names``, in that order) precision, recall, F1 and support.

    ``probs`` float ``[N, C]``, ``labels`` int64 ``[N]``; accuracy, F1, the per-class metrics and the
    confusion matrix are scikit-learn's.
    """
    # scikit-learn (with scipy) takes over a second to import: only the commands that need metrics pay it
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    predicted = probs.argmax(1)
    classes = np.arange(probs.shape[1])
    present = np.union1d(labels, predicted)
    # log_loss would renormalise float32 rows that miss 1 by rounding: the plain mean keeps the model's own
    picked = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-12, 1.0)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0.0
    )
    per_class = [
        ClassMetrics(name, float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(label_names, precision, recall, f1, support, strict=True)
    ]
    return Evaluation(
        labels=list(label_names),
        rows=len(labels),
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0.0)),
        loss=float(-np.log(picked).mean()),
        confusion=confusion_matrix(labels, predicted, labels=classes).astype(np.int64),
        probs=probs,
        per_class=per_class,
    )


def evaluate_run(
    run: RunDir,
    table: Table,
    *,
    columns: DataColumns | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: Progress | None = None,
) -> Evaluation:
    """Evaluate a finished run's full network on a labeled table."""
    info = run.read_complete_info()
    instances = instances_from_table(table, columns or info.train.columns, info.labels, with_keys=False)
    network = LoadedRun.open(run, info, pick_device(device))
    probs = network.probs(network.encode(instances), batch_size=batch_size, progress=progress)
    return metrics(probs, instances.labels, info.labels)
