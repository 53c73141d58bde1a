"""``manifest.json``: the description of an activation store (README, "The activation store").

The manifest is written last; a directory without one is an incomplete store.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import known_keys, shown, strict_json
from ..errors import StoreError
from .atomic import special_kind

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS = "rows.parquet"
MANIFEST_KEYS = (
    "format_version",
    "n_rows",
    "n_units",
    "dtype",
    "layers",
    "shards",
    "n_nonfinite_rows_skipped",
    "provenance",
    "mean",
    "std",
    "rows_sha256",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_MISSING = object()


def _typed(d: Any, key: str, kind: type, default: Any = _MISSING) -> Any:
    """``d[key]``, which must be a ``kind`` (an int is not a bool, and no text is
    read as a number): a manifest is written by saeatlas, so any other type is damage."""
    if not isinstance(d, dict):
        raise TypeError(f"expected an object, got {type(d).__name__}")
    if key not in d:
        if default is _MISSING:  # was a KeyError, shown as "KeyError('format_version')"
            raise TypeError(f"`{key}` is missing")
        return default
    v = d[key]
    if kind is int and not _is_int(v) or kind is not int and not isinstance(v, kind):
        raise TypeError(f"`{key}` must be {kind.__name__}, got {v!r}")
    return v


#: How a layer's outputs became rows: one row per sample (``sample``), per token
#: (``token``), per token with the heads side by side (``head``), per query position
#: of an attention pattern (``pattern``), per spatial position (``position``), or
#: one per sample pooled over positions (``pooled``).
ROW_LAYOUTS = ("sample", "token", "head", "pattern", "position", "pooled")


@dataclass(frozen=True)
class LayerSpec:
    """Where one layer's units sit in a store's rows."""

    name: str
    """Hook point name (``model.named_modules()`` path, maybe with ``:input``)."""
    start: int
    """First column of this layer."""
    stop: int
    """One past the last column of this layer."""
    shape: tuple[int | None, ...] = ()
    """Shape of the layer's output as first seen, batch dimension as ``None``."""
    layout: str = "sample"
    """How outputs became rows: one of :data:`ROW_LAYOUTS`."""

    @property
    def n_units(self) -> int:
        return self.stop - self.start

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerSpec:
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in d if k not in known) if isinstance(d, dict) else []
        if unknown:  # a misspelt `layout` ("layuot") read the layer as one row per sample
            raise StoreError(
                f"The layer entry {shown(d)} has the key(s) {unknown}, which a layer entry does "
                f"not have; its keys are {known}. Fix the spelling, or remove them."
            )
        try:
            shape = _typed(d, "shape", object, ())
            if not isinstance(shape, (list, tuple)) or not all(
                s is None or _is_int(s) for s in shape
            ):
                raise TypeError("`shape` must be a list of integers (or null)")
            layout = _typed(d, "layout", str, "sample")
            if layout not in ROW_LAYOUTS:
                raise ValueError(f"`layout` {layout!r} is none of {list(ROW_LAYOUTS)}")
            return cls(
                name=_typed(d, "name", str),
                start=_typed(d, "start", int),
                stop=_typed(d, "stop", int),
                shape=tuple(shape),
                layout=layout,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(
                f"Bad layer entry {d!r}: needs `name` (text), `start` and `stop` (integers) "
                f"and, when given, a known `layout` ({e})."
            ) from e


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything a reader needs to know about a store, as stored in ``manifest.json``."""

    n_rows: int
    n_units: int
    dtype: str
    layers: tuple[LayerSpec, ...]
    shards: tuple[ShardInfo, ...]
    mean: np.ndarray
    std: np.ndarray
    n_nonfinite_rows_skipped: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    rows_sha256: str | None = None
    """sha256 of ``rows.parquet`` (None in stores written before it was recorded)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "n_rows": self.n_rows,
            "n_units": self.n_units,
            "dtype": self.dtype,
            "layers": [layer.to_json() for layer in self.layers],
            "shards": [asdict(s) for s in self.shards],
            "n_nonfinite_rows_skipped": self.n_nonfinite_rows_skipped,
            "provenance": self.provenance,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            **({} if self.rows_sha256 is None else {"rows_sha256": self.rows_sha256}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "manifest.json") -> Manifest:
        if not isinstance(d, dict):
            raise StoreError(f"'{where}' is not a valid saeatlas manifest: not a JSON object.")
        try:
            known_keys("manifest keys", d, MANIFEST_KEYS)
            version = _typed(d, "format_version", int)
            if version < 1:
                raise TypeError(f"`format_version` must be 1 or more, got {version}")
            if version > FORMAT_VERSION:
                raise StoreError(
                    f"'{where}' has format_version {version}; this saeatlas reads up to "
                    f"{FORMAT_VERSION}. Upgrade saeatlas."
                )
            for key in ("layers", "shards", "mean", "std"):
                _typed(d, key, list)
            if not all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in d["mean"] + d["std"]
            ):
                raise TypeError("`mean` and `std` must be lists of numbers")
            return cls(
                format_version=version,
                n_rows=_typed(d, "n_rows", int),
                n_units=_typed(d, "n_units", int),
                dtype=_typed(d, "dtype", str),
                layers=tuple(LayerSpec.from_json(x) for x in d["layers"]),
                shards=tuple(
                    ShardInfo(
                        _typed(s, "file", str), _typed(s, "rows", int), _typed(s, "sha256", str)
                    )
                    for s in d["shards"]
                ),
                mean=np.asarray(d["mean"], dtype=np.float64),
                std=np.asarray(d["std"], dtype=np.float64),
                n_nonfinite_rows_skipped=_typed(d, "n_nonfinite_rows_skipped", int, 0),
                provenance=_typed(d, "provenance", dict, {}),
                rows_sha256=_typed(d, "rows_sha256", str, None),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, StoreError):
                raise
            # in plain words, not Python's (`TypeError("`n_rows` must be int, got '300'")`)
            raise StoreError(
                f"'{where}' is not a valid saeatlas manifest: {str(e).rstrip('.')}; recapture the "
                "store (or restore the file)."
            ) from e

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            # a key given twice was read last-wins; a number of 5000 digits (ValueError)
            # and [[[[...]]]] nested past Python's stack ended in a traceback
            check_readable(path)
            d = strict_json(Path(path).read_text(), MANIFEST)
        except ValueError as e:  # bad JSON or UTF-8, as well
            raise StoreError(f"'{path}' is not valid JSON ({e}); the store is corrupt.") from None
        except OSError as e:
            raise StoreError(f"'{path}' cannot be read ({e.strerror}).") from None
        return cls.from_json(d, where=str(path))


