"""Turn one layer's output into rows.

- ``[batch, d]``: one row per sample (layout ``sample``).
- ``[batch, seq, d]``: one row per token; an attention mask drops padding (``token``).
- ``[batch, C, L]`` channel-first maps (``image`` layout: ``nn.Conv1d``, 1-D
  pooling and the activations after them): one row per position with C units
  (``position``), or the mean over L (``pooled``), as 2-D conv maps.
- 4-D tensors, by their layout (:mod:`.layouts`; never guessed from the rank):
  ``image`` ``[batch, C, H, W]`` gives one row per spatial position with C units
  (``position``), or the spatial mean, one row per sample (``pooled``);
  ``heads`` ``[batch, pos, head, d_head]`` gives one row per token with
  head x d_head units, head-major (``head``); ``pattern`` ``[batch, head, q_pos,
  k_pos]`` gives one row per query token with head x k_pos units (``pattern``).

Which tensor of a tuple, list, dict or dataclass output is recorded: :mod:`.outputs`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .._validation import shown
from ..errors import ConfigError, ShapeError
from .layouts import LAYOUTS, parse_layout, undetermined_message
from .positions import mask_misfit

SPATIAL_MODES = ("positions", "mean")

#: The dtypes a layer's rows keep until they are stored; others become float32.
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class LayerRows(NamedTuple):
    """The rows one layer gives for one batch."""

    x: torch.Tensor
    """``[rows, units]`` activations."""
    sample: torch.Tensor
    """``[rows]`` index of each row's sample inside the batch."""
    position: torch.Tensor
    """``[rows]`` token index or flattened spatial position (0 for per-sample rows)."""
    layout: str
    """``sample``, ``token``, ``position``, ``pooled``, ``head`` or ``pattern``."""


def token_shapes(batch: Any) -> set[tuple[int, ...]]:
    """The shapes of a batch's ``[batch, seq]`` integer inputs (token ids, a mask)."""
    given = (*batch.args, *batch.kwargs.values())
    return {
        tuple(v.shape)
        for v in given
        if isinstance(v, torch.Tensor) and v.ndim == 2 and not v.is_floating_point()
    }


def check_not_tokens(t: torch.Tensor, name: str, tokens: set[tuple[int, ...]]) -> None:
    """Refuse integers shaped as the inputs' ``[batch, seq]`` tokens: token ids or
    positions (a TransformerLens ``embed.hook_in``, an embedding's ``:input``), not
    activations; read as ``[batch, d]`` they made each position a unit."""
    if t.ndim == 2 and not t.is_floating_point() and tuple(t.shape) in tokens:
        raise ShapeError(
            f"Layer '{name}' gives {str(t.dtype).removeprefix('torch.')} values of shape "
            f"{list(t.shape)}, the inputs' [batch, seq] tokens: token ids or positions, not "
            "activations (each position would be a unit). Record what the embedding gives "
            "(its output; in TransformerLens `hook_embed`, `blocks.0.hook_resid_pre`)."
        )


