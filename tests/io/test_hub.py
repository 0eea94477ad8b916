"""hf:NAME[/CONFIG] inputs: hub datasets already in the local Hugging Face cache, read offline.

The cache entries are made here the way ``load_dataset`` prepares a hub dataset (a packaged builder writing
Arrow files and dataset_info.json under ``<namespace>___<name>/<config>/<version>/<hash>/``) in a temporary
``HF_DATASETS_CACHE``; the network is cut for every test, so nothing can be downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tod_clean.errors import InputError
from tod_clean.io.formats.dataset_dir import is_dataset_dir
from tod_clean.io.formats.hub import datasets_cache
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import RunDir

datasets = pytest.importorskip("datasets")

TINY = ["--batch-size", "4", "--max-length", "16", "--device", "cpu"]
LABELS = ["negative", "positive"]


def cache_hub_dataset(
    cache: Path, repo: str, config: str, splits: dict[str, list[dict[str, Any]]], *, hash_: str = "c0ffee"
) -> Path:
    """Prepare ``repo`` (config ``config``) in ``cache`` as ``load_dataset`` does for a hub dataset of
    JSON files; labels become a ClassLabel. Returns the prepared folder."""
    from datasets.packaged_modules.json.json import Json

    *namespace, name = repo.split("/")
    sources = cache.parent / f"sources-{name}-{config}-{hash_}"
    sources.mkdir(parents=True)
    files = {}
    for split, rows in splits.items():
        coded = [{**row, "label": LABELS.index(row["label"])} for row in rows]
        files[split] = str(write_rows(sources / f"{split}.jsonl", coded))
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=LABELS),
        }
    )
    staging = cache.parent / f"staging-{name}-{config}-{hash_}"
    builder = Json(
        cache_dir=str(staging),
        dataset_name=name,
        config_name=config,
        config_id=config,
        hash=hash_,
        data_files=files,
        info=datasets.DatasetInfo(features=features, config_name=config),
    )
    builder.download_and_prepare()
    # a namespaced repo lives in <namespace>___<name>, as the hub builder (repo_id set) writes it
    target = cache / "___".join([*namespace, name]) / config / "0.0.0" / hash_
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(builder.cache_dir)), str(target))
    shutil.rmtree(staging)
    return target


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HF cache holding someone/reviews (train: 12 rows, validation: 6) and plainset (configs
    a and b, one split each)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    cache = tmp_path / "hf-home" / "datasets"
    cache.mkdir(parents=True)
    cache_hub_dataset(
        cache,
        "someone/reviews",
        "default",
        {"train": make_rows(12), "validation": make_rows(6, offset=40, id_prefix="v")},
    )
    for config in ("a", "b"):
        cache_hub_dataset(cache, "plainset", config, {"train": make_rows(4, offset=60)})
    return cache


def test_hf_reads_the_cache_offline_like_load_dataset(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert datasets_cache() == hub_cache  # HF_HOME/datasets, read now, not when datasets was imported
    table = read_table("hf:someone/reviews", split="train")
    assert table.format == "dataset" and table.split == "train" and len(table) == 12
    assert table.source == "hf:someone/reviews (split train)" and table.ref == "hf:someone/reviews/default"
    assert [row["label"] for row in table.rows[:2]] == ["positive", "negative"]  # ClassLabel names
    assert [row["id"] for row in table.rows] == [row["id"] for row in make_rows(12)]
    # the same rows as datasets' own offline load_dataset of the same cache
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    loaded = datasets.load_dataset("someone/reviews", split="train", cache_dir=str(hub_cache))
    assert table.dataset.to_list() == loaded.to_list()
    # the fingerprint: a hash of the split's Arrow files, stable across reads, different per split
    assert read_table("hf:someone/reviews/default", split="train").sha256 == table.sha256
    assert read_table("hf:someone/reviews", split="validation").sha256 != table.sha256
    # hf:NAME/CONFIG when no NAME___CONFIG dataset is cached
    assert read_table("hf:plainset/b").ref == "hf:plainset/b"


@pytest.mark.parametrize(
    ("ref", "split", "message"),
    [
        ("hf:someone/reviews", None, "hf:someone/reviews: splits train, validation; choose one with --split"),
        (
            "hf:someone/reviews",
            "test",
            "hf:someone/reviews: no split 'test'; splits found: train, validation",
        ),
        (
            "hf:plainset",
            None,
            "hf:plainset: the local Hugging Face cache holds configurations a, b; choose one "
            "with hf:plainset/CONFIG",
        ),
        (
            "hf:plainset/c",
            None,
            "hf:plainset/c: configuration 'c' of plainset is not in the local Hugging Face",
        ),
        ("hf:someone/reviews/other", None, "configuration 'other' of someone/reviews is not in the local"),
        ("hf:imdb", None, "hf:imdb: not in the local Hugging Face cache ("),
        ("hf:stanfordnlp/imdb/plain_text", None, 'datasets.load_dataset("stanfordnlp/imdb", "plain_text")'),
        ("hf:a b", None, "hf:a b: not a hub dataset reference; write hf:NAME"),
        ("hf:", None, "hf:: not a hub dataset reference"),
    ],
)
def test_hf_refusals(hub_cache: Path, ref: str, split: str | None, message: str) -> None:
    with pytest.raises(InputError) as caught:
        read_table(ref, split=split)
    assert message in str(caught.value)


def test_not_cached_is_one_line_and_writes_nothing(
    hub_cache: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = tmp_path / "run"
    result = invoke("train", "hf:imdb", "--run", run, "--model", tiny_model_dir, *TINY)
    line = user_error(
        result, "hf:imdb: not in the local Hugging Face cache", str(hub_cache), "never downloads"
    )
    assert 'datasets.load_dataset("imdb")' in line
    assert not run.exists()
    assert sorted(path.name for path in hub_cache.iterdir()) == ["plainset", "someone___reviews"]


@pytest.mark.slow
def test_cli_train_score_filter_explain_evaluate_report_on_hf(
    hub_cache: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    run = tmp_path / "run"
    ref = "hf:someone/reviews"
    common = ["--model", tiny_model_dir, "--epochs", "1", *TINY]
    ok(invoke("train", ref, "--split", "train", "--id-col", "id", "--run", run, "-q", *common))
    info = RunDir(run).read_info()
    assert (info.train_file.path, info.train_file.split, info.train_file.format) == (
        "hf:someone/reviews/default",
        "train",
        "dataset",
    )
    assert info.train_file.sha256 == read_table(ref, split="train").sha256
    assert info.labels == LABELS

    # an output inside the cache is an input's folder: refused before any work
    inside = Path(read_table(ref, split="train").dataset.cache_files[0]["filename"]).parent / "scores.csv"
    user_error(invoke("score", "--run", run, "--out", inside), "inside the Hugging Face datasets cache")

    scores_dir = tmp_path / "scores"
    ok(invoke("score", "--run", run, "--val", ref, "--val-split", "validation", "--out", scores_dir, "-q"))
    meta = json.loads((run / "scores.json").read_text())
    assert (meta["val_file"], meta["val_split"]) == ("hf:someone/reviews/default", "validation")
    assert is_dataset_dir(scores_dir)

    kept = tmp_path / "kept"
    ok(invoke("filter", "--run", run, "--scores", scores_dir, "--drop-count", "3", "--out", kept, "-q"))
    kept_rows = datasets.load_from_disk(str(kept))
    assert kept_rows.num_rows == 9 and kept_rows.features["label"].names == LABELS
    worst = set(datasets.load_from_disk(str(scores_dir)).sort("rank")["id"][:3])
    assert set(kept_rows["id"]) == {row["id"] for row in make_rows(12)} - worst
    user_error(
        invoke("filter", "--run", run, "--drop-count", "3"), "an hf: dataset's kept rows go to a folder"
    )
    user_error(
        invoke("filter", "--run", run, "--drop-count", "3", "--out", tmp_path / "kept.jsonl"),
        "written as a save_to_disk folder",
    )
    assert not (tmp_path / "kept.jsonl").exists()

    metrics = tmp_path / "metrics.json"
    ok(invoke("evaluate", ref, "--split", "validation", "--run", run, "--out", metrics, "-q"))
    assert json.loads(metrics.read_text())["rows"] == 6
    explained = tmp_path / "explained.jsonl"
    ok(
        invoke(
            "explain",
            "--val",
            ref,
            "--val-split",
            "validation",
            "--run",
            run,
            "-k",
            "2",
            "-o",
            explained,
            "-q",
        )
    )
    assert {row["val_id"] for row in read_table(str(explained)).rows} == {
        r["id"] for r in make_rows(6, offset=40, id_prefix="v")
    }
    # report finds the validation split it was scored on by its hf: reference
    page = tmp_path / "report.html"
    ok(invoke("report", "--run", run, "--out", page, "--max-explained", "1", "--device", "cpu", "-q"))
    assert "hf:someone/reviews/default" in page.read_text()


def test_outputs_anywhere_in_the_cache_are_refused(
    hub_cache: Path, tmp_path: Path, tiny_model_dir: Path, data_file: Any
) -> None:
    """A folder written beside the prepared one would be read as the newest preparation (every later read
    of the dataset failing); anywhere else in the cache, as another dataset: refused before any work."""
    run = tmp_path / "run"
    ref = "hf:someone/reviews"
    common = ["--model", tiny_model_dir, "--epochs", "1", *TINY]
    ok(invoke("train", ref, "--split", "train", "--id-col", "id", "--run", run, "-q", *common))
    before = read_table(ref, split="train").sha256
    prepared = Path(read_table(ref, split="train").dataset.cache_files[0]["filename"]).parent
    beside = prepared.parent / "d00dfeed"
    elsewhere = hub_cache / "someone___other" / "default"
    for out in (beside, elsewhere, hub_cache / "scores.csv", hub_cache):
        user_error(
            invoke("score", "--run", run, "--out", out, "-q"), "inside the Hugging Face datasets cache"
        )
    ok(invoke("score", "--run", run, "-q"))
    for out in (beside, elsewhere):
        user_error(
            invoke("filter", "--run", run, "--drop-count", "1", "--out", out, "-q"),
            f"{out}: --out is inside the Hugging Face datasets cache ({hub_cache}) that the training file "
            f"({ref}/default) is read from",
        )
        user_error(
            invoke("filter", "--run", run, "--drop-count", "1", "--removed", out / "removed.csv", "-q"),
            "--removed is inside the Hugging Face datasets cache",
        )
    user_error(
        invoke("train", ref, "--split", "train", "--run", beside, "-q", *common),
        "inside the Hugging Face datasets cache",
    )
    user_error(
        invoke("filter", "--run", run, "--drop-count", "1", "--out", hub_cache.parent, "-q"),
        f"{hub_cache.parent}: --out holds the Hugging Face datasets cache ({hub_cache})",
    )
    assert not beside.exists() and not elsewhere.exists()
    assert sorted(path.name for path in prepared.parent.iterdir()) == ["c0ffee"]
    assert read_table(ref, split="train").sha256 == before  # the dataset still reads as it did

    # a dataset folder (save_to_disk) is refused in the cache even when no input is an hf: dataset
    plain_run = tmp_path / "plain-run"
    ok(invoke("train", data_file("train.jsonl"), "--run", plain_run, "-q", *common))
    user_error(
        invoke("score", "--run", plain_run, "--out", elsewhere, "-q"),
        f"{elsewhere}: is inside the Hugging Face datasets cache",
        absent=(elsewhere,),
    )


def test_changed_cache_is_refused(hub_cache: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    """A newer preparation of the dataset in the cache is other rows: the run's fingerprint tells."""
    run = tmp_path / "run"
    ok(
        invoke(
            "train", "hf:plainset/a", "--run", run, "-q", "--model", tiny_model_dir, "--epochs", "1", *TINY
        )
    )
    rows = make_rows(4, offset=60)
    rows[0]["text"] = "An entirely new text."
    newer = cache_hub_dataset(hub_cache, "plainset", "a", {"train": rows}, hash_="beef")
    os.utime(newer, (1e10, 1e10))  # the latest preparation is the one read
    user_error(
        invoke("score", "--run", run, "-q"), "hf:plainset/a", "differs from the file this run was trained on"
    )


