"""Ablating a module hurts what it computes, more than random units; per-class damage."""

import numpy as np
import pytest
import torch
from torch import nn

from saeatlas.errors import ConfigError
from saeatlas.store import LayerSpec
from saeatlas.structure.ablation import ablate_modules


class TwoPathways(nn.Module):
    """Units 0-1 of ``act`` carry class 0's evidence, units 2-3 class 1's; 4-39 are unused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 40)
        self.act = nn.ReLU()
        self.head = nn.Linear(40, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[0:2, 0] = 3.0  # input 0 -> units 0, 1
            self.fc.weight[2:4, 1] = 3.0  # input 1 -> units 2, 3
            self.fc.weight[4:] = torch.randn(36, 2)  # unused units still vary
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[0, 0:2] = 1.0
            self.head.weight[1, 2:4] = 1.0

    def forward(self, x):
        return self.head(self.act(self.fc(x)))


@pytest.fixture
def task():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (400,), generator=g)
    x = torch.rand(400, 2, generator=g) * 0.2
    x[torch.arange(400), y] += 1.0  # class c lights up input c
    return TwoPathways(), x, y.numpy(), (LayerSpec("act", 0, 40, (40,), "sample"),)


def test_modules_hurt_their_own_class_more_than_random_units(task):
    model, x, y, layers = task
    unit_module = np.array([0, 0, 1, 1, 2, 2, 2, 2] + [-1] * 32)
    res = ablate_modules(
        model, x, layers, unit_module, labels=y, mode="zero", n_random=100, random_state=0
    )
    assert res.classes.tolist() == [0, 1]
    # Modules 0 and 1 carry the answer: ablating them costs loss, far beyond random pairs.
    assert res.effect[0] > 0.3 and res.effect[1] > 0.3
    assert res.p[0] <= 0.05 and res.p[1] <= 0.05 and res.z[0] > 2
    # Module 2's units are unused: no effect, not significant.
    assert abs(res.effect[2]) < 1e-6 and res.p[2] > 0.5
    # Each module hurts its own class and not the other.
    assert res.effect_by_class[0, 0] > 0.6 and res.effect_by_class[0, 1] <= 1e-6
    assert res.effect_by_class[1, 1] > 0.6 and res.effect_by_class[1, 0] <= 1e-6
    spec = res.specialisation()
    assert spec[0].argmax() == 0 and spec[1].argmax() == 1
    np.testing.assert_allclose(spec[:2].sum(axis=1), 1.0)
    # Hooks are gone afterwards: the model computes as before.
    torch.testing.assert_close(model(x), TwoPathways.forward(model, x))
    assert not model.act._forward_hooks


def test_mean_ablation_uses_the_given_means(task):
    model, x, y, layers = task
    with torch.no_grad():
        h = model.act(model.fc(x)).numpy()
    unit_module = np.array([0, 0] + [-1] * 38)
    res = ablate_modules(model, x, layers, unit_module, labels=y, unit_mean=h.mean(0), n_random=5)
    # Units 0-1 at their means no longer separate the classes: loss rises, though less
    # than when they are zeroed (the mean still votes for class 0 a little).
    zero = ablate_modules(model, x, layers, unit_module, labels=y, mode="zero", n_random=5)
    assert 0.01 < res.effect[0] < zero.effect[0]
    with pytest.raises(ConfigError, match="unit_mean"):
        ablate_modules(model, x, layers, unit_module, labels=y, mode="mean")
    with pytest.raises(ConfigError, match="mode"):
        ablate_modules(model, x, layers, unit_module, labels=y, mode="noise")
    with pytest.raises(ConfigError, match="units"):
        ablate_modules(model, x, layers, unit_module[:5], labels=y, mode="zero")
