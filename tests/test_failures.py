"""What the machine, not the user's options, gets wrong: a full disk, a read-only run folder, a run
trained from a pipe, weights that do not fit their config.json. Each is one error line and exit 1, never a
traceback or a hang, and leaves no partial output: the files that were there stay as they were."""

from __future__ import annotations

import errno
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from safetensors import SafetensorError

import tod_clean.io.writers
import tod_clean.run.rundir
from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tests.test_safety import snapshot, temporary_files

DISK_FULL = os.strerror(errno.ENOSPC)


@pytest.fixture(scope="module")
def model_args(tiny_model_dir: Path) -> list[str]:
    return ["--model", str(tiny_model_dir), "--epochs", "1", "--batch-size", "4", "--max-length", "16"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A run trained on 8 JSONL rows and scored on 4 validation rows."""
    folder = tmp_path_factory.mktemp("failures")
    train = write_rows(folder / "train.jsonl", make_rows(8))
    val = write_rows(folder / "val.jsonl", make_rows(4, offset=20))
    run = folder / "run"
    ok(invoke("train", train, "--run", run, *model_args, "--device", "cpu", "-q"))
    ok(invoke("score", "--run", run, "--val", val, "-q"))
    return SimpleNamespace(folder=folder, train=train, val=val, run=run)


def _copy(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest / "run"))


# ---- a full disk ----------------------------------------------------------------------------------------


class _FullFile(io.BytesIO):
    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, DISK_FULL)  # what write(2) says, with no file name


@pytest.fixture
def disk_full(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every write into a temporary file (where every output is made before it replaces its
    destination) fails as on a full disk; reads and other files work."""
    real_open = open

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith(".tmp") and any(flag in mode for flag in "wax"):
            real_open(file, mode, *args, **kwargs).close()
            return _FullFile()
        return real_open(file, mode, *args, **kwargs)

    def full_write(self: Path, data: Any, *args: Any, **kwargs: Any) -> int:
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, DISK_FULL)
        return real_write_bytes(self, data)

    real_write_bytes = Path.write_bytes
    monkeypatch.setattr(tod_clean.io.writers, "open", full_open, raising=False)
    monkeypatch.setattr(Path, "write_bytes", full_write)
    monkeypatch.setattr(Path, "write_text", lambda self, text, *a, **k: full_write(self, text.encode()))
    yield


def test_a_full_disk_stops_score_and_keeps_the_saved_scores(
    tmp_path: Path, scored: SimpleNamespace, disk_full: None
) -> None:
    run = _copy(scored.run, tmp_path)
    before = snapshot(run)
    out = tmp_path / "scores.csv"
    line = user_error(invoke("score", "--run", run, "--val", scored.val, "-o", out, "-q"), absent=(out,))
    assert line == f"error: {out}: cannot write ({DISK_FULL})"
    line = user_error(invoke("score", "--run", run, "--val", scored.val, "-q"))
    assert line == f"error: {run / 'scores.json'}: cannot write ({DISK_FULL})"
    assert snapshot(run) == before and not temporary_files(tmp_path)


def test_a_full_disk_stops_filter(tmp_path: Path, scored: SimpleNamespace, disk_full: None) -> None:
    run = _copy(scored.run, tmp_path)
    out, removed = tmp_path / "kept.jsonl", tmp_path / "removed.csv"
    out.write_text("old\n")
    line = user_error(invoke("filter", "--run", run, "-o", out, "--removed", removed), absent=(removed,))
    assert line == f"error: {out}: cannot write ({DISK_FULL})"
    assert out.read_text() == "old\n" and not temporary_files(tmp_path)


@pytest.mark.parametrize(
    ("where", "error"),
    [
        # what safetensors' and tokenizers' Rust writers raise on a full disk (seen on a full tmpfs)
        (
            "save_file",
            SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
        ),
        ("save_model", Exception("No space left on device (os error 28)")),
    ],
)
def test_a_full_disk_stops_train_and_removes_the_run(
    tmp_path: Path,
    scored: SimpleNamespace,
    model_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    error: Exception,
) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise error

    if where == "save_file":
        monkeypatch.setattr(tod_clean.run.rundir, "save_file", full)
    else:
        monkeypatch.setattr(tod_clean.run.rundir.RunDir, "save_model", full)
    run = tmp_path / "run"
    line = user_error(invoke("train", scored.train, "--run", run, *model_args, "-q"), absent=(run,))
    if where == "save_file":
        assert line == f"error: {run / 'model.safetensors'}: cannot write ({DISK_FULL})"
    else:
        assert line == f"error: {run}: cannot write the run ({DISK_FULL})"
    assert list(tmp_path.iterdir()) == []


# ---- a run folder that cannot be written ------------------------------------------------------------------


