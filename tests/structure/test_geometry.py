"""Geometry against function: direction clusters, their agreement with modules, the map."""

import logging
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.structure import Atlas
from saeatlas.structure.describe.directions import direction_clusters
from saeatlas.structure.describe.feature_map import feature_map
from saeatlas.structure.describe.geometry import (
    _Ami,
    atlas_geometry,
    density_bins,
    geometry_function_agreement,
)


def planted_directions(n_clusters=6, per=40, d_in=32, noise=0.15, seed=0):
    """Rows = random centroid directions + small noise, with random norms; true labels."""
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((n_clusters, d_in))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    truth = np.repeat(np.arange(n_clusters), per)
    W = centroids[truth] + noise * rng.standard_normal((truth.size, d_in)) / np.sqrt(d_in)
    W *= rng.uniform(0.2, 5.0, (truth.size, 1))  # angle, not length, must decide
    order = rng.permutation(truth.size)
    return W[order], truth[order]


# -- direction clusters ------------------------------------------------------------------------


def test_direction_clusters_recover_planted_directions():
    W, truth = planted_directions()
    labels = direction_clusters(W, 6, random_state=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert labels.min() == 0 and labels.max() == 5
    sizes = np.bincount(labels)
    assert np.all(sizes[:-1] >= sizes[1:])  # numbered by size
    # a tensor works too, and the seed fixes the answer
    again = direction_clusters(torch.from_numpy(W).float(), 6, random_state=0)
    assert np.array_equal(labels, again)


def test_direction_clusters_mask_and_default_count():
    W, truth = planted_directions(n_clusters=4, per=30)
    W[0] = 0.0  # a dead latent's zero row
    mask = np.ones(len(W), bool)
    mask[:10] = False
    modules = np.where(truth < 4, truth, -1)
    modules[5] = -1
    labels = direction_clusters(W, module_labels=modules, mask=mask)
    assert labels.max() == 3  # four modules in `module_labels`: four clusters
    assert np.all(labels[:10] == -1)
    assert adjusted_rand_score(truth[10:], labels[10:]) == 1.0
    with pytest.raises(ValueError, match="n_clusters"):
        direction_clusters(W)
    with pytest.raises(ValueError, match="lower `n_clusters`"):
        direction_clusters(W, 5, mask=np.arange(len(W)) < 3)


# -- agreement ---------------------------------------------------------------------------------


def test_fast_ami_equals_sklearn():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 6, 400)
    b = np.where(rng.random(400) < 0.5, a % 4, rng.integers(0, 4, 400))
    ami = _Ami(a, b)
    for _ in range(5):
        p = b[rng.permutation(b.size)]
        assert ami(p) == pytest.approx(adjusted_mutual_info_score(a, p), abs=1e-12)
    assert ami(b) == pytest.approx(adjusted_mutual_info_score(a, b), abs=1e-12)


def test_density_bins_are_quantiles_and_keep_ties_together():
    d = np.r_[np.full(50, 0.01), np.linspace(0.02, 0.5, 50)]
    bins = density_bins(d, 10)
    assert len(np.unique(bins[:50])) == 1  # tied densities share a bin
    assert np.all(np.diff(bins[50:]) >= 0)  # monotone in density
    assert np.array_equal(np.unique(bins), np.arange(bins.max() + 1))


def test_identical_partitions_agree_under_both_nulls():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    density = rng.uniform(1e-3, 0.2, 300)
    ag = geometry_function_agreement(labels, labels, density, n_perm=200)
    assert ag.ami == pytest.approx(1.0)
    for null in (ag.permutation, ag.stratified):
        assert null.p < 1e-6
        assert null.p_empirical == pytest.approx(1 / 201)
        assert null.z > 10
    d = ag.as_dict()
    assert d["n_features"] == 300 and d["n_modules"] == 5 and d["n_bins"] == 10
    assert [n["null"] for n in d["nulls"]] == ["permutation", "frequency_stratified"]


def test_agreement_through_frequency_alone_is_not_counted():
    """The 100 most frequent features form one module AND one direction cluster; the
    other 400 have independent random labels. Plain permutation calls that agreement
    significant; the frequency-stratified null keeps it, so it is not."""
    rng = np.random.default_rng(0)
    n, n_freq = 500, 100
    frequent = np.arange(n) < n_freq
    density = np.where(frequent, rng.uniform(0.2, 0.3, n), rng.uniform(1e-3, 0.01, n))
    modules = np.where(frequent, 0, rng.integers(1, 5, n))
    directions = np.where(frequent, 0, rng.integers(1, 5, n))
    ag = geometry_function_agreement(directions, modules, density, n_perm=200)
    assert ag.ami > 0.2
    assert ag.permutation.p < 1e-3 and ag.permutation.p_empirical < 0.01
    assert ag.stratified.p > 0.05 and ag.stratified.p_empirical > 0.05
    assert ag.stratified.null_mean > 0.8 * ag.ami  # the null reproduces it


