"""TransformerLens models: hook names, texts, provenance.

A TransformerLens model (a 4.x ``TransformerBridge``, or a ``HookedTransformer``
of earlier versions) is a ``torch.nn.Module`` whose ``hook_dict`` maps the hook
names users know from ``run_with_cache`` (``blocks.0.hook_resid_post``,
``blocks.0.attn.hook_z``) to ``HookPoint`` modules. On a bridge several of those
names are aliases of one hook (``blocks.0.hook_resid_post`` of
``blocks.0.hook_out``), and a hook may reshape what its users see (``hook_z``:
``[batch, pos, d_model]`` inside the model, ``[batch, pos, head, d_head]`` in the
cache); saeatlas records what the cache shows and puts tensors back the way the
hook does.

TransformerLens is not imported here: models are recognised by their attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import InputsError


def is_transformer_lens(model: Any) -> bool:
    """True for a TransformerLens model (it has ``hook_dict``, ``to_tokens`` and ``cfg``)."""
    return (
        isinstance(model, torch.nn.Module)
        and isinstance(getattr(model, "hook_dict", None), dict)
        and callable(getattr(model, "to_tokens", None))
        and hasattr(model, "cfg")
    )


def hook_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """TransformerLens hook names (aliases included) and the hook module that owns each."""
    if not is_transformer_lens(model):
        return {}
    return {n: m for n, m in model.hook_dict.items() if isinstance(m, torch.nn.Module)}


def is_hook_point(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "HookPoint"


def hook_conversion(
    module: torch.nn.Module,
) -> tuple[
    Callable[[torch.Tensor], torch.Tensor] | None,
    Callable[[torch.Tensor], torch.Tensor] | None,
    bool,
]:
    """``(convert, revert, splits_heads)`` of a bridge hook that reshapes its tensor."""
    conv = getattr(module, "hook_conversion", None) if is_hook_point(module) else None
    if conv is None or not callable(getattr(conv, "convert", None)):
        return None, None, False
    revert = getattr(conv, "revert", None)
    return (
        conv.convert,
        revert if callable(revert) else None,
        bool(getattr(conv, "splits_attention_heads", False)),
    )


#: Hooks a TransformerLens model runs only once a setting is on, and the call that sets it.
_SETTING_HOOKS = {
    "hook_result": "set_use_attn_result",
    "hook_attn_in": "set_use_attn_in",
    "hook_q_input": "set_use_split_qkv_input",
    "hook_k_input": "set_use_split_qkv_input",
    "hook_v_input": "set_use_split_qkv_input",
    "hook_mlp_in": "set_use_hook_mlp_in",
}


def setting_hint(model: torch.nn.Module, names: list[str]) -> str:
    """For hooks of a TransformerLens model that did not run: the setting that turns the
    first such one on (they were told to choose "modules that the model's forward uses"),
    or ''."""
    if not is_transformer_lens(model):
        return ""
    for name in names:
        setting = _SETTING_HOOKS.get(name.removesuffix(":input").rsplit(".", 1)[-1])
        if setting is not None and callable(getattr(model, setting, None)):
            return (
                f" TransformerLens runs '{name}' only once `model.{setting}(True)` is called: "
                "call it before the capture."
            )
    return ""


def provenance(model: torch.nn.Module) -> dict[str, Any]:
    """What a TransformerLens model's config says about how it reads texts."""
    cfg = model.cfg
    out: dict[str, Any] = {}
    for ours, theirs in (
        ("model_name", "model_name"),
        ("prepend_bos", "default_prepend_bos"),
        ("n_ctx", "n_ctx"),
    ):
        value = getattr(cfg, theirs, None)
        if isinstance(value, (str, bool, int)):
            out[ours] = value
    return out


class TransformerLensTexts:
    """Texts turned into a TransformerLens model's inputs the way ``run_with_cache(text)``
    turns them: ``model.to_tokens(text)`` for each text (its tokenizer, BOS as its
    config says, cut to ``cfg.n_ctx``), then cut to ``max_length`` when given and
    padded on the right; the model gets ``input=`` and ``attention_mask=``.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        if getattr(model, "tokenizer", None) is None:
            raise InputsError(
                f"The {type(model).__name__} has no tokenizer, so it cannot read texts. Boot it "
                "with one (`tokenizer=`), or give token ids (a .npy / .safetensors array of "
                "integers) as inputs."
            )
        self.model = model
        self.tokenizer = model.tokenizer

    def encode_texts(
        self, texts: list[str], max_length: int | None
    ) -> tuple[dict[str, Any], torch.Tensor, list[list[str]]]:
        """``(forward kwargs, [batch, seq] mask, token strings)`` for a batch of texts."""
        rows = [self.model.to_tokens(t)[0].cpu() for t in texts]
        if max_length is not None:
            rows = [r[:max_length] for r in rows]
        width = max(len(r) for r in rows)
        pad_id = next(
            (
                i
                for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
                if i is not None
            ),
            0,
        )
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        tokens = [self.tokenizer.convert_ids_to_tokens(r.tolist()) for r in rows]
        return {"input": ids, "attention_mask": mask}, mask, tokens
