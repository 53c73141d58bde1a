"""Local Hugging Face model directories (``config.json`` + safetensors weights), loaded
offline with ``transformers`` as the class ``--model-class`` names, refusing weights
the files lack, weights of other shapes and weights the config leaves out."""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from .._validation import shown
from ..errors import ModelSpecError

#: ``--model-class`` values and the ``transformers`` auto class each loads.
MODEL_CLASSES = {
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
    "base": "AutoModel",
    # the class the config's `architectures` name, head and all: auto loads a classifier
    # (ViTForImageClassification, *ForSequenceClassification) as its base model, so its
    # labels' loss could not be taken from the command line
    "checkpoint": "",
}


def hf_model_class(config: dict[str, Any], model_class: str = "auto") -> str:
    """The ``MODEL_CLASSES`` key to load a directory with, from its ``config.json``."""
    if model_class != "auto":
        return model_class
    for arch in config.get("architectures") or ():
        if arch.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal-lm"
        if arch.endswith("ForMaskedLM"):
            return "masked-lm"
    return "base"


def load_hf_dir(path: Path, model_class: str = "auto") -> tuple[torch.nn.Module, Any]:
    """The model of the directory ``path`` (as ``model_class``) and its tokenizer (None
    without tokenizer files)."""
    if not (path / "config.json").exists():
        raise ModelSpecError(
            f"'{path}' has no config.json; it is not a Hugging Face model directory."
        )
    if not list(path.glob("*.safetensors")):
        raise ModelSpecError(
            f"'{path}' has no *.safetensors weights. saeatlas loads only safetensors (pickled "
            "*.bin weights can run code); convert them with `transformers` save_pretrained("
            "safe_serialization=True)."
        )
    try:
        import transformers
    except ImportError as e:
        raise ModelSpecError(
            "Loading a Hugging Face directory needs `transformers`: pip install 'saeatlas[hf]'."
        ) from e
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # not JSON, not UTF-8, a directory
        raise ModelSpecError(f"'{path / 'config.json'}' is not valid JSON: {e}.") from e
    if not isinstance(config, dict):
        raise ModelSpecError(f"'{path / 'config.json'}' is not a JSON object.")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:  # transformers' own error advised another class
        names = (
            "has no `model_type`"
            if model_type is None
            else (
                f"names `model_type` {shown(model_type)}, which transformers "
                f"{transformers.__version__} does not know"
            )
        )
        raise ModelSpecError(
            f"'{path / 'config.json'}' {names} (no --model-class loads it). Give the model "
            "type of its architecture ('gpt2', 'bert', ...), or use a transformers that has it."
        )
    tokenizer = None
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
    if any((path / f).exists() for f in files):
        try:
            # before the weights: a bad file is named before the work (and their bar)
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:  # a damaged tokenizer file: json's, tokenizers' own errors
            why = str(e).strip().splitlines()[0].rstrip(".") if str(e).strip() else ""
            raise ModelSpecError(
                f"The tokenizer of '{path}' cannot be loaded: {type(e).__name__}: {why}. "
                f"Check its tokenizer files ({', '.join(f for f in files if (path / f).exists())})."
            ) from e
    kind = hf_model_class(config, model_class)
    auto = getattr(transformers, MODEL_CLASSES[kind] or "AutoModel")
    if kind == "checkpoint":
        auto = _checkpoint_class(transformers, config)
        if auto is None:
            raise ModelSpecError(
                f"'{path / 'config.json'}' names no class transformers {transformers.__version__} "
                f"has in `architectures` ({shown(config.get('architectures'))}), so "
                "--model-class checkpoint has none to load. Choose another --model-class ("
                f"{', '.join(k for k in MODEL_CLASSES if k != 'checkpoint')})."
            )
    if kind == "base":  # the checkpoint's own base: AutoModel's may differ (a pooler)
        auto = _checkpoint_class(transformers, config) or auto
    try:
        with _transformers_quiet():  # its load report and bar: what matters is raised below
            model, info = auto.from_pretrained(
                path, local_files_only=True, use_safetensors=True, output_loading_info=True
            )
    except ValueError as e:  # transformers: this config has no such head
        raise ModelSpecError(
            f"'{path}' cannot be loaded as --model-class {kind}: {str(e).strip()} Choose "
            f"another --model-class ({', '.join(MODEL_CLASSES)})."
        ) from e
    except Exception as e:  # damaged weights: safetensors' and torch's own errors
        if "ignore_mismatched_sizes" in str(e):  # its text points to a report kept quiet
            _refuse_mismatched(auto, path)
        raise ModelSpecError(
            f"'{path}' cannot be loaded: {type(e).__name__}: {str(e).strip().rstrip('.')}. "
            "Check its config.json and *.safetensors files."
        ) from e
    missing = sorted(info.get("missing_keys") or ())
    if kind == "base" and model.base_model is not model:  # the head is left out
        missing = [k for k in missing if k.startswith(f"{model.base_model_prefix}.")]
    if missing:  # transformers fills them with random values and only logs it
        shown_keys = ", ".join(missing[:3]) + (
            f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        )
        raise ModelSpecError(
            f"'{path}' lacks {len(missing)} weight(s) of its {kind} model ({shown_keys}); "
            "transformers would fill them with random values, so the activations would be "
            "another network's. Give the complete *.safetensors weights, or a --model-class "
            "whose weights it holds (base for a checkpoint without its head)."
        )
    _check_unused(model, sorted(info.get("unexpected_keys") or ()), path, kind)
    return (model.base_model if kind == "base" else model), tokenizer


