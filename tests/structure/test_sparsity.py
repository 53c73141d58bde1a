"""How the modules change across a sparsity sweep's members."""

import json

import pytest

from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig, PlantedConfig, analyze, make_planted, save_planted
from saeatlas.sweep import sweep
from saeatlas.sweep.sweep import sweep_members
from saeatlas.train import TrainConfig


@pytest.fixture(scope="module")
def planted_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparsity")
    data = make_planted(PlantedConfig.preset("easy", seed=0, n_rows=6000))
    store = ActivationStore.open(save_planted(data, root / "acts"))
    base = TrainConfig(d_sae=256, batch_size=512, tokens=150_000, seed=0)
    result = sweep(store, base, "k", [8, 16, 32], root / "sweep", seeds=1, extend=0, progress=False)
    return data, store, result, root


def test_planted_modules_hold_across_sparsities_and_the_atlas_says_so(planted_sweep):
    data, store, result, root = planted_sweep
    over, members = sweep_members(root / "sweep")
    assert over == "k" and [v for v, _ in members] == [8.0, 16.0, 32.0]
    chosen = members[1][1]  # the k = 16 member is the atlas's SAE
    atlas = analyze(chosen, store, AtlasConfig(nulls=()), sweep=(over, members))
    sm = json.loads(json.dumps(atlas.summary["sweep_modules"]))  # JSON-ready
    assert sm["values"] == [8.0, 16.0, 32.0] and len(sm["neighbour_ari"]) == 2
    # the atlas's own SAE, one run against the ensemble's consensus: nearly the same modules
    assert sm["atlas_ari"][1] >= 0.9
    # four planted modules, found at every sparsity: the map does not hinge on k here
    assert min(sm["neighbour_ari"]) >= 0.7
    assert all(n >= data.n_modules for n in sm["n_modules"])


def test_members_in_any_order_and_a_missing_sweep(planted_sweep, tmp_path):
    from saeatlas.errors import ConfigError

    _, store, _, root = planted_sweep
    over, members = sweep_members(root / "sweep")
    atlas = analyze(members[0][1], store, AtlasConfig(nulls=()), sweep=(over, members[::-1]))
    assert atlas.summary["sweep_modules"]["values"] == [8.0, 16.0, 32.0]
    assert atlas.summary["sweep_modules"]["atlas_ari"][0] >= 0.9
    with pytest.raises(ConfigError, match="no readable sweep.json"):
        sweep_members(tmp_path)
