"""Activation stores: safetensors shards + ``manifest.json`` + ``rows.parquet``."""

from .manifest import LayerSpec, Manifest, ShardInfo
from .progress import ResumePoint
from .stats import RunningMoments
from .store import ActivationStore, StoreSummary
from .writer import StoreWriter

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
