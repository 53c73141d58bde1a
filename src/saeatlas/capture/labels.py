"""Labels of the inputs' samples, as ``rows.parquet`` stores them: one number, string
or true/false per sample, of one kind in every batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from ..errors import InputsError

_STORABLE = "give labels that are all numbers (integers of at most 64 bits) or all strings"


def label_array(labels: Any, n: int, what: str) -> np.ndarray:
    """``labels`` as an array whose first axis holds one entry per sample (a loss's
    targets may have more axes: per-task labels, say; :func:`check_stored_labels` says
    what a capture can store)."""
    lab = label_values(labels)
    if lab.shape[0] != n:
        raise InputsError(
            f"Labels have shape {list(lab.shape)} for {n} {what}; give one label per sample."
        )
    return lab


def labels_of(y: Any, n: int) -> np.ndarray | None:
    """The labels in the ``y`` of an ``(x, y)`` batch of ``n`` samples, or None when ``y``
    is not one label per sample (token-level targets, say)."""
    if y is None:
        return None
    arr = _native(host_labels(y))
    if arr.shape == (n, 1):  # a column of one label per sample (`y[:, None]`, a loss's
        arr = arr[:, 0]  # targets): was taken for token-level targets, and not stored
    if arr.ndim != 1 or len(arr) != n:
        return None
    return arr


def check_stored_labels(labels: Any, n: int | None) -> None:
    """Refuse labels that ``rows.parquet`` cannot store: one number or string per
    sample (``n`` samples, when known), all of one type."""
    if labels is not None:
        _stored_type(label_array(labels, n, "input samples") if n is not None else labels, n)


class SeenLabels(NamedTuple):
    """What the labels of the batches so far were (:func:`check_batch_labels`)."""

    kind: pa.DataType
    """The type of the first batch's labels."""
    inexact: int | None = None
    """An integer label beyond 2**53, which float64 may not hold (nor Arrow join)."""
    fractions: bool = False
    """Whether a batch had float labels (integer and float labels join as floats)."""


def check_batch_labels(labels: Any, seen: SeenLabels | None, where: str) -> SeenLabels | None:
    """What the labels of the batches so far are, ``seen`` (None: none had labels) with
    one batch's ``labels`` (of ``where``), checked to join them. An iterable of ``(x,
    y)`` batches whose ``y`` changed kind (numbers, then strings) ended in pyarrow's
    ArrowInvalid once its shards were joined (or, in one shard, stored every label as a
    string), and so did integers beyond 2**53 joined with float labels (in one shard,
    they were stored rounded)."""
    if labels is None:
        return seen
    kind = _stored_type(labels)
    if pa.types.is_null(kind):  # no label known in this batch: any kind fits
        return seen
    if seen is not None and _family(kind) != _family(seen.kind):
        raise InputsError(
            f"The labels of {where} are {_family(kind)}s ({kind}), but those of the batches "
            f"before it are {_family(seen.kind)}s ({seen.kind}): a store's labels are of one "
            "kind. Give every batch labels of one type: all numbers, or all strings."
        )
    seen = seen or SeenLabels(kind)
    if pa.types.is_integer(kind) and seen.inexact is None:
        lab = label_values(labels)
        off = lab[(lab > 2**53) | (lab < -(2**53))]  # what Arrow joins with floats
        seen = seen._replace(inexact=int(off[0]) if off.size else None)
    seen = seen._replace(fractions=seen.fractions or pa.types.is_floating(kind))
    if seen.inexact is not None and seen.fractions:
        raise InputsError(
            f"The labels of {where} and the batches before it mix fractions with the integer "
            f"{seen.inexact}, beyond 2**53, which would be stored as a float, rounded. Give "
            "every batch integer labels, or all float ones."
        )
    return seen


