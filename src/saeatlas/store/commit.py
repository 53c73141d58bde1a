"""Committing shards: one background thread, one shard at a time, in order.

A shard is committed by writing it, then its row metadata (``.parts/``), then
replacing the rank's progress file (:mod:`.progress`) by one atomic rename: the
commit point. A kill before the rename leaves files that a resume deletes, a kill
after it leaves the shard committed with its statistics, so nothing is lost or
counted twice. At most :data:`MAX_PENDING` shards wait for the thread, so the
forward passes that produce the next rows go on while a shard is hashed and
written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .atomic import atomic_write, atomic_write_bytes
from .manifest import ShardInfo
from .partial import PARTS, part_name, progress_name, shard_name
from .progress import Progress
from .shards import write_shard
from .stats import RunningMoments

log = logging.getLogger(__name__)

#: Shards that may wait for the background thread before :meth:`Committer.submit` blocks.
MAX_PENDING = 2

#: A shard's row metadata: column name -> ``[rows]`` values.
Columns = dict[str, np.ndarray]
#: ``progress(shards=..., moments=...)``: the progress file once a shard is committed.
MakeProgress = Callable[..., Progress]


class Committer:
    """The commit thread of one rank writing into the partial directory ``work``.

    :attr:`shards` and :attr:`moments` are what is committed; only the commit thread
    changes them once shards are submitted.
    """

    def __init__(self, work: Path, rank: int, world: int) -> None:
        self.work, self.rank, self.world = work, rank, world
        self.progress_file = work / progress_name(rank, world)
        self.shards: list[ShardInfo] = []
        self.moments: RunningMoments | None = None
        self._pending: list[Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._stats_thread = ThreadPoolExecutor(max_workers=1)
        self._broken = False  # a commit failed: later ones must not commit past it

    def submit(self, i: int, x: torch.Tensor, meta: Columns, progress: MakeProgress) -> None:
        """Queue shard ``i``: rows ``x`` ``[rows, n_units]``, their metadata columns
        ``meta`` (``row`` first, then ``progress``'s ``meta_columns``), and
        ``progress(shards=..., moments=...)``, the progress file once it is committed.
        Blocks while :data:`MAX_PENDING` shards wait; re-raises a failed commit's error."""
        self._reap(block=len(self._pending) >= MAX_PENDING)
        self._pending.append(self._executor.submit(self._commit, i, x, meta, progress))

    def _reap(self, block: bool) -> None:
        """Drop finished commits, re-raising their errors; with ``block``, wait for the oldest."""
        if block and self._pending:
            self._pending[0].result()
        while self._pending and self._pending[0].done():
            self._pending.pop(0).result()

    def drain(self) -> None:
        """Wait for every queued shard to be committed (errors are re-raised)."""
        while self._pending:
            self._pending.pop(0).result()

    def stop(self) -> None:
        """After a failure: let queued commits finish, so that the capture can resume."""
        for f in self._pending:
            try:
                f.result()
            except Exception:  # the caller is already handling the first error
                log.warning("A shard commit failed after an earlier error.", exc_info=True)
        self._pending.clear()
        self.shutdown()

    def shutdown(self) -> None:
        self._executor.shutdown()
        self._stats_thread.shutdown()

    def _commit(self, i: int, x: torch.Tensor, meta: Columns, progress: MakeProgress) -> None:
        """On the commit thread: write shard ``i`` and its rows, then the commit point."""
        if self._broken:  # committing shard i+1 after a failed shard i would lose shard i
            return
        try:
            # The moments are merged while the shard is written (both release the GIL);
            # still one shard at a time and in order, so the float sums are reproducible.
            # They are merged into a copy: until the progress file is renamed into place
            # the committed moments must stay those of the committed shards.
            moments = RunningMoments.from_state(self.moments.state())
            stats = self._stats_thread.submit(moments.update, x)
            try:
                name = shard_name(i, self.rank, self.world)
                sha = write_shard(self.work / name, x)
                table = pa.table(meta)
                part = self.work / PARTS / part_name(i, self.rank, self.world)
                atomic_write(part, lambda tmp: pq.write_table(table, tmp))
            finally:
                stats.result()
            shards = [*self.shards, ShardInfo(name, int(x.shape[0]), sha)]
            # The commit point: one rename makes the shard, its statistics and the resume
            # point current together.
            data = progress(shards=tuple(shards), moments=moments).to_bytes()
            atomic_write_bytes(self.progress_file, data)
            self.shards, self.moments = shards, moments
        except BaseException:
            self._broken = True
            raise
