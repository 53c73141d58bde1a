"""The atlas's numbers against an independent computation from the SAE and the rows:
figures that are wrong without an error (sixth hostile sweep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def dense_atlas(outputs):
    """An atlas of the protected SAE and store with `max_density` low enough that some
    features are dense (kept out of modules), and the SAE's own codes of the rows."""
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store import ActivationStore
    from saeatlas.structure import AtlasConfig, map_structure

    cfg = AtlasConfig(n_null=2, nulls=("permutation",), max_density=0.1)
    atlas = map_structure(outputs.sae, outputs.store, cfg)
    sae = SparseAutoencoder.load(outputs.sae)
    with torch.no_grad():
        acts = sae.encode(ActivationStore.open(outputs.store).read()).acts.double().numpy()
    return atlas, acts, cfg


def test_firing_density_of_a_dense_feature_is_its_firing_not_zero(dense_atlas):
    # `firing_density` was read from the graph's firings, whose dense and global-mode
    # columns are emptied: a feature flagged dense (firing on more than `max_density` of
    # the rows) showed firing density 0 in features.parquet and the report
    atlas, acts, cfg = dense_atlas
    f = atlas.features
    assert f["dense"].any()
    p99 = [np.percentile(a[a > 0], 99) if (a > 0).any() else 0.0 for a in acts.T]
    cut = cfg.min_activation * np.array(p99)
    strong = ((acts > 0) & (acts >= cut[None, :])).mean(axis=0)
    np.testing.assert_allclose(f["firing_density"], strong, atol=1e-9)
    assert (f.loc[f["dense"], "firing_density"] > cfg.max_density).all()
    np.testing.assert_allclose(f["density"], (acts > 0).mean(axis=0), atol=1e-12)


def test_a_dense_feature_joins_no_module_of_the_units_correlations():
    # When the atlas reports the units' correlation modules, features joined the module
    # receiving half their energy, dense ones too: on the digits demo's network three
    # features firing on 35% of the rows were module members, shown as a module's top
    # features and counted in its `n_features`, though dense features are no module's
    from saeatlas.structure.mapping import _features_of

    attr = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    unit_module = np.array([0, 0, 1, 1])
    excluded = np.array([False, False, True])
    np.testing.assert_array_equal(_features_of(attr, unit_module, 2, excluded), [0, 1, -1])
    none = np.zeros(3, bool)
    np.testing.assert_array_equal(_features_of(attr, unit_module, 2, none), [0, 1, 0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_sae_is_mapped_by_its_own_encoding(tmp_path, outputs, dtype):
    # A `dtype` bfloat16 cfg.json ended the analysis in a TypeError traceback (numpy has
    # no bfloat16, for the SAE's fingerprint), and a float16 TopK SAE's codes were taken
    # from rows cast after b_dec was subtracted in float32, not as the SAE encodes them:
    # densities and mean activations differed from its own encoding
    import json
    import shutil

    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store import ActivationStore
    from saeatlas.structure import AtlasConfig, map_structure

    sae_dir = shutil.copytree(outputs.sae, tmp_path / "sae")
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    (sae_dir / "cfg.json").write_text(json.dumps({**cfg, "dtype": dtype}))
    atlas = map_structure(sae_dir, outputs.store, AtlasConfig(n_null=2, nulls=("permutation",)))
    sae = SparseAutoencoder.load(sae_dir)
    with torch.no_grad():
        acts = sae.encode(ActivationStore.open(outputs.store).read()).acts.float().numpy()
    n_fire = (acts > 0).sum(axis=0)
    np.testing.assert_array_equal(atlas.features["density"], n_fire / acts.shape[0])
    mean = acts.sum(axis=0) / np.maximum(n_fire, 1)
    np.testing.assert_allclose(atlas.features["mean_activation"], mean, rtol=1e-6)


def test_atlas_json_is_json_other_tools_read(tmp_path, outputs):
    # An analysis whose random-SAE control and real atlas both had no modules wrote
    # `"unit_ari": NaN` into atlas.json: Python reads it, JavaScript's JSON.parse (and jq's
    # strict peers) refuse the whole file. Undefined numbers are now null, as elsewhere.
    import json

    from saeatlas.structure import AtlasConfig, analyze
    from saeatlas.structure.atlas import Atlas

    atlas = analyze(outputs.sae, outputs.store, AtlasConfig(n_null=2, nulls=("permutation",)))
    atlas.summary["extra"] = {"z": float("inf"), "ps": [float("nan"), 0.5]}
    atlas.save(tmp_path / "atlas")

    def refuse(name: str) -> None:
        raise AssertionError(f"atlas.json holds {name}, which is no JSON")

    text = (tmp_path / "atlas" / "atlas.json").read_text()
    summary = json.loads(text, parse_constant=refuse)
    assert summary["extra"] == {"z": None, "ps": [None, 0.5]}
    assert Atlas.load(tmp_path / "atlas").summary["extra"]["ps"] == [None, 0.5]


@pytest.mark.parametrize("as_path", [False, True])  # a path was an AttributeError
def test_an_ablation_of_a_nan_loss_is_refused_not_reported(outputs, dense_atlas, as_path):
    # inputs on which the model gives NaN (one NaN value in one input) made the clean
    # loss NaN and every module's effect NaN, and the atlas said "0 of N hurt the loss
    # more than random unit sets"
    from saeatlas.capture import load_model
    from saeatlas.errors import NonFiniteError
    from saeatlas.store import ActivationStore
    from saeatlas.structure.causal.ablation import ablate_atlas

    atlas = dense_atlas[0]
    model = load_model(outputs.model).model
    x = np.load(outputs.inputs)
    x[7, 2] = np.nan
    labels = np.arange(len(x)) % 8
    store = str(outputs.store) if as_path else ActivationStore.open(outputs.store)
    with pytest.raises(NonFiniteError, match="NaN or Inf on 1 of 300 inputs .the first: input 7"):
        ablate_atlas(atlas, model, x, store, labels=labels, n_random=2)


def test_max_unit_corr_is_undefined_for_a_feature_that_never_fires(dense_atlas, outputs):
    # a dead feature's best unit correlation was 0, and atlas.json's
    # `features_max_unit_corr_le_0_3` counted it among the features no unit explains
    # (on a planted store: 0.32 of the features, 0.19 of those that fire)
    from saeatlas.store import ActivationStore

    atlas, acts, _ = dense_atlas
    x = ActivationStore.open(outputs.store).read().double().numpy()
    live = acts.std(axis=0) > 0
    assert (~live).any() and live.any()
    x = x[:, x.std(axis=0) > 0]  # a constant unit correlates with nothing
    xs = (x - x.mean(0)) / x.std(0)
    a = (acts[:, live] - acts[:, live].mean(0)) / acts[:, live].std(0)
    best = np.abs(a.T @ xs / len(x)).max(axis=1)
    f = atlas.features["max_unit_corr"].to_numpy()
    assert np.isnan(f[~live]).all()
    np.testing.assert_allclose(f[live], best, atol=1e-9)
    share = atlas.summary["features_max_unit_corr_le_0_3"]
    assert share == pytest.approx((best <= 0.3).mean())
