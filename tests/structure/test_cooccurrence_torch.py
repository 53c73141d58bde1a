"""The torch counting engine equals the scipy one exactly, on the CPU and on CUDA."""

import numpy as np
import pytest
import scipy.sparse as sp

from saeatlas.structure import AtlasConfig, PlantedConfig, make_planted
from saeatlas.structure.graph import cooccurrence, torch_counting
from saeatlas.structure.graph.communities import cooccurrence_graph
from saeatlas.structure.graph.cooccurrence import count_cooccurrence
from saeatlas.structure.graph.edges import build_graph


def sparse_codes(rng, n_rows, d, max_density=0.3):
    """[n_rows, d] CSR activations, each latent with its own density; latent 1 never
    fires, row 2 fires nothing, and negative values and explicit zeros (not firing)
    are stored."""
    density = rng.uniform(0, max_density, d)
    density[1 % d] = 0.0
    on = rng.random((n_rows, d)) < density
    on[2:3] = False
    x = rng.exponential(size=(n_rows, d)) * on
    x[(~on) & (rng.random((n_rows, d)) < 0.05)] = -1.0
    m = sp.csr_array(x)
    m.data[::7] = 0.0  # stored, but not firing
    return m


def assert_same(a, b):
    """Identical results: the same units, firing counts, and stored pairs with the same
    counts in the same CSR layout and dtype."""
    assert (a.n_rows, a.window, a.d_sae) == (b.n_rows, b.window, b.d_sae)
    np.testing.assert_array_equal(a.n_fire, b.n_fire)
    assert a.n_fire.dtype == b.n_fire.dtype
    assert a.counts.shape == b.counts.shape and a.counts.nnz == b.counts.nnz
    np.testing.assert_array_equal(a.counts.indptr, b.counts.indptr)
    np.testing.assert_array_equal(a.counts.indices, b.counts.indices)
    np.testing.assert_array_equal(a.counts.data, b.counts.data)
    assert a.counts.data.dtype == b.counts.data.dtype
    assert b.counts.has_sorted_indices
    assert (a.counts != b.counts).nnz == 0


SHAPES = [
    # n_rows, d_sae, max_density, block_features, block_rows
    (400, 37, 0.3, None, None),  # one tile, one row block
    (400, 37, 0.3, 8, 50),  # 37 is no multiple of 8; 8 row blocks
    (301, 64, 0.15, 5, 7),
    (64, 200, 0.05, 1, 1),  # one latent and one row per block
    (3, 2, 0.9, None, None),
    (0, 6, 0.5, None, None),  # no rows
]


@pytest.mark.parametrize(("n_rows", "d", "density", "block_features", "block_rows"), SHAPES)
def test_torch_equals_scipy_on_cpu(n_rows, d, density, block_features, block_rows):
    codes = sparse_codes(np.random.default_rng(n_rows + d), n_rows, d, density)
    expected = count_cooccurrence(codes, engine="scipy")
    got = count_cooccurrence(
        codes, engine="torch", block_features=block_features, block_rows=block_rows
    )
    assert_same(expected, got)
    assert expected.n_fire[1 % d] == 0
    if n_rows > 10:
        assert got.n_pairs > 0


