"""The ablation on two gloo ranks: each ablates its share of the modules, and both end
with the figures one process computes."""

import json

import numpy as np
import torch
from torch import nn

from saeatlas.store import LayerSpec
from saeatlas.structure.causal.ablation import ablate_modules
from spawned_ranks import join_gloo

WAIT_S = 300
FIGURES = ("effect", "effect_by_class", "random_mean", "z", "p", "q", "n_drawn")


def _task():
    """A model whose units 0-3 carry the classes (two causal modules) beside unused ones,
    and five modules: two causal, three not (so that draws stop early in some)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 24), nn.ReLU(), nn.Linear(24, 2))
    with torch.no_grad():
        model[0].weight[:4] = torch.tensor([[3.0, 0], [3, 0], [0, 3], [0, 3]])
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].weight[0, :2] = 1.0
        model[2].weight[1, 2:4] = 1.0
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 2, (200,), generator=g)
    x = torch.rand(200, 2, generator=g) * 0.2
    x[torch.arange(200), y] += 1.0
    modules = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4] + [-1] * 13)
    return model, x, y.numpy(), (LayerSpec("1", 0, 24, (24,), "sample"),), modules


def _ablate(passes=None):
    """The ablation of :func:`_task`; ``passes`` counts the model's forward passes."""
    model, x, y, layers, modules = _task()
    if passes is not None:
        model.register_forward_hook(lambda *_: passes.append(1))
    return ablate_modules(model, x, layers, modules, labels=y, mode="zero", n_random=40)


def _worker(rank, world, port, root):
    join_gloo(rank, world, port)
    try:
        passes = []
        res = _ablate(passes)
        figures = {k: getattr(res, k) for k in FIGURES}
        np.savez(f"{root}/r{rank}.npz", passes=len(passes), **figures)
    except Exception as e:
        with open(f"{root}/r{rank}.json", "w") as f:
            json.dump({"error": type(e).__name__, "message": str(e)}, f)
    finally:
        torch.distributed.destroy_process_group()


def test_two_ranks_ablate_their_share_and_end_with_one_process_figures(tmp_path, spawn_ranks):
    passes = []
    one = _ablate(passes)
    assert one.p[0] <= 0.05 and one.p[1] <= 0.05 and one.n_drawn[2] < 40  # a real test
    assert len(passes) == 1 + 5 + one.n_drawn.sum()  # the clean pass, modules, random sets
    spawn_ranks(_worker, (str(tmp_path),), WAIT_S)
    errors = [p.read_text() for p in tmp_path.glob("r*.json")]
    assert not errors, errors
    two = [np.load(tmp_path / f"r{rank}.npz") for rank in range(2)]
    for rank in range(2):
        for k in FIGURES:
            np.testing.assert_array_equal(two[rank][k], getattr(one, k), err_msg=f"{rank}: {k}")
    # each rank ran the clean pass and its own modules (0, 2, 4 and 1, 3) alone
    mine = [np.arange(5)[r::2] for r in range(2)]
    for r in range(2):
        assert two[r]["passes"] == 1 + len(mine[r]) + one.n_drawn[mine[r]].sum()
