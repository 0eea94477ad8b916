"""Influence of training instances on validation rows, and the scores of each training row on itself.

- ``base``: the estimator interface (``InfluenceEstimator``: what a new estimator implements), its registry
  and ``influence_blocks``, which runs the estimator an ``--influence`` name selects
- ``auto`` (the default: ``gauss-newton``), ``exact``, ``linear``, ``turn-over`` (turn-over dropout's own
  estimate: ``exact`` or ``linear`` as measured for the scope): built-in estimators (``exact`` runs
  ``head_gemm`` or ``pairs``)
- ``head_gemm``: the exact head-scope path, blocked matrix products on worker threads
- ``pairs``: the exact path of deeper scopes, forward passes over (instance, validation row) pairs
- ``self_scores``: every training row's full, exposed and hidden losses and probabilities
- ``gather``: the blocks summed into the ``influence`` column, the matrix file, several processes' matrix
- ``gradients``: projected per-row gradients of the trained network, and the estimators built on them
  (any scope): ``gradient`` (their similarity) and ``gauss-newton`` (an influence function)
- ``ekfac``: EK-FAC influence functions of the trained network through kronfluence (optional dependency)
- ``passes``: the autocast context and per-row loss the passes share
"""

# Registers the built-in estimators, in the order their names are listed: auto first (it finds
# gauss-newton by name when it runs), then turn_over, which imports exact and linear before it defines
# itself.
from tod_clean.influence import auto, turn_over, exact, linear  # noqa: F401, I001
from tod_clean.influence import gradients  # noqa: F401, E402
from tod_clean.influence import ekfac  # noqa: F401, E402
