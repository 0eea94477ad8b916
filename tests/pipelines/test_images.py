"""Images end to end (CPU, no downloads, images made with Pillow): train -> score -> filter on an image
folder, a CSV of paths and a Parquet file with an Image feature, with the embedded from-scratch default and
a tiny random ViT; the head scope's batched influence against the per-pair loop for image rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.image_data import (
    csv_of_paths,
    image_folder,
    parquet_of_images,
    tiny_convnext,
    tiny_deit,
    tiny_resnet,
    tiny_vit,
)
from tests.influence.test_exact import naive_pairs
from tests.test_cli import invoke, ok, user_error
from tod_clean.io.images import ImageColumn
from tod_clean.io.inputs import read_table
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.pixels import EncodedImages, augment, encode_images
from tod_clean.scopes import Scope

pytestmark = pytest.mark.slow


def _hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_image_folder_train_score_filter_manifest_and_train_again(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=6)
    val = image_folder(tmp_path / "val", per_class=2, seed=1)
    before = _hashes(photos)
    run = tmp_path / "run"
    ok(invoke("train", photos, "--run", run, "--epochs", "1", "--batch-size", "6", "--lr", "1e-3", "-q"))
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert info["train"]["model"] == "tiny-resnet" and info["train"]["columns"]["image_col"] == "image"
    assert info["train_file"]["format"] == "imagefolder"
    assert (run / "image_processor" / "preprocessor_config.json").is_file()
    assert not (run / "tokenizer").exists()
    scored = ok(invoke("score", "--run", run, "--val", val, "-o", "-", "-q"))
    frame = pd.read_csv(io.StringIO(scored.output))
    assert len(frame) == 18 and frame["influence"].notna().all() and frame["self_influence"].notna().all()
    # explain and report name the images (thumbnails are not built yet)
    ok(invoke("explain", "--run", run, "--val", val, "--out", tmp_path / "explained.csv", "-q"))
    explained = pd.read_csv(tmp_path / "explained.csv")
    assert explained["train_text"].str.match(r"^(red|green|blue)/\d{3}\.png$").all()
    ok(invoke("report", "--run", run, "--val", val, "--out", tmp_path / "report.html", "-q"))
    assert "green/" in (tmp_path / "report.html").read_text(encoding="utf-8")
    kept = tmp_path / "out" / "kept.csv"
    kept.parent.mkdir()
    ok(invoke("filter", "--run", run, "--drop-count", "3", "--out", kept, "-q"))
    with open(kept, encoding="utf-8", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert len(manifest) == 15 and set(manifest[0]) == {"image", "label"}
    assert all(row["image"].startswith("../photos/") for row in manifest)  # relative to the manifest
    assert all(Path(row["image"]).parent.name == row["label"] for row in manifest)
    assert _hashes(photos) == before  # no image moved, copied or changed
    table = read_table(str(kept))
    assert table.format == "csv"
    # the manifest is a training input
    ok(invoke("train", kept, "--run", tmp_path / "again", "--epochs", "1", "-q"))
    again = json.loads((tmp_path / "again" / "config.json").read_text(encoding="utf-8"))
    assert again["train_file"]["rows"] == 15


def test_manifest_needs_a_csv_name(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    run = tmp_path / "run"
    ok(invoke("train", photos, "--run", run, "--epochs", "1", "-q"))
    ok(invoke("score", "--run", run, "-q"))
    user_error(
        invoke("filter", "--run", run, "--drop-count", "1", "--out", tmp_path / "kept.jsonl"),
        "CSV manifest",
        absent=(tmp_path / "kept.jsonl",),
    )
    stdout = ok(invoke("filter", "--run", run, "--drop-count", "1", "-q")).output
    assert stdout.splitlines()[0] == "image,label"
    assert Path(stdout.splitlines()[1].split(",")[0]).is_absolute()  # no folder to be relative to


def test_csv_of_paths_with_a_tiny_vit(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "data" / "photos", per_class=4)
    train_csv = csv_of_paths(photos, tmp_path / "data" / "train.csv")
    model = tiny_vit(tmp_path / "vit")
    run = tmp_path / "run"
    ok(invoke("train", train_csv, "--model", model, "--run", run, "--epochs", "1", "--pooling", "cls", "-q"))
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert info["train"]["columns"]["image_col"] == "path" and info["encoder"]["model_type"] == "vit"
    ok(invoke("score", "--run", run, "--val", train_csv, "-q"))
    kept = tmp_path / "data" / "kept.csv"
    ok(invoke("filter", "--run", run, "--drop", "0.25", "--out", kept, "-q"))
    lines = train_csv.read_bytes().splitlines(keepends=True)
    kept_lines = kept.read_bytes().splitlines(keepends=True)
    assert kept_lines[0] == lines[0] and len(kept_lines) == 1 + 9
    assert set(kept_lines[1:]) <= set(lines[1:])  # kept rows byte for byte


def test_parquet_with_an_image_feature(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=4)
    parquet = parquet_of_images(photos, tmp_path / "train.parquet")
    run = tmp_path / "run"
    ok(invoke("train", parquet, "--run", run, "--epochs", "1", "--augment", "-q"))
    ok(invoke("score", "--run", run, "--val", parquet, "-q"))
    kept = tmp_path / "kept.parquet"
    ok(invoke("filter", "--run", run, "--drop-count", "2", "--out", kept, "-q"))
    frame = pd.read_parquet(kept)
    assert len(frame) == 10 and isinstance(frame["image"].iloc[0]["bytes"], bytes)


def test_tiny_vit_parquet_and_resnet_folder_with_scope_none(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=3)
    parquet = parquet_of_images(photos, tmp_path / "train.parquet")
    vit, resnet = tiny_vit(tmp_path / "vit"), tiny_resnet(tmp_path / "resnet")
    ok(invoke("train", parquet, "--model", vit, "--run", tmp_path / "vit-run", "--epochs", "1", "-q"))
    ok(invoke("score", "--run", tmp_path / "vit-run", "--val", parquet, "-q"))
    ok(invoke("filter", "--run", tmp_path / "vit-run", "--drop-count", "1", "-o", tmp_path / "k.parquet"))
    none_run = tmp_path / "none-run"
    ok(
        invoke(
            "train", photos, "--model", resnet, "--scope", "none", "--run", none_run, "--epochs", "1", "-q"
        )
    )
    ok(invoke("score", "--run", none_run, "-q"))
    ok(invoke("filter", "--run", none_run, "--drop-count", "1", "-o", tmp_path / "k.csv", "-q"))
    assert len((tmp_path / "k.csv").read_text(encoding="utf-8").splitlines()) == 1 + 8


def test_image_options_and_models_refused_clearly(tmp_path: Path, tiny_model_dir: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    run = tmp_path / "run"
    user_error(
        invoke("train", photos, "--run", run, "--scope", "layers:1"),
        "scope head, channels or none",
        absent=(run,),
    )
    no_processor = tiny_vit(tmp_path / "vit")
    (no_processor / "preprocessor_config.json").unlink()
    user_error(
        invoke("train", photos, "--model", no_processor, "--run", run),
        "preprocessor_config.json",
        absent=(run,),
    )
    texts = tmp_path / "texts.jsonl"
    texts.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n', encoding="utf-8")
    user_error(invoke("train", texts, "--run", run, "--augment"), "--augment", absent=(run,))


def test_augment_is_a_seeded_crop_and_flip() -> None:
    pixels = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    first = augment(pixels, torch.Generator().manual_seed(1))
    assert first.shape == pixels.shape
    assert torch.equal(first, augment(pixels, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, pixels) or not torch.equal(
        augment(pixels, torch.Generator().manual_seed(2)), pixels
    )


@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_head_batched_influence_equals_the_per_pair_loop_on_images(tmp_path: Path, arch: str) -> None:
    """The head scope's GEMM path gives each (training instance, validation image) pair's hidden minus
    exposed loss, as one forward per pair does."""
    from transformers import AutoModel

    from tod_clean.influence.head_gemm import head_features, head_influence_blocks
    from tod_clean.modeling.vision import load_image_processor

    folder = tiny_vit(tmp_path / "m") if arch == "vit" else tiny_resnet(tmp_path / "m")
    photos = image_folder(tmp_path / "photos", per_class=2)
    table = read_table(str(photos))
    encoded = encode_images(load_image_processor(folder), ImageColumn(table, "image"))
    assert isinstance(encoded, EncodedImages) and encoded.pixels.shape == (6, 3, 32, 32)
    torch.manual_seed(3)
    model = TodClassifier(
        AutoModel.from_pretrained(str(folder)), 3, scope=Scope.parse("head"), keep_prob=0.5, mask_seed=4
    )
    with torch.no_grad():
        model.classifier.weight.mul_(4.0)
    model.eval()
    keys = np.arange(100, 109, dtype=np.int64)
    labels = np.array([0, 0, 1, 1, 2, 2])
    expected = naive_pairs(model, keys, encoded, labels)  # type: ignore[arg-type]
    features = head_features(model, encoded, batch_size=4, device=torch.device("cpu"))  # type: ignore[arg-type]
    matrix = np.full(expected.shape, np.nan)
    for block in head_influence_blocks(
        features,
        torch.as_tensor(labels),
        model.classifier.weight.detach(),
        model.classifier.bias.detach(),
        torch.as_tensor(keys),
        keep_prob=0.5,
        mask_seed=4,
        block_shape=(4, 4),
    ):
        n = block.values.shape[0]
        matrix[block.train_start : block.train_start + n, block.val_index] = block.values.numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-5)


@pytest.mark.parametrize("make", [tiny_deit, tiny_convnext], ids=["deit", "convnext"])
def test_other_vision_encoders_train_and_score(tmp_path: Path, make: object) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    model = make(tmp_path / "model")  # type: ignore[operator]
    run = tmp_path / "run"
    ok(invoke("train", photos, "--model", model, "--run", run, "--epochs", "1", "-q"))
    scored = ok(invoke("score", "--run", run, "--val", photos, "-o", "-", "-q"))
    assert len(pd.read_csv(io.StringIO(scored.output))) == 6
