"""Checks of the columns tod-clean reads: a missing column lists those found; bad texts, labels and ids are
named by row, line and column."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tod_clean.config import DataColumns
from tod_clean.errors import InputError
from tod_clean.instances import instances_from_table
from tod_clean.io.columns import check_ids, check_labels, check_texts
from tod_clean.io.inputs import read_table


def test_missing_column_lists_columns_found(data_file: Callable[..., Path]) -> None:
    table = read_table(str(data_file("train.csv")))
    with pytest.raises(InputError, match=r"column 'sentence' not found; columns found: id, text, label"):
        instances_from_table(table, DataColumns(text_col="sentence"), ["negative", "positive"])
    with pytest.raises(InputError, match=r"column 'y' not found; columns found: id, text, label"):
        instances_from_table(table, DataColumns(label_col="y"), ["negative", "positive"])
    with pytest.raises(InputError, match=r"column 'key' not found"):
        instances_from_table(table, DataColumns(id_col="key"), ["negative", "positive"])


def test_empty_text_names_row_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('text,label\nfine,x\n"   ",y\n', encoding="utf-8")
    table = read_table(str(path))
    with pytest.raises(InputError, match=r"train\.csv: row 1 \(line 3\), column 'text': empty text"):
        check_texts(table, "text")


@pytest.mark.parametrize(
    ("value", "shown"), [(5, "int 5"), (None, "missing"), (["a"], "list"), (True, "bool")]
)
def test_non_string_text(tmp_path: Path, value: object, shown: str) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"text": "ok", "label": "x"}, {"text": value, "label": "y"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError, match=rf"row 1 \(line 2\), column 'text': expected text, found {shown}"):
        check_texts(read_table(str(path)), "text")


@pytest.mark.parametrize("value", [None, "", "  ", 1.5, True, [1], float("nan")])
def test_bad_label(tmp_path: Path, value: object) -> None:
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps([{"text": "a", "label": "x"}, {"text": "b", "label": value}]), encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"train\.json: row 1, column 'label': expected a class label"):
        check_labels(read_table(str(path)), "label")


def test_missing_label_key_in_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"row 1 \(line 2\), column 'label': expected a class label .*None"):
        check_labels(read_table(str(path)), "label")


def test_labels_int_and_text_forms_match(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 1.0}\n{"text": "c", "label": "1"}\n')
    assert check_labels(read_table(str(path)), "label") == ["1", "1", "1"]


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", "b", "a"], r"row 2 \(line 4\), column 'id': duplicate id 'a' \(also at row 0\)"),
        (["1", "2", ""], r"row 2 \(line 4\), column 'id': missing id"),
    ],
)
def test_bad_ids(tmp_path: Path, ids: list[str], message: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,text,label\n" + "".join(f"{i},t{n},x\n" for n, i in enumerate(ids)), encoding="utf-8")
    with pytest.raises(InputError, match=message):
        check_ids(read_table(str(path)), "id")


def test_duplicate_ids_across_int_and_text(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": 1, "text": "a", "label": "x"}\n{"id": "1", "text": "b", "label": "y"}\n')
    with pytest.raises(InputError, match="duplicate id '1'"):
        check_ids(read_table(str(path)), "id")