def test_independent_partitions_are_not_significant():
    """Under independence both nulls' p-values are about uniform: few below 0.05."""
    small = {"permutation": 0, "frequency_stratified": 0}
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a, b = rng.integers(0, 5, 200), rng.integers(-1, 5, 200)  # -1: in no module
        ag = geometry_function_agreement(
            a, b, rng.uniform(1e-3, 0.3, 200), n_perm=100, random_state=seed
        )
        assert ag.n_features == int((b >= 0).sum())
        for null in (ag.permutation, ag.stratified):
            small[null.name] += null.p_empirical < 0.05
    assert all(count <= 4 for count in small.values()), small


def test_agreement_rejects_bad_input():
    with pytest.raises(ValueError, match="one length"):
        geometry_function_agreement(np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        geometry_function_agreement(np.zeros(3), np.full(3, -1), np.ones(3))


def test_atlas_geometry_on_an_atlas_whose_modules_point_apart():
    W, truth = planted_directions(n_clusters=4, per=25, d_in=16)
    module = truth.copy()
    module[:10] = -1
    sae = SparseAutoencoder(SAEConfig(d_in=16, d_sae=len(W), k=4))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(W).float())
    rng = np.random.default_rng(0)
    features = pd.DataFrame(
        {"feature": np.arange(len(W)), "module": module, "firing_density": rng.random(len(W))}
    )
    atlas = Atlas(units=pd.DataFrame(), features=features, modules=pd.DataFrame(), summary={})
    labels, ag = atlas_geometry(sae, atlas, n_perm=50)
    assert np.all(labels[:10] == -1)
    assert ag.ami == pytest.approx(1.0) and ag.n_features == len(W) - 10
    assert ag.stratified.p < 1e-3


# -- the map -----------------------------------------------------------------------------------


def test_pca_map_equals_sklearn_pca_of_unit_rows():
    W, _ = planted_directions()
    coords = feature_map(W, method="pca", random_state=0)
    assert coords.shape == (len(W), 2) and np.isfinite(coords).all()
    unit = W / np.linalg.norm(W, axis=1, keepdims=True)
    np.testing.assert_allclose(
        coords, PCA(n_components=2, random_state=0).fit_transform(unit), atol=1e-10
    )
    # fitted on a sample, the rest placed by transform: the same plane, so close
    sampled = feature_map(W, method="pca", max_points=120)
    assert sampled.shape == coords.shape and np.isfinite(sampled).all()


def test_map_falls_back_to_pca_without_umap(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now fails
    W, _ = planted_directions(n_clusters=3, per=10)
    with caplog.at_level(logging.WARNING, logger="saeatlas.structure.describe.geometry"):
        coords = feature_map(W, method="umap")
    assert "falls back to PCA" in caplog.text
    np.testing.assert_allclose(coords, feature_map(W, method="pca"))
    with pytest.raises(ValueError, match="expected one of"):
        feature_map(W, method="tsne")


def test_map_of_tiny_or_flat_inputs_is_finite():
    assert feature_map(np.ones((1, 5)), method="pca").shape == (1, 2)
    coords = feature_map(np.arange(6.0).reshape(6, 1), method="pca")
    assert coords.shape == (6, 2) and np.isfinite(coords).all()


@pytest.mark.slow
def test_umap_map_is_finite_and_separates_planted_directions():
    pytest.importorskip("umap")
    W, truth = planted_directions(n_clusters=3, per=40, d_in=16)
    coords = feature_map(W, method="umap", random_state=0)
    assert coords.shape == (len(W), 2) and np.isfinite(coords).all()
    # the planted clusters stay apart in the map
    centres = np.stack([coords[truth == c].mean(0) for c in range(3)])
    spread = max(coords[truth == c].std(0).max() for c in range(3))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)[np.triu_indices(3, 1)]
    assert gaps.min() > 2 * spread
    sampled = feature_map(W, method="umap", max_points=60, random_state=0)
    assert sampled.shape == (len(W), 2) and np.isfinite(sampled).all()
