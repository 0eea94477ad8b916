"""Parquet files: rows decoded from their row groups a batch at a time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError
from tod_clean.io.columns import check_header
from tod_clean.io.formats.base import FileFormat
from tod_clean.io.rows import CHUNK, Bytes, FileBytes, LazyRows, is_ascending
from tod_clean.io.table import Table


def read_parquet(source: str, data: Bytes) -> Table:
    if isinstance(data, FileBytes):
        data.verify()  # one pass over the bytes: the sha256
    try:
        with data.parquet() as parquet:
            columns = list(parquet.schema_arrow.names)
            groups = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            for _ in parquet.iter_batches(
                batch_size=CHUNK
            ):  # decode every page now: a damaged file fails here
                pass
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{source}: not a readable Parquet file ({error})") from None
    check_header(source, columns, None)
    assert data.sha256 is not None
    return Table(source, "parquet", columns, ParquetRows(data, groups), data.sha256)


class ParquetRows(LazyRows):
    """Rows of a Parquet file, decoded a batch at a time."""

    def __init__(self, source: Bytes, row_groups: list[int]) -> None:
        self.source = source
        self.group_starts = np.concatenate([[0], np.cumsum(row_groups, dtype=np.int64)])
        self.length = int(self.group_starts[-1])

    def _batches(self, start: int, stop: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Record batches covering rows ``start .. stop - 1`` exactly."""
        if start >= stop:
            return
        first = int(np.searchsorted(self.group_starts, start, side="right")) - 1
        last = int(np.searchsorted(self.group_starts, stop - 1, side="right")) - 1
        with self.source.parquet() as parquet:
            position = int(self.group_starts[first])
            groups = list(range(first, last + 1))
            for batch in parquet.iter_batches(batch_size=CHUNK, row_groups=groups, columns=columns):
                end = position + batch.num_rows
                if end > start and position < stop:
                    yield batch.slice(max(start - position, 0), min(stop, end) - max(start, position))
                position = end

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for batch in self._batches(start, stop, None):
            yield batch.to_pylist()

    def values(self, name: str, start: int, stop: int) -> Iterator[Any]:
        for batch in self._batches(start, stop, [name]):
            yield from batch.column(0).to_pylist()

    def write(self, indices: np.ndarray, handle: BinaryIO) -> None:
        """The rows at ``indices`` (in that order) as a Parquet file, with the schema of this one."""
        with self.source.parquet() as parquet:
            writer = pq.ParquetWriter(handle, parquet.schema_arrow)
            if not is_ascending(indices):
                writer.write_table(parquet.read().take(pa.array(indices)))
            else:
                pending: list[pa.RecordBatch] = []
                position, j = 0, 0
                for batch in parquet.iter_batches(batch_size=CHUNK):
                    end = position + batch.num_rows
                    k = int(np.searchsorted(indices, end))
                    if k > j:
                        pending.append(batch.take(pa.array(indices[j:k] - position)))
                        j = k
                    position = end
                    if sum(b.num_rows for b in pending) >= 16 * CHUNK:
                        writer.write_table(pa.Table.from_batches(pending, parquet.schema_arrow))
                        pending = []
                if pending:
                    writer.write_table(pa.Table.from_batches(pending, parquet.schema_arrow))
            writer.close()
        self.source.verify()


PARQUET = FileFormat("parquet", ".parquet", read_parquet)
