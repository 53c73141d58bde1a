"""The partial directory a capture writes into (``.STORE.partial``): its file names,
and how a capture opens it (new, resumed or replacing a store).

Each of ``world`` ranks writes files of its own, so no two ranks ever write one
file: ``shard-r001-00000.safetensors``, ``.parts/rows-r001-00000.parquet`` and
``progress-r001-of-002.safetensors``; a capture by one process leaves the rank out
(``shard-00000.safetensors``, ``progress.safetensors``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ChecksumError, ConfigError, StoreError
from .atomic import TMP_PREFIX
from .manifest import MANIFEST, ROWS, file_sha256
from .progress import Progress
from .shards import read_shard
from .stats import RunningMoments

log = logging.getLogger(__name__)

PROGRESS = "progress.safetensors"
#: Progress files of saeatlas before 0.1.1, which wrote the store in place.
LEGACY_PROGRESS = ("progress.json", "progress-stats.safetensors")
PARTS = ".parts"


def _rank_tag(rank: int, world: int) -> str:
    return "" if world == 1 else f"r{rank:03d}-"


def shard_name(i: int, rank: int = 0, world: int = 1) -> str:
    return f"shard-{_rank_tag(rank, world)}{i:05d}.safetensors"


def part_name(i: int, rank: int = 0, world: int = 1) -> str:
    """The row metadata of shard ``i`` of ``rank``, under :data:`PARTS`."""
    return f"rows-{_rank_tag(rank, world)}{i:05d}.parquet"


def progress_name(rank: int = 0, world: int = 1) -> str:
    """The progress file of ``rank`` in a capture by ``world`` processes."""
    return PROGRESS if world == 1 else f"progress-r{rank:03d}-of-{world:03d}.safetensors"


def progress_files(work: Path) -> list[Path]:
    """Every progress file in the partial directory ``work``, of any number of ranks."""
    return sorted(work.glob("progress*.safetensors")) if work.is_dir() else []


def is_store_file(x: Path) -> bool:
    """Whether ``x`` is a file a store directory (or an older saeatlas's one) may hold."""
    n = x.name
    return (
        n in (MANIFEST, ROWS, PROGRESS, PARTS, *LEGACY_PROGRESS)
        or (n.startswith("progress-r") and n.endswith(".safetensors"))
        or (n.startswith("shard-") and n.endswith(".safetensors"))
        or n.startswith(TMP_PREFIX)
    )


def refuse_foreign(path: Path, *, since: bool = False) -> None:
    """Refuse the store ``path`` when it is a folder holding other files than a store's;
    ``since``: checked again just before the capture puts its store there, which replaced
    the folder whole: another output written into it while the capture ran (a store in
    ``path/b``), or files copied there, were deleted without a word."""
    foreign = (
        sorted(x.name for x in path.iterdir() if not is_store_file(x)) if path.is_dir() else []
    )
    if foreign and since:
        raise StoreError(
            f"'{path}' now holds other files ({foreign[:3]}), put there while this capture "
            "ran, which putting the store there would delete. Move them away, then finish "
            "with `saeatlas capture ... --resume` (`resume=True`): every row captured is kept."
        )
    if foreign:
        raise StoreError(
            f"'{path}' is not a saeatlas store: it holds other files ({foreign[:3]}); "
            "choose an empty or new --out."
        )


def prepare_partial(
    path: Path, work: Path, world: int, *, resume: bool, overwrite: bool, finished: bool = False
) -> bool:
    """Rank 0, holding the lock of the store ``path``: make the partial directory
    ``work`` ready for a capture by ``world`` processes. Returns True when the capture
    resumes the interrupted one found there (each rank then loads its own progress),
    False when ``work`` was made empty for a new one. Call
    :func:`~saeatlas.store.merge.recover_store` first; ``finished``: it put in place
    the store of a capture a kill stopped before its swap."""
    refuse_foreign(path)
    found = progress_files(work)
    mine = {progress_name(r, world) for r in range(world)}
    has_progress = bool(found)
    if has_progress and resume:
        others = [f.name for f in found if f.name not in mine]
        if others:
            raise ConfigError(
                f"The interrupted capture of '{path}' ran in another number of processes than "
                f"this one ({world}; it left {others[:2]}). Resume it with as many "
                "processes as it had (torchrun --nproc_per_node), or start again with "
                "--overwrite."
            )
        # also an interrupted --overwrite: the old store stays until this one is done
        return True
    if (path / MANIFEST).exists() and not overwrite:
        pending = " (or --resume, to continue the interrupted one)" if has_progress else ""
        # not "its capture is finished": an --overwrite killed before its first shard
        # leaves the old store and nothing to resume, and this store is the old one
        done = (
            ""
            if not resume
            else ": the interrupted capture had stored every row and is now in place, so "
            "nothing is left to resume; read it as it is"
            if finished
            else " and no interrupted capture of it is left to resume (one killed before it "
            "stored a shard leaves none)"
        )
        raise StoreError(
            f"'{path}' already holds a complete store{done}. Choose another --out, or pass "
            f"--overwrite (`overwrite=True`) to replace it{pending}."
        )
    legacy = path.is_dir() and not (path / MANIFEST).exists() and any(path.iterdir())
    if legacy and not (resume or overwrite):
        raise StoreError(
            f"'{path}' holds an incomplete store written by an older saeatlas, which cannot be "
            "resumed safely. Pass --overwrite (`overwrite=True`) to capture it again."
        )
    if legacy:
        log.warning("'%s' is an incomplete store of an older saeatlas; capturing it again.", path)
    if has_progress and not overwrite:
        raise StoreError(
            f"'{path}' has an interrupted capture. Pass --resume (`resume=True`) to continue it, "
            "or --overwrite (`overwrite=True`) to start again."
        )
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    return False


def drop_uncommitted(work: Path, rank: int, world: int, committed: Iterable[str]) -> None:
    """Remove the files of ``rank`` in ``work`` written after its last commit: shards
    not named in ``committed``, the row parts of shards past them, and temporary files."""
    listed = set(committed)
    parts = {part_name(i, rank, world) for i in range(len(listed))}
    own = f"{_rank_tag(rank, world)}*"
    for x in work.glob(f"shard-{own}.safetensors"):
        if x.name not in listed:
            x.unlink()
    for x in (work / PARTS).glob(f"rows-{own}.parquet"):
        if x.name not in parts:
            x.unlink()
    # temporary files of writes a kill cut short (only this rank's: others may be writing)
    stale = [
        *work.glob(f"{TMP_PREFIX}shard-{own}"),
        *work.glob(f"{TMP_PREFIX}{progress_name(rank, world)}-*"),
        *(work / PARTS).glob(f"{TMP_PREFIX}rows-{own}"),
    ]
    for x in stale:
        x.unlink()


def check_committed(
    work: Path, saved: Progress, rank: int, world: int, store: Path
) -> tuple[str, ...]:
    """Before a resume builds on them: each committed shard of ``rank`` in ``work`` has
    the sha256 and shape its commit (``saved``) recorded, its row part the sha256 in
    ``saved.parts`` (from a progress file of before it was recorded: its rows' count),
    and the running moments are those of these shards. A file damaged or swapped since
    would otherwise end up in a store declared complete (row metadata of as many rows
    of other samples, labels or texts; statistics of other rows). Returns the parts'
    sha256."""
    digests, moments, parts = [], RunningMoments(saved.n_units), saved.parts
    for i, info in enumerate(saved.shards):
        shard, part = work / info.file, work / PARTS / part_name(i, rank, world)
        try:
            x = read_shard(shard, info.sha256)
            shape = tuple(x.shape)
            problem = None if shape == (info.rows, saved.n_units) else f"has shape {list(shape)}"
        except ChecksumError:
            problem = "changed since it was written (its sha256 differs)"
        except StoreError:
            problem = "is missing or unreadable"
        if problem is None:
            moments.update(x)  # block by block, as the commit merged it
            try:
                digest = file_sha256(part)  # first: it refuses a named pipe, which would hang
                n = pq.read_metadata(part).num_rows
            except (OSError, pa.ArrowException):
                n, digest = None, None
            if n != info.rows:
                problem = f"has its row metadata '{PARTS}/{part.name}' missing or damaged"
            elif parts is not None and (i >= len(parts) or digest != parts[i]):
                problem = (
                    f"has its row metadata '{PARTS}/{part.name}' changed since it was written "
                    "(its sha256 differs)"
                )
            digests.append(digest)
        if problem is not None:
            raise StoreError(
                f"Cannot resume the capture of '{store}': its committed shard '{info.file}' "
                f"{problem}. Start again with --overwrite."
            )
    _check_moments(moments, saved.moments, store)
    return tuple(digests)


def _check_moments(got: RunningMoments, want: RunningMoments, store: Path) -> None:
    """The running moments a progress file holds are those of its committed shards (the
    commit merged the same blocks in the same order: equal but for float rounding)."""
    off = [
        name
        for name, a, b in (("mean", got.mean, want.mean), ("sum of squares", got.m2, want.m2))
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=0)
    ]
    if got.count != want.count or off:
        what = (
            f"row count {want.count}, the shards' {got.count}"
            if got.count != want.count
            else off[0]
        )
        raise StoreError(
            f"Cannot resume the capture of '{store}': the running statistics in its progress "
            f"file are not those of its committed shards ({what} differs); the store's mean "
            "and std would be another input's. Start again with --overwrite."
        )
