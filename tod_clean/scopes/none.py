"""Scope ``none``: no instance masks, an ordinary fine-tune (the baseline, and the retraining step)."""

from __future__ import annotations

from tod_clean.scopes.base import Scope


class NoneScope(Scope):
    """No mask site; the encoder and head train as usual. Takes any encoder."""

    kind = "none"
    masked = False
    inside_encoder = False
