import pytest
import torch

from saeatlas.errors import ConfigError, ShapeError
from saeatlas.sae import ARCHITECTURES, SAEConfig, SAEFileError, SparseAutoencoder
from saeatlas.sae.activations import batch_topk, jumprelu, step, topk
from saeatlas.store import LayerSpec


def make(arch, d_in=6, d_sae=10, k=3, seed=0, **kw):
    sae = SparseAutoencoder(
        SAEConfig(arch, d_in=d_in, d_sae=d_sae, k=k, **kw), torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():  # non-trivial biases and thresholds
        g = torch.Generator().manual_seed(seed + 1)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
    return sae


def test_topk_keeps_k_largest_relud():
    pre = torch.tensor([[3.0, -1.0, 2.0, 0.5], [-2.0, -3.0, 1.0, -0.5]])
    assert torch.equal(topk(pre, 2), torch.tensor([[3.0, 0, 2.0, 0], [0, 0, 1.0, 0]]))


def test_batch_topk_keeps_k_times_batch_over_the_batch():
    pre = torch.tensor([[5.0, 4.0, 3.0], [0.1, 0.2, 6.0]])
    out = batch_topk(pre, 2)  # 4 largest of the batch: 6, 5, 4, 3
    assert torch.equal(out, torch.tensor([[5.0, 4.0, 3.0], [0, 0, 6.0]]))


def test_jumprelu_forward_and_straight_through_gradients():
    pre = torch.tensor([[0.9, 1.0004, 1.2], [0.5, 0.9997, 2.0]], requires_grad=True)
    theta = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    out = jumprelu(pre, theta, bandwidth=1e-3)
    assert torch.allclose(out.detach(), torch.tensor([[0, 1.0004, 1.2], [0, 0, 2.0]]))
    out.sum().backward()
    assert torch.equal(pre.grad, torch.tensor([[0.0, 1, 1], [0, 0, 1]]))
    # within eps/2 of theta: d/dtheta = -(theta / eps) for each such entry (eq. 11)
    assert torch.allclose(theta.grad, torch.tensor([0.0, -2000.0, 0.0]))
    theta.grad = None
    step(pre, theta, 1e-3).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([0.0, -2000.0, 0.0]))  # -(1/eps) per entry


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_matches_the_written_maths(arch):
    sae = make(arch).eval()
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(2))
    out = sae(x)
    xin = x - sae.b_dec if arch in ("topk", "batchtopk") else x
    pre = xin @ sae.W_enc + sae.b_enc
    assert torch.allclose(out.pre_acts, pre, atol=1e-6)
    assert torch.allclose(out.x_hat, out.acts @ sae.W_dec + sae.b_dec, atol=1e-6)
    if arch == "topk":
        assert ((out.acts != 0).sum(1) <= 3).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_folding_normalisation_is_exact(arch):
    sae = make(arch)
    mean, scale = torch.randn(6), torch.rand(6) + 0.5
    x = torch.randn(9, 6) * 3
    xn = (x - mean) / scale
    ref = sae.eval()(xn)
    folded = sae.folded(mean, scale).eval()
    got = folded(x)
    assert torch.allclose(got.pre_acts, ref.pre_acts, atol=1e-5)
    assert torch.equal(got.acts != 0, ref.acts != 0)
    assert torch.allclose(got.x_hat, ref.x_hat * scale + mean, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip(tmp_path, arch):
    sae = make(arch).eval()
    if arch == "batchtopk":
        sae.threshold.fill_(0.05)
    sae.save(tmp_path / "sae")
    back = SparseAutoencoder.load(tmp_path / "sae")
    x = torch.randn(5, 6)
    a, b = sae(x), back(x)
    assert torch.allclose(a.x_hat, b.x_hat, atol=1e-6) and torch.equal(a.acts != 0, b.acts != 0)
    assert back.cfg == sae.cfg


def test_decoder_layer_share_and_bad_configs():
    layers = (LayerSpec("a", 0, 2), LayerSpec("b", 2, 6))
    sae = make("topk", layers=layers)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.W_dec[0, :2] = 1.0  # latent 0 writes only to layer a
        sae.W_dec[1, 2:] = 1.0
    share = sae.decoder_layer_share()
    assert torch.allclose(share[0], torch.tensor([1.0, 0.0])) and torch.allclose(
        share[1], torch.tensor([0.0, 1.0])
    )
    with pytest.raises(ConfigError, match="`architecture`"):
        SAEConfig("gated", d_in=4, d_sae=8)
    with pytest.raises(ConfigError, match="cannot exceed"):
        SAEConfig("topk", d_in=4, d_sae=8, k=9)
    with pytest.raises(ConfigError, match="covers 2 columns"):
        SAEConfig("topk", d_in=4, d_sae=8, k=2, layers=(LayerSpec("a", 0, 2),))


def test_parallel_gradient_removal_keeps_rows_on_the_sphere():
    sae = make("topk")
    sae.W_dec.grad = sae.W_dec.detach().clone() * 3 + torch.randn_like(sae.W_dec)
    sae.remove_parallel_decoder_grad()
    dots = (sae.W_dec.grad * sae.W_dec).sum(1)
    assert torch.allclose(dots, torch.zeros_like(dots), atol=1e-5)


def test_a_bfloat16_sae_reads_float32_rows_after_a_save_and_load(tmp_path):
    """A store's float32 rows met bfloat16 weights in a matmul that refused them."""
    sae = make("topk", dtype="bfloat16").eval()
    sae.save(tmp_path / "sae")
    back = SparseAutoencoder.load(tmp_path / "sae")
    x = torch.randn(5, 6)
    with torch.no_grad():
        out = back(x)
        assert out.x_hat.dtype == torch.bfloat16
        assert torch.equal(out.acts, sae(x.bfloat16()).acts)


def test_rows_of_another_width_and_an_absent_device_are_named():
    with pytest.raises(ShapeError, match=r"reads rows of 6 units, not a tensor of shape \(3, 5\)"):
        make("topk")(torch.zeros(3, 5))


def test_loading_onto_a_device_this_machine_lacks_is_one_config_error(tmp_path):
    make("relu").save(tmp_path / "sae")
    with pytest.raises(ConfigError, match="`device`"):
        SparseAutoencoder.load(tmp_path / "sae", device="nodevice")


def test_from_weights_refuses_a_weight_that_would_broadcast():
    sae = make("relu")
    weights = {**sae.weights(), "b_enc": torch.zeros(1)}
    with pytest.raises(SAEFileError, match=r"`b_enc` is \(1,\), expected \(10,\)"):
        SparseAutoencoder.from_weights(sae.cfg, weights)


def test_a_batchtopk_file_with_thresholds_per_latent_is_refused(tmp_path):
    """Its load kept the largest threshold for every latent, encoding differently."""
    from safetensors.torch import load_file, save_file

    from saeatlas.sae import SAEFileError

    sae = make("batchtopk")
    sae.threshold.fill_(0.3)
    sae.save(tmp_path / "sae")
    assert float(SparseAutoencoder.load(tmp_path / "sae").threshold) == pytest.approx(0.3)
    w = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    w["threshold"] = torch.linspace(0, 1, 10)
    save_file(w, str(tmp_path / "sae" / "sae_weights.safetensors"))
    with pytest.raises(SAEFileError, match="one threshold"):
        SparseAutoencoder.load(tmp_path / "sae")
