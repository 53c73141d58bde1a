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

from ..errors import ConfigError

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


def check_model_argument(model: Any) -> None:
    """Refuse a ``model`` that is no torch module (nor an nnsight wrapper of one) before
    any work: None ended the capture in an AttributeError, and a model's SPEC given as
    text ended the ablation (``ablate_atlas``) in one."""
    module, _ = unwrap_model(model)
    if not isinstance(module, torch.nn.Module):
        if isinstance(module, type):
            got, fix = f"the class {module.__name__} itself", " (for a class, an instance of it)"
        elif isinstance(module, str):
            got, fix = (
                f"the text {module[:200]!r}",
                " (saeatlas.capture.load_model(SPEC).model loads one)",
            )
        else:
            got, fix = type(module).__name__, ""
        raise ConfigError(
            f"`model` must be a torch.nn.Module (or an nnsight wrapper of one), got {got}; "
            f"pass the model object{fix}."
        )


def envoy_paths(names: list[str]) -> dict[str, str]:
    """Each module name by its nnsight path (``model.h.0`` -> ``h.0``), so that a glob or
    a regex over the paths (``re:model\\.h\\.\\d+``) names what it names in nnsight."""
    return {NNSIGHT_PREFIX + n: n for n in names}
