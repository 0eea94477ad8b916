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
import sys  # noqa: E402
import types  # noqa: E402

import tod_clean.influence  # noqa: E402, F401  (registers the influence estimators ScoreConfig accepts)
from tod_clean.api import Run, filter, train  # noqa: E402, A004
from tod_clean.errors import ConfigError, InputError, RunDirError, TodCleanError  # noqa: E402


class _Package(types.ModuleType):
    """The package's ``filter`` is the API's function. A submodule of the same name exists
    (``from tod_clean.filter import ...``), and importing it makes the import system set it as the
    package attribute of its name: that assignment is dropped, so the name stays the function whenever
    the submodule loads (it loads on first use: ``import tod_clean`` stays light)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "filter" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
