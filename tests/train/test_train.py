import json

import numpy as np
import pytest
import torch

from saeatlas.errors import ConfigError
from saeatlas.sae import SparseAutoencoder
from saeatlas.store import LayerSpec
from saeatlas.train import TrainConfig, train_ensemble, train_sae
from saeatlas.train.init import geometric_median
from saeatlas.train.losses import auxk_loss, fvu, l1_penalty
from saeatlas.train.schedules import lr_factor


def superposition(n_rows, n_features=512, d=128, active=5, seed=0):
    """Rows built from ``active`` of ``n_features`` random unit directions in ``d`` dims."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n_features, d))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    idx = np.argsort(rng.random((n_rows, n_features)), axis=1)[:, :active]
    coef = rng.uniform(0.5, 1.5, size=(n_rows, active))
    x = np.einsum("ra,rad->rd", coef, features[idx])
    return x.astype(np.float32), features


def mean_max_cos(W_dec, features):
    w = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    return float((features @ w.T).max(axis=1).mean())


@pytest.mark.slow
def test_topk_recovers_features_in_superposition(tmp_path):
    x, features = superposition(60_000)
    np.save(tmp_path / "x.npy", x)
    cfg = TrainConfig(
        architecture="topk",
        d_sae=1024,
        k=5,
        normalize="layer",
        tokens=1_500_000,
        batch_size=2048,
        lr=2e-3,
        seed=0,
    )
    result = train_sae(tmp_path / "x.npy", cfg, tmp_path / "sae", progress=False)
    score = mean_max_cos(result.sae.W_dec.detach().numpy(), features)
    assert score >= 0.9, f"mean max cosine {score:.3f}"
    assert result.metrics[-1]["fvu"] < 0.1
    back = SparseAutoencoder.load(tmp_path / "sae")
    xt = torch.from_numpy(x[:100])
    assert torch.allclose(back(xt).x_hat, result.sae(xt).x_hat, atol=1e-4)
    lines = (tmp_path / "sae" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["tokens"] == result.summary["tokens"]


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_every_architecture_learns_on_the_digits_store(digits_store, arch):
    cfg = TrainConfig(architecture=arch, d_sae=256, k=8, batch_size=256, tokens=60_000, seed=1)
    result = train_sae(digits_store, cfg, progress=False)
    first, last = result.metrics[0], result.metrics[-1]
    assert last["fvu"] < 0.5 * first["fvu"], (first, last)
    # the folded SAE works on raw store rows
    x = digits_store.read(0, 500)
    out = result.sae(x)
    assert float(fvu(x, out.x_hat.detach())) < 0.5
    assert result.sae.cfg.layers == tuple(
        LayerSpec(l.name, l.start, l.stop, l.shape, l.layout) for l in digits_store.layers
    )


def test_sparsity_penalty_lowers_l0(digits_store):
    base = dict(architecture="relu", d_sae=256, batch_size=256, tokens=40_000, seed=0)
    loose = train_sae(digits_store, TrainConfig(**base, l1_coefficient=0.0), progress=False)
    tight = train_sae(digits_store, TrainConfig(**base, l1_coefficient=5.0), progress=False)
    assert tight.metrics[-1]["l0"] < 0.5 * loose.metrics[-1]["l0"]


def test_layer_subset_trains_on_those_columns(digits_store):
    cfg = TrainConfig(layers=("act2",), d_sae=64, k=4, batch_size=256, tokens=5_000)
    result = train_sae(digits_store, cfg, progress=False)
    assert result.sae.cfg.d_in == 48 and [l.name for l in result.sae.cfg.layers] == ["act2"]


def test_too_small_store_and_bad_settings(digits_store):
    with pytest.raises(ConfigError, match="fewer than `batch_size`"):
        train_sae(digits_store, TrainConfig(batch_size=4096), progress=False)
    with pytest.raises(ConfigError, match="`normalize`"):
        TrainConfig(normalize="zscore")
    with pytest.raises(ConfigError, match="Unknown training settings"):
        TrainConfig.from_json({"learning_rate": 1e-3})
    cfg = TrainConfig(architecture="relu", layers=("a", "b"), lr=1e-3)
    assert TrainConfig.from_json(json.loads(cfg.dumps())) == cfg


def test_geometric_median_resists_outliers():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [100.0, 100.0]])
    gm = geometric_median(x)
    assert gm.norm() < 1.5 < x.mean(0).norm()
    line = torch.tensor([[0.0], [1.0], [10.0]])
    assert abs(float(geometric_median(line)) - 1.0) < 1e-3  # the median, not the mean


def test_auxk_loss_is_normalised_residual_error():
    residual = torch.tensor([[1.0, 2.0, 0.0]])
    assert float(auxk_loss(residual, residual.clone())) == pytest.approx(0.0)
    # recovering the second coordinate only leaves 1 of the residual's 5
    assert float(auxk_loss(residual, torch.tensor([[0.0, 2.0, 0.0]]))) == pytest.approx(1 / 5)
    assert float(auxk_loss(residual, torch.zeros(1, 3), torch.tensor(10.0))) == pytest.approx(0.5)


def test_auxk_trains_only_dead_latents(digits_store):
    from saeatlas.train.run import _Run

    run = _Run(
        digits_store,
        TrainConfig(architecture="topk", d_sae=64, k=4, batch_size=256, dead_window=1, auxk_k=8),
    )
    x = (digits_store.read(0, 256) - run.mean) / run.scale
    f = run._forward(x)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[32:] = True
    residual = (x - f["x_hat"]).detach()
    auxk_loss(residual, run._aux_reconstruction(x, f, dead)).backward()
    dec = run.sae.W_dec.grad.norm(dim=1)
    assert (dec[:32] == 0).all() and (dec[32:] > 0).sum() >= 8
    enc = run.sae.W_enc.grad.norm(dim=0)
    assert (enc[:32] == 0).all() and (enc[32:] > 0).any()


def test_l1_penalty_gradient_and_layer_sum():
    acts = torch.rand(4, 5, dtype=torch.float64, requires_grad=True)
    W = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: l1_penalty(a, w), (acts, W))
    layers = (LayerSpec("a", 0, 2), LayerSpec("b", 2, 6))
    expected = (acts * (W[:, :2].norm(dim=1) + W[:, 2:].norm(dim=1))).sum(1).mean()
    assert torch.allclose(l1_penalty(acts, W, layers), expected)


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "linear", 0.8) == pytest.approx(0.1)
    assert lr_factor(50, 100, 10, "linear", 0.8) == 1.0
    assert lr_factor(90, 100, 10, "linear", 0.8) == pytest.approx(0.5)
    assert lr_factor(90, 100, 10, "cosine", 0.8) == pytest.approx(0.5)


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, digits_store, monkeypatch):
    from saeatlas.train.run import _Run

    cfg = TrainConfig(
        architecture="topk",
        d_sae=128,
        k=6,
        batch_size=256,
        tokens=256 * 20,
        checkpoint_every=5,
        log_every=3,
        lr_warmup_steps=4,
        dead_window=2000,
        seed=3,
    )
    full = train_sae(digits_store, cfg, tmp_path / "full", progress=False)

    real_step = _Run.train_step

    def dying_step(self, batch):
        if self.step == 12:  # dies after the checkpoint at step 10
            raise KeyboardInterrupt("simulated interruption")
        return real_step(self, batch)

    monkeypatch.setattr(_Run, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_sae(digits_store, cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(_Run, "train_step", real_step)
    assert (tmp_path / "part" / "checkpoint.pt").exists()
    with pytest.raises(ConfigError, match="interrupted training run.*--resume"):
        train_sae(digits_store, cfg, tmp_path / "part", progress=False)
    with pytest.raises(ConfigError, match="other settings"):
        train_sae(
            digits_store,
            TrainConfig(**{**cfg.to_json(), "k": 5, "layers": ()}),
            tmp_path / "part",
            resume=True,
            progress=False,
        )
    resumed = train_sae(digits_store, cfg, tmp_path / "part", resume=True, progress=False)
    for name, value in full.sae.state_dict().items():
        torch.testing.assert_close(resumed.sae.state_dict()[name], value, atol=1e-6, rtol=0)
    assert [m["step"] for m in resumed.metrics] == [m["step"] for m in full.metrics]
    assert not (tmp_path / "part" / "checkpoint.pt").exists()


def test_tensorboard_events_hold_the_logged_metrics(tmp_path, digits_store):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(d_sae=64, k=8, batch_size=256, tokens=256 * 12, log_every=4, tensorboard=True)
    result = train_sae(digits_store, cfg, tmp_path / "sae", progress=False)
    events = EventAccumulator(str(tmp_path / "sae" / "tensorboard"))
    events.Reload()
    fvus = [e.value for e in events.Scalars("train/fvu")]
    assert fvus == pytest.approx([m["fvu"] for m in result.metrics], rel=1e-6)
    with pytest.raises(ConfigError, match="--out"):
        train_sae(digits_store, cfg, None, progress=False)
    # `saeatlas train` (three seeds by default) trains them as one family: each writes its own
    ensemble = train_ensemble(digits_store, cfg, tmp_path / "ens", 2, progress=False)
    for result in ensemble.results:
        events = EventAccumulator(str(result.path / "tensorboard"))
        events.Reload()
        fvus = [e.value for e in events.Scalars("train/fvu")]
        assert fvus == pytest.approx([m["fvu"] for m in result.metrics], rel=1e-6)


def test_signum_default_and_adam_both_train(digits_store):
    base = dict(d_sae=64, k=8, batch_size=256, tokens=256 * 30, log_every=1)
    for optimizer in ("signum", "adam"):
        res = train_sae(digits_store, TrainConfig(optimizer=optimizer, **base), progress=False)
        assert res.metrics[-1]["fvu"] < 0.6 * res.metrics[0]["fvu"], optimizer


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_topk_encoder_starts_at_the_least_squares_scale(digits_store, architecture):
    from saeatlas.train.run import _Run

    cfg = TrainConfig(architecture=architecture, d_sae=96, k=8, batch_size=256)
    run = _Run(digits_store, cfg)
    sae = run.sae
    x = (digits_store.read(0, 2048).to(run.device) - run.mean) / run.scale

    def sample_error(factor: float) -> float:
        with torch.no_grad():
            acts = sae.encode(x).acts * factor  # the same latents at a scaled encoder
            return float(((x - (acts @ sae.W_dec + sae.b_dec)) ** 2).sum())

    best = sample_error(1.0)
    assert best < sample_error(0.9) and best < sample_error(1.1)
    # and not the unit-norm columns of the decoder's transpose it started from
    assert not torch.allclose(sae.W_enc.norm(dim=0), torch.ones(96), atol=1e-3)


def test_a_tiny_store_trains_with_the_default_batch_and_budget(tmp_path):
    # 50 rows: the default batch (4096) would not fit, and the old 2M-row budget
    # in batches of 12 was 166k steps (minutes); now a quarter of the rows, 500 steps
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32))
    result = train_sae(tmp_path / "x.npy", TrainConfig(d_sae=16, k=2), progress=False)
    assert result.summary["n_steps"] == 500 and result.summary["tokens"] == 500 * 12


def test_k_larger_than_d_sae_is_an_error(digits_store):
    with pytest.raises(ConfigError, match=r"`k` \(64\) cannot exceed `d_sae` \(32\).*--d-sae"):
        TrainConfig(k=64, d_sae=32)
    with pytest.raises(ConfigError, match=r"`k` \(2000\) cannot exceed `d_sae` \(1152"):
        train_sae(digits_store, TrainConfig(k=2000, batch_size=256), progress=False)
    TrainConfig(architecture="relu", k=64, d_sae=32)  # k is unused outside the TopK family


@pytest.mark.parametrize("scale", [1e-10, 1e-15])
def test_unit_normalisation_does_not_depend_on_the_scale_of_the_activations(tmp_path, scale):
    """Units below an absolute 1e-8 spread read as constant: left unscaled, the SAE was
    saved with an FVU of 1e17 where the same rows at scale 1 give 0.7."""
    x = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)
    cfg = TrainConfig(d_sae=12, k=2, tokens=1600, batch_size=100)
    fvus = []
    for s in (1.0, scale):
        np.save(tmp_path / "x.npy", x * np.float32(s))
        fvus.append(train_sae(tmp_path / "x.npy", cfg, progress=False).metrics[-1]["fvu"])
    assert fvus[1] == pytest.approx(fvus[0], rel=1e-3)


def test_raw_activations_far_from_order_one_warn_before_and_after_training(tmp_path, caplog):
    """``normalize="none"`` on rows scaled by 1e-4: training cannot learn them (FVU far
    above 1) and said nothing; it now warns up front and when the FVU ends above 1."""
    x = np.random.default_rng(0).normal(size=(400, 6)).astype(np.float32)
    cfg = TrainConfig(d_sae=12, k=2, tokens=1600, batch_size=100, normalize="none")
    for scale, warned in ((1.0, False), (1e-4, True)):
        np.save(tmp_path / "x.npy", x * np.float32(scale))
        caplog.clear()
        with caplog.at_level("WARNING", logger="saeatlas.train"):
            fvu = train_sae(tmp_path / "x.npy", cfg, progress=False).metrics[-1]["fvu"]
        assert ("far from the order-1 values" in caplog.text) is warned
        assert (fvu > 1) is warned and ("worse than their mean" in caplog.text) is warned
