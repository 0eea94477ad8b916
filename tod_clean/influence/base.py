"""The influence estimator interface, its registry, and the blocks every estimator yields.

An estimator computes, on a finished run's trained network, the influence of training instances on
validation rows: ``L(hidden_i, z_v) - L(exposed_i, z_v)`` for training instance ``i`` and validation row
``v``, or an estimate of it. A new estimator is one module of this package, imported by
``tod_clean/influence/__init__.py``, holding a subclass of ``InfluenceEstimator`` that sets:

- ``name``: the value of ``--influence`` (``ScoreConfig.influence_method``) that selects it. Defining the
  class registers it under that name (in ``ESTIMATORS``); ``score``, ``explain`` and ``report`` then
  accept it.
- ``applies_to(scope)``: whether it can score a run of that scope (default: every scope with instance
  masks).
- ``blocks(task)``: the ``[train x val]`` influence as ``InfluenceBlock`` s, block by block, never the whole
  matrix: each block's memory is bounded (``task.chunk_mib``) whatever the numbers of rows. The caller sums
  the blocks into the ``influence`` column and, when asked, writes them into the matrix file.
- optionally ``resolve(scope, keep_prob)``: the estimator that actually runs for such a run (``turn-over``
  answers ``exact`` or ``linear``, ``auto`` ``gauss-newton``); the resolved name is recorded in scores.json.

``InfluenceTask`` is what ``blocks`` gets: the loaded model (eval mode) with its mask settings, the
training rows' instance keys (their masks) and, on request, their encoded rows, the encoded validation rows
and their labels, the device, the autocast dtype, batch sizes, the memory budget, the progress sink and the
processes. ``exact.py`` (a GEMM for the head scope, pairs of forward passes otherwise) and ``linear.py``
(gate gradients, one product per block) are the examples to copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from tod_clean.config import INFLUENCE_METHODS
from tod_clean.errors import ConfigError, spelled
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.processes import Processes
from tod_clean.runtime.progress import NullProgress, Progress
from tod_clean.scopes import Scope


@dataclass
class InfluenceBlock:
    """Per-pair influence of training rows ``train_start .. train_start + n`` on validation rows ``val_index``.

    ``values`` is float32 ``[n, v]``: ``L(hidden_i, z_v) - L(exposed_i, z_v)``; ``row_sums`` float32
    ``[n]``, when given, is ``values.sum(1)`` (computed where ``values`` was still in cache). Both may be
    views of buffers that the next block overwrites: use or copy them before asking for the next block.
    """

    train_start: int
    val_index: np.ndarray
    values: torch.Tensor
    row_sums: torch.Tensor | None = None

    def sums(self) -> np.ndarray:
        """``values.sum(1)`` as float64 ``[n]`` (a float32 cascade sum: exact enough)."""
        sums = self.values.sum(1) if self.row_sums is None else self.row_sums
        return sums.double().cpu().numpy()


@dataclass
class InfluenceTask:
    """The inputs of an estimator's ``blocks``.

    ``train_keys`` int64 ``[N]``: the training rows' instance keys (their masks; ``train_start`` of a block
    counts from the first of them). ``val_labels`` int64 ``[V]``. ``train_rows``, when the caller has them,
    gives the training rows' encoded tokens (see ``train_encoded``). With several ``processes`` (every one
    of them iterates), the training rows are already this process's; the validation side that every
    training row needs may be computed a block of validation rows per process and gathered
    (``Processes.map_rows``).
    """

    model: TodClassifier
    train_keys: np.ndarray
    val_encoded: Encoded
    val_labels: np.ndarray
    device: torch.device
    batch_size: int = 64
    chunk_mib: float = 256
    pair_batch: int = 256
    amp_dtype: torch.dtype | None = None
    progress: Progress = field(default_factory=NullProgress)
    processes: Processes | None = None
    train_rows: Callable[[], Encoded] | None = None
    train_labels: np.ndarray | None = None
    # the training rows this caller does not score that a preconditioner fitted on every row must see too
    # (the rows outside a --shard; this process's share of them under several processes): (tokens, labels)
    other_train_rows: Callable[[], list[tuple[Encoded, np.ndarray]]] | None = None

    def train_encoded(self) -> Encoded:
        """The training rows' tokens, in the order of ``train_keys`` (encoded on first request)."""
        if self.train_rows is None:
            raise ConfigError(
                "this influence method needs the training rows' texts, which this command lacks"
            )
        return self.train_rows()


# Every estimator by name, in the order they were registered: the dict ``ScoreConfig`` checks
# ``influence_method`` against (it lives in ``tod_clean.config``, below this package).
ESTIMATORS: dict[str, InfluenceEstimator] = INFLUENCE_METHODS


