"""Sparsifying activation functions, as small pure functions.

- ReLU: Anthropic, "Towards Monosemanticity" (2023) and its April 2024 update.
- TopK: Gao et al. 2024, "Scaling and evaluating sparse autoencoders".
- BatchTopK: Bussmann, Leask and Nanda 2024, "BatchTopK Sparse Autoencoders".
- JumpReLU: Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction
  Fidelity with JumpReLU Sparse Autoencoders" (straight-through estimators).
"""

from __future__ import annotations

import torch


def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest pre-activations of each row, ReLU'd; zeros elsewhere.

    pre: ``[batch, d_sae]`` → ``[batch, d_sae]``.
    """
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, values.relu())


def batch_topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k * batch`` largest positive pre-activations of the whole batch.

    Rows may use more or fewer than ``k`` latents; the batch averages ``k``.
    pre: ``[batch, d_sae]`` → ``[batch, d_sae]``.
    """
    flat = pre.relu().flatten()
    n_keep = min(k * pre.shape[0], flat.numel())
    values, indices = flat.topk(n_keep, sorted=False)
    return torch.zeros_like(flat).scatter_(0, indices, values).view_as(pre)


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    """Rectangle kernel: 1 on [-1/2, 1/2], 0 elsewhere."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - theta)``; d/dtheta by the rectangle-kernel pseudo-derivative
    ``-(theta / eps) K((pre - theta) / eps)`` (Rajamanoharan et al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold).to(pre.dtype)
        grad_theta = -(threshold / eps) * _rectangle((pre - threshold) / eps) * grad
        return grad_pre, grad_theta.sum(dim=0), None


class _Step(torch.autograd.Function):
    """Heaviside ``H(pre - theta)``; d/dtheta = ``-(1 / eps) K((pre - theta) / eps)``,
    no gradient to ``pre`` (Rajamanoharan et al. 2024, eq. 12)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_theta = -(1.0 / eps) * _rectangle((pre - threshold) / eps) * grad
        return None, grad_theta.sum(dim=0), None


def jumprelu(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float = 1e-3) -> torch.Tensor:
    """JumpReLU with a per-latent threshold; pre ``[batch, d_sae]``, threshold ``[d_sae]``."""
    return _JumpReLU.apply(pre, threshold, bandwidth)


def step(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float = 1e-3) -> torch.Tensor:
    """Heaviside step ``H(pre - threshold)`` with straight-through threshold gradients,
    for the L0 penalty of JumpReLU SAEs."""
    return _Step.apply(pre, threshold, bandwidth)
