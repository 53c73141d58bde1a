"""Null models: data or graphs with the same marginals and no modular structure.

- :func:`permute_codes`: every feature's firing moved to random rows (same
  density, same activation values), independently per feature.
- :func:`rewire`: configuration-model rewiring of a weighted graph (Maslov &
  Sneppen 2002 keep degrees by edge swaps; here the edge stubs are shuffled at
  once and every edge keeps its weight, so each node keeps its number of edge
  ends; self-loops are dropped and parallel edges merged).
- :func:`dictionary_null_codes`: the null that carries the SAE's own artefacts.
  SAE latents co-fire even when the true features are independent (a feature
  split over several latents, absorption, shared directions), so shuffling
  codes alone is too weak. Here rows are synthesised from the learned
  dictionary with every feature firing independently (its real activations,
  permuted across rows), plus Gaussian noise with the real reconstruction
  error per unit, and then encoded again by the same SAE: whatever co-firing
  the encoder adds to independent features appears in the null too.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ..sae import SparseAutoencoder
from .codes import encode_sparse


def permute_codes(
    matrix: sp.csr_matrix, rng: np.random.Generator, together: np.ndarray | None = None
) -> sp.csr_matrix:
    """``[n_rows, d_sae]`` codes with each column's nonzeros placed on random rows.

    Columns flagged in ``together`` ``[d_sae]`` move with one shared row
    permutation, so whatever they share (a global mode) stays shared.
    """
    csc = sp.csc_matrix(matrix)
    n_rows = csc.shape[0]
    rows = np.empty_like(csc.indices)
    shared = rng.permutation(n_rows)
    for j in range(csc.shape[1]):
        a, b = csc.indptr[j], csc.indptr[j + 1]
        if b > a:
            if together is not None and together[j]:
                rows[a:b] = shared[csc.indices[a:b]]
            else:
                rows[a:b] = rng.choice(n_rows, b - a, replace=False)
    out = sp.csc_matrix((csc.data.copy(), rows, csc.indptr.copy()), shape=csc.shape)
    return out.tocsr()


def rewire(adjacency: sp.spmatrix, rng: np.random.Generator) -> sp.csr_matrix:
    """A random graph with the same edge-end count per node and the same weights."""
    upper = sp.triu(sp.csr_matrix(adjacency), k=1).tocoo()
    stubs = np.concatenate([upper.row, upper.col])
    rng.shuffle(stubs)
    m = upper.nnz
    i, j, w = stubs[:m], stubs[m:], upper.data
    keep = i != j
    g = sp.coo_matrix((w[keep], (i[keep], j[keep])), shape=adjacency.shape).tocsr()
    g.sum_duplicates()
    return (g + g.T).tocsr()


@torch.no_grad()
def dictionary_null_codes(
    sae: SparseAutoencoder,
    matrix: sp.csr_matrix,
    residual_std: np.ndarray,
    rng: np.random.Generator,
    *,
    together: np.ndarray | None = None,
    batch_size: int = 4096,
    device: str = "cpu",
) -> sp.csr_matrix:
    """Codes of rows synthesised from independent features through the SAE's dictionary.

    Args:
        sae: the SAE (store space).
        matrix: real codes ``[n, d_sae]`` whose per-feature activations are reused.
        residual_std: ``[d_in]`` per-unit standard deviation of the real reconstruction
            error, the noise added to the synthetic rows.
        rng: random source.
        together: ``[d_sae]`` features that keep firing together (dense and
            global-mode features: a shared component, not a module).
    """
    independent = permute_codes(matrix, rng, together)
    W_dec = sae.W_dec.detach().float().cpu().numpy()
    b_dec = sae.b_dec.detach().float().cpu().numpy()
    sae = sae.to(device).eval()
    n, d_sae = independent.shape
    parts = []
    for s in range(0, n, batch_size):
        f = independent[s : s + batch_size]
        x = f @ W_dec + b_dec
        x = x + rng.standard_normal(x.shape).astype(np.float32) * residual_std[None, :]
        idx, vals = encode_sparse(sae, torch.from_numpy(np.ascontiguousarray(x)).to(device))
        idx, vals = idx.cpu().numpy(), vals.cpu().numpy()
        parts.append(sp.csr_matrix((vals, (idx[:, 0], idx[:, 1])), shape=(x.shape[0], d_sae)))
    return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, d_sae))
