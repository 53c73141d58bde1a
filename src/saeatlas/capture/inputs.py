"""Inputs for capture: arrays, iterables of batches, texts with a tokenizer (files are
read by :mod:`.input_files`, texts tokenised by :mod:`.texts`).

Everything becomes a stream of :class:`InputBatch`: what to pass to the model,
how many samples the batch holds, its attention mask, and per-sample metadata
(labels, texts, token strings) for ``rows.parquet``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputsError
from ..store.requests import whole_number
from .labels import label_array, labels_of
from .masks import check_attention_mask
from .nnsight import unwrap_model
from .texts import (
    PaddingWarnings,
    check_no_text_batch,
    check_token_ids,
    check_tokenizer,
    count_cut,
    encode_texts,
    is_texts,
    tokens_per_text,
)
from .transformer_lens import TransformerLensTexts, is_transformer_lens


@dataclass
class InputBatch:
    """One batch of model inputs."""

    args: tuple[Any, ...]
    """Positional arguments of the forward call."""
    kwargs: dict[str, Any]
    """Keyword arguments of the forward call (Hugging Face dict batches)."""
    n_samples: int
    mask: torch.Tensor | None = None
    """``[batch, seq]`` attention mask; 0 marks padding."""
    labels: np.ndarray | None = None
    """``[batch]`` one label per sample."""
    texts: list[str] | None = None
    tokens: list[list[str]] | None = None
    """Per sample, the token string at each sequence position."""
    extra: dict[str, Any] = field(default_factory=dict)
    n_cut: int = 0
    """Texts of this batch that were longer than the tokens kept, and cut."""


def _n_samples(x: Any) -> int:
    if isinstance(x, (torch.Tensor, np.ndarray)):
        if x.ndim == 0:
            raise InputsError("Inputs must have a batch dimension; got a 0-d array.")
        return int(x.shape[0])
    if isinstance(x, Mapping):
        for v in x.values():
            if isinstance(v, (torch.Tensor, np.ndarray)) and v.ndim:
                return int(v.shape[0])
    if isinstance(x, (list, tuple)) and x:
        return _n_samples(x[0])
    if isinstance(x, Mapping):  # one example of a data set, iterated: {'text': 'a', 'label': 0}
        kinds = ", ".join(f"{k!r}: {type(v).__name__}" for k, v in list(x.items())[:6])
        raise InputsError(
            f"A dict batch ({{{kinds}}}) holds no tensor or array with a batch axis, so its "
            "batch size is unknown. Each batch holds several samples: a data set iterated "
            "gives one example at a time (a `datasets.Dataset`); give batches (a DataLoader "
            "of its token ids), or its texts as a list with a tokenizer."
        )
    raise InputsError(f"Cannot tell the batch size of a {type(x).__name__} batch.")


#: Integer dtypes that torch's embeddings refuse ("Expected tensor for argument #1
#: 'indices' to have one of the following scalar types: Long, Int"); uint16-64 are
#: widened for every model, since torch has few ops for them.
_NARROW_INTS = (np.uint8, np.int8, np.int16)


def _as_tensor(x: Any, float_dtype: torch.dtype | None = None, token_ids: bool = False) -> Any:
    """Arrays become tensors; floating ones become ``float_dtype`` when given (the
    model's), else float64 arrays become float32 (NumPy's default is not torch's).
    With ``token_ids`` (the model embeds integer token ids), uint8, int8 and int16
    arrays and tensors become int64: for another model they may be images or audio
    samples whose dtype the model reads, so they stay as they are there."""
    narrow = (torch.uint8, torch.int8, torch.int16)
    if token_ids and isinstance(x, torch.Tensor) and x.dtype in narrow:
        x = x.long()
    if token_ids and isinstance(x, np.ndarray) and x.dtype.type in _NARROW_INTS:
        x = x.astype(np.int64)
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biufc":
            texts = x.dtype.kind in "SU"
            hint = " For texts, pass a list of str (a .txt file on the CLI)." if texts else ""
            raise InputsError(
                f"Inputs of dtype {x.dtype} cannot go to a model; give numbers (float, integer "
                f"token ids or bool).{hint}"
            )
        if not x.dtype.isnative:  # a big-endian file: torch takes the machine's order only
            x = x.astype(x.dtype.newbyteorder("="))
        if x.dtype.kind == "u" and x.dtype.itemsize > 1:
            # torch holds uint16-64 but has few ops for them (no min, no embedding): token
            # ids saved as uint16 (nanoGPT's .bin files) ended in torch's error "'min_all'
            # not implemented for 'UInt16'"
            if x.size and x.dtype.itemsize == 8 and x.max() > np.iinfo(np.int64).max:
                raise InputsError(
                    f"Inputs of dtype {x.dtype} hold {x.max()}, beyond int64, which torch's "
                    "integer inputs (token ids) are; give values below 2**63."
                )
            x = x.astype(np.int64)
        if x.dtype.kind == "f" and x.dtype.itemsize > 8:  # longdouble: torch has none
            x = x.astype(np.float64)
        if float_dtype is None and x.dtype == np.float64:
            float_dtype = torch.float32
        x = torch.from_numpy(np.ascontiguousarray(x))
    if float_dtype is not None and isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.to(float_dtype)
    return x


def _names_token_ids(key: Any) -> bool:
    """Whether a dict batch's ``key`` holds token ids (Hugging Face's ``input_ids``,
    ``decoder_input_ids``, ``token_type_ids``, ``position_ids``: indices into a table)."""
    return isinstance(key, str) and (key == "ids" or key.endswith("_ids"))


def iter_input_batches(
    inputs: Any,
    *,
    batch_size: int = 32,
    tokenizer: Any = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    max_length: int | None = None,
    float_dtype: torch.dtype | None = None,
    token_ids: bool = False,
) -> Iterator[InputBatch]:
    """Batches from any supported kind of input.

    Args:
        inputs: a tensor or array (split along dim 0), a list of strings (needs
            ``tokenizer``), or an iterable of batches: tensors, ``(x, y)`` pairs
            (``y`` becomes the label), or dicts of keyword arguments (Hugging Face).
        batch_size: samples per batch when ``inputs`` is an array or texts.
        tokenizer: a Hugging Face tokenizer, for texts, or an object whose
            ``encode_texts(texts, max_length)`` gives ``(kwargs, mask, tokens)``
            (:class:`~saeatlas.capture.transformer_lens.TransformerLensTexts`).
        labels: one label per sample, aligned with ``inputs``.
        max_length: truncate texts, and arrays of integer token ids ``[n, seq]``, to
            this many tokens (other inputs refuse it: :func:`check_max_length`).
        float_dtype: the dtype floating-point inputs are given in (the model's); by
            default float64 arrays become float32 and other inputs keep their dtype.
        token_ids: the model embeds integer token ids (:func:`~.models.takes_token_ids`):
            uint8, int8 and int16 inputs are read as int64 ids.
    """
    whole_number("batch_size", batch_size, low=1)  # "2", 2.5: TypeErrors; True read as 1
    if isinstance(inputs, (str, Path)):
        raise InputsError(
            "Inputs given as a path; read the file with `load_inputs(path)` first "
            "(the CLI does this for --inputs)."
        )
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        check_max_length(inputs, max_length)
        check_token_ids(inputs, token_ids)
        cut = max_length if max_length is not None and _is_token_ids(inputs) else None
        yield from _array_batches(inputs, batch_size, labels, (float_dtype, token_ids), cut)
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        if tokenizer is None:
            raise InputsError(
                "Inputs are texts but no tokenizer was given. Pass `tokenizer=` (a Hugging Face "
                "tokenizer), or use a Hugging Face model directory as --model."
            )
        yield from _text_batches(list(inputs), tokenizer, batch_size, labels, max_length)
    elif isinstance(inputs, Mapping):  # iterated, its keys were taken for batches
        raise InputsError(
            f"Inputs are one mapping ({type(inputs).__name__} of {', '.join(map(str, inputs))[:80]}"
            "): the keyword arguments of one batch, such as a tokenizer's output. Pass an "
            "iterable of such batches (a DataLoader, or a list of dicts), or the texts with "
            "`tokenizer=`."
        )
    elif isinstance(inputs, Iterable):
        check_max_length(inputs, max_length)
        yield from _iterable_batches(inputs, labels, (float_dtype, token_ids))
    else:
        raise InputsError(
            f"Unsupported inputs of type {type(inputs).__name__}; pass a tensor/array, a list "
            "of texts with a tokenizer, or an iterable of batches (e.g. a DataLoader)."
        )


def check_max_length(inputs: Any, max_length: int | None) -> None:
    """Refuse ``max_length`` for inputs it cannot cut: it applies to texts and to arrays
    of integer token ids ``[n, seq]`` (their positions past it are dropped); arrays of
    other numbers and iterables of batches are given to the model as they are."""
    if max_length is None or _is_token_ids(inputs):
        return
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        return
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        what = f"an array of {inputs.dtype} with shape {list(inputs.shape)}"
    else:
        what = f"an iterable of batches ({type(inputs).__name__})"
    raise InputsError(
        f"--max-length (`max_length`) cuts texts and arrays of integer token ids [n, seq], "
        f"but the inputs are {what}; drop --max-length, or cut the inputs yourself."
    )


def _is_token_ids(x: Any) -> bool:
    """Whether ``x`` is an array of integer token ids with a sequence axis."""
    if isinstance(x, torch.Tensor):
        return x.ndim >= 2 and not (
            x.is_floating_point() or x.is_complex() or x.dtype == torch.bool
        )
    return isinstance(x, np.ndarray) and x.ndim >= 2 and x.dtype.kind in "iu"


def _array_batches(
    x: Any,
    batch_size: int,
    labels: Any,
    dtypes: tuple[torch.dtype | None, bool],
    max_length: int | None = None,
) -> Iterator[InputBatch]:
    """``x`` in batches of ``batch_size`` samples; with ``max_length``, each sample's
    first ``max_length`` positions (axis 1: token ids)."""
    n = _n_samples(x)
    lab = None if labels is None else label_array(labels, n, "input samples")
    for s in range(0, n, batch_size):
        chunk = _as_tensor(x[s : s + batch_size], *dtypes)
        if max_length is not None:
            chunk = chunk[:, :max_length]
        yield InputBatch(
            (chunk,),
            {},
            int(chunk.shape[0]),
            labels=None if lab is None else lab[s : s + batch_size],
        )


def _text_batches(
    texts: list[str], tokenizer: Any, batch_size: int, labels: Any, max_length: int | None
) -> Iterator[InputBatch]:
    lab = None if labels is None else label_array(labels, len(texts), "texts")
    n_cut, limit, no_tokens = 0, tokens_per_text(tokenizer, max_length), []
    for s in range(0, len(texts), batch_size):
        chunk = texts[s : s + batch_size]
        kwargs, mask, tokens = encode_texts(tokenizer, chunk, max_length)
        no_tokens += [s + i for i, n in enumerate(mask.sum(1).tolist()) if n == 0]
        cut = count_cut(chunk, mask, tokenizer, limit)
        n_cut += cut
        yield InputBatch(
            (),
            kwargs,
            len(chunk),
            mask=mask,
            labels=None if lab is None else lab[s : s + batch_size],
            texts=chunk,
            tokens=tokens,
            n_cut=cut,
        )
    if n_cut:
        warnings.warn(
            f"{n_cut:,} of {len(texts):,} texts were longer than {limit:,} tokens and "
            f"were cut to their first {limit:,} (the model's limit unless --max-length "
            "set it): their later tokens are not used. Split long texts to use them whole.",
            stacklevel=2,
        )
    if no_tokens:  # their samples keep their numbers but have no rows
        warnings.warn(
            f"{len(no_tokens):,} of {len(texts):,} texts have no tokens (the first, text "
            f"{no_tokens[0]}, is {texts[no_tokens[0]][:40]!r}), so their samples have no rows "
            "in the store. Drop empty texts, or check the tokenizer.",
            stacklevel=2,
        )


def _iterable_batches(
    batches: Iterable[Any], labels: Any, dtypes: tuple[torch.dtype | None, bool]
) -> Iterator[InputBatch]:
    if isinstance(batches, Sequence) and len(batches) and isinstance(batches[0], str):
        _texts_not_listed(batches)  # before `labels`, which texts take
    if labels is not None:
        raise InputsError(
            "`labels` applies to array or text inputs; with an iterable of batches, yield "
            "(x, y) pairs or put 'labels' in dict batches instead."
        )
    padding = PaddingWarnings()
    for item in batches:
        if isinstance(item, str):
            _texts_not_listed(batches)
        check_no_text_batch(item)
        pair = isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], Mapping)
        item, y = item if pair else (item, None)  # `(dict, y)`: the dict was passed as `x`
        if isinstance(item, Mapping):
            # only the token ids are widened: a uint8 `pixel_values` beside `input_ids`
            # is an image, in the dtype the model reads
            kwargs = {
                k: _as_tensor(v, dtypes[0], dtypes[1] and _names_token_ids(k))
                for k, v in item.items()
            }
            n, mask = _n_samples(kwargs), check_attention_mask(kwargs.get("attention_mask"))
            padding.see(mask, n)
            y = kwargs.get("labels", kwargs.get("label")) if y is None else y
            yield InputBatch((), kwargs, n, mask=mask, labels=labels_of(y, n))
        elif (
            isinstance(item, (list, tuple))
            and len(item) == 2
            or (isinstance(item, list) and len(item) == 1 and isinstance(item[0], torch.Tensor))
        ):  # `[x]`: a DataLoader over TensorDataset(x) (was "a batch of type list")
            x, y = _as_tensor(item[0], *dtypes), item[1] if len(item) == 2 else None
            n = _n_samples(x)
            yield InputBatch((x,), {}, n, labels=labels_of(y, n))
        elif isinstance(item, (torch.Tensor, np.ndarray)):
            x = _as_tensor(item, *dtypes)
            yield InputBatch((x,), {}, _n_samples(x))
        else:
            raise InputsError(
                f"A batch of type {type(item).__name__} is not supported; yield tensors, "
                "(x, y) pairs or dicts of keyword arguments."
            )
    padding.finish()


def _texts_not_listed(batches: Any) -> None:
    """Refuse texts in another container than a list (a `datasets` Column, a generator):
    they were taken for an iterable of batches, "a batch of type str"."""
    raise InputsError(
        f"The inputs ({type(batches).__name__}) hold texts, which are read as texts only "
        "from a list; pass `list(inputs)` (with a tokenizer)."
    )


def _check_array(inputs: Any) -> None:
    """Refuse an array or tensor whose values cannot be read as they stand: one on the meta
    device (shapes without values) or sparse ended in a traceback of torch's ("Cannot copy
    out of meta tensor"); a NumPy masked array was captured with its masked values as if
    they were data, without a word."""
    if isinstance(inputs, torch.Tensor) and (inputs.is_meta or inputs.layout != torch.strided):
        what, fix = (
            ("a tensor on the meta device (shapes without values)", "the data itself")
            if inputs.is_meta
            else (f"a sparse tensor ({inputs.layout})", "`x.to_dense()`")
        )
        raise InputsError(f"The inputs are {what}; give a dense tensor of values ({fix}).")
    if isinstance(inputs, np.ma.MaskedArray) and np.ma.count_masked(inputs):
        raise InputsError(
            f"The inputs are a masked array with {np.ma.count_masked(inputs):,} masked values, "
            "which a model would read as the values under the mask; fill them "
            "(`x.filled(0)`) or drop those samples, and give a plain array."
        )


def model_and_tokenizer(model: Any, inputs: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The module to run (an nnsight model's wrapped one) and the tokenizer for
    ``inputs``: ``tokenizer``, else the nnsight model's own; texts for a TransformerLens
    model go through its own tokenizer (:class:`TransformerLensTexts`), as its
    ``run_with_cache`` takes them. One rule for capture, the downstream loss and the
    ablation, so that each runs the model on the same tokens."""
    check_tokenizer(tokenizer)
    _check_array(inputs)
    model, own = unwrap_model(model)
    tokenizer = tokenizer if tokenizer is not None else own
    if is_texts(inputs) and is_transformer_lens(model):
        tokenizer = TransformerLensTexts(model)
    return model, tokenizer


def count_samples(inputs: Any) -> int | None:
    """Samples in ``inputs`` where known up front (a DataLoader's dataset too)."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return _n_samples(inputs)  # refuses a 0-d array
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str):
        return len(inputs)
    dataset = getattr(inputs, "dataset", None)  # a DataLoader
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None


def known_length(inputs: Any) -> int | None:
    """Samples in an array or a list of texts (None for an iterable of batches)."""
    if isinstance(inputs, (torch.Tensor, np.ndarray)) and inputs.ndim:
        return int(inputs.shape[0])
    return len(inputs) if is_texts(inputs) else None
