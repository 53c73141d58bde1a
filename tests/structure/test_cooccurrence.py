import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import false_discovery_control, hypergeom

from saeatlas.structure.graph.cooccurrence import count_cooccurrence, count_in_parts, latent_blocks
from saeatlas.structure.graph.edges import build_graph, densest_graph
from saeatlas.structure.graph.hypergeom import (
    TAIL_SCIPY,
    TAIL_SUM,
    benjamini_hochberg,
    hypergeom_upper_tail,
)
from saeatlas.structure.graph.pairs import (
    AFFINITIES,
    affinity,
    jaccard,
    npmi,
    pair_pvalues,
    phi,
)
from saeatlas.structure.graph.windows import window_ids


def random_codes(rng, n_rows=500, d=40, max_density=0.3):
    """[n_rows, d] activations; each latent fires with its own density. Negative values
    and explicit zeros are sprinkled in: neither counts as firing."""
    density = rng.uniform(0, max_density, d)
    on = rng.random((n_rows, d)) < density
    x = rng.exponential(size=(n_rows, d)) * on
    x[(~on) & (rng.random((n_rows, d)) < 0.05)] = -1.0
    return x


def dense_reference(x):
    """Strict upper triangle of F^T F and the firing counts, F = x > 0."""
    f = (np.asarray(x) > 0).astype(np.int64)
    c = f.T @ f
    return np.triu(c, 1), np.diag(c).copy()


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize("block_features", [1, 3, 7, None])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_counts_match_dense_reference(block_features, n_threads):
    x = random_codes(np.random.default_rng(0))
    co = count_cooccurrence(sp.csr_matrix(x), block_features=block_features, n_threads=n_threads)
    upper, n_fire = dense_reference(x)
    assert co.n_rows == 500 and co.d_sae == 40
    np.testing.assert_array_equal(co.counts.toarray(), upper)
    np.testing.assert_array_equal(co.n_fire, n_fire)
    assert co.n_fire.dtype == np.int64
    assert co.counts.has_sorted_indices


def test_counts_store_only_co_firing_pairs_upper_triangle():
    x = random_codes(np.random.default_rng(1), n_rows=300, d=60, max_density=0.1)
    co = count_cooccurrence(sp.csr_array(x))
    upper, _ = dense_reference(x)
    n_cofiring = int(np.count_nonzero(upper))
    # No densification: exactly one stored entry per distinct co-firing pair, all i < j.
    assert co.n_pairs == n_cofiring < 60 * 59 // 2
    pairs = co.pairs()
    assert np.all(pairs.row < pairs.col) and np.all(pairs.count > 0)
    np.testing.assert_array_equal(pairs.count, upper[pairs.row, pairs.col])


def test_input_formats_agree():
    rng = np.random.default_rng(2)
    x = random_codes(rng, n_rows=120, d=15)
    expected = count_cooccurrence(x).counts.toarray()
    for codes in (sp.csr_matrix(x), sp.csr_array(x), sp.coo_array(x), sp.csc_matrix(x)):
        np.testing.assert_array_equal(count_cooccurrence(codes).counts.toarray(), expected)
    # Explicit zeros are stored entries that do not fire.
    m = sp.csr_matrix(x)
    m.data[::5] = 0.0
    upper, n_fire = dense_reference(m.toarray())
    co = count_cooccurrence(m)
    np.testing.assert_array_equal(co.counts.toarray(), upper)
    np.testing.assert_array_equal(co.n_fire, n_fire)


