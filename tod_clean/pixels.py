"""Images as the model reads them: pixel values from the model's image processor, and the augmentation
of training batches.

What tokenisation is to a text (``tod_clean.encoding``), this is to an image: each image of a checked
column is decoded to RGB (``tod_clean.io.images``) and passed through the model's Hugging Face image
processor (resize, rescale, normalise, as the model's ``preprocessor_config.json`` says), ``ENCODE_CHUNK``
images at a time, into one float32 array held in memory. ``EncodedImages`` offers what ``EncodedRows``
offers the training loop and the influence code (``lengths``, ``batch``, ``subset``, ``between``): every
image has length 1, so the length-sorted batch orders reduce to plain ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import torch

from tod_clean.errors import InputError
from tod_clean.io.images import ImageColumn

ENCODE_CHUNK = 256  # images decoded and processed at a time

PIXELS = "pixel_values"  # the name vision encoders take their input by


@dataclass
class EncodedImages:
    """N processed images: ``pixels`` float32 ``[N, 3, H, W]``."""

    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``[N]`` of ones: an image is one row of one length (batch orders need no sorting)."""
        return np.ones(len(self.pixels), dtype=np.int64)

    def between(self, start: int, stop: int) -> EncodedImages:
        return EncodedImages(self.pixels[start:stop])

    def subset(self, indices: Sequence[int] | np.ndarray) -> EncodedImages:
        return EncodedImages(self.pixels[np.asarray(indices, dtype=np.int64)])

    def batch(
        self, indices: Sequence[int] | np.ndarray, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """``{"pixel_values": float32 [B, 3, H, W]}`` for the images at ``indices``."""
        chosen = self.pixels[np.asarray(indices, dtype=np.int64)]
        return {PIXELS: torch.from_numpy(np.ascontiguousarray(chosen)).to(device)}


def encode_images(processor: Any, images: ImageColumn) -> EncodedImages:
    """Pixel values of every image of ``images`` through ``processor`` (a Hugging Face image processor)."""
    parts: list[np.ndarray] = []
    decoded = images.images()
    while chunk := list(islice(decoded, ENCODE_CHUNK)):
        pixels = processor(images=chunk, return_tensors="np")[PIXELS]
        parts.append(np.asarray(pixels, dtype=np.float32))
    shapes = {part.shape[1:] for part in parts}
    if len(shapes) > 1:
        raise InputError(
            f"{images.table.source}: the model's image processor leaves images of several sizes "
            f"({', '.join('x'.join(map(str, shape)) for shape in sorted(shapes))}); use a model whose "
            "processor resizes them (do_resize in preprocessor_config.json)"
        )
    return EncodedImages(np.concatenate(parts) if parts else np.zeros((0, 3, 1, 1), np.float32))


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop and horizontal flip of each image of ``pixels`` ``[B, C, H, W]`` (same shape back).

    Each image is padded by 1/8 of its side on every edge (reflecting its border) and cropped back to its
    size at a random offset, then flipped left-right with probability 1/2; ``generator`` decides, so a
    seeded generator gives the same batch every time.
    """
    batch, _, height, width = pixels.shape
    pad_h, pad_w = max(1, height // 8), max(1, width // 8)
    padded = torch.nn.functional.pad(pixels, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    tops = torch.randint(0, 2 * pad_h + 1, (batch,), generator=generator).tolist()
    lefts = torch.randint(0, 2 * pad_w + 1, (batch,), generator=generator).tolist()
    flips = (torch.rand(batch, generator=generator) < 0.5).tolist()
    out = torch.empty_like(pixels)
    for i, (top, left, flip) in enumerate(zip(tops, lefts, flips, strict=True)):
        crop = padded[i, :, top : top + height, left : left + width]
        out[i] = crop.flip(-1) if flip else crop
    return out
