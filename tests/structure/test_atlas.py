"""The atlas end to end on planted structure: recovery, significance, files, CLI."""

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from saeatlas.cli import app
from saeatlas.errors import ConfigError
from saeatlas.sae import SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import (
    Atlas,
    AtlasConfig,
    AtlasFileError,
    PlantedConfig,
    analyze,
    make_planted,
    map_structure,
    save_planted,
)
from saeatlas.structure.synthetic.validate import _baseline
from saeatlas.train import TrainConfig, train_sae

ROWS = 8000


def planted_sae(tmp_path_factory, preset, seed, d_sae=256):
    data = make_planted(PlantedConfig.preset(preset, seed=seed, n_rows=ROWS))
    store = ActivationStore.open(save_planted(data, tmp_path_factory.mktemp(preset) / "acts"))
    cfg = TrainConfig(d_sae=d_sae, k=16, batch_size=512, tokens=200_000, seed=seed)
    return data, store, train_sae(store, cfg, progress=False).sae


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    data, store, sae = planted_sae(tmp_path_factory, "easy", 0)
    atlas = analyze(sae, store, AtlasConfig(n_null=5, null_rows=ROWS))
    return data, store, sae, atlas


def test_easy_planted_modules_are_recovered_and_significant(easy):
    data, _, _, atlas = easy
    assert adjusted_rand_score(data.unit_module, atlas.units.module) >= 0.9
    assert atlas.n_significant_modules == data.n_modules
    # anything beyond the planted modules is a crumb the nulls reject (the SAE's
    # training, and so the crumbs, depend on torch's thread count)
    extra = atlas.modules[~atlas.modules.significant]
    assert (extra.n_units <= 3).all() and atlas.n_modules <= data.n_modules + 1
    s = atlas.summary
    assert s["significant"] and s["z"] > 3 and s["p"] < 0.05
    assert {n["null"] for n in s["nulls"]} == {"permutation", "rewiring", "dictionary"}
    for n in s["nulls"]:
        assert n["modularity"] > n["null_mean"]
    assert "not a causal claim" in s["module_kind"]
    # every significant module spans the planted module's layers (all three here)
    assert all(len(layers) == 3 for layers in atlas.modules.layers[atlas.modules.significant])


def test_tables_hold_what_they_promise(easy):
    data, _, sae, atlas = easy
    u, f, m = atlas.units, atlas.features, atlas.modules
    assert len(u) == data.X.shape[1] and len(f) == sae.cfg.d_sae
    assert u.layer.tolist() == [data.layer_names[i] for i in data.unit_layer]
    assert ((u.membership >= 0) & (u.membership <= 1)).all()
    assert (u.membership[u.module == -1] == 0).all()
    counts = u[u.module >= 0].module.value_counts().sort_index()
    assert counts.tolist() == m.n_units.tolist()
    assert f[f.module >= 0].module.value_counts().sort_index().tolist() == m.n_features.tolist()
    assert np.allclose([lm.sum() for lm in f.layer_mass], 1.0)
    assert ((f.density >= f.firing_density) & (f.firing_density >= 0)).all()
    assert 0 <= atlas.summary["features_max_unit_corr_le_0_3"] <= 1
    # top units are the largest standardised decoder weights
    W = sae.W_dec.detach().numpy()
    j = int(f.feature[f.module >= 0].iloc[0])
    std = data.X.std(0)
    assert int(f.top_units[j][0]) == int(np.argmax(np.abs(W[j] / std)))


