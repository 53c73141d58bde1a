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
never with ``d_sae**2``. What the counts become (affinities, pair tests, the
feature graph) is in :mod:`.edges`.

Two engines compute the same counts, exactly (integer arithmetic in both):

- ``scipy`` (:mod:`.scipy_counting`): sparse products ``F[:, I]^T F`` over blocks of latents, in a
  thread pool. It is the engine on the CPU: on 2 cores it counted 50k rows x 4096
  latents at L0 32 (and x 16,384) about 3x faster than the torch engine.
- ``torch`` (:mod:`.torch_counting`): a scatter-add of each row's firing pairs
  into tiles of the counts, on any torch device, in row blocks. It is the engine
  on every other device (``cuda``).

``count_cooccurrence(..., device=...)`` picks the engine from the device
(``engine="auto"``); ``engine`` forces one (the tests compare the two on the CPU).
The atlas passes ``AtlasConfig.device`` (``--device``).

Counting in parts: ``count_cooccurrence(..., part=(k, n_parts))`` counts only the
pairs ``(i, j)``, ``i < j``, whose latent ``i`` lies in the ``k``-th of
``n_parts`` contiguous blocks of latents (:func:`latent_blocks`), balanced by the
pair work of each latent (for every firing of ``i``, the later firings of its
row), so each part holds about ``1 / n_parts`` of the stored pairs. The ranks of
a ``torchrun`` analysis count one part each: the parts in block order are the
rows of the whole upper triangle, in order (:mod:`.edges` builds one graph from
them).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from ..._validation import check_device
from .scipy_counting import scipy_upper_blocks
from .torch_counting import torch_upper_blocks
from .windows import pool_windows

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
    part: tuple[int, int] = (0, 1)
    """``(k, n_parts)``: `counts` holds the pairs of the ``k``-th of ``n_parts`` blocks
    of latents only (:func:`latent_blocks`; its other rows are empty); ``(0, 1)``: all."""

    @property
    def d_sae(self) -> int:
        return int(self.n_fire.shape[0])

    @property
    def n_pairs(self) -> int:
        """Stored pairs: distinct pairs that fire together at least once (of this
        `part` only)."""
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


#: Engines of :func:`count_cooccurrence`; ``auto`` picks scipy on the CPU, torch elsewhere.
ENGINES = ("auto", "scipy", "torch")


def count_cooccurrence(
    codes: sp.sparray | sp.spmatrix | np.ndarray,
    *,
    window: int = 0,
    samples: np.ndarray | None = None,
    block_features: int | None = None,
    block_rows: int | None = None,
    n_threads: int | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
    part: tuple[int, int] = (0, 1),
) -> Cooccurrence:
    """Count how often each latent fires, and each pair fires together.

    With ``F`` the binary ``[N, d_sae]`` firing matrix (``codes > 0``), ``n_fire =
    1^T F`` and ``C = F^T F`` restricted to its strict upper triangle. Both engines
    give identical results, exact for any ``N`` (int32 counts while ``N < 2**31``,
    int64 beyond).

    The scipy engine computes ``C`` by blocks of ``block_features`` latents ``I =
    [i0, i1)``: ``C[I, i0:] = F[:, I]^T F[:, i0:]`` is exact for those rows, so no
    partial sums are added across blocks. Peak memory is the result plus one block of
    at most ``block_features * d_sae`` entries per thread (about 4M by default).

    The torch engine (:mod:`.torch_counting`) scatter-adds each row's firing pairs
    into tiles ``[block_features, d_sae - i0]`` of integer counts on ``device``,
    reading the rows in blocks of ``block_rows``; device memory is one tile (at most
    ``2**26`` counts by default) and one row block with a few int64 temporaries per
    firing, never ``n_rows x d_sae`` nor ``d_sae**2``.

    Args:
        codes: ``[n_rows, d_sae]`` SAE activations (scipy sparse, or dense for small data).
        window: 0 counts rows. ``window > 0`` counts windows of ``window`` consecutive rows
            of one sample (non-overlapping; a sample's last window may be shorter); a latent
            fires in a window if it fires on any of its rows.
        samples: ``[n_rows]`` sample id of each row, needed when ``window > 0`` (ignored
            otherwise); the rows of a sample must be contiguous and in order.
        block_features: latents per block of the product (default: scipy ``2**22 //
            d_sae``; torch as many as fit a tile of ``2**26`` counts).
        block_rows: rows (or windows) per block moved to the device (torch engine only;
            default: as many as hold about ``2**24`` firings).
        n_threads: blocks computed at once (scipy engine only; default: the CPUs this
            process may use). The torch engine uses torch's own threads.
        device: where the torch engine counts (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a
            ``torch.device``); None is the CPU.
        engine: ``"auto"`` (scipy on the CPU, torch on any other device), ``"scipy"``
            (CPU only) or ``"torch"``.
        part: ``(k, n_parts)``: count only the pairs ``(i, j)`` with ``i`` in the ``k``-th
            of the ``n_parts`` blocks of latents of :func:`latent_blocks` (``n_fire`` and
            ``n_rows`` are still those of all latents). ``(0, 1)``: every pair.
    """
    k, n_parts = _check_part(part)
    counter = _Counter(
        codes, window, samples, block_features, block_rows, n_threads, device, engine
    )
    latents = (
        (0, counter.d) if n_parts == 1 else tuple(latent_blocks(counter.fires, n_parts)[k : k + 2])
    )
    return counter.count(latents, (k, n_parts))


