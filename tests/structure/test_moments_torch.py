"""The moments summed in torch on the device equal the numpy ones (float64, to 1e-12
relative), and the unit attribution in feature blocks equals the plain formula."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore, LayerSpec
from saeatlas.structure.graph import moments, units
from saeatlas.structure.graph.codes import column_percentile, encode_store


def store_and_sae(tmp_path, n_rows=900, d_in=10, d_sae=300, k=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n_rows, d_in, generator=g) * torch.linspace(0.5, 3, d_in) + 1.0
    path = tmp_path / "acts.npy"
    np.save(path, x.numpy())
    (tmp_path / "layers.json").write_text(json.dumps([{"name": "a", "start": 0, "stop": d_in}]))
    layers = (LayerSpec("a", 0, d_in, (d_in,), "sample"),)
    cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, layers=layers)
    return ActivationStore.open(path), SparseAutoencoder(cfg, g)


def assert_codes_equal(a, b):
    assert (a.matrix != b.matrix).nnz == 0
    for name in ("unit_mean", "unit_std", "act_sum", "act_sq_sum", "cross", "unit_gram"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.residual_sq, b.residual_sq, rtol=1e-12)
    assert len(a.resampled_grams) == len(b.resampled_grams) == 2
    for (wa, sa, ga), (wb, sb, gb) in zip(a.resampled_grams, b.resampled_grams):
        assert wa == wb
        np.testing.assert_allclose(sa, sb, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scatter", [None, 37])
def test_torch_moments_equal_numpy(tmp_path, monkeypatch, scatter):
    if scatter:  # many bounded scatter steps per batch
        monkeypatch.setattr(moments, "SCATTER_FIRINGS", scatter)
    store, sae = store_and_sae(tmp_path)
    kw = dict(batch_size=128, resamples=2, resample_seed=3)
    ref = encode_store(sae, store, **kw)
    assert ref.act_sum.sum() > 0
    assert_codes_equal(ref, encode_store(sae, store, engine="torch", **kw))


def test_moments_engine_errors(tmp_path):
    store, sae = store_and_sae(tmp_path, n_rows=50)
    with pytest.raises(ValueError, match="`engine`"):
        encode_store(sae, store, engine="cupy")


@pytest.mark.parametrize("block", [None, 7])
def test_attribution_in_blocks_equals_formula(tmp_path, monkeypatch, block):
    if block:
        monkeypatch.setattr(units, "ATTRIBUTION_FEATURES", block)
    store, sae = store_and_sae(tmp_path)
    codes = encode_store(sae, store, batch_size=128)
    W = sae.W_dec.detach().double().numpy()
    std = np.where(codes.unit_std > 0, codes.unit_std, 1.0)
    expected = codes.act_sq_sum[:, None] / codes.n_rows * (W / std) ** 2
    np.testing.assert_allclose(units.attribution(sae, codes), expected, rtol=1e-12, atol=0)


@pytest.mark.gpu
def test_moments_and_attribution_on_cuda(tmp_path):
    store, sae = store_and_sae(tmp_path)
    kw = dict(batch_size=128, resamples=2, resample_seed=3)
    ref = encode_store(sae, store, **kw)
    got = encode_store(sae, store, device="cuda", **kw)  # the torch engine, on the GPU
    # TopK on the GPU picks from a bf16 product: compare the moments of the same codes
    if (ref.matrix != got.matrix).nnz == 0:
        assert_codes_equal(ref, got)
    np.testing.assert_allclose(
        units.attribution(sae, got), units.attribution(sae.cpu(), got), rtol=1e-12, atol=0
    )


def test_column_percentile_equals_one_call_per_column():
    """strong_firing's cuts: columns grouped by size give np.percentile's values bit
    for bit (ties, empty columns, columns of one value)."""
    rng = np.random.default_rng(0)
    for trial in range(6):
        on = rng.random((500, 80)) < rng.uniform(0, 0.3, 80)
        on[:, 3], on[:, 4] = False, False
        on[7, 4] = True
        x = (rng.exponential(size=on.shape) * on).astype(np.float32)
        csc = sp.csc_matrix(np.round(x, 1) if trial % 2 else x)
        expected = np.zeros(80, np.float32)
        for j in range(80):
            v = csc.data[csc.indptr[j] : csc.indptr[j + 1]]
            if v.size:
                expected[j] = 0.1 * np.percentile(v, 99)
        got = 0.1 * column_percentile(csc, 99)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
