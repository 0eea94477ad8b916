"""``--influence ekfac``: EK-FAC influence functions of the run's trained network, through kronfluence.

EK-FAC (George et al. 2018; the influence-function form of Grosse et al. 2023, "Studying Large Language
Model Generalization with Influence Functions") approximates each layer's Gauss-Newton block by the
Kronecker product of its input and output-gradient covariances, and corrects the eigenvalues in their
eigenbasis. kronfluence (github.com/pomonam/kronfluence) is the maintained implementation, so tod-clean
uses it rather than a Hessian of its own: an optional dependency (``pip install 'tod-clean[ekfac]'``),
imported only when this estimator runs.

Influence of training row i on validation row z: ``g_z^T (G_EKFAC + lambda I)^{-1} g_i / N`` summed over
the tracked layers, where g are the full network's loss gradients (no instance mask), ``G_EKFAC`` is fitted
on the N training rows with labels sampled from the model (the true Fisher, kronfluence's default), and
``lambda`` is 0.1 x the mean eigenvalue of each layer's factor (kronfluence's heuristic; the same rule as
``gauss-newton``'s). Dividing by N makes it, like ``gauss-newton``, the first-order change of z's loss when
i is left out (positive = i lowers z's loss). Tracked layers: every ``nn.Linear`` and ``nn.Conv2d`` on the
path to the logits (a layer whose output gets no gradient, such as a BERT pooler the classifier does not
read, is left out).

Memory and time: kronfluence keeps each validation row's preconditioned gradient (one float per tracked
parameter) for the rows of one query batch, and makes one pass over the training rows per query batch.
The query batch is as large as fits in 4 x ``--chunk-mib`` (``QUERY_BUDGETS``); when not even all
validation rows' rank-``QUERY_RANK`` approximations would fit in one batch, the gradients are kept at
that rank (kronfluence's ``query_gradient_low_rank``) to bound the passes. The factors are written to a
temporary folder that is removed afterwards. The training side needs every row (``needs_all_rows``).
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from tod_clean.encoding import sorted_batches
from tod_clean.errors import ConfigError
from tod_clean.influence.base import InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.influence.gradients import _grads_enabled, layers_with_gradient
from tod_clean.model_inputs import Encoded
from tod_clean.scopes import Scope

QUERY_BUDGETS = 4  # the validation rows' preconditioned gradients may take this many times --chunk-mib
QUERY_RANK = 32  # rank of each validation row's per-layer gradient when full ones need several passes
SAMPLING_SEED = 0  # seed of the labels the factors are fitted on (sampled from the model)
DAMPING: float | None = None  # kronfluence's heuristic: 0.1 x each factor's mean eigenvalue
INSTALL_HINT = "pip install 'tod-clean[ekfac]'"


def tracked_modules(model: nn.Module, probe: dict[str, torch.Tensor], labels: torch.Tensor) -> list[str]:
    """Names of the ``nn.Linear`` / ``nn.Conv2d`` modules whose output gets a gradient from the loss of
    ``probe`` (a few rows), in module order."""
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    flags = _grads_enabled(model)
    try:
        used = layers_with_gradient(model, [m for _, m in candidates], probe, labels)
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
    return [name for name, m in candidates if m in used]


class _Rows(torch.utils.data.Dataset):
    """The rows of ``encoded`` by index, for kronfluence's data loaders; batches are made by ``_collate``."""

    def __init__(self, encoded: Encoded, labels: torch.Tensor) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[int, _Rows]:
        return index, self


def _collate(items: list[tuple[int, _Rows]]) -> dict[str, Any]:
    rows = items[0][1]
    indices = np.array([index for index, _ in items])
    return {"inputs": rows.encoded.batch(indices, "cpu"), "labels": rows.labels[indices]}


def _length_order(encoded: Encoded, batch_size: int) -> np.ndarray:
    """Row indices in the order of ``sorted_batches`` (rows of similar length together: less padding)."""
    return np.concatenate(sorted_batches(encoded.lengths, batch_size))


