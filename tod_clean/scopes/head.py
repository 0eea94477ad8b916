"""Scope ``head``: masks on the head's hidden units only; the encoder is shared by all instances.

The head mask sits between the head's activation and the classifier (``TodClassifier.classify``), so this
scope needs no hook and touches nothing inside the encoder: it takes any encoder. Its exact influence is
one matrix product per block of training instances (``head_only``).
"""

from __future__ import annotations

from tod_clean.scopes.base import Scope


class HeadScope(Scope):
    """Only the head's mask site (``HEAD_SITE``)."""

    kind = "head"
    inside_encoder = False
    freeze_unmasked = True
    head_only = True
