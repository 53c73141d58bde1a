"""Evaluating SAEs: reconstruction, sparsity, dead and dense latents, downstream loss."""

from .downstream import DownstreamResult, loss_recovered
from .metrics import EvalResult, evaluate_sae

__all__ = ["DownstreamResult", "EvalResult", "evaluate_sae", "loss_recovered"]
