"""Instances: label lists and instance keys built from validated tables."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from tod_clean.config import DataColumns
from tod_clean.errors import InputError
from tod_clean.instances import instances_from_table, label_ids, training_labels
from tod_clean.io.inputs import read_table
from tod_clean.masks import key_from_id


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_text_labels_sorted_and_indexed(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "t.csv", "text,label\na,pos\nb,neg\nc,pos\n"))
    labels = training_labels(table, "label")
    assert labels == ["neg", "pos"]
    assert label_ids(table, "label", labels).tolist() == [1, 0, 1]


def test_integer_labels_sorted_numerically(tmp_path: Path) -> None:
    table = read_table(
        write(
            tmp_path / "t.jsonl",
            "".join(f'{{"text": "t{i}", "label": {v}}}\n' for i, v in enumerate([10, 2, -1, 2])),
        )
    )
    labels = training_labels(table, "label")
    assert labels == [-1, 2, 10]
    assert label_ids(table, "label", labels).tolist() == [2, 1, 0, 1]


def test_zero_padded_numeric_labels_can_be_trained_on(tmp_path: Path) -> None:
    """Class codes such as 01/02/10 in a CSV: the label list must index the table's own labels."""
    table = read_table(write(tmp_path / "codes.csv", "text,label\na,01\nb,02\nc,10\nd,02\n"))
    labels = training_labels(table, "label")
    assert len(labels) == 3
    ids = label_ids(table, "label", labels)  # the training table's labels are all known
    assert len(set(ids.tolist())) == 3
    assert ids[1] == ids[3]


def test_one_label_is_refused(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "t.csv", "text,label\na,pos\nb,pos\n"))
    with pytest.raises(InputError, match=r"t\.csv, column 'label': found only one label \('pos'\)"):
        training_labels(table, "label")


def test_unknown_label_names_row_and_labels(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "val.csv", "text,label\na,pos\nb,maybe\n"))
    with pytest.raises(
        InputError,
        match=r"val\.csv: row 1 \(line 3\), column 'label': label 'maybe' was not in "
        r"the training data \(labels: neg, pos\)",
    ):
        label_ids(table, "label", ["neg", "pos"])


def test_instance_keys_rows_or_ids(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "t.csv", "id,text,label\nx1,a,pos\n7,b,neg\n"))
    by_row = instances_from_table(table, DataColumns(), ["neg", "pos"])
    assert by_row.instance_keys.tolist() == [0, 1] and by_row.ids is None
    by_id = instances_from_table(table, DataColumns(id_col="id"), ["neg", "pos"])
    assert by_id.instance_keys.dtype == np.int64
    assert by_id.instance_keys.tolist() == [key_from_id("x1"), key_from_id(7)]
    assert by_id.ids == ["x1", "7"]
    assert by_id.labels.tolist() == [1, 0]
    unlabeled = instances_from_table(table, DataColumns(label_col="missing"), None)
    assert unlabeled.labels.tolist() == [-1, -1]


def test_text_pairs(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "t.tsv", "q\tp\tlabel\nwho?\tme\t1\nwhy?\tso\t0\n"))
    inst = instances_from_table(table, DataColumns(text_col="q", text_pair_col="p"), [0, 1])
    assert inst.texts == ["who?", "why?"] and inst.text_pairs == ["me", "so"]
    assert inst.labels.tolist() == [1, 0]


NFC, NFD = "caf\u00e9", "cafe\u0301"  # print alike


@pytest.mark.parametrize(
    ("second", "needle"),
    [
        (NFD, r"Unicode normalization \(code points 'caf\\xe9' and 'cafe\\u0301'\)"),
        (f" {NFC}", "surrounding white space"),
        (f"{NFC}\t", "surrounding white space"),
    ],
    ids=["nfd", "leading-space", "trailing-tab"],
)
def test_two_spellings_of_one_label_are_refused(tmp_path: Path, second: str, needle: str) -> None:
    rows = [("a", NFC), ("b", "other"), ("c", second)]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(f'{{"text": "{t}", "label": "{lab}"}}\n'.replace("\t", "\\t") for t, lab in rows))
    table = read_table(str(path))
    with pytest.raises(InputError) as caught:
        training_labels(table, "label")
    message = str(caught.value)
    assert message.startswith(f"{path}: row 2 (line 3), column 'label': label {second!r} and label {NFC!r} ")
    assert f"({path}: row 0 (line 1)) differ only in" in message
    assert re.search(needle, message), message


def test_labels_that_differ_only_by_case_warn_and_stay_two_classes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = read_table(write(tmp_path / "t.csv", "text,label\na,Pos\nb,neg\nc,pos\n"))
    with caplog.at_level(logging.WARNING, logger="tod_clean"):
        assert training_labels(table, "label") == ["Pos", "neg", "pos"]
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 't.csv'}: row 2 (line 4), column 'label': labels 'pos' and 'Pos' "
        f"({tmp_path / 't.csv'}: row 0 (line 2)) differ only by case; they are trained as two classes"
    ]


def test_a_validation_label_spelled_another_way_says_so(tmp_path: Path) -> None:
    train = read_table(
        write(tmp_path / "t.jsonl", f'{{"text": "a", "label": "{NFC}"}}\n{{"text": "b", "label": "x"}}\n')
    )
    val = read_table(write(tmp_path / "v.jsonl", f'{{"text": "a", "label": "{NFD}"}}\n'))
    with pytest.raises(
        InputError,
        match=rf"label {NFD!r} was not in the training data \(labels: {NFC}, x\); it differs from the training "
        rf"label {NFC!r} only in white space or Unicode normalization \(code points 'cafe\\u0301' and 'caf\\xe9'\)",
    ):
        label_ids(val, "label", training_labels(train, "label"))


def test_a_validation_label_in_another_case_says_so(tmp_path: Path) -> None:
    train = read_table(write(tmp_path / "t.csv", "text,label\na,positive\nb,negative\n"))
    val = read_table(write(tmp_path / "v.csv", "text,label\na,Positive\n"))
    with pytest.raises(
        InputError,
        match=r"v\.csv: row 0 \(line 2\), column 'label': label 'Positive' was not in the training data "
        r"\(labels: negative, positive\); it differs from the training label 'positive' only by case$",
    ):
        label_ids(val, "label", training_labels(train, "label"))
