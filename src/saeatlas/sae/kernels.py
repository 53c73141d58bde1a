"""Sparse forward and backward passes for TopK SAEs.

With k of d_sae latents active, a dense decoder product and a dense encoder
weight gradient spend most of their work on zeros. Two autograd functions
touch only the active latents (the decoder idea of Gao et al. 2024 and
EleutherAI's sparsify, extended here to the encoder's backward pass):

- :func:`topk_encode` picks each row's k largest pre-activations from a
  precomputed (gradient-free) ``pre``; its backward builds ``W_enc``'s and
  ``b_enc``'s gradients from the k active columns per row only.
- :func:`sparse_decode` is ``sum_j vals[:, j] * W_dec[idx[:, j]]`` (an
  ``embedding_bag``), with a backward of the same cost.

Both are checked against the dense reference in ``tests/sae/test_kernels.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, pre, k):
        values, idx = pre.topk(k, dim=-1, sorted=False)
        vals = values.relu()
        ctx.save_for_backward(x, W_enc, idx, vals)
        return vals, idx

    @staticmethod
    def backward(ctx, grad_vals, _grad_idx):
        x, W_enc, idx, vals = ctx.saved_tensors
        g = grad_vals * (vals > 0).to(grad_vals.dtype)  # [B, k]; ReLU's gradient
        flat_idx = idx.reshape(-1)
        grad_b = torch.zeros(W_enc.shape[1], dtype=g.dtype, device=g.device)
        grad_b.index_add_(0, flat_idx, g.reshape(-1))
        grad_W = None
        if ctx.needs_input_grad[1]:
            # column idx[b, j] of W_enc gains x[b] * g[b, j]
            contrib = (x[:, :, None] * g[:, None, :]).permute(1, 0, 2).reshape(x.shape[1], -1)
            grad_W = torch.zeros_like(W_enc).index_add_(1, flat_idx, contrib.to(W_enc.dtype))
        grad_x = None
        if ctx.needs_input_grad[0]:
            cols = W_enc.t()[idx]  # [B, k, d_in]
            grad_x = torch.bmm(g[:, None, :].to(cols.dtype), cols).squeeze(1)
        return grad_x, grad_W, grad_b, None, None


def topk_encode(
    x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, pre: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k latents of each row: ``(vals [B, k] (ReLU'd), idx [B, k])``.

    ``pre`` must equal ``x @ W_enc + b_enc`` (computed without gradients, and
    possibly masked with ``-inf``); gradients reach ``x``, ``W_enc`` and
    ``b_enc`` through the selected entries only.
    """
    return _TopKEncode.apply(x, W_enc, b_enc, pre, k)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vals, idx, W_dec):
        ctx.save_for_backward(vals, idx, W_dec)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals.to(W_dec.dtype), mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        vals, idx, W_dec = ctx.saved_tensors
        rows = W_dec[idx]  # [B, k, d_in]
        grad_vals = torch.bmm(rows, grad_out[:, :, None].to(rows.dtype)).squeeze(-1).to(vals.dtype)
        grad_W = None
        if ctx.needs_input_grad[2]:
            contrib = (vals[:, :, None].to(grad_out.dtype) * grad_out[:, None, :]).reshape(
                -1, W_dec.shape[1]
            )
            grad_W = torch.zeros_like(W_dec).index_add_(0, idx.reshape(-1), contrib.to(W_dec.dtype))
        return grad_vals, None, grad_W


def sparse_decode(vals: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]`` → ``[B, d_in]`` (no ``b_dec``)."""
    return _SparseDecode.apply(vals, idx, W_dec)
