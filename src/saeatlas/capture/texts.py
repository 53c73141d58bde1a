"""Texts as model inputs: tokenising a batch of texts into padded tensors, and how
many tokens of each text are kept (:func:`text_max_length`)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import InputsError
from .positions import position_table
from .transformer_lens import TransformerLensTexts

log = logging.getLogger(__name__)

#: A tokenizer ``model_max_length`` above this sets no limit (transformers' is int(1e30)).
TOKENIZER_NO_LIMIT = 100_000


def check_no_text_batch(item: Any) -> None:
    """Refuse a batch of texts, or a ``(texts, y)`` pair, from an iterable of batches (a
    DataLoader over texts): it ended in "Cannot tell the batch size of a str batch" or
    "A batch of type list is not supported", by its size."""
    pair = isinstance(item, (list, tuple)) and len(item) == 2
    texts = item[0] if pair and isinstance(item[0], (list, tuple)) else item
    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        raise InputsError(
            "The input batches hold texts (a DataLoader over texts?), which are not "
            "tokenised batch by batch: pass the texts as one list with a tokenizer, and "
            "their labels as `labels`; saeatlas batches them itself (`batch_size`)."
        )


def check_tokenizer(tokenizer: Any) -> None:
    """``tokenizer`` (when given) is one: a name ("gpt2") ended the capture in "'str'
    object is not callable" and the Neuronpedia export in an AttributeError."""
    if tokenizer is None or callable(getattr(tokenizer, "encode_texts", None)):
        return
    if not (callable(tokenizer) and callable(getattr(tokenizer, "convert_ids_to_tokens", None))):
        raise InputsError(
            f"`tokenizer` must be a Hugging Face tokenizer, got {type(tokenizer).__name__} "
            f"{tokenizer!r:.60}: load one with transformers.AutoTokenizer.from_pretrained(name)."
        )


def encode_texts(
    tokenizer: Any, chunk: list[str], max_length: int | None
) -> tuple[dict[str, Any], torch.Tensor, list[list[str]]]:
    """``chunk`` tokenised: the forward call's keyword arguments, the ``[batch, seq]``
    mask of real tokens, and per text the token string at each position."""
    if callable(getattr(tokenizer, "encode_texts", None)):  # a model's own text path
        return tokenizer.encode_texts(chunk, max_length)
    enc = tokenizer(chunk, truncation=True, max_length=max_length)
    kwargs, mask = _pad(tokenizer, enc)
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in kwargs["input_ids"]]
    return kwargs, mask, tokens


def count_cut(chunk: list[str], mask: torch.Tensor, tokenizer: Any, max_length: int | None) -> int:
    """How many of ``chunk``'s texts ``max_length`` cut: those that fill it are
    tokenised again, whole."""
    if max_length is None:
        return 0
    full = [t for t, n in zip(chunk, mask.sum(1).tolist()) if n >= max_length]
    if not full:
        return 0
    if callable(getattr(tokenizer, "encode_texts", None)):
        _, whole, _ = tokenizer.encode_texts(full, None)
    else:  # verbose=False: no warning that the whole text is longer than the model takes
        whole = _pad(tokenizer, tokenizer(full, verbose=False))[1]
    return int((whole.sum(1) > max_length).sum())


def tokens_per_text(tokenizer: Any, max_length: int | None) -> int | None:
    """What texts are cut to: ``max_length``, else the tokenizer's own real limit."""
    own = getattr(tokenizer, "model_max_length", None)
    if max_length is None and isinstance(own, int) and own <= TOKENIZER_NO_LIMIT:
        return own
    return max_length


