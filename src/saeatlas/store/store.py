"""Reading an activation store: ``ActivationStore.open(path)``.

A store is either a directory written by :class:`~saeatlas.store.writer.StoreWriter`
(safetensors shards + ``manifest.json`` + ``rows.parquet``) or a plain ``.npy``
file of shape ``[rows, units]`` with an optional ``layers.json`` beside it,
opened read-only (:mod:`.npy`). Both read through the same shuffled,
bounded-memory batches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .._validation import check_flag_argument, check_flag_arguments, choice
from ..errors import ConfigError, StoreError
from .atomic import finish_swap_for_reader, partial_dir
from .describe import StoreSummary, what_it_is
from .integrity import check_column_names, read_rows_table, rows_unreadable, verify_store
from .lock import other_writer
from .manifest import MANIFEST, ROWS, LayerSpec, Manifest, check_manifest, check_readable
from .merge import recover_store
from .npy import check_store_argument, open_npy
from .partial import progress_files
from .readers import ReadPlan, block_rows
from .requests import find_layer, layer_columns, read_dtype, read_part, row_columns, whole_number
from .sources import ArraySource, ShardSource, dir_identity

#: What to do with NaN/Inf in activations, everywhere they are read: capture, and
#: every stage that opens a ``.npy`` array.
NONFINITE_MODES = ("error", "skip")
#: The columns of a store's rows that number them (every store has them); the others are
#: labels and texts.
INDEX_COLUMNS = ("row", "sample", "position")


class ActivationStore:
    """Rows of unit activations, read in shuffled batches with bounded memory.

    Open with :meth:`open`. Columns are the units of the layers in
    :attr:`layers`, concatenated in order.
    """

    def __init__(
        self,
        path: Path,
        source: ShardSource | ArraySource,
        layers: tuple[LayerSpec, ...],
        dtype: str,
        manifest: Manifest | None,
    ) -> None:
        self.path = path
        self._source = source
        self.layers = layers
        self.dtype = dtype
        self.manifest = manifest
        self._moments: tuple[np.ndarray, np.ndarray] | None = (
            (manifest.mean, manifest.std) if manifest is not None else None
        )
        self.n_skipped_rows = 0
        """Rows of a ``.npy`` array left out for NaN/Inf (``on_nonfinite='skip'``)."""
        self._npy_sha256 = ""  # a .npy's, from open_npy
        # rows.parquet's (size, mtime, inode) when its sha256 was last found right: a
        # reader that asks for the rows again (one column at a time) hashes it once
        self._rows_checked: tuple[int, int, int] | None = None

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str | Path, *, verify: bool = True, on_nonfinite: str = "error"
    ) -> ActivationStore:
        """Open a store directory or a ``.npy`` file.

        Args:
            path: a store directory, or a ``.npy`` array ``[rows, units]``.
            verify: check each shard's sha256 when it is read.
            on_nonfinite: NaN/Inf in a ``.npy`` array: ``error`` (say the first row and
                column) or ``skip`` (serve the other rows; ``rows()``'s ``sample`` keeps
                each row's index in the file), found in one read here. A store directory
                has none (capture keeps them out); any found in a shard is an error.
        """
        choice("on_nonfinite", on_nonfinite, NONFINITE_MODES, flag="--on-nonfinite")
        check_flag_argument("verify", verify)
        check_store_argument(path)
        path = Path(path)
        if path.suffix.lower() == ".npy" and path.is_file():
            return cls._open_npy(path, on_nonfinite)
        finish_swap_for_reader(path, recover_store, MANIFEST)
        if not path.exists():
            if progress_files(partial_dir(path)):
                raise StoreError(
                    f"'{path}' is an interrupted capture (not complete yet). Finish it with "
                    "`saeatlas capture ... --resume`."
                )
            raise StoreError(
                f"No activation store at '{path}'. Capture one with `saeatlas capture`."
            )
        if not path.is_dir():
            raise StoreError(
                f"'{path}' is neither a store directory nor a .npy file of shape [rows, units]."
            )
        if not (path / MANIFEST).exists():
            if progress_files(partial_dir(path)) or any(path.glob("progress*")):
                # the working folder itself was told to `capture ... --resume`, and that
                # `--out .a.partial` is refused: the output to give is `a`
                own = re.fullmatch(r"\.(.+)\.partial", path.name)
                out = f" --out {path.parent / own[1]}" if own else ""
                who = other_writer(path.parent / own[1]) if own else None
                if who is not None:  # was told it is "interrupted", and to resume it
                    raise StoreError(
                        f"'{path}' is the working folder of a capture of "
                        f"'{path.parent / own[1]}' that {who} is running now; wait for it to "
                        "finish, and open that store."
                    )
                raise StoreError(
                    f"'{path}' is an interrupted capture (no manifest.json yet). Finish it with "
                    f"`saeatlas capture ...{out} --resume`, or capture again with --overwrite."
                )
            raise StoreError(
                f"'{path}' has no manifest.json; it is not a saeatlas store.{what_it_is(path)}"
            )
        identity = dir_identity(path)  # before the manifest: a store replaced after it is refused
        manifest = Manifest.read(path / MANIFEST)
        check_manifest(path, manifest)
        source = ShardSource(path, manifest.shards, verify, identity)
        return cls(path, source, manifest.layers, manifest.dtype, manifest)

    @classmethod
    def _open_npy(cls, path: Path, on_nonfinite: str) -> ActivationStore:
        npy = open_npy(path, on_nonfinite)
        store = cls(path, npy.source, npy.layers, npy.dtype, None)
        store._moments = (npy.mean, npy.std)
        store.n_skipped_rows = npy.n_skipped_rows
        store._npy_sha256 = npy.sha256
        return store

    # -- facts -----------------------------------------------------------------------------

    @property
    def n_rows(self) -> int:
        return self.manifest.n_rows if self.manifest else self._source.n_rows

    @property
    def n_units(self) -> int:
        return self.layers[-1].stop

    @property
    def n_shards(self) -> int:
        return len(self._source)

    @property
    def max_length(self) -> int | None:
        """Tokens per text the capture cut texts to (its provenance), or None: the
        ablation and the loss recovered cut texts the same way."""
        return self.manifest.provenance.get("max_length") if self.manifest else None

    @property
    def output_index(self) -> int | str | None:
        """The element of tuple and dict outputs the capture recorded (its settings'
        ``output_index``), or None for the first tensor: the ablation and the loss
        recovered splice into the same one."""
        job = self.manifest.provenance.get("job") if self.manifest else None
        settings = job.get("settings") if isinstance(job, dict) else None
        index = settings.get("output_index") if isinstance(settings, dict) else None
        return index if isinstance(index, (int, str)) and not isinstance(index, bool) else None

    def digest(self) -> str:
        """sha256 of the activations: of the shards' sha256 (in order) for a store
        directory, of the values (every row, in order, read at open) for a ``.npy``."""
        if self.manifest is None:
            return self._npy_sha256
        h = hashlib.sha256()
        for shard in self.manifest.shards:
            h.update(shard.sha256.encode())
        return h.hexdigest()

    @property
    def mean(self) -> np.ndarray:
        """Per-unit mean (float64); streamed once for ``.npy`` stores."""
        return self._stats()[0]

    @property
    def std(self) -> np.ndarray:
        """Per-unit population standard deviation (float64)."""
        return self._stats()[1]

    def _stats(self) -> tuple[np.ndarray, np.ndarray]:
        assert self._moments is not None  # from the manifest, or from _scan at open
        return self._moments

    def verify(self) -> None:
        """Read every shard, check its sha256 and for NaN/Inf, recompute the per-unit
        mean and standard deviation and compare them with the manifest's, and check that
        ``rows.parquet`` holds one row per activation row, in order, and has the sha256
        the manifest recorded.

        Raises:
            StoreError: a shard or ``rows.parquet`` is missing or corrupt, or the
                statistics disagree.
        """
        if self.manifest is not None:  # a .npy array was read in full at open
            verify_store(self.path, self.manifest, self.n_units, self._source.identity)

    def layer(self, name: str) -> LayerSpec:
        """The layer called ``name``."""
        return find_layer(self.path, self.layers, name)

    def columns(self, layers: Sequence[str] | str | None = None) -> slice | torch.Tensor:
        """Columns of the given layers: a slice when contiguous, else an index tensor."""
        return layer_columns(self.path, self.layers, layers)

    def summary(self) -> StoreSummary:
        if self.manifest is not None:
            n_bytes = sum((self.path / s.file).stat().st_size for s in self.manifest.shards)
            return StoreSummary(
                str(self.path),
                "store",
                self.n_rows,
                self.n_units,
                self.dtype,
                self.n_shards,
                n_bytes,
                self.layers,
                self.manifest.n_nonfinite_rows_skipped,
                self.manifest.provenance,
            )
        return StoreSummary(
            str(self.path),
            "npy",
            self.n_rows,
            self.n_units,
            self.dtype,
            self.n_shards,
            self.path.stat().st_size,
            self.layers,
            self.n_skipped_rows,
            {},
        )

    # -- reading ---------------------------------------------------------------------------

    def row_columns(self) -> list[str]:
        """The names of the per-row metadata columns (:meth:`rows`), without reading them."""
        if self.manifest is None:
            return list(INDEX_COLUMNS)
        try:
            check_readable(self.path / ROWS)
            return list(pq.read_schema(self.path / ROWS).names)
        except (OSError, pa.ArrowInvalid) as e:
            raise rows_unreadable(self.path, e) from e

    def rows(self, columns: Sequence[str] | None = None) -> pa.Table:
        """Per-row metadata (``row``, ``sample``, ``position``, labels...) as a pyarrow Table."""
        columns = row_columns(columns)
        if self.manifest is None:
            n = self.n_rows
            keep = self._source.keep
            sample = np.arange(n) if keep is None else keep.astype(np.int64)
            table = pa.table(
                {"row": np.arange(n), "sample": sample, "position": np.zeros(n, np.int64)}
            )
            check_column_names(table.column_names, columns)  # they were all given back
            return table.select(columns) if columns else table
        want = self.manifest.rows_sha256 if self._source.verify else None
        try:
            st = (self.path / ROWS).stat()
            stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            stamp = None  # read_rows_table says what is wrong
        if stamp is not None and stamp == self._rows_checked:
            want = None  # the file checked before, unchanged since
        table = read_rows_table(self.path, self.n_rows, self._source.identity, columns, want)
        if want is not None:
            self._rows_checked = stamp
        return table

    def read(
        self,
        start: int = 0,
        stop: int | None = None,
        *,
        layers: Sequence[str] | None = None,
        dtype: torch.dtype | str | None = torch.float32,
    ) -> torch.Tensor:
        """Rows ``start:stop`` in order, ``[stop - start, units]``. Loads only the shards needed.
        ``dtype``: a floating torch dtype or its name (``"float16"``), or None for the
        stored one."""
        dtype = read_dtype(dtype)
        start = whole_number("start", start)
        stop = self.n_rows if stop is None else min(whole_number("stop", stop), self.n_rows)
        if not 0 <= start <= stop:
            raise ConfigError(f"Bad row range {start}:{stop} for a store of {self.n_rows} rows.")
        cols = self.columns(layers)
        parts, offset = [], 0
        for i in range(self.n_shards):
            n = self._source.rows(i)
            if offset + n > start and offset < stop:
                x = self._source.load(i)[max(0, start - offset) : stop - offset, cols]
                parts.append(x)
            offset += n
        out = torch.cat(parts) if parts else torch.empty(0, self._width(cols))
        return out.to(dtype) if dtype is not None else out.contiguous()

    def _width(self, cols: slice | torch.Tensor) -> int:
        return cols.stop - cols.start if isinstance(cols, slice) else len(cols)

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        layers: Sequence[str] | None = None,
        drop_last: bool = False,
        dtype: torch.dtype | str | None = torch.float32,
        reuse_memory: bool = False,
        start_batch: int = 0,
        stop_row: int | None = None,
        part: tuple[int, int] = (0, 1),
    ) -> Iterator[torch.Tensor]:
        """Batches ``[batch_size, units]`` that visit every row exactly once.

        With ``shuffle``, shards are visited in a seeded random order and each
        batch is a uniform random draw from a pool of the current shard plus up
        to one shard's worth of rows left over from earlier shards, so rows of
        different shards mix. The "shards" here are blocks of the capture's
        ``shard_rows`` rows in row order (:func:`.readers.block_rows`), which are its files
        when one process wrote them: a ``torchrun`` capture's store is drawn from
        as one process's is. The order of rows inside a batch carries no
        meaning. Without it, rows come in storage order. Memory: the pool, the
        next shard (read and checked by a background thread while batches are
        served) and the batch.

        Args:
            batch_size: rows per batch; the last batch may be smaller unless ``drop_last``.
            shuffle: random order (seeded by ``seed`` and ``epoch``) or storage order.
            layers: names of the layers whose columns to return; all by default.
            dtype: dtype of the batches (``None`` keeps the stored dtype).
            reuse_memory: shuffled batches are written into two alternating
                buffers, so a batch is overwritten two batches later. Several
                times faster (fresh memory costs a page fault per 4 KiB); for
                loops that are done with a batch before asking for the one after
                next, as a training loop is.
            start_batch: skip this many batches of the epoch without gathering
                them (the same order otherwise), to resume mid-epoch.
            stop_row: serve only rows before this one (the rest is held out).
            part: ``(rank, world)``: gather only this rank's share of each batch
                (for data-parallel training: the shares of all ranks make up the
                batch one process would get).
        """
        # `shuffle="no"` shuffled (read by its truth), as did `drop_last` and `reuse_memory`
        check_flag_arguments(shuffle=shuffle, drop_last=drop_last, reuse_memory=reuse_memory)
        batch_size = whole_number("batch_size", batch_size, low=1)
        seed, epoch = whole_number("seed", seed, low=-(2**63)), whole_number("epoch", epoch)
        start_batch = whole_number("start_batch", start_batch)
        part, dtype = read_part(part), read_dtype(dtype)
        if stop_row is not None:
            stop_row = whole_number("stop_row", stop_row, low=-(2**63))
        stop_row = self.n_rows if stop_row is None else min(stop_row, self.n_rows)
        if stop_row <= 0:
            raise ConfigError(
                f"No rows to read: `stop_row` is {stop_row} (the store has {self.n_rows} rows)."
            )
        starts = np.cumsum([0] + [self._source.rows(i) for i in range(self.n_shards)])
        eligible = [i for i in range(self.n_shards) if starts[i] < stop_row]
        read = ReadPlan(self, self.columns(layers), starts, stop_row, batch_size, start_batch)
        read.block_rows = block_rows(self) if shuffle else 0
        if read.block_rows:
            eligible = list(range(-(-stop_row // read.block_rows)))
        if shuffle:
            # torch takes seeds below 2**64; the modulo keeps every smaller one as it was
            g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
            order = [eligible[j] for j in torch.randperm(len(eligible), generator=g).tolist()]
            batches = read.shuffled(order, g, part, reuse_memory)
        else:
            batches = read.in_order(eligible, part)
        for b, full in batches:
            if drop_last and full < batch_size:
                continue
            yield b.to(dtype) if dtype is not None else b
