"""Predictions and metrics of a run's full network (no instance mask) on any labeled file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tod_clean.config import DataColumns
from tod_clean.data import Table
from tod_clean.device import autocast_dtype, pick_device
from tod_clean.encoding import EncodedRows, encode_texts, sorted_batches
from tod_clean.instances import instances_from_table
from tod_clean.model import TodClassifier
from tod_clean.progress import NullProgress, Progress
from tod_clean.rundir import RunDir


@torch.no_grad()
def predict_probs(
    model: TodClassifier,
    encoded: EncodedRows,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> np.ndarray:
    """Class probabilities of the full network: float32 ``[N, C]`` in row order."""
    progress = progress or NullProgress()
    device = torch.device(device)
    model.eval()
    probs = np.zeros((len(encoded), model.classifier.out_features), dtype=np.float32)
    progress.start("predict", len(encoded))
    for indices in sorted_batches(encoded.lengths, batch_size):
        batch = encoded.batch(indices, device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(batch)
        probs[indices] = logits.float().softmax(-1).cpu().numpy()
        progress.advance(len(indices))
    progress.finish()
    return probs


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "loss": self.loss,
            "labels": self.labels,
            "confusion": self.confusion.tolist(),
        }


def metrics(probs: np.ndarray, labels: np.ndarray, label_names: list[Any]) -> Evaluation:
    """Accuracy, macro-F1 (over the classes present in labels or predictions), mean cross-entropy.

    ``probs`` float ``[N, C]``, ``labels`` int64 ``[N]``; accuracy, F1 and the confusion matrix are
    scikit-learn's.
    """
    # scikit-learn (with scipy) takes over a second to import: only the commands that need metrics pay it
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    predicted = probs.argmax(1)
    classes = np.arange(probs.shape[1])
    present = np.union1d(labels, predicted)
    # log_loss would renormalise float32 rows that miss 1 by rounding: the plain mean keeps the model's own
    picked = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-12, 1.0)
    return Evaluation(
        labels=list(label_names),
        rows=len(labels),
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, labels=present, average="macro", zero_division=0.0)),
        loss=float(-np.log(picked).mean()),
        confusion=confusion_matrix(labels, predicted, labels=classes).astype(np.int64),
        probs=probs,
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
    torch_device = pick_device(device)
    model = run.load_model(info, torch_device)
    encoded = encode_texts(run.load_tokenizer(), instances.texts, instances.text_pairs, info.train.max_length)
    probs = predict_probs(
        model,
        encoded,
        batch_size=batch_size,
        device=torch_device,
        amp_dtype=autocast_dtype(info.train.precision, torch_device),
        progress=progress,
    )
    return metrics(probs, instances.labels, info.labels)
