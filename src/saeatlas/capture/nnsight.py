"""nnsight wrappers (``NNsight``, ``LanguageModel``): capture through the wrapped module.

An nnsight model is an ``Envoy`` around a ``torch.nn.Module`` (``._module``),
not a module itself. saeatlas runs its forward passes on the wrapped module (after
loading its weights, ``dispatch``, when nnsight has not yet: a ``LanguageModel`` keeps
them on the meta device until its first trace), takes a ``LanguageModel``'s tokenizer,
and accepts nnsight's module paths:
``model.transformer.h.0.mlp`` (an Envoy's ``.path``) is the wrapped module's
``transformer.h.0.mlp``. nnsight is not imported here: wrappers are recognised
by their type's package and their ``_module``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError, ModelError

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
        if (
            callable(getattr(model, "dispatch", None))
            and getattr(model, "dispatched", True) is False
        ):
            # a LanguageModel is built with its weights on the meta device and loads them
            # on its first trace (`dispatch`); saeatlas runs the module itself, so it was
            # refused as "on the meta device" and told to load_state_dict
            try:
                model.dispatch()
            except Exception as e:
                raise ModelError(
                    f"The {type(model).__name__} could not load its weights "
                    f"(nnsight's `dispatch`): {type(e).__name__}: {e}"
                ) from None
        return model._module, getattr(model, "tokenizer", None)
    return model, None


def envoy_paths(names: list[str]) -> dict[str, str]:
    """Each module name by its nnsight path (``model.h.0`` -> ``h.0``), so that a glob or
    a regex over the paths (``re:model\\.h\\.\\d+``) names what it names in nnsight."""
    return {NNSIGHT_PREFIX + n: n for n in names}


def check_model_argument(model: Any) -> None:
    """Refuse anything but a torch module or an nnsight wrapper of one where a loaded
    model goes, before any work (None ended the capture in an AttributeError, a spec's
    text the ablation in one and the Neuronpedia export in "has no unembedding"); a
    wrapper is not dispatched here."""
    if isinstance(model, torch.nn.Module) or is_nnsight(model):
        return
    if isinstance(model, type):
        got = f"the class {model.__name__} itself"
    elif isinstance(model, str):
        got = f"the text {model[:200]!r}"
    else:
        got = type(model).__name__
    raise ConfigError(
        f"`model` must be a torch.nn.Module (or an nnsight wrapper of one), got {got}; "
        "pass the model object (for a class, an instance of it; for a model SPEC, "
        "`saeatlas.capture.load_model(SPEC).model`)."
    )
