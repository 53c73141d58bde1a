"""The correlation view's no-groups null (:mod:`saeatlas.structure.inference.correlation_nulls`):
a few dense factors move every unit, and the finder cuts the cloud of their loadings
into "modules" that reproduce (the same correlations give the same cut) and beat the
independent-units null; they are no groups, and the view must not count them."""

import numpy as np
import scipy.sparse as sp
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import AtlasConfig
from saeatlas.structure.graph.units import global_mode
from saeatlas.structure.inference.cohesion import scale_matched_shares, size_matched_shares
from saeatlas.structure.inference.correlation import correlation_view
from saeatlas.structure.inference.correlation_nulls import rotated_correlation
from saeatlas.structure.inputs import DEFAULT_TIMEOUT_S, prepared_on_ranks

UNITS = 60


def _view(tmp_path, x: np.ndarray, seed: int, n_null: int = 5):
    np.save(tmp_path / f"x{seed}.npy", x.astype(np.float32))
    store = ActivationStore.open(tmp_path / f"x{seed}.npy")
    sae = SparseAutoencoder(SAEConfig("topk", d_in=x.shape[1], d_sae=16, k=4), torch.Generator())
    cfg = AtlasConfig(n_null=n_null, n_bootstrap=3, null_rows=len(x), seed=seed)
    return prepared_on_ranks(correlation_view, sae, store, cfg, DEFAULT_TIMEOUT_S)


def test_the_null_keeps_the_eigenvalues_and_the_global_mode_and_draws_the_rest():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 1)) + 0.7 * rng.standard_normal((4000, 30))
    x[:, :10] += 2 * rng.standard_normal((4000, 1))  # a group beside the mode
    corr = np.corrcoef(x, rowvar=False)
    vals, mode = np.linalg.eigvalsh(corr), global_mode(corr)
    assert mode is not None
    a = rotated_correlation(vals, mode, np.random.default_rng(1))
    b = rotated_correlation(vals, mode, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)  # a draw depends on its seed alone
    np.testing.assert_allclose(np.diag(a), 1.0)
    np.testing.assert_allclose(a, a.T)
    got = np.linalg.eigh(a)
    assert got.eigenvalues.min() > -1e-9
    # the mode stays the leading direction; the spectrum stays near the data's (the
    # rescaling to a unit diagonal moves it, more so with few units: 30 here)
    assert abs(got.eigenvectors[:, -1] @ mode) > 0.99
    np.testing.assert_allclose(got.eigenvalues[-1], vals[-1], rtol=0.1)
    np.testing.assert_allclose(got.eigenvalues[-2], vals[-2], rtol=0.3)
    # the group's units no longer stand out: their correlations are like any others'
    group = a[:10, :10][~np.eye(10, dtype=bool)].mean()
    rest = a[10:, 10:][~np.eye(20, dtype=bool)].mean()
    assert abs(group - rest) < 0.15, (group, rest)
    assert corr[:10, :10][~np.eye(10, dtype=bool)].mean() - rest > 0.3


def test_dense_factors_without_groups_are_counted_as_modules_in_at_most_1_of_10_seeds(
    tmp_path,
):
    """Three factors with Gaussian loadings (ReLU'd in odd seeds, as a layer's output
    is), 60 units: the view found 2-5 reproducible modules beating the independent-units
    null in every seed before the no-groups null."""
    named, found = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((2000, 3)) @ rng.standard_normal((3, UNITS))
        x += rng.standard_normal((2000, UNITS))
        if seed % 2:
            x = np.maximum(x, 0)
        view = _view(tmp_path, x, seed)
        found.append(int(view.labels.max()) + 1)
        if (view.counted >= 0).any():
            named.append(seed)
    assert len(named) <= 1, (named, found)
    assert max(found) >= 2  # the cut is there and reproduces: only the null tells


def test_groups_beside_dense_factors_are_still_counted(tmp_path):
    """Four groups of 12 units, each with its own sparse drive, under two dense factors
    that move every unit: the groups stand out of the cloud, beat the no-groups null
    and are counted, whole (in one seed of three the view's scale joins three of them
    into one module: whole groups still)."""
    truth = np.repeat(np.arange(4), 12)
    for seed in (5, 6, 7):
        rng = np.random.default_rng(seed)
        drive = 3 * rng.standard_normal((3000, 4)) * (rng.random((3000, 4)) < 0.3)
        x = drive[:, truth] + 0.7 * rng.standard_normal((3000, 2)) @ rng.standard_normal((2, 48))
        view = _view(tmp_path, x + rng.standard_normal((3000, 48)), seed, n_null=10)
        assert all(t.p < 0.05 for t in view.tests), view.summary()["tests"]
        counted = view.counted
        assert np.unique(counted[counted >= 0]).size >= 2
        for k in range(4):  # no group cut: each lies whole in one counted module
            assert np.unique(counted[truth == k]).size == 1 and counted[truth == k][0] >= 0


class _Cut:
    """A finder that cuts any graph into the same communities (one scale's stand-in)."""

    def __init__(self, labels):
        self.labels_ = np.asarray(labels)

    def fit(self, graph):
        return self


def test_a_modules_fakes_come_from_its_own_scale_or_the_nearest_that_cuts_a_group():
    """The null's groups of a module's size are taken at the module's scale; a scale
    that leaves the null whole gives none (its one community keeps all its weight), and
    the nearest scale with a group of the size gives them, the finer where two are as
    near; a module larger than any group: the finest scale's largest groups together."""
    rng = np.random.default_rng(0)
    w = rng.random((12, 12))
    graph = sp.csr_matrix(np.triu(w, 1) + np.triu(w, 1).T)
    whole, halves = np.zeros(12, int), np.repeat([0, 1], 6)
    quarters, sixths = np.repeat(np.arange(4), 3), np.repeat(np.arange(6), 2)
    finders = [_Cut(whole), _Cut(halves), _Cut(quarters), _Cut(sixths)]

    def shares(labels, sizes):
        return size_matched_shares(graph, labels, np.asarray(sizes), union=False)

    sizes = np.array([6, 3, 2, 12])
    got = scale_matched_shares(graph, None, sizes, finders=finders, scale=0)
    # scale 0 leaves the graph whole: size 6 from the halves (the nearest scale), 3 and 2
    # from the quarters (groups of 3 lie within 1.5x of both); 12 is larger than any
    # group cut: the finest scale's groups together
    want = [shares(halves, [6])[0], *shares(quarters, [3, 2])]
    np.testing.assert_allclose(got[:3], want)
    np.testing.assert_allclose(got[3], size_matched_shares(graph, sixths, np.array([12]))[0])
    # a size both neighbours of a scale match (4: groups of 6 and of 3), where the scale
    # itself leaves the graph whole, takes the finer neighbour's
    got = scale_matched_shares(
        graph, None, np.array([4]), finders=[_Cut(halves), _Cut(whole), _Cut(quarters)], scale=1
    )
    np.testing.assert_allclose(got, shares(quarters, [4]))
    assert not np.allclose(got, shares(halves, [4]))
