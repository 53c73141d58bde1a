"""Schedule-free sign descent follows its update equations and converges."""

import pytest
import torch

from saeatlas.train.optim import ScheduleFreeSignSGD


def test_steps_match_the_update_equations_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = ScheduleFreeSignSGD([p], lr=0.1, momentum=0.9)
    z = p.detach().clone()
    x = p.detach().clone()
    weight_sum = 0.0
    for lr in (0.1, 0.05, 0.1):
        for g in opt.param_groups:
            g["lr"] = lr
        p.grad = torch.tensor([3.0, -1.0, 0.0])
        opt.step()
        weight_sum += lr * lr
        z = z - lr * torch.sign(torch.tensor([3.0, -1.0, 0.0]))
        x = x + (lr * lr / weight_sum) * (z - x)
        torch.testing.assert_close(p.detach(), 0.1 * z + 0.9 * x)
    opt.eval()
    torch.testing.assert_close(p.detach(), x)
    opt.train()
    torch.testing.assert_close(p.detach(), 0.1 * z + 0.9 * x)


def test_minimises_a_quadratic():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(50, generator=g)
    p = torch.nn.Parameter(torch.zeros(50))
    opt = ScheduleFreeSignSGD([p], lr=0.02)
    start = float(((p - target) ** 2).sum())
    for _ in range(2000):
        opt.zero_grad()
        ((p - target) ** 2).sum().backward()
        opt.step()
    opt.eval()
    assert float(((p - target) ** 2).sum()) < 0.01 * start


def test_constraint_applies_to_every_copy():
    p = torch.nn.Parameter(torch.randn(4, 3))
    opt = ScheduleFreeSignSGD([p], lr=0.1)
    p.grad = torch.randn(4, 3)
    opt.step()

    def unit(w):
        w /= w.norm(dim=1, keepdim=True)

    opt.apply_(p, unit)
    for t in (p.detach(), opt.state[p]["z"], opt.state[p]["x"]):
        torch.testing.assert_close(t.norm(dim=1), torch.ones(4))


def test_bad_settings_and_misuse_are_errors():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="lr"):
        ScheduleFreeSignSGD([p], lr=0)
    with pytest.raises(ValueError, match="momentum"):
        ScheduleFreeSignSGD([p], lr=0.1, momentum=1.0)
    opt = ScheduleFreeSignSGD([p], lr=0.1)
    opt.eval()
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
