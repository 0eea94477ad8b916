"""The split forward pass (lower layers once, upper layers per mask) equals the full forward pass."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import ARCHITECTURES, VISION_ARCHITECTURES, random_batch, random_pixels
from tests.modeling.test_classifier import SCOPES, build
from tod_clean.masks import MaskMode

# ---- split forward == forward ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES + VISION_ARCHITECTURES)
def test_split_forward_equals_forward(arch: str) -> None:
    batch = random_pixels(4) if arch in VISION_ARCHITECTURES else random_batch(4, 9)
    keys = torch.tensor([0, -7, 2**40 + 1, 12345])
    for scope in SCOPES:
        model = build(arch, scope).eval()
        with torch.no_grad():
            outputs = {}
            for mode in MaskMode:
                direct = model(batch, keys, mode)
                split = model.forward_upper(model.encode_lower(batch), batch, keys, mode)
                assert direct.shape == (4, 3) and direct.dtype == torch.float32
                torch.testing.assert_close(split, direct, rtol=1e-5, atol=1e-6, msg=f"{arch} {scope} {mode}")
                outputs[mode] = direct
            full_without_keys = model(batch)
        torch.testing.assert_close(outputs[MaskMode.FULL], full_without_keys, rtol=0, atol=0)
        if scope == "none":
            assert torch.equal(outputs[MaskMode.EXPOSED], outputs[MaskMode.FULL])
            assert torch.equal(outputs[MaskMode.HIDDEN], outputs[MaskMode.FULL])
        else:
            for row in range(4):  # every row's sub-networks differ from each other and from the full one
                assert not torch.allclose(outputs[MaskMode.EXPOSED][row], outputs[MaskMode.HIDDEN][row])
                assert not torch.allclose(outputs[MaskMode.EXPOSED][row], outputs[MaskMode.FULL][row])


@pytest.mark.parametrize("arch", ["bert", "deberta-v2"])
@pytest.mark.parametrize("scope", ["head", "layers:1", "layers:2", "ffn:1"])
def test_forward_upper_with_shared_instances_matches_expanded_keys(arch: str, scope: str) -> None:
    """``rows`` maps pair rows to a few distinct keys: the same as passing each row its key."""
    model = build(arch, scope).eval()
    batch = random_batch(3, 7, seed=5)
    keys = torch.tensor([11, -3])
    rows = torch.arange(2).repeat_interleave(3)  # instance 0 for rows 0-2, instance 1 for rows 3-5
    paired = {name: value.repeat(2, 1) for name, value in batch.items()}
    with torch.no_grad():
        lower = model.encode_lower(batch)
        pair_lower = lower.repeat(2, *([1] * (lower.dim() - 1)))
        for mode in (MaskMode.EXPOSED, MaskMode.HIDDEN):
            shared = model.forward_upper(pair_lower, paired, keys, mode, rows)
            expanded = model(paired, keys[rows], mode)
            torch.testing.assert_close(shared, expanded, rtol=1e-5, atol=1e-6)
