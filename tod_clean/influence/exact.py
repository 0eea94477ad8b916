"""The exact influence (``--influence exact``): each pair's hidden and exposed losses, by the head scope's
GEMM path (``head_gemm``) or, in deeper scopes, by forward passes over pairs (``pairs``)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from tod_clean.influence.base import InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.influence.head_gemm import head_features, head_influence_blocks
from tod_clean.influence.pairs import pair_influence_blocks
from tod_clean.masks import mask_options
from tod_clean.runtime.processes import Processes


class ExactInfluence(InfluenceEstimator):
    """Every masked scope: the head scope from cached head features, the others pair by pair."""

    name = "exact"

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        model, device = task.model, task.device
        if model.scope.head_only:

            def features_of(rows: np.ndarray) -> torch.Tensor:
                subset = task.val_encoded.subset(rows)
                return head_features(
                    model, subset, batch_size=task.batch_size, device=device, amp_dtype=task.amp_dtype
                )

            processes = task.processes or Processes()
            features = processes.map_rows(len(task.val_encoded), features_of).to(device)
            return head_influence_blocks(
                features,
                torch.as_tensor(task.val_labels, device=device),
                model.classifier.weight.detach().float(),
                model.classifier.bias.detach().float(),
                torch.as_tensor(task.train_keys, device=device),
                **mask_options(model),
                chunk_mib=task.chunk_mib,
                progress=task.progress,
            )
        return pair_influence_blocks(
            model,
            task.train_keys,
            task.val_encoded,
            task.val_labels,
            task.batch_size,
            task.pair_batch,
            task.chunk_mib,
            device,
            task.amp_dtype,
            task.progress,
        )
