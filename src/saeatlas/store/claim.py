"""Claiming a store's output for a writer, before its first row: the lock (rank 0),
a store a kill left before its swap put in place, a resume that finds the job's
store already complete, and the partial directory made ready (new, resumed or
replacing: :func:`.partial.prepare_partial`); and giving it back after a failure
(:func:`give_back`)."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .atomic import refuse_current_folder
from .lock import LockError, acquire, lock_path, release
from .manifest import MANIFEST
from .merge import recover_store
from .partial import prepare_partial, progress_files
from .resume import finished_job

#: The writers of this process that have not finished or been aborted: (the store's lock
#: file, rank, thread). The lock is re-entrant within a thread, so a second writer of one
#: store there wrote into the first's partial directory, and the store one of them then
#: completed held the other's shards (or replaced its rows without `overwrite`).
OPEN_WRITERS: set[tuple[Path, int, int]] = set()


def writer_key(path: Path, rank: int) -> tuple[Path, int, int]:
    """The key in :data:`OPEN_WRITERS` of a writer of rank ``rank`` of the store ``path``
    in this thread; :class:`~.lock.LockError` while such a writer is open."""
    key = (lock_path(path), rank, threading.get_ident())
    if key in OPEN_WRITERS:
        raise LockError(
            f"'{path}' is being written by another StoreWriter of this thread, not closed "
            "yet; call its close() (or abort()) before opening another, or choose another "
            "output."
        )
    return key


@dataclass(frozen=True)
class Claim:
    """What a writer found at its output."""

    resume: bool
    """Continue the interrupted capture found in the partial directory."""
    finished_job: dict[str, Any] | None = None
    """On resume: the job of the complete store already there (this job's): nothing is
    left to write, and the lock is given back already."""


def claim_output(
    path: Path,
    work: Path,
    rank: int,
    world: int,
    job: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
) -> Claim:
    """Claim the store ``path`` (partial directory ``work``) for rank ``rank`` of
    ``world``. Rank 0 takes the lock, held on return unless the store was found
    complete; on an error nothing is held."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"'{path}' exists and is not a directory; choose another --out.")
    refuse_current_folder(path, "a store", StoreError)
    locks = rank == 0  # rank 0 holds the lock and prepares the directory for all
    if locks:
        acquire(path)  # which removes the folders it made for the store when let go
    try:
        finished = recover_store(path) if locks else False
        saved = finished_job(path, work, job) if resume else None
        if saved is not None:
            if locks:
                # what a capture killed before its first commit left (no progress)
                shutil.rmtree(work, ignore_errors=True)
                release(path)
            return Claim(False, saved)
        if locks:
            resume = prepare_partial(
                path, work, world, resume=resume, overwrite=overwrite, finished=finished
            )
        elif not work.is_dir():
            raise StoreError(
                f"Rank {rank} finds no partial directory '{work}', which rank 0 made: "
                "every rank must see the same --out (on several machines, a shared "
                "filesystem)."
            )
        return Claim(resume, None)
    except BaseException:
        if locks:
            release(path)
        raise


def give_back(path: Path, work: Path) -> None:
    """Rank 0, once every rank has stopped after a failure: remove a partial directory
    ``work`` with no committed shard (of any rank) and give back the lock of ``path``
    (:func:`.lock.release` removes the folders made for it while they are empty)."""
    try:
        # a partial directory with its manifest is a complete store (recover_store)
        done = (work / MANIFEST).is_file()
        if work.is_dir() and not progress_files(work) and not done:
            shutil.rmtree(work, ignore_errors=True)
    finally:
        release(path)
