"""Pair counting in torch, on any device: the strict upper triangle of ``F^T F``.

``F`` is the binary ``[N, d_sae]`` firing matrix, held as a canonical CSR (column
indices sorted within each row). Row ``r`` firing the latents ``c_0 < c_1 < ...``
adds 1 to ``C[c_p, c_q]`` for every ``p < q``, so the counts are a scatter-add of
ones over the pairs of each row's firings: integer arithmetic, exact on every
device (int32 counts while ``N < 2**31``, int64 beyond), with work proportional
to the pairs that fire together (``N * L0**2 / 2``), never to ``N * d_sae**2``.

A dense GEMM of the binarised rows (``F_block^T @ F_block`` in bfloat16 with fp32
accumulation) would be exact too while a count stays below ``2**24``, but it does
``N * d_sae**2`` multiply-adds whatever the sparsity: at 65,536 latents and 1M
rows, 4.3e15, against 5e8 pair increments at L0 32. It only wins past an L0 of
roughly ``d_sae / 30``, which SAEs do not reach.

Memory on the device is bounded by a tile, a row block and its firings, never by
``N x d_sae`` nor by ``d_sae**2``:

- a tile of the counts: rows ``[i0, i1)`` by columns ``[i0, d)``, at most
  :data:`TILE_COUNTS` integers (or ``block_features`` rows when given), and then
  its non-zero counts (the stored pairs of those rows) on their way to the host;
- a block of rows: ``block_rows`` rows of the CSR, by default as many as hold
  about :data:`BLOCK_FIRINGS` firings, with a few int64 temporaries per firing
  (the pairs are scattered one offset at a time, never all expanded at once).

Tiles run one after another (only those of the rows ``latents`` when one part
of the triangle is counted); each reads every row block (moved to the device
once when all of them hold at most :data:`RESIDENT_FIRINGS` firings, else again
for every tile) and hands its non-zero counts back to the host as CSR parts.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

#: Counts in one tile (``[block_features, d - i0]`` integers): 256 MiB as int32.
TILE_COUNTS = 1 << 26
#: Firings per row block when ``block_rows`` is not given.
BLOCK_FIRINGS = 1 << 24
#: Row blocks stay on the device across tiles when all of them hold at most this
#: many firings (4 bytes each); more are moved again for every tile.
RESIDENT_FIRINGS = 1 << 28


def torch_upper_blocks(
    fires: sp.csr_array,
    device: torch.device,
    block_features: int | None,
    block_rows: int | None,
    dtype: type,
    latents: tuple[int, int] | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per-row pair counts, and the column and count arrays of each tile, in row order.

    ``fires``: ``[N, d]`` canonical CSR. Returns what ``_upper_pair_counts`` assembles
    into the upper-triangle CSR: ``row_counts`` ``[d]`` int64 (stored pairs of each
    latent), and per tile its columns (int32, sorted within each row) and counts
    (``dtype``: int32 or int64). ``latents = (lo, hi)``: only the rows ``[lo, hi)`` of
    the triangle (the others count no pairs); None: all of them.
    """
    n, d = fires.shape
    if block_rows is None:
        block_rows = max(1, BLOCK_FIRINGS * n // max(fires.nnz, 1))
    count_dtype = torch.int32 if dtype == np.int32 else torch.int64
    blocks = _RowBlocks(fires, int(block_rows), device)
    row_counts = np.zeros(d, dtype=np.int64)
    col_parts: list[np.ndarray] = []
    count_parts: list[np.ndarray] = []
    for i0, i1 in _tiles(d, block_features, *(latents or (0, d))):
        rows, cols, counts = _tile_counts(blocks, i0, i1, d, count_dtype)
        row_counts[i0:i1] = torch.bincount(rows, minlength=i1 - i0).cpu().numpy()
        col_parts.append(cols.to(torch.int32).cpu().numpy())
        count_parts.append(counts.cpu().numpy())
    return row_counts, col_parts, count_parts


def _tiles(
    d: int, block_features: int | None, lo: int = 0, hi: int | None = None
) -> list[tuple[int, int]]:
    """Latent ranges ``[i0, i1)`` covering ``[lo, hi)`` (default: all ``d``) whose tile
    ``[i1 - i0, d - i0]`` holds at most :data:`TILE_COUNTS` counts (or ``block_features``
    latents each)."""
    hi = d if hi is None else hi
    tiles, i0 = [], lo
    while i0 < hi:
        b = block_features or max(1, TILE_COUNTS // (d - i0))
        tiles.append((i0, min(hi, i0 + b)))
        i0 += b
    return tiles


class _RowBlocks:
    """The CSR's rows in blocks of ``block_rows``, as device tensors ``(cols, ends)``:
    each firing's latent, and the end of its row's firings (block-local positions)."""

    def __init__(self, fires: sp.csr_array, block_rows: int, device: torch.device) -> None:
        self.fires, self.block_rows, self.device = fires, block_rows, device
        self._resident = None
        if fires.nnz <= RESIDENT_FIRINGS:
            self._resident = list(self._moved())

    def __iter__(self):
        return iter(self._resident) if self._resident is not None else self._moved()

    def _moved(self):
        f, dev = self.fires, self.device
        indptr = torch.from_numpy(f.indptr.astype(np.int64, copy=False))
        indices = torch.from_numpy(f.indices.astype(np.int32, copy=False))
        for r0 in range(0, f.shape[0], self.block_rows):
            r1 = min(f.shape[0], r0 + self.block_rows)
            e0, e1 = int(indptr[r0]), int(indptr[r1])
            if e1 > e0:
                starts = (indptr[r0 : r1 + 1] - e0).to(dev)
                yield indices[e0:e1].to(dev), starts


def _tile_counts(
    blocks: _RowBlocks, i0: int, i1: int, d: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-zero counts of rows ``[i0, i1)`` of the strict upper triangle, row-major:
    ``(row - i0, column, count)`` on the device."""
    w = d - i0  # the tile's columns are [i0, d): nothing left of i0 is upper triangle
    dev = blocks.device
    tile = torch.zeros((i1 - i0) * w, dtype=dtype, device=dev)
    for cols, starts in blocks:
        cols = cols.to(torch.int64)  # the keys are int64: no promotion in every step
        ends = torch.repeat_interleave(starts[1:], starts.diff())
        src = torch.nonzero((cols >= i0) & (cols < i1)).squeeze(1)
        # Firings after src in its row: the latents above it that co-fire with it.
        n_after = ends[src] - src - 1
        _scatter_pairs(tile, cols, src, n_after, i0, w)
    flat = torch.nonzero(tile).squeeze(1)  # sorted: row-major, columns ascending
    counts = tile[flat]
    del tile
    rows = torch.div(flat, w, rounding_mode="floor")
    return rows, flat - rows * w + i0, counts


def _scatter_pairs(
    tile: torch.Tensor,
    cols: torch.Tensor,
    src: torch.Tensor,
    n_after: torch.Tensor,
    i0: int,
    w: int,
) -> None:
    """Add 1 at ``(cols[s] - i0) * w + cols[s + m] - i0`` for every source firing ``s``
    and ``1 <= m <= n_after[s]`` (its pairs with the later firings of its row).

    One step per offset ``m``, over the sources that still have an ``m``-th partner;
    sorted by ``n_after`` (descending) they are a prefix, so a step is a slice, a
    gather and a scatter-add: the work is the number of pairs, the memory the
    sources (never the pairs).
    """
    n_after, order = torch.sort(n_after, descending=True)
    src = src[order]
    row_key = (cols[src] - i0) * w - i0
    # n_active[m - 1]: sources with at least m partners.
    n_max = int(n_after[0]) if n_after.numel() else 0
    steps = torch.arange(1, n_max + 1, device=n_after.device)
    n_active = torch.searchsorted(-n_after, -steps, right=True).cpu().tolist()
    ones = torch.ones(1, dtype=tile.dtype, device=tile.device)
    for m, n in enumerate(n_active, start=1):
        tile.index_add_(0, row_key[:n] + cols[src[:n] + m], ones.expand(n))
