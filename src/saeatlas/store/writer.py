"""Writing an activation store: shards, row metadata, running statistics, resume.

A capture writes into ``.STORE.partial`` beside the store (:mod:`.atomic`) and
renames it to ``STORE`` when it is complete, so ``STORE`` is always a complete
store, the old one or the new one (README, "The activation store"). Layout of the
partial directory::

    shard-00000.safetensors ...   complete shards, each written atomically
    .parts/rows-00000.parquet ... the row metadata of each shard
    progress.safetensors          THE commit point: running moments of the committed
                                  shards, and (in its header) the shard list, where
                                  to resume and the job it belongs to

A shard is committed by one atomic rename of ``progress.safetensors``, written
after the shard and its rows: a kill before it leaves files that the resume
deletes, a kill after it leaves the shard committed with its statistics, so
nothing is lost or counted twice. Shards are committed by one background thread
(at most two waiting), so the forward passes that produce the next rows go on
while a shard is hashed and written. ``close`` waits for them, joins the parts
into ``rows.parquet``, writes ``manifest.json`` and swaps the directory into
place. ``resume=True`` continues an interrupted capture: the caller skips
:attr:`StoreWriter.resume_point` batches and the first rows of the next one,
and the store ends bit-for-bit as an uninterrupted run would leave it. The
``job`` (model, inputs, layers and settings fingerprints) must be the one the
interrupted capture recorded. The writer holds the store's lock
(:mod:`.lock`) from construction to :meth:`StoreWriter.close` or
:meth:`StoreWriter.abort`.

Several processes (``rank`` of ``world``, under ``torchrun``) write one store
together into the same partial directory, each to files of its own:
``shard-r001-00000.safetensors``, ``.parts/rows-r001-00000.parquet`` and
``progress-r001-of-002.safetensors``, so no two ranks ever write one file. Rank
0 alone holds the lock, prepares the directory (before the others open it) and,
once every rank has called :meth:`StoreWriter.finish`, merges their parts with
:meth:`StoreWriter.complete`: shards listed rank by rank, moments merged with
Chan et al.'s update, rows joined and renumbered in rank order. Each rank resumes
from its own progress file.
"""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import safe_open
from safetensors.numpy import save as _save_np

from ..errors import ConfigError, StoreError
from .atomic import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    partial_dir,
    recover_dir,
    swap_in,
)
from .lock import acquire, release
from .manifest import MANIFEST, ROWS, LayerSpec, Manifest, ShardInfo, validate_layers
from .shards import STORE_DTYPES, write_shard
from .stats import RunningMoments

log = logging.getLogger(__name__)

