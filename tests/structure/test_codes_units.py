"""Sparse codes of a store and the projection of feature communities onto units."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score

from saeatlas.errors import ShapeError
from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore, LayerSpec
from saeatlas.structure.graph import codes as codes_module
from saeatlas.structure.graph.codes import encode_store
from saeatlas.structure.graph.finders import LeidenModules
from saeatlas.structure.graph.units import (
    attribution,
    excluded_features,
    global_mode,
    global_mode_features,
    mode_correlation,
    project_modules,
    unit_correlation,
    unit_correlation_graph,
)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_encode_store_equals_dense_encoding_and_moments(tmp_path, arch, npy_store):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 12, generator=g) * torch.linspace(0.5, 3, 12) + 1.0
    store = npy_store(tmp_path, x.numpy(), [("a", 0, 5), ("b", 5, 12)])
    layers = (LayerSpec("a", 0, 5, (5,), "sample"), LayerSpec("b", 5, 12, (7,), "sample"))
    sae = SparseAutoencoder(SAEConfig(architecture=arch, d_in=12, d_sae=30, k=4, layers=layers), g)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1, generator=g)
        dense = sae.encode(x).acts.numpy()
    codes = encode_store(sae, store, batch_size=128)
    got = codes.matrix.toarray()
    # TopK's candidates come from a bf16 product where the CPU has native bf16, and are
    # recomputed exactly
    tol = 1e-5
    assert ((got > 0) == (dense > 0)).mean() > 0.995
    both = (got > 0) & (dense > 0)
    np.testing.assert_allclose(got[both], dense[both], rtol=tol, atol=tol)
    dense = np.where(got > 0, got, 0.0)  # the moments below are of the codes as encoded
    assert codes.rows.tolist() == list(range(700))
    np.testing.assert_allclose(codes.unit_mean, x.numpy().mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(codes.unit_std, x.numpy().std(0), rtol=1e-5)
    ref = np.corrcoef(np.concatenate([dense, x.numpy()], axis=1).T)[:30, 30:]
    alive = dense.std(0) > 0
    np.testing.assert_allclose(codes.unit_correlation()[alive], ref[alive], atol=1e-4)
    x_hat = dense @ sae.W_dec.detach().numpy() + sae.b_dec.detach().numpy()
    np.testing.assert_allclose(
        codes.residual_sq, ((x.numpy() - x_hat) ** 2).sum(0), rtol=1e-3, atol=1e-3
    )
    np.testing.assert_allclose(codes.unit_gram, x.numpy().T.astype(float) @ x.numpy(), rtol=1e-4)


def test_max_rows_takes_whole_batches_spread_over_the_store(tmp_path, npy_store):
    x = np.random.default_rng(0).normal(size=(1000, 6))
    store = npy_store(tmp_path, x, [("a", 0, 6)])
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=6, d_sae=8, k=2))
    codes = encode_store(sae, store, batch_size=100, max_rows=300)
    assert codes.n_rows == 300
    assert codes.rows[0] == 0 and codes.rows[-1] == 999  # first and last batch included
    assert set(np.diff(codes.rows[:100])) == {1}


@pytest.mark.parametrize("max_rows", [50, 250, 950])
def test_max_rows_that_is_not_a_whole_number_of_batches_is_exact(tmp_path, max_rows, npy_store):
    # 50 rows used to encode a whole batch of 100, 250 two batches; 1000 rows in
    # batches of 100 and 75 (a short last batch) must still give 950.
    x = np.random.default_rng(0).normal(size=(1000, 6))
    store = npy_store(tmp_path, x, [("a", 0, 6)])
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=6, d_sae=8, k=2))
    for batch_size in (100, 75):
        codes = encode_store(sae, store, batch_size=batch_size, max_rows=max_rows)
        assert codes.n_rows == len(codes.rows) == len(set(codes.rows)) == max_rows


def test_sae_that_does_not_fit_the_store_is_a_clear_error(tmp_path, npy_store):
    store = npy_store(tmp_path, np.zeros((10, 6)), [("a", 0, 6)])
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=5, d_sae=8, k=2))
    with pytest.raises(ShapeError, match="reads 5 units"):
        encode_store(sae, store)
    named = (LayerSpec("b", 0, 6, (6,), "sample"),)
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=6, d_sae=8, k=2, layers=named))
    with pytest.raises(ShapeError, match=r"reads layers \['b'\].*another store"):
        encode_store(sae, store)


def test_attribution_and_projection_by_hand():
    class Fake:  # only what attribution reads
        pass

    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=3, d_sae=3, k=1))
    with torch.no_grad():
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 1.0]]))
    codes = Fake()
    codes.unit_std = np.array([1.0, 2.0, 1.0])
    codes.act_sq_sum = np.array([4.0, 1.0, 9.0])
    codes.n_rows = 1
    attr = attribution(sae, codes)
    # E[f^2] * (W / std)^2
    np.testing.assert_allclose(attr, [[4.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 9.0]])
    # module 0 writes 4 of the 15 units of energy (e_0 = 4/15); module 1 the rest.
    unit = project_modules(attr, np.array([0, 1, 1]), 2, min_enrichment=1.3)
    assert unit.module.tolist() == [0, 1, 1]
    np.testing.assert_allclose(unit.membership, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(unit.mass, [[1, 0], [0, 1], [0, 1]])
    # unit 2 gets 10/10 from module 1 whose overall share is 11/15: enrichment 15/11
    strict = project_modules(attr, np.array([0, 1, 1]), 2, min_enrichment=1.4)
    assert strict.module.tolist() == [0, -1, -1]
    # a unit written equally by two modules that are each enriched there is shared
    attr2 = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    shared = project_modules(attr2, np.array([0, 1, -1]), 2, min_enrichment=1.2)
    assert shared.shared[0] and shared.membership[0] == pytest.approx(0.5)
    # a unit mostly written by features in no module is not enriched in any module
    weak = project_modules(np.array([[0.1, 1.0], [0.9, 0.0]]), np.array([0, -1]), 1)
    assert weak.module.tolist() == [-1, 0]
    # A big module (features 0, 1: 28 of the 31 units of energy) writes 8 of unit 0's 10,
    # a small one (feature 2: 3 of 31) the other 2. Both are over-represented there, the
    # small one far more (0.2 / (3/31) = 2.1 against 0.8 / (28/31) = 0.89), but the unit
    # belongs to the one that writes most of it.
    big = np.array([[8.0, 10.0, 0.0], [0.0, 10.0, 0.0], [2.0, 0.0, 1.0]])
    sized = project_modules(big, np.array([0, 0, 1]), 2, min_enrichment=0.85)
    assert sized.module.tolist() == [0, 0, 1]
    assert not sized.shared[0]  # the small module writes a quarter of what the big one does


def test_attribution_of_a_resample_equals_that_of_the_drawn_rows_copied(monkeypatch):
    # the bootstrap members' attribution weighs each row by how often it was drawn
    # (codes.weighted_sq_sum) instead of copying the drawn rows: the same moments
    rng = np.random.default_rng(0)
    dense = rng.random((300, 40)) * (rng.random((300, 40)) < 0.1)
    matrix = sp.csr_matrix(dense.astype(np.float32))
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=5, d_sae=40, k=3))
    rows = rng.integers(0, 300, size=280)  # repeats, and some rows never drawn

    class Fake:
        pass

    codes, drawn = Fake(), Fake()
    codes.matrix, codes.unit_std, codes.n_rows = matrix, rng.random(5) + 0.5, 300
    drawn.unit_std, drawn.n_rows = codes.unit_std, rows.size
    drawn.act_sq_sum = (dense[rows].astype(np.float32).astype(np.float64) ** 2).sum(0)
    monkeypatch.setattr(codes_module, "WEIGHTED_ROWS", 32)  # several blocks of rows
    got = attribution(sae, codes, rows)
    np.testing.assert_allclose(got, attribution(sae, drawn), rtol=1e-12, atol=0)


def test_cleaned_unit_graph_finds_blocks_a_global_mode_hides():
    rng = np.random.default_rng(0)
    n, truth = 5000, np.repeat([0, 1, 2], 10)
    block = rng.normal(size=(n, 3))[:, truth]
    glob = rng.normal(size=(n, 1)) * 3.0
    x = block + glob + rng.normal(size=(n, 30)) * 1.0
    corr = unit_correlation(x.T @ x, x.mean(0), x.std(0), n)
    np.testing.assert_allclose(corr, np.corrcoef(x.T), atol=1e-8)
    raw = LeidenModules(random_state=0).fit(unit_correlation_graph(corr, n, clean=False)).labels_
    clean = LeidenModules(random_state=0).fit(unit_correlation_graph(corr, n)).labels_
    assert adjusted_rand_score(truth, clean) == pytest.approx(1.0)
    assert adjusted_rand_score(truth, raw) < adjusted_rand_score(truth, clean)


def test_a_feature_that_follows_the_global_mode_is_excluded_though_it_writes_few_units(tmp_path):
    # Rows: a strong global mode g * v over 40 units, plus noise. Latent 0 reads the mode
    # (fires when g > 0) but writes only 4 units (decoder cosine with the mode ~0.3);
    # latent 1 reads the noise of units 38, 39 (their mode parts cancel) and writes 39.
    rng = np.random.default_rng(0)
    n, d = 4000, 40
    v = rng.uniform(0.5, 1.5, d)
    g = rng.standard_normal(n)
    x = (g[:, None] * v[None, :] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    store = ActivationStore.open(tmp_path / "x.npy")
    sae = SparseAutoencoder(SAEConfig("relu", d_in=d, d_sae=2))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, 0] = torch.tensor(v / np.linalg.norm(v), dtype=torch.float32)
        sae.W_enc[38, 1] = float(1 / v[38])
        sae.W_enc[39, 1] = float(-1 / v[39])
        sae.W_dec.zero_()
        sae.W_dec[0, :4] = 1.0
        sae.W_dec[1, 39] = 1.0
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    codes = encode_store(sae, store)
    corr = unit_correlation(codes.unit_gram, codes.unit_mean, codes.unit_std, codes.n_rows)
    mode = global_mode(corr)
    mode_var = float(mode @ corr @ mode)
    acts = sae.encode(torch.from_numpy(x)).acts.detach().numpy()
    score = ((x - x.mean(0)) / x.std(0)) @ mode
    want = [np.corrcoef(acts[:, j], score)[0, 1] for j in range(2)]
    np.testing.assert_allclose(mode_correlation(codes, mode, mode_var), want, atol=1e-6)
    W = sae.W_dec.detach().double().numpy()
    assert not global_mode_features(W, codes.unit_std, mode, 0.5).any()  # decoder test misses it
    fires = sp.csr_matrix(acts > 0)
    dense, along = excluded_features(sae, codes, fires, mode, mode_var, 0.99, 0.5)
    assert along.tolist() == [True, False] and not dense.any()


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_encode_sparse_in_row_blocks_equals_one_block(monkeypatch, arch):
    from saeatlas.structure.graph import encoder as encoder_module

    g = torch.Generator().manual_seed(3)
    sae = SparseAutoencoder(SAEConfig(architecture=arch, d_in=10, d_sae=64, k=5), g)
    x = torch.randn(300, 10, generator=g)
    whole_idx, whole_vals = encoder_module.SparseEncoder.of(sae)(x)
    monkeypatch.setattr(encoder_module, "ENCODE_BLOCK_BYTES", 4 * 64 * 7)  # 7 rows a block
    encoder = encoder_module.SparseEncoder.of(sae)
    assert encoder.step == 7
    idx, vals = encoder(x)
    assert idx[:, 0].diff().min() >= 0 and int(idx[:, 0].max()) == int(whole_idx[:, 0].max())
    a = sp.csr_matrix((whole_vals.numpy(), whole_idx.numpy().T), shape=(300, 64)).toarray()
    b = sp.csr_matrix((vals.numpy(), idx.numpy().T), shape=(300, 64)).toarray()
    np.testing.assert_allclose(b, a, rtol=1e-2, atol=1e-2)
    assert ((a > 0) == (b > 0)).mean() > 0.995


def test_topk_codes_are_the_saes_own_where_bf16_chooses(monkeypatch):
    """The atlas took each row's top k of a bf16 product as they came: on near-tied rows
    another latent than the SAE's own encoding, with 3 significant digits (a feature
    that fired on one row could show density 0 in features.parquet)."""
    from saeatlas.structure.graph import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "fast_bf16", lambda device, n=None: True)  # as on a GPU
    g = torch.Generator().manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=32, d_sae=256, k=8), g)
    x = torch.randn(400, 32, generator=g)
    encoder = encoder_module.SparseEncoder.of(sae)
    assert encoder.W.dtype == torch.bfloat16 and encoder.step == (256 << 20) // (2 * 256)
    idx, vals = encoder(x)
    got = sp.csr_matrix((vals.numpy(), idx.numpy().T), shape=(400, 256)).toarray()
    with torch.no_grad():
        dense = sae.encode(x).acts.numpy()
    assert ((got > 0) == (dense > 0)).all()
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=1e-6)


def test_a_unit_that_never_changes_but_is_not_zero_has_no_spread_nor_correlations(
    tmp_path, npy_store
):
    """A pruned unit left with its bias (0.152106 on every row) had a std of about 1e-9
    from its moments (E[x^2] - E[x]^2, rounding): its correlations, rounding noise over
    that std, lay anywhere in [-1, 1] and put it in correlation modules, and the
    attribution, which divides by the std, gave it most features' energy (75 of 96
    features of one pruned two-task network went to the module holding six of them)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    x[:, 3] = np.float32(0.152106)  # the bias left of a unit pruned of every input
    # (1,000 copies of it in one batch: their squares sum to 1000 c^2 (1 + 3e-16))
    x[:, 6] = np.float32(-3.7e-3)
    store = npy_store(tmp_path, x, [("a", 0, 8)])
    g = torch.Generator().manual_seed(0)
    layers = (LayerSpec("a", 0, 8, (8,), "sample"),)
    sae = SparseAutoencoder(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=3, layers=layers), g)
    codes = encode_store(sae, store, batch_size=1000, unit_gram=True)
    assert codes.unit_std[3] == 0 and codes.unit_std[6] == 0
    assert (codes.unit_std[[0, 1, 2, 4, 5, 7]] > 0.5).all()
    corr = unit_correlation(codes.unit_gram, codes.unit_mean, codes.unit_std, codes.n_rows)
    off = ~np.eye(8, dtype=bool)
    assert not corr[3][off[3]].any() and not corr[6][off[6]].any()  # exactly none
    # the attribution standardises by the std; a unit without one is not scaled up
    energy = attribution(sae, codes)
    assert energy[:, [3, 6]].sum() < energy.sum(axis=0).max()
