"""The linear datamodeling score (LDS): how well an influence matrix predicts retraining.

Ilyas et al. 2022 ("Datamodels"), as TRAK (Park et al. 2023) and kronfluence use it: train M models on
random halves S_m of the training rows, measure each one's loss on every validation row z, and ask how
well the influence predicts those losses from the halves alone. With tod-clean's convention (influence
``[i, z]`` = L(without i, z) - L(with i, z): positive = row i lowers z's loss), the loss predicted for the
model of half S_m on z is, up to a constant, ``-sum_{i in S_m} influence[i, z]``. LDS is the Spearman
correlation over the M halves of predicted and measured loss, averaged over validation rows.

The uncertainty that matters is that of the draw of halves (every validation row shares them): intervals
are bootstrapped over the halves, and two matrices are compared on the same resampled halves (paired).
"""

from __future__ import annotations

import numpy as np


def random_halves(rows: int, count: int, seed: int) -> np.ndarray:
    """bool ``[count, rows]``: ``count`` random halves (``rows // 2`` rows each) of ``rows`` rows, seeded.
    Half ``m`` depends only on ``seed`` and ``m``, so more halves extend fewer."""
    halves = np.zeros((count, rows), dtype=bool)
    for m in range(count):
        rng = np.random.default_rng([seed, 4243, m])
        halves[m, rng.choice(rows, size=rows // 2, replace=False)] = True
    return halves


def lds_per_row(matrix: np.ndarray, halves: np.ndarray, losses: np.ndarray) -> np.ndarray:
    """float64 ``[V]``: per validation row, the Spearman correlation over the halves between predicted
    loss ``-sum_{i in S_m} matrix[i, z]`` and measured loss. ``matrix`` ``[N, V]``, ``halves`` bool
    ``[M, N]``, ``losses`` ``[M, V]``. A row whose predictions or losses do not vary counts 0.

    Vectorized: the Pearson correlation of the ranks (average ranks for ties), which is Spearman's rho as
    ``scipy.stats.spearmanr`` computes it."""
    from scipy.stats import rankdata

    predicted = -(halves.astype(np.float64) @ matrix.astype(np.float64))  # [M, V]
    a = rankdata(predicted, axis=0)
    b = rankdata(losses, axis=0)
    a -= a.mean(0)
    b -= b.mean(0)
    denominator = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(0) / denominator, 0.0)


def lds(matrix: np.ndarray, halves: np.ndarray, losses: np.ndarray) -> tuple[float, float]:
    """The LDS (mean over validation rows) and its standard error over validation rows."""
    values = lds_per_row(matrix, halves, losses)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def bootstrap_lds(
    matrices: dict[str, np.ndarray],
    halves: np.ndarray,
    losses: np.ndarray,
    *,
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Per matrix, float64 ``[samples]``: its LDS on ``samples`` resamplings (with replacement) of the
    halves, the same resamplings for every matrix, so that differences between them are paired."""
    rng = np.random.default_rng(seed)
    picks = [rng.integers(0, len(halves), len(halves)) for _ in range(samples)]
    return {
        name: np.array([lds_per_row(matrix, halves[pick], losses[pick]).mean() for pick in picks])
        for name, matrix in matrices.items()
    }


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``values``."""
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)