@pytest.mark.parametrize("window", [1, 3, 8])
def test_torch_window_counts_equal_scipy(window):
    rng = np.random.default_rng(window)
    lengths = rng.integers(1, 20, size=30)  # samples of unequal lengths
    samples = np.repeat(rng.permutation(1000)[:30], lengths)
    codes = sparse_codes(rng, samples.size, 23, 0.2)
    expected = count_cooccurrence(codes, window=window, samples=samples, engine="scipy")
    for block_features, block_rows in [(None, None), (4, 5)]:
        got = count_cooccurrence(
            codes,
            window=window,
            samples=samples,
            engine="torch",
            block_features=block_features,
            block_rows=block_rows,
        )
        assert_same(expected, got)
        assert got.window == window and got.n_rows == sum(-(-n // window) for n in lengths)


def test_torch_default_tiles_and_streamed_blocks(monkeypatch):
    """Small default bounds: tiles whose height grows as their width shrinks, row blocks
    moved again for every tile, and rows of very different L0 (one row fires 60)."""
    rng = np.random.default_rng(7)
    codes = sparse_codes(rng, 150, 90, 0.1).toarray()
    codes[5, 10:70] = 1.0
    codes = sp.csr_array(codes)
    monkeypatch.setattr(torch_counting, "TILE_COUNTS", 300)
    monkeypatch.setattr(torch_counting, "BLOCK_FIRINGS", 40)
    monkeypatch.setattr(torch_counting, "RESIDENT_FIRINGS", 10)
    tiles = torch_counting._tiles(90, None)
    heights = [i1 - i0 for i0, i1 in tiles]
    assert len(tiles) > 5 and heights[0] < heights[-2] and tiles[-1][1] == 90
    assert all((i1 - i0) * (90 - i0) <= 300 for i0, i1 in tiles)
    assert_same(count_cooccurrence(codes), count_cooccurrence(codes, engine="torch"))


def test_dense_input_and_single_latent():
    x = np.random.default_rng(3).random((50, 9)) - 0.4
    assert_same(count_cooccurrence(x), count_cooccurrence(x, engine="torch"))
    one = np.ones((4, 1))
    co = count_cooccurrence(one, engine="torch")
    assert co.n_pairs == 0 and co.n_fire.tolist() == [4]


def test_device_picks_the_engine(monkeypatch):
    """The CPU counts with scipy; the torch engine is only called when asked for."""

    def no_torch(*args, **kwargs):
        raise AssertionError("the torch engine ran")

    monkeypatch.setattr(cooccurrence, "torch_upper_blocks", no_torch)
    x = sparse_codes(np.random.default_rng(0), 40, 8)
    count_cooccurrence(x, device="cpu")
    count_cooccurrence(x)
    with pytest.raises(AssertionError, match="torch engine"):
        count_cooccurrence(x, device="cpu", engine="torch")


def test_engine_errors():
    x = sp.csr_array(np.eye(4))
    with pytest.raises(ValueError, match=r"`engine`.*'scipy', 'torch'"):
        count_cooccurrence(x, engine="cupy")
    with pytest.raises(ValueError, match="`block_rows`"):
        count_cooccurrence(x, engine="torch", block_rows=0)
    with pytest.raises(ValueError, match="`device`"):
        count_cooccurrence(x, device="tpu")


def planted_fires():
    data = make_planted(PlantedConfig(n_rows=1500, n_modules=3, features_per_module=8, seed=1))
    samples = np.arange(data.firing.shape[0]) // 5  # texts of 5 rows
    return sp.csr_matrix(data.firing), samples


@pytest.mark.parametrize("window", [0, 2])
def test_atlas_graph_on_cpu_is_unchanged(window):
    """``AtlasConfig(device="cpu")`` builds the graph the scipy counts give, and the
    torch counts give the same graph."""
    fires, samples = planted_fires()
    cfg = AtlasConfig(device="cpu", window=window)
    graph = cooccurrence_graph(fires, samples, cfg)
    for engine in ("scipy", "torch"):
        co = count_cooccurrence(
            fires, window=window, samples=samples if window else None, engine=engine
        )
        ref = build_graph(co, kind=cfg.affinity, alpha=cfg.edge_alpha)
        assert graph.adjacency.nnz > 0
        assert (graph.adjacency != ref.adjacency).nnz == 0


@pytest.mark.gpu
@pytest.mark.parametrize(("n_rows", "d", "density", "block_features", "block_rows"), SHAPES)
def test_torch_equals_scipy_on_cuda(n_rows, d, density, block_features, block_rows):
    codes = sparse_codes(np.random.default_rng(n_rows + d), n_rows, d, density)
    expected = count_cooccurrence(codes)
    got = count_cooccurrence(
        codes, device="cuda", block_features=block_features, block_rows=block_rows
    )
    assert_same(expected, got)
    lengths = np.random.default_rng(0).integers(1, 9, size=40)
    samples = np.repeat(np.arange(40), lengths)
    codes = sparse_codes(np.random.default_rng(1), samples.size, d, density)
    assert_same(
        count_cooccurrence(codes, window=3, samples=samples),
        count_cooccurrence(codes, window=3, samples=samples, device="cuda", block_rows=11),
    )


@pytest.mark.gpu
def test_atlas_graph_on_cuda_equals_cpu():
    fires, samples = planted_fires()
    cpu = cooccurrence_graph(fires, samples, AtlasConfig(device="cpu", window=2))
    cuda = cooccurrence_graph(fires, samples, AtlasConfig(device="cuda", window=2))
    assert (cpu.adjacency != cuda.adjacency).nnz == 0
