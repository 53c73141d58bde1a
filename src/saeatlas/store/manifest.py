"""``manifest.json``: the description of an activation store (DESIGN.md, "File formats").

The manifest is written last; a directory without one is an incomplete store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import known_keys
from ..errors import ConfigError, StoreError

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
)


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
    """How outputs became rows: ``sample``, ``token``, ``position`` or ``pooled``."""

    @property
    def n_units(self) -> int:
        return self.stop - self.start

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LayerSpec:
        try:
            return cls(
                name=str(d["name"]),
                start=int(d["start"]),
                stop=int(d["stop"]),
                shape=tuple(d.get("shape", ())),
                layout=str(d.get("layout", "sample")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise StoreError(f"Bad layer entry {d!r}: needs `name`, `start`, `stop`.") from e


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
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = "manifest.json") -> Manifest:
        if not isinstance(d, dict):
            raise StoreError(f"'{where}' is not a valid saeatlas manifest: not a JSON object.")
        try:
            known_keys("manifest keys", d, MANIFEST_KEYS)
            version = int(d["format_version"])
            if version > FORMAT_VERSION:
                raise StoreError(
                    f"'{where}' has format_version {version}; this saeatlas reads up to "
                    f"{FORMAT_VERSION}. Upgrade saeatlas."
                )
            return cls(
                format_version=version,
                n_rows=int(d["n_rows"]),
                n_units=int(d["n_units"]),
                dtype=str(d["dtype"]),
                layers=tuple(LayerSpec.from_json(x) for x in d["layers"]),
                shards=tuple(
                    ShardInfo(str(s["file"]), int(s["rows"]), str(s["sha256"])) for s in d["shards"]
                ),
                mean=np.asarray(d["mean"], dtype=np.float64),
                std=np.asarray(d["std"], dtype=np.float64),
                n_nonfinite_rows_skipped=int(d.get("n_nonfinite_rows_skipped", 0)),
                provenance=dict(d.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, StoreError):
                raise
            why = str(e) if isinstance(e, ConfigError) else repr(e)
            raise StoreError(f"'{where}' is not a valid saeatlas manifest: {why}") from e

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            d = json.loads(Path(path).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StoreError(f"'{path}' is not valid JSON ({e}); the store is corrupt.") from e
        except OSError as e:
            raise StoreError(f"'{path}' cannot be read ({e.strerror}).") from None
        return cls.from_json(d, where=str(path))


def validate_layers(layers: list[LayerSpec] | tuple[LayerSpec, ...], n_units: int) -> None:
    """Layers must tile columns ``0..n_units`` in order without gaps or overlaps."""
    pos = 0
    for layer in layers:
        if layer.start != pos or layer.stop <= layer.start:
            raise StoreError(
                f"Layer '{layer.name}' covers columns {layer.start}:{layer.stop}, expected to start "
                f"at {pos}. Layer ranges must tile the columns in order."
            )
        pos = layer.stop
    if layers and pos != n_units:
        raise StoreError(f"Layers cover {pos} columns but the activations have {n_units}.")


def _layer_width_fits(layer: LayerSpec) -> bool:
    """A layer's column count agrees with its recorded output shape: all of a
    sample's values (``sample``), or one channel axis (tokens, positions, pooled)."""
    dims = [d for d in layer.shape[1:]]
    if not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
        return True  # no shape recorded (a .npy's layers.json may leave it out)
    if layer.layout == "sample":
        return int(np.prod(dims)) == layer.n_units
    return layer.n_units in (dims[0], dims[-1])


def check_manifest(root: Path, m: Manifest) -> None:
    """A manifest must agree with itself and with its shards' headers: dtype, rows and
    units of every shard, layers that tile the columns and fit their recorded
    shapes, one mean and one std per unit. Reads only the shards' headers."""
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
    validate_layers(m.layers, m.n_units)
    for layer in m.layers:
        if not _layer_width_fits(layer):
            raise StoreError(
                f"{where}: layer '{layer.name}' has columns {layer.start}:{layer.stop} "
                f"({layer.n_units} units) but its recorded shape {list(layer.shape)} does not "
                "have that many; the layer map is corrupt. Recapture the store."
            )
    for name in ("mean", "std"):
        v = getattr(m, name)
        if v.shape != (m.n_units,) or not np.isfinite(v).all() or (name == "std" and (v < 0).any()):
            raise StoreError(
                f"{where}: `{name}` must hold {m.n_units} finite values (one per unit), it has "
                f"{v.size}{'' if np.isfinite(v).all() else ' with NaN/Inf'}. Recapture the store."
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
