"""Hook point names: resolve exact names, globs and regexes to modules.

A hook point is a ``model.named_modules()`` path (what ``get_submodule``
accepts), as in TransformerLens and nnsight. Keras 3 layers on the torch
backend are torch modules that ``named_modules`` does not list; they are
added under their Keras layer names. A ``:input`` suffix records what goes
into a module instead of what comes out.

Patterns, tried in this order:
- an exact name: ``encoder.layer.3`` (also a module named ``re:x``, or ``a[0]``);
- a glob: ``encoder.layer.*.output`` (``*`` within one dotted part, ``**`` across
  dots; :mod:`.patterns`);
- a regex, written ``re:PATTERN`` and matched against the whole name:
  ``re:encoder\\.layer\\.[0-2]``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .._validation import shown
from ..errors import HookpointError
from .layouts import hook_name_layout
from .nnsight import check_model_argument, envoy_paths, is_nnsight, unwrap_model
from .patterns import REGEX_PREFIX, crossing_hint, match_names
from .transformer_lens import hook_conversion, hook_modules, is_hook_point

INPUT_SUFFIX = ":input"


@dataclass(frozen=True)
class Hookpoint:
    """One resolved hook point."""

    name: str
    """The module's path, with ``:input`` when the input is recorded."""
    module: torch.nn.Module
    record_input: bool = False
    layout: str | None = None
    """The 4-D layout its hook name implies (TransformerLens ``hook_z``: ``heads``)."""
    convert: Callable[[torch.Tensor], torch.Tensor] | None = None
    """What the hook's own library applies to the tensor before users see it
    (TransformerLens bridge: ``[batch, pos, d_model]`` -> ``[batch, pos, head, d_head]``)."""
    revert: Callable[[torch.Tensor], torch.Tensor] | None = None
    """The inverse of ``convert``, for putting a tensor back into the model."""

    @property
    def module_name(self) -> str:
        return self.name.removesuffix(INPUT_SUFFIX)


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``layer.2`` before ``layer.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def named_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """All hookable modules by name, the root excluded, Keras layers included; for a
    TransformerLens model its hook names (aliases included) come first; of an nnsight
    wrapper, its module's."""
    check_model_argument(model)  # a number or None ended in an AttributeError
    model, _ = unwrap_model(model)
    found = hook_modules(model)
    found |= {name: m for name, m in model.named_modules() if name and name not in found}
    seen = {id(m) for m in found.values()}
    flatten = getattr(model, "_flatten_layers", None)  # Keras 3 models
    if callable(flatten):
        for layer in flatten(include_self=False, recursive=True):
            if isinstance(layer, torch.nn.Module) and id(layer) not in seen:
                found[layer.name] = layer
                seen.add(id(layer))
    return found


def no_submodules(model: torch.nn.Module) -> str:
    """Why a model without submodules has nothing to record, and what to do."""
    return (
        f"{type(model).__name__} has no submodules, and saeatlas records the outputs of a "
        "model's submodules, not of the model itself: wrap it in its factory, "
        "`torch.nn.Sequential(model)`, and record that model's layer '0'."
    )


