"""What makes two captures the same job, so that ``--resume`` refuses to mix two.

A resumed capture must run the same model on the same inputs, recording the same
layers with the same settings; otherwise its shards would mix two jobs under one
manifest. :func:`capture_job` reduces each of these to a short fingerprint that
the store writer records with every commit and compares on resume.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import types
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .labels import host_labels

#: Values hashed from each end of every parameter, and about as many evenly spaced
#: through it: enough to tell two checkpoints apart without hashing a large model's
#: bytes in full (a sum over every value covers the rest).
EDGE_VALUES = 4096

#: Values summed at once by :func:`_total`, so that no parameter is copied whole.
SUM_CHUNK = 1 << 22


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The bytes of ``t``'s values, for hashing: a view of them where they lie
    contiguous on the CPU, not a copy (``tobytes`` doubled the memory a capture of large
    inputs needed, their fingerprint taken before the first batch)."""
    t = t.detach().to("cpu").contiguous().view(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return _array_bytes(t.numpy())


def _array_bytes(a: np.ndarray) -> np.ndarray:
    """The bytes of a non-object array ``a``, as a view where it is contiguous."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _total(flat: torch.Tensor) -> float:
    """Sum of every value of ``flat`` in float64, taken in chunks on the CPU whatever
    the tensor's device (a GPU's reduction order differs in the last bits: a model
    captured from the CPU and ablated after capture moved it to a GPU would read as
    another model), booleans as 0/1, complex values as their real and imaginary parts."""
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    return float(sum(c.cpu().sum(dtype=torch.float64).item() for c in flat.split(SUM_CHUNK)))


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the module tree (each module's path and class, and the settings
    PyTorch's own modules show, such as ``LeakyReLU``'s slope: a ReLU swapped for a
    Tanh changes no weight), the code of each other module's ``forward`` (``torch.relu``
    edited to ``torch.tanh`` in it changes no module either) and every parameter and
    buffer's name, shape, dtype, edge values, about :data:`EDGE_VALUES` evenly spaced
    values and the float64 sum of all its values (a checkpoint fine-tuned in its middle,
    or one value changed, changes the sum). What it leaves out is in
    :func:`model_details`."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, m in model.named_modules():
        # torch's own extra_repr only: another library's may show object addresses
        own = type(m).__module__.startswith("torch.nn.")
        tree = f"{name}:{type(m).__qualname__}({m.extra_repr() if own else ''})"
        # a name with a lone surrogate (possible from Python) is hashed, not refused here:
        # it is refused, named, only when a layer of that name is recorded (hookpoints)
        h.update(tree.encode("utf-8", "surrogatepass"))
        if not own:  # `torch.relu` edited to `torch.tanh` in a forward changes no module
            h.update(_forward_code(type(m)))
    _hash_tensors(h, [*model.named_parameters(), *model.named_buffers()])
    return h.hexdigest()[:16]


def model_details(model: torch.nn.Module) -> str:
    """sha256 of what a module's ``forward`` reads that :func:`model_fingerprint` does
    not hash: the public number and flag attributes of modules not from ``torch.nn``
    (:func:`_switches`), tensors kept as plain attributes (``self.scale =
    torch.tensor(2.0)``, neither parameters nor buffers) and the code of the functions of
    each such module's own file that its ``forward`` calls (:func:`_called_code`).
    Recorded beside the fingerprint (``job.model_details``) since December 2026, so that
    the fingerprint of stores captured before it still compares, and the details are
    compared where they were recorded. A ``dtype`` cast changes none of them."""
    h = hashlib.sha256()
    plain = []
    for name, m in model.named_modules():
        if not type(m).__module__.startswith("torch.nn."):
            h.update(name.encode("utf-8", "surrogatepass"))
            h.update(_switches(m))
            h.update(_called_code(type(m)))
        plain += [
            (f"{name}.{k}" if name else k, v)
            for k, v in sorted(vars(m).items())
            if isinstance(v, torch.Tensor) and not k.startswith("_")
        ]
    _hash_tensors(h, plain)
    return h.hexdigest()[:16]


def _hash_tensors(h: Any, named: Sequence[tuple[str, torch.Tensor]]) -> None:
    """Each tensor's name, shape, dtype, edge values, evenly spaced values and sum."""
    for name, t in named:
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode("utf-8", "surrogatepass"))
        flat = t.detach().reshape(-1)
        h.update(_tensor_bytes(flat[:EDGE_VALUES]))
        h.update(_tensor_bytes(flat[-EDGE_VALUES:]))
        h.update(_tensor_bytes(flat[:: max(1, flat.numel() // EDGE_VALUES)]))
        h.update(repr(_total(flat)).encode())


def _switches(m: torch.nn.Module) -> bytes:
    """The public number and flag attributes of a module not from ``torch.nn``: what its
    ``forward`` reads besides weights (GPT-2's ``scale_attn_weights``, from a
    ``config.json`` edited between a kill and ``--resume``, changes no module, code or
    weight). Text is left out (Keras numbers its layers' names per process, a Hugging
    Face model keeps the path it was loaded from), and so is the training mode."""
    kinds = (bool, int, float)
    items = sorted(
        (k, v)
        for k, v in vars(m).items()
        if type(v) in kinds and not k.startswith("_") and k != "training"
    )
    return repr(items).encode()


def _forward(cls: type) -> list[Any]:
    """A module class's ``forward`` and Keras's ``call``, unwrapped (None where absent)."""
    return [inspect.unwrap(getattr(cls, a, None) or (lambda: None)) for a in ("forward", "call")]


@functools.cache
def _forward_code(cls: type) -> bytes:
    """What a module class computes, as far as its code says: the bytecode, names and
    constants of its ``forward`` (and of Keras's ``call``), nested functions included,
    without line numbers (a comment added above it changes nothing)."""
    parts = []
    for fn in _forward(cls):
        code = getattr(fn, "__code__", None)
        # not a Python function (a builtin, a partial): its kind and name, never its
        # repr, which may hold an address that differs from process to process
        what = f"{type(fn).__qualname__}:{getattr(fn, '__qualname__', '')}"
        parts.append(_code_bytes(code) if code is not None else what.encode())
    return hashlib.sha256(b"\0".join(parts)).digest()


@functools.cache
def _called_code(cls: type) -> bytes:
    """The code of the functions a module class's ``forward`` names, and those they name
    in turn, that are defined in the class's own file: its methods and the file's
    functions (a helper's ``torch.relu`` edited to ``torch.tanh`` changes no
    ``forward``). Functions of other libraries are left out (an upgrade of torch would
    read as another model)."""
    parts, seen = [], set()
    todo = [fn for fn in _forward(cls) if isinstance(fn, types.FunctionType)]
    while todo:
        fn = todo.pop()
        for name in sorted(_names(fn.__code__)):
            for target in (getattr(cls, name, None), fn.__globals__.get(name)):
                target = inspect.unwrap(target) if callable(target) else None
                if (
                    isinstance(target, types.FunctionType)
                    and target.__module__ == cls.__module__
                    and target not in seen
                ):
                    seen.add(target)
                    parts.append(name.encode() + _code_bytes(target.__code__))
                    todo.append(target)
    return hashlib.sha256(b"\0".join(sorted(parts))).digest()


def _names(code: types.CodeType) -> set[str]:
    """The global and attribute names ``code`` and the functions nested in it use."""
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names |= set(c.co_names)
        todo += [k for k in c.co_consts if isinstance(k, types.CodeType)]
    return names


def _code_bytes(code: types.CodeType) -> bytes:
    return b"\0".join(
        [code.co_code, repr(code.co_names).encode(), *map(_const_bytes, code.co_consts)]
    )


def _const_bytes(c: Any) -> bytes:
    if isinstance(c, types.CodeType):  # its repr holds an address and a line number
        return _code_bytes(c)
    if isinstance(c, (tuple, frozenset)):  # a frozenset's order varies between processes
        items = [_const_bytes(v) for v in c]
        return b"(" + b",".join(sorted(items) if isinstance(c, frozenset) else items) + b")"
    return repr(c).encode()


def inputs_fingerprint(inputs: Any) -> str:
    """Arrays: shape, dtype and sha256 of every value; texts: count and sha256; other
    iterables: their type and length where known (the resume then checks where each
    batch starts)."""
    if isinstance(inputs, torch.Tensor):
        return (
            f"tensor{tuple(inputs.shape)}:{inputs.dtype}:"
            + hashlib.sha256(_tensor_bytes(inputs)).hexdigest()[:16]
        )
    if isinstance(inputs, np.ndarray):
        data = np.ascontiguousarray(inputs)
        digest = hashlib.sha256(
            _array_bytes(data) if data.dtype != object else repr(data.tolist()).encode()
        )
        return f"array{data.shape}:{data.dtype}:{digest.hexdigest()[:16]}"
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        h = hashlib.sha256()
        for t in inputs:
            h.update(t.encode())
            h.update(b"\0")
        return f"{len(inputs)} texts:{h.hexdigest()[:16]}"
    n = None
    for obj in (inputs, getattr(inputs, "dataset", None)):
        try:
            n = len(obj) if obj is not None else n
        except TypeError:
            pass
    return f"{type(inputs).__name__}" + (f"[{n}]" if n is not None else "")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of what turns texts into token ids: a fast tokenizer's whole definition
    (vocabulary, merges, normalisation, the BOS/EOS its post-processor adds; less the
    truncation and padding a call leaves set on it), another's vocabulary, and the
    special tokens and length limit either applies. The texts' fingerprint cannot tell
    two tokenizers apart, nor can the first batch's tokens when the two differ only on
    later texts."""
    hf = _hf_tokenizer(tokenizer)
    h = hashlib.sha256(type(tokenizer).__qualname__.encode())
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None), spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    elif hf is not None:
        h.update(repr(sorted(hf.get_vocab().items())).encode("utf-8", "surrogatepass"))
    for attr in ("model_max_length", "bos_token_id", "eos_token_id", "pad_token_id"):
        h.update(repr(getattr(hf, attr, None)).encode())
    return h.hexdigest()[:16]


def _hf_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer ``tokenizer`` is or holds (TransformerLensTexts holds its
    model's), or None."""
    return next(
        (
            t
            for t in (tokenizer, getattr(tokenizer, "tokenizer", None))
            if t is not None and hasattr(t, "get_vocab")
        ),
        None,
    )


def capture_job(
    model: torch.nn.Module,
    inputs: Any,
    layers: Sequence[str],
    config: Any,
    labels: Any = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """The fingerprints a resumed capture must match: ``model``, ``inputs``, ``labels``,
    ``layers`` (resolved names), ``settings`` (the capture config, less ``device``,
    ``early_stop`` and ``timeout_s``, which do not change what is stored) and, for
    texts, the ``tokenizer`` that reads them."""
    settings = {
        k: v for k, v in asdict(config).items() if k not in ("device", "early_stop", "timeout_s")
    }
    job = {
        "model": model_fingerprint(model),
        "model_details": model_details(model),
        "inputs": inputs_fingerprint(inputs),
        "labels": None if labels is None else inputs_fingerprint(_as_array(labels)),
        "label_values": None if labels is None else label_values_fingerprint(labels),
        "layers": list(layers),
        "settings": settings,
    }
    if tokenizer is not None:  # texts only: other inputs do not go through it
        job["tokenizer"] = tokenizer_fingerprint(tokenizer)
        # which end a text too long is cut from: beside the fingerprint (recorded since
        # December 2026, so compared only where recorded), which left it out, so a resume
        # with `truncation_side="left"` stored texts cut from both ends without a word
        job["truncation_side"] = getattr(_hf_tokenizer(tokenizer), "truncation_side", None)
    return job


def label_values_fingerprint(labels: Any) -> str:
    """The fingerprint of ``labels``' values, whatever the width of their type: the same
    classes as int32 (a `.npy` saved so) and int64 (a JSON list) were refused by a resume
    as other labels (`labels`, the fingerprint of the array as given, stays beside it
    for stores that record no more)."""
    lab = _as_array(labels)
    if lab.dtype.kind == "i" or (lab.dtype.kind == "u" and (not lab.size or lab.max() < 2**63)):
        lab = lab.astype(np.int64)
    elif lab.dtype.kind == "f":
        lab = lab.astype(np.float64)
    elif lab.dtype.kind == "U":
        lab = lab.astype(object)
    return inputs_fingerprint(lab)


def _as_array(labels: Any) -> np.ndarray:
    try:  # a bfloat16 tensor too, which NumPy has no type for
        return host_labels(labels)
    except ValueError:  # ragged: refused when the batches are made, with a clear message
        return np.asarray(labels, dtype=object)


def batch_fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """sha256 of one input batch's tensors (positional and keyword): how a resume of
    an iterable of batches, whose whole content is not known up front, checks that
    its first batch is the interrupted capture's."""
    h = hashlib.sha256()

    def add(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(f"{tuple(x.shape)}{x.dtype}".encode())
            h.update(_tensor_bytes(x))
        elif isinstance(x, np.ndarray):
            h.update(f"{x.shape}{x.dtype}".encode())
            h.update(_array_bytes(x) if x.dtype != object else repr(x.tolist()).encode())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(str(k).encode())
                add(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                add(v)
        else:
            h.update(repr(x).encode())

    add(args)
    add(kwargs)
    return h.hexdigest()[:16]


#: Facts of a store's provenance that its capture counts as it writes, which a caller's
#: ``provenance`` replaced (or, for ``n_texts_cut`` of inputs that are no texts, stood as).
COUNTED = {
    "job": "what makes two captures one job",
    "shard_rows": "the rows per shard",
    "n_texts_cut": "how many texts it cut to `max_length`",
    "world_size": "the ranks that captured under torchrun",
}


def check_provenance(provenance: dict[str, Any] | None, own: dict[str, Any], texts: bool) -> None:
    """Refuse a caller's ``provenance`` fact that contradicts one the capture records
    itself (``own``) and later stages read: the tokens per text (``max_length``, to which
    the ablation and ``evaluate --model`` cut texts; none recorded for texts means the
    tokenizer's own limit), TransformerLens's ``prepend_bos``, ``n_ctx`` and
    ``model_name``, and ``model_cast``. It replaced the capture's own without a word, so
    the ablation ran on texts cut otherwise than the store's. The facts the capture counts
    as it writes (:data:`COUNTED`) are refused whenever given: ``n_texts_cut`` 5 of an
    array's capture made ``info`` say that 5 texts were cut."""
    given = sorted(set(provenance or ()) & set(COUNTED))
    if given:
        raise ConfigError(
            f"`provenance` gives {given[0]!r}, which the capture records itself "
            f"({COUNTED[given[0]]}); leave it out of `provenance`."
        )
    for key, value in own.items():
        if key not in (provenance or {}) or value is None and not (texts and key == "max_length"):
            continue
        if provenance[key] != value:
            recorded = (
                "none (texts are cut to the tokenizer's own limit)"
                if value is None
                else repr(value)
            )
            raise ConfigError(
                f"`provenance` gives {key!r} as {provenance[key]!r:.60}, but the capture records "
                f"{recorded} itself, which later stages read (the ablation and `evaluate --model` "
                "cut texts to `max_length`); leave it out of `provenance`."
            )
