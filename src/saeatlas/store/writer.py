"""Writing an activation store: ``StoreWriter``, shard by shard, resumable.

A capture writes into ``.STORE.partial`` beside the store (:mod:`.atomic`) and
renames it to ``STORE`` when it is complete, so ``STORE`` is always a complete
store, the old one or the new one (README, "The activation store"). Layout of the
partial directory (:mod:`.partial`)::

    shard-00000.safetensors ...   complete shards, each written atomically
    .parts/rows-00000.parquet ... the row metadata of each shard
    progress.safetensors          THE commit point (:mod:`.progress`): running moments
                                  of the committed shards, and (in its header) the
                                  shard list, where to resume and the job it belongs to

Rows are copied as they come into a shard-sized block (:mod:`.buffer`); a full
block is handed, as it is, to worker threads that write and hash it and take its
moments, and a background thread commits the shards in order, each by one atomic
rename of the progress file (:mod:`.commit`), so a kill loses nothing and counts
nothing twice. ``close``
waits for them, joins the row parts into ``rows.parquet``, writes
``manifest.json`` and swaps the directory into place (:mod:`.merge`).
``resume=True`` continues an interrupted capture: the caller skips
:attr:`StoreWriter.resume_point` batches and the first rows of the next one, and
the store ends bit-for-bit as an uninterrupted run would leave it. The ``job``
(model, inputs, layers and settings fingerprints) must be the one the interrupted
capture recorded. The writer holds the store's lock (:mod:`.lock`) from
construction to :meth:`StoreWriter.close` or :meth:`StoreWriter.abort`.

Several processes (``rank`` of ``world``, under ``torchrun``) write one store
together into the same partial directory, each to files of its own. Rank 0 alone
holds the lock, prepares the directory (before the others open it) and, once
every rank has called :meth:`StoreWriter.finish`, merges their parts with
:meth:`StoreWriter.complete`. Each rank resumes from its own progress file. One
process is a world of one: :meth:`StoreWriter.close` is ``finish`` then
``complete``, the same path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_flag_arguments
from ..errors import ConfigError, StoreError
from .atomic import partial_dir, through_link
from .buffer import BlockPool, Piece, RowBuffer, check_blocks_fit, copy_rows, row_parts
from .claim import OPEN_WRITERS, claim_output, give_back, writer_key
from .commit import Committer
from .lock import release
from .manifest import LayerSpec, Manifest
from .merge import RankPart, complete_store, merged_range
from .progress import Progress, ResumePoint
from .requests import batch_counts, check_open, started_layers, writer_arguments
from .resume import JOB, read_resume
from .shards import STORE_DTYPES
from .stats import RunningMoments

log = logging.getLogger(__name__)

DEFAULT_SHARD_BYTES = 64 << 20


class StoreWriter:
    """Writes rows into a store directory, shard by shard.

    Args:
        path: the store directory.
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        shard_rows: rows per shard; by default about 64 MiB per shard.
        resume: continue an interrupted capture of ``path``.
        overwrite: replace a store found at ``path`` (it stays until the new one is complete).
        provenance: free-form facts recorded in the manifest (model, inputs, version).
        job: what makes two captures the same job (model, inputs, layers and settings
            fingerprints); a resume must give the same.
        rank, world: this process's rank and the number of processes writing the
            store together (module docstring); rank 0 must be constructed first.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dtype: str = "float32",
        shard_rows: int | None = None,
        resume: bool = False,
        overwrite: bool = False,
        provenance: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        check_flag_arguments(resume=resume, overwrite=overwrite)  # "no" was read as true
        shard_rows, rank, world = writer_arguments(
            path, dtype, shard_rows, rank, world, provenance, job
        )
        if resume and overwrite:
            raise ConfigError(
                "Pass either `resume` (--resume) or `overwrite` (--overwrite), not both."
            )
        self.path = through_link(path)  # a link to a store: write (and lock) the store
        self._key = writer_key(self.path, rank)  # refused while one of this thread is open
        self.work = partial_dir(self.path)
        self.rank, self.world = rank, world
        self.dtype = dtype
        self.provenance = dict(provenance or {})
        self.job = json.loads(json.dumps(job or {}))  # as it will read back
        self.saved_job: dict[str, Any] = {}
        """The job the interrupted capture recorded (on resume)."""
        self._shard_rows_arg = shard_rows
        self.shard_rows: int | None = None
        self.layers: tuple[LayerSpec, ...] | None = None
        self.n_units = 0
        self._rows_flushed = 0  # rows handed to the commit thread (main thread's count)
        self._n_flushed = 0
        self._buffer = RowBuffer()
        self._pool: BlockPool | None = None
        self._block: torch.Tensor | None = None  # the block the buffered rows are in
        self._copy_device: torch.device | None = None  # a GPU the block's rows come from
        self._batch = 0
        self._sample = 0
        self._skipped_by_batch: dict[int, int] = {}
        self._skipped_committed = 0
        self._meta_columns: list[str] | None = None
        self.resume_point = ResumePoint(0, 0, 0)
        self.value_range: tuple[Any, Any] | None = None
        """Per-unit ``(min, max)`` of the rows before the store's dtype rounds them,
        kept by the caller (:class:`~saeatlas.capture.batch_rows.StoreRounding`) and
        committed with each shard: a resume gets back the range of every row captured,
        and :meth:`complete` merges the ranks' ranges."""
        self._closed = False
        claim = claim_output(
            self.path, self.work, rank, world, self.job, resume=resume, overwrite=overwrite
        )
        self._commits = Committer(self.work, rank, world)
        self.already_complete = claim.finished_job is not None
        """On resume: ``path`` already holds this job's complete store (its capture had
        stored every row, a kill or an interrupted swap aside): nothing is left to
        write, and the writer is closed at once."""
        if self.already_complete:
            self.saved_job = claim.finished_job
            self._commits.shutdown()
            self._closed = True
            return
        try:
            if claim.resume:
                self._resume()
        except BaseException:
            self._commits.shutdown()
            if rank == 0:
                release(self.path)
            raise
        OPEN_WRITERS.add(self._key)

    # -- resume ----------------------------------------------------------------------------

    def _resume(self) -> None:
        """Continue from this rank's progress (:func:`.resume.read_resume`)."""
        saved = read_resume(
            self.work, self.path, self.rank, self.world, self.job, self.dtype, self._shard_rows_arg
        )
        if saved is None:
            return
        self.saved_job = dict(saved.job)
        self.layers, self.n_units, self.shard_rows = saved.layers, saved.n_units, saved.shard_rows
        self._commits.shards, self._commits.moments = list(saved.shards), saved.moments
        self._commits.parts = list(saved.parts or ())
        self._rows_flushed = sum(s.rows for s in saved.shards)
        self._n_flushed = len(saved.shards)
        self._skipped_committed = saved.n_skipped
        self._meta_columns = list(saved.meta_columns)
        self.resume_point = saved.resume_point
        self.value_range = saved.value_range
        self._batch = self.resume_point.batches_done
        self._sample = self.resume_point.next_sample

    # -- writing ---------------------------------------------------------------------------

    @property
    def n_rows_added(self) -> int:
        """Rows committed to shards plus rows waiting in the buffer."""
        return self._rows_flushed + self._buffer.n_rows

    def start(self, layers: list[LayerSpec] | tuple[LayerSpec, ...]) -> None:
        """Declare the layers of every row; called once, before the first :meth:`add`.

        On resume the layers must equal those of the interrupted capture.
        """
        check_open(self._closed, self.path)
        layers, n_units = started_layers(
            layers, self.layers, self.path, resumed=bool(self.saved_job), job=self.job
        )
        if self.layers is not None:
            return
        self.layers = layers
        self.n_units = n_units
        itemsize = torch.empty((), dtype=STORE_DTYPES[self.dtype]).element_size()
        self.shard_rows = self._shard_rows_arg or max(
            1, DEFAULT_SHARD_BYTES // (n_units * itemsize)
        )
        check_blocks_fit(self.shard_rows, n_units, self.dtype, itemsize)
        self._commits.moments = RunningMoments(n_units)

    def add(
        self,
        x: torch.Tensor | Sequence[torch.Tensor],
        meta: dict[str, np.ndarray],
        *,
        n_samples: int,
        n_skipped: int = 0,
        skip_rows: int = 0,
    ) -> None:
        """Add the rows of one input batch.

        Args:
            x: ``[rows, n_units]`` activations of the batch, all of them (finite: a
                shard of NaN/Inf is refused), on any device; or their column blocks side by side (``[rows, units]`` each,
                the layers in order), which are then not joined before they are stored.
            meta: per-row metadata columns, each of length ``rows`` (``sample``,
                ``position``, labels...). The ``row`` column is added here.
            n_samples: number of input samples in the batch.
            n_skipped: rows of this batch dropped for NaN/Inf.
            skip_rows: leading rows already committed by an interrupted run.

        Rows on a GPU are copied to the host without waiting for the device; the
        commit thread waits for the copy. The caller must not change them in place
        afterwards.
        """
        check_open(self._closed, self.path)
        if self.layers is None:
            raise RuntimeError("StoreWriter.start(layers) must be called before add().")
        n_samples, n_skipped, skip_rows = batch_counts(
            n_samples, n_skipped, skip_rows, self.resume_point, self._batch
        )
        parts, meta = row_parts(x, self.n_units, meta)
        n_rows = parts[0].shape[0]
        columns = sorted(meta)
        if self._meta_columns is None:
            self._meta_columns = columns
        elif columns != self._meta_columns:
            hint = (  # a `y` of another length in one (x, y) batch was left out as no label
                " Give every batch one label per sample (the `y` of an `(x, y)` batch), or none: "
                "a `y` that is not one label per sample (token-level targets) is not stored."
                if "label" in set(columns) ^ set(self._meta_columns)
                else ""
            )
            raise StoreError(
                f"Row metadata columns changed from {self._meta_columns} to {columns} between "
                f"batches.{hint}"
            )
        parts = [p.detach() for p in parts]
        if parts[0].is_cuda:
            # one transfer per batch into pinned memory (strided ones would stop the device)
            parts = [torch.cat(parts, dim=1)] if len(parts) > 1 else parts
            self._copy_device = parts[0].device
        if n_skipped:
            self._skipped_by_batch[self._batch] = n_skipped
        start = min(skip_rows, n_rows)
        while True:  # once for a batch without rows: its piece moves the resume point
            if self._block is None:
                self._block = self._blocks().get(pin=parts[0].is_cuda)
            filled = self._buffer.n_rows
            n = min(n_rows - start, self.shard_rows - filled)
            rows = self._block[filled : filled + n]
            copy_rows(rows, parts, start)
            piece_meta = {k: v[start : start + n] for k, v in meta.items()}
            self._buffer.append(
                Piece(rows, piece_meta, self._batch, start, n_rows, self._sample, n_samples)
            )
            start += n
            if self._buffer.n_rows == self.shard_rows:
                self._flush(self.shard_rows)
            if start >= n_rows:
                break
        self._batch += 1
        self._sample += n_samples

    def _blocks(self) -> BlockPool:
        if self._pool is None:
            self._pool = BlockPool(self.shard_rows, self.n_units, STORE_DTYPES[self.dtype])
        return self._pool

    def _flush(self, n: int) -> None:
        """Hand the first ``n`` buffered rows, the start of the current block, to the
        commit thread as the next shard."""
        taken, point = self._buffer.take(n)
        block, self._block = self._block, None
        x = block[:n]
        first_row = self._rows_flushed
        meta = {"row": np.arange(first_row, first_row + n, dtype=np.int64)}
        for c in self._meta_columns:
            meta[c] = np.concatenate([np.asarray(p.meta[c]) for p in taken])
        done = [b for b in self._skipped_by_batch if b < point.batches_done]
        self._skipped_committed += sum(self._skipped_by_batch.pop(b) for b in done)
        progress = partial(
            Progress,
            dtype=self.dtype,
            shard_rows=self.shard_rows,
            n_units=self.n_units,
            layers=self.layers,
            n_skipped=self._skipped_committed,
            meta_columns=tuple(self._meta_columns),
            resume_point=point,
            value_range=self.value_range,  # never changed in place: this batch's range
            job=self.job,  # read when committed: the caller adds `first_batch` after start
        )
        ready = None
        if block.is_pinned() and self._copy_device is not None:
            ready = torch.cuda.current_stream(self._copy_device).record_event()
        i = self._n_flushed
        self._rows_flushed += n
        self._n_flushed += 1
        pool = self._blocks()
        self._commits.submit(i, x, meta, progress, ready=ready, release=partial(pool.put, block))

    def drain(self) -> None:
        """Wait for every queued shard to be committed (errors are re-raised)."""
        self._commits.drain()

    def stop(self) -> None:
        """After a failure: let queued commits finish, so that the capture can resume."""
        self._commits.stop()

    def abort(self) -> None:
        """After a failure: :meth:`stop`, and on rank 0 give back the store's lock.

        A partial directory with no committed shard (of any rank) is removed, and so
        are the folders made for the store while empty (:func:`.lock.release`). With several
        ranks, rank 0 calls this only once every rank has stopped.
        """
        self._closed = True
        OPEN_WRITERS.discard(self._key)
        if self.rank > 0:
            self.stop()
            return
        try:
            self.stop()
        except BaseException:
            release(self.path)
            raise
        give_back(self.path, self.work)

    # -- completing ------------------------------------------------------------------------

    def close(self) -> Manifest:
        """Write the last shard, ``rows.parquet`` and ``manifest.json``; return the manifest.

        With several ranks, call :meth:`finish` on every rank and :meth:`complete` on
        rank 0 instead."""
        if self.world > 1:
            raise RuntimeError("With several ranks, use finish() and complete().")
        return self.complete([self.finish()])

    def finish(self) -> RankPart:
        """Commit this rank's last shard and say what it wrote."""
        check_open(self._closed, self.path)
        if self._buffer.n_rows:
            self._flush(self._buffer.n_rows)
        self.drain()
        self._commits.shutdown()
        self._skipped_committed += sum(self._skipped_by_batch.values())
        self._skipped_by_batch.clear()
        self._closed = True  # its rows are all written: complete() only merges them
        OPEN_WRITERS.discard(self._key)
        return RankPart(
            rank=self.rank,
            shards=tuple(self._commits.shards),
            moments=(self._commits.moments or RunningMoments(self.n_units)).state(),
            n_skipped=self._skipped_committed,
            layers=self.layers,
            meta_columns=None if self._meta_columns is None else tuple(self._meta_columns),
            value_range=None
            if self.value_range is None
            else tuple(np.asarray(torch.as_tensor(v).cpu()) for v in self.value_range),
        )

    def complete(self, parts: list[RankPart]) -> Manifest:
        """Rank 0: merge every rank's part (in rank order) into ``rows.parquet`` and
        ``manifest.json``, swap the store into place and give back the lock."""
        if self.rank != 0:
            raise RuntimeError("Only rank 0 completes the store.")
        manifest = complete_store(
            self.work,
            self.path,
            parts,
            world=self.world,
            dtype=self.dtype,
            # the job too: a resume that finds the store complete checks it is this job's
            # the rows per shard whatever the ranks wrote: the blocks a shuffle draws from
            provenance={**self.provenance, "shard_rows": self.shard_rows, JOB: self.job},
        )
        self.value_range = merged_range(parts)
        self._closed = True
        release(self.path)
        return manifest
