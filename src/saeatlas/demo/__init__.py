"""The embedded defaults: the whole pipeline on a network trained on scikit-learn's
digits (:func:`run_demo`), or on the real all-MiniLM-L6-v2 (:func:`run_minilm_demo`)."""

from .digits import DigitsMLP, capture_digits, digits_config, digits_data, digits_model, run_demo
from .minilm import docstring_corpus, minilm_config, minilm_model, run_minilm_demo

__all__ = [
    "DigitsMLP",
    "capture_digits",
    "digits_config",
    "digits_data",
    "digits_model",
    "docstring_corpus",
    "minilm_config",
    "minilm_model",
    "run_demo",
    "run_minilm_demo",
]
