"""``.npy`` arrays of float dtypes wider than float64's reading path expected (eighth
hostile sweep): read as float32 like float64, or refused naming the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saeatlas.errors import NonFiniteError
from saeatlas.store import ActivationStore


def test_a_longdouble_array_opens_as_float32(tmp_path):
    """np.longdouble ended in torch's TypeError ('can't convert np.ndarray of type
    numpy.longdouble') and a traceback."""
    x = np.random.default_rng(0).normal(size=(40, 5))
    np.save(tmp_path / "x.npy", x.astype(np.longdouble))
    store = ActivationStore.open(tmp_path / "x.npy")
    assert torch.equal(store.read(), torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(store.mean, x.mean(0), rtol=1e-5)


def test_float64_values_beyond_float32_are_named_as_such(tmp_path):
    """A finite float64 value of 1e39 became Inf when read as float32 and was reported
    as 'has NaN/Inf values', which the file does not have."""
    x = np.random.default_rng(0).normal(size=(40, 5))
    x[3, 2] = 1e39
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(
        NonFiniteError, match=r"beyond float32's range.*\(1e\+39\) at row 3, column 2"
    ):
        ActivationStore.open(tmp_path / "x.npy")
    # skipped like a NaN row when asked to
    assert ActivationStore.open(tmp_path / "x.npy", on_nonfinite="skip").n_rows == 39


def test_longdouble_inputs_reach_the_model_as_float64_would(tmp_path, mlp):
    from saeatlas.capture import capture_activations

    x = np.random.default_rng(0).normal(size=(12, 8))
    a = capture_activations(mlp, x, ["act1"], tmp_path / "a", progress=False)
    b = capture_activations(mlp, x.astype(np.longdouble), ["act1"], tmp_path / "b", progress=False)
    assert torch.equal(a.read(), b.read())