def resolve_hookpoints(
    model: torch.nn.Module | Any, patterns: list[str] | tuple[str, ...] | str
) -> list[Hookpoint]:
    """Resolve layer patterns to hook points, naturally sorted, without duplicates.

    ``model`` may be an nnsight wrapper: its paths (``model.h.0``) name the wrapped
    module's ``h.0``.

    Raises:
        HookpointError: a pattern matches nothing; the message lists the closest names
            (or, when none is close, the model's first ten).
    """
    odd = isinstance(patterns, (bytes, bytearray, Mapping)) or not isinstance(patterns, Iterable)
    if patterns is not None and odd:
        # 5 ended in "'int' object is not iterable", b"0" read as the layer 48, a dict
        # as its keys
        raise HookpointError(
            f"Layers must be a name or a list of names, got {type(patterns).__name__} "
            f"{shown(patterns)}. Give a module's name in `model.named_modules()`, a glob or a "
            "regex, or a list of them."
        )
    patterns = [patterns] if isinstance(patterns, str) else list(patterns or ())
    if not patterns:
        raise HookpointError("No layers given. Name at least one (see `saeatlas layers MODEL`).")
    for p in patterns:
        if not isinstance(p, str):
            raise HookpointError(
                f"Layer names must be strings, not {type(p).__name__}. Give a module's name in "
                "`model.named_modules()` (of an nnsight Envoy, its `.path`), a glob or a regex."
            )
    check_model_argument(model)
    wrapped = is_nnsight(model)
    model, _ = unwrap_model(model)
    modules = named_modules(model)
    names = list(modules)
    chosen: dict[str, Hookpoint] = {}
    owners: set[tuple[int, bool]] = set()  # one hook point per module (aliases name one hook)
    for raw in patterns:
        record_input = raw.endswith(INPUT_SUFFIX)
        pattern = raw.removesuffix(INPUT_SUFFIX)
        hits = match_names(pattern, names)
        if not hits and wrapped:  # nnsight's paths start with 'model.' (a regex's too)
            paths = envoy_paths(names)
            hits = [paths[p] for p in match_names(pattern, list(paths))]
        if not hits:
            raise HookpointError(_no_match_message(raw, pattern, names, model, wrapped))
        _check_not_scripted(hits, modules, model)
        hits = _called(hits, modules, raw)
        for n in hits:
            owner = (id(modules[n]), record_input)
            if owner in owners:
                continue
            owners.add(owner)
            _check_text(n, raw)
            key = n + INPUT_SUFFIX if record_input else n
            chosen[key] = _hookpoint(key, modules[n], record_input)
    return [chosen[k] for k in sorted(chosen, key=natural_key)]


def _called(hits: list[str], modules: dict[str, torch.nn.Module], raw: str) -> list[str]:
    """``hits`` less the containers among them (``nn.ModuleList``, ``nn.ModuleDict``: no
    ``forward`` of their own, so never called); a pattern that picks containers only is
    refused naming their members (the capture said they "did not run" and to choose
    modules the model's forward uses, which it does)."""
    # read statically: a TorchScript class's `forward` descriptor raises an AttributeError
    forward = torch.nn.Module.forward
    called = [n for n in hits if inspect.getattr_static(type(modules[n]), "forward") is not forward]
    if called:
        return called
    n = hits[0]
    first = next((c for c, _ in modules[n].named_children()), None)
    one = f" (or one of them, '{n}.{first}')" if first is not None else ""
    raise HookpointError(
        f"Layer pattern {shown(raw)} picks '{n}', a {type(modules[n]).__name__}: a container "
        f"the model never calls (it has no forward of its own), so it gives no output to "
        f"record. Record the modules it holds: '{n}.*'{one}."
    )


def _check_not_scripted(
    hits: list[str], modules: dict[str, torch.nn.Module], model: torch.nn.Module
) -> None:
    """Refuse a TorchScript module's layers: a scripted one takes no hook, and a module
    inside a traced or scripted one is run by compiled code that calls none. The capture
    ended in an AttributeError ("'_CachedForward' object has no attribute '__getattr__'")
    or said the layers "did not run", to choose modules the forward uses."""
    script = torch.jit.ScriptModule
    for n in hits:
        parent = modules.get(n.rpartition(".")[0], model)
        if isinstance(modules[n], torch.jit.RecursiveScriptModule) or isinstance(parent, script):
            raise HookpointError(
                f"Layer '{n}' is part of a TorchScript module (torch.jit.script or trace), "
                "whose compiled code calls no Python hook, so its outputs cannot be recorded. "
                "Give the Python module it was made from (before torch.jit.script/trace)."
            )


