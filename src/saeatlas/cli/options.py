"""The options several commands share, each defined once: what they mean is the same
wherever they are given."""

from __future__ import annotations

from typing import Any

import typer

from .._coordinator import MAX_TIMEOUT_S
from ..errors import ConfigError


def nonfinite_option() -> Any:
    """``--on-nonfinite``: the one rule for NaN/Inf in activations, on every command that
    reads them (see :meth:`saeatlas.store.ActivationStore.open`)."""
    return typer.Option(
        "error",
        "--on-nonfinite",
        help="NaN/Inf in the activations: 'error' (stop, naming the row and column) or 'skip' "
        "(leave those rows out and count them).",
    )


def model_class_option() -> Any:
    """``--model-class``: which Hugging Face class a model directory loads as, on every
    command that loads a model (see :func:`saeatlas.capture.load_model`)."""
    return typer.Option(
        "auto",
        "--model-class",
        help="For a Hugging Face directory: 'causal-lm', 'masked-lm', 'base' (no head), "
        "'checkpoint' (the class its config's architectures name, a classifier with its head) "
        "or 'auto' (*ForCausalLM as causal-lm, *ForMaskedLM as masked-lm, other classes as "
        "base). Layer names follow the class.",
    )


def _seconds(value: float) -> float:
    """``--timeout``'s seconds, checked where given, on every command that has it and in
    one process too (`run --check` took any value, and each command said it in its own
    words, one naming `timeout_s`, a setting it has not)."""
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ConfigError(
            f"--timeout must be a positive number of seconds, at most {MAX_TIMEOUT_S:g} "
            f"(a week), got {value:g}."
        )
    return value


def timeout_option(waits_for: str = "") -> Any:
    """``--timeout``: how long a rank of a ``torchrun`` job waits for the others where
    they meet (``waits_for``: what of rank 0's, beside, the others wait for too)."""
    return typer.Option(
        1800.0,
        "--timeout",
        callback=_seconds,
        help="Under torchrun: seconds a rank waits for the others before it stops with an "
        "error" + (f" (the other ranks wait for rank 0's {waits_for} too)." if waits_for else "."),
    )
