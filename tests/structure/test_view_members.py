"""The units' correlation view adds bootstrap members while the consensus it would
report is undecided (a unit between two modules, a module near the reproducibility
cut), up to :data:`VIEW_MEMBERS` where the units are few; clear modules keep the
ensemble's count."""

import os

import numpy as np
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.firing import VIEW_MEMBERS, view_members
from saeatlas.structure.inference.consensus import level_consensus
from saeatlas.structure.inference.correlation import correlation_view, undecided
from saeatlas.structure.inference.partitions import partition_ari
from saeatlas.structure.inputs import DEFAULT_TIMEOUT_S, prepared_on_ranks

BLOCKS = np.repeat([0, 1, 2], 8)


def test_a_unit_between_two_modules_or_a_module_near_the_cut_is_undecided():
    clear = np.tile(BLOCKS, (6, 1))
    assert not undecided(level_consensus(clear))
    torn = clear.copy()
    torn[::2, 0] = 1  # unit 0 in module 1 in half the members
    torn[1::2, 1] = 1  # unit 1 too, in the other half
    assert undecided(level_consensus(torn))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 4, (6, 24))  # members that agree on nothing: no module to report
    assert not level_consensus(noise).reproducible.any()
    assert not undecided(level_consensus(noise))


def test_view_members_grow_only_where_units_are_few_and_their_grams_cheap():
    assert view_members(6, 144, 1797) == VIEW_MEMBERS  # the digits demo
    assert view_members(30, 144, 1797) == 30
    assert view_members(6, 4096, 1797) == 6
    assert view_members(2, 384, 1_000_000) == 2  # a gram costs more than they may
    assert 6 < view_members(6, 512, 10_000) < VIEW_MEMBERS


def _members(tmp_path, x):
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    return _view(tmp_path / "x.npy")


def _view(path):
    store = ActivationStore.open(path)
    d_in = store.n_units
    sae = SparseAutoencoder(SAEConfig("topk", d_in=d_in, d_sae=32, k=4), torch.Generator())
    cfg = AtlasConfig(n_null=0, n_bootstrap=5, seed=0)  # 6 members to start from
    view = prepared_on_ranks(correlation_view, sae, store, cfg, DEFAULT_TIMEOUT_S)
    return view.levels[view.chosen].members.shape[0], view


def _bridged(seed):
    """Four blocks of ten units, and three units driven by a factor of their own and
    weakly by blocks 0 and 1."""
    rng = np.random.default_rng(seed)
    drive = rng.standard_normal((2000, 5)) * (rng.random((2000, 5)) < 0.3)
    x = drive[:, np.repeat([0, 1, 2, 3], 10)] + 0.6 * rng.standard_normal((2000, 40))
    bridge = 0.45 * (drive[:, :1] + drive[:, 1:2]) + drive[:, 4:5]
    return np.hstack([x, bridge + 0.6 * rng.standard_normal((2000, 3))])


def test_clear_modules_keep_the_ensembles_count(tmp_path):
    rng = np.random.default_rng(3)
    drive = rng.standard_normal((2000, 3)) * (rng.random((2000, 3)) < 0.3)
    n, view = _members(tmp_path, drive[:, BLOCKS] + 0.6 * rng.standard_normal((2000, 24)))
    assert n == 6 and view.levels[view.chosen].reproducible.sum() == 3


def test_the_view_grows_exactly_while_its_reported_consensus_is_undecided(tmp_path):
    grew = []
    for seed in range(3, 6):
        n, view = _members(tmp_path, _bridged(seed))
        level = view.levels[view.chosen]
        assert n in (6, 12, 18, 24)
        first = level_consensus(level.members[:6])
        assert undecided(first) == (n > 6)  # grown exactly where the first six left it open
        if 6 < n < VIEW_MEMBERS:
            assert not undecided(level)  # and stopped once decided
        grew.append(n > 6)
    assert any(grew) and not all(grew)


def test_the_digits_networks_correlation_modules_agree_across_analysis_seeds(digits_store):
    # the demo's network: a group of units lies between two of its modules, which six
    # members put in one or the other by chance (seeds 0 and 2 agreed at ARI 0.74)
    sae = SparseAutoencoder(SAEConfig("topk", d_in=144, d_sae=64, k=8), torch.Generator())
    views = [
        prepared_on_ranks(
            correlation_view,
            sae,
            digits_store,
            AtlasConfig(n_null=0, n_bootstrap=5, seed=seed),  # the demo's six members
            DEFAULT_TIMEOUT_S,
        )
        for seed in range(3)
    ]
    assert all(v.labels.max() + 1 == 3 for v in views)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert partition_ari(views[a].labels, views[b].labels) >= 0.8


def _view_worker(rank, world, port, path, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    n, view = _view(path)
    level = view.levels[view.chosen]
    np.savez(f"{out}/view-r{rank}.npz", n=n, labels=view.labels, repro=level.reproducibility)


def test_two_ranks_grow_the_view_as_one_process_does(spawn_ranks, tmp_path):
    np.save(tmp_path / "x.npy", _bridged(5).astype(np.float32))
    n, view = _view(tmp_path / "x.npy")
    assert n > 6  # the members added are shared out among the ranks, who decide alike
    spawn_ranks(_view_worker, (str(tmp_path / "x.npy"), str(tmp_path)), 120)
    for r in range(2):
        two = np.load(tmp_path / f"view-r{r}.npz")
        assert int(two["n"]) == n
        np.testing.assert_array_equal(two["labels"], view.labels)
        np.testing.assert_array_equal(two["repro"], view.levels[view.chosen].reproducibility)
