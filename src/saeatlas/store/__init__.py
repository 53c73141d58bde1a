"""Activation stores: safetensors shards + ``manifest.json`` + ``rows.parquet``."""

from .describe import StoreSummary
from .manifest import LayerSpec, Manifest, ShardInfo
from .progress import ResumePoint
from .stats import RunningMoments
from .store import ActivationStore
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
