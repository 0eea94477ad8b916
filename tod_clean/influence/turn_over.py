"""``--influence turn-over``: turn-over dropout's own estimate, ``L(hidden_i, z) - L(exposed_i, z)``, computed
the way measured to fit the run's scope and keep probability.

It computes linearly the scopes whose ``linear_measured`` says so (see ``Scope.linear_by_default``), at
keep probability 0.5 only. The head scope always gets ``exact``: its exact path is already a GEMM. At
p = 0.5 the exposed and hidden multipliers average to 1 for every unit (m/p + (1-m)/(1-p) = 2), so the
expansion at gamma = 1 is the midpoint rule and the second-order terms cancel; other keep probabilities were
not measured. The choice per scope follows the rank agreement of the linear estimate with the exact path
measured by bench/linear_influence.py (BENCHMARKS.md, "Linearized influence for deep scopes"): ffn:1-2 and
lora -> linear; layers and ffn:3 and deeper -> exact (a whole layer's output at half width, or every block's
feed-forward units, moves the loss too far from linear: ffn:6 ranks at Spearman 0.27 against exact).

It is not the default (``auto`` is ``gauss-newton``): it predicts retraining at LDS 0.09-0.19 against
``gauss-newton``'s 0.414 (BENCHMARKS.md section 12).
"""

from __future__ import annotations

from collections.abc import Iterator

from tod_clean.influence.base import InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.influence.exact import ExactInfluence
from tod_clean.influence.linear import LinearInfluence
from tod_clean.scopes import Scope

AUTO_LINEAR_KEEP_PROB = 0.5


class TurnOverInfluence(InfluenceEstimator):
    """Delegates to ``linear`` where it was measured to rank as the exact path does, else ``exact``."""

    name = "turn-over"

    def resolve(self, scope: Scope, keep_prob: float) -> InfluenceEstimator:
        measured = scope.linear_measured and abs(keep_prob - AUTO_LINEAR_KEEP_PROB) < 1e-9
        return LinearInfluence() if measured else ExactInfluence()

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        return self.resolve(task.model.scope, task.model.keep_prob).blocks(task)
