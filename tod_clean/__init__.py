"""tod-clean: find harmful and mislabeled training rows with turn-over dropout influence estimates.

Method: Kobayashi, Yokoi, Suzuki, Inui. "Efficient Estimation of Influence of a Training Instance".
SustaiNLP 2020 (arXiv:2012.04207).

The Python API (see README, "Python API")::

    run = tod_clean.train(train_df, id_col="id")
    scores = run.score(val=val_df)
    clean_df = tod_clean.filter(train_df, scores, drop=0.01)
"""

import tod_clean.influence  # noqa: F401  (registers the influence estimators ScoreConfig accepts)
from tod_clean.api import Run, filter, train  # noqa: A004
from tod_clean.errors import ConfigError, InputError, RunDirError, TodCleanError
from tod_clean.version import __version__

__all__ = [
    "ConfigError",
    "InputError",
    "Run",
    "RunDirError",
    "TodCleanError",
    "__version__",
    "filter",
    "train",
]
