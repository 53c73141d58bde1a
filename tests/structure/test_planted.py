import json

import numpy as np
import pytest

from saeatlas.errors import ConfigError, StoreError
from saeatlas.store import ActivationStore
from saeatlas.structure.synthetic.config import PRESETS, PlantedConfig, module_spans
from saeatlas.structure.synthetic.planted import (
    make_planted,
    module_parents,
    read_planted_truth,
    save_planted,
)

N = 20000  # rows: sampling error of a phi coefficient is about 1/sqrt(N) = 0.007


@pytest.fixture(scope="module")
def easy():
    return make_planted(PlantedConfig.preset("easy", n_rows=N))


@pytest.fixture(scope="module")
def null():
    return make_planted(PlantedConfig.preset("null", n_rows=N))


def unit_contrast(X, unit_module):
    """Mean |corr| of same-module and of different-module unit pairs, after removing PC 1."""
    Z = X.astype(np.float64)
    Z = (Z - Z.mean(0)) / Z.std(0)
    u, s, vt = np.linalg.svd(Z, full_matrices=False)
    Z -= np.outer(u[:, 0] * s[0], vt[0])
    C = np.abs(np.corrcoef(Z.T))
    m = unit_module
    owned = (m[:, None] >= 0) & (m[None, :] >= 0)
    same = owned & (m[:, None] == m[None, :])
    np.fill_diagonal(same, False)
    diff = owned & (m[:, None] != m[None, :])
    return C[same].mean(), C[diff].mean()


def phi_matrix(firing):
    B = (firing > 0).astype(np.float64).toarray()
    C = np.corrcoef(B.T)
    np.fill_diagonal(C, np.nan)
    return C


def test_same_seed_same_data_other_seed_other_data():
    cfg = PlantedConfig(n_rows=2000)
    a, b = make_planted(cfg), make_planted(cfg)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.directions, b.directions)
    np.testing.assert_array_equal(a.unit_module, b.unit_module)
    assert (a.firing != b.firing).nnz == 0
    c = make_planted(PlantedConfig(n_rows=2000, seed=1))
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.unit_module, c.unit_module)


def test_shapes_layers_and_unit_norm_directions():
    cfg = PlantedConfig(n_rows=500, layer_sizes=(10, 20, 30))
    d = make_planted(cfg)
    n_features = 4 * 32 + 32
    assert d.X.shape == (500, 60) and d.X.dtype == np.float32
    assert d.directions.shape == (n_features, 60) and d.directions.dtype == np.float32
    assert d.firing.shape == (500, n_features) and d.module_active.shape == (500, 4)
    assert d.feature_module.shape == (n_features,) and d.unit_module.shape == (60,)
    assert d.layer_names == ("layer0", "layer1", "layer2")
    assert d.layer_slices() == [("layer0", 0, 10), ("layer1", 10, 30), ("layer2", 30, 60)]
    for i, (_, start, stop) in enumerate(d.layer_slices()):
        assert (d.unit_layer[start:stop] == i).all()
    np.testing.assert_allclose(np.linalg.norm(d.directions, axis=1), 1.0, rtol=1e-5)
    assert (d.firing.data > 0).all()
    np.testing.assert_allclose(d.scaled_directions, d.directions * d.unit_scale, rtol=1e-5)


def test_modules_own_equal_shares_and_features_sit_on_their_module(easy):
    cfg = easy.config
    for start, stop in [(s, e) for _, s, e in easy.layer_slices()]:
        m = easy.unit_module[start:stop]
        counts = np.bincount(m[m >= 0], minlength=cfg.n_modules)
        assert len(set(counts)) == 1 and counts[0] > 0  # equal shares
        assert (m == -1).sum() >= round(cfg.free_unit_fraction * (stop - start))
    module_part = np.array(
        [
            (easy.directions[f, easy.unit_module == k] ** 2).sum()
            for f, k in enumerate(easy.feature_module)
            if k >= 0
        ]
    )
    np.testing.assert_allclose(module_part, 1 - cfg.leakage, rtol=1e-4)
    assert (easy.feature_module == -1).sum() == cfg.n_background_features
    # superposition: more features per module than units per module
    assert cfg.features_per_module > 0.5 * (easy.unit_module == 0).sum()


def test_units_of_a_module_correlate_more_than_units_of_different_modules(easy):
    same, diff = unit_contrast(easy.X, easy.unit_module)
    assert same > 3 * diff, (same, diff)


def test_features_of_a_module_cofire_and_others_do_not(easy):
    C = phi_matrix(easy.firing)
    fm = easy.feature_module
    owned = (fm[:, None] >= 0) & (fm[None, :] >= 0)
    same = owned & (fm[:, None] == fm[None, :])
    cross = ~((fm[:, None] >= 0) & (fm[:, None] == fm[None, :]))
    assert np.nanmin(C[same]) > 0.3
    assert np.nanmax(np.abs(C[cross])) < 5.5 / np.sqrt(N)


