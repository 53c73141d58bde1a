"""Which padding mask selects each recorded layer's rows: a batch's attention mask is
over its input tokens, and some layers' positions are other tokens (an encoder-decoder's
decoder tokens) or no tokens at all (a vision tower's patches)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from ..errors import InputsError

#: Keys of a batch that give an encoder-decoder's decoder tokens (rather than letting the
#: model derive them from the input tokens, as BART does, shifting them right by one).
_DECODER_KEYS = ("decoder_input_ids", "decoder_inputs_embeds", "labels", "decoder_attention_mask")

#: The names transformers gives a model of several towers' projector of another tower's
#: features into the text's width (LLaVA's, PaliGemma's, Idefics3's, BLIP-2's, Gemma 3n's):
#: it holds no sub-config, but its positions are the image's (or sound's), not the text's.
_PROJECTORS = frozenset(
    ("multi_modal_projector", "multimodal_projector", "mm_projector", "connector")
    + ("language_projection", "embed_vision", "embed_audio")
)


#: Words in the names of a Hugging Face config's sub-configs of a tower whose positions
#: are not the text's tokens (CLIP's `vision_config`, BLIP-2's `qformer_config`, ...).
#: Others (an EncoderDecoderModel's `encoder`, T5Gemma's, ColPali's `vlm_config`, MPT's
#: `attn_config`) hold the text's own positions: read as another tower, a BERT2BERT's
#: encoder layers lost the mask and stored their padding as rows, without a word.
_OTHER_TOWER_WORDS = ("vision", "image", "audio", "speech", "video", "qformer", "perceiver")
_OTHER_TOWER_WORDS += ("backbone", "vq", "codec", "acoustic")


def check_attention_mask(mask: Any) -> Any:
    """``mask`` (a dict batch's `attention_mask`), refused where saeatlas cannot read it
    as a ``[batch, seq]`` mask whose nonzero entries are the real tokens: one example's
    (1-D), and an additive mask (0 for a token, -inf or -10000 for padding), whose
    padding was stored as rows and its tokens dropped, without a word."""
    if not isinstance(mask, torch.Tensor):
        return mask
    if mask.ndim < 2:
        raise InputsError(
            f"A dict batch's `attention_mask` has shape {list(mask.shape)}; a batch's "
            "mask is [batch, seq]. A data set iterated gives one example at a time (a "
            "`datasets.Dataset`); give batches of several samples (a DataLoader)."
        )
    values = mask.real if mask.is_complex() else mask
    if mask.dtype != torch.bool and not bool((values >= 0).all()):  # NaN too
        low = values[~(values >= 0)][0]
        raise InputsError(
            f"A dict batch's `attention_mask` holds {float(low):g}: saeatlas reads a mask "
            "of 1 (token) and 0 (padding), and an additive mask (0 for a token, -inf for "
            "padding) would keep the padding and drop the tokens. Give `attention_mask` "
            "as 1 and 0 (`(mask == 0).long()` of an additive one)."
        )
    return mask


def layer_masks(model: torch.nn.Module, hookpoints: Iterable[Any], batch: Any) -> dict[str, Any]:
    """Each hook point's ``[batch, seq]`` padding mask (None: every position is real).

    - The input batch's mask, over its input tokens, by default.
    - A module of an encoder-decoder outside its encoder (``get_encoder()``: the decoder,
      the language-modelling head), whose positions are the decoder's tokens: the batch's
      `decoder_attention_mask`, or None for decoder tokens given without one. The
      encoder's mask selected a T5's given decoder tokens by the encoder's padding:
      padding rows were captured and real ones dropped, without a word. It stays for
      decoder tokens the model derives from the input tokens (BART's, given texts).
    - A speech model's frames (Wav2Vec2's, HuBERT's), given `input_values` and a mask
      over the audio's samples: the mask over its frames, as the model derives it
      (layers of [batch, frames, d] were refused as "positions are not the tokens").
    - A module of another tower than the text's in a model of several (its `config` one
      of the model config's sub-configs other than `text_config`: CLIP's vision model):
      None. The text's mask dropped a CLIP image's patches where its text had padding
      (when the text was as long as the patches; else it was refused as a mismatch).
    """
    hookpoints = list(hookpoints)
    frames = _frame_mask(model, batch)
    masks = {hp.name: batch.mask if frames is None else frames for hp in hookpoints}
    towers = _other_towers(model) if batch.mask is not None else set()
    encoder = encoder_of(model) if any(k in batch.kwargs for k in _DECODER_KEYS) else None
    inside = {id(m) for m in encoder.modules()} if encoder is not None else set()
    own = batch.kwargs.get("decoder_attention_mask")
    for hp in hookpoints:
        if id(hp.module) in towers:
            masks[hp.name] = None
        elif encoder is not None and id(hp.module) not in inside:
            masks[hp.name] = own if isinstance(own, torch.Tensor) else None
    return masks


def _frame_mask(model: torch.nn.Module, batch: Any) -> torch.Tensor | None:
    """A Hugging Face speech model's ``[batch, frames]`` mask of a batch of padded audio
    (`input_values` or `input_features`, and its `attention_mask` over them); None for
    other models."""
    frames_of = getattr(model, "_get_feature_vector_attention_mask", None)
    lengths = getattr(model, "_get_feat_extract_output_lengths", None)
    audio = "input_values" in batch.kwargs or "input_features" in batch.kwargs
    if batch.mask is None or not audio or not callable(frames_of):
        return None
    try:
        n = int(lengths(torch.tensor(batch.mask.shape[1])))  # type: ignore[misc]
        return frames_of(n, batch.mask.long())
    except Exception:  # a model of its own with methods of these names
        return None


def encoder_of(model: torch.nn.Module) -> torch.nn.Module | None:
    """An encoder-decoder Hugging Face model's encoder; None for other models."""
    get_encoder = getattr(model, "get_encoder", None)
    if not getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return None
    try:
        encoder = get_encoder() if callable(get_encoder) else None
    except Exception:  # a model of its own whose encoder is not where transformers looks
        return None
    return encoder if isinstance(encoder, torch.nn.Module) else None


def _other_towers(model: torch.nn.Module) -> set[int]:
    """The ids of a Hugging Face model's modules that belong to a tower other than its
    text's: those whose `config` is a sub-config of the model's of an image's, a sound's
    or a Q-Former's (``_OTHER_TOWER_WORDS``), and every module inside them; and
    its projectors of their features (``_PROJECTORS``), whose rows LLaVA's text mask was
    given: refused as "positions are not the tokens", or mis-masked where as many."""
    cfg = getattr(model, "config", None)
    names = getattr(cfg, "sub_configs", None)
    if cfg is None or not isinstance(names, dict):
        return set()
    others = [getattr(cfg, k, None) for k in names if any(w in k for w in _OTHER_TOWER_WORDS)]
    others = [c for c in others if c is not None]
    if not others:
        return set()
    found: set[int] = set()
    for name, module in model.named_modules():
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        own = getattr(module, "config", None)
        projector = name.rpartition(".")[2] in _PROJECTORS
        if id(parent) in found or projector or any(own is c for c in others):
            found.add(id(module))
    return found