def test_duplicate_entries_are_summed_first():
    # Row 0 stores column 1 twice (0.5 + 0.5 fires); row 1 stores column 2 as 1 + (-1) = 0.
    indptr = np.array([0, 3, 6])
    indices = np.array([0, 1, 1, 0, 2, 2])
    data = np.array([1.0, 0.5, 0.5, 1.0, 1.0, -1.0])
    m = sp.csr_matrix((data, indices, indptr), shape=(2, 3))
    co = count_cooccurrence(m)
    np.testing.assert_array_equal(co.n_fire, [2, 1, 0])
    np.testing.assert_array_equal(co.counts.toarray(), [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


def windowed_reference(x, samples, window):
    """Binary [n_windows, d] by a plain loop over samples and windows."""
    units, start = [], 0
    while start < len(samples):
        stop = start
        while stop < len(samples) and samples[stop] == samples[start]:
            stop += 1
        for w0 in range(start, stop, window):
            units.append((x[w0 : min(w0 + window, stop)] > 0).any(axis=0))
        start = stop
    return np.array(units)


@pytest.mark.parametrize("window", [1, 3, 8])
def test_window_counts_match_loop(window):
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 20, size=40)
    samples = np.repeat(rng.permutation(1000)[:40], lengths)  # ids need not be sorted
    x = random_codes(rng, n_rows=samples.size, d=25, max_density=0.15)
    co = count_cooccurrence(sp.csr_matrix(x), window=window, samples=samples, block_features=4)
    units = windowed_reference(x, samples, window)
    upper, n_fire = dense_reference(units)
    assert co.n_rows == units.shape[0] == sum(-(-n // window) for n in lengths)
    assert co.window == window
    np.testing.assert_array_equal(co.counts.toarray(), upper)
    np.testing.assert_array_equal(co.n_fire, n_fire)


def test_window_ids_restart_per_sample():
    ids = window_ids(np.array([5, 5, 5, 5, 5, 2, 2, 9]), 2)
    np.testing.assert_array_equal(ids, [0, 0, 1, 1, 2, 3, 3, 4])


def test_window_needs_valid_samples():
    x = sp.csr_matrix(np.eye(6))
    with pytest.raises(ValueError, match="`samples`"):
        count_cooccurrence(x, window=2)
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        count_cooccurrence(x, window=2, samples=np.zeros(5))
    with pytest.raises(ValueError, match=r"contiguous.*\[1\]"):
        count_cooccurrence(x, window=2, samples=np.array([1, 1, 2, 2, 1, 1]))
    with pytest.raises(ValueError, match="`window`"):
        count_cooccurrence(x, window=-1)
    with pytest.raises(ValueError, match="2-D"):
        count_cooccurrence(np.zeros(5))


# ---------------------------------------------------------------- affinities

# Two latents over 10 rows; a = 3 (rows 0-2), b = 2 (rows 3, 8), c = 1 (row 4), d = 4.
X_I = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0])
X_J = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])


def hand_cooccurrence():
    rng = np.random.default_rng(4)
    codes = np.stack([X_I, X_J], axis=1) * rng.uniform(0.1, 2.0, size=(10, 2))
    return count_cooccurrence(sp.csr_matrix(codes))


def test_phi_matches_correlation_of_indicators():
    co = hand_cooccurrence()
    assert co.pairs().count.tolist() == [3]
    expected = np.corrcoef(X_I, X_J)[0, 1]
    assert affinity(co, "phi")[0] == pytest.approx(expected, rel=1e-12)
    # (a d - b c) / sqrt((a+b)(c+d)(a+c)(b+d)) = (12 - 2) / sqrt(5 * 5 * 4 * 6)
    assert expected == pytest.approx(10 / np.sqrt(600), rel=1e-12)


def test_npmi_and_jaccard_match_hand_values():
    co = hand_cooccurrence()
    p_ij, p_i, p_j = 3 / 10, 5 / 10, 4 / 10
    assert affinity(co, "npmi")[0] == pytest.approx(
        np.log(p_ij / (p_i * p_j)) / -np.log(p_ij), rel=1e-12
    )
    both = np.sum((X_I > 0) & (X_J > 0))
    either = np.sum((X_I > 0) | (X_J > 0))
    assert affinity(co, "jaccard")[0] == pytest.approx(both / either, rel=1e-12)
    assert both / either == 0.5


