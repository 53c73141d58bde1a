"""The pair tests in torch equal the numpy ones (p-values to 1e-12 relative, the same
pairs kept), on the CPU and on CUDA."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from saeatlas.structure.graph import pairs, torch_hypergeom
from saeatlas.structure.graph.cooccurrence import count_cooccurrence
from saeatlas.structure.graph.edges import build_graph, densest_graph
from saeatlas.structure.graph.hypergeom import TAIL_SCIPY, hypergeom_upper_tail
from saeatlas.structure.graph.pairs import pair_pvalues
from saeatlas.structure.graph.torch_hypergeom import as_tensor, torch_upper_tail


def tail_cases(rng, n, m=4000):
    """Joint counts around the mean and far in both tails, margins of every size, the
    edges of the support, and (for large ``n``) wide cases that go to scipy."""
    n_i, n_j = rng.integers(0, n + 1, m), rng.integers(0, n + 1, m)
    small = rng.random(m) < 0.5
    n_i[small], n_j[small] = n_i[small] // 100, n_j[small] // 50
    mu = n_i * n_j / n
    a = np.round(mu + rng.normal(0, 4, m) * np.sqrt(mu + 1) + rng.integers(-3, 8, m))
    a = np.clip(a, -1, None).astype(np.int64)
    lo, hi = np.maximum(0, n_i + n_j - n), np.minimum(n_i, n_j)
    a[:5], a[5:10], a[10:15] = lo[:5], hi[5:10], hi[10:15] + 1
    return a, n_i, n_j


def assert_tails_equal(a, n_i, n_j, n, device="cpu"):
    expected = hypergeom_upper_tail(a, n_i, n_j, n)
    got = torch_upper_tail(*(as_tensor(x, torch.device(device)) for x in (a, n_i, n_j)), n)
    np.testing.assert_array_equal(got.method, expected.method)
    np.testing.assert_allclose(got.p, expected.p, rtol=1e-12, atol=0)
    return expected


@pytest.mark.parametrize("n", [1, 7, 300, 100_000, 3_000_000])
def test_torch_tail_equals_numpy(n):
    a, n_i, n_j = tail_cases(np.random.default_rng(n), n)
    assert_tails_equal(a, n_i, n_j, n)


def test_wide_cases_go_to_scipy(monkeypatch):
    """Tails whose standard deviation is hundreds of counts are handed to scipy, as in
    the numpy path; small blocks of ratios give the same sums."""
    n = 8_000_000  # standard deviation 707
    n_i = np.full(20, n // 2)
    a = n // 4 + np.arange(-10, 10) * 300
    monkeypatch.setattr(torch_hypergeom, "BLOCK_VALUES", 100)
    expected = assert_tails_equal(a, n_i, n_i, n)
    assert (expected.method == TAIL_SCIPY).any()


def test_untabulated_log_factorials():
    """Past 2**23 units torch's lgamma stands in for scipy's gammaln: p-values agree
    to the 1e-8 that float64 log-factorials allow there."""
    n = (1 << 23) + 5
    a, n_i, n_j = tail_cases(np.random.default_rng(5), n, 500)
    n_i, n_j = n_i // 1000, n_j // 1000
    expected = hypergeom_upper_tail(a // 1000, n_i, n_j, n)
    got = torch_upper_tail(*(as_tensor(x, torch.device("cpu")) for x in (a // 1000, n_i, n_j)), n)
    np.testing.assert_allclose(got.p, expected.p, rtol=1e-7, atol=1e-300)


def counted(seed=0, n_rows=3000, d=60):
    """Counts of random binary codes whose latents have densities up to 0.2, and a
    few groups of latents that fire together (significant pairs)."""
    rng = np.random.default_rng(seed)
    on = rng.random((n_rows, d)) < rng.uniform(0, 0.2, d)
    together = rng.random(n_rows) < 0.1
    on[together, : d // 6] |= rng.random((together.sum(), d // 6)) < 0.7
    return count_cooccurrence(sp.csr_array(on.astype(np.float32)))


def assert_graphs_equal(a, b):
    for name in ("row", "col", "count"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("p", "q", "weight"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=0)
    assert (a.adjacency != b.adjacency).nnz == 0 or np.allclose(
        a.adjacency.toarray(), b.adjacency.toarray(), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("chunk", [None, 7])
def test_graphs_and_pvalues_equal_numpy(monkeypatch, chunk):
    if chunk:  # many chunks of whole rows of the counts
        monkeypatch.setattr(pairs, "TORCH_PAIR_CHUNK", chunk)
    co = counted()
    np.testing.assert_allclose(
        pair_pvalues(co, engine="torch"), pair_pvalues(co), rtol=1e-12, atol=0
    )
    ref = build_graph(co, alpha=0.05)
    got = build_graph(co, alpha=0.05, engine="torch")
    assert ref.n_edges > 0
    assert_graphs_equal(ref, got)
    for n_edges in (3, ref.n_edges * 4):  # the second widens the p cut
        assert_graphs_equal(densest_graph(co, n_edges), densest_graph(co, n_edges, engine="torch"))


def test_no_pairs():
    co = count_cooccurrence(np.eye(5))
    assert build_graph(co, engine="torch").n_edges == 0
    assert pair_pvalues(co, engine="torch").size == 0


def test_cpu_tests_with_numpy(monkeypatch):
    """On the CPU the pairs are tested with numpy unless torch is asked for."""

    def no_torch(*args, **kwargs):
        raise AssertionError("the torch engine ran")

    monkeypatch.setattr(torch_hypergeom, "torch_upper_tail_tensors", no_torch)
    co = counted(1, 500, 20)
    build_graph(co, device="cpu")
    pair_pvalues(co)
    with pytest.raises(AssertionError, match="torch engine"):
        build_graph(co, engine="torch")
    with pytest.raises(ValueError, match="`engine`"):
        build_graph(co, engine="cupy")


@pytest.mark.gpu
@pytest.mark.parametrize("n", [7, 100_000, 3_000_000])
def test_torch_tail_on_cuda(n):
    a, n_i, n_j = tail_cases(np.random.default_rng(n), n)
    assert_tails_equal(a, n_i, n_j, n, device="cuda")


@pytest.mark.gpu
def test_graphs_on_cuda_equal_cpu():
    co = counted(2)
    assert_graphs_equal(build_graph(co), build_graph(co, device="cuda"))
    assert_graphs_equal(densest_graph(co, 40), densest_graph(co, 40, device="cuda"))
    np.testing.assert_allclose(
        pair_pvalues(co, device="cuda"), pair_pvalues(co), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_densest_graph_keeps_the_most_significant_pairs(engine):
    """Widening the p cut (every pair scored once, then filtered) keeps the n_edges
    usable pairs of smallest p, as ranking every pair's p-value does."""
    co = counted(3)
    kw = {"engine": "torch"} if engine == "torch" else {}
    p = pair_pvalues(co, **kw)
    row, col, a = co.pairs()
    w = pairs.phi(a, co.n_fire[row], co.n_fire[col], co.n_rows)
    usable = np.flatnonzero((w > 0) & (a >= 5))
    n_edges = 3 * build_graph(co).n_edges
    best = usable[np.lexsort((-w[usable], p[usable]))][:n_edges]
    got = densest_graph(co, n_edges, **kw)
    assert got.n_edges == n_edges
    expected = sorted(zip(row[best].tolist(), col[best].tolist()))
    assert sorted(zip(got.row.tolist(), got.col.tolist())) == expected


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_densest_graph_of_usable_pairs_only(engine):
    """Testing only the pairs that can be edges gives the same edges, weights and
    p-values (the null graphs' case); only the q-values are ranked among fewer."""
    co = counted(4)
    kw = {"engine": "torch"} if engine == "torch" else {}
    for n_edges in (10, 3 * build_graph(co).n_edges):
        ref, got = densest_graph(co, n_edges), densest_graph(co, n_edges, usable_only=True, **kw)
        for name in ("row", "col", "count"):
            np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))
        np.testing.assert_allclose(got.p, ref.p, rtol=1e-12, atol=0)
        np.testing.assert_allclose(got.weight, ref.weight, rtol=1e-12, atol=0)
        assert (got.adjacency != ref.adjacency).nnz == 0
