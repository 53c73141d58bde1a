"""Fourteenth hostile sweep, capture half: narrow integer token ids, ..."""

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
