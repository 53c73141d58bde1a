"""What a caller asks of a store's read methods, checked and resolved: row numbers,
the dtype to read as, and the layers whose columns to read; and what it asks of the
store's writer (:func:`writer_arguments`).

Each check refuses a value of the wrong kind with the store's own error class
(:class:`~saeatlas.errors.ConfigError`, :class:`~saeatlas.errors.StoreError`)
before any shard is read; they ended in torch's or Python's errors half-way
(``read(dtype="float16")``: "Invalid device string"), or read something else
(``read(True, 4)``: row 1; ``iter_batches(4, seed=1.5)``: seed 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_json_argument, check_path_argument, shown
from ..errors import ConfigError, StoreError
from .job_layers import job_layers_fault
from .manifest import LayerSpec, provenance_fault, validate_layers
from .progress import ResumePoint
from .shards import STORE_DTYPES

#: The dtypes a store reads as, by the names a caller may give them (torch's, as text).
READ_DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


def read_dtype(value: Any) -> torch.dtype | None:
    """``value`` (``dtype`` of ``read`` and ``iter_batches``) as a torch dtype: a floating
    torch dtype, its name (``"float16"``, ``"torch.float16"``), a NumPy float dtype, or
    None (the stored dtype). Activations are real numbers: an integer or bool dtype would
    cut them to whole numbers or truth values without a word."""
    if value is None:
        return None
    name = None
    if isinstance(value, torch.dtype):
        name = str(value).removeprefix("torch.")
    elif isinstance(value, str):
        name = value.removeprefix("torch.")
    else:
        try:
            name = np.dtype(value).name
        except (TypeError, ValueError):
            name = None
    if name not in READ_DTYPES:
        raise ConfigError(
            f"`dtype` must be a floating dtype to read activations as ({', '.join(READ_DTYPES)}, "
            f"as a torch dtype or its name) or None for the stored one, got {shown(value)}."
        )
    return READ_DTYPES[name]


def whole_number(name: str, value: Any, *, low: int = 0, high: int | None = None) -> int:
    """``value`` (the argument ``name``) as an int of at least ``low`` (and at most
    ``high``): a float, text or bool is refused, not cut (``1.5``), compared (``"1"``) or
    read as 1 (``True``)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ConfigError(f"`{name}` must be a whole number, got {shown(value)}.")
    if value < low:
        raise ConfigError(f"`{name}` must be >= {low}, got {value}.")
    if high is not None and value > high:
        raise ConfigError(f"`{name}` must be <= {high}, got {shown(value)}.")
    return int(value)


def batch_counts(
    n_samples: Any, n_skipped: Any, skip_rows: Any, point: ResumePoint, batch: int
) -> tuple[int, int, int]:
    """``StoreWriter.add``'s counts, each a whole number of at least 0: ``n_samples=-1``
    moved every later batch's samples back by one, and 2.5 stored fractional sample ids.
    ``skip_rows`` must be the rows of input batch ``batch`` that the interrupted capture
    committed (``point``, where the writer resumes): given otherwise, so many rows were
    left out of the store without a word."""
    named = {"n_samples": n_samples, "n_skipped": n_skipped, "skip_rows": skip_rows}
    a, b, c = (whole_number(k, v) for k, v in named.items())
    committed = point.rows_into_batch if batch == point.batches_done else 0
    if c != committed:
        raise ConfigError(
            f"`skip_rows` {c} does not match the {committed} rows of input batch {batch} that "
            "an interrupted capture committed (`resume_point`); pass skip_rows="
            f"{committed}: skipped rows are left out of the store."
        )
    return a, b, c


def read_part(part: Any) -> tuple[int, int]:
    """``part`` of ``iter_batches``: ``(rank, world)`` with ``0 <= rank < world``."""
    if not isinstance(part, (tuple, list)) or len(part) != 2:
        raise ConfigError(
            f"Bad `part` {shown(part)}: expected (rank, world) with 0 <= rank < world."
        )
    rank, world = (whole_number("part", v) for v in part)
    if not rank < world:
        raise ConfigError(
            f"Bad `part` {shown(part)}: expected (rank, world) with 0 <= rank < world."
        )
    return rank, world


def find_layer(path: Path, layers: Sequence[LayerSpec], name: Any) -> LayerSpec:
    """The layer of ``layers`` (the store ``path``'s) called ``name``."""
    for layer in layers:
        if layer.name == name:
            return layer
    names = ", ".join(repr(layer.name) for layer in layers)
    raise StoreError(f"Store '{path}' has no layer {shown(name)}; it has: {names}.")


def layer_columns(
    path: Path, layers: Sequence[LayerSpec], names: Sequence[str] | str | None
) -> slice | torch.Tensor:
    """The columns of the layers called ``names`` (one name, a list, or None for all) of
    the store ``path``: a slice when contiguous, else an index tensor, in the order named.
    A layer named twice is refused: its columns would be read twice, as two layers."""
    if names is None:
        return slice(0, layers[-1].stop)
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, Sequence):
        raise ConfigError(f"`layers` must be a list of layer names, got {shown(names)}.")
    specs = [find_layer(path, layers, n) for n in names]
    if not specs:
        raise ConfigError("`layers` is empty; name at least one layer or pass None for all.")
    twice = sorted({n for n in names if list(names).count(n) > 1})
    if twice:
        raise ConfigError(
            f"`layers` names {', '.join(map(repr, twice))} more than once; name each layer once."
        )
    ranges = [(s.start, s.stop) for s in specs]
    if all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1)):
        return slice(ranges[0][0], ranges[-1][1])
    return torch.cat([torch.arange(a, b) for a, b in ranges])


