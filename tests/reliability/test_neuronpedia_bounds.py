"""export-neuronpedia (tenth sweep): the features' correlations without a
``[d_sae, d_sae]`` matrix (17 GB at 65,536 latents), checked against numpy, and the
``layer`` of a layer whose name holds no number."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _numpy_correlated(acts: np.ndarray, module: np.ndarray, n: int):
    """The n most correlated other features per feature (within its module when it has
    company there), by numpy's own Pearson correlation (0 where a feature is constant)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(acts.T.astype(np.float64)), nan=0.0)
    out = []
    for f in range(acts.shape[1]):
        same = np.flatnonzero(module == module[f]) if module[f] >= 0 else np.arange(len(module))
        if same.size < 2:
            same = np.arange(len(module))
        same = same[same != f]
        order = same[np.argsort(-corr[f, same], kind="stable")][:n]
        out.append((order, corr[f, order]))
    return out


@pytest.mark.parametrize("block", [1, 7, 1 << 22])
def test_correlated_features_equal_numpy_a_block_at_a_time(block):
    # the export built the dense d_sae x d_sae Gram matrix (and a cosine matrix as large)
    from saeatlas.export.neuronpedia_activations import FeatureStats

    rng = np.random.default_rng(0)
    acts = rng.exponential(size=(90, 11)) * (rng.random((90, 11)) < 0.3)
    acts[:, 4] = 0.0  # dead
    acts[:, 6] = acts[:, 2] * 2 + acts[:, 5]  # co-fires with two others
    acts = acts.astype(np.float32)
    module = np.array([0, 0, 1, -1, 1, 1, 1, 2, -1, 0, -1])
    stats = FeatureStats(11, 3)
    for start in range(0, 90, 32):
        stats.add(torch.from_numpy(acts[start : start + 32]), start)
    got = stats.correlated(torch.from_numpy(module), 3, block=block)
    want = _numpy_correlated(acts, module, 3)
    for f, ((i, v), (wi, wv)) in enumerate(zip(got, want)):
        np.testing.assert_allclose(v, wv, atol=1e-6, err_msg=f"feature {f}")
        assert i.tolist() == wi.tolist(), f


@pytest.fixture(scope="module")
def unnumbered(one_layer_atlas):
    """An atlas of an SAE on one layer named `mlp` (no number in its name)."""
    return one_layer_atlas("mlp")


def test_a_layer_without_a_number_needs_layer(unnumbered, run_cli):
    # every batch said `layer` 0 for a layer named `mlp` (Neuronpedia files it there)
    from saeatlas.export import read_batches
    from saeatlas.sae import SparseAutoencoder
    from saeatlas.store import ActivationStore

    cli, one_line = run_cli
    out = unnumbered / "np"
    one_line(cli("export-neuronpedia", unnumbered / "atlas", "--out", out), "'mlp'", "--layer")
    assert not out.exists()
    one_line(cli("export-neuronpedia", unnumbered / "atlas", "--out", out, "--layer", "-1"),
             "--layer")  # fmt: skip
    r = cli("export-neuronpedia", unnumbered / "atlas", "--out", out, "--layer", "4")
    assert r.exit_code == 0, r.output
    batches = read_batches(out)
    assert {b["layer"] for b in batches} == {4}
    # the correlations written are numpy's, on the SAE's own activations of the rows
    sae = SparseAutoencoder.load(unnumbered / "sae")
    with torch.no_grad():
        acts = sae.encode(ActivationStore.open(unnumbered / "acts.npy").read()).acts.numpy()
    features = {f["feature_index"]: f for b in batches for f in b["features"]}
    assert features
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(acts.T.astype(np.float64)), nan=0.0)
    for i, f in features.items():
        want = corr[i, f["correlated_features_indices"]]
        np.testing.assert_allclose(f["correlated_features_pearson"], want, atol=1.5e-3)


def test_an_atlas_whose_sae_moved_names_it(unnumbered, tmp_path, run_cli):
    # "'.../sae' is not an SAE directory: it needs cfg.json ... Train one with `saeatlas
    # train`", for the SAE atlas.json names, moved since the analysis
    import shutil

    cli, one_line = run_cli
    atlas = shutil.copytree(unnumbered / "atlas", tmp_path / "atlas")
    moved = shutil.move(unnumbered / "sae", tmp_path / "sae")
    try:
        one_line(cli("export-neuronpedia", atlas, "--out", tmp_path / "np", "--layer", "0"),
                 "The atlas's SAE", "is not there", "--sae")  # fmt: skip
        r = cli("export-neuronpedia", atlas, "--out", tmp_path / "np", "--layer", "0", "--sae", moved)  # fmt: skip
        assert r.exit_code == 0, r.output
    finally:
        shutil.move(moved, unnumbered / "sae")


@pytest.mark.parametrize("layer", [1.5, True, -1, "3", 10**9, 10**20])
def test_a_layer_that_is_no_layer_number_is_refused(layer):
    from saeatlas.errors import ConfigError
    from saeatlas.export import NeuronpediaConfig

    with pytest.raises(ConfigError, match=r"`layer` \(--layer\) must be a whole number"):
        NeuronpediaConfig(layer=layer)
