"""Model specifications for the CLI: ``package.module:factory``, ``file.py:factory``
or a local Hugging Face model directory (offline, safetensors only)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._validation import shown
from ..errors import AtlasError, ModelError, ModelSpecError
from .hf_dir import MODEL_CLASSES, load_hf_dir
from .nnsight import check_model_argument, is_nnsight, unwrap_model
from .texts import text_max_length


@dataclass
class LoadedModel:
    """A model and, for Hugging Face directories, its tokenizer."""

    model: torch.nn.Module
    tokenizer: Any = None
    spec: str = ""


def load_model(
    spec: str | os.PathLike,
    kwargs: dict[str, Any] | None = None,
    *,
    model_class: str = "auto",
    class_setting: str = "--model-class",
) -> LoadedModel:
    """Resolve a model SPEC.

    - ``package.module:factory`` or ``path/to/file.py:factory``: the factory is
      called (with ``kwargs``, none by default) and returns a ``torch.nn.Module``
      (or a ``(model, tokenizer)`` pair, or an nnsight wrapper: its module and tokenizer).
    - a directory with ``config.json`` and ``*.safetensors`` weights: loaded with
      Hugging Face ``transformers`` offline, with its tokenizer when present, as
      ``model_class``: ``causal-lm`` (with its LM head, for ``--loss next-token``),
      ``masked-lm``, ``base`` (``AutoModel``, no head), ``checkpoint`` (the class
      the config's ``architectures`` name, a classifier with its head) or ``auto`` (what the
      config's ``architectures`` name: ``*ForCausalLM``/``*LMHeadModel`` ->
      causal-lm, ``*ForMaskedLM`` -> masked-lm, else base). Layer names follow the
      class: GPT-2's blocks are ``h.0`` in the base model, ``transformer.h.0`` with
      its head.

    ``class_setting``: how messages name ``model_class`` (a run config's `model_class`).
    """
    if isinstance(spec, os.PathLike):  # a model folder as a Path: "argument of type
        spec = os.fspath(spec)  # 'PosixPath' is not iterable"
    if not isinstance(spec, str):  # None, a number, or the model itself: pathlib's TypeError
        raise ModelSpecError(
            f"The model spec must be text ('package.module:factory', 'file.py:factory' or a "
            f"Hugging Face model directory), got {type(spec).__name__}"
            + (": pass the model itself to capture_activations." if callable(spec) else ".")
        )
    if model_class != "auto" and model_class not in MODEL_CLASSES:
        raise ModelSpecError(
            f"Unknown --model-class {shown(model_class)}; expected one of: {['auto', *MODEL_CLASSES]}."
        )
    if isinstance(spec, str) and not spec.strip():  # Path('') is the current folder
        raise ModelSpecError(
            f'The model spec {spec!r} is empty (an unset variable, `--model "$MODEL"`?); give '
            "'package.module:factory', 'file.py:factory' or a Hugging Face model directory "
            "('.' for the current folder)."
        )
    path = Path(spec)
    if path.is_dir():
        if kwargs:
            raise ModelSpecError(
                f"Keyword arguments {sorted(kwargs)} apply to a factory, not to the model "
                f"directory '{path}'."
            )
        return LoadedModel(*load_hf_dir(path, model_class), str(path))
    if model_class != "auto":
        raise ModelSpecError(
            f"{class_setting} {model_class!r} applies to a Hugging Face model directory, not to "
            f"the factory {spec!r}; the factory chooses its own class. Leave {class_setting} out."
        )
    if ":" not in spec:
        from ..store.atomic import resolve

        resolve(path)  # a loop of symbolic links is named, not "neither a directory nor"
        if path.suffix == ".py" and path.is_file():  # was told of 'package.module:factory'
            raise ModelSpecError(
                f"Model spec {spec!r} is a Python file without the factory to call in it; "
                f"name it after a colon: '{spec}:FACTORY' (a function returning the model)."
            )
        raise ModelSpecError(
            f"Model spec {spec!r} is neither a directory nor 'package.module:factory'. Give a "
            "local Hugging Face model directory or a factory such as 'mypkg.models:build'."
        )
    factory = load_factory(spec)
    if isinstance(factory, torch.nn.Module) or is_nnsight(factory):
        # a model object named by the spec is the model: called as a factory, it ran
        # its forward without inputs ("forward() missing 1 required positional argument"),
        # an nnsight wrapper's too (it is callable, and not a torch module)
        if kwargs:
            raise ModelSpecError(
                f"'{spec}' names a {type(factory).__name__} model, not a factory: keyword "
                f"arguments {sorted(kwargs)} cannot be given to it. Name a function that "
                "builds the model, or drop them."
            )
        made = factory
    else:
        made = call_factory(factory, spec, kwargs) if callable(factory) else factory
    tokenizer = None
    if isinstance(made, tuple) and len(made) == 2:
        made, tokenizer = made
        if isinstance(tokenizer, torch.nn.Module):  # (model, model): not a tokenizer
            raise ModelSpecError(
                f"'{spec}' gave a pair of two models ({type(made).__name__}, "
                f"{type(tokenizer).__name__}); a pair is (model, tokenizer). Return one "
                "torch.nn.Module (wrap several in one), or the model and its tokenizer."
            )
    made, own_tokenizer = unwrap_model(made)  # an nnsight wrapper: its module
    tokenizer = tokenizer if tokenizer is not None else own_tokenizer
    if not isinstance(made, torch.nn.Module):
        raise ModelSpecError(
            f"'{spec}' gave a {type(made).__name__}; the factory must return a torch.nn.Module "
            "(or a (model, tokenizer) pair)."
        )
    return LoadedModel(made, tokenizer, spec)


def check_has_values(model: torch.nn.Module) -> None:
    """Refuse a model whose weights are on the meta device (shapes without values, as
    a Hugging Face model built empty leaves them): the capture ended in torch's
    error 'Cannot copy out of meta tensor' and a traceback."""
    meta = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise ModelError(
            f"The model's {meta[:3]}{' and more' if len(meta) > 3 else ''} are on the meta "
            "device: shapes without values. Load the weights first (`load_state_dict` after "
            "`to_empty`, or `from_pretrained` without a meta `device_map`)."
        )


def load_factory(spec: str) -> Any:
    """The object a ``package.module:name`` or ``path/to/file.py:name`` SPEC names."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelSpecError(f"{spec!r} is not 'package.module:name' or 'path/to/file.py:name'.")
    module = _import(target, spec)
    factory = getattr(module, attr, None)
    if factory is None:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ModelSpecError(
            f"'{target}' has no attribute {attr!r}; callables there: {public[:10]}."
        )
    return factory


def call_factory(factory: Any, spec: str, kwargs: dict[str, Any] | None = None) -> Any:
    """``factory(**kwargs)``, after checking that it accepts those keyword arguments."""
    kwargs = kwargs or {}
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise ModelSpecError(f"'{spec}' cannot be called with {kwargs}: {e}.") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    try:
        return factory(**kwargs)
    except AtlasError:
        raise
    # the user's code: name the spec, keep the traceback for --debug; a sys.exit(0) in
    # it (argparse's --help) ended the capture with exit code 0 and nothing written
    except (Exception, SystemExit) as e:
        raise _code_error(e, f"Calling {spec!r}") from e


def _code_error(e: BaseException, what: str) -> ModelSpecError:
    if (
        isinstance(e, ModuleNotFoundError)
        and (e.name or "").split(".")[0] in ("tensorflow", "jax")
        and _raised_in_keras(e)
    ):  # Keras 3 on its default backend: the fix is not in that code
        return ModelSpecError(
            f"{what} failed: {code_failure(e)}, which Keras loads for its default backend. "
            "saeatlas hooks Keras 3 models on the torch backend: set KERAS_BACKEND=torch "
            "(`KERAS_BACKEND=torch saeatlas ...`)."
        )
    return ModelSpecError(
        f"{what} failed: {code_failure(e)}. Fix that code; `saeatlas --debug ...` shows the "
        "traceback."
    )


def _raised_in_keras(e: BaseException) -> bool:
    import traceback

    return any(
        "/keras/" in f.filename.replace("\\", "/") for f in traceback.extract_tb(e.__traceback__)
    )


def code_failure(e: BaseException) -> str:
    """What the user's code raised, in a few words (``sys.exit`` named as such)."""
    if isinstance(e, SystemExit):
        return f"it called sys.exit({e.code!r}) (argparse does on bad or --help arguments)"
    return f"{type(e).__name__}: {str(e).strip().rstrip('.')}"


def _import(target: str, spec: str) -> Any:
    if target.endswith(".py"):
        file = Path(target)
        if file.is_dir():
            raise ModelSpecError(f"Model file '{file}' is a directory (from spec {spec!r}).")
        if not file.is_file():
            from ..store.atomic import resolve

            resolve(file)  # a loop of symbolic links is named, not reported missing
            raise ModelSpecError(f"Model file '{file}' does not exist (from spec {spec!r}).")
        name = f"_saeatlas_model_{abs(hash(file.resolve()))}"
        mod_spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # a SyntaxError, or what its top level raises
            del sys.modules[name]
            raise _code_error(e, f"Running '{file}' (from spec {spec!r})") from e
        return module
    try:
        return importlib.import_module(target)
    except ImportError as e:
        raise ModelSpecError(f"Cannot import {target!r} from model spec {spec!r}: {e}.") from e
    except (Exception, SystemExit) as e:
        raise _code_error(e, f"Importing {target!r} (from spec {spec!r})") from e


def input_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (or buffer), which its
    floating-point inputs are given in; ``None`` for a model without any."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def takes_token_ids(model: torch.nn.Module) -> bool:
    """Whether the model's inputs are integer token ids: a Hugging Face model (or one
    that answers ``get_input_embeddings()`` the same way) with an embedding table, whose
    main input is that table's ids: Whisper's embedding is its decoder's, and its main
    input ``input_features`` (audio) was refused as "must be integers [n, seq]"."""
    main = getattr(model, "main_input_name", "input_ids")
    if isinstance(main, str) and main != "input_ids":  # pixel_values, input_features
        return False
    try:
        return isinstance(model.get_input_embeddings(), torch.nn.Embedding)  # type: ignore[operator]
    except Exception:  # not a Hugging Face model, or one without an embedding table
        return False


def example_inputs(model: torch.nn.Module, tokenizer: Any = None) -> Any:
    """A small input for a dry forward pass: a sentence for text models, else random
    rows sized by the first ``Linear`` layer."""
    check_model_argument(model)  # a number or None ended in an AttributeError
    model, _ = unwrap_model(model)
    if tokenizer is not None:
        # cut as a capture cuts it: a model of fewer positions (a character-level one)
        # ended the dry run in "index out of range"
        texts = ["The quick brown fox jumps over the lazy dog."]
        limit = text_max_length(model, texts, tokenizer, None)
        cut = {"truncation": True, "max_length": limit} if limit is not None else {}
        return tokenizer(texts, return_tensors="pt", **cut)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            return torch.randn(2, m.in_features, dtype=input_dtype(model))
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Embedding)):
            break
    raise ModelSpecError(
        f"Cannot guess an input for {type(model).__name__}; pass one with --inputs FILE."
    )
