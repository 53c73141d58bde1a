"""Per-sample losses of a model's output on one batch, for ablation and loss recovered.

- ``cross-entropy``: a classifier's logits ``[batch, classes]`` against the
  batch's labels (one label per sample).
- ``next-token``: a causal language model's logits ``[batch, seq, vocab]``
  against its input ids shifted by one: each sample's mean cross-entropy over
  the tokens it predicts, padding masked (the language-modelling loss that
  SAELens and Gao et al. 2024 splice reconstructions into).

A loss function takes ``(model output, InputBatch)`` and returns ``[batch]``
losses (or ``[batch, terms]`` for a model with several tasks; see
:func:`saeatlas.structure.causal.ablation.ablate_modules`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from ._validation import shown
from .capture.inputs import InputBatch
from .capture.outputs import select_tensor
from .errors import ConfigError, ShapeError

PerSampleLoss = Callable[[Any, InputBatch], torch.Tensor]


def per_sample_cross_entropy(output: Any, batch: InputBatch) -> torch.Tensor:
    """``[batch]`` cross-entropy of a classifier's logits against the batch's labels."""
    if batch.labels is None:
        raise ConfigError(
            "The cross-entropy loss needs one label per input (--labels FILE); for a causal "
            "language model use the next-token loss (--loss next-token)."
        )
    logits = model_logits(output, "cross-entropy").float()
    if logits.ndim != 2:
        raise ShapeError(
            f"The cross-entropy loss needs logits [batch, classes]; the model gives shape "
            f"{list(logits.shape)}{_read_as_logits(output)}. {_other_logits(output, logits)}"
        )
    target = torch.as_tensor(class_indices(batch.labels, logits.shape[1]), device=logits.device)
    return torch.nn.functional.cross_entropy(logits, target, reduction="none")


def model_logits(output: Any, loss: str | None = None) -> torch.Tensor:
    """The logits of a model's ``output``: its ``logits`` (a Hugging Face output's, whose
    first tensor is the ``loss`` when the batch holds ``labels``, or a field of a dict,
    dataclass or NamedTuple of the model's own), else its first tensor.

    A Hugging Face output without logits (``last_hidden_state``: a model without its
    head) is refused, since hidden states read as logits gave a loss without a word
    whenever the hidden size exceeded the token ids (a character-level model); with
    ``loss`` ``'next-token'`` so are a masked or encoder-decoder language model's logits,
    which predict the token at their own position (a masked one) or the decoder's."""
    if isinstance(output, Mapping) and "logits" not in output and "last_hidden_state" in output:
        raise ShapeError(
            f"The {loss or 'model'} loss needs the model's logits, but it gives hidden states "
            f"({type(output).__name__} with `last_hidden_state`, no `logits`): a model "
            "without its head. Give the model with its head (a Hugging Face directory loads "
            "it with --model-class causal-lm, or checkpoint for the class it was saved from, "
            "a classifier's; `model_class` in a run config)."
        )
    name = type(output).__name__
    if loss == "next-token" and (
        _is_masked_lm(output)
        or (isinstance(output, Mapping) and "encoder_last_hidden_state" in output)
    ):
        kind = "a masked" if _is_masked_lm(output) else "an encoder-decoder"
        raise ShapeError(
            f"The next-token loss is a causal language model's, but the model is {kind} "
            f"language model ({name}), whose logits at a position do not predict the next "
            "input token; the loss would be another one's, without a word. Give a causal "
            "language model (*ForCausalLM), or ablate with a classifier and --labels."
        )
    # by name in a dict, a dataclass or a NamedTuple of the model's own too: the first
    # tensor of `Out(hidden, logits)` was read as the logits, a loss of hidden states
    named = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(named, torch.Tensor) and not isinstance(output, torch.Tensor):
        return named
    try:
        return select_tensor(output, "model output")
    except ShapeError as e:  # "Layer 'model output' gives a NoneType": no layer's words
        if not str(e).endswith(("not a tensor.", "holds no tensor.")):
            raise
        raise ShapeError(
            f"The {loss or 'model'} loss needs the model's logits, but its forward returns "
            f"{'None' if output is None else 'a ' + type(output).__name__ + ' of no tensor'}. "
            "Give a model whose forward returns its logits (a tensor, or a tuple or dict "
            "whose first tensor they are)."
        ) from None


def _is_masked_lm(output: Any) -> bool:
    """Whether ``output`` is a Hugging Face masked language model's: ``MaskedLMOutput``,
    and the models' own kinds of it (``LongformerMaskedLMOutput``,
    ``PerceiverMaskedLMOutput``, ``LukeMaskedLMOutput``), whose logits at a position were
    read as the next token's prediction without a word."""
    return "MaskedLM" in type(output).__name__


def _read_as_logits(output: Any) -> str:
    """Where the logits were read in a tuple or list ``output`` of several tensors (its
    first tensor): a model returning ``(loss, logits)`` was told of shape [] alone."""
    if not isinstance(output, (tuple, list)) or isinstance(output, Mapping):
        return ""
    shapes = [list(t.shape) for t in output if isinstance(t, torch.Tensor)]
    if len(shapes) < 2:
        return ""
    return (
        f" (its output is a {type(output).__name__} of tensors of shapes "
        f"{', '.join(map(str, shapes[:4]))}; its first tensor is read as the logits)"
    )


