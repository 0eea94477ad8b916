"""Instance masks for turn-over dropout, generated from an integer hash (no storage).

Every training instance z_i owns a binary mask m(z_i) over the units of each mask site. The mask is a
pure function of ``(mask_seed, instance_key, site, unit)``: a counter-based hash evaluated on the fly, so
nothing is stored (O(1) memory) and the same key gives the same mask on every device and in every run.

All arithmetic is done on 32-bit values held in int64 tensors, and no intermediate exceeds 2**49, so the
result is exact (bit-identical) on CPU and GPU: no floating point and no signed overflow is involved.

Mask schemes (recorded in a run's config.json, so a run always scores with the masks it trained with):

- scheme 1 (tod-clean 0.1): the 64-bit key was folded into one 32-bit hash state, so two instances got
  identical masks with probability 2**-32 per pair (about N**2 / 2**33 pairs: ten at 300,000 rows); ids
  were hashed in their text form, so ``1`` and ``1.0`` (the same id to the duplicate check) differed.
- scheme 2 (current): two 32-bit lanes carry the whole key, and the map from key to lane pair is a
  bijection, so distinct keys never share a hash state; ids are hashed in the canonical form the duplicate
  check uses (an integral float is its integer).

Scaling follows inverted dropout with the true keep probability ``p``: the *exposed* sub-network multiplies
kept units by ``1/p`` and the *hidden* sub-network (the flipped mask) multiplies the other units by
``1/(1-p)``, so both are unbiased estimates of the full network's activations.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Protocol, TypedDict

import torch

_MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9
_LANE_SALT = 0x85EBCA6B

MASK_SCHEME = 2  # the scheme new runs use
MASK_SCHEMES = (1, 2)


class MaskOptions(TypedDict):
    """The settings that draw instance masks, as keywords (``TodClassifier``, ``head_influence_blocks``)."""

    keep_prob: float
    mask_seed: int
    mask_scheme: int
    mask_groups: int


class DrawsMasks(Protocol):
    """Anything that holds the mask settings: a ``TrainConfig`` (resolved) or a ``TodClassifier``."""

    @property
    def keep_prob(self) -> float | None: ...
    @property
    def mask_seed(self) -> int | None: ...
    @property
    def mask_scheme(self) -> int: ...
    @property
    def mask_groups(self) -> int: ...


def mask_options(source: DrawsMasks) -> MaskOptions:
    """``source``'s mask settings, to pass on as keywords (its keep_prob and mask_seed resolved)."""
    assert source.keep_prob is not None and source.mask_seed is not None
    return MaskOptions(
        keep_prob=source.keep_prob,
        mask_seed=source.mask_seed,
        mask_scheme=source.mask_scheme,
        mask_groups=source.mask_groups,
    )


class MaskMode(str, Enum):
    """Which network a forward pass runs."""

    FULL = "full"  # no instance mask at all
    EXPOSED = "exposed"  # the units m(z_i) that trained on z_i, scaled by 1/p
    HIDDEN = "hidden"  # the flipped units 1 - m(z_i) that never saw z_i, scaled by 1/(1-p)


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """``(x * constant) mod 2**32`` for ``x`` in [0, 2**32), without ever exceeding 2**49."""
    high = x * (constant >> 16)
    high &= 0xFFFF
    high <<= 16
    result = x * (constant & 0xFFFF)
    result += high
    result &= _MASK32
    return result


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit finaliser with strong avalanche ("lowbias32", C. Wellons).

    Works in place on its own intermediates (fewer allocations); the input is left unchanged.
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32(x, 0x846CA68B)
    x ^= x >> 16
    return x


def key_state(mask_seed: int, instance_keys: torch.Tensor, site: int) -> torch.Tensor:
    """Scheme 1 hash state of each (seed, key, site): int64 ``[B]`` in [0, 2**32) (one 32-bit lane)."""
    keys = instance_keys.to(torch.int64)
    key_low = keys & _MASK32
    key_high = (keys >> 32) & _MASK32  # arithmetic shift, then the mask keeps the right 32 bits
    state = torch.full_like(keys, (mask_seed & _MASK32) ^ _GOLDEN32)
    state = _mix32(state)
    state = _mix32(state ^ key_high)
    state = _mix32(state ^ key_low)
    return _mix32(state ^ (site & _MASK32))


