"""Images made in the tests with Pillow (no downloads): coloured noise squares, one colour per class, as
an image folder, a CSV of paths or a Parquet file with a ``datasets`` Image feature; and the tiny vision
models the tests train."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}


def square(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> Image.Image:
    pixels = np.array(colour)[None, None, :] + rng.normal(0, 30, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def image_folder(root: Path, per_class: int = 6, *, seed: int = 0, size: int = 32) -> Path:
    """``root/<colour>/<nnn>.png``: ``per_class`` images of each of three colours."""
    rng = np.random.default_rng(seed)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            square(colour, rng, size).save(root / label / f"{i:03d}.png")
    return root


def csv_of_paths(folder: Path, path: Path) -> Path:
    """A CSV of ``path`` (relative to the CSV's folder) and ``label`` for every image of an image folder."""
    lines = ["path,label"]
    for image in sorted(folder.glob("*/*.png")):
        lines.append(f"{image.relative_to(path.parent).as_posix()},{image.parent.name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def parquet_of_images(folder: Path, path: Path) -> Path:
    """A Parquet file with a ``datasets`` Image feature (bytes and path) and a label for every image."""
    import datasets

    images = sorted(folder.glob("*/*.png"))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    rows: dict[str, list[Any]] = {
        "image": [{"bytes": image.read_bytes(), "path": image.name} for image in images],
        "label": [image.parent.name for image in images],
    }
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def tiny_vit(folder: Path, *, seed: int = 0) -> Path:
    """A random 2-layer ViT for 32 x 32 images (``tests.conftest.tiny_config``) and its image processor,
    saved in ``folder``."""
    return _tiny_vision_transformer("vit", folder, seed)


def _tiny_vision_transformer(arch: str, folder: Path, seed: int) -> Path:
    import torch
    from transformers import AutoModel, ViTImageProcessorPil

    from tests.conftest import tiny_config

    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(arch)).save_pretrained(str(folder))
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def tiny_resnet(folder: Path, *, seed: int = 0) -> Path:
    """A random ResNet of two small stages and its image processor, saved in ``folder``."""
    import torch
    from transformers import ConvNextImageProcessorPil, ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ResNetModel(config).save_pretrained(str(folder))
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(str(folder))
    return folder


def tiny_deit(folder: Path, *, seed: int = 0) -> Path:
    """A random 2-layer DeiT for 32 x 32 images (a CLS and a distillation token) and its processor."""
    return _tiny_vision_transformer("deit", folder, seed)


def tiny_convnext(folder: Path, *, seed: int = 0) -> Path:
    """A random ConvNeXt of two small stages and its image processor."""
    import torch
    from transformers import ConvNextConfig, ConvNextImageProcessorPil, ConvNextModel

    torch.manual_seed(seed)
    ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).save_pretrained(
        str(folder)
    )
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(str(folder))
    return folder
