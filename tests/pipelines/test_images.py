"""Images end to end (CPU, no downloads, images made with Pillow): train -> score -> filter on an image
folder, a CSV of paths and a Parquet file with an Image feature, with the embedded from-scratch default and
a tiny random ViT; the head scope's batched influence against the per-pair loop for image rows; the
thumbnails of the report and of explain's page, checked against the influence matrix score writes."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tod_clean
from tests.cli.conftest import invoke, ok, user_error
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
from tests.report.test_render import assert_self_contained
from tod_clean.io.images import ImageColumn
from tod_clean.io.inputs import read_table
from tod_clean.io.thumbnails import PNG_DATA_URI
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.pixels import EncodedImages, augment, encode_images
from tod_clean.report.content import MAX_EXPLAINED_IMAGES
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
    # explain and report name the images (their thumbnails: test_report_of_an_image_run_shows_thumbnails)
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


REPO = Path(__file__).resolve().parents[2]


def test_the_readme_image_demo_runs_on_the_sample_photos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's image demo, command by command, on a copy of sample_data/photos (2 epochs, not 20)."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Images\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```\n(.*?)```", section, flags=re.DOTALL)[0]
    commands = [line.split()[1:] for line in block.splitlines() if line.startswith("tod-clean ")]
    assert [c[0] for c in commands] == ["train", "score", "filter", "train", "report"]
    shutil.copytree(REPO / "sample_data" / "photos", tmp_path / "sample_data" / "photos")
    before = _hashes(tmp_path / "sample_data")
    monkeypatch.chdir(tmp_path)
    for command in commands:
        previous = ["", *command[:-1]]
        shortened = [
            "2" if flag == "--epochs" else word for flag, word in zip(previous, command, strict=True)
        ]
        ok(invoke(*shortened, "-q"))
    kept = pd.read_csv(tmp_path / "photos-kept.csv")
    removed = pd.read_csv(tmp_path / "photos-removed.csv")
    assert len(kept) == 240 - 12 and len(removed) == 12
    assert all((tmp_path / path).is_file() for path in kept["image"])
    assert (tmp_path / "photos-report.html").is_file()
    assert _hashes(tmp_path / "sample_data") == before  # no image moved, changed or deleted


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


def _explain_and_report(run: Path, val: Path, tmp_path: Path) -> None:
    """explain names the training images and draws them on its page; the report shows thumbnails."""
    explained = tmp_path / "explained.csv"
    page = tmp_path / "explain.html"
    ok(invoke("explain", "--run", run, "--val", val, "-k", "2", "-o", explained, "--html", page, "-q"))
    frame = pd.read_csv(explained)
    assert len(frame) > 0 and frame["train_text"].str.endswith(".png").all()
    assert PNG_DATA_URI in page.read_text(encoding="utf-8")
    report = tmp_path / "report.html"
    ok(invoke("report", "--run", run, "--val", val, "--out", report, "-q"))
    assert PNG_DATA_URI in report.read_text(encoding="utf-8")


def test_csv_of_paths_with_a_tiny_vit(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "data" / "photos", per_class=4)
    train_csv = csv_of_paths(photos, tmp_path / "data" / "train.csv")
    model = tiny_vit(tmp_path / "vit")
    run = tmp_path / "run"
    ok(invoke("train", train_csv, "--model", model, "--run", run, "--epochs", "1", "--pooling", "cls", "-q"))
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert info["train"]["columns"]["image_col"] == "path" and info["encoder"]["model_type"] == "vit"
    ok(invoke("score", "--run", run, "--val", train_csv, "-q"))
    _explain_and_report(run, train_csv, tmp_path)
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
    _explain_and_report(run, parquet, tmp_path)
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


def test_a_broken_vision_model_folder_is_one_line_naming_the_option(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    broken = tiny_vit(tmp_path / "vit")
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    run = tmp_path / "run"
    user_error(
        invoke("train", photos, "--model", broken, "--run", run),
        f"--model {broken}: cannot load a vision encoder and image processor",
        absent=(run,),
    )
    with pytest.raises(tod_clean.ConfigError, match=f"model={re.escape(str(broken))}: cannot load a vision"):
        tod_clean.train(photos, run=run, model=str(broken))
    assert not run.exists()


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


@pytest.mark.parametrize("scope", ["layers:1", "ffn:1", "lora"])
def test_vit_inner_scopes_influence_equals_the_per_pair_loop(tmp_path: Path, scope: str) -> None:
    """Masks inside a ViT's layers: the split forward path (lower layers once per image, upper layers per
    pair) gives each pair's hidden minus exposed loss, as one forward per pair does."""
    from transformers import AutoModel

    from tod_clean.influence.gather import influence
    from tod_clean.modeling.vision import load_image_processor
    from tod_clean.scopes.lora import LoraSettings

    folder = tiny_vit(tmp_path / "m")
    table = read_table(str(image_folder(tmp_path / "photos", per_class=2)))
    encoded = encode_images(load_image_processor(folder), ImageColumn(table, "image"))
    torch.manual_seed(3)
    model = TodClassifier(
        AutoModel.from_pretrained(str(folder)),
        3,
        scope=Scope.parse(scope),
        keep_prob=0.3,
        mask_seed=4,
        lora=LoraSettings(rank=4, alpha=8.0),
    )
    with torch.no_grad():  # LoRA's B starts at zero, which would make its masks change nothing
        for name, parameter in model.named_parameters():
            if ".lora_B." in name or name.startswith("classifier."):
                parameter.normal_(0.0, 0.5)
    model.eval()
    keys = np.arange(100, 107, dtype=np.int64)
    labels = np.array([0, 0, 1, 1, 2, 2])
    expected = naive_pairs(model, keys, encoded, labels)  # type: ignore[arg-type]
    matrix_path = tmp_path / "pairs.npy"
    values = influence(model, keys, encoded, labels, matrix_path=matrix_path, batch_size=4, pair_batch=5)  # type: ignore[arg-type]
    np.testing.assert_allclose(np.load(matrix_path), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(values, expected.mean(1), rtol=1e-5, atol=1e-5)
    assert np.abs(expected).max() > 1e-3  # the sub-networks really differ


@pytest.mark.parametrize("scope", ["lora", "ffn:1"])
def test_vit_with_masks_inside_trains_scores_and_filters(tmp_path: Path, scope: str) -> None:
    photos = image_folder(tmp_path / "photos", per_class=3)
    model = tiny_vit(tmp_path / "vit")
    run = tmp_path / "run"
    ok(invoke("train", photos, "--model", model, "--scope", scope, "--run", run, "--epochs", "1", "-q"))
    scored = pd.read_csv(
        io.StringIO(ok(invoke("score", "--run", run, "--val", photos, "-o", "-", "-q")).output)
    )
    assert len(scored) == 9 and scored["influence"].notna().all() and scored["hidden_loss"].notna().all()
    kept = tmp_path / "kept.csv"
    ok(invoke("filter", "--run", run, "--drop-count", "2", "-o", kept, "-q"))
    assert len(pd.read_csv(kept)) == 7


@pytest.mark.parametrize("make", [tiny_deit, tiny_convnext], ids=["deit", "convnext"])
def test_other_vision_encoders_train_and_score(tmp_path: Path, make: object) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    model = make(tmp_path / "model")  # type: ignore[operator]
    run = tmp_path / "run"
    ok(invoke("train", photos, "--model", model, "--run", run, "--epochs", "1", "-q"))
    scored = ok(invoke("score", "--run", run, "--val", photos, "-o", "-", "-q"))
    assert len(pd.read_csv(io.StringIO(scored.output))) == 6


# ---- thumbnails in the report and in explain's page ----------------------------------------------------

COLOUR_NAMES = ["blue", "green", "red"]  # the image folder's labels, in the run's (sorted) order


def contradicting_images(root: Path, per_class: int, *, size: int) -> Path:
    """An image folder in which every picture is filed twice, under its colour and under the next one:
    whatever the model predicts, at least half the images are misclassified."""
    image_folder(root, per_class=per_class, seed=1, size=size)
    for i, colour in enumerate(COLOUR_NAMES):
        for path in sorted((root / colour).glob("0*.png")):
            shutil.copy(path, root / COLOUR_NAMES[(i + 1) % 3] / f"x{path.name}")
    return root


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """18 training images of 80 x 80 pixels (thumbnails shrink them to 64 x 64), scored on 18 validation
    images of which at least 9 are misclassified, the influence matrix written by score --matrix."""
    folder = tmp_path_factory.mktemp("image-run")
    photos = image_folder(folder / "photos", per_class=6, size=80)
    val = contradicting_images(folder / "val", per_class=3, size=80)
    run = folder / "run"
    ok(invoke("train", photos, "--run", run, "--epochs", "1", "--batch-size", "6", "--lr", "1e-3", "-q"))
    matrix = folder / "influence.npy"
    ok(invoke("score", "--run", run, "--val", val, "--matrix", matrix, "-q"))
    return SimpleNamespace(
        folder=folder,
        photos=photos,
        val=val,
        run=run,
        matrix=np.load(matrix),  # [train, val] float32, rows in the tables' order
        scores=pd.read_parquet(run / "scores.parquet"),
        train_names=[row["image"] for row in read_table(str(photos)).rows],
        val_names=[row["image"] for row in read_table(str(val)).rows],
    )


class Pictures(HTMLParser):
    """Every <img> of a page (its src and alt) and every link target."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "img":
            self.images.append((values["src"], values.get("alt", "")))
        self.links += [values[name] for name in ("href", "srcset", "action") if name in values]


def pictures(html: str) -> Pictures:
    parser = Pictures()
    parser.feed(html)
    return parser


def thumbnail_size(src: str) -> tuple[int, int]:
    """The size of the PNG a data URI holds, decoded in full (so it is a whole image)."""
    assert src.startswith(PNG_DATA_URI), src[:40]
    with Image.open(io.BytesIO(base64.b64decode(src[len(PNG_DATA_URI) :], validate=True))) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def assert_no_link_to_the_images(html: str, *folders: Path) -> None:
    found = pictures(html)
    assert found.links == [] and "file:" not in html
    assert all(src.startswith(PNG_DATA_URI) for src, _ in found.images)
    for folder in folders:  # the header names the folders, but no file in them
        assert str(folder) + "/" not in html


def cards(html: str) -> list[str]:
    return html.split('<section class="card">')[1:]


def card_images(card: str, kind: str) -> list[tuple[str, float, str | None]]:
    """(image name, influence, predicted label) of the training images of one kind in a card."""
    part = card.split(f'<div class="kind {kind}">')[1].split('<div class="kind')[0]
    found = []
    for figure in part.split('<figure class="picture">')[1:]:
        name = re.search(r'<span class="key"[^>]*>([^<]+)</span>', figure)
        value = re.search(r'<span class="num">([^<]+)</span>', figure)
        pred = re.search(r'predicted <span class="label">([^<]+)</span>', figure)
        assert name and value
        found.append((name.group(1), float(value.group(1)), pred.group(1) if pred else None))
    return found


def test_report_of_an_image_run_shows_thumbnails(image_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    ok(invoke("report", "--run", image_run.run, "--out", out, "--top", "5", "-q"))
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert_no_link_to_the_images(html, image_run.photos, image_run.val)
    thumbnails = [
        (src, alt) for src, alt in pictures(html).images if not alt.startswith(("histogram", "flagged"))
    ]
    assert thumbnails and all(thumbnail_size(src) == (64, 64) for src, _ in thumbnails)  # 80 px shrunk

    # the table of flagged rows: each image's thumbnail, its name, given label and prediction
    table = html.split('id="flagged"')[1].split('id="explanations"')[0]
    rows = table.split("<tr")[2:]
    assert len(rows) == 5
    scores = image_run.scores.set_index("row")
    for row in rows:
        number = int(re.findall(r'<td class="num">(\d+)</td>', row)[1])
        name = image_run.train_names[number]
        ((src, alt),) = pictures(row).images
        assert alt == name and f"<br>{name}</td>" in row and thumbnail_size(src) == (64, 64)
        labels = re.findall(r'<td class="label" title="([^"]+)">', row)
        assert labels == [scores.label[number], scores.hidden_pred[number]]

    # the misclassified validation images, at most MAX_EXPLAINED_IMAGES, each beside its most harmful and
    # most helpful training images: the matrix's most negative (among images labeled with the wrong
    # prediction) and most positive entries, found here by sorting its column
    section = html.split('id="explanations"')[1]
    assert "Misclassified validation images and the training images that hurt and helped them most" in section
    summary = re.search(r"gets (\d+) of 18 validation rows wrong", section)
    assert summary is not None and int(summary.group(1)) >= 9
    shown = cards(section)
    assert len(shown) == MAX_EXPLAINED_IMAGES == 8
    assert (
        f"The first 8 are shown with their training images (at most {MAX_EXPLAINED_IMAGES} images" in section
    )
    labels = np.array([scores.label[row] for row in range(len(image_run.train_names))])
    for card in shown:
        heading = re.search(
            r'validation row (\d+): label (\w+), predicted <span class="wrong">(\w+)</span>', card
        )
        assert heading is not None
        val_row, label, predicted = int(heading.group(1)), heading.group(2), heading.group(3)
        assert label != predicted and image_run.val_names[val_row].startswith(f"{label}/")
        (val_src, val_alt), *_ = pictures(card).images
        assert val_alt == image_run.val_names[val_row] and thumbnail_size(val_src) == (64, 64)
        column = image_run.matrix[:, val_row]
        wrong = np.flatnonzero(labels == predicted)
        expected_hurt = wrong[np.argsort(column[wrong], kind="stable")][:3]
        expected_help = np.argsort(-column, kind="stable")[:3]
        for kind, expected in (("hurt", expected_hurt), ("helped", expected_help)):
            found = card_images(card, kind)
            assert [name for name, _, _ in found] == [image_run.train_names[i] for i in expected]
            np.testing.assert_allclose([value for _, value, _ in found], column[expected], atol=2e-4)
            assert [pred for _, _, pred in found] == [scores.hidden_pred[i] for i in expected]
        assert len(pictures(card).images) == 1 + 3 + 3


def test_explain_html_of_an_image_row(image_run: SimpleNamespace, tmp_path: Path) -> None:
    page, out = tmp_path / "explain.html", tmp_path / "explained.csv"
    result = ok(
        invoke("explain", "--run", image_run.run, "--val", image_run.val, "--index", "4", "--out", out,
               "--html", page, "-k", "4")
    )  # fmt: skip
    assert image_run.val_names[4] in result.stderr  # the terminal names the image
    frame = pd.read_csv(out)
    html = page.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert_no_link_to_the_images(html, image_run.photos, image_run.val)
    (card,) = cards(html)
    found = pictures(card).images
    assert len(found) == 1 + 4 + 4 and all(thumbnail_size(src) == (64, 64) for src, _ in found)
    assert found[0][1] == image_run.val_names[4]
    for kind in ("hurt", "helped"):
        expected = frame[frame.kind == kind].sort_values("rank")
        shown = card_images(card, kind)
        assert [name for name, _, _ in shown] == list(expected.train_text)
        assert all(pred is None for _, _, pred in shown)  # explain reads no scores: labels only
        assert all(f'label <span class="label">{label}</span>' in card for label in expected.train_label)


def test_report_of_an_image_run_with_an_unreadable_image(image_run: SimpleNamespace, tmp_path: Path) -> None:
    """An image damaged since the run was scored: its thumbnail is left out, with a note; the page is
    still written."""
    photos = Path(shutil.copytree(image_run.photos, tmp_path / "photos"))
    csv_path = csv_of_paths(photos, tmp_path / "train.csv")
    run = tmp_path / "run"
    ok(invoke("train", csv_path, "--run", run, "--epochs", "1", "-q"))
    ok(invoke("score", "--run", run, "-q"))
    gone = read_table(str(csv_path)).rows[0]["path"]
    (tmp_path / gone).write_bytes(b"not an image any more")
    out = tmp_path / "report.html"
    ok(invoke("report", "--run", run, "--out", out, "--top", "18", "-q"))
    html = out.read_text(encoding="utf-8")
    assert "1 image could not be shown" in html and "is not an image file" in html
    assert "no picture</span>" in html
    assert len([alt for _, alt in pictures(html).images if alt.endswith(".png")]) == 17


# ---- found by an adversarial pass (session 5) ------------------------------------------------------------


def test_cleanse_on_image_folders(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=4)
    test = image_folder(tmp_path / "test", per_class=2, seed=1)
    before = _hashes(photos)
    out = tmp_path / "out"
    ok(
        invoke(
            "cleanse", photos, "--test", test, "--drop-count", "2", "--out-dir", out, "--epochs", "1", "-q"
        )
    )
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["complete"] and [arm["name"] for arm in metrics["arms"]] == ["before", "filtered"]
    manifest = pd.read_csv(out / "train.filtered.csv")
    assert len(manifest) == 10 and all((out / path).is_file() for path in manifest["image"])
    assert _hashes(photos) == before


def test_a_manifest_written_into_a_linked_folder_finds_its_images(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=3)
    run = tmp_path / "run"
    ok(invoke("train", photos, "--run", run, "--epochs", "1", "-q"))
    ok(invoke("score", "--run", run, "-q"))
    deep = tmp_path / "deep" / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "link").symlink_to(deep, target_is_directory=True)
    kept = tmp_path / "link" / "kept.csv"
    ok(invoke("filter", "--run", run, "--drop-count", "1", "-o", kept, "-q"))
    ok(invoke("train", kept, "--run", tmp_path / "again", "--epochs", "1", "-q"))
    assert (
        json.loads((tmp_path / "again" / "config.json").read_text(encoding="utf-8"))["train_file"]["rows"]
        == 8
    )


def test_rows_naming_images_by_relative_paths_are_not_copied_where_those_paths_break(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "data" / "photos", per_class=3)
    train_csv = csv_of_paths(photos, tmp_path / "data" / "train.csv")
    run = tmp_path / "run"
    ok(invoke("train", train_csv, "--run", run, "--epochs", "1", "-q"))
    ok(invoke("score", "--run", run, "-q"))
    elsewhere = tmp_path / "kept.csv"
    user_error(
        invoke("filter", "--run", run, "--drop-count", "1", "-o", elsewhere),
        "photos/blue/000.png",
        "would not resolve",
        absent=(elsewhere,),
    )
    ok(invoke("filter", "--run", run, "--drop-count", "1", "-o", tmp_path / "data" / "kept.csv", "-q"))
    out = tmp_path / "out"
    user_error(
        invoke("cleanse", train_csv, "--test", train_csv, "--drop-count", "1", "--out-dir", out),
        "--out-dir",
        "would not resolve",
        absent=(out,),
    )
    user_error(
        invoke("check", "--run", run, "--val", train_csv, "--halves", "5"),
        "would not resolve",
        absent=(run / "check",),
    )
    # absolute paths resolve from anywhere: cleanse runs
    absolute = tmp_path / "absolute.csv"
    lines = train_csv.read_text(encoding="utf-8").splitlines()
    absolute.write_text(
        "\n".join([lines[0], *(f"{tmp_path / 'data' / line}" for line in lines[1:])]) + "\n", encoding="utf-8"
    )
    ok(
        invoke(
            "cleanse",
            absolute,
            "--test",
            absolute,
            "--drop-count",
            "1",
            "--out-dir",
            out,
            "--epochs",
            "1",
            "-q",
        )
    )
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["complete"]