def test_null_features_fire_independently(null):
    C = phi_matrix(null.firing)
    assert np.nanmax(np.abs(C)) < 5.5 / np.sqrt(N)
    assert abs(np.nanmean(C)) < 0.5 / np.sqrt(N)


def test_null_has_the_structured_marginals(easy, null):
    cfg = easy.config
    rho = cfg.module_rate * cfg.p_in + (1 - cfg.module_rate) * cfg.p_out
    se = np.sqrt(rho * (1 - rho) / N)
    for d in (easy, null):
        density = np.asarray((d.firing > 0).mean(0)).ravel()
        assert d.firing.shape[1] == cfg.n_features
        assert np.abs(density - rho).max() < 5 * se
        np.testing.assert_allclose(d.feature_density, rho)
    # same support sizes and norm split, same magnitudes law, same scales and offsets
    np.testing.assert_array_equal(
        np.sort((easy.directions != 0).sum(1)), np.sort((null.directions != 0).sum(1))
    )
    mags = easy.firing.data, null.firing.data
    assert abs(mags[0].mean() - mags[1].mean()) < 0.01 and abs(mags[0].std() - mags[1].std()) < 0.01
    np.testing.assert_array_equal(easy.unit_scale, null.unit_scale)
    np.testing.assert_array_equal(easy.unit_offset, null.unit_offset)
    # identical dense mode and noise: what is left after the features is the same
    rest = [d.X - d.firing @ d.scaled_directions for d in (easy, null)]
    np.testing.assert_allclose(rest[0], rest[1], atol=1e-4 * np.abs(rest[0]).max())


def test_null_has_no_modules_but_is_not_white_noise(easy, null):
    assert (null.unit_module == -1).all() and (null.feature_module == -1).all()
    assert null.module_active.shape == (N, 0)
    # judged with the structured twin's layout, the null shows no module contrast
    same, diff = unit_contrast(null.X, easy.unit_module)
    assert abs(same - diff) < 0.1 * diff
    # but units do share features: correlations far above the ~0.006 of white noise
    assert diff > 5 / np.sqrt(N)
    assert null.directions.shape[0] > null.X.shape[1]  # superposition


def test_superposition_preset_muddles_units_but_keeps_features_modular(easy):
    sup = make_planted(PlantedConfig.preset("superposition", n_rows=N))
    assert sup.config.features_per_module > 3 * (sup.unit_module == 0).sum()
    same_e, diff_e = unit_contrast(easy.X, easy.unit_module)
    same_s, diff_s = unit_contrast(sup.X, sup.unit_module)
    assert same_s / diff_s < 0.5 * same_e / diff_e
    C = phi_matrix(sup.firing)
    fm = sup.feature_module
    same = (fm[:, None] >= 0) & (fm[:, None] == fm[None, :])
    assert np.nanmean(C[same]) > 10 / np.sqrt(N)
    assert abs(np.nanmean(C[~same])) < 1 / np.sqrt(N)


def test_module_spans_respect_module_layers():
    cfg = PlantedConfig(n_rows=200, layer_sizes=(32, 32, 32, 32), n_modules=3, module_layers=2)
    d = make_planted(cfg)
    used = set()
    for k in range(3):
        layers = sorted(set(d.unit_layer[d.unit_module == k]))
        assert len(layers) == 2 and layers[1] == layers[0] + 1
        used |= set(layers)
    assert used == {0, 1, 2, 3}
    # fewer modules than starting layers: spread out, first and last layer used
    spread = PlantedConfig(layer_sizes=(8,) * 4, n_modules=2, module_layers=1)
    assert [list(s) for s in module_spans(spread)] == [[0], [3]]
    assert all(len(s) == 4 for s in module_spans(PlantedConfig(layer_sizes=(8,) * 4)))


def test_units_and_layers_have_very_different_scales(easy):
    std = easy.X.std(0)
    layer_std = [np.median(std[s:e]) for _, s, e in easy.layer_slices()]
    assert max(layer_std) / min(layer_std) > 2
    assert std.max() / std.min() > 10
    assert np.abs(easy.X.mean(0)).max() > 0.5 * np.median(std)  # offsets are present


def test_x_is_features_plus_a_positive_global_mode_and_noise(easy):
    resid = easy.X / easy.unit_scale - easy.unit_offset - easy.firing @ easy.directions
    _, s, vt = np.linalg.svd(resid - resid.mean(0), full_matrices=False)
    assert s[0] ** 2 / (s**2).sum() > 0.8  # one dense mode (0.3^2) beats the noise (0.02^2)
    assert (np.sign(vt[0]) == np.sign(vt[0][0])).all()  # all loadings share a sign