#: Bytes of pair counts :func:`count_in_parts` holds at once (an int32 column and an
#: int32 count per stored pair): 32M pairs.
PAIR_COUNT_BYTES = 256 << 20


def count_in_parts(
    codes: sp.sparray | sp.spmatrix | np.ndarray,
    *,
    window: int = 0,
    samples: np.ndarray | None = None,
    n_threads: int | None = None,
    device: str | torch.device | None = None,
    engine: str = "auto",
    part: tuple[int, int] = (0, 1),
    max_bytes: int = PAIR_COUNT_BYTES,
) -> tuple[int, Iterator[Cooccurrence]]:
    """The counts of :func:`count_cooccurrence` with ``part``, one sub-part at a time, so
    that no more than about ``max_bytes`` of pair counts are held at once.

    Returns ``(bound, parts)``: ``bound`` is the pair work of all latents (every rank
    computes the same one), an upper bound on the stored pairs of all parts, which
    :func:`.edges.build_graph` needs for its p cut before it has seen them;
    ``parts`` yields the counts of ``part``'s latents in ``n_sub`` consecutive blocks,
    ``n_sub`` the one every rank computes from the pair work (1 while the counts fit),
    each a :class:`Cooccurrence` of part ``(k * n_sub + s, n_parts * n_sub)``. The
    firings are binarised (and pooled into windows) once for all of them. Held
    whole, the counts grow with the rows: one entry for every pair that fires together
    once."""
    k, n_parts = _check_part(part)
    counter = _Counter(codes, window, samples, None, None, n_threads, device, engine)
    work = pair_work(counter.fires)
    total = float(work.sum())
    n_sub = max(1, math.ceil(total / n_parts * 8 / max(int(max_bytes), 1)))
    bounds = _balanced(np.cumsum(work), n_parts * n_sub)

    def parts() -> Iterator[Cooccurrence]:
        for j in range(k * n_sub, (k + 1) * n_sub):
            yield counter.count((int(bounds[j]), int(bounds[j + 1])), (j, n_parts * n_sub))

    return int(total), parts()


