"""One input batch's rows as the store takes them: their metadata columns, the
layers' column ranges, rows with NaN/Inf stopped at or left out, and the units a
half-precision store rounds to constants."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import NonFiniteError, ShapeError
from ..store import LayerSpec
from ..store.writer import StoreWriter
from .inputs import InputBatch
from .rows import LayerRows


def row_meta(batch: InputBatch, rows: LayerRows, sample_base: int) -> dict[str, np.ndarray]:
    """The metadata columns of ``rows`` (``sample``, ``position``, and the ``label``,
    ``text`` and ``token`` the batch knows); its samples are numbered from ``sample_base``."""
    local = rows.sample.numpy()
    position = rows.position.numpy()
    meta: dict[str, np.ndarray] = {
        "sample": (local + sample_base).astype(np.int64),
        "position": position.astype(np.int64),
    }
    if batch.labels is not None:
        meta["label"] = np.asarray(batch.labels)[local]
    if batch.texts is not None:
        meta["text"] = np.array([batch.texts[i] for i in local], dtype=object)
    if batch.tokens is not None:
        meta["token"] = np.array(
            [batch.tokens[i][p] for i, p in zip(local, position)], dtype=object
        )
    return meta


def layer_specs(rows: dict[str, LayerRows], shapes: dict[str, tuple[int, ...]]) -> list[LayerSpec]:
    """The layers' column ranges in the store, in the order of ``rows``."""
    specs, start = [], 0
    for name, r in rows.items():
        n = r.x.shape[1]
        if n == 0:
            raise ShapeError(
                f"Layer '{name}' gives no units (output shape {list(shapes[name])}), so it has "
                "nothing to record. Choose a layer whose outputs have units."
            )
        specs.append(LayerSpec(name, start, start + n, (None, *shapes[name][1:]), r.layout))
        start += n
    return specs


def check_widths(rows: dict[str, LayerRows], specs: list[LayerSpec], where: str) -> None:
    """Each layer gives rows of the same layout and as many units per row as in the
    first batch: the store's columns are fixed (two layers changing width in opposite
    ways would keep the total), and so is what a row is (a layer giving [batch, d] in
    the first batch and [batch, seq, d] later was stored as one row per sample and per
    token mixed, under the first batch's layout)."""
    for spec, (name, r) in zip(specs, rows.items()):
        if r.layout != spec.layout:
            first = ", ".join("batch" if d is None else str(d) for d in spec.shape)
            raise ShapeError(
                f"Layer '{name}' gives rows of layout '{r.layout}' in {where}, but of layout "
                f"'{spec.layout}' in the first batch (output shape [{first}]): its output "
                "changed rank or form between batches, and a store's rows must be one kind "
                "in every batch. Give inputs on which the layer keeps the form of its output, "
                "or record a module that does."
            )
        if r.x.shape[1] != spec.n_units:
            raise ShapeError(
                f"Layer '{name}' gives {r.x.shape[1]} units per row in {where}, but gave "
                f"{spec.n_units} in the first batch; a store's columns are fixed. Give inputs "
                "on which the model's layers keep their width, or capture such batches into "
                "separate stores."
            )


