"""Pair counting with scipy on the CPU: the strict upper triangle of ``F^T F`` in blocks.

``F`` is the binary ``[N, d_sae]`` firing matrix. Blocks of latent rows ``F[:, I]^T F``
are sparse products (scipy's kernels release the GIL, so blocks run in a thread
pool), each cut to its strict upper triangle; columns before a block's first
latent are dropped from ``F`` once they are an eighth of the columns read, each
time from the columns kept the time before (so the cuts read about ``8 nnz(F)``
entries in all, not ``nnz(F)`` per cut). The
engine :func:`.cooccurrence.count_cooccurrence` uses on the CPU (the other one is
:mod:`.torch_counting`); both give the same integer counts.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp


def scipy_upper_blocks(
    fires: sp.csr_array, block: int, n_threads: int, dtype: type, latents: tuple[int, int]
):
    """Per-row pair counts, and the column and count arrays of each block of the rows
    ``latents = [lo, hi)`` of the upper triangle, in row order (the scipy engine)."""
    n, d = fires.shape
    ones = np.ones(fires.nnz, dtype=dtype)
    F = sp.csr_array((ones, fires.indices, fires.indptr), shape=(n, d))
    # int8 ones: the product upcasts only the small left block, and FT stays small.
    FT = sp.csr_array((ones.astype(np.int8), fires.indices, fires.indptr), shape=(n, d)).T.tocsr()
    row_counts = np.zeros(d, dtype=np.int64)
    col_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    # scipy's sparse kernels release the GIL, so blocks run in parallel threads.
    suffix, read_from = F, 0  # columns read_from: of F, re-indexed from 0
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for start, blocks in _suffix_groups(*latents, d, block):
            if start > read_from:  # cut from the last suffix, which shrinks group by group
                suffix, read_from = _column_suffix(suffix, start - read_from, ones), start
            done = pool.map(lambda b, s=suffix, c=start: _upper_block(FT, s, c, *b), blocks)
            for (i0, i1), part in zip(blocks, done):
                row_counts[i0:i1] = np.diff(part.indptr)
                col_parts.append(part.indices)
                count_parts.append(part.data)
    return row_counts, col_parts, count_parts


def _suffix_groups(lo: int, hi: int, d: int, block: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """Blocks ``[i0, i1)`` of the latents ``[lo, hi)`` of ``d``, grouped by the first
    column ``start`` their product reads.

    Columns before ``i0`` only give lower-triangle products; dropping them costs a pass
    over ``F``, so a new group starts only once they are 1/8 of the columns read.
    """
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for i0 in range(lo, hi, block):
        if not groups or 8 * (i0 - groups[-1][0]) > d - groups[-1][0]:
            groups.append((i0, []))
        groups[-1][1].append((i0, min(hi, i0 + block)))
    return groups


def _upper_block(FT: sp.csr_array, suffix: sp.csr_array, start: int, i0: int, i1: int):
    """Rows ``i0:i1`` of the strict upper triangle of ``F^T F``: a CSR ``[i1 - i0, d]``.

    ``suffix`` holds columns ``start:`` of ``F`` (``start <= i0``), re-indexed from 0.
    """
    P = FT[i0:i1] @ suffix  # [i1 - i0, d - start]
    cols = P.indices
    cols += np.int32(start)
    upper = cols > np.repeat(np.arange(i0, i1, dtype=np.int32), np.diff(P.indptr))
    running = np.zeros(P.nnz + 1, dtype=P.indices.dtype)
    np.cumsum(upper, out=running[1:])
    indptr = running[P.indptr]
    del running
    part = sp.csr_array((P.data[upper], cols[upper], indptr), shape=(i1 - i0, FT.shape[0]))
    part.sort_indices()
    return part


def _column_suffix(F: sp.csr_array, start: int, ones: np.ndarray) -> sp.csr_array:
    """Columns ``start:`` of a CSR, re-indexed from 0."""
    keep = F.indices >= start
    running = np.zeros(F.nnz + 1, dtype=F.indices.dtype)
    np.cumsum(keep, out=running[1:])
    kept = running[F.indptr]
    del running
    cols = F.indices[keep] - np.int32(start)
    return sp.csr_array((ones[: cols.size], cols, kept), shape=(F.shape[0], F.shape[1] - start))
