"""The Python API: tod_clean.train / Run.score / tod_clean.filter on paths, DataFrames and Datasets."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tod_clean
from tests.conftest import make_rows, write_rows
from tod_clean.errors import ConfigError, InputError, RunDirError
from tod_clean.io.inputs import read_table, to_table
from tod_clean.io.writers import subset_bytes
from tod_clean.selection import worst_first

REPO = Path(__file__).resolve().parent.parent
FAST = {"batch_size": 4, "max_length": 16, "device": "cpu"}


def _frame(n: int = 12, **kwargs: Any) -> pd.DataFrame:
    return pd.DataFrame(make_rows(n, **kwargs))


@pytest.fixture(scope="module")
def frame_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[tod_clean.Run, pd.DataFrame]:
    """A run trained on a 12-row DataFrame (id column), shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("api") / "run"
    frame = _frame()
    run = tod_clean.train(frame, run=folder, id_col="id", model=str(tiny_model_dir), epochs=1, **FAST)
    return run, frame


def test_package_exports_the_api_functions_not_the_submodules() -> None:
    import tod_clean.selection  # noqa: F401 - importing the submodules must not rebind the names
    import tod_clean.training.loop  # noqa: F401

    assert callable(tod_clean.train) and callable(tod_clean.filter)
    assert tod_clean.train.__module__ == "tod_clean.api"
    assert tod_clean.filter.__module__ == "tod_clean.api"


