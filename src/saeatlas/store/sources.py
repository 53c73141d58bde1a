"""Where a store's rows come from: the safetensors shards of a store directory, or a
plain ``.npy`` array read in virtual shards; each loads one shard at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import NonFiniteError, StoreError
from .manifest import ShardInfo
from .shards import read_shard

#: Rows per virtual shard when reading a ``.npy`` file.
NPY_CHUNK_BYTES = 64 << 20


def dir_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the directory ``path`` (None when absent): a store
    replaced by another capture (:func:`~saeatlas.store.atomic.swap_in`) has others."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def check_not_replaced(root: Path, identity: tuple[int, int] | None) -> None:
    """Raise when the store directory ``root`` is no longer the one opened (``identity``):
    what is read from it now would come from another store, whose shards are not
    hashed again in later epochs and whose rows may have the same count."""
    if dir_identity(root) != identity:
        raise StoreError(
            f"The store '{root}' was replaced while this run read it (another capture "
            "wrote it, with --overwrite), so its rows would mix two stores. Run this again "
            "once that capture is done, or read a copy of the store."
        )


class ShardSource:
    """The shards of a store directory, each checked against its sha256 and for
    NaN/Inf the first time it is read through this source (later epochs skip both),
    and the directory checked to be the one opened (``identity``,
    :func:`dir_identity`) after every read."""

    def __init__(
        self,
        root: Path,
        shards: Sequence[ShardInfo],
        verify: bool,
        identity: tuple[int, int] | None = None,
    ) -> None:
        self.root, self.shards, self.verify = root, list(shards), verify
        self.identity = identity if identity is not None else dir_identity(root)
        self.verified: set[int] = set()
        self.checked: set[int] = set()
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])

    def __len__(self) -> int:
        return len(self.shards)

    def rows(self, i: int) -> int:
        return self.shards[i].rows

    def nbytes(self, i: int) -> int:
        return (self.root / self.shards[i].file).stat().st_size

    def load(self, i: int, buffer: np.ndarray | None = None) -> torch.Tensor:
        info = self.shards[i]
        check = self.verify and i not in self.verified
        x = read_shard(self.root / info.file, info.sha256 if check else None, buffer)
        # a swap renames the whole directory: the same one after the read, the same file
        check_not_replaced(self.root, self.identity)
        if check:
            self.verified.add(i)
        if x.shape[0] != info.rows:
            raise StoreError(
                f"Shard '{info.file}' has {x.shape[0]} rows, the manifest says {info.rows}; "
                "the store is corrupt. Recapture it."
            )
        if i not in self.checked:
            # capture keeps NaN/Inf out of shards, so any here is damage
            check_finite(x, self.root, int(self.starts[i]), fix="Recapture the store.")
            self.checked.add(i)
        return x


class ArraySource:
    """A ``.npy`` file, read in chunks of about 64 MiB.

    A C-ordered file of the served dtype is read with plain file reads into the
    caller's buffer: a memory-mapped read would leave every page it touched
    mapped into the process (in its resident memory) until the map is dropped.
    Other layouts (Fortran order, float64 served as float32) go through the map.
    """

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        # float64 arrays are read as float32, like every other store; big-endian
        # files are served in the machine's byte order
        native = array.dtype.newbyteorder("=")
        # float16 and float32 are served as they are, wider floats as float32 (a
        # longdouble array ended in torch's TypeError, which has no such dtype)
        self.dtype = native if native in (np.float16, np.float32) else np.dtype(np.float32)
        self.chunk = max(1, NPY_CHUNK_BYTES // max(1, array.shape[1] * self.dtype.itemsize))
        self.keep: np.ndarray | None = None
        """Rows served when some are skipped for NaN/Inf (``on_nonfinite='skip'``)."""
        self.direct = (
            isinstance(array, np.memmap)
            and array.dtype == self.dtype
            and array.flags.c_contiguous
            and array.filename is not None
        )
        self.file = getattr(array, "filename", None)
        self.stamp = _file_stamp(self.file)
        """The file's identity, size and modification time when it was opened: an
        array saved again at the same path (``np.save`` rewrites the file in place)
        has others, and rows read from it now would mix two arrays."""

    @property
    def n_rows(self) -> int:
        return int(self.array.shape[0] if self.keep is None else len(self.keep))

    def skip(self, bad_rows: np.ndarray) -> None:
        """Serve every row but ``bad_rows`` from now on."""
        self.keep = np.setdiff1d(np.arange(self.array.shape[0]), bad_rows)
        self.direct = False

    def __len__(self) -> int:
        return max(1, math.ceil(self.n_rows / self.chunk))

    def rows(self, i: int) -> int:
        return min(self.chunk, self.n_rows - i * self.chunk)

    def nbytes(self, i: int) -> int:
        return self.rows(i) * self.array.shape[1] * self.dtype.itemsize

    def load(self, i: int, buffer: np.ndarray | None = None) -> torch.Tensor:
        shape = (self.rows(i), self.array.shape[1])
        nbytes = self.nbytes(i)
        if buffer is None or buffer.size < nbytes:
            buffer = np.empty(nbytes, np.uint8)
        block = buffer[:nbytes]
        if self.direct:
            start = self.array.offset + i * self.chunk * shape[1] * self.dtype.itemsize
            with open(self.array.filename, "rb", buffering=0) as f:
                f.seek(start)
                got = f.readinto(memoryview(block))
            if got != nbytes:
                raise StoreError(
                    f"'{self.array.filename}' ended early ({got} of {nbytes} bytes of chunk {i}); "
                    "the file is truncated or was rewritten while open. Save the array again."
                )
            out = block.view(self.dtype).reshape(shape)
        else:
            if self.keep is None:
                view = self.array[i * self.chunk : i * self.chunk + shape[0]]
            else:
                view = self.array[self.keep[i * self.chunk : i * self.chunk + shape[0]]]
            out = block.view(self.dtype).reshape(shape)
            with np.errstate(over="ignore"):  # beyond float32: Inf, reported by the reader
                np.copyto(out, view, casting="same_kind")
        if _file_stamp(self.file) != self.stamp:  # after the read: it read the opened file
            raise StoreError(
                f"'{self.file}' was written again while this run read it, so its rows would "
                "mix two arrays. Run this again once it is written, or read a copy of it."
            )
        return torch.from_numpy(out)


def _file_stamp(file: str | None) -> tuple[int, ...] | None:
    """Device, inode, size and modification time of ``file`` (None without one)."""
    if file is None:
        return None
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return (0,)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_finite(x: torch.Tensor, path: Path, first_row: int, fix: str) -> None:
    """Raise :class:`NonFiniteError` naming the first NaN/Inf of ``x`` (rows from ``first_row``)."""
    bad = ~torch.isfinite(x)
    if bad.any():
        rows, cols = torch.nonzero(bad, as_tuple=True)
        value = float(x[rows[0], cols[0]])
        raise NonFiniteError(
            f"'{path}' has NaN/Inf values, the first ({value}) at row {first_row + int(rows[0])}, "
            f"column {int(cols[0])}. {fix}"
        )