def _pad(tokenizer: Any, enc: Mapping[str, list[list[int]]]) -> tuple[dict[str, Any], torch.Tensor]:
    """Tokenised texts padded into tensors, and the ``[batch, seq]`` mask of real tokens.

    Padding is done here rather than by the tokenizer, because many causal-LM
    tokenizers (GPT-2's, Llama's) have no pad token: any id will do, since the
    attention mask hides padding from the model and its rows are dropped.
    Padding goes on the right whatever the tokenizer's ``padding_side``: left
    padding (set for generation, as nnsight's ``LanguageModel`` does) moves every
    token of a shorter text to later positions in models that do not derive
    position ids from the mask (GPT-2), so its rows would differ from the text's own.
    """
    lengths = [len(ids) for ids in enc["input_ids"]]
    width = max(lengths)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    fill = {"input_ids": pad_id, "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}

    def pad(row: list[int], value: int) -> list[int]:
        return list(row) + [value] * (width - len(row))

    kwargs = {k: torch.tensor([pad(r, fill.get(k, 0)) for r in rows]) for k, rows in enc.items()}
    mask = torch.tensor([pad([1] * n, 0) for n in lengths])
    return kwargs, kwargs.get("attention_mask", mask)


class PaddingWarnings:
    """Warnings on the ``[batch, seq]`` attention masks of dict batches, seen one batch
    at a time (:meth:`see`): padding before a sample's tokens, once, for the reason
    :func:`_pad` pads texts on the right; and after the last batch (:meth:`finish`),
    samples whose mask holds no real token, which have no rows (they had none without a
    word, where an empty text is named). The rows are kept as the model gave them."""

    def __init__(self) -> None:
        self.left, self.n, self.empty = False, 0, []

    def see(self, mask: Any, n_samples: int) -> None:
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            real = mask.to(torch.bool)
            self.empty += [self.n + int(i) for i in torch.nonzero(~real.any(1)).flatten()]
            if not self.left and bool((~real[:, :-1] & real[:, 1:]).any()):
                self.left = True
                warnings.warn(
                    "Dict batches padded on the left (a tokenizer's padding_side='left', set "
                    "for generation): a model that does not count positions from the mask "
                    "(GPT-2) sees a shorter text's tokens at later positions than the text "
                    "alone, so its rows differ from the text's own, and rows.parquet's "
                    "`position` counts the padding. Pad on the right (padding_side='right'), "
                    "as saeatlas pads texts.",
                    stacklevel=3,
                )
        self.n += n_samples

    def finish(self) -> None:
        if self.empty:  # their samples keep their numbers but have no rows
            warnings.warn(
                f"{len(self.empty):,} of {self.n:,} samples of the dict batches have an "
                f"`attention_mask` of zeros (the first, sample {self.empty[0]}), no real "
                "token, so they have no rows in the store. Drop them, or check the masks.",
                stacklevel=3,
            )


def text_max_length(
    model: torch.nn.Module, inputs: Any, tokenizer: Any, max_length: int | None
) -> int | None:
    """Tokens per text: ``max_length`` when given; else, when the tokenizer sets no
    real limit of its own, the positions the model's config says it has."""
    if max_length is not None or tokenizer is None or not is_texts(inputs):
        return max_length
    if isinstance(tokenizer, TransformerLensTexts):
        return getattr(model.cfg, "n_ctx", None)  # what to_tokens cuts texts to
    own = getattr(tokenizer, "model_max_length", None)
    if own is not None and own <= TOKENIZER_NO_LIMIT:
        return None  # the tokenizer cuts texts to its own limit
    cfg = getattr(model, "config", None)
    # a table of positions holds fewer than its config says when its first rows are none
    # (RoBERTa's 514 rows hold 512): texts cut to 514 tokens were then refused
    table = position_table(model)
    for key in (table[0],) if table[1] is not None else ("max_position_embeddings", "n_positions"):
        limit = table[1] if table[1] is not None else getattr(cfg, key, None)
        if isinstance(limit, int) and limit > 0:
            log.info(
                "Texts are cut to %d tokens, the model's `%s` (its tokenizer sets no limit); "
                "--max-length (`max_length`) sets another.",
                limit,
                key,
            )
            return limit
    return None


def is_texts(inputs: Any) -> bool:
    """Whether ``inputs`` is a list of texts."""
    return bool(isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str))


def check_token_ids(inputs: Any, token_ids: bool) -> None:
    """An array given to a model that embeds token ids (``token_ids``) must be integer
    token ids ``[n, seq]`` with at least one position. Other arrays reached the model
    and ended in torch's error, or in a shape check of a recorded layer that named the
    layer and `output_index` for ids of one sequence ``[seq]``."""
    if not token_ids:
        return
    shape = list(inputs.shape)
    integer = (
        not (inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool)
        if isinstance(inputs, torch.Tensor)
        else inputs.dtype.kind in "iu"
    )
    if integer and len(shape) == 2 and shape[1] > 0:
        return
    what = f"{inputs.dtype} {shape}" + (
        ", no token per sample" if integer and len(shape) == 2 else ""
    )
    raise InputsError(
        f"The model reads token ids (it has an input embedding), so array inputs must be "
        f"integers [n, seq] with a token or more per sample; these are {what}. Give token "
        "ids of shape [n, seq] (np.int64), or texts (a .txt file) for its tokenizer."
    )
