"""Fourteenth hostile sweep, capture half: narrow integer token ids, Hugging Face weights
their config leaves out, model specs that name a model object or give two models."""

from __future__ import annotations

import numpy as np
import pytest


def test_token_ids_saved_as_narrow_integers_are_read_as_token_ids(tmp_path, tiny_gpt2):
    """Token ids saved as uint8, int8 or int16 ended the capture of a Hugging Face model in
    "Expected tensor for argument #1 'indices' to have one of the following scalar types:
    Long, Int; but got torch.ByteTensor"; a model that is not known to embed tokens keeps
    its uint8 inputs (images) as they are, and an embedding there is told the fix."""
    import torch

    from saeatlas.capture import capture_activations
    from saeatlas.errors import ModelError

    ids = np.random.default_rng(0).integers(0, 64, size=(3, 6))

    def capture(model, x, layer, name):
        return capture_activations(model, x, [layer], tmp_path / name, progress=False).read()

    expected = capture(tiny_gpt2, ids, "transformer.h.0", "int64")
    for dtype in (np.uint8, np.int8, np.int16):
        got = capture(tiny_gpt2, ids.astype(dtype), "transformer.h.0", np.dtype(dtype).name)
        assert np.array_equal(got.numpy(), expected.numpy()), dtype
    seen = []

    class Images(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Identity()

        def forward(self, x):
            seen.append(x.dtype)
            return self.scale(x.float() / 255)

    capture(Images(), ids.astype(np.uint8), "scale", "images")
    assert seen == [torch.uint8]
    plain = torch.nn.Sequential(torch.nn.Embedding(64, 4))
    with pytest.raises(ModelError, match=r"ByteTensor.* save them as int64"):
        capture(plain, ids.astype(np.uint8), "0", "plain")


def test_hugging_face_weights_that_its_config_leaves_out_are_named(tmp_path, tiny_gpt2):
    """Weights of a third block beside a config.json of two loaded as the two-block
    network without a word (transformers drops what its config has no place for and only
    logs it), so the store held a smaller network's activations than the one saved."""
    import torch
    from safetensors.torch import load_file, save_file

    from saeatlas.capture import load_model
    from saeatlas.errors import ModelSpecError

    folder = tmp_path / "hf"
    tiny_gpt2.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    more = {k.replace(".h.1.", ".h.2."): v.clone() for k, v in weights.items() if ".h.1." in k}
    save_file({**weights, **more}, folder / "model.safetensors", metadata={"format": "pt"})
    for model_class in ("auto", "base"):
        with pytest.raises(ModelSpecError, match=r"11 weight\(s\) that its config.json gives no "):
            load_model(str(folder), model_class=model_class)  # 11: GPT-2 ignores *attn.bias
    save_file({**weights, "probe.weight": torch.ones(2)}, folder / "model.safetensors")
    with pytest.warns(UserWarning, match=r"1 weight\(s\) that the causal-lm model does not use"):
        loaded = load_model(str(folder))
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"


def test_a_model_object_named_by_the_spec_is_the_model_and_two_models_are_refused(tmp_path):
    """`file.py:model` naming a model object (not a factory) was called as a factory and
    ended in "Calling 'file.py:model' failed: TypeError: forward() missing 1 required
    positional argument"; a factory returning (model, model) took the second model for
    the tokenizer without a word."""
    from saeatlas.capture import load_model
    from saeatlas.errors import ModelSpecError

    (tmp_path / "m.py").write_text(
        "from torch import nn\n"
        "model = nn.Sequential(nn.Linear(6, 3))\n"
        "def two():\n    return nn.Linear(6, 3), nn.Linear(6, 3)\n"
    )
    loaded = load_model(f"{tmp_path / 'm.py'}:model")
    assert type(loaded.model).__name__ == "Sequential" and loaded.tokenizer is None
    with pytest.raises(ModelSpecError, match="names a Sequential model, not a factory"):
        load_model(f"{tmp_path / 'm.py'}:model", {"width": 3})
    with pytest.raises(ModelSpecError, match=r"pair of two models \(Linear, Linear\)"):
        load_model(f"{tmp_path / 'm.py'}:two")