def to_rows(
    t: torch.Tensor,
    name: str,
    *,
    mask: torch.Tensor | None = None,
    spatial: str = "positions",
    layout: str | None = None,
) -> LayerRows:
    """Rows of one layer's tensor for one batch: a copy on the tensor's device.

    ``layout`` (``image``, ``heads``, ``pattern``) says what a 4-D tensor's axes
    are; a 4-D tensor without one is an error."""
    if t.is_meta:  # its NaN check ended in torch's "cannot be called on meta tensors"
        raise ShapeError(
            f"Layer '{name}' gives a tensor on the meta device, which holds no values. Load "
            "the model's weights onto a real device before capturing."
        )
    if t.layout != torch.strided:  # a sparse output (COO, CSR): the values it stands for
        t = t.to_dense()
    if t.is_complex():
        raise ShapeError(
            f"Layer '{name}' gives complex values; saeatlas records real activations. Record a "
            "module that gives their real part or magnitude."
        )
    if t.dtype not in _FLOAT_DTYPES:
        # bool, integers and float8 are stored as float32 anyway; torch has no min/max
        # (the NaN/Inf check) for uint16-64 and float8
        given, t = t, t.float()
        if not given.is_floating_point() and not torch.equal(t.to(given.dtype), given):
            raise ShapeError(
                f"Layer '{name}' gives {str(given.dtype).removeprefix('torch.')} values that "
                "float32 cannot hold exactly (integers beyond 2**24 = 16,777,216): they would "
                "be stored rounded. Record a module that gives floats, or scale them down."
            )
    b = t.shape[0] if t.ndim else 0
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim == 2:
        x = t
        sample = torch.arange(b)
        return LayerRows(_copy(x), sample, torch.zeros(b, dtype=torch.long), "sample")
    if t.ndim == 3 and layout == "image":  # [batch, C, L]: channels are the units
        if mask is not None:
            raise ShapeError(
                f"Layer '{name}' gives channel-first maps {list(t.shape)} [batch, C, L] (a "
                "Conv1d's), but the inputs have an attention mask over tokens, which saeatlas "
                "cannot match to its positions. Record a module that gives [batch, seq, d]."
            )
        t = t.unsqueeze(2)  # [batch, C, 1, L]: the positions of a conv map
    if t.ndim == 4 and layout in ("heads", "pattern"):
        if layout == "pattern":  # [batch, head, q, k] -> [batch, q, head, k]
            t = t.permute(0, 2, 1, 3)
        rows = to_rows(t.reshape(*t.shape[:2], -1), name, mask=mask)
        return rows._replace(layout="head" if layout == "heads" else "pattern")
    if t.ndim == 3:
        s = t.shape[1]
        sample = torch.arange(b).repeat_interleave(s)
        position = torch.arange(s).repeat(b)
        x = t.reshape(b * s, t.shape[2])
        if mask is not None:
            if tuple(mask.shape) != (b, s):
                raise ShapeError(mask_misfit(name, tuple(t.shape), tuple(mask.shape)))
            keep = mask.reshape(-1).to(device="cpu", dtype=torch.bool)
            index = keep.nonzero().squeeze(1)
            # Selecting by index copies, as boolean indexing does, without stopping a
            # GPU to learn how many rows there are.
            rows = x.detach().index_select(0, index.to(x.device, non_blocking=True))
            return LayerRows(rows, sample[index], position[index], "token")
        return LayerRows(_copy(x), sample, position, "token")
    if t.ndim == 4:
        if layout is None:
            raise ShapeError(undetermined_message(name, tuple(t.shape)))
        if layout != "image":
            raise ShapeError(
                f"Unknown layout {layout!r} for layer '{name}'; expected one of: {list(LAYOUTS)}."
            )
        if spatial not in SPATIAL_MODES:
            raise ShapeError(
                f"Unknown `spatial` {spatial!r}; expected one of: {list(SPATIAL_MODES)}."
            )
        c, h, w = t.shape[1:]
        if spatial == "mean":
            return LayerRows(
                _copy(t.mean(dim=(2, 3))),
                torch.arange(b),
                torch.zeros(b, dtype=torch.long),
                "pooled",
            )
        x = t.permute(0, 2, 3, 1).reshape(b * h * w, c)
        sample = torch.arange(b).repeat_interleave(h * w)
        position = torch.arange(h * w).repeat(b)
        return LayerRows(_copy(x), sample, position, "position")
    raise ShapeError(
        f"Layer '{name}' has output shape {tuple(t.shape)}; saeatlas records [batch, d], "
        "[batch, seq, d] or a 4-D tensor of a known layout. Choose another layer or a module that reshapes it."
    )


def _copy(x: torch.Tensor) -> torch.Tensor:
    """A copy that later in-place ops of the model cannot change."""
    return x.detach().clone(memory_format=torch.contiguous_format)


def check_shape_options(
    spec: str | None,
    spatial: str,
    shapes: dict[str, tuple[int, ...]],
    rows: dict[str, LayerRows],
    layouts: dict[str, str | None],
    defaulted: set[str],
) -> None:
    """Refuse a default ``layout`` or ``spatial='mean'`` that applies to no recorded layer
    (the first batch's ``shapes`` and ``rows``; ``layouts``: each layer's layout, from its
    name, module or the default; ``defaulted``: the layers given the default): they were
    accepted and did nothing, so a user believed the maps pooled, or the layout set, as
    with an ``output_index`` that picks nothing."""
    default = parse_layout(spec)[0]
    seen = ", ".join(f"'{n}' {list(s)}" for n, s in list(shapes.items())[:5])
    if default is not None and not any(len(s) == 4 for s in shapes.values()):
        raise ConfigError(
            f"--layout (`layout`) {default!r} picks nothing: it says what the axes of 4-D "
            f"outputs are, and no recorded layer gives one ({seen}). Drop --layout, or record "
            "a layer whose output is 4-D."
        )
    other = {n: lay for n, lay in layouts.items() if len(shapes.get(n, ())) == 4 and lay != default}
    if default is not None and not defaulted and other:
        # `image` beside hook_z alone was ignored: the heads were read as heads
        known = ", ".join(f"'{n}' {lay}" for n, lay in list(other.items())[:5])
        raise ConfigError(
            f"--layout (`layout`) {default!r} picks nothing: the layout of every recorded 4-D "
            f"output is known from its hook name or module, and is another ({known}). Drop "
            "--layout, or name the layer (LAYER=LAYOUT) to override what is known."
        )
    if spatial == "mean" and not any(r.layout == "pooled" for r in rows.values()):
        raise ConfigError(
            f"--spatial (`spatial`) 'mean' picks nothing: it pools conv maps [batch, C, H, W] "
            f"(or [batch, C, L]), and no recorded layer gives a conv map ({seen}). Drop "
            "--spatial, or record a convolution's output."
        )


