"""The demo's first stage: train on digits, capture every hidden layer, read it back.
(The whole demo, capture to report, is tested in tests/pipeline/test_demo.py.)"""

import numpy as np

from saeatlas.demo import capture_digits
from saeatlas.demo.digits import DIGITS_LAYERS, digits_data


def test_demo_captures_the_digits_network(tmp_path):
    store = capture_digits(tmp_path / "store", progress=False)
    _, y = digits_data()
    assert store.n_rows == len(y) == 1797
    assert [l.name for l in store.layers] == list(DIGITS_LAYERS)
    assert store.manifest.provenance["accuracy"] > 0.9
    assert store.rows().column("label").to_pylist() == y.tolist()
    x = store.read().numpy()
    assert (x >= 0).all()  # ReLU outputs
    np.testing.assert_allclose(store.mean, x.mean(0), rtol=1e-5, atol=1e-6)
    # seeded: a second run gives the same store
    again = capture_digits(tmp_path / "again", progress=False)
    assert [s.sha256 for s in again.manifest.shards] == [s.sha256 for s in store.manifest.shards]
