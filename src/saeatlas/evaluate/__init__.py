"""Evaluating SAEs: reconstruction, sparsity, dead and dense latents, downstream loss."""

from .downstream import DownstreamResult, cross_entropy_loss, loss_recovered
from .metrics import EvalResult, evaluate_sae

__all__ = ["DownstreamResult", "EvalResult", "cross_entropy_loss", "evaluate_sae", "loss_recovered"]
