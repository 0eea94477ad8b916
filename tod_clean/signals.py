"""The table of signals: every score column that rows can be ranked by, what it means, which end of it marks
a row to remove, and what a run needs to score it.

For training instance z_i with exposed sub-network m(z_i) and hidden sub-network 1 - m(z_i):

- ``exposed_loss``   L(exposed_i, z_i): loss of the sub-network that trained on z_i
- ``hidden_loss``    L(hidden_i, z_i): loss of the sub-network that hides z_i (out-of-sample only as far as
  the scope makes it)
- ``full_loss``      L(full, z_i): the whole network, no instance mask
- ``self_influence`` hidden_loss - exposed_loss on z_i itself (high: z_i had to be memorised)
- ``influence``      mean over validation rows z of z_i's influence on z (negative: z_i hurts): by default
  (``--influence auto``) gauss-newton's estimate of the change of L(z) when z_i is left out; with
  ``--influence turn-over``, L(hidden_i, z) - L(exposed_i, z)
- ``hidden_prob``, ``full_prob``: the hidden sub-network's and the full network's probability of the label

``filter`` ranks by these, ``score`` writes them and ``report`` describes them, all from ``SIGNAL_TABLE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Signal:
    """One score column.

    ``meaning``: the sentence reports show for it. ``worse``: the end that marks a row to remove.
    ``needs_validation``: scored only with a validation set. ``needs_masks``: scored only by a run with
    instance masks (a scope other than ``none``). ``label_error``: says how wrong the row's own label looks,
    so it is ranked within the row's class (see ``tod_clean.selection.class_badness``); the others measure a
    harm comparable across classes. ``signed``: its sign means something (shown with one).
    """

    name: str
    meaning: str
    worse: Literal["lower", "higher"]
    needs_validation: bool = False
    needs_masks: bool = False
    label_error: bool = True
    signed: bool = False


# In the order the commands' help lists them.
SIGNAL_TABLE = (
    Signal(
        "influence",
        "mean influence on the validation set; negative = the row hurts it",
        "lower",
        needs_validation=True,
        needs_masks=True,
        label_error=False,
        signed=True,
    ),
    Signal("hidden_prob", "hidden sub-network's probability of the row's label", "lower", needs_masks=True),
    Signal("full_prob", "full network's probability of the row's label", "lower"),
    Signal(
        "self_influence",
        "hidden_loss − exposed_loss on the row itself; high = memorised",
        "higher",
        needs_masks=True,
        signed=True,
    ),
    Signal(
        "hidden_loss",
        "loss of the sub-network that hides the row (how out-of-sample: see README)",
        "higher",
        needs_masks=True,
    ),
    Signal("full_loss", "loss of the full network on the row", "higher"),
    Signal("exposed_loss", "loss of the sub-network that trained on the row", "higher", needs_masks=True),
)
SIGNALS_BY_NAME = {signal.name: signal for signal in SIGNAL_TABLE}

# Which end of each score column marks a row to remove.
WORSE_WHEN_LOWER = tuple(signal.name for signal in SIGNAL_TABLE if signal.worse == "lower")
WORSE_WHEN_HIGHER = tuple(signal.name for signal in SIGNAL_TABLE if signal.worse == "higher")
SIGNALS = tuple(signal.name for signal in SIGNAL_TABLE)
# Ranked within their class: a rare or hard class has higher losses by nature.
LABEL_SIGNALS = tuple(signal.name for signal in SIGNAL_TABLE if signal.label_error)
# Columns whose sign means something; the others (losses, probabilities) are shown unsigned.
SIGNED_SIGNALS = tuple(signal.name for signal in SIGNAL_TABLE if signal.signed)

# The signal filter, report and cleanse rank by when --by is not given: influence where the scores have it
# (scored with --val; BENCHMARKS.md section 2: removing by it raised retrained accuracy under domain shift,
# removing by full_loss lowered it), else full_loss (the best label-error signal, section 1).
DEFAULT_SIGNAL = "full_loss"
DEFAULT_SIGNAL_WITH_VALIDATION = "influence"