def check_readable(path: Path) -> None:
    """Refuse a named pipe, a socket or a device at the store file ``path``: reading one
    waited for a writer forever (`info` of a store whose shard was a named pipe hung)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise StoreError(
            f"'{path}' is {special_kind(mode)}, not a file, and reading it would wait for a "
            "writer; restore the file, or recapture the store."
        )


def file_sha256(path: Path) -> str:
    """The sha256 of the file at ``path``, read in 1 MiB blocks."""
    check_readable(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def provenance_fault(provenance: dict[str, Any]) -> str:
    """What in a store's ``provenance`` its readers cannot use (a clause: "`max_length`
    'abc' in its provenance, which ..."), or "" when nothing. Readers check a manifest
    with it, and :class:`~.writer.StoreWriter` its arguments, so it writes no store that
    its readers refuse."""
    # read by `info`, and by the ablation and the loss recovered, which cut texts as the
    # capture did: 'abc' or 1.5 ended them in the tokenizer's TypeError, 0 in torch's
    for key, least in (("max_length", 1), ("n_texts_cut", 0)):
        v = provenance.get(key)
        if v is not None and not (type(v) is int and least <= v < 2**63):
            return (
                f"`{key}` {shown(v)} in its provenance, which is no whole number of at "
                f"least {least}"
            )
    job = provenance.get("job")  # the capture's fingerprints: a resume and the ablation
    kinds = {"settings": dict, "layers": list}  # read them (`settings` [1]: AttributeError)
    bad = (
        [f"`job` {shown(job)}"]
        if job is not None and not isinstance(job, dict)
        else [
            f"`job.{k}` {shown(v)}"
            for k, v in (job or {}).items()
            if not isinstance(v, kinds.get(k, (str, type(None))))
        ]
    )
    if bad:
        return (
            f"{bad[0]} in its provenance, not what its capture wrote (fingerprints as text, "
            "`settings` an object, `layers` a list)"
        )
    return ""


def validate_layers(layers: list[LayerSpec] | tuple[LayerSpec, ...], n_units: int) -> None:
    """Layers must tile columns ``0..n_units`` in order without gaps or overlaps."""
    pos = 0
    twice = sorted(name for name, n in Counter(layer.name for layer in layers).items() if n > 1)
    if twice:
        raise StoreError(f"Layers {twice} are listed more than once; each layer has one range.")
    for layer in layers:
        if not layer.name.strip():  # no flag, layer map or table could name it
            raise StoreError(
                f"A layer (columns {layer.start}:{layer.stop}) has the name "
                f"{layer.name!r}; give every layer a name."
            )
        if layer.start != pos or layer.stop <= layer.start:
            # "expected to start at 0" of a layer 0:0 that starts at 0 named no fault
            fault = (
                f"expected to start at {pos}"
                if layer.start != pos
                else "which is no column (its `stop` must be above its `start`)"
            )
            raise StoreError(
                f"Layer '{layer.name}' covers columns {layer.start}:{layer.stop}, {fault}. Layer "
                "ranges must tile the columns in order."
            )
        if not layer_width_fits(layer):
            raise StoreError(
                f"Layer '{layer.name}' has columns {layer.start}:{layer.stop} ({layer.n_units} "
                f"units) but its `shape` {list(layer.shape)} does not have that many."
            )
        pos = layer.stop
    if layers and pos != n_units:
        raise StoreError(f"Layers cover {pos} columns but the activations have {n_units}.")


def layer_width_fits(layer: LayerSpec) -> bool:
    """A layer's column count agrees with its recorded output shape: all of a
    sample's values (``sample``), heads x head width (``head``, ``[batch, pos, head,
    d_head]``), heads x keys (``pattern``, ``[batch, head, q, k]``), or one channel
    axis (tokens, positions, pooled)."""
    dims = [d for d in layer.shape[1:]]
    if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
        return True  # no shape recorded (a .npy's layers.json may leave it out)
    if layer.layout == "sample":
        return int(np.prod(dims)) == layer.n_units
    if layer.layout == "head" and len(dims) == 3:
        return dims[1] * dims[2] == layer.n_units
    if layer.layout == "pattern" and len(dims) == 3:
        return dims[0] * dims[2] == layer.n_units
    return layer.n_units in (dims[0], dims[-1])


def _shard_order(file: str) -> tuple[int, int] | None:
    """(rank, index) of a shard named as the capture names them, or None."""
    found = re.fullmatch(r"shard-(?:r(\d+)-)?(\d+)\.safetensors", file)
    return (int(found.group(1) or 0), int(found.group(2))) if found else None


def check_manifest(root: Path, m: Manifest) -> None:
    """A manifest must agree with itself and with its shards' headers: dtype, rows and
    units of every shard, layers that tile the columns and fit their recorded
    shapes, one mean and one std per unit. Reads only the shards' headers."""
    from .job_layers import job_layers_fault
    from .shards import STORE_DTYPES, read_header

    where = f"'{root / MANIFEST}'"
    if m.dtype not in STORE_DTYPES:
        raise StoreError(
            f"{where} has unknown dtype {m.dtype!r}; expected one of {list(STORE_DTYPES)}."
        )
    if m.n_rows <= 0 or m.n_units <= 0 or not m.shards:
        raise StoreError(f"{where} describes an empty store ({m.n_rows} rows); recapture it.")
    if sum(s.rows for s in m.shards) != m.n_rows:
        raise StoreError(f"{where} is inconsistent: its shards' rows do not add up to `n_rows`.")
    twice = sorted(f for f, n in Counter(s.file for s in m.shards).items() if n > 1)
    if twice:
        raise StoreError(f"{where} lists shard {twice[0]!r} twice; the store is corrupt.")
    # the capture lists its shards in the order of their names (rank by rank): two swapped
    # by hand passed every check, their rows read under other rows' labels in rows.parquet
    keys = [_shard_order(s.file) for s in m.shards]
    if None not in keys and keys != sorted(keys):
        at = next(i for i in range(1, len(keys)) if keys[i] < keys[i - 1])
        raise StoreError(
            f"{where} lists shard {m.shards[at].file!r} after {m.shards[at - 1].file!r}: its "
            "rows would be read out of the order of rows.parquet. List the shards in the "
            "order of their names, or recapture the store."
        )
    if m.n_nonfinite_rows_skipped < 0:
        raise StoreError(f"{where} has a negative `n_nonfinite_rows_skipped`; it is corrupt.")
    if not m.layers:
        raise StoreError(f"{where} lists no layers; its layer map is corrupt. Recapture the store.")
    try:
        validate_layers(m.layers, m.n_units)
    except StoreError as e:
        raise StoreError(f"{where}: {e} The layer map is corrupt; recapture the store.") from None
    fault = provenance_fault(m.provenance) or job_layers_fault(m.provenance, m.layers)
    if fault:
        raise StoreError(f"{where} records {fault}; restore it, or recapture the store.")
    for name in ("mean", "std"):
        v = getattr(m, name)
        if v.shape != (m.n_units,) or not np.isfinite(v).all() or (name == "std" and (v < 0).any()):
            what = " with NaN/Inf" if not np.isfinite(v).all() else ""
            if not what and name == "std" and (v < 0).any():  # was "it has 10." of 10
                what = f" with a negative one (unit {int(np.argmax(v < 0))})"
            raise StoreError(
                f"{where}: `{name}` must hold {m.n_units} finite values (one per unit"
                f"{', none negative' if name == 'std' else ''}), it has {v.size}{what}. "
                "Recapture the store."
            )
    expected = STORE_DTYPES[m.dtype]
    for s in m.shards:
        if Path(s.file).name != s.file or not s.file.endswith(".safetensors"):
            raise StoreError(f"{where} lists a shard file {s.file!r} outside the store.")
        dtype, shape = read_header(root / s.file)
        if dtype != expected or shape != [s.rows, m.n_units]:
            raise StoreError(
                f"Shard '{s.file}' holds {str(dtype).replace('torch.', '')} {shape}, but {where} "
                f"says {m.dtype} [{s.rows}, {m.n_units}]; the store is corrupt. Recapture it."
            )
