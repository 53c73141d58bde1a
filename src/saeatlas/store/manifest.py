"""``manifest.json``: the description of an activation store (README, "The activation store").

The manifest is written last; a directory without one is an incomplete store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ROWS = "rows.parquet"


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
        except (KeyError, TypeError, ValueError) as e:
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
        try:
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
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"'{where}' is not a valid saeatlas manifest: {e!r}.") from e

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"'{path}' is not valid JSON ({e}); the store is corrupt.") from e
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
