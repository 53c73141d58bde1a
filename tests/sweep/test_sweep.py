import json

import numpy as np
import pytest
import torch

from saeatlas.errors import ConfigError
from saeatlas.sweep import knee, mean_max_cosine, pareto_front, sweep
from saeatlas.train import TrainConfig, train_family, train_sae


def test_pareto_front_and_knee():
    l0 = np.array([1, 2, 4, 8, 16, 32, 6])
    loss = np.array([0.9, 0.5, 0.2, 0.15, 0.12, 0.11, 0.3])  # (6, 0.3) is dominated by (4, 0.2)
    assert pareto_front(l0, loss).tolist() == [0, 1, 2, 3, 4, 5]
    assert knee(l0, loss) == 2  # the bend: after L0=4, loss barely falls
    assert knee(np.array([1, 2]), np.array([0.5, 0.4])) == 1


def test_mean_max_cosine():
    w = torch.randn(20, 8)
    perm = w[torch.randperm(20)] * 3.0  # same directions, other order and scale
    assert mean_max_cosine(w, perm) == pytest.approx(1.0, abs=1e-6)
    other = torch.randn(20, 8)
    assert mean_max_cosine(w, other) < 0.95


def test_family_member_equals_a_single_run(digits_store):
    a = TrainConfig(architecture="topk", d_sae=64, k=4, batch_size=256, tokens=256 * 12, seed=5)
    b = TrainConfig(architecture="topk", d_sae=64, k=8, batch_size=256, tokens=256 * 12, seed=5)
    family = train_family(digits_store, [a, b], progress=False)
    alone = train_sae(digits_store, a, progress=False)
    for name, value in alone.sae.state_dict().items():
        assert torch.equal(family[0].sae.state_dict()[name], value), name
    assert family[1].sae.cfg.k == 8
    with pytest.raises(ConfigError, match="must share `batch_size`"):
        train_family(digits_store, [a, TrainConfig(batch_size=128)], progress=False)


def test_sweep_writes_frontier_and_recommendation(tmp_path, digits_store):
    base = TrainConfig(architecture="topk", d_sae=128, batch_size=256, tokens=256 * 30)
    result = sweep(digits_store, base, "k", [2, 8, 32], tmp_path / "sw", extend=0, progress=False)
    assert [p.value for p in result.points] == [2, 8, 32]
    fvus = [p.fvu for p in result.points]
    assert fvus[0] > fvus[-1]  # more latents, better reconstruction
    assert all(0 <= p.stability <= 1 for p in result.points)
    assert 0 <= result.recommended < 3 and result.points[result.recommended].on_front
    saved = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert saved["recommended"] == result.recommended and "Kneedle" in saved["rule"]
    assert (tmp_path / "sw" / "k-8" / "seed-1" / "cfg.json").exists()
    assert saved["heldout_rows"] == int(digits_store.n_rows * 0.1)
    with pytest.raises(ConfigError, match="already holds a sweep"):
        sweep(digits_store, base, "k", [2, 8], tmp_path / "sw", progress=False)
    with pytest.raises(ConfigError, match="Cannot sweep over 'lr'"):
        sweep(digits_store, base, "lr", [1, 2], tmp_path / "x", progress=False)


def test_a_knee_at_the_end_of_the_range_extends_the_sweep(tmp_path, digits_store):
    # Two points: the frontier's "knee" is its lowest-loss end, k = 2, which is no knee.
    base = TrainConfig(architecture="topk", d_sae=64, batch_size=256, tokens=256 * 20)
    result = sweep(
        digits_store, base, "k", [1, 2], tmp_path / "sw", seeds=1, extend=2, progress=False
    )
    values = [p.value for p in result.points]
    assert values[:2] == [1, 2] and result.extended and values[2:] == list(result.extended)
    assert result.extended[0] == 4  # twice the largest value
    chosen = values[result.recommended]
    if result.knee_inside:
        assert min(values) < chosen < max(values) and result.note is None
    else:  # the extensions ran out: said, not hidden
        assert len(result.extended) == 2 and "extended 2 times" in result.note
    saved = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert saved["extended"] == list(result.extended)
    assert saved["knee_inside"] == result.knee_inside
    assert (tmp_path / "sw" / "k-4" / "seed-0" / "cfg.json").exists()


def test_a_knee_at_d_sae_cannot_be_extended_and_says_so(tmp_path, digits_store, caplog):
    base = TrainConfig(architecture="topk", d_sae=8, k=4, batch_size=256, tokens=256 * 10)
    result = sweep(digits_store, base, "k", [4, 8], tmp_path / "sw", seeds=1, progress=False)
    assert result.points[result.recommended].value == 8  # every latent on: the best loss
    assert not result.knee_inside and 16 not in [p.value for p in result.points]
    assert "k is already at `d_sae` (8)" in result.note and "not a knee" in result.note
    assert "high end" in caplog.text


def test_the_next_value_past_each_end():
    from saeatlas.sweep.sweep import _beyond

    assert _beyond("k", [8.0, 16.0], "low", 64) == (4.0, "")
    assert _beyond("k", [8.0, 16.0], "high", 64) == (32.0, "")
    assert _beyond("k", [40.0, 50.0], "high", 64) == (64.0, "")  # capped at d_sae
    assert _beyond("k", [1.0, 2.0], "low", 64)[0] is None
    assert _beyond("l1_coefficient", [1.0, 4.0], "low", 64) == (0.5, "")
    assert _beyond("l1_coefficient", [1.0, 4.0], "high", 64) == (8.0, "")


def test_a_recommendation_worse_than_the_mean_on_held_out_rows_warns(tmp_path, caplog):
    # 60 rows, 6 held out: the SAEs learn the training rows and reconstruct the held-out
    # ones worse than their mean; the knee was recommended without a word.
    x = np.random.default_rng(0).standard_t(2, size=(60, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    base = TrainConfig(d_sae=64, batch_size=54, tokens=54 * 40, seed=0)
    with caplog.at_level("WARNING", logger="saeatlas.sweep.sweep"):
        result = sweep(tmp_path / "x.npy", base, "k", [2, 4], tmp_path / "sw", seeds=1, extend=0)
    assert result.points[result.recommended].fvu >= 1
    assert "worse than their mean" in caplog.text
