"""``--influence auto`` (the default): the estimator measured best at predicting retraining.

That is ``gauss-newton`` (``tod_clean.influence.gradients``), for every scope: on the setting of
BENCHMARKS.md section 12 it reaches LDS 0.414 [0.37, 0.45] on the default ``head`` run (reading the top
half of the encoder's blocks; 0.405 with all of them), against 0.087 for turn-over dropout's own estimate
(``--influence turn-over``, 0.178 averaged over four runs), 0.180 for gradient similarity and 0.367 for
EK-FAC at several times its cost. What it costs: about 2.2x the ``turn-over`` scoring at 10^4 x 10^3 pairs
on 2 cores (section 14).
"""

from __future__ import annotations

from collections.abc import Iterator

from tod_clean.influence.base import ESTIMATORS, InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.scopes import Scope

AUTO_ESTIMATOR = "gauss-newton"


class AutoInfluence(InfluenceEstimator):
    """Delegates to ``gauss-newton`` (looked up by name: it registers after this class)."""

    name = "auto"

    def applies_to(self, scope: Scope) -> bool:
        return ESTIMATORS[AUTO_ESTIMATOR].applies_to(scope)

    def resolve(self, scope: Scope, keep_prob: float) -> InfluenceEstimator:
        return ESTIMATORS[AUTO_ESTIMATOR]

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        return self.resolve(task.model.scope, task.model.keep_prob).blocks(task)