def test_cleanse_on_hf_splits(hub_cache: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    ref = "hf:someone/reviews"
    args = ["cleanse", ref, "--split", "train", "--test", ref, "--test-split", "validation", "--out-dir", out]
    ok(invoke(*args, "--model", tiny_model_dir, "--epochs", "1", *TINY, "--drop-count", "2", "-q"))
    summary = json.loads((out / "metrics.json").read_text())
    assert {arm["name"]: arm["train_rows"] for arm in summary["arms"]} == {"before": 12, "filtered": 10}
    filtered = datasets.load_from_disk(str(out / "train.filtered"))
    assert filtered.num_rows == 10 and filtered.features["label"].names == LABELS
    assert RunDir(out / "run-before").read_info().train_file.path == "hf:someone/reviews/default"


def test_api_on_hf(hub_cache: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    import tod_clean

    fast = {"batch_size": 4, "max_length": 16, "device": "cpu", "epochs": 1}
    run = tod_clean.train(
        "hf:someone/reviews",
        split="train",
        run=tmp_path / "run",
        id_col="id",
        model=str(tiny_model_dir),
        **fast,
    )
    assert run.info.train_file.path == "hf:someone/reviews/default"
    scores = run.score(val="hf:someone/reviews", val_split="validation")
    kept = tod_clean.filter("hf:someone/reviews", scores, drop_count=2)
    assert isinstance(kept, datasets.Dataset) and kept.num_rows == 10
    assert kept.features["label"].names == LABELS


def cache_hub_image_dataset(cache: Path, repo: str, images: Path, *, hash_: str = "feed01") -> Path:
    """Prepare ``repo`` in ``cache`` as ``load_dataset`` does for a hub dataset of Parquet files with an
    ``Image`` feature and ClassLabel labels (the form of image datasets on the hub): one ``train`` split of
    the PNGs of ``images/<label>/``."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    *namespace, name = repo.split("/")
    files = sorted(images.glob("*/*.png"))
    names = sorted({file.parent.name for file in files})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    sources = cache.parent / f"sources-{name}-{hash_}"
    sources.mkdir(parents=True)
    rows = {
        "image": [{"bytes": file.read_bytes(), "path": file.name} for file in files],
        "label": [names.index(file.parent.name) for file in files],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(sources / "train.parquet"))
    staging = cache.parent / f"staging-{name}-{hash_}"
    builder = Parquet(
        cache_dir=str(staging),
        dataset_name=name,
        config_name="default",
        config_id="default",
        hash=hash_,
        data_files={"train": str(sources / "train.parquet")},
        info=datasets.DatasetInfo(features=features, config_name="default"),
    )
    builder.download_and_prepare()
    target = cache / "___".join([*namespace, name]) / "default" / "0.0.0" / hash_
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(builder.cache_dir)), str(target))
    shutil.rmtree(staging)
    return target


def test_an_hf_image_dataset_trains_scores_and_filters_to_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.image_data import image_folder

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    cache = tmp_path / "hf-home" / "datasets"
    cache.mkdir(parents=True)
    cache_hub_image_dataset(cache, "someone/photos", image_folder(tmp_path / "photos", per_class=3))
    ref, run = "hf:someone/photos", tmp_path / "run"
    ok(invoke("train", ref, "--split", "train", "--run", run, "--epochs", "1", "--device", "cpu", "-q"))
    info = RunDir(run).read_info()
    assert info.train.columns.image_col == "image" and info.train.model == "tiny-resnet"
    assert info.labels == ["blue", "green", "red"]
    scores = tmp_path / "scores.csv"
    ok(invoke("score", "--run", run, "--val", ref, "--val-split", "train", "--out", scores, "-q"))
    kept = tmp_path / "kept"
    ok(invoke("filter", "--run", run, "--scores", scores, "--drop-count", "2", "--out", kept, "-q"))
    kept_rows = datasets.load_from_disk(str(kept))
    assert kept_rows.num_rows == 7
    assert isinstance(kept_rows.features["image"], datasets.Image)
    assert kept_rows.features["label"].names == ["blue", "green", "red"]
