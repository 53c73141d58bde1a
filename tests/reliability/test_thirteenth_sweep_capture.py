"""Thirteenth hostile sweep, capture half: inputs longer than the model's positions."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("inputs", ["ids", "texts"])
def test_sequences_longer_than_the_models_positions_are_named_before_the_pass(
    tmp_path, tiny_gpt2, make_char_tokenizer, inputs
):
    """Token ids of 20 positions, or texts with `--max-length 20`, given to a GPT-2 of 16
    positions ended in "forward pass failed: IndexError: index out of range in self",
    which names neither the length nor the limit."""
    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import InputsError

    if inputs == "ids":
        x, tok = np.ones((3, 20), dtype=np.int64), None
    else:
        x, tok = ["abcdefghij" * 3, "abc"], make_char_tokenizer()
    cfg = CaptureConfig(max_length=20 if inputs == "texts" else None)
    with pytest.raises(InputsError, match=r"sequences of 20 tokens, but the model has 16 pos"):
        capture_activations(
            tiny_gpt2, x, ["transformer.h.0"], tmp_path / "s", cfg, tokenizer=tok, progress=False
        )
    assert not (tmp_path / "s").exists()
    cut = CaptureConfig(max_length=16)  # what the line advises
    store = capture_activations(
        tiny_gpt2, x, ["transformer.h.0"], tmp_path / "s", cut, tokenizer=tok, progress=False
    )
    assert store.n_rows == (48 if inputs == "ids" else 16 + 3)
