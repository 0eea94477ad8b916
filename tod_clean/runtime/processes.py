"""Several processes under ``accelerate launch``: who is who, how work is split, how results meet.

``accelerate launch --num_processes N -m tod_clean train ...`` starts N copies of the same command (one per
GPU; ``--multi_gpu`` with ``--device cpu`` starts N CPU processes that talk over gloo). Each copy builds a
``Processes`` from the launcher's environment; without a launcher (the ordinary case) it is the single
process, ``accelerate`` is not even imported, and every code path is the one-process one.

How the work is split, so that results do not depend on N:

- training: every process draws the same global batch order (seeded by seed and epoch only) and takes rows
  ``[index::count]`` of each global batch (``local_rows``); gradients are all-reduced by DDP;
- scoring: process K of N takes the block of rows ``--shard K/N`` would (``tod_clean.runtime.shard.Shard``), and the
  blocks are gathered in process order, so the gathered arrays are the one-process arrays.

Only the main process (index 0) writes files; the others compute and wait.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tod_clean.errors import ConfigError, TodCleanError, spelled
from tod_clean.runtime.shard import Shard

# Environment variables that launchers set to the number of processes (torchrun: WORLD_SIZE; mpirun,
# which accelerate uses for several CPU machines: the others).
_WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
# Bytes of an error message the main process shares with the others (longer messages are cut).
_MESSAGE_BYTES = 4096


class MainProcessError(TodCleanError):
    """Raised in the other processes when the main process failed: the main one reports it, they stay quiet."""


def _env_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    return default


def launched_count() -> int:
    """How many processes the launcher started (1 without a launcher); reads the environment only."""
    return max(1, _env_int(_WORLD_SIZE_VARIABLES, 1))


def is_main_process() -> bool:
    """Whether this is the main process (index 0) of a launch, or no launch at all; environment only."""
    return _env_int(_RANK_VARIABLES, 0) == 0


def local_rows(global_batch: np.ndarray, index: int, count: int) -> tuple[np.ndarray, int]:
    """Process ``index`` of ``count``'s rows of a global batch, and how many of them count.

    The rows are ``global_batch[index::count]``: striding (rather than cutting the batch in blocks) gives
    each process rows of every length in a length-sorted batch, so no process waits long for the slowest.
    A process left with no row (a global batch shorter than ``count``) runs the batch's first row counted
    zero times, so that it still joins the gradient all-reduce.
    """
    rows = global_batch[index::count]
    if len(rows) == 0:
        return global_batch[:1], 0
    return rows, len(rows)


@dataclass
class Processes:
    """This process's place among the ``count`` processes of a launch (``index`` 0 is the main one).

    ``accelerator`` is the ``accelerate.Accelerator`` when ``count > 1``, else None; ``device`` is the
    device the launcher gave this process (None: choose one as a single process would).
    """

    index: int = 0
    count: int = 1
    accelerator: Any = field(default=None, repr=False)
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def several(self) -> bool:
        return self.count > 1

    def rows(self, num_rows: int) -> tuple[int, int]:
        """``(start, stop)``: this process's block of ``num_rows`` rows (``--shard index/count``'s block)."""
        return Shard(self.index, self.count).rows(num_rows)

    def take(self, global_batch: np.ndarray) -> tuple[np.ndarray, int]:
        """This process's rows of a global training batch and how many count (see ``local_rows``)."""
        if not self.several:
            return global_batch, len(global_batch)
        return local_rows(global_batch, self.index, self.count)

    def wait(self) -> None:
        """Wait until every process gets here."""
        if self.several:
            self.accelerator.wait_for_everyone()

    def sum(self, values: list[float]) -> list[float]:
        """Each value summed over the processes (float64)."""
        if not self.several:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        return [float(v) for v in self.accelerator.reduce(tensor, reduction="sum").cpu()]

    def gather_rows(self, local: torch.Tensor, num_rows: int) -> torch.Tensor:
        """The blocks of rows of every process (see ``rows``), stacked in process order: ``[num_rows, ...]``
        on the CPU, in every process. ``local`` holds this process's block, ``[stop - start, ...]``."""
        if not self.several:
            return local.cpu()
        blocks = [Shard(index, self.count).rows(num_rows) for index in range(self.count)]
        sizes = [stop - start for start, stop in blocks]
        if local.shape[0] != sizes[self.index]:
            raise ValueError(
                f"process {self.index} holds {local.shape[0]} rows, expected {sizes[self.index]}"
            )
        width = max(sizes)
        padded = torch.zeros((width, *local.shape[1:]), dtype=local.dtype, device=self.device)
        padded[: local.shape[0]] = local.to(self.device)
        gathered = self.accelerator.gather(padded).cpu()  # [count * width, ...]
        return torch.cat([gathered[i * width : i * width + size] for i, size in enumerate(sizes)])

    def gather_all(self, local: torch.Tensor) -> torch.Tensor:
        """Every process's tensor of one shape, stacked: ``[count, *local.shape]`` on the CPU."""
        if not self.several:
            return local.cpu()[None]
        gathered = self.accelerator.gather(local.to(self.device).contiguous()[None])
        return gathered.cpu()

    def map_rows(self, num_rows: int, compute: Callable[[np.ndarray], torch.Tensor]) -> torch.Tensor:
        """``compute(rows)`` of all ``num_rows`` rows, each process computing its block: the rows stacked in
        order ``[num_rows, ...]`` on the CPU, in every process. One process: ``compute(all rows)``."""
        if not self.several:
            return compute(np.arange(num_rows))
        start, stop = self.rows(num_rows)
        return self.gather_rows(compute(np.arange(start, stop)), num_rows)

    def main_first(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` on the main process only, and make every process fail if it fails there.

        The main process raises its own exception; the others raise ``MainProcessError`` with its message
        (they print nothing: one process reports). Returns what ``work`` returned (None elsewhere).
        """
        if not self.several:
            return work()
        result, message = None, b""
        error: BaseException | None = None
        if self.is_main:
            try:
                result = work()
            except BaseException as caught:  # every failure, so the others never wait for a dead main
                error = caught
                message = (str(caught) or type(caught).__name__).encode("utf-8")[:_MESSAGE_BYTES]
                message = message or b"?"
        shared = self._broadcast_bytes(message)
        if error is not None:
            raise error
        if shared:
            raise MainProcessError(f"the main process failed: {shared.decode('utf-8', 'replace')}")
        return result

    def _broadcast_bytes(self, data: bytes) -> bytes:
        from accelerate.utils import broadcast

        buffer = torch.zeros(_MESSAGE_BYTES + 1, dtype=torch.int64, device=self.device)
        buffer[0] = len(data)
        if data:
            buffer[1 : 1 + len(data)] = torch.tensor(list(data), dtype=torch.int64)
        buffer = broadcast(buffer, from_process=0).cpu()
        return bytes(buffer[1 : 1 + int(buffer[0])].tolist())

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to train through: DDP (gradients all-reduced at each backward) when several, else
        ``model`` itself. The optimizer and scheduler stay tod-clean's own: accelerate's prepared
        scheduler would step once per process."""
        if not self.several:
            return model
        return self.accelerator.prepare_model(model, device_placement=False)

    def no_sync(self, model: torch.nn.Module) -> Any:
        """A context in which backward passes accumulate gradients without all-reducing them."""
        from contextlib import nullcontext

        if not self.several:
            return nullcontext()
        return self.accelerator.no_sync(model)


_launched: Processes | None = None


def current_processes(device: str = "auto") -> Processes:
    """This process's ``Processes``, from the launcher's environment (one process without a launcher).

    Under several processes, ``device`` ``cpu`` (or no CUDA) makes them CPU processes talking over gloo;
    ``auto`` or ``cuda`` gives each process its own GPU. A numbered device (``cuda:1``) is refused: the
    launcher decides which GPU each process gets.
    """
    global _launched
    if launched_count() <= 1:
        return Processes()
    if _launched is not None:
        return _launched
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(
            f"{spelled('device', device)}: under accelerate launch each process takes its own GPU; "
            f"use {spelled('device')} auto, cuda or cpu"
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{spelled('device')} {device!r} asked for, but CUDA is not available on this machine"
        )
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator = Accelerator(
        cpu=device == "cpu" or not torch.cuda.is_available(),
        # tod-clean autocasts itself (--precision); the launcher's --mixed_precision must not add another
        mixed_precision="no",
        # parameters outside the loss (an encoder's pooler, frozen layers) get no gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    _launched = Processes(
        index=accelerator.process_index,
        count=accelerator.num_processes,
        accelerator=accelerator,
        device=torch.device(accelerator.device),
    )
    return _launched
