"""``saeatlas layers``: every hook point of a model with its output shape."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import AtlasError, HookpointError
from .hookpoints import named_modules, no_submodules
from .inputs import InputBatch, iter_input_batches
from .masks import encoder_of
from .models import input_dtype, takes_token_ids
from .nnsight import unwrap_model
from .outputs import select_tensor
from .recorder import check_token_ids, lacks_decoder_inputs, model_error
from .transformer_lens import hook_conversion


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    shape: tuple[int, ...] | None
    """Output shape from the dry run; ``None`` when the module did not run or gave no tensor."""
    calls: int = 0
    """Times the module ran in the dry run: one that runs more than once (a layer reused
    in one forward pass) cannot be captured, which the listing now says."""


def list_layers(model: torch.nn.Module, example: Any) -> list[LayerInfo]:
    """Run one forward pass on ``example`` and report every module's output shape.

    ``example`` is a tensor or array (positional input; an array is converted as
    capture converts one: :func:`.inputs.iter_input_batches`) or a mapping of keyword
    inputs. ``model`` may be an nnsight wrapper (its module is run).
    """
    model, _ = unwrap_model(model)
    modules = named_modules(model)
    if not modules:  # an empty table said nothing
        raise HookpointError(no_submodules(model))
    if isinstance(example, np.ndarray):  # the forward pass failed: "must be Tensor"
        batch = iter_input_batches(
            example,
            batch_size=max(len(example), 1),
            float_dtype=input_dtype(model),
            token_ids=takes_token_ids(model),
        )
        example = next(batch).args[0]
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    handles = []

    def make(name: str):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            try:
                t = select_tensor(output, name)
            except ValueError:
                return
            convert, _, _ = hook_conversion(module)  # TransformerLens: the shape users see
            shapes.setdefault(name, tuple((convert(t) if convert is not None else t).shape))

        return hook

    try:
        for name, m in modules.items():
            handles.append(m.register_forward_hook(make(name)))
        was_training = model.training
        model.eval()
        # as the capture does: past the vocabulary, "index out of range" (a device assert)
        given = (
            InputBatch((), dict(example), 0)
            if isinstance(example, Mapping)
            else InputBatch((example,), {}, 0)
        )
        check_token_ids(model, given, "the example input")
        try:
            with torch.no_grad():
                if isinstance(example, Mapping):
                    model(**example)
                else:
                    model(example)
        except AtlasError:
            raise
        except (Exception, SystemExit) as e:  # sys.exit in the model: not exit code 0
            encoder = encoder_of(model)  # it ran to its end (a failure inside it stays one)
            ran = encoder is not None and any(
                calls.get(n) for n, m in modules.items() if m is encoder
            )
            if ran and lacks_decoder_inputs(model, example):
                # T5 given texts: its decoder needs decoder_input_ids, but its encoder ran,
                # and capture records the encoder's layers from texts (it stops early);
                # the listing was refused, advising a model of the encoder's own
                warnings.warn(
                    f"{type(model).__name__} is an encoder-decoder model and the example "
                    "gives no `decoder_input_ids`, so only its encoder ran: the layers of its "
                    "decoder are listed without a shape, and `capture` records them from "
                    "dict batches that hold `decoder_input_ids` (Python).",
                    stacklevel=2,
                )
                return _listing(modules, shapes, calls)
            # `saeatlas layers` has neither --max-length nor --batch-size, which it advised
            raise model_error(
                e, "the example input", model, example, fit="shape, dtype, token ids"
            ) from e
        finally:
            model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return _listing(modules, shapes, calls)


def _listing(
    modules: Mapping[str, torch.nn.Module],
    shapes: Mapping[str, tuple[int, ...]],
    calls: Mapping[str, int],
) -> list[LayerInfo]:
    return [
        LayerInfo(n, type(m).__name__, shapes.get(n), calls.get(n, 0)) for n, m in modules.items()
    ]
