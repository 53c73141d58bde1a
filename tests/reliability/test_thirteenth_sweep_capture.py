"""Thirteenth hostile sweep, capture half: inputs longer than the model's positions, labels
Arrow could not store as given."""

from __future__ import annotations

import re

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


def test_a_hugging_face_weight_of_another_shape_than_its_config_is_named(
    tmp_path, tiny_gpt2, make_char_tokenizer, run_cli
):
    """A model.safetensors whose embedding has another width than config.json says
    ended in "You set `ignore_mismatched_sizes` to `False` ... look at the above
    report", a report that is not shown."""
    from safetensors.torch import load_file, save_file

    cli, one_line_error = run_cli
    folder = tmp_path / "hf"
    tiny_gpt2.save_pretrained(folder)
    make_char_tokenizer(folder)
    (tmp_path / "t.txt").write_text("abc def\n")
    weights = load_file(folder / "model.safetensors")
    weights["transformer.wpe.weight"] = weights["transformer.wpe.weight"][:, :16].contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    args = ["capture", "--model", folder, "--inputs", tmp_path / "t.txt"]
    args += ["--layers", "transformer.h.0", "--out", tmp_path / "o"]
    line = one_line_error(
        cli(*args), "transformer.wpe.weight is [16, 16]", "[16, 32] by the config", "config.json"
    )
    assert "above report" not in line
    assert not (tmp_path / "o").exists()


def test_token_ids_saved_as_unsigned_integers_are_read_as_token_ids(tmp_path, tiny_gpt2):
    """Token ids saved as uint16 (nanoGPT's .bin files are) or uint32 ended the capture in
    torch's `NotImplementedError: "min_all" not implemented for 'UInt16'` traceback."""
    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    ids = np.random.default_rng(0).integers(0, 64, size=(3, 6))

    def capture(x, name):
        return capture_activations(
            tiny_gpt2, x, ["transformer.h.0"], tmp_path / name, progress=False
        ).read()

    expected = capture(ids.astype(np.int64), "int64")
    for dtype in (np.uint16, np.uint32, np.uint64):
        got = capture(ids.astype(dtype), np.dtype(dtype).name)
        assert np.array_equal(got.numpy(), expected.numpy()), dtype
    with pytest.raises(InputsError, match="beyond int64"):
        capture(np.full((2, 3), 2**63, dtype=np.uint64), "huge")


def test_labels_that_differ_after_a_nul_stay_two_labels(tmp_path):
    """Arrow reads a NumPy unicode array as C strings: labels "n\\x00ul" and "n" were
    both stored as "n", so two classes became one in the atlas without a word."""
    import pandas as pd
    import torch

    from saeatlas.capture import capture_activations

    labels = np.array(["n\x00ul", "n", "n\x00ul", "n"])
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    store = capture_activations(
        model, torch.randn(4, 2), ["0"], tmp_path / "s", labels=labels, progress=False
    )
    assert pd.read_parquet(store.path / "rows.parquet")["label"].tolist() == labels.tolist()


@pytest.mark.parametrize("labels", [["a", "b\ud800"], np.array(["a", "b\ud800"])])
def test_a_label_with_half_a_surrogate_pair_is_named(tmp_path, labels):
    """It was refused as if the labels mixed numbers and strings ("give labels that are all
    numbers ... or all strings"), which they did not."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import InputsError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(InputsError, match=r"Label 1 .* half of a surrogate pair"):
        capture_activations(model, torch.randn(2, 2), ["0"], tmp_path / "s", labels=labels)
    assert not (tmp_path / "s").exists()


def test_a_capture_that_cast_the_model_still_tells_another_model_apart(tmp_path):
    """A capture with a `dtype` casts the model it is given, so its recorded fingerprint
    (taken before the cast) was not checked at all: the ablation of such a store took
    any network of the same layers as the captured one."""
    import copy

    import torch

    from saeatlas.capture import CaptureConfig, capture_activations
    from saeatlas.errors import ConfigError
    from saeatlas.structure.causal.ablation_inputs import check_captured_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    as_given = copy.deepcopy(model)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.add_(1.0)
    cfg = CaptureConfig(dtype="bfloat16")
    store = capture_activations(model, torch.randn(8, 4), ["1"], tmp_path / "s", cfg)
    check_captured_model(model, store)  # the object the capture cast in place
    check_captured_model(as_given, store)  # the model as the user holds it on disk
    with pytest.raises(ConfigError, match="not the one the store"):
        check_captured_model(other, store)


@pytest.mark.parametrize("pattern", ["0:inptu", "0:Input", "*:output"])
def test_a_misspelt_suffix_is_named_with_the_input_suffix(tmp_path, pattern):
    """`layer1:inptu` was answered "Did you mean 'layer1'?", which records the output,
    not the input the user asked for."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import HookpointError

    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    base = pattern.rpartition(":")[0]
    with pytest.raises(HookpointError, match=rf"is no suffix .* Write '{re.escape(base)}:input'"):
        capture_activations(model, torch.randn(2, 2), [pattern], tmp_path / "s")
    assert not (tmp_path / "s").exists()
