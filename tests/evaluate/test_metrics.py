import numpy as np
import pytest
import torch

from saeatlas.evaluate import evaluate_sae
from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from spawned_ranks import join_gloo


def test_metrics_against_direct_computation(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32) + 2.0
    np.save(tmp_path / "x.npy", x)
    store = ActivationStore.open(tmp_path / "x.npy")
    sae = SparseAutoencoder(
        SAEConfig("topk", d_in=6, d_sae=12, k=2), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.W_dec[5:] *= 0  # never-used directions stay; density is measured on acts
        sae.b_enc[11] = -100.0  # latent 11 can never win... unless nothing else is positive
    res = evaluate_sae(sae, store, batch_size=64)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        out = sae.eval()(xt)
    expected_fvu = float(((xt - out.x_hat) ** 2).sum() / ((xt - xt.mean(0)) ** 2).sum())
    assert res.fvu == pytest.approx(expected_fvu, rel=1e-5)
    assert res.l0 == pytest.approx(float((out.acts != 0).sum(1).float().mean()))
    density = (out.acts != 0).float().mean(0).numpy()
    np.testing.assert_allclose(res.density, density, rtol=1e-6)
    assert res.dead_fraction == pytest.approx(float((density == 0).mean()))
    assert res.dense_fraction == pytest.approx(float((density > 0.1).mean()))
    part = evaluate_sae(sae, store, start=100, stop=200)
    assert part.n_rows == 100
    counts, edges = res.density_histogram(bins=5)
    assert counts.sum() == (density > 0).sum() and len(edges) == 6


def test_bad_rows_or_a_store_of_another_width_are_clear_errors(tmp_path):
    # A row range past the end raised a bare ValueError (a traceback from the CLI); an
    # SAE without a layer map on a wider store failed inside the encoder.
    from saeatlas.errors import ConfigError, ShapeError

    np.save(tmp_path / "x.npy", np.zeros((50, 6), np.float32))
    store = ActivationStore.open(tmp_path / "x.npy")
    with pytest.raises(ConfigError, match="--start"):
        evaluate_sae(SparseAutoencoder(SAEConfig("topk", d_in=6, d_sae=12, k=2)), store, start=50)
    with pytest.raises(ShapeError, match="reads 5 units"):
        evaluate_sae(SparseAutoencoder(SAEConfig("topk", d_in=5, d_sae=12, k=2)), store)


@pytest.mark.parametrize(
    "scale,offset",
    [(1e-30, 0.0), (1e-2, 1e4)],
    ids=["values near 1e-30", "offset 1e4, spread 1e-2"],
)
def test_the_fvu_denominator_holds_for_tiny_values_and_large_offsets(tmp_path, scale, offset):
    """The variance was sum(x^2) - sum(x)^2 / n with a floor of 1e-30 on sum(x^2):
    activations near 1e-30 were called rows that 'do not vary', and a large mean with a
    small spread lost the variance to cancellation (a wrong FVU, or that error)."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 6)) * scale + offset).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sae = SparseAutoencoder(
        SAEConfig("topk", d_in=6, d_sae=12, k=2), torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        sae.b_dec.copy_(torch.from_numpy(x[0]))  # a reconstruction near the rows
        x_hat = sae.eval()(torch.from_numpy(x)).x_hat.double().numpy()
    xd = x.astype(np.float64)
    expected = ((xd - x_hat) ** 2).sum() / ((xd - xd.mean(0)) ** 2).sum()
    res = evaluate_sae(sae, ActivationStore.open(tmp_path / "x.npy"), batch_size=64)
    assert res.fvu == pytest.approx(expected, rel=1e-6)


def _store_and_sae(root, write=False):
    """The rows (written by the test, read by its ranks) and an SAE of seed 0."""
    if write:
        x = np.random.default_rng(0).normal(size=(700, 6)) * [1, 2, 3, 1, 1, 5] + 2
        np.save(f"{root}/x.npy", x.astype("f4"))
    sae = SparseAutoencoder(
        SAEConfig("topk", d_in=6, d_sae=12, k=2), torch.Generator().manual_seed(0)
    )
    return ActivationStore.open(f"{root}/x.npy"), sae


def _evaluate_on_rank(rank, world, port, root):
    import json

    import torch.distributed as dist

    join_gloo(rank, world, port)
    try:
        store, sae = _store_and_sae(root)
        reads = []  # the rows this rank read
        real = store.read
        store.read = lambda a, b, **kw: reads.append((a, b)) or real(a, b, **kw)
        res = evaluate_sae(sae, store, start=50, batch_size=64, timeout_s=60)
        out = {**res.as_dict(), "density": res.density.tolist(), "reads": reads}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"}
    finally:
        dist.destroy_process_group()
    with open(f"{root}/r{rank}.json", "w") as f:
        json.dump(out, f)


def test_two_ranks_evaluate_their_share_of_the_rows_to_one_process_figures(tmp_path, spawn_ranks):
    """Under torchrun each rank reads its own contiguous share of the batches and every
    rank ends with the metrics one process computes (to the rounding of the sums)."""
    import json

    store, sae = _store_and_sae(tmp_path, write=True)
    one = evaluate_sae(sae, store, start=50, batch_size=64)
    spawn_ranks(_evaluate_on_rank, (str(tmp_path),), 120)
    two = [json.loads((tmp_path / f"r{r}.json").read_text()) for r in range(2)]
    assert all("error" not in t for t in two), two
    starts = [[a for a, _ in t["reads"]] for t in two]
    batches = list(range(50, 700, 64))  # 11 batches: 6 and 5
    assert starts == [batches[:6], batches[6:]]
    for t in two:
        for key, value in one.as_dict().items():
            assert t[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
        np.testing.assert_array_equal(t["density"], one.density)
