"""Combining influence blocks: their sums into the ``influence`` column, the ``[N, V]`` matrix file written
block by block, and the matrix of several processes gathered into one file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap

from tod_clean.influence.base import influence_blocks
from tod_clean.io.paths import atomic_output
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.processes import Processes
from tod_clean.runtime.shard import Shard


@contextmanager
def matrix_writer(path: str | Path | None, shape: tuple[int, int]) -> Iterator[np.ndarray | None]:
    """A float32 .npy memory map written to a temporary file and renamed when complete."""
    if path is None:
        yield None
        return
    with atomic_output(path) as tmp:
        matrix = open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        yield matrix
        matrix.flush()
        del matrix


def influence(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: Encoded,
    val_labels: np.ndarray,
    *,
    matrix_path: str | Path | None = None,
    **options: Any,
) -> np.ndarray:
    """Influence of each training instance on the validation set: float64 ``[N]``.

    ``influence[i] = mean_v L(hidden_i, v) - L(exposed_i, v)``. With ``matrix_path``, the whole
    ``[N, V]`` float32 matrix of per-pair values is written there as ``.npy``. ``options`` are those of
    ``influence_blocks``.
    """
    totals = np.zeros(len(train_keys), dtype=np.float64)
    with matrix_writer(matrix_path, (len(train_keys), len(val_encoded))) as matrix:
        for block in influence_blocks(model, train_keys, val_encoded, val_labels, **options):
            rows = slice(block.train_start, block.train_start + block.values.shape[0])
            totals[rows] += block.sums()
            if matrix is not None:
                matrix[rows, block.val_index] = block.values.cpu().numpy()
    return totals / len(val_encoded)


# Bytes of the influence matrix gathered from all processes at a time (per process, in memory).


_GATHER_BYTES = 64 * 2**20


def gather_matrix(
    processes: Processes, local_path: Path | None, path: str | Path, num_rows: int, num_val: int
) -> None:
    """Write the ``[num_rows, num_val]`` float32 matrix to ``path`` on the main process, from the row
    blocks of every process (``local_path``: this process's ``[stop - start, num_val]`` .npy, None when
    it holds no rows), a slice of rows of each process at a time."""
    blocks = [Shard(index, processes.count).rows(num_rows) for index in range(processes.count)]
    local = (
        np.load(local_path, mmap_mode="r")
        if local_path is not None
        else np.zeros((0, num_val), dtype=np.float32)
    )
    width = max(stop - start for start, stop in blocks)
    chunk = max(1, _GATHER_BYTES // max(1, num_val * 4 * processes.count))
    writer = matrix_writer(path, (num_rows, num_val)) if processes.is_main else nullcontext(None)
    with writer as matrix:
        for offset in range(0, width, chunk):
            size = min(chunk, width - offset)  # rows of this slice, the same in every process
            part = torch.zeros((size, num_val), dtype=torch.float32)
            mine = np.array(local[offset : offset + size], dtype=np.float32)  # a copy, out of the map
            part[: len(mine)] = torch.from_numpy(mine)
            gathered = processes.gather_all(part).numpy()  # [count, size, num_val]
            if matrix is None:
                continue
            for index, (start, stop) in enumerate(blocks):
                rows = max(0, min(size, stop - start - offset))
                matrix[start + offset : start + offset + rows] = gathered[index, :rows]
