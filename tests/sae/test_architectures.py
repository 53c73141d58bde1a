"""The architecture registry: every architecture is complete in every stage, and
what the registry says is what configs, files and training do."""

import pytest
import torch

from saeatlas.errors import ConfigError
from saeatlas.sae import ARCHITECTURES, SAEConfig, SparseAutoencoder
from saeatlas.sae.architectures import REGISTRY, get_architecture
from saeatlas.train import TrainConfig
from saeatlas.train.architectures import TRAINING

BASE = ("W_enc", "b_enc", "W_dec", "b_dec")


def test_configs_accept_exactly_the_registered_architectures():
    assert ARCHITECTURES == tuple(REGISTRY)
    assert set(TRAINING) == set(REGISTRY)
    for name in ARCHITECTURES:
        SAEConfig(name, d_in=4, d_sae=8, k=2)
        TrainConfig(architecture=name)
    with pytest.raises(ConfigError, match="expected one of.*" + ".*".join(ARCHITECTURES)):
        TrainConfig(architecture="gated")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_conventions_come_from_the_architecture(name):
    arch = get_architecture(name)
    assert SAEConfig(name, d_in=4, d_sae=8, k=2).apply_b_dec_to_input == arch.subtracts_b_dec
    if arch.topk_family:
        with pytest.raises(ConfigError, match="cannot exceed"):
            SAEConfig(name, d_in=4, d_sae=8, k=9)
    else:
        SAEConfig(name, d_in=4, d_sae=8, k=9)  # k means nothing here
    sae = SparseAutoencoder(SAEConfig(name, d_in=5, d_sae=7, k=2), torch.Generator().manual_seed(0))
    norms = sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, arch.decoder_init_scale))
    names = [n for n, _ in sae.named_parameters()] + [n for n, _ in sae.named_buffers()]
    assert names[:4] == ["W_dec", "W_enc", "b_enc", "b_dec"]  # extras after the four
    for state in arch.latent_state:
        assert getattr(sae, state).shape == (7,)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_file_weights_round_trip_through_from_weights(name):
    arch = get_architecture(name)
    sae = SparseAutoencoder(SAEConfig(name, d_in=5, d_sae=7, k=2), torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(2))
        if "threshold" in dict(sae.named_buffers()):
            sae.threshold.fill_(0.1)
        if "log_threshold" in dict(sae.named_parameters()):
            sae.log_threshold.copy_(torch.linspace(-3, -1, 7))
    weights = sae.weights()
    assert tuple(weights) == BASE + arch.file_weights
    for extra in arch.file_weights:
        assert weights[extra].shape == (7,)
    back = SparseAutoencoder.from_weights(sae.cfg, weights)
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    a, b = sae.eval()(x), back(x)
    torch.testing.assert_close(b.x_hat, a.x_hat)
    assert torch.equal(a.acts != 0, b.acts != 0)


def test_every_architecture_has_one_sparsity_setting_to_sweep():
    from saeatlas.pipeline.config import SWEEP_ARCHITECTURES

    listed = [a for archs in SWEEP_ARCHITECTURES.values() for a in archs]
    assert sorted(listed) == sorted(ARCHITECTURES)
    for over, archs in SWEEP_ARCHITECTURES.items():
        assert all(get_architecture(a).sparsity_setting == over for a in archs)
