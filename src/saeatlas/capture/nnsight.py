"""nnsight wrappers (``NNsight``, ``LanguageModel``): capture through the wrapped module.

An nnsight model is an ``Envoy`` around a ``torch.nn.Module`` (``._module``),
not a module itself. saeatlas runs its forward passes on the wrapped module,
takes a ``LanguageModel``'s tokenizer, and accepts nnsight's module paths:
``model.transformer.h.0.mlp`` (an Envoy's ``.path``) is the wrapped module's
``transformer.h.0.mlp``. nnsight is not imported here: wrappers are recognised
by their type's package and their ``_module``.
"""

from __future__ import annotations

from typing import Any

import torch

#: What nnsight puts before a module's ``named_modules()`` path.
NNSIGHT_PREFIX = "model."


def is_nnsight(model: Any) -> bool:
    """True for an nnsight wrapper around a torch module."""
    return (
        not isinstance(model, torch.nn.Module)
        and any(c.__module__.startswith("nnsight") for c in type(model).__mro__)
        and isinstance(getattr(model, "_module", None), torch.nn.Module)
    )


def unwrap_model(model: Any) -> tuple[Any, Any]:
    """``(module, tokenizer)``: the module an nnsight wrapper holds and its tokenizer
    (``None`` when it has none); anything else is returned as it is, with ``None``."""
    if is_nnsight(model):
        return model._module, getattr(model, "tokenizer", None)
    return model, None


def envoy_paths(names: list[str]) -> dict[str, str]:
    """Each module name by its nnsight path (``model.h.0`` -> ``h.0``), so that a glob or
    a regex over the paths (``re:model\\.h\\.\\d+``) names what it names in nnsight."""
    return {NNSIGHT_PREFIX + n: n for n in names}