class EkfacInfluence(InfluenceEstimator):
    """``--influence ekfac``: EK-FAC influence of the run's full network, any scope (module docstring)."""

    name = "ekfac"
    needs_all_rows = True
    strategy = "ekfac"  # kronfluence's FactorArguments.strategy (the tests run "identity" against a loop)

    def applies_to(self, scope: Scope) -> bool:
        return True

    def available(self) -> bool:
        import importlib.util

        return importlib.util.find_spec("kronfluence") is not None

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        try:
            from kronfluence.analyzer import Analyzer, prepare_model
            from kronfluence.arguments import FactorArguments, ScoreArguments
            from kronfluence.task import Task
            from kronfluence.utils.dataset import DataLoaderKwargs
        except ImportError as error:
            raise ConfigError(
                f"influence method 'ekfac' needs kronfluence, which is not installed ({INSTALL_HINT})"
            ) from error
        if task.train_labels is None:
            raise ConfigError(
                "this influence method needs the training rows' labels, which this command lacks"
            )
        train, val = task.train_encoded(), task.val_encoded
        rows, val_rows = len(train), len(val)
        train_labels = torch.as_tensor(task.train_labels)
        val_labels = torch.as_tensor(task.val_labels)
        # kronfluence wraps the model's layers in place: work on a copy, so the run's model stays as it was
        model = copy.deepcopy(task.model).to(task.device).eval()
        probe = np.resize(np.arange(min(4, val_rows)), max(2, min(4, val_rows)))  # as gradients.py probes
        with torch.enable_grad():
            names = tracked_modules(model, val.batch(probe, task.device), val_labels[probe].to(task.device))
        parameters = sum(
            module.weight.numel() + (0 if module.bias is None else module.bias.numel())
            for name, module in model.named_modules()
            if name in names
        )

        # The factors are fitted on labels sampled from the model (the true Fisher): from a generator of
        # its own, so a run scores the same whatever ran before (score and explain agree; a rerun repeats)
        sampler = torch.Generator(device=task.device).manual_seed(SAMPLING_SEED)

        class Classification(Task):
            def compute_train_loss(self, batch: Any, model: nn.Module, sample: bool = False) -> torch.Tensor:
                logits = model(batch["inputs"]).float()
                if sample:
                    with torch.no_grad():
                        targets = torch.multinomial(logits.softmax(-1), 1, generator=sampler).flatten()
                else:
                    targets = batch["labels"]
                return nn.functional.cross_entropy(logits, targets, reduction="sum")

            def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
                logits = model(batch["inputs"]).float()
                return nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")

            def get_influence_tracked_modules(self) -> list[str]:
                return names

            def get_attention_mask(self, batch: Any) -> torch.Tensor | None:
                inputs = batch["inputs"]
                return inputs.get("attention_mask") if isinstance(inputs, dict) else None

        kron_task = Classification()
        model = prepare_model(model, kron_task)
        budget = QUERY_BUDGETS * task.chunk_mib * 2**20
        full_batch = max(1, int(budget // (4 * parameters)))
        low_rank = QUERY_RANK if full_batch < val_rows else None
        query_batch = min(val_rows, full_batch)
        if low_rank is not None:
            per_row = (
                4
                * low_rank
                * sum(sum(module.weight.shape[:2]) for name, module in model.named_modules() if name in names)
            )
            query_batch = max(1, min(val_rows, int(budget // per_row)))
        train_set = _Rows(train, train_labels)
        val_set = _Rows(val, val_labels)
        # kronfluence batches the rows in the order of the indices it is given: rows of similar length
        # together (less padding), each block's scores put back in row order afterwards
        val_order = _length_order(val, task.batch_size)
        loader = DataLoaderKwargs(collate_fn=_collate)
        block_rows = max(1, int(task.chunk_mib * 2**20) // (4 * val_rows))
        passes = -(-val_rows // query_batch)
        task.progress.start("influence (ekfac)", 2 * rows + passes * rows)
        with tempfile.TemporaryDirectory(prefix="tod-clean-ekfac-") as output, warnings.catch_warnings():
            # kronfluence 1.0 builds torch.cuda.amp.GradScaler, which torch deprecates: not the user's concern
            warnings.filterwarnings("ignore", category=FutureWarning, module="kronfluence")
            analyzer = Analyzer(
                analysis_name="tod-clean",
                model=model,
                task=kron_task,
                cpu=task.device.type == "cpu",
                disable_tqdm=True,
                output_dir=output,
            )
            # the callers score under torch.no_grad(); kronfluence needs the gradients it hooks
            with torch.enable_grad():
                analyzer.fit_all_factors(
                    factors_name="ekfac",
                    dataset=train_set,
                    per_device_batch_size=task.batch_size,
                    dataloader_kwargs=loader,
                    factor_args=FactorArguments(strategy=self.strategy),
                    overwrite_output_dir=True,
                )
            task.progress.advance(2 * rows)
            for start in range(0, rows, block_rows):
                block = np.arange(start, min(start + block_rows, rows))
                block_order = block[_length_order(train.subset(block), task.batch_size)]
                with torch.enable_grad():
                    analyzer.compute_pairwise_scores(
                        scores_name="scores",
                        factors_name="ekfac",
                        query_dataset=val_set,
                        train_dataset=train_set,
                        query_indices=val_order.tolist(),
                        train_indices=block_order.tolist(),
                        per_device_query_batch_size=query_batch,
                        per_device_train_batch_size=task.batch_size,
                        dataloader_kwargs=loader,
                        score_args=ScoreArguments(damping_factor=DAMPING, query_gradient_low_rank=low_rank),
                        overwrite_output_dir=True,
                    )
                scores = analyzer.load_pairwise_scores("scores")
                assert scores is not None
                ordered = scores["all_modules"].T.float() / rows  # [block rows, V] in the orders given
                values = torch.empty(len(block), val_rows)
                values[torch.as_tensor(block_order - start)[:, None], torch.as_tensor(val_order)[None, :]] = (
                    ordered
                )
                task.progress.advance(passes * len(block))
                yield InfluenceBlock(start, np.arange(val_rows), values)
        task.progress.finish()
