"""The twenty-first hostile sweep's cases in the Python API (the labels a caller gives
a capture, the SAE module's inputs, tokenizers): each ended in a traceback, was refused
with a misleading message, or stored something other than it was given before its fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saeatlas.capture import CaptureConfig, capture_activations
from saeatlas.errors import InputsError, ShapeError
from saeatlas.sae import SAEConfig, SparseAutoencoder

QUIET = {"progress": False}


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())


@pytest.mark.parametrize(
    "labels, needle",
    [
        ([{"a": i % 2} for i in range(8)], "struct<a: int64>"),  # analyze: TypeError
        ((i for i in range(8)), "got generator"),  # was "Labels have shape []"
        ({"a": 1}, "got dict"),
        ("abcdefgh", "got str 'abcdefgh'"),
    ],
)
def test_capture_refuses_labels_that_are_no_labels(tmp_path, labels, needle):
    """Dict labels were stored (as a struct column), and the analysis of the store ended
    in "unhashable type: 'dict'"; a generator, a dict or a text were told "Labels have
    shape [] for 8 input samples"."""
    with pytest.raises(InputsError, match="abels") as e:
        capture_activations(
            _net(), torch.randn(8, 4), ["1"], tmp_path / "s", labels=labels, **QUIET
        )
    assert needle in str(e.value)
    assert not (tmp_path / "s").exists()


def _pairs(*ys):
    x = torch.randn(4 * len(ys), 4, generator=torch.Generator().manual_seed(0))
    return [(x[4 * i : 4 * i + 4], y) for i, y in enumerate(ys)]


@pytest.mark.parametrize(
    "ys, needle",
    [
        ((torch.arange(4), ["a", "b", "c", "d"]), "are strings (string), but those of the "),
        ((["a", "b", "c", "d"], torch.arange(4)), "are numbers (int64)"),
        ((["a", "b", "c", "d"], torch.ones(4, dtype=torch.bool)), "true/false values"),
        (([{"a": 1}] * 4, [{"a": 2}] * 4), "struct<a: int64>"),
        ((torch.arange(4), np.full(4, 2**63 + 5, np.uint64)), "beyond int64"),
    ],
)
def test_labels_of_batches_are_of_one_kind(tmp_path, ys, needle):
    """(x, y) batches whose y changed kind ended in pyarrow's ArrowInvalid ("Failed to
    parse string: 'd' as a scalar of type int64") once the shards' rows were joined,
    or, in one shard, stored every label as text ('0', 'a')."""

    with pytest.raises(InputsError) as e:
        capture_activations(
            _net(), _pairs(*ys), ["1"], tmp_path / "s", CaptureConfig(shard_rows=4), **QUIET
        )
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "ys, want",
    [
        (([None] * 4, [1, 2, 3, 4]), [None] * 4 + [1, 2, 3, 4]),  # ArrowNotImplementedError
        ((torch.arange(4), torch.full((4,), 0.5)), [0, 1, 2, 3] + [0.5] * 4),  # "truncated"
        ((np.arange(4, dtype=np.uint8), np.arange(300, 304)), [0, 1, 2, 3, 300, 301, 302, 303]),
    ],
)
def test_labels_of_one_kind_join_across_shards(tmp_path, ys, want):
    """Labels of one kind in other types (None first, then numbers; integers, then floats;
    uint8, then int64) were joined under the first shard's type: a traceback, or values
    cast to it."""

    store = capture_activations(
        _net(), _pairs(*ys), ["1"], tmp_path / "s", CaptureConfig(shard_rows=4), **QUIET
    )
    assert store.rows(["label"]).column("label").to_pylist() == want