def check_output_index(index: int | str | None, plain: set[str], names: list[str]) -> None:
    """Refuse an ``output_index`` that picks nothing: every recorded layer (``names``)
    gave a plain tensor, which is recorded as it is (a warning was easy to miss, and the
    store then held another tensor than the one asked for)."""
    if index is not None and plain >= set(names):
        raise ConfigError(
            f"--output-index (`output_index`) {shown(index)} picks nothing: every recorded layer "
            f"({sorted(plain)[:5]}) gives a plain tensor, not a tuple or dict. Drop "
            "--output-index, or record a module whose output is a tuple."
        )


def check_batch_dim(shapes: dict[str, tuple[int, ...]], n_samples: int, where: str) -> None:
    """Every recorded tensor must be batch-first, or its rows would be given to the
    wrong samples (an RNN's final state ``[layers, batch, d]`` would become
    ``layers`` samples of ``batch`` tokens). A batch of one sample whose layer lost its
    batch axis (a model's ``x.squeeze()``; the last batch, say) is named so: it was told to
    choose another layer."""
    for name, shape in shapes.items():
        if not shape or shape[0] != n_samples:
            if len(shape) == 2 and n_samples > 1 and shape[0] % n_samples == 0:
                # an MoE router's [batch * seq, experts] was told of RNN states alone
                fix = (
                    f"Its first dimension is {shape[0] // n_samples} per sample: tokens "
                    "flattened into one axis, as a mixture-of-experts router gives "
                    "[batch * seq, experts]. Record a module that keeps [batch, seq, d]."
                )
            elif n_samples != 1 or 1 in shape:  # `squeeze()` leaves no axis of size 1
                fix = (
                    "Choose a layer or `output_index` (--output-index) whose first dimension "
                    "is the batch (nn.LSTM/GRU's outputs with batch_first=True, not their "
                    "final states)."
                )
            else:
                fix = (
                    "A batch of one sample loses its batch axis in a model that squeezes it "
                    "(`x.squeeze()`): choose a --batch-size (`batch_size`) that leaves no batch "
                    "of one sample, and start again with --overwrite, or fix the model."
                )
            raise ShapeError(
                f"Layer '{name}' gives shape {list(shape)} for {where}, but the batch has "
                f"{n_samples} sample{'s' * (n_samples != 1)}; saeatlas records batch-first "
                f"tensors ([batch, d], [batch, seq, d] or [batch, C, H, W]). {fix}"
            )


def check_row_agreement(rows: dict[str, LayerRows]) -> None:
    """All layers of one batch must give the same rows, or the rows cannot be concatenated."""
    counts = {name: (r.x.shape[0], r.layout) for name, r in rows.items()}
    if len({c for c, _ in counts.values()}) > 1:
        detail = "; ".join(f"'{n}': {c} rows ({lay})" for n, (c, lay) in counts.items())
        pool = (
            ", or pool conv maps with `spatial='mean'` (--spatial mean) so every layer gives "
            "one row per sample"
            if any(lay == "position" for _, lay in counts.values())
            else ""
        )
        raise ShapeError(
            f"Layers give different numbers of rows per batch and cannot share one row per sample: "
            f"{detail}. Capture them into separate stores{pool}."
        )
    first = next(iter(rows.values()))
    for name, r in rows.items():
        if not (torch.equal(r.sample, first.sample) and torch.equal(r.position, first.position)):
            raise ShapeError(
                f"Layer '{name}' gives rows for other positions than the first layer "
                f"({r.layout} vs {first.layout}); capture them into separate stores."
            )


def from_rows(
    original: torch.Tensor, rows: torch.Tensor, name: str, layout: str, mask: torch.Tensor | None
) -> torch.Tensor:
    """The inverse of :func:`to_rows`: a tensor shaped like ``original`` holding
    ``rows`` where :func:`to_rows` took its rows (padding positions keep their values)."""
    rows = rows.to(device=original.device, dtype=original.dtype)
    if layout == "sample":
        return rows.reshape(original.shape)
    if layout in ("token", "head", "pattern"):
        if layout == "pattern":  # rows are [batch, q] x [head, k]
            moved = original.permute(0, 2, 1, 3)
            back = from_rows(moved.reshape(*moved.shape[:2], -1), rows, name, "token", mask)
            return back.reshape(moved.shape).permute(0, 2, 1, 3).contiguous()
        flat_original = original.reshape(*original.shape[:2], -1)
        if mask is None:
            return rows.reshape(original.shape)
        out = flat_original.detach().clone()
        flat = out.view(-1, out.shape[-1])
        flat[mask.reshape(-1).to(device=out.device, dtype=torch.bool)] = rows
        return out.reshape(original.shape)
    if layout == "position":
        if original.ndim == 3:  # [batch, C, L]
            return from_rows(original.unsqueeze(2), rows, name, layout, mask).squeeze(2)
        b, c, h, w = original.shape
        return rows.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
    raise ShapeError(
        f"Layer '{name}' was pooled into one row per sample (layout {layout!r}); a pooled "
        "reconstruction cannot be put back into the layer. Capture it with `spatial='positions'`."
    )
