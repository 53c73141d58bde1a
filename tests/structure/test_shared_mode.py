"""A group of units that co-fires only through the mode every unit shares is no
module (:mod:`saeatlas.structure.inference.shared_mode`), in the units' correlation
view as in the SAE's own modules (whose global-mode features are set aside)."""

import numpy as np
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.inference.correlation import correlation_view
from saeatlas.structure.inference.shared_mode import OWN_SHARE, own_share
from saeatlas.structure.inputs import DEFAULT_TIMEOUT_S, prepared_on_ranks

BLOCKS = np.repeat([0, 1, 2, 3], 10)


def _rows(seed: int, n: int = 3000) -> np.ndarray:
    """Four blocks of ten units, each driven by its own sparse factor, and ten free
    units of small variance; a global factor drives every unit alike, so the free
    units correlate strongly with each other (about 0.6) through it alone."""
    rng = np.random.default_rng(seed)
    drive = 2 * rng.standard_normal((n, 4)) * (rng.random((n, 4)) < 0.3)
    g = rng.standard_normal((n, 1))
    blocks = drive[:, BLOCKS] + 0.4 * g + 0.5 * rng.standard_normal((n, 40))
    free = 0.4 * g + 0.3 * rng.standard_normal((n, 10))
    return np.hstack([blocks, free])


def _corr(x: np.ndarray) -> np.ndarray:
    return np.corrcoef(x, rowvar=False)


def test_the_shared_factor_explains_a_group_of_free_units_and_not_the_modules():
    labels = np.concatenate([BLOCKS, np.full(10, 4)])  # the free units as a fifth "module"
    free = []
    for seed in range(5):
        share = own_share(_corr(_rows(seed)), labels)
        assert (share[:4] > 0.8).all(), share
        free.append(share[4])
    # sampling leaves the free units a little of their own (the drives' chance
    # correlations in 3,000 rows enter the pairs between blocks), far under the cut
    assert max(np.abs(free)) < OWN_SHARE * 0.7, free
    # with the free units left out of every module, the modules keep their share
    share = own_share(_corr(_rows(0)), np.concatenate([BLOCKS, np.full(10, -1)]))
    assert share.size == 4 and (share > 0.8).all()


def test_modules_that_only_fix_products_of_loadings_are_judged_against_each_other():
    """Two modules and no unit outside them: the pairs between them fix only the
    product of their loadings, and the balanced fit predicts each module's
    within-correlation at the correlation between the two."""
    labels = np.repeat([0, 1], 6)
    corr = np.full((12, 12), 0.3)
    for k in range(2):
        corr[np.ix_(labels == k, labels == k)] = 0.5
    np.fill_diagonal(corr, 1.0)
    np.testing.assert_allclose(own_share(corr, labels), 0.4, atol=0.01)
    # one module, nothing outside it: nothing to fit, kept whole
    assert own_share(corr, np.zeros(12, int)).tolist() == [1.0]
    assert own_share(corr, np.full(12, -1)).size == 0


def test_the_correlation_view_counts_no_module_of_units_held_by_the_mode(tmp_path):
    np.save(tmp_path / "x.npy", _rows(1).astype(np.float32))
    store = ActivationStore.open(tmp_path / "x.npy")
    sae = SparseAutoencoder(SAEConfig("topk", d_in=50, d_sae=32, k=4), torch.Generator())
    cfg = AtlasConfig(n_null=10, n_bootstrap=5, null_rows=3000, seed=0)
    view = prepared_on_ranks(correlation_view, sae, store, cfg, DEFAULT_TIMEOUT_S)
    found = view.levels[view.chosen].reproducible_labels()
    free = found[40:]
    # the consensus does group the free units, and they are not counted
    assert (free >= 0).all() and np.unique(free).size == 1
    assert (view.own < OWN_SHARE).sum() == 1
    assert (view.labels[40:] == -1).all()
    counted = view.counted
    assert np.unique(counted[counted >= 0]).size == 4
    for k in range(4):
        assert np.unique(counted[:40][BLOCKS == k]).size == 1 and counted[k * 10] >= 0
    assert view.summary()["n_shared_mode_groups"] == 1
    assert len(view.reproducibility()) == 4
