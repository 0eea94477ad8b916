"""Vision encoders and their image processors: the embedded from-scratch default, or a Hugging Face
vision model from a local folder (or the local cache), each way it can fail refused with one clear error.

The default (``--model tiny-resnet``, what ``--model``'s default means for image rows) is a small ResNet
built from a ``transformers`` ``ResNetConfig`` with random weights: no pretrained vision weights ship
offline, and the paper's reference code trained its image networks from scratch too. It takes 32 x 32
images (its processor resizes every image to that) and has about 0.3 M parameters: a few minutes an epoch
for 10,000 images on 2 CPU cores. Its config is saved in the run like any encoder's, so the run rebuilds
it with ``AutoModel.from_config`` as it rebuilds a text encoder.

A folder is read with ``AutoModel`` (safetensors only) and ``AutoImageProcessor`` (its
``preprocessor_config.json``): ViT, DeiT, ResNet, ConvNeXt and others whose ``AutoModel`` returns
``last_hidden_state`` (``[B, T, D]`` tokens, or ``[B, C, h, w]`` feature maps, whose positions the
classifier pools as tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tod_clean.config import DEFAULT_IMAGE_MODEL
from tod_clean.errors import ConfigError
from tod_clean.modeling.loading import check_model_folder, errors_only, load_encoder_and

DEFAULT_IMAGE_SIZE = 32
PROCESSOR_FILE = "preprocessor_config.json"


def default_image_encoder() -> tuple[nn.Module, Any]:
    """The embedded from-scratch ResNet (random weights, from the global torch seed) and its processor."""
    from transformers import ResNetConfig, ResNetModel, ViTImageProcessorPil

    config = ResNetConfig(
        num_channels=3,
        embedding_size=32,
        hidden_sizes=[32, 64, 128],
        depths=[1, 1, 1],
        layer_type="basic",
        hidden_act="relu",
    )
    processor = ViTImageProcessorPil(
        size={"height": DEFAULT_IMAGE_SIZE, "width": DEFAULT_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.25, 0.25],
    )
    return ResNetModel(config), processor


def load_image_processor(folder: str | Path) -> Any:
    """The image processor saved in ``folder`` (its ``preprocessor_config.json``), no download."""
    from transformers import AutoImageProcessor

    with errors_only("transformers"):  # it warns that its torchvision backend is missing: Pillow's is wanted
        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)


def load_vision(model_name: str) -> tuple[nn.Module, Any]:
    """The vision encoder and image processor of ``model_name``: the embedded default, a local model
    folder or a hub name in the local cache."""
    if model_name == DEFAULT_IMAGE_MODEL:
        return default_image_encoder()
    from transformers import AutoImageProcessor

    local = check_model_folder(model_name, model_name)
    path = str(Path(model_name).expanduser()) if local else model_name  # "~/models/x": that folder
    if local and not (Path(model_name).expanduser() / PROCESSOR_FILE).is_file():
        raise ConfigError(
            f"--model {model_name}: no {PROCESSOR_FILE} in the folder, so tod-clean does not know how the "
            "model wants its images; save the model's image processor there (processor.save_pretrained), or "
            f"use --model {DEFAULT_IMAGE_MODEL}"
        )

    def load_processor(local_files_only: bool) -> Any:
        # transformers warns that its torchvision image backend is missing and it uses Pillow's, as wanted
        with errors_only("transformers"):
            return AutoImageProcessor.from_pretrained(path, local_files_only=local_files_only)

    encoder, processor = load_encoder_and(
        model_name, path, local, load_processor, what="a vision encoder and image processor"
    )
    if getattr(encoder, "main_input_name", None) != "pixel_values":
        raise ConfigError(
            f"--model {model_name}: a {type(encoder).__name__}, which does not read images; give a vision "
            f"model (ViT, DeiT, ResNet, ConvNeXt...) or --model {DEFAULT_IMAGE_MODEL}"
        )
    return encoder, processor
