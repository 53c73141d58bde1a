"""Completing a store: the parts every rank committed, merged into one.

Rank 0 (the only rank of a capture by one process) takes each rank's
:class:`RankPart`, in rank order: shards listed rank by rank, moments merged with
Chan et al.'s update (:mod:`.stats`), row parts joined into ``rows.parquet`` and
renumbered in rank order. It then writes ``manifest.json``, removes the progress
files and swaps the partial directory into place (:func:`complete_store`).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import StoreError
from .atomic import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_json,
    partial_dir,
    recover_dir,
    swap_in,
)
from .manifest import MANIFEST, ROWS, LayerSpec, Manifest, ShardInfo, file_sha256
from .partial import PARTS, part_name, progress_files, refuse_foreign
from .stats import RunningMoments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankPart:
    """What one rank wrote, for rank 0 to merge (:func:`complete_store`)."""

    rank: int
    shards: tuple[ShardInfo, ...]
    moments: dict[str, np.ndarray]
    """:meth:`RunningMoments.state` of the rank's rows."""
    n_skipped: int
    layers: tuple[LayerSpec, ...] | None
    """None when the rank had no input batches."""
    meta_columns: tuple[str, ...] | None
    n_texts_cut: int = 0
    """Texts of the rank's share cut to the tokens kept (``max_length``)."""
    value_range: tuple[np.ndarray, np.ndarray] | None = None
    """The rank's :attr:`.writer.StoreWriter.value_range` (every row it captured)."""


def merged_range(parts: list[RankPart]) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-unit ``(min, max)`` over the ranks' value ranges, or None when none has one."""
    ranges = [p.value_range for p in parts if p.value_range is not None]
    if not ranges:
        return None
    return np.min([r[0] for r in ranges], axis=0), np.max([r[1] for r in ranges], axis=0)


def _columns(layers: tuple[LayerSpec, ...], meta: tuple[str, ...] | None) -> tuple:
    """What every rank must record alike: each layer's name, columns and layout, and the
    row metadata columns."""
    return tuple((l.name, l.start, l.stop, l.layout) for l in layers), meta


def _with_cut(provenance: dict[str, Any], n_cut: int) -> dict[str, Any]:
    """``provenance`` with the number of texts cut to ``max_length`` tokens, when some
    were (their later tokens have no rows)."""
    return {**provenance, "n_texts_cut": n_cut} if n_cut else provenance


def complete_store(
    work: Path,
    path: Path,
    parts: list[RankPart],
    *,
    world: int,
    dtype: str,
    provenance: dict[str, Any],
) -> Manifest:
    """Merge ``parts`` (of ``world`` ranks) in the partial directory ``work`` into
    ``rows.parquet`` and ``manifest.json``, and swap ``work`` into place at ``path``."""
    parts = sorted(parts, key=lambda p: p.rank)
    started = [p for p in parts if p.layers is not None]
    if not started:
        raise StoreError("No batches were captured: the inputs were empty.")
    # the layers' shapes are each rank's first batch's: texts of other lengths give other
    # sequence lengths, and the store records the first batch's, rank 0's, as one process does
    layers, columns = started[0].layers, started[0].meta_columns
    for p in started[1:]:
        mine, first = _columns(p.layers, p.meta_columns), _columns(layers, columns)
        if mine != first:
            raise StoreError(
                f"Rank {p.rank} recorded other layers or row columns than rank "
                f"{started[0].rank} ({mine} vs {first}); every rank must run the same model "
                "with the same settings."
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
    refuse_foreign(path, since=True)  # before the work's files are joined: it may resume
    atomic_write(work / ROWS, lambda tmp: _join_rows(tmp, work, parts, world))
    manifest = Manifest(
        n_rows=n_rows,
        n_units=layers[-1].stop,
        dtype=dtype,
        layers=layers,
        shards=shards,
        mean=moments.mean,
        std=moments.std,
        n_nonfinite_rows_skipped=sum(p.n_skipped for p in parts),
        provenance=_with_cut(provenance, sum(p.n_texts_cut for p in parts)),
        rows_sha256=file_sha256(work / ROWS),
    )
    atomic_write_json(work / MANIFEST, manifest.to_json())
    _put_in_place(work, path)
    return manifest


def _put_in_place(work: Path, path: Path) -> None:
    """The last step of a capture: the partial directory ``work``, complete (its
    ``manifest.json`` written), cleared of the files of the work and swapped in at ``path``."""
    for f in progress_files(work):
        f.unlink()
    # what a kill left of an earlier run's rows.parquet or manifest.json (every rank is
    # done writing by now: its part was gathered)
    for f in work.glob(f"{TMP_PREFIX}*"):
        f.unlink()
    shutil.rmtree(work / PARTS, ignore_errors=True)
    swap_in(work, path)


def recover_store(path: Path) -> bool:
    """Holding the lock of the store ``path``: finish what a kill left of a capture's
    last step: the directory swap (:func:`recover_dir`), or one not begun yet, of a
    partial directory that holds ``manifest.json``: a complete store (the manifest is
    written last, once every shard is committed and ``rows.parquet`` written). Once its
    progress files were removed, a capture started afresh deleted it, and a reader
    said there was no store. Returns whether it put such a store in place."""
    recover_dir(path)
    work = partial_dir(path)
    if not (work / MANIFEST).is_file():
        return False
    _put_in_place(work, path)
    log.info("Put the complete store '%s' in place (a kill had stopped its capture).", path)
    return True


def _join_rows(tmp: Path, work: Path, parts: list[RankPart], world: int) -> None:
    """Each rank's row parts in order; a rank's ``row`` numbers start after the
    rows of the ranks before it."""
    files, offset = [], 0
    for p in parts:
        for i in range(len(p.shards)):
            files.append((work / PARTS / part_name(i, p.rank, world), offset))
        offset += sum(s.rows for s in p.shards)
    # one schema for every part: a batch without labels (None) leaves a part's `label`
    # column null, and integer and float labels of two parts join as floats
    schema = pa.unify_schemas([pq.read_schema(f) for f, _ in files], promote_options="permissive")
    with pq.ParquetWriter(tmp, schema) as out:
        for file, offset in files:
            table = pq.read_table(file).cast(schema)
            if offset:
                row = table.schema.get_field_index("row")
                shifted = pa.array(table["row"].to_numpy() + offset, type=pa.int64())
                table = table.set_column(row, "row", shifted)
            out.write_table(table)
