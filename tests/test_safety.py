"""The tool must never destroy the user's data: run directories are replaced only when they provably are
runs, outputs never overwrite inputs or each other, a failed command leaves every file as it was, and
outputs to links, devices and FIFOs behave like a shell redirection. Every test runs the command line on
real files and compares the user's files byte for byte before and after."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

import tod_clean.io.paths
from tests.cli.conftest import copy_run, invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tod_clean.config import TrainConfig
from tod_clean.errors import InputError
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import MARKER, RunDir


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: file contents' sha256, link targets, and folders."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            entries[name] = "link -> " + os.readlink(path)
        elif path.is_dir():
            entries[name] = "folder"
        elif path.is_file():
            entries[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            entries[name] = f"special {stat.S_IFMT(path.lstat().st_mode)}"
    return entries


def temporary_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


@pytest.fixture(scope="module")
def model_args(tiny_model_dir: Path) -> list[str]:
    return [
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "16",
        "--device",
        "cpu",
        "--quiet",
    ]


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A run trained on 12 JSONL rows and scored on 6 validation rows (so filter ranks by influence)."""
    folder = tmp_path_factory.mktemp("scored")
    train = write_rows(folder / "train.jsonl", make_rows(12))
    val = write_rows(folder / "val.jsonl", make_rows(6, offset=20))
    run = folder / "run"
    ok(invoke("train", train, "--run", run, *model_args))
    ok(invoke("score", "--run", run, "--val", val, "-q"))
    return SimpleNamespace(folder=folder, train=train, val=val, run=run)


@pytest.fixture
def fresh(scored: SimpleNamespace, tmp_path: Path) -> SimpleNamespace:
    """A private copy of the scored run and of its data, the run pointing at the copied training file."""
    train = Path(shutil.copy(scored.train, tmp_path / "train.jsonl"))
    val = Path(shutil.copy(scored.val, tmp_path / "val.jsonl"))
    run = copy_run(scored.run, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["train_file"]["path"] = str(train.resolve())
    (run / "config.json").write_text(json.dumps(config))
    return SimpleNamespace(folder=tmp_path, train=train, val=val, run=run)


def user_folder(path: Path) -> Path:
    """A folder of the user's own files, with names tod-clean also uses."""
    (path / "checkpoint").mkdir(parents=True)
    (path / "checkpoint" / "notes.txt").write_text("my checkpoint notes\n")
    (path / "scores.parquet").write_bytes(b"my scores")
    (path / "scores.json").write_text('{"mine": true}\n')
    (path / "train.jsonl").write_text('{"text": "my data", "label": "x"}\n')
    (path / "thesis.tex").write_text("\\chapter{One}\n")
    return path


# ---- 1. a run directory is replaced only when it provably is one, and only tod-clean's files -----------


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("from_stdin", [False, True])
def test_train_refuses_a_folder_of_user_files(
    tmp_path: Path, model_args: list[str], overwrite: bool, from_stdin: bool
) -> None:
    folder = user_folder(tmp_path / "mine")
    before = snapshot(folder)
    data = "".join(json.dumps(r) + "\n" for r in make_rows(8))
    source = "-" if from_stdin else write_rows(tmp_path / "train.jsonl", make_rows(8))
    extra = ["--overwrite"] if overwrite else []
    user_error(
        invoke("train", source, "--run", folder, *model_args, *extra, input=data if from_stdin else None),
        str(folder),
        "not a tod-clean run",
    )
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "config",
    [
        '{"learning_rate": 0.1, "layers": 3}\n',  # someone else's config.json
        '{"tod_clean_version": "0.1", "train": {}}\n',  # looks like ours but is not a run
        "not json",
    ],
)
def test_overwrite_refuses_a_config_json_that_is_not_a_run(
    tmp_path: Path, model_args: list[str], config: str
) -> None:
    folder = tmp_path / "experiment"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    (folder / "model.safetensors").write_bytes(b"my weights")
    before = snapshot(folder)
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    user_error(invoke("train", train, "--run", folder, *model_args, "--overwrite"), "not a tod-clean run")
    assert snapshot(folder) == before


def test_a_forged_marker_is_not_a_run(tmp_path: Path, model_args: list[str]) -> None:
    folder = tmp_path / "forged"
    folder.mkdir()
    (folder / MARKER).write_text("yes\n")
    (folder / "data.csv").write_text("a,b\n")
    before = snapshot(folder)
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    user_error(invoke("train", train, "--run", folder, *model_args, "--overwrite"), "not a tod-clean run")
    assert snapshot(folder) == before


