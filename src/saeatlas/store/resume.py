"""Resuming a capture: what an interrupted (or finished) one left, read back and
checked to be this job's.

- :func:`finished_job`: the store is already this job's complete store (a resume then
  has nothing to write);
- :func:`read_resume`: one rank's progress file, checked to continue the same job,
  with the files written after its last commit dropped.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .manifest import MANIFEST, Manifest
from .partial import check_committed, drop_uncommitted, progress_files, progress_name
from .progress import Progress, check_job, check_same_job, check_shard_rows, read_progress

log = logging.getLogger(__name__)

#: The key of the manifest's ``provenance`` that records the capture's job.
JOB = "job"


def finished_job(path: Path, work: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """The job recorded by ``path``'s complete store when it is this very ``job`` and no
    interrupted capture is beside it (``work``, the partial directory): a resume then
    has nothing to do. A complete store of another job is refused, naming what differs;
    one whose manifest records no job (an older saeatlas's, or a writer given none), or
    none given here, gives None and is left to :func:`.partial.prepare_partial`."""
    if progress_files(work) or not (path / MANIFEST).is_file():
        return None
    provenance = Manifest.read(path / MANIFEST).provenance
    saved = provenance.get(JOB)
    if not isinstance(saved, dict) or not saved or not job:
        return None  # no job to compare: as sure as nothing
    check_job(saved, job, f"the capture that wrote the complete store '{path}'")
    given = (job.get("settings") or {}).get("shard_rows")
    check_shard_rows(provenance.get("shard_rows"), given, f"The complete store '{path}'")
    return dict(saved)


def read_resume(
    work: Path,
    path: Path,
    rank: int,
    world: int,
    job: dict[str, Any],
    dtype: str,
    shard_rows: int | None,
) -> Progress | None:
    """Rank ``rank``'s progress in the partial directory ``work`` of store ``path``,
    checked to continue ``job`` (with ``dtype`` and ``shard_rows``) over shards that are
    all there; files written after its last commit are dropped. None, with every file
    of this rank dropped, when it committed nothing.

    Job keys the caller adds after the start (the first batch's fingerprint) are
    compared by the caller, through the returned progress's ``job``."""
    file = work / progress_name(rank, world)
    if file.exists() and not file.is_file():
        # was taken for no progress: the shards were dropped, the capture started again
        # and failed at its first commit, advising the same --resume again
        raise StoreError(
            f"Cannot resume the capture of '{path}': its progress file '{file}' is not a "
            "file. Start again with --overwrite."
        )
    if not file.is_file():
        drop_uncommitted(work, rank, world, ())
        return None
    saved = read_progress(file, path)
    check_same_job(saved, path, job, dtype, shard_rows)
    parts = check_committed(work, saved, rank, world, path)
    drop_uncommitted(work, rank, world, (s.file for s in saved.shards))
    log.info(
        "Resuming '%s' after %d shards (%d rows).",
        path,
        len(saved.shards),
        sum(s.rows for s in saved.shards),
    )
    return replace(saved, parts=parts)