def test_directions_keep_unit_norm_when_nothing_is_outside_the_module():
    cfg = PlantedConfig(n_rows=100, n_modules=1, free_unit_fraction=0.0, leakage=0.3)
    d = make_planted(cfg)
    assert (d.unit_module == 0).all()
    np.testing.assert_allclose(np.linalg.norm(d.directions, axis=1), 1.0, rtol=1e-5)


def test_nonnegative_applies_a_relu():
    d = make_planted(PlantedConfig(n_rows=500, nonnegative=True))
    assert d.X.min() == 0 and (d.X == 0).mean() > 0.05


def test_parents_make_sibling_modules_fire_together_at_the_modules_own_rate():
    cfg = PlantedConfig(n_rows=20000, n_modules=4, n_parents=2, module_rate=0.15)
    d = make_planted(cfg)
    assert module_parents(cfg).tolist() == [0, 0, 1, 1]
    a = d.module_active
    assert np.allclose(a.mean(0), 0.15, atol=0.01)  # each module keeps its rate
    # siblings are active together in half their rows; cousins only by chance
    assert (a[:, 0] & a[:, 1]).sum() / a[:, 0].sum() == pytest.approx(0.5, abs=0.03)
    assert (a[:, 0] & a[:, 2]).sum() / a[:, 0].sum() == pytest.approx(0.15, abs=0.03)
    plain = make_planted(PlantedConfig(n_rows=20000, n_modules=4)).module_active
    assert (plain[:, 0] & plain[:, 1]).sum() / plain[:, 0].sum() < 0.2
    assert module_parents(PlantedConfig(n_modules=3)).tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_rows", 0),
        ("layer_sizes", ()),
        ("layer_sizes", (4, 0)),
        ("layer_sizes", "48"),
        ("n_modules", 0),
        ("n_modules", 60),
        ("features_per_module", 0),
        ("n_background_features", -1),
        ("module_layers", 0),
        ("module_layers", 4),
        ("free_unit_fraction", 1.0),
        ("support_fraction", 0.0),
        ("leakage", 1.0),
        ("module_rate", 1.5),
        ("p_in", -0.1),
        ("p_out", 2.0),
        ("magnitude", "gamma"),
        ("dense_strength", -1.0),
        ("noise", -0.1),
        ("unit_scale_spread", -1.0),
        ("n_parents", -1),
        ("n_parents", 5),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        PlantedConfig(**{field: value})


def test_presets_and_json_round_trip():
    assert set(PRESETS) == {
        "easy",
        "blocks",
        "superposition",
        "layered",
        "null",
        "null_superposition",
    }
    assert PlantedConfig.preset("null").structured is False
    # blocks: the easy case with every direction's entries made positive, nothing else
    easy = make_planted(PlantedConfig.preset("easy", n_rows=50))
    blocks = make_planted(PlantedConfig.preset("blocks", n_rows=50))
    np.testing.assert_array_equal(blocks.directions, np.abs(easy.directions))
    assert (easy.directions < 0).any()
    assert PlantedConfig.preset("null_superposition").features_per_module == 64
    cfg = PlantedConfig.preset("superposition", n_rows=100, seed=3)
    assert (
        cfg.n_rows == 100 and cfg.seed == 3 and cfg.leakage == PRESETS["superposition"]["leakage"]
    )
    assert PlantedConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(ConfigError, match="easy"):
        PlantedConfig.preset("hard")
    with pytest.raises(ConfigError, match="bogus"):
        PlantedConfig.preset("easy", bogus=1)


@pytest.mark.parametrize("target", ["planted", "acts.npy"])
def test_saved_store_opens_with_layers_rows_and_truth(tmp_path, target):
    d = make_planted(PlantedConfig(n_rows=300, layer_sizes=(6, 10, 8), n_modules=2))
    npy = save_planted(d, tmp_path / target)
    store = ActivationStore.open(npy)
    assert store.n_rows == 300 and store.n_units == 24
    assert [(x.name, x.start, x.stop) for x in store.layers] == d.layer_slices()
    np.testing.assert_array_equal(store.read(0, 300).numpy(), d.X)
    np.testing.assert_array_equal(store.read(0, 300, layers=["layer1"]).numpy(), d.X[:, 6:16])
    truth = read_planted_truth(npy)
    assert truth["unit_module"] == d.unit_module.tolist()
    assert truth["feature_module"] == d.feature_module.tolist()
    assert truth["unit_layer"] == d.unit_layer.tolist()
    again = make_planted(PlantedConfig.from_json(truth["config"]))
    np.testing.assert_array_equal(again.X, d.X)
    assert not [p for p in npy.parent.iterdir() if p.name.startswith(".tmp-")]


def test_missing_truth_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="planted_truth"):
        read_planted_truth(tmp_path / "nothing.npy")