PROGRESS = "progress.safetensors"
#: Progress files of saeatlas before 0.1.1, which wrote the store in place.
LEGACY_PROGRESS = ("progress.json", "progress-stats.safetensors")
PARTS = ".parts"
#: Job keys known only once the capture runs; the resume checks them then.
LATE_JOB_KEYS = ("first_batch",)
DEFAULT_SHARD_BYTES = 64 << 20
#: Shards that may wait for the background thread before ``add`` blocks.
MAX_PENDING = 2


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed capture picks up."""

    batches_done: int
    """Input batches whose rows are all in committed shards: skip them."""
    rows_into_batch: int
    """Rows of the next batch already committed: drop them after its forward pass."""
    next_sample: int
    """Index of the first sample of the next batch."""


@dataclass
class _Piece:
    x: torch.Tensor
    meta: dict[str, np.ndarray]
    batch: int
    offset: int
    batch_rows: int
    sample_start: int
    n_samples: int


def _rank_tag(rank: int, world: int) -> str:
    return "" if world == 1 else f"r{rank:03d}-"


def shard_name(i: int, rank: int = 0, world: int = 1) -> str:
    return f"shard-{_rank_tag(rank, world)}{i:05d}.safetensors"


def _part_name(i: int, rank: int = 0, world: int = 1) -> str:
    return f"rows-{_rank_tag(rank, world)}{i:05d}.parquet"


def progress_name(rank: int = 0, world: int = 1) -> str:
    """The progress file of ``rank`` in a capture by ``world`` processes."""
    return PROGRESS if world == 1 else f"progress-r{rank:03d}-of-{world:03d}.safetensors"


def progress_files(work: Path) -> list[Path]:
    """Every progress file in the partial directory ``work``, of any number of ranks."""
    return sorted(work.glob("progress*.safetensors")) if work.is_dir() else []


@dataclass(frozen=True)
class RankPart:
    """What one rank wrote, for rank 0 to merge (:meth:`StoreWriter.complete`)."""

    rank: int
    shards: tuple[ShardInfo, ...]
    moments: dict[str, np.ndarray]
    """:meth:`RunningMoments.state` of the rank's rows."""
    n_skipped: int
    layers: tuple[LayerSpec, ...] | None
    """None when the rank had no input batches."""
    meta_columns: tuple[str, ...] | None


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
        if not 0 <= rank < world:
            raise ValueError(f"`rank` must be in [0, {world}), got {rank}.")
        if dtype not in STORE_DTYPES:
            raise ConfigError(
                f"Unknown store `dtype` {dtype!r}; expected one of: {list(STORE_DTYPES)}."
            )
        if shard_rows is not None and shard_rows <= 0:
            raise ConfigError(f"`shard_rows` must be positive, got {shard_rows}.")
        if resume and overwrite:
            raise ConfigError(
                "Pass either `resume` (--resume) or `overwrite` (--overwrite), not both."
            )
        self.path = Path(path)
        self.work = partial_dir(self.path)
        self.rank, self.world = rank, world
        self.progress = self.work / progress_name(rank, world)
        self.dtype = dtype
        self.provenance = dict(provenance or {})
        self.job = json.loads(json.dumps(job or {}))  # as it will read back
        self.saved_job: dict[str, Any] = {}
        """The job the interrupted capture recorded (on resume)."""
        self._shard_rows_arg = shard_rows
        self.shard_rows: int | None = None
        self.layers: tuple[LayerSpec, ...] | None = None
        self.n_units = 0
        self._shards: list[ShardInfo] = []  # committed; touched only by the commit thread
        self._rows_flushed = 0  # rows handed to the commit thread (main thread's count)
        self._n_flushed = 0
        self._pending: list[Future[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._stats_thread = ThreadPoolExecutor(max_workers=1)
        self._buffer: list[_Piece] = []
        self._buffered_rows = 0
        self._batch = 0
        self._sample = 0
        self._moments: RunningMoments | None = None
        self._skipped_by_batch: dict[int, int] = {}
        self._skipped_committed = 0
        self._meta_columns: list[str] | None = None
        self.resume_point = ResumePoint(0, 0, 0)
        self._closed = False
        self._broken = False  # a commit failed: later ones must not commit past it
        self._created: list[Path] = []  # directories made for this store, deepest first
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"'{self.path}' exists and is not a directory; choose another --out.")
        if rank > 0:  # rank 0 holds the lock and has prepared the directory
            try:
                self._join_directory(resume=resume)
            except BaseException:
                self._shutdown()
                raise
            return
        self._created = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        acquire(self.path)  # released by close() or abort()
        try:
            self._prepare_directory(resume=resume, overwrite=overwrite)
        except BaseException:
            self._shutdown()
            release(self.path)
            raise

    # -- directory state -------------------------------------------------------------------

    def _prepare_directory(self, *, resume: bool, overwrite: bool) -> None:
        p = self.path
        recover_dir(p)
        if p.is_dir():
            foreign = sorted(x.name for x in p.iterdir() if not self._is_ours(x))
            if foreign:
                raise StoreError(
                    f"'{p}' is not a saeatlas store: it holds other files ({foreign[:3]}); "
                    "choose an empty or new --out."
                )
        found = progress_files(self.work)
        mine = {progress_name(r, self.world) for r in range(self.world)}
        has_progress = bool(found)
        if has_progress and resume:
            others = [f.name for f in found if f.name not in mine]
            if others:
                raise ConfigError(
                    f"The interrupted capture of '{p}' ran in another number of processes than "
                    f"this one ({self.world}; it left {others[:2]}). Resume it with as many "
                    "processes as it had (torchrun --nproc_per_node), or start again with "
                    "--overwrite."
                )
            # also an interrupted --overwrite: the old store stays until this one is done
            self._resume_own()
            return
        if (p / MANIFEST).exists() and not overwrite:
            pending = " (or --resume, to continue the interrupted one)" if has_progress else ""
            raise StoreError(
                f"'{p}' already holds a complete store. Choose another --out, or pass --overwrite "
                f"(`overwrite=True`) to replace it{pending}."
            )
        legacy = p.is_dir() and not (p / MANIFEST).exists() and any(p.iterdir())
        if legacy and not (resume or overwrite):
            raise StoreError(
                f"'{p}' holds an incomplete store written by an older saeatlas, which cannot be "
                "resumed safely. Pass --overwrite (`overwrite=True`) to capture it again."
            )
        if legacy:
            log.warning("'%s' is an incomplete store of an older saeatlas; capturing it again.", p)
        if has_progress and not overwrite:
            raise StoreError(
                f"'{p}' has an interrupted capture. Pass --resume (`resume=True`) to continue it, "
                "or --overwrite (`overwrite=True`) to start again."
            )
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)

    def _join_directory(self, *, resume: bool) -> None:
        """A rank above 0: work in the partial directory rank 0 prepared."""
        if not self.work.is_dir():
            raise StoreError(
                f"Rank {self.rank} finds no partial directory '{self.work}', which rank 0 made: "
                "every rank must see the same --out (on several machines, a shared filesystem)."
            )
        if resume:
            self._resume_own()

    def _resume_own(self) -> None:
        """On resume: load this rank's progress, or drop its uncommitted files."""
        if self.progress.is_file():
            self._load_progress()
        else:
            self._drop_uncommitted()

    def _drop_uncommitted(self) -> None:
        """Remove this rank's files written after its last commit."""
        listed = {s.file for s in self._shards}
        parts = {_part_name(i, self.rank, self.world) for i in range(len(self._shards))}
        own = f"{_rank_tag(self.rank, self.world)}*"
        for x in self.work.glob(f"shard-{own}.safetensors"):
            if x.name not in listed:
                x.unlink()
        for x in (self.work / PARTS).glob(f"rows-{own}.parquet"):
            if x.name not in parts:
                x.unlink()

    @staticmethod
    def _is_ours(x: Path) -> bool:
        n = x.name
        return (
            n in (MANIFEST, ROWS, PROGRESS, PARTS, *LEGACY_PROGRESS)
            or (n.startswith("progress-r") and n.endswith(".safetensors"))
            or (n.startswith("shard-") and n.endswith(".safetensors"))
            or n.startswith(TMP_PREFIX)
        )

    def _load_progress(self) -> None:
        try:
            with safe_open(str(self.progress), framework="numpy") as f:
                prog = json.loads(f.metadata()["progress"])
                state = {k: f.get_tensor(k) for k in ("count", "mean", "m2")}
            self.layers = tuple(LayerSpec.from_json(x) for x in prog["layers"])
            self.n_units = int(prog["n_units"])
            self.shard_rows = int(prog["shard_rows"])
            saved_dtype = prog["dtype"]
            saved_job = prog["job"]
            self._shards = [ShardInfo(**s) for s in prog["shards"]]
            self._rows_flushed = sum(s.rows for s in self._shards)
            self._n_flushed = len(self._shards)
            self._skipped_committed = int(prog["n_nonfinite_rows_skipped"])
            self._meta_columns = list(prog["meta_columns"])
            self.resume_point = ResumePoint(**prog["resume_point"])
        except Exception as e:  # safetensors raises its own error types for bad files
            raise StoreError(
                f"Cannot resume the capture of '{self.path}': its progress file "
                f"'{self.progress}' is unreadable ({e!r}). Start again with --overwrite."
            ) from e
        # Keys the caller adds after the start (the first batch's fingerprint) are
        # compared by the caller, through saved_job.
        self.saved_job = dict(saved_job)
        changed = sorted(
            k
            for k in set(saved_job) | set(self.job)
            if k not in LATE_JOB_KEYS and saved_job.get(k) != self.job.get(k)
        )
        if changed:
            raise ConfigError(
                f"--resume continues the same capture, but this run's {', '.join(changed)} "
                f"differ from those of the interrupted capture of '{self.path}' "
                f"(was {', '.join(f'{k}={saved_job.get(k)!r}' for k in changed)}). Resume with the "
                "same model, inputs, --layers and settings, or start again with --overwrite."
            )
        if saved_dtype != self.dtype:
            raise ConfigError(
                f"The interrupted capture in '{self.path}' uses dtype {saved_dtype!r}, this run "
                f"asks for {self.dtype!r}. Resume with the same `dtype` (--dtype)."
            )
        if self._shard_rows_arg is not None and self._shard_rows_arg != self.shard_rows:
            raise ConfigError(
                f"The interrupted capture in '{self.path}' uses {self.shard_rows} rows per shard, "
                f"this run asks for {self._shard_rows_arg}. Resume with the same `shard_rows`."
            )
        self._moments = RunningMoments.from_state(state)
        self._batch = self.resume_point.batches_done
        self._sample = self.resume_point.next_sample
        # Files written after the last commit belong to no committed shard.
        self._drop_uncommitted()
        log.info(
            "Resuming '%s' after %d shards (%d rows).",
            self.path,
            len(self._shards),
            sum(s.rows for s in self._shards),
        )

    # -- writing ---------------------------------------------------------------------------

    @property
    def n_rows_added(self) -> int:
        """Rows committed to shards plus rows waiting in the buffer."""
        return self._rows_flushed + self._buffered_rows

    def start(self, layers: list[LayerSpec] | tuple[LayerSpec, ...]) -> None:
        """Declare the layers of every row; called once, before the first :meth:`add`.

        On resume the layers must equal those of the interrupted capture.
        """
        layers = tuple(layers)
        n_units = layers[-1].stop if layers else 0
        validate_layers(layers, n_units)
        if self.layers is not None:
            old = [(l.name, l.start, l.stop) for l in self.layers]
            new = [(l.name, l.start, l.stop) for l in layers]
            if old != new:
                raise StoreError(
                    f"The interrupted capture in '{self.path}' recorded layers {old}, this run "
                    f"gives {new}. Resume with the same model and --layers, or use --overwrite."
                )
            return
        self.layers = layers
        self.n_units = n_units
        itemsize = torch.empty((), dtype=STORE_DTYPES[self.dtype]).element_size()
        self.shard_rows = self._shard_rows_arg or max(
            1, DEFAULT_SHARD_BYTES // (n_units * itemsize)
        )
        self._moments = RunningMoments(n_units)

    def add(
        self,
        x: torch.Tensor,
        meta: dict[str, np.ndarray],
        *,
        n_samples: int,
        n_skipped: int = 0,
        skip_rows: int = 0,
    ) -> None:
        """Add the rows of one input batch.

        Args:
            x: ``[rows, n_units]`` activations of the batch, all of them (finite).
            meta: per-row metadata columns, each of length ``rows`` (``sample``,
                ``position``, labels...). The ``row`` column is added here.
            n_samples: number of input samples in the batch.
            n_skipped: rows of this batch dropped for NaN/Inf.
            skip_rows: leading rows already committed by an interrupted run.
        """
        if self.layers is None:
            raise RuntimeError("StoreWriter.start(layers) must be called before add().")
        if x.ndim != 2 or x.shape[1] != self.n_units:
            raise StoreError(f"Rows have shape {tuple(x.shape)}, expected [rows, {self.n_units}].")
        columns = sorted(meta)
        if self._meta_columns is None:
            self._meta_columns = columns
        elif columns != self._meta_columns:
            raise StoreError(
                f"Row metadata columns changed from {self._meta_columns} to {columns} between batches."
            )
        x = x.detach().to("cpu", STORE_DTYPES[self.dtype])
        if n_skipped:
            self._skipped_by_batch[self._batch] = n_skipped
        piece = _Piece(x, meta, self._batch, 0, x.shape[0], self._sample, n_samples)
        if skip_rows:
            piece = _take(piece, skip_rows)[1]
        self._batch += 1
        self._sample += n_samples
        # Empty batches stay in the buffer too: they move the resume point.
        self._buffer.append(piece)
        self._buffered_rows += piece.x.shape[0]
        while self._buffered_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        taken: list[_Piece] = []
        need = n
        while need > 0:
            head = self._buffer[0]
            if head.x.shape[0] <= need:
                taken.append(self._buffer.pop(0))
                need -= head.x.shape[0]
            else:
                part, rest = _take(head, need)
                taken.append(part)
                self._buffer[0] = rest
                need = 0
        # Empty pieces right after the cut belong to batches that are complete too.
        while self._buffer and self._buffer[0].x.shape[0] == 0 and self._buffer[0].batch_rows == 0:
            taken.append(self._buffer.pop(0))
        self._buffered_rows -= n
        last = taken[-1]
        consumed = last.offset + last.x.shape[0]
        if consumed == last.batch_rows:
            point = ResumePoint(last.batch + 1, 0, last.sample_start + last.n_samples)
        else:
            point = ResumePoint(last.batch, consumed, last.sample_start)
        x = torch.cat([p.x for p in taken]) if len(taken) > 1 else taken[0].x
        first_row = self._rows_flushed
        meta = {
            c: np.concatenate([np.asarray(p.meta[c]) for p in taken]) for c in self._meta_columns
        }
        meta["row"] = np.arange(first_row, first_row + n, dtype=np.int64)
        done = [b for b in self._skipped_by_batch if b < point.batches_done]
        self._skipped_committed += sum(self._skipped_by_batch.pop(b) for b in done)
        i = self._n_flushed
        self._rows_flushed += n
        self._n_flushed += 1
        args = (i, x, meta, point, self._skipped_committed)
        self._reap(block=len(self._pending) >= MAX_PENDING)
        self._pending.append(self._executor.submit(self._commit, *args))

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
        self._shutdown()

    def abort(self) -> None:
        """After a failure: :meth:`stop`, and on rank 0 give back the store's lock.

        A partial directory with no committed shard (of any rank) is removed, and so
        are the directories this writer created while they are empty. With several
        ranks, rank 0 calls this only once every rank has stopped.
        """
        if self.rank > 0:
            self.stop()
            return
        try:
            self.stop()
            if self.work.is_dir() and not progress_files(self.work):
                shutil.rmtree(self.work, ignore_errors=True)
        finally:
            release(self.path)
        for d in self._created:
            try:
                d.rmdir()  # only ever removes an empty directory
            except OSError:
                break

    def _shutdown(self) -> None:
        self._executor.shutdown()
        self._stats_thread.shutdown()

    def _commit(
        self,
        i: int,
        x: torch.Tensor,
        meta: dict[str, np.ndarray],
        point: ResumePoint,
        n_skipped: int,
    ) -> None:
        if self._broken:  # committing shard i+1 after a failed shard i would lose shard i
            return
        try:
            self._commit_shard(i, x, meta, point, n_skipped)
        except BaseException:
            self._broken = True
            raise

    def _commit_shard(
        self,
        i: int,
        x: torch.Tensor,
        meta: dict[str, np.ndarray],
        point: ResumePoint,
        n_skipped: int,
    ) -> None:
        # The moments are merged while the shard is written (both release the GIL);
        # still one shard at a time and in order, so the float sums are reproducible.
        # They are merged into a copy: until the progress file is renamed into place
        # the committed moments must stay those of the committed shards.
        moments = RunningMoments.from_state(self._moments.state())
        stats = self._stats_thread.submit(moments.update, x)
        try:
            name = shard_name(i, self.rank, self.world)
            sha = write_shard(self.work / name, x)
            table = pa.table({c: meta[c] for c in ["row", *self._meta_columns]})
            part = self.work / PARTS / _part_name(i, self.rank, self.world)
            atomic_write(part, lambda tmp: pq.write_table(table, tmp))
        finally:
            stats.result()
        shards = [*self._shards, ShardInfo(name, int(x.shape[0]), sha)]
        progress = {
            "dtype": self.dtype,
            "shard_rows": self.shard_rows,
            "n_units": self.n_units,
            "layers": [l.to_json() for l in self.layers],
            "shards": [asdict(s) for s in shards],
            "n_nonfinite_rows_skipped": n_skipped,
            "meta_columns": self._meta_columns,
            "resume_point": asdict(point),
            "job": self.job,
        }
        tensors = {k: np.ascontiguousarray(v) for k, v in moments.state().items()}
        # The commit point: one rename makes the shard, its statistics and the resume
        # point current together.
        atomic_write_bytes(
            self.progress, _save_np(tensors, metadata={"progress": json.dumps(progress)})
        )
        self._shards, self._moments = shards, moments

    def close(self) -> Manifest:
        """Write the last shard, ``rows.parquet`` and ``manifest.json``; return the manifest.

        With several ranks, call :meth:`finish` on every rank and :meth:`complete` on
        rank 0 instead."""
        if self.world > 1:
            raise RuntimeError("With several ranks, use finish() and complete().")
        return self.complete([self.finish()])

    def finish(self) -> RankPart:
        """Commit this rank's last shard and say what it wrote."""
        if self._closed:
            raise RuntimeError("StoreWriter is already closed.")
        if self._buffered_rows:
            self._flush(self._buffered_rows)
        self.drain()
        self._shutdown()
        self._skipped_committed += sum(self._skipped_by_batch.values())
        self._skipped_by_batch.clear()
        return RankPart(
            rank=self.rank,
            shards=tuple(self._shards),
            moments=(self._moments or RunningMoments(self.n_units)).state(),
            n_skipped=self._skipped_committed,
            layers=self.layers,
            meta_columns=None if self._meta_columns is None else tuple(self._meta_columns),
        )

    def complete(self, parts: list[RankPart]) -> Manifest:
        """Rank 0: merge every rank's part (in rank order) into ``rows.parquet`` and
        ``manifest.json``, swap the store into place and give back the lock."""
        if self.rank != 0:
            raise RuntimeError("Only rank 0 completes the store.")
        parts = sorted(parts, key=lambda p: p.rank)
        started = [p for p in parts if p.layers is not None]
        if not started:
            raise StoreError("No batches were captured: the inputs were empty.")
        layers, columns = started[0].layers, started[0].meta_columns
        for p in started[1:]:
            if p.layers != layers or p.meta_columns != columns:
                raise StoreError(
                    f"Rank {p.rank} recorded other layers or row columns than rank "
                    f"{started[0].rank} ({p.meta_columns} vs {columns}); every rank must run "
                    "the same model with the same settings."
                )
        # Chan et al.'s pairwise update (stats.py), rank by rank.
        moments = RunningMoments(layers[-1].stop)
        for p in started:
            moments.merge(int(p.moments["count"][0]), p.moments["mean"], p.moments["m2"])
        if len(started) == 1:  # one part: its moments exactly as they were merged
            moments = RunningMoments.from_state(started[0].moments)
        shards = tuple(s for p in parts for s in p.shards)
        n_rows = sum(s.rows for s in shards)
        if n_rows == 0:
            raise StoreError(
                "The capture produced no rows (every row was padding or was skipped for NaN/Inf)."
            )
        atomic_write(self.work / ROWS, lambda tmp: self._join_parts(tmp, parts))
        manifest = Manifest(
            n_rows=n_rows,
            n_units=layers[-1].stop,
            dtype=self.dtype,
            layers=layers,
            shards=shards,
            mean=moments.mean,
            std=moments.std,
            n_nonfinite_rows_skipped=sum(p.n_skipped for p in parts),
            provenance=self.provenance,
        )
        atomic_write_json(self.work / MANIFEST, manifest.to_json())
        for f in progress_files(self.work):
            f.unlink()
        shutil.rmtree(self.work / PARTS, ignore_errors=True)
        swap_in(self.work, self.path)
        self._closed = True
        release(self.path)
        return manifest

    def _join_parts(self, tmp: Path, parts: list[RankPart]) -> None:
        """Each rank's row parts in order; a rank's ``row`` numbers start after the
        rows of the ranks before it."""
        files, offset = [], 0
        for p in parts:
            for i in range(len(p.shards)):
                files.append((self.work / PARTS / _part_name(i, p.rank, self.world), offset))
            offset += sum(s.rows for s in p.shards)
        schema = pq.read_schema(files[0][0])
        with pq.ParquetWriter(tmp, schema) as out:
            for file, offset in files:
                table = pq.read_table(file).cast(schema)
                if offset:
                    row = table.schema.get_field_index("row")
                    shifted = pa.array(table["row"].to_numpy() + offset, type=pa.int64())
                    table = table.set_column(row, "row", shifted)
                out.write_table(table)


def _take(piece: _Piece, n: int) -> tuple[_Piece, _Piece]:
    """Split a piece after its first ``n`` rows."""
    head = _Piece(
        piece.x[:n],
        {k: v[:n] for k, v in piece.meta.items()},
        piece.batch,
        piece.offset,
        piece.batch_rows,
        piece.sample_start,
        piece.n_samples,
    )
    tail = _Piece(
        piece.x[n:],
        {k: v[n:] for k, v in piece.meta.items()},
        piece.batch,
        piece.offset + n,
        piece.batch_rows,
        piece.sample_start,
        piece.n_samples,
    )
    return head, tail
