"""tod-clean: find harmful and mislabeled training rows with turn-over dropout influence estimates.

Method: Kobayashi, Yokoi, Suzuki, Inui. "Efficient Estimation of Influence of a Training Instance".
SustaiNLP 2020 (arXiv:2012.04207).

The Python API (see README, "Python API")::

    run = tod_clean.train(train_df, id_col="id")
    scores = run.score(val=val_df)
    clean_df = tod_clean.filter(train_df, scores, drop=0.01)
"""

__version__ = "0.1.0"

# Imported after __version__ (the modules below read it).
import tod_clean.influence  # noqa: E402, F401  (registers the influence estimators ScoreConfig accepts)
from tod_clean.api import Run, filter, train  # noqa: E402, A004
from tod_clean.errors import ConfigError, InputError, RunDirError, TodCleanError  # noqa: E402

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
