"""A scope is one class: a test-only scope registered from this file trains and scores through the normal
code path (config, classifier, split forward, training loop, influence), as a built-in scope does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import tod_clean
from tests.conftest import make_rows, random_batch, tiny_encoder
from tod_clean.errors import ConfigError
from tod_clean.masks import MaskMode
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import HEAD_SITE, Scope

EMBEDDING_SITE = 9000  # a site id no built-in scope uses
KIND = "test-embeddings"
FAST = {"batch_size": 4, "max_length": 16, "device": "cpu"}


@pytest.fixture(scope="module")
def embeddings_scope() -> Iterator[type[Scope]]:
    """Registers, for this module's tests only, a scope that also masks the embeddings' output (the
    hidden states entering layer 0), one mask per hidden dimension."""

    class EmbeddingsScope(Scope):
        kind = KIND

        def install_hooks(self, model: TodClassifier) -> None:
            def hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
                if args:
                    return (model.mask(args[0], EMBEDDING_SITE),) + tuple(args[1:]), kwargs
                first = next(iter(kwargs))
                return args, {**kwargs, first: model.mask(kwargs[first], EMBEDDING_SITE)}

            model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)

        def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
            return super().mask_sites(model) + [(EMBEDDING_SITE, model.hidden_size)]

        def site_name(self, site: int) -> str:
            return "the embeddings' output" if site == EMBEDDING_SITE else super().site_name(site)

        def split_layer(self, model: TodClassifier) -> int:
            return 0

        def mask_cached(self, model: TodClassifier, states: torch.Tensor, split: int) -> torch.Tensor:
            return model.mask(states, EMBEDDING_SITE)  # the cached states are the embeddings' output

    try:
        yield EmbeddingsScope
    finally:
        del Scope.registry[KIND]


def test_a_registered_scope_is_parsed_by_its_kind(embeddings_scope: type[Scope]) -> None:
    scope = Scope.parse(KIND)
    assert type(scope) is embeddings_scope and str(scope) == KIND
    with pytest.raises(ConfigError, match="takes no layer count"):
        Scope.parse(f"{KIND}:2")
    with pytest.raises(
        ConfigError, match=f"not one of: none, head, lora, lora-plain, channels, {KIND}, layers:K"
    ):
        Scope.parse("nope")
    with pytest.raises(ValueError, match="registered twice"):
        type("Again", (Scope,), {"kind": KIND})


def test_the_split_forward_pass_equals_the_full_one(embeddings_scope: type[Scope]) -> None:
    model = TodClassifier(
        tiny_encoder("bert", dropout=0.0), 3, scope=Scope.parse(KIND), keep_prob=0.5, mask_seed=7
    ).eval()
    assert model.mask_sites() == [(HEAD_SITE, 32), (EMBEDDING_SITE, 32)]
    batch = random_batch(4, 9)
    keys = torch.arange(4, dtype=torch.int64) + 11
    with torch.no_grad():
        full = model(batch)
        lower = model.encode_lower(batch)
        for mode in (MaskMode.EXPOSED, MaskMode.HIDDEN):
            masked = model(batch, keys, mode)
            assert not torch.allclose(masked, full)
            torch.testing.assert_close(model.forward_upper(lower, batch, keys, mode), masked)


def test_a_registered_scope_trains_and_scores(
    embeddings_scope: type[Scope], tmp_path: Path, tiny_model_dir: Path
) -> None:
    frame = pd.DataFrame(make_rows(12))
    run = tod_clean.train(
        frame, run=tmp_path / "run", scope=KIND, model=str(tiny_model_dir), epochs=1, **FAST
    )
    assert json.loads((run.path / "config.json").read_text())["train"]["scope"] == KIND
    scores = run.score(val=pd.DataFrame(make_rows(6, offset=40)))
    assert len(scores) == 12
    assert np.isfinite(scores["influence"]).all()
    assert np.isfinite(scores["hidden_loss"]).all() and np.isfinite(scores["exposed_loss"]).all()