class _Counter:
    """Firings made ready once (binarised, pooled into windows), counted by latent ranges."""

    def __init__(
        self, codes, window, samples, block_features, block_rows, n_threads, device, engine
    ):
        if window < 0 or int(window) != window:
            raise ValueError(f"`window` must be a non-negative integer, got {window!r}.")
        self.block_features, self.block_rows = (
            _positive_or_none(name, value)
            for name, value in (("block_features", block_features), ("block_rows", block_rows))
        )
        self.n_threads = _n_threads(n_threads)
        self.use_torch, self.dev = _engine(engine, device)
        fires = _binarise(codes)
        if window > 0:
            fires = pool_windows(fires, samples, int(window))
        self.fires, self.window = fires, int(window)
        self.n_units, self.d = fires.shape
        self.n_fire = np.bincount(fires.indices, minlength=self.d).astype(np.int64)
        self.dtype = np.int32 if self.n_units < np.iinfo(np.int32).max else np.int64

    def count(self, latents: tuple[int, int], part: tuple[int, int]) -> Cooccurrence:
        fires, d, dtype = self.fires, self.d, self.dtype
        if self.use_torch:
            blocks = torch_upper_blocks(
                fires, self.dev, self.block_features, self.block_rows, dtype, latents
            )
        else:
            block = self.block_features or max(64, (1 << 22) // max(d, 1))
            blocks = scipy_upper_blocks(fires, block, self.n_threads, dtype, latents)
        return Cooccurrence(
            n_rows=int(self.n_units),
            n_fire=self.n_fire,
            counts=_upper_pair_counts(d, dtype, *blocks),
            window=self.window,
            part=part,
        )


def pair_work(fires: sp.csr_array) -> np.ndarray:
    """``[d]`` float64 each latent's pair work: summed over its firings, the later firings
    of the same row (``fires``: ``[N, d]`` canonical CSR). The pairs ``(i, j > i)`` both
    engines visit for row ``i`` of the upper triangle, and a bound on its stored pairs."""
    # for each firing, the firings after it in its row (indices sorted within a row)
    n_after = np.repeat(fires.indptr[1:], np.diff(fires.indptr)) - np.arange(fires.nnz) - 1
    # float64 sums of integers: exact below 2**53 pair visits
    return np.bincount(fires.indices, weights=n_after, minlength=fires.shape[1])


def latent_blocks(fires: sp.csr_array, n_parts: int) -> np.ndarray:
    """``[n_parts + 1]`` bounds of ``n_parts`` contiguous blocks of latents of about equal
    pair work (:func:`pair_work`): block ``k`` is the latents ``[bounds[k], bounds[k + 1])``.

    Latents near the end of the triangle have few partners, so blocks of equal work
    are not blocks of equal size. Every rank computes the same bounds from the same
    firings.
    """
    return _balanced(np.cumsum(pair_work(fires)), n_parts)


def _balanced(work: np.ndarray, n_parts: int) -> np.ndarray:
    """Bounds of ``n_parts`` blocks of about equal work, from the cumulative ``work``."""
    d = work.size
    total = work[-1] if d else 0.0
    inner = np.searchsorted(work, total * np.arange(1, n_parts) / n_parts, side="right")
    return np.concatenate(([0], inner, [d])).astype(np.int64)


def _check_part(part: tuple[int, int]) -> tuple[int, int]:
    k, n_parts = part
    if not (n_parts >= 1 and 0 <= k < n_parts and int(k) == k and int(n_parts) == n_parts):
        raise ValueError(f"`part` must be (k, n_parts) with 0 <= k < n_parts, got {tuple(part)!r}.")
    return int(k), int(n_parts)


def _positive_or_none(name: str, value: int | None) -> int | None:
    if value is not None and (value < 1 or int(value) != value):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return None if value is None else int(value)


def _engine(engine: str, device: str | torch.device | None) -> tuple[bool, torch.device]:
    """Whether to count in torch, and on which device."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown `engine` {engine!r}; expected one of: {list(ENGINES)}.")
    check_device("device", device)
    dev = torch.device("cpu" if device is None else device)
    if engine == "scipy" and dev.type != "cpu":
        raise ValueError(
            f"`engine`='scipy' counts on the CPU, but `device` is {str(dev)!r}; "
            "use `engine`='torch' (or 'auto') to count on it."
        )
    return engine == "torch" or (engine == "auto" and dev.type != "cpu"), dev


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


def _upper_pair_counts(
    d: int,
    dtype: type,
    row_counts: np.ndarray,
    col_parts: list[np.ndarray],
    count_parts: list[np.ndarray],
) -> sp.csr_array:
    """The strict upper triangle of ``F^T F`` as a CSR with sorted indices, from the
    per-latent pair counts and the column and count arrays of each block, in row order."""
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


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    out = np.empty(sum(p.size for p in parts), dtype=dtype)
    pos = 0
    while parts:
        p = parts.pop(0)
        out[pos : pos + p.size] = p
        pos += p.size
    return out


def _n_threads(n_threads: int | None) -> int:
    """``n_threads``, or the CPUs this process may use; must be positive."""
    if n_threads is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    if n_threads < 1 or int(n_threads) != n_threads:
        raise ValueError(f"`n_threads` must be a positive integer, got {n_threads!r}.")
    return int(n_threads)