def test_train_refuses_a_read_only_place_before_loading_the_model(
    tmp_path: Path, scored: SimpleNamespace, model_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:  # as on a read-only file system
        return False if Path(path) == read_only and mode & os.W_OK else real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)

    def no_model(name: str) -> None:
        raise AssertionError("the model loaded before the run folder was checked")

    # the module (tod_clean.train is also the package's train function)
    monkeypatch.setattr(importlib.import_module("tod_clean.training.loop"), "load_pretrained", no_model)
    for run, shown in ((read_only / "run", str(read_only)), (read_only, "the folder")):
        line = user_error(invoke("train", scored.train, "--run", run, *model_args, "-q"))
        assert line == f"error: {run}: cannot write the run there ({shown} is not writable)"
    assert list(read_only.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_train_refuses_a_folder_without_write_permission(
    tmp_path: Path, scored: SimpleNamespace, model_args: list[str]
) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    line = user_error(invoke("train", scored.train, "--run", read_only / "run", *model_args, "-q"))
    assert line.endswith(f"cannot write the run there ({read_only} is not writable)")


# ---- a run trained from a pipe ------------------------------------------------------------------------------


@pytest.fixture
def piped_run(tmp_path: Path, scored: SimpleNamespace) -> Iterator[SimpleNamespace]:
    """A run whose recorded training file is a FIFO (as after 'train pipe.jsonl' fed by a writer that is
    gone). A watchdog unblocks a reader that opened it, so a regression fails instead of hanging."""
    run = _copy(scored.run, tmp_path)
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    config = json.loads((run / "config.json").read_text())
    config["train_file"]["path"] = str(fifo)
    (run / "config.json").write_text(json.dumps(config))
    blocked = threading.Event()
    done = threading.Event()

    def watchdog() -> None:
        while not done.wait(0.5):
            try:
                handle = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only if someone reads
            except OSError:
                continue
            blocked.set()
            os.close(handle)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    yield SimpleNamespace(run=run, fifo=fifo, blocked=blocked)
    done.set()
    thread.join()


@pytest.mark.parametrize(
    ("command", "instead"),
    [
        (("score", "-q"), "pass --train FILE"),
        (("filter", "-q"), "pass --train FILE"),
        (("train", "--resume", "-q"), "give the same rows as a file: tod-clean train FILE --resume"),
    ],
)
def test_a_run_trained_from_a_pipe_is_refused_not_read_again(
    piped_run: SimpleNamespace, command: tuple[str, ...], instead: str
) -> None:
    line = user_error(invoke(*command, "--run", piped_run.run))
    assert line == (
        f"error: {piped_run.fifo}: this run was trained on a pipe (FIFO), which cannot be read again; "
        f"{instead}"
    )
    assert not piped_run.blocked.is_set()


def test_a_run_trained_from_a_pipe_scores_with_train(
    tmp_path: Path, piped_run: SimpleNamespace, scored: SimpleNamespace
) -> None:
    ok(invoke("score", "--run", piped_run.run, "--train", scored.train, "--val", scored.val, "-q"))
    assert not piped_run.blocked.is_set()


# ---- weights that do not fit config.json --------------------------------------------------------------------


def test_weights_of_another_shape_than_config_json_says_are_one_line(
    tmp_path: Path, scored: SimpleNamespace
) -> None:
    run = _copy(scored.run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["labels"].append("neutral")  # 3 labels, weights of a 2-label head
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    out = tmp_path / "scores.csv"
    line = user_error(invoke("score", "--run", run, "-o", out, "-q", "--overwrite"), absent=(out,))
    assert line == (
        f"error: {run / 'model.safetensors'}: weights do not match the run's config.json (classifier.bias has "
        "shape [2], but 3 labels and the saved options make [3]); the weights and config.json are of "
        "different runs"
    )
    assert snapshot(run) == before


# ---- a hub name with no network ------------------------------------------------------------------------------


def test_a_hub_model_not_cached_in_offline_mode_is_one_line(
    tmp_path: Path, scored: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read when huggingface_hub is imported
    run = tmp_path / "run"
    line = user_error(
        invoke("train", scored.train, "--run", run, "--model", "tod-clean-tests/not-cached", "-q")
    )
    assert line == (
        "error: --model tod-clean-tests/not-cached: neither a local folder nor in the local Hugging Face cache, "
        "and HF_HUB_OFFLINE is set; give a local model folder, or download the model while online"
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_a_hub_model_with_the_hub_unreachable_is_one_line_without_retries(
    tmp_path: Path, scored: SimpleNamespace
) -> None:
    """Online mode, but nothing answers: huggingface_hub used to retry for about a minute, printing a
    warning for each retry, before the one error line."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=os.getcwd())
    command = [sys.executable, "-m", "tod_clean", "train", str(scored.train), "--run", str(tmp_path / "run")]
    result = subprocess.run(
        [*command, "--model", "bert-base-uncased", "-q"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --model bert-base-uncased: neither a local folder nor in the local Hugging Face cache, and the "
        "hub (http://127.0.0.1:9) cannot be reached ([Errno 111] Connection refused); give a local model "
        "folder, or connect to download it"
    ]
    assert not (tmp_path / "run").exists()
