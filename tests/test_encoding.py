"""Token ids kept flat in memory-mapped files: the same ids and batches as the tokenizer's own lists, and
the training rows' tokens kept in the run directory for score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tod_clean.encoding as encoding
from tests.conftest import NEGATIVE, POSITIVE, make_rows, write_rows
from tod_clean.config import DataColumns, TrainConfig
from tod_clean.encoding import EncodedRows, encode_texts
from tod_clean.io.columns import check_texts
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import TOKENS_DIR, RunDir
from tod_clean.score import score_run
from tod_clean.training.loop import train

TEXTS = POSITIVE + NEGATIVE + ["word " * 40]  # the last one is truncated
PAIRS = list(reversed(TEXTS))


def naive_batch(
    tokenizer: Any, texts: list[str], pairs: list[str] | None, rows: list[int]
) -> dict[str, torch.Tensor]:
    """What the list-based encoding built: each row tokenised alone, padded with the pad id."""
    encoded = [
        tokenizer(texts[i], pairs[i] if pairs else None, truncation=True, max_length=16, padding=False)
        for i in rows
    ]
    width = max(len(e["input_ids"]) for e in encoded)
    batch = {
        "input_ids": torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
        "token_type_ids": torch.zeros((len(rows), width), dtype=torch.long),
    }
    for row, e in enumerate(encoded):
        batch["input_ids"][row, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        batch["attention_mask"][row, : len(e["input_ids"])] = 1
        batch["token_type_ids"][row, : len(e["input_ids"])] = torch.tensor(e["token_type_ids"])
    return batch


@pytest.mark.parametrize("with_pairs", [False, True])
def test_flat_rows_give_the_tokenizers_ids_and_batches(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch, with_pairs: bool
) -> None:
    monkeypatch.setattr(encoding, "ENCODE_CHUNK", 3)  # chunk edges inside the rows
    pairs = PAIRS if with_pairs else None
    encoded = encode_texts(tokenizer, TEXTS, pairs, 16)
    assert len(encoded) == len(TEXTS)
    for i, text in enumerate(TEXTS):
        expected = tokenizer(text, pairs[i] if pairs else None, truncation=True, max_length=16)["input_ids"]
        assert encoded.row(i) == expected
    assert encoded.lengths.max() == 16
    assert (encoded.token_type_ids is not None) == with_pairs  # all-zero token types are not stored
    for rows in ([0], [3, 1, 40], list(range(len(TEXTS)))[::-1]):
        got, expected = encoded.batch(rows), naive_batch(tokenizer, TEXTS, pairs, rows)
        assert got.keys() == expected.keys()
        for name in expected:
            assert got[name].dtype == torch.long and torch.equal(got[name], expected[name]), name
    subset = encoded.subset([5, 2, 5])
    assert [subset.row(i) for i in range(3)] == [encoded.row(5), encoded.row(2), encoded.row(5)]
    part = encoded.between(4, 9)
    assert [part.row(i) for i in range(5)] == [encoded.row(i) for i in range(4, 9)]
    assert torch.equal(part.batch([0, 4])["input_ids"], encoded.batch([4, 8])["input_ids"])


def test_from_lists_matches_encode_texts(tokenizer: Any) -> None:
    lists = tokenizer(TEXTS, PAIRS, truncation=True, max_length=16)
    from_lists = EncodedRows.from_lists(lists["input_ids"], lists["token_type_ids"], tokenizer.pad_token_id)
    encoded = encode_texts(tokenizer, TEXTS, PAIRS, 16)
    for name, tensor in encoded.batch(range(len(TEXTS))).items():
        assert torch.equal(from_lists.batch(range(len(TEXTS)))[name], tensor)


def test_column_tokens_are_cached_and_reused(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = read_table(str(write_rows(tmp_path / "train.jsonl", make_rows(30))))
    texts = check_texts(table, "text")
    cache = tmp_path / "tokens"
    first = encode_texts(tokenizer, texts, None, 16, cache_dir=cache, write_cache=True)
    entries = [p.name for p in cache.iterdir()]
    assert len(entries) == 1 and (cache / entries[0] / "meta.json").is_file()

    def no_tokenizing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tokenised again")

    monkeypatch.setattr(encoding, "_tokenize", no_tokenizing)
    again = encode_texts(tokenizer, texts, None, 16, cache_dir=cache)
    assert isinstance(again.token_ids, np.memmap)
    assert [again.row(i) for i in range(30)] == [first.row(i) for i in range(30)]
    block = encode_texts(tokenizer, texts[10:20], None, 16, cache_dir=cache)  # a shard's rows
    assert [block.row(i) for i in range(10)] == [first.row(i) for i in range(10, 20)]
    with pytest.raises(AssertionError, match="tokenised again"):
        encode_texts(tokenizer, texts, None, 12, cache_dir=cache)  # another max length
    with pytest.raises(AssertionError, match="tokenised again"):
        encode_texts(tokenizer, list(texts), None, 16, cache_dir=cache)  # not a table's column
    other = read_table(str(write_rows(tmp_path / "other.jsonl", make_rows(30, offset=1))))
    with pytest.raises(AssertionError, match="tokenised again"):
        encode_texts(tokenizer, check_texts(other, "text"), None, 16, cache_dir=cache)  # other rows


def test_a_damaged_cache_entry_is_tokenised_again(tokenizer: Any, tmp_path: Path) -> None:
    table = read_table(str(write_rows(tmp_path / "train.jsonl", make_rows(12))))
    texts = check_texts(table, "text")
    cache = tmp_path / "tokens"
    first = encode_texts(tokenizer, texts, None, 16, cache_dir=cache, write_cache=True)
    expected = [first.row(i) for i in range(12)]
    (entry,) = cache.iterdir()
    with open(entry / "ids.bin", "r+b") as handle:
        handle.truncate(8)
    again = encode_texts(tokenizer, texts, None, 16, cache_dir=cache, write_cache=True)
    assert [again.row(i) for i in range(12)] == expected


def test_score_reads_the_tokens_training_kept(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_rows(tmp_path / "train.jsonl", make_rows(16))
    config = TrainConfig(
        model=str(tiny_model_dir),
        columns=DataColumns(id_col="id"),
        epochs=1,
        batch_size=4,
        max_length=16,
        device="cpu",
    )
    run = RunDir(tmp_path / "run")
    train(config, read_table(str(data)), run, train_path=str(data))
    meta = json.loads(next((run.path / TOKENS_DIR).glob("*/meta.json")).read_text())
    assert meta["rows"] == 16
    scored = score_run(run, read_table(str(data)))
    monkeypatch.setattr(
        encoding, "_tokenize", lambda *a, **k: pytest.fail("score tokenised the training rows again")
    )
    again = score_run(run, read_table(str(data)))
    assert np.array_equal(again.frame["full_loss"], scored.frame["full_loss"])
    assert list(again.frame["id"]) == [row["id"] for row in make_rows(16)]