@pytest.mark.slow
def test_import_is_light_and_later_submodule_imports_keep_the_api_names() -> None:
    """In a fresh process ``import tod_clean`` loads neither training (transformers, peft) nor the
    ``train`` submodule; importing the submodules afterwards, for the first time, keeps the package's
    ``train`` and ``filter`` the API's functions."""
    check = (
        "import sys, tod_clean\n"
        "loaded = [m for m in ('tod_clean.training.loop', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "import tod_clean.training.loop, tod_clean.selection\n"
        "from tod_clean.training.loop import TrainResult\n"
        "assert tod_clean.train.__module__ == tod_clean.filter.__module__ == 'tod_clean.api'\n"
        "assert sys.modules['tod_clean.training.loop'].TrainResult is TrainResult\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_frame_fingerprint_is_the_sha256_of_its_canonical_json_lines() -> None:
    frame = pd.DataFrame({"text": ["a b", "ça va"], "label": [1, 0], "score": [0.5, float("nan")]})
    table = to_table(frame)
    expected = (
        '{"text": "a b", "label": 1, "score": 0.5}\n{"text": "ça va", "label": 0, "score": null}\n'
    ).encode()
    assert table.data == expected
    assert table.sha256 == hashlib.sha256(expected).hexdigest()
    assert table.source == "<DataFrame>" and table.columns == ["text", "label", "score"]
    assert to_table(frame.copy()).sha256 == table.sha256  # equal rows, equal fingerprint
    assert to_table(frame.iloc[::-1]).sha256 != table.sha256


def test_frame_errors_name_the_frame_and_row() -> None:
    with pytest.raises(InputError, match=r"<DataFrame>: holds no rows"):
        to_table(pd.DataFrame({"text": []}))
    with pytest.raises(InputError, match=r"column name 'a' appears more than once"):
        to_table(pd.DataFrame([[1, 2]], columns=["a", "a"]))
    with pytest.raises(
        InputError, match=r"expected a data file path, a pandas DataFrame or a datasets.Dataset, got list"
    ):
        to_table([{"text": "x"}])


def test_dataset_class_labels_become_names() -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    dataset = datasets.Dataset.from_dict(
        {"text": ["bad", "good", "fine"], "label": [0, 1, 1]}, features=features
    )
    table = to_table(dataset)
    assert table.source == "<Dataset>"
    assert [row["label"] for row in table.rows] == ["neg", "pos", "pos"]


def test_train_score_filter_on_dataframes(frame_run: tuple[tod_clean.Run, pd.DataFrame]) -> None:
    run, frame = frame_run
    copy = run.path / "train.jsonl"
    assert copy.is_file()
    assert (
        run.info.train_file.sha256 == hashlib.sha256(copy.read_bytes()).hexdigest() == to_table(frame).sha256
    )
    assert run.info.train_file.rows == 12

    val = _frame(6, offset=40, id_prefix="v")
    scores = run.score(val=val, batch_size=8)
    assert list(scores["id"]) == list(frame["id"])
    assert np.isfinite(scores["influence"]).all()
    assert sorted(scores["rank"]) == list(range(1, 13))
    assert run.scores["influence"].tolist() == scores["influence"].tolist()  # saved in the run

    kept = tod_clean.filter(frame, scores, drop_count=3)
    assert isinstance(kept, pd.DataFrame) and len(kept) == 9
    worst = set(scores.sort_values("rank")["id"].head(3))
    assert set(frame["id"]) - set(kept["id"]) == worst
    assert list(kept.index) == sorted(kept.index)  # original order and index

    # the run's saved scores, and rows reordered: matched by id
    shuffled = frame.sample(frac=1.0, random_state=0)
    kept_again = tod_clean.filter(shuffled, run, drop_count=3)
    assert set(kept_again["id"]) == set(kept["id"])
    assert list(kept_again["id"]) == [i for i in shuffled["id"] if i not in worst]


def test_score_reads_the_rows_again_from_a_frame(frame_run: tuple[tod_clean.Run, pd.DataFrame]) -> None:
    run, frame = frame_run
    scores = run.score(train=frame.copy(), overwrite=True)  # replaces scores with influence, if any
    assert "influence" not in scores.columns and len(scores) == 12
    changed = frame.copy()
    changed.loc[0, "text"] = "Another text entirely."
    with pytest.raises(RunDirError, match=r"<DataFrame>: differs from the file this run was trained on"):
        run.score(train=changed)


def test_api_refuses_what_the_cli_refuses(
    frame_run: tuple[tod_clean.Run, pd.DataFrame], tmp_path: Path
) -> None:
    run, frame = frame_run
    with pytest.raises(ConfigError, match=r"keep_prob must be between 0 and 1 \(exclusive\), got 1.5"):
        tod_clean.train(frame, run=tmp_path / "r", keep_prob=1.5)
    with pytest.raises(ConfigError, match=r"unknown option 'lr'; the options are: .*learning_rate"):
        tod_clean.train(frame, run=tmp_path / "r", lr=0.1)
    with pytest.raises(ConfigError, match=r"unknown option 'chunk'"):
        run.score(chunk=3)
    with pytest.raises(RunDirError, match=r"already holds a run; pass overwrite=True"):
        tod_clean.train(frame, run=run.path)
    with pytest.raises(InputError, match=r"<DataFrame>: row 2, column 'text': expected text, found missing"):
        tod_clean.train(frame.assign(text=["a", "b", None, *frame["text"][3:]]), run=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"give exactly one of drop, drop_count, threshold"):
        tod_clean.filter(frame, run, drop=0.1, drop_count=2)
    bare = run.scores
    bare.attrs.clear()
    with pytest.raises(ConfigError, match=r"these scores do not name their run: pass run="):
        tod_clean.filter(frame, bare)
    assert len(tod_clean.filter(frame, bare, run=run.path, drop=0.25)) == 9
    assert not (tmp_path / "r").exists()


def test_path_and_dataset_inputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    datasets = pytest.importorskip("datasets")
    path = write_rows(tmp_path / "train.csv", make_rows(12))
    run = tod_clean.train(path, run=tmp_path / "run", model=str(tiny_model_dir), epochs=1, **FAST)
    assert run.info.train_file.path == str(path.resolve())
    assert not (run.path / "train.jsonl").exists()
    val = datasets.Dataset.from_list(make_rows(4, offset=40))
    scores = run.score(val=val)
    assert scores.attrs["tod_clean_run"] == str(run.path.resolve())

    out = tmp_path / "kept.csv"
    assert tod_clean.filter(path, scores, drop_count=2, by="full_loss", out=out) == out
    table = read_table(str(path))
    dropped = set(worst_first(scores["full_loss"].to_numpy(), "full_loss")[:2].tolist())
    kept_indices = [row for row in range(12) if row not in dropped]
    assert out.read_bytes() == subset_bytes(table, kept_indices)  # unchanged rows, in the file's format
    kept_rows = tod_clean.filter(str(path), scores, drop_count=2, by="full_loss")
    assert list(kept_rows["id"]) == [table.rows[row]["id"] for row in kept_indices]

    dataset = datasets.Dataset.from_list(make_rows(12))
    ds_run = tod_clean.train(dataset, run=tmp_path / "ds-run", model=str(tiny_model_dir), epochs=1, **FAST)
    kept = tod_clean.filter(dataset, ds_run.score(), drop=0.25)
    assert isinstance(kept, datasets.Dataset) and kept.num_rows == 9
    with pytest.raises(ConfigError, match=r"out= writes a data file's kept rows"):
        tod_clean.filter(dataset, ds_run, out=tmp_path / "x.jsonl")


def _readme_block(title: str) -> str:
    text = (REPO / "docs" / "guide.md").read_text(encoding="utf-8")
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, f"no python block under '## {title}'"
    return blocks[0]


def test_readme_python_api_example_runs(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's example, verbatim, with the default model ('minilm') swapped for the tiny test model."""
    import tod_clean.config

    monkeypatch.setattr(tod_clean.config, "default_model_path", lambda: str(tiny_model_dir))
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(_readme_block("Python API"), "README.md", "exec"), namespace)  # noqa: S102
    train_df, clean_df, scores = namespace["train_df"], namespace["clean_df"], namespace["scores"]
    assert len(scores) == len(train_df) == 320
    assert len(clean_df) == 320 - round(0.03 * 320)
    assert (tmp_path / "tod-run" / "scores.parquet").is_file()


def test_api_checks_outputs_like_the_cli(tmp_path: Path, tiny_model_dir: Path) -> None:
    """One implementation: the API refuses an output that is an input, before any work, as the CLI does."""
    path = write_rows(tmp_path / "train.jsonl", make_rows(12))
    original = path.read_bytes()
    run = tod_clean.train(path, run=tmp_path / "run", model=str(tiny_model_dir), epochs=1, **FAST)
    with pytest.raises(InputError, match=r"pred_probs would overwrite the training file"):
        run.score(pred_probs=path)
    scores = run.score(out=tmp_path / "scores")  # no extension: a save_to_disk folder, as score --out
    assert tod_clean.filter(path, tmp_path / "scores", run=run, drop_count=2).shape[0] == 10
    with pytest.raises(InputError, match=r"out would overwrite the training file"):
        tod_clean.filter(path, scores, drop_count=2, out=path)
    assert path.read_bytes() == original


def test_api_errors_name_options_by_their_keywords(
    frame_run: tuple[tod_clean.Run, pd.DataFrame], tmp_path: Path
) -> None:
    """Each kind of core message that names an option names it as a Python caller spells it: the keyword,
    the keyword given a value, or a switch turned on (the CLI's flags are pinned by the CLI tests)."""
    run, frame = frame_run
    with pytest.raises(ConfigError, match=r"^drop_count must be 0 or more, got -1$"):
        tod_clean.filter(frame, run, drop_count=-1)
    with pytest.raises(ConfigError, match=r"^by=nope: cannot rank by it; choose one of: "):
        tod_clean.filter(frame, run, by="nope")
    with pytest.raises(
        ConfigError, match=r"would empty a class: .*; drop fewer, or pass allow_empty_class=True$"
    ):
        tod_clean.filter(frame, run, drop_count=12)
    with pytest.raises(InputError, match=r"pred_probs writes the class probabilities as a NumPy \.npy file"):
        run.score(pred_probs=tmp_path / "probs.txt")
    with pytest.raises(
        ConfigError, match=r"^device 'nonsense' is not a device; use cpu, cuda, cuda:N or auto$"
    ):
        run.predict(frame, device="nonsense")
    missing = tmp_path / "no-model"
    with pytest.raises(ConfigError, match=rf"^model={re.escape(str(missing))}: no such folder$"):
        tod_clean.train(frame, run=tmp_path / "r", model=str(missing))
    copy = tod_clean.Run(shutil.copytree(run.path, tmp_path / "copy"))  # the shared run keeps its scores
    copy.score(val=frame.iloc[:4], overwrite=True)
    with pytest.raises(
        ConfigError, match=r"holds the influence of every training row on .*: pass overwrite=True"
    ):
        copy.score()
    assert not (tmp_path / "r").exists()


def test_option_spelling_is_the_flag_outside_the_api() -> None:
    from tod_clean.errors import keywords, spelled, switched_on

    assert (spelled("drop_count"), spelled("train", "FILE"), switched_on("overwrite")) == (
        "--drop-count",
        "--train FILE",
        "--overwrite",
    )
    assert spelled("influence_method", "exact", flag="--influence") == "--influence exact"
    with keywords():
        assert (spelled("drop_count"), spelled("train", "FILE"), switched_on("overwrite")) == (
            "drop_count",
            "train=FILE",
            "overwrite=True",
        )
        assert spelled("influence_method", flag="--influence") == "influence_method"
    assert spelled("drop_count") == "--drop-count"


def test_run_scores_refuses_scores_a_later_training_made_stale(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A 'score' that finishes after a concurrent 'train --overwrite' of its run leaves the old run's scores
    in the new run: Run.scores refuses them, as filter and report do."""
    frame = _frame()
    folder = tmp_path / "run"
    run = tod_clean.train(frame, run=folder, model=str(tiny_model_dir), epochs=1, **FAST)
    run.score()
    stale = {name: (folder / name).read_bytes() for name in ("scores.parquet", "scores.json")}
    tod_clean.train(frame, run=folder, model=str(tiny_model_dir), epochs=1, seed=1, overwrite=True, **FAST)
    for name, payload in stale.items():
        (folder / name).write_bytes(payload)
    with pytest.raises(
        RunDirError, match=r"scores\.parquet: scores of another run of the same training file"
    ):
        run.scores  # noqa: B018 - the property reads the saved scores
    with pytest.raises(RunDirError, match="scores of another run"):
        tod_clean.filter(frame, run, drop_count=1)
    run.score()
    assert len(run.scores) == 12