def _checkpoint_class(transformers: Any, config: dict[str, Any]) -> Any:
    """The class the checkpoint was saved from (its config's ``architectures``), when
    transformers has it: ``--model-class base`` is that model's ``base_model``. AutoModel
    builds the base model as its own task would, which may hold modules the checkpoint
    lacks (BERT's pooler, absent from a BertForMaskedLM: its weights would be drawn at
    random, so a masked-LM checkpoint could not be loaded as base)."""
    for arch in config.get("architectures") or ():
        cls = getattr(transformers, arch, None) if isinstance(arch, str) else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return None


def _check_unused(model: torch.nn.Module, unused: list[str], path: Path, kind: str) -> None:
    """Refuse weights of ``path`` of modules inside the network that the model its
    config.json builds lacks (a config of 2 layers beside weights of 4: transformers
    drops the rest and only logs it, so the activations were a cut-down network's); warn
    of other unused weights (another head's, a buffer an older version saved), which the
    model's activations do not use. ``--model-class base`` leaves a checkpoint's head out
    by design: no warning for that."""
    if not unused:
        return
    base = getattr(model, "base_model", model)
    prefix = getattr(model, "base_model_prefix", "")
    parts = {name for name, _ in base.named_children()}

    def in_network(key: str) -> bool:
        key = key.removeprefix(f"{prefix}.") if prefix else key
        return key.split(".", 1)[0] in parts

    def lacks_module(key: str) -> bool:
        key = key.removeprefix(f"{prefix}.") if prefix else key
        try:
            base.get_submodule(key.rpartition(".")[0])
        except AttributeError:
            return True
        return False

    def listed(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    inside = [k for k in unused if in_network(k) and lacks_module(k)]
    if inside:
        raise ModelSpecError(
            f"'{path}' holds {len(inside)} weight(s) that its config.json gives no place in "
            f"the {kind} model ({listed(inside)}); transformers would leave them out, so the "
            "activations would be those of a smaller network than the one saved (a "
            "config.json of fewer layers?). Give the config.json the weights were saved with."
        )
    rest = [k for k in unused if in_network(k) or kind != "base"]
    if rest:
        warnings.warn(
            f"'{path}' holds {len(rest)} weight(s) that the {kind} model does not use "
            f"({listed(rest)}); they are left out (another head's?).",
            stacklevel=4,
        )


def _refuse_mismatched(auto: Any, path: Path) -> None:
    """Name the weights of ``path`` whose shapes its config.json does not give
    (transformers' error only says "look at the above report", a report it logs and
    :func:`_transformers_quiet` keeps out of the output)."""
    try:
        with _transformers_quiet():
            _, info = auto.from_pretrained(
                path,
                local_files_only=True,
                use_safetensors=True,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
            )
    except Exception:  # the caller's error stands
        return
    odd = sorted(info.get("mismatched_keys") or ())
    if odd:
        key, found, wanted = odd[0]
        more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
        raise ModelSpecError(
            f"'{path}' holds weights of other shapes than its config.json gives: {key} is "
            f"{list(found)} in the *.safetensors files, {list(wanted)} by the config{more}. "
            "Give the config.json the weights were saved with."
        )


@contextlib.contextmanager
def _transformers_quiet() -> Any:
    """transformers' warnings and progress bars off for the block, as they were after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
