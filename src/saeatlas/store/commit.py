"""Committing shards: written in parallel, committed by one thread, in order.

A shard is committed by writing it, then its row metadata (``.parts/``), then
replacing the rank's progress file (:mod:`.progress`) by one atomic rename: the
commit point. A kill before the rename leaves files that a resume deletes, a kill
after it leaves the shard committed with its statistics, so nothing is lost or
counted twice.

The heavy work of a shard (writing and hashing the file, the float64 moments of
its blocks of rows) runs on a pool of worker threads, several shards at a time
where there are cores for it (hashlib, file writes and torch release the GIL).
The commit thread then takes the shards in order, merges their block moments into
the running moments (always in the same order, so the float sums are
reproducible) and renames the progress file. At most :attr:`Committer.max_pending`
shards wait, so the forward passes that produce the next rows go on meanwhile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..errors import StoreError
from .atomic import atomic_write, atomic_write_bytes
from .manifest import ShardInfo, file_sha256
from .partial import PARTS, part_name, progress_name, shard_name
from .progress import Progress
from .shards import write_shard
from .stats import RunningMoments, block_moments

log = logging.getLogger(__name__)

#: Shards that may wait for the workers before :meth:`Committer.submit` blocks, at least.
MAX_PENDING = 2


def default_workers() -> int:
    """Worker threads for the shards: two (one shard's file and moments side by side)
    on a small machine, up to eight (four shards at a time) where there are cores."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


#: A shard's row metadata: column name -> ``[rows]`` values.
Columns = dict[str, np.ndarray]
#: ``progress(shards=..., moments=...)``: the progress file once a shard is committed.
MakeProgress = Callable[..., Progress]


class Committer:
    """The commit thread, and the workers, of one rank writing into the partial
    directory ``work``.

    :attr:`shards` and :attr:`moments` are what is committed; only the commit thread
    changes them once shards are submitted.
    """

    def __init__(self, work: Path, rank: int, world: int, workers: int | None = None) -> None:
        self.work, self.rank, self.world = work, rank, world
        self.progress_file = work / progress_name(rank, world)
        self.shards: list[ShardInfo] = []
        self.parts: list[str] = []
        """The sha256 of each committed shard's row metadata."""
        self.moments: RunningMoments | None = None
        n_workers = workers or default_workers()
        self.max_pending = max(MAX_PENDING, n_workers // 2)
        self._pending: list[Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._workers = ThreadPoolExecutor(max_workers=n_workers)
        self._broken = False  # a commit failed: later ones must not commit past it

    def submit(
        self,
        i: int,
        x: torch.Tensor,
        meta: Columns,
        progress: MakeProgress,
        *,
        ready: Any = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Queue shard ``i``: rows ``x`` ``[rows, n_units]``, their metadata columns
        ``meta`` (``row`` first, then ``progress``'s ``meta_columns``), and
        ``progress(shards=..., moments=...)``, the progress file once it is committed.
        ``ready`` (a CUDA event) is waited for before ``x`` is read (its rows are still
        being copied from the device); ``release()`` is called once nothing reads ``x``
        any more. Blocks while :attr:`max_pending` shards wait; re-raises a failed
        commit's error."""
        self._reap(block=len(self._pending) >= self.max_pending)

        def when_ready(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
            def run() -> Any:
                if self._broken:  # nothing after a failed shard is committed
                    return None
                if ready is not None:
                    ready.synchronize()
                return fn(*args)

            return run

        write = self._workers.submit(when_ready(self._write, i, x, meta))
        stats = self._workers.submit(when_ready(block_moments, x))
        self._pending.append(self._executor.submit(self._commit, write, stats, progress, release))

    def _reap(self, block: bool) -> None:
        """Drop finished commits, re-raising their errors; with ``block``, wait for the oldest."""
        if block and self._pending:
            # popped first: a failed commit is raised once, not again by stop() as
            # "failed after an earlier error" with its traceback before the error line
            self._pending.pop(0).result()
        while self._pending and self._pending[0].done():
            self._pending.pop(0).result()

    def drain(self) -> None:
        """Wait for every queued shard to be committed (errors are re-raised)."""
        while self._pending:
            self._pending.pop(0).result()

    def stop(self) -> None:
        """After a failure: let queued commits finish, so that the capture can resume.
        Once this returns no thread writes into the directory any more."""
        try:
            for f in self._pending:
                try:
                    f.result()
                except Exception:  # the caller is already handling the first error (a full
                    # disk fails every shard after it: one line says so, not a traceback each)
                    log.debug("A shard commit failed after an earlier error.", exc_info=True)
        finally:
            self._pending.clear()
            self.shutdown()

    def shutdown(self) -> None:
        self._executor.shutdown()
        self._workers.shutdown()

    def _write(self, i: int, x: torch.Tensor, meta: Columns) -> tuple[ShardInfo, str]:
        """On a worker: write shard ``i`` and its rows' metadata (not yet committed);
        the shard's entry and the metadata file's sha256."""
        name = shard_name(i, self.rank, self.world)
        sha = write_shard(self.work / name, x)
        # Arrow reads a NumPy unicode or bytes array as C strings: "n\x00ul" would be
        # stored "n" (b"a\x00b" and b"a\x00c", two labels, as one)
        table = pa.table(
            {k: v.astype(object) if v.dtype.kind in "US" else v for k, v in meta.items()}
        )
        part = self.work / PARTS / part_name(i, self.rank, self.world)
        atomic_write(part, lambda tmp: pq.write_table(table, tmp))
        return ShardInfo(name, int(x.shape[0]), sha), file_sha256(part)

    def _commit(
        self,
        write: Future[tuple[ShardInfo, str] | None],
        stats: Future[list[tuple[int, np.ndarray, np.ndarray]] | None],
        progress: MakeProgress,
        release: Callable[[], None] | None,
    ) -> None:
        """On the commit thread, in shard order: once the workers have written the shard
        and its block moments, make it committed."""
        try:
            # committing shard i+1 after a failed shard i would lose shard i
            if self._broken:
                return
            try:
                written, blocks = write.result(), stats.result()
                if written is None or blocks is None:  # skipped: an earlier shard failed
                    self._broken = True
                    return
                shard, part = written
                _check_finite(blocks, sum(s.rows for s in self.shards), shard.file)
                # Merged into a copy: until the progress file is renamed into place the
                # committed moments must stay those of the committed shards.
                moments = RunningMoments.from_state(self.moments.state())
                for block in blocks:
                    moments.merge(*block)
                shards, parts = [*self.shards, shard], [*self.parts, part]
                # The commit point: one rename makes the shard, its statistics and the
                # resume point current together.
                data = progress(shards=tuple(shards), moments=moments, parts=tuple(parts))
                atomic_write_bytes(self.progress_file, data.to_bytes())
                self.shards, self.parts, self.moments = shards, parts, moments
            except BaseException:
                self._broken = True
                raise
        finally:
            wait((write, stats))  # neither reads the rows any more
            if release is not None:
                release()


def _check_finite(
    blocks: list[tuple[int, np.ndarray, np.ndarray]], first_row: int, file: str
) -> None:
    """Refuse a shard whose rows hold NaN/Inf (its block moments say so at no cost): a
    capture leaves such rows out before they reach the writer, but rows given to
    :meth:`~.writer.StoreWriter.add` as they were (or finite values beyond a float16
    store's range, Inf once stored) made a complete store whose manifest no reader
    accepts (a NaN mean)."""
    start = first_row
    for n, mean, m2 in blocks:
        bad = np.flatnonzero(~(np.isfinite(mean) & np.isfinite(m2)))
        if len(bad):
            raise StoreError(
                f"Rows {start}-{start + n - 1} given to the store writer (shard '{file}') hold "
                f"NaN/Inf values, or values beyond the store's dtype, in column {int(bad[0])}"
                f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}; a store holds finite "
                "values only. Leave such rows out before adding them (a capture does with "
                "--on-nonfinite skip, `on_nonfinite='skip'`)."
            )
        start += n
