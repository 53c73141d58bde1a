"""Setting chosen units of a model's layers to given values during its forward pass:
the mechanism of the ablation (:mod:`.ablation`), which decides what to set and
measures the loss. Units are numbered as in the store's rows: each layer's
``layout`` (:mod:`saeatlas.capture.layouts`) says where they sit in its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...capture.hookpoints import Hookpoint, resolve_hookpoints
from ...capture.outputs import replace_tensor, select_tensor
from ...capture.recorder import ran_twice
from ...errors import ConfigError, ShapeError
from ...store import LayerSpec


class Ablator:
    """Forward hooks that overwrite chosen units of chosen layers."""

    def __init__(
        self,
        model: Any,
        layers: Sequence[LayerSpec],
        values: np.ndarray,
        output_index: int | str | None = None,
    ):
        """``output_index``: the element of tuple and dict outputs the store recorded
        (the capture's ``output_index``), which is the one set."""
        hps = {hp.name: hp for hp in resolve_hookpoints(model, [l.name for l in layers])}
        if any(hp.record_input for hp in hps.values()):
            raise ConfigError("Ablating a module's :input is not supported; use its output.")
        self.layers = list(layers)
        self.values = values
        self.output_index = output_index
        self.active: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.ran: set[str] = set()
        """The layers that ran in this forward pass (:meth:`new_pass` empties it)."""
        self.handles = [
            # first among the module's hooks, as the loss recovered's: transformers 5's own
            # (which gather `hidden_states`) then see the ablated output
            hps[l.name].module.register_forward_hook(self._hook(l, hps[l.name]), prepend=True)
            for l in self.layers
        ]

    def _hook(self, layer: LayerSpec, hp: Hookpoint):
        def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
            if layer.name in self.ran:  # a shared layer: its units set in every call
                raise ran_twice(layer.name)
            self.ran.add(layer.name)
            raw = select_tensor(output, layer.name, self.output_index)
            # the tensor as it was recorded (TransformerLens: its hook's own view)
            t = hp.convert(raw) if hp.convert is not None else raw
            n = layer_units(t, layer.layout)
            if n != layer.n_units:  # another model: its units are not the atlas's
                raise ShapeError(
                    f"Layer '{layer.name}' of the model has {n} units, but the atlas's store "
                    f"recorded {layer.n_units} there: the model is not the one the store was "
                    "captured from. Give that model to ablate the atlas's modules."
                )
            chosen = self.active.get(layer.name)
            if chosen is None:
                return None
            idx, value = chosen
            t = t.clone()
            idx, value = idx.to(t.device), value.to(t)
            set_units(t, layer.layout, idx, value)
            t = hp.revert(t) if hp.revert is not None else t
            return replace_tensor(output, t, self.output_index)

        return hook

    def set(self, units: np.ndarray) -> None:
        """Ablate these global unit indices (columns of the layers' concatenation)."""
        self.active = {}
        for l in self.layers:
            mine = units[(units >= l.start) & (units < l.stop)]
            if mine.size:
                self.active[l.name] = (
                    torch.as_tensor(mine - l.start, dtype=torch.long),
                    torch.as_tensor(self.values[mine], dtype=torch.float32),
                )

    def new_pass(self) -> None:
        """Call before each forward pass: a layer that runs twice in one pass is refused."""
        self.ran.clear()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def layer_units(t: torch.Tensor, layout: str | None) -> int:
    """How many units a layer's output ``t`` holds in the ``layout`` :func:`set_units` reads."""
    if layout in ("position", "pooled"):
        return int(t.shape[1])
    if layout == "head":
        return int(t.shape[-2] * t.shape[-1])
    if layout == "pattern":
        return int(t.shape[1] * t.shape[3])
    if t.ndim == 1:  # [batch]: one unit, as the capture stored it (the batch was counted)
        return 1
    return int(t.shape[-1])


def set_units(t: torch.Tensor, layout: str | None, idx: torch.Tensor, value: torch.Tensor) -> None:
    """Set units ``idx`` of a layer's output ``t`` to ``value``, in place, where the
    layer's ``layout`` (:mod:`saeatlas.capture.layouts`) put its units in the rows.

    - ``position``/``pooled`` ``[batch, C, H, W]``: units are channels, set at every position;
    - ``head`` ``[batch, pos, head, d_head]``: units are ``head * d_head + dim``;
    - ``pattern`` ``[batch, head, q, k]``: units are ``head * k + key``, for every query;
    - otherwise ``[batch, d]`` or ``[batch, seq, d]``: units are the last dimension
      (``[batch]``: one unit, not the batch).
    """
    if t.ndim == 1:
        t = t.unsqueeze(1)  # a view: setting it sets t
    if layout in ("position", "pooled"):
        t[:, idx] = value.view(1, -1, *([1] * (t.dim() - 2)))
    elif layout == "head":
        t.view(*t.shape[:-2], -1)[..., idx] = value
    elif layout == "pattern":
        moved = t.permute(0, 2, 1, 3)  # [batch, q, head, k], a view of t
        b, q, h, k = moved.shape
        heads, keys = idx // k, idx % k
        moved[:, :, heads, keys] = value
    else:
        t[..., idx] = value