def _other_logits(output: Any, logits: torch.Tensor) -> str:
    """What to do about logits that are not ``[batch, classes]``: the next-token loss
    only for a causal language model's ``[batch, seq, vocab]`` (it was advised for a
    segmentation model's ``[batch, classes, H, W]``, a 0-d loss and a masked LM's)."""
    if logits.ndim == 3 and not _is_masked_lm(output):
        return "For a language model's [batch, seq, vocab] logits use --loss next-token."
    return (
        "Give a classifier whose output (or its first tensor) is its logits [batch, "
        "classes]; from Python, a `loss_fn` of your own can read another output."
    )


def class_indices(labels: Any, n_classes: int | None = None) -> np.ndarray:
    """``labels`` ``[n]`` as the cross-entropy's class indices (int64), each in
    ``[0, n_classes)`` when that is known; else a ConfigError naming a label that is none."""
    labels = given = np.asarray(labels)
    if labels.dtype.kind in "US":  # a text file's lines: '2' (or '2.0') is class 2
        try:
            labels = labels.astype(np.float64)
        except ValueError:
            pass  # a word: no class index, named below
    top = np.inf if n_classes is None else n_classes
    if labels.dtype.kind in "iubf":
        wrong = ~np.isfinite(labels) | (labels % 1 != 0) | (labels < 0) | (labels >= top)
    else:  # strings, objects
        wrong = np.ones(labels.shape, bool)
    if labels.ndim != 1 or wrong.any():
        # the label as given (a text file's '-1' was named as -1.0), cut short: a JSON
        # list in one line was quoted whole, thousands of characters
        bad = given[wrong][0] if wrong.any() else f"of shape {list(labels.shape)}"
        bad = bad.item() if isinstance(bad, np.generic) else bad  # None stays None
        which = (
            "" if n_classes is None else f", 0 to {n_classes - 1} (the model gives {top} logits)"
        )
        raise ConfigError(
            f"The cross-entropy loss needs one class index per input{which}; a label is "
            f"{shown(bad)}. Give class indices in --labels."
        )
    return labels.astype(np.int64)


def _input_ids(batch: InputBatch) -> torch.Tensor:
    ids = batch.kwargs.get("input_ids")
    if ids is None and torch.is_tensor(batch.kwargs.get("input")):  # TransformerLens's name
        ids = batch.kwargs["input"]
    if ids is None:
        ids = next(
            (a for a in batch.args if torch.is_tensor(a) and not a.is_floating_point()), None
        )
    if ids is None:
        raise ConfigError(
            "The next-token loss needs token ids: texts with the model's tokenizer, "
            "`input_ids` in dict batches, or an integer array of ids as the inputs."
        )
    return ids


def per_sample_next_token(output: Any, batch: InputBatch) -> torch.Tensor:
    """``[batch]`` mean next-token cross-entropy of a causal LM over each sample's tokens."""
    logits = model_logits(output, "next-token")
    # int32 ids (a model embeds them as int64 ones) ended in torch's "expected target
    # dtype to be Long or Byte, but got Int"
    ids = _input_ids(batch).to(logits.device, torch.long)
    if logits.ndim != 3 or logits.shape[:2] != ids.shape:
        raise ShapeError(
            f"The next-token loss needs logits [batch, seq, vocab] for token ids "
            f"{list(ids.shape)}; the model gives shape {list(logits.shape)}. Load the model "
            "with its language-modelling head (e.g. AutoModelForCausalLM)."
        )
    top = int(ids.max()) if ids.numel() else -1
    if top >= logits.shape[-1]:  # a model's hidden states: torch's "Target 1996 is out of bounds"
        raise ShapeError(
            f"The next-token loss needs logits over the vocabulary [batch, seq, vocab], but "
            f"the model gives {logits.shape[-1]:,} values per token and the token ids go up "
            f"to {top:,}: they are no logits (a model without its language-modelling head "
            "gives hidden states). Give a causal language model with that head (a Hugging "
            "Face directory loads it with --model-class causal-lm, `model_class` in a run "
            "config)."
        )
    real = (
        torch.ones_like(ids, dtype=torch.bool)
        if batch.mask is None
        else batch.mask.to(logits.device).bool()
    )
    pairs = real[:, 1:] & real[:, :-1]  # token t predicts token t + 1, both real
    n = pairs.sum(dim=1)
    if bool((n == 0).any()):
        # "of this batch" named no input: a file of thousands of texts was left to search
        first = int(torch.nonzero(n == 0)[0])
        which = (
            f"the first, text {shown(batch.texts[first])}"
            if batch.texts is not None
            else f"the first, sample {first} of the batch"
        )
        raise ConfigError(
            f"{int((n == 0).sum())} input(s) of a batch have fewer than 2 tokens ({which}), "
            "so nothing to predict for the next-token loss; drop them or use longer texts."
        )
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="none"
    ).view(ids.shape[0], -1)
    return (ce * pairs).sum(dim=1) / n


LOSSES: dict[str, PerSampleLoss] = {
    "cross-entropy": per_sample_cross_entropy,
    "next-token": per_sample_next_token,
}


def loss_function(name: str) -> PerSampleLoss:
    """The per-sample loss called ``name`` (see :data:`LOSSES`)."""
    if name not in LOSSES:
        raise ConfigError(f"Unknown loss {name!r}; expected one of: {list(LOSSES)}.")
    return LOSSES[name]


def needs_labels(name: str) -> bool:
    """Whether the loss called ``name`` compares the output with per-sample labels."""
    return loss_function(name) is per_sample_cross_entropy
