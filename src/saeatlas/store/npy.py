"""A plain ``.npy`` array opened as a store, read-only: its checks, the
``layers.json`` beside it, and one pass that finds NaN/Inf rows and takes the
per-unit moments (a store directory has them in its manifest)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validation import check_path_argument, strict_json
from ..errors import ConfigError, NonFiniteError, StoreError
from .manifest import LayerSpec, check_readable, validate_layers
from .sources import ArraySource, check_finite
from .stats import RunningMoments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpyArray:
    """What :func:`open_npy` found in a ``.npy`` file."""

    source: ArraySource
    layers: tuple[LayerSpec, ...]
    dtype: str
    """The dtype rows are served in (``float64`` is read as ``float32``)."""
    mean: np.ndarray
    std: np.ndarray
    n_skipped_rows: int
    """Rows left out for NaN/Inf (``on_nonfinite='skip'``)."""
    sha256: str
    """sha256 of the array's values as read (every row, in order)."""


def check_store_argument(store: Any) -> None:
    """Refuse a store given as anything but a path (or an opened store): an array given to
    `train_sae` or `sweep` ended in pathlib's "expected str, bytes or os.PathLike object"
    (a store is read in bounded memory, from files; an array in memory is saved first)."""
    from .store import ActivationStore

    if isinstance(store, (str, os.PathLike)):
        check_path_argument("store", store)  # a NUL: Python's "embedded null byte"
    if not isinstance(store, (ActivationStore, str, os.PathLike)):
        raise ConfigError(
            f"`store` must be an ActivationStore or the path of a store directory or a .npy "
            f"file, got {type(store).__name__}: save an array with np.save('acts.npy', x) "
            "(and its layers in acts.layers.json) and give that path."
        )


#: The first bytes of every .npy file.
NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (memory-mapped with ``mmap``), never
    unpickled. Raises ValueError for a pickle and for a ``.npz`` archive, which
    ``np.load`` opens whatever the file's name, and for a file that is neither: NumPy
    takes any such file for a pickle and advises `allow_pickle` (a CSV named `.npy`)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head and not head.startswith((NPY_MAGIC, b"PK\x03\x04")):
        kind = ", a pickle" if head[:1] == b"\x80" else ""
        raise ValueError(
            f"it is not a .npy file (those start with {NPY_MAGIC!r}; this one with {head!r}{kind})"
        )
    loaded = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if not isinstance(loaded, np.ndarray):
        names = list(loaded.files)
        loaded.close()
        raise ValueError(
            f"it is a .npz archive of {len(names)} arrays {names[:5]} (`np.savez`), not "
            "the one array `np.save` writes"
        )
    return loaded


def open_npy(path: Path, on_nonfinite: str) -> NpyArray:
    """Open the ``[rows, units]`` array at ``path`` and read it once (see :func:`_scan`)."""
    try:
        array = load_npy(path, mmap=True)
    except (ValueError, OSError, EOFError) as e:
        raise StoreError(f"'{path}' is not a readable .npy array ({e}).") from e
    if array.ndim != 2:
        raise StoreError(
            f"'{path}' has shape {array.shape}; an activation array must be [rows, units]. "
            "Reshape it to 2-D first."
        )
    native = array.dtype.newbyteorder("=")  # a big-endian file reads the same
    dtype = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}.get(native)
    if dtype is None:
        if array.dtype.kind != "f":
            raise StoreError(
                f"'{path}' has dtype {array.dtype}; activations must be floats. Convert it: "
                f"`np.save('{path}', np.load('{path}').astype(np.float32))`."
            )
        dtype = "float32"  # float64 is read as float32
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise StoreError(
            f"'{path}' has shape {array.shape}: no activations. An array needs at least one "
            "row and one unit."
        )
    layers = _npy_layers(path, array.shape[1])
    source = ArraySource(array)
    moments, n_skipped, sha256 = _scan(source, path, layers[-1].stop, on_nonfinite)
    return NpyArray(source, layers, dtype, moments.mean, moments.std, n_skipped, sha256)


