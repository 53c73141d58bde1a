"""How many positions a Hugging Face model's table of absolute positions holds: the
longest sequence it runs, which the capture checks token ids against and cuts texts to;
and a layer whose positions are not the tokens, which the padding mask cannot select."""

from __future__ import annotations

import torch


def position_table(model: torch.nn.Module) -> tuple[str, int | None]:
    """The number of positions of a Hugging Face model with a learned table of absolute
    positions (GPT-2's `n_positions`, BERT's `max_position_embeddings`), read from its
    config and found as an embedding of that size other than the token embedding (a
    rotary Llama whose vocabulary was as large was refused longer sequences it runs);
    ``(key, None)`` for models that set positions otherwise (rotary, relative), which
    may run longer sequences. A table whose first rows are no positions holds fewer:
    OPT's and BART's start at their `offset` 2 (an embedding of `limit` + 2 rows, not
    found, so their sequences ended in "index out of range"), RoBERTa's after its
    `padding_idx` (514 rows hold 512 positions: 513 tokens passed and failed)."""
    cfg = getattr(model, "config", None)
    try:
        words = model.get_input_embeddings().weight  # type: ignore[operator, union-attr]
    except Exception:  # not a Hugging Face model, or one without an embedding table
        words = None
    tables = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Embedding) and m.weight is not words  # tied copies too
    ]
    for key in ("n_positions", "max_position_embeddings"):
        limit = getattr(cfg, key, None)
        if not (isinstance(limit, int) and limit > 0):
            continue
        for m in tables:
            offset = getattr(m, "offset", 0)
            offset = offset if isinstance(offset, int) and offset > 0 else 0
            if m.num_embeddings - offset != limit:
                continue
            if not offset and m.padding_idx is not None and 0 <= m.padding_idx < limit:
                return key, limit - m.padding_idx - 1  # positions count on from padding_idx
            return key, limit
    return "", None


def mask_misfit(name: str, shape: tuple[int, ...], mask: tuple[int, ...]) -> str:
    """Why rows ``shape`` do not fit the attention ``mask``: the mask was blamed for a
    layer whose positions are not the tokens (a Perceiver's latents)."""
    if len(mask) != 2:  # a 4-D mask of the model's own ([batch, 1, q, k]) was named alone
        return (
            f"Layer '{name}' has shape {shape} but the attention mask has shape {mask}; "
            "saeatlas reads which tokens are padding from a [batch, seq] mask of 1 (token) "
            "and 0 (padding). Give `attention_mask` so (the model builds its own from it)."
        )
    if mask[0] != shape[0]:
        return f"Layer '{name}' has shape {shape} but the attention mask has shape {mask}."
    return (
        f"Layer '{name}' gives {shape[1]} positions per sample {list(shape)} where the inputs "
        f"have {mask[1]} tokens: its positions are not the tokens (latents, as a Perceiver's, "
        "or a shortened sequence), so the padding mask cannot say which of its rows are "
        "padding. Record a layer of [batch, seq, d] over the tokens, or give token ids of one "
        "length (an integer array [n, seq]), which need no padding."
    )
