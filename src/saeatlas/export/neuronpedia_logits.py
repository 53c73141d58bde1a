"""Each feature's direct logit effect for the Neuronpedia export: ``W_dec[f] @ W_U``
through a model's unembedding (TransformerLens ``W_U`` or a Hugging Face output
embedding), without the final layer norm, as SAEDashboard does; its top positive
and negative tokens and their histogram."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..capture.nnsight import check_model_argument, unwrap_model
from ..errors import ConfigError
from ..sae import SparseAutoencoder
from ..store import LayerSpec
from .neuronpedia_schema import rounded

#: SAEDashboard's name for token ids past the tokenizer's vocabulary.
OUT_OF_RANGE = "<|outofrange|>"


class Logits:
    """Each feature's direct logit effect, when there is an unembedding to read."""

    def __init__(self, effects: torch.Tensor | None, vocab: list[str], n_bins: int) -> None:
        self.effects, self.vocab, self.n_bins = effects, vocab, n_bins

    def feature(self, f: int) -> dict[str, Any]:
        if self.effects is None:
            return {
                "neg_str": [],
                "neg_values": [],
                "pos_str": [],
                "pos_values": [],
                "logits_hist_data_bar_heights": [],
                "logits_hist_data_bar_values": [],
            }
        e = self.effects[f]
        n = min(10, e.shape[0])
        pos, neg = e.topk(n), (-e).topk(n)
        heights, edges = np.histogram(e.numpy(), bins=self.n_bins)
        return {
            "pos_str": [self.vocab[i] for i in pos.indices.tolist()],
            "pos_values": rounded(pos.values),
            "neg_str": [self.vocab[i] for i in neg.indices.tolist()],
            "neg_values": rounded(-neg.values),
            "logits_hist_data_bar_heights": rounded(heights),
            "logits_hist_data_bar_values": rounded((edges[:-1] + edges[1:]) / 2),
        }


def logit_effects(
    sae: SparseAutoencoder, model: Any, tokenizer: Any, n_bins: int, layers: Sequence[LayerSpec]
) -> Logits:
    """The direct logit effects ``W_dec @ W_U`` of ``sae``'s features through
    ``model``'s unembedding (none without a model), histograms of ``n_bins`` bars.
    ``layers``: the store's layers the SAE reads."""
    if model is None:
        return Logits(None, [], n_bins)
    check_model_argument(model)  # a spec's text was told it "has no unembedding"
    # the wrapped module of an nnsight model, its weights loaded: those of a LanguageModel
    # built the usual way were on the meta device ("Cannot copy out of meta tensor")
    model, own_tokenizer = unwrap_model(model)
    tokenizer = tokenizer if tokenizer is not None else own_tokenizer
    # a TransformerLens hook_z of n_heads x d_head = d_model units passed the width check
    # below, and its per-head values were read as the residual stream
    per_head = [l for l in layers if l.layout in ("head", "pattern")]
    if per_head:
        raise ConfigError(
            f"Logits need an SAE of the residual stream, but the layer '{per_head[0].name}' "
            f"holds per-head values (layout '{per_head[0].layout}'), which the unembedding "
            "does not read. Leave out --model, or export an SAE of a residual-stream layer "
            "(such as `blocks.N.hook_resid_post`)."
        )
    w_u = None
    if isinstance(getattr(model, "W_U", None), torch.Tensor):  # TransformerLens: [d_model, vocab]
        w_u = model.W_U
    elif (
        callable(getattr(model, "get_output_embeddings", None))
        and model.get_output_embeddings() is not None
    ):
        w_u = model.get_output_embeddings().weight.T  # Hugging Face: [vocab, d_model]
    if w_u is None:
        raise ConfigError(
            f"The {type(model).__name__} has no unembedding (TransformerLens W_U or a Hugging "
            "Face output embedding), so features have no logits; leave out --model, or load "
            "the model with its head (--model-class causal-lm)."
        )
    w_u = w_u.detach().float().cpu()
    if len(sae.cfg.layers) > 1 or sae.cfg.d_in != w_u.shape[0]:
        raise ConfigError(
            f"Logits need an SAE of one layer as wide as the model's residual stream "
            f"({w_u.shape[0]}); this SAE reads {sae.cfg.d_in} units of "
            f"{len(sae.cfg.layers) or 1} layer(s). Leave out --model."
        )
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    n_vocab = w_u.shape[1]
    if tokenizer is not None:  # ids past the tokenizer's vocabulary: SAEDashboard's marker
        names = tokenizer.convert_ids_to_tokens(list(range(n_vocab)))
        vocab = [OUT_OF_RANGE if t is None else str(t) for t in names]
    else:
        vocab = [f"<{i}>" for i in range(n_vocab)]
    effects = sae.W_dec.detach().float().cpu() @ w_u
    return Logits(effects, vocab, n_bins)
