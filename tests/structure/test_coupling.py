"""Units assigned to the ensemble's modules by how their energy follows each module's."""

import numpy as np
import scipy.sparse as sp
import torch

from saeatlas._coordinator import solo
from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import LayerSpec
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.codes import encode_store
from saeatlas.structure.graph.finders import make_levels, member_seed
from saeatlas.structure.inference.consensus import level_consensus
from saeatlas.structure.inference.coupling import (
    assign_units,
    energy_coupling,
    feature_modules,
    module_energy,
)


def test_energy_coupling_is_the_correlation_of_squared_standardised_units_with_the_energy(
    tmp_path, npy_store
):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(900, 10, generator=g) * torch.linspace(0.5, 3, 10) + 2.0
    store = npy_store(tmp_path, x.numpy(), [("a", 0, 4), ("b", 4, 10)])
    layers = (LayerSpec("a", 0, 4, (4,), "sample"), LayerSpec("b", 4, 10, (6,), "sample"))
    sae = SparseAutoencoder(SAEConfig(d_in=10, d_sae=20, k=3, layers=layers), g)
    # every 2nd batch of 100 rows is encoded: the pass must read the same rows, in order
    codes = encode_store(sae, store, batch_size=100, max_rows=500)
    rows = codes.rows
    energy = np.random.default_rng(0).standard_normal((rows.size, 3))
    energy[:, 1] += 3 * (x.numpy()[rows, 2] - 2.0) ** 2  # unit 2's energy drives module 1
    energy = (energy - energy.mean(0)) / energy.std(0)
    got = energy_coupling(
        store, codes, energy, batch_size=100, max_rows=500, device="cpu", coord=solo()
    )
    xs = x.numpy()[rows].astype(np.float64)
    z2 = ((xs - xs.mean(0)) / xs.std(0)) ** 2
    want = np.corrcoef(np.concatenate([z2, energy], axis=1).T)[:10, 10:]
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert got[2, 1] > 0.5 and np.abs(np.delete(got[:, 1], 2)).max() < 0.2


def test_module_energy_pools_each_dictionarys_features_of_a_module():
    a = sp.random(200, 6, density=0.3, random_state=1, format="csr")
    b = sp.random(200, 4, density=0.3, random_state=2, format="csr")
    fm_a = np.array([0, 0, 1, -1, 1, 0])
    fm_b = np.array([1, -1, 0, 0])  # another dictionary: other features, other order
    got = module_energy([a, b], [fm_a, fm_b], 3)

    def std(e):
        sd = e.std(0)
        return np.where(sd > 0, (e - e.mean(0)) / np.where(sd > 0, sd, 1), 0.0)

    def energy(m, fm):
        d = m.toarray() ** 2
        return np.stack([d[:, fm == k].sum(1) for k in range(3)], 1)

    want = (std(energy(a, fm_a)) + std(energy(b, fm_b))) / 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # summed in float32
    assert (got[:, 2] == 0).all()  # module 2 has no features in either dictionary


def test_feature_modules_follow_the_units_their_community_projects_onto():
    unit_modules = np.array([0, 0, 0, 1, 1, 1, -1, -1])
    community_units = np.array([1, 1, 1, 0, 0, -1, 2, 2])  # communities 1 -> 0, 0 -> 1
    feature_community = np.array([0, 1, 1, 2, -1, 0])
    got = feature_modules(community_units, feature_community, unit_modules)
    # community 0 holds 2 of module 1's 3 units (Jaccard 2/3); community 2 matches none
    assert got.tolist() == [1, 0, 0, -1, -1, 1]


def test_units_join_the_module_their_energy_follows_not_their_consensus_label():
    consensus = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, -1, -1])
    coupling = np.array(
        [
            [0.50, 0.05],
            [0.45, 0.10],
            [0.55, 0.02],
            [0.40, 0.05],
            [0.05, 0.50],
            [0.02, 0.45],
            [0.10, 0.60],
            [0.05, 0.40],
            [0.05, 0.45],  # the consensus put it in 0; its energy follows module 1
            [0.30, 0.05],  # in no consensus module; follows module 0
            [0.10, 0.08],  # follows nothing
        ]
    )
    assert assign_units(coupling, consensus).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 0, -1]
    # a module the energy remakes (under half of its consensus units stay) is dropped
    remade = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, -1, -1])
    remade[:3] = 1  # the consensus put units 0-2 in module 1: their energy follows 0
    assert assign_units(coupling, remade).tolist() == [-1] * 4 + [1] * 5 + [-1, -1]
    # a module holding every unit keeps them all; no module, no assignment
    assert assign_units(coupling[:, :1], np.zeros(11, int)).tolist() == [0] * 11
    assert assign_units(np.zeros((3, 0)), np.full(3, -1)).tolist() == [-1, -1, -1]


