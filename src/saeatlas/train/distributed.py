"""Data-parallel training under ``torchrun``: process group, shares, reductions.

Each rank gathers its own share of every batch from the store
(``iter_batches(part=(rank, world))``); gradients are averaged over ranks
after each backward pass, and the statistics a loss normalises by (the
batch's variance, the AuxK residual norm, which latents fired) are reduced
over the whole batch, so that W ranks with batch B/W each train the same SAE
as one process with batch B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .._world import World, collective

#: What a rank says when a collective of the training fails.
_LOST = (
    "one of them died or was killed. See the other ranks' output for the cause; rerun "
    "with as many processes, with --resume to continue from the last checkpoint "
    "(`checkpoint_every`) if the run wrote one."
)


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself in a world of one)."""
    if world.size > 1:
        t = t.clone()
        with collective(world, "training", _LOST):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Average the gradients over ranks, in one flat all-reduce."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    with collective(world, "training", _LOST):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def all_min(t: torch.Tensor, world: World) -> torch.Tensor:
    """Elementwise minimum of ``t`` over ranks."""
    if world.size > 1:
        t = t.clone()
        with collective(world, "training", _LOST):
            dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def global_topk_threshold(values: torch.Tensor, n_keep: int, world: World) -> torch.Tensor:
    """The ``n_keep``-th largest of ``values`` over all ranks (BatchTopK over the
    global batch): each rank sends only its own ``n_keep`` largest, which hold every
    value of the global top ``n_keep``. Every rank's ``values`` has the same size."""
    flat = values.flatten()
    local = flat.topk(min(n_keep, flat.numel()), sorted=False).values
    if world.size > 1:
        parts = [torch.empty_like(local) for _ in range(world.size)]
        with collective(world, "training", _LOST):
            dist.all_gather(parts, local.contiguous())
        local = torch.cat(parts)
    return local.topk(min(n_keep, local.numel()), sorted=False).values.min()
