"""The random-SAE control: a random dictionary of the same shape and scale, and its atlas."""

import numpy as np
import pytest
import torch

from saeatlas.sae import SAEConfig, SparseAutoencoder
from saeatlas.store import ActivationStore
from saeatlas.structure import (
    Atlas,
    AtlasConfig,
    PlantedConfig,
    analyze,
    make_planted,
    save_planted,
)
from saeatlas.structure.inference.control import random_sae
from saeatlas.train import TrainConfig, train_sae


def trained_like(arch="topk", d_in=48, d_sae=96, seed=0):
    """An SAE with uneven norms and biases, standing in for a trained one."""
    g = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(SAEConfig(architecture=arch, d_in=d_in, d_sae=d_sae, k=8), g)
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(d_sae, 1, generator=g) + 0.5)
        sae.W_enc.copy_(sae.W_dec.t() * (torch.rand(1, d_sae, generator=g) * 3 + 0.1))
        sae.b_enc.copy_(torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(torch.randn(d_in, generator=g))
    return sae


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two [n, d] matrices."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_random_sae_keeps_shapes_norms_and_biases_but_not_directions():
    sae = trained_like()
    ctl = random_sae(sae, random_state=0)
    assert ctl.cfg.architecture == sae.cfg.architecture and ctl.cfg.k == sae.cfg.k
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert getattr(ctl, name).shape == getattr(sae, name).shape
    torch.testing.assert_close(ctl.W_dec.norm(dim=1), sae.W_dec.norm(dim=1))
    torch.testing.assert_close(ctl.W_enc.norm(dim=0), sae.W_enc.norm(dim=0))
    torch.testing.assert_close(ctl.b_dec, sae.b_dec)
    assert torch.all(ctl.b_enc == 0)
    # new directions: about 1/sqrt(d_in) cosine with the old ones, never close
    cos = cosines(ctl.W_dec, sae.W_dec).abs()
    assert cos.mean() < 0.2 and cos.max() < 0.6
    # the encoder is the decoder's transpose (no `unit_scale`)
    torch.testing.assert_close(cosines(ctl.W_dec, ctl.W_enc.t()), torch.ones(96))
    # seeded, and the original is untouched
    torch.testing.assert_close(random_sae(sae, random_state=0).W_dec, ctl.W_dec)
    assert not torch.allclose(random_sae(sae, random_state=1).W_dec, ctl.W_dec)
    assert ctl.cfg.metadata["control"]["kind"] == "random_directions"
    assert sae.b_enc.abs().sum() > 0


def test_random_sae_is_isotropic_in_scaled_units():
    sae = trained_like()
    s = np.exp(np.random.default_rng(0).normal(0, 1.0, 48))
    ctl = random_sae(sae, unit_scale=s, random_state=0)
    st = torch.from_numpy(s).float()
    # in the coordinates x / s the encoder is the decoder's transpose
    torch.testing.assert_close(cosines(ctl.W_dec / st, ctl.W_enc.t() * st), torch.ones(96))
    torch.testing.assert_close(ctl.W_dec.norm(dim=1), sae.W_dec.norm(dim=1))
    torch.testing.assert_close(ctl.W_enc.norm(dim=0), sae.W_enc.norm(dim=0))
    with pytest.raises(ValueError, match="positive finite"):
        random_sae(sae, unit_scale=np.zeros(48))


def test_random_sae_keeps_thresholds_and_round_trips(tmp_path):
    sae = trained_like("jumprelu")
    with torch.no_grad():
        sae.log_threshold.fill_(-1.0)
    ctl = random_sae(sae)
    torch.testing.assert_close(ctl.log_threshold, sae.log_threshold)
    back = SparseAutoencoder.load(ctl.save(tmp_path / "ctl"))
    torch.testing.assert_close(back.W_dec, ctl.W_dec)
    torch.testing.assert_close(back.W_enc, ctl.W_enc)
    # a TopK control keeps exactly k latents per row
    topk = random_sae(trained_like())
    acts = topk.encode(torch.randn(10, 48)).acts
    assert torch.all((acts > 0).sum(1) <= 8)


@pytest.fixture(scope="module")
def easy_control(tmp_path_factory):
    data = make_planted(PlantedConfig.preset("easy", seed=0, n_rows=6000))
    store = ActivationStore.open(save_planted(data, tmp_path_factory.mktemp("easy") / "acts"))
    cfg = TrainConfig(d_sae=256, k=16, batch_size=512, tokens=150_000, seed=0)
    sae = train_sae(store, cfg, progress=False).sae
    real = analyze(sae, store, AtlasConfig(n_null=3, null_rows=6000, control=True))
    return real, real.summary["control"]


@pytest.mark.slow
def test_control_atlas_shows_what_the_trained_sae_adds(easy_control):
    """On the easy planted case the trained SAE finds the 4 modules. The random
    dictionary's features still co-fire in communities (random projections of rows
    where groups of units switch on together), and some pass the nulls, so the count
    of significant modules is no test (2-5 across seeds); the modularity and the units
    are: the control's is far lower, and its unit modules match neither the real ones
    nor the units' own correlation modules."""
    real, ctl = easy_control  # AtlasConfig(control=True) ran control_atlas
    assert real.n_significant_modules == 4
    assert ctl["real"]["n_significant_modules"] == 4
    assert ctl["kind"] == "random_directions" and ctl["scaled_units"]
    assert ctl["modularity"] < ctl["real"]["modularity"] - 0.2
    assert abs(ctl["unit_ari"]) < 0.1 and abs(ctl["unit_ami"]) < 0.1
    # the control is a test: no real module is one the random dictionaries find
    assert (real.modules.control_jaccard < 0.5).all()
    assert set(ctl["z"]) == set(ctl["p"]) == {"permutation", "rewiring", "dictionary"}
    assert isinstance(ctl["n_significant_modules"], int) and ctl["n_modules"] >= 0


@pytest.mark.slow
def test_the_control_is_saved_with_the_atlas(easy_control, tmp_path):
    real, ctl = easy_control
    back = Atlas.load(real.save(tmp_path / "atlas"))
    assert back.summary["control"]["modularity"] == pytest.approx(ctl["modularity"])
    assert back.summary["control"]["unit_ari"] == pytest.approx(ctl["unit_ari"])


def test_two_atlases_without_modules_have_no_unit_ari(tmp_path):
    """Units in no module of either atlas once agreed trivially: the control of an atlas
    without modules printed "unit modules' ARI with the real ones 1.00"."""
    import math

    x = np.maximum(np.random.default_rng(0).normal(size=(400, 16)), 0).astype(np.float32)
    np.save(tmp_path / "acts.npy", x)
    atlas = analyze(trained_like(d_in=16, d_sae=32), tmp_path / "acts.npy", AtlasConfig(n_null=2))
    ctl = atlas.summary["control"]
    assert (atlas.units.module < 0).all() and ctl["n_modules"] == 0
    assert math.isnan(ctl["unit_ari"]) and math.isnan(ctl["unit_ami"])