def _check_text(name: str, pattern: str) -> None:
    """Refuse a module name that is no Unicode text (a lone surrogate, ``"\\ud800"``, which
    Python allows in a name but no manifest, Parquet table or page can hold)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise HookpointError(
            f"The module {name!r} (layer pattern {pattern!r}) has {name[e.start]!r} in its "
            "name, half of a surrogate pair, which is no text a store can hold; rename the "
            "module (`add_module` with a name of Unicode text) to record it."
        ) from None


def _hookpoint(name: str, module: torch.nn.Module, record_input: bool) -> Hookpoint:
    """A hook point; a TransformerLens hook also gets its layout and reshaping."""
    if not is_hook_point(module):
        return Hookpoint(name, module, record_input)
    convert, revert, splits_heads = hook_conversion(module)
    layout = hook_name_layout(name) or ("heads" if splits_heads else None)
    return Hookpoint(name, module, record_input, layout, convert, revert)


def _no_match_message(
    raw: str, pattern: str, names: list[str], model: torch.nn.Module, wrapped: bool = False
) -> str:
    base, colon, suffix = pattern.rpartition(":")
    if colon and base and not pattern.startswith(REGEX_PREFIX) and match_names(base, names):
        return (  # a misspelt suffix: `layer1:inptu` was offered 'layer1' alone
            f"No module of {type(model).__name__} matches layer pattern {shown(raw)}: "
            f"':{suffix}' is no suffix of a layer pattern. Write '{base}{INPUT_SUFFIX}' to "
            f"record what goes into {base!r}, or '{base}' for what comes out."
        )
    base, dot, attr = pattern.rpartition(".")
    paths = names + (list(envoy_paths(names)) if wrapped else [])  # nnsight's 'model.h.0'
    named = any(n.rsplit(".", 1)[-1] == attr for n in names)  # BERT has `layer.0.output`
    if attr in ("output", "input") and base and not named and match_names(base, paths):
        # nnsight's `model.h[0].output` written out: offered the module's other names
        write = f"{base}{INPUT_SUFFIX}" if attr == "input" else base
        return (
            f"No module of {type(model).__name__} matches layer pattern {shown(raw)}: a layer "
            f"is named by its module's path, which records its output ('{base}'), or its "
            f"input with '{INPUT_SUFFIX}' ('{base}{INPUT_SUFFIX}'), not by nnsight's "
            f"`.{attr}`. Write '{write}'."
        )
    listed = _listed_patterns(raw, pattern, names, model)
    if listed:
        return listed
    probe = pattern.removeprefix(REGEX_PREFIX)
    close = difflib.get_close_matches(probe, names, n=5, cutoff=0.5)
    if not close:  # fall back to names that share the pattern's first component
        head = re.split(r"[.*?\[]", probe)[0]
        close = [n for n in names if head and n.startswith(head)][:5]
    if close:
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?"
    elif names:  # nothing alike: show what the model has
        hint = f" Its modules are {_listing(names)}."
    else:
        hint = " " + no_submodules(model)
    hint = crossing_hint(pattern, names) or hint
    if pattern.isdigit() and names and not any(n.isdigit() for n in names):
        # `--layers 2` of a model whose modules have names (a Sequential's are numbers)
        hint = (
            " Layers are named by their module's path, not numbered by their place in the "
            f"model: its modules are {_listing(names)}."
        )
    return (
        f"No module of {type(model).__name__} matches layer pattern {shown(raw)}.{hint} "
        "List the names with `saeatlas layers MODEL` (or `model.named_modules()`); globs use "
        "`*` (within one dotted part) and `**` (across dots), regexes start with `re:`."
    )


def _listing(names: list[str]) -> str:
    """``'a', 'b' ... and N more``: the first ten of ``names``."""
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return f"{', '.join(repr(n) for n in names[:10])}{more}"


def _listed_patterns(raw: str, pattern: str, names: list[str], model: torch.nn.Module) -> str:
    """The message for ``'1,3'``, a list of patterns written as one (``--layout`` takes
    its ``LAYER=LAYOUT`` pairs so, ``--layers`` does not), or "" for any other pattern: it
    was told "Did you mean '3', '1'?" and left to guess that it should be two values."""
    if "," not in pattern or pattern.startswith(REGEX_PREFIX) or "[" in pattern:
        return ""  # a comma in a regex (`{1,3}`) or a glob's set (`[1,3]`) is the pattern's own
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        return ""
    return (
        f"No module of {type(model).__name__} matches layer pattern {shown(raw)}: each layer "
        "pattern is one name, glob or regex, and a comma does not join two. Give each as its "
        f"own value: `--layers {' '.join(parts)}` (from Python, the list {parts!r})."
    )