def test_atlas_directory_round_trip_and_refusals(easy, tmp_path):
    atlas = easy[3]
    out = atlas.save(tmp_path / "atlas")
    for name in ("atlas.json", "units.parquet", "features.parquet", "modules.parquet"):
        assert (out / name).is_file()
    meta = json.loads((out / "atlas.json").read_text())
    for key in (
        "n_modules",
        "n_significant_modules",
        "modularity",
        "null_mean",
        "null_std",
        "z",
        "p",
    ):
        assert key in meta
    back = Atlas.load(out)
    pd.testing.assert_frame_equal(back.units, atlas.units)
    assert back.modules.layers.map(list).tolist() == atlas.modules.layers.map(list).tolist()
    assert back.summary["n_modules"] == atlas.n_modules
    with pytest.raises(ConfigError, match="already holds an atlas"):
        atlas.save(out)
    atlas.save(out, overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an atlas"):
        atlas.save(tmp_path / "other")
    (out / "units.parquet").write_bytes(b"garbage")
    with pytest.raises(AtlasFileError, match="unreadable"):
        Atlas.load(out)
    (out / "units.parquet").unlink()
    with pytest.raises(AtlasFileError, match="missing units.parquet"):
        Atlas.load(out)
    with pytest.raises(AtlasFileError, match="analyze"):
        Atlas.load(tmp_path / "nothing")


@pytest.mark.slow
# The no-structure twins, counted over 20 seeds: tests/structure/test_verdict.py.


def test_with_strong_superposition_the_atlas_beats_leiden_on_unit_correlations(tmp_path_factory):
    data, store, sae = planted_sae(tmp_path_factory, "superposition", 0)
    atlas = map_structure(sae, store, AtlasConfig(nulls=()))
    ours = adjusted_rand_score(data.unit_module, atlas.units.module)
    naive = adjusted_rand_score(data.unit_module, _baseline(data.X, clean=False))
    assert ours > naive + 0.2


def test_the_correlation_baseline_takes_a_unit_that_never_moves_without_warnings():
    # a unit a ReLU keeps at 0 has no correlation: `validate` printed numpy's warnings
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 7))
    x[:, :3] += 2 * rng.normal(size=(2000, 1))
    x[:, 3:6] += 2 * rng.normal(size=(2000, 1))
    x[:, 6] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = _baseline(x, clean=False)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:6])) == 1 and labels[0] != labels[3]


def test_spectral_finder_and_window_counting_run_through(easy, caplog):
    data, store, sae, _ = easy
    atlas = map_structure(sae, store, AtlasConfig(method="spectral", window=2, nulls=()))
    assert atlas.summary["method"] == "spectral" and atlas.summary["graph"]["window"] == 2
    # one row per sample: a window is one row, and the atlas says so instead of ignoring it
    assert atlas.summary["graph"]["window_applied"] is False
    assert "`window` 2 has no effect" in caplog.text
    assert adjusted_rand_score(data.unit_module, atlas.units.module) > 0.5
    assert atlas.n_significant_modules == 0  # no nulls, no claims
    assert "No significant" in atlas.summary["message"]


def test_an_sae_whose_features_never_co_fire_says_why_there_are_no_modules(tmp_path):
    # k = 1: one feature per row, so nothing co-fires; "the partition does not beat the
    # null models" blamed the data for what the SAE cannot show.
    from saeatlas.sae import SAEConfig, SparseAutoencoder

    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=1))
    atlas = map_structure(sae, tmp_path / "x.npy", AtlasConfig(nulls=(), n_examples=0))
    assert atlas.summary["graph"]["n_edges"] == 0 and atlas.n_modules == 0
    assert "no edges" in atlas.summary["message"] and "mean L0 1.0" in atlas.summary["message"]


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"affinity": "cosine"}, "affinity"),
        ({"method": "louvain"}, "method"),
        ({"nulls": ("shuffle",)}, "nulls"),
        ({"n_null": 1}, "n_null"),
        ({"alpha": 2.0}, "alpha"),
        ({"min_enrichment": 0.5}, "min_enrichment"),
        ({"resolutions": ()}, "resolutions"),
        ({"count_in_parts_from": 0}, "count_in_parts_from"),
    ],
)
def test_bad_atlas_settings_name_the_field(bad, match):
    with pytest.raises(ConfigError, match=match):
        AtlasConfig(**bad)


