"""Losses and reconstruction metrics as small pure functions.

Shapes: ``x``, ``x_hat`` ``[batch, d_in]``; ``acts`` ``[batch, d_sae]``;
``W_dec`` ``[d_sae, d_in]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..store import LayerSpec


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over units, averaged over rows → scalar."""
    return (x - x_hat).pow(2).sum(dim=-1).mean()


def fvu(x: torch.Tensor, x_hat: torch.Tensor, total: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` → scalar.

    ``total`` replaces the denominator (data-parallel training passes the whole
    batch's, so that each rank's share adds up to the batch's FVU).
    """
    residual = (x - x_hat).pow(2).sum()
    if total is None:
        total = (x - x.mean(dim=0)).pow(2).sum()
    return residual / total.clamp_min(torch.finfo(total.dtype).tiny)


def decoder_norms(W_dec: torch.Tensor, layers: Sequence[LayerSpec] = ()) -> torch.Tensor:
    """``[d_sae]``: each decoder row's norm, or with several layers the sum of its
    per-layer norms (the acausal-crosscoder penalty of Lindsey et al. 2024)."""
    if len(layers) <= 1:
        return W_dec.norm(dim=1)
    return sum(W_dec[:, l.start : l.stop].norm(dim=1) for l in layers)


def l1_penalty(
    acts: torch.Tensor, W_dec: torch.Tensor, layers: Sequence[LayerSpec] = ()
) -> torch.Tensor:
    """``mean_rows sum_i f_i ||W_dec_i||`` (Anthropic, April 2024 update) → scalar."""
    return (acts * decoder_norms(W_dec, layers)).sum(dim=-1).mean()


def l0(acts: torch.Tensor) -> torch.Tensor:
    """Mean number of active latents per row → scalar."""
    return (acts != 0).sum(dim=-1).float().mean()


def auxk_loss(
    residual: torch.Tensor, aux_recon: torch.Tensor, residual_norm: torch.Tensor | None = None
) -> torch.Tensor:
    """AuxK loss (Gao et al. 2024, appendix A.2): how well ``aux_recon`` — the
    decoded ``k_aux`` largest pre-activations among dead latents — reconstructs
    the main model's residual ``x - x_hat``, as squared error normalised by the
    residual's own mean squared norm → scalar.

    residual, aux_recon: ``[batch, d_in]``. ``residual_norm`` replaces that
    normaliser (data-parallel training passes the whole batch's).
    """
    err = (residual - aux_recon).pow(2).sum(dim=-1).mean()
    if residual_norm is None:
        residual_norm = residual.pow(2).sum(dim=-1).mean()
    return err / residual_norm.clamp_min(1e-12)