def test_overwrite_replaces_only_tod_cleans_files(fresh: SimpleNamespace, model_args: list[str]) -> None:
    run = fresh.run
    (run / "my-notes.txt").write_text("keep me\n")
    (run / "plots").mkdir()
    (run / "plots" / "loss.png").write_bytes(b"png")
    (run / "checkpoint").mkdir()  # a stale checkpoint folder of an older run is tod-clean's
    (run / "checkpoint" / "epoch-1").mkdir()
    old_weights = (run / "model.safetensors").read_bytes()
    user_error(invoke("train", fresh.train, "--run", run, *model_args), "--overwrite")
    ok(invoke("train", fresh.train, "--run", run, *model_args, "--overwrite", "--seed", "3"))
    assert (run / "my-notes.txt").read_text() == "keep me\n"
    assert (run / "plots" / "loss.png").read_bytes() == b"png"
    assert (run / "model.safetensors").read_bytes() != old_weights
    assert not (run / "scores.parquet").exists() and not (run / "checkpoint").exists()
    assert json.loads((run / MARKER).read_text())["tool"] == "tod-clean"


def test_training_into_new_or_empty_folders(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    (tmp_path / "empty").mkdir()
    for run in (tmp_path / "empty", tmp_path / "new" / "nested"):
        ok(invoke("train", train, "--run", run, *model_args))
        assert RunDir(run).has_marker() and (run / "config.json").is_file()


def test_a_run_written_before_the_marker_is_still_a_run(
    fresh: SimpleNamespace, model_args: list[str]
) -> None:
    run = fresh.run
    (run / MARKER).unlink()
    (run / "README.txt").write_text("mine\n")
    ok(invoke("filter", "--run", run, "--drop-count", "1", "-q"))  # reading needs no marker
    user_error(invoke("train", fresh.train, "--run", run, *model_args), "already holds a run")
    ok(invoke("train", fresh.train, "--run", run, *model_args, "--overwrite"))
    assert (run / "README.txt").read_text() == "mine\n" and (run / MARKER).is_file()


def test_stdin_copy_is_replaced_only_when_tod_clean_wrote_it(tmp_path: Path, model_args: list[str]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in make_rows(8))
    run = tmp_path / "run"
    ok(invoke("train", "-", "--run", run, *model_args, input=data))
    other = "".join(json.dumps(r) + "\n" for r in make_rows(8, offset=40))
    ok(invoke("train", "-", "--run", run, *model_args, "--overwrite", input=other))
    assert (run / "train.jsonl").read_text() == other

    # a run trained from a file, holding a train.jsonl of the user's: never replaced by a stdin copy
    legacy = tmp_path / "legacy"
    ok(invoke("train", write_rows(tmp_path / "t.jsonl", make_rows(8)), "--run", legacy, *model_args))
    (legacy / "train.jsonl").write_text("the user's file\n")
    before = snapshot(legacy)
    user_error(
        invoke("train", "-", "--run", legacy, *model_args, "--overwrite", input=data),
        "train.jsonl",
        "not written by tod-clean",
    )
    assert snapshot(legacy) == before
    ok(invoke("train", tmp_path / "t.jsonl", "--run", legacy, *model_args, "--overwrite"))
    assert (legacy / "train.jsonl").read_text() == "the user's file\n"


def test_training_file_inside_the_run_is_not_deleted(tmp_path: Path, model_args: list[str]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in make_rows(8))
    run = tmp_path / "run"
    ok(invoke("train", "-", "--run", run, *model_args, input=data))
    before = snapshot(run)
    user_error(
        invoke("train", run / "train.jsonl", "--run", run, *model_args, "--overwrite"),
        "train.jsonl",
        "would overwrite",
    )
    assert snapshot(run) == before


# ---- 2. everything is validated before an existing run is touched --------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--model", "/nonexistent/model", "--model"),
        ("--scope", "layers:9", "layers:9"),
        ("--text-col", "missing", "'missing'"),
        ("--keep-prob", "2", "--keep-prob"),
    ],
)
def test_overwrite_with_a_bad_option_keeps_the_run(
    fresh: SimpleNamespace, model_args: list[str], option: str, value: str, needle: str
) -> None:
    before = snapshot(fresh.run)
    user_error(
        invoke("train", fresh.train, "--run", fresh.run, *model_args, "--overwrite", option, value), needle
    )
    assert snapshot(fresh.run) == before


# ---- 3. an output equal to an input, or to another output, is refused before any work -----------------


def link(path: Path, target: Path, *, hard: bool = False) -> Path:
    (os.link if hard else os.symlink)(target, path)
    return path