def test_affinity_edge_cases():
    n = 10
    # Latent i fires on every row: a margin of phi's table is 0.
    assert phi(4, 10, 4, n) == 0.0
    assert phi(4, 4, 4, n) == pytest.approx(1.0)  # always together
    assert npmi(0, 3, 4, n) == -1.0  # never together
    assert npmi(4, 4, 4, n) == pytest.approx(1.0)
    assert npmi(10, 10, 10, n) == 0.0  # both fire everywhere: independent
    assert jaccard(0, 0, 0, n) == 0.0
    # Independence (a = n_i n_j / n) gives 0 for phi and NPMI.
    assert phi(2, 4, 5, n) == pytest.approx(0.0, abs=1e-15)
    assert npmi(2, 4, 5, n) == pytest.approx(0.0, abs=1e-15)


def test_unknown_affinity_lists_the_allowed_kinds():
    co = hand_cooccurrence()
    for call in (lambda: affinity(co, "pmi"), lambda: build_graph(co, kind="pmi")):
        with pytest.raises(ValueError, match="'pmi'.*'phi', 'npmi', 'jaccard'"):
            call()
    assert set(AFFINITIES) == {"phi", "npmi", "jaccard"}


# ---------------------------------------------------------------- significance


@pytest.mark.parametrize("n", [1, 7, 60, 5000])
def test_pvalues_match_scipy_over_the_whole_support(n):
    rng = np.random.default_rng(n)
    n_i = rng.integers(0, n + 1, 40)
    n_j = rng.integers(0, n + 1, 40)
    # Every a from below the support to above it, for each pair of margins.
    a = np.concatenate([np.arange(-1, min(i, j) + 2) for i, j in zip(n_i, n_j)])
    ni = np.concatenate([np.full(min(i, j) + 3, i) for i, j in zip(n_i, n_j)])
    nj = np.concatenate([np.full(min(i, j) + 3, j) for i, j in zip(n_i, n_j)])
    out = hypergeom_upper_tail(a, ni, nj, n)
    expected = hypergeom.sf(a - 1, n, ni, nj)
    np.testing.assert_allclose(out.p, expected, rtol=1e-8, atol=1e-300)


def test_pvalues_match_scipy_at_a_million_units():
    rng = np.random.default_rng(5)
    n = 1_000_000
    n_i = rng.integers(1, 300_000, 3000)
    n_j = rng.integers(1, 300_000, 3000)
    mu = n_i * n_j / n
    sd = np.sqrt(mu * (n - n_i) * (n - n_j) / (n * (n - 1.0)))
    a = np.clip(np.round(mu + rng.uniform(-4, 15, mu.size) * sd), 0, np.minimum(n_i, n_j))
    out = hypergeom_upper_tail(a.astype(np.int64), n_i, n_j, n)
    expected = hypergeom.sf(a - 1, n, n_i, n_j)
    assert np.all(out.method == TAIL_SUM)  # standard deviations up to ~200 are summed here
    assert expected.min() < 1e-40  # far tails included
    np.testing.assert_allclose(out.p, expected, rtol=1e-6)


def test_very_wide_distributions_go_to_scipy():
    n = 10_000_000
    n_i = np.full(4, 5_000_000)
    n_j = np.array([5_000_000, 4_000_000, 5_000_000, 5_000_000])
    mu = n_i * n_j // n
    a = mu + np.array([0, 200, 1300, 5000])  # sd is about 270
    out = hypergeom_upper_tail(a, n_i, n_j, n)
    np.testing.assert_allclose(out.p, hypergeom.sf(a - 1, n, n_i, n_j), rtol=1e-6)
    assert out.method[0] == TAIL_SCIPY and out.method[-1] == TAIL_SUM  # far tail summed


