"""Evaluating SAEs: reconstruction, sparsity, dead and dense latents."""

from .metrics import EvalResult, evaluate_sae

__all__ = ["EvalResult", "evaluate_sae"]