class InfluenceEstimator(ABC):
    """A way of computing influence; subclasses register themselves under their ``name``."""

    name: ClassVar[str]
    # True: its values for one training row depend on every training row (a preconditioner fitted on all
    # of them), so one process scoring a block of rows (--shard, several processes) cannot compute them.
    needs_all_rows: ClassVar[bool] = False
    # True (with needs_all_rows): what it fits is a sum over the training rows, so the processes of one
    # launch add up what each fitted on its rows, and one --shard fits it on the other rows too
    # (``InfluenceTask.other_train_rows``): it runs under several processes and on shards.
    combines_processes: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name is None:
            return
        if name in ESTIMATORS:
            raise ValueError(f"an influence estimator named {name!r} is already registered")
        ESTIMATORS[name] = cls()

    def check_split(self, *, shard: bool, several: bool) -> None:
        """Refuse a split of the training rows (one ``--shard`` of them, or several processes) when this
        estimator needs every row and cannot add up what it fits on parts of them."""
        if not self.needs_all_rows or not (shard or several):
            return
        if self.combines_processes:
            return
        named = spelled("influence_method", self.name, flag="--influence")
        raise ConfigError(
            f"{named} fits its preconditioner on every training row, so it runs in one process over all "
            f"rows: not with {spelled('shard')} or under several processes"
        )

    def applies_to(self, scope: Scope) -> bool:
        """Whether this estimator can score a run trained with ``scope``."""
        return scope.masked

    def available(self) -> bool:
        """Whether what it needs is installed (an estimator on an optional dependency says no without it)."""
        return True

    def resolve(self, scope: Scope, keep_prob: float) -> InfluenceEstimator:
        """The estimator that computes this one's influence for a run of ``scope`` at ``keep_prob``."""
        return self

    @abstractmethod
    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        """The ``[train x val]`` influence of ``task``, block by block (every pair exactly once)."""


def estimator_named(method: str) -> InfluenceEstimator:
    """The registered estimator ``method`` names (a ``ConfigError`` naming the choices otherwise)."""
    if not isinstance(method, str) or method not in ESTIMATORS:
        raise ConfigError(f"influence method must be one of {', '.join(ESTIMATORS)}, got {method!r}")
    return ESTIMATORS[method]


def unmasked_refusal(scope: Scope, method: str) -> str | None:
    """Why ``method`` cannot score a run of ``scope`` (None when it can): turn-over dropout's estimators need
    instance masks, which a ``none`` run lacks."""
    if estimator_named(method).applies_to(scope):
        return None
    named = spelled("influence_method", method, flag="--influence")
    return (
        f"trained with scope '{scope}' (no instance masks), so {named} has no sub-networks to compare; the "
        f"default ({spelled('influence_method', 'auto', flag='--influence')}: gauss-newton) scores such a run"
    )


def resolve_influence_method(scope: Scope, keep_prob: float, method: str) -> str:
    """The name of the estimator that ``method`` runs for a run of ``scope`` trained at ``keep_prob``
    (``exact`` or ``linear`` for ``auto``)."""
    return estimator_named(method).resolve(scope, keep_prob).name


@torch.no_grad()
def influence_blocks(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: Encoded,
    val_labels: np.ndarray,
    *,
    batch_size: int = 64,
    chunk_mib: int = 256,
    pair_batch: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    method: str = "turn-over",
    progress: Progress | None = None,
    processes: Processes | None = None,
    train_rows: Callable[[], Encoded] | None = None,
    train_labels: np.ndarray | None = None,
    other_train_rows: Callable[[], list[tuple[Encoded, np.ndarray]]] | None = None,
) -> Iterator[InfluenceBlock]:
    """The train x validation influence matrix, block by block, never whole in memory.

    ``method``: a registered estimator's name (``exact``: the sub-networks' losses; ``linear``: their
    first-order estimate from gate gradients; ``turn-over``, the default here: the measured choice of the
    two for the scope; ``auto``, the commands' default: ``gauss-newton``).
    With several ``processes`` every one of them must iterate; the training rows are the caller's to split.
    """
    estimator = estimator_named(method).resolve(model.scope, model.keep_prob)
    if not model.scope.masked and not estimator.applies_to(model.scope):
        raise ValueError("influence needs a run with instance masks (scope other than 'none')")
    if not estimator.applies_to(model.scope):
        raise ConfigError(f"influence method {estimator.name!r} does not apply to scope '{model.scope}'")
    model.eval()
    task = InfluenceTask(
        model,
        train_keys,
        val_encoded,
        val_labels,
        torch.device(device),
        batch_size=batch_size,
        chunk_mib=chunk_mib,
        pair_batch=pair_batch,
        amp_dtype=amp_dtype,
        progress=progress or NullProgress(),
        processes=processes,
        train_rows=train_rows,
        train_labels=train_labels,
        other_train_rows=other_train_rows,
    )
    yield from estimator.blocks(task)
