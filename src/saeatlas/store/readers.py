"""The two readers behind :meth:`ActivationStore.iter_batches`: rows in storage order,
and shuffled batches; both over one prefetching shard loader with bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .shards import STORE_DTYPES

if TYPE_CHECKING:
    from .store import ActivationStore


@dataclass
class ReadPlan:
    """What :meth:`ActivationStore.iter_batches` reads: the two readers (storage order
    and shuffled) share the columns, the held-out cut and the prefetching shard loader.
    Each yields ``(batch, full_size)``: ``full_size`` is the batch's size before a
    rank took its share (for ``drop_last``)."""

    store: ActivationStore
    cols: slice | torch.Tensor
    starts: np.ndarray
    stop_row: int
    batch_size: int
    start_batch: int
    block_rows: int = 0
    """Rows of each block the shuffle draws from (:meth:`blocks`); 0: the shards."""

    @property
    def width(self) -> int:
        return self.store._width(self.cols)

    @property
    def store_dtype(self) -> torch.dtype:
        return STORE_DTYPES[self.store.dtype]

    def shards(self, order: list[int], n_buffers: int) -> Iterator[torch.Tensor]:
        """The shards ``order`` (cut at ``stop_row``, columns chosen), each read by a
        background thread while the one before is served. With ``n_buffers``, shards
        are read into that many reused buffers (the caller copies out of them)."""
        source = self.store._source
        size = max(source.nbytes(i) for i in order)
        buffers = [np.empty(size, np.uint8) for _ in range(n_buffers)]
        everything = isinstance(self.cols, slice) and self.cols == slice(0, self.store.n_units)

        def load(k: int) -> torch.Tensor:
            x = source.load(order[k], buffers[k % n_buffers] if buffers else None)
            x = x[: self.stop_row - int(self.starts[order[k]])]
            return x if everything else x[:, self.cols]

        pool = ThreadPoolExecutor(max_workers=1)
        pending = pool.submit(load, 0)
        try:
            for k in range(len(order)):
                x = pending.result()
                if k + 1 < len(order):
                    pending = pool.submit(load, k + 1)
                yield x
        finally:
            # Never join the reader here: a generator left unfinished is closed wherever
            # the garbage collector finalises it, and on CPython 3.11 that was once inside
            # threading's own bookkeeping with its lock held, where the join waited on
            # that lock and every thread started after it hung (the test suite, once).
            pending.cancel()
            pool.shutdown(wait=False, cancel_futures=True)

    def blocks(self, order: list[int], n_buffers: int) -> Iterator[torch.Tensor]:
        """The blocks ``order`` of ``block_rows`` rows (rows ``[i * block_rows, (i + 1) *
        block_rows)``, cut at ``stop_row``), read as :meth:`shards` reads shards. A block
        is its shard when the shards are ``block_rows`` long (one process's capture), and
        gathered from the shards it spans otherwise (a ``torchrun`` capture, whose ranks
        each end on a shorter shard): the shuffle then depends on the rows only, not on
        how many processes captured them."""
        if self.block_rows <= 0:
            yield from self.shards(order, n_buffers)
            return
        starts, b, n = self.starts, self.block_rows, len(self.starts) - 1
        aligned = all(starts[i] == i * b for i in range(n)) and all(
            starts[i + 1] - starts[i] <= b for i in range(n)
        )
        if aligned and n == -(-int(starts[-1]) // b):
            yield from self.shards(order, n_buffers)  # each block is one shard
            return
        for i in order:
            lo, hi = i * b, min((i + 1) * b, self.stop_row)
            first = int(np.searchsorted(starts, lo, side="right")) - 1
            last = int(np.searchsorted(starts, hi, side="left"))
            parts = [
                x[max(0, lo - int(starts[j])) : hi - int(starts[j])]
                for j, x in zip(range(first, last), self.shards(list(range(first, last)), 0))
            ]
            yield parts[0] if len(parts) == 1 else torch.cat(parts)

    def in_order(
        self, order: list[int], part: tuple[int, int]
    ) -> Iterator[tuple[torch.Tensor, int]]:
        rank, world = part
        # In storage order batch b holds rows [b * batch_size, (b + 1) * batch_size):
        # the shards before start_batch's first row are not read at all (a rank
        # encoding its share of a store reads only its own shards).
        skip = self.start_batch * self.batch_size
        order = [i for i in order if self.starts[i + 1] > skip]
        if not order:
            return
        carry = torch.empty(0, self.width, dtype=self.store_dtype)
        for k, x in enumerate(self.shards(order, 0)):
            if k == 0:
                x = x[skip - int(self.starts[order[0]]) :]
            batches, carry = _sequential(carry, x, self.batch_size, k + 1 == len(order))
            for b in batches:
                yield (b.tensor_split(world)[rank] if world > 1 else b), b.shape[0]

    def shuffled(
        self, order: list[int], g: torch.Generator, part: tuple[int, int], reuse_memory: bool
    ) -> Iterator[tuple[torch.Tensor, int]]:
        rank, world = part
        source, bs = self.store._source, self.batch_size
        # one block's worth mixes blocks (its rows before the held-out cut too, as ever)
        if self.block_rows > 0:
            n_rows = int(self.starts[-1])
            carry_rows = max(min(self.block_rows, n_rows - i * self.block_rows) for i in order)
        else:
            carry_rows = max(source.rows(i) for i in order)
        # Shuffled batches are gathered copies, so shard and carry buffers can be
        # reused (alternating), which skips the page faults of fresh memory. No batch
        # holds more rows than there are (a batch size beyond them is one batch).
        cap = min(bs, self.stop_row)
        carry_bufs = [
            torch.empty(carry_rows + cap, self.width, dtype=self.store_dtype) for _ in range(2)
        ]
        batch_bufs = [
            torch.empty(cap, self.width, dtype=self.store_dtype)
            for _ in range(2 if reuse_memory else 0)
        ]
        carry = torch.empty(0, self.width, dtype=self.store_dtype)
        n_served = 0
        for k, x in enumerate(self.blocks(order, 2)):
            # Cut a random permutation of the pool (carry + shard) into batches;
            # what is not served (at most one shard's worth) is carried on.
            n_pool = carry.shape[0] + x.shape[0]
            perm = torch.randperm(n_pool, generator=g)
            last = k + 1 == len(order)
            n_serve = n_pool if last else max(0, n_pool - carry_rows) // bs * bs
            for s in range(0, n_serve, bs):
                n_served += 1
                if n_served <= self.start_batch:
                    continue
                idx = perm[s : s + bs]
                full = len(idx)
                if world > 1:
                    idx = idx.tensor_split(world)[rank]
                buf = batch_bufs[n_served % 2][: len(idx)] if batch_bufs else None
                yield _gather2(carry, x, idx, buf), full
            rest = perm[n_serve:]
            carry = _gather2(carry, x, rest, carry_bufs[k % 2][: len(rest)])


def _gather2(
    a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Rows ``idx`` of the virtual concatenation ``[a; b]`` (rows of ``a`` first),
    gathered without concatenating ``a`` and ``b``."""
    in_a = idx < a.shape[0]
    ia, ib = idx[in_a], idx[~in_a] - a.shape[0]
    if out is None:
        out = torch.empty(len(idx), b.shape[1], dtype=b.dtype)
    if len(ia):
        torch.index_select(a, 0, ia, out=out[: len(ia)])
    if len(ib):
        torch.index_select(b, 0, ib, out=out[len(ia) :])
    return out


def _sequential(
    carry: torch.Tensor, x: torch.Tensor, batch_size: int, last: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    out, start = [], 0
    if carry.shape[0]:
        start = min(batch_size - carry.shape[0], x.shape[0])
        carry = torch.cat([carry, x[:start]])
        if carry.shape[0] < batch_size and not last:
            return [], carry
        out.append(carry)
    stop = start + (x.shape[0] - start) // batch_size * batch_size
    out.extend(x[s : s + batch_size] for s in range(start, stop, batch_size))
    rest = x[stop:]
    if last:
        if rest.shape[0]:
            out.append(rest)
        rest = rest[:0]
    return out, rest.clone() if rest.shape[0] else rest


def block_rows(store: ActivationStore) -> int:
    """Rows of each block a shuffled read draws from: the rows per shard of the
    capture, whatever number of processes wrote the shards; 0 (draw from the shards
    themselves, as before it was recorded) for a store that does not record it, and
    for a ``.npy``, whose chunks are one process's."""
    recorded = (store.manifest.provenance if store.manifest else {}).get("shard_rows")
    if not isinstance(recorded, int) or isinstance(recorded, bool):
        return 0
    # no shard is longer than the capture's shard_rows (else it is not that number)
    longest = max(store._source.rows(i) for i in range(store.n_shards))
    return recorded if recorded >= longest else 0
