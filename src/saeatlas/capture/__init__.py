"""Capture: record the activations of many layers of any torch model into a store."""

from .capture import capture_activations
from .config import CaptureConfig
from .hookpoints import Hookpoint, named_modules, resolve_hookpoints
from .input_files import load_inputs, load_labels
from .inputs import InputBatch, iter_input_batches
from .layers import LayerInfo, list_layers
from .models import LoadedModel, example_inputs, load_model
from .recorder import capture

__all__ = [
    "CaptureConfig",
    "Hookpoint",
    "InputBatch",
    "LayerInfo",
    "LoadedModel",
    "capture",
    "capture_activations",
    "example_inputs",
    "iter_input_batches",
    "list_layers",
    "load_inputs",
    "load_labels",
    "load_model",
    "named_modules",
    "resolve_hookpoints",
]
