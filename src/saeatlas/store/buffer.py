"""Rows waiting to become a shard: the pieces of input batches the writer holds,
cut at shard boundaries, each cut with the point a resumed capture picks up from.

Rows are copied once, as they arrive, into a shard-sized block of host memory
(:class:`BlockPool`), which becomes the shard as it is: no concatenation of the
batches at the cut, and no fresh memory per shard. Blocks are reused once their
shard is committed; they are pinned when rows come from a GPU, so that the copy
into them runs without stopping the device.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._world import memory_bytes
from ..errors import ConfigError, StoreError
from .progress import ResumePoint


@dataclass
class Piece:
    """Rows of one input batch (all of them, or a run of them after a cut)."""

    x: torch.Tensor
    """``[rows, n_units]`` activations."""
    meta: dict[str, np.ndarray]
    """Per-row metadata columns."""
    batch: int
    """Index of the input batch."""
    offset: int
    """Index of the first row inside its batch."""
    batch_rows: int
    """Rows of the whole batch."""
    sample_start: int
    """Index of the batch's first sample."""
    n_samples: int
    """Samples of the batch."""

    def split(self, n: int) -> tuple[Piece, Piece]:
        """The first ``n`` rows, and the rest."""
        head = Piece(
            self.x[:n],
            {k: v[:n] for k, v in self.meta.items()},
            self.batch,
            self.offset,
            self.batch_rows,
            self.sample_start,
            self.n_samples,
        )
        tail = Piece(
            self.x[n:],
            {k: v[n:] for k, v in self.meta.items()},
            self.batch,
            self.offset + n,
            self.batch_rows,
            self.sample_start,
            self.n_samples,
        )
        return head, tail


class BlockPool:
    """Shard-sized ``[rows, n_units]`` blocks of host memory, handed back by the
    commit thread once their shard is written (:meth:`put`) and handed out again.

    Fresh memory costs a page fault per 4 KiB and pinned memory is slow to allocate,
    so both are reused. At most the shards waiting for the commit thread, the one it
    writes and the one being filled are out at a time."""

    def __init__(self, rows: int, n_units: int, dtype: torch.dtype) -> None:
        self.shape, self.dtype = (rows, n_units), dtype
        self._free: dict[bool, list[torch.Tensor]] = {False: [], True: []}
        self._lock = threading.Lock()

    def get(self, pin: bool) -> torch.Tensor:
        """A block, pinned (page-locked, for copies from a GPU) when ``pin``."""
        with self._lock:
            if self._free[pin]:
                return self._free[pin].pop()
        return torch.empty(self.shape, dtype=self.dtype, pin_memory=pin)

    def put(self, block: torch.Tensor) -> None:
        """Give back a block that nothing reads any more."""
        with self._lock:
            self._free[block.is_pinned()].append(block)


#: Blocks out at once (:class:`BlockPool`): one filling, one waiting, one being written.
BLOCKS_OUT = 3