def test_pair_pvalues_align_with_pairs():
    x = random_codes(np.random.default_rng(6), n_rows=400, d=20)
    co = count_cooccurrence(sp.csr_matrix(x))
    pr = co.pairs()
    expected = hypergeom.sf(pr.count - 1, co.n_rows, co.n_fire[pr.row], co.n_fire[pr.col])
    np.testing.assert_allclose(pair_pvalues(co, n_threads=2), expected, rtol=1e-8)


def test_benjamini_hochberg_hand_example():
    p = np.array([0.01, 0.04, 0.03, 0.20])
    # Sorted 0.01, 0.03, 0.04, 0.20 -> p m / r = 0.04, 0.06, 0.0533, 0.2 -> running min from the top.
    np.testing.assert_allclose(benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    # Four more tests with p = 1 double m: 0.08, 0.12, 0.1067, 0.4 -> min from the top.
    np.testing.assert_allclose(benjamini_hochberg(p, n_tests=8), [0.08, 0.32 / 3, 0.32 / 3, 0.4])


def test_benjamini_hochberg_matches_scipy():
    rng = np.random.default_rng(7)
    p = np.concatenate([rng.random(300) ** 4, rng.random(200), [0.5, 0.5, 0.0, 1.0]])
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)
    # Unstored pairs have p = 1: passing only the stored p-values with n_tests = m agrees.
    full = np.concatenate([p, np.ones(1000)])
    np.testing.assert_allclose(
        benjamini_hochberg(p, n_tests=full.size),
        false_discovery_control(full)[: p.size],
        rtol=1e-12,
    )