def key_lanes(mask_seed: int, instance_keys: torch.Tensor, site: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scheme 2 hash state of each (seed, key, site): two int64 ``[B]`` lanes in [0, 2**32).

    For a fixed seed and site the map key -> (lane_a, lane_b) is a bijection of 64-bit values (each step
    XORs in a value that does not depend on the lane it changes, then applies the bijective ``_mix32``),
    so two distinct keys never share a state and their masks differ except by chance, unit by unit.
    """
    keys = instance_keys.to(torch.int64)
    key_low = keys & _MASK32
    key_high = (keys >> 32) & _MASK32
    seed_state = _mix32(torch.tensor((mask_seed & _MASK32) ^ _GOLDEN32, dtype=torch.int64))
    lane_a = _mix32(key_low ^ seed_state ^ (site & _MASK32))
    lane_b = _mix32(key_high ^ lane_a ^ _LANE_SALT)
    return lane_a, lane_b


def unit_hash(
    mask_seed: int, instance_keys: torch.Tensor, site: int, num_units: int, scheme: int = MASK_SCHEME
) -> torch.Tensor:
    """Uniform 32-bit hash of every (key, unit): int64 tensor ``[B, num_units]`` in [0, 2**32)."""
    units = torch.arange(num_units, dtype=torch.int64, device=instance_keys.device)
    if scheme == 1:
        state = key_state(mask_seed, instance_keys, site)
        mixed = _mix32(state[:, None] ^ units[None, :])
        return _mix32(mixed ^ _GOLDEN32)
    lane_a, lane_b = key_lanes(mask_seed, instance_keys, site)
    mixed = _mix32(lane_a[:, None] ^ units[None, :])
    mixed ^= lane_b[:, None]
    return _mix32(mixed)


def keep_threshold(keep_prob: float) -> int:
    """The integer threshold below which a unit's hash means "kept" (exposed)."""
    return int(round(keep_prob * 2**32))


def instance_masks(
    mask_seed: int,
    instance_keys: torch.Tensor,
    site: int,
    num_units: int,
    keep_prob: float,
    scheme: int = MASK_SCHEME,
    groups: int = 0,
) -> torch.Tensor:
    """Exposed-unit masks m(z_i): bool tensor ``[B, num_units]``, True where unit is kept for instance.

    ``instance_keys`` is an int64 tensor ``[B]``. Each unit is kept with probability ``keep_prob``,
    independently across units, sites and keys.

    With ``groups = K >= 2`` the units of every site are dealt into K disjoint groups (unit u in group
    u mod K) and each instance exposes exactly one group, the same at every site, chosen by a hash of its
    key: the network is K sub-networks that never share a trainable unit, each trained on its own 1/K of
    the rows, so an instance's hidden sub-network (the other K - 1 groups) is an exact out-of-fold model.
    ``keep_prob`` must then be 1/K.
    """
    if groups >= 2:
        _, lane_b = key_lanes(mask_seed, instance_keys, 0)  # site 0 for all sites: one group per instance
        group = lane_b % groups
        units = torch.arange(num_units, dtype=torch.int64, device=instance_keys.device) % groups
        return units[None, :] == group[:, None]
    return unit_hash(mask_seed, instance_keys, site, num_units, scheme) < keep_threshold(keep_prob)


def apply_mask(
    activations: torch.Tensor,
    exposed_mask: torch.Tensor,
    mode: MaskMode,
    keep_prob: float,
) -> torch.Tensor:
    """Apply the exposed or hidden sub-network to ``activations`` of shape ``[B, ..., U]``.

    ``exposed_mask`` is bool ``[B, U]`` and is broadcast over the middle (token) dimensions.
    """
    if mode is MaskMode.FULL:
        return activations
    shape = (exposed_mask.shape[0],) + (1,) * (activations.dim() - 2) + (exposed_mask.shape[1],)
    mask = exposed_mask.view(shape)
    if mode is MaskMode.HIDDEN:
        mask = ~mask
        scale = 1.0 / (1.0 - keep_prob)
    else:
        scale = 1.0 / keep_prob
    return activations * (mask.to(activations.dtype) * scale)


def key_from_id(value: object, scheme: int = MASK_SCHEME) -> int:
    """A stable signed 64-bit instance key for an id value (its text form, hashed with BLAKE2b).

    From scheme 2 on, an integral float id is hashed as its integer (``1.0`` as ``1``): the duplicate
    check treats them as one id, so they must get one mask.
    """
    if scheme >= 2 and isinstance(value, float) and value.is_integer():
        value = int(value)
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)
