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

The products at the active entries are two sparse kernels: a sampled
dense-dense product (:func:`sampled_product`, torch's CSR ``sampled_addmm``)
for values and value gradients, and a sparse-transposed times dense product
(:func:`scatter_product`) for weight gradients. On CPUs these are torch's
sparse kernels, much faster there than gathering ``[rows, k, d_in]`` blocks
(``bench/train.py`` measures it); on GPUs the chunked gathers are kept.

Both are checked against the dense reference in ``tests/sae/test_kernels.py``.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F

from ..errors import ConfigError

#: Rows handled at once by the gather-based passes (GPUs): the gathered
#: [rows, k, d_in] blocks then stay in cache.
CHUNK_ROWS = 512


#: The fewest encoder weights (``d_in x d_sae``) for which a CPU chooses TopK latents
#: from a bf16 product: below it the conversions cost more than the product saves.
#: Measured on a Xeon with AMX, one thread, 100k rows: training took 2.9x as long with
#: bf16 at 24 x 96, 1.86x at 144 x 1,024 (the digits demo), 1.25x at 384 x 4,096, and
#: the same at 768 x 16,384 (12.6M weights), where encoding was 1.7x as fast.
CPU_BF16_MIN_WEIGHTS = 1 << 23


def fast_bf16(device: torch.device, n_weights: int | None = None) -> bool:
    """Whether bf16 matmul is native on ``device`` (GPUs; CPUs with AVX512-BF16 or AMX)
    and, on a CPU, pays for a product with ``n_weights`` weights
    (:data:`CPU_BF16_MIN_WEIGHTS`; None: any size)."""
    if device.type == "cuda":
        return True
    if n_weights is not None and n_weights < CPU_BF16_MIN_WEIGHTS:
        return False
    return bool(
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def sparse_kernels(device: torch.device) -> bool:
    """Whether the active-entry products use torch's sparse kernels (CPUs) rather
    than chunked gathers (GPUs). The environment variable ``SAEATLAS_SPARSE_KERNELS``
    (``1`` or ``0``) overrides the choice, to compare the two on one device."""
    forced = os.environ.get("SAEATLAS_SPARSE_KERNELS", "")
    if forced in ("0", "1"):
        return forced == "1"
    if forced:  # 'true' or 'yes' was dropped without a word, and the choice left as it was
        raise ConfigError(
            f"The environment variable SAEATLAS_SPARSE_KERNELS is {forced[:40]!r}; set it to "
            "'1' (sparse kernels) or '0' (gathers), or unset it."
        )
    return device.type == "cpu"


def _pattern(idx: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The ``[B, n]`` CSR pattern with row ``b`` at columns ``idx[b]`` (values 1), in
    ``idx``'s order (torch's sampled product needs no sorted columns)."""
    B, m = idx.shape
    crow = torch.arange(0, B * m + 1, m, device=idx.device, dtype=torch.int64)
    ones = torch.ones(B * m, dtype=dtype, device=idx.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, idx.reshape(-1), ones, (B, n), check_invariants=False)


def sampled_product(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``(a @ b)[r, idx[r, j]]`` → ``[B, m]`` for ``a [B, d]``, ``b [d, n]``, computed at
    the listed entries only (a sampled dense-dense product, SDDMM)."""
    if sparse_kernels(a.device):
        pattern = _pattern(idx, b.shape[1], a.dtype)
        out = torch.sparse.sampled_addmm(pattern, a, b, beta=0.0)
        return out.values().reshape(idx.shape)
    # GPUs: gather the columns in chunks and take batched dot products.
    b_t = b.t().contiguous()
    out = torch.empty(idx.shape, dtype=a.dtype, device=a.device)
    for s in range(0, a.shape[0], CHUNK_ROWS):
        cols = F.embedding(idx[s : s + CHUNK_ROWS], b_t)  # [chunk, m, d]
        out[s : s + CHUNK_ROWS] = torch.bmm(cols, a[s : s + CHUNK_ROWS, :, None]).squeeze(-1)
    return out


def scatter_product(
    idx: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, n: int
) -> torch.Tensor:
    """``S.T @ rows`` → ``[n, d]``, where ``S [B, n]`` holds ``weights[b, j]`` at
    ``(b, idx[b, j])``: row ``i`` sums ``weights[b, j] * rows[b]`` over the entries
    with ``idx[b, j] == i`` (the weight gradient of a layer read or written at
    ``idx`` only)."""
    B, m = idx.shape
    if sparse_kernels(rows.device):
        which = torch.arange(B, device=idx.device).repeat_interleave(m)
        S_t = torch.sparse_coo_tensor(
            torch.stack([idx.reshape(-1), which]),
            weights.reshape(-1),
            (n, B),
            check_invariants=False,
        )
        return torch.sparse.mm(S_t, rows)
    out = torch.zeros(n, rows.shape[1], dtype=rows.dtype, device=rows.device)
    for s in range(0, B, CHUNK_ROWS):
        w, r = weights[s : s + CHUNK_ROWS], rows[s : s + CHUNK_ROWS]
        out.index_add_(
            0,
            idx[s : s + CHUNK_ROWS].reshape(-1),
            (w[:, :, None] * r[:, None, :]).reshape(-1, r.shape[1]),
        )
    return out


def _gathered_preacts(
    xs: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, idx: torch.Tensor
) -> torch.Tensor:
    """``(xs @ W_enc + b_enc)[b, idx[b, j]]`` → ``[B, m]``, computed for the listed
    columns only, in ``W_enc``'s precision."""
    return sampled_product(xs.to(W_enc.dtype), W_enc, idx) + b_enc[idx]


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
            # Column idx[b, j] of W_enc gains (x[b] - b_dec) * g[b, j]; built as W_enc^T.
            xs = (x - b_dec).to(W_enc.dtype)
            grad_W = scatter_product(idx, g, xs, W_enc.shape[1]).t()
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
        go = grad_out.to(W_dec.dtype)
        grad_vals = sampled_product(go, W_dec.t(), idx).to(vals.dtype)
        grad_W = None
        if ctx.needs_input_grad[2]:
            grad_W = scatter_product(idx, vals.to(W_dec.dtype), go, W_dec.shape[0])
        return grad_vals, None, grad_W


def sparse_decode(vals: torch.Tensor, idx: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]]`` → ``[B, d_in]`` (without ``b_dec``)."""
    return _SparseDecode.apply(vals, idx, W_dec)
