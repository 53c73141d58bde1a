"""What the axes of a 4-D layer output mean (DESIGN.md, "Known traps").

``[batch, C, H, W]`` conv maps, ``[batch, pos, head, d_head]`` per-head
attention outputs and ``[batch, head, q_pos, k_pos]`` attention patterns are
all 4-D, so a layout is never read from the rank. It is known, in this order:

1. from the user: ``layout`` (``--layout``), either one layout for every 4-D
   layer whose layout is not known otherwise, or ``PATTERN=LAYOUT`` for the
   layers a name, glob or ``re:`` regex matches;
2. from a TransformerLens hook name: ``hook_q/k/v/z/result``, ``hook_attn_in`` and
   ``hook_q/k/v_input`` (and the bridge's hooks that split heads) are ``heads``; ``hook_pattern`` and
   ``hook_attn_scores`` are ``pattern``;
3. from the module that made the tensor: ``nn.Conv2d``, ``nn.BatchNorm2d``,
   2-D pooling and padding make ``image`` tensors (their 1-D kinds make
   ``[batch, C, L]`` ones, which are not ``[batch, seq, d]``); activations, dropout,
   identity and normalisations pass their input's layout on (traced during
   the first batch, so ``features.1`` = the ReLU after a conv is an image, and
   so is a container whose output is such a tensor).

Anything else is an error that names ``--layout``. Attention patterns are
recorded only when ``pattern`` is asked for, because their units are key
positions, whose number changes with the length of the inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._validation import shown
from ..errors import ConfigError, ShapeError
from .patterns import matches

#: The 4-D layouts a user can name, with their axes.
LAYOUTS = {
    "image": "[batch, C, H, W]",
    "heads": "[batch, pos, head, d_head]",
    "pattern": "[batch, head, q_pos, k_pos]",
}

_HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z", "hook_result", "hook_rot_q", "hook_rot_k")
# the residual stream copied per head, [batch, pos, head, d_model] (use_attn_in,
# use_split_qkv_input): refused as a 4-D output of unknown layout
_HEAD_HOOKS += ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input")
_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")

#: Modules that make channel-first maps: ``[batch, C, H, W]``, or ``[batch, C, L]`` for
#: the 1-D ones (a ``[batch, C, L]`` is not ``[batch, seq, d]``: its units are channels).
_IMAGE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.ConvTranspose1d,
    nn.BatchNorm1d,
    nn.InstanceNorm1d,
    nn.MaxPool1d,
    nn.AvgPool1d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.LPPool1d,
    nn.Dropout1d,
    nn.ZeroPad1d,
    nn.ConstantPad1d,
    nn.ReflectionPad1d,
    nn.ReplicationPad1d,
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
    nn.FractionalMaxPool2d,
    nn.Dropout2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)
#: Modules whose output has the layout of their input (elementwise or per-channel).
_PASS_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Dropout,
    nn.AlphaDropout,
    nn.Identity,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)


def parse_layout(spec: str | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """``(default, ((pattern, layout), ...))`` from ``"heads"`` or
    ``"blocks.*.attn.hook_pattern=pattern,conv=image"``."""
    if spec is None or not spec.strip():
        return None, ()
    default, pairs = None, []
    for part in (p.strip() for p in spec.split(",")):
        pattern, _, layout = part.rpartition("=")
        if layout not in LAYOUTS:
            allowed = ", ".join(f"'{k}' {v}" for k, v in LAYOUTS.items())
            raise ConfigError(
                f"Unknown `layout` {shown(layout)} in {shown(spec)}; expected one of: {allowed}, alone "
                "or as LAYER=LAYOUT (--layout)."
            )
        if pattern:
            pairs.append((pattern, layout))
        elif default is not None:
            raise ConfigError(f"`layout` {spec!r} gives two layouts for every layer; give one.")
        else:
            default = layout
    return default, tuple(pairs)


def hook_name_layout(name: str) -> str | None:
    """The layout a TransformerLens hook name implies (``None`` when it implies none)."""
    last = name.removesuffix(":input").rsplit(".", 1)[-1]
    if last in _HEAD_HOOKS:
        return "heads"
    if last in _PATTERN_HOOKS:
        return "pattern"
    return None


def module_layout(module: nn.Module) -> str | None:
    """``image`` for modules that make ``[batch, C, H, W]`` tensors, else ``None``."""
    return "image" if isinstance(module, _IMAGE_TYPES) else None


def _names(name: str, pattern: str) -> bool:
    return matches(name, pattern) or matches(name.removesuffix(":input"), pattern)


def check_layout_layers(names: list[str], spec: str | None) -> None:
    """Each LAYER of a ``LAYER=LAYOUT`` in ``spec`` names one of the recorded layers
    ``names``: a misspelt one would leave its layer to the default layout."""
    for pattern, _ in parse_layout(spec)[1]:
        if not any(_names(n, pattern) for n in names):
            raise ConfigError(
                f"--layout (`layout`) sets a layout for {pattern!r}, which names none of the "
                f"recorded layers {names[:5]}{' ...' if len(names) > 5 else ''}; fix the name."
            )


def named_layout(name: str, spec: str | None) -> str | None:
    """The layout ``spec`` gives layer ``name`` by name (``LAYER=LAYOUT``), or None. Two
    that name it with two layouts are refused: ``1=image,1=heads`` (or ``*=image,1=heads``)
    stored it by the first without a word."""
    given = [(p, lay) for p, lay in parse_layout(spec)[1] if _names(name, p)]
    if len({lay for _, lay in given}) > 1:
        pairs = " and ".join(f"'{lay}' ({p}={lay})" for p, lay in given[:2])
        raise ConfigError(
            f"--layout (`layout`) {shown(spec)} gives layer '{name}' two layouts, {pairs}; give "
            "it one (a layout alone, without LAYER=, is the one of every layer not named)."
        )
    return given[0][1] if given else None


def check_named_layout(name: str, shape: tuple[int, ...], spec: str | None) -> None:
    """Refuse a layout named for a layer whose output cannot have it: ``1=image`` for a
    ``[batch, d]`` output was dropped without a word, and ``1=heads`` for a 3-D one
    read it as ``[batch, seq, d]``."""
    layout = named_layout(name, spec)
    fits = {"image": (3, 4), "heads": (4,), "pattern": (4,)}
    if layout is not None and len(shape) not in fits[layout]:
        raise ShapeError(
            f"--layout (`layout`) names '{layout}' {LAYOUTS[layout]} for layer '{name}', but "
            f"its output is {len(shape)}-D {list(shape)}. Drop it for this layer, or record "
            "the module whose output has that layout."
        )


def choose_layout(name: str, known: str | None, spec: str | None) -> str | None:
    """The layout of layer ``name`` before any forward pass: the user's for this layer,
    else ``known`` (from its hook name or module type). ``None`` leaves it to the
    tracer, then to the user's default. ``pattern`` needs the user's consent."""
    default = parse_layout(spec)[0]
    named = named_layout(name, spec)
    if named is not None:
        return named
    if known == "pattern" and default != "pattern":
        raise ShapeError(
            f"Layer '{name}' holds attention patterns {LAYOUTS['pattern']}: its units would be "
            "key positions, whose number changes with the length of the inputs. Record it "
            "anyway with --layout pattern (`layout='pattern'`; inputs of one length), or record "
            "the per-head outputs (hook_z) instead."
        )
    return known


def undetermined_message(name: str, shape: tuple[int, ...]) -> str:
    allowed = "; ".join(f"'{k}' for {v}" for k, v in LAYOUTS.items())
    return (
        f"Layer '{name}' gives a 4-D output {list(shape)} whose layout saeatlas cannot tell from "
        f"its module or hook name. Name it with --layout (`layout`): {allowed}; "
        f"'{name}=LAYOUT' sets it for this layer only."
    )


#: The 4-D layout each stored row layout came from (for putting rows back).
SOURCE_LAYOUT = {"position": "image", "pooled": "image", "head": "heads", "pattern": "pattern"}


def unit_label(shape: tuple[Any, ...], layout: str, index: int) -> str:
    """A unit's name inside its layer: ``head.dim`` for per-head outputs, ``head.key``
    for attention patterns, else its index (``shape`` as in the manifest)."""
    if layout in ("head", "pattern") and len(shape) == 4:
        inner = shape[3]
        if isinstance(inner, int) and inner > 0:
            return f"{index // inner}.{index % inner}"
    return str(index)


def unit_names(shape: tuple[Any, ...], layout: str, n_units: int) -> list[str]:
    """:func:`unit_label` of every unit of a layer."""
    return [unit_label(shape, layout, u) for u in range(n_units)]


class LayoutTracer:
    """Forward hooks that mark which tensors of one forward pass are images:
    those made by image modules and those passed on by elementwise ones.

    Attach before the recording hooks (hooks of one module run in the order they
    were added) and detach after the first batch; marks hold their tensors alive.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.marks: dict[int, tuple[torch.Tensor, str]] = {}
        self.handles: list[Any] = []

    def attach(self) -> None:
        for m in self.model.modules():
            if isinstance(m, _IMAGE_TYPES):
                self.handles.append(m.register_forward_hook(self._make("image")))
            elif isinstance(m, _PASS_TYPES) or type(m).__module__ == "transformers.activations":
                # Hugging Face's own activations (GELUActivation) are elementwise too: the
                # conv maps of Wav2Vec2's and HuBERT's feature encoders, [batch, C, L],
                # were stored as [batch, seq, d], their units the time steps, silently
                self.handles.append(m.register_forward_hook(self._make(None)))

    def _make(self, layout: str | None) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            mark = layout
            if mark is None and args and isinstance(args[0], torch.Tensor):
                mark = self.lookup(args[0])
            if mark is not None:
                self.marks[id(output)] = (output, mark)

        return hook

    def lookup(self, t: torch.Tensor) -> str | None:
        hit = self.marks.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.marks.clear()