def handle_nonfinite(
    parts: list[torch.Tensor],
    meta: dict[str, np.ndarray],
    layers: list[LayerSpec],
    mode: str,
    batch: int,
    first_row: int,
    store_dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], dict[str, np.ndarray], int]:
    """Check rows (the layers' column blocks ``parts``, ``[rows, units]`` each, on the
    model's device) for NaN/Inf, and for finite values beyond the range of
    ``store_dtype``, which would be stored as Inf (float16 ends at 65504); return
    their good rows (``parts`` as they are when every value is good), the metadata
    of those rows and the number left out."""
    limit = torch.finfo(store_dtype).max
    # One reduction per block and no mask: the extremes are within the range only if
    # every value is, and NaN propagates to them. A value is good when the store's dtype
    # holds it as a finite number: 65510 rounds to float16's 65504 as any value rounds,
    # but was refused (or its row dropped as NaN/Inf with `skip`); 65520 rounds to Inf.
    ends = [torch.stack(torch.aminmax(p)) for p in parts if p.numel()]
    if all(bool(torch.isfinite(e.to(store_dtype)).all()) for e in ends):
        return parts, meta, 0
    x = torch.cat(parts, dim=1).to("cpu") if len(parts) > 1 else parts[0].to("cpu")
    good = torch.isfinite(x.to(store_dtype))  # False for NaN, Inf and values that overflow
    good_rows = good.all(dim=1)
    if mode == "error":
        for layer in layers:
            name = layer.name
            bad = ~good[:, layer.start : layer.stop]
            if bad.any():
                first = int(torch.nonzero(bad.any(dim=1))[0])
                n_big = int((bad & torch.isfinite(x[:, layer.start : layer.stop])).sum())
                wider = (
                    "store a wider --store-dtype (`store_dtype`) or "
                    if store_dtype != torch.float32
                    else ""
                )
                what = (  # float32 is the widest store: no wider one to advise
                    f"values that {str(store_dtype).removeprefix('torch.')} cannot hold ({n_big} "
                    f"finite but beyond +-{limit:.6g}, the others NaN/Inf; {wider}scale them "
                    "down)"
                    if n_big
                    else "NaN/Inf values"
                )
                raise NonFiniteError(
                    f"Layer '{name}' has {int(bad.sum())} {what} in "
                    f"{int(bad.any(dim=1).sum())} rows of input batch {batch}; the first is at "
                    f"row {first_row + first} (sample {int(meta['sample'][first])}, position {int(meta['position'][first])}). "
                    "Fix the model or inputs, or pass --on-nonfinite skip (`on_nonfinite='skip'`) "
                    "to drop such rows and count them."
                )
    keep = good_rows.numpy()
    return [x[good_rows]], {k: v[keep] for k, v in meta.items()}, int((~keep).sum())


class StoreRounding:
    """Per-unit range of the rows before the store rounds them, to name the units that
    rounding leaves constant (a unit of 1e4 +- 1 is 10000 in float16, one of 1e-300 is
    0 in float32): their spread is lost without an error. Kept for a float16 or bfloat16
    store, and for a float32 one of a layer that gives float64. The range is the
    ``writer``'s (:attr:`~saeatlas.store.writer.StoreWriter.value_range`), committed
    with its shards, so that it covers the rows of the whole store after a ``--resume``
    too."""

    def __init__(self, store_dtype: torch.dtype, writer: StoreWriter) -> None:
        self.half = store_dtype in (torch.float16, torch.bfloat16)
        self.dtype = str(store_dtype).removeprefix("torch.")
        self.writer = writer

    def update(self, parts: list[torch.Tensor]) -> None:
        """Take one batch's rows (the layers' blocks ``[rows, units]``, as the layers gave
        them, before the store's dtype)."""
        wide = any(p.dtype == torch.float64 for p in parts)
        if not (self.half or wide) or not parts or not parts[0].shape[0]:
            return
        # in float64 when a layer gives it: its range in float32 was the rounded one
        x = torch.cat([p.to(torch.float64 if wide else torch.float32) for p in parts], dim=1)
        lo, hi = torch.aminmax(x, dim=0)
        if self.writer.value_range is not None:  # new tensors: the committed ones stay
            old_lo, old_hi = (torch.as_tensor(v, device=x.device) for v in self.writer.value_range)
            lo, hi = torch.minimum(old_lo, lo), torch.maximum(old_hi, hi)
        self.writer.value_range = (lo, hi)

    def warn_constant(self, layers: tuple[LayerSpec, ...], std: np.ndarray) -> None:
        """Warn about units that varied in the rows taken but whose stored values do not
        (``std``: the store's per-unit standard deviation)."""
        if self.writer.value_range is None:
            return
        lo, hi = (np.asarray(torch.as_tensor(v).cpu()) for v in self.writer.value_range)
        lost = np.flatnonzero((hi > lo) & (std == 0))
        if not len(lost):
            return
        u = int(lost[0])
        layer = next(l for l in layers if l.start <= u < l.stop)
        fix = (
            "Capture with --store-dtype float32 (`store_dtype`) to keep them."
            if self.half
            else "Record a module that scales or centres them into float32's range and "
            "precision (about 7 digits, nothing below 1.4e-45)."
        )
        warnings.warn(
            f"{len(lost)} units vary in the captured activations but are constant in the "
            f"{self.dtype} store (the first, unit {u - layer.start} of layer '{layer.name}', "
            f"went from {lo[u]:.7g} to {hi[u]:.7g}, which {self.dtype} rounds to one value): "
            f"training treats them as constant. {fix}",
            stacklevel=3,
        )
