"""tod-clean: find harmful and mislabeled training rows with turn-over dropout influence estimates.

Method: Kobayashi, Yokoi, Suzuki, Inui. "Efficient Estimation of Influence of a Training Instance".
SustaiNLP 2020 (arXiv:2012.04207).
"""

__version__ = "0.1.0"
