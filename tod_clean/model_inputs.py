"""What the model reads of its instances: token ids of texts (``tod_clean.encoding``) or pixel values of
images (``tod_clean.pixels``), made by the run's preprocessor (a tokenizer or an image processor)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tod_clean.encoding import EncodedRows, encode_texts
from tod_clean.instances import Instances
from tod_clean.pixels import EncodedImages, encode_images

Encoded = EncodedRows | EncodedImages


def encode_instances(
    preprocessor: Any,
    instances: Instances,
    max_length: int,
    *,
    cache_dir: Path | None = None,
    write_cache: bool = False,
) -> Encoded:
    """The model inputs of ``instances``: their images' pixel values, or their texts' token ids
    (``max_length``, ``cache_dir`` and ``write_cache`` as ``encode_texts`` takes them; images are not
    cached)."""
    if instances.images is not None:
        return encode_images(preprocessor, instances.images)
    assert instances.texts is not None
    return encode_texts(
        preprocessor,
        instances.texts,
        instances.text_pairs,
        max_length,
        cache_dir=cache_dir,
        write_cache=write_cache,
    )
