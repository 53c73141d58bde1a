"""The model, inputs and labels a :class:`~saeatlas.pipeline.RunConfig` names, loaded.

``inputs`` and ``labels`` are files (read with :func:`~saeatlas.capture.load_inputs`
and :func:`~saeatlas.capture.load_labels`) or ``package.module:function`` specs
called with ``inputs_args``; an inputs function may return an ``(inputs,
labels)`` tuple.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..capture import load_inputs, load_labels, load_model
from ..capture.input_files import given_labels
from ..capture.labels import label_values
from ..capture.models import call_factory, load_factory
from ..errors import ConfigError
from .config import RunConfig


@dataclass
class Source:
    """What the capture and ablation stages run: a model, its tokenizer, inputs, labels."""

    model: torch.nn.Module
    tokenizer: Any
    inputs: Any
    """An array/tensor, a list of texts, or an iterable of batches."""
    labels: np.ndarray | None
    """One label per sample, or None."""


def _is_file_spec(spec: str) -> bool:
    return Path(spec).exists() or ":" not in spec


def load_source(cfg: RunConfig) -> Source:
    """Load the model (with ``model_args``, as ``model_class``), the inputs and the labels
    of ``cfg``."""
    # "--model-class 'base' applies to ...": a flag `run` has not
    loaded = load_model(
        cfg.model,
        cfg.model_args or None,
        model_class=cfg.model_class,
        class_setting="`model_class`",
    )
    labels = None
    if _is_file_spec(cfg.inputs):
        if cfg.inputs_args:
            raise ConfigError(
                f"`inputs_args` {cfg.inputs_args} apply to an inputs function, but `inputs` "
                f"{cfg.inputs!r} is a file."
            )
        inputs = load_inputs(cfg.inputs)
        if cfg.labels is None:  # a .jsonl file's records may hold them
            labels = given_labels(cfg.inputs, inputs, None)
    else:
        made = call_factory(load_factory(cfg.inputs), cfg.inputs, cfg.inputs_args)
        inputs, labels = made if isinstance(made, tuple) and len(made) == 2 else (made, None)
    if cfg.labels is not None:
        if labels is not None:
            raise ConfigError(
                f"`inputs` {cfg.inputs!r} already gives labels; remove `labels` {cfg.labels!r}."
            )
        if _is_file_spec(cfg.labels):
            if _is_file_spec(cfg.inputs):
                labels = given_labels(cfg.inputs, inputs, cfg.labels)
            else:
                labels = load_labels(cfg.labels)
        else:
            labels = call_factory(load_factory(cfg.labels), cfg.labels)
            if labels is None:  # the run went on without labels, without a word
                raise ConfigError(
                    f"`labels` {cfg.labels!r} returned None; it must return one label per "
                    "sample (or leave `labels` out)."
                )
            if isinstance(labels, tuple) and len(labels) == 2 and not np.isscalar(labels[0]):
                raise ConfigError(  # an (inputs, labels) pair ended in NumPy's traceback
                    f"`labels` {cfg.labels!r} returns a pair of {type(labels[0]).__name__} "
                    f"and {type(labels[1]).__name__}, as an inputs function may: give it as "
                    "`inputs` (its labels come with it), and leave `labels` out."
                )
    if labels is not None:
        labels = label_values(labels)
    return Source(loaded.model, loaded.tokenizer, inputs, labels)
