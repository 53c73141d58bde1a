"""The moments :class:`.codes.Codes` carries, summed batch by batch while a store is
encoded: per-unit and per-feature sums, the feature x unit cross sums ``sum_rows
f_i x_u``, the units' gram (and its bootstrap resamples) and the reconstruction
error per unit.

Two engines sum the same moments, in float64:

- :class:`Sums` (numpy, on the host): the engine on the CPU, where it gives the
  moments earlier atlases were made from, bit for bit (two of its steps run through
  torch's CPU kernels on the same memory, which add in the same order: the scatter
  of the cross sums into the fired rows and the reconstruction's sparse product).
- :class:`TorchSums` (torch, on the encoding device): the engine on every other
  device (``cuda``), so the rows never leave it; the same sums to about 1e-15
  relative (BLAS and scatter-adds add in another order).

Both add a batch's cross sums into the rows of the latents that fired in it only
(at most ``B x L0``), so a batch never allocates a ``[d_sae, d_in]`` temporary;
memory is the sums themselves and one batch.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from ...sae import SparseAutoencoder

#: A variance within this fraction of its second moment is rounding, not variation:
#: ``E[x^2] - E[x]^2`` of a value that never changes leaves about 1e-16 of ``E[x^2]``.
CONSTANT_RTOL = 1e-12


def std_from_moments(second: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The standard deviation from the mean square ``second`` and ``mean`` (each per
    item), 0 where the variance is rounding (:data:`CONSTANT_RTOL`). A unit that never
    changes but is not 0 (a pruned unit left with its bias) had a std of about 1e-9:
    its correlations, rounding noise divided by it, fell anywhere in [-1, 1] and put it
    in modules, and the attribution, which divides by the std, gave it every feature's
    energy."""
    var = np.asarray(second, dtype=np.float64) - np.asarray(mean, dtype=np.float64) ** 2
    return np.sqrt(np.where(var > CONSTANT_RTOL * np.abs(second), var, 0.0))


#: Firings whose ``[firings, d_in]`` float64 products are scattered at once (torch).
SCATTER_FIRINGS = 1 << 14
#: Names of the sums, as :meth:`Sums.totals` returns them.
SUMS = ("cross", "unit_sum", "unit_sq", "act_sum", "act_sq", "residual", "r_w", "r_sum")
#: Engines of the moments; ``auto`` picks numpy on the CPU, torch elsewhere.
ENGINES = ("auto", "numpy", "torch")


def make_sums(
    sae: SparseAutoencoder, unit_gram: bool, resamples: int, device: torch.device, engine: str
) -> Sums:
    """The moments' accumulator for ``engine`` (see :mod:`.moments`) on ``device``."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown `engine` {engine!r}; expected one of: {list(ENGINES)}.")
    use_torch = engine == "torch" or (engine == "auto" and device.type != "cpu")
    return (TorchSums if use_torch else Sums)(sae, unit_gram, resamples, device)


class Sums:
    """The moments summed over the rows one rank encodes (numpy, on the host)."""

    def __init__(
        self, sae: SparseAutoencoder, unit_gram: bool, resamples: int, device: torch.device
    ) -> None:
        d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
        self.d_sae, self.d_in = d_sae, d_in
        self.W_dec_t = sae.W_dec.detach().double().cpu()
        self.b_dec = sae.b_dec.detach().double().cpu().numpy()
        self.cross = np.zeros((d_sae, d_in))
        self.unit_sum, self.unit_sq = np.zeros(d_in), np.zeros(d_in)
        self.act_sum, self.act_sq = np.zeros(d_sae), np.zeros(d_sae)
        self.gram = np.zeros((d_in, d_in)) if unit_gram else None
        self.residual = np.zeros(d_in)
        self.r_w, self.r_sum = np.zeros(resamples), np.zeros((resamples, d_in))
        self.r_gram = np.zeros((resamples, d_in, d_in))

    def add(
        self,
        x: torch.Tensor,
        idx: torch.Tensor,
        vals: torch.Tensor,
        f: sp.csr_matrix,
        w: np.ndarray | None,
    ) -> None:
        """One batch: rows ``x [B, d_in]``, their codes as ``(idx [nnz, 2], vals [nnz])``
        (:class:`.encoder.SparseEncoder`, on the device) and as ``f [B, d_sae]`` (the same,
        a host CSR), and the resamples' weights ``w [resamples, B]``."""
        xc = x.cpu().numpy().astype(np.float64)
        fired = np.unique(f.indices)  # the rows of `cross` this batch adds to
        compact = sp.csr_matrix(
            (f.data, np.searchsorted(fired, f.indices), f.indptr), shape=(f.shape[0], fired.size)
        )
        # torch's index_add_ on the same memory: one pass over the fired rows where numpy's
        # `cross[fired] += ...` gathers and scatters them (a third of the batch's time)
        torch.from_numpy(self.cross).index_add_(
            0, torch.from_numpy(fired), torch.from_numpy(compact.T @ xc)
        )
        self.unit_sum += xc.sum(0)
        self.unit_sq += (xc * xc).sum(0)
        if self.gram is not None:
            self.gram += xc.T @ xc
        if w is not None:
            w = w.astype(np.float64)
            self.r_w += w.sum(1)
            self.r_sum += w @ xc
            for i in range(w.shape[0]):
                self.r_gram[i] += (xc * w[i][:, None]).T @ xc
        recon = (_csr_tensor(f) @ self.W_dec_t).numpy()  # MKL's sparse product: 2.4x scipy's
        self.residual += ((xc - recon - self.b_dec) ** 2).sum(0)
        self.act_sum += np.bincount(f.indices, weights=f.data, minlength=self.d_sae)
        self.act_sq += np.bincount(
            f.indices, weights=f.data.astype(np.float64) ** 2, minlength=self.d_sae
        )

    def totals(self) -> dict[str, np.ndarray]:
        """This rank's sums as host arrays: :data:`SUMS`, ``r_gram`` with resamples,
        ``gram`` when asked for."""
        names = list(SUMS) + (["r_gram"] if self.r_w.shape[0] else [])
        names += ["gram"] if self.gram is not None else []
        return {k: _host(getattr(self, k)) for k in names}