def _scan(
    source: ArraySource, path: Path, n_units: int, on_nonfinite: str
) -> tuple[RunningMoments, int, str]:
    """Read a ``.npy`` array once: find NaN/Inf (an error, or rows the source then
    skips), take the per-unit moments of the other rows and the sha256 of every value
    (what tells a training checkpoint that its rows changed: the same rows in
    another order have the same moments)."""
    bad: list[np.ndarray] = []
    m = RunningMoments(n_units)
    h = hashlib.sha256()
    start = 0
    for i in range(len(source)):
        x = source.load(i)
        h.update(np.ascontiguousarray(x.numpy()))
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            if on_nonfinite == "error":
                _check_in_range(source, x, path, start)
                check_finite(
                    x,
                    path,
                    start,
                    fix="Clean the array, or pass --on-nonfinite skip "
                    "(`on_nonfinite='skip'`) to leave those rows out.",
                )
            bad.append(start + torch.nonzero(~finite).flatten().numpy())
            x = x[finite]
        m.update(x)
        start += source.rows(i)
    if not bad:
        return m, 0, h.hexdigest()
    rows = np.concatenate(bad)
    if len(rows) == source.array.shape[0]:
        raise NonFiniteError(f"Every row of '{path}' has NaN/Inf; nothing is left.")
    source.skip(rows)
    log.warning("Skipped %d rows of '%s' with NaN/Inf.", len(rows), path)
    return m, len(rows), h.hexdigest()


def _check_in_range(source: ArraySource, x: torch.Tensor, path: Path, first_row: int) -> None:
    """Name a finite value of a float64 array that float32, which it is read as, cannot
    hold (it was reported as an Inf the file does not have)."""
    rows, cols = torch.nonzero(~torch.isfinite(x), as_tuple=True)
    row, col = first_row + int(rows[0]), int(cols[0])
    value = source.array[row, col]
    if source.array.dtype.itemsize > 4 and np.isfinite(value):
        raise NonFiniteError(
            f"'{path}' has values beyond float32's range (+-3.4e38), which activations are "
            f"read as: the first ({float(value):g}) at row {row}, column {col}. Scale the array "
            "down, or pass --on-nonfinite skip (`on_nonfinite='skip'`) to leave those rows out."
        )


def _npy_layers(path: Path, n_units: int) -> tuple[LayerSpec, ...]:
    for candidate in (path.with_name(path.stem + ".layers.json"), path.with_name("layers.json")):
        if candidate.exists():
            expected = (
                f'\'{candidate}\' must be a JSON list of {{"name", "start", "stop"}} objects, '
                'for example [{"name": "layer1", "start": 0, "stop": 64}, ...]'
            )
            try:  # a key given twice was read last-wins, [[[...]]] in a RecursionError
                check_readable(candidate)
                entries = strict_json(candidate.read_text(encoding="utf-8"), candidate.name)
            except (ValueError, OSError) as e:  # not JSON, not UTF-8, a directory
                raise StoreError(f"{expected} ({e}).") from None
            if (
                not isinstance(entries, list)
                or not entries
                or not all(isinstance(e, dict) for e in entries)
            ):
                raise StoreError(f"{expected}; it holds {json.dumps(entries)[:60]}.")
            try:
                layers = tuple(LayerSpec.from_json(e) for e in entries)
                validate_layers(layers, n_units)
            except StoreError as e:
                raise StoreError(
                    f"'{candidate}' does not describe the {n_units} columns of '{path}': {e} "
                    "Fix it, or remove it to read the array as one layer."
                ) from e
            # a layer without a `shape` is taken to output [batch, its columns]
            return tuple(
                layer if layer.shape else replace(layer, shape=(None, layer.n_units))
                for layer in layers
            )
    return (LayerSpec(path.stem, 0, n_units, (None, n_units)),)