def test_members_fit_with_their_own_seeds_so_a_node_order_artifact_does_not_reproduce():
    # a ring of eight equal blocks, each linked to its two neighbours: at a coarse
    # resolution Leiden merges runs of neighbouring blocks, where the cuts fall depending
    # on its node order. Fitted with one seed, every member draws the same cuts and the
    # consensus "reproduces" them; with each member's own seed (member_seed) they differ.
    n, size = 8, 8
    block = np.repeat(np.arange(n), size)
    gap = np.abs(block[:, None] - block[None, :])
    ring = (gap == 1) | (gap == n - 1)
    w = np.where(gap == 0, 1.0, np.where(ring, 0.4, 0.0))
    w = np.triu(w * np.random.default_rng(0).uniform(0.95, 1.05, w.shape), 1)
    graph = sp.csr_matrix(w + w.T)
    cfg = AtlasConfig(resolutions=(0.3,), seed=0)
    seeds = [make_levels(cfg, i)[0].random_state for i in range(8)]
    assert seeds[0] == cfg.seed == member_seed(0, 0) and len(set(seeds)) == 8
    one_seed = level_consensus(np.stack([make_levels(cfg)[0].fit(graph).labels_] * 8))
    own = level_consensus(np.stack([make_levels(cfg, i)[0].fit(graph).labels_ for i in range(8)]))
    assert one_seed.agreement == 1.0 and one_seed.coverage == n * size
    assert own.agreement < 0.8 and own.coverage < n * size
    # the blocks themselves reproduce whatever the seeds
    fine = AtlasConfig(resolutions=(2.0,), seed=0)
    blocks = level_consensus(
        np.stack([make_levels(fine, i)[0].fit(graph).labels_ for i in range(8)])
    )
    assert blocks.n_modules == n and blocks.coverage == n * size


def test_the_global_mode_is_taken_out_before_the_units_energy_is_coupled(tmp_path, npy_store):
    """A mode every unit shares filled most of a unit's squared activation, so the units
    that load on it most coupled to their module under the halfway cut and were left
    out of it (planted `easy` with a dense mode twice as strong: 25 of 120 module units
    in no module, ARI 0.59; with the mode taken out, 0.98)."""
    from saeatlas.structure.graph.units import global_mode

    rng = np.random.default_rng(3)
    n, u = 4000, 60
    on = rng.random((n, 3)) < 0.2  # three modules of 20 units each
    strength = on * rng.exponential(1.0, (n, 3))
    own = np.repeat([0, 1, 2], 20)
    signal = strength[:, own] * rng.choice([-1.0, 1.0], u)  # followed with either sign
    loading = rng.uniform(1.0, 4.0, u)
    x = signal + np.outer(rng.standard_normal(n), loading) + 0.2 * rng.standard_normal((n, u))
    x = x.astype(np.float32).astype(np.float64)  # as the store holds it
    store = npy_store(tmp_path, x.astype(np.float32), [("a", 0, u)])
    layers = (LayerSpec("a", 0, u, (u,), "sample"),)
    sae = SparseAutoencoder(SAEConfig(d_in=u, d_sae=8, k=2, layers=layers))
    codes = encode_store(sae, store, batch_size=500)
    energy = (strength**2 - (strength**2).mean(0)) / (strength**2).std(0)
    mode = global_mode(np.corrcoef(x.T))
    assert mode is not None
    kw = dict(batch_size=500, max_rows=None, device="cpu", coord=solo())
    plain = energy_coupling(store, codes, energy, **kw)
    got = energy_coupling(store, codes, energy, mode=mode, **kw)
    z = (x - x.mean(0)) / x.std(0)
    z -= np.outer(z @ mode, mode)
    want = np.corrcoef(np.concatenate([z**2, energy], axis=1).T)[:u, u:]
    np.testing.assert_allclose(got, want, atol=1e-9)
    assert (assign_units(plain, own) != own).sum() >= 5  # the mode hid them
    assert (assign_units(got, own) == own).all()
