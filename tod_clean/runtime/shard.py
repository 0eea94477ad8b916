"""Block K of N of the training rows: what ``score --shard K/N`` scores, and what process K of N takes
under ``accelerate launch`` (``tod_clean.runtime.processes``).

Shards are counted from 0 (``--shard 0/4`` .. ``--shard 3/4``, as ``$SLURM_ARRAY_TASK_ID`` counts with
``--array=0-3``); shard K of N holds rows ``[K*R//N, (K+1)*R//N)`` of the R training rows. A part (the
scores of one shard, a Parquet file) records its shard under ``SHARD_KEY`` (``shard_record``);
``tod_clean.merge`` reads the parts back and puts them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tod_clean.errors import ConfigError

# The DataFrame.attrs key (kept in Parquet schema metadata) describing the shard a part holds.
SHARD_KEY = "tod_clean_shard"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): one contiguous block of training rows."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with 0 <= K < N."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise ConfigError(
                f"--shard must be K/N with whole numbers, shards counted from 0 (0/4 .. 3/4), got {text!r}"
            )
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1:
            raise ConfigError(f"--shard {text}: the number of shards must be 1 or more")
        if index >= count:
            raise ConfigError(f"--shard {text}: shards are counted from 0, so K must be 0 to {count - 1}")
        return cls(index, count)

    def rows(self, num_rows: int) -> tuple[int, int]:
        """``(start, stop)``: the block of ``num_rows`` training rows this shard holds."""
        return self.index * num_rows // self.count, (self.index + 1) * num_rows // self.count

    def check_rows(self, num_rows: int) -> tuple[int, int]:
        """``rows(num_rows)``, refusing a shard that would hold no rows (more shards than rows)."""
        start, stop = self.rows(num_rows)
        if start == stop:
            raise ConfigError(
                f"--shard {self}: {num_rows} training rows leave this shard no rows; use at most {num_rows} shards"
            )
        return start, stop

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_record(shard: Shard, num_rows: int, meta: dict[str, Any]) -> dict[str, Any]:
    """What a part records about itself (besides the scores origin): the shard, its rows, what scored it."""
    start, stop = shard.rows(num_rows)
    return {"index": shard.index, "count": shard.count, "start": start, "stop": stop, "meta": meta}