CASES = {
    "score --out training file": lambda f: ["score", "--run", f.run, "--out", f.train],
    "score --out validation file": lambda f: ["score", "--run", f.run, "--val", f.val, "--out", f.val],
    "score --out symlink to training file": lambda f: [
        "score",
        "--run",
        f.run,
        "--out",
        link(f.folder / "s.jsonl", f.train),
    ],
    "score --out hard link to validation file": lambda f: [
        "score",
        "--run",
        f.run,
        "--val",
        f.val,
        "--out",
        link(f.folder / "h.jsonl", f.val, hard=True),
    ],
    "score --out the run's scores": lambda f: ["score", "--run", f.run, "--out", f.run / "scores.parquet"],
    "score --out the run's config": lambda f: ["score", "--run", f.run, "--out", f.run / "config.json"],
    "score --matrix = --pred-probs": lambda f: [
        "score",
        "--run",
        f.run,
        "--val",
        f.val,
        "--matrix",
        f.folder / "m.npy",
        "--pred-probs",
        f.folder / "m.npy",
    ],
    "score --pred-probs the run's weights": lambda f: [
        "score",
        "--run",
        f.run,
        "--pred-probs",
        f.run / "model.safetensors",
    ],
    "score --out inside the run's tokenizer": lambda f: [
        "score",
        "--run",
        f.run,
        "--out",
        f.run / "tokenizer" / "tokenizer.json",
    ],
    "filter --out the run's training file": lambda f: ["filter", "--run", f.run, "--out", f.train],
    "filter --out --train": lambda f: [
        "filter",
        "--run",
        f.run,
        "--train",
        f.train,
        "--out",
        f.folder / "." / "train.jsonl",
    ],
    "filter --out = --removed": lambda f: [
        "filter",
        "--run",
        f.run,
        "--out",
        f.folder / "k.jsonl",
        "--removed",
        f.folder / "k.jsonl",
    ],
    "filter --out and --removed on stdout": lambda f: [
        "filter",
        "--run",
        f.run,
        "--out",
        "-",
        "--removed",
        "-",
    ],
    "filter --removed the run's scores": lambda f: [
        "filter",
        "--run",
        f.run,
        "--removed",
        f.run / "scores.parquet",
    ],
    "explain --out validation file": lambda f: ["explain", "--run", f.run, "--val", f.val, "--out", f.val],
    "evaluate --out its data file": lambda f: ["evaluate", f.val, "--run", f.run, "--out", f.val],
    "evaluate --out the run's config": lambda f: [
        "evaluate",
        f.val,
        "--run",
        f.run,
        "--out",
        f.run / "config.json",
    ],
    "report --out link to the run's config": lambda f: [
        "report",
        "--run",
        f.run,
        "--out",
        link(f.folder / "r.html", f.run / "config.json"),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_output_that_is_an_input_is_refused(fresh: SimpleNamespace, case: str) -> None:
    args = CASES[case](fresh)
    before = snapshot(fresh.folder)
    user_error(invoke(*args, "-q"))
    assert snapshot(fresh.folder) == before


def test_cleanse_refuses_inputs_among_its_outputs_and_folders_it_did_not_write(
    fresh: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "cleansed"
    out.mkdir()
    shutil.copytree(fresh.run, out / "tod-run")  # looks like an earlier cleanse
    train = Path(shutil.copy(fresh.train, out / "train.filtered.jsonl"))
    before = snapshot(tmp_path)
    args = ["--test", fresh.val, "--out-dir", out, "--epochs", "1", "--device", "cpu", "-q", "--overwrite"]
    user_error(invoke("cleanse", train, *args), "train.filtered.jsonl", "would overwrite")
    assert snapshot(tmp_path) == before

    mine = user_folder(tmp_path / "mine")
    before = snapshot(mine)
    user_error(invoke("cleanse", fresh.train, *args[:2], "--out-dir", mine, *args[4:]), "not written by")
    assert snapshot(mine) == before


# ---- 4. a failed write leaves every earlier file as it was ---------------------------------------------


def test_failed_score_output_keeps_the_runs_scores(
    fresh: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scores the run holds (with influence) survive a score whose --out fails at the last moment."""
    before = snapshot(fresh.run)

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise InputError("scores.csv: cannot write (No space left on device)")

    monkeypatch.setattr("tod_clean.pipelines.outputs.write_frame", disk_full)
    user_error(
        invoke("score", "--run", fresh.run, "--out", fresh.folder / "scores.csv", "--overwrite", "-q"),
        "No space",
    )
    assert snapshot(fresh.run) == before
    result = ok(invoke("filter", "--run", fresh.run, "--by", "influence", "--drop-count", "1"))
    assert "with the lowest influence" in result.stderr  # the saved scores still hold influence


def test_filter_says_when_it_falls_back_to_full_loss(fresh: SimpleNamespace) -> None:
    ok(invoke("score", "--run", fresh.run, "--overwrite", "-q"))  # no --val: no influence column any more
    result = ok(invoke("filter", "--run", fresh.run, "--drop-count", "1", "-q"))
    note = " ".join(result.stderr.split())
    assert "ranking by full_loss within each class (the default without a validation set" in note
    assert "ranking by" not in ok(invoke("filter", "--run", fresh.run, "--by", "hidden_loss", "-q")).stderr


# ---- 5. links, devices and FIFOs behave like a shell redirection ---------------------------------------


def test_output_to_a_symlink_writes_its_target(fresh: SimpleNamespace) -> None:
    real = fresh.folder / "real.csv"
    real.write_text("old\n")
    out = link(fresh.folder / "scores.csv", real)
    dangling = link(fresh.folder / "kept.jsonl", fresh.folder / "new-kept.jsonl")
    ok(invoke("score", "--run", fresh.run, "--out", out, "--overwrite", "-q"))
    ok(invoke("filter", "--run", fresh.run, "--drop-count", "1", "--out", dangling, "-q"))
    assert out.is_symlink() and dangling.is_symlink()
    assert pd.read_csv(real)["row"].tolist() == list(range(12))
    assert len((fresh.folder / "new-kept.jsonl").read_text().splitlines()) == 11
    assert temporary_files(fresh.folder) == []


def test_output_to_a_link_to_dev_null_keeps_the_link(fresh: SimpleNamespace) -> None:
    out = link(fresh.folder / "scores.csv", Path("/dev/null"))
    ok(invoke("score", "--run", fresh.run, "--out", out, "--overwrite", "-q"))
    ok(invoke("evaluate", fresh.val, "--run", fresh.run, "--out", out, "-q"))
    assert out.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_output_to_a_fifo_is_written_through(fresh: SimpleNamespace) -> None:
    fifo = fresh.folder / "kept.jsonl"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    ok(invoke("filter", "--run", fresh.run, "--drop-count", "2", "--out", fifo, "-q"))
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert len(received) == 1 and len(received[0].splitlines()) == 10


@pytest.mark.slow
@pytest.mark.e2e
def test_output_to_dev_stdout(fresh: SimpleNamespace) -> None:
    """``--out /dev/stdout`` writes what ``--out -`` writes (the format of the input, CSV for scores)."""
    env = {**os.environ, "PYTHONPATH": str(Path(tod_clean.io.paths.__file__).parents[2])}
    command = [
        sys.executable,
        "-m",
        "tod_clean",
        "filter",
        "--run",
        str(fresh.run),
        "--drop-count",
        "2",
        "-q",
    ]
    done = subprocess.run([*command, "--out", "/dev/stdout"], capture_output=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ok(invoke(*command[3:], "--out", "-")).stdout_bytes


# ---- 6. unwritable and folder destinations are refused before the work ---------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["score", "--out", "{dir}"],
        ["score", "--val", "{val}", "--matrix", "{dir}"],
        ["score", "--pred-probs", "{dir}"],
        ["filter", "--out", "{dir}"],
        ["filter", "--removed", "{dir}"],
        ["explain", "--val", "{val}", "--out", "{dir}"],
        ["evaluate", "{val}", "--out", "{dir}"],
    ],
)
def test_folder_as_output_is_refused_before_the_work(fresh: SimpleNamespace, args: list[str]) -> None:
    folder = fresh.folder / "outputs.csv"
    folder.mkdir()
    before = snapshot(fresh.folder)
    filled = [a.format(dir=folder, val=fresh.val) for a in args]
    user_error(invoke(*filled, "--run", fresh.run, "-q"), str(folder), "is a folder")
    assert snapshot(fresh.folder) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["score", "--val", "{val}", "--matrix", "{dir}/m.csv"],
            "m.csv: --matrix writes the influence matrix",
        ),
        (
            ["score", "--val", "{val}", "--matrix", "{dir}/matrix"],
            "matrix: --matrix writes the influence matrix",
        ),
        (["score", "--pred-probs", "{dir}/p.csv"], "p.csv: --pred-probs writes the class probabilities"),
        (
            ["evaluate", "{val}", "--out", "{dir}/metrics.csv"],
            "metrics.csv: --out writes the metrics as JSON",
        ),
    ],
    ids=["matrix-csv", "matrix-no-suffix", "pred-probs-csv", "evaluate-csv"],
)
def test_an_output_named_for_another_format_is_refused(
    fresh: SimpleNamespace, args: list[str], needle: str
) -> None:
    """--matrix x.csv wrote .npy bytes, evaluate --out metrics.csv wrote JSON: refused before the work."""
    before = snapshot(fresh.folder)
    filled = [a.format(dir=fresh.folder, val=fresh.val) for a in args]
    suffix = ".json" if args[0] == "evaluate" else ".npy"
    user_error(invoke(*filled, "--run", fresh.run, "-q"), needle, f"give a file name ending in {suffix}")
    assert snapshot(fresh.folder) == before


@pytest.mark.parametrize("what", ["folder", "file"])
def test_unwritable_destination_is_refused_before_the_work(
    fresh: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    locked = fresh.folder / "locked"
    locked.mkdir()
    out = locked / "scores.csv"
    if what == "file":
        out.write_text("read-only\n")
        out.chmod(0o444)
    else:
        locked.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: pretend to be a user
        denied = out if what == "file" else locked
        monkeypatch.setattr(tod_clean.io.paths, "writable", lambda path: Path(path) != denied)
    try:
        before = snapshot(fresh.folder)
        user_error(invoke("score", "--run", fresh.run, "--out", out, "-q"), "scores.csv")
        assert snapshot(fresh.folder) == before
    finally:
        locked.chmod(0o755)


# ---- 7. a failed train leaves no half-written run; SIGTERM is an interruption --------------------------


def test_train_failing_before_its_first_epoch_leaves_no_run(
    tmp_path: Path, model_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("tod_clean.run.rundir.RunDir.save_weights", interrupted)
    user_error(invoke("train", train, "--run", tmp_path / "new", *model_args), "interrupted")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    user_error(invoke("train", train, "--run", tmp_path / "empty", *model_args), "interrupted")
    assert list((tmp_path / "empty").iterdir()) == []


def test_sigterm_is_an_interruption_and_leaves_no_temporary_files(
    tmp_path: Path, model_args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM in the middle of writing the weights: the command stops as after Ctrl-C."""
    from safetensors.torch import save_file

    terms: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terms.append(signum))  # the old code died
    try:

        def killed_while_saving(tensors: Any, path: str, metadata: Any = None) -> None:
            save_file(tensors, path, metadata=metadata)  # a complete temporary file...
            os.kill(os.getpid(), signal.SIGTERM)  # ...and the process is told to stop before the rename

        monkeypatch.setattr("tod_clean.run.rundir.save_file", killed_while_saving)
        train = write_rows(tmp_path / "train.jsonl", make_rows(8))
        user_error(invoke("train", train, "--run", tmp_path / "run", *model_args), "interrupted")
        assert terms == [] and signal.getsignal(signal.SIGTERM) is not signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not (tmp_path / "run").exists()
    assert temporary_files(tmp_path) == []


def test_sigterm_after_an_epoch_keeps_a_resumable_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tod_clean.cli import _sigterm_as_interrupt
    from tod_clean.training.loop import train

    train_file = write_rows(tmp_path / "train.jsonl", make_rows(8))
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=4, max_length=16, device="cpu")

    def terminate(model: Any, epoch: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        train(
            config,
            read_table(str(train_file)),
            RunDir(run),
            train_path=str(train_file),
            on_epoch_end=terminate,
        )
    assert (run / "checkpoint" / "epoch-1").is_dir() and temporary_files(tmp_path) == []
    user_error(invoke("score", "--run", run, "-q"), "1 of 2 epochs", "--resume")
    ok(invoke("train", "--resume", "--run", run, "-q"))


def break_run(run: Path, *, epochs: int | None = None) -> None:
    config = json.loads((run / "config.json").read_text())
    config["status"] = "training"
    config["train"]["epochs"] = 2
    config["epochs"] = config["epochs"][: epochs if epochs is not None else len(config["epochs"])]
    (run / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("epochs", [0, 1])
def test_unfinished_run_without_a_checkpoint_is_not_sent_to_resume(
    fresh: SimpleNamespace, epochs: int
) -> None:
    """A run killed outright (SIGKILL, power loss) with no checkpoint of its last epoch cannot resume."""
    break_run(fresh.run, epochs=epochs)
    line = user_error(invoke("score", "--run", fresh.run, "-q"), "did not finish", "train it again")
    assert "--resume" not in line
