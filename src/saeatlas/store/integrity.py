"""Checking a store directory's files against its manifest: ``rows.parquet`` as it is
read (:func:`read_rows_table`), and every shard, its statistics and ``rows.parquet``'s
sha256 at once (:func:`verify_store`, ``saeatlas info --verify``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ChecksumError, ConfigError, StoreError
from .manifest import ROWS, Manifest, check_readable, file_sha256
from .requests import row_columns
from .sources import ShardSource, check_not_replaced
from .stats import RunningMoments


def rows_unreadable(path: Path, e: Exception) -> StoreError:
    """The error of the store ``path``'s ``rows.parquet`` that could not be read (``e``):
    one deleted was "unreadable (PATH)", the path again in pyarrow's words."""
    why = "is missing" if isinstance(e, FileNotFoundError) else f"is unreadable ({e})"
    return StoreError(f"'{path / ROWS}' {why}; recapture the store (or restore the file).")


def read_rows_table(
    path: Path,
    n_rows: int,
    identity: tuple[int, int] | None,
    columns: Sequence[str] | None = None,
    sha256: str | None = None,
) -> pa.Table:
    """The store ``path``'s ``rows.parquet`` (``columns`` of it, or all), checked to hold
    one row per activation row (``n_rows``), in order, of the store opened (``identity``),
    and, given its ``sha256`` (the manifest's), to be the file the capture wrote: samples
    edited, duplicated or reordered by hand would give rows the labels of others."""
    columns = row_columns(columns)
    # `row` is read too, to check the order others take the columns in
    wanted = list(dict.fromkeys([*columns, "row"])) if columns else None
    try:
        check_readable(path / ROWS)
        if (path / ROWS).is_dir():  # pyarrow reads a folder as a data set: "holds 0 rows"
            raise IsADirectoryError(f"'{ROWS}' is a folder, not a Parquet file")
        table = pq.read_table(path / ROWS, columns=wanted)
    except (OSError, pa.ArrowInvalid) as e:
        _check_columns(path / ROWS, wanted)  # an unknown name was called an unreadable file
        raise rows_unreadable(path, e) from e
    check_not_replaced(path, identity)
    if table.num_rows != n_rows:
        raise StoreError(
            f"'{path / ROWS}' holds {table.num_rows} rows, but the store has "
            f"{n_rows}; recapture the store."
        )
    row = table.column("row").to_numpy(zero_copy_only=False)
    off = row != np.arange(n_rows)  # readers take the columns in storage order
    if off.any():
        at = int(np.argmax(off))
        raise StoreError(
            f"'{path / ROWS}' lists row {row[at]} at position {at}: its rows are "
            "out of order or not this store's. Sort it by `row`, or recapture the store."
        )
    if sha256 is not None and (got := file_sha256(path / ROWS)) != sha256:
        raise ChecksumError(
            f"'{path / ROWS}' is not the one its capture wrote: its sha256 is "
            f"{got[:16]}…, the manifest says {sha256[:16]}… (it was edited, or copied from "
            "another store). Restore it, or recapture the store."
        )
    table = table.select(list(columns)) if columns else table
    # float16 labels, as a capture stored them before it widened them: pandas cannot index
    # them, and the analysis's label profiles ended in "float16 indexes are not supported"
    for i, f in enumerate(table.schema):
        if pa.types.is_float16(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(pa.float32()))
    return table


def _check_columns(rows: Path, wanted: list[str] | None) -> None:
    """Name the ``wanted`` columns that ``rows`` (a readable parquet file) lacks."""
    try:
        names = pq.read_schema(rows).names
    except (OSError, pa.ArrowInvalid):
        return
    check_column_names(names, wanted)


def check_column_names(names: Sequence[str], wanted: Sequence[str] | None) -> None:
    """Name the ``wanted`` columns that a table of columns ``names`` lacks."""
    missing = [c for c in wanted or () if c not in names]
    if missing:
        raise ConfigError(
            f"The store's rows have no column {', '.join(map(repr, missing))}; its columns "
            f"are {', '.join(names)}."
        )


def verify_store(
    path: Path, manifest: Manifest, n_units: int, identity: tuple[int, int] | None
) -> None:
    """Read every shard of the store ``path`` (checking its sha256 and for NaN/Inf),
    recompute the per-unit mean and standard deviation and compare them with the
    manifest's, and check ``rows.parquet`` (:func:`read_rows_table`, and its sha256)."""
    read_rows_table(path, manifest.n_rows, identity, ["row"], manifest.rows_sha256)
    source = ShardSource(path, manifest.shards, True, identity)
    m = RunningMoments(n_units)
    for i in range(len(source)):
        m.update(source.load(i))  # shard by shard, as the writer merged them
    # "near zero" per unit, at its own scale: an absolute 1e-12 passed every mean and std
    # of a store of 1e-30, however wrong
    floor = 1e-12 * np.maximum(np.abs(m.mean), m.std)
    for name, got, want in (("mean", m.mean, manifest.mean), ("std", m.std, manifest.std)):
        off = np.abs(got - want) > 1e-6 * (np.abs(want) + np.abs(got)) + floor
        if off.any():
            unit = int(np.argmax(off))
            raise StoreError(
                f"'{path}/manifest.json' has the wrong per-unit {name} for {int(off.sum())} "
                f"units (unit {unit}: {float(want[unit]):.9g}, the shards give "
                f"{float(got[unit]):.9g}). Recapture the store."
            )