def row_columns(columns: Sequence[str] | None) -> list[str] | None:
    """The columns of a store's rows asked for (``columns``; None for all), checked: a
    text was read as its characters, `[]` as every column (and by a ``.npy`` store's
    rows every list was), and a column named twice came back twice."""
    if columns is None:
        return None
    if isinstance(columns, str):  # read as its characters, each an unknown column
        raise ConfigError(f"`columns` must be a list of column names, got the text {columns!r}.")
    try:
        columns = list(columns)
    except TypeError:
        columns = [columns]
    if not all(isinstance(c, str) for c in columns):
        raise ConfigError(f"`columns` must be a list of column names (text), got {shown(columns)}.")
    if not columns:
        raise ConfigError("`columns` is empty; name at least one column or pass None for all.")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise ConfigError(
            f"`columns` names {', '.join(map(repr, twice))} more than once; name each column once."
        )
    return columns


def writer_arguments(
    path: Any, dtype: Any, shard_rows: Any, rank: Any, world: Any, provenance: Any, job: Any
) -> tuple[int | None, int, int]:
    """``(shard_rows, rank, world)`` of a :class:`~.writer.StoreWriter`, its arguments
    checked before it takes the store's lock: a number as ``path`` ended in pathlib's
    TypeError, ``shard_rows=2.5`` or ``"8"`` and
    ``rank="0"`` ended in TypeErrors, and a ``job`` or ``provenance`` no reader takes
    (``job=[1]``, ``{"max_length": 0}``) was written into the manifest of a complete store
    that every reader then refused (:func:`~.manifest.provenance_fault`, the readers' check)."""
    check_path_argument("path", path)
    rank, world = whole_number("rank", rank), whole_number("world", world, low=1)
    if not rank < world:
        raise ConfigError(f"`rank` must be in [0, {world}), got {rank}.")
    if not isinstance(dtype, str) or dtype not in STORE_DTYPES:
        raise ConfigError(
            f"Unknown store `dtype` {shown(dtype)}; expected one of: {list(STORE_DTYPES)}."
        )
    if shard_rows is not None:
        shard_rows = whole_number("shard_rows", shard_rows, low=1)
    check_json_argument("provenance", provenance)
    check_json_argument("job", job)
    fault = provenance_fault({**(provenance or {}), "job": job})
    if fault:
        raise ConfigError(f"The store writer would record {fault}; no reader takes that.")
    return shard_rows, rank, world


def started_layers(
    layers: Any,
    before: tuple[LayerSpec, ...] | None,
    path: Path,
    *,
    resumed: bool,
    job: dict[str, Any] | None = None,
) -> tuple[tuple[LayerSpec, ...], int]:
    """The layers given to :meth:`.writer.StoreWriter.start` and their number of units,
    checked, the same as ``before``, those the interrupted capture of ``path``
    recorded (``resumed``) or an earlier ``start`` was given, and as the writer's ``job``
    names them (:func:`~.job_layers.job_layers_fault`, the readers' check)."""
    layers = tuple(layers)
    if not layers or not all(isinstance(x, LayerSpec) for x in layers):  # dicts: a traceback
        raise ConfigError(
            f"`layers` must be one or more LayerSpec(name, start, stop), got {shown(layers)}."
        )
    n_units = layers[-1].stop
    validate_layers(layers, n_units)
    fault = job_layers_fault({"job": job}, layers)
    if fault:
        raise ConfigError(f"The store writer would record {fault}; no reader takes that.")
    if before is not None:
        old = [(l.name, l.start, l.stop) for l in before]
        new = [(l.name, l.start, l.stop) for l in layers]
        if old != new and not resumed:  # was told of an "interrupted capture" and --resume
            raise StoreError(
                f"start() was called already on this writer of '{path}', with layers {old}; "
                f"this call gives {new}. A store has one set of layers: call start() once."
            )
        if old != new:
            raise StoreError(
                f"The interrupted capture in '{path}' recorded layers {old}, this run "
                f"gives {new}. Resume with the same model and --layers, or use --overwrite."
            )
    return layers, n_units


def check_open(closed: bool, path: Path) -> None:
    """Refuse rows (or layers) for a writer of ``path`` that is ``closed``: once its
    ``finish``, ``close`` or ``abort`` was called they were taken into the buffer of a
    writer that writes nothing more, and lost without a word."""
    if closed:
        raise StoreError(
            f"This StoreWriter of '{path}' is closed (finished or aborted): rows added now "
            "would be stored nowhere. Add every row before close(); open a new StoreWriter "
            "(with `resume=True` after an abort) to write more."
        )
