"""Sparse forward and backward passes for TopK SAEs.

With k of d_sae latents active, a dense decoder product and a dense encoder
weight gradient spend most of their work on zeros. Two autograd functions
touch only the active latents (the decoder idea of Gao et al. 2024 and
EleutherAI's sparsify, extended here to the encoder's backward pass):

- :func:`select_topk` picks each row's k largest pre-activations from a
  gradient-free ``pre``. When ``pre`` was computed in bfloat16 (the dense
  encoder product is the largest cost of a step; bf16 halves it on CPUs with
  AVX512-BF16 and on GPUs), it takes a few spare candidates, recomputes their
  values exactly in the weights' precision and keeps the true top k of those.
- :func:`topk_encode` turns the chosen indices into latent values; its backward
  builds the gradients of ``W_enc``, ``b_enc`` and ``b_dec`` from the k active
  columns per row only.
- :func:`sparse_decode` is ``sum_j vals[:, j] * W_dec[idx[:, j]]`` (an
  ``embedding_bag``), with a backward of the same cost.

Both are checked against the dense reference in ``tests/sae/test_kernels.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Rows handled at once in the backward passes: the gathered [rows, k, d_in]
#: blocks then stay in cache instead of streaming hundreds of MB through memory.
CHUNK_ROWS = 512


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmul is native on ``device`` (GPUs; CPUs with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return True
    return bool(
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def _gathered_preacts(
    xs: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    """``(xs @ W_enc + b_enc)[b, idx[b, j]]`` → ``[B, m]``, computed for the listed
    columns only, in ``W_enc``'s precision."""
    W_t = W_enc.t().contiguous()  # rows of W_t are the encoder columns
    out = torch.empty(idx.shape, dtype=W_enc.dtype, device=W_enc.device)
    for s in range(0, xs.shape[0], CHUNK_ROWS):
        i = idx[s : s + CHUNK_ROWS]
        cols = F.embedding(i, W_t)  # [chunk, m, d_in]
        xc = xs[s : s + CHUNK_ROWS].to(W_enc.dtype)[:, :, None]
        out[s : s + CHUNK_ROWS] = torch.bmm(cols, xc).squeeze(-1) + b_enc[i]
    return out


@torch.no_grad()
def select_topk(
    pre: torch.Tensor,
    k: int,
    xs: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest entries of ``pre`` → ``(values [B, k], idx [B, k])``.

    ``pre`` is ``xs @ W_enc + b_enc`` (entries masked with ``-inf`` are never
    chosen). When ``pre`` is in a lower precision than ``W_enc``, the
    ``k + max(8, k/4)`` largest are taken as candidates, recomputed exactly, and
    the top k of the exact values returned: the result then differs from full
    precision only where a true top-k value trails the k-th by more than the
    spare candidates cover, which bf16's 3 significant digits make rare.
    """
    if pre.dtype == W_enc.dtype:
        return pre.topk(k, dim=-1, sorted=False)
    m = min(k + max(8, k // 4), pre.shape[-1])
    cand_pre, cand = pre.topk(m, dim=-1, sorted=False)
    exact = _gathered_preacts(xs, W_enc, b_enc, cand)
    exact = exact.masked_fill(torch.isneginf(cand_pre), float("-inf"))
    values, j = exact.topk(k, dim=-1, sorted=False)
    return values, cand.gather(1, j)


class _TopKEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, W_enc, b_enc, b_dec, values, idx):
        vals = values.relu()
        ctx.save_for_backward(x, W_enc, b_dec, idx, vals)
        return vals

    @staticmethod
    def backward(ctx, grad_vals):
        x, W_enc, b_dec, idx, vals = ctx.saved_tensors
        g = (grad_vals * (vals > 0).to(grad_vals.dtype)).to(W_enc.dtype)  # ReLU's gradient
        grad_b = torch.zeros(W_enc.shape[1], dtype=W_enc.dtype, device=g.device)
        grad_b.index_add_(0, idx.reshape(-1), g.reshape(-1))
        grad_W = None
        if ctx.needs_input_grad[1]:
            # Column idx[b, j] of W_enc gains (x[b] - b_dec) * g[b, j]. Accumulated as
            # rows of W_enc^T, so that index_add_ writes contiguous memory.
            grad_Wt = torch.zeros(
                W_enc.shape[1], W_enc.shape[0], dtype=W_enc.dtype, device=g.device
            )
            for s in range(0, x.shape[0], CHUNK_ROWS):
                xs = (x[s : s + CHUNK_ROWS] - b_dec).to(W_enc.dtype)
                contrib = (g[s : s + CHUNK_ROWS, :, None] * xs[:, None, :]).reshape(-1, xs.shape[1])
                grad_Wt.index_add_(0, idx[s : s + CHUNK_ROWS].reshape(-1), contrib)
            grad_W = grad_Wt.t()
        # The input is x - b_dec: summed over rows, d loss / d input = W_enc @ grad_b.
        grad_b_dec = -(W_enc @ grad_b) if ctx.needs_input_grad[3] else None
        return None, grad_W, grad_b, grad_b_dec, None, None


def topk_encode(
    x: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    values: torch.Tensor,
    idx: torch.Tensor,
) -> torch.Tensor:
    """Latent values ``relu(values)`` ``[B, k]`` of the chosen latents ``idx``, with
    the gradients of the encoder that produced them.

    ``values`` must equal ``((x - b_dec) @ W_enc + b_enc)`` at ``idx``, computed
    without gradients (:func:`select_topk` gives both); for an uncentred input
    pass a zero ``b_dec`` that needs no gradient. Gradients reach ``W_enc``,
    ``b_enc`` and ``b_dec`` through the selected entries only; ``x`` is data.
    """
    return _TopKEncode.apply(x, W_enc, b_enc, b_dec, values, idx)


class _SparseDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vals, idx, W_dec):
        ctx.save_for_backward(vals, idx, W_dec)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals.to(W_dec.dtype), mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        vals, idx, W_dec = ctx.saved_tensors
        grad_vals = torch.empty_like(vals)
        grad_W = torch.zeros_like(W_dec) if ctx.needs_input_grad[2] else None
        for s in range(0, vals.shape[0], CHUNK_ROWS):
            i = idx[s : s + CHUNK_ROWS]
            go = grad_out[s : s + CHUNK_ROWS].to(W_dec.dtype)
            rows = W_dec[i]  # [chunk, k, d_in]
            grad_vals[s : s + CHUNK_ROWS] = torch.bmm(rows, go[:, :, None]).squeeze(-1)
            if grad_W is not None:
                v = vals[s : s + CHUNK_ROWS].to(W_dec.dtype)
                contrib = (v[:, :, None] * go[:, None, :]).reshape(-1, go.shape[1])
                grad_W.index_add_(0, i.reshape(-1), contrib)
        return grad_vals, None, grad_W


def sparse_decode(vals: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]`` → ``[B, d_in]`` (without ``b_dec``)."""
    return _SparseDecode.apply(vals, idx, W_dec)
