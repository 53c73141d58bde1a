"""The units' correlation view above :data:`DENSE_UNITS`: each unit keeps its strongest
pairs (a k-nearest-neighbour graph), so thousands of units do not make every graph
dense. Tested on small stores with the threshold lowered: the same code path."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.units import unit_correlation_graph
from saeatlas.structure.inference import correlation
from saeatlas.structure.inputs import DEFAULT_TIMEOUT_S, prepared_on_ranks


def test_a_neighbour_graph_keeps_each_units_strongest_pairs_of_the_full_graph():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 60)) + rng.standard_normal((400, 6)).repeat(10, axis=1)
    corr = np.corrcoef(x.T)
    corr = (corr + corr.T) / 2  # exactly symmetric, as a graph's weights must be
    full = unit_correlation_graph(corr, 400, clean=False).toarray()
    k = 5
    kept = unit_correlation_graph(corr, 400, clean=False, neighbours=k)
    g = kept.toarray()
    np.testing.assert_array_equal(g, g.T)
    on = g > 0
    np.testing.assert_array_equal(g[on], full[on])  # the full graph's weights, unchanged
    top = np.argsort(-full, axis=1)[:, :k]
    own = np.zeros_like(on)
    np.put_along_axis(own, top, True, axis=1)
    own &= full > 0
    assert on[own].all()  # every unit keeps its k strongest pairs
    assert (own | own.T)[on].all()  # and a pair only where one of its units keeps it
    assert kept.nnz < full.astype(bool).sum() / 3
    same = unit_correlation_graph(corr, 400, clean=False, neighbours=59).toarray()
    np.testing.assert_array_equal(same, full)  # as many neighbours as units: every pair


def _view(tmp_path, x, seed):
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    store = ActivationStore.open(tmp_path / "x.npy")
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig("topk", d_in=x.shape[1], d_sae=32, k=4), g)
    cfg = AtlasConfig(n_null=5, null_rows=len(x), n_bootstrap=2, seed=seed)
    return prepared_on_ranks(correlation.correlation_view, sae, store, cfg, DEFAULT_TIMEOUT_S)


@pytest.fixture
def few_neighbours(monkeypatch):
    monkeypatch.setattr(correlation, "DENSE_UNITS", 24)
    monkeypatch.setattr(correlation, "UNIT_NEIGHBOURS", 6)


def test_the_neighbour_view_finds_blocks_of_correlated_units(tmp_path, few_neighbours):
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(6), 12)
    drive = rng.standard_normal((3000, 6)) * (rng.random((3000, 6)) < 0.3)
    x = np.maximum(
        drive[:, truth] * rng.uniform(0.5, 1.5, 72) + 0.7 * rng.standard_normal((3000, 72)), 0
    )
    view = _view(tmp_path, x, 0)
    assert correlation.unit_neighbours(72) == 6
    assert view.partition_ok
    assert adjusted_rand_score(truth, view.labels) > 0.9
    assert view.module_ok.sum() == 6


def test_the_neighbour_view_calls_independent_units_unstructured_in_at_most_1_of_12_seeds(
    tmp_path, few_neighbours
):
    claimed = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        x = np.abs(rng.standard_t(3, size=(2000, 72))) * (rng.random((2000, 72)) < 0.2)
        view = _view(tmp_path, x, seed)
        if view.partition_ok or view.module_ok.any():
            claimed.append(seed)
    assert len(claimed) <= 1, claimed


def test_the_raw_and_cleaned_views_share_their_null_graphs_and_test_as_alone(
    tmp_path, few_neighbours
):
    rng = np.random.default_rng(2)
    truth = np.repeat(np.arange(4), 12)
    drive = rng.standard_normal((1500, 4)) * (rng.random((1500, 4)) < 0.3)
    x = drive[:, truth] + 0.8 * rng.standard_normal((1500, 48))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    store = ActivationStore.open(tmp_path / "x.npy")
    sae = SparseAutoencoder(SAEConfig("topk", d_in=48, d_sae=32, k=4), torch.Generator())
    cfg = AtlasConfig(n_null=4, null_rows=1000, n_bootstrap=2, seed=3)

    def both(inp):
        raw = correlation.correlation_view(inp)
        (graphs,) = [v for k, v in inp.mode.views.items() if k[0] == "null graphs"]
        waiting = sorted((c, -1 if d is None else d, r) for c, d, r in graphs.kept)
        return raw, waiting, correlation.correlation_view(inp, clean=True), graphs.kept

    raw, waiting, clean, left = prepared_on_ranks(both, sae, store, cfg, DEFAULT_TIMEOUT_S)
    # the block and every draw of both nulls
    assert waiting == [(True, -1, False)] + [(True, d, r) for d in range(4) for r in (False, True)]
    assert not left  # the cleaned view took them all
    alone = [
        prepared_on_ranks(
            lambda inp, c=c: correlation.correlation_view(inp, clean=c),
            sae,
            store,
            cfg,
            DEFAULT_TIMEOUT_S,
        )
        for c in (False, True)
    ]
    for shared, own in zip((raw, clean), alone):
        assert [t.as_dict() for t in shared.tests] == [t.as_dict() for t in own.tests]
        np.testing.assert_array_equal(shared.labels, own.labels)
