"""The embedded default: a small network trained on scikit-learn's digits."""

from .digits import DigitsMLP, digits_data, digits_model, run_demo

__all__ = ["DigitsMLP", "digits_data", "digits_model", "run_demo"]
