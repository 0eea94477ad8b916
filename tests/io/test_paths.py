"""Outputs: atomic (nothing partial, the old file kept on failure, the usual permissions) and never an input
or another output of the same command."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.test_safety import link
from tod_clean.errors import InputError
from tod_clean.io.paths import atomic_output, check_distinct_outputs


def test_atomic_output_leaves_nothing_when_the_block_raises(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_keeps_the_old_file_when_the_block_raises(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    dest.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output(dest) as tmp:
        tmp.write_text("new, partial")
        raise KeyboardInterrupt
    assert dest.read_text() == "old"
    assert list(tmp_path.iterdir()) == [dest]


def test_atomic_output_writes_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    with atomic_output(dest) as tmp:
        assert tmp.parent == tmp_path and tmp != dest
        tmp.write_text("done")
    assert dest.read_text() == "done"
    assert list(tmp_path.iterdir()) == [dest]


def test_atomic_output_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"), atomic_output(tmp_path / "no" / "out.csv"):
        pass


def test_atomic_output_file_has_default_permissions(tmp_path: Path) -> None:
    """Written files get the usual 0666 & ~umask mode, like any tool's output (mkstemp makes them 0600)."""
    dest = tmp_path / "out.csv"
    with atomic_output(dest) as tmp:
        tmp.write_text("x")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask


def test_check_distinct_outputs(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n")
    check_distinct_outputs({"--train": data, "--val": None}, {"--out": tmp_path / "out.csv", "--x": "-"})
    check_distinct_outputs(
        {}, {"--out": "/dev/null", "--removed": "/dev/null"}
    )  # a device, as a shell allows
    with pytest.raises(InputError, match=r"--out would overwrite --train"):
        check_distinct_outputs({"--train": data}, {"--out": tmp_path / "sub" / ".." / "data.csv"})
    with pytest.raises(InputError, match=r"--out would overwrite --train"):
        check_distinct_outputs({"--train": data}, {"--out": link(tmp_path / "hard.csv", data, hard=True)})
    with pytest.raises(InputError, match=r"--b and --a .* are the same file"):
        check_distinct_outputs(
            {}, {"--a": tmp_path / "o.csv", "--b": link(tmp_path / "l.csv", tmp_path / "o.csv")}
        )
    with pytest.raises(InputError, match=r"--out would overwrite the run"):
        check_distinct_outputs({"the run": tmp_path}, {"--out": tmp_path / "new.csv"})
    with pytest.raises(InputError, match="both write to standard output"):
        check_distinct_outputs({}, {"--out": "-", "--removed": "-"})
