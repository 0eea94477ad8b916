"""Several processes under ``accelerate launch``: training, resuming, scoring and explaining with two CPU
processes (gloo) give what one process gives.

The launches use the command line the README shows (``accelerate launch --multi_gpu --num_processes 2
... -m tod_clean ...``, with ``--device cpu``); the one-process references run in this process. The tiny
BERT has no standard dropout: that noise is drawn per process, so it is the one thing that differs with
the number of processes (instance masks are hashed from instance keys and do not).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import make_rows, random_batch, save_tiny_bert, tiny_encoder, write_rows
from tod_clean.cli import app
from tod_clean.config import DataColumns, TrainConfig
from tod_clean.errors import ConfigError
from tod_clean.io.inputs import read_table
from tod_clean.masks import MaskMode
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.processes import Processes, current_processes, local_rows
from tod_clean.scopes import Scope
from tod_clean.training.loop import share_of_loss

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
# Options of every training here: 23 rows in global batches of 5 (split 3 + 2 over two processes) with a
# last batch of 3, two batches per optimizer step: uneven shares everywhere. Learning rates high enough
# that the weights move far more than the tolerance.
TRAIN_OPTIONS = [
    "--id-col", "id", "--scope", "ffn:1", "--epochs", "2", "--batch-size", "5", "--grad-accum", "2",
    "--max-length", "16", "--lr", "1e-3", "--head-lr", "1e-2", "--seed", "3", "--device", "cpu",
]  # fmt: skip


# ---- pure parts: the split of a global batch and the loss each process backpropagates --------------


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_row_of_a_global_batch_goes_to_exactly_one_process(count: int) -> None:
    for size in (1, 2, 5, 8):
        batch = np.random.default_rng(size).permutation(100)[:size]
        shares = [local_rows(batch, index, count) for index in range(count)]
        counted = np.concatenate([rows[:n] for rows, n in shares])
        assert sorted(counted.tolist()) == sorted(batch.tolist())
        for rows, n in shares:
            assert len(rows) >= 1  # a process with no row of its own still runs one (counted 0 times)
            assert n == len(rows) or (n == 0 and len(rows) == 1)


@pytest.mark.parametrize("count", [2, 3, 7])
def test_processes_gradients_average_to_the_one_process_gradient(count: int) -> None:
    """DDP averages the processes' gradients of ``share_of_loss``: that is the one-process gradient of
    the global batch, whatever the split (7 processes on 5 rows: two processes have no row)."""
    torch.manual_seed(0)
    model = TodClassifier(
        tiny_encoder("bert", dropout=0.0), 3, scope=Scope.parse("ffn:1"), keep_prob=0.5, mask_seed=1
    )
    batch = random_batch(5, 9)
    keys = torch.arange(5) + 1000
    labels = torch.tensor([0, 2, 1, 1, 0])
    batch_size, grad_accum = 8, 2  # a short batch: 5 of 8 rows

    def gradients(rows: np.ndarray, counted: int, processes: int) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=False)
        index = torch.as_tensor(rows)
        logits = model({k: v[index] for k, v in batch.items()}, keys[index], MaskMode.EXPOSED)
        loss = torch.nn.functional.cross_entropy(logits, labels[index])
        share_of_loss(loss, counted, processes, batch_size, grad_accum).backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    one = gradients(np.arange(5), 5, 1)
    shares = [gradients(*local_rows(np.arange(5), index, count), count) for index in range(count)]
    averaged = [torch.stack(parts).sum(0) / count for parts in zip(*shares, strict=True)]
    scale = max(float(g.abs().max()) for g in one)
    assert scale > 0
    for expected, got in zip(one, averaged, strict=True):
        # float32 sums in another order: equal to rounding; a wrong weighting is off by a factor
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_one_process_splits_nothing() -> None:
    single = Processes()
    batch = np.array([4, 1, 3])
    rows, counted = single.take(batch)
    assert rows is batch and counted == 3
    assert single.rows(10) == (0, 10) and single.is_main and not single.several
    assert single.sum([1.5, 2.0]) == [1.5, 2.0]
    values = torch.arange(6.0).view(3, 2)
    assert torch.equal(single.gather_rows(values, 3), values)
    assert torch.equal(single.map_rows(3, lambda rows: values[rows]), values)
    assert single.main_first(lambda: 7) == 7


class _MainOfSimulatedProcesses(Processes):
    """The main process of ``len(blocks)`` processes whose row blocks are ``blocks``: ``gather_all`` hands
    back the same slice of every block, as the launched processes would send them."""

    def __init__(self, blocks: list[np.ndarray], slice_rows: int) -> None:
        super().__init__(index=0, count=len(blocks))
        self.blocks, self.slice_rows, self.calls = blocks, slice_rows, 0

    def gather_all(self, local: torch.Tensor) -> torch.Tensor:
        offset = self.calls * self.slice_rows
        self.calls += 1
        parts = []
        for block in self.blocks:
            part = torch.zeros_like(local)
            rows = torch.from_numpy(block[offset : offset + local.shape[0]].copy())
            part[: len(rows)] = rows
            parts.append(part)
        assert torch.equal(parts[0], local)  # the main process sends its own slice
        return torch.stack(parts)


def test_the_influence_matrix_is_gathered_slice_by_slice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tod_clean.influence import gather

    num_rows, num_val, count = 7, 3, 2
    matrix = np.random.default_rng(0).normal(size=(num_rows, num_val)).astype(np.float32)
    blocks = [
        matrix[slice(*Processes(index, count).rows(num_rows))] for index in range(count)
    ]  # 3 and 4 rows
    # two rows of each process at a time
    monkeypatch.setattr(gather, "_GATHER_BYTES", 2 * num_val * 4 * count)
    np.save(tmp_path / "rows-0.npy", blocks[0])
    main = _MainOfSimulatedProcesses(blocks, slice_rows=2)
    gather.gather_matrix(main, tmp_path / "rows-0.npy", tmp_path / "matrix.npy", num_rows, num_val)
    assert main.calls == 2
    np.testing.assert_array_equal(np.load(tmp_path / "matrix.npy"), matrix)


def test_without_a_launcher_there_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert current_processes("auto") == Processes()


def test_a_numbered_device_is_refused_under_a_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match=r"--device cuda:1: under accelerate launch each process takes"):
        current_processes("cuda:1")


def test_commands_that_do_not_split_refuse_several_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = CliRunner().invoke(app, ["filter", "--run", str(tmp_path)])
    assert result.exit_code == 1
    assert "'filter' runs in one process" in result.output and "train, score, explain" in result.output
    result = CliRunner().invoke(app, ["train", "-", "--run", str(tmp_path / "run")], input="")
    assert result.exit_code == 1 and "standard input under accelerate launch" in result.output


# ---- two processes launched as the README shows ---------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(*args: Any, cwd: Path, console_script: bool = False) -> subprocess.CompletedProcess[str]:
    """``accelerate launch --multi_gpu --num_processes 2 --main_process_port P -m tod_clean ARGS`` with the
    venv's ``accelerate`` (``python -m accelerate.commands.launch`` where the script is missing); with
    ``console_script``, the ``tod-clean`` script in place of ``-m tod_clean`` (where it is installed)."""
    bin_dir = Path(sys.executable).parent
    accelerate, tod_clean = bin_dir / "accelerate", bin_dir / "tod-clean"
    launcher = (
        [str(accelerate), "launch"]
        if accelerate.is_file()
        else [sys.executable, "-m", "accelerate.commands.launch"]
    )
    program = [str(tod_clean)] if console_script and tod_clean.is_file() else ["-m", "tod_clean"]
    command = [
        *launcher,
        "--multi_gpu",
        "--num_processes", "2",
        "--main_process_port", str(_free_port()),
        *program,
        *[str(a) for a in args],
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(cwd / "hf-home"),  # no accelerate config of this machine's user
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def invoke(*args: Any) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A tiny BERT without standard dropout (model/), train.jsonl (23 rows), val.jsonl (7 rows)."""
    folder = tmp_path_factory.mktemp("processes")
    save_tiny_bert(folder / "model", tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    write_rows(folder / "train.jsonl", make_rows(23))
    write_rows(folder / "val.jsonl", make_rows(7, offset=200, id_prefix="v"))
    return folder


@pytest.fixture(scope="module")
def one_process_run(folder: Path) -> Path:
    """The run one process trains (the reference)."""
    run = folder / "run-1"
    invoke("train", folder / "train.jsonl", "--model", folder / "model", "--run", run, *TRAIN_OPTIONS, "-q")
    return run


def _files(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob("*"))


def _assert_same_weights(run: Path, reference: Path) -> None:
    got, expected = load_file(str(run / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(
            got[name].numpy(), expected[name].numpy(), rtol=0, atol=TOLERANCE, err_msg=name
        )


def _assert_same_frames(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected)
    for column in expected.columns:
        if pd.api.types.is_float_dtype(expected[column]):
            np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=TOLERANCE, err_msg=column)
        else:
            assert got[column].tolist() == expected[column].tolist(), column


def _score_options(run: Path, folder: Path, influence: str) -> list[object]:
    """``score``'s options for a run against the shared validation set, on the CPU, quietly."""
    return ["--run", run, "--val", folder / "val.jsonl", "--influence", influence, "--device", "cpu", "-q"]


@pytest.mark.e2e
@pytest.mark.slow
def test_training_with_two_processes_matches_one(folder: Path, one_process_run: Path) -> None:
    run = folder / "run-2"
    launch(
        "train", folder / "train.jsonl", "--model", folder / "model", "--run", run, *TRAIN_OPTIONS, cwd=folder
    )
    _assert_same_weights(run, one_process_run)
    initial = load_file(str(folder / "model" / "model.safetensors"))
    trained = load_file(str(run / "model.safetensors"))
    moved = max(float((trained[f"encoder.{k}"] - v).abs().max()) for k, v in initial.items())
    assert moved > 100 * TOLERANCE  # the comparison above is not between two barely trained models

    # one run directory, written once: the files of a one-process run, nothing partial or doubled
    assert _files(run) == _files(one_process_run)
    info, reference = (json.loads((r / "config.json").read_text()) for r in (run, one_process_run))
    assert info["world_size"] == 2 and reference["world_size"] == 1
    assert [e["world_size"] for e in info["epochs"]] == [2, 2]
    assert info["status"] == "complete" and info["train"] == reference["train"]
    for got, expected in zip(info["epochs"], reference["epochs"], strict=True):
        assert got["train_loss"] == pytest.approx(expected["train_loss"], abs=TOLERANCE)

    # and the scores of the two runs agree
    for name in ("run-1", "run-2"):
        invoke(
            "score",
            "--run",
            folder / name,
            "--val",
            folder / "val.jsonl",
            "--out",
            folder / f"{name}.csv",
            "-q",
        )
    _assert_same_frames(pd.read_csv(folder / "run-2.csv"), pd.read_csv(folder / "run-1.csv"))


@pytest.mark.e2e
@pytest.mark.slow
def test_an_interrupted_run_resumes_with_two_processes(folder: Path, one_process_run: Path) -> None:
    from tod_clean.training.loop import train

    run = folder / "run-resumed"
    config = TrainConfig(
        model=str(folder / "model"),
        columns=DataColumns(id_col="id"),
        scope="ffn:1",
        epochs=2,
        batch_size=5,
        grad_accum=2,
        max_length=16,
        learning_rate=1e-3,
        head_learning_rate=1e-2,
        seed=3,
        device="cpu",
    )

    def stop(model: Any, epoch: int) -> None:
        raise KeyboardInterrupt

    data = folder / "train.jsonl"
    with pytest.raises(KeyboardInterrupt):
        train(config, read_table(str(data)), RunDir(run), train_path=str(data), on_epoch_end=stop)
    assert json.loads((run / "config.json").read_text())["world_size"] == 1

    launch("train", "--resume", "--run", run, cwd=folder)
    info = json.loads((run / "config.json").read_text())
    assert info["status"] == "complete" and [e["world_size"] for e in info["epochs"]] == [1, 2]
    assert not (run / "checkpoint").exists()
    _assert_same_weights(run, one_process_run)


@pytest.mark.e2e
@pytest.mark.slow
def test_scoring_with_two_processes_matches_one(folder: Path, one_process_run: Path) -> None:
    """Linear influence: the gate gradients of the validation rows are split too; the matrix is gathered."""
    run = one_process_run
    options = _score_options(run, folder, "linear")
    outputs = {
        name: ["--out", folder / f"{name}.csv", "--matrix", folder / f"{name}.npy", "--pred-probs", folder / f"{name}-probs.npy"]
        for name in ("one", "two")
    }  # fmt: skip
    invoke("score", *options, *outputs["one"])
    launch("score", *options, *outputs["two"], cwd=folder)
    expected = pd.read_csv(folder / "one.csv")
    _assert_same_frames(pd.read_csv(folder / "two.csv"), expected)
    for name in ("", "-probs"):
        want, got = np.load(folder / f"one{name}.npy"), np.load(folder / f"two{name}.npy")
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE)
    # the run's own copy, written by the main process alone
    _assert_same_frames(pd.read_parquet(run / "scores.parquet"), expected)


@pytest.mark.e2e
@pytest.mark.slow
def test_gauss_newton_with_two_processes_matches_one(folder: Path, one_process_run: Path) -> None:
    """Each process sums its rows' g g^T; the sums are added up, so the preconditioner, and each row's
    influence, are those of one process over all rows."""
    run = one_process_run
    options = _score_options(run, folder, "gauss-newton")
    invoke("score", *options, "--out", folder / "gn-one.csv", "--matrix", folder / "gn-one.npy")
    launch("score", *options, "--out", folder / "gn-two.csv", "--matrix", folder / "gn-two.npy", cwd=folder)
    expected = pd.read_csv(folder / "gn-one.csv")
    assert expected["influence"].abs().max() > 100 * TOLERANCE  # the values are not all near zero
    _assert_same_frames(pd.read_csv(folder / "gn-two.csv"), expected)
    np.testing.assert_allclose(
        np.load(folder / "gn-two.npy"), np.load(folder / "gn-one.npy"), rtol=0, atol=TOLERANCE
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_explaining_with_two_processes_matches_one(folder: Path, one_process_run: Path) -> None:
    """Exact influence of an ffn scope: the (training row, validation row) pairs are split by training row."""
    options = ["--run", one_process_run, "--val", folder / "val.jsonl", "--influence", "exact", "--top", "3"]
    invoke("explain", *options, "--device", "cpu", "-q", "--out", folder / "one.jsonl")
    launch(
        "explain",
        *options,
        "--device",
        "cpu",
        "-q",
        "--out",
        folder / "two.jsonl",
        cwd=folder,
        console_script=True,
    )
    expected, got = (pd.read_json(folder / name, lines=True) for name in ("one.jsonl", "two.jsonl"))
    assert len(expected) == 7 * 2 * 3
    _assert_same_frames(got, expected)


@pytest.mark.e2e
@pytest.mark.slow
def test_head_scope_scoring_with_two_processes_matches_one(folder: Path) -> None:
    """The head scope's GEMM path: the validation rows' head features are computed half per process."""
    run = folder / "run-head"
    head_options = ["head" if option == "ffn:1" else option for option in TRAIN_OPTIONS]
    invoke("train", folder / "train.jsonl", "--model", folder / "model", "--run", run, *head_options, "-q")
    options = _score_options(run, folder, "turn-over")
    invoke("score", *options, "--out", folder / "head-one.csv")
    launch("score", *options, "--out", folder / "head-two.csv", cwd=folder)
    _assert_same_frames(pd.read_csv(folder / "head-two.csv"), pd.read_csv(folder / "head-one.csv"))
