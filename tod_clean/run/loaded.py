"""A finished run opened for inference (model, tokenizer, device, precision, labels): what score, explain,
evaluate and predict start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tod_clean.encoding import sorted_batches
from tod_clean.instances import Instances
from tod_clean.model_inputs import Encoded, encode_instances
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import RunDir, RunInfo
from tod_clean.runtime.device import autocast_dtype
from tod_clean.runtime.progress import NullProgress, Progress


@torch.no_grad()
def predict_probs(
    model: TodClassifier,
    encoded: Encoded,
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
class LoadedRun:
    """A finished run's trained model opened for inference: the model (``probs`` runs its full network, no
    instance mask), its tokenizer (or image processor: ``tokenizer`` is the preprocessor) and ``max_length``, the device, the autocast dtype of the run's precision
    there, and the class labels in the model's order."""

    model: TodClassifier
    tokenizer: Any
    device: torch.device
    amp_dtype: torch.dtype | None
    max_length: int
    labels: list[Any]

    @classmethod
    def open(cls, run: RunDir, info: RunInfo, device: torch.device) -> LoadedRun:
        return cls(
            model=run.load_model(info, device),
            tokenizer=run.load_preprocessor(info),
            device=device,
            amp_dtype=autocast_dtype(info.train.precision, device),
            max_length=info.train.max_length,
            labels=info.labels,
        )

    def encode(self, instances: Instances) -> Encoded:
        return encode_instances(self.tokenizer, instances, self.max_length)

    def probs(
        self, encoded: Encoded, *, batch_size: int = 64, progress: Progress | None = None
    ) -> np.ndarray:
        """Class probabilities float32 ``[N, C]`` of ``encoded``'s rows, in row order."""
        return predict_probs(
            self.model,
            encoded,
            batch_size=batch_size,
            device=self.device,
            amp_dtype=self.amp_dtype,
            progress=progress,
        )
