"""Instance masks: a pure function of (mask_seed, key, site, unit), equal to a plain-integer reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tod_clean.masks import (
    MaskMode,
    apply_mask,
    instance_masks,
    keep_threshold,
    key_from_id,
    key_lanes,
    key_state,
    unit_hash,
)

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9

# ---- a reference implementation with Python integers -----------------------------------------------


def ref_mix32(x: int) -> int:
    x &= M32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    x ^= x >> 16
    return x


def ref_key_state(seed: int, key: int, site: int) -> int:
    low = key & M32
    high = (key >> 32) & M32  # two's complement high word, also for negative keys
    state = ref_mix32((seed & M32) ^ GOLDEN)
    state = ref_mix32(state ^ high)
    state = ref_mix32(state ^ low)
    return ref_mix32(state ^ (site & M32))


def ref_lanes(seed: int, key: int, site: int) -> tuple[int, int]:
    """Scheme 2: the whole 64-bit key in two 32-bit lanes."""
    low = key & M32
    high = (key >> 32) & M32
    seed_state = ref_mix32((seed & M32) ^ GOLDEN)
    lane_a = ref_mix32(low ^ seed_state ^ (site & M32))
    lane_b = ref_mix32(high ^ lane_a ^ 0x85EBCA6B)
    return lane_a, lane_b


def ref_unit_hash(seed: int, key: int, site: int, unit: int, scheme: int = 2) -> int:
    if scheme == 1:
        return ref_mix32(ref_mix32(ref_key_state(seed, key, site) ^ unit) ^ GOLDEN)
    lane_a, lane_b = ref_lanes(seed, key, site)
    return ref_mix32(ref_mix32(lane_a ^ unit) ^ lane_b)


def ref_mask(seed: int, key: int, site: int, num_units: int, keep_prob: float, scheme: int = 2) -> list[bool]:
    threshold = int(round(keep_prob * 2**32))
    return [ref_unit_hash(seed, key, site, u, scheme) < threshold for u in range(num_units)]


KEYS = [
    0,
    1,
    2,
    -1,
    -2,
    7,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**32 + 5,
    2**40 + 3,
    -(2**40) - 7,
    2**63 - 1,
    -(2**63),
    123456789012345678,
]
SEEDS = [0, 1, 42, 2**32 + 3, -5]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("site", [0, 1000, 1001, 2003])
@pytest.mark.parametrize("scheme", [1, 2])
def test_masks_equal_python_int_reference(seed: int, site: int, scheme: int) -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    if scheme == 1:
        states = key_state(seed, keys, site)
        assert states.tolist() == [ref_key_state(seed, k, site) for k in KEYS]
    else:
        lane_a, lane_b = key_lanes(seed, keys, site)
        assert list(zip(lane_a.tolist(), lane_b.tolist(), strict=True)) == [
            ref_lanes(seed, k, site) for k in KEYS
        ]
    hashes = unit_hash(seed, keys, site, 19, scheme)
    assert hashes.dtype == torch.int64
    assert hashes.tolist() == [[ref_unit_hash(seed, k, site, u, scheme) for u in range(19)] for k in KEYS]
    masks = instance_masks(seed, keys, site, 19, 0.3, scheme)
    assert masks.dtype == torch.bool
    assert masks.tolist() == [ref_mask(seed, k, site, 19, 0.3, scheme) for k in KEYS]


def _scheme1_collision(seed: int, site: int) -> tuple[int, int]:
    """Two distinct 64-bit keys whose scheme-1 hash states are equal (the 32-bit fold made this easy)."""
    state = ref_mix32((seed & M32) ^ GOLDEN)
    # key (high 0, low 0) and key (high 1, low x) collide when mix(state ^ 0) ^ 0 == mix(state ^ 1) ^ x
    low = ref_mix32(state) ^ ref_mix32(state ^ 1)
    first, second = 0, (1 << 32) | low
    assert ref_key_state(seed, first, site) == ref_key_state(seed, second, site)
    return first, second


@pytest.mark.parametrize("seed", [0, 5])
def test_scheme_2_keeps_keys_apart_that_scheme_1_folded_together(seed: int) -> None:
    first, second = _scheme1_collision(seed, 0)
    keys = torch.tensor([first, second], dtype=torch.int64)
    old = instance_masks(seed, keys, 0, 256, 0.5, scheme=1)
    assert torch.equal(old[0], old[1])  # scheme 1: two instances, one mask
    new = instance_masks(seed, keys, 0, 256, 0.5, scheme=2)
    assert not torch.equal(new[0], new[1])


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    second=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_scheme_2_lanes_are_a_bijection_of_the_key(first: int, second: int, seed: int) -> None:
    lanes = key_lanes(seed, torch.tensor([first, second], dtype=torch.int64), 3)
    same_state = lanes[0][0] == lanes[0][1] and lanes[1][0] == lanes[1][1]
    assert bool(same_state) == (first == second)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=-(2**40), max_value=2**40),
    key=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    site=st.integers(min_value=0, max_value=5000),
    keep_prob=st.floats(min_value=0.01, max_value=0.99),
)
def test_masks_equal_reference_for_any_key(seed: int, key: int, site: int, keep_prob: float) -> None:
    got = instance_masks(seed, torch.tensor([key]), site, 11, keep_prob)[0].tolist()
    assert got == ref_mask(seed, key, site, 11, keep_prob)


def test_hash_values_stay_in_32_bits() -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    hashes = unit_hash(3, keys, 0, 257)
    assert int(hashes.min()) >= 0 and int(hashes.max()) < 2**32
    # the hash is not degenerate: almost all values differ
    assert hashes.unique().numel() > 0.99 * hashes.numel()


def test_masks_are_deterministic_across_calls_and_batches() -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    first = instance_masks(7, keys, 1000, 64, 0.5)
    second = instance_masks(7, keys.clone(), 1000, 64, 0.5)
    assert torch.equal(first, second)
    # a row's mask does not depend on the other rows of the batch, nor on their order
    for index, key in enumerate(KEYS):
        alone = instance_masks(7, torch.tensor([key]), 1000, 64, 0.5)[0]
        assert torch.equal(alone, first[index])
    reversed_masks = instance_masks(7, keys.flip(0), 1000, 64, 0.5)
    assert torch.equal(reversed_masks.flip(0), first)
    # int32 keys give the same masks as int64 ones
    small = torch.tensor([0, 1, -1, 12345], dtype=torch.int32)
    assert torch.equal(instance_masks(7, small, 0, 16, 0.5), instance_masks(7, small.long(), 0, 16, 0.5))


def test_masks_leave_their_inputs_unchanged() -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    before = keys.clone()
    instance_masks(9, keys, 1000, 33, 0.5)
    key_state(9, keys, 0)
    assert torch.equal(keys, before)
    activations = torch.randn(len(KEYS), 33)
    copy = activations.clone()
    apply_mask(activations, instance_masks(9, keys, 0, 33, 0.5), MaskMode.HIDDEN, 0.5)
    assert torch.equal(activations, copy)


@pytest.mark.gpu
def test_masks_identical_on_cuda() -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    for site in (0, 1001, 2001):
        cpu = unit_hash(11, keys, site, 300)
        gpu = unit_hash(11, keys.cuda(), site, 300)
        assert gpu.device.type == "cuda"
        assert torch.equal(gpu.cpu(), cpu)
        assert torch.equal(
            instance_masks(11, keys.cuda(), site, 300, 0.37).cpu(), instance_masks(11, keys, site, 300, 0.37)
        )


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.9])
def test_keep_rate_matches_keep_prob(keep_prob: float) -> None:
    keys = torch.arange(-1000, 1000, dtype=torch.int64) * 7919
    masks = instance_masks(5, keys, 0, 256, keep_prob)
    total = masks.numel()
    rate = masks.float().mean().item()
    sigma = math.sqrt(keep_prob * (1 - keep_prob) / total)
    assert abs(rate - keep_prob) < 5 * sigma
    # per unit and per key the rate is right too (no unit or key is stuck)
    per_unit = masks.float().mean(0)
    unit_sigma = math.sqrt(keep_prob * (1 - keep_prob) / masks.shape[0])
    assert (per_unit - keep_prob).abs().max().item() < 5 * unit_sigma
    per_key = masks.float().mean(1)
    key_sigma = math.sqrt(keep_prob * (1 - keep_prob) / masks.shape[1])
    assert (per_key - keep_prob).abs().max().item() < 6 * key_sigma


def test_keep_threshold() -> None:
    assert keep_threshold(0.5) == 2**31
    assert keep_threshold(0.25) == 2**30
    assert 0 < keep_threshold(1e-9) < keep_threshold(0.1) < keep_threshold(0.9) < 2**32


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.8])
def test_exposed_and_hidden_are_complementary(keep_prob: float) -> None:
    torch.manual_seed(0)
    activations = torch.randn(6, 5, 40, dtype=torch.float64)
    keys = torch.tensor([3, -9, 2**33, 0, 17, 5])
    exposed_mask = instance_masks(2, keys, 0, 40, keep_prob)
    exposed = apply_mask(activations, exposed_mask, MaskMode.EXPOSED, keep_prob)
    hidden = apply_mask(activations, exposed_mask, MaskMode.HIDDEN, keep_prob)
    # p * exposed + (1 - p) * hidden is the full activation
    torch.testing.assert_close(
        exposed * keep_prob + hidden * (1 - keep_prob), activations, rtol=1e-12, atol=1e-12
    )
    # supports: exposed lives exactly on the mask, hidden exactly off it, for every token
    expanded = exposed_mask[:, None, :].expand_as(activations)
    assert torch.equal(exposed != 0, expanded)
    assert torch.equal(hidden != 0, ~expanded)
    # scales are the inverted-dropout ones
    torch.testing.assert_close(exposed[expanded], activations[expanded] / keep_prob)
    torch.testing.assert_close(hidden[~expanded], activations[~expanded] / (1 - keep_prob))


def test_apply_mask_two_dimensional_and_full_mode() -> None:
    activations = torch.randn(3, 8)
    exposed_mask = instance_masks(0, torch.tensor([1, 2, 3]), 0, 8, 0.5)
    assert apply_mask(activations, exposed_mask, MaskMode.FULL, 0.5) is activations
    exposed = apply_mask(activations, exposed_mask, MaskMode.EXPOSED, 0.5)
    torch.testing.assert_close(exposed, activations * exposed_mask * 2.0)
    hidden = apply_mask(activations, exposed_mask, MaskMode.HIDDEN, 0.5)
    torch.testing.assert_close(hidden, activations * (~exposed_mask) * 2.0)


def test_full_mode_returns_input_unchanged_for_any_shape() -> None:
    activations = torch.randn(2, 3, 4, 5)
    out = apply_mask(activations, torch.zeros(2, 5, dtype=torch.bool), MaskMode.FULL, 0.3)
    assert torch.equal(out, activations)


def test_sites_and_seeds_give_different_masks() -> None:
    keys = torch.arange(50)
    base = instance_masks(0, keys, 0, 128, 0.5)
    for other in (
        instance_masks(0, keys, 1, 128, 0.5),
        instance_masks(0, keys, 1000, 128, 0.5),
        instance_masks(1, keys, 0, 128, 0.5),
    ):
        agreement = (other == base).float().mean().item()
        assert 0.4 < agreement < 0.6  # independent masks agree on about half the units
    # different keys differ too, including keys that share their low 32 bits
    pair = instance_masks(0, torch.tensor([5, 5 + 2**32, -5]), 0, 256, 0.5)
    assert not torch.equal(pair[0], pair[1])
    assert not torch.equal(pair[0], pair[2])


def test_integral_float_ids_hash_like_their_integer_from_scheme_2() -> None:
    # the duplicate check treats 1 and 1.0 as one id, so they must get one mask
    assert key_from_id(1.0) == key_from_id(1) == key_from_id("1")
    assert key_from_id(-3.0) == key_from_id(-3)
    assert key_from_id(1.5) != key_from_id(1)
    assert key_from_id(1.0, scheme=1) != key_from_id(1, scheme=1)  # what runs trained before did


def test_key_from_id_is_stable() -> None:
    assert key_from_id(1) == key_from_id("1")
    assert key_from_id("m001") == key_from_id("m001")
    assert key_from_id("m001") != key_from_id("m002")
    key = key_from_id("hello")
    assert isinstance(key, int) and -(2**63) <= key < 2**63
    # a pinned value: the key must not change between versions, or saved runs would lose their masks
    import hashlib

    expected = int.from_bytes(hashlib.blake2b(b"hello", digest_size=8).digest(), "little", signed=True)
    assert key == expected
    # keys fit in an int64 tensor
    torch.tensor([key_from_id(v) for v in ("a", "b", 3, "\u00e9t\u00e9")], dtype=torch.int64)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.integers(), st.text()))
def test_key_from_id_is_a_function_of_the_text_form(value: object) -> None:
    assert key_from_id(value) == key_from_id(str(value))
    assert -(2**63) <= key_from_id(value) < 2**63


@pytest.mark.parametrize("groups", [2, 3])
def test_group_masks_expose_one_disjoint_group_the_same_at_every_site(groups: int) -> None:
    keys = torch.tensor(KEYS, dtype=torch.int64)
    by_site = [instance_masks(4, keys, site, 12, 1 / groups, groups=groups) for site in (0, 1000, 3005)]
    units = torch.arange(12) % groups
    for masks in by_site:
        for row in masks:
            exposed_groups = units[row].unique()
            assert exposed_groups.numel() == 1  # exactly one group ...
            assert torch.equal(row, units == exposed_groups[0])  # ... and all of it
        assert torch.equal(masks, by_site[0][:, :12])  # the same group at every site
    # both groups are used by some key (the hash spreads instances over the groups)
    many = instance_masks(4, torch.arange(200), 0, groups, 1 / groups, groups=groups)
    assert torch.equal(many.sum(0) > 0, torch.ones(groups, dtype=torch.bool))