@pytest.mark.parametrize(
    "x, needle",
    [
        (np.zeros((3, 8), np.float32), "as a torch tensor, got ndarray"),  # AttributeError
        ([[0.0] * 8] * 3, "as a torch tensor, got list"),  # AttributeError
        (torch.tensor(1.0), "not a tensor of shape ()"),  # IndexError
    ],
)
@pytest.mark.parametrize("method", ["encode", "forward"])
def test_the_sae_module_refuses_what_is_no_tensor_of_rows(x, needle, method):
    """`sae.encode(np_array)` ended in "'numpy.ndarray' object has no attribute 'to'", a
    list in "'list' object has no attribute 'shape'", a 0-d tensor in an IndexError."""
    sae = SparseAutoencoder(SAEConfig("topk", d_in=8, d_sae=16, k=2))
    with pytest.raises(ShapeError, match="The SAE reads rows of 8 units") as e:
        getattr(sae, method)(x)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "acts, needle",
    [
        (torch.zeros(3, 15), "decodes rows of 16 latents, not a tensor of shape (3, 15)"),
        (np.zeros((3, 16), np.float32), "as a torch tensor, got ndarray"),
    ],
)
def test_the_sae_module_decodes_only_its_latents(acts, needle):
    """`decode` of 15 latents for 16 ended in torch's "mat1 and mat2 shapes cannot be
    multiplied (3x15 and 16x8)", of an array in a TypeError; float16 latents of a
    float32 SAE in "expected m1 and m2 to have the same dtype"."""
    sae = SparseAutoencoder(SAEConfig("topk", d_in=8, d_sae=16, k=2))
    with pytest.raises(ShapeError) as e:
        sae.decode(acts)
    assert needle in str(e.value)
    half = sae.decode(torch.ones(3, 16, dtype=torch.float16))
    torch.testing.assert_close(half, sae.decode(torch.ones(3, 16)))


@pytest.mark.parametrize("tokenizer", ["gpt2", 5])
def test_capture_refuses_a_tokenizer_given_by_its_name(tmp_path, tiny_gpt2, tokenizer):
    """`capture_activations(model, texts, ..., tokenizer="gpt2")` ended in "'str' object
    is not callable" (and so did `loss_recovered` and the ablation, which read texts
    the same way)."""
    from saeatlas.evaluate import loss_recovered
    from saeatlas.store import LayerSpec

    with pytest.raises(InputsError, match="`tokenizer` must be a Hugging Face tokenizer"):
        capture_activations(
            tiny_gpt2,
            ["ab", "c"],
            ["transformer.h.0"],
            tmp_path / "s",
            tokenizer=tokenizer,
            **QUIET,
        )
    assert not (tmp_path / "s").exists()
    layer = LayerSpec("transformer.h.0", 0, 32, (None, None, 32), "token")
    sae = SparseAutoencoder(SAEConfig("topk", d_in=32, d_sae=16, k=2, layers=(layer,)))
    with pytest.raises(InputsError, match="`tokenizer` must be a Hugging Face tokenizer"):
        loss_recovered(sae, tiny_gpt2, ["ab", "c"], tokenizer=tokenizer)


@pytest.mark.parametrize("spec", [None, 5, torch.nn.Linear(2, 2)])
def test_load_model_refuses_what_is_no_spec(spec):
    """`load_model(None)`, a number or the model object itself ended in pathlib's
    "expected str, bytes or os.PathLike object"; a pathlib.Path in "argument of type
    'PosixPath' is not iterable"."""
    from saeatlas.capture import load_model
    from saeatlas.errors import ModelSpecError

    with pytest.raises(ModelSpecError, match="The model spec must be text"):
        load_model(spec)


def test_load_model_takes_a_path(tmp_path):
    from pathlib import Path

    from saeatlas.capture import load_model

    (tmp_path / "m.py").write_text("import torch\ndef build():\n    return torch.nn.ReLU()\n")
    assert isinstance(load_model(Path(f"{tmp_path / 'm.py'}:build")).model, torch.nn.ReLU)


@pytest.mark.parametrize("what", ["load_inputs", "load_labels"])
@pytest.mark.parametrize("path", [None, 5])
def test_input_files_are_named_by_a_path(what, path):
    """`load_inputs(None)` and `load_labels(5)` ended in pathlib's TypeError."""
    import saeatlas.capture as capture
    from saeatlas.errors import ConfigError

    with pytest.raises(ConfigError, match="`path` must be a path"):
        getattr(capture, what)(path)