def test_analyze_and_validate_from_the_command_line(easy, tmp_path):
    _, store, sae, _ = easy
    sae_dir = sae.save(tmp_path / "sae")
    runner = CliRunner()
    args = [
        "analyze",
        "--sae",
        str(sae_dir),
        "--acts",
        str(store.path),
        "--out",
        str(tmp_path / "atlas"),
        "--n-null",
        "2",
        "--nulls",
        "permutation",
        "rewiring",
        "-q",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "modules" in result.output and (tmp_path / "atlas" / "atlas.json").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    # a seed SAE: the same dictionary, its latents in another order
    order = torch.randperm(sae.cfg.d_sae, generator=torch.Generator().manual_seed(0))
    w = sae.weights()
    w.update(W_enc=w["W_enc"][:, order], b_enc=w["b_enc"][order], W_dec=w["W_dec"][order])
    twin = SparseAutoencoder.from_weights(sae.cfg, w)
    seeded = runner.invoke(
        app,
        args + ["--overwrite", "--seed-sae", str(twin.save(tmp_path / "twin")), "--seeds", "2"],
    )
    assert seeded.exit_code == 0, seeded.output
    ensemble = json.loads((tmp_path / "atlas" / "atlas.json").read_text())["ensemble"]
    assert ensemble["n_saes"] == 2
    bad = runner.invoke(app, args[:-6] + ["--affinity", "cosine", "--overwrite"])
    assert bad.exit_code == 1 and "affinity" in bad.output
    result = runner.invoke(
        app,
        ["validate", "--cases", "easy", "--rows", "2000", "--d-sae", "96", "--tokens", "30000"],
    )
    assert result.exit_code == 0, result.output
    assert "leiden-raw-corr" in result.output and "atlas" in result.output
    assert runner.invoke(app, ["validate", "--cases", "hard"]).exit_code == 1


def test_stability_geometry_and_map_columns_join_the_atlas(easy, tmp_path):
    data, store, sae, _ = easy
    atlas = analyze(sae, store, AtlasConfig(nulls=(), n_bootstrap=2))
    m, f = atlas.modules, atlas.features
    # every module in the table is one the ensemble (here 3 row resamples) reproduces
    assert len(m) >= data.n_modules - 1 and (m.reproducibility >= 0.75).all()
    assert atlas.summary["ensemble"]["n_members"] == 3
    # no nulls, no claims: the verdict names no modules
    assert not m.counted.any() and atlas.summary["verdict"] == "no_significant_structure"
    assert np.isfinite(f.x).all() and np.isfinite(f.y).all()
    assert "geometry" in atlas.summary
    assert all(len(p) == 3 for p in m.layer_profile)
    back = Atlas.load(atlas.save(tmp_path / "a"))
    assert back.modules.reproducibility.tolist() == m.reproducibility.tolist()
    assert len(back.examples) > 0


def test_each_modules_z_is_floored_by_its_spread_over_the_ensemble(easy):
    """The z of a module divides by at least its cohesion's own sampling error, measured
    on the ensemble's members (row resamples): the null's draws alone said nothing of
    how sure the real figure is."""
    from saeatlas.structure.inference.cohesion import relative_spread
    from saeatlas.structure.inference.coupling import feature_modules
    from saeatlas.structure.inference.ensemble import build_ensemble
    from saeatlas.structure.inference.significance import sampling_error, significance_tests
    from saeatlas.structure.inputs import prepare

    data, store, sae, atlas = easy
    inp = prepare(sae, store, AtlasConfig(n_null=4, null_rows=ROWS, n_bootstrap=2))
    ens = build_ensemble(inp)
    n_modules = int(ens.unit_module.max()) + 1
    assert ens.member_cohesion.shape == (3, n_modules) and n_modules >= data.n_modules
    # a reproducible module reappears in at least 0.75 of the members, each time cohesive
    found = np.isfinite(ens.member_cohesion)
    assert (found.mean(axis=0) >= 0.75).all() and (ens.member_cohesion[found] > 0).all()
    spread = relative_spread(ens.member_cohesion)
    assert np.isfinite(spread).all() and (spread > 0).all() and (spread < 0.5).all()
    main = ens.main_modules
    labels = feature_modules(main.units.module, main.feature_module, ens.unit_module)
    tests, _ = significance_tests(inp, main, labels, sampling_error(ens.member_modularity), spread)
    for t in tests:
        # the null counts all rows here, as the first member does: the same figure
        np.testing.assert_allclose(t.module_w, ens.member_cohesion[0, : t.module_w.size])
        se = t.module_w * spread[: t.module_w.size]
        bound = (t.module_w - t.null_module_w.mean(axis=0)) / se
        assert (t.module_z() <= bound + 1e-9).all()
        unfloored = replace(t, module_se=None).module_z()
        spread_known = np.isfinite(unfloored)  # NaN: the draws had no spread at all
        assert (t.module_z()[spread_known] <= unfloored[spread_known] + 1e-9).all()
    # the permutation null's draws hardly vary (or not at all: no z of their own): there
    # the floor is what the z divides by
    perm = next(t for t in tests if t.name == "permutation")
    raw = replace(perm, module_se=None).module_z()
    assert np.isfinite(perm.module_z()).all()
    assert (~np.isfinite(raw) | (perm.module_z() < raw / 2)).all()
