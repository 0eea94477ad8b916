"""Tokenised rows, dynamic padding, and batch orders that keep padding small."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class EncodedRows:
    """Token ids of N rows, unpadded. ``token_type_ids`` is None for tokenizers that have none."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedRows:
        """The rows at ``indices``, in that order."""
        token_types = None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices]
        return EncodedRows([self.input_ids[i] for i in indices], token_types, self.pad_id)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def batch(
        self, indices: Sequence[int] | np.ndarray, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Padded tensors for the rows at ``indices``: input_ids / attention_mask (/ token_type_ids)
        of shape ``[B, T]`` int64, with T the longest row in the batch."""
        width = max(len(self.input_ids[i]) for i in indices)
        input_ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
        token_types = torch.zeros((len(indices), width), dtype=torch.long) if self.token_type_ids else None
        for row, index in enumerate(indices):
            ids = self.input_ids[index]
            input_ids[row, : len(ids)] = torch.as_tensor(ids)
            attention_mask[row, : len(ids)] = 1
            if token_types is not None and self.token_type_ids is not None:
                token_types[row, : len(ids)] = torch.as_tensor(self.token_type_ids[index])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_types is not None:
            batch["token_type_ids"] = token_types
        return {name: tensor.to(device) for name, tensor in batch.items()}


def encode_texts(
    tokenizer: object,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None,
    max_length: int,
) -> EncodedRows:
    """Tokenise once, truncating to ``max_length`` tokens; padding happens per batch."""
    encoded = tokenizer(  # type: ignore[operator]
        list(texts),
        list(text_pairs) if text_pairs is not None else None,
        truncation=True,
        max_length=max_length,
        padding=False,
    )
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return EncodedRows(
        input_ids=encoded["input_ids"],
        token_type_ids=encoded.get("token_type_ids"),
        pad_id=0 if pad_id is None else int(pad_id),
    )


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """A shuffled epoch whose batches hold rows of similar length (less padding, same randomness).

    Rows are shuffled, cut into groups of 50 batches, sorted by length inside each group, cut into batches,
    and the batches shuffled again. The order depends only on ``(seed, epoch)``, so a resumed run
    sees the same batches.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    group = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Inference batches of rows sorted by length (longest first), to minimise padding."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def window_batches(lengths: np.ndarray, batch_size: int, window: int) -> list[np.ndarray]:
    """Inference batches sorted by length inside fixed windows of ``window`` rows (0..window-1, ...).

    A batch's rows, order and padding depend only on its window, so any span of whole windows is batched
    exactly as it is inside all the rows: a shard or a process that scores the windows around its rows
    computes them bit for bit as one process scoring everything does (a matrix product's rounding depends
    on the batch it runs in).
    """
    batches: list[np.ndarray] = []
    for start in range(0, len(lengths), window):
        rows = np.arange(start, min(start + window, len(lengths)))
        rows = rows[np.argsort(-lengths[rows], kind="stable")]
        batches.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
    return batches
