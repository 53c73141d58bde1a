"""The sparse TopK passes equal the dense reference, forward and backward."""

import pytest
import torch

from saeatlas.sae import kernels
from saeatlas.sae.activations import topk
from saeatlas.sae.kernels import select_topk, sparse_decode, topk_encode


@pytest.mark.parametrize("sparse_kernels", [True, False], ids=["sparse-kernels", "gathers"])
def test_sparse_topk_encode_decode_match_dense_reference(sparse_kernels, monkeypatch):
    # Both implementations of the active-entry products (CPU sparse kernels, GPU gathers),
    # chosen by the override the benchmarks use.
    monkeypatch.setenv("SAEATLAS_SPARSE_KERNELS", "1" if sparse_kernels else "0")
    assert kernels.sparse_kernels(torch.device("cpu")) is sparse_kernels
    g = torch.Generator().manual_seed(0)
    B, d, n, k = 1100, 7, 40, 5  # more rows than one backward chunk
    x = torch.randn(B, d, generator=g, dtype=torch.float64)
    W_enc = torch.randn(d, n, generator=g, dtype=torch.float64)
    b_enc = torch.randn(n, generator=g, dtype=torch.float64) * 0.1
    W_dec = torch.randn(n, d, generator=g, dtype=torch.float64)
    b_dec = torch.randn(d, generator=g, dtype=torch.float64)
    target = torch.randn(B, d, generator=g, dtype=torch.float64)

    def run(sparse):
        leaves = [t.clone().requires_grad_(True) for t in (W_enc, b_enc, W_dec, b_dec)]
        we, be, wd, bd = leaves
        if sparse:
            with torch.no_grad():
                pre = (x - bd) @ we + be
                values, idx = select_topk(pre, k, x - bd, we, be)
            vals = topk_encode(x, we, be, bd, values, idx)
            x_hat = sparse_decode(vals, idx, wd) + bd
        else:
            x_hat = topk((x - bd) @ we + be, k) @ wd + bd
        loss = (x_hat - target).pow(2).sum()
        loss.backward()
        return x_hat.detach(), [t.grad for t in leaves]

    dense_out, dense_grads = run(False)
    sparse_out, sparse_grads = run(True)
    torch.testing.assert_close(sparse_out, dense_out)
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], sparse_grads, dense_grads):
        torch.testing.assert_close(a, b, msg=name)


def test_bf16_selection_recomputes_exact_values_and_matches_full_precision():
    g = torch.Generator().manual_seed(1)
    B, d, n, k = 700, 64, 512, 16
    xs = torch.randn(B, d, generator=g)
    W = torch.randn(d, n, generator=g) / d**0.5
    b = torch.randn(n, generator=g) * 0.1
    pre = xs @ W + b
    ref_vals, ref_idx = select_topk(pre, k, xs, W, b)
    pre16 = xs.bfloat16() @ W.bfloat16() + b.bfloat16()
    vals, idx = select_topk(pre16, k, xs, W, b)
    assert vals.dtype == torch.float32
    # Values are exact (not bf16-rounded) for the chosen latents.
    torch.testing.assert_close(vals, pre.gather(1, idx), rtol=1e-5, atol=1e-5)
    same = [set(a.tolist()) == set(c.tolist()) for a, c in zip(idx, ref_idx)]
    assert sum(same) / B > 0.99
    # Masked (-inf) entries are never chosen, even when few remain.
    alive = torch.zeros(n, dtype=torch.bool)
    alive[:5] = True
    masked = pre16.masked_fill(~alive, float("-inf"))
    _, idx = select_topk(masked, 5, xs, W, b)
    assert set(idx.unique().tolist()) <= set(range(5))


def test_a_cpu_chooses_latents_in_bf16_only_for_large_encoders(monkeypatch):
    """On a CPU with AMX, bf16 made the digits demo's training (144 x 1,024) 1.86x slower
    than float32, and its codes differ from those of a CPU without bf16."""
    import torch

    from saeatlas.sae import kernels
    from saeatlas.train.run import _select_dtype

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert not kernels.fast_bf16(cpu, 144 * 1024)
    assert kernels.fast_bf16(cpu, kernels.CPU_BF16_MIN_WEIGHTS) and kernels.fast_bf16(cpu)
    assert _select_dtype("auto", cpu, 144 * 1024) == torch.float32
    assert _select_dtype("auto", cpu, 768 * 16384) == torch.bfloat16
    assert _select_dtype("bfloat16", cpu, 10) == torch.bfloat16  # asked for: kept
    assert kernels.fast_bf16(torch.device("cuda"), 10)  # GPUs: any size
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert not kernels.fast_bf16(cpu, 768 * 16384)