def test_benjamini_hochberg_rejects_bad_input():
    with pytest.raises(ValueError, match="`n_tests`=1"):
        benjamini_hochberg([0.1, 0.2], n_tests=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        benjamini_hochberg([0.1, np.nan])


# ---------------------------------------------------------------- graph


def independent_codes(rng, n_rows=4000, d=60):
    density = rng.uniform(0.01, 0.3, d)
    return sp.csr_matrix(rng.random((n_rows, d)) < density)


def planted_codes(rng, n_rows=3000, group_size=8, n_background=24):
    """Two groups that each switch on in 10% of rows; their latents then fire with
    probability 0.6 (0.02 otherwise). Background latents fire independently."""
    cols = []
    for _ in range(2):
        active = rng.random(n_rows) < 0.1
        p = np.where(active[:, None], 0.6, 0.02)
        cols.append(rng.random((n_rows, group_size)) < p)
    cols.append(rng.random((n_rows, n_background)) < rng.uniform(0.02, 0.2, n_background))
    group = np.repeat([0, 1, -1], [group_size, group_size, n_background])
    return sp.csr_matrix(np.hstack(cols).astype(np.float32)), group


def test_independent_firing_gives_almost_no_edges():
    n_edges, n_tests = 0, 0
    for seed in range(3):
        co = count_cooccurrence(independent_codes(np.random.default_rng(seed)))
        g = build_graph(co, alpha=0.05, min_count=1)
        n_edges += g.n_edges
        n_tests += g.n_tests
        assert g.n_tests == 60 * 59 // 2 >= co.n_pairs
    # Under the global null, BH at 5% finds any edge with probability at most 5% per run.
    assert n_edges <= 2 < 0.01 * n_tests


def test_planted_groups_give_edges_within_groups():
    codes, group = planted_codes(np.random.default_rng(8))
    g = build_graph(count_cooccurrence(codes), alpha=0.05)
    same = group[g.row] == group[g.col]
    within = same & (group[g.row] >= 0)
    assert within.sum() >= 0.9 * 2 * (8 * 7 // 2)  # nearly every planted pair found
    # Few edges elsewhere. A background latent that by chance follows a group's switch
    # correlates with all of the group at once, so false edges come in bunches.
    assert within.mean() >= 0.9


def test_a_null_graph_can_be_made_as_dense_as_the_real_one():
    # Independent firing gives (almost) no significant pair; with n_edges the graph keeps
    # that many of the most significant positive pairs instead, for density-matched nulls.
    co = count_cooccurrence(independent_codes(np.random.default_rng(3)))
    assert build_graph(co, alpha=0.05).n_edges <= 1
    g = densest_graph(co, 40, alpha=0.05)
    assert g.n_edges == 40 and (g.weight > 0).all() and (g.count >= 5).all()
    pr = co.pairs()
    p, w = pair_pvalues(co), affinity(co, "phi")
    usable = (w > 0) & (pr.count >= 5)
    assert np.sort(g.p).tolist() == pytest.approx(np.sort(p[usable])[:40].tolist())
    # asking for more edges than there are usable pairs gives all of them
    every = densest_graph(co, 10**6, alpha=0.05)
    assert every.n_edges == int(usable.sum())
    assert densest_graph(co, 0).n_edges == 0


def test_graph_fields_are_consistent():
    codes, _ = planted_codes(np.random.default_rng(9), n_rows=1500)
    co = count_cooccurrence(codes)
    g = build_graph(co, kind="npmi", alpha=0.1, min_count=3)
    adj = g.adjacency
    assert adj.shape == (co.d_sae, co.d_sae) and adj.dtype == np.float64
    assert abs(adj - adj.T).max() == 0 and adj.diagonal().max() == 0
    assert adj.nnz == 2 * g.n_edges > 0
    np.testing.assert_array_equal(adj[g.row, g.col], g.weight)
    assert np.all(g.row < g.col) and g.kind == "npmi" and g.n_tests == co.n_tests
    # The streamed selection equals BH over every stored pair, with m = all pairs of alive latents.
    pr = co.pairs()
    p = pair_pvalues(co)
    q = benjamini_hochberg(p, n_tests=co.n_tests)
    w = affinity(co, "npmi")
    keep = (q <= 0.1) & (w > 0) & (pr.count >= 3)
    assert keep.sum() == g.n_edges
    np.testing.assert_array_equal(pr.row[keep], g.row)
    np.testing.assert_array_equal(pr.col[keep], g.col)
    np.testing.assert_allclose(g.q, q[keep], rtol=1e-12)
    np.testing.assert_allclose(g.p, p[keep], rtol=1e-12)
    np.testing.assert_allclose(g.weight, w[keep], rtol=1e-12)
    assert g.count.min() >= 3 and g.q.max() <= 0.1


def test_build_graph_validates_its_options():
    co = hand_cooccurrence()
    with pytest.raises(ValueError, match="`alpha`"):
        build_graph(co, alpha=0)
    with pytest.raises(ValueError, match="`min_count`"):
        build_graph(co, min_count=0)
    with pytest.raises(ValueError, match="`n_threads`"):
        build_graph(co, n_threads=0)


def test_empty_and_degenerate_inputs():
    co = count_cooccurrence(sp.csr_matrix((0, 5)))
    assert co.n_rows == 0 and co.n_pairs == 0 and co.n_tests == 0
    g = build_graph(co)
    assert g.n_edges == 0 and g.adjacency.shape == (5, 5)
    co = count_cooccurrence(np.eye(4))  # every latent fires once, never together
    assert co.n_pairs == 0 and co.n_tests == 6
    assert build_graph(co, min_count=1).n_edges == 0


def test_moderate_size_runs():
    """200k rows x 4096 latents at L0 32 with skewed (power-law) densities."""
    rng = np.random.default_rng(10)
    n_rows, d, l0 = 200_000, 4096, 32
    w = (np.arange(d) + 1.0) ** -0.7
    cols = np.sort(rng.choice(d, size=(n_rows, l0), p=w / w.sum()).astype(np.int32), axis=1)
    first = np.ones_like(cols, dtype=bool)
    first[:, 1:] = cols[:, 1:] != cols[:, :-1]  # drop repeated draws within a row
    lengths = first.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    codes = sp.csr_array((np.ones(indptr[-1], np.float32), cols[first], indptr), (n_rows, d))
    co = count_cooccurrence(codes)
    assert co.n_fire.sum() == codes.nnz
    # Every row contributes C(L, 2) joint firings.
    assert co.counts.sum() == np.sum(lengths * (lengths - 1) // 2)
    assert co.n_pairs <= d * (d - 1) // 2
    g = build_graph(co)
    assert g.n_edges <= 0.001 * g.n_tests  # latents drawn independently


# ---------------------------------------------------------------- counting in parts


def test_parts_hold_disjoint_blocks_of_about_equal_work_that_add_up_to_the_whole():
    codes = random_codes(np.random.default_rng(11), n_rows=800, d=120)
    whole = count_cooccurrence(codes)
    bounds = latent_blocks(sp.csr_array(codes > 0), 3)
    # later latents have fewer partners above them, so equal work is not equal size
    assert bounds[0] == 0 and bounds[-1] == 120 and np.all(np.diff(bounds) > 0)
    assert bounds[1] < 120 - bounds[2]
    parts = [count_cooccurrence(codes, part=(k, 3), block_features=7) for k in range(3)]
    for k, co in enumerate(parts):
        rows = np.flatnonzero(np.diff(co.counts.indptr))
        assert rows.min() >= bounds[k] and rows.max() < bounds[k + 1] and co.part == (k, 3)
        np.testing.assert_array_equal(co.n_fire, whole.n_fire)
        assert co.n_tests == whole.n_tests
    assert (sum(co.counts for co in parts) != whole.counts).nnz == 0
    assert max(co.n_pairs for co in parts) < 0.45 * whole.n_pairs


def test_a_part_is_tested_only_as_its_rank():
    codes = random_codes(np.random.default_rng(12))
    with pytest.raises(ValueError, match=r"`part` must be \(k, n_parts\)"):
        count_cooccurrence(codes, part=(2, 2))
    with pytest.raises(ValueError, match=r"part 1 of 2 .* rank 0 of 1; count them with `part`"):
        build_graph(count_cooccurrence(codes, part=(1, 2)))


@pytest.mark.parametrize("window", [0, 3])
def test_a_graph_built_one_part_at_a_time_equals_the_graph_of_all_counts(window):
    codes, _ = planted_codes(np.random.default_rng(13))
    samples = np.repeat(np.arange(codes.shape[0] // 6), 6)
    kw = dict(window=window, samples=samples)
    whole_counts = count_cooccurrence(codes, **kw)
    whole = build_graph(whole_counts)
    bound, _ = count_in_parts(codes, **kw)
    assert bound >= whole_counts.n_pairs  # the pair work bounds the pairs stored
    bound, parts = count_in_parts(codes, **kw, max_bytes=8 * bound // 5)
    parts = list(parts)
    assert len(parts) >= 5 and [co.part for co in parts] == [
        (k, len(parts)) for k in range(len(parts))
    ]
    assert sum(co.n_pairs for co in parts) == whole_counts.n_pairs
    assert max(co.n_pairs for co in parts) < 0.4 * whole_counts.n_pairs
    g = build_graph((bound, iter(parts)))
    assert g.n_edges > 20
    for field in ("row", "col", "weight", "count", "p", "q", "n_fire"):
        np.testing.assert_array_equal(getattr(g, field), getattr(whole, field))
    assert (g.adjacency != whole.adjacency).nnz == 0 and g.n_tests == whole.n_tests
    # counted whole (the default budget), the parts are one
    bound, parts = count_in_parts(codes, **kw)
    assert [co.part for co in parts] == [(0, 1)]
    with pytest.raises(ValueError, match=r"parts \[1\] of 2 of the pairs, not rank 0's 2 parts"):
        build_graph((bound, iter([count_cooccurrence(codes, part=(1, 2))])))
