"""The eighteenth hostile sweep's cases in the analysis settings and odd but valid data:
each gave a silently wrong atlas (or a traceback, or no word) before its fix."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def _scaled_store(outputs, save_acts, factor: float):
    """The protected rows times ``factor``, as a .npy store of the same layers."""
    from saeatlas.store import ActivationStore

    return ActivationStore.open(save_acts(np.load(outputs.npy) * np.float32(factor)))


def _analyze(cli, outputs, out, *flags):
    """``analyze`` of the protected SAE on the protected rows (.npy), one SAE, into ``out``."""
    args = ("--sae", outputs.sae, "--acts", outputs.npy, "--out", out, "--seeds", "1")
    return cli("analyze", *args, *flags)


@pytest.mark.parametrize("factor", [1e30, 1e-30])
def test_the_correlation_nulls_block_does_not_depend_on_the_units_scale(outputs, save_acts, factor):
    """The correlation view's null test standardised its block of rows in float32, where
    the squares of units of 1e30 overflow and those of 1e-30 underflow: the block became
    zeros, the test compared a modularity of 0 with nulls of 0, and the atlas of a store
    of 1e-30 (or 1e30) said the units' correlations have no significant module where
    the same rows at scale 1 have 3 (`cross_check.*.n_significant_modules`). The block
    is now the same at every scale."""
    from saeatlas.store import ActivationStore
    from saeatlas.structure.inference.correlation_nulls import null_block

    def block(store):
        layers = [SimpleNamespace(name=l.name, n_units=l.stop - l.start) for l in store.layers]
        rows = np.arange(store.n_rows)  # every row analysed
        codes = SimpleNamespace(layers=layers, n_rows=store.n_rows, rows=rows)
        inp = SimpleNamespace(
            main=SimpleNamespace(codes=codes),
            cfg=SimpleNamespace(null_rows=1000),
            store=store,
        )
        return null_block(inp)

    expected = block(ActivationStore.open(outputs.npy))
    got = block(_scaled_store(outputs, save_acts, factor))
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_the_random_sae_control_draws_a_store_of_1e_30_in_its_units_scales(outputs, save_acts):
    """The random-SAE control draws its random directions in standardised units, and took
    every unit with a std below 1e-8 for a constant one (scale 1): on a store of 1e-30
    it drew them in raw units, another control than the same rows at scale 1 have (its
    z 62 for 3.2 on planted modules, and another verdict). It now judges a unit constant
    by the training's rule (its spread against its mean), at every scale."""
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store import ActivationStore
    from saeatlas.structure.inference.control import _unit_std

    sae = SparseAutoencoder.load(outputs.sae)
    base = ActivationStore.open(outputs.npy)
    expected = _unit_std(sae, base)
    varies = np.asarray(base.std) > 0  # the ReLU's dead units: scale 1 at every scale
    assert varies.sum() > 10
    got = _unit_std(sae, _scaled_store(outputs, save_acts, 1e-30))
    np.testing.assert_allclose(got, np.where(varies, expected * 1e-30, 1.0), rtol=1e-5)


@pytest.mark.parametrize("seeds", ["101", "100000000000000000000"])
def test_validate_refuses_more_seeds_than_an_ensemble_holds(run_cli, forbid, seeds):
    """`validate --seeds 1000000000` built a list of as many seeds (each a whole analysis)
    until the process ran out of memory and was killed, and `--seeds 10**20` ended in an
    OverflowError traceback. Both are refused before any work, as `analyze --seeds` is."""
    from saeatlas.structure.synthetic import validate

    forbid(validate, "validate_case")
    cli, one_line = run_cli
    one_line(cli("validate", "--cases", "easy", "--seeds", seeds), "--seeds must be in [1, 100]")


def test_a_window_on_a_npy_store_is_warned_of_once(outputs, run_cli, tmp_path, caplog):
    """`analyze --window 4` of a .npy store (one row per sample: a window is a row) said
    "`window` 4 has no effect ..." twice, the second time for the random-SAE control's
    atlas of the same rows. It is said once, and the atlas still records it."""
    from saeatlas.structure.atlas import Atlas

    out = tmp_path / "atlas"
    fast = ("--nulls", "permutation", "--n-null", "2", "--n-examples", "0", "-q")
    r = _analyze(run_cli[0], outputs, out, *fast, "--window", "4")
    assert r.exit_code == 0, r.output
    said = [m for m in caplog.messages if "`window` 4 has no effect" in m]
    assert len(said) == 1, said
    assert Atlas.load(out).summary["graph"]["window_applied"] is False


@pytest.mark.parametrize("size", ["25", "1000000000"])
def test_min_module_features_beyond_the_dictionary_is_refused(outputs, run_cli, tmp_path, size):
    """`--min-module-features` above the SAE's latents (24) makes every module impossible:
    on planted modules (z 10.7 at the default 3) the atlas said "No significant structure:
    the partition does not beat the null models", modularity 0.000. It is refused, naming
    the most there can be, and nothing is written."""
    cli, one_line = run_cli
    out = tmp_path / "atlas"
    r = _analyze(cli, outputs, out, "--min-module-features", size)
    one_line(r, "`min_module_features`", "more than the SAE's 24 latents", "Give at most 24")
    assert not out.exists()


def test_an_sae_that_learnt_nothing_of_its_own_rows_is_not_called_another_stores(outputs, caplog):
    """An SAE that reconstructs the very rows it was trained on no better than their mean
    (one under-trained on a layer of 400 units: FVU 1.05) was said to be "trained on other
    activations ... Give the store the SAE was trained on", the store it was given. The
    analysis now says it has not learnt these rows; an SAE of other rows is still told so."""
    import pandas as pd
    import torch

    from saeatlas.sae import SparseAutoencoder
    from saeatlas.structure import AtlasConfig
    from saeatlas.structure.analyze import add_fit
    from saeatlas.structure.atlas import Atlas
    from saeatlas.structure.inputs import prepare

    sae = SparseAutoencoder.load(outputs.sae)
    with torch.no_grad():
        sae.W_dec.zero_()  # every row reconstructed as b_dec
    atlas = Atlas(pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), summary={})
    add_fit(atlas, prepare(sae, outputs.store, AtlasConfig()))
    assert atlas.summary["fvu"] >= 1
    assert "trained on these rows and has not learnt them" in caplog.text
    assert "trained on other activations" not in caplog.text


@pytest.mark.parametrize("field", ["mean", "std"])
def test_verify_finds_a_wrong_mean_or_std_of_a_store_of_1e_30(tmp_path, run_cli, field):
    """`info --verify` compared the manifest's per-unit mean and std with the shards' within
    an absolute 1e-12: every statistic of a store of 1e-30 passed, even 10 times too large
    ("All 1 shards match ... the manifest's per-unit mean and std"), and training
    standardises by them. Near zero is now judged at each unit's own scale."""
    import json

    import torch

    from saeatlas.capture import CaptureConfig, capture_activations

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-30)  # activations of 1e-30
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    store = tmp_path / "store"
    capture_activations(model, x, ["1"], store, CaptureConfig(batch_size=8), progress=False)
    cli, one_line = run_cli
    assert cli("info", store, "--verify").exit_code == 0  # its own statistics still pass
    manifest = json.loads((store / "manifest.json").read_text())
    unit = int(np.argmax(manifest["std"]))
    assert 0 < manifest[field][unit] < 1e-29
    manifest[field][unit] *= 10
    (store / "manifest.json").write_text(json.dumps(manifest))
    one_line(cli("info", store, "--verify"), f"wrong per-unit {field}", f"unit {unit}: ")
