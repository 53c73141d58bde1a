"""Which SAE latents fire together: pair counts, affinities, significance, a feature graph.

A latent *fires* on a row when its activation is > 0. Over ``N`` units of counting
(rows, or windows of consecutive rows of one text) each pair of latents ``i < j``
has a 2x2 contingency table::

                 j fires    j silent
    i fires        a           b        n_i = a + b
    i silent       c           d        N - n_i
                  n_j       N - n_j     N

``count_cooccurrence`` counts ``a`` for every pair that fires together at least
once, and ``n_i`` for every latent; memory grows with the number of such pairs,
never with ``d_sae**2``. ``affinity`` scores the stored pairs (phi, NPMI,
Jaccard), ``pair_pvalues`` tests each against independence with the same
margins (:mod:`.hypergeom`), ``benjamini_hochberg`` controls the false discovery rate over all
``d (d - 1) / 2`` pairs of latents that fire, and ``build_graph`` keeps the
significant positive associations as a weighted, symmetric adjacency matrix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .hypergeom import benjamini_hochberg, hypergeom_upper_tail, log_pmf

#: Pairs scored per step when streaming over stored pairs (bounds temporary memory).
PAIR_CHUNK = 1 << 16

# ---------------------------------------------------------------- counting


class PairCounts(NamedTuple):
    """Stored pairs as aligned ``[n_pairs]`` arrays, ``row < col``."""

    row: np.ndarray
    """Latent ``i`` (int32)."""
    col: np.ndarray
    """Latent ``j > i`` (int32)."""
    count: np.ndarray
    """``a``: units on which both fire."""


@dataclass(frozen=True, eq=False)
class Cooccurrence:
    """Firing and joint-firing counts of the latents of an SAE."""

    n_rows: int
    """``N``: units of counting (rows, or windows when `window` > 0)."""
    n_fire: np.ndarray
    """``[d_sae]`` int64: units on which each latent fires."""
    counts: sp.csr_array
    """``[d_sae, d_sae]`` upper triangle: ``counts[i, j]`` (``i < j``) units on which
    both fire; only pairs that fire together at least once are stored."""
    window: int = 0
    """Rows per window (0: every row is a unit)."""

    @property
    def d_sae(self) -> int:
        return int(self.n_fire.shape[0])

    @property
    def n_pairs(self) -> int:
        """Stored pairs: distinct pairs that fire together at least once."""
        return int(self.counts.nnz)

    @property
    def n_alive(self) -> int:
        """Latents that fire at least once."""
        return int(np.count_nonzero(self.n_fire))

    @property
    def n_tests(self) -> int:
        """``m = d (d - 1) / 2`` over the ``d`` latents that fire: every pair that could co-fire."""
        d = self.n_alive
        return d * (d - 1) // 2

    def pairs(self) -> PairCounts:
        """All stored pairs, in row-major order of ``counts``."""
        c = self.counts
        row = np.repeat(np.arange(c.shape[0], dtype=np.int32), np.diff(c.indptr))
        return PairCounts(row, c.indices.astype(np.int32, copy=False), c.data)


def count_cooccurrence(
    codes: sp.sparray | sp.spmatrix | np.ndarray,
    *,
    window: int = 0,
    samples: np.ndarray | None = None,
    block_features: int | None = None,
    n_threads: int | None = None,
) -> Cooccurrence:
    """Count how often each latent fires, and each pair fires together.

    With ``F`` the binary ``[N, d_sae]`` firing matrix (``codes > 0``), ``n_fire =
    1^T F`` and ``C = F^T F`` restricted to its strict upper triangle.

    ``C`` is computed by blocks of ``block_features`` latents ``I = [i0, i1)``:
    ``C[I, i0:] = F[:, I]^T F[:, i0:]`` is exact for those rows, so no partial sums
    are added across blocks. Peak memory is the result plus one block of at most
    ``block_features * d_sae`` entries per thread (about 4M by default).

    Args:
        codes: ``[n_rows, d_sae]`` SAE activations (scipy sparse, or dense for small data).
        window: 0 counts rows. ``window > 0`` counts windows of ``window`` consecutive rows
            of one sample (non-overlapping; a sample's last window may be shorter); a latent
            fires in a window if it fires on any of its rows.
        samples: ``[n_rows]`` sample id of each row, needed when ``window > 0`` (ignored
            otherwise); the rows of a sample must be contiguous and in order.
        block_features: latents per block of the product (default ``2**22 // d_sae``).
        n_threads: blocks computed at once (default: the CPUs this process may use).
    """
    if window < 0 or int(window) != window:
        raise ValueError(f"`window` must be a non-negative integer, got {window!r}.")
    if block_features is not None and (block_features < 1 or int(block_features) != block_features):
        raise ValueError(f"`block_features` must be a positive integer, got {block_features!r}.")
    fires = _binarise(codes)
    if window > 0:
        fires = _pool_windows(fires, samples, int(window))
    n_units, d = fires.shape
    if block_features is None:
        block_features = max(64, (1 << 22) // max(d, 1))
    n_fire = np.bincount(fires.indices, minlength=d).astype(np.int64)
    counts = _upper_pair_counts(fires, int(block_features), _n_threads(n_threads))
    return Cooccurrence(n_rows=int(n_units), n_fire=n_fire, counts=counts, window=int(window))


def _binarise(codes: sp.sparray | sp.spmatrix | np.ndarray) -> sp.csr_array:
    """``[n, d]`` activations -> canonical CSR of the entries > 0 (data not meaningful)."""
    if not sp.issparse(codes):
        arr = np.asarray(codes)
        if arr.ndim != 2:
            raise ValueError(f"`codes` must be 2-D [n_rows, d_sae], got shape {arr.shape}.")
        return sp.csr_array(arr > 0)
    if codes.ndim != 2:
        raise ValueError(f"`codes` must be 2-D [n_rows, d_sae], got shape {codes.shape}.")
    c = sp.csr_array(codes)  # no copy when already CSR
    if not c.has_canonical_format:
        c = c.copy()
        c.sum_duplicates()
    on = c.data > 0
    if on.all():  # the usual case (TopK/ReLU codes): share the index arrays
        return sp.csr_array((on, c.indices, c.indptr), shape=c.shape)
    kept = np.concatenate(([0], np.cumsum(on, dtype=c.indptr.dtype)))[c.indptr]
    return sp.csr_array((on[on], c.indices[on], kept), shape=c.shape)


def window_ids(samples: np.ndarray, window: int) -> np.ndarray:
    """``[n_rows]`` window index of each row: ``window`` consecutive rows of one sample.

    Windows restart at each sample; ids are consecutive from 0 in row order. The rows
    of a sample must be contiguous.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"`samples` must be 1-D (one id per row), got shape {samples.shape}.")
    if window < 1:
        raise ValueError(f"`window` must be positive, got {window}.")
    if samples.size == 0:
        return np.zeros(0, dtype=np.int64)
    new_run = np.empty(samples.size, dtype=bool)
    new_run[0] = True
    np.not_equal(samples[1:], samples[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    if np.unique(samples[starts]).size != starts.size:
        ids, n_runs = np.unique(samples[starts], return_counts=True)
        bad = ids[n_runs > 1][:5].tolist()
        raise ValueError(
            f"Rows of a sample must be contiguous, but samples {bad} appear in several runs; "
            "sort the rows by sample (keeping token order) first."
        )
    pos = np.arange(samples.size) - starts[np.cumsum(new_run) - 1]
    return np.cumsum(pos % window == 0) - 1


def _pool_windows(fires: sp.csr_array, samples: np.ndarray | None, window: int) -> sp.csr_array:
    """``[n_rows, d]`` firing -> ``[n_windows, d]``: a latent fires in a window if on any row."""
    n = fires.shape[0]
    if samples is None:
        raise ValueError(
            f"`window`={window} counts windows within samples, so `samples` ([n_rows] sample "
            "id per row) is required; pass it, or use `window`=0 to count rows."
        )
    samples = np.asarray(samples)
    if samples.shape != (n,):
        raise ValueError(f"`samples` must have shape ({n},) (one id per row), got {samples.shape}.")
    ids = window_ids(samples, window)
    n_windows = int(ids[-1]) + 1 if n else 0
    # Windows are runs of consecutive rows, so each is a contiguous slice of the CSR arrays.
    first_row = np.flatnonzero(np.diff(ids, prepend=-1))
    indptr = np.append(fires.indptr[first_row], fires.indptr[-1])
    pooled = sp.csr_array(
        # bool data: duplicates merge by OR, so none can sum to an (erased) zero.
        (np.ones(fires.nnz, dtype=bool), fires.indices.copy(), indptr),
        shape=(n_windows, fires.shape[1]),
    )
    pooled.sum_duplicates()
    return pooled


def _upper_pair_counts(fires: sp.csr_array, block: int, n_threads: int) -> sp.csr_array:
    """Strict upper triangle of ``F^T F`` as a CSR with sorted indices, block by block."""
    n, d = fires.shape
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    row_counts, col_parts, count_parts = _upper_blocks(fires, block, n_threads, dtype)
    nnz = int(row_counts.sum())
    index = np.int32 if max(nnz, d) < np.iinfo(np.int32).max else np.int64
    indptr = np.zeros(d + 1, dtype=index)
    np.cumsum(row_counts, out=indptr[1:])
    # Concatenate one array at a time so at most one extra copy is alive.
    cols = _concat(col_parts, index)
    counts = _concat(count_parts, dtype)
    out = sp.csr_array((counts, cols, indptr), shape=(d, d))
    out.has_sorted_indices = True
    return out


def _upper_blocks(fires: sp.csr_array, block: int, n_threads: int, dtype: type):
    """Per-row pair counts, and the column and count arrays of each block, in row order."""
    n, d = fires.shape
    ones = np.ones(fires.nnz, dtype=dtype)
    F = sp.csr_array((ones, fires.indices, fires.indptr), shape=(n, d))
    # int8 ones: the product upcasts only the small left block, and FT stays small.
    FT = sp.csr_array((ones.astype(np.int8), fires.indices, fires.indptr), shape=(n, d)).T.tocsr()
    row_counts = np.zeros(d, dtype=np.int64)
    col_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    # scipy's sparse kernels release the GIL, so blocks run in parallel threads.
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        for start, blocks in _suffix_groups(d, block):
            suffix = F if start == 0 else _column_suffix(F, start, ones)
            done = pool.map(lambda b, s=suffix, c=start: _upper_block(FT, s, c, *b), blocks)
            for (i0, i1), part in zip(blocks, done):
                row_counts[i0:i1] = np.diff(part.indptr)
                col_parts.append(part.indices)
                count_parts.append(part.data)
            del suffix
    return row_counts, col_parts, count_parts


def _suffix_groups(d: int, block: int) -> list[tuple[int, list[tuple[int, int]]]]:
    """Blocks ``[i0, i1)`` of latents, grouped by the first column ``start`` their product reads.

    Columns before ``i0`` only give lower-triangle products; dropping them costs a pass
    over ``F``, so a new group starts only once they are 1/8 of the columns read.
    """
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for i0 in range(0, d, block):
        if not groups or 8 * (i0 - groups[-1][0]) > d - groups[-1][0]:
            groups.append((i0, []))
        groups[-1][1].append((i0, min(d, i0 + block)))
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


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    out = np.empty(sum(p.size for p in parts), dtype=dtype)
    pos = 0
    while parts:
        p = parts.pop(0)
        out[pos : pos + p.size] = p
        pos += p.size
    return out


# ---------------------------------------------------------------- affinities
# Each takes the joint count ``a``, the margins ``n_i``, ``n_j`` and the number of
# units ``n`` (arrays that broadcast) and returns float64.


def phi(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Phi coefficient (Pearson correlation of the two binary indicators).

    ``(a d - b c) / sqrt((a + b)(c + d)(a + c)(b + d)) = (a n - n_i n_j) /
    sqrt(n_i (n - n_i) n_j (n - n_j))``; 0 when a margin is 0 (a latent that fires
    on no unit or on every unit). Lies in [-1, 1].
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    den = np.sqrt(n_i * (n - n_i) * n_j * (n - n_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a * n - n_i * n_j) / den
    return np.where(den > 0, out, 0.0)


def npmi(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Normalised pointwise mutual information (Bouma 2009).

    ``log(p_ij / (p_i p_j)) / -log(p_ij)`` with ``p_ij = a / n``, ``p_i = n_i / n``:
    -1 for pairs that never co-fire, 0 under independence, 1 when the two always
    fire together. 0 when ``p_ij = 1`` (both fire on every unit).
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(a * n) - np.log(n_i) - np.log(n_j)
        out = pmi / -np.log(a / n)
    return np.where(a <= 0, -1.0, np.where(a >= n, 0.0, out))


def jaccard(a: np.ndarray, n_i: np.ndarray, n_j: np.ndarray, n: int) -> np.ndarray:
    """Jaccard index of the units each fires on: ``a / (a + b + c) = a / (n_i + n_j - a)``.

    0 when neither fires (``n`` is unused; it keeps the signature of the others).
    """
    a, n_i, n_j = (np.asarray(x, dtype=np.float64) for x in (a, n_i, n_j))
    union = n_i + n_j - a
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, a / union, 0.0)


AFFINITIES: dict[str, Callable[..., np.ndarray]] = {"phi": phi, "npmi": npmi, "jaccard": jaccard}


def _affinity_fn(kind: str) -> Callable[..., np.ndarray]:
    if kind not in AFFINITIES:
        allowed = ", ".join(repr(k) for k in AFFINITIES)
        raise ValueError(f"Unknown affinity {kind!r}; expected one of: {allowed}.")
    return AFFINITIES[kind]


def affinity(co: Cooccurrence, kind: str = "phi", *, n_threads: int | None = None) -> np.ndarray:
    """``[n_pairs]`` float64 affinity of each stored pair, aligned with ``co.pairs()``."""
    fn = _affinity_fn(kind)
    return _per_pair(co, lambda a, n_i, n_j: fn(a, n_i, n_j, co.n_rows), n_threads)


def _per_pair(co: Cooccurrence, fn: Callable, n_threads: int | None) -> np.ndarray:
    """``[n_pairs]`` float64 ``fn(a, n_i, n_j)`` over the stored pairs, chunk by chunk."""
    out = np.empty(co.n_pairs, dtype=np.float64)

    def fill(bounds: tuple[int, int]) -> None:
        sl, row, col, a = _chunk(co, *bounds)
        out[sl] = fn(a, co.n_fire[row], co.n_fire[col])

    with ThreadPoolExecutor(max_workers=_n_threads(n_threads)) as pool:
        list(pool.map(fill, _chunk_rows(co.counts.indptr)))
    return out


def _chunk_rows(indptr: np.ndarray, size: int = PAIR_CHUNK) -> list[tuple[int, int]]:
    """Ranges of whole rows ``[r0, r1)`` of a CSR holding about ``size`` entries each."""
    n_rows, bounds, r0 = indptr.size - 1, [], 0
    while r0 < n_rows:
        r1 = int(np.searchsorted(indptr, indptr[r0] + size, side="right")) - 1
        r1 = min(max(r1, r0 + 1), n_rows)
        if indptr[r1] > indptr[r0]:
            bounds.append((r0, r1))
        r0 = r1
    return bounds


def _chunk(co: Cooccurrence, r0: int, r1: int) -> tuple[slice, np.ndarray, np.ndarray, np.ndarray]:
    """Stored pairs of rows ``[r0, r1)``: ``(slice into the pair arrays, row, col, count)``."""
    indptr = co.counts.indptr
    s0, s1 = int(indptr[r0]), int(indptr[r1])
    row = np.repeat(np.arange(r0, r1, dtype=np.int32), np.diff(indptr[r0 : r1 + 1]))
    return slice(s0, s1), row, co.counts.indices[s0:s1], co.counts.data[s0:s1]


# ---------------------------------------------------------------- significance


def pair_pvalues(co: Cooccurrence, *, n_threads: int | None = None) -> np.ndarray:
    """``[n_pairs]`` p-value of each stored pair (see :func:`hypergeom_upper_tail`)."""
    n = co.n_rows
    return _per_pair(co, lambda a, n_i, n_j: hypergeom_upper_tail(a, n_i, n_j, n).p, n_threads)


# ---------------------------------------------------------------- graph


@dataclass(frozen=True, eq=False)
class FeatureGraph:
    """Significant positive co-firing between latents, as a weighted undirected graph."""

    adjacency: sp.csr_array
    """``[d_sae, d_sae]`` symmetric float64: the affinity of each edge, zero diagonal."""
    kind: str
    """Affinity used as the edge weight: 'phi', 'npmi' or 'jaccard'."""
    alpha: float
    """False discovery rate the edges are controlled at."""
    min_count: int
    """Fewest joint firings an edge needs."""
    n_tests: int
    """``m``: pairs of latents that fire, the multiple-testing family."""
    n_rows: int
    """``N``: units of counting."""
    n_fire: np.ndarray
    """``[d_sae]`` int64: units on which each latent fires."""
    row: np.ndarray
    """``[n_edges]`` int32: latent ``i`` of each edge."""
    col: np.ndarray
    """``[n_edges]`` int32: latent ``j > i`` of each edge."""
    weight: np.ndarray
    """``[n_edges]`` float64: affinity (as in `adjacency`)."""
    count: np.ndarray
    """``[n_edges]``: joint firings ``a``."""
    p: np.ndarray
    """``[n_edges]`` float64: p-value against independence (:func:`hypergeom_upper_tail`)."""
    q: np.ndarray
    """``[n_edges]`` float64: Benjamini-Hochberg adjusted p-value among `n_tests`."""

    @property
    def n_edges(self) -> int:
        return int(self.row.size)

    @property
    def d_sae(self) -> int:
        return int(self.n_fire.shape[0])


def build_graph(
    co: Cooccurrence,
    *,
    kind: str = "phi",
    alpha: float = 0.05,
    min_count: int = 5,
    n_edges: int | None = None,
    n_threads: int | None = None,
) -> FeatureGraph:
    """Keep the pairs that co-fire significantly more than chance; weight them by affinity.

    A pair ``i < j`` becomes an edge when

    - its Benjamini-Hochberg q-value is ``<= alpha`` among all ``m = d (d - 1) / 2``
      pairs of the ``d`` latents that fire (pairs never seen together have ``p = 1``
      and only enlarge ``m``), with ``p`` from :func:`hypergeom_upper_tail`;
    - its affinity is ``> 0`` (only positive association);
    - it fired together on at least ``min_count`` units. Rows of one text are not
      independent, so a few joint firings within one document can look significant
      under the hypergeometric null; this guards against that. It filters edges only:
      such pairs still count as tests.

    Only pairs with ``p <= cut = alpha * n_pairs / m`` can reach ``q <= alpha`` (for the
    others every term of the BH minimum exceeds ``alpha``), so only those are kept
    while streaming over the pairs, and their q-values are exact. A pair whose first
    term ``P(X = a) <= p`` already exceeds ``cut`` is dropped before its tail is summed.

    With ``n_edges``, the graph instead keeps the ``n_edges`` pairs with the smallest
    p-values among those with positive affinity and at least ``min_count`` joint
    firings, significant or not (all of them when there are fewer): a null graph
    with as many edges as the real one. Modularity depends on a graph's density (a
    sparse random graph splits into tight, highly modular pieces; Guimera et al.
    2004), so real and null graphs are compared at one density.

    Args:
        n_edges: keep this many of the most significant pairs instead of those
            with ``q <= alpha``.
        n_threads: chunks of pairs scored at once (default: the CPUs this process may use).
    """
    fn = _affinity_fn(kind)
    if not 0 < alpha <= 1:
        raise ValueError(f"`alpha` must lie in (0, 1], got {alpha}.")
    if min_count < 1 or int(min_count) != min_count:
        raise ValueError(f"`min_count` must be a positive integer, got {min_count!r}.")
    if n_edges is not None and n_edges < 0:
        raise ValueError(f"`n_edges` must be >= 0, got {n_edges}.")
    m, n_fire, n = co.n_tests, co.n_fire, co.n_rows
    cut = alpha * co.n_pairs / m if m else -1.0

    def scored(cut: float) -> tuple[np.ndarray, ...]:
        """Pairs with p <= cut: (row, col, count, p)."""

        def candidates(bounds: tuple[int, int]) -> tuple[np.ndarray, ...]:
            _, row, col, a = _chunk(co, *bounds)
            n_i, n_j = n_fire[row], n_fire[col]
            s = np.flatnonzero(log_pmf(a, n_i, n_j, n) <= np.log(cut))  # cut > 0: pairs exist
            p = hypergeom_upper_tail(a[s], n_i[s], n_j[s], n).p
            s, p = s[p <= cut], p[p <= cut]
            return row[s], col[s], a[s], p

        with ThreadPoolExecutor(max_workers=_n_threads(n_threads)) as pool:
            kept = list(pool.map(candidates, _chunk_rows(co.counts.indptr)))
        return tuple(
            np.concatenate([k[f] for k in kept]) if kept else np.zeros(0, dtype)
            for f, dtype in enumerate((np.int32, np.int32, co.counts.dtype, np.float64))
        )

    row, col, a, p = scored(cut)
    while n_edges is not None and 0 < cut < 1:  # widen the p cut until enough usable pairs
        usable = (fn(a, n_fire[row], n_fire[col], n) > 0) & (a >= min_count)
        if usable.sum() >= n_edges:
            break
        cut = min(1.0, cut * 100)
        row, col, a, p = scored(cut)
    q = benjamini_hochberg(p, n_tests=m)
    w = fn(a, n_fire[row], n_fire[col], n)
    usable = (w > 0) & (a >= min_count)
    if n_edges is None:
        s = usable & (q <= alpha)
    else:
        order = np.lexsort((-w, p))  # smallest p first, larger affinity first on ties
        s = order[usable[order]][:n_edges]
    row, col, a, p, q, w = row[s], col[s], a[s], p[s], q[s], w[s]
    d = co.d_sae
    upper = sp.coo_array((w, (row, col)), shape=(d, d))
    adjacency = (upper + upper.T).tocsr()
    adjacency.sort_indices()
    return FeatureGraph(
        adjacency=adjacency,
        kind=kind,
        alpha=float(alpha),
        min_count=int(min_count),
        n_tests=m,
        n_rows=n,
        n_fire=n_fire,
        row=row,
        col=col,
        weight=w,
        count=a,
        p=p,
        q=q,
    )


def _n_threads(n_threads: int | None) -> int:
    """``n_threads``, or the CPUs this process may use; must be positive."""
    if n_threads is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if n_threads < 1 or int(n_threads) != n_threads:
        raise ValueError(f"`n_threads` must be a positive integer, got {n_threads!r}.")
    return int(n_threads)
