"""Data-parallel training under ``torchrun``: process group, shares, reductions.

Each rank gathers its own share of every batch from the store
(``iter_batches(part=(rank, world))``); gradients are averaged over ranks
after each backward pass, and the statistics a loss normalises by (the
batch's variance, the AuxK residual norm, which latents fired) are reduced
over the whole batch, so that W ranks with batch B/W each train the same SAE
as one process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def join(device: str) -> World:
    """The process group ``torchrun`` describes in the environment (joined on first
    use: NCCL on CUDA, gloo on the CPU), or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` world, or a process on its own: the one that writes."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def all_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum of ``t`` over ranks (``t`` itself in a world of one)."""
    if world.size > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Average the gradients over ranks, in one flat all-reduce."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
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
        dist.all_gather(parts, local.contiguous())
        local = torch.cat(parts)
    return local.topk(min(n_keep, local.numel()), sorted=False).values.min()
