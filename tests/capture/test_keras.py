"""Keras 3 models on the torch backend are torch modules: capture from one."""

import os

import numpy as np
import pytest
import torch

if os.environ.setdefault("KERAS_BACKEND", "torch") != "torch":
    pytest.skip("KERAS_BACKEND is set to another backend", allow_module_level=True)
keras = pytest.importorskip("keras", reason="pip install 'saeatlas[keras]'")

from saeatlas.capture import capture_activations, resolve_hookpoints  # noqa: E402


def test_capture_from_keras_sequential(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(10, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    assert [hp.name for hp in resolve_hookpoints(model, ["hidden", "logits"])] == [
        "hidden",
        "logits",
    ]
    x = np.random.default_rng(0).normal(size=(21, 6)).astype(np.float32)
    store = capture_activations(model, x, ["hidden", "logits"], tmp_path / "s", progress=False)
    hidden_model = keras.Model(model.inputs, model.get_layer("hidden").output)
    with torch.no_grad():
        expected_hidden = hidden_model(torch.from_numpy(x)).cpu()
        expected_logits = model(torch.from_numpy(x)).cpu()
    got = store.read()
    assert got.shape == (21, 13)
    torch.testing.assert_close(got[:, :10], expected_hidden)
    torch.testing.assert_close(got[:, 10:], expected_logits)
