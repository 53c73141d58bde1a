"""The tensor a module's output holds: which one is recorded (:func:`select_tensor`:
tuple, list, dict and dataclass outputs, Hugging Face ``ModelOutput`` among them, give
their first tensor, or the one at ``output_index``), and putting one back in its place
(:func:`replace_tensor`, for the ablation and the loss recovered)."""

from __future__ import annotations

import copy as copy_module
import dataclasses
from typing import Any

import torch

from ..errors import ShapeError


def select_tensor(output: Any, name: str, output_index: int | str | None = None) -> torch.Tensor:
    """The tensor to record from a module's output (or input)."""
    t = _select(output, name, output_index)
    if t.is_nested:  # its sizes are no numbers: "NestedTensorImpl doesn't support sizes"
        raise ShapeError(
            f"Layer '{name}' gives a nested tensor (sequences of their own lengths, as torch's "
            "nn.TransformerEncoder packs them in eval mode when given a padding mask), which "
            "saeatlas cannot read as rows. Build the encoder with enable_nested_tensor=False, "
            "and give the mask as `attention_mask` too (its padding rows are then dropped)."
        )
    return t


def _select(output: Any, name: str, output_index: int | str | None) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    packed = torch.nn.utils.rnn.PackedSequence  # a tuple of tensors: its data [tokens, d]
    first = output[0] if isinstance(output, (tuple, list)) and output else None
    if isinstance(output, packed) or (isinstance(first, packed) and output_index in (None, 0)):
        # read as "a tuple that holds no tensor", or its data as [batch, d]
        raise ShapeError(
            f"Layer '{name}' gives a PackedSequence (the tokens of sequences of their own "
            "lengths in one tensor, as an RNN given pack_padded_sequence returns), which "
            "saeatlas cannot read as rows per sample. Record a module after "
            "pad_packed_sequence, or give the RNN padded batches."
        )
    items: list[tuple[Any, Any]]
    if isinstance(output, dict):
        items = list(output.items())
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        items = [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        items = list(enumerate(output))
    else:
        raise ShapeError(f"Layer '{name}' gives a {type(output).__name__}, not a tensor.")
    if output_index is not None:
        for key, value in items:
            if key == output_index and isinstance(value, torch.Tensor):
                return value
        keys = [k for k, v in items if isinstance(v, torch.Tensor)]
        raise ShapeError(
            f"Layer '{name}' has no tensor at `output_index` {output_index!r}; tensors are at {keys}."
        )
    for _, value in items:
        if isinstance(value, torch.Tensor):
            return value
    raise ShapeError(f"Layer '{name}' gives a {type(output).__name__} that holds no tensor.")


def replace_tensor(output: Any, new: torch.Tensor, output_index: int | str | None = None) -> Any:
    """``output`` with the tensor :func:`select_tensor` picks replaced by ``new``."""
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, dict):  # includes Hugging Face ModelOutput
        key = (
            output_index
            if output_index is not None
            else next(k for k, v in output.items() if isinstance(v, torch.Tensor))
        )
        copy = (
            type(output)(output)
            if not dataclasses.is_dataclass(output)
            else output.__class__(**output)
        )
        copy[key] = new
        return copy
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        # a dataclass of the model's own (not a dict): select_tensor reads its fields, and
        # the ablation and loss recovered ended in "Cannot put a tensor back"
        name = (
            output_index
            if output_index is not None
            else next(
                f.name
                for f in dataclasses.fields(output)
                if isinstance(getattr(output, f.name), torch.Tensor)
            )
        )
        copy = copy_module.copy(output)
        object.__setattr__(copy, name, new)  # a frozen dataclass too
        return copy
    if isinstance(output, (tuple, list)):
        idx = (
            output_index
            if output_index is not None
            else next(i for i, v in enumerate(output) if isinstance(v, torch.Tensor))
        )
        items = list(output)
        items[idx] = new
        if isinstance(output, list) or type(output) is tuple:
            return type(output)(items)
        # a NamedTuple (or torch's structseq): a plain tuple broke the model's `out.hidden`
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    raise ShapeError(f"Cannot put a tensor back into a {type(output).__name__} output.")
