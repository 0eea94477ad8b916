"""The app itself (``tod_clean.cli``): --version, a folder that is no run for the commands that read one,
and user text (paths, column names, labels) shown as written in messages and summaries, never read as
Rich markup."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.cli.conftest import copy_run, invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tod_clean import __version__


def test_version() -> None:
    assert ok(invoke("--version")).stdout.strip() == f"tod-clean {__version__}"


@pytest.mark.parametrize("command", ["score", "filter"])
def test_not_a_run_directory(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.csv"
    user_error(
        invoke(command, "--run", empty, "--out", out, "-q"),
        str(empty),
        "not a tod-clean run directory",
        absent=(out,),
    )
    missing = tmp_path / "missing"
    user_error(
        invoke(command, "--run", missing, "--out", out, "-q"),
        str(missing),
        "no such run directory",
        absent=(out,),
    )


def test_error_messages_keep_square_brackets(data_file: Any, tmp_path: Path, model_args: list[str]) -> None:
    """User text in a message is shown as is, not read as rich markup ('[en]' must not vanish)."""
    user_error(
        invoke(
            "train", data_file("train.csv"), "--run", tmp_path / "run", *model_args, "--text-col", "text[en]"
        ),
        "'text[en]'",
    )


def test_error_message_with_markup_closing_tag_is_clean(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    rows = make_rows(4, offset=30)
    rows[1]["label"] = "[/x]"
    val = write_rows(tmp_path / "val.jsonl", rows)
    user_error(invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--val", val, "-q"), "'[/x]'")


def test_paths_that_look_like_markup_print_as_written(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    """Summary lines show paths as written: a name with [bold] or [red] is no Rich markup (the brackets
    were lost, and a closing tag crashed the summary), and :x: is no emoji code."""
    out = tmp_path / "kept [bold] [red]:x:.jsonl"
    result = ok(invoke("filter", "--run", jsonl_run.run, "--drop-count", "1", "-o", out))
    assert f"-> {out}" in result.stderr and out.is_file()
    metrics = tmp_path / "m [bold].json"
    result = ok(invoke("evaluate", jsonl_run.val, "--run", jsonl_run.run, "--out", metrics))
    assert metrics.is_file() and "Traceback" not in result.output