def check_blocks_fit(rows: int, n_units: int, dtype: str, itemsize: int) -> None:
    """Refuse blocks of ``rows`` (a shard, held whole while it fills) that cannot fit in
    the machine's memory: `--shard-rows 1000000000` ended in "Out of memory" on a capture
    of 300 rows."""
    have = memory_bytes("cpu")
    if have is None or BLOCKS_OUT * rows * n_units * itemsize <= have:
        return
    most = max(1, have // (BLOCKS_OUT * n_units * itemsize))
    raise ConfigError(
        f"`shard_rows` (--shard-rows) {rows:,} makes shards of "
        f"{rows * n_units * itemsize / 2**30:,.1f} GiB ({n_units:,} units of {dtype}), each "
        f"held in memory while it fills ({BLOCKS_OUT} at once), and this machine has "
        f"{have / 2**30:,.1f} GiB. Give at most {most:,} rows, or leave --shard-rows out."
    )


def row_parts(
    x: torch.Tensor | np.ndarray | Sequence[torch.Tensor | np.ndarray],
    n_units: int,
    meta: dict[str, np.ndarray],
) -> tuple[list[torch.Tensor], dict[str, np.ndarray]]:
    """One batch's rows as a list of ``[rows, units]`` column blocks (``x`` itself, or
    its blocks side by side) with ``n_units`` columns in all, checked against their
    metadata columns ``meta``, one value per row each, and those columns as arrays
    (:func:`meta_arrays`). A NumPy array is one block (it was
    taken for a list of blocks, one per row: "Rows have shapes [(3,), (3,) ...]")."""
    meta = meta_arrays(meta)
    parts = [_block(p) for p in ([x] if isinstance(x, (torch.Tensor, np.ndarray)) else list(x))]
    n_rows = parts[0].shape[0] if parts else 0
    if (
        not parts
        or any(p.ndim != 2 or p.shape[0] != n_rows for p in parts)
        or sum(p.shape[1] for p in parts) != n_units
    ):
        shapes = [tuple(p.shape) for p in parts]
        raise StoreError(f"Rows have shapes {shapes}, expected [rows, {n_units}] in all.")
    # the readers number rows by `row` and tell samples apart by `sample`: a store written
    # without `sample`, or with a `row` of the caller's, was complete and then refused
    sample = np.asarray(meta["sample"]) if "sample" in meta else None
    if "row" in meta or sample is None or sample.dtype.kind not in "iu":
        raise StoreError(
            "The row metadata must hold `sample`, each row's sample as a whole number (got "
            f"{'none' if sample is None else sample.dtype}), and no `row`, which the writer "
            f"numbers (columns given: {sorted(meta)})."
        )
    # one of another length ended the shard's write in pyarrow's ArrowInvalid, and so did
    # one of several values per row
    other = {k: len(v) for k, v in meta.items() if len(v) != n_rows or np.ndim(v) != 1}
    if other:
        raise StoreError(
            f"The row metadata columns {other} (values each) do not fit the {n_rows} rows "
            "given with them; give each column one value per row (a 1-D array)."
        )
    return parts, meta


def meta_arrays(meta: Any) -> dict[str, np.ndarray]:
    """The row metadata columns ``meta`` as NumPy arrays: a tensor's values (of bfloat16,
    which NumPy has not, on a GPU or needing grad ended the shard's write in torch's
    TypeError, after the capture's work); refused when they are no numbers or strings
    (dicts were stored as a struct column that the analysis could not read)."""
    if not isinstance(meta, dict):
        raise StoreError(f"The row metadata must be a dict of columns, got {type(meta).__name__}.")
    out = {}
    for k, v in meta.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            v = v.float() if v.dtype in (torch.float16, torch.bfloat16) else v
        out[k] = np.asarray(v)
        first = out[k].flat[0] if out[k].dtype.kind == "O" and out[k].size else None
        if isinstance(first, (dict, list, tuple, set, np.ndarray)):
            raise StoreError(
                f"The row metadata column {k!r} holds {type(first).__name__} "
                "values; give each row a number or a string."
            )
    return out


def _block(p: Any) -> torch.Tensor:
    """One column block as a dense tensor of real numbers: a sparse one ended the write in
    torch's "Could not run 'aten::as_strided'" (it is the values it stands for, as a
    capture stores a layer's), one on the meta device (no values) in another error of
    torch's, and a complex one was stored as its real part, with only torch's warning."""
    kind = p.dtype.kind if isinstance(p, np.ndarray) else None
    if kind is not None and kind in "biuf":
        p = torch.from_numpy(p)
    if not isinstance(p, torch.Tensor) or p.is_meta or p.is_complex():
        what = (
            f"an array of {p.dtype}"
            if kind is not None
            else f"a tensor of {p.dtype} on {p.device}"
            if isinstance(p, torch.Tensor)
            else f"a {type(p).__name__}"
        )
        raise StoreError(
            f"Rows given to the store writer must be tensors or arrays of real numbers "
            f"([rows, units], or their column blocks), got {what}."
        )
    p = p.to_dense() if p.layout != torch.strided else p
    if (
        not p.is_floating_point()
        and p.dtype != torch.bool
        and not torch.equal(p.float().to(p.dtype), p)
    ):  # 16777217 was stored as 16777216 without a word (a capture refuses such layers)
        raise StoreError(
            f"Rows given to the store writer hold {str(p.dtype).removeprefix('torch.')} "
            "values that float32 cannot hold exactly (integers beyond 2**24 = 16,777,216): "
            "they would be stored rounded. Give floats, or scale them down."
        )
    return p


def copy_rows(dest: torch.Tensor, parts: Sequence[torch.Tensor], start: int) -> None:
    """Copy rows ``start:start + len(dest)`` of ``parts`` (column blocks side by side,
    ``[rows, units_i]``, of any float dtype) into ``dest`` ``[n, n_units]``, converted
    to its dtype. Rows on a GPU come as one part and are copied without waiting for
    the device (``dest`` is pinned); the caller synchronises before reading them."""
    n = dest.shape[0]
    col = 0
    for p in parts:
        dest[:, col : col + p.shape[1]].copy_(p[start : start + n], non_blocking=p.is_cuda)
        col += p.shape[1]


class RowBuffer:
    """Pieces in input order, taken from the front ``n`` rows at a time."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.n_rows = 0

    def append(self, piece: Piece) -> None:
        # Empty pieces are kept too: they move the resume point.
        self.pieces.append(piece)
        self.n_rows += piece.x.shape[0]

    def take(self, n: int) -> tuple[list[Piece], ResumePoint]:
        """The pieces of the first ``n`` rows, and where a capture resumes once they
        are committed."""
        taken: list[Piece] = []
        need = n
        while need > 0:
            head = self.pieces[0]
            if head.x.shape[0] <= need:
                taken.append(self.pieces.pop(0))
                need -= head.x.shape[0]
            else:
                part, rest = head.split(need)
                taken.append(part)
                self.pieces[0] = rest
                need = 0
        # Empty pieces right after the cut belong to batches that are complete too.
        while self.pieces and self.pieces[0].x.shape[0] == 0 and self.pieces[0].batch_rows == 0:
            taken.append(self.pieces.pop(0))
        self.n_rows -= n
        last = taken[-1]
        consumed = last.offset + last.x.shape[0]
        if consumed == last.batch_rows:
            point = ResumePoint(last.batch + 1, 0, last.sample_start + last.n_samples)
        else:
            point = ResumePoint(last.batch, consumed, last.sample_start)
        return taken, point
