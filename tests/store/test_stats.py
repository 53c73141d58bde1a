import numpy as np
import torch

from saeatlas.store import RunningMoments


def test_merged_moments_equal_numpy_on_large_offset():
    # A large common offset breaks the sum-of-squares formula; the pairwise merge holds.
    rng = np.random.default_rng(0)
    x = 1e6 + rng.normal(scale=1e-2, size=(1000, 5))
    m = RunningMoments(5)
    for chunk in np.array_split(x, [3, 100, 101, 640]):
        m.update(torch.from_numpy(chunk.astype(np.float64)))
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, x.std(0), rtol=1e-6)
    assert m.count == 1000


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 3)), rng.normal(size=(30, 3))
    m = RunningMoments(3)
    m.update(a)
    restored = RunningMoments.from_state(m.state())
    m.update(b)
    restored.update(b)
    np.testing.assert_array_equal(m.mean, restored.mean)
    np.testing.assert_array_equal(m.m2, restored.m2)
    np.testing.assert_allclose(m.var, np.concatenate([a, b]).var(0))


def test_empty_update_changes_nothing():
    m = RunningMoments(2)
    m.update(np.zeros((0, 2)))
    assert m.count == 0 and np.all(m.std == 0)
