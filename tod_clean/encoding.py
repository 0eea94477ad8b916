"""Tokenised rows, dynamic padding, and batch orders that keep padding small.

Token ids are kept flat (row ``i`` is ``token_ids[offsets[i]:offsets[i + 1]]``) in files that are
memory-mapped, not in Python lists: texts are tokenised ``ENCODE_CHUNK`` rows at a time, straight to disk.
The training rows' tokens are kept in the run directory (``tokens/``), so ``score`` reads them instead of
tokenising again; other texts go to a temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tod_clean.errors import InputError
from tod_clean.io.paths import write_failure
from tod_clean.io.table import ColumnView

ENCODE_CHUNK = 1024  # rows tokenised at a time (a tokenizer holds ~5 KiB per row of a batch)
TOKENS_FORMAT = 1  # of the cached token files; a new format never reads an old one

# The files a tokenizer's vocabulary is read from, for messages (any one suffices).
TOKENIZER_FILES = "tokenizer.json, vocab.txt, vocab.json with merges.txt, or a SentencePiece *.model"


def empty_vocabulary(tokenizer: Any) -> int | None:
    """The size of a tokenizer's vocabulary when it holds nothing but special tokens, else None.

    transformers builds such a tokenizer, without a word of error, from a model folder that has no
    tokenizer files: every word then becomes ``[UNK]`` and the classifier learns from nothing.
    """
    vocabulary = tokenizer.get_vocab()
    if set(vocabulary) - set(tokenizer.all_special_tokens):
        return None
    return len(vocabulary)


@dataclass
class EncodedRows:
    """Token ids of N rows, unpadded and flat: row ``i`` is ``token_ids[offsets[i]:offsets[i + 1]]``.

    ``token_ids``: int32 ``[T]`` (may be memory-mapped); ``offsets``: int64 ``[N + 1]``;
    ``token_type_ids``: int32 ``[T]``, or None when every one is 0; ``has_token_types``: whether the
    tokenizer gives token type ids (batches then carry them, zeros included).
    """

    token_ids: np.ndarray
    offsets: np.ndarray
    token_type_ids: np.ndarray | None
    pad_id: int
    has_token_types: bool = False

    @classmethod
    def from_lists(
        cls, input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]] | None, pad_id: int
    ) -> EncodedRows:
        """Rows from per-row lists of ids (and token type ids), as a tokenizer returns them."""
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.fromiter(chain.from_iterable(input_ids), dtype=np.int32, count=int(offsets[-1]))
        types = None
        if token_type_ids is not None:
            types = np.fromiter(chain.from_iterable(token_type_ids), dtype=np.int32, count=int(offsets[-1]))
            types = types if types.any() else None
        return cls(flat, offsets, types, pad_id, token_type_ids is not None)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, index: int) -> list[int]:
        """The token ids of one row."""
        return self.token_ids[self.offsets[index] : self.offsets[index + 1]].tolist()

    def between(self, start: int, stop: int) -> EncodedRows:
        """Rows ``start .. stop - 1``, sharing this one's arrays."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        types = None if self.token_type_ids is None else self.token_type_ids[first:last]
        return EncodedRows(
            self.token_ids[first:last],
            self.offsets[start : stop + 1] - first,
            types,
            self.pad_id,
            self.has_token_types,
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedRows:
        """The rows at ``indices``, in that order (copied into memory)."""
        rows = np.asarray(indices, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        types = None if self.token_type_ids is None else np.asarray(self.token_type_ids[positions])
        return EncodedRows(
            np.asarray(self.token_ids[positions]), offsets, types, self.pad_id, self.has_token_types
        )

    def batch(
        self, indices: Sequence[int] | np.ndarray, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Padded tensors for the rows at ``indices``: input_ids / attention_mask (/ token_type_ids)
        of shape ``[B, T]`` int64, with T the longest row in the batch."""
        rows = np.asarray(indices, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        positions = (starts[:, None] + np.arange(width)[None, :])[mask]  # row-major, as mask fills
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        input_ids[mask] = self.token_ids[positions]
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }
        if self.has_token_types:
            token_types = np.zeros((len(rows), width), dtype=np.int64)
            if self.token_type_ids is not None:
                token_types[mask] = self.token_type_ids[positions]
            batch["token_type_ids"] = torch.from_numpy(token_types)
        return {name: tensor.to(device) for name, tensor in batch.items()}


# ---- tokenising to files ------------------------------------------------------------------------------


class _TokenFiles:
    """Token ids appended chunk by chunk to files in ``folder``, then memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ids = open(folder / "ids.bin", "wb")  # noqa: SIM115 - closed in finish()
        self.types = open(folder / "types.bin", "wb")  # noqa: SIM115
        self.lengths: list[np.ndarray] = []
        self.tokens = 0
        self.has_types = False
        self.nonzero_types = False

    def add(self, input_ids: list[list[int]], token_type_ids: list[list[int]] | None) -> None:
        lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
        count = int(lengths.sum())
        self.ids.write(np.fromiter(chain.from_iterable(input_ids), dtype=np.int32, count=count).tobytes())
        if token_type_ids is not None:
            self.has_types = True
            types = np.fromiter(chain.from_iterable(token_type_ids), dtype=np.int32, count=count)
            self.nonzero_types = self.nonzero_types or bool(types.any())
            self.types.write(types.tobytes())
        self.lengths.append(lengths)
        self.tokens += count

    def finish(self, pad_id: int) -> dict[str, Any]:
        """Close the files and write ``offsets.npy`` and ``meta.json``; returns the meta."""
        self.ids.close()
        self.types.close()
        if not self.nonzero_types:
            (self.folder / "types.bin").unlink()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, dtype=np.int64)
        np.save(self.folder / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        meta = {
            "format": TOKENS_FORMAT,
            "rows": len(lengths),
            "tokens": self.tokens,
            "has_token_types": self.has_types,
            "nonzero_token_types": self.nonzero_types,
            "pad_id": pad_id,
        }
        (self.folder / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        return meta

    def abort(self) -> None:
        self.ids.close()
        self.types.close()


def _load(folder: Path, rows: int | None = None) -> EncodedRows:
    """Memory-map the token files in ``folder`` (ValueError/OSError when they are not whole)."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta.get("format") != TOKENS_FORMAT or (rows is not None and meta["rows"] != rows):
        raise ValueError("not these rows' tokens")
    offsets = np.load(folder / "offsets.npy", allow_pickle=False)
    tokens = int(meta["tokens"])
    if offsets.shape != (meta["rows"] + 1,) or int(offsets[-1]) != tokens:
        raise ValueError("offsets do not match")

    def mapped(name: str) -> np.ndarray:
        if (folder / name).stat().st_size != 4 * tokens:
            raise ValueError(f"{name} is not whole")
        return (
            np.memmap(folder / name, dtype=np.int32, mode="r", shape=(tokens,))
            if tokens
            else np.zeros(0, np.int32)
        )

    types = mapped("types.bin") if meta["nonzero_token_types"] else None
    return EncodedRows(mapped("ids.bin"), offsets, types, int(meta["pad_id"]), bool(meta["has_token_types"]))


def _chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    iterator = iter(values)
    while chunk := list(islice(iterator, ENCODE_CHUNK)):
        yield chunk


def _tokenize(
    tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None, max_length: int, folder: Path
) -> dict[str, Any]:
    files = _TokenFiles(folder)
    try:
        pairs = _chunks(text_pairs) if text_pairs is not None else None
        for chunk in _chunks(texts):
            encoded = tokenizer(
                chunk,
                next(pairs) if pairs is not None else None,
                truncation=True,
                max_length=max_length,
                padding=False,
                return_attention_mask=False,
            )
            files.add(encoded["input_ids"], encoded.get("token_type_ids"))
        for _ in pairs or ():  # read to the end: a pass over the whole file checks it did not change
            pass
    except BaseException:
        files.abort()
        raise
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return files.finish(0 if pad_id is None else int(pad_id))


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A sha256 of everything that decides a fast tokenizer's output; None for other tokenizers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    import tokenizers
    import transformers

    identity = [
        type(tokenizer).__name__,
        getattr(tokenizer, "truncation_side", None),
        transformers.__version__,
        tokenizers.__version__,
        backend.to_str(),
    ]
    return hashlib.sha256(json.dumps(identity).encode("utf-8")).hexdigest()


def _cache_key(
    tokenizer: Any, texts: Sequence[str], text_pairs: Sequence[str] | None, max_length: int
) -> str | None:
    """The cache entry of the whole columns ``texts`` and ``text_pairs`` come from (None: not cachable)."""
    if not isinstance(texts, ColumnView):
        return None
    if text_pairs is not None and not (
        isinstance(text_pairs, ColumnView)
        and text_pairs.table is texts.table
        and (text_pairs.start, text_pairs.stop) == (texts.start, texts.stop)
    ):
        return None
    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return None
    identity = {
        "format": TOKENS_FORMAT,
        "rows": texts.table.sha256,
        "text": texts.name,
        "pair": None if text_pairs is None else text_pairs.name,
        "max_length": max_length,
        "tokenizer": fingerprint,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def encode_texts(
    tokenizer: object,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None,
    max_length: int,
    *,
    cache_dir: Path | None = None,
    write_cache: bool = False,
) -> EncodedRows:
    """Tokenise once, truncating to ``max_length`` tokens; padding happens per batch.

    ``texts`` (and ``text_pairs``) are read ``ENCODE_CHUNK`` at a time and their token ids written to
    memory-mapped files. With ``cache_dir`` (a run's ``tokens/``), tokens of the same column of the same
    rows, tokenizer and ``max_length`` are read from there; with ``write_cache`` too, tokens of a whole
    column are kept there (the entry replaces any other).
    """
    key = _cache_key(tokenizer, texts, text_pairs, max_length) if cache_dir is not None else None
    if key is not None:
        assert cache_dir is not None and isinstance(texts, ColumnView)
        whole = len(texts.table)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return _load(cache_dir / key, whole).between(texts.start, texts.stop)
        if write_cache and (texts.start, texts.stop) == (0, whole):
            return _encode_into_cache(tokenizer, texts, text_pairs, max_length, cache_dir, key)
    folder = Path(tempfile.mkdtemp(prefix="tod-clean-tokens-"))
    try:
        _tokenize(tokenizer, texts, text_pairs, max_length, folder)
        encoded = _load(folder)
    except OSError as error:
        reason = write_failure(error)
        if reason is None:
            raise
        raise InputError(
            f"{folder.parent}: cannot write the token ids of {len(texts)} rows there ({reason}); free space "
            "or set TMPDIR to another folder"
        ) from None
    finally:
        # The mapped files stay readable once unlinked (POSIX); where they cannot be removed while mapped,
        # they are removed when the rows are freed.
        shutil.rmtree(folder, ignore_errors=True)
    if folder.exists():
        weakref.finalize(encoded, shutil.rmtree, folder, True)
    return encoded


def _encode_into_cache(
    tokenizer: Any,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None,
    max_length: int,
    cache_dir: Path,
    key: str,
) -> EncodedRows:
    """Tokenise into a temporary folder in ``cache_dir`` and rename it to ``key`` when complete; other
    entries are removed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(cache_dir / key, ignore_errors=True)  # an entry that did not load
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir))
    try:
        _tokenize(tokenizer, texts, text_pairs, max_length, staging)
        with contextlib.suppress(OSError):  # another process finished the same entry first: keep theirs
            os.replace(staging, cache_dir / key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for entry in cache_dir.iterdir():
        if entry.name != key and not entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
    return _load(cache_dir / key, len(texts))


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