def label_values(labels: Any) -> np.ndarray:
    """``labels`` as an array, or :class:`InputsError` when they are no array of labels
    (ragged, a generator, a set, a dict or a text)."""
    try:
        lab = host_labels(labels)
    except ValueError as e:  # ragged
        raise InputsError(f"Labels are not one per sample ({e}).") from e
    if isinstance(labels, (list, tuple)) and lab.dtype.kind == "f":
        check_exact_floats(labels, "Labels")
    if lab.ndim == 0:  # a generator, a set, a dict or a text was told "shape []"
        raise InputsError(
            f"Labels must be a list or an array of one label per sample, got "
            f"{type(labels).__name__}{f' {labels!r:.40}' if isinstance(labels, str) else ''}."
        )
    return _native(lab)


def check_exact_floats(values: Sequence[Any], what: str) -> None:
    """Refuse ``values`` that mix floats with integers beyond 2**53, which float64, the
    array they make, cannot hold: 9007199254740993 beside 2.5 was stored as
    9007199254740992, without a word."""
    big = next((v for v in values if isinstance(v, int) and int(float(v)) != v), None)
    if big is not None and any(isinstance(v, float) for v in values):
        raise InputsError(
            f"{what} mix fractions with the integer {big}, beyond 2**53: stored as a float "
            "beside them, it would be rounded. Give labels that are all integers, or all "
            "strings."
        )


def host_labels(labels: Any) -> np.ndarray:
    """``labels`` as a NumPy array; a tensor of half-precision labels as float32: NumPy has
    no bfloat16 (``np.asarray`` of one ended the capture in "Got unsupported ScalarType
    BFloat16"), and float16 ones were stored as Arrow's halffloat, which pandas cannot
    index (the analysis's label profiles ended in "float16 indexes are not supported")."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu()
        if labels.dtype in (torch.float16, torch.bfloat16):
            labels = labels.float()
    return np.asarray(labels)


def _native(lab: np.ndarray) -> np.ndarray:
    """``lab`` in this machine's byte order, half-precision floats as float32
    (:func:`host_labels`): Arrow refused big-endian labels (a ``.npy`` saved as ``>i8``) as
    "Byte-swapped arrays not supported", and the capture told the user to give numbers,
    which they were."""
    if lab.dtype == np.float16:
        return lab.astype(np.float32)
    return lab if lab.dtype.isnative else lab.astype(lab.dtype.newbyteorder("="))


def _stored_type(labels: Any, n: int | None = None) -> pa.DataType:
    lab = label_values(labels)
    if lab.ndim != 1:
        raise InputsError(
            f"Labels have shape {list(lab.shape)} for {n if n is not None else 'the'} input "
            "samples; a capture stores one label per sample (a number or a string) in "
            "rows.parquet: give a 1-D array."
        )
    if lab.dtype.kind in "UO":
        for i, v in enumerate(lab.tolist()):
            if isinstance(v, str) and not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:
                    raise InputsError(
                        f"Label {i} ({v!r}) holds {v[e.start]!r}, half of a surrogate pair, "
                        "which is no text rows.parquet can store; give labels of whole "
                        "characters."
                    ) from e
    try:
        kind = pa.array(lab.astype(object) if lab.dtype.kind == "U" else lab).type
    # of mixed types; OverflowError: an integer past 64 bits (2**70 in a .jsonl)
    except (TypeError, ValueError, OverflowError, pa.ArrowException) as e:
        raise InputsError(
            f"Labels cannot be stored in rows.parquet ({str(e).strip()}); {_STORABLE}."
        ) from e
    if lab.dtype == np.uint64 and lab.size and int(lab.max()) >= 2**63:
        # past int64, which labels of other batches (and other ranks) join as
        raise InputsError(f"Labels hold {int(lab.max())}, beyond int64; {_STORABLE}.")
    if pa.types.is_nested(kind):  # dicts were stored, and the analysis ended in a TypeError
        raise InputsError(f"Labels of {kind} are no labels rows.parquet can hold; {_STORABLE}.")
    return kind


def _family(kind: pa.DataType) -> str:
    """What a label type is, as far as joining batches goes (int64 and float64 join)."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "number"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "true/false value"
    return str(kind)
