"""``CaptureConfig``: how activations are recorded and stored."""

from __future__ import annotations

from dataclasses import dataclass

from .._validation import check_device, check_types, choice, positive
from ..store.shards import STORE_DTYPES
from ..store.store import NONFINITE_MODES
from .layouts import parse_layout
from .rows import SPATIAL_MODES


@dataclass(frozen=True)
class CaptureConfig:
    """How activations are recorded and stored."""

    batch_size: int = 32
    """Samples per forward pass (for array and text inputs)."""
    spatial: str = "positions"
    """Conv maps ``[batch, C, H, W]``: ``positions`` (a row per position) or ``mean`` (pooled)."""
    output_index: int | str | None = None
    """Which element of a tuple/dict output to record; the first tensor by default."""
    device: str | None = None
    """Device to run the model on (``cpu``, ``cuda``...); the model's own by default."""
    dtype: str | None = None
    """Dtype to run the model in (``float32``, ``float16``, ``bfloat16``); unchanged by default."""
    store_dtype: str = "float32"
    """Dtype of the stored activations."""
    shard_rows: int | None = None
    """Rows per shard; about 64 MiB per shard by default."""
    on_nonfinite: str = "error"
    """NaN/Inf in a row: ``error`` (stop and say where) or ``skip`` (drop the row, count it)."""
    max_length: int | None = None
    """Truncate texts, and arrays of integer token ids ``[n, seq]``, to this many tokens;
    for texts by default the tokenizer's limit, or the model's positions (its config's)
    when the tokenizer sets none. Other inputs refuse it."""
    early_stop: bool = True
    """Stop each forward pass once every recorded module has run (but the first batch's,
    which runs whole: a recorded module that runs again later is an error either way)."""
    layout: str | None = None
    """What the axes of 4-D outputs are when neither their module nor their hook name
    says: ``image`` [batch, C, H, W], ``heads`` [batch, pos, head, d_head] or ``pattern``
    [batch, head, q_pos, k_pos]; ``LAYER=LAYOUT`` (comma-separated) for some layers."""
    timeout_s: float = 1800.0
    """Under torchrun: seconds a rank waits for the others where they meet (opening the
    store, the end of each rank's share) before it stops with an error."""

    def __post_init__(self) -> None:
        check_types(self)
        positive(self, "batch_size", "shard_rows", "max_length", "timeout_s")
        choice("spatial", self.spatial, SPATIAL_MODES)
        choice("on_nonfinite", self.on_nonfinite, NONFINITE_MODES)
        choice("store_dtype", self.store_dtype, STORE_DTYPES)
        if self.dtype is not None:
            choice("dtype", self.dtype, STORE_DTYPES)
        check_device("device", self.device, flag="--device")
        parse_layout(self.layout)
