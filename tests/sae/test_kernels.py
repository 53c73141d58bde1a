"""The sparse TopK passes equal the dense reference, forward and backward."""

import torch

from saeatlas.sae.activations import topk
from saeatlas.sae.kernels import sparse_decode, topk_encode


def test_sparse_topk_encode_decode_match_dense_reference():
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
            vals, idx = topk_encode(x, we, be, bd, pre, k)
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