class TorchSums(Sums):
    """:class:`Sums` as float64 tensors on the encoding device."""

    def __init__(
        self, sae: SparseAutoencoder, unit_gram: bool, resamples: int, device: torch.device
    ) -> None:
        d_sae, d_in = sae.cfg.d_sae, sae.cfg.d_in
        self.d_sae, self.d_in, self.device = d_sae, d_in, device

        def zeros(*shape):
            return torch.zeros(shape, dtype=torch.float64, device=device)

        self.W_dec = sae.W_dec.detach().to(device, torch.float64)
        self.b_dec = sae.b_dec.detach().to(device, torch.float64)
        self.cross = zeros(d_sae, d_in)
        self.unit_sum, self.unit_sq = zeros(d_in), zeros(d_in)
        self.act_sum, self.act_sq = zeros(d_sae), zeros(d_sae)
        self.gram = zeros(d_in, d_in) if unit_gram else None
        self.residual = zeros(d_in)
        self.r_w, self.r_sum = zeros(resamples), zeros(resamples, d_in)
        self.r_gram = zeros(resamples, d_in, d_in)

    def add(self, x, idx, vals, f, w) -> None:
        """One batch (see :meth:`Sums.add`); only ``x``, ``idx`` and ``vals`` are read."""
        xd = x.to(self.device, torch.float64)
        rows, cols = idx[:, 0].to(self.device), idx[:, 1].to(self.device)
        v = vals.to(self.device, torch.float64)
        fired, slot = torch.unique(cols, return_inverse=True)
        part = torch.zeros(fired.numel(), self.d_in, dtype=torch.float64, device=self.device)
        recon = torch.zeros_like(xd)
        for s in range(0, v.numel(), SCATTER_FIRINGS):  # bounded [firings, d_in] products
            sl = slice(s, s + SCATTER_FIRINGS)
            part.index_add_(0, slot[sl], v[sl, None] * xd[rows[sl]])
            recon.index_add_(0, rows[sl], v[sl, None] * self.W_dec[cols[sl]])
        self.cross.index_add_(0, fired, part)  # distinct rows: one add each
        self.unit_sum += xd.sum(0)
        self.unit_sq += (xd * xd).sum(0)
        if self.gram is not None:
            self.gram += xd.T @ xd
        if w is not None:
            wt = torch.from_numpy(w.astype(np.float64)).to(self.device)
            self.r_w += wt.sum(1)
            self.r_sum += wt @ xd
            for i in range(wt.shape[0]):
                self.r_gram[i] += (xd * wt[i][:, None]).T @ xd
        self.residual += ((xd - recon - self.b_dec) ** 2).sum(0)
        self.act_sum.index_add_(0, cols, v)
        self.act_sq.index_add_(0, cols, v**2)


def _csr_tensor(f: sp.csr_matrix) -> torch.Tensor:
    """``f`` as a float64 torch CSR tensor (for MKL's sparse x dense product)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(f.indptr.astype(np.int64)),
            torch.from_numpy(f.indices.astype(np.int64)),
            torch.from_numpy(f.data.astype(np.float64)),
            f.shape,
        )


def _host(a: np.ndarray | torch.Tensor) -> np.ndarray:
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else a
