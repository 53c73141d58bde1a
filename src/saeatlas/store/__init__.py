"""Activation stores: safetensors shards + ``manifest.json`` + ``rows.parquet``."""

from .manifest import LayerSpec, Manifest, ShardInfo
from .stats import RunningMoments
from .store import ActivationStore, StoreSummary
from .writer import ResumePoint, StoreWriter

__all__ = [
    "ActivationStore",
    "LayerSpec",
    "Manifest",
    "ResumePoint",
    "RunningMoments",
    "ShardInfo",
    "StoreSummary",
    "StoreWriter",
]
