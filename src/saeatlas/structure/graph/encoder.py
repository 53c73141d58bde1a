"""An SAE's encoder as the atlas runs it: sparse codes of row batches, in bounded blocks.

:class:`SparseEncoder` is made once per pass (over the store, or over a null's
synthetic rows) and called on every batch: a TopK SAE's weights are converted to
the dtype the candidates are chosen in once, not once per block (at 65,536
latents the conversion of ``W_enc`` cost as much as a tenth of the product).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...sae import SparseAutoencoder
from ...sae.kernels import fast_bf16, select_topk

#: Bytes of the dense ``[rows, d_sae]`` pre-activations an encoder holds at once: a
#: batch of 4096 rows at 262,144 latents would be 4 GiB in float32.
ENCODE_BLOCK_BYTES = 256 << 20


@dataclass(frozen=True)
class SparseEncoder:
    """``encoder(x)`` → the nonzero codes of a batch ``x [B, d_in]`` as two tensors:
    ``idx [nnz, 2]`` (row, latent) and ``values [nnz]``, row by row in order.

    TopK SAEs take their candidates from a bf16 product where bf16 matmul is fast and
    recompute them exactly (:func:`~saeatlas.sae.kernels.select_topk`, as training
    does): the bf16 top k alone gave a near-tied row another latent than the SAE's own
    encoding, and values of 3 significant digits, so a feature firing on one row could
    show density 0. The others encode densely in full precision. The rows go through
    in blocks whose dense pre-activations stay within :data:`ENCODE_BLOCK_BYTES`
    (2,048 rows at 65,536 latents in bf16, 1,024 in float32), so memory does not grow
    with the batch times the dictionary.
    """

    sae: SparseAutoencoder
    W: torch.Tensor | None
    """TopK: ``W_enc`` in the dtype the candidates are chosen in (None otherwise)."""
    b: torch.Tensor | None
    """TopK: ``b_enc`` in that dtype."""
    step: int
    """Rows a block."""

    @classmethod
    def of(cls, sae: SparseAutoencoder) -> SparseEncoder:
        """The encoder of ``sae`` (on its device, in eval mode as it is given)."""
        W = b = None
        size = 4  # the dense activations of the other architectures, float32
        if sae.cfg.architecture == "topk":
            W_enc = sae.W_enc.detach()
            dtype = torch.bfloat16 if fast_bf16(W_enc.device, W_enc.numel()) else W_enc.dtype
            W, b = W_enc.to(dtype), sae.b_enc.detach().to(dtype)
            size = W.element_size()
        return cls(sae, W, b, max(1, ENCODE_BLOCK_BYTES // (size * sae.cfg.d_sae)))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] <= self.step:
            return self._block(x)
        idx, vals = [], []
        for start in range(0, x.shape[0], self.step):
            i, v = self._block(x[start : start + self.step])
            i[:, 0] += start
            idx.append(i)
            vals.append(v)
        return torch.cat(idx), torch.cat(vals)

    def _block(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sae = self.sae
        cfg = sae.cfg
        if self.W is not None:
            # in the SAE's dtype before b_dec, as its own encoding (`pre_activations`)
            # casts: a float16 SAE's codes differed from its own on rows near a tie
            x = x.to(sae.W_enc.dtype)
            xs = x - sae.b_dec if cfg.subtracts_b_dec else x
            pre = xs.to(self.W.dtype) @ self.W + self.b
            values, idx = select_topk(pre, min(cfg.k, cfg.d_sae), xs, sae.W_enc, sae.b_enc)
            values = values.float().relu()
            keep = values > 0
            rows = torch.arange(x.shape[0], device=x.device)[:, None].expand_as(idx)[keep]
            return torch.stack([rows, idx[keep]], dim=1), values[keep]
        acts = sae.encode(x).acts
        nz = acts.nonzero()
        return nz, acts[nz[:, 0], nz[:, 1]].float()
